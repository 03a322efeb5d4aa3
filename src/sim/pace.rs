//! Cardinus PACE simulator: `api/users` (ASP.NET: routes and parameter names case-insensitive).
//!
//! `x-api-key` + `x-customer-id` auth (401 problem+json), 1-based `pageNumber`/`pageSize`
//! (default 100, clamped to 1..=100), the full PascalCase envelope whose links point at
//! `https://online.cardinus.com/api/Users?...`, `GET api/users/{id}` (guid case-insensitive),
//! `POST api/users/filter`, `GET api/users/overview`, create `POST api/users` → `{"UserGuid"}`,
//! update `PATCH api/users/{id}` → 200 with an empty body. Rate limit 5 per 10 s and an optional
//! daily quota, both 429 problem+json told apart by `title`.

use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::Response;
use serde_json::{Map, Value, json};

use super::SimState;
use super::http_util::{
    empty, header_str, json_bytes, json_value, parse_pairs, value_ci, with_type,
};
use super::store::{Meta, Record};
use crate::source::kind::SourceKind;

const KIND: SourceKind = SourceKind::PaceUsers;
pub const API_KEY_HEADER: &str = "x-api-key";
pub const CUSTOMER_HEADER: &str = "x-customer-id";
/// The host PACE's envelope links point at, whatever host served the request.
pub const LINK_BASE: &str = "https://online.cardinus.com/api/Users";

pub fn router(state: SimState) -> Router {
    Router::new().fallback(dispatch).with_state(state)
}

static TRACE: AtomicU64 = AtomicU64::new(1);

fn trace_id() -> String {
    let n = TRACE.fetch_add(1, Ordering::Relaxed);
    let a = super::generator::mix(n);
    let b = super::generator::mix(a);
    format!("00-{a:016x}{b:016x}-{:016x}-00", super::generator::mix(b))
}

/// An RFC 7807 problem (camelCase, with `traceId`).
pub fn problem(status: StatusCode, title: &str, detail: Option<&str>) -> Response {
    let mut body = json!({
        "type": type_for(status),
        "title": title,
        "status": status.as_u16(),
    });
    if let Some(d) = detail {
        body["detail"] = json!(d);
    }
    body["traceId"] = json!(trace_id());
    problem_response(status, &body)
}

fn problem_response(status: StatusCode, body: &Value) -> Response {
    with_type(
        status,
        serde_json::to_vec(body).unwrap_or_default(),
        "application/problem+json; charset=utf-8",
    )
}

fn type_for(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "https://tools.ietf.org/html/rfc7231#section-6.5.1",
        401 => "https://tools.ietf.org/html/rfc7235#section-3.1",
        404 => "https://tools.ietf.org/html/rfc7231#section-6.5.4",
        405 => "https://tools.ietf.org/html/rfc7231#section-6.5.5",
        409 => "https://tools.ietf.org/html/rfc7231#section-6.5.8",
        415 => "https://tools.ietf.org/html/rfc7231#section-6.5.13",
        429 => "https://tools.ietf.org/html/rfc6585#section-4",
        _ => "https://tools.ietf.org/html/rfc7231#section-6.6.1",
    }
}

/// The 429 for the rate limit (`Request rate exceeded`) or the quota.
pub fn too_many(title: &str, seconds: u64) -> Response {
    problem(
        StatusCode::TOO_MANY_REQUESTS,
        title,
        Some(&format!("Please try again in {seconds} second(s).")),
    )
}

fn validation(errors: Map<String, Value>) -> Response {
    let body = json!({
        "type": type_for(StatusCode::BAD_REQUEST),
        "title": "One or more validation errors occurred.",
        "status": 400,
        "errors": errors,
        "traceId": trace_id(),
    });
    problem_response(StatusCode::BAD_REQUEST, &body)
}

fn not_found() -> Response {
    problem(StatusCode::NOT_FOUND, "Not Found", None)
}

