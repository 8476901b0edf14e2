//! The node's lifecycle as a user sees it: restart keeps everything, SIGKILL during concurrent
//! appends loses no acknowledged entry, shutdown ends watchers with UNAVAILABLE, and
//! configuration precedence and rejection of bad settings.

mod support;

use ledger_core::merkle::reference;
use ledger_core::{Hash, Metadata};
use std::process::Command;
use std::time::Duration;
use support::{
    BIN, Launch, Node, append_until_killed, assert_acknowledged_kept, data_dir, free_port, path_str,
};
use tokio_stream::StreamExt;

#[tokio::test]
async fn sigterm_and_restart_keep_everything_and_sequences_continue() {
    let dir = data_dir();
    let mut node = Node::start(dir.path(), &[]);
    let c = node.client().await;
    for i in 0..50u8 {
        c.append("keep", "facts", vec![i], Metadata::new(), None)
            .await
            .unwrap();
    }
    let before = c.get("keep", "", 0, 0).await.unwrap().entries;
    // Off the runtime thread: the client's connection must keep running to take the node's
    // GOAWAY, or the node waits out its grace period for it.
    let status = tokio::task::spawn_blocking(move || node.terminate())
        .await
        .unwrap();
    assert!(status.success(), "clean exit on SIGTERM: {status:?}");

    let node = Node::start(dir.path(), &[]);
    let c = node.client().await;
    assert_eq!(c.get("keep", "", 0, 0).await.unwrap().entries, before);
    let e = c
        .append("keep", "facts", vec![], Metadata::new(), None)
        .await
        .unwrap();
    assert_eq!(e.sequence, 51);
    assert_eq!(e.lamport_clock, 51);
}

#[tokio::test]
async fn sigkill_during_concurrent_appends_loses_no_acknowledged_entry() {
    let dir = data_dir();
    for round in 0..3 {
        let mut node = Node::start(dir.path(), &[]);
        let c = node.client().await;
        let append = move |ctx: String, payload: Vec<u8>| {
            let c = c.clone();
            async move {
                c.append(&ctx, "facts", payload, Metadata::new(), None)
                    .await
            }
        };
        let acked = append_until_killed(&mut node, 16, 4, 500 + 500 * round, append).await;

        let node = Node::start(dir.path(), &[]);
        let c = node.client().await;
        for k in 0..4 {
            let ctx = format!("k{k}");
            let entries = assert_acknowledged_kept(&c, &ctx, &acked).await;
            for e in &entries {
                assert!(e.verify_content_hash());
            }
            let snap = c.snapshot(&ctx).await.unwrap();
            let leaves: Vec<Hash> = entries.iter().map(|e| e.content_hash).collect();
            assert_eq!(
                snap.metadata.unwrap().merkle_root,
                reference::root(&leaves).as_bytes().to_vec()
            );
        }
    }
}

#[tokio::test]
async fn shutdown_ends_watch_streams_with_unavailable() {
    let dir = data_dir();
    let mut node = Node::start(dir.path(), &[]);
    let c = node.client().await;
    c.append("w", "facts", vec![1], Metadata::new(), None)
        .await
        .unwrap();
    let mut stream = c.watch("w", "", 0).await.unwrap();
    assert_eq!(stream.next().await.unwrap().unwrap().sequence, 1);
    let pid = node.pid();
    let term = tokio::task::spawn_blocking(move || node.terminate());
    let end = tokio::time::timeout(Duration::from_secs(30), stream.next())
        .await
        .unwrap();
    match end {
        Some(Err(e)) => {
            assert_eq!(e.code(), Some(tonic::Code::Unavailable), "{e}");
            assert!(e.to_string().contains("from_sequence 1"), "{e}");
        }
        other => panic!("expected UNAVAILABLE, got {other:?} (pid {pid})"),
    }
    assert!(term.await.unwrap().success());
}

