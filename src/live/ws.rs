//! `GET /ws`: one task per client. It sends `hello`, a snapshot read from the store, then the deltas of
//! its topic as commits happen; a client that falls behind its queue gets `missed` and a fresh snapshot,
//! and one whose socket stops accepting data is disconnected (the README states the policy).

use super::hub::{until_closed, DeltaFrame, Frame, Watermark};
use super::protocol::{message, parse_client, ClientMsg, Subscribe, SubscribeParams, Topic};
use crate::model::facts::log_facts;
use crate::query::views::{span_tree, SpanView};
use crate::query::ApiError;
use crate::store::{LogSummary, SessionFilter, SpanSummary, StoreError};
use crate::AppState;
use axum::extract::rejection::QueryRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::collections::VecDeque;
use std::time::{Duration, Instant};
use tokio::sync::broadcast::error::RecvError;

/// Resyncs allowed within `RESYNC_WINDOW` before a client is judged too slow to follow and dropped.
const MAX_RESYNCS: usize = 5;
const RESYNC_WINDOW: Duration = Duration::from_secs(60);
/// Largest message a client may send; subscriptions are small.
const MAX_CLIENT_MESSAGE: usize = 64 << 10;
const SNAPSHOT_FACETS: i64 = 500;

/// Close codes (RFC 6455): the server is going away / the client broke the policy (too slow).
const CLOSE_GOING_AWAY: u16 = 1001;
const CLOSE_POLICY: u16 = 1008;

pub async fn handler(
    ws: WebSocketUpgrade,
    State(app): State<AppState>,
    params: Result<Query<SubscribeParams>, QueryRejection>,
) -> Response {
    let sub = match params
        .map_err(|e| e.body_text())
        .and_then(|Query(p)| p.parse())
    {
        Ok(sub) => sub,
        Err(e) => return ApiError::bad_request(e).into_response(),
    };
    ws.max_message_size(MAX_CLIENT_MESSAGE)
        .max_frame_size(MAX_CLIENT_MESSAGE)
        .on_upgrade(move |socket| async move {
            let mut client = Client {
                socket,
                app,
                resyncs: VecDeque::new(),
                shown: None,
            };
            let end = client.serve(sub).await;
            client.finish(end).await;
        })
}

/// Why a connection ended.
#[derive(Debug)]
enum End {
    /// The client closed or the connection broke.
    Gone,
    /// The socket accepted nothing for the send timeout, or the client needed too many resyncs.
    TooSlow(String),
    /// aotel is shutting down.
    Shutdown,
    /// The store could not answer a snapshot.
    Store(String),
}

struct Client {
    socket: WebSocket,
    app: AppState,
    resyncs: VecDeque<Instant>,
    /// For filtered session lists: the sessions this client holds, so it can be told when one stops
    /// matching.
    shown: Option<HashSet<String>>,
}

/// A span and the spans under it, without attributes (the page loads those per span on demand).
#[derive(Serialize)]
struct Node {
    #[serde(flatten)]
    span: SpanSummary,
    children: Vec<Node>,
}

fn node(v: SpanView) -> Node {
    Node {
        span: v.summary,
        children: v.children.into_iter().map(node).collect(),
    }
}

