//! [`Registry`]: the mailboxes of the running context tasks, handed out and retired under one
//! lock.

use super::messages::ContextMsg;
use parking_lot::Mutex;
use std::collections::HashMap;
use tokio::sync::mpsc;

/// Messages a context task may have queued before a peer stream's reader waits.
pub(crate) const MAILBOX: usize = 1_024;

/// What became of an idle context task's attempt to stop ([`Registry::retire`]).
pub(crate) enum Retire {
    /// Its mailbox is closed and removed: the task ends.
    Done,
    /// Messages are waiting: it keeps running.
    Busy,
    /// These messages arrived as it closed; it handles them and keeps running on a new mailbox.
    Reopened(Vec<ContextMsg>),
}

/// Context id → the mailbox of its running task.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    mailboxes: Mutex<HashMap<String, mpsc::Sender<ContextMsg>>>,
}

impl Registry {
    /// The context's mailbox; a new one (its receiver handed to `start`, under the lock) when
    /// the context has no running task. While `stopping()`: a closed mailbox, and no task.
    pub(crate) fn mailbox(
        &self,
        context_id: &str,
        stopping: impl FnOnce() -> bool,
        start: impl FnOnce(mpsc::Receiver<ContextMsg>),
    ) -> mpsc::Sender<ContextMsg> {
        let mut mailboxes = self.mailboxes.lock();
        if let Some(tx) = mailboxes.get(context_id)
            && !tx.is_closed()
        {
            return tx.clone();
        }
        let (tx, rx) = mpsc::channel(MAILBOX);
        if stopping() {
            return tx; // rx is dropped: sends fail
        }
        mailboxes.insert(context_id.to_owned(), tx.clone());
        start(rx);
        tx
    }

    /// The mailbox of the context's task if one runs (none is started).
    pub(crate) fn running_mailbox(&self, context_id: &str) -> Option<mpsc::Sender<ContextMsg>> {
        self.mailboxes
            .lock()
            .get(context_id)
            .filter(|tx| !tx.is_closed())
            .cloned()
    }

    /// Called by an idle context task: closes its mailbox if it is empty and removes it, so
    /// the next message starts a new task. Messages that slipped in between are handed back
    /// with a new mailbox for the same task, which then keeps running.
    pub(crate) fn retire(&self, context_id: &str, rx: &mut mpsc::Receiver<ContextMsg>) -> Retire {
        let mut mailboxes = self.mailboxes.lock();
        if !rx.is_empty() {
            return Retire::Busy;
        }
        rx.close();
        let mut left = Vec::new();
        while let Ok(m) = rx.try_recv() {
            left.push(m);
        }
        if left.is_empty() {
            // Ours is closed now; another task's mailbox (after a shutdown) is left alone.
            if mailboxes
                .get(context_id)
                .is_some_and(mpsc::Sender::is_closed)
            {
                mailboxes.remove(context_id);
            }
            return Retire::Done;
        }
        let (tx, new_rx) = mpsc::channel(MAILBOX);
        mailboxes.insert(context_id.to_owned(), tx);
        *rx = new_rx;
        Retire::Reopened(left)
    }

    /// Contexts whose task is running, `except` left out.
    pub(crate) fn running_except(&self, except: &str) -> usize {
        self.mailboxes
            .lock()
            .iter()
            .filter(|(ctx, tx)| ctx.as_str() != except && !tx.is_closed())
            .count()
    }

    /// Forgets every mailbox (shutdown): the tasks see their mailbox close.
    pub(crate) fn clear(&self) {
        self.mailboxes.lock().clear();
    }
}
