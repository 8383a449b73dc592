//! `aotel import PATH...`: recorded sessions (files or folders, recursively) into the local database
//! or, with `--endpoint`, to a running aotel over OTLP/HTTP. Broken lines are skipped with a warning
//! naming file and line; everything else is imported. Ids are deterministic, so a second import adds
//! nothing.

use super::client::{ClientError, OtlpHttp};
use super::spans::{resource, scope, span_batch};
use super::transcript::{read_file, Format, Warning};
use crate::model::Span;
use crate::store::{StoreError, Writer};
use prost::Message;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

/// Spans per write: big enough to be cheap, small enough to keep memory and the queue modest.
const CHUNK: usize = 2000;

/// The `ao.ingest` resource attribute of everything read from session files (import and watch alike,
/// so the two produce byte-identical spans).
pub const INGEST: &str = "transcript";
pub const SCOPE: &str = "aotel.transcript";

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Client(#[from] ClientError),
}

/// Where imported spans go.
pub enum Sink {
    Local(Writer),
    Remote(OtlpHttp),
}

impl Sink {
    /// Writes one session's spans; returns how many were new or changed (unknown when remote).
    async fn write(&self, format: Format, spans: Vec<Span>) -> Result<Option<usize>, ImportError> {
        let mut stored = Some(0);
        let mut spans = spans;
        while !spans.is_empty() {
            let rest = spans.split_off(spans.len().min(CHUNK));
            let bytes: usize = spans.iter().map(Message::encoded_len).sum();
            let batch = span_batch(resource(format.service(), INGEST), scope(SCOPE), spans);
            match self {
                Sink::Local(w) => {
                    let receipt = w.write_waiting(batch, bytes).await?;
                    stored = stored.map(|n| n + receipt.spans);
                }
                Sink::Remote(c) => {
                    c.send(batch).await?;
                    stored = None;
                }
            }
            spans = rest;
        }
        Ok(stored)
    }
}

/// A skipped line (or file, with line 0) and why.
#[derive(Debug, Clone)]
pub struct Skipped {
    pub file: PathBuf,
    pub line: usize,
    pub reason: String,
}

impl std::fmt::Display for Skipped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file.display(), self.reason)
        } else {
            write!(f, "{}:{}: {}", self.file.display(), self.line, self.reason)
        }
    }
}

#[derive(Debug, Default, Clone)]
pub struct Summary {
    pub files: usize,
    pub sessions: BTreeSet<String>,
    pub lines: usize,
    pub ignored_lines: usize,
    pub spans: usize,
    /// New or changed spans; `None` when sent to a remote aotel.
    pub stored: Option<usize>,
    pub skipped: Vec<Skipped>,
}

impl Summary {
    /// Reasons with how often each occurred, for the closing line.
    pub fn reasons(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for s in &self.skipped {
            let key = s
                .reason
                .split(':')
                .next()
                .unwrap_or(&s.reason)
                .trim()
                .to_string();
            *out.entry(key).or_insert(0) += 1;
        }
        out
    }

    pub fn render(&self) -> String {
        let stored = match self.stored {
            Some(n) => format!("{n} new or changed"),
            None => "sent".to_string(),
        };
        let mut s = format!(
            "imported {} file{}: {} session{}, {} spans ({stored}), {} lines read",
            self.files,
            if self.files == 1 { "" } else { "s" },
            self.sessions.len(),
            if self.sessions.len() == 1 { "" } else { "s" },
            self.spans,
            self.lines,
        );
        if self.ignored_lines > 0 {
            s.push_str(&format!(
                ", {} not part of the session model",
                self.ignored_lines
            ));
        }
        if self.skipped.is_empty() {
            s.push_str("; nothing skipped");
        } else {
            let reasons: Vec<String> = self
                .reasons()
                .into_iter()
                .map(|(r, n)| format!("{n} × {r}"))
                .collect();
            s.push_str(&format!(
                "; skipped {}: {}",
                self.skipped.len(),
                reasons.join(", ")
            ));
        }
        s
    }
}

/// Every `*.jsonl` under the given paths (a file named directly is taken whatever its name).
pub fn collect(paths: &[PathBuf], skipped: &mut Vec<Skipped>) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>, skipped: &mut Vec<Skipped>) {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) => {
                skipped.push(Skipped {
                    file: dir.to_path_buf(),
                    line: 0,
                    reason: format!("unreadable folder: {e}"),
                });
                return;
            }
        };
        let mut entries: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                walk(&p, out, skipped);
            } else if p.extension().is_some_and(|e| e == "jsonl") {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            walk(p, &mut out, skipped);
        } else if p.is_file() {
            out.push(p.clone());
        } else {
            skipped.push(Skipped {
                file: p.clone(),
                line: 0,
                reason: "no such file or folder".into(),
            });
        }
    }
    out.dedup();
    out
}

/// What one file gave.
pub struct FileResult {
    pub format: Option<Format>,
    pub session: Option<String>,
    pub spans: Vec<Span>,
    pub lines: usize,
    pub ignored: usize,
    pub warnings: Vec<Warning>,
}

