//! The CLI against a running node, as a person uses it from a terminal.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;
use support::{BIN, Node, cli, data_dir};

#[test]
fn append_get_snapshot_load_from_the_command_line() {
    let dir = data_dir();
    let node = Node::start(dir.path(), &[]);
    let addr = node.url.as_str();

    let (code, out, err) = cli(&[
        "append",
        "--addr",
        addr,
        "ctx",
        "facts",
        "hello world",
        "--meta",
        "agent=a1",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let e: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(e["sequence"], 1);
    assert_eq!(e["payload"], "hello world");
    assert_eq!(e["payload_encoding"], "utf8");
    assert_eq!(e["metadata"]["agent"], "a1");
    assert_eq!(e["content_hash"].as_str().unwrap().len(), 64);

    // Binary payloads are shown as base64.
    let bin = dir.path().join("payload.bin");
    std::fs::write(&bin, [0u8, 159, 146, 150]).unwrap();
    let (code, out, err) = cli(&[
        "append",
        "--addr",
        addr,
        "ctx",
        "traces",
        "--file",
        bin.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let e: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(e["payload_encoding"], "base64");
    assert_eq!(e["payload"], "AJ+Slg==");

    let (code, out, _) = cli(&["get", "--addr", addr, "ctx"]);
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2);
    assert!(
        lines[0].starts_with("#1 ")
            && lines[0].contains("facts")
            && lines[0].ends_with("hello world"),
        "{}",
        lines[0]
    );
    assert!(lines[0].contains("agent=a1"));
    assert!(lines[1].contains("base64:AJ+Slg=="), "{}", lines[1]);

    let (code, out, _) = cli(&["get", "--addr", addr, "ctx", "--key", "traces", "--json"]);
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 1);

    let snap = dir.path().join("ctx.snap");
    let (code, _, err) = cli(&[
        "snapshot",
        "--addr",
        addr,
        "ctx",
        "--out",
        snap.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("2 entries"), "{err}");
    let (code, _, err) = cli(&[
        "load",
        "--addr",
        addr,
        "copy",
        "--in",
        snap.to_str().unwrap(),
        "--fail-if-exists",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("2 entries restored"), "{err}");
    let (code, _, err) = cli(&[
        "load",
        "--addr",
        addr,
        "copy",
        "--in",
        snap.to_str().unwrap(),
        "--fail-if-exists",
    ]);
    assert_ne!(code, 0);
    assert!(
        err.contains("AlreadyExists") || err.contains("already"),
        "{err}"
    );

    // The files can also be given positionally.
    let snap2 = dir.path().join("ctx2.snap");
    let (code, _, err) = cli(&["snapshot", "--addr", addr, "ctx", snap2.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = cli(&["load", "--addr", addr, "copy2", snap2.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("2 entries restored"), "{err}");

    // Errors are clear and exit non-zero.
    let (code, _, err) = cli(&["append", "--addr", addr, "", "facts", "x"]);
    assert_ne!(code, 0);
    assert!(err.contains("context_id"), "{err}");
    let (code, _, err) = cli(&[
        "snapshot",
        "--addr",
        addr,
        "missing",
        "--out",
        snap.to_str().unwrap(),
    ]);
    assert_ne!(code, 0);
    assert!(
        err.contains("NotFound") || err.contains("no entries"),
        "{err}"
    );
}

#[test]
fn watch_prints_entries_as_they_arrive() {
    let dir = data_dir();
    let node = Node::start(dir.path(), &[]);
    let addr = node.url.clone();
    cli(&["append", "--addr", &addr, "tail", "facts", "first"]);
    let mut child = Command::new(BIN)
        .args(["watch", "--addr", &addr, "tail", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let first: serde_json::Value =
        serde_json::from_str(&rx.recv_timeout(Duration::from_secs(30)).unwrap()).unwrap();
    assert_eq!(first["payload"], "first");
    for word in ["second", "third"] {
        cli(&["append", "--addr", &addr, "tail", "facts", word]);
        let e: serde_json::Value =
            serde_json::from_str(&rx.recv_timeout(Duration::from_secs(30)).unwrap()).unwrap();
        assert_eq!(e["payload"], word);
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn health_exits_zero_when_serving_and_says_why_not_otherwise() {
    let dir = data_dir();
    let node = Node::start(dir.path(), &[]);
    let (code, out, err) = cli(&["health", "--addr", &node.url]);
    assert_eq!((code, out.trim()), (0, "SERVING"), "{err}");
    let (code, out, _) = cli(&[
        "health",
        "--addr",
        &node.url,
        "--service",
        "converge.context.v1.ContextService",
    ]);
    assert_eq!((code, out.trim()), (0, "SERVING"));

    // Not serving, unknown, unreachable: non-zero with one line naming the reason.
    let (code, _, err) = cli(&[
        "health",
        "--addr",
        &node.url,
        "--service",
        "no.such.Service",
    ]);
    assert_eq!(code, 1);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("unknown service"), "{err}");
    let closed = format!("http://127.0.0.1:{}", support::free_port());
    let (code, _, err) = cli(&["health", "--addr", &closed, "--timeout-ms", "2000"]);
    assert_eq!(code, 1);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("cannot connect"), "{err}");
}
