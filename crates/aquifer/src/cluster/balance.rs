//! How a get picks among the pools it may use: one picker for every mode
//! and every path (the shortcut of `get_any`, a get by selector, and the
//! pools a get falls back to).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::manager::Manager;
use crate::thread;

use super::members::List;
use super::shared::ClusterShared;

/// How a [`Cluster`](super::Cluster) picks among the pools a selector matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum Mode {
    /// Each in turn, in the order they were added. The default.
    #[default]
    RoundRobin,
    /// Uniformly at random.
    Random,
    /// The one with the least load: borrowed connections and waiting
    /// callers over its `max` (a pool of 2 with 2 out is busier than a
    /// pool of 4 with 3 out).
    LeastBusy,
    /// At random, in proportion to each pool's weight.
    Weighted,
    /// The first in order that works, and it stays the choice until it
    /// fails.
    Failover,
}

/// One random-pick state on cache lines of its own.
#[repr(align(128))]
pub(super) struct Seed(pub(super) AtomicU64);

/// A set of member positions: a bitmask up to 64 members, so that picking
/// a pool allocates nothing in the common case.
pub(super) enum Bits {
    Small(u64),
    Large(Vec<bool>),
}

impl Bits {
    pub(super) fn new(len: usize) -> Self {
        if len <= 64 {
            Bits::Small(0)
        } else {
            Bits::Large(vec![false; len])
        }
    }

    pub(super) fn set(&mut self, i: usize) {
        match self {
            Bits::Small(b) => *b |= 1 << i,
            Bits::Large(v) => v[i] = true,
        }
    }

    pub(super) fn get(&self, i: usize) -> bool {
        match self {
            Bits::Small(b) => b & (1 << i) != 0,
            Bits::Large(v) => v[i],
        }
    }

    pub(super) fn remove(&mut self, i: usize) {
        match self {
            Bits::Small(b) => *b &= !(1 << i),
            Bits::Large(v) => v[i] = false,
        }
    }

    /// The positions in the set, in order.
    pub(super) fn iter(&self) -> Positions<'_> {
        match self {
            Bits::Small(b) => Positions {
                small: *b,
                large: [].iter().enumerate(),
            },
            Bits::Large(v) => Positions {
                small: 0,
                large: v.iter().enumerate(),
            },
        }
    }

    pub(super) fn count(&self) -> usize {
        match self {
            Bits::Small(b) => b.count_ones() as usize,
            Bits::Large(v) => v.iter().filter(|x| **x).count(),
        }
    }
}

/// The positions in a [`Bits`], in order.
#[derive(Clone)]
pub(super) struct Positions<'a> {
    small: u64,
    large: std::iter::Enumerate<std::slice::Iter<'a, bool>>,
}

impl Iterator for Positions<'_> {
    type Item = usize;

    #[inline]
    fn next(&mut self) -> Option<usize> {
        if self.small != 0 {
            let i = self.small.trailing_zeros() as usize;
            self.small &= self.small - 1;
            return Some(i);
        }
        self.large.find(|(_, set)| **set).map(|(i, _)| i)
    }
}

pub(super) fn mode_code(m: Mode) -> u8 {
    match m {
        Mode::RoundRobin => 0,
        Mode::Random => 1,
        Mode::LeastBusy => 2,
        Mode::Weighted => 3,
        Mode::Failover => 4,
    }
}

pub(super) fn mode_of(code: u8) -> Mode {
    match code {
        1 => Mode::Random,
        2 => Mode::LeastBusy,
        3 => Mode::Weighted,
        4 => Mode::Failover,
        _ => Mode::RoundRobin,
    }
}

impl<M: Manager> ClusterShared<M> {
    /// The next round-robin turn. A plain load and store, not an atomic
    /// increment: gets on several cores may now and then take the same
    /// turn (and so the same pool), which costs balance nothing that
    /// matters, while a locked increment on every get would make the cores
    /// fight over the counter. Gets made one after another go round exactly.
    /// The turn is taken modulo `n` (the number of pools to go round);
    /// the counter is kept below `n`, so that the division only happens
    /// when the number of pools changed.
    #[inline]
    pub(super) fn turn(&self, n: usize) -> usize {
        let mut turn = self.cursor.load(Ordering::Relaxed);
        if turn >= n {
            turn %= n;
        }
        let next = if turn + 1 == n { 0 } else { turn + 1 };
        self.cursor.store(next, Ordering::Relaxed);
        turn
    }

