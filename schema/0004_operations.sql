-- Operations (issue 6): erasure on request, and keeping erased records from coming back.

-- One row per `caresync forget`: who erased which person and why. No personal data: the
-- reason is the operator's own words (the command tells them not to put personal data in it).
CREATE TABLE erasure_log (
    erasure_id     INTEGER PRIMARY KEY,
    person_id      INTEGER NOT NULL,
    records_erased INTEGER NOT NULL,      -- source records whose raw payloads were removed
    reason         TEXT NOT NULL,
    actor          TEXT NOT NULL,         -- the operating-system user who ran it
    erased_at      TEXT NOT NULL
);

-- Source records erased by `forget`: the writer does not store them again until an operator
-- lifts the suppression (`DELETE FROM suppressed_record WHERE erasure_id = ...`). The key is
-- a salted SHA-256 of (source, external_id), not the id itself, because some APIs key their
-- records by email address.
CREATE TABLE suppressed_record (
    source      TEXT NOT NULL,
    key_hash    TEXT NOT NULL,            -- hex SHA-256 of salt || source || 0x00 || external_id
    erasure_id  INTEGER NOT NULL REFERENCES erasure_log (erasure_id),
    erased_at   TEXT NOT NULL,
    PRIMARY KEY (source, key_hash)
);

-- The salt of suppressed_record.key_hash, made once per store.
CREATE TABLE erasure_salt (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    salt  BLOB NOT NULL
);
INSERT INTO erasure_salt (id, salt) VALUES (1, randomblob(32));
