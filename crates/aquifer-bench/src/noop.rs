//! One measurement of one pool of no-op objects, for every pool crate.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::managers::Noop;
use crate::{drive, drive_threads, Sample};

/// Fills the pool `$new` builds (unless `cold`), then times `tasks` tasks
/// that each loop on `$get` (with `$p` the task's handle) and drop what it
/// gave, yielding in between with `hold`.
macro_rules! timed {
    ($rt:expr, $new:expr, |$p:ident| $get:expr, $o:expr) => {{
        let o = $o;
        $rt.block_on(async {
            let pool = $new;
            fill!(o.cold, o.size, {
                let $p = &pool;
                $get
            });
            drive(
                o.tasks,
                o.window,
                task!(pool, |$p| {
                    let got = $get.await.expect("get");
                    if o.hold {
                        tokio::task::yield_now().await;
                    }
                    drop(got);
                }),
            )
            .await
        })
    }};
}

/// What one cell asks of a pool.
#[derive(Clone, Copy)]
struct Cell {
    size: usize,
    tasks: usize,
    window: Duration,
    hold: bool,
    cold: bool,
}

/// One measurement of one pool.
pub(crate) fn measure(
    rt: &tokio::runtime::Runtime,
    pool: &str,
    size: usize,
    tasks: usize,
    window: Duration,
    hold: bool,
    cold: bool,
) -> Option<Sample> {
    let cell = Cell {
        size,
        tasks,
        window,
        hold,
        cold,
    };
    match pool {
        "aquifer" => timed!(
            rt,
            aquifer::Pool::builder(Noop)
                .max(size)
                .build()
                .expect("valid config"),
            |p| p.get(),
            cell
        ),
        "deadpool" => timed!(
            rt,
            deadpool::managed::Pool::<Noop>::builder(Noop)
                .max_size(size)
                .build()
                .expect("valid config"),
            |p| p.get(),
            cell
        ),
        "bb8" => timed!(
            rt,
            bb8::Pool::builder()
                .max_size(size as u32)
                .build(Noop)
                .await
                .expect("valid config"),
            |p| p.get(),
            cell
        ),
        "qp" => timed!(rt, qp::Pool::new(Noop, size), |p| p.acquire(), cell),
        "qp-unchecked" => timed!(
            rt,
            qp::Pool::new(Noop, size),
            |p| p.acquire_unchecked(),
            cell
        ),
        "mobc" => timed!(
            rt,
            mobc::Pool::builder().max_open(size as u64).build(Noop),
            |p| p.get(),
            cell
        ),
        // No pool: each operation bumps one counter shared by every task and
        // spends a unit of Tokio's budget, so the cell shows how much this
        // machine's cross-core traffic alone varies from round to round.
        "baseline" => rt.block_on(async {
            let shared = Arc::new(AtomicU64::new(0));
            drive(
                tasks,
                window,
                task!(shared, |s| {
                    s.fetch_add(1, Ordering::AcqRel);
                    tokio::task::consume_budget().await;
                }),
            )
            .await
        }),
        "r2d2" => {
            let p = r2d2::Pool::builder()
                .max_size(size as u32)
                .build(Noop)
                .expect("valid config");
            drive_threads(tasks, window, move || {
                let o = p.get().expect("get");
                if hold {
                    std::thread::yield_now();
                }
                drop(o);
            })
        }
        other => unreachable!("unknown pool {other}"),
    }
}
