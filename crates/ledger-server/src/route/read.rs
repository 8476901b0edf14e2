//! Where a read is served, and `x-ledger-min-sequence: N` (read-your-writes) on every path.
//!
//! A replica (or a mirror) serves a read from what it durably holds, up to the context's
//! commit index; a node that holds no replica passes it on to the writer (or another live
//! replica). With `x-ledger-min-sequence: N` a read is **never answered OK below N**:
//!
//! - it may wait for a commit index of at least N for its *wait* ([`wait_budget`]): until
//!   shortly before its `grpc-timeout`, else [`MIN_SEQUENCE_WAIT`], and never longer than the
//!   node that passed it on left it (`x-ledger-wait-ms`);
//! - a replica whose writer is another node waits half of it, then passes the read on to the
//!   writer with the header, the caller's deadline and the rest of the wait;
//! - a writer (active, still claiming, or just activated and learning what its predecessor
//!   committed), a replica without another live writer, and a read passed on to this node
//!   wait all of it;
//! - a node that holds no replica passes the read on at once (with the header);
//! - past its wait the read is refused with UNAVAILABLE naming N, what this node holds and
//!   the writer; a read that cannot be passed on (the next node unreachable) likewise.
//!
//! Every read RPC (Get, Snapshot, Watch, SnapshotStream, the IntegrityService) asks
//! [`Serve::read`] and passes reads on with [`Forward::call`], so all of them honour the
//! header the same way. Which step a read takes is the pure [`plan`].

use super::router::{
    FORWARDED_HEADER, MIN_SEQUENCE_HEADER, Router, WAIT_HEADER, forwarded, is_forwarded, onward,
};
use crate::error_status::{cluster_status, min_sequence_not_reached, no_live_replica};
use crate::middleware::requests::parse_grpc_timeout;
use ledger_cluster::{ClusterError, ReadCap};
use std::future::Future;
use std::time::{Duration, Instant};
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

/// How long a read waits for `x-ledger-min-sequence` when its caller set no deadline.
pub const MIN_SEQUENCE_WAIT: Duration = Duration::from_secs(2);
/// Most of a caller's deadline kept back to answer in (a tenth of it when that is less).
const ANSWER_MARGIN: Duration = Duration::from_millis(100);

/// Where a read is served, for the services that also run without a cluster.
#[derive(Debug)]
pub enum Serve {
    /// Here; in a cluster only up to the context's commit index.
    Local(Option<ReadCap>),
    /// By another node ([`Forward::call`]).
    Remote(Forward),
}

impl Serve {
    /// Where a read of `context_id` is served: here without a cluster, else where
    /// [`Router::read_at`] says.
    pub async fn read(
        router: Option<&Router>,
        context_id: &str,
        meta: &MetadataMap,
    ) -> Result<Serve, Status> {
        let Some(r) = router else {
            return Ok(Serve::Local(None));
        };
        Ok(match r.read_at(context_id, meta).await? {
            ReadAt::Local(cap) => Serve::Local(Some(cap)),
            ReadAt::Remote(to) => Serve::Remote(to),
        })
    }
}

/// Where a read is served in a cluster.
#[derive(Debug)]
pub enum ReadAt {
    /// Here, up to the context's commit index (at least the read's min-sequence).
    Local(ReadCap),
    /// By another node.
    Remote(Forward),
}

/// A read passed on to another node: its channel, and what the read carries on (the
/// min-sequence, the rest of its wait, the caller's deadline).
#[derive(Debug)]
pub struct Forward {
    channel: Channel,
    /// The next node's address.
    to: String,
    /// The read's `x-ledger-min-sequence` (0: none).
    min: u64,
    /// Until when the next node may wait for `min`.
    wait_until: Instant,
    /// The caller's deadline, if it set one.
    deadline: Option<Instant>,
    /// What this node says if the next node cannot be reached (reads with a min-sequence).
    unserved: Unserved,
}

/// What a node knows of a read it could not serve at its min-sequence.
#[derive(Clone, Debug)]
struct Unserved {
    min: u64,
    node: String,
    context_id: String,
    /// Entries it knows committed (`None`: it holds no replica).
    held: Option<u64>,
    /// Who writes the context, as the refusal names it.
    writer: String,
}

