//! What a request leaves in the log: every ContextService call runs in a `request` span with
//! its `rpc`, `context_id` and — once known — the `sequence` it concerns (the appended entry's,
//! the snapshot's or load's last, the last a read saw), so every event logged while serving it
//! (a forwarded call, a refused append, a cluster step) names them; its end is one `debug`
//! event with the duration and status.
//!
//! With `--log-format json` each line carries the span's fields under `span` (and the whole
//! chain under `spans`).

use ledger_proto::context::v1 as pb;
use std::time::Instant;
use tonic::{Response, Status};

/// The sequence a response concerns, for the request's span.
pub trait Concerns {
    fn sequence(&self) -> Option<u64>;
}

impl Concerns for pb::AppendResponse {
    fn sequence(&self) -> Option<u64> {
        self.entry.as_ref().map(|e| e.sequence)
    }
}

/// A batch concerns its last entry's sequence.
impl Concerns for pb::AppendBatchResponse {
    fn sequence(&self) -> Option<u64> {
        Some(self.last_sequence)
    }
}

impl Concerns for pb::GetResponse {
    fn sequence(&self) -> Option<u64> {
        Some(self.latest_sequence)
    }
}

impl Concerns for pb::SnapshotResponse {
    fn sequence(&self) -> Option<u64> {
        Some(self.sequence)
    }
}

impl Concerns for pb::LoadResponse {
    fn sequence(&self) -> Option<u64> {
        Some(self.latest_sequence)
    }
}

impl<T: Concerns> Concerns for Response<T> {
    fn sequence(&self) -> Option<u64> {
        self.get_ref().sequence()
    }
}

/// Records the outcome of `rpc` on `context_id` in the current (request) span and logs it.
pub fn log_result<T: Concerns>(
    rpc: &'static str,
    context_id: &str,
    start: Instant,
    r: &Result<T, Status>,
) {
    let micros = start.elapsed().as_micros() as u64;
    match r {
        Ok(ok) => {
            let sequence = ok.sequence();
            if let Some(s) = sequence {
                tracing::Span::current().record("sequence", s);
            }
            tracing::debug!(rpc, context_id, sequence, micros, "ok")
        }
        Err(s) => {
            tracing::debug!(rpc, context_id, micros, code = ?s.code(), message = s.message(), "failed")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing::instrument::WithSubscriber;

    /// A writer that keeps what the subscriber writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn the_request_span_names_the_context_and_the_sequence() {
        let out = Captured::default();
        let w = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(move || w.clone())
            .finish();
        async {
            let span = tracing::info_span!(
                "request",
                rpc = "Append",
                context_id = "ctx-7",
                sequence = tracing::field::Empty
            );
            let _g = span.enter();
            let ok: Result<_, Status> = Ok(pb::AppendResponse {
                entry: Some(pb::Entry {
                    sequence: 42,
                    ..Default::default()
                }),
            });
            log_result("Append", "ctx-7", Instant::now(), &ok);
            tracing::info!("inside the request");
        }
        .with_subscriber(subscriber)
        .await;
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let last: serde_json::Value =
            serde_json::from_str(text.lines().last().expect("a line")).unwrap();
        assert_eq!(last["span"]["name"], "request", "{text}");
        assert_eq!(last["span"]["context_id"], "ctx-7", "{text}");
        assert_eq!(last["span"]["sequence"], 42, "{text}");
    }
}
