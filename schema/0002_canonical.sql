-- The canonical layer: one person per real human, what each source record says in canonical
-- form, which records belong to whom and why, and where every value came from.
-- Column meanings: schema/DATA_DICTIONARY.md.

CREATE TABLE person (
    person_id INTEGER PRIMARY KEY,
    given_name TEXT,
    family_name TEXT,
    preferred_name TEXT,
    title TEXT,
    birth_date TEXT,
    gender TEXT,
    email TEXT,
    phone TEXT,
    mobile TEXT,
    building_number TEXT,
    address_line1 TEXT,
    address_line2 TEXT,
    address_line3 TEXT,
    town TEXT,
    county TEXT,
    postcode TEXT,
    country TEXT,
    nhs_number TEXT,
    ni_number TEXT,
    passport_number TEXT,
    nationality TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE TABLE service_user (
    person_id INTEGER PRIMARY KEY REFERENCES person (person_id) ON DELETE CASCADE,
    ref TEXT,
    account_code TEXT,
    patient_id TEXT,
    broadcare_number TEXT,
    service TEXT,
    funding_type TEXT,
    status TEXT,
    location_id TEXT,
    day_care_use TEXT,
    day_care_status TEXT,
    fnc_application_status TEXT,
    fnc_application_date TEXT,
    given_age INTEGER,
    dementia INTEGER,
    dementia_challenging_behaviour INTEGER,
    dementia_prone_to_wander INTEGER,
    assistance_with_dressing INTEGER,
    assistance_with_eating INTEGER,
    assistance_with_medication INTEGER,
    assistance_with_personal_care INTEGER,
    mobility_bed_bound INTEGER,
    mobility_can_walk_unaided INTEGER,
    mobility_requires_aid_or_hoist INTEGER,
    mobility_uses_stick INTEGER,
    mobility_uses_wheelchair INTEGER,
    registered_blind INTEGER,
    visually_impaired INTEGER,
    end_of_life_care INTEGER,
    religions TEXT,
    religions_other TEXT,
    genders_other TEXT,
    deactivated_at TEXT,
    reason_for_leaving TEXT,
    leaving_notes TEXT,
    day_care_deactivated_at TEXT,
    day_care_reason_for_leaving TEXT,
    day_care_leaving_notes TEXT,
    funding_at_risk_at TEXT,
    anonymized_at TEXT,
    transferred_from TEXT,
    partner_in_care_home TEXT,
    updated_at TEXT NOT NULL
);

CREATE TABLE staff_user (
    person_id INTEGER PRIMARY KEY REFERENCES person (person_id) ON DELETE CASCADE,
    role TEXT,
    location_role TEXT,
    location_role_other TEXT,
    location_ids TEXT,
    location_group_ids TEXT,
    suspended_at TEXT,
    reason_for_suspension TEXT,
    invited_at TEXT,
    invite_accepted_at TEXT,
    status TEXT,
    locked INTEGER,
    organisation TEXT,
    parent_organisation TEXT,
    username TEXT,
    updated_at TEXT NOT NULL
);

CREATE TABLE health_profile (
    person_id INTEGER PRIMARY KEY REFERENCES person (person_id) ON DELETE CASCADE,
    allergies TEXT,
    medications TEXT,
    health_conditions TEXT,
    language_preferences TEXT,
    sms_notifications_disabled INTEGER,
    notifications_disabled INTEGER,
    updated_at TEXT NOT NULL
);

CREATE TABLE lifestyle (
    person_id INTEGER PRIMARY KEY REFERENCES person (person_id) ON DELETE CASCADE,
    relationship_status TEXT,
    number_of_children INTEGER,
    ages_of_children TEXT,
    smoker INTEGER,
    cigarettes_per_week INTEGER,
    drinker INTEGER,
    units_per_week INTEGER,
    terms_accepted INTEGER,
    last_visited_at TEXT,
    visits INTEGER,
    updated_at TEXT NOT NULL
);

-- Each source record in canonical form (mapped by mappings/<kind>.toml).
CREATE TABLE canonical_record (
    source        TEXT NOT NULL,
    external_id   TEXT NOT NULL,
    kind          TEXT NOT NULL,
    content_hash  TEXT NOT NULL,          -- the source_record.content_hash it was mapped from
    mapping_hash  TEXT NOT NULL,          -- which version of the mapping file mapped it
    values_json   TEXT NOT NULL,          -- {"field": value, ...} in canonical form
    problems_json TEXT,                   -- [{"path","field","code","date"}]: fields that did not map (no values)
    mapped_at     TEXT NOT NULL,
    PRIMARY KEY (source, external_id)
);

-- Records that could not be mapped at all: kept raw in source_record, listed here.
CREATE TABLE mapping_failure (
    source       TEXT NOT NULL,
    external_id  TEXT NOT NULL,
    code         TEXT NOT NULL,           -- bounded set, e.g. required_field_missing
    reason       TEXT NOT NULL,           -- field names and reasons, never values
    mapping_hash TEXT NOT NULL,           -- which version of the mapping file failed on it
    failed_at    TEXT NOT NULL,
    PRIMARY KEY (source, external_id)
);

-- Which source record belongs to which person, and why.
CREATE TABLE person_link (
    source       TEXT NOT NULL,
    external_id  TEXT NOT NULL,
    kind         TEXT NOT NULL,
    person_id    INTEGER NOT NULL REFERENCES person (person_id) DEFERRABLE INITIALLY DEFERRED,
    rule         TEXT NOT NULL,           -- nhs_number, name_birth_date, email, probabilistic, unique_candidate;
                                          -- anchor (first record of a person), single (a person of one record)
    score        REAL,                    -- the match weight of the pair that linked it; NULL for anchor and single
    linked_at    TEXT NOT NULL,
    PRIMARY KEY (source, external_id)
);
CREATE INDEX person_link_by_person ON person_link (person_id);

-- Where each canonical value came from.
CREATE TABLE field_provenance (
    person_id    INTEGER NOT NULL REFERENCES person (person_id) ON DELETE CASCADE,
    field        TEXT NOT NULL,           -- canonical field name, e.g. mobile, service_user.status
    source       TEXT NOT NULL,           -- a source name, or 'operator' for an override
    external_id  TEXT,                    -- the record it came from (NULL for an override)
    observed_at  TEXT NOT NULL,           -- when caresync mapped that value (canonical_record.mapped_at), or the override's time
    rule         TEXT NOT NULL,           -- survivorship rule that chose it
    PRIMARY KEY (person_id, field)
);

-- Operator corrections (`caresync set`): they win survivorship; audited, and deleted only by
-- `caresync forget` (which leaves an erasure_log entry).
CREATE TABLE operator_override (
    override_id    INTEGER PRIMARY KEY,
    person_id      INTEGER NOT NULL,
    field          TEXT NOT NULL,
    value_json     TEXT NOT NULL,
    reason         TEXT NOT NULL,
    actor          TEXT NOT NULL,         -- `--actor`, or the operating-system user who made it
    created_at     TEXT NOT NULL,
    superseded_at  TEXT                   -- set when a later override of the same field replaces it
);
CREATE INDEX operator_override_by_person ON operator_override (person_id, field);

-- Records whose canonical form changed and must be re-linked; written with the change,
-- so a crash between mapping and linking loses nothing.
CREATE TABLE relink_queue (
    source       TEXT NOT NULL,
    external_id  TEXT NOT NULL,
    PRIMARY KEY (source, external_id)
);

-- Person ids are never reused: an override or audit entry of a removed person must not
-- attach to a new one.
CREATE TABLE id_sequence (
    name  TEXT PRIMARY KEY,
    next  INTEGER NOT NULL
);
INSERT INTO id_sequence (name, next) VALUES ('person', 1);

-- The best candidates scored against each person's records that were not linked (for
-- `caresync explain`).
CREATE TABLE link_runner_up (
    person_id          INTEGER NOT NULL,
    source             TEXT NOT NULL,
    external_id        TEXT NOT NULL,
    other_source       TEXT NOT NULL,
    other_external_id  TEXT NOT NULL,
    score              REAL NOT NULL,
    reason             TEXT NOT NULL,   -- below_threshold, different_nhs_number, ...
    computed_at        TEXT NOT NULL
);
CREATE INDEX link_runner_up_by_person ON link_runner_up (person_id);

