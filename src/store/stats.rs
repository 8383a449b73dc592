//! Agent-behaviour statistics kept in the `stats` table as spans and logs are committed: tool calls and
//! durations by tool, tokens by model, cost by agent. Written in the same transaction as the data, so
//! `/metrics` agrees with what is stored, survives restarts and includes offline imports.

use crate::model::facts::{LogFacts, SpanFacts, UsageSource, OP_TOOL};
use foldhash::{HashMap, HashSet};
use rusqlite::{params, Connection, Transaction};

/// Distinct values kept per label before the rest is counted as `other`.
pub const LABEL_CAP: usize = 50;

/// Upper bounds (seconds) of the tool duration histogram.
pub const DURATION_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

pub const TOOL_CALLS: &str = "aotel_tool_calls_total";
pub const TOOL_DURATION: &str = "aotel_tool_duration_seconds";
pub const TOKENS: &str = "aotel_tokens_total";
pub const COST: &str = "aotel_cost_usd_total";

/// Renders one Prometheus label value, escaped.
pub fn label(name: &str, value: &str) -> String {
    let escaped = value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n");
    format!("{name}=\"{escaped}\"")
}

/// The label values already in use, so that new ones past the cap become `other`.
#[derive(Default)]
pub(super) struct Dims {
    known: HashMap<&'static str, HashSet<String>>,
}

impl Dims {
    pub fn load(conn: &Connection) -> rusqlite::Result<Dims> {
        let mut dims = Dims::default();
        let mut stmt = conn.prepare("SELECT dim, value FROM stat_dims")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        for row in rows {
            let (dim, value) = row?;
            if let Some(dim) = ["tool", "agent", "model"].into_iter().find(|d| *d == dim) {
                dims.known.entry(dim).or_default().insert(value);
            }
        }
        Ok(dims)
    }

    /// The label `value` is counted under: itself once known, `unknown` when missing, `other` past the
    /// cap. Borrowed, so the per-span path allocates only for a value seen for the first time.
    fn value<'v>(
        &mut self,
        tx: &Transaction,
        dim: &'static str,
        value: Option<&'v str>,
    ) -> rusqlite::Result<&'v str> {
        let value = value.filter(|v| !v.is_empty()).unwrap_or("unknown");
        let known = self.known.entry(dim).or_default();
        if known.contains(value) {
            return Ok(value);
        }
        if known.len() >= LABEL_CAP {
            return Ok("other");
        }
        tx.prepare_cached("INSERT OR IGNORE INTO stat_dims(dim, value) VALUES (?1, ?2)")?
            .execute(params![dim, value])?;
        known.insert(value.to_string());
        Ok(value)
    }
}

/// What one transaction adds to the stats, applied just before it commits. Tool calls and durations
/// are summed per tool and only turned into label text at the end: they come with every tool span.
#[derive(Default)]
pub(super) struct StatsDelta {
    /// Per tool: calls that succeeded and calls that failed.
    calls: HashMap<String, [f64; 2]>,
    durations: HashMap<String, Durations>,
    values: HashMap<(&'static str, String), f64>,
}

#[derive(Default)]
struct Durations {
    /// Cumulative: bucket i counts calls that took at most `DURATION_BUCKETS[i]`.
    buckets: [u64; DURATION_BUCKETS.len()],
    count: u64,
    sum: f64,
}

fn source_name(s: UsageSource) -> &'static str {
    match s {
        UsageSource::Model => "model",
        UsageSource::Log => "log",
        UsageSource::Agent => "agent",
    }
}

impl StatsDelta {
    fn add(&mut self, metric: &'static str, labels: String, v: f64) {
        if v != 0.0 {
            *self.values.entry((metric, labels)).or_default() += v;
        }
    }

    fn tool_call(&mut self, tool: &str, failed: bool, seconds: Option<f64>) {
        if let Some(seconds) = seconds {
            tally(&mut self.durations, tool, |d| {
                for (i, le) in DURATION_BUCKETS.iter().enumerate() {
                    if seconds <= *le {
                        d.buckets[i] += 1;
                    }
                }
                d.count += 1;
                d.sum += seconds.max(0.0);
            });
        }
        tally(&mut self.calls, tool, |c| c[usize::from(failed)] += 1.0);
    }

