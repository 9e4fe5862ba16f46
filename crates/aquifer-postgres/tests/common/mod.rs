//! Shared helpers: a server of the test's own and pools on it.
#![allow(dead_code, unused_imports)]

use std::time::Duration;

use aquifer_postgres::{PgManager, PgPool};
use aquifer_testkit::PgServer;

pub fn server() -> PgServer {
    PgServer::new().expect("a throwaway PostgreSQL (apt-get install postgresql)")
}

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A pool on `url` with `max` connections and a short acquire timeout.
pub fn pool(url: &str, max: usize) -> PgPool {
    PgPool::builder(PgManager::new(url).unwrap())
        .max(max)
        .acquire_timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

pub use aquifer_testkit::{error_chain as chain, eventually};
