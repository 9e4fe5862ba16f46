//! The routes and the JSON API's handlers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aquifer::{Selector, Warning};
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequestParts, Path, Query, State as With};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::source::{Control, ControlError, PendingReport, PoolReport, Readiness};
use crate::{Served, State};

type Shared = With<Arc<State>>;

pub(crate) fn routes(state: Arc<State>) -> Router {
    Router::new()
        .route("/", get(crate::page::index))
        .route("/assets/{file}", get(crate::page::asset))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(crate::metrics::scrape))
        .route("/api/clusters", get(clusters))
        .route("/api/pools", get(pools))
        .route("/api/pools/{name}", get(pool).delete(remove))
        .route("/api/pools/{name}/{action}", post(act))
        .route("/api/pending", get(pending))
        .route("/api/pending/close", post(close_pending))
        .route("/api/warnings", get(warnings))
        .route("/api/history", get(crate::history::history))
        .route("/api/events", get(crate::events::stream))
        .fallback(|| async {
            ApiError::not_found("no such endpoint: the crate's README lists them")
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this endpoint does not take that method: reads are GET, changes POST, removal DELETE (the crate's README lists them)",
            )
        })
        .layer(axum::middleware::from_fn(uri_length))
        .with_state(state)
}

/// The longest request target served; longer ones get a JSON 414.
const MAX_URI: usize = 8 * 1024;

async fn uri_length(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let len = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    if len > MAX_URI {
        return ApiError::new(
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
            format!("the request target is {len} bytes, over {MAX_URI}: name fewer pools, or use a selector (a glob, tag:NAME, re:PATTERN)"),
        )
        .into_response();
    }
    next.run(req).await
}

/// The most connections a resize may ask for: more than any server takes.
const MAX_RESIZE: usize = 100_000;

/// A request that carried the right bearer token.
pub(crate) struct Authorized;

impl FromRequestParts<Arc<State>> for Authorized {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<State>) -> Result<Self, ApiError> {
        // The scheme's name is case-insensitive (RFC 7235, RFC 6750).
        let given = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token);
        match given {
            None => Err(ApiError::unauthorized()),
            Some(t) if state.token.matches(t.trim()) => Ok(Authorized),
            Some(_) => Err(ApiError::forbidden()),
        }
    }
}

/// Query parameters; a malformed query string is a JSON 400 like any
/// other bad value.
type Params = Result<Query<HashMap<String, String>>, QueryRejection>;

fn params(p: Params) -> Result<HashMap<String, String>, ApiError> {
    p.map(|Query(q)| q)
        .map_err(|e| ApiError::bad_value(format!("malformed query string: {e}")))
}

/// A selector from a path segment: `tag:primary`, `re:^eu_`, a glob
/// (`eu_*`), `*` for every pool, or an exact name.
pub(crate) fn selector(text: &str) -> Result<Selector, ApiError> {
    let bad = |why: String| ApiError::new(StatusCode::BAD_REQUEST, "bad_selector", why);
    let sel = if let Some(tag) = text.strip_prefix("tag:") {
        Selector::tag(tag)
    } else if let Some(re) = text.strip_prefix("re:") {
        Selector::regex(re).map_err(|e| bad(e.to_string()))?
    } else {
        let sel = Selector::from(text);
        if let Selector::Glob(g) = &sel {
            // A `[` that no `]` closes would be taken for itself, and no
            // pool name holds one: it is a mistake, not a pattern.
            let open = g.rfind('[');
            if open.is_some_and(|i| !g[i + 1..].contains(']')) {
                return Err(bad(format!(
                    "`{text}` opens a set with `[` that no `]` closes: write eu_[12] for eu_1 and eu_2"
                )));
            }
        }
        sel
    };
    if sel.is_empty() {
        return Err(bad(format!(
            "`{text}` selects nothing: give a name, a glob (eu_*), tag:NAME or re:PATTERN"
        )));
    }
    Ok(sel)
}

/// A duration from a query, written as everywhere else: `500ms`, `30s`,
/// `5m`, `1h`; a bare number has no unit and is refused.
fn duration(key: &str, text: &str) -> Result<Duration, ApiError> {
    aquifer::parse_duration(text).map_err(|e| ApiError::bad_value(format!("`{key}`: {e}")))
}

fn flag(key: &str, text: &str) -> Result<bool, ApiError> {
    match text {
        "true" | "1" | "yes" | "" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(ApiError::bad_value(format!(
            "`{key}={text}` is not a flag: give true or false"
        ))),
    }
}

