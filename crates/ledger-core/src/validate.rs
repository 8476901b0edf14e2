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
/// Default most items in one batch append.
pub const DEFAULT_MAX_BATCH_ITEMS: usize = 10_000;
/// Default most payload bytes in one batch append (16 MiB).
pub const DEFAULT_MAX_BATCH_BYTES: usize = 16 * 1024 * 1024;

/// Configurable limits on appended entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted payload in bytes.
    pub max_payload_bytes: usize,
    /// Most items in one batch append.
    pub max_batch_items: usize,
    /// Most payload bytes (summed over its items) in one batch append.
    pub max_batch_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
            max_batch_items: DEFAULT_MAX_BATCH_ITEMS,
            max_batch_bytes: DEFAULT_MAX_BATCH_BYTES,
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
    #[error("a batch append needs at least one item")]
    EmptyBatch,
    #[error("the batch has {count} items; the limit is {max} items (max_batch_items)")]
    TooManyBatchItems { count: usize, max: usize },
    #[error("the batch's payloads total {len} bytes; the limit is {max} bytes (max_batch_bytes)")]
    BatchTooLarge { len: usize, max: usize },
    #[error(
        "batch item {index} has an idempotency key; batch items cannot carry idempotency keys \
         (append them one by one to make each retry-safe)"
    )]
    BatchItemIdempotencyKey { index: usize },
    #[error("batch item {index} names context {item:?}, but the batch appends to {batch:?}")]
    BatchItemContext {
        index: usize,
        item: String,
        batch: String,
    },
    #[error("batch item {index}: {error}")]
    BatchItem {
        index: usize,
        error: Box<ValidationError>,
    },
}

impl ValidationError {
    /// True for errors about sizes of the request's data (payload over the configured maximum),
    /// which map to `RESOURCE_EXHAUSTED` rather than `INVALID_ARGUMENT`.
    pub fn is_resource_exhausted(&self) -> bool {
        match self {
            ValidationError::PayloadTooLarge { .. }
            | ValidationError::TooManyBatchItems { .. }
            | ValidationError::BatchTooLarge { .. } => true,
            ValidationError::BatchItem { error, .. } => error.is_resource_exhausted(),
            _ => false,
        }
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

/// A batch append to `context_id`: 1 to `max_batch_items` items whose payloads total at most
/// `max_batch_bytes`, each a valid append of that context without an idempotency key (an
/// item's own `context_id` is empty or the batch's). An item's error names its index
/// (0-based).
pub fn validate_batch(
    context_id: &str,
    items: &[crate::entry::NewEntry],
    limits: &Limits,
) -> Result<(), ValidationError> {
    validate_context_id(context_id)?;
    if items.is_empty() {
        return Err(ValidationError::EmptyBatch);
    }
    if items.len() > limits.max_batch_items {
        return Err(ValidationError::TooManyBatchItems {
            count: items.len(),
            max: limits.max_batch_items,
        });
    }
    let len: usize = items.iter().map(|e| e.payload.len()).sum();
    if len > limits.max_batch_bytes {
        return Err(ValidationError::BatchTooLarge {
            len,
            max: limits.max_batch_bytes,
        });
    }
    for (index, e) in items.iter().enumerate() {
        if e.idempotency_key.is_some() {
            return Err(ValidationError::BatchItemIdempotencyKey { index });
        }
        if !e.context_id.is_empty() && e.context_id != context_id {
            return Err(ValidationError::BatchItemContext {
                index,
                item: e.context_id.clone(),
                batch: context_id.to_owned(),
            });
        }
        validate_append(
            context_id,
            &e.key,
            &e.payload,
            &e.metadata,
            e.received_lamport_clock,
            limits,
        )
        .map_err(|error| ValidationError::BatchItem {
            index,
            error: Box::new(error),
        })?;
    }
    Ok(())
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
            ..Limits::default()
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

    fn item(key: &str, payload: &[u8]) -> crate::entry::NewEntry {
        crate::entry::NewEntry::new("", key, payload.to_vec(), Metadata::default(), None)
    }

    #[test]
    fn batch_item_errors_name_the_item() {
        let limits = Limits::default();
        let items = vec![item("a", b"1"), item("", b"2")];
        let e = validate_batch("ctx", &items, &limits).unwrap_err();
        assert_eq!(
            e.to_string(),
            "batch item 1: key must not be empty (1 to 128 bytes of UTF-8)"
        );
        assert!(!e.is_resource_exhausted());
        let mut keyed = item("a", b"1");
        keyed.idempotency_key = Some("k".into());
        let e = validate_batch("ctx", &[item("a", b""), keyed], &limits).unwrap_err();
        assert_eq!(e, ValidationError::BatchItemIdempotencyKey { index: 1 });
        let mut other = item("a", b"1");
        other.context_id = "other".into();
        assert!(matches!(
            validate_batch("ctx", &[other], &limits),
            Err(ValidationError::BatchItemContext { index: 0, .. })
        ));
        assert_eq!(
            validate_batch("ctx", &[], &limits),
            Err(ValidationError::EmptyBatch)
        );
    }

    #[test]
    fn batch_over_limits_is_resource_exhausted() {
        let limits = Limits {
            max_payload_bytes: 4,
            max_batch_items: 2,
            max_batch_bytes: 6,
        };
        assert!(validate_batch("ctx", &[item("a", b"123"), item("a", b"456")], &limits).is_ok());
        let e = validate_batch(
            "ctx",
            &[item("a", b""), item("a", b""), item("a", b"")],
            &limits,
        )
        .unwrap_err();
        assert!(e.is_resource_exhausted(), "{e}");
        assert!(e.to_string().contains("max_batch_items"), "{e}");
        let e =
            validate_batch("ctx", &[item("a", b"1234"), item("a", b"123")], &limits).unwrap_err();
        assert!(e.is_resource_exhausted(), "{e}");
        assert!(e.to_string().contains("max_batch_bytes"), "{e}");
        let e = validate_batch("ctx", &[item("a", b"12345")], &limits).unwrap_err();
        assert!(e.is_resource_exhausted(), "{e}");
        assert!(e.to_string().starts_with("batch item 0: payload"), "{e}");
    }
}
