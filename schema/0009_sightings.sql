-- Performance (issue 7): a scan no longer writes a mark on every record it sees. A sync over
-- unchanged data wrote one row per stored record (about a gigabyte of WAL at a million
-- records); now it writes none. Which records a scan saw is kept as one row of record ids
-- per page (`scan_sighting`) until the scan closes.
--
-- The two marks are renamed, so that a query written for their old meaning fails instead of
-- quietly reading a stale time. `v_source_record.last_seen_at` gives the old meaning.
ALTER TABLE source_record RENAME COLUMN last_seen_at TO sighting_stored_at;
ALTER TABLE source_record RENAME COLUMN seen_scan TO sighting_scan;

-- The records each page of a scan saw: `record_ids` is their source_record.record_id, 8
-- bytes each (little-endian). Deleted when the scan closes or a new scan of the source starts.
CREATE TABLE scan_sighting (
    sighting_id INTEGER PRIMARY KEY,
    source      TEXT NOT NULL,
    scan_id     INTEGER NOT NULL,
    record_ids  BLOB NOT NULL
);
CREATE INDEX scan_sighting_by_scan ON scan_sighting (source, scan_id);

-- Raw records with when each was last seen upstream: a live record was seen by every complete
-- scan of its source, so by the latest one (`sync_state.last_complete_at`) unless a later
-- sighting was stored; a deleted record when its last sighting was stored.
CREATE VIEW v_source_record AS
SELECT s.record_id, s.source, s.external_id, s.kind, s.payload, s.content_hash,
       s.first_seen_at,
       CASE WHEN s.deleted_at IS NULL AND st.last_complete_at > s.sighting_stored_at
            THEN st.last_complete_at ELSE s.sighting_stored_at END AS last_seen_at,
       s.changed_at, s.deleted_at
FROM source_record s
LEFT JOIN sync_state st ON st.source = s.source;

-- Which version of its mapping every live record of the source is mapped by: a scan maps only
-- what it reads, so after a new version an incremental sync re-maps the rest from their
-- stored payloads (`store::remap_stale`) and then records the version here.
ALTER TABLE sync_state ADD COLUMN mapping_hash TEXT;
