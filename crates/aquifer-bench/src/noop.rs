//! One measurement of one pool of no-op objects, for every pool crate.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::managers::Noop;
use crate::{drive, drive_threads, Sample};

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
    match pool {
        "aquifer" => rt.block_on(async {
            let p = aquifer::Pool::builder(Noop)
                .max(size)
                .build()
                .expect("valid config");
            fill!(cold, size, p.get());
            drive(
                tasks,
                window,
                task!(p, |p| {
                    let o = p.get().await.expect("get");
                    if hold {
                        tokio::task::yield_now().await;
                    }
                    drop(o);
                }),
            )
            .await
        }),
        "deadpool" => rt.block_on(async {
            let p = deadpool::managed::Pool::<Noop>::builder(Noop)
                .max_size(size)
                .build()
                .expect("valid config");
            fill!(cold, size, p.get());
            drive(
                tasks,
                window,
                task!(p, |p| {
                    let o = p.get().await.expect("get");
                    if hold {
                        tokio::task::yield_now().await;
                    }
                    drop(o);
                }),
            )
            .await
        }),
        "bb8" => rt.block_on(async {
            let p = bb8::Pool::builder()
                .max_size(size as u32)
                .build(Noop)
                .await
                .expect("valid config");
            fill!(cold, size, p.get());
            drive(
                tasks,
                window,
                task!(p, |p| {
                    let o = p.get().await.expect("get");
                    if hold {
                        tokio::task::yield_now().await;
                    }
                    drop(o);
                }),
            )
            .await
        }),
        "qp" | "qp-unchecked" => rt.block_on(async {
            let p = qp::Pool::new(Noop, size);
            let checked = pool == "qp";
            fill!(cold, size, p.acquire());
            drive(
                tasks,
                window,
                task!(p, |p| {
                    let o = if checked {
                        p.acquire().await
                    } else {
                        p.acquire_unchecked().await
                    }
                    .expect("get");
                    if hold {
                        tokio::task::yield_now().await;
                    }
                    drop(o);
                }),
            )
            .await
        }),
        "mobc" => rt.block_on(async {
            let p = mobc::Pool::builder().max_open(size as u64).build(Noop);
            fill!(cold, size, p.get());
            drive(
                tasks,
                window,
                task!(p, |p| {
                    let o = p.get().await.expect("get");
                    if hold {
                        tokio::task::yield_now().await;
                    }
                    drop(o);
                }),
            )
            .await
        }),
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
