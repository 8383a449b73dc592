//! `otel-collector.yaml`: it parses, names only components the contrib collector has, every pipeline
//! uses defined components, the exporters that reach aotel use aotel's OTLP ports, apps' spans fan out
//! to aotel and Tempo in one pipeline, and what aotel forwards never flows back to aotel.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Component types this file may use, per kind (all in the contrib distribution, v0.144.0 or later).
const KNOWN: &[(&str, &[&str])] = &[
    ("receivers", &["otlp"]),
    ("processors", &["memory_limiter", "batch"]),
    (
        "exporters",
        &["otlp_grpc", "otlp_http", "otlp", "otlphttp", "debug"],
    ),
    ("extensions", &["health_check"]),
];

const AOTEL_GRPC_PORT: u16 = 4317;
const AOTEL_HTTP_PORT: u16 = 4318;

fn config_text() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("otel-collector.yaml");
    std::fs::read_to_string(path).expect("otel-collector.yaml exists")
}

fn parse(text: &str) -> Result<Value, String> {
    serde_yaml_ng::from_str::<Value>(text).map_err(|e| format!("not YAML: {e}"))
}

/// `type/name` → `type`.
fn kind_of(id: &str) -> &str {
    id.split('/').next().unwrap_or(id)
}

/// The port of `host:port`, `scheme://host:port` or `scheme://host:port/path`.
fn port_of(endpoint: &str) -> Option<u16> {
    let rest = endpoint.split_once("://").map_or(endpoint, |(_, r)| r);
    let authority = rest.split('/').next()?;
    authority.rsplit_once(':')?.1.parse().ok()
}

fn list<'a>(v: &'a Value, key: &str) -> Vec<&'a str> {
    v[key]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

/// Receivers' listening ports: receiver id → ports.
fn receiver_ports(c: &Value) -> BTreeMap<String, Vec<u16>> {
    let mut out = BTreeMap::new();
    for (id, r) in c["receivers"].as_object().into_iter().flatten() {
        let ports = r["protocols"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(_, p)| p["endpoint"].as_str().and_then(port_of))
            .collect();
        out.insert(id.clone(), ports);
    }
    out
}

