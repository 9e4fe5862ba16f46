#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod clock;
mod cluster;
mod config;
#[doc(hidden)]
pub mod doc_support;
mod error;
mod eventlog;
mod events;
mod internals;
mod manager;
mod metrics;
mod mux;
mod object;
mod pool;
#[cfg(feature = "serde")]
pub mod report;
mod roles;
mod selector;
mod shards;
mod status;
mod sync;
mod thread;
mod token;
mod waiters;
mod warning;

pub use cluster::{
    Cluster, ClusterBuildError, ClusterBuilder, ClusterConn, ClusterError, ClusterInfo,
    ClusterPending, ClusterPool, Mode, PoolInfo, ReadSession, ReadStats, RoleInfo, WriteConn,
};
pub use config::{parse_duration, Backoff, Clock, DurationError, Order, PoolConfig};
pub use error::{
    error_chain, human_duration, BuildError, CreateError, DestroyError, PoolError, TimeoutError,
};
pub use events::{EventStream, Operation, PoolEvent, Reason};
pub use manager::Manager;
pub use metrics::{Evictions, Metrics, Summary};
pub use mux::builder::MuxBuilder;
pub use mux::{
    Closes, Lease, LimitReason, LimitSample, Multiplexed, Multiplexer, MuxConfig, MuxError,
    MuxLimit, MuxMetrics, MuxStatus, Spread,
};
pub use object::Metadata;
pub use pool::builder::Builder;
pub use pool::control::PendingInfo;
pub use pool::{Pool, Pooled, TransactionWatch};
pub use roles::{Fallback, Role, RoleCheck, RoleManager, RoleSignal, Roles, SplitBrain};
pub use selector::{RegexError, Selector};
pub use status::{Health, Status};
pub use token::{TokenError, WriteToken};
pub use warning::Warning;
