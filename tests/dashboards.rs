//! The Grafana dashboards in `dashboards/`: each file is an importable dashboard model (inputs, panels,
//! grid, data source references, template variables), and every metric a query names is one aotel
//! exports — read from a running aotel's `GET /metrics`, and from the metric list in the spec below.

mod common;

use aotel::ingest::client::OtlpHttp;
use aotel::ingest::import::{import, Sink};
use common::{eventually, fixtures, TestServer};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The metrics aotel exports on `GET /metrics` (issue 7): name, Prometheus type, labels. The live test is
/// the real guard; this copy lets the dashboards be checked without a server and keeps label names honest.
const SPEC: &[(&str, &str, &[&str])] = &[
    ("aotel_received_spans_total", "counter", &["transport"]),
    (
        "aotel_received_log_records_total",
        "counter",
        &["transport"],
    ),
    ("aotel_stored_spans_total", "counter", &[]),
    ("aotel_stored_log_records_total", "counter", &[]),
    ("aotel_commit_failures_total", "counter", &[]),
    (
        "aotel_rejected_requests_total",
        "counter",
        &["transport", "reason"],
    ),
    ("aotel_rejected_spans_total", "counter", &["reason"]),
    ("aotel_rejected_log_records_total", "counter", &["reason"]),
    ("aotel_trace_requests_decoded_total", "counter", &[]),
    ("aotel_ingest_queue_requests", "gauge", &[]),
    ("aotel_ingest_queue_bytes", "gauge", &[]),
    ("aotel_commit_duration_seconds", "histogram", &[]),
    ("aotel_database_bytes", "gauge", &[]),
    ("aotel_websocket_clients", "gauge", &[]),
    ("aotel_forward_lag_spans", "gauge", &["destination"]),
    ("aotel_forward_lag_seconds", "gauge", &["destination"]),
    (
        "aotel_forward_sent_spans_total",
        "counter",
        &["destination"],
    ),
    ("aotel_forward_errors_total", "counter", &["destination"]),
    (
        "aotel_forward_dead_letters_total",
        "counter",
        &["destination"],
    ),
    ("aotel_tool_calls_total", "counter", &["tool", "outcome"]),
    ("aotel_tool_duration_seconds", "histogram", &["tool"]),
    ("aotel_sessions", "gauge", &["agent", "status"]),
    (
        "aotel_tokens_total",
        "counter",
        &["model", "kind", "source"],
    ),
    ("aotel_cost_usd_total", "counter", &["agent", "source"]),
];

/// Labels Prometheus adds to every scraped series.
const TARGET_LABELS: &[&str] = &["instance", "job"];

const EXPECTED_FILES: &[&str] = &["agent-sessions.json", "aotel-collector.json"];

const PANEL_TYPES: &[&str] = &[
    "row",
    "timeseries",
    "stat",
    "gauge",
    "bargauge",
    "table",
    "text",
    "traces",
    "piechart",
    "barchart",
    "histogram",
    "heatmap",
    "state-timeline",
];

/// Grafana's own variables, usable in any query.
const BUILTIN_VARS: &[&str] = &[
    "__rate_interval",
    "__interval",
    "__interval_ms",
    "__range",
    "__range_s",
    "__range_ms",
    "__from",
    "__to",
    "__dashboard",
    "__org",
    "__user",
];

fn dashboards() -> Vec<(String, Value)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboards");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("dashboards/ exists") {
        let path = entry.expect("dir entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let text = std::fs::read_to_string(&path).expect("read dashboard");
        let value: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name} is not JSON: {e}"));
        out.push((name, value));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    let names: Vec<&str> = out.iter().map(|(n, _)| n.as_str()).collect();
    for want in EXPECTED_FILES {
        assert!(names.contains(want), "dashboards/{want} is missing");
    }
    out
}

// ---------------------------------------------------------------------------------------------------
// A small PromQL scanner: enough to find metric names, their label matchers, grouping labels and
// Grafana variables, while skipping string literals.

#[derive(Debug, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Punct(char),
    Var(String),
}

fn tokens(expr: &str) -> Result<Vec<Tok>, String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '"' || c == '\'' || c == '`' {
            let mut s = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Err(format!("unterminated string in {expr:?}")),
                    Some('\\') if c != '`' => {
                        if let Some(n) = chars.get(i + 1) {
                            s.push(*n);
                        }
                        i += 2;
                    }
                    Some(&d) if d == c => {
                        i += 1;
                        break;
                    }
                    Some(&d) => {
                        s.push(d);
                        i += 1;
                    }
                }
            }
            out.push(Tok::Str(s));
        } else if c == '$' {
            let (name, next) = variable_at(&chars, i);
            if name.is_empty() {
                return Err(format!("a lone `$` in {expr:?}"));
            }
            out.push(Tok::Var(name));
            i = next;
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            out.push(Tok::Ident(chars[start..i].iter().collect()));
        } else {
            out.push(Tok::Punct(c));
            i += 1;
        }
    }
    Ok(out)
}

