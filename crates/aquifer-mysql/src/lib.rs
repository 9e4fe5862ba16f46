#![doc = include_str!("../README.md")]

mod config;
mod manager;
mod query;
mod roles;

pub use config::MySqlConfigError;
pub use manager::{
    AfterConnect, BoxFuture, MySqlConnection, MySqlError, MySqlManager, MySqlTransaction, ResetMode,
};
/// The driver, re-exported so that one dependency is enough.
pub use mysql_async;
pub use query::{MySqlPoolExt, MySqlQueryError};

/// A pool of MySQL/MariaDB connections.
pub type MySqlPool = aquifer::Pool<MySqlManager>;
