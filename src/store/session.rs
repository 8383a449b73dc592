//! Session rows: counters kept up to date as spans and logs are committed, and what a reader sees.

use crate::model::facts::{LogFacts, SpanFacts, Usage, UsageSource, OP_AGENT, OP_TOOL};
use serde::{Deserialize, Serialize};

/// Everything a session sums up. Kept as one JSON column so adding a counter needs no migration.
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Counters {
    pub traces: i64,
    pub spans: i64,
    pub logs: i64,
    pub runs: i64,
    pub open_runs: i64,
    pub roots: i64,
    pub tool_calls: i64,
    pub tool_errors: i64,
    /// Failed `claude_code.tool.execution` spans: errors of calls counted by their `claude_code.tool` parent.
    pub tool_execution_errors: i64,
    pub log_tool_calls: i64,
    pub log_tool_errors: i64,
    pub last_root_end_ns: u64,
    pub last_root_failed: bool,
    /// Indexed by `UsageSource`: model calls, log events, agent totals.
    pub usage: [UsageSums; 3],
}

#[derive(Debug, Default, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct UsageSums {
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cache_read_tokens: i64,
    pub cache_creation_tokens: i64,
    pub cost_usd: f64,
}

impl UsageSums {
    fn add(&mut self, u: &Usage, sign: i64) {
        let mut usage = self.as_usage();
        usage.add(u, sign);
        *self = UsageSums {
            input_tokens: usage.input_tokens,
            output_tokens: usage.output_tokens,
            cache_read_tokens: usage.cache_read_tokens,
            cache_creation_tokens: usage.cache_creation_tokens,
            cost_usd: usage.cost_usd,
        };
    }

    fn as_usage(&self) -> Usage {
        Usage {
            input_tokens: self.input_tokens,
            output_tokens: self.output_tokens,
            cache_read_tokens: self.cache_read_tokens,
            cache_creation_tokens: self.cache_creation_tokens,
            cost_usd: self.cost_usd,
        }
    }
}

impl Counters {
    /// Adds (`sign = 1`) or takes back (`sign = -1`, when a newer copy of the span replaces it) what one
    /// span contributes.
    pub fn apply_span(&mut self, f: &SpanFacts, end_ns: u64, sign: i64) {
        self.spans += sign;
        if f.operation == Some(OP_AGENT) {
            self.runs += sign;
            if f.in_progress {
                self.open_runs += sign;
            }
        }
        if f.operation == Some(OP_TOOL) {
            self.tool_calls += sign;
            if f.is_error {
                self.tool_errors += sign;
            }
        }
        if f.tool_execution_error {
            self.tool_execution_errors += sign;
        }
        if f.is_root && !f.in_progress {
            self.roots += sign;
            if sign > 0 && end_ns >= self.last_root_end_ns {
                self.last_root_end_ns = end_ns;
                self.last_root_failed = f.is_error;
            }
        }
        if let Some(src) = f.usage_source() {
            self.usage[src as usize].add(&f.usage, sign);
        }
    }

    pub fn apply_log(&mut self, f: &LogFacts) {
        self.logs += 1;
        if f.tool_call {
            self.log_tool_calls += 1;
        }
        if f.tool_error {
            self.log_tool_errors += 1;
        }
        self.usage[UsageSource::Log as usize].add(&f.usage, 1);
    }

    /// Tokens from the most detailed source that reported any; cost likewise, chosen on its own since
    /// model-call spans rarely carry cost while agent totals do.
    pub fn usage(&self) -> Usage {
        let tokens = self
            .usage
            .iter()
            .find(|u| u.as_usage().tokens() > 0)
            .copied()
            .unwrap_or_default();
        let cost = self
            .usage
            .iter()
            .map(|u| u.cost_usd)
            .find(|c| *c > 0.0)
            .unwrap_or(0.0);
        Usage {
            cost_usd: cost,
            ..tokens.as_usage()
        }
    }

    /// Tool calls seen as spans, else as Claude Code log events (which describe the same calls). Errors
    /// likewise, except that Claude Code marks a failed call on the `claude_code.tool.execution` child
    /// span or only in its `tool_result` event: the sources describe the same calls, so the largest
    /// count of failures is the one that saw them all.
    pub fn tool_calls(&self) -> (i64, i64) {
        if self.tool_calls > 0 {
            let errors = self
                .tool_errors
                .max(self.tool_execution_errors)
                .max(self.log_tool_errors)
                .min(self.tool_calls);
            (self.tool_calls, errors)
        } else {
            (self.log_tool_calls, self.log_tool_errors)
        }
    }

