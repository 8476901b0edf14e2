//! Who may call which method ([`access_of`]), the node's [`Policy`] deciding each request,
//! what handlers check once they know the context ([`check_context`], [`require_role`]), and
//! the caller's token passed on with forwarded requests.

use super::tokens::{Principal, TokenRole, Tokens};
use crate::conn::ConnInfo;
use crate::error_status::{node_certificate_required, role_denied, unauthenticated};
use parking_lot::RwLock;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tonic::Status;
use tonic::codegen::http;
use tonic::metadata::{AsciiMetadataValue, MetadataMap};

/// The request header carrying the token.
pub const AUTHORIZATION: &str = "authorization";

/// `PERMISSION_DENIED` unless the request's caller may use `context_id` (always passes with
/// auth off).
pub fn check_context<T>(request: &tonic::Request<T>, context_id: &str) -> Result<(), Status> {
    match request.extensions().get::<Principal>() {
        Some(p) => p.check_context(context_id),
        None => Ok(()),
    }
}

/// `PERMISSION_DENIED` unless the request's caller has `role` (always passes with auth off).
pub fn require_role<T>(
    request: &tonic::Request<T>,
    role: TokenRole,
    what: &str,
) -> Result<(), Status> {
    match request.extensions().get::<Principal>() {
        Some(p) if !p.role.permits(role) => Err(role_denied(what, role.as_str(), p.role.as_str())),
        _ => Ok(()),
    }
}

/// The caller's `authorization` header, to pass on with a request forwarded to another node
/// (which authenticates the caller again).
pub fn authorization_of(meta: &MetadataMap) -> Option<AsciiMetadataValue> {
    meta.get(AUTHORIZATION).cloned()
}

/// Puts `authorization` (from [`authorization_of`]) on a forwarded request.
pub fn pass_on<T>(
    authorization: Option<&AsciiMetadataValue>,
    mut request: tonic::Request<T>,
) -> tonic::Request<T> {
    if let Some(v) = authorization {
        request.metadata_mut().insert(AUTHORIZATION, v.clone());
    }
    request
}

/// Who may call a method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Anyone (health, reflection).
    Open,
    /// A token of this role (or admin).
    Role(TokenRole),
    /// Any valid token (the handler may ask for more, e.g. the full cluster status).
    AnyToken,
    /// Node to node: with `tls_client_ca` set, only a peer with a node certificate.
    Node,
}

/// The access rule of a gRPC method, by its path `/package.Service/Method`.
pub fn access_of(path: &str) -> Access {
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let (service, method) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    match (service, method) {
        ("grpc.health.v1.Health", _)
        | ("grpc.reflection.v1.ServerReflection", _)
        | ("grpc.reflection.v1alpha.ServerReflection", _) => Access::Open,
        ("converge.context.v1.ContextService", "Append" | "AppendBatch" | "Load")
        | ("converge.ledger.v1.AppendPipeline", "AppendStream")
        | ("converge.ledger.v1.SnapshotService", "LoadStream") => Access::Role(TokenRole::Writer),
        ("converge.context.v1.ContextService", "Get" | "Watch" | "Snapshot")
        | ("converge.ledger.v1.SnapshotService", "SnapshotStream")
        | ("converge.ledger.v1.IntegrityService", _) => Access::Role(TokenRole::Reader),
        ("converge.ledger.cluster.v1.ClusterService", "Replicate" | "ContextState" | "Digest") => {
            Access::Node
        }
        // The members-only status is what cluster-aware clients route with: any token; the
        // full status needs admin (checked by the handler).
        ("converge.ledger.cluster.v1.ClusterService", "Status") => Access::AnyToken,
        ("converge.ledger.cluster.v1.ClusterService", _) => Access::Role(TokenRole::Admin),
        // Unknown methods: any token, then UNIMPLEMENTED.
        _ => Access::AnyToken,
    }
}

