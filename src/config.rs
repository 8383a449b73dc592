//! Settings for a running aotel and the command line that sets them.

use crate::store::{Durability, StoreOptions};
use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Everything `run` needs besides the listeners.
#[derive(Debug, Clone)]
pub struct Config {
    pub db: PathBuf,
    pub store: StoreOptions,
    /// Largest OTLP request accepted, after decompression, on gRPC and HTTP.
    pub max_request_bytes: usize,
}

impl Config {
    /// Defaults with the database at `db`: what tests start from.
    pub fn with_db(db: impl Into<PathBuf>) -> Config {
        Config {
            db: db.into(),
            store: StoreOptions::default(),
            max_request_bytes: 16 << 20,
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
    /// Allow binding a non-loopback address (nothing is authenticated yet)
    #[arg(long, env = "AOTEL_INSECURE")]
    pub insecure: bool,
}

impl ServeArgs {
    pub fn config(&self) -> Result<Config, String> {
        if !self.insecure {
            for (name, addr) in [
                ("--grpc", self.grpc),
                ("--http", self.http),
                ("--api", self.api),
            ] {
                if !addr.ip().is_loopback() {
                    return Err(format!(
                        "{name} {addr} is not a loopback address and aotel has no authentication configured; \
                         pass --insecure to expose it anyway"
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
        })
    }
}
