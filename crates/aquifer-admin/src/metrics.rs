//! `GET /metrics`: Prometheus' text exposition (OpenMetrics), written by
//! `prometheus-client` from a snapshot of every pool taken at the scrape.

use std::sync::Arc;

use aquifer::{LimitReason, Role, Summary};
use axum::extract::State as With;
use axum::http::header;
use axum::response::IntoResponse;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::source::PoolReport;
use crate::State;

/// OpenMetrics, unless the scraper asks for Prometheus' older text format
/// (`Accept: text/plain` without OpenMetrics).
pub(crate) async fn scrape(
    With(state): With<Arc<State>>,
    headers: axum::http::HeaderMap,
) -> impl IntoResponse {
    let mut registry = Registry::default();
    let reads = state
        .sources
        .iter()
        .filter_map(|(name, s)| Some((name.clone(), s.cluster_info()?.reads?)))
        .collect();
    registry.register_collector(Box::new(Scrape(state.reports(), reads)));
    let mut text = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if accept.contains("text/plain") && !accept.contains("application/openmetrics-text") {
        (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            plain_text(&text),
        )
    } else {
        (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
    }
}

/// OpenMetrics text as Prometheus' 0.0.4 format writes it: a counter's
/// HELP and TYPE name its `_total` samples, and there are no `# UNIT` or
/// `# EOF` lines.
fn plain_text(open_metrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = open_metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(open_metrics.len());
    for line in open_metrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|tag| {
            let rest = line.strip_prefix(tag)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{tag}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

/// Every pool's report, and each replica set's read counts by cluster.
#[derive(Debug)]
struct Scrape(Vec<PoolReport>, Vec<(String, aquifer::ReadStats)>);

fn labels(p: &PoolReport) -> Vec<(&'static str, String)> {
    vec![
        ("cluster", p.cluster.clone()),
        ("pool", p.name.clone()),
        ("tags", p.tags.join(",")),
    ]
}

type Fmt = Result<(), std::fmt::Error>;

fn gauges(
    enc: &mut DescriptorEncoder,
    pools: &[PoolReport],
    name: &str,
    help: &str,
    value: impl Fn(&PoolReport) -> i64,
) -> Fmt {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for p in pools {
        m.encode_family(&labels(p))?.encode_gauge(&value(p))?;
    }
    Ok(())
}

fn counters(
    enc: &mut DescriptorEncoder,
    pools: &[PoolReport],
    name: &str,
    help: &str,
    value: impl Fn(&PoolReport) -> u64,
) -> Fmt {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for p in pools {
        m.encode_family(&labels(p))?
            .encode_counter::<NoLabelSet, _, u64>(&value(p), None)?;
    }
    Ok(())
}

/// One series per pool and value of an extra label.
fn by(
    enc: &mut DescriptorEncoder,
    pools: &[PoolReport],
    (name, help, ty): (&str, &str, MetricType),
    key: &'static str,
    values: impl Fn(&PoolReport) -> Vec<(&'static str, u64)>,
) -> Fmt {
    let mut m = enc.encode_descriptor(name, help, None, ty)?;
    for p in pools {
        for (label, v) in values(p) {
            let mut l = labels(p);
            l.push((key, label.to_owned()));
            let mut f = m.encode_family(&l)?;
            match ty {
                MetricType::Counter => f.encode_counter::<NoLabelSet, _, u64>(&v, None)?,
                _ => f.encode_gauge(&v)?,
            }
        }
    }
    Ok(())
}

fn histograms(
    enc: &mut DescriptorEncoder,
    pools: &[PoolReport],
    name: &str,
    help: &str,
    summary: impl Fn(&PoolReport) -> &Summary,
) -> Fmt {
    let mut m = enc.encode_descriptor(name, help, Some(&Unit::Seconds), MetricType::Histogram)?;
    for p in pools {
        let s = summary(p);
        // The core keeps cumulative counts; the encoder adds them up itself.
        let mut below = 0;
        let mut buckets: Vec<(f64, u64)> = Summary::BOUNDS
            .iter()
            .zip(s.buckets)
            .map(|(&le, cum)| {
                let n = cum - below;
                below = cum;
                (le, n)
            })
            .collect();
        buckets.push((f64::INFINITY, s.count - below));
        m.encode_family(&labels(p))?
            .encode_histogram::<NoLabelSet>(s.total.as_secs_f64(), s.count, &buckets, None)?;
    }
    Ok(())
}

type Value<T> = fn(&PoolReport) -> T;

fn n(v: usize) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

const GAUGES: &[(&str, &str, Value<i64>)] = &[
    ("aquifer_connections_max", "The pool's maximum size.", |p| {
        n(p.status.max)
    }),
    ("aquifer_connections_min", "The pool's minimum size.", |p| {
        n(p.status.min)
    }),
    (
        "aquifer_waiting",
        "Callers waiting for a connection.",
        |p| n(p.status.waiting),
    ),
    (
        "aquifer_frozen",
        "1 when an operator froze the pool.",
        |p| i64::from(p.frozen),
    ),
    ("aquifer_banned", "1 while the pool is banned.", |p| {
        i64::from(p.banned_for.is_some())
    }),
];

/// Which summary of a pool a histogram shows.
type Pick = fn(&PoolReport) -> &Summary;

const HISTOGRAMS: &[(&str, &str, Pick)] = &[
    (
        "aquifer_acquire_wait",
        "Time from asking for a connection to getting it.",
        |p| &p.metrics.wait_time,
    ),
    (
        "aquifer_usage",
        "Time connections were held by callers.",
        |p| &p.metrics.usage_time,
    ),
    ("aquifer_create", "Time taken to open a connection.", |p| {
        &p.metrics.create_time
    }),
];

const COUNTERS: &[(&str, &str, Value<u64>)] = &[
    ("aquifer_gets", "Checkouts asked for.", |p| p.metrics.gets),
    ("aquifer_gets_waited", "Checkouts that had to queue.", |p| {
        p.metrics.gets_waited
    }),
    (
        "aquifer_timeouts",
        "Checkouts that hit the acquire timeout.",
        |p| p.metrics.timeouts,
    ),
    (
        "aquifer_queue_full",
        "Checkouts refused because the wait queue was full.",
        |p| p.metrics.queue_full,
    ),
    ("aquifer_creates", "Connections opened.", |p| {
        p.metrics.creates
    }),
    (
        "aquifer_create_failures",
        "Connection attempts that failed or timed out.",
        |p| p.metrics.create_failures,
    ),
    ("aquifer_destroys", "Connections closed cleanly.", |p| {
        p.metrics.destroys
    }),
    (
        "aquifer_destroy_failures",
        "Closes that failed or timed out.",
        |p| p.metrics.destroy_failures,
    ),
    (
        "aquifer_validation_failures",
        "Health checks that failed.",
        |p| p.metrics.validation_failures,
    ),
    (
        "aquifer_reset_failures",
        "Resets on return that failed.",
        |p| p.metrics.reset_failures,
    ),
    (
        "aquifer_leaks_suspected",
        "Connections held past the leak threshold.",
        |p| p.metrics.leaks_suspected,
    ),
    ("aquifer_bans", "Times the pool was banned.", |p| p.bans),
];

impl prometheus_client::collector::Collector for Scrape {
    fn encode(&self, mut enc: DescriptorEncoder) -> Fmt {
        let p = &self.0[..];
        let e = &mut enc;
        let state = (
            "aquifer_connections",
            "Connections by state: idle, active (checked out), creating, pending (failed to close).",
            MetricType::Gauge,
        );
        by(e, p, state, "state", |p| {
            vec![
                ("idle", p.status.idle as u64),
                ("active", p.status.borrowed as u64),
                ("creating", p.status.creating as u64),
                ("pending", p.status.pending as u64),
            ]
        })?;
        for &(name, help, value) in GAUGES {
            gauges(e, p, name, help, value)?;
        }
        for &(name, help, summary) in HISTOGRAMS {
            histograms(e, p, name, help, summary)?;
        }
        for &(name, help, value) in COUNTERS {
            counters(e, p, name, help, value)?;
        }
        let evictions = (
            "aquifer_evictions",
            "Connections evicted, by reason.",
            MetricType::Counter,
        );
        by(e, p, evictions, "reason", |p| {
            let ev = p.metrics.evictions;
            vec![
                ("idle", ev.idle),
                ("lifetime", ev.lifetime),
                ("broken", ev.broken),
            ]
        })?;
        roles(e, p)?;
        limits(e, p)?;
        reads(e, &self.1)
    }
}

/// For the members of clusters that watch roles: which role each is in,
/// whether writes go there, and counters of role changes and of the
/// read-only or shutdown errors that made the cluster check at once.
fn roles(e: &mut DescriptorEncoder, pools: &[PoolReport]) -> Fmt {
    let members: Vec<PoolReport> = pools.iter().filter(|p| p.role.is_some()).cloned().collect();
    if members.is_empty() {
        return Ok(());
    }
    let p = &members[..];
    let info = |p: &PoolReport| p.role.clone().expect("filtered");
    let role = (
        "aquifer_role",
        "1 for the role the member's server last said it has: primary, standby, read_only or unknown.",
        MetricType::Gauge,
    );
    by(e, p, role, "role", |p| {
        let now = info(p).role;
        [Role::Primary, Role::Standby, Role::ReadOnly, Role::Unknown]
            .into_iter()
            .map(|r| (r.as_str(), u64::from(r == now)))
            .collect()
    })?;
    gauges(
        e,
        p,
        "aquifer_writes_here",
        "1 for the member writes go to.",
        |p| i64::from(info(p).writes_here),
    )?;
    counters(
        e,
        p,
        "aquifer_role_changes",
        "Times the member's role changed.",
        |p| info(p).changes,
    )?;
    counters(
        e,
        p,
        "aquifer_role_signals",
        "Read-only or shutdown errors and pushed role changes that made the cluster check the member at once.",
        |p| info(p).signals,
    )?;
    counters(
        e,
        p,
        "aquifer_read_only_evictions",
        "Connections evicted because a statement failed with a read-only or shutdown error.",
        |p| info(p).read_only_evictions,
    )?;
    let standbys: Vec<PoolReport> = members
        .iter()
        .filter(|p| info(p).role == Role::Standby)
        .cloned()
        .collect();
    let s = &standbys[..];
    gauges(
        e,
        s,
        "aquifer_replica_lag_bytes",
        "How many bytes of write-ahead log the standby is behind its primary (-1: not known).",
        |p| {
            info(p)
                .lag_bytes
                .map_or(-1, |b| i64::try_from(b).unwrap_or(i64::MAX))
        },
    )?;
    let mut m = e.encode_descriptor(
        "aquifer_replica_lag",
        "How far behind its primary the standby is in time (NaN: not known).",
        Some(&Unit::Seconds),
        MetricType::Gauge,
    )?;
    for p in s {
        let secs = info(p).lag.map_or(f64::NAN, |d| d.as_secs_f64());
        m.encode_family(&labels(p))?.encode_gauge(&secs)?;
    }
    gauges(
        e,
        s,
        "aquifer_read_rotation",
        "1 while reads may go to the standby (replicating, within the set's max lag).",
        |p| i64::from(info(p).in_rotation),
    )
}

/// For multiplexers with an adaptive limit: the limit, why it last
/// changed, and how often it changed.
fn limits(e: &mut DescriptorEncoder, pools: &[PoolReport]) -> Fmt {
    let adaptive: Vec<PoolReport> = pools
        .iter()
        .filter(|p| p.multiplexer.as_ref().is_some_and(|m| m.limit.is_some()))
        .cloned()
        .collect();
    if adaptive.is_empty() {
        return Ok(());
    }
    let p = &adaptive[..];
    let limit = |p: &PoolReport| {
        p.multiplexer
            .as_ref()
            .and_then(|m| m.limit.clone())
            .expect("filtered")
    };
    gauges(
        e,
        p,
        "aquifer_mux_connection_limit",
        "Most connections the multiplexer's adaptive limit lets it open now.",
        |p| n(limit(p).limit),
    )?;
    let reason = (
        "aquifer_mux_limit_reason",
        "1 for why the adaptive limit last changed: start, probe, measured, unused or queued.",
        MetricType::Gauge,
    );
    by(e, p, reason, "reason", |p| {
        let now = limit(p).reason;
        [
            LimitReason::Start,
            LimitReason::Probe,
            LimitReason::Measured,
            LimitReason::Unused,
            LimitReason::Queued,
        ]
        .into_iter()
        .map(|r| (r.as_str(), u64::from(r == now)))
        .collect()
    })?;
    counters(
        e,
        p,
        "aquifer_mux_limit_changes",
        "Times the adaptive limit changed.",
        |p| limit(p).changes,
    )
}

/// Each replica set's reads: by replicas, fallbacks to the primary, and
/// the waits for read-your-writes tokens.
fn reads(e: &mut DescriptorEncoder, sets: &[(String, aquifer::ReadStats)]) -> Fmt {
    type Count = fn(&aquifer::ReadStats) -> u64;
    let counts: [(&str, &str, Count); 4] = [
        ("aquifer_replica_reads", "Reads served by a replica.", |r| {
            r.replica_reads
        }),
        (
            "aquifer_read_fallbacks",
            "Reads that went to the primary because no replica could serve.",
            |r| r.fallbacks,
        ),
        (
            "aquifer_token_reads_known",
            "Token reads served by a replica known to have the write, without asking.",
            |r| r.token_known,
        ),
        (
            "aquifer_token_waits",
            "Token reads that waited on a replica for the write.",
            |r| r.token_waits,
        ),
    ];
    for (name, help, value) in counts {
        let mut m = e.encode_descriptor(name, help, None, MetricType::Counter)?;
        for (cluster, r) in sets {
            m.encode_family(&[("cluster", cluster.as_str())])?
                .encode_counter::<NoLabelSet, _, u64>(&value(r), None)?;
        }
    }
    let mut m = e.encode_descriptor(
        "aquifer_token_wait",
        "Time token reads spent waiting on replicas, in all.",
        Some(&Unit::Seconds),
        MetricType::Counter,
    )?;
    for (cluster, r) in sets {
        m.encode_family(&[("cluster", cluster.as_str())])?
            .encode_counter::<NoLabelSet, _, f64>(&r.token_wait_time.as_secs_f64(), None)?;
    }
    Ok(())
}
