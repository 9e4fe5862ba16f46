//! Model tests of the handoff protocol, run with
//! `RUSTFLAGS="--cfg aquifer_loom" cargo test -p aquifer --lib loom`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use loom::thread;

use std::time::Duration;

use tokio::time::Instant;

use crate::clock::Tick;
use crate::error::CreateError;
use crate::object::Item;
use crate::shards::Shards;
use crate::sync::{Arc, Mutex, MutexGuard};
use crate::waiters::Slot;

use super::testing::{entry, state, NoError, S};
use super::{Acquire, After, Handoff, Placed};

fn pool(max: usize) -> Arc<Mutex<S>> {
    Arc::new(Mutex::new(state(max)))
}

/// Unlocks as the pool does: releases the lock, then wakes what `after`
/// holds. Returns the rest for the test to look at.
fn unlock(st: MutexGuard<'_, S>, after: After<u32>) -> After<u32> {
    drop(st);
    for w in after.wake.iter() {
        w.wake_by_ref();
    }
    after
}

/// A caller that must wait (a second to its deadline): its slot, and how
/// many creates it reserved.
fn enqueue(pool: &Mutex<S>) -> (Arc<Slot<Handoff<u32, NoError>>>, usize) {
    let mut st = pool.lock();
    let mut after = After::default();
    let deadline = Tick::default().after(Duration::from_secs(1));
    let step = st.acquire(0, Tick::default(), deadline, true, 0, &mut after);
    let after = unlock(st, after);
    let Acquire::Wait { slot, .. } = step else {
        panic!("must wait")
    };
    (slot, after.creates)
}

fn release(pool: &Mutex<S>, e: Item<u32>) {
    release_at(pool, e, Tick::default());
}

fn release_at(pool: &Mutex<S>, e: Item<u32>, now: Tick) {
    let mut st = pool.lock();
    let mut after = After::default();
    st.place(e, now, 0, &mut after);
    let _ = unlock(st, after);
}

/// A waiter's future: polls its slot, and gives up (like a dropped
/// `get`) after `polls` polls.
struct Wait {
    pool: Arc<Mutex<S>>,
    slot: Option<Arc<Slot<Handoff<u32, NoError>>>>,
}

impl Future for Wait {
    type Output = Option<Item<u32>>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let slot = self.slot.as_ref().unwrap();
            let handed = match slot.poll(cx) {
                Poll::Ready(Some(v)) => v,
                // Nudged: take an idle object if one is left, else
                // poll again (which waits).
                Poll::Ready(None) => {
                    let mut wake = crate::waiters::WakeList::default();
                    let retried = self.pool.lock().retry(slot, Tick::default(), 0, &mut wake);
                    wake.wake_all();
                    match retried {
                        Some(v) => v,
                        None => continue,
                    }
                }
                Poll::Pending => return Poll::Pending,
            };
            self.slot = None;
            return Poll::Ready(handed.ok().map(|(e, _)| e));
        }
    }
}

impl Drop for Wait {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            let mut st = self.pool.lock();
            let mut after = After::default();
            if let Some(Ok((e, _))) = st.cancel(&slot, false, &mut after.wake) {
                st.place(e, Tick::default(), 0, &mut after);
            }
            let _ = unlock(st, after);
        }
    }
}

type Waiting = thread::JoinHandle<Option<Item<u32>>>;

/// Each slot's caller waiting on a thread of its own until it is served.
fn wait_on_threads(
    p: &Arc<Mutex<S>>,
    slots: Vec<Arc<Slot<Handoff<u32, NoError>>>>,
) -> Vec<Waiting> {
    slots
        .into_iter()
        .map(|slot| {
            let p = Arc::clone(p);
            thread::spawn(move || {
                loom::future::block_on(Wait {
                    pool: p,
                    slot: Some(slot),
                })
            })
        })
        .collect()
}

/// The ids of the objects the waiters were served, sorted.
fn served(waiters: Vec<Waiting>) -> Vec<u64> {
    let mut ids: Vec<u64> = waiters
        .into_iter()
        .map(|h| h.join().unwrap().expect("served").meta.id)
        .collect();
    ids.sort_unstable();
    ids
}

fn check(st: &S) {
    assert!(st.size <= st.max);
    let (idle, borrowed) = st.idle_and_borrowed();
    assert_eq!(idle + borrowed + st.creating, st.size);
}

/// A waiter that gives up while the only object is returned: the object
/// ends up idle or with the waiter, never lost, never doubled.
#[test]
fn release_races_cancel() {
    loom::model(|| {
        let p = pool(1);
        let e = {
            let mut st = p.lock();
            st.size = 1;
            entry(1)
        };
        let (slot, creates) = enqueue(&p);
        assert_eq!(creates, 0, "the pool is at max");
        let p2 = Arc::clone(&p);
        let releaser = thread::spawn(move || release(&p2, e));
        let w = Wait {
            pool: Arc::clone(&p),
            slot: Some(slot),
        };
        // Either polls once and gives up, or is dropped at once.
        let got = {
            let mut w = Box::pin(w);
            let waker = futures_noop();
            let mut cx = Context::from_waker(&waker);
            match w.as_mut().poll(&mut cx) {
                Poll::Ready(got) => got,
                Poll::Pending => None,
            }
        };
        releaser.join().unwrap();
        let st = p.lock();
        check(&st);
        let held = usize::from(got.is_some());
        assert_eq!(
            st.idle.len_locked() + held,
            1,
            "the object is in exactly one place"
        );
        assert_eq!(st.waiters.len(), 0);
    });
}