    /// Counts a stored span copy. `old` is the copy it replaced, if any: a finished tool call is
    /// counted once however often it is re-sent, and only usage that grew is added, so every counter
    /// only ever goes up.
    pub fn span(
        &mut self,
        tx: &Transaction,
        dims: &mut Dims,
        f: &SpanFacts,
        old: Option<&SpanFacts>,
        duration_s: f64,
        session_agent: Option<&str>,
    ) -> rusqlite::Result<()> {
        let was_counted = old.is_some_and(|o| o.operation == Some(OP_TOOL) && !o.in_progress);
        if f.operation == Some(OP_TOOL) && !f.in_progress && !was_counted {
            let tool = dims.value(tx, "tool", f.tool.as_deref())?;
            self.tool_call(tool, f.is_error, Some(duration_s));
        }
        if let Some(src) = f.usage_source() {
            let before = old.map(|o| o.usage).unwrap_or_default();
            let agent = f.agent.as_deref().or(session_agent);
            self.usage(tx, dims, f.model.as_deref(), agent, src, &f.usage, &before)?;
        }
        Ok(())
    }

    pub fn log(
        &mut self,
        tx: &Transaction,
        dims: &mut Dims,
        f: &LogFacts,
        session_agent: Option<&str>,
    ) -> rusqlite::Result<()> {
        if f.tool_call {
            let tool = dims.value(tx, "tool", f.tool.as_deref())?;
            self.tool_call(tool, f.tool_error, f.tool_duration_s);
        }
        let none = Default::default();
        self.usage(
            tx,
            dims,
            f.model.as_deref(),
            session_agent,
            UsageSource::Log,
            &f.usage,
            &none,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn usage(
        &mut self,
        tx: &Transaction,
        dims: &mut Dims,
        model: Option<&str>,
        agent: Option<&str>,
        src: UsageSource,
        now: &crate::model::facts::Usage,
        before: &crate::model::facts::Usage,
    ) -> rusqlite::Result<()> {
        let source = label("source", source_name(src));
        let grew = |a: i64, b: i64| (a - b).max(0) as f64;
        let kinds = [
            ("input", grew(now.input_tokens, before.input_tokens)),
            ("output", grew(now.output_tokens, before.output_tokens)),
            (
                "cache_read",
                grew(now.cache_read_tokens, before.cache_read_tokens),
            ),
            (
                "cache_creation",
                grew(now.cache_creation_tokens, before.cache_creation_tokens),
            ),
        ];
        if kinds.iter().any(|(_, v)| *v > 0.0) {
            let model = label("model", dims.value(tx, "model", model)?);
            for (kind, v) in kinds {
                self.add(
                    TOKENS,
                    format!("{model},{},{source}", label("kind", kind)),
                    v,
                );
            }
        }
        let cost = (now.cost_usd - before.cost_usd).max(0.0);
        if cost > 0.0 {
            let agent = label("agent", dims.value(tx, "agent", agent)?);
            self.add(COST, format!("{agent},{source}"), cost);
        }
        Ok(())
    }

    pub fn flush(&mut self, tx: &Transaction) -> rusqlite::Result<()> {
        for (tool, counts) in self.calls.drain() {
            for (outcome, n) in ["ok", "error"].into_iter().zip(counts) {
                if n > 0.0 {
                    let labels = format!("{},{}", label("tool", &tool), label("outcome", outcome));
                    self.values.insert((TOOL_CALLS, labels), n);
                }
            }
        }
        for (tool, d) in self.durations.drain() {
            let t = label("tool", &tool);
            for (le, n) in DURATION_BUCKETS.iter().zip(d.buckets) {
                if n > 0 {
                    self.values
                        .insert((TOOL_DURATION, format!("{t},le=\"{le}\"")), n as f64);
                }
            }
            self.values
                .insert((TOOL_DURATION, format!("{t},le=\"+Inf\"")), d.count as f64);
            self.values
                .insert((TOOL_DURATION, format!("{t},sum")), d.sum);
        }
        for ((metric, labels), v) in self.values.drain() {
            tx.prepare_cached(
                "INSERT INTO stats(metric, labels, value) VALUES (?1, ?2, ?3)
                 ON CONFLICT(metric, labels) DO UPDATE SET value = value + excluded.value",
            )?
            .execute(params![metric, labels, v])?;
        }
        Ok(())
    }
}

/// Applies `f` to `key`'s entry, allocating the key only when it is new.
fn tally<V: Default>(map: &mut HashMap<String, V>, key: &str, f: impl FnOnce(&mut V)) {
    if let Some(v) = map.get_mut(key) {
        f(v);
    } else {
        let mut v = V::default();
        f(&mut v);
        map.insert(key.to_string(), v);
    }
}