fn authenticate(headers: &HeaderMap) -> Result<(), Response> {
    let key = header_str(headers, API_KEY_HEADER).map(str::trim);
    let customer = header_str(headers, CUSTOMER_HEADER).map(str::trim);
    if key == Some(super::creds::PACE_API_KEY) && customer == Some(super::creds::PACE_CUSTOMER_ID) {
        Ok(())
    } else {
        Err(problem(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            Some("A valid API key and customer identifier are required."),
        ))
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    header_str(headers, header::CONTENT_TYPE.as_str())
        .is_some_and(|ct| ct.to_ascii_lowercase().starts_with("application/json"))
}

async fn dispatch(
    State(state): State<SimState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().trim_end_matches('/').to_ascii_lowercase();
    let Some(rest) = path.strip_prefix("/api/users") else {
        return not_found();
    };
    if let Err(r) = authenticate(&headers) {
        return r;
    }
    if let Err((title, secs)) = state.pace_admit() {
        tracing::debug!(status = 429, title, "pace limit exceeded");
        return too_many(title, secs);
    }
    let query = parse_pairs(uri.query().unwrap_or("").as_bytes());
    let sub = rest.strip_prefix('/').unwrap_or(rest);
    match (sub, &method) {
        ("", &Method::GET) => list(&state, &query, None),
        ("", &Method::POST) if !is_json(&headers) => unsupported(),
        ("", &Method::POST) => create(&state, &body),
        ("filter", &Method::POST) => {
            if body.iter().all(u8::is_ascii_whitespace) {
                return list(&state, &query, Some(Map::new()));
            }
            match serde_json::from_slice::<Value>(&body) {
                Ok(Value::Object(f)) => list(&state, &query, Some(f)),
                _ => body_invalid(),
            }
        }
        ("overview", &Method::GET) => overview(&state),
        ("", _) | ("filter", _) | ("overview", _) => {
            problem(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed", None)
        }
        (id, &Method::GET) if !id.contains('/') => match state.read(KIND).get(id) {
            Some(rec) => json_bytes(StatusCode::OK, rec.body.to_vec()),
            None => not_found(),
        },
        (_, &Method::PATCH) if !is_json(&headers) => unsupported(),
        (id, &Method::PATCH) if !id.contains('/') => update(&state, id, &body),
        _ => not_found(),
    }
}

fn unsupported() -> Response {
    problem(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "Unsupported Media Type",
        None,
    )
}

fn body_invalid() -> Response {
    let mut errors = Map::new();
    errors.insert(
        "$".into(),
        json!(["The JSON value could not be converted to the request model."]),
    );
    validation(errors)
}

fn int_query(
    query: &[(String, String)],
    name: &str,
    default: i64,
    errors: &mut Map<String, Value>,
) -> i64 {
    match value_ci(query, name) {
        None => default,
        Some(v) => match v.trim().parse::<i64>() {
            Ok(n) => n,
            Err(_) => {
                errors.insert(
                    name.into(),
                    json!([format!("The value '{v}' is not valid.")]),
                );
                default
            }
        },
    }
}

/// A property read case-insensitively, also under its spaced spelling.
fn prop<'a>(obj: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    let spaced = match name {
        "PreferredName" => Some("Preferred Name"),
        "TelephoneNumber" => Some("Telephone Number"),
        _ => None,
    };
    obj.iter()
        .find(|(k, _)| {
            k.eq_ignore_ascii_case(name) || spaced.is_some_and(|s| k.eq_ignore_ascii_case(s))
        })
        .map(|(_, v)| v)
}

