-- Raw records exactly as each API served them, one row per (source, external_id).
-- A rowid table: payloads are kilobytes, which WITHOUT ROWID B-trees handle poorly.
CREATE TABLE source_record (
    record_id     INTEGER PRIMARY KEY,
    source        TEXT NOT NULL,            -- the [sources.<name>] name in sync.toml
    external_id   TEXT NOT NULL,            -- the API's key, normalised (see data dictionary)
    kind          TEXT NOT NULL,            -- the source kind, e.g. carehq_service_users
    payload       TEXT NOT NULL,            -- the record's JSON exactly as received
    content_hash  TEXT NOT NULL,            -- xxh3-128 of payload, hex
    first_seen_at TEXT NOT NULL,            -- RFC 3339 UTC
    last_seen_at  TEXT NOT NULL,            -- RFC 3339 UTC, moves on every sighting
    changed_at    TEXT NOT NULL,            -- RFC 3339 UTC, when payload last changed
    seen_scan     INTEGER NOT NULL,         -- the scan that last saw it (deletion detection)
    deleted_at    TEXT,                     -- set when a complete scan no longer returns it
    UNIQUE (source, external_id)
);

-- One row per run per source.
CREATE TABLE sync_run (
    run_id            INTEGER PRIMARY KEY,
    source            TEXT NOT NULL,
    mode              TEXT NOT NULL,        -- backfill | sync
    started_at        TEXT NOT NULL,
    finished_at       TEXT,
    status            TEXT NOT NULL,        -- running | succeeded | failed | quota_exhausted | interrupted (killed mid-run)
    pages             INTEGER NOT NULL DEFAULT 0,
    requests          INTEGER NOT NULL DEFAULT 0,
    records_seen      INTEGER NOT NULL DEFAULT 0,
    records_inserted  INTEGER NOT NULL DEFAULT 0,
    records_updated   INTEGER NOT NULL DEFAULT 0,
    records_unchanged INTEGER NOT NULL DEFAULT 0,
    records_deleted   INTEGER NOT NULL DEFAULT 0,
    error_count       INTEGER NOT NULL DEFAULT 0,
    message           TEXT                  -- why it failed; never personal data
);
CREATE INDEX sync_run_by_source ON sync_run (source, started_at);

-- Every problem met during a run; messages never carry personal data.
CREATE TABLE sync_error (
    error_id     INTEGER PRIMARY KEY,
    run_id       INTEGER NOT NULL REFERENCES sync_run (run_id),
    source       TEXT NOT NULL,
    at           TEXT NOT NULL,
    page         TEXT,                      -- page number or cursor position, when it is about a page
    external_id  TEXT,                      -- when it is about one record
    kind         TEXT NOT NULL,             -- a bounded set: http_status, transport, timeout, malformed_body, throttled,
                                            -- auth, http_refused, retries_exhausted, quota_exhausted, write_uncertain,
                                            -- pagination_loop, page_shift, missing_key, store, interrupted
    message      TEXT NOT NULL
);
CREATE INDEX sync_error_by_run ON sync_error (run_id);

-- Where each source's scan has got to: the checkpoint, committed with the page it follows.
CREATE TABLE sync_state (
    source            TEXT PRIMARY KEY,
    scan_id           INTEGER NOT NULL,     -- increases with every new scan of this source
    scan_mode         TEXT NOT NULL,        -- full | incremental
    scan_started_at   TEXT NOT NULL,
    position          TEXT,                 -- JSON: the next page or cursor; NULL once complete
    pages_done        INTEGER NOT NULL DEFAULT 0,
    complete          INTEGER NOT NULL DEFAULT 0,
    scan_watermark    TEXT,                 -- newest `modified` seen by the current scan
    watermark         TEXT,                 -- newest `modified` of the last completed scan (incremental reads start here),
                                            -- in the API's own format (CareHQ: YYYY-MM-DD HH:MM:SS, UTC)
    last_complete_at  TEXT,                 -- when a full scan (or a CareHQ id sweep) last completed
    syncs_since_sweep INTEGER NOT NULL DEFAULT 0  -- CareHQ: incremental syncs since the last id sweep
);
