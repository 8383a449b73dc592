//! Settings for a running aotel and the command line that sets them.

use crate::auth::Tokens;
use crate::store::retention::{parse_duration, RetentionPolicy};
use crate::store::{Durability, StoreOptions};
use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// Everything `run` needs besides the listeners.
#[derive(Debug, Clone)]
pub struct Config {
    pub db: PathBuf,
    pub store: StoreOptions,
    /// Largest OTLP request accepted, after decompression, on gRPC and HTTP.
    pub max_request_bytes: usize,
    /// Folders whose session files are followed as they grow (`serve --watch`).
    pub watch: Vec<PathBuf>,
    pub watch_interval: std::time::Duration,
    /// Bearer tokens for ingest and for reading; unset means open.
    pub tokens: Tokens,
    /// Certificate and key (PEM) for TLS on every listener.
    pub tls: Option<crate::tls::TlsFiles>,
    pub retention: RetentionPolicy,
    pub retention_interval: std::time::Duration,
    /// The live view: per-client queue, slow-client timeout, links to Jaeger/Grafana.
    pub live: crate::live::LiveOptions,
    pub forward: crate::forward::ForwardConfig,
}

impl Config {
    /// Defaults with the database at `db`: what tests start from.
    pub fn with_db(db: impl Into<PathBuf>) -> Config {
        Config {
            db: db.into(),
            store: StoreOptions::default(),
            max_request_bytes: 16 << 20,
            watch: Vec::new(),
            watch_interval: std::time::Duration::from_millis(500),
            tokens: Tokens::default(),
            tls: None,
            retention: RetentionPolicy::default(),
            retention_interval: std::time::Duration::from_secs(300),
            live: crate::live::LiveOptions::default(),
            forward: crate::forward::ForwardConfig::default(),
        }
    }
}

/// `~/.local/share/aotel/aotel.db` (or under `$XDG_DATA_HOME`), else `./aotel.db`.
pub fn default_db_path() -> PathBuf {
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")));
    match base {
        Some(dir) => dir.join("aotel").join("aotel.db"),
        None => PathBuf::from("aotel.db"),
    }
}