fn matches_filter(rec: &Record, filter: &Map<String, Value>) -> bool {
    if filter.is_empty() {
        return true;
    }
    let Value::Object(item) = rec.value() else {
        return false;
    };
    let text = |name: &str| {
        prop(&item, name)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    for (k, want) in filter {
        if want.is_null() {
            continue;
        }
        let ok = match k.to_ascii_lowercase().as_str() {
            "islocked" => prop(&item, "IsLocked") == Some(want),
            "fullname" => want.as_str().is_some_and(|w| {
                format!("{} {}", text("FirstName"), text("LastName")).eq_ignore_ascii_case(w.trim())
            }),
            "parentorganisation" if want.as_str() == Some("N/A") => {
                prop(&item, "ParentOrganisation").is_none_or(Value::is_null)
            }
            name => {
                let field = [
                    "UserId",
                    "UserStatus",
                    "FirstName",
                    "LastName",
                    "PreferredName",
                    "EmailAddress",
                    "Organisation",
                    "ParentOrganisation",
                ]
                .into_iter()
                .find(|f| f.eq_ignore_ascii_case(name));
                match (field, want.as_str()) {
                    (Some(f), Some(w)) => text(f).trim().eq_ignore_ascii_case(w.trim()),
                    _ => true,
                }
            }
        };
        if !ok {
            return false;
        }
    }
    true
}

fn link(page: usize, size: usize) -> String {
    format!("{LINK_BASE}?pageNumber={page}&pageSize={size}")
}

fn list(
    state: &SimState,
    query: &[(String, String)],
    filter: Option<Map<String, Value>>,
) -> Response {
    let mut errors = Map::new();
    let page = int_query(query, "pageNumber", 1, &mut errors);
    let size = int_query(query, "pageSize", 100, &mut errors);
    if !errors.is_empty() {
        return validation(errors);
    }
    let page = page.max(1) as usize;
    let size = size.clamp(1, KIND.max_page_size() as i64) as usize;
    state.before_list(KIND);
    let repeat = state.faults().repeat_page;
    let store = state.read(KIND);
    let sig = match &filter {
        Some(f) if !f.is_empty() => serde_json::to_string(f).unwrap_or_default(),
        _ => String::new(),
    };
    let view = state.cell(KIND).view(&store, &sig, |s| {
        s.live()
            .filter(|(_, r)| filter.as_ref().is_none_or(|f| matches_filter(r, f)))
            .map(|(i, _)| i)
            .collect()
    });
    let total = view.len();
    let real_pages = total.div_ceil(size);
    let (serve, pages) = if repeat {
        (1, real_pages.max(page + 1))
    } else {
        (page, real_pages)
    };
    let start = (serve - 1).saturating_mul(size).min(total);
    let end = (start + size).min(total);
    let mut items = Vec::with_capacity((end - start) * 700);
    for (n, slot) in view[start..end].iter().enumerate() {
        if let Some(rec) = store.at(*slot) {
            if n > 0 {
                items.push(b',');
            }
            items.extend_from_slice(&rec.body);
        }
    }
    let next = (page < pages).then(|| link(page + 1, size));
    let prev = (page > 1).then(|| link(page - 1, size));
    let head = json!({
        "PageNumber": page,
        "PageSize": size,
        "FirstPage": link(1, size),
        "LastPage": link(pages.max(1), size),
        "TotalPages": pages,
        "TotalRecords": if repeat { pages * size } else { total },
        "NextPage": next,
        "PreviousPage": prev,
        "ItemsCount": end - start,
    });
    let mut out = serde_json::to_vec(&head).unwrap_or_else(|_| b"{}".to_vec());
    out.pop();
    out.extend_from_slice(b",\"Items\":[");
    out.extend_from_slice(&items);
    out.extend_from_slice(b"],\"Succeeded\":true,\"Errors\":null,\"Message\":null}");
    json_bytes(StatusCode::OK, out)
}

fn overview(state: &SimState) -> Response {
    let store = state.read(KIND);
    let (mut active, mut locked) = (0, 0);
    for (_, r) in store.live() {
        let v = r.value();
        if v.get("UserStatus").and_then(Value::as_str) == Some("Active") {
            active += 1;
        }
        if v.get("IsLocked").and_then(Value::as_bool) == Some(true) {
            locked += 1;
        }
    }
    json_value(
        StatusCode::OK,
        &json!({ "Count": store.len(), "Active": active, "Locked": locked }),
    )
}

/// Written status values → how they read back.
fn status_read_form(written: &str) -> Option<&'static str> {
    match written {
        "Active" => Some("Active"),
        "Archived" => Some("Archived"),
        "Suspended" => Some("Suspended"),
        "LongTermAbsent" => Some("Long term absent"),
        _ => None,
    }
}

const WRITABLE: &[&str] = &[
    "UserId",
    "FirstName",
    "LastName",
    "PreferredName",
    "TelephoneNumber",
    "EmailAddress",
    "UserStatus",
    "AdditionalDetails",
];
const REQUIRED: &[&str] = &[
    "UserId",
    "FirstName",
    "LastName",
    "EmailAddress",
    "UserStatus",
];

