//! Every field each API documents, as read and as written. Mapping files are checked against
//! these lists on load.
//!
//! The lists live in code, not in the mapping files, on purpose: they are the transcription of
//! `api-docs/` (plus the quirks in `api-notes.md`), reviewed once, and they are what makes the
//! "nothing is lost" check meaningful. A mapping file must account for every readable field
//! here (mapped, or listed in `keep_raw`); if the file carried its own list, a field forgotten
//! in both places would pass unnoticed.
//!
//! Paths are dotted for nested objects (`street_address.postcode`). A path that holds a free
//! map (`AdditionalDetails`, `meta`) is one opaque entry: its keys are data, not fields.

/// One of the five source APIs, as named in `sync.toml` and in a mapping file's `source`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SourceSchema {
    CarehqServiceUsers,
    CarehqUsers,
    MarketplaceUsers,
    CarevalidateUsers,
    PaceUsers,
}

impl SourceSchema {
    pub const ALL: [SourceSchema; 5] = [
        SourceSchema::CarehqServiceUsers,
        SourceSchema::CarehqUsers,
        SourceSchema::MarketplaceUsers,
        SourceSchema::CarevalidateUsers,
        SourceSchema::PaceUsers,
    ];

    /// The same names as `crate::source::SourceKind::as_str`.
    pub fn name(self) -> &'static str {
        match self {
            SourceSchema::CarehqServiceUsers => "carehq_service_users",
            SourceSchema::CarehqUsers => "carehq_users",
            SourceSchema::MarketplaceUsers => "marketplace_users",
            SourceSchema::CarevalidateUsers => "carevalidate_users",
            SourceSchema::PaceUsers => "pace_users",
        }
    }

    pub fn from_name(name: &str) -> Option<SourceSchema> {
        SourceSchema::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Fields a record read from the API may carry.
    pub fn readable(self) -> &'static [&'static str] {
        match self {
            SourceSchema::CarehqServiceUsers => CAREHQ_SERVICE_USERS_READ,
            SourceSchema::CarehqUsers => CAREHQ_USERS_READ,
            SourceSchema::MarketplaceUsers => MARKETPLACE_READ,
            SourceSchema::CarevalidateUsers => CAREVALIDATE_READ,
            SourceSchema::PaceUsers => PACE_READ,
        }
    }

    /// Fields a create or update request may carry. Empty: the API is read-only.
    pub fn writable(self) -> &'static [&'static str] {
        match self {
            SourceSchema::CarehqServiceUsers => CAREHQ_SERVICE_USERS_WRITE,
            SourceSchema::CarehqUsers => &[],
            SourceSchema::MarketplaceUsers => MARKETPLACE_WRITE,
            SourceSchema::CarevalidateUsers => CAREVALIDATE_WRITE,
            SourceSchema::PaceUsers => PACE_WRITE,
        }
    }

    /// Readable paths whose value is a free map, not described field by field.
    pub fn opaque(self) -> &'static [&'static str] {
        match self {
            SourceSchema::MarketplaceUsers => &["meta"],
            SourceSchema::PaceUsers => &["AdditionalDetails"],
            _ => &[],
        }
    }

    pub fn is_readable(self, path: &str) -> bool {
        self.readable().contains(&path)
    }

    pub fn is_writable(self, path: &str) -> bool {
        self.writable().contains(&path)
    }
}

