//! The router driven with `oneshot`: every endpoint, the token rules, the
//! error codes, and a scan of every response for a password.

mod common;

use std::time::Duration;

use aquifer::{Cluster, ClusterPool, Mode, Pool};
use aquifer_admin::Admin;
use axum::http::StatusCode;
use common::*;
use serde_json::Value;

const TOKEN: &str = "test-token-0123456789";

/// A cluster `main` of `eu_1`, `eu_2` (tag primary) and `us_1`, and a
/// single pool `solo`.
fn setup() -> (axum::Router, Cluster<Fake>, Pool<Fake>) {
    let cluster = Cluster::builder()
        .mode(Mode::RoundRobin)
        .ban_time(Duration::from_secs(60))
        .build();
    for (name, tag) in [
        ("eu_1", "primary"),
        ("eu_2", "replica"),
        ("us_1", "replica"),
    ] {
        let pool = Pool::builder(Fake).max(4).build().unwrap();
        cluster
            .add(ClusterPool::new(name, pool).tag(tag).weight(2))
            .unwrap();
    }
    let solo = Pool::builder(Fake).max(2).build().unwrap();
    let app = Admin::new()
        .with_token(TOKEN)
        .cluster("main", cluster.clone())
        .pool("solo", solo.clone())
        .snapshot_every(Duration::from_millis(50))
        .remove_wait(Duration::from_millis(200))
        .router();
    (app, cluster, solo)
}

#[tokio::test]
async fn reads_report_every_pool() {
    let (app, cluster, solo) = setup();
    drop(cluster.get("eu_1").await.unwrap());
    drop(solo.get().await.unwrap());

    let (s, body) = json(&app, "GET", "/healthz", None).await;
    assert_eq!((s, body["status"].as_str()), (StatusCode::OK, Some("up")));

    let (s, body) = json(&app, "GET", "/api/clusters", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body[0]["name"], "main");
    assert_eq!(body[0]["kind"], "cluster");
    assert_eq!(body[0]["mode"], "round_robin");
    assert_eq!(body[0]["info"]["pools"], 3);
    assert_eq!(body[1]["kind"], "pool");

    let (_, body) = json(&app, "GET", "/api/pools", None).await;
    let names: Vec<&str> = body
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["eu_1", "eu_2", "us_1", "solo"]);
    let eu_1 = &body[0];
    assert_eq!(eu_1["state"], "active");
    assert_eq!(eu_1["cluster"], "main");
    assert_eq!(eu_1["tags"][0], "primary");
    assert_eq!(eu_1["weight"], 2);
    assert_eq!(eu_1["server"], "fake:1/test");
    assert_eq!(eu_1["status"]["idle"], 1);
    assert_eq!(eu_1["metrics"]["gets"], 1);
    assert!(eu_1["metrics"]["wait_time"]["p99"].is_f64());

    // One pool by exact name is an object; selectors give lists.
    let (_, one) = json(&app, "GET", "/api/pools/eu_2", None).await;
    assert_eq!(one["name"], "eu_2");
    for (sel, want) in [
        ("eu_*", vec!["eu_1", "eu_2"]),
        ("tag:replica", vec!["eu_2", "us_1"]),
        ("re:^(us|solo)", vec!["us_1", "solo"]),
        ("*", vec!["eu_1", "eu_2", "us_1", "solo"]),
    ] {
        let (s, list) = json(&app, "GET", &format!("/api/pools/{sel}"), None).await;
        assert_eq!(s, StatusCode::OK, "{sel}");
        let got: Vec<&str> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(got, want, "{sel}");
    }
    let (_, only) = json(&app, "GET", "/api/pools?cluster=solo", None).await;
    assert_eq!(only.as_array().unwrap().len(), 1);

    let (s, body) = json(&app, "GET", "/readyz", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body["ready"], true);
    assert_eq!(body["pools"].as_array().unwrap().len(), 4);
    assert_eq!(body["pools"][0]["health"]["healthy"], true);

    let (s, body) = json(&app, "GET", "/api/warnings", None).await;
    assert_eq!((s, body), (StatusCode::OK, Value::Array(vec![])));
    let (s, body) = json(&app, "GET", "/api/pending", None).await;
    assert_eq!((s, body), (StatusCode::OK, Value::Array(vec![])));
}