/// The sources a request addresses: every one, or the one `?cluster=` names.
fn sources<'a>(state: &'a State, q: &HashMap<String, String>) -> Result<Vec<&'a Served>, ApiError> {
    let Some(want) = q.get("cluster") else {
        return Ok(state.sources.iter().collect());
    };
    let found: Vec<_> = state.sources.iter().filter(|(n, _)| n == want).collect();
    if found.is_empty() {
        return Err(ApiError::not_found(format!(
            "no cluster or pool is served as `{want}`: GET /api/clusters lists them"
        )));
    }
    Ok(found)
}

/// Gathers what each addressed source did. A source with no match is
/// skipped; one that cannot do it is skipped too unless the selector names
/// one pool exactly. Nothing matched: 404.
fn gather<T>(sel: &Selector, results: Vec<Result<T, ControlError>>) -> Result<Vec<T>, ApiError> {
    let mut out = Vec::new();
    for r in results {
        match r {
            Ok(v) => out.push(v),
            Err(ControlError::NoMatch(_)) => {}
            Err(ControlError::Unsupported(_)) if !sel.is_exact() => {}
            Err(e) => return Err(e.into()),
        }
    }
    if out.is_empty() {
        return Err(ControlError::NoMatch(sel.to_string()).into());
    }
    Ok(out)
}

async fn healthz() -> Json<Value> {
    Json(json!({ "status": "up" }))
}

/// Ready when every cluster has a pool that answers, and every pool served
/// on its own answers; `?cluster=` narrows it to one.
async fn readyz(With(state): Shared, q: Params) -> Result<Response, ApiError> {
    let q = params(q)?;
    let served = sources(&state, &q)?;
    let checks = served
        .iter()
        .map(|(name, s)| s.check(name, state.check_timeout));
    let per_source = futures_util::future::join_all(checks).await;
    let mut clusters = Vec::new();
    let mut not_ready = Vec::new();
    for ((name, s), pools) in served.iter().zip(&per_source) {
        let ready = pools.iter().any(Readiness::is_ready);
        let kind = if s.cluster_info().is_some() {
            "cluster"
        } else {
            "pool"
        };
        let reason = (!ready).then(|| {
            if pools.is_empty() {
                "it has no pools".to_owned()
            } else if kind == "cluster" {
                "none of its pools answers".to_owned()
            } else {
                pools[0].reason.clone().unwrap_or_default()
            }
        });
        if !ready {
            not_ready.extend(pools.iter().filter(|p| !p.is_ready()).map(|p| {
                json!({ "cluster": name, "pool": p.pool, "state": p.state, "reason": p.reason })
            }));
        }
        clusters.push(json!({ "name": name, "kind": kind, "ready": ready, "reason": reason }));
    }
    let ready = clusters.iter().all(|c| c["ready"] == true);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let pools: Vec<&Readiness> = per_source.iter().flatten().collect();
    let body =
        json!({ "ready": ready, "clusters": clusters, "not_ready": not_ready, "pools": pools });
    Ok((status, Json(body)).into_response())
}

async fn clusters(With(state): Shared) -> Json<Value> {
    let all: Vec<Value> = state
        .sources
        .iter()
        .map(|(name, s)| {
            let info = s.cluster_info();
            json!({
                "name": name,
                "kind": if info.is_some() { "cluster" } else { "pool" },
                "mode": info.as_ref().map(|i| i.mode),
                "info": info,
            })
        })
        .collect();
    Json(Value::Array(all))
}

async fn pools(With(state): Shared, q: Params) -> Result<Json<Vec<PoolReport>>, ApiError> {
    let q = params(q)?;
    Ok(Json(
        sources(&state, &q)?
            .into_iter()
            .flat_map(|(n, s)| s.pools(n))
            .collect(),
    ))
}

async fn pool(
    With(state): Shared,
    Path(name): Path<String>,
    q: Params,
) -> Result<Response, ApiError> {
    let q = params(q)?;
    let sel = selector(&name)?;
    let found: Vec<PoolReport> = sources(&state, &q)?
        .into_iter()
        .flat_map(|(n, s)| s.pools(n))
        .filter(|p| sel.matches(&p.name, &p.tags))
        .collect();
    if found.is_empty() {
        return Err(ControlError::NoMatch(sel.to_string()).into());
    }
    Ok(match (sel.is_exact(), found.len()) {
        (true, 1) => Json(found.into_iter().next()).into_response(),
        _ => Json(found).into_response(),
    })
}

#[derive(Serialize)]
struct Done {
    action: &'static str,
    pools: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    closed: Option<usize>,
}