/// The node's access policy: tokens (when auth is on) and whether peers prove themselves
/// with certificates (mTLS).
#[derive(Debug)]
pub struct Policy {
    tokens: Option<RwLock<Arc<Tokens>>>,
    file: Option<PathBuf>,
    mtls: bool,
}

impl Policy {
    /// Reads the auth file when one is set. `mtls`: clients and peers present certificates
    /// signed by `tls_client_ca`.
    pub fn load(auth_file: Option<&Path>, mtls: bool) -> Result<Policy, String> {
        let tokens = match auth_file {
            Some(p) => Some(RwLock::new(Arc::new(Tokens::load(p)?))),
            None => None,
        };
        Ok(Policy {
            tokens,
            file: auth_file.map(Path::to_path_buf),
            mtls,
        })
    }

    /// A policy with these tokens (tests).
    pub fn with_tokens(tokens: Option<Tokens>, mtls: bool) -> Policy {
        Policy {
            tokens: tokens.map(|t| RwLock::new(Arc::new(t))),
            file: None,
            mtls,
        }
    }

    pub fn auth_on(&self) -> bool {
        self.tokens.is_some()
    }

    /// Reads the auth file again (SIGHUP). On error the tokens in force stay.
    pub fn reload(&self) -> Result<usize, String> {
        let (Some(lock), Some(path)) = (&self.tokens, &self.file) else {
            return Ok(0);
        };
        let t = Tokens::load(path)?;
        let n = t.len();
        *lock.write() = Arc::new(t);
        Ok(n)
    }

    /// Decides a request: the caller's principal (None with auth off or for open methods),
    /// or the status to refuse it with.
    pub fn decide(
        &self,
        path: &str,
        headers: &http::HeaderMap,
        conn: Option<&ConnInfo>,
    ) -> Result<Option<Principal>, Status> {
        let access = access_of(path);
        let method = path.rsplit('/').next().unwrap_or(path);
        let is_node = conn.is_some_and(ConnInfo::is_node);
        let cluster_method = path.starts_with("/converge.ledger.cluster.v1.ClusterService/");
        if access == Access::Open {
            return Ok(None);
        }
        if access == Access::Node {
            if self.mtls && !is_node {
                return Err(node_certificate_required(method));
            }
            return Ok(is_node.then(Principal::node));
        }
        if is_node && cluster_method {
            // A peer calling an admin method on behalf of an operator's `cluster` command.
            return Ok(Some(Principal::node()));
        }
        let Some(tokens) = &self.tokens else {
            return Ok(None);
        };
        let token = bearer(headers).map_err(unauthenticated)?;
        let principal = tokens.read().authenticate(token).ok_or_else(|| {
            unauthenticated(
                "unauthenticated: unknown token (not in the node's auth_file); check the token or ask the operator for one",
            )
        })?;
        if let Access::Role(need) = access
            && !principal.role.permits(need)
        {
            return Err(role_denied(method, need.as_str(), principal.role.as_str()));
        }
        Ok(Some(principal))
    }
}

