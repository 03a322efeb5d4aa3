//! CareHQ simulator: `/v1/service-users` (read/create/update) and `/v1/users` (read-only).
//!
//! Requests are signed (v2.0, verified with the shared `source::carehq::signing` code over the
//! query for GET and the form body otherwise); timestamps outside ±300 s and reused nonces are
//! rejected with 401. Lists follow the documented `attributes` projection (default `['_id']`),
//! `per_page` default 10 / max 100, filters and `sort_by`. Successful responses carry the
//! `X-CareHQ-RateLimit-*` headers; a 429 carries none.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::Response;
use axum::routing::any;
use serde_json::{Map, Value, json};

use super::SimState;
use super::http_util::{
    carehq_time, header_str, json_bytes, json_value, now_ms, parse_carehq_time, parse_pairs, value,
    values,
};
use super::store::{Projection, Record, Store};
use crate::source::carehq::signing::{self, headers as h};
use crate::source::kind::SourceKind;

type Pairs = Vec<(String, String)>;
type ArgErrors = BTreeMap<String, Vec<String>>;

pub const TIMESTAMP_TOLERANCE_SECS: i64 = 300;

pub fn router(state: SimState) -> Router {
    Router::new()
        .route("/v1/service-users", any(service_users))
        .route("/v1/service-users/", any(service_users))
        .route("/v1/service-users/{id}", any(service_user))
        .route("/v1/users", any(users))
        .route("/v1/users/", any(users))
        .route("/v1/users/{id}", any(user))
        .fallback(not_found_route)
        .with_state(state)
}

/// CareHQ's error body.
pub fn error(status: StatusCode, error_type: &str, hint: &str) -> Response {
    error_with(status, error_type, hint, &ArgErrors::new())
}

fn error_with(status: StatusCode, error_type: &str, hint: &str, args: &ArgErrors) -> Response {
    json_value(
        status,
        &json!({ "error_type": error_type, "hint": hint, "arg_errors": args }),
    )
}

fn invalid(args: ArgErrors) -> Response {
    error_with(
        StatusCode::BAD_REQUEST,
        "invalid_request",
        "The request contains invalid arguments, see `arg_errors` for details.",
        &args,
    )
}

fn unauthorized(hint: &str) -> Response {
    error(StatusCode::UNAUTHORIZED, "unauthorized", hint)
}

fn method_not_allowed(hint: &str) -> Response {
    error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", hint)
}

async fn not_found_route() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        "The requested resource does not exist.",
    )
}

/// Rate-limit headers for a successful response.
struct RateHeaders {
    limit: u32,
    remaining: u32,
    reset: f64,
}

fn with_rate(mut resp: Response, r: &RateHeaders) -> Response {
    let hs = resp.headers_mut();
    for (name, v) in [
        (h::RATE_LIMIT, r.limit.to_string()),
        (h::RATE_REMAINING, r.remaining.to_string()),
        (h::RATE_RESET, format!("{:.6}", r.reset)),
    ] {
        if let Ok(v) = HeaderValue::from_str(&v) {
            hs.insert(name, v);
        }
    }
    resp
}

