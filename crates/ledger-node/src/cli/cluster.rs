//! `converge-ledger cluster …`: see and manage a cluster through any of its nodes.
//!
//! - `cluster status [--context C] [--json]`: members (id, address, role, state, version) and,
//!   per context, the writer, epoch and each replica's size, root and lag;
//! - `cluster remove NODE`: forget a dead member (its contexts move to other members);
//! - `cluster accept-loss CONTEXT`: make the surviving replicas' history a context's after a
//!   majority of a replica set it must consult left the cluster (`"state": "lost_quorum"`);
//! - `cluster quarantine list|export`: divergent suffixes moved aside by replicas.

use crate::error::CliError;
use crate::output::out_line;
use crate::target::Target;
use ledger_client::{Auth, Transport};
use ledger_proto::cluster::v1 as cpb;
use ledger_proto::cluster::v1::cluster_service_client::ClusterServiceClient;
use std::path::{Path, PathBuf};

#[derive(clap::Subcommand, Debug)]
pub enum ClusterCommand {
    /// Members, and for each context its writer, epoch, replicas, sizes, roots and lag
    Status {
        #[command(flatten)]
        target: Target,
        /// Only this context (default: the contexts the node holds, up to --limit)
        #[arg(long)]
        context: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// One JSON object instead of tables
        #[arg(long)]
        json: bool,
    },
    /// Remove a dead or left member from the cluster (its contexts move to other members)
    Remove {
        #[command(flatten)]
        target: Target,
        /// The member's node id
        node: String,
    },
    /// Make the surviving replicas' history the context's after a majority of a replica set it
    /// must consult left the cluster (its `cluster status` state is `lost_quorum`). Entries
    /// only the lost members held are gone for good; logged and counted (admin)
    AcceptLoss {
        #[command(flatten)]
        target: Target,
        /// The context id
        context: String,
    },
    /// Divergent suffixes a replica moved aside (never served, never merged)
    Quarantine {
        #[command(subcommand)]
        what: QuarantineCommand,
    },
}

#[derive(clap::Subcommand, Debug)]
pub enum QuarantineCommand {
    /// List the quarantined suffixes a node holds
    List {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        context: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Write one quarantined suffix as a snapshot of the divergent history (loadable into a
    /// separate node for inspection)
    Export {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        context: String,
        /// The quarantine's id (from `list`)
        #[arg(long)]
        id: u64,
        /// Output file
        #[arg(long, short)]
        out: PathBuf,
    },
}

async fn connect(target: &Target) -> Result<ClusterServiceClient<Transport>, CliError> {
    let options = target.options().map_err(|e| e.to_string())?;
    let auth: Auth = options.auth().map_err(|e| e.to_string())?;
    let ch = options
        .endpoint(&target.addr)
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", target.addr))?;
    Ok(ClusterServiceClient::with_interceptor(ch, auth)
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX))
}

fn status_err(s: tonic::Status) -> CliError {
    if s.code() == tonic::Code::Unimplemented {
        return CliError::Message(
            "this node is not a cluster member (started without seeds or gossip_addr)".into(),
        );
    }
    CliError::Message(format!("{:?}: {}", s.code(), s.message()))
}

pub async fn run(cmd: ClusterCommand) -> Result<(), CliError> {
    match cmd {
        ClusterCommand::Status {
            target,
            context,
            limit,
            json,
        } => status(&target, context, limit, json).await,
        ClusterCommand::Remove { target, node } => remove(&target, &node).await,
        ClusterCommand::AcceptLoss { target, context } => accept_loss(&target, &context).await,
        ClusterCommand::Quarantine { what } => match what {
            QuarantineCommand::List {
                target,
                context,
                json,
            } => quarantine_list(&target, context, json).await,
            QuarantineCommand::Export {
                target,
                context,
                id,
                out,
            } => quarantine_export(&target, &context, id, &out).await,
        },
    }
}

/// A JSON document a node answered: printed as is with `--json` (then `None`), else parsed
/// for the tables (`what` names it if it is unreadable).
fn parse_unless_json(
    doc: &str,
    json: bool,
    what: &str,
) -> Result<Option<serde_json::Value>, CliError> {
    if json {
        out_line(doc)?;
        return Ok(None);
    }
    serde_json::from_str(doc)
        .map(Some)
        .map_err(|e| CliError::Message(format!("unreadable {what}: {e}")))
}

/// `cluster status`: members, and per context its writer, epoch and replicas.
async fn status(
    target: &Target,
    context: Option<String>,
    limit: u32,
    json: bool,
) -> Result<(), CliError> {
    let doc = connect(target)
        .await?
        .status(cpb::StatusRequest {
            context_id: context.unwrap_or_default(),
            limit,
            members_only: false,
        })
        .await
        .map_err(status_err)?
        .into_inner()
        .json;
    let Some(v) = parse_unless_json(&doc, json, "status")? else {
        return Ok(());
    };
    for line in status_text(&v) {
        out_line(&line)?;
    }
    Ok(())
}

/// `cluster remove NODE`.
async fn remove(target: &Target, node: &str) -> Result<(), CliError> {
    let r = connect(target)
        .await?
        .remove_member(cpb::RemoveMemberRequest {
            node_id: node.to_owned(),
        })
        .await
        .map_err(status_err)?
        .into_inner();
    out_line(&if r.removed {
        format!("removed {node}; its contexts move to the remaining members")
    } else {
        format!("{node} was already removed on this node")
    })
}

/// `cluster accept-loss CONTEXT`.
async fn accept_loss(target: &Target, context: &str) -> Result<(), CliError> {
    let r = connect(target)
        .await?
        .accept_loss(cpb::AcceptLossRequest {
            context_id: context.to_owned(),
        })
        .await
        .map_err(status_err)?
        .into_inner();
    out_line(&format!(
        "accepted the loss: context {context} continues from the surviving replicas' {} entries in epoch {}",
        r.size, r.epoch
    ))
}

/// `cluster quarantine list`.
async fn quarantine_list(
    target: &Target,
    context: Option<String>,
    json: bool,
) -> Result<(), CliError> {
    let doc = connect(target)
        .await?
        .quarantines(cpb::QuarantinesRequest {
            context_id: context.unwrap_or_default(),
        })
        .await
        .map_err(status_err)?
        .into_inner()
        .json;
    let Some(v) = parse_unless_json(&doc, json, "list")? else {
        return Ok(());
    };
    let list = v.as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        return out_line("no quarantined entries");
    }
    out_line("CONTEXT\tID\tFROM\tCOUNT\tREASON")?;
    for q in list {
        out_line(&format!(
            "{}\t{}\t{}\t{}\t{}",
            q["context"].as_str().unwrap_or_default(),
            q["id"],
            q["from_sequence"],
            q["count"],
            q["reason"].as_str().unwrap_or_default()
        ))?;
    }
    Ok(())
}