impl Client {
    async fn send(&mut self, text: Utf8Bytes) -> Result<(), End> {
        let timeout = self.app.live.send_timeout();
        match tokio::time::timeout(timeout, self.socket.send(Message::Text(text))).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(End::Gone),
            Err(_) => Err(End::TooSlow(format!(
                "the client accepted no data for {:.1} s",
                timeout.as_secs_f64()
            ))),
        }
    }

    async fn send_json(&mut self, kind: &str, body: Value) -> Result<(), End> {
        self.send(message(kind, body).into()).await
    }

    async fn serve(&mut self, mut sub: Subscribe) -> End {
        match self.follow(&mut sub).await {
            Ok(never) => match never {},
            Err(end) => end,
        }
    }

    async fn follow(&mut self, sub: &mut Subscribe) -> Result<std::convert::Infallible, End> {
        let opts = self.app.live.options().clone();
        self.send_json(
            "hello",
            json!({
                "server": "aotel",
                "version": env!("CARGO_PKG_VERSION"),
                "links": { "jaeger": opts.jaeger_url, "grafana": opts.grafana_url },
                "queue": opts.client_queue,
                "send_timeout_ms": opts.send_timeout.as_millis() as u64,
            }),
        )
        .await?;
        let mut closed = self.app.live.closed();
        'subscribe: loop {
            // Join first, read the snapshot second: a commit is then either in the snapshot, or arrives
            // as a delta (or both, and the watermark drops the copy).
            let mut rx = self.app.live.subscribe(&sub.topic);
            let mut mark = self.snapshot(sub).await?;
            loop {
                tokio::select! {
                    _ = until_closed(&mut closed) => return Err(End::Shutdown),
                    frame = rx.recv() => match frame {
                        Ok(Frame::Resync { missed }) | Err(RecvError::Lagged(missed)) => {
                            self.note_resync()?;
                            self.send_json("missed", json!({ "missed": missed })).await?;
                            mark = self.snapshot(sub).await?;
                        }
                        Ok(Frame::Delta(frame)) => {
                            if !frame.upto.covered_by(mark) {
                                self.deliver(&frame).await?;
                            }
                        }
                        Ok(Frame::Refresh(upto)) => {
                            if !upto.covered_by(mark) {
                                mark = self.snapshot(sub).await?;
                            }
                        }
                        Ok(Frame::Reload) => mark = self.snapshot(sub).await?,
                        Err(RecvError::Closed) => return Err(End::Shutdown),
                    },
                    incoming = self.socket.recv() => match incoming {
                        None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return Err(End::Gone),
                        Some(Ok(Message::Text(text))) => match parse_client(&text) {
                            Ok(ClientMsg::Subscribe(next)) => {
                                *sub = next;
                                continue 'subscribe;
                            }
                            Ok(ClientMsg::Ping(id)) => self.send_json("pong", json!({ "id": id })).await?,
                            Err(e) => self.send_json("error", json!({ "message": e })).await?,
                        },
                        Some(Ok(Message::Binary(_))) => {
                            self.send_json("error", json!({ "message": "binary messages are not understood; send JSON text" }))
                                .await?
                        }
                        Some(Ok(_)) => {}
                    },
                }
            }
        }
    }

    /// Sends a topic's delta, then tells this client about sessions it was shown that stopped matching.
    async fn deliver(&mut self, frame: &DeltaFrame) -> Result<(), End> {
        if let Some(text) = &frame.text {
            self.send(text.clone()).await?;
        }
        let Some(shown) = self.shown.as_mut() else {
            return Ok(());
        };
        shown.extend(frame.matched.iter().cloned());
        let removed: Vec<&String> = frame
            .unmatched
            .iter()
            .filter(|k| shown.remove(k.as_str()))
            .collect();
        if removed.is_empty() {
            return Ok(());
        }
        let body = json!({ "sessions": [], "removed": removed, "spans": [], "logs": [] });
        self.send_json("delta", body).await
    }

    fn note_resync(&mut self) -> Result<(), End> {
        let now = Instant::now();
        while self
            .resyncs
            .front()
            .is_some_and(|t| now.duration_since(*t) > RESYNC_WINDOW)
        {
            self.resyncs.pop_front();
        }
        self.resyncs.push_back(now);
        if self.resyncs.len() > MAX_RESYNCS {
            return Err(End::TooSlow(format!(
                "the client fell behind {} times within {} s",
                self.resyncs.len(),
                RESYNC_WINDOW.as_secs()
            )));
        }
        Ok(())
    }

    /// Reads and sends the snapshot for `sub`; returns how far the store had got before reading it.
    async fn snapshot(&mut self, sub: &Subscribe) -> Result<Watermark, End> {
        let store = |e: StoreError| End::Store(e.to_string());
        let reader = self.app.reader.clone();
        let mark = reader.with(|c| Ok(watermark(c)?)).await.map_err(store)?;
        let body = match &sub.topic {
            Topic::Sessions { filter, .. } => {
                let (rows, total) = reader
                    .sessions(SessionFilter {
                        service: filter.service.clone(),
                        agent: filter.agent.clone(),
                        status: filter.status.clone(),
                        q: filter.q.clone(),
                        limit: Some(sub.limit as i64),
                        ..SessionFilter::default()
                    })
                    .await
                    .map_err(store)?;
                let (services, agents) = reader.with(|c| Ok(facets(c)?)).await.map_err(store)?;
                self.shown =
                    (!filter.is_empty()).then(|| rows.iter().map(|r| r.key.clone()).collect());
                json!({
                    "subscription": sub.topic.describe(),
                    "sessions": rows,
                    "total": total,
                    "services": services,
                    "agents": agents,
                })
            }
            Topic::Session(key) => {
                self.shown = None;
                let row = reader.session(key.clone()).await.map_err(store)?;
                let spans = reader.session_spans(key.clone()).await.map_err(store)?;
                let logs = reader.session_logs(key.clone()).await.map_err(store)?;
                let mut traces: Vec<String> = spans
                    .iter()
                    .map(|s| crate::model::ids::to_hex(&s.span.trace_id))
                    .collect();
                traces.sort();
                traces.dedup();
                let logs: Vec<LogSummary> = logs
                    .iter()
                    .map(|l| {
                        LogSummary::new(
                            l.seq,
                            &l.log,
                            &log_facts(&l.log, &l.resource.0.attributes),
                            &l.service,
                        )
                    })
                    .collect();
                let tree: Vec<Node> = span_tree(&spans).into_iter().map(node).collect();
                json!({
                    "subscription": sub.topic.describe(),
                    "session": row,
                    "traces": traces,
                    "spans": tree,
                    "logs": logs,
                })
            }
        };
        self.send_json("snapshot", body).await?;
        Ok(mark)
    }

    async fn finish(mut self, end: End) {
        let close = |code: u16, reason: &str| {
            Message::Close(Some(CloseFrame {
                code,
                reason: reason.into(),
            }))
        };
        let goodbye = match &end {
            End::Gone => return,
            End::TooSlow(why) => {
                tracing::info!(reason = %why, "disconnected a slow WebSocket client");
                close(CLOSE_POLICY, "too slow")
            }
            End::Shutdown => close(CLOSE_GOING_AWAY, "server shutting down"),
            End::Store(e) => {
                tracing::warn!(error = %e, "live snapshot failed; closing the WebSocket");
                let _ = self
                    .send_json(
                        "error",
                        json!({ "message": format!("the store could not answer: {e}") }),
                    )
                    .await;
                close(CLOSE_GOING_AWAY, "store unavailable")
            }
        };
        // Best effort: a client that stopped reading will not take even this.
        let _ = tokio::time::timeout(Duration::from_millis(250), self.socket.send(goodbye)).await;
    }
}

fn watermark(c: &rusqlite::Connection) -> rusqlite::Result<Watermark> {
    let mut mark = Watermark::default();
    let mut stmt =
        c.prepare_cached("SELECT key, value FROM meta WHERE key IN ('span_seq', 'log_seq')")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
    for row in rows {
        match row? {
            (k, v) if k == "span_seq" => mark.spans = v,
            (_, v) => mark.logs = v,
        }
    }
    Ok(mark)
}

/// The services and agents the page offers as filters.
fn facets(c: &rusqlite::Connection) -> rusqlite::Result<(Vec<String>, Vec<String>)> {
    let list = |sql: &str| -> rusqlite::Result<Vec<String>> {
        c.prepare_cached(sql)?
            .query_map([SNAPSHOT_FACETS], |r| r.get(0))?
            .collect()
    };
    Ok((
        list("SELECT DISTINCT service FROM sessions ORDER BY 1 LIMIT ?1")?,
        list("SELECT DISTINCT agent FROM sessions WHERE agent IS NOT NULL ORDER BY 1 LIMIT ?1")?,
    ))
}
