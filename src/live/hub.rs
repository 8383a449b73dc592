//! The live hub: listens to the writer's commits and turns each one into one ready-to-send message per
//! topic, so a thousand clients watching the same thing cost one filter and one serialisation. It never
//! makes ingest wait: the writer's broadcast and every topic's broadcast overwrite instead of blocking.

use super::protocol::{Delta, Topic, VERSION};
use super::LiveOptions;
use crate::store::{Committed, LogSummary, SessionRow, SpanSummary, Writer};
use axum::extract::ws::Utf8Bytes;
use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::broadcast::{self, error::RecvError, error::TryRecvError};
use tokio::sync::{watch, Notify};

/// What a topic's subscribers receive.
#[derive(Debug, Clone)]
pub enum Frame {
    Delta(Arc<DeltaFrame>),
    /// The commits up to this watermark could not be turned into an update for this topic (they were
    /// stored without span summaries, see `Committed::complete`): a client whose snapshot predates them
    /// re-reads the store.
    Refresh(Watermark),
    /// The hub itself fell behind the writer and lost `missed` commits: resnapshot.
    Resync {
        missed: u64,
    },
    /// The store changed in a way no delta describes (see `Committed::reread`): every client re-reads it.
    Reload,
}

/// One commit as far as one topic cares, serialised once for everyone on the topic.
#[derive(Debug)]
pub struct DeltaFrame {
    /// The `delta` message; None when only `unmatched` has news.
    pub text: Option<Utf8Bytes>,
    /// How far the store had got with these commits, so a client can skip what its snapshot showed.
    pub upto: Watermark,
    /// For filtered topics: keys of sessions in `text`, and of touched sessions that do not match. Each
    /// client turns the latter into `removed` for the sessions it was shown (a per-client, rare step).
    pub matched: Vec<String>,
    pub unmatched: Vec<String>,
}

/// How far the store had got (highest span and log sequence numbers).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Watermark {
    pub spans: i64,
    pub logs: i64,
}

impl Watermark {
    /// Whether a snapshot read at `mark` already contains everything up to `self`.
    pub fn covered_by(self, mark: Watermark) -> bool {
        self.spans <= mark.spans && self.logs <= mark.logs
    }
}

/// Most commits merged into one update.
const MAX_MERGE: usize = 1024;
/// However many clients watch, an update waits at most this long for the next one to join it.
const MAX_INTERVAL: Duration = Duration::from_millis(250);

#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

struct Inner {
    writer: Writer,
    opts: LiveOptions,
    state: Mutex<State>,
    wake: Notify,
    closed: watch::Sender<bool>,
}

#[derive(Default)]
struct State {
    topics: HashMap<Topic, broadcast::Sender<Frame>>,
    /// A fresh subscription to the writer, handed to the hub task when it starts listening.
    upstream: Option<broadcast::Receiver<Arc<Committed>>>,
    /// Whether the hub holds a writer subscription. While nobody watches it holds none, so the writer
    /// does not even build the change lists.
    listening: bool,
}

impl Hub {
    /// Starts the hub task on the current runtime.
    pub fn start(writer: Writer, opts: &LiveOptions) -> Hub {
        let (closed, _) = watch::channel(false);
        let hub = Hub {
            inner: Arc::new(Inner {
                writer,
                opts: opts.clone(),
                state: Mutex::new(State::default()),
                wake: Notify::new(),
                closed,
            }),
        };
        tokio::spawn(hub.clone().run());
        hub
    }

    pub fn options(&self) -> &LiveOptions {
        &self.inner.opts
    }

