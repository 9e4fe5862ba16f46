//! A cluster of three real PostgreSQL servers behind the router: one is
//! killed and shows as banned in the API and in `/metrics`, then comes back.

mod common;

use std::time::Duration;

use aquifer::{Cluster, ClusterPool, Pool};
use aquifer_admin::Admin;
use aquifer_postgres::PgManager;
use aquifer_testkit::{PgServer, PG_PASSWORD};
use axum::http::StatusCode;
use common::*;
use serde_json::Value;

async fn state_of(app: &axum::Router, pool: &str) -> Value {
    json(app, "GET", &format!("/api/pools/{pool}"), None)
        .await
        .1
}

/// Polls until `pool`'s state is `want`, for up to 20 s.
async fn until_state(app: &axum::Router, pool: &str, want: &str) -> Value {
    for _ in 0..200 {
        let p = state_of(app, pool).await;
        if p["state"] == want {
            return p;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{pool} never became {want}: {}", state_of(app, pool).await);
}

fn banned_line(metrics: &str, pool: &str) -> String {
    metrics
        .lines()
        .find(|l| l.starts_with("aquifer_banned{") && l.contains(&format!("pool=\"{pool}\"")))
        .unwrap_or_else(|| panic!("no aquifer_banned line for {pool} in\n{metrics}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_is_banned_in_the_api_and_the_metrics_then_back() {
    let mut servers: Vec<PgServer> = (0..3).map(|_| PgServer::new().unwrap()).collect();
    let cluster = Cluster::builder().ban_time(Duration::from_secs(3)).build();
    for (i, srv) in servers.iter().enumerate() {
        let pool = Pool::builder(PgManager::new(&srv.url()).unwrap())
            .min(1)
            .max(4)
            .acquire_timeout(Duration::from_secs(1))
            .validate_on_borrow(true)
            .build()
            .unwrap();
        cluster
            .add(ClusterPool::new(format!("pg_{}", i + 1), pool))
            .unwrap();
    }
    let app = Admin::new()
        .with_token("t")
        .cluster("pg", cluster.clone())
        .router();
    for name in ["pg_1", "pg_2", "pg_3"] {
        let conn = cluster.get(name).await.unwrap();
        conn.simple_query("SELECT 1").await.unwrap();
    }
    let p = state_of(&app, "pg_2").await;
    assert_eq!(p["state"], "active");
    assert_eq!(
        p["server"],
        format!("127.0.0.1:{}/postgres", servers[1].port())
    );

    servers[1].kill().unwrap();
    // The next gets there fail, and the cluster bans the pool.
    let _ = cluster.get("pg_2").await;
    let p = until_state(&app, "pg_2", "banned").await;
    assert!(p["banned_for"].as_f64().unwrap() > 0.0, "{p}");
    assert!(p["bans"].as_u64().unwrap() >= 1, "{p}");
    let metrics = text(&app, "/metrics").await;
    assert!(banned_line(&metrics, "pg_2").ends_with(" 1"), "{metrics}");
    assert!(banned_line(&metrics, "pg_1").ends_with(" 0"), "{metrics}");
    let (_, warnings) = json(&app, "GET", "/api/warnings", None).await;
    assert!(
        warnings
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["pool"] == "pg_2" && w["message"].as_str().unwrap().contains("banned")),
        "{warnings}"
    );
    // Still ready: two servers answer; the detail names the banned one.
    let (s, ready) = json(&app, "GET", "/readyz", None).await;
    assert_eq!(s, StatusCode::OK, "{ready}");
    let pools = ready["pools"].as_array().unwrap();
    assert_eq!(pools[0]["health"]["healthy"], true, "{ready}");
    assert_eq!(pools[1]["pool"], "pg_2");
    assert_ne!(pools[1]["state"], "active", "{ready}");
    // Gets elsewhere go on.
    cluster
        .get("pg_*")
        .await
        .unwrap()
        .simple_query("SELECT 1")
        .await
        .unwrap();

    servers[1].start().unwrap();
    until_state(&app, "pg_2", "active").await;
    let conn = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match cluster.get("pg_2").await {
                Ok(c) => break c,
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    })
    .await
    .expect("pg_2 never handed out a connection again");
    conn.simple_query("SELECT 1").await.unwrap();
    drop(conn);
    let metrics = text(&app, "/metrics").await;
    assert!(banned_line(&metrics, "pg_2").ends_with(" 0"), "{metrics}");
    let all = serde_json::to_string(&json(&app, "GET", "/api/pools", None).await.1).unwrap();
    assert!(!all.contains(PG_PASSWORD) && !metrics.contains(PG_PASSWORD));
    cluster.shutdown(Duration::from_secs(5), true).await;
}
