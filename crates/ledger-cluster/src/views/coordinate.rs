//! The coordinate task: on the view log's writer, gossip becomes view records — the settled
//! marks members announce, then at most one membership change at a time.

use super::{Pending, VIEWS_CONTEXT, codec};
use crate::cluster::Cluster;
use crate::membership::View;
use crate::settings::ClusterSettings;
use ledger_core::NewEntry;
use ledger_discovery::GossipRole;
use ledger_replication::views::{NextChange, ViewChange, ViewRecord};
use ledger_replication::{AckLevel, Member, MemberState, Role};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// How often the writer of the log looks for records to append.
const EVERY: Duration = Duration::from_millis(200);
/// How long a node must have written the log before it proposes a leave: a member gossip has
/// not told it about yet (it just started) is not a member an operator removed.
const LEAVE_GRACE: Duration = Duration::from_secs(10);
/// How often a member whose settled mark gossip has not brought is asked for it directly
/// (and how long it may take to answer).
const ASK_EVERY: Duration = Duration::from_secs(1);
/// The key of the log's entries.
pub const VIEW_KEY: &str = "views";

impl Cluster {
    /// Runs until the node stops.
    pub(crate) async fn coordinate_views(self: Arc<Self>) {
        let mut stop = self.stop_signal();
        let mut tick = tokio::time::interval(EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The newest change appended, until this node's log applied it.
        let mut proposed = 0u64;
        let mut writing_since: Option<std::time::Instant> = None;
        // Settled marks read from the members themselves: (incarnation, version) by node.
        let mut asked: HashMap<String, (u64, u64)> = HashMap::new();
        let mut last_asked: Option<std::time::Instant> = None;
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                _ = tick.tick() => {}
            }
            if !self.writes(VIEWS_CONTEXT) {
                *self.views.pending.lock() = None;
                writing_since = None;
                continue;
            }
            let since = *writing_since.get_or_insert_with(std::time::Instant::now);
            let leaves_allowed = self.is_joined() && since.elapsed() >= LEAVE_GRACE;
            if last_asked.is_none_or(|t| t.elapsed() >= ASK_EVERY) {
                last_asked = Some(std::time::Instant::now());
                self.ask_settled_marks(&mut asked).await;
            }
            for record in self.records_due(proposed, leaves_allowed, &asked) {
                let entry = NewEntry {
                    context_id: VIEWS_CONTEXT.to_owned(),
                    key: VIEW_KEY.to_owned(),
                    payload: codec::encode(&record),
                    metadata: Default::default(),
                    received_lamport_clock: None,
                    idempotency_key: None,
                };
                match self.append_here(entry, AckLevel::Quorum).await {
                    Ok(e) => {
                        if let ViewRecord::Change { version, change } = &record {
                            proposed = *version;
                            tracing::info!(version, change = %describe(change), sequence = e.sequence, "placement view changed");
                        }
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "could not append a placement view record; retrying");
                        break;
                    }
                }
            }
        }
    }

    /// The records the log should get now: settled marks announced in gossip beyond what it
    /// holds, then the next membership change (none while the last one appended is not
    /// applied here yet; a leave only when `leaves_allowed`).
    fn records_due(
        &self,
        proposed: u64,
        leaves_allowed: bool,
        asked: &HashMap<String, (u64, u64)>,
    ) -> Vec<ViewRecord> {
        let view = self.view();
        let announced_here = self.views.announced();
        self.views.with_log(|log| {
            let mut out = Vec::new();
            for m in &log.current().members {
                let Some(p) = view.peer(m.id.as_str()) else {
                    continue;
                };
                let announced = if m.id == self.me.node {
                    announced_here
                } else {
                    let direct = match asked.get(m.id.as_str()) {
                        Some(&(incarnation, v)) if incarnation == m.incarnation.0 => v,
                        _ => 0,
                    };
                    p.views_settled.max(direct)
                };
                let recorded = log.settled(&m.id).unwrap_or(0);
                if p.incarnation == m.incarnation.0
                    && announced > recorded
                    && announced <= log.version()
                {
                    out.push(ViewRecord::Settled {
                        node: m.id.clone(),
                        incarnation: m.incarnation.0,
                        version: announced,
                    });
                }
            }
            if log.version() < proposed {
                return out;
            }
            if log.version() == 0 && !self.may_bootstrap(&view) {
                *self.views.pending.lock() = None;
                return out;
            }
            let desired = desired_members(&view);
            let next = log.next_change(&desired, |id| {
                view.peer(id.as_str()).is_some_and(|p| p.state.is_live())
            });
            let pending = match next {
                NextChange::Propose(ViewRecord::Change {
                    change: change @ ViewChange::Leave(_),
                    ..
                }) if !leaves_allowed => Some(Pending {
                    change: describe(&change),
                    waiting_for: Vec::new(),
                }),
                NextChange::Propose(record) => {
                    out.push(record);
                    None
                }
                NextChange::Waiting { change, for_nodes } => Some(Pending {
                    change: describe(&change),
                    waiting_for: for_nodes.iter().map(ToString::to_string).collect(),
                }),
                NextChange::None => None,
            };
            *self.views.pending.lock() = pending;
            out
        })
    }
}