    pub fn send_timeout(&self) -> Duration {
        self.inner.opts.send_timeout
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the map usable; carry on with it.
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Joins `topic`. Everything committed after this call reaches the receiver (or shows up as
    /// `Lagged`), so a snapshot read after it misses nothing.
    pub fn subscribe(&self, topic: &Topic) -> broadcast::Receiver<Frame> {
        let mut state = self.state();
        if !state.listening {
            state.upstream = Some(self.inner.writer.subscribe());
            state.listening = true;
            self.inner.wake.notify_one();
        }
        let queue = self.inner.opts.client_queue.max(1);
        let rx = state
            .topics
            .entry(topic.clone())
            .or_insert_with(|| broadcast::channel(queue).0)
            .subscribe();
        self.want_spans(&state);
        rx
    }

    /// Span summaries cost every export some CPU: ask the writer for them only while a topic shows
    /// spans. Commits prepared before the switch arrive incomplete and become `Refresh` frames.
    fn want_spans(&self, state: &State) {
        let wanted = state.topics.keys().any(Topic::shows_spans);
        self.inner.writer.want_live_spans(wanted);
    }

    /// The least time between two updates: enough that all clients together get at most `fanout_rate`
    /// messages per second.
    fn interval(&self) -> Duration {
        let rate = self.inner.opts.fanout_rate.max(1) as f64;
        Duration::from_secs_f64(self.clients() as f64 / rate).min(MAX_INTERVAL)
    }

    /// Clients connected, counted per topic subscription.
    pub fn clients(&self) -> usize {
        self.state()
            .topics
            .values()
            .map(|t| t.receiver_count())
            .sum()
    }

    /// Tells every client the server is going away and stops the hub.
    pub fn close(&self) {
        let _ = self.inner.closed.send(true);
    }

    pub fn closed(&self) -> watch::Receiver<bool> {
        self.inner.closed.subscribe()
    }

    async fn run(self) {
        let mut closed = self.closed();
        loop {
            let upstream = self.state().upstream.take();
            let Some(mut rx) = upstream else {
                tokio::select! {
                    _ = self.inner.wake.notified() => continue,
                    _ = until_closed(&mut closed) => return,
                }
            };
            let mut last_publish: Option<Instant> = None;
            loop {
                let first = tokio::select! {
                    r = rx.recv() => r,
                    _ = until_closed(&mut closed) => return,
                };
                let mut batch = Vec::new();
                let mut lagged = None;
                match first {
                    Ok(commit) => batch.push(commit),
                    Err(RecvError::Lagged(n)) => lagged = Some(n),
                    Err(RecvError::Closed) => return,
                }
                // The first change after a quiet spell goes out at once; under load, commits that arrive
                // within the fan-out interval of the last update are merged into the next one, so the
                // socket writes per second stay bounded however many clients watch.
                if let Some(at) = last_publish.map(|t| t + self.interval()) {
                    if at > Instant::now() {
                        tokio::select! {
                            _ = tokio::time::sleep_until(at.into()) => {}
                            _ = until_closed(&mut closed) => return,
                        }
                    }
                }
                while lagged.is_none() && batch.len() < MAX_MERGE {
                    match rx.try_recv() {
                        Ok(c) => batch.push(c),
                        Err(TryRecvError::Lagged(n)) => lagged = Some(n),
                        Err(_) => break,
                    }
                }
                if !batch.is_empty() {
                    last_publish = Some(Instant::now());
                    if !self.publish(&batch) {
                        break;
                    }
                }
                if let Some(n) = lagged {
                    tracing::warn!(
                        missed = n,
                        "live hub fell behind the writer; clients resync"
                    );
                    if !self.broadcast(Frame::Resync { missed: n }) {
                        break;
                    }
                }
            }
        }
    }

    /// Live topics, forgetting those nobody reads any more. `None` when no topic is left: the hub then
    /// drops its writer subscription.
    fn topics(&self) -> Option<Vec<(Topic, broadcast::Sender<Frame>)>> {
        let mut state = self.state();
        let before = state.topics.len();
        state.topics.retain(|_, tx| tx.receiver_count() > 0);
        if state.topics.len() != before {
            self.want_spans(&state);
        }
        if state.topics.is_empty() {
            state.listening = false;
            state.upstream = None;
            return None;
        }
        Some(
            state
                .topics
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        )
    }

    fn broadcast(&self, frame: Frame) -> bool {
        let Some(topics) = self.topics() else {
            return false;
        };
        for (_, tx) in topics {
            let _ = tx.send(frame.clone());
        }
        true
    }

    /// Sends what `commits` changed to every topic that cares; false when nobody is subscribed any more.
    fn publish(&self, commits: &[Arc<Committed>]) -> bool {
        let Some(topics) = self.topics() else {
            return false;
        };
        if commits.iter().any(|c| c.reread) {
            // The snapshot that follows covers the other commits merged with this one too.
            for (_, tx) in topics {
                let _ = tx.send(Frame::Reload);
            }
            return true;
        }
        let changes = Changes::of(commits);
        for (topic, tx) in topics {
            if topic.shows_spans() && !changes.complete {
                let _ = tx.send(Frame::Refresh(changes.upto));
            } else if let Some(frame) = delta_for(&topic, &changes) {
                let _ = tx.send(Frame::Delta(Arc::new(frame)));
            }
        }
        true
    }
}

/// Several commits seen as one: the latest row of each session, every span and log in order.
struct Changes<'a> {
    sessions: Vec<&'a SessionRow>,
    spans: Vec<&'a SpanSummary>,
    logs: Vec<&'a LogSummary>,
    upto: Watermark,
    complete: bool,
}

impl<'a> Changes<'a> {
    fn of(commits: &'a [Arc<Committed>]) -> Changes<'a> {
        let mut sessions: Vec<&SessionRow> = Vec::new();
        let mut at: HashMap<&str, usize> = HashMap::new();
        for row in commits.iter().flat_map(|c| &c.sessions) {
            match at.entry(row.key.as_str()) {
                Entry::Occupied(e) => sessions[*e.get()] = row,
                Entry::Vacant(e) => {
                    e.insert(sessions.len());
                    sessions.push(row);
                }
            }
        }
        let spans: Vec<&SpanSummary> = commits.iter().flat_map(|c| &c.spans).collect();
        let logs: Vec<&LogSummary> = commits.iter().flat_map(|c| &c.logs).collect();
        Changes {
            upto: Watermark {
                spans: commits.iter().map(|c| c.span_seq).max().unwrap_or(0),
                logs: commits.iter().map(|c| c.log_seq).max().unwrap_or(0),
            },
            complete: commits.iter().all(|c| c.complete),
            sessions,
            spans,
            logs,
        }
    }
}

/// The update for one topic, or None when the commits hold nothing for it.
fn delta_for(topic: &Topic, c: &Changes) -> Option<DeltaFrame> {
    let mut d = Delta {
        v: VERSION,
        kind: "delta",
        sessions: Vec::new(),
        removed: Vec::new(),
        spans: Vec::new(),
        logs: Vec::new(),
    };
    let mut matched = Vec::new();
    let mut unmatched = Vec::new();
    match topic {
        Topic::Sessions { filter, spans } => {
            let mut keys: HashSet<&str> = HashSet::new();
            for row in &c.sessions {
                if filter.matches(row) {
                    d.sessions.push(row);
                    keys.insert(&row.key);
                } else if !filter.is_empty() {
                    unmatched.push(row.key.clone());
                }
            }
            if !filter.is_empty() {
                matched = keys.iter().map(|k| k.to_string()).collect();
            }
            if *spans && !keys.is_empty() {
                d.spans = c
                    .spans
                    .iter()
                    .copied()
                    .filter(|s| keys.contains(s.session.as_str()))
                    .collect();
                d.logs = c
                    .logs
                    .iter()
                    .copied()
                    .filter(|l| l.session.as_deref().is_some_and(|k| keys.contains(k)))
                    .collect();
            }
        }
        Topic::Session(key) => {
            d.sessions = c
                .sessions
                .iter()
                .copied()
                .filter(|r| r.key == *key)
                .collect();
            d.spans = c
                .spans
                .iter()
                .copied()
                .filter(|s| s.session == *key)
                .collect();
            d.logs = c
                .logs
                .iter()
                .copied()
                .filter(|l| l.session.as_ref() == Some(key))
                .collect();
        }
    }
    let empty = d.sessions.is_empty() && d.spans.is_empty() && d.logs.is_empty();
    if empty && unmatched.is_empty() {
        return None;
    }
    let text = if empty {
        None
    } else {
        match serde_json::to_string(&d) {
            Ok(s) => Some(s.into()),
            Err(e) => {
                tracing::error!(error = %e, "could not serialise a live update");
                return None;
            }
        }
    };
    Some(DeltaFrame {
        text,
        upto: c.upto,
        matched,
        unmatched,
    })
}

/// Resolves once the hub is closed (or its sender is gone).
pub async fn until_closed(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|c| *c).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::protocol::SessionsFilter;
    use crate::model::attrs::kv_str;
    use crate::model::{Batch, Span};

