-- Performance (issue 7): `person_provenance.fields` names each field by a number and lists the
-- fields one record won by one rule together, instead of a name and a [record, rule] pair per
-- field (about 1.7 KB a person, the third largest table). `field_provenance` keeps its columns,
-- so analysts' queries do not change.
--
-- fields: JSON array of [index into records, survivorship rule, [field_id, ...]], ordered by
-- record index then rule, the field ids ascending.

-- Every canonical field, numbered as `crate::model::Field` declares them. A field added later
-- takes the next number, in a migration of its own.
CREATE TABLE canonical_field (
    field_id  INTEGER PRIMARY KEY,
    name      TEXT NOT NULL UNIQUE
);

INSERT INTO canonical_field (field_id, name) VALUES
    (0, 'given_name'),
    (1, 'family_name'),
    (2, 'preferred_name'),
    (3, 'title'),
    (4, 'birth_date'),
    (5, 'gender'),
    (6, 'email'),
    (7, 'phone'),
    (8, 'mobile'),
    (9, 'building_number'),
    (10, 'address_line1'),
    (11, 'address_line2'),
    (12, 'address_line3'),
    (13, 'town'),
    (14, 'county'),
    (15, 'postcode'),
    (16, 'country'),
    (17, 'nhs_number'),
    (18, 'ni_number'),
    (19, 'passport_number'),
    (20, 'nationality'),
    (21, 'service_user.ref'),
    (22, 'service_user.account_code'),
    (23, 'service_user.patient_id'),
    (24, 'service_user.broadcare_number'),
    (25, 'service_user.service'),
    (26, 'service_user.funding_type'),
    (27, 'service_user.status'),
    (28, 'service_user.location_id'),
    (29, 'service_user.day_care_use'),
    (30, 'service_user.day_care_status'),
    (31, 'service_user.fnc_application_status'),
    (32, 'service_user.fnc_application_date'),
    (33, 'service_user.given_age'),
    (34, 'service_user.dementia'),
    (35, 'service_user.dementia_challenging_behaviour'),
    (36, 'service_user.dementia_prone_to_wander'),
    (37, 'service_user.assistance_with_dressing'),
    (38, 'service_user.assistance_with_eating'),
    (39, 'service_user.assistance_with_medication'),
    (40, 'service_user.assistance_with_personal_care'),
    (41, 'service_user.mobility_bed_bound'),
    (42, 'service_user.mobility_can_walk_unaided'),
    (43, 'service_user.mobility_requires_aid_or_hoist'),
    (44, 'service_user.mobility_uses_stick'),
    (45, 'service_user.mobility_uses_wheelchair'),
    (46, 'service_user.registered_blind'),
    (47, 'service_user.visually_impaired'),
    (48, 'service_user.end_of_life_care'),
    (49, 'service_user.religions'),
    (50, 'service_user.religions_other'),
    (51, 'service_user.genders_other'),
    (52, 'service_user.deactivated_at'),
    (53, 'service_user.reason_for_leaving'),
    (54, 'service_user.leaving_notes'),
    (55, 'service_user.day_care_deactivated_at'),
    (56, 'service_user.day_care_reason_for_leaving'),
    (57, 'service_user.day_care_leaving_notes'),
    (58, 'service_user.funding_at_risk_at'),
    (59, 'service_user.anonymized_at'),
    (60, 'service_user.transferred_from'),
    (61, 'service_user.partner_in_care_home'),
    (62, 'staff_user.role'),
    (63, 'staff_user.location_role'),
    (64, 'staff_user.location_role_other'),
    (65, 'staff_user.location_ids'),
    (66, 'staff_user.location_group_ids'),
    (67, 'staff_user.suspended_at'),
    (68, 'staff_user.reason_for_suspension'),
    (69, 'staff_user.invited_at'),
    (70, 'staff_user.invite_accepted_at'),
    (71, 'staff_user.status'),
    (72, 'staff_user.locked'),
    (73, 'staff_user.organisation'),
    (74, 'staff_user.parent_organisation'),
    (75, 'staff_user.username'),
    (76, 'health_profile.allergies'),
    (77, 'health_profile.medications'),
    (78, 'health_profile.health_conditions'),
    (79, 'health_profile.language_preferences'),
    (80, 'health_profile.sms_notifications_disabled'),
    (81, 'health_profile.notifications_disabled'),
    (82, 'lifestyle.relationship_status'),
    (83, 'lifestyle.number_of_children'),
    (84, 'lifestyle.ages_of_children'),
    (85, 'lifestyle.smoker'),
    (86, 'lifestyle.cigarettes_per_week'),
    (87, 'lifestyle.drinker'),
    (88, 'lifestyle.units_per_week'),
    (89, 'lifestyle.terms_accepted'),
    (90, 'lifestyle.last_visited_at'),
    (91, 'lifestyle.visits'),
    (92, 'source_record.source_created_at'),
    (93, 'source_record.source_modified_at');

UPDATE person_provenance SET fields = (
    SELECT json_group_array(json(grp) ORDER BY idx, rule)
    FROM (SELECT idx, rule, json_array(idx, rule, json_group_array(field_id ORDER BY field_id)) AS grp
          FROM (SELECT json_extract(f.value, '$[0]') AS idx,
                       json_extract(f.value, '$[1]') AS rule,
                       c.field_id AS field_id
                FROM json_each(person_provenance.fields) f
                JOIN canonical_field c ON c.name = f.key)
          GROUP BY idx, rule)
);

DROP VIEW field_provenance;

CREATE VIEW field_provenance AS
SELECT p.person_id                    AS person_id,
       c.name                         AS field,
       json_extract(r.value, '$[0]')  AS source,
       json_extract(r.value, '$[1]')  AS external_id,
       json_extract(r.value, '$[2]')  AS observed_at,
       json_extract(g.value, '$[1]')  AS rule
FROM person_provenance p
JOIN json_each(p.fields) g
JOIN json_each(g.value, '$[2]') f
JOIN canonical_field c ON c.field_id = f.value
JOIN json_each(p.records) r ON r.key = json_extract(g.value, '$[0]');
