//! The dashboard in a real headless Chromium (through chromedriver and
//! fantoccini), against a live server: the pools show, the buttons work
//! and the API agrees, a chart moves under load, the page reconnects after
//! a restart and fits a phone. Screenshots are saved as test artifacts.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aquifer::{Cluster, ClusterPool, Pool};
use aquifer_admin::Admin;
use common::*;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

const TOKEN: &str = "dashboard-test-token";

/// The router served on its own runtime, so that dropping it ends every
/// connection (the page's event stream included), as a restart would.
struct Server {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start(app: axum::Router, addr: SocketAddr) -> Self {
        let listener = std::net::TcpListener::bind(addr).expect("binding the dashboard's port");
        listener.set_nonblocking(true).unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                tokio::select! {
                    r = axum::serve(listener, app) => r.unwrap(),
                    _ = stopped => {}
                }
            });
            rt.shutdown_timeout(Duration::from_secs(1));
        });
        Self {
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.stop.take().unwrap().send(());
        let _ = self.thread.take().unwrap().join();
    }
}

struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn find_program(names: &[&str]) -> PathBuf {
    for name in names {
        for dir in std::env::var("PATH")
            .unwrap_or_default()
            .split(':')
            .chain(["/usr/bin"])
        {
            let p = PathBuf::from(dir).join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    panic!(
        "{} not found: install Debian's chromium and chromium-driver (scripts/test.sh does)",
        names.join(" or ")
    );
}

async fn browser(user_data: &std::path::Path) -> (Driver, Client) {
    let port = closed_port();
    let child = Command::new(find_program(&["chromedriver"]))
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting chromedriver");
    let driver = Driver(child);
    let chromium = find_program(&["chromium", "chromium-browser", "google-chrome"]);
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--window-size=1280,900",
                format!("--user-data-dir={}", user_data.display()),
            ],
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let url = format!("http://127.0.0.1:{port}");
    for _ in 0..100 {
        let mut builder = ClientBuilder::new(connector.clone());
        builder.capabilities(caps.clone());
        if let Ok(client) = builder.connect(&url).await {
            return (driver, client);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("chromedriver did not answer on {url}");
}

/// Polls `check` (a JavaScript expression) until it is true, for 15 s.
async fn until(c: &Client, what: &str, check: &str) {
    for _ in 0..150 {
        let v = c
            .execute(&format!("return !!({check});"), vec![])
            .await
            .unwrap();
        if v == Value::Bool(true) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let page = c
        .execute("return document.body.innerText;", vec![])
        .await
        .unwrap_or_default();
    panic!("timed out waiting for {what} ({check}); the page shows:\n{page}");
}

fn cell(pool: &str, class: &str) -> String {
    format!("document.querySelector('tr[data-pool=\"main/{pool}\"] td.col-{class}')")
}

async fn click(c: &Client, pool: &str, action: &str) {
    c.find(Locator::Css(&format!(
        "tr[data-pool=\"main/{pool}\"] button[data-action=\"{action}\"]"
    )))
    .await
    .unwrap_or_else(|e| panic!("no {action} button for {pool}: {e}"))
    .click()
    .await
    .unwrap();
}

fn artifact(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_and_steers_the_pools_in_a_real_browser() {
    let cluster = Cluster::builder().build();
    for name in ["eu_1", "eu_2", "us_1"] {
        let pool = Pool::builder(Fake).max(6).build().unwrap();
        cluster.add(ClusterPool::new(name, pool)).unwrap();
    }
    cluster.add_warning(Some("eu_2"), "a warning from before the page opened");
    let mux = aquifer::Multiplexer::builder(Fake)
        .min(1)
        .max(2)
        .build()
        .unwrap();
    // A replica set: each member's role, from its (fake) server.
    let set = Cluster::builder()
        .roles(aquifer::Roles::default().max_lag_bytes(1 << 20))
        .build();
    for (name, role, wal) in [
        ("p", aquifer::Role::Primary, Some(20_000_000)),
        ("s", aquifer::Role::Standby, None),
        ("late", aquifer::Role::Standby, Some(7_700_000)),
    ] {
        let pool = Pool::builder(FakeRole(role, wal)).max(2).build().unwrap();
        set.add(ClusterPool::new(name, pool)).unwrap();
    }
    let app = || {
        Admin::new()
            .with_token(TOKEN)
            .cluster("main", cluster.clone())
            .cluster("set", set.clone())
            .multiplexer("reads", mux.clone())
            .snapshot_every(Duration::from_millis(200))
            .router()
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], closed_port()));
    // Mounted under a prefix, as an application would.
    let mount = || axum::Router::new().nest("/admin", app());
    let mut server = Some(Server::start(mount(), addr));

    let profile = tempfile::tempdir().unwrap();
    let (_driver, c) = browser(profile.path()).await;
    // The server samples from the start: ten snapshots' worth before the
    // page opens.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    c.goto(&format!("http://{addr}/admin")).await.unwrap();
    until(
        &c,
        "the pools",
        &format!("{}?.textContent === 'active'", cell("us_1", "state")),
    )
    .await;
    until(
        &c,
        "the live badge",
        "document.querySelector('#live').textContent === 'live'",
    )
    .await;
    // The charts start with what the server saw before the page opened,
    // not empty: more samples at once than live snapshots (five a second)
    // could have brought.
    let opened = std::time::Instant::now();
    until(
        &c,
        "the charts' history",
        "Number(document.querySelector('#chart-conns').dataset.samples) >= 10",
    )
    .await;
    assert!(
        opened.elapsed() < Duration::from_millis(1500),
        "{:?}",
        opened.elapsed()
    );
    until(
        &c,
        "the old warning",
        "document.querySelector('#warnings').textContent.includes('from before')",
    )
    .await;
    let rows = c.find_all(Locator::Css("#pools tbody tr")).await.unwrap();
    assert_eq!(rows.len(), 7);
    // Each member of a replica set shows its role, which one takes the
    // writes, and on hover what that rests on; other pools show none.
    let role =
        |pool: &str| format!("document.querySelector('tr[data-pool=\"set/{pool}\"] td.col-role')");
    until(
        &c,
        "the primary's role",
        &format!("{}?.textContent === 'primary · writes'", role("p")),
    )
    .await;
    until(
        &c,
        "the standby's role",
        &format!(
            "{0}?.textContent === 'standby' && {0}.title.startsWith('fake says standby; changed at ')",
            role("s")
        ),
    )
    .await;
    // The set's reads, live: one served by the standby in the rotation.
    drop(set.read().await.unwrap());
    until(
        &c,
        "the set's reads",
        "document.querySelector('#clusters .reads[data-cluster=\"set\"]')?.textContent === ' · reads: 1 on replicas, 0 on the primary, 0 token waits (0 µs)'",
    )
    .await;
    until(
        &c,
        "the late standby's lag",
        &format!(
            "{0}?.textContent === 'standby · 12.3 MB behind · no reads' && {0}.title.includes('; no reads: 12300000 bytes behind (max_lag_bytes 1048576')",
            role("late")
        ),
    )
    .await;
    until(
        &c,
        "no role",
        &format!("{}.textContent === '–'", cell("eu_1", "role")),
    )
    .await;
    // A multiplexer's row: busy connections and the requests on them; it
    // can be frozen and removed, not cleared.
    let held = mux.lease().await.unwrap();
    until(
        &c,
        "the multiplexer's requests",
        "document.querySelector('tr[data-pool=\"reads/reads\"] .col-active').textContent === '1 · 1 req'",
    )
    .await;
    // Its adaptive limit, and why it stands there.
    until(
        &c,
        "the multiplexer's limit",
        "document.querySelector('tr[data-pool=\"reads/reads\"] .col-size').textContent === '1/2 (max 2)' && document.querySelector('tr[data-pool=\"reads/reads\"] .col-size').title.startsWith('adaptive limit 2: start')",
    )
    .await;
    drop(held);
    let clear = c
        .find_all(Locator::Css(
            "tr[data-pool=\"reads/reads\"] button[data-action=\"clear\"]",
        ))
        .await
        .unwrap();
    assert!(clear.is_empty(), "a multiplexer has no clear button");

    // Every number on the page has its unit right: one event of each kind,
    // serialized as the server sends it, rendered by the page's own code.
    use aquifer::{Operation, PoolEvent, Reason};
    let ms = Duration::from_micros;
    let kinds = [
        (
            PoolEvent::Created {
                id: 3,
                took: ms(4_200),
            },
            "created (id=3, took=4.2 ms)",
        ),
        (
            PoolEvent::CreateFailed {
                error: "refused".into(),
                failures: 2,
                retry_in: ms(1_500_000),
            },
            "create failed (error=refused, failures=2, retry in=1.5 s)",
        ),
        (
            PoolEvent::Destroyed {
                id: 3,
                reason: Reason::Idle,
            },
            "destroyed (id=3, reason=idle)",
        ),
        (
            PoolEvent::DestroyFailed {
                id: 4,
                error: "gone".into(),
            },
            "destroy failed (id=4, error=gone)",
        ),
        (
            PoolEvent::Acquired {
                id: 5,
                waited: ms(850),
            },
            "acquired (id=5, waited=850 µs)",
        ),
        (
            PoolEvent::Released {
                id: 5,
                held: ms(218_000),
            },
            "released (id=5, held=218 ms)",
        ),
        (
            PoolEvent::MaxReached { max: 2, waiting: 1 },
            "max reached (max=2, waiting=1)",
        ),
        (
            PoolEvent::QueueFull { max_waiting: 8 },
            "queue full (max waiting=8)",
        ),
        (
            PoolEvent::QueueTimeout {
                waited: ms(2_000_000),
            },
            "queue timeout (waited=2 s)",
        ),
        (
            PoolEvent::ValidationFailed {
                id: 6,
                error: "closed".into(),
            },
            "validation failed (id=6, error=closed)",
        ),
        (
            PoolEvent::Evicted {
                id: 7,
                reason: Reason::Lifetime,
            },
            "evicted (id=7, reason=lifetime)",
        ),
        (
            PoolEvent::LeakSuspected {
                id: 8,
                held: ms(150_000_000),
                location: "src/main.rs:10".into(),
            },
            "leak suspected (id=8, held=2.5 min, location=src/main.rs:10)",
        ),
        (
            PoolEvent::OperationFailed {
                op: Operation::Query,
                error: "boom".into(),
            },
            "operation failed (op=query, error=boom)",
        ),
    ];
    let (events, want): (Vec<Value>, Vec<&str>) = kinds
        .into_iter()
        .map(|(e, text)| (Value::String(serde_json::to_string(&e).unwrap()), text))
        .unzip();
    // As text, so that the fields keep the order the server sends them in.
    let shown = c
        .execute(
            "return arguments[0].map((t) => describe(JSON.parse(t)));",
            vec![Value::Array(events)],
        )
        .await
        .unwrap();
    assert_eq!(shown, json!(want));

    // Without the token a button reports the refusal and changes nothing.
    click(&c, "eu_1", "freeze").await;
    until(
        &c,
        "the refusal",
        "document.querySelector('#notice').textContent.includes('token')",
    )
    .await;
    assert!(cluster.frozen().is_empty());

    c.find(Locator::Css("#token"))
        .await
        .unwrap()
        .send_keys(TOKEN)
        .await
        .unwrap();
    c.find(Locator::Css("#auth button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    click(&c, "eu_1", "freeze").await;
    until(
        &c,
        "eu_1 frozen",
        &format!("{}.textContent === 'frozen'", cell("eu_1", "state")),
    )
    .await;
    assert_eq!(cluster.frozen(), ["eu_1"]);
    click(&c, "eu_1", "unfreeze").await;
    until(
        &c,
        "eu_1 active",
        &format!("{}.textContent === 'active'", cell("eu_1", "state")),
    )
    .await;
    assert!(cluster.frozen().is_empty());

    // Under load the chart of active connections moves.
    let stop = Arc::new(AtomicBool::new(false));
    let load: Vec<_> = (0..8)
        .map(|_| {
            let (cluster, stop) = (cluster.clone(), Arc::clone(&stop));
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(conn) = cluster.get("eu_*").await {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        drop(conn);
                    }
                }
            })
        })
        .collect();
    let last = "JSON.parse(document.querySelector('#chart-conns').dataset.last || '[0]')[0]";
    until(&c, "the chart to move", &format!("{last} > 0")).await;
    until(
        &c,
        "eu_1 to show work",
        &format!("Number({}.textContent) > 0", cell("eu_1", "active")),
    )
    .await;
    // A real event from the stream, as it is listed, with its unit; and
    // the p99 wait, once there are waits, with one too.
    until(
        &c,
        "a created event with its time in a unit",
        r"/created \(id=\d+, took=[\d.]+ (µs|ms|s)\)/.test(document.querySelector('#events').textContent)",
    )
    .await;
    until(
        &c,
        "a p99 wait with its unit",
        &format!(
            r"/^[\d.]+ (µs|ms|s|min)$/.test({}.textContent)",
            cell("eu_1", "p99")
        ),
    )
    .await;
    let shot = c.screenshot().await.unwrap();
    std::fs::write(artifact("dashboard.png"), &shot).unwrap();
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.await.unwrap();
    }
    until(&c, "the chart to fall", &format!("{last} === 0")).await;

    // Remove asks first: dismissed, nothing happens; accepted, it goes.
    click(&c, "us_1", "remove").await;
    assert!(c
        .get_alert_text()
        .await
        .unwrap()
        .contains("Remove pool main/us_1"));
    c.dismiss_alert().await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(cluster.names(), ["eu_1", "eu_2", "us_1"]);
    click(&c, "us_1", "remove").await;
    c.accept_alert().await.unwrap();
    until(
        &c,
        "us_1 gone",
        "!document.querySelector('tr[data-pool=\"main/us_1\"]')",
    )
    .await;
    assert_eq!(cluster.names(), ["eu_1", "eu_2"]);
    until(
        &c,
        "the removal in the event list",
        "document.querySelector('#events').textContent.includes('remove us_1')",
    )
    .await;

    // A restart: the page says so, then reconnects by itself.
    drop(server.take());
    until(
        &c,
        "the outage",
        "document.querySelector('#live').textContent !== 'live'",
    )
    .await;
    server = Some(Server::start(mount(), addr));
    until(
        &c,
        "the reconnect",
        "document.querySelector('#live').textContent === 'live'",
    )
    .await;
    cluster.freeze("eu_2").unwrap();
    until(
        &c,
        "fresh data after the restart",
        &format!("{}.textContent === 'frozen'", cell("eu_2", "state")),
    )
    .await;

    // A phone's width: nothing wider than the screen but the table, which
    // scrolls in its own box.
    c.set_window_size(390, 844).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let fits = c
        .execute(
            "return document.documentElement.scrollWidth <= window.innerWidth;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        fits,
        Value::Bool(true),
        "the page scrolls sideways on a phone"
    );
    std::fs::write(
        artifact("dashboard-phone.png"),
        c.screenshot().await.unwrap(),
    )
    .unwrap();
    c.close().await.unwrap();
    drop(server);
}