impl Unserved {
    fn status(&self, unreached: Option<(&str, &str)>) -> Status {
        min_sequence_not_reached(
            self.min,
            &self.node,
            &self.context_id,
            self.held,
            &self.writer,
            unreached,
        )
    }
}

impl Forward {
    /// Sends `request` on with `send` (a client of the next node's service over this
    /// channel), marked forwarded, with the caller's token, min-sequence, wait and deadline.
    /// A read with a min-sequence whose next node cannot be reached is refused naming it.
    pub async fn call<Q, T, F, Fut>(
        self,
        request: Request<Q>,
        send: F,
    ) -> Result<Response<T>, Status>
    where
        F: FnOnce(Channel, Request<Q>) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        let request = self.request(request);
        match send(self.channel, request).await {
            Err(s) if self.min > 0 && not_answered(&s) => {
                let next = format!("the node at {} it was passed on to", self.to);
                Err(self.unserved.status(Some((&next, s.message()))))
            }
            r => r,
        }
    }

    fn request<T>(&self, request: Request<T>) -> Request<T> {
        let mut req = forwarded(onward(request));
        let now = Instant::now();
        if self.min > 0 {
            let left = self.wait_until.saturating_duration_since(now).as_millis();
            let meta = req.metadata_mut();
            meta.insert(MIN_SEQUENCE_HEADER, MetadataValue::from(self.min));
            meta.insert(WAIT_HEADER, MetadataValue::from(left as u64));
        }
        if let Some(d) = self.deadline {
            req.set_timeout(d.saturating_duration_since(now));
        }
        req
    }
}

/// The status of a call that never reached the other node's service (a transport failure
/// carries its cause; an answer from the service does not).
fn not_answered(s: &Status) -> bool {
    std::error::Error::source(s).is_some()
}

/// Which step a read takes, from what this node knows of the context (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Serve it here once its min-sequence is committed, waiting up to `wait`; if it is not
    /// committed by then, `otherwise`.
    Here {
        wait: Duration,
        otherwise: Otherwise,
    },
    /// This node holds no replica: pass it on at once.
    PassOn,
}

/// What a read does whose min-sequence was not committed here within its wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Otherwise {
    /// Pass it on to the writer, with the rest of its wait.
    ToWriter,
    /// Refuse it (UNAVAILABLE, naming the min-sequence and what is held).
    Refuse,
}

/// The step of a read (`forwarded`: passed on by another node; `holds`: this node keeps a
/// replica; `writer_elsewhere`: another live node writes the context) with `budget` to wait.
pub fn plan(forwarded: bool, holds: bool, writer_elsewhere: bool, budget: Duration) -> Plan {
    let here = |wait, otherwise| Plan::Here { wait, otherwise };
    match (forwarded, holds, writer_elsewhere) {
        // Never passed on twice.
        (true, _, _) => here(budget, Otherwise::Refuse),
        (false, false, _) => Plan::PassOn,
        // Replicas serve new entries a round trip after the writer: half here, then the writer.
        (false, true, true) => here(budget / 2, Otherwise::ToWriter),
        (false, true, false) => here(budget, Otherwise::Refuse),
    }
}

/// How long a read may wait for its min-sequence: until shortly before the caller's
/// deadline (`timeout`, less a tenth of it or [`ANSWER_MARGIN`], whichever is less, to answer
/// in), else [`MIN_SEQUENCE_WAIT`]; never longer than a node that passed it on left it
/// (`passed_on`).
pub fn wait_budget(timeout: Option<Duration>, passed_on: Option<Duration>) -> Duration {
    let own = timeout.map_or(MIN_SEQUENCE_WAIT, |t| {
        t.saturating_sub((t / 10).min(ANSWER_MARGIN))
    });
    passed_on.map_or(own, |left| left.min(own))
}

/// The request's `x-ledger-min-sequence` (0 without one).
fn min_sequence(meta: &MetadataMap) -> Result<u64, ClusterError> {
    match meta.get(MIN_SEQUENCE_HEADER) {
        None => Ok(0),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .ok_or_else(|| {
                ClusterError::InvalidMetadata(
                    "x-ledger-min-sequence must be a sequence number (a decimal integer)".into(),
                )
            }),
    }
}

