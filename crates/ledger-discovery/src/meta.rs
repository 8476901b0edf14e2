//! The node-metadata encoding carried in memberlist's per-node meta (at most
//! [`MAX_META_LEN`] = 512 bytes, memberlist's limit).
//!
//! ```text
//! u8  format            = 1
//! u16 len, bytes        grpc_addr   (UTF-8, big-endian length)
//! u16 len, bytes        public_key
//! u16 len, bytes        version     (UTF-8)
//! u8  role              0 = member, 1 = mirror
//! u16 len, bytes        incarnation (UTF-8)
//! u8  flags             bit 0: leaving (set just before a graceful leave)
//! u8  count, then count × (u16 len, bytes)
//!                       mirror_prefixes (UTF-8; absent in metadata of older versions: none)
//! u64 views_settled     the placement view version this node has settled (big-endian;
//!                       absent in metadata of older versions: 0)
//! ...                   later formats may append fields; a decoder ignores trailing bytes
//! ```
//!
//! The `leaving` flag is how peers tell a graceful leave from a crash: memberlist 0.8 does not
//! report the `left` state reliably (see the crate docs), so a node announces its intent in its
//! metadata first, the way Serf broadcasts a leave intent before leaving.

use crate::error::DiscoveryError;
use crate::model::{GossipRole, NodeMeta};

/// memberlist's limit on a node's metadata.
pub const MAX_META_LEN: usize = 512;

const FORMAT: u8 = 1;

const LEAVING: u8 = 1;

/// Bytes `prefixes` take in the encoded metadata, besides their count byte: a 2-byte length
/// and the prefix, each.
pub fn encoded_prefixes_len(prefixes: &[String]) -> usize {
    prefixes.iter().map(|p| 2 + p.len()).sum()
}

/// Encodes `meta` and the `leaving` flag; fails if the result would exceed [`MAX_META_LEN`].
pub(crate) fn encode(meta: &NodeMeta, leaving: bool) -> Result<Vec<u8>, DiscoveryError> {
    let mut out = Vec::with_capacity(64);
    out.push(FORMAT);
    put(&mut out, meta.grpc_addr.as_bytes())?;
    put(&mut out, &meta.public_key)?;
    put(&mut out, meta.version.as_bytes())?;
    out.push(match meta.role {
        GossipRole::Member => 0,
        GossipRole::Mirror => 1,
    });
    put(&mut out, meta.incarnation.as_bytes())?;
    out.push(if leaving { LEAVING } else { 0 });
    // 256 prefixes take at least 768 bytes: far over the limit.
    let count =
        u8::try_from(meta.mirror_prefixes.len()).map_err(|_| DiscoveryError::MetaTooLarge {
            len: out.len() + encoded_prefixes_len(&meta.mirror_prefixes),
            max: MAX_META_LEN,
        })?;
    out.push(count);
    for prefix in &meta.mirror_prefixes {
        put(&mut out, prefix.as_bytes())?;
    }
    out.extend_from_slice(&meta.views_settled.to_be_bytes());
    if out.len() > MAX_META_LEN {
        return Err(DiscoveryError::MetaTooLarge {
            len: out.len(),
            max: MAX_META_LEN,
        });
    }
    Ok(out)
}

/// Decodes what [`encode`] wrote: the metadata and the `leaving` flag.
pub(crate) fn decode(bytes: &[u8]) -> Result<(NodeMeta, bool), DiscoveryError> {
    let mut r = Reader { bytes };
    let format = r.u8("format")?;
    if format != FORMAT {
        return Err(invalid(format!("unknown metadata format {format}")));
    }
    let grpc_addr = r.string("grpc_addr")?;
    let public_key = r.field("public_key")?.to_vec();
    let version = r.string("version")?;
    let role = match r.u8("role")? {
        0 => GossipRole::Member,
        1 => GossipRole::Mirror,
        other => return Err(invalid(format!("unknown role {other}"))),
    };
    let incarnation = r.string("incarnation")?;
    let flags = r.u8("flags")?;
    // Added after the first release of format 1: metadata of older nodes ends here.
    let mut mirror_prefixes = Vec::new();
    if !r.bytes.is_empty() {
        for _ in 0..r.u8("mirror_prefixes")? {
            mirror_prefixes.push(r.string("mirror_prefixes")?);
        }
    }
    // Added with placement views: older metadata ends before it.
    let views_settled = if r.bytes.is_empty() {
        0
    } else {
        let b = r.take(8, "views_settled")?;
        u64::from_be_bytes(b.try_into().expect("8 bytes"))
    };
    let meta = NodeMeta {
        grpc_addr,
        public_key,
        version,
        role,
        incarnation,
        mirror_prefixes,
        views_settled,
    };
    Ok((meta, flags & LEAVING != 0))
}

fn invalid(reason: String) -> DiscoveryError {
    DiscoveryError::InvalidMeta(reason)
}

