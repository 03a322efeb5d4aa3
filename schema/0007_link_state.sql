-- Performance (issue 7): the linking state, kept in the store so that any process re-links
-- only the neighbourhood of what changed, without holding every record in memory. Written in
-- full by a full link; kept up to date by each incremental link. Internal: analysts read
-- person_link, link_review and link_runner_up instead.

-- Each linked record, its handle (rid) and its blocking keys.
CREATE TABLE link_record (
    rid              INTEGER PRIMARY KEY,
    source           TEXT NOT NULL,
    external_id      TEXT NOT NULL,
    lacks_birth_date INTEGER NOT NULL,      -- 1: compared in the blocks that need it
    keys             BLOB NOT NULL,         -- its blocking keys, 9 bytes each: hash (8), filtered (1)
    UNIQUE (source, external_id)
);

-- Blocks: key hash → members. `filtered` blocks compare only pairs with a side lacking a
-- birth date; a block needing more than max_block_pairs comparisons is skipped.
CREATE TABLE link_key (
    key              INTEGER NOT NULL,
    rid              INTEGER NOT NULL,
    lacks_birth_date INTEGER NOT NULL,
    filtered         INTEGER NOT NULL,
    PRIMARY KEY (key, rid)
) WITHOUT ROWID;

-- Kept comparisons, stored in both directions. `strong`: clustering reads the pair (it joins
-- the two records' link-graph components); the others only feed review and runners-up.
CREATE TABLE link_edge (
    rid    INTEGER NOT NULL,
    other  INTEGER NOT NULL,
    strong INTEGER NOT NULL,
    PRIMARY KEY (rid, other)
) WITHOUT ROWID;

-- The matching settings the state was computed with; other settings mean a full re-link.
CREATE TABLE link_state (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    config_hash TEXT NOT NULL,
    built_at    TEXT NOT NULL
);
