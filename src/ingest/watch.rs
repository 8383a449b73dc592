//! `aotel watch DIR...` and `serve --watch DIR`: follows session files (`*.jsonl`, recursively) as they
//! grow, so sessions appear live with no hook installed. Polling, not inotify: portable, and a session
//! file grows a few lines a second at most.
//!
//! Per file it keeps a `Transcript` fed with every complete line (a partial last line waits for its
//! newline), renders the session after each change and sends only the spans whose bytes changed.
//! The offset read so far is recorded in the database (`watch_offsets`) through the one writer, after
//! the spans up to it were acknowledged. On restart the file is re-parsed up to that offset without
//! sending, then followed from there. A file that got shorter (truncated) or is a different file at
//! the same path (rotated: other inode, or other first bytes) is read again from the start; the old
//! file's unread tail is drained first while aotel still holds it open. Deterministic ids make any
//! re-read harmless.

use super::import::{INGEST, SCOPE};
use super::spans::{resource, scope, span_batch};
use super::transcript::{Format, Transcript};
use crate::model::time::now_ns;
use crate::model::Span;
use crate::store::{FileOffset, Reader, StoreError, Writer};
use prost::Message;
use rusqlite::Connection;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fs::File;
use std::future::Future;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Bytes hashed to recognise a file by its beginning.
const HEAD_BYTES: u64 = 1024;
/// Most bytes read from one file per poll, so one huge file does not stall the others.
const READ_LIMIT: u64 = 32 << 20;

#[derive(Debug, Clone)]
pub struct WatchOptions {
    pub dirs: Vec<PathBuf>,
    pub interval: Duration,
}

/// Flags of `aotel watch`.
#[derive(Debug, Clone, clap::Args)]
pub struct WatchArgs {
    /// Folders to follow (searched recursively for *.jsonl)
    #[arg(required = true)]
    pub dirs: Vec<PathBuf>,
    /// SQLite database file [default: ~/.local/share/aotel/aotel.db]
    #[arg(long, env = "AOTEL_DB")]
    pub db: Option<PathBuf>,
    /// How often to look for changes, in milliseconds
    #[arg(long, env = "AOTEL_WATCH_POLL_MS", default_value_t = 500)]
    pub poll_ms: u64,
}

#[derive(Debug, Clone)]
struct Stored {
    offset: u64,
    dev: u64,
    ino: u64,
    head_len: u64,
    head: Vec<u8>,
}

struct Tracked {
    file: File,
    dev: u64,
    ino: u64,
    offset: u64,
    lines: usize,
    transcript: Transcript,
    /// span id → hash of the copy last acknowledged by the store.
    sent: HashMap<Vec<u8>, [u8; 16]>,
}

/// What one poll found in one file: spans to send and the offset to record once they are stored.
struct Update {
    path: PathBuf,
    format: Format,
    spans: Vec<Span>,
    hashes: Vec<(Vec<u8>, [u8; 16])>,
    offset: FileOffset,
}

struct State {
    dirs: Vec<PathBuf>,
    files: HashMap<PathBuf, Tracked>,
    stored: HashMap<String, Stored>,
}

fn hash16(bytes: &[u8]) -> [u8; 16] {
    let mut out = [0u8; 16];
    out.copy_from_slice(&Sha256::digest(bytes)[..16]);
    out
}

#[cfg(unix)]
fn identity(m: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (m.dev(), m.ino())
}

#[cfg(not(unix))]
fn identity(_: &std::fs::Metadata) -> (u64, u64) {
    (0, 0)
}

/// SHA-256 of the first `len` bytes (fewer if the file is shorter).
fn head_of(file: &mut File, len: u64) -> std::io::Result<(u64, Vec<u8>)> {
    file.seek(SeekFrom::Start(0))?;
    let mut buf = Vec::new();
    file.take(len).read_to_end(&mut buf)?;
    Ok((buf.len() as u64, hash16(&buf).to_vec()))
}

fn scan(dirs: &[PathBuf]) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "jsonl") {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    for d in dirs {
        walk(d, &mut out);
    }
    out.sort();
    out
}

impl Tracked {
    fn open(path: &Path) -> std::io::Result<Tracked> {
        let file = File::open(path)?;
        let (dev, ino) = identity(&file.metadata()?);
        Ok(Tracked {
            file,
            dev,
            ino,
            offset: 0,
            lines: 0,
            transcript: Transcript::open(path),
            sent: HashMap::new(),
        })
    }

