//! Input validation for appends, with errors that name the field and the limit.

use crate::entry::Metadata;
use thiserror::Error;

/// Most bytes in a context id.
pub const MAX_CONTEXT_ID_BYTES: usize = 256;
/// Most bytes in an entry key.
pub const MAX_KEY_BYTES: usize = 128;
/// Default most bytes in a payload (4 MiB).
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 4 * 1024 * 1024;
/// Most metadata pairs on one entry.
pub const MAX_METADATA_PAIRS: usize = 64;
/// Most bytes in a metadata key.
pub const MAX_METADATA_KEY_BYTES: usize = 128;
/// Most bytes in a metadata value (4 KiB).
pub const MAX_METADATA_VALUE_BYTES: usize = 4 * 1024;

/// Configurable limits on appended entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted payload in bytes.
    pub max_payload_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
        }
    }
}

/// Why an append's input was refused. Messages name the field and the limit.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ValidationError {
    #[error("{field} must not be empty (1 to {max} bytes of UTF-8)")]
    Empty { field: &'static str, max: usize },
    #[error("{field} is {len} bytes; the limit is {max} bytes")]
    TooLong {
        field: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{field} contains a control character (U+{code:04X}) at byte {position}")]
    ControlCharacter {
        field: &'static str,
        code: u32,
        position: usize,
    },
    #[error("payload is {len} bytes; the limit is {max} bytes (max_payload_bytes)")]
    PayloadTooLarge { len: usize, max: usize },
    #[error("metadata has {count} pairs; the limit is {max} pairs")]
    TooManyMetadataPairs { count: usize, max: usize },
    #[error("metadata key {key:?} is {len} bytes; the limit is {max} bytes")]
    MetadataKeyTooLong { key: String, len: usize, max: usize },
    #[error("metadata value of key {key:?} is {len} bytes; the limit is {max} bytes")]
    MetadataValueTooLong { key: String, len: usize, max: usize },
    #[error(
        "received_lamport_clock {0} is too large: it must be at most 9223372036854775806 \
         (2^63 - 2), so the context's clock stays below 2^63 and can always advance"
    )]
    LamportOverflow(u64),
}

impl ValidationError {
    /// True for errors about sizes of the request's data (payload over the configured maximum),
    /// which map to `RESOURCE_EXHAUSTED` rather than `INVALID_ARGUMENT`.
    pub fn is_resource_exhausted(&self) -> bool {
        matches!(self, ValidationError::PayloadTooLarge { .. })
    }
}

fn printable_identifier(
    field: &'static str,
    value: &str,
    max: usize,
) -> Result<(), ValidationError> {
    if value.is_empty() {
        return Err(ValidationError::Empty { field, max });
    }
    if value.len() > max {
        return Err(ValidationError::TooLong {
            field,
            len: value.len(),
            max,
        });
    }
    if let Some((position, c)) = value.char_indices().find(|(_, c)| c.is_control()) {
        return Err(ValidationError::ControlCharacter {
            field,
            code: u32::from(c),
            position,
        });
    }
    Ok(())
}

/// A context id: 1–256 bytes of UTF-8 without control characters.
pub fn validate_context_id(context_id: &str) -> Result<(), ValidationError> {
    printable_identifier("context_id", context_id, MAX_CONTEXT_ID_BYTES)
}

/// An entry key: 1–128 bytes of UTF-8 without control characters.
pub fn validate_key(key: &str) -> Result<(), ValidationError> {
    printable_identifier("key", key, MAX_KEY_BYTES)
}

/// An append's idempotency key: 1–128 bytes of printable UTF-8.
pub fn validate_idempotency_key(key: &str) -> Result<(), ValidationError> {
    printable_identifier(
        "idempotency_key",
        key,
        crate::idempotency::MAX_IDEMPOTENCY_KEY_BYTES,
    )
}

/// A key filter of a read: empty (all keys) or a valid key.
pub fn validate_key_filter(key: &str) -> Result<(), ValidationError> {
    if key.is_empty() {
        Ok(())
    } else {
        validate_key(key)
    }
}

/// A payload no larger than the configured maximum.
pub fn validate_payload(payload: &[u8], limits: &Limits) -> Result<(), ValidationError> {
    if payload.len() > limits.max_payload_bytes {
        return Err(ValidationError::PayloadTooLarge {
            len: payload.len(),
            max: limits.max_payload_bytes,
        });
    }
    Ok(())
}

