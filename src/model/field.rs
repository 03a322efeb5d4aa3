//! The canonical fields: which table and column each lives in, and what it may hold.

use chrono::DateTime;

use super::{
    CountryCode, Email, Gender, InvalidValue, NhsNumber, NiNumber, PassportNumber, PhoneNumber,
    Postcode, Value, ValueType, check_date_range, parse_iso_date,
};

/// The tables of the canonical schema that hold mapped values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    /// One row per real person.
    Person,
    /// CareHQ care attributes of a resident or client.
    ServiceUser,
    /// CareHQ user and PACE user attributes of a member of staff.
    StaffUser,
    /// CareValidate health data.
    HealthProfile,
    /// Marketplace lifestyle data.
    Lifestyle,
    /// Facts about the source record itself (its own timestamps), not about the person.
    SourceRecord,
}

impl Table {
    pub const ALL: [Table; 6] = [
        Table::Person,
        Table::ServiceUser,
        Table::StaffUser,
        Table::HealthProfile,
        Table::Lifestyle,
        Table::SourceRecord,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Table::Person => "person",
            Table::ServiceUser => "service_user",
            Table::StaffUser => "staff_user",
            Table::HealthProfile => "health_profile",
            Table::Lifestyle => "lifestyle",
            Table::SourceRecord => "source_record",
        }
    }
}

/// What a field may hold, beyond its storage type. Each kind has one canonical form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    /// Trimmed, non-empty text.
    Text,
    /// A name: trimmed, inner runs of white space collapsed to one space, casing as given.
    Name,
    /// `YYYY-MM-DD`, year 1850–2200.
    Date,
    /// A UTC instant.
    DateTime,
    Bool,
    Int,
    /// An integer ≥ 0.
    Count,
    /// Trimmed, non-empty items, order kept.
    TextList,
    /// [`Email`].
    Email,
    /// [`PhoneNumber`] that is not a UK mobile.
    Phone,
    /// [`PhoneNumber`] that is a UK mobile.
    Mobile,
    /// [`NhsNumber`].
    NhsNumber,
    /// [`NiNumber`].
    NiNumber,
    /// [`Postcode`].
    Postcode,
    /// [`PassportNumber`].
    Passport,
    /// [`CountryCode`].
    Country,
    /// A [`Gender`] token.
    Gender,
    /// One token of a closed vocabulary.
    Token(&'static [&'static str]),
}

impl FieldKind {
    pub fn value_type(self) -> ValueType {
        match self {
            FieldKind::Date => ValueType::Date,
            FieldKind::DateTime => ValueType::DateTime,
            FieldKind::Bool => ValueType::Bool,
            FieldKind::Int | FieldKind::Count => ValueType::Int,
            FieldKind::TextList => ValueType::TextList,
            FieldKind::Text
            | FieldKind::Name
            | FieldKind::Email
            | FieldKind::Phone
            | FieldKind::Mobile
            | FieldKind::NhsNumber
            | FieldKind::NiNumber
            | FieldKind::Postcode
            | FieldKind::Passport
            | FieldKind::Country
            | FieldKind::Gender
            | FieldKind::Token(_) => ValueType::Text,
        }
    }
}

pub const SERVICES: &[&str] = &[
    "assisted_living",
    "residential_home",
    "nursing_home",
    "independent_living",
    "learning_disability_care",
    "bariatric_care",
    "specialist_care",
    "home_care",
    "live_in_care",
];
pub const FUNDING_TYPES: &[&str] = &[
    "private",
    "local_authority",
    "local_authority_top_up",
    "chc",
    "chc_lifestyle",
    "block_bed",
    "dta_spot",
    "not_sure",
];
pub const SERVICE_USER_STATUSES: &[&str] = &["pending", "active", "inactive"];
pub const DAY_CARE_USES: &[&str] = &["exclusive", "inclusive", "not_used"];
pub const DAY_CARE_STATUSES: &[&str] = &["active", "inactive"];
pub const FNC_APPLICATION_STATUSES: &[&str] =
    &["not_applicable", "applied_for", "granted", "declined"];
