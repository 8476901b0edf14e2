//! Limits that turn overload into `RESOURCE_EXHAUSTED` instead of memory growth: watch streams
//! per node and per context, AppendStream streams per node, and the size of a Load. (Requests
//! per connection and deadlines are enforced around every request, in
//! [`crate::middleware::requests`].)
//!
//! Each open stream holds a permit ([`WatchPermit`], [`StreamPermit`]) that gives its place
//! back when the stream ends, however it ends.

use crate::config::schema::Config;
use crate::error_status::limit_exceeded;
use crate::metrics::Metrics;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tonic::Status;

/// The limits of one node, from its settings.
#[derive(Debug)]
pub struct StreamLimits {
    pub max_watchers: usize,
    pub max_watchers_per_context: usize,
    pub max_append_streams: usize,
    /// Appends one AppendStream may have in flight before the node stops reading it.
    pub append_stream_window: usize,
    pub max_load_bytes: u64,
    watchers: Mutex<HashMap<String, usize>>,
    watchers_total: AtomicUsize,
    append_streams: AtomicUsize,
    metrics: Arc<Metrics>,
}

impl StreamLimits {
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> Arc<StreamLimits> {
        Arc::new(StreamLimits {
            max_watchers: config.max_watchers,
            max_watchers_per_context: config.max_watchers_per_context,
            max_append_streams: config.max_append_streams,
            append_stream_window: config.append_stream_window,
            max_load_bytes: config.max_load_bytes,
            watchers: Mutex::new(HashMap::new()),
            watchers_total: AtomicUsize::new(0),
            append_streams: AtomicUsize::new(0),
            metrics,
        })
    }

    fn exhausted(&self, limit: &'static str, message: String) -> Status {
        self.metrics.refused(limit);
        limit_exceeded(message)
    }

    /// A place for one more watch stream on `context_id`.
    pub fn watcher(self: &Arc<Self>, context_id: &str) -> Result<WatchPermit, Status> {
        let mut per = self.watchers.lock();
        let total = self.watchers_total.load(Ordering::Relaxed);
        if total >= self.max_watchers {
            return Err(self.exhausted(
                "max_watchers",
                format!(
                    "this node already serves {total} watch streams (setting max_watchers); retry later or watch through another node"
                ),
            ));
        }
        let n = per.get(context_id).copied().unwrap_or(0);
        if n >= self.max_watchers_per_context {
            return Err(self.exhausted(
                "max_watchers_per_context",
                format!(
                    "context {context_id:?} already has {n} watch streams on this node (setting max_watchers_per_context); share one stream or retry later"
                ),
            ));
        }
        per.insert(context_id.to_owned(), n + 1);
        self.watchers_total.fetch_add(1, Ordering::Relaxed);
        self.metrics.watcher_opened();
        Ok(WatchPermit {
            limits: Arc::clone(self),
            context_id: context_id.to_owned(),
        })
    }

    /// A place for one more AppendStream.
    pub fn append_stream(self: &Arc<Self>) -> Result<StreamPermit, Status> {
        let open = self.append_streams.fetch_add(1, Ordering::AcqRel);
        if open >= self.max_append_streams {
            self.append_streams.fetch_sub(1, Ordering::AcqRel);
            return Err(self.exhausted(
                "max_append_streams",
                format!(
                    "this node already has {open} AppendStream streams open (setting max_append_streams); share a stream between tasks or retry later"
                ),
            ));
        }
        Ok(StreamPermit {
            limits: Arc::clone(self),
        })
    }

    /// `RESOURCE_EXHAUSTED` once a load has sent more than `max_load_bytes`.
    pub fn check_load(&self, context_id: &str, bytes: u64) -> Result<(), Status> {
        if bytes > self.max_load_bytes {
            return Err(self.exhausted(
                "max_load_bytes",
                format!(
                    "the snapshot for {context_id:?} is larger than {} bytes (setting max_load_bytes); nothing of it was stored",
                    self.max_load_bytes
                ),
            ));
        }
        Ok(())
    }

    /// Watch streams open now.
    pub fn watchers(&self) -> usize {
        self.watchers_total.load(Ordering::Relaxed)
    }
}

/// One open watch stream's place; given back on drop.
#[derive(Debug)]
pub struct WatchPermit {
    limits: Arc<StreamLimits>,
    context_id: String,
}

impl Drop for WatchPermit {
    fn drop(&mut self) {
        let mut per = self.limits.watchers.lock();
        if let Some(n) = per.get_mut(&self.context_id) {
            *n -= 1;
            if *n == 0 {
                per.remove(&self.context_id);
            }
        }
        self.limits.watchers_total.fetch_sub(1, Ordering::Relaxed);
        self.limits.metrics.watcher_closed();
    }
}

/// One open AppendStream's place; given back on drop.
#[derive(Debug)]
pub struct StreamPermit {
    limits: Arc<StreamLimits>,
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        self.limits.append_streams.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(watchers: usize, per_context: usize, streams: usize) -> Arc<StreamLimits> {
        let dir = tempfile::tempdir().unwrap();
        let ledger =
            ledger_embedded::Ledger::open(dir.path(), ledger_embedded::LedgerConfig::default())
                .unwrap();
        let config = Config {
            max_watchers: watchers,
            max_watchers_per_context: per_context,
            max_append_streams: streams,
            max_load_bytes: 10,
            ..Default::default()
        };
        StreamLimits::new(&config, Metrics::new(ledger))
    }

    #[test]
    fn permits_are_counted_and_given_back() {
        let l = limits(3, 2, 1);
        let a = l.watcher("a").unwrap();
        let _a2 = l.watcher("a").unwrap();
        let s = l.watcher("a").unwrap_err();
        assert_eq!(s.code(), tonic::Code::ResourceExhausted);
        assert!(
            s.message().contains("max_watchers_per_context"),
            "{}",
            s.message()
        );
        let _b = l.watcher("b").unwrap();
        let s = l.watcher("c").unwrap_err();
        assert!(s.message().contains("max_watchers"), "{}", s.message());
        drop(a);
        assert_eq!(l.watchers(), 2);
        l.watcher("a").unwrap();
        let p = l.append_stream().unwrap();
        assert!(l.append_stream().is_err());
        drop(p);
        assert!(l.append_stream().is_ok());
        assert!(l.check_load("x", 10).is_ok());
        assert_eq!(
            l.check_load("x", 11).unwrap_err().code(),
            tonic::Code::ResourceExhausted
        );
    }
}
