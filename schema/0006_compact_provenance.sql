-- Performance (issue 7): provenance is one row per person instead of one per field (about 30
-- rows per person, the largest table by far). `field_provenance` becomes a view with the same
-- columns, so analysts' queries do not change.
--
-- records: JSON array of the winning records, each [source, external_id or null, observed_at];
-- fields:  JSON object, canonical field name → [index into records, survivorship rule].
CREATE TABLE person_provenance (
    person_id  INTEGER PRIMARY KEY REFERENCES person (person_id) ON DELETE CASCADE,
    records    TEXT NOT NULL,
    fields     TEXT NOT NULL
);

INSERT INTO person_provenance (person_id, records, fields)
SELECT person_id,
       json_group_array(json_array(source, external_id, observed_at) ORDER BY field),
       json_group_object(field, json_array(idx, rule))
FROM (SELECT *, row_number() OVER (PARTITION BY person_id ORDER BY field) - 1 AS idx
      FROM field_provenance)
GROUP BY person_id;

DROP TABLE field_provenance;

-- json_extract rather than ->>, so that an analyst's older sqlite3 (before 3.38) can still
-- read the schema.
CREATE VIEW field_provenance AS
SELECT p.person_id                    AS person_id,
       f.key                          AS field,
       json_extract(r.value, '$[0]')  AS source,
       json_extract(r.value, '$[1]')  AS external_id,
       json_extract(r.value, '$[2]')  AS observed_at,
       json_extract(f.value, '$[1]')  AS rule
FROM person_provenance p
JOIN json_each(p.fields) f
JOIN json_each(p.records) r ON r.key = json_extract(f.value, '$[0]');
