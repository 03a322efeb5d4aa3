-- Performance (issue 7): records deleted upstream, found without visiting every stored
-- record (`plan` reads the live content hash from canonical_record and excludes these).
CREATE INDEX source_record_deleted ON source_record (source, external_id)
WHERE deleted_at IS NOT NULL;