async fn act(
    _: Authorized,
    With(state): Shared,
    Path((name, action)): Path<(String, String)>,
    q: Params,
) -> Result<Json<Done>, ApiError> {
    let q = params(q)?;
    let sel = selector(&name)?;
    let (action, control) = match action.as_str() {
        "freeze" => ("freeze", Control::Freeze),
        "unfreeze" => ("unfreeze", Control::Unfreeze),
        "unban" => ("unban", Control::Unban),
        "ban" => {
            let for_ = q.get("for").map(|t| duration("for", t)).transpose()?;
            ("ban", Control::Ban(for_))
        }
        "resize" => {
            let max = q
                .get("max")
                .ok_or_else(|| ApiError::bad_value("resize needs ?max=N"))?;
            let max = max
                .parse::<usize>()
                .ok()
                .filter(|&m| m <= MAX_RESIZE)
                .ok_or_else(|| {
                    ApiError::bad_value(format!(
                        "`max={max}` is not a number of connections from 1 to {MAX_RESIZE}"
                    ))
                })?;
            ("resize", Control::Resize(max))
        }
        "clear" => {
            let mut results = Vec::new();
            for (_, s) in sources(&state, &q)? {
                results.push(s.clear(&sel).await);
            }
            let closed = gather(&sel, results)?;
            let done = Done {
                action: "clear",
                closed: Some(closed.iter().map(|(_, n)| n).sum()),
                pools: closed.into_iter().flat_map(|(names, _)| names).collect(),
            };
            announce(&state, &done);
            return Ok(Json(done));
        }
        other => {
            return Err(ApiError::not_found(format!(
                "no action `{other}`: use freeze, unfreeze, ban, unban, resize or clear"
            )))
        }
    };
    let results = sources(&state, &q)?
        .into_iter()
        .map(|(_, s)| s.control(&sel, control))
        .collect();
    let names = gather(&sel, results)?;
    let done = Done {
        action,
        pools: names.into_iter().flatten().collect(),
        closed: None,
    };
    announce(&state, &done);
    Ok(Json(done))
}

async fn remove(
    _: Authorized,
    With(state): Shared,
    Path(name): Path<String>,
    q: Params,
) -> Result<Json<Done>, ApiError> {
    let q = params(q)?;
    let sel = selector(&name)?;
    let wait = match q.get("wait") {
        Some(t) => duration("wait", t)?,
        None => state.remove_wait,
    };
    let mut results = Vec::new();
    for (_, s) in sources(&state, &q)? {
        results.push(s.remove(&sel, wait).await);
    }
    let names = gather(&sel, results)?;
    let done = Done {
        action: "remove",
        pools: names.into_iter().flatten().collect(),
        closed: None,
    };
    announce(&state, &done);
    Ok(Json(done))
}

async fn pending(With(state): Shared, q: Params) -> Result<Json<Vec<PendingReport>>, ApiError> {
    let q = params(q)?;
    Ok(Json(
        sources(&state, &q)?
            .into_iter()
            .flat_map(|(n, s)| {
                s.pending().into_iter().map(|(pool, info)| PendingReport {
                    cluster: n.clone(),
                    pool,
                    info,
                })
            })
            .collect(),
    ))
}

async fn close_pending(
    _: Authorized,
    With(state): Shared,
    q: Params,
) -> Result<Json<Value>, ApiError> {
    let q = params(q)?;
    let force = q
        .get("force")
        .map(|t| flag("force", t))
        .transpose()?
        .unwrap_or(false);
    let mut left = 0;
    for (_, s) in sources(&state, &q)? {
        left += s.close_pending(force).await;
    }
    let _ = state
        .actions
        .send(json!({ "action": "close_pending", "force": force, "left": left }));
    Ok(Json(json!({ "force": force, "left": left })))
}

#[derive(Serialize)]
struct ClusterWarning {
    cluster: String,
    #[serde(flatten)]
    warning: Warning,
}

async fn warnings(With(state): Shared, q: Params) -> Result<Json<Vec<Value>>, ApiError> {
    let q = params(q)?;
    let mut all: Vec<ClusterWarning> = sources(&state, &q)?
        .into_iter()
        .flat_map(|(n, s)| {
            s.warnings().into_iter().map(|warning| ClusterWarning {
                cluster: n.clone(),
                warning,
            })
        })
        .collect();
    all.sort_by_key(|w| w.warning.at);
    Ok(Json(
        all.iter()
            .filter_map(|w| serde_json::to_value(w).ok())
            .collect(),
    ))
}

/// Tells event-stream listeners about a change made through the API.
fn announce(state: &State, done: &Done) {
    tracing::info!(target: "aquifer::admin", action = done.action, pools = ?done.pools, "operator change");
    if let Ok(v) = serde_json::to_value(done) {
        let _ = state.actions.send(v);
    }
}
