//! End-to-end over gRPC against the real binary: every RPC, every error code, the original
//! field numbers, Get paging, health and reflection.

mod support;

use ledger_client::ledger_proto::context::v1 as pb;
use ledger_core::merkle::reference;
use ledger_core::{Hash, Metadata, snapshot};
use support::{Node, data_dir};
use tonic::Code;

fn md(pairs: &[(&str, &str)]) -> Metadata {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[tokio::test]
async fn every_rpc_round_trips() {
    let dir = data_dir();
    let node = Node::start(dir.path(), &[]);
    let c = node.client().await;

    let e1 = c
        .append(
            "ctx",
            "facts",
            b"{\"a\":1}".to_vec(),
            md(&[("agent", "planner")]),
            None,
        )
        .await
        .unwrap();
    assert_eq!(e1.sequence, 1);
    assert_eq!(e1.lamport_clock, 1);
    assert!(
        e1.verify_content_hash(),
        "content hash recomputed by the client matches"
    );
    assert_eq!(uuid_version(&e1.id), 7);
    let e2 = c
        .append("ctx", "proposals", vec![0, 255], Metadata::new(), Some(10))
        .await
        .unwrap();
    assert_eq!((e2.sequence, e2.lamport_clock), (2, 11));

    let page = c.get("ctx", "", 0, 0).await.unwrap();
    assert_eq!(page.entries, vec![e1.clone(), e2.clone()]);
    assert_eq!(page.latest_sequence, 2);
    assert!(!page.has_more);
    let facts = c.get("ctx", "facts", 0, 0).await.unwrap();
    assert_eq!(facts.entries, vec![e1.clone()]);
    let after = c.get("ctx", "", 1, 0).await.unwrap();
    assert_eq!(after.entries, vec![e2.clone()]);
    let empty = c.get("never-written", "", 0, 0).await.unwrap();
    assert!(empty.entries.is_empty());
    assert_eq!(empty.latest_sequence, 0);

    let snap = c.snapshot("ctx").await.unwrap();
    assert_eq!(snap.sequence, 2);
    let meta = snap.metadata.clone().unwrap();
    assert_eq!((meta.entry_count, meta.version), (2, 1));
    let root = reference::root(&[e1.content_hash, e2.content_hash]);
    assert_eq!(meta.merkle_root, root.as_bytes().to_vec());
    let decoded = snapshot::decode(&snap.snapshot).unwrap();
    assert_eq!(decoded.entries, vec![e1.clone(), e2.clone()]);

    let loaded = c.load("copy", snap.snapshot.clone(), true).await.unwrap();
    assert_eq!((loaded.entries_restored, loaded.latest_sequence), (2, 2));
    assert_eq!(c.get("copy", "", 0, 0).await.unwrap().entries, vec![e1, e2]);
    let again = c.load("copy", snap.snapshot, false).await.unwrap();
    assert_eq!((again.entries_restored, again.latest_sequence), (0, 2));
}

fn uuid_version(id: &str) -> u32 {
    // xxxxxxxx-xxxx-Vxxx-...
    id.chars().nth(14).and_then(|c| c.to_digit(16)).unwrap_or(0)
}

async fn code_of<T>(r: Result<T, ledger_client::ClientError>) -> (Code, String) {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(ledger_client::ClientError::Status(s)) => (s.code(), s.message().to_owned()),
        Err(e) => panic!("expected a status, got {e}"),
    }
}

#[tokio::test]
async fn bad_input_gets_clear_status_and_stores_nothing() {
    let dir = data_dir();
    let node = Node::start(dir.path(), &["--max-payload-bytes", "1024"]);
    let c = node.client().await;
    c.append("ctx", "facts", b"ok".to_vec(), Metadata::new(), None)
        .await
        .unwrap();

    let long_ctx = "c".repeat(257);
    let long_key = "k".repeat(129);
    let many: Metadata = (0..65).map(|i| (format!("k{i}"), "v".into())).collect();
    let cases: Vec<(&str, &str, Vec<u8>, Metadata, &str)> = vec![
        ("", "facts", vec![], Metadata::new(), "context_id"),
        (
            &long_ctx,
            "facts",
            vec![],
            Metadata::new(),
            "context_id is 257 bytes; the limit is 256",
        ),
        (
            "ctx\u{7}",
            "facts",
            vec![],
            Metadata::new(),
            "control character",
        ),
        ("ctx", "", vec![], Metadata::new(), "key"),
        (
            "ctx",
            &long_key,
            vec![],
            Metadata::new(),
            "the limit is 128",
        ),
        ("ctx", "facts", vec![], many, "64 pairs"),
        (
            "ctx",
            "facts",
            vec![],
            md(&[("k", &"v".repeat(4097))]),
            "4096",
        ),
    ];
    for (ctx, key, payload, metadata, needle) in cases {
        let (code, msg) = code_of(c.append(ctx, key, payload, metadata, None).await).await;
        assert_eq!(code, Code::InvalidArgument, "{msg}");
        assert!(msg.contains(needle), "{msg:?} should mention {needle:?}");
    }
    let (code, msg) = code_of(
        c.append("ctx", "facts", vec![0; 1025], Metadata::new(), None)
            .await,
    )
    .await;
    assert_eq!(code, Code::ResourceExhausted);
    assert!(msg.contains("1025") && msg.contains("1024"), "{msg}");
    let (code, _) = code_of(
        c.append("ctx", "facts", vec![], Metadata::new(), Some(u64::MAX))
            .await,
    )
    .await;
    assert_eq!(code, Code::InvalidArgument);
    let (code, _) = code_of(c.get("", "", 0, 0).await).await;
    assert_eq!(code, Code::InvalidArgument);

    // Nothing was stored by any of them.
    let page = c.get("ctx", "", 0, 0).await.unwrap();
    assert_eq!(page.latest_sequence, 1);
}