/// Everything wrong with a collector config, as readable lines.
fn config_errors(text: &str) -> Vec<String> {
    let c = match parse(text) {
        Ok(c) => c,
        Err(e) => return vec![e],
    };
    let mut errors = Vec::new();
    let known: BTreeMap<&str, &[&str]> = KNOWN.iter().copied().collect();
    let mut defined: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for (section, types) in &known {
        for (id, _) in c[*section].as_object().into_iter().flatten() {
            if !types.contains(&kind_of(id)) {
                errors.push(format!("{section}: unknown component type in {id:?}"));
            }
            defined.entry(section).or_default().insert(id.clone());
        }
    }
    for key in c.as_object().into_iter().flatten().map(|(k, _)| k) {
        if !known.contains_key(key.as_str()) && key != "service" && key != "connectors" {
            errors.push(format!("unknown top-level section {key:?}"));
        }
    }

    // Pipelines reference only defined components; every defined component is used.
    let pipelines = c["service"]["pipelines"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    if pipelines.is_empty() {
        errors.push("service.pipelines is empty".into());
    }
    let mut used: BTreeSet<(String, String)> = BTreeSet::new();
    for (name, p) in &pipelines {
        if !matches!(kind_of(name), "traces" | "logs" | "metrics" | "profiles") {
            errors.push(format!("pipeline {name:?}: not traces, logs or metrics"));
        }
        for section in ["receivers", "processors", "exporters"] {
            let ids = list(p, section);
            if section != "processors" && ids.is_empty() {
                errors.push(format!("pipeline {name}: no {section}"));
            }
            let distinct: BTreeSet<&str> = ids.iter().copied().collect();
            if distinct.len() != ids.len() {
                errors.push(format!(
                    "pipeline {name}: lists one of its {section} more than once"
                ));
            }
            for id in ids {
                if !defined.get(section).is_some_and(|d| d.contains(id)) {
                    errors.push(format!("pipeline {name}: {section} {id:?} is not defined"));
                }
                used.insert((section.into(), id.into()));
            }
        }
        let processors = list(p, "processors");
        if processors.contains(&"memory_limiter") && processors[0] != "memory_limiter" {
            errors.push(format!("pipeline {name}: memory_limiter must come first"));
        }
    }
    for ext in list(&c["service"], "extensions") {
        if !defined.get("extensions").is_some_and(|d| d.contains(ext)) {
            errors.push(format!("service.extensions: {ext:?} is not defined"));
        }
        used.insert(("extensions".into(), ext.into()));
    }
    for (section, ids) in &defined {
        for id in ids {
            if !used.contains(&(section.to_string(), id.clone())) {
                errors.push(format!("{section}: {id:?} is defined but never used"));
            }
        }
    }

    // Exporters to aotel use its OTLP ports.
    let exporters = c["exporters"].as_object().cloned().unwrap_or_default();
    let to_aotel: BTreeSet<String> = exporters
        .keys()
        .filter(|id| id.contains("aotel") && kind_of(id) != "debug")
        .cloned()
        .collect();
    if to_aotel.is_empty() {
        errors.push("no exporter sends to aotel (an id naming aotel)".into());
    }
    for id in &to_aotel {
        let e = &exporters[id];
        let endpoint = e["endpoint"].as_str().unwrap_or_default();
        let want = match kind_of(id) {
            "otlp_grpc" | "otlp" => AOTEL_GRPC_PORT,
            _ => AOTEL_HTTP_PORT,
        };
        if port_of(endpoint) != Some(want) {
            errors.push(format!(
                "exporter {id}: endpoint {endpoint:?} is not aotel's port {want}"
            ));
        }
        if want == AOTEL_HTTP_PORT && !endpoint.starts_with("http") {
            errors.push(format!("exporter {id}: an OTLP/HTTP endpoint is a URL"));
        }
        if want == AOTEL_HTTP_PORT && endpoint.contains("/v1/") {
            errors.push(format!(
                "exporter {id}: give the base URL; the exporter appends /v1/traces and /v1/logs"
            ));
        }
        if want == AOTEL_GRPC_PORT
            && !endpoint.starts_with("https://")
            && e["tls"]["insecure"] != Value::Bool(true)
            && e["tls"]["ca_file"].is_null()
        {
            errors.push(format!(
                "exporter {id}: plain gRPC to aotel needs tls.insecure: true (or a ca_file)"
            ));
        }
    }
    let to_tempo: BTreeSet<&String> = exporters.keys().filter(|id| id.contains("tempo")).collect();

    // Apps' spans fan out to aotel and Tempo from one pipeline; their logs go to aotel.
    let apps_receiver = "otlp";
    let fan_out = pipelines.iter().any(|(name, p)| {
        let ex = list(p, "exporters");
        kind_of(name) == "traces"
            && list(p, "receivers").contains(&apps_receiver)
            && ex.iter().any(|e| to_aotel.contains(*e))
            && ex.iter().any(|e| to_tempo.contains(&e.to_string()))
    });
    if !fan_out {
        errors.push("no traces pipeline sends apps' spans to both aotel and Tempo".into());
    }
    let logs_to_aotel = pipelines.iter().any(|(name, p)| {
        kind_of(name) == "logs"
            && list(p, "receivers").contains(&apps_receiver)
            && list(p, "exporters").iter().any(|e| to_aotel.contains(*e))
    });
    if !logs_to_aotel {
        errors.push("no logs pipeline sends apps' log records to aotel".into());
    }

    // The receiver aotel forwards to: its own port, pipelines that never lead back to aotel, and the
    // `--forward` flag in the comments names that port.
    let ports = receiver_ports(&c);
    let mut seen: BTreeMap<u16, &String> = BTreeMap::new();
    for (id, ps) in &ports {
        for p in ps {
            if let Some(other) = seen.insert(*p, id) {
                errors.push(format!("receivers {other} and {id} both listen on {p}"));
            }
        }
    }
    let forward_receivers: Vec<&String> = ports.keys().filter(|id| id.contains("aotel")).collect();
    if forward_receivers.is_empty() {
        errors.push("no receiver for aotel's --forward (an id naming aotel)".into());
    }
    for r in forward_receivers {
        for (name, p) in &pipelines {
            if list(p, "receivers").contains(&r.as_str())
                && list(p, "exporters").iter().any(|e| to_aotel.contains(*e))
            {
                errors.push(format!(
                    "pipeline {name}: data aotel forwarded to {r} goes back to aotel (a loop)"
                ));
            }
        }
        for port in &ports[r] {
            let flag = format!(":{port}");
            let documented = text.lines().any(|l| {
                l.trim_start().starts_with('#')
                    && l.contains("--forward grpc://")
                    && l.contains(&flag)
            });
            if !documented {
                errors.push(format!(
                    "receiver {r}: no comment shows `aotel serve --forward grpc://HOST{flag}`"
                ));
            }
        }
    }
    errors
}

#[test]
fn the_collector_config_is_consistent_and_targets_aotels_ports() {
    let text = config_text();
    let errors = config_errors(&text);
    assert!(errors.is_empty(), "\n{}", errors.join("\n"));
    // The defaults the README promises.
    let c = parse(&text).expect("parses");
    assert_eq!(receiver_ports(&c)["otlp"], vec![4317, 4318]);
}

/// Each check must be able to fail: break the real file one way at a time.
#[test]
fn the_checks_catch_broken_configs() {
    let good = config_text();
    assert!(config_errors(&good).is_empty());
    let cases: &[(&str, &str, &str)] = &[
        (
            "endpoint: aotel:4317",
            "endpoint: aotel:4318",
            "not aotel's port 4317",
        ),
        (
            "endpoint: http://aotel:4318",
            "endpoint: http://aotel:4318/v1/logs",
            "appends /v1/traces",
        ),
        (
            "exporters: [otlp_grpc/aotel, otlp_grpc/tempo]",
            "exporters: [otlp_grpc/aotel, otlp_grpc/tmepo]",
            "\"otlp_grpc/tmepo\" is not defined",
        ),
        (
            "exporters: [otlp_grpc/aotel, otlp_grpc/tempo]",
            "exporters: [otlp_grpc/aotel]",
            "both aotel and Tempo",
        ),
        (
            "      exporters: [otlp_grpc/tempo]",
            "      exporters: [otlp_grpc/tempo, otlp_grpc/aotel]",
            "a loop",
        ),
        (
            "endpoint: 0.0.0.0:4319",
            "endpoint: 0.0.0.0:4317",
            "both listen on 4317",
        ),
        (
            "  memory_limiter:\n",
            "  memory_limitr:\n",
            "unknown component type",
        ),
        (
            "exporters:\n",
            "exporters:\n  debug/unused:\n    verbosity: basic\n",
            "\"debug/unused\" is defined but never used",
        ),
        (
            "processors: [memory_limiter]",
            "processors: [memory_limiter, memory_limiter]",
            "more than once",
        ),
        (
            "processors: [memory_limiter]",
            "processors: [batch, memory_limiter]",
            "memory_limiter must come first",
        ),
        (
            "  otlp_grpc/aotel:\n",
            "  otlp_grcp/aotel:\n",
            "unknown component type",
        ),
        (
            "      insecure: true\n",
            "      insecure: false\n",
            "tls.insecure",
        ),
        ("receivers:\n", "receivers:\n  - [", "not YAML"),
    ];
    for (from, to, want) in cases {
        assert!(
            good.contains(from),
            "the config no longer contains {from:?}"
        );
        let broken = good.replacen(from, to, 1);
        let errors = config_errors(&broken);
        assert!(
            errors.iter().any(|e| e.contains(want)),
            "replacing {from:?} with {to:?}: expected a complaint containing {want:?}, got {errors:#?}"
        );
    }
}