/// Flags of `aotel serve` (also the default command).
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// TOML file with any of these settings (keys are the flag names); flags and AOTEL_* win over it
    #[arg(long, env = "AOTEL_CONFIG")]
    pub config: Option<PathBuf>,
    /// SQLite database file [default: ~/.local/share/aotel/aotel.db]
    #[arg(long, env = "AOTEL_DB")]
    pub db: Option<PathBuf>,
    /// OTLP/gRPC listen address
    #[arg(long, env = "AOTEL_GRPC_ADDR", default_value = "127.0.0.1:4317")]
    pub grpc: SocketAddr,
    /// OTLP/HTTP listen address
    #[arg(long, env = "AOTEL_HTTP_ADDR", default_value = "127.0.0.1:4318")]
    pub http: SocketAddr,
    /// Web page, WebSocket and query APIs listen address
    #[arg(long, env = "AOTEL_API_ADDR", default_value = "127.0.0.1:8765")]
    pub api: SocketAddr,
    /// SQLite durability: normal (survives a crash of aotel) or full (also a power cut)
    #[arg(long = "sync", env = "AOTEL_SYNC", default_value = "normal")]
    pub durability: Durability,
    /// Largest OTLP request in bytes, after decompression
    #[arg(long, env = "AOTEL_MAX_REQUEST_BYTES", default_value_t = 16 << 20)]
    pub max_request_bytes: usize,
    /// Bytes of requests that may wait for the writer before ingest pushes back
    #[arg(long, env = "AOTEL_QUEUE_BYTES", default_value_t = 256 << 20)]
    pub queue_bytes: usize,
    /// Attribute values longer than this many bytes are cut and marked `ao.truncated=true`
    #[arg(long, env = "AOTEL_MAX_ATTRIBUTE_BYTES", default_value_t = 256 << 10)]
    pub max_attribute_bytes: usize,
    /// Token that OTLP clients and `POST /events` must send as `Authorization: Bearer <token>`
    #[arg(long, env = "AOTEL_INGEST_TOKEN", hide_env_values = true)]
    pub ingest_token: Option<String>,
    /// Token that the page, WebSocket, query APIs and /metrics need (header, cookie or `?token=`)
    #[arg(long, env = "AOTEL_READ_TOKEN", hide_env_values = true)]
    pub read_token: Option<String>,
    /// Certificate chain (PEM) for TLS on every listener; needs --tls-key
    #[arg(long, env = "AOTEL_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) for --tls-cert
    #[arg(long, env = "AOTEL_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Delete sessions whose last activity is older than this (e.g. 30d, 12h); unset keeps everything
    #[arg(long, env = "AOTEL_RETENTION_AGE", value_parser = parse_duration)]
    pub retention_age: Option<std::time::Duration>,
    /// Delete the oldest sessions while the database holds more than this many bytes
    #[arg(long, env = "AOTEL_RETENTION_MAX_BYTES")]
    pub retention_max_bytes: Option<u64>,
    /// How often retention runs (e.g. 5m)
    #[arg(long, env = "AOTEL_RETENTION_INTERVAL", value_parser = parse_duration, default_value = "5m")]
    pub retention_interval: std::time::Duration,
    /// A session known only from log events (Claude Code's own telemetry) counts as finished once it
    /// has been idle this long (e.g. 10m, 30s)
    #[arg(long, env = "AOTEL_SESSION_IDLE", value_parser = parse_duration, default_value = "10m")]
    pub session_idle: std::time::Duration,
    /// Of the database file, the newest this many bytes stay in the OS page cache after a checkpoint;
    /// older pages this run wrote are dropped from it once durable (0 keeps everything cached)
    #[arg(long, env = "AOTEL_PAGE_CACHE_BYTES", default_value_t = 256 << 20)]
    pub page_cache_bytes: u64,
    /// Allow binding a non-loopback address without both tokens set
    #[arg(long, env = "AOTEL_INSECURE")]
    pub insecure: bool,
    /// Follow session files (*.jsonl, recursively) in this folder as they grow; repeatable
    #[arg(long = "watch", env = "AOTEL_WATCH", value_delimiter = ',')]
    pub watch: Vec<PathBuf>,
    /// How often the watcher looks for changes, in milliseconds
    #[arg(long, env = "AOTEL_WATCH_POLL_MS", default_value_t = 500)]
    pub watch_poll_ms: u64,
    /// Jaeger UI base URL; the page links each trace to `{url}/trace/{trace_id}` (or fills `{trace_id}`)
    #[arg(long, env = "AOTEL_JAEGER_URL")]
    pub jaeger_url: Option<String>,
    /// Grafana base URL; the page links each trace to Explore with a Tempo query (or fills `{trace_id}`)
    #[arg(long, env = "AOTEL_GRAFANA_URL")]
    pub grafana_url: Option<String>,
    /// Live-view messages queued per WebSocket client before it misses updates and is resynced
    #[arg(long, env = "AOTEL_WS_QUEUE", default_value_t = 256)]
    pub ws_queue: usize,
    /// Seconds a WebSocket client may take to accept one message before it is disconnected
    #[arg(long, env = "AOTEL_WS_SEND_TIMEOUT", default_value_t = 10.0)]
    pub ws_send_timeout: f64,
    #[command(flatten)]
    pub forward: crate::forward::ForwardArgs,
}

impl ServeArgs {
    pub fn config(&self) -> Result<Config, String> {
        let token = |t: &Option<String>| t.as_deref().filter(|t| !t.is_empty()).map(Arc::from);
        let tokens = Tokens {
            ingest: token(&self.ingest_token),
            read: token(&self.read_token),
        };
        let authenticated = tokens.ingest.is_some() && tokens.read.is_some();
        if !self.insecure && !authenticated {
            for (name, addr) in [
                ("--grpc", self.grpc),
                ("--http", self.http),
                ("--api", self.api),
            ] {
                if !addr.ip().is_loopback() {
                    return Err(format!(
                        "{name} {addr} is not a loopback address and not both --ingest-token and --read-token \
                         are set; set them, or pass --insecure to expose it anyway"
                    ));
                }
            }
        }
        if self.max_request_bytes < 1024 {
            return Err("--max-request-bytes must be at least 1024".into());
        }
        let live = crate::live::LiveOptions::from_args(
            self.jaeger_url.as_deref(),
            self.grafana_url.as_deref(),
            self.ws_queue,
            self.ws_send_timeout,
        )?;
        Ok(Config {
            db: self.db.clone().unwrap_or_else(default_db_path),
            store: StoreOptions {
                durability: self.durability,
                queue_bytes: self.queue_bytes.max(self.max_request_bytes),
                max_attribute_bytes: self.max_attribute_bytes.max(64),
                session_idle: self.session_idle.max(std::time::Duration::from_secs(1)),
                page_cache_keep: Some(self.page_cache_bytes).filter(|b| *b > 0),
                ..StoreOptions::default()
            },
            max_request_bytes: self.max_request_bytes,
            watch: self.watch.clone(),
            watch_interval: std::time::Duration::from_millis(self.watch_poll_ms.max(10)),
            tokens,
            tls: match (&self.tls_cert, &self.tls_key) {
                (Some(cert), Some(key)) => Some(crate::tls::TlsFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                }),
                _ => None,
            },
            retention: RetentionPolicy {
                max_age: self.retention_age.filter(|d| !d.is_zero()),
                max_bytes: self.retention_max_bytes.filter(|b| *b > 0),
            },
            retention_interval: self
                .retention_interval
                .max(std::time::Duration::from_secs(1)),
            live,
            forward: self.forward.config()?,
        })
    }
}

