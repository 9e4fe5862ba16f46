//! Many named pools over many servers, picked by name, glob, regex or tag.
//!
//! The handle and the operator's controls are in `handle`, what its
//! handles share (and the warnings) in `shared`; how pools are kept in
//! `members`, the modes in `balance`, how one is picked in `pick`, a get in `get`, the warnings a
//! pool's events become in `watcher`, reports in `info`. As a replica set:
//! each member's role in `role`, the primary in `primary`, their checks in
//! `checker`, writes in `write`, lag in `lag`, reads in `reads` and
//! `session`. No file here imports one that imports it back.

mod balance;
mod builder;
mod checker;
mod error;
mod get;
mod handle;
mod info;
mod lag;
mod members;
mod pick;
mod primary;
mod reads;
mod role;
mod session;
mod shared;
mod watcher;
mod write;

pub use balance::Mode;
pub use builder::ClusterBuilder;
pub use error::{ClusterBuildError, ClusterError};
pub use get::ClusterConn;
pub use handle::Cluster;
pub use info::{ClusterInfo, ClusterPending, PoolInfo};
pub use lag::ReadStats;
pub use members::ClusterPool;
pub use role::RoleInfo;
pub use session::ReadSession;
pub use write::WriteConn;
