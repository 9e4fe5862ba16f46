//! Model tests of the handoff protocol, run with
//! `RUSTFLAGS="--cfg aquifer_loom" cargo test -p aquifer --lib loom`.
//!
//! They drive the pool's real code: the door ([`StateLock::locked`]), the
//! state's methods, a waiter's [`Queued`] claim, the shards' lock-free
//! [`Shards::put`] and [`Door::put_back`]. Only what needs a runtime (the
//! destroys and creates an unlock leaves) is replaced: the model counts it.

use std::task::{Context, Poll};

use loom::thread;

use std::time::Duration;

use tokio::time::Instant;

use crate::clock::Stamp;
use crate::error::CreateError;
use crate::object::Item;
use crate::shards::Shards;
use crate::sync::{Arc, Mutex};
use crate::waiters::Waiter;

use super::checkout::Queued;
use super::testing::{entry, state, NoError, S};
use super::{Acquire, After, Door, Handoff, Placed, StateLock};

/// A pool without a runtime: the real lock and door; what an unlock
/// leaves for the pool to do is counted, not done.
struct Model {
    lock: StateLock<u32, NoError>,
    /// Creates reserved, objects to destroy.
    left: Mutex<(usize, usize)>,
}

impl Door<u32, NoError> for Model {
    fn locked<R>(&self, f: impl FnOnce(&mut S, &mut After<u32>) -> R) -> R {
        let (r, work) = self.lock.locked(f);
        let mut left = self.left.lock();
        left.0 += work.creates;
        left.1 += work.destroy.len() + work.evicted.len();
        r
    }

    fn now(&self) -> Stamp {
        Stamp::default()
    }
}

impl Model {
    fn read<R>(&self, f: impl FnOnce(&S) -> R) -> R {
        self.lock.read(f)
    }
}

fn pool(max: usize) -> Arc<Model> {
    Arc::new(Model {
        lock: StateLock::new(state(max)),
        left: Mutex::new((0, 0)),
    })
}

type WaiterRef = Arc<Waiter<Handoff<u32, NoError>>>;

/// A caller that must wait (a second to its deadline): its waiter, and how
/// many creates it reserved.
fn enqueue(pool: &Model) -> (WaiterRef, usize) {
    let before = pool.left.lock().0;
    let deadline = Stamp::default().after(Duration::from_secs(1));
    let step = pool.locked(|st, after| st.acquire(0, Stamp::default(), deadline, true, 0, after));
    let Acquire::Wait { waiter, .. } = step else {
        panic!("must wait")
    };
    (waiter, pool.left.lock().0 - before)
}

fn release(pool: &Model, e: Item<u32>) {
    pool.put_back(e, 0);
}

fn release_at(pool: &Model, e: Item<u32>, now: Stamp) -> Placed {
    pool.locked(|st, after| st.place(e, now, 0, after))
}

/// A waiter's wait to the end, as a get's: the object it was served.
fn wait(pool: &Model, waiter: WaiterRef) -> Option<Item<u32>> {
    let mut queued = Queued::new(pool, waiter, 0);
    let handed = loom::future::block_on(std::future::poll_fn(|cx| queued.poll_handoff(cx)));
    handed.ok().map(|(e, _)| e)
}

type Waiting = thread::JoinHandle<Option<Item<u32>>>;

/// Each waiter's caller waiting on a thread of its own until it is served.
fn wait_on_threads(p: &Arc<Model>, queued: Vec<WaiterRef>) -> Vec<Waiting> {
    queued
        .into_iter()
        .map(|waiter| {
            let p = Arc::clone(p);
            thread::spawn(move || wait(&p, waiter))
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
        p.locked(|st, _| st.size = 1);
        let (waiter, creates) = enqueue(&p);
        assert_eq!(creates, 0, "the pool is at max");
        let p2 = Arc::clone(&p);
        let releaser = thread::spawn(move || release(&p2, entry(1)));
        // Polls once and gives up (dropped), like a cancelled get.
        let got = {
            let mut queued = Queued::new(&*p, waiter, 0);
            let waker = std::task::Waker::noop();
            match queued.poll_handoff(&mut Context::from_waker(waker)) {
                Poll::Ready(handed) => handed.ok(),
                Poll::Pending => None,
            }
        };
        releaser.join().unwrap();
        p.read(|st| {
            check(st);
            let held = usize::from(got.is_some());
            assert_eq!(
                st.idle.len_locked() + held,
                1,
                "the object is in exactly one place"
            );
            assert_eq!(st.waiters.len(), 0);
        });
    });
}

