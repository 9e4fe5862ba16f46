//! Shared helpers: a server of the test's own and pools on it.
#![allow(dead_code, unused_imports)]

use std::time::Duration;

use aquifer_mysql::{MySqlManager, MySqlPool};
use aquifer_testkit::MariaDbServer;

pub fn server() -> MariaDbServer {
    MariaDbServer::new().expect("a throwaway MariaDB (apt-get install mariadb-server)")
}

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A pool on `url` with `max` connections and a 5 s acquire timeout.
pub fn pool(url: &str, max: usize) -> MySqlPool {
    MySqlPool::builder(MySqlManager::new(url).unwrap())
        .max(max)
        .acquire_timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

pub use aquifer_testkit::{error_chain as chain, eventually};
