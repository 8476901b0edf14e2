//! Idempotent appends: what identifies "the same append" when a client retries.
//!
//! A retry carries the same idempotency key as the first attempt. The ledger answers it with the
//! entry stored the first time only if the retry also carries the same key (entry kind), payload
//! and metadata, compared by [`fingerprint`]; the same idempotency key on a different append is
//! a client bug and is refused.

use crate::entry::Metadata;
use crate::hash::{Hash, sha256};

/// Longest idempotency key, in bytes.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 128;

/// SHA-256 over what an append carries that ends up in its entry: the entry key, the payload and
/// the metadata, each length-prefixed (u64 big-endian) so no two appends share an encoding.
/// The received Lamport clock is left out: a retry may carry a newer one.
pub fn fingerprint(key: &str, payload: &[u8], metadata: &Metadata) -> Hash {
    let mut buf = Vec::with_capacity(32 + key.len() + payload.len());
    let mut put = |b: &[u8]| {
        buf.extend_from_slice(&(b.len() as u64).to_be_bytes());
        buf.extend_from_slice(b);
    };
    put(key.as_bytes());
    put(payload);
    put(&(metadata.len() as u64).to_be_bytes());
    for (k, v) in metadata {
        put(k.as_bytes());
        put(v.as_bytes());
    }
    sha256(&buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_tells_appends_apart() {
        let md = |pairs: &[(&str, &str)]| -> Metadata {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let base = fingerprint("facts", b"x", &md(&[("a", "1")]));
        assert_eq!(base, fingerprint("facts", b"x", &md(&[("a", "1")])));
        assert_ne!(base, fingerprint("facts", b"y", &md(&[("a", "1")])));
        assert_ne!(base, fingerprint("evals", b"x", &md(&[("a", "1")])));
        assert_ne!(base, fingerprint("facts", b"x", &md(&[("a", "2")])));
        assert_ne!(base, fingerprint("facts", b"x", &md(&[])));
        // Length prefixes keep field boundaries: "ab"+"c" is not "a"+"bc".
        assert_ne!(
            fingerprint("ab", b"c", &md(&[])),
            fingerprint("a", b"bc", &md(&[]))
        );
    }
}
