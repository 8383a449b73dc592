//! Settings for a running aotel and the command line that sets them.

use crate::auth::Tokens;
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
    /// Allow binding a non-loopback address without both tokens set
    #[arg(long, env = "AOTEL_INSECURE")]
    pub insecure: bool,
    /// Follow session files (*.jsonl, recursively) in this folder as they grow; repeatable
    #[arg(long = "watch", env = "AOTEL_WATCH", value_delimiter = ',')]
    pub watch: Vec<PathBuf>,
    /// How often the watcher looks for changes, in milliseconds
    #[arg(long, env = "AOTEL_WATCH_POLL_MS", default_value_t = 500)]
    pub watch_poll_ms: u64,
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
        Ok(Config {
            db: self.db.clone().unwrap_or_else(default_db_path),
            store: StoreOptions {
                durability: self.durability,
                queue_bytes: self.queue_bytes.max(self.max_request_bytes),
                max_attribute_bytes: self.max_attribute_bytes.max(64),
                ..StoreOptions::default()
            },
            max_request_bytes: self.max_request_bytes,
            watch: self.watch.clone(),
            watch_interval: std::time::Duration::from_millis(self.watch_poll_ms.max(10)),
            tokens,
        })
    }
}
