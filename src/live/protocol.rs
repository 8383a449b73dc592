//! The `/ws` message schema, version 1: what a client may send, what the server sends, and the
//! subscriptions (topics) that decide which updates a client receives. The README documents it.

use crate::store::{LogSummary, SessionRow, SpanSummary};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The schema version every message carries as `v`.
pub const VERSION: u32 = 1;
/// Sessions in a snapshot when the client does not say.
pub const DEFAULT_LIMIT: usize = 200;
pub const MAX_LIMIT: usize = 1000;
const MAX_TEXT: usize = 1024;

/// Narrows a session list; every field that is set must match (like `GET /api/sessions`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct SessionsFilter {
    pub service: Option<String>,
    pub agent: Option<String>,
    pub status: Option<String>,
    /// Substring of the key, title or agent, ASCII case-insensitive (as SQLite's LIKE).
    pub q: Option<String>,
}

impl SessionsFilter {
    pub fn is_empty(&self) -> bool {
        self.service.is_none() && self.agent.is_none() && self.status.is_none() && self.q.is_none()
    }

    pub fn matches(&self, row: &SessionRow) -> bool {
        if self.service.as_ref().is_some_and(|s| *s != row.service)
            || self
                .agent
                .as_ref()
                .is_some_and(|a| Some(a) != row.agent.as_ref())
            || self.status.as_ref().is_some_and(|s| *s != row.status)
        {
            return false;
        }
        match &self.q {
            None => true,
            Some(q) => {
                let q = q.to_ascii_lowercase();
                let has = |s: &str| s.to_ascii_lowercase().contains(&q);
                has(&row.key)
                    || row.title.as_deref().is_some_and(has)
                    || row.agent.as_deref().is_some_and(has)
            }
        }
    }
}

/// What a client is subscribed to. Clients with equal topics share the work of building each update.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Topic {
    /// Session rows (all of them, or those matching a filter); with `spans`, also the spans and log
    /// records of those sessions.
    Sessions { filter: SessionsFilter, spans: bool },
    /// One session: its row, spans and log records.
    Session(String),
}

impl Topic {
    /// Whether updates for this topic carry spans (and so need the writer's span summaries).
    pub fn shows_spans(&self) -> bool {
        matches!(
            self,
            Topic::Session(_) | Topic::Sessions { spans: true, .. }
        )
    }

    /// The subscription as messages echo it.
    pub fn describe(&self) -> Value {
        match self {
            Topic::Sessions { filter, spans } => json!({
                "scope": if filter.is_empty() { "all" } else { "filter" },
                "service": filter.service,
                "agent": filter.agent,
                "status": filter.status,
                "q": filter.q,
                "spans": spans,
            }),
            Topic::Session(key) => json!({ "scope": "session", "session": key }),
        }
    }
}

/// A subscription request: the topic and how many sessions its first snapshot lists.
#[derive(Debug, Clone, PartialEq)]
pub struct Subscribe {
    pub topic: Topic,
    pub limit: usize,
}

impl Default for Subscribe {
    fn default() -> Self {
        Subscribe {
            topic: Topic::Sessions {
                filter: SessionsFilter::default(),
                spans: false,
            },
            limit: DEFAULT_LIMIT,
        }
    }
}

/// The fields of a `subscribe` message, also accepted as `/ws?...` query parameters.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct SubscribeParams {
    pub scope: Option<String>,
    pub session: Option<String>,
    pub service: Option<String>,
    pub agent: Option<String>,
    pub status: Option<String>,
    pub q: Option<String>,
    pub limit: Option<u64>,
    pub spans: Option<bool>,
}

impl SubscribeParams {
    pub fn parse(self) -> Result<Subscribe, String> {
        let text = |name: &str, v: Option<String>| -> Result<Option<String>, String> {
            match v.filter(|s| !s.is_empty()) {
                Some(s) if s.len() > MAX_TEXT => {
                    Err(format!("{name}: longer than {MAX_TEXT} bytes"))
                }
                other => Ok(other),
            }
        };
        let session = text("session", self.session)?;
        let filter = SessionsFilter {
            service: text("service", self.service)?,
            agent: text("agent", self.agent)?,
            status: text("status", self.status)?,
            q: text("q", self.q)?,
        };
        if let Some(s) = filter.status.as_deref() {
            if !matches!(s, "running" | "finished" | "failed") {
                return Err(format!(
                    "status: expected running, finished or failed, got {s:?}"
                ));
            }
        }
        let limit = match self.limit {
            None => DEFAULT_LIMIT,
            Some(n) if (1..=MAX_LIMIT as u64).contains(&n) => n as usize,
            Some(n) => return Err(format!("limit: expected 1 to {MAX_LIMIT}, got {n}")),
        };
        let scope = self.scope.filter(|s| !s.is_empty()).unwrap_or_else(|| {
            if session.is_some() {
                "session".into()
            } else if filter.is_empty() {
                "all".into()
            } else {
                "filter".into()
            }
        });
        let topic = match scope.as_str() {
            "all" => Topic::Sessions {
                filter: SessionsFilter::default(),
                spans: self.spans.unwrap_or(false),
            },
            "filter" => Topic::Sessions {
                filter,
                spans: self.spans.unwrap_or(false),
            },
            "session" => Topic::Session(session.ok_or("session: required with scope \"session\"")?),
            other => {
                return Err(format!(
                    "scope: expected all, filter or session, got {other:?}"
                ))
            }
        };
        Ok(Subscribe { topic, limit })
    }
}

