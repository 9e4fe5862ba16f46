//! What reaches the log. One test in this binary: `tracing` keeps which
//! call sites are enabled in state shared by every thread, so a thread's
//! own subscriber can miss events while other tests run beside it.

mod common;

use std::time::Duration;

use aquifer::{Cluster, ClusterPool, Mode, Pool};
use common::*;

/// What is logged, kept in memory.
#[derive(Clone, Default)]
struct Logs(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Logs {
    fn take(&self) -> String {
        String::from_utf8(std::mem::take(&mut *self.0.lock().unwrap())).unwrap()
    }
}

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn trouble_is_logged_once_not_flooded() {
    let logs = Logs::default();
    let writer = logs.clone();
    let _guard = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .with_max_level(tracing::Level::INFO)
            .finish(),
    );
    repeated_failures_are_logged_once_a_minute_and_summed_up(&logs).await;
    a_failed_create_in_a_cluster_is_logged_once_and_the_ban_says_what_it_does(&logs).await;
}

/// A server that stays down does not flood the log: the first failure of
/// a minute is logged, the rest are counted and summed up in one line.
async fn repeated_failures_are_logged_once_a_minute_and_summed_up(logs: &Logs) {
    let (f, m) = fake();
    f.create.set(Step::Err);
    let backoff = aquifer::Backoff {
        min: ms(100),
        max: ms(100),
        factor: 1.0,
        jitter: 0.0,
    };
    let p = Pool::builder(m)
        .min(1)
        .max(2)
        .backoff(backoff)
        .build()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(f.create.calls() > 100, "{}", f.create.calls());
    let first = logs.take();
    assert_eq!(
        first.matches("aquifer::pool: create failed").count(),
        1,
        "{first}"
    );
    tokio::time::sleep(Duration::from_secs(31)).await;
    let t = logs.take();
    assert_eq!(t.matches("aquifer::pool: create failed").count(), 1, "{t}");
    let n: u64 = t
        .lines()
        .find(|l| l.contains("more create failures in the last minute"))
        .and_then(|l| l.split("… ").nth(1))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no summary in {t}"));
    assert!(n > 500, "{n}");
    p.close().await;
    logs.take();
}

/// A failed connection is logged once, by its pool; the ban it brings is
/// one more line that does not repeat it, and the cluster's warning keeps
/// the cause.
async fn a_failed_create_in_a_cluster_is_logged_once_and_the_ban_says_what_it_does(logs: &Logs) {
    let c = Cluster::builder()
        .mode(Mode::RoundRobin)
        .ban_time(ms(5000))
        .build();
    let pool = |m| {
        Pool::builder(m)
            .max(4)
            .acquire_timeout(ms(1000))
            .build()
            .unwrap()
    };
    let (down, m) = fake();
    c.add(ClusterPool::new("down", pool(m))).unwrap();
    c.add(ClusterPool::new("up", pool(fake().1))).unwrap();
    down.create.set(Step::Err);
    for _ in 0..4 {
        drop(c.get("*").await.unwrap());
    }
    assert!(c.is_banned("down"));
    let text = logs.take();
    assert_eq!(
        text.matches("password authentication failed").count(),
        1,
        "{text}"
    );
    assert_eq!(
        text.matches("banned for 5 s; gets go to the other pools")
            .count(),
        1,
        "{text}"
    );
    let w = c.warnings();
    assert!(
        w.iter().any(|w| w.message.starts_with("banned for 5 s: ")
            && w.message.contains("password authentication failed")),
        "{w:?}"
    );
}
