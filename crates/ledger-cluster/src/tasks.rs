//! [`TaskSet`]: the owner of every task a cluster member spawns, so that shutdown can wait for
//! them and no task runs without an owner.

use parking_lot::Mutex;
use std::future::Future;
use std::time::Duration;
use tokio::task::{AbortHandle, JoinSet};

/// The tasks of one cluster member: context tasks, peer dialers, accepted-stream readers, the
/// view and anti-entropy tasks, load guards.
#[derive(Debug, Default)]
pub(crate) struct TaskSet {
    set: Mutex<JoinSet<()>>,
}

impl TaskSet {
    /// Runs `task` as one of the set. Tasks that ended are forgotten on the way, so the set
    /// holds what is running, not everything that ever ran.
    pub(crate) fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) -> AbortHandle {
        let mut set = self.set.lock();
        while set.try_join_next().is_some() {}
        set.spawn(task)
    }

    /// Waits up to `wait` for every task of the set to end, then aborts those still running
    /// and waits for them too. (Tasks spawned after this started belong to a new set, which
    /// aborts them when the member is dropped.)
    pub(crate) async fn shutdown(&self, wait: Duration) {
        let mut set = std::mem::take(&mut *self.set.lock());
        let all_ended = async { while set.join_next().await.is_some() {} };
        if tokio::time::timeout(wait, all_ended).await.is_err() {
            tracing::warn!(
                tasks = set.len(),
                wait_ms = wait.as_millis() as u64,
                "cluster tasks still running at shutdown; aborting them"
            );
            set.abort_all();
            while set.join_next().await.is_some() {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[tokio::test]
    async fn shutdown_waits_for_tasks_and_aborts_the_stuck_ones() {
        let tasks = TaskSet::default();
        let finished = Arc::new(AtomicBool::new(false));
        let f = Arc::clone(&finished);
        tasks.spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            f.store(true, Ordering::SeqCst);
        });
        tasks.spawn(std::future::pending());
        tasks.shutdown(Duration::from_millis(300)).await;
        assert!(
            finished.load(Ordering::SeqCst),
            "the quick task ran to its end"
        );
        assert!(tasks.set.lock().is_empty());
    }

    #[tokio::test]
    async fn ended_tasks_are_forgotten() {
        let tasks = TaskSet::default();
        for _ in 0..10 {
            tasks.spawn(async {});
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        tasks.spawn(std::future::pending());
        assert!(tasks.set.lock().len() < 10);
    }
}
