-- Performance (issue 7): the relink queue is keyed by the record's `source_record.record_id`.
-- Keyed by (source, external_id), every queued record was an insert at a random place of a
-- second B-tree (the table's unique index): about a seventh of a backfill's extraction time at
-- 200k people. Record ids of new records only grow, so a backfill now appends.
-- Queued rows are kept; a row without a raw record (none is written so) keeps a negative id.
CREATE TABLE relink_queue_by_record (
    record_id    INTEGER PRIMARY KEY,     -- source_record.record_id
    source       TEXT NOT NULL,
    external_id  TEXT NOT NULL
);
INSERT INTO relink_queue_by_record (record_id, source, external_id)
SELECT coalesce(s.record_id, -q.rowid), q.source, q.external_id
FROM relink_queue q
LEFT JOIN source_record s ON s.source = q.source AND s.external_id = q.external_id;
DROP TABLE relink_queue;
ALTER TABLE relink_queue_by_record RENAME TO relink_queue;