/// `api-docs/carehq-service-users.txt`, "The service user object", plus `dob_str` and
/// `fnc_application_date_str`, which the create response uses instead (`api-notes.md`).
const CAREHQ_SERVICE_USERS_READ: &[&str] = &[
    "_id",
    "account_code",
    "anonymized",
    "assistance_with_dressing",
    "assistance_with_eating",
    "assistance_with_medication",
    "assistance_with_personal_care",
    "bill_self_for_expenses",
    "billing_comms_preference",
    "billing_enabled",
    "broadcare_number",
    "created",
    "day_care_deactivated",
    "day_care_leaving_notes",
    "day_care_reason_for_leaving",
    "day_care_status",
    "day_care_use",
    "deactivated",
    "dementia",
    "dementia_challenging_behaviour",
    "dementia_prone_to_wander",
    "dob",
    "dob_str",
    "email_invoices_to",
    "end_of_life_care",
    "first_name",
    "fnc_application_date",
    "fnc_application_date_str",
    "fnc_application_status",
    "funding_at_risk",
    "funding_type",
    "future_billing_disabled",
    "genders",
    "genders_other",
    "given_age",
    "has_direct_debit_mandate",
    "invoices_service_user_id_fields",
    "large_print_requested_for_billing",
    "last_name",
    "leaving_notes",
    "location",
    "location_contact_for_expenses",
    "lon_lat",
    "min_ledger_balance",
    "mobile",
    "mobility_bed_bound",
    "mobility_can_walk_unaided",
    "mobility_requires_aid_or_hoist",
    "mobility_uses_stick",
    "mobility_uses_wheelchair",
    "modified",
    "national_insurance_number",
    "nhs_number",
    "notes",
    "partner_in_care_home",
    "patient_id",
    "payment_method",
    "postal_address.address_1",
    "postal_address.address_2",
    "postal_address.town",
    "postal_address.county",
    "postal_address.postcode",
    "postal_address.country",
    "preferred_name",
    "reason_for_leaving",
    "ref",
    "registered_blind",
    "religions",
    "religions_other",
    "send_balance_alert",
    "service",
    "service_user_contact_for_expenses",
    "source_care_enquiry",
    "statement_ref",
    "status",
    "street_address.address_1",
    "street_address.address_2",
    "street_address.town",
    "street_address.county",
    "street_address.postcode",
    "street_address.country",
    "title",
    "transferred_from",
    "visually_impaired",
];

/// "Create a service user" parameters; the sink flattens `street_address.x` to
/// `street_address-x`. `phone` can be written but is never read back.
const CAREHQ_SERVICE_USERS_WRITE: &[&str] = &[
    "account_code",
    "assistance_with_dressing",
    "assistance_with_eating",
    "assistance_with_medication",
    "assistance_with_personal_care",
    "broadcare_number",
    "day_care_use",
    "dementia",
    "dementia_challenging_behaviour",
    "dementia_prone_to_wander",
    "dob",
    "end_of_life_care",
    "first_name",
    "fnc_application_date",
    "fnc_application_status",
    "funding_type",
    "genders",
    "genders_other",
    "given_age",
    "last_name",
    "location",
    "mobile",
    "mobility_bed_bound",
    "mobility_can_walk_unaided",
    "mobility_requires_aid_or_hoist",
    "mobility_uses_stick",
    "mobility_uses_wheelchair",
    "national_insurance_number",
    "nhs_number",
    "notes",
    "patient_id",
    "phone",
    "preferred_name",
    "ref",
    "registered_blind",
    "religions",
    "religions_other",
    "service",
    "street_address.address_1",
    "street_address.address_2",
    "street_address.country",
    "street_address.county",
    "street_address.postcode",
    "street_address.town",
    "title",
    "visually_impaired",
];

/// `api-docs/carehq-users.txt`, "The user object", plus `location_role_label`, present in the
/// examples though undocumented.
const CAREHQ_USERS_READ: &[&str] = &[
    "_id",
    "created",
    "email",
    "first_name",
    "invite_accepted",
    "invited",
    "last_name",
    "location_groups",
    "location_role",
    "location_role_label",
    "location_role_other",
    "locations",
    "mfa_enabled",
    "mobile",
    "modified",
    "notify_on_admission_or_discharge",
    "notify_on_care_fund_depleted",
    "notify_on_data_export",
    "notify_on_ledger_balance_low",
    "notify_on_reply_received",
    "notify_on_service_user_funding_at_risk",
    "owner_operator",
    "owner_operator_location",
    "picture",
    "reason_for_suspension",
    "regional_operator",
    "role",
    "show_finance_inbox",
    "suspended",
];

