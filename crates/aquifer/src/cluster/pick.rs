//! How a get picks among the pools it may use: one picker for every mode
//! and every path (the shortcut of `get_any`, a get by selector, and the
//! pools a get falls back to).

use std::sync::atomic::Ordering;

use crate::manager::Manager;
use crate::thread;

use super::balance::{Bits, Mode};
use super::members::List;
use super::shared::ClusterShared;

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
