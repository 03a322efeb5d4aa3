-- Performance (issue 7): a full link no longer holds every record in memory. It stores each
-- record's prepared features once, then scores the blocks and links the components reading
-- them back from here, a part at a time.
--
-- `kind`: the record's source kind; `features`: its normalised identifying values and
-- blocking keys in a compact binary form (identity::features, version byte first). Both are
-- written by every link; the stored state predates them, so the next link is a full one.
ALTER TABLE link_record ADD COLUMN kind TEXT;
ALTER TABLE link_record ADD COLUMN features BLOB;
DELETE FROM link_state;