/// Settings from a `--config` TOML file, which rank below flags and `AOTEL_*` variables: a key is used
/// only where neither set that option. Keys are the long flag names (`max-request-bytes` or
/// `max_request_bytes`); arrays give repeatable options. An unknown key, a value of the wrong type, or
/// an unreadable file is an error naming the file and the key.
pub fn with_config_file(
    cmd: clap::Command,
    argv: Vec<std::ffi::OsString>,
) -> Result<clap::ArgMatches, ConfigError> {
    let matches = cmd.clone().try_get_matches_from(&argv)?;
    let (serve_cmd, serve) = match matches.subcommand() {
        Some(("serve", sub)) => (
            cmd.find_subcommand("serve")
                .cloned()
                .unwrap_or_else(|| cmd.clone()),
            sub,
        ),
        Some(_) => return Ok(matches),
        None => (cmd.clone(), &matches),
    };
    let Some(path) = serve.get_one::<PathBuf>("config").cloned() else {
        return Ok(matches);
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("config file {}: cannot read it: {e}", path.display()))?;
    let table: toml::Table = text.parse().map_err(|e| {
        ConfigError::File(format!(
            "config file {}: not valid TOML: {e}",
            path.display()
        ))
    })?;
    let mut extra: Vec<std::ffi::OsString> = Vec::new();
    for (key, value) in &table {
        let long = key.replace('_', "-");
        let Some(arg) = serve_cmd
            .get_arguments()
            .find(|a| a.get_long() == Some(long.as_str()) && long != "config")
        else {
            return Err(ConfigError::File(format!(
                "config file {}: unknown key {key:?}",
                path.display()
            )));
        };
        let given = serve.value_source(arg.get_id().as_str());
        if matches!(
            given,
            Some(clap::parser::ValueSource::CommandLine | clap::parser::ValueSource::EnvVariable)
        ) {
            continue;
        }
        let scalar = |v: &toml::Value| -> Result<Option<String>, ConfigError> {
            match v {
                toml::Value::String(s) => Ok(Some(s.clone())),
                toml::Value::Integer(i) => Ok(Some(i.to_string())),
                toml::Value::Float(f) => Ok(Some(f.to_string())),
                toml::Value::Boolean(true) => Ok(None),
                other => Err(ConfigError::File(format!(
                    "config file {}: key {key:?} has a value of type {} that it cannot take",
                    path.display(),
                    other.type_str()
                ))),
            }
        };
        let is_flag = matches!(arg.get_action(), clap::ArgAction::SetTrue);
        match value {
            toml::Value::Boolean(false) if is_flag => {}
            toml::Value::Boolean(true) if is_flag => extra.push(format!("--{long}").into()),
            toml::Value::Boolean(_) => {
                return Err(ConfigError::File(format!(
                    "config file {}: key {key:?} takes a value, not true/false",
                    path.display()
                )))
            }
            toml::Value::Array(items) => {
                for item in items {
                    if let Some(v) = scalar(item)? {
                        extra.push(format!("--{long}={v}").into());
                    }
                }
            }
            v => {
                if let Some(v) = scalar(v)? {
                    extra.push(format!("--{long}={v}").into());
                }
            }
        }
    }
    if extra.is_empty() {
        return Ok(matches);
    }
    // Options after the last token belong to the subcommand given (or the top level), so appending works
    // for `aotel --config f` and `aotel serve --config f` alike.
    let mut argv = argv;
    argv.extend(extra);
    cmd.try_get_matches_from(&argv).map_err(|e| {
        // clap names the flag (`--max-request-bytes`), which is the key without underscores.
        let first = e.to_string();
        let first = first
            .lines()
            .next()
            .unwrap_or("")
            .trim_start_matches("error: ");
        ConfigError::File(format!("config file {}: {first}", path.display()))
    })
}

impl From<String> for ConfigError {
    fn from(message: String) -> ConfigError {
        ConfigError::File(message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// From the command line or environment: clap prints these itself (including --help).
    #[error(transparent)]
    Cli(#[from] clap::Error),
    #[error("{0}")]
    File(String),
}
