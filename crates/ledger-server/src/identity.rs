//! The node's identity: a stable node id, and the incarnation of its data dir.
//!
//! Both live in `<data_dir>/node.json`, written once when the data dir is first used:
//! - `node_id`: the setting `node_id` if given, else generated (`node-` and 12 random hex
//!   digits). It never changes for this data dir: a later start with a different `node_id`
//!   setting is refused, so a data dir can't silently serve under another node's name.
//! - `incarnation`: random, created with the data dir. A node that comes back under its old id
//!   with an empty or lost data dir gets a new incarnation, which tells its peers it has
//!   forgotten everything it promised (docs/ARCHITECTURE.md).
//!
//! Every response carries the id in the `x-ledger-node` header
//! ([`NodeIdLayer`](crate::middleware::node_id::NodeIdLayer)).

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// A node's identity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub node_id: String,
    pub incarnation: String,
}

/// Where the identity of a data dir is kept.
pub fn identity_file(data_dir: &Path) -> PathBuf {
    data_dir.join("node.json")
}

fn random_hex(bytes: usize) -> Result<String, String> {
    let mut b = vec![0u8; bytes];
    getrandom::fill(&mut b).map_err(|e| format!("cannot generate a node identity: {e}"))?;
    Ok(hex::encode(b))
}

/// Checks a `node_id` setting: 1–64 characters of letters, digits, `.`, `_` and `-`.
pub fn validate_node_id(id: &str) -> Result<(), String> {
    if id.is_empty()
        || id.len() > 64
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        return Err(format!(
            "invalid setting node_id: {id:?} must be 1-64 letters, digits, '.', '_' or '-'"
        ));
    }
    Ok(())
}

/// The identity of the node on `data_dir`: read, or created on first use. `configured` is the
/// `node_id` setting.
pub fn load_or_create(data_dir: &Path, configured: Option<&str>) -> Result<Identity, String> {
    let path = identity_file(data_dir);
    if path.exists() {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read the node identity {}: {e}", path.display()))?;
        let id: Identity = serde_json::from_str(&text)
            .map_err(|e| format!("the node identity {} is unreadable: {e}", path.display()))?;
        if let Some(c) = configured
            && c != id.node_id
        {
            return Err(format!(
                "the data dir {} belongs to node {:?}, but the setting node_id is {c:?}; use that \
                 data dir's node id, or a new data dir for a new node",
                data_dir.display(),
                id.node_id
            ));
        }
        return Ok(id);
    }
    let id = Identity {
        node_id: match configured {
            Some(c) => c.to_owned(),
            None => format!("node-{}", random_hex(6)?),
        },
        incarnation: random_hex(8)?,
    };
    let text = serde_json::to_string_pretty(&id).expect("identity serializes");
    // Written to a temporary file and renamed, so a crash never leaves half an identity.
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, format!("{text}\n"))
        .and_then(|()| std::fs::File::open(&tmp)?.sync_all())
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|e| format!("cannot write the node identity {}: {e}", path.display()))?;
    tracing::info!(node_id = %id.node_id, incarnation = %id.incarnation, "created the node identity");
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_created_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create(dir.path(), None).unwrap();
        assert!(a.node_id.starts_with("node-"), "{a:?}");
        let b = load_or_create(dir.path(), None).unwrap();
        assert_eq!(a, b);
        // The same id given explicitly is fine; another one is refused.
        assert_eq!(load_or_create(dir.path(), Some(&a.node_id)).unwrap(), a);
        let e = load_or_create(dir.path(), Some("other")).unwrap_err();
        assert!(e.contains("belongs to node"), "{e}");
        // A new data dir under the same configured id is a new incarnation.
        let d1 = tempfile::tempdir().unwrap();
        let d2 = tempfile::tempdir().unwrap();
        let x = load_or_create(d1.path(), Some("n1")).unwrap();
        let y = load_or_create(d2.path(), Some("n1")).unwrap();
        assert_eq!(x.node_id, y.node_id);
        assert_ne!(x.incarnation, y.incarnation);
        assert!(validate_node_id("n1").is_ok());
        assert!(validate_node_id("bad id").is_err());
        assert!(validate_node_id("").is_err());
    }
}