#[tokio::test]
async fn configuration_precedence_file_env_grpc_port_flag() {
    let dir = data_dir();
    let file = dir.path().join("ledger.toml");
    let data = dir.path().join("from-file");
    std::fs::write(
        &file,
        format!(
            "data_dir = {:?}\ndurability = \"buffered\"\nhost = \"127.0.0.1\"\nport = 0\n",
            data
        ),
    )
    .unwrap();
    let file_arg = path_str(&file);
    let serve = |args: &[&str]| {
        let mut all = vec!["--config", file_arg.as_str()];
        all.extend_from_slice(args);
        all.iter().map(|a| a.to_string()).collect::<Vec<String>>()
    };
    // The file alone.
    let node = Node::launch(Launch::bare(BIN).args(&serve(&[])));
    assert_eq!(node.listening["durability"], "buffered");
    assert_eq!(node.listening["data_dir"], data.display().to_string());
    drop(node);
    // GRPC_PORT (compatibility) over the file.
    let port = free_port();
    let node = Node::launch(
        Launch::bare(BIN)
            .args(&serve(&[]))
            .envs(&[("GRPC_PORT", port.to_string())]),
    );
    assert_eq!(node.addr.port(), port);
    drop(node);
    // LEDGER_* over GRPC_PORT and the file.
    let port2 = free_port();
    let node = Node::launch(Launch::bare(BIN).args(&serve(&[])).envs(&[
        ("GRPC_PORT", port.to_string()),
        ("LEDGER_PORT", port2.to_string()),
        ("LEDGER_DURABILITY", "sync".to_owned()),
    ]));
    assert_eq!(node.addr.port(), port2);
    assert_eq!(node.listening["durability"], "sync");
    drop(node);
    // Flags over everything.
    let node = Node::launch(
        Launch::bare(BIN)
            .args(&serve(&["--port", "0", "--durability", "buffered"]))
            .envs(&[
                ("LEDGER_PORT", port2.to_string()),
                ("LEDGER_DURABILITY", "sync".to_owned()),
            ]),
    );
    assert_ne!(node.addr.port(), port2);
    assert_eq!(node.listening["durability"], "buffered");
    let c = node.client().await;
    c.append("cfg", "facts", vec![], Metadata::new(), None)
        .await
        .unwrap();
}

#[test]
fn bad_configuration_is_rejected_naming_the_setting() {
    let dir = data_dir();
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut cmd = Command::new(BIN);
        cmd.arg("serve").args([
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--host",
            "127.0.0.1",
        ]);
        cmd.args(args);
        for (k, _) in std::env::vars() {
            if k.starts_with("LEDGER_") || k == "GRPC_PORT" {
                cmd.env_remove(k);
            }
        }
        cmd.envs(env.iter().copied());
        let out = cmd.output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, err) = run(&[], &[("LEDGER_PORT", "seventy")]);
    assert!(!ok);
    assert!(err.contains("port"), "{err}");
    let (ok, err) = run(&[], &[("LEDGER_DURABILITY", "sometimes")]);
    assert!(!ok);
    assert!(err.contains("durability"), "{err}");
    let (ok, err) = run(&["--max-payload-bytes", "0"], &[]);
    assert!(!ok);
    assert!(err.contains("max_payload_bytes"), "{err}");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "prot = 50051\n").unwrap();
    let (ok, err) = run(&["--config", bad.to_str().unwrap()], &[]);
    assert!(!ok);
    assert!(err.contains("prot"), "{err}");
    let (ok, err) = run(&["--config", "/nonexistent.toml"], &[]);
    assert!(!ok);
    assert!(err.contains("does not exist"), "{err}");
}

#[tokio::test]
async fn a_node_keeps_its_id_and_names_itself_in_every_response() {
    let dir = data_dir();
    let (id, incarnation) = {
        let node = Node::start(dir.path(), &[]);
        let id = node.listening["node_id"].as_str().unwrap().to_owned();
        let inc = node.listening["incarnation"].as_str().unwrap().to_owned();
        assert!(id.starts_with("node-"), "{id}");
        let c = node.client().await;
        // Successful and failed calls alike say which node answered.
        let ok = c
            .raw()
            .get(ledger_client::ledger_proto::context::v1::GetRequest {
                context_id: "x".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(ok.metadata().get("x-ledger-node").unwrap(), id.as_str());
        let err = c
            .raw()
            .get(ledger_client::ledger_proto::context::v1::GetRequest::default())
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert_eq!(err.metadata().get("x-ledger-node").unwrap(), id.as_str());
        (id, inc)
    };
    // The same data dir is the same node and incarnation after a restart.
    let node = Node::start(dir.path(), &[]);
    assert_eq!(node.listening["node_id"], id.as_str());
    assert_eq!(node.listening["incarnation"], incarnation.as_str());
    drop(node);
    // A different node_id for this data dir is refused at start.
    let (code, _, err) = support::cli(&[
        "serve",
        "--data-dir",
        &path_str(dir.path()),
        "--port",
        "0",
        "--node-id",
        "someone-else",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("belongs to node"), "{err}");
    // A configured id on a new data dir is used as given, with a new incarnation.
    let other = data_dir();
    let node = Node::start(other.path(), &["--node-id", &id]);
    assert_eq!(node.listening["node_id"], id.as_str());
    assert_ne!(node.listening["incarnation"], incarnation.as_str());
}
