//! A no-op manager and helpers that drive the router.
#![allow(dead_code)]

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

/// Objects that are numbers; `server()` says where it "connects".
#[derive(Debug, Default)]
pub struct Fake;

impl aquifer::Multiplexed for Fake {}

impl aquifer::Manager for Fake {
    type Type = u32;
    type Error = std::io::Error;

    async fn create(&self) -> Result<u32, std::io::Error> {
        Ok(1)
    }

    fn server(&self) -> Option<String> {
        Some("fake:1/test".into())
    }
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

pub async fn call(app: &Router, method: &str, path: &str, token: Option<&str>) -> Reply {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let res = app
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let (parts, body) = res.into_parts();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes().to_vec(),
    }
}

pub fn body_json(r: &Reply) -> Value {
    serde_json::from_slice(&r.body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&r.body)))
}

pub async fn json(
    app: &Router,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> (StatusCode, Value) {
    let r = call(app, method, path, token).await;
    assert!(
        r.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json"),
        "{method} {path}"
    );
    (r.status, body_json(&r))
}

pub async fn text(app: &Router, path: &str) -> String {
    String::from_utf8(call(app, "GET", path, None).await.body).unwrap()
}

/// What `/api/events` sends during `listen`.
pub async fn sse(app: Router, listen: Duration) -> String {
    let req = Request::get("/api/events").body(Body::empty()).unwrap();
    let res = app.oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let mut body = res.into_body();
    let mut out = Vec::new();
    let end = tokio::time::Instant::now() + listen;
    while let Ok(Some(frame)) = tokio::time::timeout_at(end, body.frame()).await {
        if let Ok(data) = frame.unwrap().into_data() {
            out.extend_from_slice(&data);
        }
    }
    String::from_utf8(out).unwrap()
}

/// A local port nothing listens on.
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Objects whose close fails while `failing` is set.
#[derive(Debug, Default)]
pub struct StuckClose {
    pub failing: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl aquifer::Manager for StuckClose {
    type Type = u32;
    type Error = std::io::Error;

    async fn create(&self) -> Result<u32, std::io::Error> {
        Ok(1)
    }

    async fn destroy(&self, _: &mut u32) -> Result<(), std::io::Error> {
        if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
            Err(std::io::Error::other("the server did not answer the close"))
        } else {
            Ok(())
        }
    }
}

/// A server whose role (and WAL position, when given) is fixed, for a
/// cluster that watches roles.
#[derive(Debug)]
pub struct FakeRole(pub aquifer::Role, pub Option<u64>);

impl aquifer::Manager for FakeRole {
    type Type = u32;
    type Error = std::io::Error;

    async fn create(&self) -> Result<u32, std::io::Error> {
        Ok(1)
    }
}

impl aquifer::RoleManager for FakeRole {
    async fn check_role(&self, _: &mut u32) -> Result<aquifer::RoleCheck, std::io::Error> {
        let check = aquifer::RoleCheck::new(self.0, format!("fake says {}", self.0));
        Ok(match self.1 {
            Some(p) => check.wal_position(p).replicating(true),
            None => check,
        })
    }
}