    /// running while a run is open or no root span has arrived yet (roots end last); then the outcome
    /// of the latest root. A session known only from log events (Claude Code's own telemetry has no
    /// run spans) has no end to wait for: it is running until `idle_ns` pass after its last record
    /// (`last_ns`, by `now_ns`), then finished, and running again if another record comes.
    pub fn status(&self, last_ns: u64, now_ns: u64, idle_ns: u64) -> &'static str {
        if self.spans == 0 && self.logs > 0 {
            if now_ns.saturating_sub(last_ns) >= idle_ns {
                "finished"
            } else {
                "running"
            }
        } else if self.open_runs > 0 || self.roots == 0 {
            "running"
        } else if self.last_root_failed {
            "failed"
        } else {
            "finished"
        }
    }
}

/// Marks finished the running sessions whose status `Counters::status` now gives otherwise: those known
/// only from log events, `idle_ns` after their last record. Returns how many changed.
pub fn finish_idle(
    conn: &mut rusqlite::Connection,
    now_ns: u64,
    idle_ns: u64,
) -> rusqlite::Result<usize> {
    let cutoff = now_ns.saturating_sub(idle_ns).min(i64::MAX as u64) as i64;
    let tx = conn.transaction()?;
    let mut changed = 0;
    {
        // `sessions_running` (a partial index) holds only running sessions, so this reads no others;
        // `Counters::status` alone says which of them idling ends.
        let mut find = tx.prepare_cached(
            "SELECT key, last_ns, counters FROM sessions WHERE status = 'running' AND last_ns <= ?1",
        )?;
        let stale: Vec<(String, i64, String)> = find
            .query_map([cutoff], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let mut update = tx.prepare_cached("UPDATE sessions SET status = ?2 WHERE key = ?1")?;
        for (key, last_ns, counters) in stale {
            let counters: Counters = serde_json::from_str(&counters).unwrap_or_default();
            let status = counters.status(last_ns as u64, now_ns, idle_ns);
            if status != "running" {
                update.execute(rusqlite::params![key, status])?;
                changed += 1;
            }
        }
    }
    tx.commit()?;
    Ok(changed)
}

/// A session as the API, the live view and the metrics see it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SessionRow {
    pub key: String,
    pub title: Option<String>,
    pub agent: Option<String>,
    pub service: String,
    pub status: String,
    pub first_unix_nano: String,
    pub last_unix_nano: String,
    pub duration_ms: f64,
    pub traces: i64,
    pub spans: i64,
    pub logs: i64,
    pub runs: i64,
    pub tool_calls: i64,
    pub tool_errors: i64,
    pub usage: Usage,
    pub updated_seq: i64,
}

impl SessionRow {
    /// `status` as `Counters::status` gave it when the row was written.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        key: String,
        title: Option<String>,
        agent: Option<String>,
        service: String,
        status: String,
        first_ns: u64,
        last_ns: u64,
        updated_seq: i64,
        c: &Counters,
    ) -> SessionRow {
        let (tool_calls, tool_errors) = c.tool_calls();
        SessionRow {
            key,
            title,
            agent,
            service,
            status,
            first_unix_nano: first_ns.to_string(),
            last_unix_nano: last_ns.to_string(),
            duration_ms: last_ns.saturating_sub(first_ns) as f64 / 1e6,
            traces: c.traces,
            spans: c.spans,
            logs: c.logs,
            runs: c.runs,
            tool_calls,
            tool_errors,
            usage: c.usage(),
            updated_seq,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_log_only_sessions_finish_by_idling() {
        const IDLE: u64 = 600_000_000_000;
        let logs_only = Counters {
            logs: 3,
            ..Counters::default()
        };
        assert_eq!(logs_only.status(1_000, 1_000 + IDLE - 1, IDLE), "running");
        assert_eq!(logs_only.status(1_000, 1_000 + IDLE, IDLE), "finished");
        // A record stamped ahead of this clock is simply recent.
        assert_eq!(logs_only.status(5_000, 1_000, IDLE), "running");

        // With spans, only the runs decide, however long ago the last one was.
        let mut open = Counters {
            logs: 3,
            spans: 2,
            runs: 1,
            open_runs: 1,
            ..Counters::default()
        };
        assert_eq!(open.status(1_000, u64::MAX, IDLE), "running");
        open.open_runs = 0;
        assert_eq!(open.status(1_000, u64::MAX, IDLE), "running", "no root yet");
        open.roots = 1;
        assert_eq!(open.status(1_000, 1_000, IDLE), "finished");
        open.last_root_failed = true;
        assert_eq!(open.status(1_000, 1_000, IDLE), "failed");

        // Nothing at all yet (a row made by a span copy later replaced): not finished by idling.
        assert_eq!(Counters::default().status(0, u64::MAX, IDLE), "running");
    }
}
