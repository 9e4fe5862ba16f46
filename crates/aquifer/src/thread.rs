//! Where the running thread is: its number, which picks its home shard
//! and its slot in per-thread tables, and its share of Tokio's cooperative
//! budget for gets.

use std::task::{Context, Poll};

/// How many shards a pool gets: two per CPU, so that the Tokio workers
/// (and the threads that happen to share their numbers) rarely share one.
pub(crate) fn shard_count() -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cpus * 2).clamp(1, 64).next_power_of_two()
}

/// This thread's number; its home shard is this modulo the shard count.
#[cfg(not(aquifer_loom))]
#[inline]
pub(crate) fn home() -> usize {
    use std::sync::atomic::{AtomicUsize as StdAtomic, Ordering};
    static NEXT: StdAtomic = StdAtomic::new(0);
    thread_local!(static HOME: usize = NEXT.fetch_add(1, Ordering::Relaxed));
    HOME.with(|h| *h)
}

/// Under loom every model thread says where it is explicitly.
#[cfg(aquifer_loom)]
pub(crate) fn home() -> usize {
    0
}

/// Gets that together spend one unit of Tokio's cooperative budget.
const GETS_PER_BUDGET_UNIT: u32 = 64;

/// Counts a get against this thread's share of Tokio's cooperative budget:
/// `true` when this get should spend a unit.
///
/// A task that loops on `get` while objects are free must still yield now
/// and then, or it starves its worker's timers and I/O, so a get takes
/// part in the budget as Tokio's own semaphore does, but at a fraction of
/// a unit: a get that finds an object free is far cheaper than the I/O
/// operations a unit is sized for, and a yield far dearer than such a get.
/// The count is of gets, not time: a loop that also does work of its own
/// between gets yields later. (`BENCHMARKS.md` has the measurements behind
/// the fraction.)
#[inline]
fn budget_due() -> bool {
    thread_local!(static GETS: std::cell::Cell<u32> = const { std::cell::Cell::new(0) });
    GETS.with(|n| {
        let v = n.get().wrapping_add(1);
        n.set(v);
        v % GETS_PER_BUDGET_UNIT == 0
    })
}

/// Spends this get's share of the cooperative budget in place, in the
/// first poll of a get's future: `Pending` when the task is out of budget
/// (it yields, and the next poll goes on without spending again).
#[inline]
pub(crate) fn poll_budget(cx: &mut Context<'_>) -> Poll<()> {
    if budget_due() {
        std::task::ready!(tokio::task::coop::poll_proceed(cx)).made_progress();
    }
    Poll::Ready(())
}