/// At most 64 pairs, keys ≤ 128 bytes, values ≤ 4 KiB.
pub fn validate_metadata(metadata: &Metadata) -> Result<(), ValidationError> {
    if metadata.len() > MAX_METADATA_PAIRS {
        return Err(ValidationError::TooManyMetadataPairs {
            count: metadata.len(),
            max: MAX_METADATA_PAIRS,
        });
    }
    for (k, v) in metadata {
        if k.len() > MAX_METADATA_KEY_BYTES {
            let mut shown: String = k.chars().take(32).collect();
            shown.push('…');
            return Err(ValidationError::MetadataKeyTooLong {
                key: shown,
                len: k.len(),
                max: MAX_METADATA_KEY_BYTES,
            });
        }
        if v.len() > MAX_METADATA_VALUE_BYTES {
            return Err(ValidationError::MetadataValueTooLong {
                key: k.clone(),
                len: v.len(),
                max: MAX_METADATA_VALUE_BYTES,
            });
        }
    }
    Ok(())
}

/// Everything an append carries, checked in the order a caller would fix it.
pub fn validate_append(
    context_id: &str,
    key: &str,
    payload: &[u8],
    metadata: &Metadata,
    received_lamport_clock: Option<u64>,
    limits: &Limits,
) -> Result<(), ValidationError> {
    validate_context_id(context_id)?;
    validate_key(key)?;
    validate_metadata(metadata)?;
    if let Some(r) = received_lamport_clock
        && r > crate::lamport::MAX_RECEIVED_LAMPORT
    {
        return Err(ValidationError::LamportOverflow(r));
    }
    validate_payload(payload, limits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_id_limits_are_named() {
        assert!(validate_context_id("ctx-1").is_ok());
        assert!(validate_context_id(&"a".repeat(256)).is_ok());
        let e = validate_context_id(&"a".repeat(257)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "context_id is 257 bytes; the limit is 256 bytes"
        );
        let e = validate_context_id("").unwrap_err();
        assert!(e.to_string().starts_with("context_id must not be empty"));
        let e = validate_context_id("a\nb").unwrap_err();
        assert_eq!(
            e.to_string(),
            "context_id contains a control character (U+000A) at byte 1"
        );
        // multi-byte UTF-8 counts bytes, not characters
        assert!(validate_context_id(&"é".repeat(129)).is_err());
    }

    #[test]
    fn key_limits_are_named() {
        assert!(validate_key(&"k".repeat(128)).is_ok());
        assert!(
            validate_key(&"k".repeat(129))
                .unwrap_err()
                .to_string()
                .contains("key is 129 bytes; the limit is 128")
        );
        assert!(validate_key("").is_err());
        assert!(validate_key("a\u{7f}").is_err());
        assert!(validate_key_filter("").is_ok());
    }

    #[test]
    fn payload_over_limit_is_resource_exhausted() {
        let limits = Limits {
            max_payload_bytes: 10,
        };
        assert!(validate_payload(&[0; 10], &limits).is_ok());
        let e = validate_payload(&[0; 11], &limits).unwrap_err();
        assert!(e.is_resource_exhausted());
        assert!(e.to_string().contains("limit is 10 bytes"));
        assert_eq!(Limits::default().max_payload_bytes, 4 * 1024 * 1024);
    }

    #[test]
    fn metadata_limits_are_named() {
        let mut m = Metadata::new();
        for i in 0..64 {
            m.insert(format!("k{i}"), "v".into());
        }
        assert!(validate_metadata(&m).is_ok());
        m.insert("one-more".into(), "v".into());
        assert!(matches!(
            validate_metadata(&m),
            Err(ValidationError::TooManyMetadataPairs { count: 65, max: 64 })
        ));
        let mut m = Metadata::new();
        m.insert("k".repeat(129), "v".into());
        assert!(
            validate_metadata(&m)
                .unwrap_err()
                .to_string()
                .contains("limit is 128 bytes")
        );
        let mut m = Metadata::new();
        m.insert("k".into(), "v".repeat(4097));
        assert!(
            validate_metadata(&m)
                .unwrap_err()
                .to_string()
                .contains("limit is 4096 bytes")
        );
        m.insert("k".into(), "v".repeat(4096));
        assert!(validate_metadata(&m).is_ok());
    }

    #[test]
    fn received_clock_beyond_the_bound_is_refused() {
        let m = Metadata::new();
        let l = Limits::default();
        let max = crate::lamport::MAX_RECEIVED_LAMPORT;
        assert!(validate_append("c", "k", b"", &m, Some(max), &l).is_ok());
        for r in [max + 1, u64::MAX - 1, u64::MAX] {
            let e = validate_append("c", "k", b"", &m, Some(r), &l).unwrap_err();
            assert_eq!(e, ValidationError::LamportOverflow(r));
            assert!(e.to_string().contains("9223372036854775806"), "{e}");
        }
    }
}
