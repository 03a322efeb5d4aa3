//! Write-back: plan the writes that bring each source in line with the canonical person,
//! then push them through one loader per API. See `plan` and `push`.

pub mod plan;
pub mod push;

use std::collections::BTreeMap;

use reqwest::Method;
use serde_json::{Map, Value as Json, json};

use crate::source::http::{Body, Params, RequestSpec};
use crate::source::kind::SourceKind;
use crate::transform::WritePayload;

/// What finds a person's record in a source when a create's answer was lost.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NaturalKey {
    pub email: Option<String>,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub birth_date: Option<String>,
}

/// One API's writes: how a create and an update are encoded and sent, and how a record is
/// found by its natural key.
pub trait Loader: Send + Sync {
    fn create(&self, payload: &WritePayload, defaults: &BTreeMap<String, Json>) -> RequestSpec;
    fn update(&self, external_id: &str, payload: &WritePayload) -> RequestSpec;
    /// The new record's key (as the API gives it) from the create's answer.
    fn created_key(&self, answer: &[u8], payload: &WritePayload) -> Result<String, String>;
    /// A list-shaped request that finds records matching `key`; `None` when the key is not enough.
    fn find(&self, key: &NaturalKey) -> Option<RequestSpec>;
}

pub fn loader_for(kind: SourceKind) -> Option<Box<dyn Loader>> {
    match kind {
        SourceKind::CarehqServiceUsers => Some(Box::new(CareHqLoader)),
        SourceKind::CarehqUsers => None,
        SourceKind::MarketplaceUsers => Some(Box::new(MARKETPLACE)),
        SourceKind::CarevalidateUsers => Some(Box::new(CareValidateLoader)),
        SourceKind::PaceUsers => Some(Box::new(PACE)),
    }
}

fn request(method: Method, suffix: String, query: Params, body: Body) -> RequestSpec {
    RequestSpec {
        method,
        suffix,
        query,
        body,
    }
}

fn json_body(payload: &WritePayload, defaults: &BTreeMap<String, Json>) -> Map<String, Json> {
    let mut body: Map<String, Json> = defaults
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    body.extend(payload.to_json_body());
    body
}

/// CareHQ: form-encoded, nested fields dash-flattened, lists as repeated keys, booleans yes/no.
struct CareHqLoader;

pub fn carehq_form(payload: &WritePayload, defaults: &BTreeMap<String, Json>) -> Params {
    let mut form: Params = Vec::new();
    let mut push = |key: String, value: &Json| match value {
        Json::Null => {}
        Json::Array(items) => {
            for item in items {
                form.push((key.clone(), scalar(item)));
            }
        }
        other => form.push((key, scalar(other))),
    };
    for (k, v) in defaults {
        push(k.replace('.', "-"), v);
    }
    for entry in &payload.entries {
        push(entry.source_path.replace('.', "-"), &entry.value);
    }
    form
}

fn scalar(v: &Json) -> String {
    match v {
        Json::String(s) => s.clone(),
        Json::Bool(true) => "yes".into(),
        Json::Bool(false) => "no".into(),
        other => other.to_string(),
    }
}

impl Loader for CareHqLoader {
    fn create(&self, payload: &WritePayload, defaults: &BTreeMap<String, Json>) -> RequestSpec {
        request(
            Method::PUT,
            String::new(),
            Vec::new(),
            Body::Form(carehq_form(payload, defaults)),
        )
    }
    fn update(&self, external_id: &str, payload: &WritePayload) -> RequestSpec {
        request(
            Method::PATCH,
            format!("/{external_id}"),
            Vec::new(),
            Body::Form(carehq_form(payload, &BTreeMap::new())),
        )
    }
    fn created_key(&self, answer: &[u8], _: &WritePayload) -> Result<String, String> {
        key_in(answer, "_id")
    }
    fn find(&self, key: &NaturalKey) -> Option<RequestSpec> {
        let (given, family) = (key.given_name.as_ref()?, key.family_name.as_ref()?);
        key.birth_date.as_ref()?;
        let mut q: Params = crate::source::carehq::SERVICE_USER_ATTRIBUTES
            .iter()
            .map(|a| ("attributes".to_string(), a.to_string()))
            .collect();
        q.push(("filters-q".into(), format!("{given} {family}")));
        q.push(("per_page".into(), "100".into()));
        Some(request(Method::GET, String::new(), q, Body::None))
    }
}

/// A JSON API with create on the collection and update on the record: the marketplace
/// (`POST /users`, `POST /users/{id}`, key `id`, found by `email`) and PACE (`POST api/users`,
/// `PATCH api/users/{guid}` answering an empty 200, key `UserGuid`, found by `POST
/// api/users/filter`).
struct JsonLoader {
    update_method: Method,
    key_field: &'static str,
    find_by_email: fn(&str) -> RequestSpec,
}

const MARKETPLACE: JsonLoader = JsonLoader {
    update_method: Method::POST,
    key_field: "id",
    find_by_email: |email| {
        request(
            Method::GET,
            String::new(),
            vec![
                ("email".into(), email.into()),
                ("size".into(), "100".into()),
            ],
            Body::None,
        )
    },
};

const PACE: JsonLoader = JsonLoader {
    update_method: Method::PATCH,
    key_field: "UserGuid",
    find_by_email: |email| {
        request(
            Method::POST,
            "/filter".into(),
            Vec::new(),
            Body::Json(json!({ "EmailAddress": email })),
        )
    },
};

