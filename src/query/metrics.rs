//! `GET /metrics`: Prometheus text for the collector's health and the agent behaviour in the store.

use crate::metrics::{label, Samples};
use crate::store::stats::{DURATION_BUCKETS, LABEL_CAP, TOOL_DURATION};
use crate::AppState;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::collections::BTreeMap;

pub fn router() -> Router<AppState> {
    Router::new().route("/metrics", get(metrics))
}

type StoreRows = (
    Vec<(String, String, f64)>,
    Vec<(Option<String>, String, i64)>,
);

async fn metrics(State(app): State<AppState>) -> Result<Response, super::ApiError> {
    let mut samples = Samples::default();
    app.writer.metrics().collect(&mut samples);
    samples.push(
        "aotel_ingest_queue_requests",
        "",
        app.writer.queue_depth() as f64,
    );
    samples.push(
        "aotel_ingest_queue_bytes",
        "",
        app.writer.queue_bytes() as f64,
    );
    let db = app.config.db.clone();
    let bytes: u64 = ["", "-wal"]
        .iter()
        .filter_map(|suffix| {
            let mut p = db.clone().into_os_string();
            p.push(suffix);
            std::fs::metadata(p).ok()
        })
        .map(|m| m.len())
        .sum();
    samples.push("aotel_database_bytes", "", bytes as f64);
    samples.push("aotel_websocket_clients", "", app.live.clients() as f64);
    app.forward
        .collect_metrics(&app.reader, &mut samples)
        .await?;

    let (stats, sessions): StoreRows = app
        .reader
        .with(|c| {
            let stats = c
                .prepare_cached("SELECT metric, labels, value FROM stats ORDER BY metric, labels")?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let sessions = c
                .prepare_cached(
                    "SELECT agent, status, COUNT(*) FROM sessions GROUP BY agent, status",
                )?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok((stats, sessions))
        })
        .await?;
    let mut histograms: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
    for (metric, labels, v) in stats {
        if metric != TOOL_DURATION {
            samples.push(&metric, &labels, v);
            continue;
        }
        // Rows are `tool="X",le="0.5"` (cumulative) and `tool="X",sum`.
        let (series, part) = match labels.rsplit_once(',') {
            Some((series, part)) => (series.to_string(), part.to_string()),
            None => continue,
        };
        histograms.entry(series).or_default().insert(part, v);
    }
    for (series, parts) in histograms {
        let name = TOOL_DURATION;
        for le in DURATION_BUCKETS {
            let n = parts.get(&format!("le=\"{le}\"")).copied().unwrap_or(0.0);
            samples.push_raw(name, format!("{name}_bucket{{{series},le=\"{le}\"}} {n}"));
        }
        let count = parts.get("le=\"+Inf\"").copied().unwrap_or(0.0);
        samples.push_raw(
            name,
            format!("{name}_bucket{{{series},le=\"+Inf\"}} {count}"),
        );
        let sum = parts.get("sum").copied().unwrap_or(0.0);
        samples.push_raw(name, format!("{name}_sum{{{series}}} {sum}"));
        samples.push_raw(name, format!("{name}_count{{{series}}} {count}"));
    }
    for ((agent, status), n) in cap_agents(sessions) {
        samples.push(
            "aotel_sessions",
            &format!("{},{}", label("agent", &agent), label("status", &status)),
            n as f64,
        );
    }
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        samples.render(),
    )
        .into_response())
}

/// Keeps the agents with the most sessions as labels and folds the rest into `other`.
fn cap_agents(rows: Vec<(Option<String>, String, i64)>) -> BTreeMap<(String, String), i64> {
    let mut per_agent: BTreeMap<String, i64> = BTreeMap::new();
    for (agent, _, n) in &rows {
        *per_agent
            .entry(agent.clone().unwrap_or_else(|| "unknown".into()))
            .or_default() += n;
    }
    let mut ranked: Vec<(String, i64)> = per_agent.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let kept: std::collections::HashSet<String> =
        ranked.into_iter().take(LABEL_CAP).map(|(a, _)| a).collect();
    let mut out = BTreeMap::new();
    for (agent, status, n) in rows {
        let agent = agent.unwrap_or_else(|| "unknown".into());
        let agent = if kept.contains(&agent) {
            agent
        } else {
            "other".into()
        };
        *out.entry((agent, status)).or_default() += n;
    }
    out
}