pub const STAFF_ROLES: &[&str] = &[
    "account_owner",
    "regional_manager",
    "location_user",
    "care_advisor",
];
pub const LOCATION_ROLES: &[&str] = &[
    "manager",
    "deputy_manager",
    "administrator",
    "receptionist",
    "senior_carer",
    "carer",
    "customer_relations_adviser",
    "nurse",
    "other",
];
pub const STAFF_STATUSES: &[&str] = &["active", "archived", "suspended", "long_term_absent"];

/// Declares [`Field`] with its canonical name, table and kind in one list the compiler checks.
/// The canonical name is the column for `person`, `table.column` for every other table.
macro_rules! fields {
    ($( $(#[$doc:meta])* $variant:ident = $name:literal in $table:ident : $kind:expr; )*) => {
        /// A canonical field. The names are what mapping files write in `to = "..."`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Field {
            $( $(#[$doc])* $variant, )*
        }

        impl Field {
            pub const ALL: &'static [Field] = &[ $( Field::$variant, )* ];

            /// The field's number in `canonical_field` (its place in [`Field::ALL`]): a
            /// field added later goes at the end, with a migration adding its row.
            pub fn id(self) -> u16 {
                self as u16
            }

            /// `given_name`, `service_user.funding_type`, ...
            pub fn name(self) -> &'static str {
                match self { $( Field::$variant => $name, )* }
            }

            pub fn table(self) -> Table {
                match self { $( Field::$variant => Table::$table, )* }
            }

            pub fn kind(self) -> FieldKind {
                use FieldKind::*;
                match self { $( Field::$variant => $kind, )* }
            }
        }
    };
}

fields! {
    GivenName = "given_name" in Person: Name;
    FamilyName = "family_name" in Person: Name;
    PreferredName = "preferred_name" in Person: Name;
    /// As given: `Mrs`, `Dr`, `Rev`.
    Title = "title" in Person: Text;
    BirthDate = "birth_date" in Person: Date;
    Gender = "gender" in Person: Gender;
    Email = "email" in Person: Email;
    /// Any number that is not a UK mobile.
    Phone = "phone" in Person: Phone;
    /// A UK mobile, whatever field of the source held it.
    Mobile = "mobile" in Person: Mobile;
    BuildingNumber = "building_number" in Person: Text;
    AddressLine1 = "address_line1" in Person: Text;
    AddressLine2 = "address_line2" in Person: Text;
    AddressLine3 = "address_line3" in Person: Text;
    Town = "town" in Person: Text;
    County = "county" in Person: Text;
    Postcode = "postcode" in Person: Postcode;
    Country = "country" in Person: Country;
    NhsNumber = "nhs_number" in Person: NhsNumber;
    NiNumber = "ni_number" in Person: NiNumber;
    PassportNumber = "passport_number" in Person: Passport;
    /// As given (`British`); not normalised to a code.
    Nationality = "nationality" in Person: Text;

    ServiceUserRef = "service_user.ref" in ServiceUser: Text;
    AccountCode = "service_user.account_code" in ServiceUser: Text;
    PatientId = "service_user.patient_id" in ServiceUser: Text;
    BroadcareNumber = "service_user.broadcare_number" in ServiceUser: Text;
    Service = "service_user.service" in ServiceUser: Token(SERVICES);
    FundingType = "service_user.funding_type" in ServiceUser: Token(FUNDING_TYPES);
    ServiceUserStatus = "service_user.status" in ServiceUser: Token(SERVICE_USER_STATUSES);
    /// The CareHQ location id the person is a client of.
    LocationId = "service_user.location_id" in ServiceUser: Text;
    DayCareUse = "service_user.day_care_use" in ServiceUser: Token(DAY_CARE_USES);
    DayCareStatus = "service_user.day_care_status" in ServiceUser: Token(DAY_CARE_STATUSES);
    FncApplicationStatus = "service_user.fnc_application_status" in ServiceUser: Token(FNC_APPLICATION_STATUSES);
    FncApplicationDate = "service_user.fnc_application_date" in ServiceUser: Date;
    /// Estimated age when the birth date is unknown.
    GivenAge = "service_user.given_age" in ServiceUser: Count;
    Dementia = "service_user.dementia" in ServiceUser: Bool;
    DementiaChallengingBehaviour = "service_user.dementia_challenging_behaviour" in ServiceUser: Bool;
    DementiaProneToWander = "service_user.dementia_prone_to_wander" in ServiceUser: Bool;
    AssistanceWithDressing = "service_user.assistance_with_dressing" in ServiceUser: Bool;
    AssistanceWithEating = "service_user.assistance_with_eating" in ServiceUser: Bool;
    AssistanceWithMedication = "service_user.assistance_with_medication" in ServiceUser: Bool;
    AssistanceWithPersonalCare = "service_user.assistance_with_personal_care" in ServiceUser: Bool;
    MobilityBedBound = "service_user.mobility_bed_bound" in ServiceUser: Bool;
    MobilityCanWalkUnaided = "service_user.mobility_can_walk_unaided" in ServiceUser: Bool;
    MobilityRequiresAidOrHoist = "service_user.mobility_requires_aid_or_hoist" in ServiceUser: Bool;
    MobilityUsesStick = "service_user.mobility_uses_stick" in ServiceUser: Bool;
    MobilityUsesWheelchair = "service_user.mobility_uses_wheelchair" in ServiceUser: Bool;
    RegisteredBlind = "service_user.registered_blind" in ServiceUser: Bool;
    VisuallyImpaired = "service_user.visually_impaired" in ServiceUser: Bool;
    EndOfLifeCare = "service_user.end_of_life_care" in ServiceUser: Bool;
    /// CareHQ religion tokens (`christian`, `no_religion`, ...).
    Religions = "service_user.religions" in ServiceUser: TextList;
    ReligionsOther = "service_user.religions_other" in ServiceUser: Text;
    /// Free-text genders beyond CareHQ's list; the canonical `gender` is derived from the list.
    GendersOther = "service_user.genders_other" in ServiceUser: Text;
    /// Discharge: when the person left the location.
    DeactivatedAt = "service_user.deactivated_at" in ServiceUser: DateTime;
    ReasonForLeaving = "service_user.reason_for_leaving" in ServiceUser: Text;
    LeavingNotes = "service_user.leaving_notes" in ServiceUser: Text;
    DayCareDeactivatedAt = "service_user.day_care_deactivated_at" in ServiceUser: DateTime;
    DayCareReasonForLeaving = "service_user.day_care_reason_for_leaving" in ServiceUser: Text;
    DayCareLeavingNotes = "service_user.day_care_leaving_notes" in ServiceUser: Text;
    FundingAtRiskAt = "service_user.funding_at_risk_at" in ServiceUser: DateTime;
    AnonymizedAt = "service_user.anonymized_at" in ServiceUser: DateTime;
    /// The CareHQ service user this record was duplicated from on a transfer.
    TransferredFrom = "service_user.transferred_from" in ServiceUser: Text;
    /// The CareHQ id of a partner sharing the room: another person, never a match signal.
    PartnerInCareHome = "service_user.partner_in_care_home" in ServiceUser: Text;

    StaffRole = "staff_user.role" in StaffUser: Token(STAFF_ROLES);
    LocationRole = "staff_user.location_role" in StaffUser: Token(LOCATION_ROLES);
    LocationRoleOther = "staff_user.location_role_other" in StaffUser: Text;
    LocationIds = "staff_user.location_ids" in StaffUser: TextList;
    LocationGroupIds = "staff_user.location_group_ids" in StaffUser: TextList;
    SuspendedAt = "staff_user.suspended_at" in StaffUser: DateTime;
    ReasonForSuspension = "staff_user.reason_for_suspension" in StaffUser: Text;
    InvitedAt = "staff_user.invited_at" in StaffUser: DateTime;
    InviteAcceptedAt = "staff_user.invite_accepted_at" in StaffUser: DateTime;
    StaffStatus = "staff_user.status" in StaffUser: Token(STAFF_STATUSES);
    Locked = "staff_user.locked" in StaffUser: Bool;
    Organisation = "staff_user.organisation" in StaffUser: Text;
    ParentOrganisation = "staff_user.parent_organisation" in StaffUser: Text;
    /// The PACE login (`UserId`).
    Username = "staff_user.username" in StaffUser: Text;

    Allergies = "health_profile.allergies" in HealthProfile: TextList;
    Medications = "health_profile.medications" in HealthProfile: TextList;
    HealthConditions = "health_profile.health_conditions" in HealthProfile: TextList;
    LanguagePreferences = "health_profile.language_preferences" in HealthProfile: TextList;
    SmsNotificationsDisabled = "health_profile.sms_notifications_disabled" in HealthProfile: Bool;
    NotificationsDisabled = "health_profile.notifications_disabled" in HealthProfile: Bool;

    RelationshipStatus = "lifestyle.relationship_status" in Lifestyle: Text;
    NumberOfChildren = "lifestyle.number_of_children" in Lifestyle: Count;
    AgesOfChildren = "lifestyle.ages_of_children" in Lifestyle: Text;
    Smoker = "lifestyle.smoker" in Lifestyle: Bool;
    CigarettesPerWeek = "lifestyle.cigarettes_per_week" in Lifestyle: Count;
    Drinker = "lifestyle.drinker" in Lifestyle: Bool;
    UnitsPerWeek = "lifestyle.units_per_week" in Lifestyle: Count;
    TermsAccepted = "lifestyle.terms_accepted" in Lifestyle: Bool;
    LastVisitedAt = "lifestyle.last_visited_at" in Lifestyle: DateTime;
    Visits = "lifestyle.visits" in Lifestyle: Count;

    SourceCreatedAt = "source_record.source_created_at" in SourceRecord: DateTime;
    SourceModifiedAt = "source_record.source_modified_at" in SourceRecord: DateTime;
}

impl Field {
    /// The column in [`Field::table`].
    pub fn column(self) -> &'static str {
        self.name().rsplit('.').next().unwrap_or(self.name())
    }

    pub fn value_type(self) -> ValueType {
        self.kind().value_type()
    }

    pub fn from_name(name: &str) -> Option<Field> {
        Field::ALL.iter().copied().find(|f| f.name() == name)
    }

    /// The canonical form of `value` for this field, or why it cannot be one. A value that is
    /// already canonical comes back unchanged.
    pub fn canonicalise(self, value: &Value) -> Result<Value, InvalidValue> {
        let kind = self.kind();
        let expected = kind.value_type();
        if value.value_type() != expected {
            return Err(InvalidValue::WrongType(expected.as_str()));
        }
        let text = |parse: fn(&str) -> Result<String, InvalidValue>| match value {
            Value::Text(s) => parse(s).map(Value::Text),
            _ => Err(InvalidValue::WrongType(expected.as_str())),
        };
        match kind {
            FieldKind::Text => text(canonical_text),
            FieldKind::Name => text(canonical_name),
            FieldKind::Email => text(|s| Email::parse(s).map(|e| e.as_str().to_owned())),
            FieldKind::Phone => {
                text(|s| PhoneNumber::parse_not_uk_mobile(s).map(|p| p.as_str().to_owned()))
            }
            FieldKind::Mobile => {
                text(|s| PhoneNumber::parse_uk_mobile(s).map(|p| p.as_str().to_owned()))
            }
            FieldKind::NhsNumber => text(|s| NhsNumber::parse(s).map(|n| n.as_str().to_owned())),
            FieldKind::NiNumber => text(|s| NiNumber::parse(s).map(|n| n.as_str().to_owned())),
            FieldKind::Postcode => text(|s| Postcode::parse(s).map(|p| p.as_str().to_owned())),
            FieldKind::Passport => {
                text(|s| PassportNumber::parse(s).map(|p| p.as_str().to_owned()))
            }
            FieldKind::Country => text(|s| CountryCode::parse(s).map(|c| c.as_str().to_owned())),
            FieldKind::Gender => text(|s| Gender::from_token(s).map(|g| g.as_str().to_owned())),
            FieldKind::Token(vocabulary) => match value {
                Value::Text(s) if vocabulary.contains(&s.as_str()) => Ok(value.clone()),
                _ => Err(InvalidValue::NotInVocabulary),
            },
            FieldKind::Date => match value {
                Value::Date(d) => check_date_range(*d).map(Value::Date),
                _ => Err(InvalidValue::WrongType(expected.as_str())),
            },
            FieldKind::Count => match value {
                Value::Int(i) if *i < 0 => Err(InvalidValue::OutOfRange),
                _ => Ok(value.clone()),
            },
            FieldKind::TextList => match value {
                Value::TextList(items) => Ok(Value::TextList(canonical_list(items))),
                _ => Err(InvalidValue::WrongType(expected.as_str())),
            },
            FieldKind::DateTime | FieldKind::Bool | FieldKind::Int => Ok(value.clone()),
        }
    }

    /// Reads a value typed by a person (e.g. `caresync set PERSON field=value`) into its
    /// canonical form: phone numbers in any UK spelling, dates `YYYY-MM-DD`, booleans
    /// `true/false/yes/no`, lists comma-separated, gender as free text.
    pub fn parse_text(self, input: &str) -> Result<Value, InvalidValue> {
        let trimmed = input.trim();
        let value = match self.kind() {
            FieldKind::Date => Value::Date(parse_iso_date(trimmed)?),
            FieldKind::DateTime => DateTime::parse_from_rfc3339(trimmed)
                .map(|t| Value::DateTime(t.with_timezone(&chrono::Utc)))
                .map_err(|_| InvalidValue::BadFormat)?,
            FieldKind::Bool => match trimmed.to_ascii_lowercase().as_str() {
                "true" | "yes" => Value::Bool(true),
                "false" | "no" => Value::Bool(false),
                _ => return Err(InvalidValue::BadFormat),
            },
            FieldKind::Int | FieldKind::Count => {
                Value::Int(trimmed.parse().map_err(|_| InvalidValue::BadFormat)?)
            }
            FieldKind::TextList => Value::TextList(trimmed.split(',').map(str::to_owned).collect()),
            FieldKind::Gender => Value::Text(Gender::from_free_text(trimmed)?.as_str().to_owned()),
            _ => Value::Text(trimmed.to_owned()),
        };
        self.canonicalise(&value)
    }
}

fn canonical_text(s: &str) -> Result<String, InvalidValue> {
    let t = s.trim();
    if t.is_empty() {
        Err(InvalidValue::Empty)
    } else {
        Ok(t.to_owned())
    }
}

fn canonical_name(s: &str) -> Result<String, InvalidValue> {
    let joined = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if joined.is_empty() {
        Err(InvalidValue::Empty)
    } else {
        Ok(joined)
    }
}

fn canonical_list(items: &[String]) -> Vec<String> {
    items
        .iter()
        .map(|i| i.trim())
        .filter(|i| !i.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_qualified() {
        let mut names: Vec<_> = Field::ALL.iter().map(|f| f.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Field::ALL.len());
        for f in Field::ALL {
            match f.table() {
                Table::Person => assert!(!f.name().contains('.'), "{}", f.name()),
                t => assert_eq!(f.name(), format!("{}.{}", t.as_str(), f.column())),
            }
            assert_eq!(Field::from_name(f.name()), Some(*f));
        }
    }

    fn check(field: Field, input: &str, expected: Result<Value, InvalidValue>) {
        assert_eq!(
            field.parse_text(input),
            expected,
            "{} {input:?}",
            field.name()
        );
    }

    fn text(s: &str) -> Result<Value, InvalidValue> {
        Ok(Value::Text(s.to_owned()))
    }

    #[test]
    fn parse_text_per_kind() {
        check(Field::GivenName, "  Mary   Ann ", text("Mary Ann"));
        check(Field::GivenName, "   ", Err(InvalidValue::Empty));
        check(Field::Mobile, "07700 900123", text("+447700900123"));
        check(
            Field::Mobile,
            "020 7946 0000",
            Err(InvalidValue::NotUkMobile),
        );
        check(Field::Phone, "020 7946 0000", text("+442079460000"));
        check(Field::Phone, "07700 900123", Err(InvalidValue::IsUkMobile));
        check(Field::NhsNumber, "943 476 5919", text("9434765919"));
        check(Field::Gender, "Woman", text("female"));
        check(Field::FundingType, "chc", text("chc"));
        check(
            Field::FundingType,
            "CHC",
            Err(InvalidValue::NotInVocabulary),
        );
        check(Field::Smoker, "Yes", Ok(Value::Bool(true)));
        check(Field::NumberOfChildren, "-1", Err(InvalidValue::OutOfRange));
        check(
            Field::Allergies,
            "Peanuts, , Shellfish",
            Ok(Value::TextList(vec!["Peanuts".into(), "Shellfish".into()])),
        );
        check(Field::Country, "England", text("GB"));
    }

    #[test]
    fn canonicalise_rejects_wrong_type() {
        assert_eq!(
            Field::BirthDate.canonicalise(&Value::Text("1946-03-25".into())),
            Err(InvalidValue::WrongType("date"))
        );
    }
}
