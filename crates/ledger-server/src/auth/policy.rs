//! Bearer tokens with roles: who may call what.
//!
//! - The auth file (setting `auth_file`, TOML) lists tokens by the hex SHA-256 of the token,
//!   never the token itself: one `[[token]]` table each, with `sha256`, `role` (`reader`,
//!   `writer` or `admin`) and an optional context-id `prefix` the token is limited to.
//!   `converge-ledger token new` makes a token and its table. The file is read at start and
//!   again on SIGHUP.
//! - [`AuthLayer`] checks every request before it reaches a service: the method's
//!   [`Access`], the caller's token (`authorization: Bearer <token>`, its hash compared with
//!   every listed hash in constant time) and role. It answers `UNAUTHENTICATED` for a missing
//!   or unknown token and `PERMISSION_DENIED` for the wrong role, and leaves the caller's
//!   [`Principal`] in the request's extensions.
//! - Handlers check the prefix once they know the context ([`check_context`]):
//!   `PERMISSION_DENIED` when the token is limited to another prefix.
//! - Health and reflection stay open. The cluster's node-to-node methods are protected by
//!   mutual TLS, not tokens: with `tls_client_ca` set only a node certificate may call them
//!   ([`crate::tls::PeerIdentity`]); a node certificate also passes for the cluster's admin
//!   methods, which nodes call on each other when an operator runs `cluster status`.
//!
//! Auth is off without `auth_file`: every request passes.

use crate::conn::ConnInfo;
use parking_lot::RwLock;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::task::{Context, Poll};
use subtle::ConstantTimeEq;
use tonic::Status;
use tonic::codegen::http;
use tonic::metadata::{AsciiMetadataValue, MetadataMap};

/// The request header carrying the token.
pub const AUTHORIZATION: &str = "authorization";

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Get, Watch, Snapshot, SnapshotStream, IntegrityService.
    Reader,
    /// Append, AppendBatch, AppendStream, Load, LoadStream.
    Writer,
    /// Everything, including cluster status, member removal and quarantines.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Writer => "writer",
            Role::Admin => "admin",
        }
    }

    /// Whether a token of this role may call a method that needs `need`.
    pub fn permits(self, need: Role) -> bool {
        self == Role::Admin || self == need
    }
}

/// The authenticated caller of a request (in its extensions when auth is on).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub role: Role,
    /// Only contexts whose id starts with this.
    pub prefix: Option<String>,
}

impl Principal {
    /// A cluster peer that presented a node certificate.
    fn node() -> Self {
        Principal {
            role: Role::Admin,
            prefix: None,
        }
    }

    /// `PERMISSION_DENIED` unless the token may use `context_id`.
    pub fn check_context(&self, context_id: &str) -> Result<(), Status> {
        match &self.prefix {
            Some(p) if !context_id.starts_with(p.as_str()) => {
                Err(Status::permission_denied(format!(
                    "permission denied (prefix): this {} token is limited to contexts starting with {p:?}; context {context_id:?} is outside it",
                    self.role.as_str()
                )))
            }
            _ => Ok(()),
        }
    }
}

/// `PERMISSION_DENIED` unless the request's caller may use `context_id` (always passes with
/// auth off).
pub fn check_context<T>(request: &tonic::Request<T>, context_id: &str) -> Result<(), Status> {
    match request.extensions().get::<Principal>() {
        Some(p) => p.check_context(context_id),
        None => Ok(()),
    }
}

