//! Marketplace (MMOB) simulator: a FastAPI service at `/users`.
//!
//! Bearer auth (missing or non-bearer → 403 `{"detail":"Not authenticated"}`, wrong token →
//! 401), 0-based `page`, `size` default 50 / max 100 (422 beyond), newest first, `ids[]` and
//! `email` filters, `total`/`page` null unless [`super::SimOptions::marketplace_totals`],
//! `/users/` → 307 to `/users`, create `POST /users`, update `POST /users/{id}`.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::Response;
use axum::routing::any;
use serde_json::{Map, Value, json};

use super::SimState;
use super::http_util::{
    empty, header_str, iso_z, json_bytes, json_value, parse_iso, parse_pairs, value, values,
};
use super::store::Store;
use crate::source::kind::SourceKind;

const KIND: SourceKind = SourceKind::MarketplaceUsers;

pub fn router(state: SimState) -> Router {
    Router::new()
        .route("/users", any(collection))
        .route("/users/", any(redirect_slash))
        .route("/users/{id}", any(item))
        .route("/users/{id}/", any(redirect_slash))
        .fallback(not_found)
        .with_state(state)
}

fn detail(status: StatusCode, msg: &str) -> Response {
    json_value(status, &json!({ "detail": msg }))
}

async fn not_found() -> Response {
    detail(StatusCode::NOT_FOUND, "Not Found")
}

/// One pydantic v1 validation error.
fn verr(loc: &[Value], msg: &str, ty: &str) -> Value {
    json!({ "loc": loc, "msg": msg, "type": ty })
}

fn unprocessable(errors: Vec<Value>) -> Response {
    json_value(
        StatusCode::UNPROCESSABLE_ENTITY,
        &json!({ "detail": errors }),
    )
}

async fn redirect_slash(uri: Uri) -> Response {
    let path = uri.path().trim_end_matches('/');
    let target = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    };
    let mut resp = empty(StatusCode::TEMPORARY_REDIRECT);
    if let Ok(v) = HeaderValue::from_str(&target) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

fn authenticate(headers: &HeaderMap) -> Result<(), Response> {
    let raw = header_str(headers, header::AUTHORIZATION.as_str()).unwrap_or("");
    let (scheme, token) = raw.trim().split_once(' ').unwrap_or((raw, ""));
    if raw.is_empty() || token.trim().is_empty() || !scheme.eq_ignore_ascii_case("bearer") {
        return Err(detail(StatusCode::FORBIDDEN, "Not authenticated"));
    }
    if token.trim() != super::creds::MARKETPLACE_TOKEN {
        return Err(detail(
            StatusCode::UNAUTHORIZED,
            "Invalid authentication credentials",
        ));
    }
    Ok(())
}