fn put(out: &mut Vec<u8>, bytes: &[u8]) -> Result<(), DiscoveryError> {
    // Anything over u16::MAX is also far over MAX_META_LEN, which `encode` reports.
    let len = u16::try_from(bytes.len()).map_err(|_| DiscoveryError::MetaTooLarge {
        len: bytes.len(),
        max: MAX_META_LEN,
    })?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
    Ok(())
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, field: &str) -> Result<&'a [u8], DiscoveryError> {
        if self.bytes.len() < n {
            return Err(invalid(format!("truncated at {field}")));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn u8(&mut self, field: &str) -> Result<u8, DiscoveryError> {
        Ok(self.take(1, field)?[0])
    }

    fn field(&mut self, field: &str) -> Result<&'a [u8], DiscoveryError> {
        let len = self.take(2, field)?;
        let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
        self.take(len, field)
    }

    fn string(&mut self, field: &str) -> Result<String, DiscoveryError> {
        let bytes = self.field(field)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| invalid(format!("{field} is not UTF-8")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> NodeMeta {
        NodeMeta {
            grpc_addr: "ledger-0.ledger.default.svc.cluster.local:50051".to_owned(),
            public_key: (0u8..32).collect(),
            version: "0.1.0".to_owned(),
            role: GossipRole::Mirror,
            incarnation: "0199a0c4-6f1e-7c2a-9d1b-3e4f5a6b7c8d".to_owned(),
            mirror_prefixes: vec!["observed-".to_owned(), "tenant-7/".to_owned()],
            views_settled: 0x0102_0304_0506_0708,
        }
    }

    #[test]
    fn meta_round_trips() {
        let meta = sample();
        let bytes = encode(&meta, false).unwrap();
        assert_eq!(bytes[0], FORMAT);
        assert_eq!(decode(&bytes).unwrap(), (meta.clone(), false));
        let leaving = encode(&meta, true).unwrap();
        assert_eq!(leaving.len(), bytes.len());
        assert_eq!(decode(&leaving).unwrap(), (meta, true));
    }

    #[test]
    fn decoder_ignores_fields_appended_by_later_formats() {
        let mut bytes = encode(&sample(), true).unwrap();
        bytes.extend_from_slice(&[0, 3, b'x', b'y', b'z', 1, 2, 3, 4, 5, 6, 7, 8, 9]);
        assert_eq!(decode(&bytes).unwrap(), (sample(), true));
    }

    #[test]
    fn metadata_of_nodes_without_mirror_prefixes_decodes_as_every_context() {
        let meta = sample();
        let bytes = encode(&meta, true).unwrap();
        // What an older node sends: everything up to and including the flags.
        let prefixes_len = 1 + encoded_prefixes_len(&meta.mirror_prefixes) + 8;
        let old = &bytes[..bytes.len() - prefixes_len];
        let (decoded, leaving) = decode(old).unwrap();
        assert!(leaving);
        assert!(decoded.mirror_prefixes.is_empty());
        assert_eq!(decoded.incarnation, meta.incarnation);
        assert_eq!(decoded.views_settled, 0);
    }

    #[test]
    fn metadata_of_nodes_without_placement_views_decodes_as_nothing_settled() {
        let meta = sample();
        let bytes = encode(&meta, false).unwrap();
        let (decoded, _) = decode(&bytes[..bytes.len() - 8]).unwrap();
        assert_eq!(decoded.views_settled, 0);
        assert_eq!(decoded.mirror_prefixes, meta.mirror_prefixes);
        assert_eq!(
            decode(&bytes).unwrap().0.views_settled,
            0x0102_0304_0506_0708
        );
    }

    #[test]
    fn every_truncation_is_rejected() {
        let meta = sample();
        let bytes = encode(&meta, false).unwrap();
        // Ending right after the flags or the prefixes is an older node's metadata, not a
        // truncation.
        let before_views = bytes.len() - 8;
        let old_end = before_views - 1 - encoded_prefixes_len(&meta.mirror_prefixes);
        for len in (0..bytes.len()).filter(|l| *l != old_end && *l != before_views) {
            assert!(
                matches!(decode(&bytes[..len]), Err(DiscoveryError::InvalidMeta(_))),
                "prefix of {len} bytes decoded"
            );
        }
    }

    #[test]
    fn unknown_format_and_role_are_rejected() {
        let mut bytes = encode(&sample(), false).unwrap();
        bytes[0] = 9;
        assert!(matches!(
            decode(&bytes),
            Err(DiscoveryError::InvalidMeta(_))
        ));

        let meta = sample();
        let mut bytes = encode(&meta, false).unwrap();
        let role_at =
            1 + 2 + meta.grpc_addr.len() + 2 + meta.public_key.len() + 2 + meta.version.len();
        bytes[role_at] = 7;
        assert!(matches!(
            decode(&bytes),
            Err(DiscoveryError::InvalidMeta(_))
        ));
    }

    #[test]
    fn metadata_over_the_limit_is_refused() {
        let mut meta = sample();
        meta.grpc_addr = "h".repeat(480);
        assert!(matches!(
            encode(&meta, false),
            Err(DiscoveryError::MetaTooLarge { max: 512, .. })
        ));
    }
}