/// Ready means every cluster has a pool that answers and every single
/// pool answers: a healthy `solo` does not hide a cluster whose pools are
/// all banned or frozen, and the body says what is not ready and why.
#[tokio::test]
async fn readiness_is_per_cluster_and_says_why() {
    let (app, ..) = setup();
    let (s, ready) = json(&app, "GET", "/readyz", None).await;
    assert_eq!(s, StatusCode::OK, "{ready}");
    assert_eq!(ready["not_ready"], Value::Array(vec![]));

    json(&app, "POST", "/api/pools/eu_*/ban?for=90s", Some(TOKEN)).await;
    json(&app, "POST", "/api/pools/us_1/freeze", Some(TOKEN)).await;
    let (s, ready) = json(&app, "GET", "/readyz", None).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{ready}");
    assert_eq!(ready["ready"], false);
    assert_eq!(ready["clusters"][0]["name"], "main");
    assert_eq!(ready["clusters"][0]["ready"], false);
    assert_eq!(ready["clusters"][1]["name"], "solo");
    assert_eq!(ready["clusters"][1]["ready"], true);
    let not_ready = ready["not_ready"].as_array().unwrap();
    assert_eq!(not_ready.len(), 3, "{ready}");
    let eu_1 = not_ready[0]["reason"].as_str().unwrap();
    assert!(
        eu_1.starts_with("banned for ") && eu_1.ends_with(" s more: by an operator"),
        "{eu_1}"
    );
    assert_eq!(not_ready[2]["pool"], "us_1");
    assert_eq!(not_ready[2]["reason"], "frozen");

    // Narrowed to one source.
    let (s, _) = json(&app, "GET", "/readyz?cluster=solo", None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = json(&app, "GET", "/readyz?cluster=main", None).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    let (s, body) = json(&app, "GET", "/readyz?cluster=nope", None).await;
    assert_eq!(
        (s, &body["error"]["code"]),
        (StatusCode::NOT_FOUND, &Value::from("not_found"))
    );

    // One pool back is enough for its cluster.
    json(&app, "POST", "/api/pools/us_1/unfreeze", Some(TOKEN)).await;
    let (s, ready) = json(&app, "GET", "/readyz", None).await;
    assert_eq!(s, StatusCode::OK, "{ready}");
    assert_eq!(ready["not_ready"], Value::Array(vec![]));
}

#[tokio::test]
async fn unknown_names_and_bad_values_are_json_errors() {
    let (app, ..) = setup();
    let long = format!("/api/pools/{}", "a".repeat(9000));
    for (method, path, status, code) in [
        ("GET", "/api/pools/nope", 404, "not_found"),
        ("GET", "/api/pools/eu_1?cluster=other", 404, "not_found"),
        ("GET", "/api/pools/re:(unclosed", 400, "bad_selector"),
        ("GET", "/api/pools/tag:", 400, "bad_selector"),
        ("GET", "/api/nothing", 404, "not_found"),
        ("GET", "/assets/secret.txt", 404, "not_found"),
        ("POST", "/api/pools/nope/freeze", 404, "not_found"),
        ("POST", "/api/pools/eu_1/explode", 404, "not_found"),
        ("POST", "/api/pools/eu_1/resize", 400, "bad_value"),
        ("POST", "/api/pools/eu_1/resize?max=lots", 400, "bad_value"),
        ("POST", "/api/pools/eu_1/resize?max=0", 400, "bad_value"),
        ("POST", "/api/pools/eu_1/ban?for=soon", 400, "bad_value"),
        ("POST", "/api/pools/eu_1/ban?for=30", 400, "bad_value"),
        ("POST", "/api/pools/solo/freeze", 409, "unsupported"),
        ("POST", "/api/pending/close?force=maybe", 400, "bad_value"),
        ("DELETE", "/api/pools/nope", 404, "not_found"),
        ("DELETE", "/api/pools/eu_1?wait=-1", 400, "bad_value"),
        ("GET", "/api/pools/eu_[", 400, "bad_selector"),
        ("POST", "/api/pools/eu_[/freeze", 400, "bad_selector"),
        (
            "POST",
            "/api/pools/eu_1/resize?max=99999999999",
            400,
            "bad_value",
        ),
        ("GET", "/api/pools/eu_1/freeze", 405, "method_not_allowed"),
        ("DELETE", "/api/clusters", 405, "method_not_allowed"),
        ("POST", "/metrics", 405, "method_not_allowed"),
        ("GET", long.as_str(), 414, "uri_too_long"),
    ] {
        let (s, body) = json(&app, method, path, Some(TOKEN)).await;
        assert_eq!(s.as_u16(), status, "{method} {path}: {body}");
        assert_eq!(body["error"]["code"], code, "{method} {path}: {body}");
        assert!(
            body["error"]["message"].as_str().unwrap().len() > 10,
            "{body}"
        );
        if path.ends_with("for=30") {
            let says = body["error"]["message"].as_str().unwrap();
            assert!(says.contains(r#"write "30s" or "30ms""#), "{says}");
        }
    }
}

#[tokio::test]
async fn changes_need_the_token() {
    let (app, cluster, _) = setup();
    for (method, path) in [
        ("POST", "/api/pools/eu_1/freeze"),
        ("POST", "/api/pools/eu_1/unfreeze"),
        ("POST", "/api/pools/eu_1/ban"),
        ("POST", "/api/pools/eu_1/unban"),
        ("POST", "/api/pools/eu_1/resize?max=2"),
        ("POST", "/api/pools/eu_1/clear"),
        ("POST", "/api/pending/close"),
        ("DELETE", "/api/pools/eu_1"),
    ] {
        let res = call(&app, method, path, None).await;
        assert_eq!(res.status, StatusCode::UNAUTHORIZED, "{method} {path}");
        assert!(res.headers["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer"));
        let res = call(&app, method, path, Some("test-token-0123456780")).await;
        assert_eq!(res.status, StatusCode::FORBIDDEN, "{method} {path}");
        let res = call(&app, method, path, Some("short")).await;
        assert_eq!(res.status, StatusCode::FORBIDDEN, "{method} {path}");
        assert_eq!(body_json(&res)["error"]["code"], "forbidden");
    }
    // Nothing changed.
    assert!(cluster.frozen().is_empty());
    assert_eq!(cluster.names().len(), 3);
}

#[tokio::test]
async fn controls_change_the_pools() {
    let (app, cluster, solo) = setup();
    let (s, body) = json(&app, "POST", "/api/pools/eu_*/freeze", Some(TOKEN)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body["pools"], serde_json::json!(["eu_1", "eu_2"]));
    assert_eq!(cluster.frozen(), ["eu_1", "eu_2"]);
    let (_, p) = json(&app, "GET", "/api/pools/eu_1", None).await;
    assert_eq!(p["state"], "frozen");
    assert!(text(&app, "/metrics")
        .await
        .contains(r#"aquifer_frozen{cluster="main",pool="eu_1",tags="primary"} 1"#));
    json(&app, "POST", "/api/pools/tag:primary/unfreeze", Some(TOKEN)).await;
    assert_eq!(cluster.frozen(), ["eu_2"]);

    let (s, _) = json(&app, "POST", "/api/pools/us_1/ban?for=30s", Some(TOKEN)).await;
    assert_eq!(s, StatusCode::OK);
    assert!(cluster.is_banned("us_1"));
    let (_, p) = json(&app, "GET", "/api/pools/us_1", None).await;
    assert_eq!(p["state"], "banned");
    let left = p["banned_for"].as_f64().unwrap();
    assert!(left > 29.0 && left <= 30.0, "{p}");
    assert!(p["banned_until"].as_str().unwrap().ends_with('Z'));
    let metrics = text(&app, "/metrics").await;
    assert!(metrics.contains(r#"aquifer_banned{cluster="main",pool="us_1",tags="replica"} 1"#));
    assert!(metrics.contains(r#"aquifer_bans_total{cluster="main",pool="us_1",tags="replica"} 1"#));
    json(&app, "POST", "/api/pools/us_1/unban", Some(TOKEN)).await;
    assert!(!cluster.is_banned("us_1"));

    let (s, _) = json(&app, "POST", "/api/pools/re:.*/resize?max=3", Some(TOKEN)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(cluster.pool("eu_1").unwrap().status().max, 3);
    assert_eq!(solo.status().max, 3);

    // A freeze of every pool skips the single pool, which cannot freeze.
    let (s, body) = json(&app, "POST", "/api/pools/*/freeze", Some(TOKEN)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body["pools"].as_array().unwrap().len(), 3);
    json(&app, "POST", "/api/pools/*/unfreeze", Some(TOKEN)).await;

    let held = cluster.get("eu_1").await.unwrap();
    drop(cluster.get("eu_1").await.unwrap());
    let (_, body) = json(&app, "POST", "/api/pools/eu_1/clear", Some(TOKEN)).await;
    assert_eq!(body["closed"], 1);
    assert_eq!(cluster.pool("eu_1").unwrap().status().size, 1);
    drop(held);

    let (s, body) = json(&app, "DELETE", "/api/pools/eu_2?wait=1s", Some(TOKEN)).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(cluster.names(), ["eu_1", "us_1"]);
    let (s, _) = json(&app, "GET", "/api/pools/eu_2", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, body) = json(&app, "DELETE", "/api/pools/solo", Some(TOKEN)).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert!(solo.is_closed());

    let (s, body) = json(&app, "POST", "/api/pending/close?force=true", Some(TOKEN)).await;
    assert_eq!((s, &body["left"]), (StatusCode::OK, &serde_json::json!(0)));
}

#[tokio::test]
async fn metrics_follow_prometheus_conventions() {
    let (app, cluster, _) = setup();
    drop(cluster.get("eu_1").await.unwrap());
    let res = call(&app, "GET", "/metrics", None).await;
    assert!(res.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    let m = String::from_utf8(res.body.clone()).unwrap();
    let labels = r#"cluster="main",pool="eu_1",tags="primary""#;
    for line in [
        format!(r#"aquifer_connections{{{labels},state="idle"}} 1"#),
        format!(r#"aquifer_connections{{{labels},state="active"}} 0"#),
        format!("aquifer_connections_max{{{labels}}} 4"),
        format!("aquifer_waiting{{{labels}}} 0"),
        format!("aquifer_gets_total{{{labels}}} 1"),
        format!("aquifer_creates_total{{{labels}}} 1"),
        format!("aquifer_acquire_wait_seconds_count{{{labels}}} 1"),
        format!(r#"aquifer_acquire_wait_seconds_bucket{{le="+Inf",{labels}}} 1"#),
        format!(r#"aquifer_evictions_total{{{labels},reason="idle"}} 0"#),
        "# TYPE aquifer_usage_seconds histogram".to_owned(),
        "# TYPE aquifer_timeouts counter".to_owned(),
        "# EOF".to_owned(),
    ] {
        assert!(m.contains(&line), "missing `{line}` in\n{m}");
    }
    // Bucket counts never fall as the bound grows.
    let counts: Vec<u64> = m
        .lines()
        .filter(|l| l.starts_with("aquifer_acquire_wait_seconds_bucket") && l.contains("eu_1"))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(counts.len(), 17);
    assert!(counts.windows(2).all(|w| w[0] <= w[1]), "{counts:?}");

    // Asked for Prometheus' older text format, the same numbers in it: a
    // counter's HELP and TYPE name its `_total` samples, no UNIT or EOF.
    let req = axum::http::Request::builder()
        .uri("/metrics")
        .header("accept", "text/plain;version=0.0.4;q=0.9,*/*;q=0.1")
        .body(axum::body::Body::empty())
        .unwrap();
    let res = tower::ServiceExt::oneshot(app.clone(), req).await.unwrap();
    assert_eq!(
        res.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let body = http_body_util::BodyExt::collect(res.into_body())
        .await
        .unwrap();
    let plain = String::from_utf8(body.to_bytes().to_vec()).unwrap();
    assert!(
        plain.contains("# TYPE aquifer_timeouts_total counter"),
        "{plain}"
    );
    assert!(plain.contains("# HELP aquifer_gets_total "), "{plain}");
    assert!(plain.contains(&format!("aquifer_gets_total{{{labels}}} 1")));
    assert!(plain.contains("# TYPE aquifer_usage_seconds histogram"));
    assert!(
        !plain.contains("# EOF") && !plain.contains("# UNIT"),
        "{plain}"
    );
}

/// The router samples the charts' numbers from the start, so that a page
/// opened later draws the last five minutes.
#[tokio::test]
async fn the_history_holds_samples_from_before_anyone_asked() {
    let (app, cluster, _) = setup();
    let held = cluster.get("eu_1").await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (s, body) = json(&app, "GET", "/api/history", None).await;
    assert_eq!(s, StatusCode::OK);
    let samples = body.as_array().unwrap();
    assert!(samples.len() >= 4, "{body}");
    let last = samples.last().unwrap();
    assert_eq!(last["active"], 1, "{last}");
    assert_eq!(last["waiting"], 0, "{last}");
    assert!(last["wait_count"].as_u64().unwrap() >= 1, "{last}");
    assert!(last["at"].as_str().unwrap().ends_with('Z'), "{last}");
    drop(held);
}

/// A multiplexer is served beside pools: a row with its connections and
/// requests, in readiness and metrics; it can be frozen and closed, not
/// banned or cleared.
#[tokio::test]
async fn a_multiplexer_is_a_row_that_can_be_frozen_checked_and_closed() {
    let mux = aquifer::Multiplexer::builder(Fake)
        .min(2)
        .max(4)
        .build()
        .unwrap();
    mux.ready().await.unwrap();
    let held = mux.lease().await.unwrap();
    let app = Admin::new()
        .with_token(TOKEN)
        .multiplexer("mux", mux.clone())
        .router();
    let (s, row) = json(&app, "GET", "/api/pools/mux", None).await;
    assert_eq!(s, StatusCode::OK, "{row}");
    assert_eq!(row["state"], "active");
    assert_eq!(row["tags"][0], "multiplexer");
    assert_eq!(row["status"]["size"], 2, "{row}");
    assert_eq!(row["status"]["borrowed"], 1, "{row}");
    assert_eq!(row["status"]["idle"], 1, "{row}");
    assert_eq!(row["multiplexer"]["in_flight"], 1, "{row}");
    assert_eq!(
        row["multiplexer"]["per_connection"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert!(row["metrics"]["gets"].as_u64().unwrap() >= 1, "{row}");
    // Its adaptive limit: at `max` until it has measured something.
    let limit = &row["multiplexer"]["limit"];
    assert_eq!(limit["limit"], 4, "{row}");
    assert_eq!(limit["reason"], "start", "{row}");
    assert_eq!(limit["measured"].as_array().unwrap().len(), 0, "{row}");

    let (s, ready) = json(&app, "GET", "/readyz", None).await;
    assert_eq!(s, StatusCode::OK, "{ready}");
    let metrics = String::from_utf8(call(&app, "GET", "/metrics", None).await.body).unwrap();
    assert!(
        metrics.contains(
            r#"aquifer_connections{cluster="mux",pool="mux",tags="multiplexer",state="active"} 1"#
        ),
        "{metrics}"
    );
    for line in [
        r#"aquifer_mux_connection_limit{cluster="mux",pool="mux",tags="multiplexer"} 4"#,
        r#"aquifer_mux_limit_reason{cluster="mux",pool="mux",tags="multiplexer",reason="start"} 1"#,
        r#"aquifer_mux_limit_changes_total{cluster="mux",pool="mux",tags="multiplexer"} 0"#,
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }

    let (s, _) = json(&app, "POST", "/api/pools/mux/freeze", Some(TOKEN)).await;
    assert_eq!(s, StatusCode::OK);
    assert!(matches!(mux.lease().await, Err(aquifer::MuxError::Frozen)));
    let (s, ready) = json(&app, "GET", "/readyz", None).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{ready}");
    assert_eq!(ready["not_ready"][0]["reason"], "frozen");
    json(&app, "POST", "/api/pools/mux/unfreeze", Some(TOKEN)).await;
    drop(mux.lease().await.unwrap());
    for action in ["ban", "clear", "resize?max=3"] {
        let (s, body) = json(
            &app,
            "POST",
            &format!("/api/pools/mux/{action}"),
            Some(TOKEN),
        )
        .await;
        assert_eq!(s.as_u16(), 409, "{action}: {body}");
    }

    drop(held);
    let (s, _) = json(&app, "DELETE", "/api/pools/mux?wait=1s", Some(TOKEN)).await;
    assert_eq!(s, StatusCode::OK);
    assert!(mux.is_closed());
    let (_, row) = json(&app, "GET", "/api/pools/mux", None).await;
    assert_eq!(row["state"], "closed");
}

#[tokio::test]
async fn the_scheme_of_a_bearer_token_is_case_insensitive() {
    let (app, cluster, _) = setup();
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let req = axum::http::Request::builder()
            .method("POST")
            .uri("/api/pools/eu_1/freeze")
            .header("authorization", format!("{scheme} {TOKEN}"))
            .body(axum::body::Body::empty())
            .unwrap();
        let res = tower::ServiceExt::oneshot(app.clone(), req).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{scheme}");
        assert_eq!(cluster.frozen(), ["eu_1"]);
        cluster.unfreeze("eu_1").unwrap();
    }
    for header in [format!("Basic {TOKEN}"), TOKEN.to_owned()] {
        let req = axum::http::Request::builder()
            .method("POST")
            .uri("/api/pools/eu_1/freeze")
            .header("authorization", header.clone())
            .body(axum::body::Body::empty())
            .unwrap();
        let res = tower::ServiceExt::oneshot(app.clone(), req).await.unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{header}");
    }
    assert!(cluster.frozen().is_empty());
}

#[tokio::test]
async fn the_page_and_its_assets_are_served_with_a_strict_policy() {
    let (app, ..) = setup();
    for (path, kind) in [
        ("/", "text/html"),
        ("/assets/app.js", "text/javascript"),
        ("/assets/style.css", "text/css"),
    ] {
        let res = call(&app, "GET", path, None).await;
        assert_eq!(res.status, StatusCode::OK, "{path}");
        assert!(res.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with(kind));
        let csp = res.headers["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'self'"));
        assert!(res.headers.get("access-control-allow-origin").is_none());
    }
    let page = text(&app, "/").await;
    assert!(page.contains(r#"src="assets/app.js""#) && !page.contains("http"));
}

#[tokio::test]
async fn the_event_stream_sends_snapshots_and_actions() {
    let (app, ..) = setup();
    let events = tokio::spawn(sse(app.clone(), Duration::from_millis(600)));
    tokio::time::sleep(Duration::from_millis(200)).await;
    json(&app, "POST", "/api/pools/us_1/freeze", Some(TOKEN)).await;
    let text = events.await.unwrap();
    assert!(text.contains("event: hello"), "{text}");
    assert!(text.contains("retry: 2000"), "{text}");
    let snapshots = text.matches("event: snapshot").count();
    assert!(snapshots >= 3, "{snapshots} snapshots in 600 ms at 50 ms");
    assert!(
        text.contains("event: action\ndata: {\"action\":\"freeze\",\"pools\":[\"us_1\"]}"),
        "{text}"
    );
}

/// A cluster of PostgreSQL pools whose server is down, with a password
/// in every URL: the failures reach warnings, events, metrics and
/// readiness, and not one response carries the password.
#[tokio::test]
async fn no_response_carries_a_password() {
    const SECRET: &str = "Hunter2-Sw0rdfish";
    let port = closed_port();
    let cluster = Cluster::builder().build();
    for name in ["pg_1", "pg_2"] {
        let url = format!("postgres://app:{SECRET}@127.0.0.1:{port}/appdb?application_name={name}");
        let manager = aquifer_postgres::PgManager::new(&url).unwrap();
        let pool = Pool::builder(manager)
            .min(1)
            .acquire_timeout(Duration::from_millis(300))
            .build()
            .unwrap();
        cluster.add(ClusterPool::new(name, pool)).unwrap();
    }
    let app = Admin::new()
        .with_token(TOKEN)
        .cluster("pg", cluster.clone())
        .check_timeout(Duration::from_millis(300))
        .snapshot_every(Duration::from_millis(50))
        .router();
    let stream = tokio::spawn(sse(app.clone(), Duration::from_millis(1500)));
    assert!(cluster.get("pg_1").await.is_err());
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut seen = String::new();
    for (method, path) in [
        ("GET", "/"),
        ("GET", "/assets/app.js"),
        ("GET", "/healthz"),
        ("POST", "/api/pools/pg_*/unban"),
        ("GET", "/readyz"),
        ("GET", "/metrics"),
        ("GET", "/api/clusters"),
        ("GET", "/api/pools"),
        ("GET", "/api/pools/pg_1"),
        ("GET", "/api/pending"),
        ("GET", "/api/warnings"),
        ("POST", "/api/pools/pg_2/ban"),
        ("POST", "/api/pools/pg_*/clear"),
        ("POST", "/api/pending/close"),
    ] {
        let res = call(&app, method, path, Some(TOKEN)).await;
        for (k, v) in &res.headers {
            seen.push_str(&format!("{k}: {v:?}\n"));
        }
        seen.push_str(&String::from_utf8_lossy(&res.body));
    }
    let (_, warnings) = json(&app, "GET", "/api/warnings", None).await;
    assert!(
        warnings.to_string().contains("127.0.0.1"),
        "the failures are reported: {warnings}"
    );
    // Banned pools are not checked; checked, they fail with the cause.
    json(&app, "POST", "/api/pools/pg_*/ban?for=1m", Some(TOKEN)).await;
    let (s, ready) = json(&app, "GET", "/readyz", None).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{ready}");
    assert_eq!(ready["pools"][0]["state"], "banned", "{ready}");
    json(&app, "POST", "/api/pools/pg_1/unban", Some(TOKEN)).await;
    let (_, ready) = json(&app, "GET", "/readyz", None).await;
    let error = ready["pools"][0]["health"]["error"].as_str().unwrap();
    assert!(error.contains("127.0.0.1"), "{ready}");
    let (_, pool) = json(&app, "GET", "/api/pools/pg_1", None).await;
    assert_eq!(pool["server"], format!("127.0.0.1:{port}/appdb"));
    let events = stream.await.unwrap();
    assert!(events.contains("create_failed"), "{events}");
    seen.push_str(&events);
    assert!(!seen.contains(SECRET), "the password leaked:\n{seen}");
    assert!(
        !seen.contains("app:"),
        "a URL with credentials leaked:\n{seen}"
    );
}

#[tokio::test]
async fn connections_that_failed_to_close_are_listed_and_closed_again() {
    let manager = StuckClose::default();
    let failing = manager.failing.clone();
    failing.store(true, std::sync::atomic::Ordering::SeqCst);
    let pool = Pool::builder(manager).max(2).build().unwrap();
    drop(pool.get().await.unwrap());
    let app = Admin::new()
        .with_token(TOKEN)
        .pool("stuck", pool.clone())
        .router();
    let (_, body) = json(&app, "POST", "/api/pools/stuck/clear", Some(TOKEN)).await;
    assert_eq!(body["closed"], 1, "{body}");

    let (_, pending) = json(&app, "GET", "/api/pending", None).await;
    assert_eq!(pending[0]["cluster"], "stuck");
    assert_eq!(pending[0]["pool"], "stuck");
    assert!(pending[0]["error"]
        .as_str()
        .unwrap()
        .contains("did not answer"));
    assert!(pending[0]["pending_for"].is_f64(), "{pending}");
    let (_, one) = json(&app, "GET", "/api/pools/stuck", None).await;
    assert_eq!(one["status"]["pending"], 1);
    assert_eq!(one["pending"].as_array().unwrap().len(), 1);

    let (_, left) = json(&app, "POST", "/api/pending/close", Some(TOKEN)).await;
    assert_eq!(left["left"], 1, "still failing: {left}");
    failing.store(false, std::sync::atomic::Ordering::SeqCst);
    let (_, left) = json(&app, "POST", "/api/pending/close", Some(TOKEN)).await;
    assert_eq!(left["left"], 0, "{left}");
    let (_, pending) = json(&app, "GET", "/api/pending", None).await;
    assert_eq!(pending, serde_json::json!([]));

    // Forced, a close that still fails is dropped anyway.
    failing.store(true, std::sync::atomic::Ordering::SeqCst);
    drop(pool.get().await.unwrap());
    json(&app, "POST", "/api/pools/stuck/clear", Some(TOKEN)).await;
    let (_, left) = json(&app, "POST", "/api/pending/close?force=true", Some(TOKEN)).await;
    assert_eq!(left["left"], 0, "{left}");
}