/// `PERMISSION_DENIED` unless the request's caller has `role` (always passes with auth off).
pub fn require_role<T>(request: &tonic::Request<T>, role: Role, what: &str) -> Result<(), Status> {
    match request.extensions().get::<Principal>() {
        Some(p) if !p.role.permits(role) => Err(Status::permission_denied(format!(
            "permission denied (role): {what} needs a {} token; this token's role is {}",
            role.as_str(),
            p.role.as_str()
        ))),
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

/// One token of the auth file.
#[derive(Clone, Debug)]
struct Grant {
    hash: [u8; 32],
    role: Role,
    prefix: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileToken {
    sha256: String,
    role: Role,
    #[serde(default)]
    prefix: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthFile {
    #[serde(default)]
    token: Vec<FileToken>,
}

/// The tokens of an auth file.
#[derive(Clone, Debug, Default)]
pub struct Tokens {
    grants: Vec<Grant>,
}

/// The hex SHA-256 of a token, as written in the auth file.
pub fn token_hash_hex(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

impl Tokens {
    /// Reads and checks an auth file; errors name the file and the token table at fault.
    pub fn load(path: &Path) -> Result<Tokens, String> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            format!(
                "cannot read the auth file {} (setting auth_file): {e}",
                path.display()
            )
        })?;
        Tokens::parse(&text)
            .map_err(|e| format!("auth file {} (setting auth_file): {e}", path.display()))
    }

    /// Parses the auth file's TOML.
    pub fn parse(text: &str) -> Result<Tokens, String> {
        use figment::providers::{Format, Toml};
        let file: AuthFile = figment::Figment::from(Toml::string(text))
            .extract()
            .map_err(|e| e.to_string())?;
        let mut grants = Vec::with_capacity(file.token.len());
        for (i, t) in file.token.into_iter().enumerate() {
            let n = i + 1;
            let bytes = hex::decode(t.sha256.trim()).map_err(|_| {
                format!("[[token]] number {n}: sha256 must be 64 hex digits (the SHA-256 of the token, see `converge-ledger token new`)")
            })?;
            let hash: [u8; 32] = bytes.try_into().map_err(|_| {
                format!("[[token]] number {n}: sha256 must be 64 hex digits (32 bytes)")
            })?;
            if t.prefix.as_deref() == Some("") {
                return Err(format!(
                    "[[token]] number {n}: prefix is empty; leave it out to allow every context"
                ));
            }
            grants.push(Grant {
                hash,
                role: t.role,
                prefix: t.prefix,
            });
        }
        Ok(Tokens { grants })
    }

    pub fn len(&self) -> usize {
        self.grants.len()
    }

    pub fn is_empty(&self) -> bool {
        self.grants.is_empty()
    }

    /// The grant of `token`, comparing its hash with every listed hash in constant time (the
    /// time taken does not depend on which one matches, or on how much of it).
    pub fn authenticate(&self, token: &str) -> Option<Principal> {
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found: Option<&Grant> = None;
        for g in &self.grants {
            if bool::from(g.hash.ct_eq(&hash)) {
                found = Some(g);
            }
        }
        found.map(|g| Principal {
            role: g.role,
            prefix: g.prefix.clone(),
        })
    }
}

/// Who may call a method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Anyone (health, reflection).
    Open,
    /// A token of this role (or admin).
    Role(Role),
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
        | ("converge.ledger.v1.SnapshotService", "LoadStream") => Access::Role(Role::Writer),
        ("converge.context.v1.ContextService", "Get" | "Watch" | "Snapshot")
        | ("converge.ledger.v1.SnapshotService", "SnapshotStream")
        | ("converge.ledger.v1.IntegrityService", _) => Access::Role(Role::Reader),
        ("converge.ledger.cluster.v1.ClusterService", "Replicate" | "ContextState" | "Digest") => {
            Access::Node
        }
        // The members-only status is what cluster-aware clients route with: any token; the
        // full status needs admin (checked by the handler).
        ("converge.ledger.cluster.v1.ClusterService", "Status") => Access::AnyToken,
        ("converge.ledger.cluster.v1.ClusterService", _) => Access::Role(Role::Admin),
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
                return Err(Status::permission_denied(format!(
                    "permission denied (node certificate): {method} is node-to-node and needs a node certificate signed by tls_client_ca (a certificate for server use); client certificates and tokens are not enough"
                )));
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
        let token = bearer(headers).map_err(Status::unauthenticated)?;
        let principal = tokens.read().authenticate(token).ok_or_else(|| {
            Status::unauthenticated(
                "unauthenticated: unknown token (not in the node's auth_file); check the token or ask the operator for one",
            )
        })?;
        if let Access::Role(need) = access
            && !principal.role.permits(need)
        {
            return Err(Status::permission_denied(format!(
                "permission denied (role): {method} needs a {} token; this token's role is {}",
                need.as_str(),
                principal.role.as_str()
            )));
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

/// A new random token: `cl_` and 43 characters of base64url (256 random bits).
pub fn new_token() -> Result<String, String> {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness for a token: {e}"))?;
    Ok(format!(
        "cl_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    ))
}

/// The `[[token]]` table of `token` for the auth file.
pub fn token_table(token: &str, role: Role, prefix: Option<&str>) -> String {
    let mut t = format!(
        "[[token]]\nsha256 = \"{}\"\nrole = \"{}\"\n",
        token_hash_hex(token),
        role.as_str()
    );
    if let Some(p) = prefix {
        t.push_str(&format!("prefix = {}\n", toml_string(p)));
    }
    t
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Checks every request against the [`Policy`] before it reaches a service.
#[derive(Clone, Debug)]
pub struct AuthLayer {
    policy: Arc<Policy>,
}

impl AuthLayer {
    pub fn new(policy: Arc<Policy>) -> Self {
        AuthLayer { policy }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            policy: Arc::clone(&self.policy),
        }
    }
}

/// See [`AuthLayer`].
#[derive(Clone, Debug)]
pub struct AuthService<S> {
    inner: S,
    policy: Arc<Policy>,
}

impl<S, B> tower::Service<http::Request<B>> for AuthService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = futures::future::Either<
        S::Future,
        futures::future::Ready<Result<http::Response<tonic::body::Body>, S::Error>>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let decision = self.policy.decide(
            req.uri().path(),
            req.headers(),
            req.extensions().get::<ConnInfo>(),
        );
        match decision {
            Ok(principal) => {
                if let Some(p) = principal {
                    req.extensions_mut().insert(p);
                }
                futures::future::Either::Left(self.inner.call(req))
            }
            Err(status) => {
                tracing::debug!(path = req.uri().path(), code = ?status.code(), message = status.message(), "refused");
                futures::future::Either::Right(futures::future::ready(Ok(status.into_http())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            token_table("w", Role::Writer, Some("tenant-a/")),
            token_table("r", Role::Reader, None),
            token_table("a", Role::Admin, None)
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

    #[test]
    fn the_token_table_round_trips() {
        let t = new_token().unwrap();
        assert!(t.starts_with("cl_") && t.len() == 46, "{t}");
        let table = token_table(&t, Role::Writer, Some("a\"b/"));
        let tokens = Tokens::parse(&table).unwrap();
        assert_eq!(
            tokens.authenticate(&t),
            Some(Principal {
                role: Role::Writer,
                prefix: Some("a\"b/".into())
            })
        );
        assert!(Tokens::parse("[[token]]\nsha256 = \"zz\"\nrole = \"writer\"\n").is_err());
        assert!(Tokens::parse("[[token]]\nsha256 = \"00\"\nrole = \"god\"\n").is_err());
    }
}