/// A message from the client.
#[derive(Debug)]
pub enum ClientMsg {
    Subscribe(Subscribe),
    Ping(Value),
}

#[derive(Deserialize)]
struct Envelope {
    v: Option<u32>,
    #[serde(rename = "type")]
    kind: String,
    id: Option<Value>,
    #[serde(flatten)]
    params: SubscribeParams,
}

pub fn parse_client(text: &str) -> Result<ClientMsg, String> {
    let env: Envelope =
        serde_json::from_str(text).map_err(|e| format!("not a valid message: {e}"))?;
    if let Some(v) = env.v.filter(|v| *v != VERSION) {
        return Err(format!(
            "schema version {v} is not supported; this server speaks v{VERSION}"
        ));
    }
    match env.kind.as_str() {
        "subscribe" => Ok(ClientMsg::Subscribe(env.params.parse()?)),
        "ping" => Ok(ClientMsg::Ping(env.id.unwrap_or(Value::Null))),
        other => Err(format!(
            "unknown message type {other:?}: expected subscribe or ping"
        )),
    }
}

/// The `delta` message: what one commit changed, as far as one topic cares.
#[derive(Serialize)]
pub struct Delta<'a> {
    pub v: u32,
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Session rows to insert or replace (key `key`).
    pub sessions: Vec<&'a SessionRow>,
    /// Sessions that no longer match a filter subscription; clients drop them if shown.
    pub removed: Vec<&'a str>,
    /// Spans added or replaced (key `trace_id` + `span_id`).
    pub spans: Vec<&'a SpanSummary>,
    pub logs: Vec<&'a LogSummary>,
}

pub fn message(kind: &str, mut body: Value) -> String {
    if let Value::Object(m) = &mut body {
        m.insert("v".into(), json!(VERSION));
        m.insert("type".into(), json!(kind));
    }
    body.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(key: &str, agent: Option<&str>, status: &str) -> SessionRow {
        SessionRow {
            key: key.into(),
            title: Some("Fix the Parser".into()),
            agent: agent.map(str::to_string),
            service: "svc".into(),
            status: status.into(),
            first_unix_nano: "0".into(),
            last_unix_nano: "0".into(),
            duration_ms: 0.0,
            traces: 1,
            spans: 1,
            logs: 0,
            runs: 0,
            tool_calls: 0,
            tool_errors: 0,
            usage: Default::default(),
            updated_seq: 1,
        }
    }

    #[test]
    fn filters_match_like_the_session_api() {
        let f = SessionsFilter {
            agent: Some("a".into()),
            status: Some("running".into()),
            q: Some("parser".into()),
            ..Default::default()
        };
        assert!(f.matches(&row("k", Some("a"), "running")));
        assert!(!f.matches(&row("k", Some("b"), "running")));
        assert!(!f.matches(&row("k", None, "running")));
        assert!(!f.matches(&row("k", Some("a"), "finished")));
        let by_key = SessionsFilter {
            q: Some("K1".into()),
            ..Default::default()
        };
        assert!(by_key.matches(&row("xk1", None, "failed")));
        assert!(!by_key.matches(&row("xk2", None, "failed")));
    }

    #[test]
    fn subscribe_messages_parse_and_refuse() {
        let m =
            parse_client(r#"{"v":1,"type":"subscribe","scope":"session","session":"s1"}"#).unwrap();
        assert!(
            matches!(m, ClientMsg::Subscribe(Subscribe { topic: Topic::Session(ref s), .. }) if s == "s1")
        );
        let m = parse_client(r#"{"type":"subscribe","status":"failed","limit":5}"#).unwrap();
        match m {
            ClientMsg::Subscribe(s) => {
                assert_eq!(s.limit, 5);
                assert!(
                    matches!(s.topic, Topic::Sessions { ref filter, .. } if filter.status.as_deref() == Some("failed"))
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(parse_client(r#"{"v":2,"type":"subscribe"}"#).is_err());
        assert!(parse_client(r#"{"type":"subscribe","status":"weird"}"#).is_err());
        assert!(parse_client(r#"{"type":"subscribe","scope":"session"}"#).is_err());
        assert!(parse_client(r#"{"type":"subscribe","limit":0}"#).is_err());
        assert!(parse_client(r#"{"type":"dance"}"#).is_err());
        assert!(parse_client("nope").is_err());
    }
}