/// Two waiters and two returns in parallel: both are served, FIFO state
/// stays consistent.
#[test]
fn two_waiters_two_releases() {
    loom::model(|| {
        let p = pool(2);
        p.lock().size = 2;
        let mut slots = Vec::new();
        for _ in 0..2 {
            slots.push(enqueue(&p).0);
        }
        let handles: Vec<_> = (1..=2)
            .map(|id| {
                let p = Arc::clone(&p);
                thread::spawn(move || release(&p, entry(id)))
            })
            .collect();
        let waiters = wait_on_threads(&p, slots);
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(served(waiters), vec![1, 2]);
        let st = p.lock();
        assert_eq!(st.idle.len_locked(), 0);
        assert_eq!(st.waiters.len(), 0);
    });
}

/// Two returns both due to be fair (a second apart), racing the first
/// waiter's poll: while the first object is still on its way to the first
/// waiter, the second goes idle with a nudge instead of to the second
/// waiter's slot; either way both waiters are served and nothing is left
/// idle.
#[test]
fn a_fair_return_while_one_is_in_transit_still_serves_the_next_waiter() {
    loom::model(|| {
        let p = pool(2);
        p.lock().size = 2;
        let slots: Vec<_> = (0..2).map(|_| enqueue(&p).0).collect();
        let releaser = {
            let p = Arc::clone(&p);
            thread::spawn(move || {
                release_at(&p, entry(1), Tick::default());
                release_at(&p, entry(2), Tick::default().after(Duration::from_secs(1)));
            })
        };
        let waiters = wait_on_threads(&p, slots);
        releaser.join().unwrap();
        assert_eq!(served(waiters), vec![1, 2]);
        let st = p.lock();
        check(&st);
        assert_eq!(st.idle.len_locked(), 0);
        assert_eq!(st.waiters.len(), 0);
    });
}

/// A create that fails while its waiter gives up: the reservation is
/// always given back, the waiter is either failed or removed.
#[test]
fn create_failure_races_cancel() {
    loom::model(|| {
        let p = pool(1);
        let (slot, creates) = enqueue(&p);
        assert_eq!(creates, 1, "the caller reserves a create");
        let p2 = Arc::clone(&p);
        let creator = thread::spawn(move || {
            let mut st = p2.lock();
            let mut after = After::default();
            let keep = st.create_failed(
                CreateError::Timeout(Duration::from_secs(1)),
                Instant::now(),
                true,
                &mut after,
            );
            let _ = unlock(st, after);
            if keep {
                // Nobody waits any more once the caller gave up, so a
                // job that kept going must still find work.
                let st = p2.lock();
                assert!(st.waiters.len() > 0 || !st.keep_creating());
                drop(st);
                p2.lock().unreserve();
            }
        });
        drop(Wait {
            pool: Arc::clone(&p),
            slot: Some(slot),
        });
        creator.join().unwrap();
        let st = p.lock();
        check(&st);
        assert_eq!(st.size, 0);
        assert_eq!(st.waiters.len(), 0);
    });
}

/// The deadline task expires a waiter while an object is returned: the
/// waiter gets the object or the timeout, the object is never lost.
#[test]
fn deadline_races_release() {
    loom::model(|| {
        let p = pool(1);
        p.lock().size = 1;
        let start = Tick::default();
        let slot = match p
            .lock()
            .acquire(0, start, start, true, 0, &mut After::default())
        {
            Acquire::Wait { slot, rearm, .. } => {
                assert!(rearm, "the first waiter arms the deadline task");
                slot
            }
            _ => panic!("must wait"),
        };
        let p2 = Arc::clone(&p);
        let releaser = thread::spawn(move || release(&p2, entry(1)));
        let p3 = Arc::clone(&p);
        let reaper = thread::spawn(move || {
            let mut st = p3.lock();
            let mut after = After::default();
            st.expire(start, &mut after);
            let _ = unlock(st, after);
        });
        let got = loom::future::block_on(Wait {
            pool: Arc::clone(&p),
            slot: Some(slot),
        });
        releaser.join().unwrap();
        reaper.join().unwrap();
        let st = p.lock();
        check(&st);
        assert_eq!(st.idle.len_locked() + usize::from(got.is_some()), 1);
        assert_eq!(st.waiters.len(), 0);
        assert_eq!(st.next_deadline, None);
    });
}

