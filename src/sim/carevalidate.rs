//! CareValidate Care360 simulator: `GET/POST /api/v1/users`.
//!
//! `cv-api-key` auth (missing → the documented 400 body, wrong → 401 in the same shape); cursor
//! pages (`limit` default 10, clamped to 1..=100; `after` = base64url(`createdAt|uid`) of the
//! previous page's last item; `hasMore`); `sortOrder` asc|desc; `email` prefix filter. Writes
//! are `{"action": "CREATE_USER"|"UPDATE_PROFILE", "data": {...}}`, updates keyed by email;
//! name, dob and gender are locked on records with a case assigned (hidden, ~30%).
//!
//! There is no documented retrieve-one endpoint: use the `email` filter.

use std::cmp::Ordering;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use axum::routing::any;
use base64::Engine;
use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use serde_json::{Map, Value, json};

use super::SimState;
use super::http_util::{
    header_str, iso_ms_z, json_bytes, json_value, parse_iso, parse_pairs, value,
};
use super::store::{Meta, Record, Store};
use crate::source::kind::SourceKind;

const KIND: SourceKind = SourceKind::CarevalidateUsers;
pub const API_KEY_HEADER: &str = "cv-api-key";

pub fn router(state: SimState) -> Router {
    Router::new()
        .route("/api/v1/users", any(users))
        .fallback(not_found)
        .with_state(state)
}

/// CareValidate's error body.
pub fn error(status: StatusCode, message: &str, code: &str) -> Response {
    json_value(
        status,
        &json!({ "status": status.as_u16(), "success": false, "error": message, "code": code }),
    )
}

fn bad(message: &str) -> Response {
    error(StatusCode::BAD_REQUEST, message, "VALIDATION_ERROR")
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "Route not found", "NOT_FOUND")
}

fn authenticate(headers: &HeaderMap) -> Result<(), Response> {
    match header_str(headers, API_KEY_HEADER) {
        None => Err(error(
            StatusCode::BAD_REQUEST,
            "Missing cv-api-key header",
            "CASE_ERROR",
        )),
        Some(k) if k.trim() == super::creds::CAREVALIDATE_API_KEY => Ok(()),
        Some(_) => Err(error(
            StatusCode::UNAUTHORIZED,
            "Invalid cv-api-key header",
            "CASE_ERROR",
        )),
    }
}

async fn users(
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
        Method::POST => write(&state, &body),
        _ => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "Method not allowed",
            "METHOD_NOT_ALLOWED",
        ),
    }
}

/// The opaque cursor of a record: base64url(`createdAt|uid`).
pub fn cursor_of(meta: &Meta) -> String {
    let raw = format!(
        "{}|{}",
        iso_ms_z(meta.created_ms),
        meta.uid.as_deref().unwrap_or("")
    );
    URL_SAFE_NO_PAD.encode(raw)
}

fn parse_cursor(s: &str) -> Option<(i64, String)> {
    let bytes = URL_SAFE_NO_PAD
        .decode(s.trim())
        .or_else(|_| URL_SAFE.decode(s.trim()))
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (created, uid) = text.split_once('|')?;
    Some((parse_iso(created)?, uid.to_string()))
}

fn order_key(r: &Record) -> (i64, &str) {
    (r.meta.created_ms, r.meta.uid.as_deref().unwrap_or(""))
}

fn build_view(store: &Store, prefix: Option<&str>) -> Vec<u32> {
    let prefix = prefix.map(|p| p.to_lowercase());
    let mut slots: Vec<(i64, &str, u32)> = store
        .live()
        .filter(|(_, r)| {
            prefix
                .as_deref()
                .is_none_or(|p| r.meta.email_lc.as_deref().is_some_and(|e| e.starts_with(p)))
        })
        .map(|(i, r)| {
            let (c, u) = order_key(r);
            (c, u, i)
        })
        .collect();
    slots.sort_unstable_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    slots.into_iter().map(|(_, _, i)| i).collect()
}

