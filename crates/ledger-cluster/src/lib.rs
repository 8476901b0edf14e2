//! The Converge Ledger cluster runtime: it carries out what the replication protocol's state
//! machines (`ledger-replication`) decide, against the embedded ledger (`ledger-embedded`), the
//! membership of a [`Discovery`](ledger_discovery::Discovery) and gRPC links to the peers.
//!
//! A node runs it only when `seeds` or `gossip_addr` is set; without them it is a one-node
//! cluster and serves exactly like a single node (no gossip, no replication, no extra hop). The
//! server builds the discovery (gossip), the settings and the hooks, and starts it with
//! [`Cluster::start`]; routing public requests to the right node is the server's, on top of
//! what this crate offers (the writer of a context, its replicas, appends and loads on this
//! node, the commit index reads stop at).
//!
//! Who owns what (every task is spawned into one set that [`Cluster::shutdown`] waits for,
//! after it raises the stop signal):
//! - the **view task** follows the discovery's membership, turns it into the protocol's view
//!   ([`membership::view`]), publishes it on a watch channel read by every context task,
//!   forgets members dead for longer than `dead_member_timeout_ms`, and starts peer dialers;
//! - one **dialer** per peer with a higher node id keeps a `Replicate` stream open to it; a
//!   peer with a lower id dials us and the stream's response side is our link to it
//!   ([`peer_streams`]): one bidirectional stream per pair of nodes, and one **reader** task
//!   per stream a peer opened;
//! - one **context task** ([`context`]) per context this node writes or replicates, created
//!   on first use (an append routed here, a message from a peer, a read that waits, a
//!   difference found by anti-entropy), stopping when idle;
//! - the **anti-entropy task** compares digests with one peer per interval ([`anti_entropy`]);
//! - the three **view log tasks** ([`views`]): follow (apply the log), coordinate (the log's
//!   writer appends membership changes, one at a time), settle (claim changed contexts again,
//!   announce the view settled).
//!
//! Ties to the server run one way, through small traits defined here: [`ClusterMetrics`] (the
//! metrics hooks) and [`PeerTlsSource`] (mutual TLS to peers); the node's identity comes as a
//! plain [`Voter`](ledger_replication::Voter) ([`membership::voter`]).
//!
//! # Layout
//! - [`cluster`]: [`Cluster`]: start, shutdown, the view, what the member owns.
//! - [`settings`]: [`ClusterSettings`], plain values.
//! - [`membership`]: the protocol's membership view and the address book, from the discovery's.
//! - [`context`]: the context tasks (task, writer pipeline, executor, acknowledgements, recent
//!   entries, registry of mailboxes).
//! - [`contexts`]: how the rest of the runtime reaches a context's task.
//! - [`placement`]: a context's writer and replicas as this node sees them.
//! - [`writes`]: appends, batches and loads this node serves as a context's writer.
//! - [`commit_index`]: what replicas may serve (the commit index) and readers' [`ReadCap`].
//! - [`links`]: peer links (queues, dialers, channels) and [`PeerTlsSource`].
//! - [`peer_streams`]: the `Replicate` streams: dialing, accepting, reading.
//! - [`wire`]: protocol messages in `cluster.v1.Envelope`s (golden-bytes tested).
//! - [`anti_entropy`]: digest exchanges that heal what live streams missed.
//! - [`status_report`]: the `cluster status` document.
//! - [`views`]: the placement view log: following it, coordinating membership changes one at
//!   a time, settling views.
//! - [`metrics`]: [`ClusterMetrics`], the hooks the runtime reports through.
//! - `tasks`: the set of every task a member spawned.
//! - [`error`]: [`ClusterError`] and the refusals of peers' requests.

pub mod anti_entropy;
pub mod cluster;
pub mod commit_index;
pub mod context;
pub mod contexts;
pub mod error;
pub mod links;
pub mod membership;
pub mod metrics;
pub mod peer_streams;
pub mod placement;
pub mod settings;
pub mod status_report;
mod tasks;
pub mod views;
pub mod wire;
pub mod writes;

pub use cluster::Cluster;
pub use commit_index::ReadCap;
pub use context::messages::ContextState;
pub use error::{ClusterError, LoadFailure, PeerRequestError};
pub use links::PeerTlsSource;
pub use metrics::{ClusterMetrics, NoMetrics};
pub use settings::ClusterSettings;
pub use writes::{AppendAnswer, ShuttingDown};
