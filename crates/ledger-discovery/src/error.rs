//! The crate's one error type.

use std::net::SocketAddr;

/// What can go wrong in discovery. Gossip-layer errors carry memberlist's message as text
/// (its error type is generic over the transport and not meant to cross crate boundaries).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiscoveryError {
    /// The encoded node metadata does not fit memberlist's per-node limit.
    #[error("node metadata is {len} bytes, more than the {max}-byte limit of the gossip layer")]
    MetaTooLarge {
        /// Encoded size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A peer's metadata could not be decoded.
    #[error("invalid node metadata: {0}")]
    InvalidMeta(String),
    /// A role other than `member` or `mirror`.
    #[error("unknown role `{0}` (expected `member` or `mirror`)")]
    InvalidRole(String),
    /// A seed that is not `host:port`.
    #[error("invalid seed `{seed}`: {reason}")]
    InvalidSeed {
        /// The seed as given.
        seed: String,
        /// Why it was refused.
        reason: String,
    },
    /// A gossip key that is not 16, 24 or 32 bytes of base64.
    #[error("invalid gossip key: {0}")]
    InvalidGossipKey(String),
    /// The node id is empty.
    #[error("node id must not be empty")]
    EmptyNodeId,
    /// The gossip layer could not bind its TCP listener and UDP socket.
    #[error("gossip layer could not start on {addr}: {reason}")]
    Start {
        /// The bind address.
        addr: SocketAddr,
        /// memberlist's message.
        reason: String,
    },
    /// The gossip layer did not get the leave message out before the timeout, or failed to.
    #[error("graceful leave failed: {0}")]
    Leave(String),
    /// The gossip layer did not spread a metadata update.
    #[error("could not announce the node's metadata: {0}")]
    Announce(String),
    /// `join` after `leave` or `shutdown`.
    #[error("discovery has been shut down")]
    NotRunning,
}