/// Two waiters and two returns in parallel: both are served, FIFO state
/// stays consistent.
#[test]
fn two_waiters_two_releases() {
    loom::model(|| {
        let p = pool(2);
        p.locked(|st, _| st.size = 2);
        let mut queued = Vec::new();
        for _ in 0..2 {
            queued.push(enqueue(&p).0);
        }
        let handles: Vec<_> = (1..=2)
            .map(|id| {
                let p = Arc::clone(&p);
                thread::spawn(move || release(&p, entry(id)))
            })
            .collect();
        let waiters = wait_on_threads(&p, queued);
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(served(waiters), vec![1, 2]);
        p.read(|st| {
            assert_eq!(st.idle.len_locked(), 0);
            assert_eq!(st.waiters.len(), 0);
        });
    });
}

/// Two returns both due to be fair (a second apart), racing the first
/// waiter's poll: while the first object is still on its way to the first
/// waiter, the second goes idle with a nudge instead of to the second
/// waiter's cell; either way both waiters are served and nothing is left
/// idle.
#[test]
fn a_fair_return_while_one_is_in_transit_still_serves_the_next_waiter() {
    loom::model(|| {
        let p = pool(2);
        p.locked(|st, _| st.size = 2);
        let queued: Vec<_> = (0..2).map(|_| enqueue(&p).0).collect();
        let releaser = {
            let p = Arc::clone(&p);
            thread::spawn(move || {
                release_at(&p, entry(1), Stamp::default());
                release_at(&p, entry(2), Stamp::default().after(Duration::from_secs(1)));
            })
        };
        let waiters = wait_on_threads(&p, queued);
        releaser.join().unwrap();
        assert_eq!(served(waiters), vec![1, 2]);
        p.read(|st| {
            check(st);
            assert_eq!(st.idle.len_locked(), 0);
            assert_eq!(st.waiters.len(), 0);
        });
    });
}

/// A create that fails while its waiter gives up: the reservation is
/// always given back, the waiter is either failed or removed.
#[test]
fn create_failure_races_cancel() {
    loom::model(|| {
        let p = pool(1);
        let (waiter, creates) = enqueue(&p);
        assert_eq!(creates, 1, "the caller reserves a create");
        let p2 = Arc::clone(&p);
        let creator = thread::spawn(move || {
            let keep = p2.locked(|st, after| {
                st.create_failed(
                    CreateError::Timeout(Duration::from_secs(1)),
                    Instant::now(),
                    true,
                    after,
                )
            });
            if keep {
                // Nobody waits any more once the caller gave up, so a
                // job that kept going must still find work.
                p2.read(|st| assert!(st.waiters.len() > 0 || !st.keep_creating()));
                p2.locked(|st, _| st.unreserve());
            }
        });
        drop(Queued::new(&*p, waiter, 0));
        creator.join().unwrap();
        p.read(|st| {
            check(st);
            assert_eq!(st.size, 0);
            assert_eq!(st.waiters.len(), 0);
        });
    });
}

/// The deadline task expires a waiter while an object is returned: the
/// waiter gets the object or the timeout, the object is never lost.
#[test]
fn deadline_races_release() {
    loom::model(|| {
        let p = pool(1);
        p.locked(|st, _| st.size = 1);
        let start = Stamp::default();
        let step = p.locked(|st, after| st.acquire(0, start, start, true, 0, after));
        let waiter = match step {
            Acquire::Wait { waiter, rearm, .. } => {
                assert!(rearm, "the first waiter arms the deadline task");
                waiter
            }
            _ => panic!("must wait"),
        };
        let p2 = Arc::clone(&p);
        let releaser = thread::spawn(move || release(&p2, entry(1)));
        let p3 = Arc::clone(&p);
        let reaper = thread::spawn(move || p3.locked(|st, after| st.expire(start, after)));
        let got = wait(&p, waiter);
        releaser.join().unwrap();
        reaper.join().unwrap();
        p.read(|st| {
            check(st);
            assert_eq!(st.idle.len_locked() + usize::from(got.is_some()), 1);
            assert_eq!(st.waiters.len(), 0);
            assert_eq!(st.next_deadline, None);
        });
    });
}

