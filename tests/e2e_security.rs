//! Tokens with roles, TLS and mutual TLS on the real binary: what a caller without the right
//! token or certificate gets, certificates reloaded on SIGHUP without dropping streams, and a
//! three-node cluster whose nodes talk over mutual TLS with auth on.

mod support;

use ledger_client::{ClientError, ConnectOptions, LedgerClient, TlsOptions};
use ledger_core::{Metadata, NewEntry};
use ledger_launcher::cluster_node;
use ledger_proto::cluster::v1 as cpb;
use ledger_proto::cluster::v1::cluster_service_client::ClusterServiceClient;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::{BIN, Node, cli, data_dir};
use tokio_stream::StreamExt;
use tonic::Code;

/// `converge-ledger certs dev --out DIR --name …`.
fn dev_certs(dir: &Path, names: &[&str]) {
    let mut args = vec!["certs", "dev", "--out", dir.to_str().unwrap()];
    for n in names {
        args.extend(["--name", n]);
    }
    let (code, out, err) = cli(&args);
    assert_eq!(code, 0, "{err}");
    for f in ["ca.pem", "node.pem", "node.key", "client.pem", "client.key"] {
        assert!(dir.join(f).exists(), "{f} written: {out}");
    }
}

/// `converge-ledger token new`: (token, [[token]] table).
fn new_token(role: &str, prefix: Option<&str>) -> (String, String) {
    let mut args = vec!["token", "new", "--role", role];
    if let Some(p) = prefix {
        args.extend(["--prefix", p]);
    }
    let (code, out, err) = cli(&args);
    assert_eq!(code, 0, "{err}");
    let (token, table) = out.split_once('\n').expect("token, then its table");
    assert!(table.starts_with("[[token]]"), "{table}");
    (token.trim().to_owned(), table.to_owned())
}

fn tls(dir: &Path, client_cert: bool) -> TlsOptions {
    let (cert, key) = if client_cert {
        (Some(dir.join("client.pem")), Some(dir.join("client.key")))
    } else {
        (None, None)
    };
    TlsOptions::from_files(Some(&dir.join("ca.pem")), cert.as_deref(), key.as_deref()).unwrap()
}

fn options(token: Option<&str>, tls: Option<TlsOptions>) -> ConnectOptions {
    ConnectOptions {
        token: token.map(str::to_owned),
        tls,
    }
}

fn code<T: std::fmt::Debug>(r: Result<T, ClientError>) -> (Code, String) {
    match r {
        Err(ClientError::Status(s)) => (s.code(), s.message().to_owned()),
        other => panic!("expected a status, got {other:?}"),
    }
}

