#![doc = include_str!("../README.md")]

mod anchor;
mod config;
mod connection;
mod manager;
mod query;

pub use config::{JournalMode, SqliteConfig, SqliteConfigError, Synchronous};
pub use connection::{SqliteConnection, SqliteGuard};
pub use manager::{AfterConnect, SqliteError, SqliteManager};
pub use query::{SqlitePoolExt, SqliteQueryError};
/// The driver, re-exported so that one dependency is enough.
pub use rusqlite;

/// A pool of SQLite connections.
pub type SqlitePool = aquifer::Pool<SqliteManager>;