    fn batch(n: u8) -> Batch {
        let span = Span {
            trace_id: vec![n; 16],
            span_id: vec![n; 8],
            name: "execute_tool Read".into(),
            start_time_unix_nano: 1,
            end_time_unix_nano: 2,
            attributes: vec![
                kv_str("gen_ai.operation.name", "execute_tool"),
                kv_str("gen_ai.conversation.id", "s"),
            ],
            ..Default::default()
        };
        crate::ingest::spans::span_batch(Default::default(), Default::default(), vec![span])
    }

    #[tokio::test]
    async fn span_summaries_are_built_only_when_wanted_and_their_absence_is_flagged() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store =
            crate::store::open(&dir.path().join("t.db"), &Default::default()).expect("open");
        let mut rx = store.writer.subscribe();

        store.writer.want_live_spans(false);
        store.writer.write(batch(1), 100).await.expect("write");
        let c = rx.recv().await.expect("commit");
        assert!(!c.complete && c.spans.is_empty(), "no summaries asked for");
        assert_eq!(c.sessions.len(), 1, "session rows are always listed");
        assert_eq!((c.span_seq, c.log_seq), (1, 0));

        store.writer.want_live_spans(true);
        store.writer.write(batch(2), 100).await.expect("write");
        let c = rx.recv().await.expect("commit");
        assert!(c.complete);
        assert_eq!(c.spans.len(), 1);
        assert_eq!(c.spans[0].seq, 2);
        store.close().await.expect("close");
    }