    /// A random number below `n` (which is at least 1), for random and
    /// weighted picks: a wyrand step on this thread's slot of the
    /// cluster's states, with the same plain load and store as
    /// [`turn`](ClusterShared::turn) (two racing gets on threads that share a slot
    /// may draw the same number). Cheaper than a thread-local generator on
    /// this path, and its bias (below 2^-50 for any `n` a cluster has) is
    /// nothing next to load-balancing noise.
    #[inline]
    pub(super) fn draw(&self, n: u64) -> u64 {
        let seed = &self.seeds[thread::home() & (self.seeds.len() - 1)].0;
        let state = seed
            .load(Ordering::Relaxed)
            .wrapping_add(0xa076_1d64_78bd_642f);
        seed.store(state, Ordering::Relaxed);
        let t = u128::from(state) * u128::from(state ^ 0xe703_7ed1_a0b4_28db);
        let r = ((t >> 64) as u64) ^ (t as u64);
        ((u128::from(r) * u128::from(n)) >> 64) as u64
    }

    /// Makes failover stick to `id`. Written only when it changes, so that
    /// gets on several cores do not fight over the cache line on every get.
    pub(super) fn stick_to(&self, id: u64) {
        if self.sticky.load(Ordering::Relaxed) != id {
            self.sticky.store(id, Ordering::Relaxed);
        }
    }

    /// Picks one of the `eligible` positions of `list` (at least one) by
    /// `mode`. Every path of a get picks here: `get_any`'s shortcut, a get
    /// by selector, and each pool a get falls back to. A get's first pick
    /// takes a round-robin turn (`first`); its fallbacks go on in order
    /// from there, so that a failing pool does not skew the rotation.
    #[inline(always)]
    pub(super) fn pick(&self, mode: Mode, list: &List<M>, eligible: &Bits, first: bool) -> usize {
        // With every member eligible (the usual case) the k-th is k itself.
        let all = matches!(eligible, Bits::Small(b) if *b == list.all);
        let n = if all { list.len() } else { eligible.count() };
        let kth = |k: usize| {
            if all {
                k
            } else {
                eligible.iter().nth(k).expect("k is below the count")
            }
        };
        match mode {
            Mode::RoundRobin if first => kth(self.turn(n)),
            Mode::RoundRobin => kth(0),
            Mode::Random => kth(self.draw(n as u64) as usize),
            Mode::Weighted if all && list.total_weight > 0 => {
                // The number of members whose share ends at or below the
                // draw is the one it falls to: no branch to mispredict.
                let r = self.draw(list.total_weight);
                list.upto.iter().filter(|&&end| end <= r).count()
            }
            Mode::Weighted => list.weighted(eligible.iter(), |total| self.draw(total)),
            Mode::Failover => {
                let sticky = self.sticky.load(Ordering::Relaxed);
                eligible
                    .iter()
                    .find(|&i| list.ids[i] == sticky)
                    .unwrap_or_else(|| kth(0))
            }
            Mode::LeastBusy => {
                // Each pool's load (borrowed plus waiting, over its `max`)
                // is read from counts it publishes, with no lock; the
                // fractions are compared crosswise, in whole numbers. Ties
                // go round robin: the scan starts at a rotating place, and
                // stops at the first pool with nothing out.
                let len = list.len();
                let start = if first { self.turn(len) } else { 0 };
                let mut best: Option<(usize, usize, usize)> = None;
                for i in (start..len).chain(0..start).filter(|&i| eligible.get(i)) {
                    let (busy, max) = list[i].pool.load();
                    let lighter = best.is_none_or(|(b, m, _)| busy * m < b * max);
                    if lighter {
                        best = Some((busy, max, i));
                        if busy == 0 {
                            break;
                        }
                    }
                }
                best.map_or(0, |(.., i)| i)
            }
        }
    }
}
