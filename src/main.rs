//! The `aotel` command: parse the command line, set up logging, call the library.

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

// Requests are decoded on one thread and freed on another: under the ingest bench glibc's allocator
// took ~12% of the collector's CPU (perf); with mimalloc the request threads spend 6.6 instead of
// 9.5 µs per span. Only the binary: tests that start the server in-process keep the system allocator.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "aotel",
    version,
    about = "OpenTelemetry-native collector for AI-agent sessions"
)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: aotel::config::ServeArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Receive OTLP, store it, serve the page and APIs (the default)
    Serve(Box<aotel::config::ServeArgs>),
    /// Import recorded sessions (ao-* session files, Claude Code transcripts); exits 2 if lines were skipped
    Import(aotel::ingest::import::ImportArgs),
    /// Follow session files as they grow, into the database (use `serve --watch` while a server runs)
    Watch(aotel::ingest::watch::WatchArgs),
    /// Re-export stored traces and logs to an OTLP destination (e.g. to backfill a new Tempo)
    Replay(aotel::forward::replay::ReplayArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<std::process::ExitCode> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let matches =
        match aotel::config::with_config_file(Cli::command(), std::env::args_os().collect()) {
            Ok(m) => m,
            Err(aotel::config::ConfigError::Cli(e)) => e.exit(),
            Err(aotel::config::ConfigError::File(message)) => {
                eprintln!("error: {message}");
                return Ok(std::process::ExitCode::from(2));
            }
        };
    let cli = Cli::from_arg_matches(&matches)?;
    let args = match cli.command {
        Some(Command::Serve(args)) => *args,
        Some(Command::Import(args)) => {
            let skipped = aotel::ingest::import::run_cli(&args)
                .await
                .context("import failed")?;
            return Ok(std::process::ExitCode::from(if skipped { 2 } else { 0 }));
        }
        Some(Command::Watch(args)) => {
            aotel::ingest::watch::run_cli(&args, shutdown_signal())
                .await
                .context("watch failed")?;
            return Ok(std::process::ExitCode::SUCCESS);
        }
        Some(Command::Replay(args)) => {
            let report = aotel::forward::replay::replay(&args)
                .await
                .context("replay failed")?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            if report.rejected_batches > 0 {
                eprintln!(
                    "{} batches were refused by {}",
                    report.rejected_batches, args.to
                );
                return Ok(std::process::ExitCode::FAILURE);
            }
            return Ok(std::process::ExitCode::SUCCESS);
        }
        None => cli.serve,
    };
    let config = args.config().map_err(anyhow::Error::msg)?;
    let listeners = aotel::Listeners::bind(args.grpc, args.http, args.api).await?;
    aotel::run(config, listeners, shutdown_signal())
        .await
        .context("aotel stopped with an error")?;
    Ok(std::process::ExitCode::SUCCESS)
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