/// `api-docs/marketplace-users.txt`, the user schema of "Get Users".
const MARKETPLACE_READ: &[&str] = &[
    "meta",
    "first_name",
    "surname",
    "preferred_name",
    "dob",
    "title",
    "postcode",
    "building_number",
    "address_1",
    "address_2",
    "address_3",
    "town_city",
    "county",
    "country_of_residence",
    "nationality",
    "gender",
    "relationship_status",
    "number_of_children",
    "ages_of_children",
    "partner_first_name",
    "partner_dob",
    "partner_surname",
    "partner_sex",
    "relationship_to_partner",
    "smoker",
    "number_of_cigarettes_per_week",
    "drinker",
    "number_of_units_per_week",
    "national_insurance_number",
    "passport_number",
    "phone_number",
    "mobile_number",
    "last_visited",
    "visits",
    "terms_conditions",
    "associated_cp_user",
    "email",
    "id",
    "created",
    "updated",
];

/// "Create a New User" / "Update user" bodies (`anon_user_id` on create only).
const MARKETPLACE_WRITE: &[&str] = &[
    "meta",
    "first_name",
    "surname",
    "preferred_name",
    "dob",
    "title",
    "postcode",
    "building_number",
    "address_1",
    "address_2",
    "address_3",
    "town_city",
    "county",
    "country_of_residence",
    "nationality",
    "gender",
    "relationship_status",
    "number_of_children",
    "ages_of_children",
    "partner_first_name",
    "partner_dob",
    "partner_surname",
    "partner_sex",
    "relationship_to_partner",
    "smoker",
    "number_of_cigarettes_per_week",
    "drinker",
    "number_of_units_per_week",
    "national_insurance_number",
    "passport_number",
    "phone_number",
    "mobile_number",
    "last_visited",
    "visits",
    "terms_conditions",
    "associated_cp_user",
    "email",
    "anon_user_id",
];

/// `api-docs/carevalidate-users.txt`, a user of "Get Users".
const CAREVALIDATE_READ: &[&str] = &[
    "email",
    "firstName",
    "lastName",
    "dob",
    "phoneNumber",
    "gender",
    "address",
    "address2",
    "city",
    "state",
    "country",
    "postalCode",
    "allergies",
    "currentMedications",
    "healthConditions",
    "languagePreferences",
    "communication.smsNotificationsDisabled",
    "communication.notificationsDisabled",
];

/// The `data` of `CREATE_USER` / `UPDATE_PROFILE` (`api-notes.md`): the same fields as read.
/// `email` is the key of an update, so it identifies the record rather than changing it.
const CAREVALIDATE_WRITE: &[&str] = CAREVALIDATE_READ;

/// `api-docs/pace-users.txt`, the user schema, plus the spellings with a space seen in items.
const PACE_READ: &[&str] = &[
    "UserGuid",
    "IsLocked",
    "UserStatus",
    "Organisation",
    "ParentOrganisation",
    "UserId",
    "FirstName",
    "LastName",
    "PreferredName",
    "Preferred Name",
    "TelephoneNumber",
    "Telephone Number",
    "EmailAddress",
    "AdditionalDetails",
];

/// The create and update bodies.
const PACE_WRITE: &[&str] = &[
    "UserId",
    "FirstName",
    "LastName",
    "PreferredName",
    "TelephoneNumber",
    "EmailAddress",
    "UserStatus",
    "AdditionalDetails",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_lists_have_no_duplicates() {
        for s in SourceSchema::ALL {
            assert_eq!(SourceSchema::from_name(s.name()), Some(s));
            for list in [s.readable(), s.writable()] {
                let mut sorted = list.to_vec();
                sorted.sort_unstable();
                sorted.dedup();
                assert_eq!(sorted.len(), list.len(), "{}", s.name());
            }
            for o in s.opaque() {
                assert!(s.is_readable(o));
            }
        }
    }
}