#[tokio::test]
async fn snapshot_and_load_errors_have_their_codes() {
    let dir = data_dir();
    let node = Node::start(dir.path(), &[]);
    let c = node.client().await;
    let (code, msg) = code_of(c.snapshot("unknown").await).await;
    assert_eq!(code, Code::NotFound, "{msg}");

    for i in 0..5u8 {
        c.append("a", "facts", vec![i], Metadata::new(), None)
            .await
            .unwrap();
    }
    let snap = c.snapshot("a").await.unwrap().snapshot;

    // Malformed and tampered blobs.
    let (code, _) = code_of(c.load("x", b"not a snapshot".to_vec(), false).await).await;
    assert_eq!(code, Code::InvalidArgument);
    let mut tampered = snap.clone();
    tampered[40] ^= 1;
    let (code, msg) = code_of(c.load("x", tampered, false).await).await;
    assert_eq!(code, Code::InvalidArgument, "{msg}");
    // A future version.
    let mut future = snap.clone();
    future[8..10].copy_from_slice(&9u16.to_be_bytes());
    let (code, msg) = code_of(c.load("x", future, false).await).await;
    assert_eq!(code, Code::InvalidArgument);
    assert!(msg.contains("unsupported snapshot version 9"), "{msg}");
    assert_eq!(
        c.get("x", "", 0, 0).await.unwrap().latest_sequence,
        0,
        "nothing loaded"
    );

    // fail_if_exists on a non-empty context.
    let (code, _) = code_of(c.load("a", snap.clone(), true).await).await;
    assert_eq!(code, Code::AlreadyExists);

    // A diverging history: same ids, rewritten entry 3.
    let mut forged = snapshot::decode(&snap).unwrap();
    forged.entries[2].payload = b"rewritten".to_vec();
    forged.entries[2].content_hash = forged.entries[2].compute_content_hash();
    let blob = snapshot::encode("a", 0, &forged.entries).unwrap();
    let (code, msg) = code_of(c.load("a", blob, false).await).await;
    assert_eq!(code, Code::FailedPrecondition);
    assert!(msg.contains("sequence 3"), "{msg}");
    let page = c.get("a", "", 0, 0).await.unwrap();
    assert_eq!(page.entries[2].payload, vec![2], "nothing overwritten");
}

