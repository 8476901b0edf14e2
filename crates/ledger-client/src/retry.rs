//! Appends retried safely. A client whose append timed out cannot know whether it was stored;
//! retrying with the same idempotency key makes the answer the same either way: the entry
//! stored the first time, stored once.

use crate::{ClientError, LedgerClient};
use ledger_core::{Entry, NewEntry};
use std::time::Duration;
use tonic::Code;

/// How [`LedgerClient::append_retrying`] retries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all (the first one included).
    pub attempts: u32,
    /// Deadline of each attempt.
    pub attempt_timeout: Duration,
    /// Wait before the second attempt; doubled after each further one…
    pub initial_backoff: Duration,
    /// …up to this.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            attempt_timeout: Duration::from_secs(5),
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
        }
    }
}

/// Whether an append that failed this way may have been stored or may succeed on retry:
/// timeouts, an unreachable or restarting node, a cancelled call. Input errors are final.
pub fn is_retryable(e: &ClientError) -> bool {
    match e {
        ClientError::Connect { .. } => true,
        ClientError::Status(s) => matches!(
            s.code(),
            Code::Unavailable
                | Code::DeadlineExceeded
                | Code::Cancelled
                | Code::Unknown
                | Code::Aborted
        ),
        _ => false,
    }
}

/// A fresh idempotency key: a UUIDv7 (unique, and sortable by creation time in logs).
pub fn new_idempotency_key() -> String {
    uuid::Uuid::now_v7().to_string()
}

impl LedgerClient {
    /// Appends `entry`, retrying timeouts and unavailability per `policy` with one idempotency
    /// key for every attempt (a fresh one when `entry` has none), so the entry is stored once
    /// however many attempts it took. Returns the stored entry, or the last error.
    pub async fn append_retrying(
        &self,
        mut entry: NewEntry,
        policy: &RetryPolicy,
    ) -> Result<Entry, ClientError> {
        if entry.idempotency_key.is_none() {
            entry.idempotency_key = Some(new_idempotency_key());
        }
        let mut backoff = policy.initial_backoff;
        let mut attempt = 1;
        loop {
            let r = self
                .append_with_timeout(entry.clone(), Some(policy.attempt_timeout))
                .await;
            match r {
                Err(e) if attempt < policy.attempts.max(1) && is_retryable(&e) => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(policy.max_backoff);
                    attempt += 1;
                }
                other => return other,
            }
        }
    }
}
