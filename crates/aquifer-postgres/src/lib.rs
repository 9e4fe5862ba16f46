#![doc = include_str!("../README.md")]

mod config;
mod database;
mod manager;
mod mux;
mod query;
mod replica_set;
mod roles;
mod session;
mod statements;
#[cfg(feature = "tls")]
mod tls;
mod wire;

pub use config::PgConfigError;
pub use database::{ConnectionError, HealthReport, PgDatabase, PgStats, Preset};
pub use manager::{AfterConnect, BoxFuture, PgConnection, PgError, PgManager, ResetMode};
pub use mux::{MuxConnection, PgMultiplexer, PgMuxError, PgMuxExt, PgMuxManager};
pub use query::{PgPoolExt, QueryError};
pub use replica_set::PgReplicaSetExt;
#[cfg(feature = "tls")]
pub use tls::TlsError;
/// The driver, re-exported so that one dependency is enough.
pub use tokio_postgres;
pub use wire::TxStatus;

/// A pool of PostgreSQL connections.
pub type PgPool = aquifer::Pool<PgManager>;

/// The workspace README's examples, compiled (and run where they need no
/// server) as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct WorkspaceReadme;
