//! An entry as one JSON object: what `converge-ledger get --json` prints and the observer page
//! shows. The payload is UTF-8 text when it is printable, else base64, with the encoding named.

use base64::Engine;
use ledger_core::Entry;

/// Payload as UTF-8 text when it is printable, else base64; with the encoding used.
pub fn payload_text(payload: &[u8]) -> (String, &'static str) {
    match std::str::from_utf8(payload) {
        Ok(s) if s.chars().all(|c| !c.is_control() || c == '\n' || c == '\t') => {
            (s.to_owned(), "utf8")
        }
        _ => (
            base64::engine::general_purpose::STANDARD.encode(payload),
            "base64",
        ),
    }
}

/// One JSON object describing an entry.
pub fn entry_json(e: &Entry) -> serde_json::Value {
    let (payload, encoding) = payload_text(&e.payload);
    serde_json::json!({
        "id": e.id,
        "key": e.key,
        "sequence": e.sequence,
        "appended_at_ns": e.appended_at_ns,
        "lamport_clock": e.lamport_clock,
        "content_hash": e.content_hash.to_hex(),
        "metadata": e.metadata,
        "payload": payload,
        "payload_encoding": encoding,
    })
}