    #[tokio::test]
    async fn incomplete_commits_make_span_topics_refresh_and_others_update() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store =
            crate::store::open(&dir.path().join("t.db"), &Default::default()).expect("open");
        let hub = Hub::start(store.writer.clone(), &LiveOptions::default());
        let list = Topic::Sessions {
            filter: SessionsFilter::default(),
            spans: false,
        };
        let mut list_rx = hub.subscribe(&list);
        let one = Topic::Session("s".into());
        let mut one_rx = hub.subscribe(&one);
        let row = crate::store::SessionRow {
            key: "s".into(),
            title: None,
            agent: None,
            service: "svc".into(),
            status: "running".into(),
            first_unix_nano: "1".into(),
            last_unix_nano: "2".into(),
            duration_ms: 0.0,
            traces: 1,
            spans: 1,
            logs: 0,
            runs: 0,
            tool_calls: 1,
            tool_errors: 0,
            usage: Default::default(),
            updated_seq: 7,
        };
        let commit = Arc::new(Committed {
            sessions: vec![row],
            spans: Vec::new(),
            logs: Vec::new(),
            span_seq: 7,
            log_seq: 3,
            complete: false,
            reread: false,
        });
        assert!(hub.publish(&[commit]));
        match list_rx.recv().await.expect("list frame") {
            Frame::Delta(d) => {
                assert!(d
                    .text
                    .as_deref()
                    .is_some_and(|t| t.contains("\"key\":\"s\"")));
                assert_eq!(d.upto, Watermark { spans: 7, logs: 3 });
            }
            other => panic!("the session list needs no spans: {other:?}"),
        }
        match one_rx.recv().await.expect("session frame") {
            Frame::Refresh(upto) => {
                assert_eq!(upto, Watermark { spans: 7, logs: 3 });
                assert!(upto.covered_by(Watermark { spans: 7, logs: 3 }));
                assert!(!upto.covered_by(Watermark { spans: 6, logs: 3 }));
            }
            other => panic!("a span view must re-read what it could not be sent: {other:?}"),
        }
        hub.close();
        store.close().await.expect("close");
    }
}