    /// Reads complete lines from `offset` on into the transcript; with `to_eof` a last line without
    /// newline is taken too (the file will not grow any more). Stops at `until` when given.
    fn read_lines(
        &mut self,
        until: Option<u64>,
        to_eof: bool,
        path: &Path,
    ) -> std::io::Result<bool> {
        self.file.seek(SeekFrom::Start(self.offset))?;
        let limit = until
            .map(|u| u.saturating_sub(self.offset))
            .unwrap_or(READ_LIMIT);
        let mut buf = Vec::new();
        (&mut self.file).take(limit).read_to_end(&mut buf)?;
        let complete = match buf.iter().rposition(|b| *b == b'\n') {
            Some(at) => at + 1,
            None if to_eof => buf.len(),
            None => 0,
        };
        let complete = if to_eof { buf.len() } else { complete };
        if complete == 0 {
            return Ok(false);
        }
        self.lines += self
            .transcript
            .push_bytes(&buf[..complete], self.lines, now_ns());
        for w in self.transcript.take_warnings() {
            if w.line == 0 {
                tracing::warn!(file = %path.display(), "{}", w.reason);
            } else {
                tracing::warn!(file = %path.display(), line = w.line, "skipped: {}", w.reason);
            }
        }
        self.offset += complete as u64;
        Ok(true)
    }

    /// The spans that differ from what the store already acknowledged.
    fn diff(&mut self, path: &Path) -> Option<Update> {
        if !self.transcript.has_meta() && self.transcript.format() != Some(Format::ClaudeCode) {
            self.transcript.reload_meta(path);
        }
        let rendered = self.transcript.render();
        let (head_len, head) = head_of(&mut self.file, HEAD_BYTES).unwrap_or((0, Vec::new()));
        let offset = FileOffset {
            path: path.to_string_lossy().into_owned(),
            offset: self.offset,
            dev: self.dev,
            ino: self.ino,
            head_len,
            head,
        };
        let Some(rendered) = rendered else {
            return Some(Update {
                path: path.to_path_buf(),
                format: Format::Ao,
                spans: Vec::new(),
                hashes: Vec::new(),
                offset,
            });
        };
        let mut spans = Vec::new();
        let mut hashes = Vec::new();
        for span in rendered.spans {
            let h = hash16(&span.encode_to_vec());
            if self.sent.get(&span.span_id) != Some(&h) {
                hashes.push((span.span_id.clone(), h));
                spans.push(span);
            }
        }
        Some(Update {
            path: path.to_path_buf(),
            format: rendered.format,
            spans,
            hashes,
            offset,
        })
    }

    /// Treats everything rendered now as already stored (after a restart, up to the recorded offset).
    fn assume_sent(&mut self) {
        if let Some(r) = self.transcript.render() {
            self.sent = r
                .spans
                .into_iter()
                .map(|s| {
                    let h = hash16(&s.encode_to_vec());
                    (s.span_id, h)
                })
                .collect();
        }
    }
}

impl State {
    /// Looks at every file once; blocking.
    fn poll(&mut self) -> Vec<Update> {
        let mut updates = Vec::new();
        let paths = scan(&self.dirs);
        let vanished: Vec<PathBuf> = self
            .files
            .keys()
            .filter(|p| !paths.contains(p))
            .cloned()
            .collect();
        for path in vanished {
            // Renamed away or deleted: whatever was appended before that is still readable.
            if let Some(mut t) = self.files.remove(&path) {
                if let Ok(true) = t.read_lines(None, true, &path) {
                    updates.extend(t.diff(&path));
                }
            }
        }
        for path in paths {
            match self.poll_one(&path) {
                Ok(mut u) => updates.append(&mut u),
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "could not read session file");
                    self.files.remove(&path);
                }
            }
        }
        updates
    }

    fn poll_one(&mut self, path: &Path) -> std::io::Result<Vec<Update>> {
        let mut updates = Vec::new();
        let meta = std::fs::metadata(path)?;
        let (dev, ino) = identity(&meta);
        let size = meta.len();
        if let Some(t) = self.files.get_mut(path) {
            if (t.dev, t.ino) != (dev, ino) {
                tracing::info!(file = %path.display(), "session file was replaced; reading the new one from the start");
                if let Ok(true) = t.read_lines(None, true, path) {
                    updates.extend(t.diff(path));
                }
                self.files.remove(path);
            } else if size < t.offset {
                tracing::info!(file = %path.display(), "session file got shorter; reading it again from the start");
                self.files.remove(path);
            }
        }
        if !self.files.contains_key(path) {
            let mut t = Tracked::open(path)?;
            let key = path.to_string_lossy().into_owned();
            if let Some(s) = self.stored.get(&key).cloned() {
                let same_file = (s.dev, s.ino) == (t.dev, t.ino) || (s.ino == 0 && t.ino == 0);
                let same_head = head_of(&mut t.file, s.head_len)
                    .map(|(_, h)| h == s.head)
                    .unwrap_or(false);
                if same_file && same_head && size >= s.offset {
                    t.read_lines(Some(s.offset), false, path)?;
                    t.offset = t.offset.max(s.offset.min(size));
                    t.assume_sent();
                }
            }
            self.files.insert(path.to_path_buf(), t);
        }
        let Some(t) = self.files.get_mut(path) else {
            return Ok(updates);
        };
        if size > t.offset && t.read_lines(None, false, path)? {
            updates.extend(t.diff(path));
        }
        Ok(updates)
    }

    fn acknowledged(&mut self, u: Update) {
        self.stored.insert(
            u.offset.path.clone(),
            Stored {
                offset: u.offset.offset,
                dev: u.offset.dev,
                ino: u.offset.ino,
                head_len: u.offset.head_len,
                head: u.offset.head.clone(),
            },
        );
        if let Some(t) = self.files.get_mut(&u.path) {
            t.sent.extend(u.hashes);
        }
    }
}

