//! The synchronisation primitives the pool's state machine is built on.
//!
//! Normal builds use `parking_lot` (no poisoning: a panic while the lock is
//! held cannot wedge the pool) and `std::sync::Arc`. Under `--cfg aquifer_loom`
//! the same names come from `loom`, so the model tests in `internals/loom_models.rs` explore
//! every interleaving of the real code. (The cfg is not called `loom` because
//! tokio reacts to that name and would no longer build as a dependency.)

#[cfg(not(aquifer_loom))]
pub(crate) use std::sync::Arc;

#[cfg(aquifer_loom)]
pub(crate) use loom::sync::Arc;

#[cfg(not(aquifer_loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicUsize};

#[cfg(aquifer_loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicUsize};

/// The guard [`Mutex::lock`] returns.
#[cfg(not(aquifer_loom))]
pub(crate) type MutexGuard<'a, T> = parking_lot::MutexGuard<'a, T>;

/// The guard [`Mutex::lock`] returns.
#[cfg(aquifer_loom)]
pub(crate) type MutexGuard<'a, T> = loom::sync::MutexGuard<'a, T>;

/// A mutex whose `lock` never fails.
#[derive(Debug, Default)]
pub(crate) struct Mutex<T>(
    #[cfg(not(aquifer_loom))] parking_lot::Mutex<T>,
    #[cfg(aquifer_loom)] loom::sync::Mutex<T>,
);

#[cfg(not(aquifer_loom))]
impl<T> Mutex<T> {
    pub(crate) fn new(value: T) -> Self {
        Self(parking_lot::Mutex::new(value))
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
        self.0.lock()
    }
}

#[cfg(aquifer_loom)]
impl<T> Mutex<T> {
    pub(crate) fn new(value: T) -> Self {
        Self(loom::sync::Mutex::new(value))
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
        // loom's mutex only poisons when a model thread panicked, which
        // already fails the model.
        self.0.lock().unwrap()
    }
}

/// A lock for data that one thread uses almost always alone (an idle-list
/// shard): taking it is one compare-and-swap and releasing it one plain
/// store, where a parking mutex pays a second compare-and-swap to find out
/// whether anyone sleeps on it. Nobody sleeps on it: a thread that finds
/// it taken spins a little (the critical sections under it are a few
/// dozen instructions), then yields its CPU between tries, so that a
/// holder the OS preempted gets to run and let go.
#[derive(Debug, Default)]
pub(crate) struct SpinLock<T>(
    #[cfg(not(aquifer_loom))] spin::mutex::SpinMutex<T>,
    #[cfg(aquifer_loom)] loom::sync::Mutex<T>,
);

/// The guard [`SpinLock::lock`] returns.
#[cfg(not(aquifer_loom))]
pub(crate) type SpinGuard<'a, T> = spin::mutex::SpinMutexGuard<'a, T>;

/// The guard [`SpinLock::lock`] returns.
#[cfg(aquifer_loom)]
pub(crate) type SpinGuard<'a, T> = loom::sync::MutexGuard<'a, T>;

#[cfg(not(aquifer_loom))]
impl<T> SpinLock<T> {
    pub(crate) fn new(value: T) -> Self {
        Self(spin::mutex::SpinMutex::new(value))
    }

    #[inline]
    pub(crate) fn lock(&self) -> SpinGuard<'_, T> {
        match self.0.try_lock() {
            Some(guard) => guard,
            None => self.lock_contended(),
        }
    }

    #[cold]
    fn lock_contended(&self) -> SpinGuard<'_, T> {
        let mut spins = 0u32;
        loop {
            // Wait with reads only, then try.
            if !self.0.is_locked() {
                if let Some(guard) = self.0.try_lock() {
                    return guard;
                }
            }
            if spins < 100 {
                spins += 1;
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }
}

#[cfg(aquifer_loom)]
impl<T> SpinLock<T> {
    pub(crate) fn new(value: T) -> Self {
        Self(loom::sync::Mutex::new(value))
    }

    pub(crate) fn lock(&self) -> SpinGuard<'_, T> {
        self.0.lock().unwrap()
    }
}