-- Unlinked pairs worth a human look: scored at or above the review threshold, or refused by a
-- veto while sharing an identifier (e.g. one email, two NHS numbers). Shown in v_data_quality.
CREATE TABLE link_review (
    source_a       TEXT NOT NULL,
    external_id_a  TEXT NOT NULL,
    source_b       TEXT NOT NULL,
    external_id_b  TEXT NOT NULL,
    score          REAL NOT NULL,
    computed_at    TEXT NOT NULL,
    PRIMARY KEY (source_a, external_id_a, source_b, external_id_b)
);

CREATE VIEW v_person AS
SELECT p.*,
       (SELECT count(*) FROM person_link l WHERE l.person_id = p.person_id) AS linked_records,
       (SELECT count(*) FROM person_link l WHERE l.person_id = p.person_id AND l.kind = 'carehq_service_users') AS carehq_service_user_records,
       (SELECT count(*) FROM person_link l WHERE l.person_id = p.person_id AND l.kind = 'carehq_users') AS carehq_user_records,
       (SELECT count(*) FROM person_link l WHERE l.person_id = p.person_id AND l.kind = 'marketplace_users') AS marketplace_records,
       (SELECT count(*) FROM person_link l WHERE l.person_id = p.person_id AND l.kind = 'carevalidate_users') AS carevalidate_records,
       (SELECT count(*) FROM person_link l WHERE l.person_id = p.person_id AND l.kind = 'pace_users') AS pace_records,
       (SELECT json_group_object(source, n) FROM
           (SELECT source, count(*) AS n FROM person_link l WHERE l.person_id = p.person_id GROUP BY source)) AS records_by_source