/// The caller's `grpc-timeout`, if it set one.
fn timeout_of(meta: &MetadataMap) -> Option<Duration> {
    parse_grpc_timeout(meta.get("grpc-timeout")?.to_str().ok()?)
}

/// What a forwarding node left of a read's wait (`x-ledger-wait-ms`, on forwarded reads).
fn passed_on_wait(meta: &MetadataMap) -> Option<Duration> {
    if !meta.contains_key(FORWARDED_HEADER) {
        return None;
    }
    let ms = meta.get(WAIT_HEADER)?.to_str().ok()?.trim().parse().ok()?;
    Some(Duration::from_millis(ms))
}

impl Router {
    /// Where a read of `context_id` is served (see the module docs).
    pub async fn read_at(&self, context_id: &str, meta: &MetadataMap) -> Result<ReadAt, Status> {
        let started = Instant::now();
        let c = &self.cluster;
        let min = min_sequence(meta).map_err(cluster_status)?;
        let timeout = timeout_of(meta);
        let budget = wait_budget(timeout, passed_on_wait(meta));
        let me = c.me.node.as_str();
        let writer = c.writer_of(context_id);
        let writer_elsewhere = writer.as_ref().is_some_and(|(w, _)| w != me);
        let forward = |channel, to, unserved| Forward {
            channel,
            to,
            min,
            wait_until: started + budget,
            deadline: timeout.map(|t| started + t),
            unserved,
        };
        match plan(
            is_forwarded(meta),
            c.holds(context_id),
            writer_elsewhere,
            budget,
        ) {
            Plan::PassOn => {
                let view = c.view();
                let target = writer.as_ref().map(|(_, a)| a.clone()).or_else(|| {
                    c.replicas_of(context_id).iter().find_map(|r| {
                        view.peer(r)
                            .filter(|p| p.state.is_live())
                            .map(|p| p.addr.clone())
                    })
                });
                let Some(addr) = target else {
                    return Err(no_live_replica(context_id));
                };
                let unserved = self.unserved(context_id, min, None, writer.as_ref()).await;
                Ok(ReadAt::Remote(forward(
                    self.channel(&addr)?,
                    addr,
                    unserved,
                )))
            }
            Plan::Here { wait, otherwise } => {
                if min == 0 {
                    return Ok(ReadAt::Local(c.read_cap(context_id).await));
                }
                let mut cap = c.read_cap_within(context_id, budget).await;
                let left = (started + wait).saturating_duration_since(Instant::now());
                if cap.wait_for(min, left).await {
                    return Ok(ReadAt::Local(cap));
                }
                let held = Some(cap.committed());
                let unserved = self.unserved(context_id, min, held, writer.as_ref()).await;
                match (otherwise, writer) {
                    (Otherwise::ToWriter, Some((_, addr))) => Ok(ReadAt::Remote(forward(
                        self.channel(&addr)?,
                        addr,
                        unserved,
                    ))),
                    _ => Err(unserved.status(None)),
                }
            }
        }
    }

    /// What this node says of a read it could not serve at `min`: what it holds, and who
    /// writes the context (with this node's role when it is the one: writing, claiming).
    async fn unserved(
        &self,
        context_id: &str,
        min: u64,
        held: Option<u64>,
        writer: Option<&(String, String)>,
    ) -> Unserved {
        let c = &self.cluster;
        let me = c.me.node.to_string();
        let writer = match writer {
            None => "no live member".to_owned(),
            Some((w, _)) if *w != me => w.clone(),
            Some((w, _)) if min == 0 => w.clone(),
            Some((w, _)) => {
                let state = tokio::time::timeout(STATE_WAIT, c.context_state(context_id)).await;
                match state.ok().flatten().map(|s| s.role) {
                    Some("writer") => format!("{w}, writing"),
                    Some("claiming") => format!("{w}, claiming"),
                    Some(_) => format!("{w}, not writing yet"),
                    None => w.clone(),
                }
            }
        };
        Unserved {
            min,
            node: me,
            context_id: context_id.to_owned(),
            held,
            writer,
        }
    }
}

/// How long a refusal waits to name this node's role (its context task answers): well
/// within the time kept back to answer in.
const STATE_WAIT: Duration = Duration::from_millis(50);

#[cfg(test)]
mod tests {
    use super::*;