fn load_offsets(c: &Connection) -> Result<HashMap<String, Stored>, StoreError> {
    let mut stmt = c.prepare("SELECT path, offset, dev, ino, head_len, head FROM watch_offsets")?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                Stored {
                    offset: r.get::<_, i64>(1)? as u64,
                    dev: r.get::<_, i64>(2)? as u64,
                    ino: r.get::<_, i64>(3)? as u64,
                    head_len: r.get::<_, i64>(4)? as u64,
                    head: r.get(5)?,
                },
            ))
        })?
        .collect::<rusqlite::Result<HashMap<_, _>>>()?;
    Ok(rows)
}

/// Follows `opts.dirs` until `shutdown` resolves.
pub async fn run(
    writer: Writer,
    reader: Reader,
    opts: WatchOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), StoreError> {
    let dirs: Vec<PathBuf> = opts
        .dirs
        .iter()
        .map(|d| std::fs::canonicalize(d).unwrap_or_else(|_| d.clone()))
        .collect();
    for d in &dirs {
        tracing::info!(dir = %d.display(), "watching for session files");
    }
    let stored = reader.with(load_offsets).await?;
    let mut state = Box::new(State {
        dirs,
        files: HashMap::new(),
        stored,
    });
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (back, updates) = tokio::task::spawn_blocking(move || {
            let updates = state.poll();
            (state, updates)
        })
        .await
        .map_err(|e| StoreError::Join(e.to_string()))?;
        state = back;
        for u in updates {
            if !u.spans.is_empty() {
                let bytes: usize = u.spans.iter().map(Message::encoded_len).sum();
                let spans = std::mem::take(&mut { u.spans });
                let batch = span_batch(resource(u.format.service(), INGEST), scope(SCOPE), spans);
                match writer.write_waiting(batch, bytes).await {
                    Ok(_) => {}
                    Err(StoreError::Closed) => return Ok(()),
                    Err(e) => {
                        // Forget the file: the next poll re-reads it from the last recorded offset.
                        tracing::warn!(file = %u.path.display(), error = %e, "could not store spans; will retry");
                        state.files.remove(&u.path);
                        continue;
                    }
                }
            }
            match writer.record_file_offset(u.offset.clone()).await {
                Ok(()) => state.acknowledged(Update {
                    spans: Vec::new(),
                    ..u
                }),
                Err(StoreError::Closed) => return Ok(()),
                Err(e) => {
                    tracing::warn!(file = %u.path.display(), error = %e, "could not record the offset");
                    state.acknowledged(Update {
                        spans: Vec::new(),
                        ..u
                    });
                }
            }
        }
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tokio::time::sleep(opts.interval) => {}
        }
    }
    Ok(())
}

/// Runs `aotel watch` on its own database until Ctrl-C / SIGTERM (`shutdown`).
pub async fn run_cli(
    args: &WatchArgs,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), StoreError> {
    let db = args
        .db
        .clone()
        .unwrap_or_else(crate::config::default_db_path);
    let store = crate::store::open(&db, &crate::store::StoreOptions::default())?;
    tracing::info!(path = %db.display(), "data stored in SQLite");
    let opts = WatchOptions {
        dirs: args.dirs.clone(),
        interval: Duration::from_millis(args.poll_ms.max(10)),
    };
    let result = run(store.writer.clone(), store.reader.clone(), opts, shutdown).await;
    store.close().await?;
    result
}