/// The original contract: only field numbers 1-6 of Entry and 1-4 of AppendRequest.
mod v0 {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Entry {
        #[prost(string, tag = "1")]
        pub id: String,
        #[prost(string, tag = "2")]
        pub key: String,
        #[prost(bytes = "vec", tag = "3")]
        pub payload: Vec<u8>,
        #[prost(uint64, tag = "4")]
        pub sequence: u64,
        #[prost(uint64, tag = "5")]
        pub appended_at_ns: u64,
        #[prost(map = "string, string", tag = "6")]
        pub metadata: std::collections::HashMap<String, String>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AppendRequest {
        #[prost(string, tag = "1")]
        pub context_id: String,
        #[prost(string, tag = "2")]
        pub key: String,
        #[prost(bytes = "vec", tag = "3")]
        pub payload: Vec<u8>,
        #[prost(map = "string, string", tag = "4")]
        pub metadata: std::collections::HashMap<String, String>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AppendResponse {
        #[prost(message, optional, tag = "1")]
        pub entry: Option<Entry>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct GetRequest {
        #[prost(string, tag = "1")]
        pub context_id: String,
        #[prost(string, tag = "2")]
        pub key: String,
        #[prost(uint64, tag = "3")]
        pub after_sequence: u64,
        #[prost(uint32, tag = "4")]
        pub limit: u32,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct GetResponse {
        #[prost(message, repeated, tag = "1")]
        pub entries: Vec<Entry>,
        #[prost(uint64, tag = "2")]
        pub latest_sequence: u64,
    }
}

async fn call_v0<Req, Resp>(url: &str, path: &'static str, req: Req) -> Resp
where
    Req: prost::Message + Send + Sync + 'static,
    Resp: prost::Message + Default + Send + Sync + 'static,
{
    let channel = tonic::transport::Endpoint::from_shared(url.to_owned())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let codec: tonic_prost::ProstCodec<Req, Resp> = tonic_prost::ProstCodec::default();
    grpc.unary(
        tonic::Request::new(req),
        tonic::codegen::http::uri::PathAndQuery::from_static(path),
        codec,
    )
    .await
    .unwrap()
    .into_inner()
}

#[tokio::test]
async fn clients_of_the_original_field_numbers_keep_working() {
    let dir = data_dir();
    let node = Node::start(dir.path(), &[]);
    let req = v0::AppendRequest {
        context_id: "old".into(),
        key: "facts".into(),
        payload: b"legacy".to_vec(),
        metadata: [("from".to_string(), "v0".to_string())].into(),
    };
    let resp: v0::AppendResponse =
        call_v0(&node.url, "/converge.context.v1.ContextService/Append", req).await;
    let e = resp.entry.unwrap();
    assert_eq!(
        (e.sequence, e.key.as_str(), e.payload.as_slice()),
        (1, "facts", &b"legacy"[..])
    );
    assert_eq!(e.metadata.get("from").map(String::as_str), Some("v0"));
    assert!(!e.id.is_empty() && e.appended_at_ns > 0);
    let resp: v0::GetResponse = call_v0(
        &node.url,
        "/converge.context.v1.ContextService/Get",
        v0::GetRequest {
            context_id: "old".into(),
            key: String::new(),
            after_sequence: 0,
            limit: 0,
        },
    )
    .await;
    assert_eq!(resp.latest_sequence, 1);
    assert_eq!(resp.entries, vec![e]);
    // And a new client sees the extension fields of the same entry.
    let c = node.client().await;
    let page = c.get("old", "", 0, 0).await.unwrap();
    assert_eq!(page.entries[0].lamport_clock, 1);
    assert!(page.entries[0].verify_content_hash());
}

#[tokio::test]
async fn get_is_cut_at_the_response_size_with_has_more() {
    let dir = data_dir();
    let node = Node::start(dir.path(), &["--max-response-bytes", "4096"]);
    let c = node.client().await;
    for i in 0..40u32 {
        c.append("big", "facts", vec![i as u8; 500], Metadata::new(), None)
            .await
            .unwrap();
    }
    let first = c.get("big", "", 0, 0).await.unwrap();
    assert!(first.has_more);
    assert!(!first.entries.is_empty() && first.entries.len() < 40);
    let bytes: usize = first.entries.iter().map(|e| e.encoded_len()).sum();
    assert!(bytes <= 4096, "{bytes} bytes in a 4096-byte response");
    assert_eq!(
        first.next_after_sequence,
        first.entries.last().unwrap().sequence
    );
    assert_eq!(first.latest_sequence, 40);
    // Following pages yields everything exactly once.
    let all = c.get_all("big", "", 0).await.unwrap();
    assert!(all.iter().map(|e| e.sequence).eq(1..=40));
    // A limit cuts too.
    let limited = c.get("big", "", 10, 3).await.unwrap();
    assert_eq!(
        limited
            .entries
            .iter()
            .map(|e| e.sequence)
            .collect::<Vec<_>>(),
        vec![11, 12, 13]
    );
    assert!(limited.has_more);
    assert_eq!(limited.next_after_sequence, 13);
    let leaves: Vec<Hash> = all.iter().map(|e| e.content_hash).collect();
    let snap = c.snapshot("big").await.unwrap();
    assert_eq!(
        snap.metadata.unwrap().merkle_root,
        reference::root(&leaves).as_bytes().to_vec()
    );
}

#[tokio::test]
async fn health_and_reflection_are_served() {
    let dir = data_dir();
    let node = Node::start(dir.path(), &[]);
    let channel = node.channel().await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let r = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "converge.context.v1.ContextService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        r.status(),
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
    for service in [
        "converge.ledger.v1.IntegrityService",
        "converge.ledger.v1.AppendPipeline",
    ] {
        let r = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            r.status(),
            tonic_health::pb::health_check_response::ServingStatus::Serving,
            "{service}"
        );
    }

    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let mut refl = ServerReflectionClient::new(channel);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = refl
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .unwrap()
        .into_inner();
    let resp = stream.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = resp.message_response else {
        panic!("unexpected reflection response")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"converge.context.v1.ContextService".to_string()),
        "{names:?}"
    );
    for service in [
        "grpc.health.v1.Health",
        "converge.ledger.v1.IntegrityService",
        "converge.ledger.v1.AppendPipeline",
    ] {
        assert!(names.contains(&service.to_string()), "{names:?}");
    }
    let _ = pb::Entry::default();
}
