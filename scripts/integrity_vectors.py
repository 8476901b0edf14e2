#!/usr/bin/env python3
"""An independent implementation of Converge Ledger's integrity spec (docs/INTEGRITY.md),
using only the Python standard library. It prints the test vectors published in that document;
`crates/ledger-core/tests/integrity_vectors.rs` checks the Rust implementation against the same
values.

    python3 scripts/integrity_vectors.py
"""
import hashlib
import struct


def u32(n):
    return struct.pack(">I", n)


def u64(n):
    return struct.pack(">Q", n)


def s(b):
    return u32(len(b)) + b


def leaf_input(seq, appended_at_ns, lamport, id_, key, payload, metadata):
    out = b"\x01" + u64(seq) + u64(appended_at_ns) + u64(lamport)
    out += s(id_.encode()) + s(key.encode()) + s(payload)
    pairs = sorted((k.encode(), v.encode()) for k, v in metadata.items())
    out += u32(len(pairs))
    for k, v in pairs:
        out += s(k) + s(v)
    return out


def leaf_hash(li):
    return hashlib.sha256(b"\x00" + li).digest()


def node_hash(l, r):
    return hashlib.sha256(b"\x01" + l + r).digest()


def split(n):
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def root(leaves):
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = split(len(leaves))
    return node_hash(root(leaves[:k]), root(leaves[k:]))


def path(m, leaves):
    if len(leaves) <= 1:
        return []
    k = split(len(leaves))
    if m < k:
        return path(m, leaves[:k]) + [root(leaves[k:])]
    return path(m - k, leaves[k:]) + [root(leaves[:k])]


def subproof(m, leaves, whole):
    n = len(leaves)
    if m == n:
        return [] if whole else [root(leaves)]
    k = split(n)
    if m <= k:
        return subproof(m, leaves[:k], whole) + [root(leaves[k:])]
    return subproof(m - k, leaves[k:], False) + [root(leaves[:k])]


ENTRIES = [
    dict(seq=1, appended_at_ns=1700000000000000000, lamport=1,
         id_="0190c2a0-0000-7000-8000-000000000001", key="facts",
         payload=b'{"goal":"ship"}', metadata={}),
    dict(seq=2, appended_at_ns=1700000000000000500, lamport=7,
         id_="0190c2a0-0000-7000-8000-000000000002", key="proposals",
         payload=bytes([0x00, 0xFF]),
         metadata={"zeta": "z", "alpha": "a", "agent": "planner"}),
    dict(seq=3, appended_at_ns=1700000000000001000, lamport=8,
         id_="0190c2a0-0000-7000-8000-000000000003", key="evals",
         payload=b"", metadata={"\u00e9": "\u00fc"}),
]

if __name__ == "__main__":
    leaves = []
    for e in ENTRIES:
        li = leaf_input(**e)
        h = leaf_hash(li)
        leaves.append(h)
        print(f"entry {e['seq']} leaf_input  = {li.hex()}")
        print(f"entry {e['seq']} content_hash = {h.hex()}")
    for n in range(0, 4):
        print(f"root of size {n} = {root(leaves[:n]).hex()}")
    print("inclusion(seq 1, size 3) =", [h.hex() for h in path(0, leaves)])
    print("inclusion(seq 3, size 3) =", [h.hex() for h in path(2, leaves)])
    print("consistency(1 -> 3) =", [h.hex() for h in subproof(1, leaves, True)])
    print("consistency(2 -> 3) =", [h.hex() for h in subproof(2, leaves, True)])
    # Snapshot v1 of the three entries (docs/SNAPSHOT.md), context "ctx-vectors", created_at 42.
    body = b"CVLGSNAP" + struct.pack(">HH", 1, 0) + s(b"ctx-vectors") + u64(42) + u64(3)
    body += u64(ENTRIES[-1]["lamport"]) + root(leaves)
    for e in ENTRIES:
        li = leaf_input(**e)
        body += u32(len(li)) + li
    blob = body + hashlib.sha256(body).digest()
    print(f"snapshot ({len(blob)} bytes) sha256 = {hashlib.sha256(blob).hexdigest()}")