/// Reads and renders one file (blocking).
pub fn read_one(path: &Path) -> std::io::Result<FileResult> {
    let mtime = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_else(crate::model::time::now_ns);
    let mut t = read_file(path, mtime)?;
    let mut warnings = t.take_warnings();
    if t.format() == Some(Format::Ao) && !t.has_meta() {
        warnings.insert(
            0,
            Warning {
                line: 0,
                reason: format!(
                    "missing meta file: no {} (imported without session name and agent)",
                    super::transcript::meta_path(path).display()
                ),
            },
        );
    }
    let rendered = t.render();
    Ok(FileResult {
        format: t.format(),
        session: rendered.as_ref().map(|r| r.session.clone()),
        spans: rendered.map(|r| r.spans).unwrap_or_default(),
        lines: t.lines(),
        ignored: t.ignored(),
        warnings,
    })
}

/// Imports `paths` into `sink`. Warnings go to `on_skip` as they happen; `progress` sees
/// (files done, files total, spans so far).
pub async fn import(
    paths: &[PathBuf],
    sink: &Sink,
    mut on_skip: impl FnMut(&Skipped),
    mut progress: impl FnMut(usize, usize, usize),
) -> Result<Summary, ImportError> {
    let mut summary = Summary {
        stored: Some(0),
        ..Default::default()
    };
    let mut skipped = Vec::new();
    let files = collect(paths, &mut skipped);
    for s in &skipped {
        on_skip(s);
    }
    summary.skipped = skipped;
    for (i, file) in files.iter().enumerate() {
        progress(i, files.len(), summary.spans);
        let path = file.clone();
        let read = tokio::task::spawn_blocking(move || read_one(&path))
            .await
            .map_err(|e| StoreError::Join(e.to_string()))?;
        let result = match read {
            Ok(r) => r,
            Err(e) => {
                let s = Skipped {
                    file: file.clone(),
                    line: 0,
                    reason: format!("unreadable file: {e}"),
                };
                on_skip(&s);
                summary.skipped.push(s);
                continue;
            }
        };
        summary.files += 1;
        summary.lines += result.lines;
        summary.ignored_lines += result.ignored;
        for w in result.warnings {
            let s = Skipped {
                file: file.clone(),
                line: w.line,
                reason: w.reason,
            };
            on_skip(&s);
            summary.skipped.push(s);
        }
        let (Some(format), Some(session)) = (result.format, result.session) else {
            continue;
        };
        summary.sessions.insert(session);
        summary.spans += result.spans.len();
        let stored = sink.write(format, result.spans).await?;
        summary.stored = match (summary.stored, stored) {
            (Some(a), Some(b)) => Some(a + b),
            _ => None,
        };
    }
    progress(files.len(), files.len(), summary.spans);
    Ok(summary)
}

/// Flags of `aotel import`.
#[derive(Debug, Clone, clap::Args)]
pub struct ImportArgs {
    /// Session files or folders (searched recursively for *.jsonl)
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Send to a running aotel over OTLP/HTTP (e.g. http://127.0.0.1:4318) instead of opening the database
    #[arg(long, env = "AOTEL_ENDPOINT")]
    pub endpoint: Option<String>,
    /// SQLite database file [default: ~/.local/share/aotel/aotel.db]
    #[arg(long, env = "AOTEL_DB")]
    pub db: Option<PathBuf>,
}

/// Runs `aotel import`: progress on a terminal, warnings and the summary on stderr. Returns whether
/// anything was skipped.
pub async fn run_cli(args: &ImportArgs) -> Result<bool, ImportError> {
    let tty = std::io::stderr().is_terminal();
    let mut shown = false;
    let progress = |done: usize, total: usize, spans: usize| {
        if tty && total > 1 {
            let width = 30;
            let filled = (done * width)
                .checked_div(total)
                .unwrap_or(width)
                .min(width);
            eprint!(
                "\r\x1b[2K[{}{}] {done}/{total} files, {spans} spans",
                "#".repeat(filled),
                " ".repeat(width - filled)
            );
            let _ = std::io::stderr().flush();
            shown = true;
        }
    };
    let on_skip = |s: &Skipped| {
        if tty {
            eprint!("\r\x1b[2K");
        }
        eprintln!("warning: skipped {s}");
    };
    let (sink, store) = match &args.endpoint {
        Some(url) => (Sink::Remote(OtlpHttp::new(url)?), None),
        None => {
            let db = args
                .db
                .clone()
                .unwrap_or_else(crate::config::default_db_path);
            let store = crate::store::open(&db, &crate::store::StoreOptions::default())?;
            (Sink::Local(store.writer.tagged("import")), Some(store))
        }
    };
    let result = import(&args.paths, &sink, on_skip, progress).await;
    drop(sink);
    if let Some(store) = store {
        store.close().await?;
    }
    let summary = result?;
    if tty && shown {
        eprintln!();
    }
    eprintln!("{}", summary.render());
    Ok(!summary.skipped.is_empty())
}