/// `$name`, `${name}` or `${name:format}` starting at `i` (a `$`): the name and the index after it.
fn variable_at(chars: &[char], i: usize) -> (String, usize) {
    let mut j = i + 1;
    let braced = chars.get(j) == Some(&'{');
    if braced {
        j += 1;
    }
    let start = j;
    while j < chars.len() && (chars[j].is_ascii_alphanumeric() || chars[j] == '_') {
        j += 1;
    }
    let name: String = chars[start..j].iter().collect();
    if braced {
        while j < chars.len() && chars[j] != '}' {
            j += 1;
        }
        j += 1;
    }
    (name, j)
}

/// Grafana variables referenced in any text (`$x`, `${x}`, `${x:regex}`, `[[x]]`).
fn variables_in(text: &str) -> BTreeSet<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = BTreeSet::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '$' {
            let (name, next) = variable_at(&chars, i);
            if !name.is_empty() {
                out.insert(name);
            }
            i = next.max(i + 1);
        } else if chars[i] == '[' && chars.get(i + 1) == Some(&'[') {
            let rest: String = chars[i + 2..].iter().collect();
            if let Some(end) = rest.find("]]") {
                out.insert(rest[..end].split(':').next().unwrap_or("").to_string());
            }
            i += 2;
        } else {
            i += 1;
        }
    }
    out
}

/// One metric as a query uses it: the name and the label names its selector matches on.
#[derive(Debug)]
struct MetricUse {
    name: String,
    matchers: Vec<String>,
}

#[derive(Debug, Default)]
struct Scan {
    metrics: Vec<MetricUse>,
    grouping: Vec<String>,
    /// `label_values(metric, LABEL)`: the label a variable lists.
    listed_label: Option<String>,
}

