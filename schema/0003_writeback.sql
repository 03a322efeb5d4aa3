-- Write-back: every intended write is recorded before it is sent and its outcome after.

CREATE TABLE outbox (
    write_id         INTEGER PRIMARY KEY,
    source           TEXT NOT NULL,
    external_id      TEXT,                 -- NULL for a create until the API gives the new id
    person_id        INTEGER NOT NULL,
    action           TEXT NOT NULL,        -- create | update
    fields           TEXT NOT NULL,        -- JSON array of canonical field names written
    payload_json     TEXT NOT NULL,        -- the source-side fields to send (values: keep the file private)
    base_hash        TEXT,                 -- update: content_hash of the record the plan was made against
    natural_key      TEXT,                 -- create: what finds the record if a create's answer was lost
    status           TEXT NOT NULL,        -- pending | sending | succeeded | failed | conflict | superseded
    error_kind       TEXT,                 -- validation (not retried) | transient (retried with backoff) | uncertain (answer lost; settled by the next push)
    last_error       TEXT,                 -- the API's own reason, redacted
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  TEXT,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL
);
CREATE INDEX outbox_by_status ON outbox (status);
CREATE INDEX outbox_by_record ON outbox (source, external_id);

-- A remote record changed since caresync last read it: the write was not made; a person decides.
CREATE TABLE conflict (
    conflict_id   INTEGER PRIMARY KEY,
    write_id      INTEGER REFERENCES outbox (write_id),
    source        TEXT NOT NULL,
    external_id   TEXT NOT NULL,
    person_id     INTEGER NOT NULL,
    field         TEXT NOT NULL,           -- a canonical field the remote change touched
    detected_at   TEXT NOT NULL,
    resolved_at   TEXT
);

CREATE VIEW v_conflicts AS
SELECT conflict_id, source, external_id, person_id, field, detected_at, write_id
FROM conflict WHERE resolved_at IS NULL;

-- Audit of every write attempt: field names, never values.
CREATE TABLE write_log (
    log_id       INTEGER PRIMARY KEY,
    at           TEXT NOT NULL,
    write_id     INTEGER,
    source       TEXT NOT NULL,
    external_id  TEXT,
    person_id    INTEGER NOT NULL,
    action       TEXT NOT NULL,
    fields       TEXT NOT NULL,           -- JSON array of field names
    outcome      TEXT NOT NULL,           -- succeeded | failed | conflict | found_existing | uncertain
    detail       TEXT                     -- HTTP status and the API's reason, redacted
);