async fn collection(
    State(state): State<SimState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = authenticate(&headers) {
        return r;
    }
    match method {
        Method::GET => list(&state, uri.query().unwrap_or("")),
        Method::POST => create(&state, &body),
        _ => detail(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed"),
    }
}

async fn item(
    State(state): State<SimState>,
    Path(id): Path<String>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = authenticate(&headers) {
        return r;
    }
    match method {
        Method::GET => match state.read(KIND).get(&id) {
            Some(rec) => json_bytes(StatusCode::OK, rec.body.to_vec()),
            None => detail(StatusCode::NOT_FOUND, "Not Found"),
        },
        Method::POST => update(&state, &id, &body),
        _ => detail(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed"),
    }
}

fn int_param(
    pairs: &[(String, String)],
    name: &str,
    default: i64,
    min: i64,
    max: Option<i64>,
    errors: &mut Vec<Value>,
) -> i64 {
    let Some(raw) = value(pairs, name) else {
        return default;
    };
    let loc = [json!("query"), json!(name)];
    match raw.trim().parse::<i64>() {
        Err(_) => {
            errors.push(verr(
                &loc,
                "value is not a valid integer",
                "type_error.integer",
            ));
            default
        }
        Ok(n) if n < min => {
            let mut e = verr(
                &loc,
                &format!("ensure this value is greater than or equal to {min}"),
                "value_error.number.not_ge",
            );
            e["ctx"] = json!({ "limit_value": min });
            errors.push(e);
            default
        }
        Ok(n) if max.is_some_and(|m| n > m) => {
            let m = max.unwrap_or(n);
            let mut e = verr(
                &loc,
                &format!("ensure this value is less than or equal to {m}"),
                "value_error.number.not_le",
            );
            e["ctx"] = json!({ "limit_value": m });
            errors.push(e);
            default
        }
        Ok(n) => n,
    }
}

fn build_view(store: &Store, email: Option<&str>, ids: &[String]) -> Vec<u32> {
    let email = email.map(|e| e.trim().to_lowercase());
    let mut slots: Vec<(i64, &str, u32)> = store
        .live()
        .filter(|(_, r)| {
            email
                .as_deref()
                .is_none_or(|e| r.meta.email_lc.as_deref() == Some(e))
                && (ids.is_empty() || ids.iter().any(|i| **i == *r.key))
        })
        .map(|(i, r)| (r.meta.created_ms, &*r.key, i))
        .collect();
    slots.sort_by(|a, b| (b.0, b.1).cmp(&(a.0, a.1)));
    slots.into_iter().map(|(_, _, i)| i).collect()
}

fn list(state: &SimState, query: &str) -> Response {
    let pairs = parse_pairs(query.as_bytes());
    let mut errors = Vec::new();
    let page = int_param(&pairs, "page", 0, 0, None, &mut errors);
    let size = int_param(
        &pairs,
        "size",
        50,
        1,
        Some(KIND.max_page_size() as i64),
        &mut errors,
    );
    if !errors.is_empty() {
        return unprocessable(errors);
    }
    let email = value(&pairs, "email");
    let ids: Vec<String> = values(&pairs, "ids[]")
        .iter()
        .map(|s| s.to_string())
        .collect();
    state.before_list(KIND);
    let repeat = state.faults().repeat_page;
    let store = state.read(KIND);
    let sig = format!("{email:?}|{ids:?}");
    let view = state
        .cell(KIND)
        .view(&store, &sig, |s| build_view(s, email, &ids));
    let size = size as usize;
    let serve = if repeat { 0 } else { page as usize };
    let start = serve.saturating_mul(size).min(view.len());
    let end = (start + size).min(view.len());
    let mut out = Vec::with_capacity(16 + (end - start) * 1500);
    out.extend_from_slice(b"{\"items\":[");
    for (n, slot) in view[start..end].iter().enumerate() {
        if let Some(rec) = store.at(*slot) {
            if n > 0 {
                out.push(b',');
            }
            out.extend_from_slice(&rec.body);
        }
    }
    let (total, page_v) = if state.options().marketplace_totals {
        let claimed = if repeat {
            view.len().max((page as usize + 2) * size)
        } else {
            view.len()
        };
        (claimed.to_string(), page.to_string())
    } else {
        ("null".to_string(), "null".to_string())
    };
    out.extend_from_slice(
        format!("],\"total\":{total},\"page\":{page_v},\"size\":{size}}}").as_bytes(),
    );
    json_bytes(StatusCode::OK, out)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Ty {
    Str,
    Int,
    Bool,
    DateTime,
    Email,
    Dict,
}

/// The user object's fields, in the documented order (`id`, `created`, `updated` are server-set).
const FIELDS: &[(&str, Ty)] = &[
    ("meta", Ty::Dict),
    ("first_name", Ty::Str),
    ("surname", Ty::Str),
    ("preferred_name", Ty::Str),
    ("dob", Ty::DateTime),
    ("title", Ty::Str),
    ("postcode", Ty::Str),
    ("building_number", Ty::Str),
    ("address_1", Ty::Str),
    ("address_2", Ty::Str),
    ("address_3", Ty::Str),
    ("town_city", Ty::Str),
    ("county", Ty::Str),
    ("country_of_residence", Ty::Str),
    ("nationality", Ty::Str),
    ("gender", Ty::Str),
    ("relationship_status", Ty::Str),
    ("number_of_children", Ty::Str),
    ("ages_of_children", Ty::Str),
    ("partner_first_name", Ty::Str),
    ("partner_dob", Ty::DateTime),
    ("partner_surname", Ty::Str),
    ("partner_sex", Ty::Str),
    ("relationship_to_partner", Ty::Str),
    ("smoker", Ty::Str),
    ("number_of_cigarettes_per_week", Ty::Int),
    ("drinker", Ty::Str),
    ("number_of_units_per_week", Ty::Int),
    ("national_insurance_number", Ty::Str),
    ("passport_number", Ty::Str),
    ("phone_number", Ty::Str),
    ("mobile_number", Ty::Str),
    ("last_visited", Ty::DateTime),
    ("visits", Ty::Int),
    ("terms_conditions", Ty::Bool),
    ("associated_cp_user", Ty::Str),
    ("email", Ty::Email),
];

const REQUIRED: &[&str] = &["first_name", "surname", "email"];

fn valid_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !s.chars().any(char::is_whitespace)
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains('@')
}

/// Validates a JSON body as pydantic v1 would; returns the coerced fields.
fn validate(body: &Bytes, create: bool) -> Result<Map<String, Value>, Response> {
    let parsed: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            return Err(unprocessable(vec![json!({
                "loc": ["body", e.column()],
                "msg": format!("Expecting value: line {} column {}", e.line(), e.column()),
                "type": "value_error.jsondecode",
                "ctx": { "msg": "Expecting value", "lineno": e.line(), "colno": e.column() }
            })]));
        }
    };
    let Value::Object(input) = parsed else {
        return Err(unprocessable(vec![verr(
            &[json!("body")],
            "value is not a valid dict",
            "type_error.dict",
        )]));
    };
    let mut errors = Vec::new();
    let mut out = Map::new();
    for (name, ty) in FIELDS {
        let loc = [json!("body"), json!(name)];
        let v = input.get(*name);
        if create && REQUIRED.contains(name) && v.is_none_or(Value::is_null) {
            errors.push(verr(&loc, "field required", "value_error.missing"));
            continue;
        }
        let Some(v) = v else { continue };
        if v.is_null() {
            if REQUIRED.contains(name) {
                errors.push(verr(
                    &loc,
                    "none is not an allowed value",
                    "type_error.none.not_allowed",
                ));
            } else {
                out.insert(name.to_string(), Value::Null);
            }
            continue;
        }
        let coerced = match ty {
            Ty::Str => match v {
                Value::String(_) => Some(v.clone()),
                Value::Number(n) => Some(Value::String(n.to_string())),
                _ => {
                    errors.push(verr(&loc, "str type expected", "type_error.str"));
                    None
                }
            },
            Ty::Int => match v {
                Value::Number(n) if n.is_i64() => Some(v.clone()),
                Value::String(s) if s.trim().parse::<i64>().is_ok() => {
                    Some(json!(s.trim().parse::<i64>().unwrap_or(0)))
                }
                _ => {
                    errors.push(verr(
                        &loc,
                        "value is not a valid integer",
                        "type_error.integer",
                    ));
                    None
                }
            },
            Ty::Bool => match v {
                Value::Bool(_) => Some(v.clone()),
                Value::Number(n) if n.as_i64() == Some(0) || n.as_i64() == Some(1) => {
                    Some(Value::Bool(n.as_i64() == Some(1)))
                }
                Value::String(s) => match s.to_lowercase().as_str() {
                    "true" | "yes" | "on" | "1" | "y" | "t" => Some(Value::Bool(true)),
                    "false" | "no" | "off" | "0" | "n" | "f" => Some(Value::Bool(false)),
                    _ => {
                        errors.push(verr(
                            &loc,
                            "value could not be parsed to a boolean",
                            "type_error.bool",
                        ));
                        None
                    }
                },
                _ => {
                    errors.push(verr(
                        &loc,
                        "value could not be parsed to a boolean",
                        "type_error.bool",
                    ));
                    None
                }
            },
            Ty::DateTime => match v.as_str().and_then(parse_iso) {
                Some(ms) => Some(Value::String(iso_z(ms))),
                None => {
                    errors.push(verr(
                        &loc,
                        "invalid datetime format",
                        "value_error.datetime",
                    ));
                    None
                }
            },
            Ty::Email => match v.as_str() {
                Some(s) if valid_email(s.trim()) => Some(Value::String(s.trim().to_string())),
                _ => {
                    errors.push(verr(
                        &loc,
                        "value is not a valid email address",
                        "value_error.email",
                    ));
                    None
                }
            },
            Ty::Dict => match v {
                Value::Object(_) => Some(v.clone()),
                _ => {
                    errors.push(verr(&loc, "value is not a valid dict", "type_error.dict"));
                    None
                }
            },
        };
        if let Some(c) = coerced {
            out.insert(name.to_string(), c);
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(unprocessable(errors))
    }
}

fn create(state: &SimState, body: &Bytes) -> Response {
    let fields = match validate(body, true) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let now = state.next_created(KIND);
    let seq = state.next_seq(KIND);
    let h = super::generator::mix(state.options().seed ^ 0x6d6d_6f62 ^ seq) as u128
        | ((super::generator::mix(seq ^ now as u64) as u128) << 64);
    let h = (h & !(0xf << 76) | (0x4 << 76)) & !(0x3 << 62) | (0x2 << 62);
    let hex = format!("{h:032x}");
    let id = format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    );
    let mut obj = Map::new();
    for (name, _) in FIELDS {
        let default = if *name == "meta" {
            json!({})
        } else {
            Value::Null
        };
        obj.insert(
            name.to_string(),
            fields.get(*name).cloned().unwrap_or(default),
        );
    }
    obj.insert("id".into(), Value::String(id.clone()));
    obj.insert("created".into(), Value::String(iso_z(now)));
    obj.insert("updated".into(), Value::String(iso_z(now)));
    let person = state.new_person_number();
    let meta = super::store::Meta {
        created_ms: now,
        modified_ms: now,
        ..Default::default()
    };
    let rec = state.build_record(KIND, person, Value::Object(obj), meta);
    let out = rec.body.to_vec();
    if !state.write(KIND).push(rec) {
        return detail(StatusCode::CONFLICT, "User already exists");
    }
    state.note_write(KIND);
    tracing::info!(kind = %KIND, id = %id, "marketplace user created");
    json_bytes(StatusCode::OK, out)
}

fn update(state: &SimState, id: &str, body: &Bytes) -> Response {
    let fields = match validate(body, false) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let mut store = state.write(KIND);
    let Some(slot) = store.slot_of(id) else {
        return detail(StatusCode::NOT_FOUND, "Not Found");
    };
    let Some(rec) = store.at(slot) else {
        return detail(StatusCode::NOT_FOUND, "Not Found");
    };
    let mut obj = match rec.value() {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    for (k, v) in fields {
        obj.insert(k, v);
    }
    let rec = state.touch(KIND, rec.person, Value::Object(obj), rec.meta.clone());
    let out = rec.body.to_vec();
    store.replace(slot, rec);
    drop(store);
    state.note_write(KIND);
    tracing::info!(kind = %KIND, id = %id, "marketplace user updated");
    json_bytes(StatusCode::OK, out)
}