/// `cluster quarantine export`: one quarantined suffix as a snapshot file.
async fn quarantine_export(
    target: &Target,
    context: &str,
    id: u64,
    out: &Path,
) -> Result<(), CliError> {
    let r = connect(target)
        .await?
        .export_quarantine(cpb::ExportQuarantineRequest {
            context_id: context.to_owned(),
            id,
        })
        .await
        .map_err(status_err)?
        .into_inner();
    std::fs::write(out, &r.snapshot).map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    out_line(&format!(
        "wrote {} entries of {context}'s divergent history (quarantine {id}) to {}",
        r.entries,
        out.display()
    ))
}

/// The human-readable form of a status document.
fn status_text(v: &serde_json::Value) -> Vec<String> {
    let s = |x: &serde_json::Value| x.as_str().unwrap_or("-").to_owned();
    let mut lines = vec![format!(
        "node {} (replication factor {})",
        s(&v["node"]),
        v["replication_factor"]
    )];
    lines.push("MEMBER\tADDRESS\tROLE\tSTATE\tVERSION".into());
    for m in v["members"].as_array().into_iter().flatten() {
        // A mirror with prefixes shows them: `mirror[obs-,tenant-7/]`.
        let prefixes: Vec<&str> = m["mirror_prefixes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p.as_str())
            .collect();
        let role = if prefixes.is_empty() {
            s(&m["role"])
        } else {
            format!("{}[{}]", s(&m["role"]), prefixes.join(","))
        };
        lines.push(format!(
            "{}\t{}\t{}\t{}\t{}",
            s(&m["id"]),
            s(&m["addr"]),
            role,
            s(&m["state"]),
            s(&m["version"])
        ));
    }
    for c in v["contexts"].as_array().into_iter().flatten() {
        lines.push(String::new());
        lines.push(format!(
            "context {}: epoch {} ({}), writer {} {}",
            s(&c["context"]),
            c["epoch"],
            s(&c["epoch_writer"]),
            s(&c["writer"]["id"]),
            s(&c["writer"]["addr"])
        ));
        lines.push("  REPLICA\tSTATE\tSIZE\tLAG\tLAG_MS\tROOT".into());
        for r in c["replicas"].as_array().into_iter().flatten() {
            if let Some(e) = r["error"].as_str() {
                lines.push(format!(
                    "  {}\t{}\t(no answer: {e})",
                    s(&r["id"]),
                    s(&r["state"])
                ));
                continue;
            }
            lines.push(format!(
                "  {}\t{}\t{}\t{}\t{}\t{}",
                s(&r["id"]),
                s(&r["state"]),
                r["size"],
                r["lag_entries"],
                r["lag_ms"],
                s(&r["root"])
            ));
        }
    }
    let q = v["quarantines"].as_array().map_or(0, Vec::len);
    if q > 0 {
        lines.push(String::new());
        lines.push(format!(
            "{q} quarantined suffix(es) on this node: see `converge-ledger cluster quarantine list`"
        ));
    }
    lines
}
