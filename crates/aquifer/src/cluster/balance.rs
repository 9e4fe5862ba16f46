//! The balancing modes, and the small types a pick works with: the
//! random states and the set of pools a get may still use.

use std::sync::atomic::AtomicU64;

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