fn scan(expr: &str) -> Result<Scan, String> {
    let toks = tokens(expr)?;
    let mut depth_round = 0i32;
    let mut depth_curly = 0i32;
    for t in &toks {
        match t {
            Tok::Punct('(') => depth_round += 1,
            Tok::Punct(')') => depth_round -= 1,
            Tok::Punct('{') => depth_curly += 1,
            Tok::Punct('}') => depth_curly -= 1,
            _ => {}
        }
        if depth_round < 0 || depth_curly < 0 {
            return Err(format!("unbalanced brackets in {expr:?}"));
        }
    }
    if depth_round != 0 || depth_curly != 0 {
        return Err(format!("unbalanced brackets in {expr:?}"));
    }
    let mut out = Scan::default();
    let mut i = 0;
    while i < toks.len() {
        match &toks[i] {
            Tok::Ident(id) if id.starts_with("aotel_") => {
                let mut matchers = Vec::new();
                if toks.get(i + 1) == Some(&Tok::Punct('{')) {
                    let mut j = i + 2;
                    while j < toks.len() && toks[j] != Tok::Punct('}') {
                        match (&toks[j], toks.get(j + 1)) {
                            (Tok::Ident(label), Some(Tok::Punct('=' | '!'))) => {
                                matchers.push(label.clone())
                            }
                            (Tok::Punct(',') | Tok::Punct('=' | '!' | '~') | Tok::Str(_), _) => {}
                            (other, _) => {
                                return Err(format!(
                                    "unexpected {other:?} in the selector of {id} in {expr:?}"
                                ))
                            }
                        }
                        j += 1;
                    }
                    i = j;
                }
                out.metrics.push(MetricUse {
                    name: id.clone(),
                    matchers,
                });
            }
            Tok::Ident(id)
                if (id == "by" || id == "without") && toks.get(i + 1) == Some(&Tok::Punct('(')) =>
            {
                let mut j = i + 2;
                while j < toks.len() && toks[j] != Tok::Punct(')') {
                    if let Tok::Ident(label) = &toks[j] {
                        out.grouping.push(label.clone());
                    }
                    j += 1;
                }
                i = j;
            }
            Tok::Ident(id) if id == "label_values" => {
                // label_values(selector, label): the last identifier before the closing parenthesis.
                let close = toks.iter().rposition(|t| *t == Tok::Punct(')'));
                if let Some(Tok::Ident(label)) = close.and_then(|c| toks.get(c - 1)) {
                    out.listed_label = Some(label.clone());
                }
            }
            _ => {}
        }
        i += 1;
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------------
// Walking a dashboard model.

/// Every panel, with the panels nested in (collapsed) rows.
fn all_panels(d: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().into_iter().flatten() {
        out.push(p);
        for inner in p["panels"].as_array().into_iter().flatten() {
            out.push(inner);
        }
    }
    out
}

/// A query a dashboard sends to Prometheus: where it is, its text, its legend.
struct PromQuery {
    place: String,
    expr: String,
    legend: Option<String>,
    panel_description: Option<String>,
}

fn prom_queries(d: &Value) -> Vec<PromQuery> {
    let mut out = Vec::new();
    for p in all_panels(d) {
        for t in p["targets"].as_array().into_iter().flatten() {
            let ds_type = t["datasource"]["type"]
                .as_str()
                .or(p["datasource"]["type"].as_str());
            if ds_type != Some("prometheus") {
                continue;
            }
            out.push(PromQuery {
                place: format!("panel {:?} target {}", p["title"], t["refId"]),
                expr: t["expr"].as_str().unwrap_or_default().to_string(),
                legend: t["legendFormat"].as_str().map(str::to_string),
                panel_description: p["description"].as_str().map(str::to_string),
            });
        }
    }
    for v in d["templating"]["list"].as_array().into_iter().flatten() {
        if v["type"] == "query" && v["datasource"]["type"] == "prometheus" {
            out.push(PromQuery {
                place: format!("variable {:?}", v["name"]),
                expr: variable_query(v),
                legend: None,
                panel_description: None,
            });
        }
    }
    out
}

fn variable_query(v: &Value) -> String {
    match &v["query"] {
        Value::String(s) => s.clone(),
        Value::Object(o) => o
            .get("query")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        _ => String::new(),
    }
}

/// Resolves a `{"type", "uid": "${DS_X}"}` reference to the declared input it names.
fn check_datasource(
    place: &str,
    ds: &Value,
    inputs: &BTreeMap<String, String>,
    used: &mut BTreeSet<String>,
    errors: &mut Vec<String>,
) {
    let (Some(kind), Some(uid)) = (ds["type"].as_str(), ds["uid"].as_str()) else {
        errors.push(format!(
            "{place}: datasource {ds} is not {{\"type\", \"uid\"}}"
        ));
        return;
    };
    let Some(name) = uid.strip_prefix("${").and_then(|u| u.strip_suffix('}')) else {
        errors.push(format!(
            "{place}: datasource uid {uid:?} is not an input (${{DS_...}}), so the dashboard only works where that uid exists"
        ));
        return;
    };
    match inputs.get(name) {
        None => errors.push(format!(
            "{place}: datasource ${{{name}}} is not in __inputs"
        )),
        Some(plugin) if plugin != kind => errors.push(format!(
            "{place}: datasource ${{{name}}} is declared as {plugin} but used as {kind}"
        )),
        Some(_) => {
            used.insert(name.to_string());
        }
    }
}

/// Everything wrong with one dashboard model, as readable lines.
fn model_errors(file: &str, d: &Value) -> Vec<String> {
    let mut errors: Vec<String> = Vec::new();

    if d["title"].as_str().is_none_or(str::is_empty) {
        errors.push("no title".into());
    }
    match d["uid"].as_str() {
        Some(uid)
            if !uid.is_empty()
                && uid.len() <= 40
                && uid
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') => {}
        other => errors.push(format!(
            "uid {other:?} must be 1-40 characters of [A-Za-z0-9_-]"
        )),
    }
    if !d["id"].is_null() {
        errors.push("id must be null in a dashboard meant for import".into());
    }
    match d["schemaVersion"].as_i64() {
        Some(v) if (36..=41).contains(&v) => {}
        other => errors.push(format!("schemaVersion {other:?} is not a current one")),
    }
    if !d["time"]["from"].is_string() || !d["time"]["to"].is_string() {
        errors.push("time.from/time.to missing".into());
    }
    if !d["tags"]
        .as_array()
        .is_some_and(|t| t.iter().all(Value::is_string))
    {
        errors.push("tags must be a list of strings".into());
    }

    // __inputs: the data sources an import asks for.
    let mut inputs = BTreeMap::new();
    for i in d["__inputs"].as_array().into_iter().flatten() {
        let name = i["name"].as_str().unwrap_or_default();
        if i["type"] != "datasource" || i["pluginId"].as_str().is_none() || name.is_empty() {
            errors.push(format!(
                "__inputs entry {i} needs name, type \"datasource\" and pluginId"
            ));
            continue;
        }
        if inputs
            .insert(
                name.to_string(),
                i["pluginId"].as_str().unwrap_or_default().to_string(),
            )
            .is_some()
        {
            errors.push(format!("__inputs declares {name} twice"));
        }
    }
    if inputs.is_empty() {
        errors.push("no __inputs: the import cannot ask for data sources".into());
    }
    let requires: BTreeSet<(String, String)> = d["__requires"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            (
                r["type"].as_str().unwrap_or_default().to_string(),
                r["id"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    for plugin in inputs.values() {
        if !requires.contains(&("datasource".into(), plugin.clone())) {
            errors.push(format!("__requires does not list data source {plugin}"));
        }
    }

    let mut used_inputs = BTreeSet::new();
    let mut ids = BTreeSet::new();
    let panels = all_panels(d);
    if panels.iter().filter(|p| p["type"] != "row").count() == 0 {
        errors.push("no panels".into());
    }
    for p in &panels {
        let title = p["title"].as_str().unwrap_or_default();
        let place = format!("panel {title:?}");
        match p["id"].as_i64() {
            Some(id) if id > 0 => {
                if !ids.insert(id) {
                    errors.push(format!("{place}: id {id} is used twice"));
                }
            }
            other => errors.push(format!("{place}: id {other:?} must be a positive integer")),
        }
        if title.is_empty() {
            errors.push(format!("panel {} has no title", p["id"]));
        }
        let kind = p["type"].as_str().unwrap_or_default();
        if !PANEL_TYPES.contains(&kind) {
            errors.push(format!("{place}: unknown panel type {kind:?}"));
        } else if kind != "row" && !requires.contains(&("panel".into(), kind.into())) {
            errors.push(format!("{place}: __requires does not list panel {kind}"));
        }
        let g = &p["gridPos"];
        let dims: Vec<Option<i64>> = ["x", "y", "w", "h"]
            .iter()
            .map(|k| g[*k].as_i64())
            .collect();
        match dims[..] {
            [Some(x), Some(y), Some(w), Some(h)]
                if x >= 0 && y >= 0 && w >= 1 && h >= 1 && x + w <= 24 => {}
            _ => errors.push(format!(
                "{place}: gridPos {g} must have integer x, y >= 0, w, h >= 1 and x + w <= 24"
            )),
        }
        if kind == "row" {
            continue;
        }
        check_datasource(
            &place,
            &p["datasource"],
            &inputs,
            &mut used_inputs,
            &mut errors,
        );
        let targets = p["targets"].as_array().cloned().unwrap_or_default();
        if targets.is_empty() {
            errors.push(format!("{place}: no targets"));
        }
        let mut refs = BTreeSet::new();
        for t in &targets {
            let r = t["refId"].as_str().unwrap_or_default();
            if r.is_empty() || !refs.insert(r.to_string()) {
                errors.push(format!("{place}: refId {r:?} is empty or repeated"));
            }
            let tplace = format!("{place} target {r}");
            let ds = if t["datasource"].is_null() {
                &p["datasource"]
            } else {
                &t["datasource"]
            };
            check_datasource(&tplace, ds, &inputs, &mut used_inputs, &mut errors);
            match ds["type"].as_str() {
                Some("prometheus") if t["expr"].as_str().is_none_or(|e| e.trim().is_empty()) => {
                    errors.push(format!("{tplace}: a Prometheus target without expr"))
                }
                Some("tempo")
                    if t["queryType"] != "traceql"
                        || t["query"]
                            .as_str()
                            .is_none_or(|q| !q.trim().starts_with('{')) =>
                {
                    errors.push(format!(
                        "{tplace}: a Tempo target needs queryType \"traceql\" and a TraceQL query"
                    ))
                }
                _ => {}
            }
        }
    }
    // No two visible panels may cover the same grid cell.
    let rects: Vec<(String, i64, i64, i64, i64)> = d["panels"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let g = &p["gridPos"];
            Some((
                p["title"].as_str()?.to_string(),
                g["x"].as_i64()?,
                g["y"].as_i64()?,
                g["w"].as_i64()?,
                g["h"].as_i64()?,
            ))
        })
        .collect();
    for (i, a) in rects.iter().enumerate() {
        for b in &rects[i + 1..] {
            if a.1 < b.1 + b.3 && b.1 < a.1 + a.3 && a.2 < b.2 + b.4 && b.2 < a.2 + a.4 {
                errors.push(format!("panels {:?} and {:?} overlap", a.0, b.0));
            }
        }
    }

    // Template variables: well-formed, referring only to variables defined before them.
    let mut defined: BTreeSet<String> = BUILTIN_VARS.iter().map(|s| s.to_string()).collect();
    let Some(vars) = d["templating"]["list"].as_array() else {
        errors.push("templating.list missing".into());
        return prefixed(file, errors);
    };
    for v in vars {
        let name = v["name"].as_str().unwrap_or_default().to_string();
        let place = format!("variable {name:?}");
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            errors.push(format!("{place}: bad name"));
        }
        match v["type"].as_str() {
            Some("query") => {
                check_datasource(
                    &place,
                    &v["datasource"],
                    &inputs,
                    &mut used_inputs,
                    &mut errors,
                );
                let q = variable_query(v);
                if q.trim().is_empty() {
                    errors.push(format!("{place}: empty query"));
                }
                if v["definition"].as_str().is_some_and(|d| d != q) {
                    errors.push(format!(
                        "{place}: definition {} differs from its query",
                        v["definition"]
                    ));
                }
                for r in variables_in(&q) {
                    if !defined.contains(&r) {
                        errors.push(format!("{place}: uses ${r}, not defined before it"));
                    }
                }
                if !matches!(v["refresh"].as_i64(), Some(1 | 2)) {
                    errors.push(format!(
                        "{place}: refresh must be 1 (on load) or 2 (on time range change)"
                    ));
                }
            }
            Some("custom") => {
                let q = v["query"].as_str().unwrap_or_default();
                let values: Vec<&str> = q.split(',').map(str::trim).collect();
                if q.trim().is_empty() {
                    errors.push(format!("{place}: no values"));
                }
                let current = v["current"]["value"].as_str().unwrap_or_default();
                if !values.contains(&current) {
                    errors.push(format!(
                        "{place}: current value {current:?} is not one of {values:?}"
                    ));
                }
            }
            Some("datasource" | "interval" | "constant" | "textbox") => {}
            other => errors.push(format!("{place}: unknown variable type {other:?}")),
        }
        if !defined.insert(name.clone()) {
            errors.push(format!("{place}: defined twice"));
        }
    }
    for unused in inputs.keys().filter(|i| !used_inputs.contains(*i)) {
        errors.push(format!("__inputs declares {unused}, which nothing uses"));
    }

    // Queries may use only defined variables.
    for p in &panels {
        for t in p["targets"].as_array().into_iter().flatten() {
            let text = t["expr"]
                .as_str()
                .or(t["query"].as_str())
                .unwrap_or_default();
            for r in variables_in(text) {
                if !defined.contains(&r) {
                    errors.push(format!("panel {:?}: uses undefined ${r}", p["title"]));
                }
            }
        }
    }
    prefixed(file, errors)
}

fn prefixed(file: &str, errors: Vec<String>) -> Vec<String> {
    errors.into_iter().map(|e| format!("{file}: {e}")).collect()
}

// ---------------------------------------------------------------------------------------------------
// Metrics: names, types and labels.

/// Metric name → type, and metric name → labels, from the spec.
fn spec() -> (BTreeMap<String, String>, BTreeMap<String, Vec<String>>) {
    let types = SPEC
        .iter()
        .map(|(n, t, _)| (n.to_string(), t.to_string()))
        .collect();
    let labels = SPEC
        .iter()
        .map(|(n, _, l)| (n.to_string(), l.iter().map(|s| s.to_string()).collect()))
        .collect();
    (types, labels)
}

/// The exported family a queried series name belongs to (`x_bucket` → `x` for a histogram).
fn resolve(name: &str, types: &BTreeMap<String, String>) -> Result<String, String> {
    match types.get(name).map(String::as_str) {
        Some(kind @ ("histogram" | "summary")) => {
            return Err(format!(
                "{name} is a {kind}: a query must use {name}_bucket, _sum or _count"
            ))
        }
        Some(_) => return Ok(name.to_string()),
        None => {}
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            match types.get(base).map(String::as_str) {
                Some("histogram") => return Ok(base.to_string()),
                Some("summary") if suffix != "_bucket" => return Ok(base.to_string()),
                _ => {}
            }
        }
    }
    Err(format!("{name} is not exported by aotel"))
}

/// Everything wrong with the metrics one dashboard queries. With `labels`, label names are checked too.
fn metric_errors(
    file: &str,
    d: &Value,
    types: &BTreeMap<String, String>,
    labels: Option<&BTreeMap<String, Vec<String>>>,
) -> Vec<String> {
    let mut errors = Vec::new();
    for q in prom_queries(d) {
        let place = format!("{file}: {}", q.place);
        let s = match scan(&q.expr) {
            Ok(s) => s,
            Err(e) => {
                errors.push(format!("{place}: {e}"));
                continue;
            }
        };
        if s.metrics.is_empty() {
            errors.push(format!("{place}: queries no aotel metric: {:?}", q.expr));
        }
        let mut allowed: BTreeSet<String> = TARGET_LABELS.iter().map(|s| s.to_string()).collect();
        let mut resolved = Vec::new();
        for m in &s.metrics {
            match resolve(&m.name, types) {
                Ok(base) => {
                    if let Some(labels) = labels {
                        allowed.extend(labels.get(&base).into_iter().flatten().cloned());
                    }
                    if m.name.ends_with("_bucket") {
                        allowed.insert("le".into());
                    }
                    resolved.push((m, base));
                }
                Err(e) => errors.push(format!("{place}: {e}")),
            }
        }
        let Some(labels) = labels else { continue };
        for (m, base) in &resolved {
            let own: BTreeSet<&str> = labels
                .get(base)
                .into_iter()
                .flatten()
                .map(String::as_str)
                .chain(TARGET_LABELS.iter().copied())
                .chain(m.name.ends_with("_bucket").then_some("le"))
                .collect();
            for l in &m.matchers {
                if !own.contains(l.as_str()) {
                    errors.push(format!("{place}: {} has no label {l}", m.name));
                }
            }
        }
        let legend_labels = q
            .legend
            .as_deref()
            .unwrap_or_default()
            .split("{{")
            .skip(1)
            .filter_map(|part| part.split_once("}}").map(|(l, _)| l.trim().to_string()));
        for l in s
            .grouping
            .iter()
            .cloned()
            .chain(legend_labels)
            .chain(s.listed_label.clone())
        {
            if !allowed.contains(&l) {
                errors.push(format!(
                    "{place}: label {l} belongs to none of the metrics it queries"
                ));
            }
        }
        // The same usage is reported by several sources: a query must pick one or keep them apart,
        // and its panel must say so.
        for (m, base) in &resolved {
            if base == "aotel_tokens_total" || base == "aotel_cost_usd_total" {
                let picks = m.matchers.iter().any(|l| l == "source")
                    || s.grouping.iter().any(|l| l == "source")
                    || s.listed_label.is_some();
                if !picks {
                    errors.push(format!(
                        "{place}: {base} summed over every source counts the same usage twice; filter or group by source"
                    ));
                }
                if q.place.starts_with("panel")
                    && !q
                        .panel_description
                        .as_deref()
                        .unwrap_or_default()
                        .contains("source")
                {
                    errors.push(format!(
                        "{place}: the panel description must explain which usage source it shows"
                    ));
                }
            }
        }
    }
    errors
}

/// `# TYPE` lines of a Prometheus text exposition: family name → type.
fn exported_types(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut parts = rest.split_whitespace();
        if let (Some(name), Some(kind)) = (parts.next(), parts.next()) {
            // OpenMetrics names a counter family without `_total`; its samples still carry it.
            if kind == "counter" && !name.ends_with("_total") {
                out.insert(format!("{name}_total"), kind.to_string());
            }
            out.insert(name.to_string(), kind.to_string());
        }
    }
    out
}

/// Sample lines: series name → the label-name sets seen on it.
fn sample_labels(text: &str) -> BTreeMap<String, BTreeSet<BTreeSet<String>>> {
    let mut out: BTreeMap<String, BTreeSet<BTreeSet<String>>> = BTreeMap::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let name = &line[..name_end];
        let mut labels = BTreeSet::new();
        if line[name_end..].starts_with('{') {
            let body = &line[name_end + 1..];
            let mut rest = body;
            while let Some(eq) = rest.find("=\"") {
                let key = rest[..eq].trim_start_matches([',', ' ']).to_string();
                let mut chars = rest[eq + 2..].char_indices();
                let mut end = rest.len() - eq - 2;
                while let Some((i, c)) = chars.next() {
                    if c == '\\' {
                        chars.next();
                    } else if c == '"' {
                        end = i;
                        break;
                    }
                }
                labels.insert(key);
                rest = &rest[eq + 2 + end + 1..];
                if rest.starts_with('}') {
                    break;
                }
            }
        }
        out.entry(name.to_string()).or_default().insert(labels);
    }
    out
}