async fn append(c: &LedgerClient, ctx: &str) -> Result<ledger_core::Entry, ClientError> {
    c.append(ctx, "facts", b"x".to_vec(), Metadata::new(), None)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_with_roles_and_prefixes_guard_every_service() {
    let dir = data_dir();
    let (writer, w_table) = new_token("writer", Some("tenant-a/"));
    let (reader, r_table) = new_token("reader", None);
    let (admin, a_table) = new_token("admin", None);
    let auth_file = dir.path().join("auth.toml");
    std::fs::write(&auth_file, format!("{w_table}\n{r_table}\n{a_table}")).unwrap();
    let node = Node::start(
        &dir.path().join("data"),
        &["--auth-file", auth_file.to_str().unwrap()],
    );
    assert_eq!(node.listening["auth"], true);
    let connect = |t: Option<&str>| {
        let url = node.url.clone();
        let o = options(t, None);
        async move { LedgerClient::connect_with(&url, &o).await.unwrap() }
    };

    // No token, an unknown token: UNAUTHENTICATED, saying which.
    let anon = connect(None).await;
    let (c, m) = code(append(&anon, "tenant-a/x").await);
    assert_eq!(c, Code::Unauthenticated, "{m}");
    assert!(m.contains("no token"), "{m}");
    let (c, m) = code(anon.get("tenant-a/x", "", 0, 0).await);
    assert_eq!(c, Code::Unauthenticated, "{m}");
    let stranger = connect(Some("cl_not-a-token")).await;
    let (c, m) = code(append(&stranger, "tenant-a/x").await);
    assert_eq!(c, Code::Unauthenticated, "{m}");
    assert!(m.contains("unknown token"), "{m}");

    // The writer appends inside its prefix, through every append path.
    let w = connect(Some(&writer)).await;
    append(&w, "tenant-a/x").await.unwrap();
    w.pipeline()
        .append("tenant-a/x", "facts", b"p".to_vec(), Metadata::new(), None)
        .await
        .unwrap();
    // Outside it: PERMISSION_DENIED naming the prefix, on every path, and nothing stored.
    let (c, m) = code(append(&w, "tenant-b/x").await);
    assert_eq!(c, Code::PermissionDenied, "{m}");
    assert!(m.contains("(prefix)") && m.contains("tenant-a/"), "{m}");
    let (c, m) = code(
        w.pipeline()
            .append("tenant-b/x", "facts", b"p".to_vec(), Metadata::new(), None)
            .await,
    );
    assert_eq!(c, Code::PermissionDenied, "{m}");
    let snapshot = ledger_core::snapshot::encode("tenant-b/y", 1, &[]).unwrap();
    let (c, m) = code(
        w.load_from(
            "tenant-b/y",
            false,
            Box::new(std::io::Cursor::new(snapshot)),
            |_| {},
        )
        .await,
    );
    assert_eq!(c, Code::PermissionDenied, "{m}");
    // A writer does not read; the message says it is the role.
    let (c, m) = code(w.get("tenant-a/x", "", 0, 0).await);
    assert_eq!(c, Code::PermissionDenied, "{m}");
    assert!(m.contains("(role)") && m.contains("reader"), "{m}");

    // The reader reads everything (Get, Watch, integrity), appends nothing.
    let r = connect(Some(&reader)).await;
    assert_eq!(r.get_all("tenant-a/x", "", 0).await.unwrap().len(), 2);
    let mut watch = r.watch("tenant-a/x", "", 0).await.unwrap();
    assert_eq!(watch.next().await.unwrap().unwrap().sequence, 1);
    assert_eq!(r.tree_head("tenant-a/x").await.unwrap().tree_size, 2);
    r.inclusion_proof("tenant-a/x", 1, 0).await.unwrap();
    let (c, m) = code(append(&r, "tenant-a/x").await);
    assert_eq!(c, Code::PermissionDenied, "{m}");
    assert!(m.contains("(role)") && m.contains("writer"), "{m}");
    let (c, _) = code(w.tree_head("tenant-a/x").await);
    assert_eq!(c, Code::PermissionDenied);

    // Admin does everything.
    let a = connect(Some(&admin)).await;
    append(&a, "elsewhere").await.unwrap();
    a.get("tenant-a/x", "", 0, 0).await.unwrap();

    // Health stays open.
    let mut health = tonic_health::pb::health_client::HealthClient::new(node.channel().await);
    health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health needs no token");

    // The CLI: --token and LEDGER_TOKEN; without one it fails saying why.
    let (code_, out, err) = cli(&[
        "append",
        "--addr",
        &node.url,
        "--token",
        &writer,
        "tenant-a/x",
        "facts",
        "cli",
    ]);
    assert_eq!(code_, 0, "{out}{err}");
    let (code_, _, err) = cli(&["get", "--addr", &node.url, "tenant-a/x"]);
    assert_ne!(code_, 0);
    assert!(err.to_lowercase().contains("no token"), "{err}");
    let out = std::process::Command::new(BIN)
        .args(["get", "--addr", &node.url, "tenant-a/x"])
        .env("LEDGER_TOKEN", &reader)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_mutual_tls_on_the_public_port() {
    let dir = data_dir();
    let certs = dir.path().join("certs");
    dev_certs(&certs, &[]);
    let flag = |f: &str| certs.join(f).to_str().unwrap().to_owned();

    // TLS: a client trusting the CA connects; a plain-text client does not.
    let node = Node::start(
        &dir.path().join("a"),
        &[
            "--tls-cert",
            &flag("node.pem"),
            "--tls-key",
            &flag("node.key"),
        ],
    );
    assert_eq!(node.listening["tls"], true);
    let url = format!("https://{}", node.addr);
    let c = LedgerClient::connect_with(&url, &options(None, Some(tls(&certs, false))))
        .await
        .unwrap();
    append(&c, "ctx").await.unwrap();
    let plain = match LedgerClient::connect(&node.url).await {
        Ok(c) => append(&c, "ctx").await.map(|_| ()),
        Err(e) => Err(e),
    };
    assert!(plain.is_err(), "plain text to a TLS port fails");
    // The CLI with --ca.
    let (code_, out, err) = cli(&["get", "--addr", &url, "--ca", &flag("ca.pem"), "ctx"]);
    assert_eq!(code_, 0, "{out}{err}");
    assert_eq!(out.lines().count(), 1);
    drop(node);

    // Mutual TLS: without a client certificate the handshake fails; with one it works; a
    // client certificate is not a node certificate, so the node-to-node methods refuse it.
    let node = Node::start(
        &dir.path().join("b"),
        &[
            "--tls-cert",
            &flag("node.pem"),
            "--tls-key",
            &flag("node.key"),
            "--tls-client-ca",
            &flag("ca.pem"),
        ],
    );
    let url = format!("https://{}", node.addr);
    let no_cert =
        match LedgerClient::connect_with(&url, &options(None, Some(tls(&certs, false)))).await {
            Ok(c) => append(&c, "ctx").await.map(|_| ()),
            Err(e) => Err(e),
        };
    assert!(no_cert.is_err(), "mutual TLS needs a client certificate");
    let o = options(None, Some(tls(&certs, true)));
    let c = LedgerClient::connect_with(&url, &o).await.unwrap();
    append(&c, "ctx").await.unwrap();
    let (code_, out, err) = cli(&[
        "get",
        "--addr",
        &url,
        "--ca",
        &flag("ca.pem"),
        "--cert",
        &flag("client.pem"),
        "--key",
        &flag("client.key"),
        "ctx",
    ]);
    assert_eq!(code_, 0, "{out}{err}");
    let ch = o.endpoint(&url).unwrap().connect().await.unwrap();
    let s = ClusterServiceClient::new(ch)
        .context_state(cpb::ContextStateRequest {
            context_id: "ctx".into(),
            settle: false,
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::PermissionDenied, "{}", s.message());
    assert!(s.message().contains("node certificate"), "{}", s.message());
}

/// Copies a `certs dev` set to the fixed paths a node is configured with.
fn install(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for f in ["ca.pem", "node.pem", "node.key", "client.pem", "client.key"] {
        std::fs::copy(from.join(f), to.join(f)).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_certificates_without_dropping_streams() {
    let dir = data_dir();
    let (old, new, live) = (
        dir.path().join("old"),
        dir.path().join("new"),
        dir.path().join("live"),
    );
    dev_certs(&old, &[]);
    dev_certs(&new, &[]);
    install(&old, &live);
    let flag = |f: &str| live.join(f).to_str().unwrap().to_owned();
    let node = Node::start(
        &dir.path().join("data"),
        &[
            "--tls-cert",
            &flag("node.pem"),
            "--tls-key",
            &flag("node.key"),
        ],
    );
    let url = format!("https://{}", node.addr);
    let before = LedgerClient::connect_with(&url, &options(None, Some(tls(&old, false))))
        .await
        .unwrap();
    append(&before, "ctx").await.unwrap();
    let mut watch = before.watch("ctx", "", 0).await.unwrap();
    assert_eq!(watch.next().await.unwrap().unwrap().sequence, 1);

    // New certificates from another CA, then SIGHUP.
    install(&new, &live);
    node.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let fresh = LedgerClient::connect_with(&url, &options(None, Some(tls(&new, false)))).await;
        if let Ok(c) = fresh
            && append(&c, "ctx").await.is_ok()
        {
            break;
        }
        assert!(Instant::now() < deadline, "the new certificate is served");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The old connection and its stream carried on: the watch sees the append made over the
    // new connection, and the old connection still appends.
    assert_eq!(watch.next().await.unwrap().unwrap().sequence, 2);
    append(&before, "ctx").await.unwrap();
    assert_eq!(watch.next().await.unwrap().unwrap().sequence, 3);
    // A new connection trusting only the old CA is refused.
    let stale = match LedgerClient::connect_with(&url, &options(None, Some(tls(&old, false)))).await
    {
        Ok(c) => append(&c, "ctx").await.map(|_| ()),
        Err(e) => Err(e),
    };
    assert!(stale.is_err(), "the old certificate is no longer served");
}

fn entry(ctx: &str, i: usize) -> NewEntry {
    NewEntry::new(
        ctx,
        "facts",
        format!("{i}").into_bytes(),
        Metadata::new(),
        None,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_node_cluster_over_mutual_tls_with_auth_forwards_and_replicates() {
    const NET: u8 = 41;
    let dir = data_dir();
    let certs = dir.path().join("certs");
    let ips: Vec<String> = (0..3)
        .map(|i| ledger_launcher::cluster_ip(NET, i).to_string())
        .collect();
    dev_certs(&certs, &ips.iter().map(String::as_str).collect::<Vec<_>>());
    let (writer, w_table) = new_token("writer", None);
    let (reader, r_table) = new_token("reader", None);
    let (admin, a_table) = new_token("admin", None);
    let auth_file = dir.path().join("auth.toml");
    std::fs::write(&auth_file, format!("{w_table}\n{r_table}\n{a_table}")).unwrap();
    let flag = |f: &str| certs.join(f).to_str().unwrap().to_owned();
    let extra = [
        "--tls-cert".to_owned(),
        flag("node.pem"),
        "--tls-key".to_owned(),
        flag("node.key"),
        "--tls-client-ca".to_owned(),
        flag("ca.pem"),
        "--auth-file".to_owned(),
        auth_file.to_str().unwrap().to_owned(),
    ];
    let dirs: Vec<PathBuf> = (0..3).map(|i| dir.path().join(format!("n{i}"))).collect();
    let nodes: Vec<Node> = (0..3)
        .map(|i| Node::launch(cluster_node(BIN, &dirs[i], NET, i, 3).args(&extra)))
        .collect();
    let urls: Vec<String> = nodes
        .iter()
        .map(|n| format!("https://{}", n.addr))
        .collect();
    let with = |t: &str| options(Some(t), Some(tls(&certs, true)));

    // Every node sees the other two alive over mutual TLS (status needs the admin token).
    let status = |i: usize, ctx: Option<&str>| {
        let (url, o) = (urls[i].clone(), with(&admin));
        let ctx = ctx.map(str::to_owned);
        async move {
            let ch = o.endpoint(&url).unwrap().connect().await.unwrap();
            let r = ClusterServiceClient::with_interceptor(ch, o.auth().unwrap())
                .status(cpb::StatusRequest {
                    context_id: ctx.unwrap_or_default(),
                    limit: 0,
                    members_only: false,
                })
                .await?;
            Ok::<serde_json::Value, tonic::Status>(
                serde_json::from_str(&r.into_inner().json).unwrap(),
            )
        }
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    for i in 0..3 {
        loop {
            let s = status(i, Some("probe")).await.unwrap();
            let alive = s["members"]
                .as_array()
                .map_or(0, |m| m.iter().filter(|m| m["state"] == "alive").count());
            if alive == 3 {
                break;
            }
            assert!(Instant::now() < deadline, "node {i}: {s}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // The full status is admin's.
    let (_, o) = (0, with(&reader));
    let ch = o.endpoint(&urls[0]).unwrap().connect().await.unwrap();
    let denied = ClusterServiceClient::with_interceptor(ch, o.auth().unwrap())
        .status(cpb::StatusRequest::default())
        .await
        .unwrap_err();
    assert_eq!(
        denied.code(),
        Code::PermissionDenied,
        "{}",
        denied.message()
    );

    // Appends through every node (forwarded to each context's writer with the caller's
    // token), replicated to all three; reads from every node.
    let clients: Vec<LedgerClient> = {
        let mut v = Vec::new();
        for u in &urls {
            v.push(LedgerClient::connect_with(u, &with(&writer)).await.unwrap());
        }
        v
    };
    for (i, c) in clients.iter().enumerate() {
        for n in 0..5 {
            c.append_entry(entry(&format!("ctx-{n}"), i)).await.unwrap();
        }
    }
    // A reader token cannot append, even through a forwarding node.
    let r0 = LedgerClient::connect_with(&urls[0], &with(&reader))
        .await
        .unwrap();
    for n in 0..5 {
        let (c, m) = code(r0.append_entry(entry(&format!("ctx-{n}"), 9)).await);
        assert_eq!(c, Code::PermissionDenied, "{m}");
    }
    for n in 0..5 {
        let ctx = format!("ctx-{n}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let s = status(0, Some(&ctx)).await.unwrap();
            let sizes: Vec<_> = s["contexts"][0]["replicas"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|r| r["size"].as_u64())
                .collect();
            if sizes.len() == 3 && sizes.iter().all(|s| *s == Some(3)) {
                break;
            }
            assert!(Instant::now() < deadline, "{ctx} replicated: {s}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for u in &urls {
            let r = LedgerClient::connect_with(u, &with(&reader)).await.unwrap();
            assert_eq!(
                r.get_all(&ctx, "", 0).await.unwrap().len(),
                3,
                "{ctx} on {u}"
            );
        }
    }
    // The cluster-aware client routes with any token.
    let cc =
        ledger_client::cluster::ClusterClient::connect_with(&[urls[1].as_str()], &with(&writer))
            .await
            .unwrap();
    assert_eq!(cc.member_count(), 3);
    cc.append_entry(entry("ctx-0", 7)).await.unwrap();
}