/// Binds a JSON body to the writable properties (names case-insensitive), validating types.
fn bind(body: &Bytes, create: bool) -> Result<Map<String, Value>, Response> {
    let Ok(Value::Object(input)) = serde_json::from_slice::<Value>(body) else {
        return Err(body_invalid());
    };
    let mut out = Map::new();
    let mut errors = Map::new();
    for (k, v) in &input {
        let name = if k.eq_ignore_ascii_case("EntityStatus") {
            Some("UserStatus")
        } else {
            WRITABLE.iter().copied().find(|w| w.eq_ignore_ascii_case(k))
        };
        let Some(name) = name else { continue };
        let ok = match name {
            "AdditionalDetails" => {
                v.is_null()
                    || v.as_object()
                        .is_some_and(|o| o.values().all(Value::is_string))
            }
            _ => v.is_null() || v.is_string(),
        };
        if !ok {
            errors.insert(
                format!("$.{k}"),
                json!([format!("The JSON value could not be converted to {name}.")]),
            );
            continue;
        }
        if name == "UserStatus"
            && let Some(s) = v.as_str()
        {
            match status_read_form(s) {
                Some(read) => {
                    out.insert(name.into(), json!(read));
                }
                None => {
                    errors.insert(
                        name.into(),
                        json!([format!("The value '{s}' is not valid for UserStatus.")]),
                    );
                }
            }
            continue;
        }
        out.insert(name.into(), v.clone());
    }
    if create {
        for r in REQUIRED {
            if out
                .get(*r)
                .is_none_or(|v| v.as_str().is_none_or(|s| s.trim().is_empty()))
                && !errors.contains_key(*r)
            {
                errors.insert(
                    r.to_string(),
                    json!([format!("The {r} field is required.")]),
                );
            }
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(validation(errors))
    }
}

fn create(state: &SimState, body: &Bytes) -> Response {
    let fields = match bind(body, true) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let user_id = fields
        .get("UserId")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let duplicate = state.read(KIND).live().any(|(_, r)| {
        r.value()
            .get("UserId")
            .and_then(Value::as_str)
            .is_some_and(|u| u.eq_ignore_ascii_case(&user_id))
    });
    if duplicate {
        return problem(
            StatusCode::CONFLICT,
            "Conflict",
            Some("A user with this UserId already exists."),
        );
    }
    let seq = state.next_seq(KIND);
    let a = super::generator::mix(state.options().seed ^ 0x7061_6365 ^ seq);
    let b = super::generator::mix(a ^ seq);
    let h = format!("{a:016x}{:016x}", (b & !(0xf << 60)) | (0x4 << 60));
    let guid = format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    );
    let get = |k: &str| fields.get(k).cloned().unwrap_or(Value::Null);
    let mut obj = Map::new();
    obj.insert("UserGuid".into(), json!(guid));
    obj.insert("IsLocked".into(), json!(false));
    obj.insert("UserStatus".into(), get("UserStatus"));
    obj.insert("Organisation".into(), json!("Northern Care Group"));
    obj.insert("ParentOrganisation".into(), Value::Null);
    for k in [
        "UserId",
        "FirstName",
        "LastName",
        "PreferredName",
        "TelephoneNumber",
        "EmailAddress",
    ] {
        obj.insert(k.into(), get(k));
    }
    let details = match fields.get("AdditionalDetails") {
        Some(Value::Object(d)) => Value::Object(d.clone()),
        _ => json!({}),
    };
    obj.insert("AdditionalDetails".into(), details);
    let person = state.new_person_number();
    let rec = state.build_record(KIND, person, Value::Object(obj), Meta::default());
    if !state.write(KIND).push(rec) {
        return problem(
            StatusCode::CONFLICT,
            "Conflict",
            Some("Duplicate UserGuid."),
        );
    }
    state.note_write(KIND);
    tracing::info!(kind = %KIND, guid = %guid, "pace user created");
    json_value(StatusCode::OK, &json!({ "UserGuid": guid }))
}

fn update(state: &SimState, id: &str, body: &Bytes) -> Response {
    let fields = match bind(body, false) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let mut store = state.write(KIND);
    let Some(slot) = store.slot_of(id) else {
        return not_found();
    };
    let Some(rec) = store.at(slot) else {
        return not_found();
    };
    let mut obj = match rec.value() {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    for (k, v) in fields {
        // Keep the record's own spelling of the spaced keys.
        let target = match k.as_str() {
            "PreferredName" if obj.contains_key("Preferred Name") => "Preferred Name".to_string(),
            "TelephoneNumber" if obj.contains_key("Telephone Number") => {
                "Telephone Number".to_string()
            }
            _ => k.clone(),
        };
        if k == "AdditionalDetails"
            && let (Some(Value::Object(dst)), Value::Object(src)) =
                (obj.get_mut("AdditionalDetails"), &v)
        {
            for (dk, dv) in src {
                dst.insert(dk.clone(), dv.clone());
            }
            continue;
        }
        obj.insert(target, v);
    }
    let rec = state.touch(KIND, rec.person, Value::Object(obj), rec.meta.clone());
    store.replace(slot, rec);
    drop(store);
    state.note_write(KIND);
    tracing::info!(kind = %KIND, guid = %id, "pace user updated");
    empty(StatusCode::OK)
}
