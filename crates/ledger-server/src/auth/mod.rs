//! Bearer tokens with roles: who may call what.
//!
//! - The auth file (setting `auth_file`, TOML) lists tokens by the hex SHA-256 of the token,
//!   never the token itself: one `[[token]]` table each, with `sha256`, `role` (`reader`,
//!   `writer` or `admin`) and an optional context-id `prefix` the token is limited to.
//!   `converge-ledger token new` makes a token and its table. The file is read at start and
//!   again on SIGHUP.
//! - [`AuthLayer`](layer::AuthLayer) checks every request before it reaches a service: the method's
//!   [`Access`](policy::Access), the caller's token (`authorization: Bearer <token>`, its hash compared with
//!   every listed hash in constant time) and role. It answers `UNAUTHENTICATED` for a missing
//!   or unknown token and `PERMISSION_DENIED` for the wrong role, and leaves the caller's
//!   [`Principal`](tokens::Principal) in the request's extensions.
//! - Handlers check the prefix once they know the context ([`check_context`](policy::check_context)):
//!   `PERMISSION_DENIED` when the token is limited to another prefix.
//! - Health and reflection stay open. The cluster's node-to-node methods are protected by
//!   mutual TLS, not tokens: with `tls_client_ca` set only a node certificate may call them
//!   ([`crate::tls::PeerIdentity`]); a node certificate also passes for the cluster's admin
//!   methods, which nodes call on each other when an operator runs `cluster status`.
//!
//! Auth is off without `auth_file`: every request passes.
//!
//! Layout: [`tokens`] (roles, the auth file's tokens, the caller a token makes), [`policy`]
//! (who may call which method, deciding a request, what handlers check), [`layer`] (the tower
//! layer in front of every service).

pub mod layer;
pub mod policy;
pub mod tokens;

pub use layer::AuthLayer;
pub use policy::{Policy, check_context, require_role};
pub use tokens::{Principal, TokenRole, new_token, token_table};