impl Loader for JsonLoader {
    fn create(&self, payload: &WritePayload, defaults: &BTreeMap<String, Json>) -> RequestSpec {
        request(
            Method::POST,
            String::new(),
            Vec::new(),
            Body::Json(Json::Object(json_body(payload, defaults))),
        )
    }
    fn update(&self, external_id: &str, payload: &WritePayload) -> RequestSpec {
        let body = Body::Json(Json::Object(payload.to_json_body()));
        request(
            self.update_method.clone(),
            format!("/{external_id}"),
            Vec::new(),
            body,
        )
    }
    fn created_key(&self, answer: &[u8], _: &WritePayload) -> Result<String, String> {
        key_in(answer, self.key_field)
    }
    fn find(&self, key: &NaturalKey) -> Option<RequestSpec> {
        key.email.as_deref().map(self.find_by_email)
    }
}

/// CareValidate: one call, `{"action": CREATE_USER | UPDATE_PROFILE, "data": {...}}`, keyed by email.
struct CareValidateLoader;

impl Loader for CareValidateLoader {
    fn create(&self, payload: &WritePayload, defaults: &BTreeMap<String, Json>) -> RequestSpec {
        let body = json!({ "action": "CREATE_USER", "data": json_body(payload, defaults) });
        request(Method::POST, String::new(), Vec::new(), Body::Json(body))
    }
    fn update(&self, external_id: &str, payload: &WritePayload) -> RequestSpec {
        let mut data = payload.to_json_body();
        data.insert("email".into(), Json::String(external_id.to_string()));
        request(
            Method::POST,
            String::new(),
            Vec::new(),
            Body::Json(json!({ "action": "UPDATE_PROFILE", "data": data })),
        )
    }
    fn created_key(&self, _answer: &[u8], payload: &WritePayload) -> Result<String, String> {
        payload
            .to_json_body()
            .get("email")
            .and_then(Json::as_str)
            .map(str::to_string)
            .ok_or_else(|| "a CareValidate user is keyed by email, and the create had none".into())
    }
    fn find(&self, key: &NaturalKey) -> Option<RequestSpec> {
        let email = key.email.as_ref()?;
        Some(request(
            Method::GET,
            String::new(),
            vec![
                ("email".into(), email.clone()),
                ("limit".into(), "100".into()),
            ],
            Body::None,
        ))
    }
}

fn key_in(answer: &[u8], field: &str) -> Result<String, String> {
    let v: Json = serde_json::from_slice(answer)
        .map_err(|e| format!("the create's answer is not JSON: {e}"))?;
    v.get(field)
        .and_then(Json::as_str)
        .map(str::to_string)
        .ok_or_else(|| format!("the create's answer has no `{field}`"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Field;
    use crate::transform::WriteEntry;

    fn payload(entries: &[(&str, Json)]) -> WritePayload {
        WritePayload {
            entries: entries
                .iter()
                .map(|(p, v)| WriteEntry {
                    field: Field::Mobile,
                    source_path: p.to_string(),
                    value: v.clone(),
                })
                .collect(),
            ..WritePayload::default()
        }
    }

    #[test]
    fn carehq_forms_flatten_lists_booleans_and_nesting() {
        let p = payload(&[
            ("street_address.postcode", json!("NE2 1PA")),
            ("dementia", json!(true)),
            ("mobility_uses_stick", json!(false)),
            ("genders", json!(["female"])),
            ("religions", json!(["christian", "jewish"])),
        ]);
        let defaults = BTreeMap::from([("day_care_use".to_string(), json!("not_used"))]);
        let form = carehq_form(&p, &defaults);
        let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(
            pairs,
            vec![
                ("day_care_use", "not_used"),
                ("street_address-postcode", "NE2 1PA"),
                ("dementia", "yes"),
                ("mobility_uses_stick", "no"),
                ("genders", "female"),
                ("religions", "christian"),
                ("religions", "jewish"),
            ]
        );
        let spec = CareHqLoader.update("abc", &p);
        assert_eq!((spec.method, spec.suffix.as_str()), (Method::PATCH, "/abc"));
        assert_eq!(CareHqLoader.create(&p, &defaults).method, Method::PUT);
    }

    #[test]
    fn carevalidate_updates_are_keyed_by_email() {
        let spec = CareValidateLoader.update(
            "jo@example.org",
            &payload(&[("phoneNumber", json!("+447700900123"))]),
        );
        match spec.body {
            Body::Json(v) => {
                assert_eq!(v["action"], "UPDATE_PROFILE");
                assert_eq!(v["data"]["email"], "jo@example.org");
                assert_eq!(v["data"]["phoneNumber"], "+447700900123");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn created_keys_come_from_each_answer() {
        assert_eq!(
            PACE.created_key(br#"{"UserGuid":"6d41"}"#, &WritePayload::default())
                .unwrap(),
            "6d41"
        );
        assert_eq!(
            CareHqLoader
                .created_key(br#"{"_id":"69a9"}"#, &WritePayload::default())
                .unwrap(),
            "69a9"
        );
        assert!(
            MARKETPLACE
                .created_key(b"", &WritePayload::default())
                .is_err()
        );
    }
}