/// Verifies the signed headers; returns the parameters the signature covered.
fn authenticate(
    state: &SimState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<(Pairs, RateHeaders), Response> {
    let get = |name: &str| -> Result<String, Response> {
        header_str(headers, name)
            .map(str::to_string)
            .ok_or_else(|| unauthorized(&format!("Missing required header `{name}`.")))
    };
    let account = get(h::ACCOUNT_ID)?;
    let key = get(h::API_KEY)?;
    let nonce = get(h::NONCE)?;
    let ts = get(h::TIMESTAMP)?;
    let version = get(h::SIGNATURE_VERSION)?;
    let sig = get(h::SIGNATURE)?;
    if account != super::creds::CAREHQ_ACCOUNT_ID || key != super::creds::CAREHQ_API_KEY {
        return Err(unauthorized("Invalid account Id or API key."));
    }
    if version != signing::SIGNATURE_VERSION {
        return Err(unauthorized("Unsupported signature version."));
    }
    let Ok(ts) = ts.trim().parse::<i64>() else {
        return Err(unauthorized("Invalid timestamp."));
    };
    let now = now_ms() / 1000;
    if (now - ts).abs() > TIMESTAMP_TOLERANCE_SECS {
        return Err(unauthorized("Timestamp outside of the allowed tolerance."));
    }
    let params = if *method == Method::GET || *method == Method::HEAD {
        parse_pairs(uri.query().unwrap_or("").as_bytes())
    } else {
        parse_pairs(body)
    };
    let expected = signing::signature(
        super::creds::CAREHQ_API_SECRET,
        ts,
        &nonce,
        method.as_str(),
        uri.path(),
        &params,
    );
    if !expected.eq_ignore_ascii_case(sig.trim()) {
        return Err(unauthorized("Invalid signature."));
    }
    if !state.carehq_fresh_nonce(&nonce, now) {
        return Err(unauthorized("Nonce has already been used."));
    }
    let (ok, limit, remaining, reset) = state.carehq_rate(&key);
    if !ok {
        tracing::debug!(status = 429, "carehq rate limit exceeded");
        return Err(error(
            StatusCode::TOO_MANY_REQUESTS,
            "request_limit_exceeded",
            "You have exceeded the number of requests allowed per second.",
        ));
    }
    Ok((
        params,
        RateHeaders {
            limit,
            remaining,
            reset,
        },
    ))
}

fn is_form(headers: &HeaderMap) -> bool {
    header_str(headers, header::CONTENT_TYPE.as_str())
        .map(|ct| ct.starts_with("application/x-www-form-urlencoded"))
        .unwrap_or(true)
}

async fn service_users(
    State(state): State<SimState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (params, rate) = match authenticate(&state, &method, &uri, &headers, &body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let resp = match method {
        Method::GET => list(&state, SourceKind::CarehqServiceUsers, &params),
        Method::PUT if !is_form(&headers) => form_required(),
        Method::PUT => create(&state, &params),
        _ => method_not_allowed("Method not allowed for this resource."),
    };
    with_rate(resp, &rate)
}

async fn service_user(
    State(state): State<SimState>,
    Path(id): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (params, rate) = match authenticate(&state, &method, &uri, &headers, &body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let resp = match method {
        Method::GET => retrieve(&state, SourceKind::CarehqServiceUsers, &id),
        Method::PATCH if !is_form(&headers) => form_required(),
        Method::PATCH => update(&state, &id, &params),
        _ => method_not_allowed("Method not allowed for this resource."),
    };
    with_rate(resp, &rate)
}

async fn users(
    State(state): State<SimState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (params, rate) = match authenticate(&state, &method, &uri, &headers, &body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let resp = match method {
        Method::GET => list(&state, SourceKind::CarehqUsers, &params),
        _ => method_not_allowed("The users resource is read-only."),
    };
    with_rate(resp, &rate)
}

async fn user(
    State(state): State<SimState>,
    Path(id): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (_, rate) = match authenticate(&state, &method, &uri, &headers, &body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let resp = match method {
        Method::GET => retrieve(&state, SourceKind::CarehqUsers, &id),
        _ => method_not_allowed("The users resource is read-only."),
    };
    with_rate(resp, &rate)
}

fn form_required() -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "invalid_request",
        "Request bodies must be application/x-www-form-urlencoded.",
    )
}

fn retrieve(state: &SimState, kind: SourceKind, id: &str) -> Response {
    let store = state.read(kind);
    match store.get(id) {
        Some(rec) => json_bytes(StatusCode::OK, rec.body.to_vec()),
        None => error(
            StatusCode::NOT_FOUND,
            "not_found",
            if kind == SourceKind::CarehqUsers {
                "User not found."
            } else {
                "Service user not found."
            },
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// Lists

#[derive(Clone, Copy, PartialEq, Eq)]
enum SortField {
    Id,
    Created,
    Modified,
    FullName,
}

/// A parsed, validated list query.
struct ListQuery {
    page: usize,
    per_page: usize,
    sort: Vec<(SortField, bool)>,
    filters: Vec<(String, Vec<String>)>,
    modified_after: Option<i64>,
    modified_before: Option<i64>,
    attributes: Vec<String>,
}

const SU_LIST_FILTERS: &[&str] = &[
    "filters-anonymized",
    "filters-day_care_status",
    "filters-day_care_use",
    "filters-ids",
    "filters-location",
    "filters-q",
    "filters-status",
];
const USER_LIST_FILTERS: &[&str] = &[
    "filters-ids",
    "filters-locations",
    "filters-q",
    "filters-role",
    "filters-suspended",
];

fn parse_list(kind: SourceKind, params: &Pairs) -> Result<ListQuery, ArgErrors> {
    let mut errs = ArgErrors::new();
    let mut int = |name: &str, default: usize, min: usize, max: usize| -> usize {
        match value(params, name) {
            None => default,
            Some(v) => match v.trim().parse::<usize>() {
                Ok(n) if n >= min && n <= max => n,
                Ok(_) if max == usize::MAX => {
                    errs.entry(name.into())
                        .or_default()
                        .push(format!("Must be at least {min}."));
                    default
                }
                Ok(_) => {
                    errs.entry(name.into())
                        .or_default()
                        .push(format!("Must be between {min} and {max}."));
                    default
                }
                Err(_) => {
                    errs.entry(name.into())
                        .or_default()
                        .push("Not a valid integer.".into());
                    default
                }
            },
        }
    };
    let page = int("page", 1, 1, usize::MAX);
    let per_page = int(
        "per_page",
        10,
        1,
        SourceKind::CarehqServiceUsers.max_page_size() as usize,
    );
    let name_field = if kind == SourceKind::CarehqUsers {
        "full_name_lower"
    } else {
        "full_name"
    };
    let mut sort = Vec::new();
    for raw in values(params, "sort_by") {
        let (desc, name) = match raw.strip_prefix('-') {
            Some(n) => (true, n),
            None => (false, raw),
        };
        let field = match name {
            "_id" => SortField::Id,
            "created" => SortField::Created,
            "modified" => SortField::Modified,
            n if n == name_field => SortField::FullName,
            _ => {
                errs.entry("sort_by".into())
                    .or_default()
                    .push("Not a valid choice.".into());
                continue;
            }
        };
        sort.push((field, desc));
    }
    let mut time = |name: &str| -> Option<i64> {
        let v = value(params, name)?;
        let parsed = parse_carehq_time(v);
        if parsed.is_none() {
            errs.entry(name.into())
                .or_default()
                .push("Not a valid date/time.".into());
        }
        parsed
    };
    let modified_after = time("filters-modified_after");
    let modified_before = time("filters-modified_before");
    let allowed = if kind == SourceKind::CarehqUsers {
        USER_LIST_FILTERS
    } else {
        SU_LIST_FILTERS
    };
    let mut filters = Vec::new();
    for name in allowed {
        let vs: Vec<String> = values(params, name).iter().map(|s| s.to_string()).collect();
        if !vs.is_empty() {
            filters.push((name.to_string(), vs));
        }
    }
    for (name, vs) in &filters {
        if (name == "filters-suspended" || name == "filters-anonymized")
            && !vs
                .iter()
                .all(|v| matches!(v.as_str(), "unset" | "yes" | "no"))
        {
            errs.entry(name.clone())
                .or_default()
                .push("Not a valid choice.".into());
        }
    }
    if !errs.is_empty() {
        return Err(errs);
    }
    Ok(ListQuery {
        page,
        per_page,
        sort,
        filters,
        modified_after,
        modified_before,
        attributes: values(params, "attributes")
            .iter()
            .map(|s| s.to_string())
            .collect(),
    })
}

fn str_field<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

fn list_contains(v: &Value, k: &str, wanted: &[String]) -> bool {
    match v.get(k) {
        Some(Value::Array(items)) => items
            .iter()
            .any(|i| i.as_str().is_some_and(|s| wanted.iter().any(|w| w == s))),
        _ => false,
    }
}

/// Whether a record passes the filters that need its body.
fn matches_body(rec: &Record, filters: &[(String, Vec<String>)]) -> bool {
    let mut parsed: Option<Value> = None;
    for (name, wanted) in filters {
        let pass = match name.as_str() {
            "filters-ids" => wanted.iter().any(|w| **w == *rec.key),
            "filters-suspended" => match wanted.last().map(String::as_str) {
                Some("yes") => rec.meta.suspended,
                Some("no") => !rec.meta.suspended,
                _ => true,
            },
            _ => {
                let v = parsed.get_or_insert_with(|| rec.value());
                match name.as_str() {
                    "filters-q" => {
                        let q = wanted.last().map(|s| s.to_lowercase()).unwrap_or_default();
                        let name = rec.meta.name_lc.as_deref().unwrap_or("");
                        name.contains(&q)
                            || str_field(v, "ref").contains(&q)
                            || rec.meta.email_lc.as_deref().is_some_and(|e| e.contains(&q))
                    }
                    "filters-anonymized" => match wanted.last().map(String::as_str) {
                        Some("yes") => !v["anonymized"].is_null(),
                        Some("no") => v["anonymized"].is_null(),
                        _ => true,
                    },
                    "filters-locations" => list_contains(v, "locations", wanted),
                    "filters-role" => wanted.iter().any(|w| w == str_field(v, "role")),
                    "filters-status" => wanted.iter().any(|w| w == str_field(v, "status")),
                    "filters-day_care_status" => {
                        wanted.iter().any(|w| w == str_field(v, "day_care_status"))
                    }
                    "filters-day_care_use" => {
                        wanted.iter().any(|w| w == str_field(v, "day_care_use"))
                    }
                    "filters-location" => wanted.iter().any(|w| w == str_field(v, "location")),
                    _ => true,
                }
            }
        };
        if !pass {
            return false;
        }
    }
    true
}

fn build_view(kind: SourceKind, store: &Store, q: &ListQuery) -> Vec<u32> {
    let mut filters = q.filters.clone();
    if kind == SourceKind::CarehqUsers && !filters.iter().any(|(n, _)| n == "filters-suspended") {
        filters.push(("filters-suspended".into(), vec!["no".into()]));
    }
    let mut slots: Vec<u32> = store
        .live()
        .filter(|(_, r)| {
            q.modified_after.is_none_or(|t| r.meta.modified_ms > t)
                && q.modified_before.is_none_or(|t| r.meta.modified_ms < t)
                && matches_body(r, &filters)
        })
        .map(|(i, _)| i)
        .collect();
    let cmp = |a: &Record, b: &Record| -> Ordering {
        for (field, desc) in &q.sort {
            let o = match field {
                SortField::Id => a.key.cmp(&b.key),
                SortField::Created => a.meta.created_ms.cmp(&b.meta.created_ms),
                SortField::Modified => a.meta.modified_ms.cmp(&b.meta.modified_ms),
                SortField::FullName => a.meta.name_lc.cmp(&b.meta.name_lc),
            };
            let o = if *desc { o.reverse() } else { o };
            if o != Ordering::Equal {
                return o;
            }
        }
        a.key.cmp(&b.key)
    };
    slots.sort_by(|x, y| match (store.at(*x), store.at(*y)) {
        (Some(a), Some(b)) => cmp(a, b),
        _ => Ordering::Equal,
    });
    slots
}

fn view_signature(kind: SourceKind, q: &ListQuery) -> String {
    let sort: Vec<String> = q
        .sort
        .iter()
        .map(|(f, d)| format!("{}{}", if *d { "-" } else { "" }, *f as u8))
        .collect();
    format!(
        "{kind}|{:?}|{:?}|{:?}|{}",
        q.filters,
        q.modified_after,
        q.modified_before,
        sort.join(",")
    )
}

fn list(state: &SimState, kind: SourceKind, params: &Pairs) -> Response {
    let q = match parse_list(kind, params) {
        Ok(q) => q,
        Err(errs) => return invalid(errs),
    };
    state.before_list(kind);
    let repeat = state.faults().repeat_page;
    let store = state.read(kind);
    let view = state
        .cell(kind)
        .view(&store, &view_signature(kind, &q), |s| {
            build_view(kind, s, &q)
        });
    let total = view.len();
    let page_count = total.div_ceil(q.per_page).max(1);
    let (serve_page, claimed_count) = if repeat {
        (1, page_count.max(q.page + 1))
    } else {
        (q.page, page_count)
    };
    let start = (serve_page - 1).saturating_mul(q.per_page).min(total);
    let end = (start + q.per_page).min(total);
    let projection =
        Projection::new(std::iter::once("_id").chain(q.attributes.iter().map(String::as_str)));
    let mut out = Vec::with_capacity(64 + (end - start) * (40 + 60 * q.attributes.len()));
    out.extend_from_slice(format!("{{\"item_count\":{total},\"items\":[").as_bytes());
    for (n, slot) in view[start..end].iter().enumerate() {
        if let Some(rec) = store.at(*slot) {
            if n > 0 {
                out.push(b',');
            }
            rec.project_into(&projection, &mut out);
        }
    }
    out.extend_from_slice(
        format!(
            "],\"page\":{},\"page_count\":{claimed_count},\"per_page\":{}}}",
            q.page, q.per_page
        )
        .as_bytes(),
    );
    json_bytes(StatusCode::OK, out)
}

// ---------------------------------------------------------------------------------------------
// Writes

const FUNDING_TYPES: &[&str] = &[
    "private",
    "local_authority",
    "local_authority_top_up",
    "chc",
    "chc_lifestyle",
    "block_bed",
    "dta_spot",
];
const SERVICES: &[&str] = &[
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
const DAY_CARE_USES: &[&str] = &["exclusive", "inclusive", "not_used"];
const FNC_STATUSES: &[&str] = &["not_applicable", "applied_for", "granted", "declined"];
const GENDERS: &[&str] = &["male", "female", "non_binary", "transgender", "intersex"];
const RELIGIONS: &[&str] = &[
    "no_religion",
    "christian",
    "buddhist",
    "hindu",
    "jewish",
    "muslim",
    "sikh",
];

#[derive(Clone, Copy)]
enum Ty {
    Str,
    Bool,
    Int,
    Date,
    Choice(&'static [&'static str]),
    Choices(&'static [&'static str]),
    Location,
    /// Accepted but not stored (e.g. `phone`).
    Ignored,
}

const WRITABLE: &[(&str, Ty)] = &[
    ("account_code", Ty::Str),
    ("assistance_with_dressing", Ty::Bool),
    ("assistance_with_eating", Ty::Bool),
    ("assistance_with_medication", Ty::Bool),
    ("assistance_with_personal_care", Ty::Bool),
    ("broadcare_number", Ty::Str),
    ("day_care_use", Ty::Choice(DAY_CARE_USES)),
    ("dementia", Ty::Bool),
    ("dementia_challenging_behaviour", Ty::Bool),
    ("dementia_prone_to_wander", Ty::Bool),
    ("dob", Ty::Date),
    ("end_of_life_care", Ty::Bool),
    ("first_name", Ty::Str),
    ("fnc_application_date", Ty::Date),
    ("fnc_application_status", Ty::Choice(FNC_STATUSES)),
    ("funding_type", Ty::Choice(FUNDING_TYPES)),
    ("genders", Ty::Choices(GENDERS)),
    ("genders_other", Ty::Str),
    ("given_age", Ty::Int),
    ("last_name", Ty::Str),
    ("location", Ty::Location),
    ("mobile", Ty::Str),
    ("mobility_bed_bound", Ty::Bool),
    ("mobility_can_walk_unaided", Ty::Bool),
    ("mobility_requires_aid_or_hoist", Ty::Bool),
    ("mobility_uses_stick", Ty::Bool),
    ("mobility_uses_wheelchair", Ty::Bool),
    ("national_insurance_number", Ty::Str),
    ("nhs_number", Ty::Str),
    ("notes", Ty::Str),
    ("patient_id", Ty::Str),
    ("phone", Ty::Ignored),
    ("preferred_name", Ty::Str),
    ("ref", Ty::Str),
    ("registered_blind", Ty::Bool),
    ("religions", Ty::Choices(RELIGIONS)),
    ("religions_other", Ty::Str),
    ("service", Ty::Choice(SERVICES)),
    ("title", Ty::Str),
    ("visually_impaired", Ty::Bool),
];

const ADDRESS_PARTS: &[&str] = &[
    "address_1",
    "address_2",
    "country",
    "county",
    "postcode",
    "town",
];

const REQUIRED: &[&str] = &[
    "day_care_use",
    "first_name",
    "funding_type",
    "last_name",
    "location",
    "service",
];

/// Every attribute of a service user, with the value a fresh record starts with.
fn blank_service_user() -> Map<String, Value> {
    let mut m = Map::new();
    // The documented attributes, the same list the client asks for.
    for k in crate::source::carehq::SERVICE_USER_ATTRIBUTES {
        m.insert((*k).into(), Value::Null);
    }
    let addr: Map<String, Value> = ADDRESS_PARTS
        .iter()
        .map(|k| (k.to_string(), Value::String(String::new())))
        .collect();
    m.insert("street_address".into(), Value::Object(addr));
    m
}

/// Parses the form into attribute values, collecting every argument error.
fn parse_form(state: &SimState, params: &Pairs) -> Result<Map<String, Value>, ArgErrors> {
    let mut errs = ArgErrors::new();
    let mut out = Map::new();
    let mut address = Map::new();
    for (name, raw) in params {
        if let Some(part) = name.strip_prefix("street_address-") {
            if ADDRESS_PARTS.contains(&part) {
                address.insert(part.to_string(), Value::String(raw.clone()));
            }
            continue;
        }
        let Some((_, ty)) = WRITABLE.iter().find(|(k, _)| k == name) else {
            continue;
        };
        let mut bad = |msg: &str| {
            errs.entry(name.clone()).or_default().push(msg.to_string());
        };
        let v = match ty {
            Ty::Ignored => continue,
            Ty::Str => Value::String(raw.clone()),
            Ty::Bool => match raw.as_str() {
                "yes" => Value::Bool(true),
                "no" | "" => Value::Bool(false),
                _ => {
                    bad("Not a valid boolean.");
                    continue;
                }
            },
            Ty::Int => match raw.trim().parse::<i64>() {
                Ok(n) => json!(n),
                Err(_) if raw.is_empty() => Value::Null,
                Err(_) => {
                    bad("Not a valid integer.");
                    continue;
                }
            },
            Ty::Date => {
                if raw.is_empty() {
                    Value::Null
                } else if chrono::NaiveDate::parse_from_str(raw, "%Y-%m-%d").is_ok() {
                    Value::String(raw.clone())
                } else {
                    bad("Not a valid date.");
                    continue;
                }
            }
            Ty::Choice(choices) => {
                if choices.contains(&raw.as_str()) {
                    Value::String(raw.clone())
                } else {
                    bad("Not a valid choice.");
                    continue;
                }
            }
            Ty::Choices(choices) => {
                if !choices.contains(&raw.as_str()) {
                    bad("Not a valid choice.");
                    continue;
                }
                let entry = out.entry(name.clone()).or_insert_with(|| json!([]));
                if let Value::Array(items) = entry {
                    items.push(Value::String(raw.clone()));
                }
                continue;
            }
            Ty::Location => {
                if state.locations().iter().any(|l| l == raw) {
                    Value::String(raw.clone())
                } else {
                    bad("Not a valid location.");
                    continue;
                }
            }
        };
        out.insert(name.clone(), v);
    }
    if !address.is_empty() {
        out.insert("street_address".into(), Value::Object(address));
    }
    if errs.is_empty() { Ok(out) } else { Err(errs) }
}

fn set_fields(body: &mut Map<String, Value>, fields: Map<String, Value>) {
    for (k, v) in fields {
        if k == "street_address" {
            let entry = body
                .entry("street_address")
                .or_insert_with(|| Value::Object(Map::new()));
            if !entry.is_object() {
                *entry = Value::Object(Map::new());
            }
            if let (Value::Object(dst), Value::Object(src)) = (entry, v) {
                for (part, pv) in src {
                    dst.insert(part, pv);
                }
            }
        } else {
            body.insert(k, v);
        }
    }
}

fn initials(body: &Map<String, Value>) -> String {
    ["first_name", "last_name"]
        .iter()
        .filter_map(|k| body.get(*k).and_then(Value::as_str))
        .filter_map(|s| s.chars().find(|c| c.is_ascii_alphabetic()))
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

fn create(state: &SimState, params: &Pairs) -> Response {
    let mut fields = match parse_form(state, params) {
        Ok(f) => f,
        Err(errs) => return invalid(errs),
    };
    let mut errs = ArgErrors::new();
    for name in REQUIRED {
        if fields.get(*name).is_none_or(|v| v.as_str() == Some("")) {
            errs.entry(name.to_string())
                .or_default()
                .push("This field is required.".into());
        }
    }
    let has = |f: &Map<String, Value>, k: &str| f.get(k).is_some_and(|v| !v.is_null());
    if !has(&fields, "dob") && !has(&fields, "given_age") {
        errs.entry("dob".into())
            .or_default()
            .push("A date of birth or a given age is required.".into());
    }
    if !errs.is_empty() {
        return invalid(errs);
    }
    let kind = SourceKind::CarehqServiceUsers;
    let now = state.next_created(kind);
    let seq = state.next_seq(kind);
    let id = format!(
        "{:08x}{:010x}{:06x}",
        (now / 1000) as u32,
        super::generator::mix(state.options().seed ^ seq) & 0xff_ffff_ffff,
        seq & 0xff_ffff
    );
    let mut body = blank_service_user();
    if !fields.contains_key("ref") {
        fields.insert("ref".into(), Value::String((seq + 1).to_string()));
    }
    set_fields(&mut body, fields);
    if body.get("account_code").is_none_or(Value::is_null) {
        let code = format!(
            "{}{:04}",
            initials(&body),
            body.get("ref").and_then(Value::as_str).unwrap_or("0")
        );
        body.insert("account_code".into(), Value::String(code));
    }
    let stamp = carehq_time(now);
    body.insert("_id".into(), Value::String(id.clone()));
    body.insert("created".into(), Value::String(stamp.clone()));
    body.insert("modified".into(), Value::String(stamp));
    body.insert("status".into(), json!("pending"));
    body.insert("day_care_status".into(), json!("inactive"));
    for (k, default) in [
        ("assistance_with_eating", json!(false)),
        ("dementia_prone_to_wander", json!(false)),
        ("mobility_can_walk_unaided", json!(false)),
        ("registered_blind", json!(false)),
        ("end_of_life_care", json!(false)),
        ("genders_other", json!("")),
        ("religions_other", json!("")),
        ("patient_id", json!("")),
    ] {
        if body.get(k).is_none_or(Value::is_null) {
            body.insert(k.into(), default);
        }
    }
    let person = state.new_person_number();
    let meta = super::store::Meta {
        created_ms: now,
        modified_ms: now,
        ..Default::default()
    };
    let rec = state.build_record(kind, person, Value::Object(body.clone()), meta);
    if !state.write(kind).push(rec) {
        return error(StatusCode::CONFLICT, "conflict", "Duplicate Id.");
    }
    state.note_write(kind);
    tracing::info!(kind = %kind, id = %id, "carehq service user created");
    json_value(StatusCode::OK, &Value::Object(create_response(&body)))
}

/// The partial object the create call answers with (with its `_str` and `""` quirks).
fn create_response(body: &Map<String, Value>) -> Map<String, Value> {
    let get = |k: &str| body.get(k).cloned().unwrap_or(Value::Null);
    let mut m = Map::new();
    for k in [
        "_id",
        "account_code",
        "assistance_with_dressing",
        "assistance_with_eating",
        "assistance_with_medication",
        "assistance_with_personal_care",
        "broadcare_number",
        "created",
        "day_care_status",
        "day_care_use",
        "dementia",
        "dementia_challenging_behaviour",
        "dementia_prone_to_wander",
    ] {
        m.insert(k.into(), get(k));
    }
    m.insert("dob_str".into(), get("dob"));
    m.insert("end_of_life_care".into(), json!(""));
    m.insert("first_name".into(), get("first_name"));
    m.insert(
        "fnc_application_date_str".into(),
        get("fnc_application_date"),
    );
    for k in [
        "fnc_application_status",
        "funding_type",
        "genders",
        "genders_other",
        "given_age",
        "last_name",
        "location",
        "mobile",
        "mobility_can_walk_unaided",
        "modified",
        "national_insurance_number",
        "nhs_number",
        "notes",
        "patient_id",
        "preferred_name",
        "ref",
        "registered_blind",
        "religions",
        "religions_other",
        "service",
        "status",
        "street_address",
        "title",
        "visually_impaired",
    ] {
        m.insert(k.into(), get(k));
    }
    m
}

fn update(state: &SimState, id: &str, params: &Pairs) -> Response {
    let kind = SourceKind::CarehqServiceUsers;
    let fields = match parse_form(state, params) {
        Ok(f) => f,
        Err(errs) => return invalid(errs),
    };
    let mut errs = ArgErrors::new();
    for name in REQUIRED {
        if fields.get(*name).is_some_and(|v| v.as_str() == Some("")) {
            errs.entry(name.to_string())
                .or_default()
                .push("This field is required.".into());
        }
    }
    if !errs.is_empty() {
        return invalid(errs);
    }
    let mut store = state.write(kind);
    let Some(slot) = store.slot_of(id) else {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            "Service user not found.",
        );
    };
    let Some(rec) = store.at(slot) else {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            "Service user not found.",
        );
    };
    let mut body = match rec.value() {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    set_fields(&mut body, fields);
    let rec = state.touch(kind, rec.person, Value::Object(body), rec.meta.clone());
    let out = rec.body.to_vec();
    store.replace(slot, rec);
    drop(store);
    state.note_write(kind);
    tracing::info!(kind = %kind, id = %id, "carehq service user updated");
    json_bytes(StatusCode::OK, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_query_validates_per_page_and_sort() {
        let p = |pairs: &[(&str, &str)]| -> Pairs {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let q = parse_list(SourceKind::CarehqServiceUsers, &p(&[])).ok();
        assert!(q.is_some_and(|q| q.per_page == 10 && q.page == 1 && q.attributes.is_empty()));
        let e = parse_list(SourceKind::CarehqServiceUsers, &p(&[("per_page", "101")])).err();
        assert!(e.is_some_and(|e| e.contains_key("per_page")));
        let e = parse_list(SourceKind::CarehqUsers, &p(&[("sort_by", "full_name")])).err();
        assert!(e.is_some_and(|e| e.contains_key("sort_by")));
        let q = parse_list(
            SourceKind::CarehqUsers,
            &p(&[("sort_by", "-full_name_lower")]),
        );
        assert!(q.is_ok());
    }
}