FROM person p;

CREATE VIEW v_service_user AS
SELECT p.person_id, p.title, p.given_name, p.family_name, p.preferred_name, p.birth_date, p.gender,
       p.nhs_number, p.postcode,
       s.ref,
       s.account_code,
       s.patient_id,
       s.broadcare_number,
       s.service,
       s.funding_type,
       s.status,
       s.location_id,
       s.day_care_use,
       s.day_care_status,
       s.fnc_application_status,
       s.fnc_application_date,
       s.given_age,
       s.dementia,
       s.dementia_challenging_behaviour,
       s.dementia_prone_to_wander,
       s.assistance_with_dressing,
       s.assistance_with_eating,
       s.assistance_with_medication,
       s.assistance_with_personal_care,
       s.mobility_bed_bound,
       s.mobility_can_walk_unaided,
       s.mobility_requires_aid_or_hoist,
       s.mobility_uses_stick,
       s.mobility_uses_wheelchair,
       s.registered_blind,
       s.visually_impaired,
       s.end_of_life_care,
       s.religions,
       s.religions_other,
       s.genders_other,
       s.deactivated_at,
       s.reason_for_leaving,
       s.leaving_notes,
       s.day_care_deactivated_at,
       s.day_care_reason_for_leaving,
       s.day_care_leaving_notes,
       s.funding_at_risk_at,
       s.anonymized_at,
       s.transferred_from,
       s.partner_in_care_home,
       p.updated_at
FROM person p JOIN service_user s ON s.person_id = p.person_id;

CREATE VIEW v_staff AS
SELECT p.person_id, p.given_name, p.family_name, p.preferred_name, p.email, p.mobile, p.phone,
       s.role,
       s.location_role,
       s.location_role_other,
       s.location_ids,
       s.location_group_ids,
       s.suspended_at,
       s.reason_for_suspension,
       s.invited_at,
       s.invite_accepted_at,
       s.status,
       s.locked,
       s.organisation,
       s.parent_organisation,
       s.username,
       p.updated_at
FROM person p JOIN staff_user s ON s.person_id = p.person_id;

-- One row per data-quality finding; detail holds field names, codes and scores, never values.
CREATE VIEW v_data_quality AS
SELECT CASE
           WHEN json_extract(j.value, '$.field') = 'nhs_number' THEN 'invalid_nhs_number'
           WHEN json_extract(j.value, '$.date') THEN 'unparseable_date'
           ELSE 'invalid_value'
       END AS issue,
       c.source, c.external_id, l.person_id,
       json_extract(j.value, '$.field') AS field,
       json_extract(j.value, '$.path') || ': ' || json_extract(j.value, '$.code') AS detail
FROM canonical_record c
JOIN json_each(c.problems_json) j
JOIN source_record s ON s.source = c.source AND s.external_id = c.external_id AND s.deleted_at IS NULL
LEFT JOIN person_link l ON l.source = c.source AND l.external_id = c.external_id
UNION ALL
SELECT 'mapping_failed', f.source, f.external_id, NULL, NULL, f.code || ': ' || f.reason
FROM mapping_failure f
JOIN source_record s ON s.source = f.source AND s.external_id = f.external_id AND s.deleted_at IS NULL
UNION ALL
SELECT 'likely_duplicate', r.source_a, r.external_id_a, la.person_id, NULL,
       'scored ' || printf('%.2f', r.score) || ' against ' || r.source_b || '/' || r.external_id_b
       || COALESCE(' (person ' || lb.person_id || ')', '')
FROM link_review r
LEFT JOIN person_link la ON la.source = r.source_a AND la.external_id = r.external_id_a
LEFT JOIN person_link lb ON lb.source = r.source_b AND lb.external_id = r.external_id_b;
