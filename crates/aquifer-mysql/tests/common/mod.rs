//! Shared helpers: a server of the test's own and pools on it.
#![allow(dead_code)]

use std::time::{Duration, Instant};

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

/// Polls `cond` (a blocking check, e.g. the mariadb client) until it holds.
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let give_up = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < give_up, "never happened: {what}");
        tokio::time::sleep(ms(20)).await;
    }
}

/// The full message of an error and its sources.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(" <- ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}
