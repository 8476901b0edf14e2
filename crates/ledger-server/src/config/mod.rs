//! Node configuration: defaults ← TOML file (`--config`) ← environment (`GRPC_PORT`, then
//! `LEDGER_*`) ← command-line flags. Every setting is listed in `docs/OPERATIONS.md`.
//!
//! Layout: [`schema`] (every setting, its default and its environment variable), [`flags`]
//! (the `serve` flags), [`load`] (resolution in precedence order and validation), [`cluster`]
//! (what a cluster member takes from it: the runtime's and the gossip layer's settings).

pub mod cluster;
pub mod flags;
pub mod load;
pub mod schema;

pub use cluster::{ClusterConfig, is_clustered};
pub use flags::Overrides;
pub use schema::{
    AckSetting, Config, DurabilitySetting, ENV_KEYS, LogFormat, RoleSetting, RouteSetting,
};
