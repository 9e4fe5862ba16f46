//! A replica set declared in the configuration file by URLs alone, over
//! real PostgreSQL streaming replication: `check` prints each member's
//! role, `serve` shows it in the API and the metrics; and the settings
//! that cannot work are errors.

mod common;

use aquifer_testkit::PgServer;
use common::*;
use serde_json::Value;

#[test]
fn a_replica_set_by_urls_alone_shows_its_roles_in_check_the_api_and_metrics() {
    let primary = PgServer::new().unwrap();
    let replica = primary.start_replica().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // No tags, no roles written: the servers say which is which.
    let config = write(
        dir.path(),
        "aquifer.toml",
        &format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"t\"\n\n\
             [clusters.main]\nroles = true\nrole_interval = \"200ms\"\n\n\
             [pools.one]\ncluster = \"main\"\nurl = \"{}\"\n\n\
             [pools.two]\ncluster = \"main\"\nurl = \"{}\"\n",
            replica.url(),
            primary.url()
        ),
    );
    let (code, out, err) = run(aquifer().args(["check", "--config", &config, "--timeout", "5s"]));
    assert_eq!(code, 0, "{out}{err}");
    let line = |pool: &str| {
        out.lines()
            .find(|l| l.split_whitespace().nth(1) == Some(pool))
            .unwrap_or_else(|| panic!("no line for {pool}: {out}"))
            .to_owned()
    };
    assert!(out.starts_with("CLUSTER  POOL  STATE"), "{out}");
    assert!(out.lines().next().unwrap().contains("ROLE"), "{out}");
    assert!(line("one").contains("standby ("), "{out}");
    assert!(line("one").contains(" bytes behind)"), "{out}");
    assert!(line("two").contains("primary (writes)"), "{out}");
    let (code, out, _) = run(aquifer().args(["check", "--config", &config, "--json"]));
    assert_eq!(code, 0);
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["pools"][0]["role"]["role"], "standby", "{report}");
    assert_eq!(report["pools"][1]["role"]["writes_here"], true, "{report}");

    let s = Serving::start(aquifer().args(["serve", "--config", &config]));
    until("roles known", || {
        let pools = json(&s.addr, "/api/pools");
        pools[1]["role"]["writes_here"] == true && pools[0]["role"]["role"] == "standby"
    });
    let pools = json(&s.addr, "/api/pools");
    let one = &pools[0]["role"];
    assert!(
        one["evidence"]
            .as_str()
            .unwrap()
            .starts_with("pg_is_in_recovery() = t"),
        "{one}"
    );
    assert!(one["checked_at"].as_str().unwrap().ends_with('Z'), "{one}");
    assert_eq!(pools[1]["role"]["timeline"], 1);
    let clusters = json(&s.addr, "/api/clusters");
    assert!(
        clusters.to_string().contains("\"primary\":\"two\""),
        "{clusters}"
    );
    assert!(
        clusters.to_string().contains("\"replica_reads\":0"),
        "{clusters}"
    );
    let (_, metrics) = http(&s.addr, "GET", "/metrics", None);
    for series in [
        "aquifer_role{cluster=\"main\",pool=\"two\",tags=\"\",role=\"primary\"} 1",
        "aquifer_role{cluster=\"main\",pool=\"one\",tags=\"\",role=\"standby\"} 1",
        "aquifer_role{cluster=\"main\",pool=\"one\",tags=\"\",role=\"primary\"} 0",
        "aquifer_writes_here{cluster=\"main\",pool=\"two\",tags=\"\"} 1",
        "aquifer_role_changes_total{cluster=\"main\",pool=\"one\",tags=\"\"} 0",
        "aquifer_role_signals_total{cluster=\"main\",pool=\"one\",tags=\"\"} 0",
        "aquifer_read_only_evictions_total{cluster=\"main\",pool=\"one\",tags=\"\"} 0",
        "aquifer_read_rotation{cluster=\"main\",pool=\"one\",tags=\"\"} 1",
        "aquifer_replica_lag_bytes{cluster=\"main\",pool=\"one\",tags=\"\"} ",
        "aquifer_replica_lag_seconds{cluster=\"main\",pool=\"one\",tags=\"\"} ",
        "aquifer_replica_reads_total{cluster=\"main\"} 0",
        "aquifer_read_fallbacks_total{cluster=\"main\"} 0",
        "aquifer_token_waits_total{cluster=\"main\"} 0",
        "aquifer_token_wait_seconds_total{cluster=\"main\"} 0",
    ] {
        assert!(metrics.contains(series), "{series} not in\n{metrics}");
    }
    let (code, printed) = s.stop();
    assert_eq!(code, 0, "{printed}");
}

#[test]
fn role_settings_that_cannot_work_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "bad.toml",
        "[clusters.lite]\nroles = true\n\n\
         [clusters.plain]\nrole_interval = \"1s\"\nsplit_brain = \"refuse\"\n\n\
         [clusters.odd]\nroles = true\nsplit_brain = \"both\"\nrole_interval = \"0s\"\n\n\
         [pools.a]\ncluster = \"lite\"\nurl = \"sqlite::memory:\"\n",
    );
    let (code, _, err) = run(aquifer().args(["config", "check", "--config", &file]));
    assert_ne!(code, 0);
    for expected in [
        "`pools.a.cluster`: cluster `lite` watches roles (roles = true) and SQLite has no replicas",
        "`clusters.plain.role_interval`: only a cluster with roles = true watches roles",
        "`clusters.plain.split_brain`: only a cluster with roles = true watches roles",
        "`clusters.odd.split_brain`: `both` is not a rule: write \"higher_timeline\" or \"refuse\"",
        "`clusters.odd.role_interval`: a zero interval would check without pause",
    ] {
        assert!(err.contains(expected), "{expected}\nnot in\n{err}");
    }
}
