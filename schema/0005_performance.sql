-- Performance (issue 7): a person's links in (source, external_id) order straight from the
-- index, without visiting the table. Replaces person_link_by_person, of which it is a
-- superset (same leading column).
CREATE INDEX person_link_by_person_source ON person_link (person_id, source, external_id, kind);
DROP INDEX person_link_by_person;