impl Cluster {
    /// Whether this node may create the view log and its first view ([`may_bootstrap`]).
    pub(crate) fn may_bootstrap(&self, view: &View) -> bool {
        may_bootstrap(
            &self.settings.seeds,
            self.contacted.load(std::sync::atomic::Ordering::Acquire),
            view,
        )
    }

    /// Reads the settled mark of every live member of the current view that has not settled
    /// it by what gossip brought (a metadata update can be slow to spread, or lost), from the
    /// member itself: the `views_settled` of its `ContextState` answer, with the incarnation
    /// it settled as. A member that does not answer keeps what it answered before.
    async fn ask_settled_marks(&self, asked: &mut HashMap<String, (u64, u64)>) {
        let view = self.view();
        let lagging: Vec<(String, String)> = self.views.with_log(|log| {
            let version = log.version();
            log.current()
                .members
                .iter()
                .filter(|m| m.id != self.me.node)
                .filter(|m| log.settled(&m.id).unwrap_or(0) < version)
                .filter_map(|m| view.peer(m.id.as_str()))
                .filter(|p| p.state.is_live() && p.views_settled < version)
                .filter(|p| {
                    asked
                        .get(&p.id)
                        .is_none_or(|&(inc, v)| inc != p.incarnation || v < version)
                })
                .map(|p| (p.id.clone(), p.addr.clone()))
                .collect()
        });
        let asks = lagging.into_iter().map(|(id, addr)| async move {
            let answer = self
                .remote_context_state(&addr, VIEWS_CONTEXT, false, ASK_EVERY)
                .await
                .ok()?;
            (answer.node_id == id).then_some((id, (answer.incarnation, answer.views_settled)))
        });
        for (id, mark) in futures::future::join_all(asks).await.into_iter().flatten() {
            asked.insert(id, mark);
        }
    }
}

/// Whether a node with these `seeds` may create the view log and its first view: it was given
/// no seeds (it starts the cluster alone), or it reached the cluster (`contacted`, or gossip
/// shows another member) and gossip shows it alive with a majority of its seed list. Nodes
/// started together with the same seeds cannot each bootstrap a log of their own: two
/// majorities of one list share a node, so gossip has joined them before either group is big
/// enough.
pub(crate) fn may_bootstrap(seeds: &[String], contacted: bool, view: &View) -> bool {
    let seeds: std::collections::BTreeSet<&String> = seeds.iter().collect();
    if seeds.is_empty() {
        return true;
    }
    let live = view.peers.values().filter(|p| p.state.is_live()).count();
    (contacted || live > 1) && live > seeds.len() / 2
}

/// `view` with the view log's context placed nowhere while this node may not create the log
/// (placement views on, no first view applied yet, [`may_bootstrap`] false): a node started
/// together with others, alone for a moment, would otherwise create and write a log of its own.
pub(crate) fn hold_log_back(
    view: View,
    settings: &ClusterSettings,
    log_version: u64,
    contacted: bool,
) -> View {
    if settings.placement_views
        && log_version == 0
        && !may_bootstrap(&settings.seeds, contacted, &view)
    {
        view.without_log_placement()
    } else {
        view
    }
}

/// The membership gossip wants: every node it knows (down ones included: they keep their
/// place until removed), with the incarnation, role and prefixes it announces.
fn desired_members(view: &View) -> Vec<Member> {
    view.peers
        .values()
        .map(|p| {
            let role = match p.role {
                GossipRole::Member => Role::Member,
                GossipRole::Mirror => Role::Mirror,
            };
            Member::new(p.id.as_str(), p.incarnation, role, MemberState::Alive)
                .with_mirror_prefixes(p.mirror_prefixes.clone())
        })
        .collect()
}

/// A change as an operator reads it.
pub fn describe(change: &ViewChange) -> String {
    match change {
        ViewChange::Bootstrap(ms) => format!(
            "bootstrap with {}",
            ms.iter()
                .map(|m| m.id.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        ViewChange::Join(m) => format!("join {} ({:?})", m.id, m.role),
        ViewChange::Update(m) => format!(
            "update {} (incarnation {:016x}, {:?})",
            m.id, m.incarnation.0, m.role
        ),
        ViewChange::Leave(id) => format!("leave {id}"),
    }
}