/// What is wrong between the dashboards, the spec copy and an exposition (`GET /metrics` text).
fn exposition_errors(text: &str) -> Vec<String> {
    let live = exported_types(text);
    // What the dashboards query is exported, as the type they assume.
    let mut errors = Vec::new();
    for (file, d) in dashboards() {
        errors.extend(metric_errors(&file, &d, &live, None));
    }
    // The spec copy matches what aotel exports: names, types, and labels where samples show them.
    let samples = sample_labels(text);
    for (name, kind, labels) in SPEC {
        match live.get(*name) {
            None => errors.push(format!("{name}: no `# TYPE` line")),
            Some(k) if k != kind => errors.push(format!("{name}: type {k}, spec says {kind}")),
            Some(_) => {}
        }
        let want: BTreeSet<String> = labels.iter().map(|s| s.to_string()).collect();
        let series = if *kind == "histogram" {
            format!("{name}_count")
        } else {
            name.to_string()
        };
        for got in samples.get(&series).into_iter().flatten() {
            if *got != want {
                errors.push(format!("{series}: labels {got:?}, spec says {want:?}"));
            }
        }
    }
    errors
}

/// An exposition with every spec family and one sample each, as aotel should answer.
fn spec_exposition() -> String {
    let mut out = String::new();
    for (name, kind, labels) in SPEC {
        let family = if *kind == "counter" {
            // OpenMetrics style for counters: the family without `_total`.
            name.trim_end_matches("_total")
        } else {
            name
        };
        out.push_str(&format!("# HELP {family} test\n# TYPE {family} {kind}\n"));
        let pairs: Vec<String> = labels
            .iter()
            .map(|l| format!("{l}=\"a \\\"b\\\"\""))
            .collect();
        if *kind == "histogram" {
            let with_le = |le: &str| {
                let mut p = pairs.clone();
                p.push(format!("le=\"{le}\""));
                p.join(",")
            };
            out.push_str(&format!("{name}_bucket{{{}}} 1\n", with_le("0.1")));
            out.push_str(&format!("{name}_bucket{{{}}} 2\n", with_le("+Inf")));
            for s in ["_sum", "_count"] {
                out.push_str(&format!("{name}{s}{{{}}} 2\n", pairs.join(",")));
            }
        } else if pairs.is_empty() {
            out.push_str(&format!("{name} 1\n"));
        } else {
            out.push_str(&format!("{name}{{{}}} 1\n", pairs.join(",")));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------------

#[test]
fn the_metrics_check_reads_a_prometheus_exposition() {
    let good = spec_exposition();
    let errors = exposition_errors(&good);
    assert!(errors.is_empty(), "{errors:#?}\n{good}");

    let missing = good.replace("# TYPE aotel_tool_duration_seconds histogram", "");
    let errors = exposition_errors(&missing);
    assert!(
        errors
            .iter()
            .any(|e| e.contains("aotel_tool_duration_seconds_bucket is not exported")),
        "{errors:#?}"
    );
    let retyped = good.replace(
        "# TYPE aotel_sessions gauge",
        "# TYPE aotel_sessions counter",
    );
    assert!(exposition_errors(&retyped)
        .iter()
        .any(|e| e.contains("aotel_sessions: type counter, spec says gauge")));
    let relabeled = good.replace("aotel_cost_usd_total{agent=", "aotel_cost_usd_total{team=");
    assert!(exposition_errors(&relabeled)
        .iter()
        .any(|e| e.contains("aotel_cost_usd_total: labels")));
}

#[test]
fn every_dashboard_is_a_valid_importable_model() {
    let mut errors = Vec::new();
    for (file, d) in dashboards() {
        errors.extend(model_errors(&file, &d));
    }
    assert!(errors.is_empty(), "\n{}", errors.join("\n"));
}

#[test]
fn dashboards_query_only_metrics_in_the_spec() {
    let (types, labels) = spec();
    let mut errors = Vec::new();
    let mut queried = BTreeSet::new();
    for (file, d) in dashboards() {
        errors.extend(metric_errors(&file, &d, &types, Some(&labels)));
        for q in prom_queries(&d) {
            for m in scan(&q.expr).map(|s| s.metrics).unwrap_or_default() {
                queried.extend(resolve(&m.name, &types).ok());
            }
        }
    }
    assert!(errors.is_empty(), "\n{}", errors.join("\n"));
    // Between them the dashboards show every metric aotel exports.
    let unshown: Vec<&String> = types.keys().filter(|n| !queried.contains(*n)).collect();
    assert!(unshown.is_empty(), "no dashboard shows {unshown:?}");
}

/// Each check above must be able to fail: break a good dashboard one way at a time and expect the
/// matching complaint.
#[test]
fn the_checks_catch_broken_dashboards() {
    let (_, good) = dashboards()
        .into_iter()
        .find(|(n, _)| n == "agent-sessions.json")
        .expect("agent-sessions.json");
    let (types, labels) = spec();
    assert!(model_errors("x", &good).is_empty());
    assert!(metric_errors("x", &good, &types, Some(&labels)).is_empty());
    let ts = good["panels"]
        .as_array()
        .and_then(|ps| ps.iter().position(|p| p["type"] == "timeseries"))
        .expect("a timeseries panel");
    let set_expr =
        |e: &'static str| move |d: &mut Value| d["panels"][ts]["targets"][0]["expr"] = json!(e);
    type Mutation = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(&str, Mutation)> = vec![
        (
            "is not exported",
            Box::new(set_expr("sum(rate(aotel_tool_calls_totl[5m]))")),
        ),
        (
            "is a histogram",
            Box::new(set_expr(
                "histogram_quantile(0.95, rate(aotel_tool_duration_seconds[5m]))",
            )),
        ),
        (
            "has no label outcom",
            Box::new(set_expr(
                r#"sum by (tool) (rate(aotel_tool_calls_total{outcom="error"}[5m]))"#,
            )),
        ),
        (
            "label model belongs to none",
            Box::new(set_expr(
                "sum by (model) (rate(aotel_tool_calls_total[5m]))",
            )),
        ),
        (
            "counts the same usage twice",
            Box::new(set_expr("sum(rate(aotel_tokens_total[5m]))")),
        ),
        (
            "unbalanced brackets",
            Box::new(set_expr("sum(rate(aotel_tool_calls_total[5m])")),
        ),
        (
            "uses undefined $nope",
            Box::new(set_expr(
                r#"sum(rate(aotel_tool_calls_total{tool=~"$nope"}[5m]))"#,
            )),
        ),
        (
            "is not in __inputs",
            Box::new(move |d: &mut Value| {
                d["panels"][ts]["datasource"] = json!({"type": "loki", "uid": "${DS_LOKI}"})
            }),
        ),
        (
            "is not an input",
            Box::new(move |d: &mut Value| {
                d["panels"][ts]["targets"][0]["datasource"] =
                    json!({"type": "prometheus", "uid": "prometheus"})
            }),
        ),
        (
            "overlap",
            Box::new(move |d: &mut Value| {
                d["panels"][ts + 1]["gridPos"] = d["panels"][ts]["gridPos"].clone()
            }),
        ),
        (
            "is used twice",
            Box::new(move |d: &mut Value| {
                d["panels"][ts + 1]["id"] = d["panels"][ts]["id"].clone()
            }),
        ),
        (
            "x + w <= 24",
            Box::new(move |d: &mut Value| d["panels"][ts]["gridPos"]["x"] = json!(20)),
        ),
        (
            "unknown panel type",
            Box::new(move |d: &mut Value| d["panels"][ts]["type"] = json!("graphh")),
        ),
        (
            "not defined before it",
            Box::new(|d: &mut Value| {
                // The first variable now uses one defined after it.
                d["templating"]["list"][0]["query"] =
                    json!(r#"label_values(aotel_sessions{agent=~"$agent"}, instance)"#)
            }),
        ),
        ("must be null", Box::new(|d: &mut Value| d["id"] = json!(7))),
    ];
    for (want, mutate) in cases {
        let mut d = good.clone();
        mutate(&mut d);
        let mut errors = model_errors("x", &d);
        errors.extend(metric_errors("x", &d, &types, Some(&labels)));
        assert!(
            errors.iter().any(|e| e.contains(want)),
            "expected a complaint containing {want:?}, got {errors:#?}"
        );
    }
}

const LOG_SESSION: &str = "dashboards-logs";

/// Sends real data (both session fixtures, a log record, a malformed request) so that families
/// derived from stored data have samples, then checks the dashboards against `GET /metrics`.
#[tokio::test]
async fn dashboards_query_only_metrics_a_running_aotel_exports() {
    let server = TestServer::start().await;
    let sink = Sink::Remote(OtlpHttp::new(&server.otlp_http("")).expect("OTLP/HTTP client"));
    let summary = import(&[fixtures()], &sink, |_| {}, |_, _, _| {})
        .await
        .expect("import the fixtures");
    assert!(summary.sessions.len() >= 2, "both fixture sessions sent");
    let client = reqwest::Client::new();
    let log = json!({"resourceLogs": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "dashboards"}}]},
        "scopeLogs": [{"logRecords": [{
            "timeUnixNano": "1700000000000000000",
            "body": {"stringValue": "hello"},
            "attributes": [{"key": "session.id", "value": {"stringValue": LOG_SESSION}}]
        }]}]
    }]});
    let resp = client
        .post(server.otlp_http("/v1/logs"))
        .json(&log)
        .send()
        .await
        .expect("POST /v1/logs");
    assert!(resp.status().is_success(), "log record stored");
    let resp = client
        .post(server.otlp_http("/v1/traces"))
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .expect("POST /v1/traces");
    assert_eq!(resp.status(), reqwest::StatusCode::BAD_REQUEST);

    let text = eventually(
        "GET /metrics to answer 200 with samples of aotel_tool_calls_total",
        || async {
            let resp = client.get(server.url("/metrics")).send().await.ok()?;
            if !resp.status().is_success() {
                return None;
            }
            let text = resp.text().await.ok()?;
            text.lines()
                .any(|l| l.starts_with("aotel_tool_calls_total{"))
                .then_some(text)
        },
    )
    .await;
    let errors = exposition_errors(&text);
    assert!(
        errors.is_empty(),
        "\n{}\n--- GET /metrics ---\n{text}",
        errors.join("\n")
    );
    server.stop().await;
}