/// The token of an `authorization: Bearer <token>` header.
fn bearer(headers: &http::HeaderMap) -> Result<&str, &'static str> {
    let v = headers.get(AUTHORIZATION).ok_or(
        "unauthenticated: no token; send the header `authorization: Bearer <token>` (CLI: --token or LEDGER_TOKEN)",
    )?;
    let v = v
        .to_str()
        .map_err(|_| "unauthenticated: the authorization header is not ASCII text")?;
    let (scheme, token) = v
        .split_once(' ')
        .ok_or("unauthenticated: the authorization header must be `Bearer <token>`")?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err("unauthenticated: the authorization header must be `Bearer <token>`");
    }
    Ok(token.trim())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::tokens::token_table;

    fn headers(token: Option<&str>) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        if let Some(t) = token {
            h.insert(AUTHORIZATION, format!("Bearer {t}").parse().unwrap());
        }
        h
    }

    fn policy() -> Policy {
        let text = format!(
            "{}{}{}",
            token_table("w", TokenRole::Writer, Some("tenant-a/")),
            token_table("r", TokenRole::Reader, None),
            token_table("a", TokenRole::Admin, None)
        );
        Policy::with_tokens(Some(Tokens::parse(&text).unwrap()), false)
    }

    const APPEND: &str = "/converge.context.v1.ContextService/Append";
    const GET: &str = "/converge.context.v1.ContextService/Get";

    #[test]
    fn missing_and_unknown_tokens_are_unauthenticated() {
        let p = policy();
        let s = p.decide(APPEND, &headers(None), None).unwrap_err();
        assert_eq!(s.code(), tonic::Code::Unauthenticated);
        assert!(s.message().contains("no token"), "{}", s.message());
        let s = p.decide(APPEND, &headers(Some("nope")), None).unwrap_err();
        assert_eq!(s.code(), tonic::Code::Unauthenticated);
        assert!(s.message().contains("unknown token"), "{}", s.message());
        let mut h = http::HeaderMap::new();
        h.insert(AUTHORIZATION, "Basic abc".parse().unwrap());
        let s = p.decide(APPEND, &h, None).unwrap_err();
        assert_eq!(s.code(), tonic::Code::Unauthenticated);
    }

    #[test]
    fn roles_and_prefixes_are_permission_denied_and_say_which() {
        let p = policy();
        let s = p.decide(APPEND, &headers(Some("r")), None).unwrap_err();
        assert_eq!(s.code(), tonic::Code::PermissionDenied);
        assert!(s.message().contains("(role)"), "{}", s.message());
        assert!(s.message().contains("writer"), "{}", s.message());
        let w = p
            .decide(APPEND, &headers(Some("w")), None)
            .unwrap()
            .unwrap();
        assert!(w.check_context("tenant-a/x").is_ok());
        let s = w.check_context("tenant-b/x").unwrap_err();
        assert_eq!(s.code(), tonic::Code::PermissionDenied);
        assert!(s.message().contains("(prefix)"), "{}", s.message());
        // Writer tokens do not read; admin does everything.
        assert!(p.decide(GET, &headers(Some("w")), None).is_err());
        assert!(p.decide(GET, &headers(Some("r")), None).is_ok());
        assert!(p.decide(APPEND, &headers(Some("a")), None).is_ok());
        let batch = "/converge.context.v1.ContextService/AppendBatch";
        assert_eq!(
            p.decide(batch, &headers(Some("r")), None)
                .unwrap_err()
                .code(),
            tonic::Code::PermissionDenied
        );
        assert!(p.decide(batch, &headers(Some("w")), None).is_ok());
        let admin_only = "/converge.ledger.cluster.v1.ClusterService/Quarantines";
        assert!(p.decide(admin_only, &headers(Some("r")), None).is_err());
        assert!(p.decide(admin_only, &headers(Some("a")), None).is_ok());
    }

    #[test]
    fn health_and_reflection_stay_open_and_auth_off_passes_everything() {
        let p = policy();
        assert_eq!(
            p.decide("/grpc.health.v1.Health/Check", &headers(None), None)
                .unwrap(),
            None
        );
        let off = Policy::with_tokens(None, false);
        assert_eq!(off.decide(APPEND, &headers(None), None).unwrap(), None);
        // Node-to-node methods are open without mTLS, refused to a non-node with it.
        let replicate = "/converge.ledger.cluster.v1.ClusterService/Replicate";
        assert!(p.decide(replicate, &headers(None), None).is_ok());
        let mtls = Policy::with_tokens(None, true);
        let s = mtls.decide(replicate, &headers(None), None).unwrap_err();
        assert_eq!(s.code(), tonic::Code::PermissionDenied);
        assert!(s.message().contains("node certificate"), "{}", s.message());
    }
}
