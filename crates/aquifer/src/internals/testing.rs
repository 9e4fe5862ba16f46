//! What the state's unit tests and loom models share: a state of `u32`
//! objects whose creates cannot fail, and entries to place in it.

use tokio::time::Instant;

use crate::clock::Stamp;
use crate::config::PoolConfig;
use crate::object::{Entry, Item};

use super::State;

#[derive(Debug)]
pub(crate) struct NoError;

impl std::fmt::Display for NoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("no error")
    }
}

impl std::error::Error for NoError {}

pub(crate) type S = State<u32, NoError>;

/// An empty state of at most `max` objects over two shards.
pub(crate) fn state(max: usize) -> S {
    let cfg = PoolConfig {
        max,
        ..PoolConfig::default()
    };
    State::new(&cfg, 2)
}

/// An object numbered `id`, made at the clock's start.
pub(crate) fn entry(id: u64) -> Item<u32> {
    Box::new(Entry::new(
        id as u32,
        id,
        Instant::now(),
        Stamp::default(),
        None,
    ))
}