    const B: Duration = Duration::from_secs(2);

    #[test]
    fn a_read_passed_on_to_this_node_waits_all_of_its_wait_then_is_refused() {
        for holds in [true, false] {
            for writer_elsewhere in [true, false] {
                assert_eq!(
                    plan(true, holds, writer_elsewhere, B),
                    Plan::Here {
                        wait: B,
                        otherwise: Otherwise::Refuse
                    }
                );
            }
        }
    }

    #[test]
    fn a_replica_waits_half_then_asks_the_writer_elsewhere() {
        assert_eq!(
            plan(false, true, true, B),
            Plan::Here {
                wait: B / 2,
                otherwise: Otherwise::ToWriter
            }
        );
    }

    #[test]
    fn a_writer_or_a_replica_without_another_writer_waits_all_then_refuses() {
        // The writer itself, active or still claiming, and a replica whose writer is down.
        assert_eq!(
            plan(false, true, false, B),
            Plan::Here {
                wait: B,
                otherwise: Otherwise::Refuse
            }
        );
    }

    #[test]
    fn a_node_without_a_replica_passes_the_read_on_at_once() {
        assert_eq!(plan(false, false, true, B), Plan::PassOn);
        assert_eq!(plan(false, false, false, B), Plan::PassOn);
    }

    #[test]
    fn the_wait_ends_before_the_callers_deadline() {
        assert_eq!(wait_budget(None, None), MIN_SEQUENCE_WAIT);
        assert_eq!(
            wait_budget(Some(Duration::from_secs(5)), None),
            Duration::from_millis(4_900)
        );
        assert_eq!(
            wait_budget(Some(Duration::from_millis(500)), None),
            Duration::from_millis(450)
        );
        assert_eq!(wait_budget(Some(Duration::ZERO), None), Duration::ZERO);
        // A forwarding node's rest of the wait bounds it, and never extends it.
        assert_eq!(
            wait_budget(
                Some(Duration::from_secs(5)),
                Some(Duration::from_millis(700))
            ),
            Duration::from_millis(700)
        );
        assert_eq!(
            wait_budget(None, Some(Duration::from_secs(60))),
            MIN_SEQUENCE_WAIT
        );
    }

    #[test]
    fn min_sequence_metadata_is_a_decimal_sequence() {
        let mut meta = MetadataMap::new();
        assert_eq!(min_sequence(&meta).unwrap(), 0);
        meta.insert(MIN_SEQUENCE_HEADER, " 10".parse().unwrap());
        assert_eq!(min_sequence(&meta).unwrap(), 10);
        meta.insert(MIN_SEQUENCE_HEADER, "ten".parse().unwrap());
        assert!(matches!(
            min_sequence(&meta),
            Err(ClusterError::InvalidMetadata(_))
        ));
    }

    #[test]
    fn only_a_forwarded_read_carries_a_wait_left() {
        let mut meta = MetadataMap::new();
        meta.insert(WAIT_HEADER, "700".parse().unwrap());
        assert_eq!(passed_on_wait(&meta), None);
        meta.insert(FORWARDED_HEADER, "1".parse().unwrap());
        assert_eq!(passed_on_wait(&meta), Some(Duration::from_millis(700)));
        meta.insert("grpc-timeout", "1500m".parse().unwrap());
        assert_eq!(timeout_of(&meta), Some(Duration::from_millis(1500)));
    }

    #[test]
    fn a_refusal_names_the_min_sequence_what_is_held_and_the_writer() {
        let u = Unserved {
            min: 10,
            node: "n1".into(),
            context_id: "x".into(),
            held: Some(3),
            writer: "n1, claiming".into(),
        };
        let s = u.status(None);
        assert_eq!(s.code(), tonic::Code::Unavailable);
        assert!(
            s.message().starts_with(
                "min-sequence 10 not reached: node n1 holds 3 committed entries of context \"x\" (writer: n1, claiming)"
            ),
            "{}",
            s.message()
        );
        let s = Unserved { held: None, ..u }.status(Some(("n2", "connection refused")));
        assert!(
            s.message().contains("holds no replica of context \"x\"")
                && s.message()
                    .contains("n2 could not be reached (connection refused)"),
            "{}",
            s.message()
        );
    }
}
