//! CareHQ: service users and users. 1-based `page`/`per_page` with `page_count`; every
//! attribute must be asked for (the list returns only `_id` otherwise); every request signed.

pub mod signing;

use std::time::Duration;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::Lookup;
use super::http::Params;
use super::kind::SourceKind;
use super::{
    ListApi, Page, Paging, Position, Scope, WireId, key_from, key_text, keyed_records, param,
};
use crate::config::RateLimit;

/// Every documented attribute of a service user.
pub const SERVICE_USER_ATTRIBUTES: &[&str] = &[
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
    "email_invoices_to",
    "end_of_life_care",
    "first_name",
    "fnc_application_date",
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
    "postal_address",
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
    "street_address",
    "title",
    "transferred_from",
    "visually_impaired",
];

/// Every documented attribute of a user, plus `location_role_label`, which the API returns.
pub const USER_ATTRIBUTES: &[&str] = &[
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

/// The limit we assume until the API's headers say otherwise (`api-notes.md`).
pub fn assumed_rate_limit() -> RateLimit {
    RateLimit {
        requests: 10,
        per: Duration::from_secs(1),
    }
}

pub struct CareHqList {
    kind: SourceKind,
}

impl CareHqList {
    pub fn new(kind: SourceKind) -> CareHqList {
        CareHqList { kind }
    }

    /// A record's key (as [`ListApi::key_of`]) and modified time (as [`Modified`] reads it),
    /// reading the record once; twice only when the one reading fails.
    fn key_and_modified(&self, item: &str) -> (Result<String, String>, Option<String>) {
        match serde_json::from_str::<KeyAndModified>(item) {
            Ok(k) => (
                key_text(k.id),
                match k.modified {
                    Some(serde_json::Value::String(m)) => Some(m),
                    _ => None,
                },
            ),
            Err(_) => (
                self.key_of(item),
                serde_json::from_str::<Modified>(item)
                    .ok()
                    .and_then(|m| m.modified),
            ),
        }
    }

    fn attributes(&self) -> &'static [&'static str] {
        match self.kind {
            SourceKind::CarehqUsers => USER_ATTRIBUTES,
            _ => SERVICE_USER_ATTRIBUTES,
        }
    }
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    items: Vec<&'a RawValue>,
    page_count: Option<u32>,
    item_count: Option<u64>,
}

#[derive(Deserialize)]
struct Key {
    #[serde(rename = "_id")]
    id: Option<WireId>,
}

#[derive(Deserialize)]
struct Modified {
    modified: Option<String>,
}

/// A record's key and modified time in one reading of it; `modified` when it is text.
#[derive(Deserialize)]
struct KeyAndModified {
    #[serde(rename = "_id")]
    id: Option<WireId>,
    #[serde(default)]
    modified: Option<serde_json::Value>,
}

impl ListApi for CareHqList {
    fn kind(&self) -> SourceKind {
        self.kind
    }

    fn paging(&self) -> Paging {
        Paging::Numbered { first: 1 }
    }

    fn list_query(&self, position: &Position, page_size: u32, scope: &Scope) -> Params {
        let attributes = if scope.ids_only {
            &["_id"][..]
        } else {
            self.attributes()
        };
        let mut q: Params = attributes.iter().map(|a| param("attributes", a)).collect();
        if self.kind == SourceKind::CarehqUsers {
            q.push(param("filters-suspended", "unset"));
        }
        match &scope.modified_after {
            Some(after) => {
                q.push(param("filters-modified_after", after));
                q.push(param("sort_by", "modified"));
            }
            None => q.push(param("sort_by", "_id")),
        }
        let page = match position {
            Position::Page(n) => *n,
            Position::Cursor(_) => 1,
        };
        q.push(param("page", page));
        q.push(param("per_page", page_size));
        q
    }

    fn key_of(&self, item: &str) -> Result<String, String> {
        key_from::<Key>(item, |k| k.id)
    }

    fn lookups(&self, ids: &[String]) -> Vec<Lookup> {
        super::batched_lookups(ids, 100, |chunk| {
            let mut q: Params = self
                .attributes()
                .iter()
                .map(|a| param("attributes", a))
                .collect();
            q.extend(chunk.iter().map(|id| param("filters-ids", id)));
            if self.kind == SourceKind::CarehqUsers {
                q.push(param("filters-suspended", "unset"));
            }
            q.push(param("page", 1));
            q.push(param("per_page", 100));
            q
        })
    }

    fn parse_page(&self, body: &[u8]) -> Result<Page, String> {
        let env: Envelope<'_> =
            serde_json::from_slice(body).map_err(|e| format!("not a CareHQ list page: {e}"))?;
        let newest = std::cell::RefCell::new(None::<String>);
        let (records, problems) = keyed_records(self.kind, &env.items, |item| {
            let (key, modified) = self.key_and_modified(item);
            let mut newest = newest.borrow_mut();
            if modified > *newest {
                *newest = modified;
            }
            key
        });
        let newest_modified = newest.into_inner();
        Ok(Page {
            records,
            problems,
            total_pages: env.page_count,
            total_records: env.item_count,
            newest_modified,
            ..Page::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::transform::SourceSchema;

    /// One reading of a record gives the key and newest modified time two readings give,
    /// whatever the types of `_id` and `modified`.
    #[test]
    fn key_and_modified_read_as_two_readings_do() {
        let api = CareHqList::new(SourceKind::CarehqServiceUsers);
        let records = [
            r#"{"_id": "a1", "modified": "2026-01-02 10:00:00", "first_name": "Ann"}"#,
            r#"{"_id": "a2", "modified": 5}"#,
            r#"{"_id": "a3", "modified": null}"#,
            r#"{"_id": "a4", "modified": {"x": [1]}}"#,
            r#"{"modified": "2026-01-03 09:00:00"}"#,
            r#"{"_id": [1], "modified": "2026-01-04 09:00:00"}"#,
            r#"{"_id": 17, "modified": "2026-01-01 09:00:00", "modified": "2026-01-05 09:00:00"}"#,
            r#"{"_id": "a5", "_id": "a6"}"#,
            r#"{"_id": "a7"}"#,
        ];
        for item in records {
            let two = (
                api.key_of(item),
                serde_json::from_str::<Modified>(item)
                    .ok()
                    .and_then(|m| m.modified),
            );
            assert_eq!(api.key_and_modified(item), two, "{item}");
        }
        let body = format!(r#"{{"items": [{}], "page_count": 1}}"#, records.join(","));
        let page = api.parse_page(body.as_bytes()).unwrap();
        assert_eq!(page.newest_modified.as_deref(), Some("2026-01-04 09:00:00"));
        assert_eq!(page.records.len(), records.len());
    }

    /// The attributes we ask for are the documented fields the mappings read (their top-level
    /// names), less the two that only the create response uses: the lists must not drift.
    #[test]
    fn requested_attributes_match_the_documented_fields() {
        for (schema, asked) in [
            (SourceSchema::CarehqServiceUsers, SERVICE_USER_ATTRIBUTES),
            (SourceSchema::CarehqUsers, USER_ATTRIBUTES),
        ] {
            let documented: BTreeSet<&str> = schema
                .readable()
                .iter()
                .map(|p| p.split('.').next().unwrap_or(p))
                .filter(|p| !matches!(*p, "dob_str" | "fnc_application_date_str"))
                .collect();
            let asked: BTreeSet<&str> = asked.iter().copied().collect();
            assert_eq!(asked, documented, "{}", schema.name());
        }
    }
}
