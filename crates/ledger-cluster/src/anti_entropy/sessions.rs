//! [`AntiEntropy`]: the responder's digest sessions and the anti-entropy counters.

use ledger_replication::digest::DigestSession;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

/// A responder session idle this long is dropped.
const SESSION_TTL: Duration = Duration::from_secs(30);

/// A responder session's key: the initiating peer and its session id.
pub(crate) type SessionKey = (String, u64);

/// Responder sessions and counters.
#[derive(Debug, Default)]
pub struct AntiEntropy {
    sessions: Mutex<HashMap<SessionKey, (DigestSession, Instant)>>,
    /// Exchanges completed (as initiator).
    pub rounds: AtomicU64,
    /// Contexts found different and handed to their replication tasks.
    pub repairs: AtomicU64,
    /// Bytes this node sent in digest exchanges.
    pub bytes_sent: AtomicU64,
}

impl AntiEntropy {
    /// The session `key` left off, if it is not stale (stale ones are dropped on the way).
    pub(crate) fn take_session(&self, key: &SessionKey) -> Option<DigestSession> {
        let mut sessions = self.sessions.lock();
        sessions.retain(|_, (_, t)| t.elapsed() < SESSION_TTL);
        sessions.remove(key).map(|(s, _)| s)
    }

    /// Keeps an unfinished session for the peer's next turn.
    pub(crate) fn keep_session(&self, key: SessionKey, session: DigestSession) {
        self.sessions.lock().insert(key, (session, Instant::now()));
    }
}
