//! Health checks, and the formats reports serialize to.

mod common;

use std::time::Duration;

use aquifer::{Cluster, ClusterPool, Pool, PoolEvent};
use common::*;

#[tokio::test(start_paused = true)]
async fn a_check_is_a_checkout_and_a_round_trip() {
    let (fake, m) = fake();
    let pool = Pool::builder(m).max(2).build().unwrap();
    let ok = pool.check(Duration::from_secs(1)).await;
    assert!(ok.healthy && ok.error.is_none(), "{ok:?}");
    assert_eq!(fake.validate.calls(), 1);

    // A failed round trip is reported with its cause and closes the object.
    fake.validate.set(Step::Err);
    let bad = pool.check(Duration::from_secs(1)).await;
    assert!(!bad.healthy);
    assert!(
        bad.error.as_deref().unwrap().contains("validate"),
        "{bad:?}"
    );
    assert_eq!(pool.status().size, 0);

    // A server that never answers fails at the timeout, not later.
    fake.validate.set(Step::Never);
    let slow = pool.check(Duration::from_millis(300)).await;
    assert!(!slow.healthy);
    assert_eq!(slow.latency, Duration::from_millis(300));
    assert!(slow.error.unwrap().contains("no answer within 300 ms"));
}

#[tokio::test]
async fn durations_are_seconds_and_times_rfc3339() {
    let (_fake, m) = fake();
    let pool = Pool::builder(m).max(2).build().unwrap();
    drop(pool.get().await.unwrap());
    let cluster = Cluster::builder().build();
    cluster.add(ClusterPool::new("p1", pool.clone())).unwrap();
    cluster.ban("p1", Some(Duration::from_secs(30))).unwrap();
    let info = serde_json::to_value(cluster.info_about("p1").unwrap()).unwrap();
    let wait = &info["metrics"]["wait_time"];
    assert!(wait["p99"].is_f64() && wait["total"].is_f64(), "{wait}");
    assert_eq!(wait["buckets"].as_array().unwrap().len(), 16);
    assert!(info["banned_for"].as_f64().unwrap() > 29.0, "{info}");
    let until = info["banned_until"].as_str().unwrap();
    assert!(until.len() == 24 && until.ends_with('Z') && until.as_bytes()[10] == b'T');
    assert_eq!(info["bans"], 1);
    let warning = serde_json::to_value(&cluster.warnings()[0]).unwrap();
    assert!(warning["at"].as_str().unwrap().ends_with('Z'), "{warning}");
    assert!(warning["message"]
        .as_str()
        .unwrap()
        .contains("by an operator"));

    let event = PoolEvent::QueueTimeout {
        waited: Duration::from_millis(1500),
    };
    let json = serde_json::to_value(&event).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"event": "queue_timeout", "waited": 1.5})
    );

    // `select` names frozen and banned pools too.
    cluster.freeze("p1").unwrap();
    assert_eq!(cluster.select("p*").unwrap(), ["p1"]);
    assert!(cluster.select("q*").is_err() && cluster.select("").is_err());
    cluster.unban("p1").unwrap();
    assert!(!cluster.is_banned("p1"));
}
