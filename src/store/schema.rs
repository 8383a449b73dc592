//! The SQLite schema as numbered migrations; `PRAGMA user_version` records how far a file has come.

use rusqlite::Connection;

/// Each entry moves the schema one version up; never edit a released entry, append a new one.
pub const MIGRATIONS: &[&str] = &[
    // 1: spans, logs, sessions and the interned resources and scopes they point at.
    r#"
    CREATE TABLE meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL);
    CREATE TABLE resources(
        id INTEGER PRIMARY KEY,
        hash BLOB NOT NULL UNIQUE,
        service TEXT NOT NULL,
        schema_url TEXT NOT NULL,
        body BLOB NOT NULL
    );
    CREATE TABLE scopes(
        id INTEGER PRIMARY KEY,
        hash BLOB NOT NULL UNIQUE,
        name TEXT NOT NULL,
        version TEXT NOT NULL,
        schema_url TEXT NOT NULL,
        body BLOB NOT NULL
    );
    CREATE TABLE spans(
        seq INTEGER PRIMARY KEY,
        trace_id BLOB NOT NULL,
        span_id BLOB NOT NULL,
        parent_span_id BLOB,
        session TEXT NOT NULL,
        name TEXT NOT NULL,
        kind INTEGER NOT NULL,
        start_ns INTEGER NOT NULL,
        end_ns INTEGER NOT NULL,
        status INTEGER NOT NULL,
        service TEXT NOT NULL,
        operation TEXT,
        tool TEXT,
        agent TEXT,
        model TEXT,
        flags INTEGER NOT NULL,
        input_tokens INTEGER NOT NULL,
        output_tokens INTEGER NOT NULL,
        cache_read_tokens INTEGER NOT NULL,
        cache_creation_tokens INTEGER NOT NULL,
        cost_usd REAL NOT NULL,
        resource_id INTEGER NOT NULL,
        scope_id INTEGER NOT NULL,
        body BLOB NOT NULL
    );
    CREATE UNIQUE INDEX spans_by_id ON spans(trace_id, span_id);
    CREATE INDEX spans_by_session ON spans(session, start_ns);
    CREATE INDEX spans_by_service ON spans(service, start_ns);
    CREATE INDEX spans_by_start ON spans(start_ns);
    CREATE INDEX spans_by_tool ON spans(tool, start_ns) WHERE tool IS NOT NULL;
    CREATE TABLE logs(
        seq INTEGER PRIMARY KEY,
        hash BLOB NOT NULL,
        time_ns INTEGER NOT NULL,
        trace_id BLOB,
        span_id BLOB,
        session TEXT,
        severity INTEGER NOT NULL,
        event_name TEXT,
        service TEXT NOT NULL,
        resource_id INTEGER NOT NULL,
        scope_id INTEGER NOT NULL,
        body BLOB NOT NULL
    );
    CREATE UNIQUE INDEX logs_by_hash ON logs(hash);
    CREATE INDEX logs_by_session ON logs(session, time_ns) WHERE session IS NOT NULL;
    CREATE INDEX logs_by_trace ON logs(trace_id) WHERE trace_id IS NOT NULL;
    CREATE TABLE sessions(
        key TEXT PRIMARY KEY,
        title TEXT,
        agent TEXT,
        service TEXT NOT NULL,
        status TEXT NOT NULL,
        first_ns INTEGER NOT NULL,
        last_ns INTEGER NOT NULL,
        updated_seq INTEGER NOT NULL,
        counters TEXT NOT NULL
    );
    CREATE INDEX sessions_by_first ON sessions(first_ns);
    CREATE TABLE session_traces(
        session TEXT NOT NULL,
        trace_id BLOB NOT NULL,
        PRIMARY KEY(session, trace_id)
    ) WITHOUT ROWID;
    CREATE INDEX session_traces_by_trace ON session_traces(trace_id);
    "#,
    // 2: the catalogue of services and operations that the Jaeger/Tempo APIs list without scanning spans.
    r#"
    CREATE TABLE operations(
        service TEXT NOT NULL,
        name TEXT NOT NULL,
        kind INTEGER NOT NULL,
        PRIMARY KEY(service, name, kind)
    ) WITHOUT ROWID;
    INSERT OR IGNORE INTO operations(service, name, kind) SELECT DISTINCT service, name, kind FROM spans;
    "#,
    // 3: how far `aotel watch` has read each session file (and which file that was), so a restart
    // resumes there.
    r#"
    CREATE TABLE watch_offsets(
        path TEXT PRIMARY KEY,
        offset INTEGER NOT NULL,
        dev INTEGER NOT NULL,
        ino INTEGER NOT NULL,
        head_len INTEGER NOT NULL,
        head BLOB NOT NULL,
        updated_ns INTEGER NOT NULL
    );
    "#,
    // 4: agent-behaviour statistics for /metrics, and the label values they use (capped).
    r#"
    CREATE TABLE stats(
        metric TEXT NOT NULL,
        labels TEXT NOT NULL,
        value REAL NOT NULL,
        PRIMARY KEY(metric, labels)
    ) WITHOUT ROWID;
    CREATE TABLE stat_dims(
        dim TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY(dim, value)
    ) WITHOUT ROWID;
    "#,
    // 5: retention picks the sessions with the oldest activity first.
    r#"
    CREATE INDEX sessions_by_last ON sessions(last_ns);
    "#,
    // 6: the attribute index for tag and TraceQL search (see store::index): hashed `key = value` pairs of
    // span and resource attributes. Spans stored before this version are indexed once at open.
    r#"
    CREATE TABLE span_attrs(
        h INTEGER NOT NULL,
        start_ns INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        PRIMARY KEY(h, start_ns, seq)
    ) WITHOUT ROWID;
    CREATE TABLE resource_attrs(
        h INTEGER NOT NULL,
        resource_id INTEGER NOT NULL,
        PRIMARY KEY(h, resource_id)
    ) WITHOUT ROWID;
    INSERT INTO meta(key, value)
        SELECT 'span_attrs_backfill', (SELECT MAX(seq) FROM spans) WHERE EXISTS (SELECT 1 FROM spans);
    "#,
    // 7: forwarding. `forward_cursors` has one row per configured destination: the highest span and log
    // seq it has (accepted or dead-lettered). Retention keeps spans above MIN(span_seq). A destination no
    // longer configured parks its cursors in `forward_destinations` and holds nothing back.
    r#"
    CREATE TABLE forward_destinations(
        id INTEGER PRIMARY KEY,
        url TEXT NOT NULL UNIQUE,
        active INTEGER NOT NULL,
        added_ns INTEGER NOT NULL,
        seen_ns INTEGER NOT NULL,
        parked_span_seq INTEGER,
        parked_log_seq INTEGER
    );
    CREATE TABLE forward_cursors(
        destination INTEGER PRIMARY KEY REFERENCES forward_destinations(id),
        span_seq INTEGER NOT NULL,
        log_seq INTEGER NOT NULL,
        updated_ns INTEGER NOT NULL
    );
    CREATE TABLE forward_dead_letters(
        id INTEGER PRIMARY KEY,
        destination INTEGER NOT NULL REFERENCES forward_destinations(id),
        signal TEXT NOT NULL,
        kind TEXT NOT NULL,
        first_seq INTEGER NOT NULL,
        last_seq INTEGER NOT NULL,
        items INTEGER NOT NULL,
        rejected INTEGER NOT NULL,
        reason TEXT NOT NULL,
        at_ns INTEGER NOT NULL
    );
    CREATE INDEX forward_dead_letters_by_destination ON forward_dead_letters(destination, id);
    "#,
    // 8: the attribute index is written behind the spans (store::index::Backlog); `span_attrs_upto`
    // says how far it has come, and up to here every span was indexed with its commit. `spans_by_tool`
    // answered no query that `spans_by_session` does not, and cost every tool span an insert.
    r#"
    DROP INDEX spans_by_tool;
    INSERT INTO meta(key, value) VALUES ('span_attrs_upto', (SELECT COALESCE(MAX(seq), 0) FROM spans))
        ON CONFLICT(key) DO UPDATE SET value = excluded.value;
    "#,
    // 9: a session's spans are found through its traces (`store::session_spans!`), so spans need no
    // session index of their own.
    r#"
    DROP INDEX spans_by_session;
    "#,
    // 10: attribute index rows become chunks (store::index): a row keyed by its newest entry carries up
    // to 63 older entries of the same hash in `more`. A row from before has none and reads the same.
    r#"
    ALTER TABLE span_attrs ADD COLUMN more BLOB;
    "#,
    // 11: spans are found by time and by service through the attribute index (store::index), which
    // holds a chunked entry for each; the spans table's own indexes for them go. Spans the index
    // already covers get those entries at the next open (`index::backfill_keys`); later ones get them
    // from `index::catch_up`.
    r#"
    DROP INDEX spans_by_service;
    DROP INDEX spans_by_start;
    INSERT INTO meta(key, value)
        SELECT 'span_keys_backfill',
            MIN(MAX(seq), COALESCE((SELECT value FROM meta WHERE key = 'span_attrs_upto'), MAX(seq)))
        FROM spans HAVING COUNT(*) > 0;
    "#,
    // 12: nothing looks a session up by trace (sessions are found by key, their traces by session), and
    // the index cost every new trace an insert on a random page, a WAL frame per commit each.
    r#"
    DROP INDEX IF EXISTS session_traces_by_trace;
    "#,
    // 13: sessions known only from log events finish once idle (session::finish_idle), which looks for
    // running sessions by last activity; only running sessions are in this index.
    r#"
    CREATE INDEX IF NOT EXISTS sessions_running ON sessions(last_ns) WHERE status = 'running';
    "#,
    // 14: the lone entries of a large attribute index write (a tool call id, held by one span) go into
    // one block row per write (store::index::Block) instead of a row each on a random page of
    // `span_attrs`. Searches read blocks by time, `unindex` finds them by seq.
    r#"
    CREATE TABLE IF NOT EXISTS span_attr_blocks(
        id INTEGER PRIMARY KEY,
        first_seq INTEGER NOT NULL,
        last_seq INTEGER NOT NULL,
        min_start INTEGER NOT NULL,
        max_start INTEGER NOT NULL,
        bloom BLOB NOT NULL,
        entries BLOB NOT NULL
    );
    CREATE INDEX IF NOT EXISTS span_attr_blocks_by_start ON span_attr_blocks(max_start);
    CREATE INDEX IF NOT EXISTS span_attr_blocks_by_seq ON span_attr_blocks(last_seq);
    "#,
    // 15: spans are identified by (trace number, span id). Trace ids are random, so a unique index
    // led by them took each new trace's spans to a random page of an index as large as the spans are
    // many; past the page cache every new trace read one back and split it. `traces` numbers each
    // trace in order of arrival: one small entry per trace, and the spans' index grows at its end.
    // Numbers are given in order of each trace's first span, as the writer would have.
    r#"
    CREATE TABLE traces(tn INTEGER PRIMARY KEY, trace_id BLOB NOT NULL UNIQUE);
    INSERT INTO traces(trace_id) SELECT trace_id FROM spans GROUP BY trace_id ORDER BY MIN(seq);
    ALTER TABLE spans ADD COLUMN tn INTEGER NOT NULL DEFAULT 0;
    UPDATE spans SET tn = (SELECT tn FROM traces t WHERE t.trace_id = spans.trace_id);
    DROP INDEX spans_by_id;
    CREATE UNIQUE INDEX spans_by_id ON spans(tn, span_id);
    "#,
    // 16: a session's traces are kept by numbers, the session's (`sessions.num`, now an explicit
    // INTEGER PRIMARY KEY, which VACUUM keeps) and the trace's. Keyed by the session's key and trace id,
    // every new session and trace landed on a random page of `session_traces`, a WAL frame per commit
    // each; numbers grow, so a new session's rows go at the end. The writer never gives a trace number
    // twice (meta `trace_seq`), so a row left by a deleted trace never points at a new one. A trace
    // known only from log records had no number before; it gets one, as the writer now gives it.
    r#"
    ALTER TABLE sessions RENAME TO sessions_v15;
    ALTER TABLE session_traces RENAME TO session_traces_v15;
    CREATE TABLE sessions(
        num INTEGER PRIMARY KEY,
        key TEXT NOT NULL UNIQUE,
        title TEXT,
        agent TEXT,
        service TEXT NOT NULL,
        status TEXT NOT NULL,
        first_ns INTEGER NOT NULL,
        last_ns INTEGER NOT NULL,
        updated_seq INTEGER NOT NULL,
        counters TEXT NOT NULL
    );
    INSERT INTO sessions(num, key, title, agent, service, status, first_ns, last_ns, updated_seq, counters)
        SELECT rowid, key, title, agent, service, status, first_ns, last_ns, updated_seq, counters
        FROM sessions_v15;
    CREATE TABLE session_traces(
        session INTEGER NOT NULL,
        tn INTEGER NOT NULL,
        PRIMARY KEY(session, tn)
    ) WITHOUT ROWID;
    INSERT INTO traces(trace_id)
        SELECT DISTINCT trace_id FROM session_traces_v15
        WHERE trace_id NOT IN (SELECT trace_id FROM traces);
    INSERT INTO session_traces(session, tn)
        SELECT s.num, t.tn FROM session_traces_v15 st
        JOIN sessions s ON s.key = st.session
        JOIN traces t ON t.trace_id = st.trace_id
        ORDER BY 1, 2;
    DROP TABLE session_traces_v15;
    DROP TABLE sessions_v15;
    CREATE INDEX sessions_by_first ON sessions(first_ns);
    CREATE INDEX sessions_by_last ON sessions(last_ns);
    CREATE INDEX sessions_running ON sessions(last_ns) WHERE status = 'running';
    "#,
    // 17: a trace's spans are found through the seq ranges each commit gave them (`trace_runs`, one
    // row per trace per commit; store::runs_spans!), and the writer recognises a copy by the span ids of
    // the traces it touches. The spans' (tn, span_id) index cost every span a seek and an insert at its
    // end, which SQLite rebalances about eight times for each leaf it gains: a fifth of the writer's
    // work. Runs of the spans stored before are their trace's consecutive seqs.
    r#"
    CREATE TABLE trace_runs(
        tn INTEGER NOT NULL,
        first_seq INTEGER NOT NULL,
        last_seq INTEGER NOT NULL,
        PRIMARY KEY(tn, first_seq)
    ) WITHOUT ROWID;
    INSERT INTO trace_runs(tn, first_seq, last_seq)
        SELECT tn, MIN(seq), MAX(seq)
        FROM (SELECT tn, seq, seq - ROW_NUMBER() OVER (PARTITION BY tn ORDER BY seq) AS run FROM spans)
        GROUP BY tn, run
        ORDER BY tn, MIN(seq);
    DROP INDEX spans_by_id;
    "#,
    // 18: a span's body leaves out the fields its columns hold (store::body). Nothing to rewrite: a
    // body stored whole reads the same. The version is raised so that an older build, which would read
    // such a body without its ids, refuses the file.
    "",
];

pub fn version(conn: &Connection) -> rusqlite::Result<usize> {
    conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))
        .map(|v| v as usize)
}

/// Brings the file up to `target` (at most the newest version), one transaction per step.
pub fn migrate_to(conn: &mut Connection, target: usize) -> rusqlite::Result<usize> {
    let mut current = version(conn)?;
    while current < target.min(MIGRATIONS.len()) {
        let tx = conn.transaction()?;
        tx.execute_batch(MIGRATIONS[current])?;
        current += 1;
        tx.pragma_update(None, "user_version", current as i64)?;
        tx.commit()?;
        tracing::info!(version = current, "database schema migrated");
    }
    Ok(current)
}

pub fn migrate(conn: &mut Connection) -> rusqlite::Result<usize> {
    migrate_to(conn, MIGRATIONS.len())
}