fn list(state: &SimState, query: &str) -> Response {
    let pairs = parse_pairs(query.as_bytes());
    let limit = match value(&pairs, "limit") {
        None => 10,
        Some(v) => match v.trim().parse::<f64>() {
            Ok(n) if n.is_finite() => (n as i64).clamp(1, KIND.max_page_size() as i64) as usize,
            _ => return bad("limit must be a number"),
        },
    };
    let desc = match value(&pairs, "sortOrder") {
        None | Some("asc") => false,
        Some("desc") => true,
        Some(_) => return bad("sortOrder must be one of: asc, desc"),
    };
    if value(&pairs, "sortBy").is_some_and(|s| s != "createdAt") {
        return bad("sortBy must be one of: createdAt");
    }
    let after = match value(&pairs, "after").filter(|s| !s.is_empty()) {
        None => None,
        Some(c) => match parse_cursor(c) {
            Some(parsed) => Some((c.to_string(), parsed)),
            None => return bad("Invalid cursor"),
        },
    };
    let email = value(&pairs, "email").filter(|s| !s.is_empty());
    state.before_list(KIND);
    let repeat = state.faults().repeat_cursor;
    let store = state.read(KIND);
    let sig = format!("{email:?}");
    let view = state
        .cell(KIND)
        .view(&store, &sig, |s| build_view(s, email));
    let key_at = |i: usize| store.at(view[i]).map(order_key).unwrap_or((0, ""));
    // Position of the first item strictly after (asc) / at-or-after (desc) the cursor.
    let cmp_cursor = |i: usize, c: &(i64, String)| key_at(i).cmp(&(c.0, c.1.as_str()));
    // The candidates after the cursor: view[start..] ascending, or view[..end] descending.
    let (start, end) = match (&after, desc) {
        (None, _) => (0, view.len()),
        (Some((_, c)), false) => (
            partition(view.len(), |i| cmp_cursor(i, c) != Ordering::Greater),
            view.len(),
        ),
        (Some((_, c)), true) => (
            0,
            partition(view.len(), |i| cmp_cursor(i, c) == Ordering::Less),
        ),
    };
    let candidates = &view[start..end];
    let picked: Vec<u32> = if desc {
        candidates.iter().rev().take(limit).copied().collect()
    } else {
        candidates.iter().take(limit).copied().collect()
    };
    let remaining_after = candidates.len() > picked.len();
    let mut out = Vec::with_capacity(64 + picked.len() * 700);
    let mut last: Option<String> = None;
    let mut items = Vec::with_capacity(picked.len() * 700);
    for (n, slot) in picked.iter().enumerate() {
        if let Some(rec) = store.at(*slot) {
            if n > 0 {
                items.push(b',');
            }
            items.extend_from_slice(&rec.body);
            last = Some(cursor_of(&rec.meta));
        }
    }
    let (has_more, cursor) = if repeat {
        (true, after.map(|(raw, _)| raw).or(last))
    } else {
        (remaining_after, last)
    };
    out.extend_from_slice(b"{\"meta\":{\"hasMore\":");
    out.extend_from_slice(if has_more { b"true" } else { b"false" });
    out.extend_from_slice(b",\"cursor\":");
    out.extend_from_slice(&serde_json::to_vec(&cursor).unwrap_or_else(|_| b"null".to_vec()));
    out.extend_from_slice(b"},\"data\":[");
    out.extend_from_slice(&items);
    out.extend_from_slice(b"]}");
    json_bytes(StatusCode::OK, out)
}

/// The first index in `0..len` for which `pred` is false (pred true on a prefix).
fn partition(len: usize, pred: impl Fn(usize) -> bool) -> usize {
    let (mut lo, mut hi) = (0, len);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if pred(mid) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

/// The user object's fields in order.
const FIELDS: &[&str] = &[
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
    "communication",
];
const LOCKED: &[&str] = &["firstName", "lastName", "dob", "gender"];

fn validate(data: &Map<String, Value>) -> Result<(), String> {
    for (k, v) in data {
        if !FIELDS.contains(&k.as_str()) {
            continue;
        }
        let s = v.as_str();
        let ok = match k.as_str() {
            _ if v.is_null() && k != "email" => true,
            "email" => s.is_some_and(|e| {
                e.split_once('@')
                    .is_some_and(|(l, d)| !l.is_empty() && d.contains('.') && !e.contains(' '))
            }),
            "gender" => s.is_some_and(|g| matches!(g, "MALE" | "FEMALE" | "OTHER")),
            "dob" => s.is_some_and(|d| {
                chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").is_ok() && d.len() == 10
            }),
            "phoneNumber" => s.is_some_and(|p| {
                p.len() >= 8
                    && p.len() <= 16
                    && p.starts_with('+')
                    && p[1..].chars().all(|c| c.is_ascii_digit())
                    && !p[1..].starts_with('0')
            }),
            "country" => {
                s.is_some_and(|c| c.len() == 2 && c.chars().all(|c| c.is_ascii_uppercase()))
            }
            "languagePreferences" => v.as_array().is_some_and(|a| a.iter().all(Value::is_string)),
            "communication" => v.as_object().is_some_and(|o| {
                o.iter().all(|(k, v)| {
                    matches!(
                        k.as_str(),
                        "smsNotificationsDisabled" | "notificationsDisabled"
                    ) && v.is_boolean()
                })
            }),
            _ => v.is_string(),
        };
        if !ok {
            return Err(format!("Invalid value for {k}"));
        }
    }
    Ok(())
}

fn write(state: &SimState, body: &Bytes) -> Response {
    let Ok(Value::Object(req)) = serde_json::from_slice::<Value>(body) else {
        return bad("Request body must be a JSON object");
    };
    let Some(Value::Object(data)) = req.get("data") else {
        return bad("data is required");
    };
    if let Err(msg) = validate(data) {
        return bad(&msg);
    }
    match req.get("action").and_then(Value::as_str) {
        Some("CREATE_USER") => create(state, data),
        Some("UPDATE_PROFILE") => update(state, data),
        _ => bad("action must be one of: CREATE_USER, UPDATE_PROFILE"),
    }
}

fn ok_user(body: &[u8]) -> Response {
    let mut out = b"{\"status\":200,\"success\":true,\"data\":".to_vec();
    out.extend_from_slice(body);
    out.push(b'}');
    json_bytes(StatusCode::OK, out)
}

fn create(state: &SimState, data: &Map<String, Value>) -> Response {
    for required in ["email", "firstName", "lastName"] {
        if data
            .get(required)
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            return bad(&format!("{required} is required"));
        }
    }
    let email = data
        .get("email")
        .and_then(Value::as_str)
        .unwrap_or("")
        .trim()
        .to_string();
    if state.read(KIND).get(&email).is_some() {
        return error(
            StatusCode::CONFLICT,
            "User with this email already exists",
            "USER_EXISTS",
        );
    }
    let mut obj = Map::new();
    for f in FIELDS {
        let default = match *f {
            "languagePreferences" => json!([]),
            "communication" => {
                json!({"smsNotificationsDisabled": false, "notificationsDisabled": false})
            }
            _ => Value::Null,
        };
        obj.insert(f.to_string(), data.get(*f).cloned().unwrap_or(default));
    }
    obj.insert("email".into(), Value::String(email.clone()));
    let now = state.next_created(KIND);
    let seq = state.next_seq(KIND);
    let mut uid = String::with_capacity(28);
    let mut h = super::generator::mix(state.options().seed ^ seq ^ 0x4356);
    const ALPHA: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    for _ in 0..28 {
        uid.push(ALPHA[(h % ALPHA.len() as u64) as usize] as char);
        h = super::generator::mix(h);
    }
    let meta = Meta {
        created_ms: now,
        modified_ms: now,
        uid: Some(uid.into()),
        ..Meta::default()
    };
    let person = state.new_person_number();
    let rec = state.build_record(KIND, person, Value::Object(obj), meta);
    let out = rec.body.to_vec();
    if !state.write(KIND).push(rec) {
        return error(
            StatusCode::CONFLICT,
            "User with this email already exists",
            "USER_EXISTS",
        );
    }
    state.note_write(KIND);
    tracing::info!(kind = %KIND, records = 1, "carevalidate user created");
    ok_user(&out)
}