/// With the pool's `size` objects out, a thread that returns one (id 1)
/// the way a checked-out object does: into its shard (home 1) without
/// the pool lock, or through the door when the shards refuse it. Yields
/// where the object went through the door (`None`: into the shard).
fn lock_free_return(p: &Arc<Model>, size: usize) -> thread::JoinHandle<Option<Placed>> {
    let idle = p.locked(|st, _| {
        st.size = size;
        Arc::clone(&st.idle)
    });
    let p = Arc::clone(p);
    thread::spawn(move || {
        #[allow(unsafe_code)]
        // SAFETY: this thread holds `idle` for the whole call.
        let put = unsafe { Shards::put(&*idle, 1, entry(1), 0) };
        match put {
            Ok(()) => None,
            Err(e) => Some(p.put_back(e, 1)),
        }
    })
}

/// A caller that starts to wait at once (a second to its deadline).
fn acquire(p: &Model) -> Acquire<u32, NoError> {
    let deadline = Stamp::default().after(Duration::from_secs(1));
    p.locked(|st, after| st.acquire(0, Stamp::default(), deadline, true, 0, after))
}

/// A return that skips the pool lock (into its shard) races a caller
/// that starts to wait, each on its own shard: the object must end up
/// with the waiter, never idle in a shard while the waiter waits.
#[test]
fn lock_free_return_races_a_new_waiter() {
    loom::model(|| {
        let p = pool(1);
        let returner = lock_free_return(&p, 1);
        let step = acquire(&p);
        returner.join().unwrap();
        p.read(|st| {
            check(st);
            match step {
                // The object was already idle when the caller looked.
                Acquire::Got(_) => assert_eq!(st.idle.len_locked(), 0),
                Acquire::Wait { waiter, .. } => {
                    assert!(
                        waiter.take_ready().is_some(),
                        "the waiter must get the object, not a shard"
                    );
                    assert_eq!(st.idle.len_locked(), 0);
                }
                Acquire::Refused(r) => panic!("refused: {r:?}"),
            }
        });
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
        p.locked(|st, _| st.size = 2);
        let first = match acquire(&p) {
            Acquire::Wait { waiter, .. } => waiter,
            _ => panic!("both objects are out: must wait"),
        };
        let returner = lock_free_return(&p, 2);
        let p2 = Arc::clone(&p);
        let server = thread::spawn(move || {
            let placed = release_at(&p2, entry(2), Stamp::default());
            assert_ne!(placed, Placed::Destroyed, "the pool is open");
        });
        let step = acquire(&p);
        server.join().unwrap();
        let placed = returner.join().unwrap();
        assert!(placed != Some(Placed::Destroyed), "the pool is open");
        p.read(|st| {
            check(st);
            let first_nudged = first.is_nudged();
            let mut held = usize::from(first.take_ready().is_some());
            match step {
                Acquire::Got(_) => held += 1,
                Acquire::Wait { waiter, .. } => match waiter.take_ready() {
                    Some(_) => held += 1,
                    None => assert!(
                        st.idle.len_locked() == 0 || first_nudged || waiter.is_nudged(),
                        "an object sits in a shard while callers wait, and none was woken to take it"
                    ),
                },
                Acquire::Refused(r) => panic!("refused: {r:?}"),
            }
            assert_eq!(held + st.idle.len_locked(), 2, "no object is lost");
        });
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
        let taken = p.locked(|st, after| st.close(after)).len();
        let placed = returner.join().unwrap();
        let destroyed = usize::from(placed == Some(Placed::Destroyed));
        assert_eq!(destroyed, p.left.lock().1, "the door leaves it to destroy");
        p.read(|st| {
            assert_eq!(st.idle.len_locked(), 0, "nothing idle after close");
            assert_eq!(taken + destroyed, 1, "the object is closed exactly once");
            assert_eq!(st.size, 0);
        });
    });
}
