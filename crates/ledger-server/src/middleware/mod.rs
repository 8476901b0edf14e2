//! Around every gRPC request, outermost first: [`node_id`] (the `x-ledger-node` response
//! header), [`requests`] (the per-connection request limit, the caller's deadline, request
//! metrics), then auth ([`crate::auth::layer`]); inside the handlers, [`request_log`] (the
//! request's span and its one log line).

pub mod node_id;
pub mod request_log;
pub mod requests;