fn update(state: &SimState, data: &Map<String, Value>) -> Response {
    let Some(email) = data.get("email").and_then(Value::as_str) else {
        return bad("email is required");
    };
    let mut store = state.write(KIND);
    let Some(slot) = store.slot_of(email) else {
        return error(StatusCode::NOT_FOUND, "User not found", "USER_NOT_FOUND");
    };
    let Some(rec) = store.at(slot) else {
        return error(StatusCode::NOT_FOUND, "User not found", "USER_NOT_FOUND");
    };
    let mut obj = match rec.value() {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    if rec.meta.case_assigned {
        let changed: Vec<&str> = LOCKED
            .iter()
            .copied()
            .filter(|f| data.get(*f).is_some_and(|v| obj.get(*f) != Some(v)))
            .collect();
        if !changed.is_empty() {
            return error(
                StatusCode::BAD_REQUEST,
                &format!(
                    "Cannot update {} after a case has been assigned",
                    changed.join(", ")
                ),
                "CASE_ERROR",
            );
        }
    }
    for (k, v) in data {
        if FIELDS.contains(&k.as_str()) && k != "email" {
            obj.insert(k.clone(), v.clone());
        }
    }
    let rec = state.touch(KIND, rec.person, Value::Object(obj), rec.meta.clone());
    let out = rec.body.to_vec();
    store.replace(slot, rec);
    drop(store);
    state.note_write(KIND);
    tracing::info!(kind = %KIND, records = 1, "carevalidate user updated");
    ok_user(&out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_and_matches_the_documented_example() {
        let meta = Meta {
            created_ms: parse_iso("2025-11-26T10:55:12.014Z").unwrap_or(0),
            uid: Some("n9Hth51QppeRzh1Y6MPNVVpuMsc2".into()),
            ..Meta::default()
        };
        let c = cursor_of(&meta);
        assert_eq!(
            c,
            "MjAyNS0xMS0yNlQxMDo1NToxMi4wMTRafG45SHRoNTFRcHBlUnpoMVk2TVBOVlZwdU1zYzI"
        );
        assert_eq!(
            parse_cursor(&c),
            Some((meta.created_ms, "n9Hth51QppeRzh1Y6MPNVVpuMsc2".to_string()))
        );
        assert_eq!(parse_cursor("not a cursor!"), None);
    }

    #[test]
    fn validation_follows_the_documented_formats() {
        let ok = json!({"email": "a@b.co", "gender": "FEMALE", "dob": "1940-02-03", "phoneNumber": "+447700900123", "country": "GB"});
        assert!(validate(ok.as_object().unwrap_or(&Map::new())).is_ok());
        for bad in [
            json!({"gender": "female"}),
            json!({"dob": "03/02/1940"}),
            json!({"phoneNumber": "07700 900123"}),
            json!({"country": "GBR"}),
        ] {
            assert!(
                validate(bad.as_object().unwrap_or(&Map::new())).is_err(),
                "{bad}"
            );
        }
    }
}
