// Converge Ledger observer: a read-only page over the node's /api (see admin/observer.rs).
// No build step, no dependencies, nothing loaded from elsewhere. Verification runs here, in
// the browser: the signed tree head is checked with WebCrypto (SHA-256, Ed25519) against the
// key the operator pinned (#key=<base64> in the address, or "Pin"), never trusting the node.
'use strict';

const $ = (s) => document.querySelector(s);
const enc = new TextEncoder();

const state = {
  node: null,
  context: null,
  after: 0,
  pages: [],
  token: sessionStorage.getItem('ledger-token') || '',
  tail: null,
  tailContext: null,
  lastSeq: 0,
  verifyTimer: null,
  contextsAfter: null,
  selectedSeq: null,
};

// ---------- small helpers ----------

function hashParams() {
  const out = {};
  for (const part of location.hash.replace(/^#/, '').split('&')) {
    if (!part) continue;
    const i = part.indexOf('=');
    const k = decodeURIComponent(i < 0 ? part : part.slice(0, i));
    out[k] = i < 0 ? '' : decodeURIComponent(part.slice(i + 1));
  }
  return out;
}

function setHashParam(k, v) {
  const p = hashParams();
  if (v === null || v === undefined) delete p[k]; else p[k] = v;
  const s = Object.entries(p).map(([a, b]) => `${encodeURIComponent(a)}=${encodeURIComponent(b)}`).join('&');
  history.replaceState(null, '', s ? `#${s}` : location.pathname);
}

function b64ToBytes(s) {
  const bin = atob(s);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

function bytesToHex(b) {
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}

function hexToBytes(h) {
  const out = new Uint8Array(h.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(h.substr(i * 2, 2), 16);
  return out;
}

function concat(...parts) {
  const n = parts.reduce((a, p) => a + p.length, 0);
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) { out.set(p, o); o += p.length; }
  return out;
}

async function sha256(bytes) {
  return new Uint8Array(await crypto.subtle.digest('SHA-256', bytes));
}

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function time(ns) {
  if (!ns) return '';
  return new Date(Number(BigInt(ns) / 1000000n)).toISOString();
}

async function api(path, query) {
  const u = new URL(path, location.origin);
  for (const [k, v] of Object.entries(query || {})) {
    if (v !== undefined && v !== null && v !== '') u.searchParams.set(k, v);
  }
  const headers = {};
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  const r = await fetch(u, { headers });
  let body = null;
  try { body = await r.json(); } catch (_) { body = null; }
  if (r.status === 401) $('#token-form').classList.remove('hidden');
  if (!r.ok) throw new Error((body && body.error) || `${r.status} ${r.statusText}`);
  return body;
}

// ---------- verification (RFC 9162 Merkle proofs, C2SP checkpoints, Ed25519) ----------

function pinnedKey() {
  const p = hashParams();
  if (p.key) return { key: p.key, pinned: true };
  const stored = localStorage.getItem(`ledger-pinned-key:${state.node ? state.node.ledger_name : ''}`);
  if (stored) return { key: stored, pinned: true };
  return { key: state.node ? state.node.public_key : '', pinned: false };
}

// Checks a signed tree head against a public key. Returns {ok, reason, unsupported}.
async function verifyHead(h, pubB64) {
  if (!window.crypto || !crypto.subtle) {
    return { ok: false, unsupported: true, reason: 'WebCrypto is unavailable (open the page over https or on localhost)' };
  }
  const expected = `${h.key_name}/${h.context_id}\n${h.tree_size}\n${h.root}\n`;
  if (h.checkpoint !== expected) {
    return { ok: false, reason: 'the checkpoint text does not match the head (origin, size or root)' };
  }
  let pub;
  try { pub = b64ToBytes(pubB64); } catch (_) { return { ok: false, reason: 'the pinned key is not base64' }; }
  if (pub.length !== 32) return { ok: false, reason: 'the pinned key is not a 32-byte Ed25519 key' };
  const kid = bytesToHex((await sha256(concat(enc.encode(h.key_name), new Uint8Array([0x0a, 0x01]), pub))).slice(0, 4));
  if (kid !== h.key_id) {
    return { ok: false, reason: `signed by key ${h.key_id}, the pinned key is ${kid}` };
  }
  let key;
  try {
    key = await crypto.subtle.importKey('raw', pub, { name: 'Ed25519' }, false, ['verify']);
  } catch (e) {
    return { ok: false, unsupported: true, reason: `this browser has no WebCrypto Ed25519 (${e.message})` };
  }
  let sig;
  try { sig = b64ToBytes(h.signature); } catch (_) { return { ok: false, reason: 'the signature is not base64' }; }
  const ok = await crypto.subtle.verify({ name: 'Ed25519' }, key, sig, enc.encode(h.checkpoint));
  return ok ? { ok: true } : { ok: false, reason: 'the signature does not verify with the pinned key' };
}

async function nodeHash(l, r) {
  return sha256(concat(new Uint8Array([0x01]), l, r));
}

// The root implied by an inclusion proof (RFC 9162 2.1.3.2).
async function rootFromInclusion(index, size, leaf, path) {
  if (index >= size) throw new Error('index beyond the tree');
  let fn = index;
  let sn = size - 1;
  let r = leaf;
  for (const p of path) {
    if (sn === 0) throw new Error('proof too long');
    if (fn % 2 === 1 || fn === sn) {
      r = await nodeHash(p, r);
      if (fn % 2 === 0) {
        while (fn % 2 === 0 && fn !== 0) { fn = Math.floor(fn / 2); sn = Math.floor(sn / 2); }
      }
    } else {
      r = await nodeHash(r, p);
    }
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  if (sn !== 0) throw new Error('proof too short');
  return r;
}

function setBadge(stateName, text, title) {
  const b = $('#badge');
  b.dataset.state = stateName;
  b.textContent = text;
  b.title = title || '';
}

async function verifyNow() {
  const ctx = state.context;
  if (!ctx) return;
  setBadge('pending', 'verifying…');
  let h;
  try {
    h = await api('/api/head', { context: ctx });
  } catch (e) {
    setBadge('failed', `✘ no head: ${e.message}`);
    return;
  }
  if (ctx !== state.context) return;
  const pin = pinnedKey();
  const r = await verifyHead(h, pin.key);
  const short = h.root_hex ? h.root_hex.slice(0, 12) : '';
  $('#head').textContent = `tree size ${h.tree_size} · root ${short}… · key ${h.key_name} ${h.key_id} · ${time(h.timestamp_ns)}`;
  if (r.ok && pin.pinned) {
    setBadge('verified', `✔ verified: ${h.tree_size} entries`, 'Signature checked in this browser against the pinned key');
  } else if (r.ok) {
    setBadge('unpinned', `✔ signed (key not pinned): ${h.tree_size} entries`, 'Checked against the key the node announces; pin a key you got elsewhere');
  } else if (r.unsupported) {
    setBadge('unsupported', '? cannot verify here', r.reason);
  } else {
    setBadge('failed', `✘ FAILED: ${r.reason}`, r.reason);
  }
}

function scheduleVerify() {
  if (state.verifyTimer) return;
  state.verifyTimer = setTimeout(() => { state.verifyTimer = null; verifyNow(); }, 300);
}

async function showProof(seq) {
  const out = $('#proof');
  out.textContent = `inclusion proof of #${seq}…`;
  try {
    const p = await api('/api/proof', { context: state.context, sequence: seq });
    const root = await rootFromInclusion(p.leaf_index, p.tree_size, hexToBytes(p.leaf_hash), p.path.map(hexToBytes));
    const headRoot = b64ToBytes(p.tree_head.root);
    const rootOk = bytesToHex(root) === bytesToHex(headRoot);
    const sig = await verifyHead(p.tree_head, pinnedKey().key);
    out.textContent = '';
    const line = el('div', `#${seq}: leaf ${p.leaf_hash.slice(0, 16)}… + ${p.path.length} hashes → root ${bytesToHex(root).slice(0, 16)}… `);
    line.append(el('span', rootOk ? '= signed root ✔' : '≠ signed root ✘', rootOk ? 'ok' : 'bad'));
    line.append(el('span', sig.ok ? ` · head signature ✔ (tree of ${p.tree_size})` : ` · head ✘ ${sig.reason}`, sig.ok ? 'ok' : 'bad'));
    out.append(line);
    out.dataset.state = rootOk && sig.ok ? 'verified' : 'failed';
    for (const [i, h] of p.path.entries()) out.append(el('div', `  path[${i}] ${h}`));
  } catch (e) {
    out.textContent = `inclusion proof of #${seq} failed: ${e.message}`;
    out.dataset.state = 'failed';
  }
}

// ---------- payload preview ----------

function preview(e) {
  const bytes = b64ToBytes(e.payload_b64 || '');
  const mode = $('#preview').value;
  let text;
  if (mode === 'hex') {
    text = Array.from(bytes.slice(0, 4096), (x) => x.toString(16).padStart(2, '0')).join(' ');
    if (bytes.length > 4096) text += ' …';
  } else {
    const s = new TextDecoder('utf-8').decode(bytes);
    text = s;
    if (mode === 'json') {
      try { text = JSON.stringify(JSON.parse(s), null, 2); } catch (_) { text = `(not JSON) ${s}`; }
    }
  }
  if (e.payload_truncated) text += `\n… (${e.payload_len} bytes in all)`;
  return text;
}

// ---------- entries ----------

async function loadEntries() {
  const ctx = state.context;
  if (!ctx) return;
  const tbody = $('#entries tbody');
  let page;
  try {
    page = await api('/api/entries', { context: ctx, after: state.after, limit: 25, key: $('#key-filter').value.trim() });
  } catch (e) {
    tbody.textContent = '';
    const tr = el('tr');
    tr.append(el('td', e.message));
    tbody.append(tr);
    return null;
  }
  if (ctx !== state.context) return null;
  tbody.textContent = '';
  for (const e of page.entries) {
    const tr = el('tr');
    tr.dataset.seq = e.sequence;
    if (e.sequence === state.selectedSeq) tr.classList.add('selected');
    tr.append(el('td', e.sequence), el('td', e.key), el('td', time(e.appended_at_ns)), el('td', e.lamport_clock), el('td', preview(e), 'payload'));
    tr.addEventListener('click', () => {
      state.selectedSeq = e.sequence;
      for (const r of tbody.querySelectorAll('tr')) r.classList.toggle('selected', r === tr);
      showProof(e.sequence);
    });
    tbody.append(tr);
  }
  state.lastPage = page;
  $('#page-info').textContent = page.entries.length
    ? `#${page.entries[0].sequence}–#${page.entries[page.entries.length - 1].sequence} of ${page.latest_sequence}`
    : `no entries (latest ${page.latest_sequence})`;
  $('#next').disabled = !page.has_more;
  $('#prev').disabled = state.pages.length === 0;
  return page;
}

// ---------- live tail (server-sent events, resumed by Last-Event-ID) ----------

function stopTail() {
  if (state.tail) { state.tail.close(); state.tail = null; }
}

function startTail(ctx, from) {
  stopTail();
  state.tailContext = ctx;
  const u = new URL('/api/tail', location.origin);
  u.searchParams.set('context', ctx);
  u.searchParams.set('from', from);
  if (state.token) u.searchParams.set('token', state.token);
  const es = new EventSource(u);
  state.tail = es;
  $('#tail-state').textContent = 'connecting';
  es.onopen = () => { $('#tail-state').textContent = 'live'; };
  es.onerror = () => {
    $('#tail-state').textContent = 'reconnecting';
    if (es.readyState === EventSource.CLOSED && state.tail === es) {
      setTimeout(() => { if (state.tail === es) startTail(ctx, state.lastSeq); }, 1000);
    }
  };
  es.addEventListener('entry', (ev) => {
    if (state.tail !== es) return;
    const e = JSON.parse(ev.data);
    if (e.sequence <= state.lastSeq) return; // already shown (a resumed stream never repeats, but be safe)
    state.lastSeq = e.sequence;
    const li = el('li', `#${e.sequence} ${time(e.appended_at_ns)} ${e.key} ${preview(e).slice(0, 300)}`);
    li.dataset.seq = e.sequence;
    li.value = e.sequence;
    $('#tail').prepend(li);
    while ($('#tail').children.length > 500) $('#tail').lastChild.remove();
    scheduleVerify();
  });
  es.addEventListener('end', (ev) => {
    $('#tail-state').textContent = 'ended; resuming';
    es.close();
    setTimeout(() => { if (state.tail === es) startTail(ctx, state.lastSeq); }, 1000);
  });
}

// ---------- contexts and cluster ----------

async function loadContexts(append) {
  let r;
  try {
    r = await api('/api/contexts', { after: append ? state.contextsAfter : '', limit: 100 });
  } catch (e) {
    $('#contexts').textContent = e.message;
    return;
  }
  const ul = $('#contexts');
  if (!append) ul.textContent = '';
  for (const c of r.contexts) {
    const li = el('li');
    li.dataset.context = c.id;
    if (c.id === state.context) li.classList.add('selected');
    li.append(el('div', c.id, 'mono'));
    const who = c.replicas ? `writer ${c.writer || '?'} · replicas ${c.replicas.join(', ')}` : '';
    li.append(el('div', `${c.size} entries · ${time(c.last_appended_at_ns)} ${who}`, 'muted small'));
    li.addEventListener('click', () => selectContext(c.id));
    ul.append(li);
  }
  state.contextsAfter = r.next_after;
  $('#contexts-more').classList.toggle('hidden', !r.next_after);
}

async function loadCluster() {
  const box = $('#cluster');
  let c;
  try { c = await api('/api/cluster'); } catch (e) { box.textContent = e.message; return; }
  box.textContent = '';
  if (!c.clustered) { box.textContent = `single node (${c.node})`; return; }
  const t = el('table', null, 'cluster');
  const head = el('tr');
  for (const h of ['member', 'address', 'role', 'state']) head.append(el('th', h));
  t.append(head);
  for (const m of c.members || []) {
    const tr = el('tr');
    tr.append(el('td', m.id), el('td', m.addr), el('td', m.role), el('td', m.state));
    t.append(tr);
  }
  box.append(t);
  for (const ctx of c.contexts || []) {
    const lags = (ctx.replicas || []).map((r) => `${r.id}: ${r.error ? 'no answer' : `${r.size} (lag ${r.lag_entries})`}`).join(', ');
    box.append(el('div', `${ctx.context} · epoch ${ctx.epoch} · writer ${ctx.writer && ctx.writer.id} · ${lags}`, 'small'));
  }
  const q = (c.quarantines || []).length;
  box.append(el('div', q ? `${q} quarantined suffix(es)` : 'no quarantines', q ? 'bad small' : 'muted small'));
}

async function selectContext(ctx) {
  state.context = ctx;
  state.after = 0;
  state.pages = [];
  state.selectedSeq = null;
  setHashParam('context', ctx);
  $('#context-title').textContent = ctx;
  $('#proof').textContent = '';
  $('#tail').textContent = '';
  for (const li of document.querySelectorAll('#contexts li')) li.classList.toggle('selected', li.dataset.context === ctx);
  const page = await loadEntries();
  state.lastSeq = page ? page.latest_sequence : 0;
  startTail(ctx, state.lastSeq);
  verifyNow();
}

// ---------- start ----------

async function start() {
  if (state.token) $('#token').value = state.token;
  $('#token-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    state.token = $('#token').value.trim();
    sessionStorage.setItem('ledger-token', state.token);
    start2();
  });
  $('#preview').addEventListener('change', loadEntries);
  $('#key-filter').addEventListener('change', () => { state.after = 0; state.pages = []; loadEntries(); });
  $('#next').addEventListener('click', () => {
    if (!state.lastPage || !state.lastPage.has_more) return;
    state.pages.push(state.after);
    state.after = state.lastPage.next_after_sequence;
    loadEntries();
  });
  $('#prev').addEventListener('click', () => { state.after = state.pages.pop() || 0; loadEntries(); });
  $('#first').addEventListener('click', () => { state.after = 0; state.pages = []; loadEntries(); });
  $('#verify').addEventListener('click', verifyNow);
  $('#contexts-more').addEventListener('click', () => loadContexts(true));
  $('#pin').addEventListener('click', () => {
    const k = $('#pinned-key').value.trim();
    if (!state.node) return;
    const slot = `ledger-pinned-key:${state.node.ledger_name}`;
    if (k) localStorage.setItem(slot, k); else localStorage.removeItem(slot);
    verifyNow();
  });
  await start2();
}

async function start2() {
  try {
    state.node = await api('/api/node');
  } catch (e) {
    $('#node').textContent = e.message;
    return;
  }
  $('#node').textContent = `${state.node.node_id} · ${state.node.ledger_name} · key ${state.node.key_id}`;
  if (state.node.auth) $('#token-form').classList.remove('hidden');
  $('#pinned-key').value = pinnedKey().pinned ? pinnedKey().key : '';
  await loadContexts(false);
  loadCluster();
  if (!state.refreshing) {
    state.refreshing = true;
    setInterval(() => loadContexts(false), 5000);
    setInterval(loadCluster, 5000);
  }
  const p = hashParams();
  if (p.context) await selectContext(p.context);
}

document.addEventListener('DOMContentLoaded', start);