/// With the pool's `size` objects out, a thread that returns one (id 1)
/// the way a checked-out object does: into its shard (home 1) without
/// the pool lock, or through the lock when the pool says so. Yields
/// where the object went through the lock (`None`: into the shard).
fn lock_free_return(p: &Arc<Mutex<S>>, size: usize) -> thread::JoinHandle<Option<Placed>> {
    let idle = {
        let mut st = p.lock();
        st.size = size;
        st.publish();
        Arc::clone(&st.idle)
    };
    let p = Arc::clone(p);
    thread::spawn(move || {
        #[allow(unsafe_code)]
        // SAFETY: this thread holds `idle` for the whole call.
        let put = unsafe { Shards::put(&*idle, 1, entry(1), 0) };
        match put {
            Ok(()) => None,
            Err(e) => {
                let mut st = p.lock();
                let mut after = After::default();
                let placed = st.place(e, Tick::default(), 1, &mut after);
                st.publish();
                let _ = unlock(st, after);
                Some(placed)
            }
        }
    })
}

/// A return that skips the pool lock (into its shard) races a caller
/// that starts to wait, each on its own shard: the object must end up
/// with the waiter, never idle in a shard while the waiter waits.
#[test]
fn lock_free_return_races_a_new_waiter() {
    loom::model(|| {
        let p = pool(1);
        let returner = lock_free_return(&p, 1);
        let step = {
            let mut st = p.lock();
            let step = st.acquire(
                0,
                Tick::default(),
                Tick::default().after(Duration::from_secs(1)),
                true,
                0,
                &mut After::default(),
            );
            st.publish();
            step
        };
        returner.join().unwrap();
        let st = p.lock();
        check(&st);
        match step {
            // The object was already idle when the caller looked.
            Acquire::Got(_) => assert_eq!(st.idle.len_locked(), 0),
            Acquire::Wait { slot, .. } => {
                assert!(
                    slot.take_ready().is_some(),
                    "the waiter must get the object, not a shard"
                );
                assert_eq!(st.idle.len_locked(), 0);
            }
            Acquire::Refused(r) => panic!("refused: {r:?}"),
        }
    });
}

/// Behind a waiter, a caller that starts to wait does not look in the
/// shards after publishing. It races the first waiter being served
/// (after which the count is zero again) and a lock-free return: an
/// object left idle in a shard while a caller waits must have a waiter
/// nudged to come and take it, and none is lost.
#[test]
fn lock_free_return_races_a_second_waiter() {
    loom::model(|| {
        let p = pool(2);
        let first = {
            let mut st = p.lock();
            st.size = 2;
            let deadline = Tick::default().after(Duration::from_secs(1));
            let first =
                match st.acquire(0, Tick::default(), deadline, true, 0, &mut After::default()) {
                    Acquire::Wait { slot, .. } => slot,
                    _ => panic!("both objects are out: must wait"),
                };
            st.publish();
            first
        };
        let returner = lock_free_return(&p, 2);
        let p2 = Arc::clone(&p);
        let server = thread::spawn(move || {
            let mut st = p2.lock();
            let mut after = After::default();
            let placed = st.place(entry(2), Tick::default(), 0, &mut after);
            st.publish();
            let _ = unlock(st, after);
            assert_ne!(placed, Placed::Destroyed, "the pool is open");
        });
        let step = {
            let mut st = p.lock();
            let deadline = Tick::default().after(Duration::from_secs(1));
            let step = st.acquire(0, Tick::default(), deadline, true, 0, &mut After::default());
            st.publish();
            step
        };
        server.join().unwrap();
        let placed = returner.join().unwrap();
        assert!(placed != Some(Placed::Destroyed), "the pool is open");
        let st = p.lock();
        check(&st);
        let first_nudged = first.is_nudged();
        let mut held = usize::from(first.take_ready().is_some());
        match step {
            Acquire::Got(_) => held += 1,
            Acquire::Wait { slot, .. } => match slot.take_ready() {
                Some(_) => held += 1,
                None => assert!(
                    st.idle.len_locked() == 0 || first_nudged || slot.is_nudged(),
                    "an object sits in a shard while callers wait, and none was woken to take it"
                ),
            },
            Acquire::Refused(r) => panic!("refused: {r:?}"),
        }
        assert_eq!(held + st.idle.len_locked(), 2, "no object is lost");
    });
}

/// A return that skips the pool lock races `close`: the object must be
/// taken by the close or come back to be destroyed, never left idle in
/// a shard of a closed pool.
#[test]
fn lock_free_return_races_close() {
    loom::model(|| {
        let p = pool(1);
        let returner = lock_free_return(&p, 1);
        let taken = {
            let mut st = p.lock();
            let mut after = After::default();
            let taken = st.close(&mut after);
            st.publish();
            let _ = unlock(st, after);
            taken.len()
        };
        let placed = returner.join().unwrap();
        let destroyed = usize::from(placed == Some(Placed::Destroyed));
        let st = p.lock();
        assert_eq!(st.idle.len_locked(), 0, "nothing idle after close");
        assert_eq!(taken + destroyed, 1, "the object is closed exactly once");
        assert_eq!(st.size, 0);
    });
}

fn futures_noop() -> std::task::Waker {
    std::task::Waker::noop().clone()
}
