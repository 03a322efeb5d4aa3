//! Small HTTP helpers shared by the simulators: query parsing, JSON responses, time formats.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use chrono::{DateTime, NaiveDateTime, Utc};

/// Decoded `key=value` pairs of a query string or form body, in order (repeated keys kept).
pub fn parse_pairs(raw: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(raw).into_owned().collect()
}

/// All values for `key`.
pub fn values<'a>(pairs: &'a [(String, String)], key: &str) -> Vec<&'a str> {
    pairs
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .collect()
}

/// The last value for `key`.
pub fn value<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// The last value for `key`, matching the key case-insensitively (ASP.NET binding).
pub fn value_ci<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .rev()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v.as_str())
}

/// A response with a body that is already serialized JSON.
pub fn json_bytes(status: StatusCode, body: Vec<u8>) -> Response {
    with_type(status, body, "application/json")
}

pub fn json_value(status: StatusCode, body: &serde_json::Value) -> Response {
    json_bytes(status, serde_json::to_vec(body).unwrap_or_default())
}

pub fn with_type(status: StatusCode, body: Vec<u8>, content_type: &'static str) -> Response {
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

pub fn empty(status: StatusCode) -> Response {
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = status;
    resp
}

pub fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// Civil UTC date-time of an epoch-milliseconds instant: (y, m, d, H, M, S, ms).
/// Hand-rolled (Howard Hinnant's days→civil) because chrono's `format` dominates generation.
fn civil(ms: i64) -> (i64, u32, u32, u32, u32, u32, u32) {
    let secs = ms.div_euclid(1000);
    let milli = ms.rem_euclid(1000) as u32;
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400) as u32;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, sod / 3600, sod / 60 % 60, sod % 60, milli)
}

/// CareHQ: `YYYY-MM-DD HH:MM:SS`, UTC, no zone.
pub fn carehq_time(ms: i64) -> String {
    let (y, mo, d, h, mi, s, _) = civil(ms);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}")
}

/// Parses CareHQ's `YYYY-MM-DD HH:MM:SS` (also accepts a `T` separator or a bare date).
pub fn parse_carehq_time(s: &str) -> Option<i64> {
    let s = s.trim();
    for fmt in [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d %H:%M:%S%.f",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some(t.and_utc().timestamp_millis());
        }
    }
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc().timestamp_millis())
}

/// ISO 8601 with `Z`, seconds precision (marketplace).
pub fn iso_z(ms: i64) -> String {
    let (y, mo, d, h, mi, s, _) = civil(ms);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

/// ISO 8601 with milliseconds and `Z` (CareValidate `createdAt`).
pub fn iso_ms_z(ms: i64) -> String {
    let (y, mo, d, h, mi, s, milli) = civil(ms);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{milli:03}Z")
}

/// UTC without a zone designator (PACE).
pub fn iso_no_zone(ms: i64) -> String {
    let (y, mo, d, h, mi, s, _) = civil(ms);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}")
}

/// Parses an ISO date-time as FastAPI/pydantic would accept it (with or without zone, or a date).
pub fn parse_iso(s: &str) -> Option<i64> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_millis());
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some(t.and_utc().timestamp_millis());
        }
    }
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc().timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_round_trip() {
        let ms = 1_700_000_000_000;
        assert_eq!(carehq_time(ms), "2023-11-14 22:13:20");
        assert_eq!(parse_carehq_time("2023-11-14 22:13:20"), Some(ms));
        assert_eq!(iso_z(ms), "2023-11-14T22:13:20Z");
        assert_eq!(parse_iso("2023-11-14T22:13:20Z"), Some(ms));
        assert_eq!(iso_ms_z(ms + 14), "2023-11-14T22:13:20.014Z");
        assert_eq!(iso_no_zone(ms), "2023-11-14T22:13:20");
        // Agrees with chrono across leap years, centuries and negative instants.
        for ms in [
            -2_208_988_800_000i64,
            -1,
            0,
            951_782_400_000,
            4_107_542_399_999,
            1_709_210_096_789,
        ] {
            let c = chrono::DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or_default();
            assert_eq!(
                iso_ms_z(ms),
                c.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
                "{ms}"
            );
        }
    }

    #[test]
    fn pairs_keep_repeats_and_decode() {
        let p = parse_pairs(b"attributes=ref&attributes=first_name&q=a+b%21");
        assert_eq!(values(&p, "attributes"), vec!["ref", "first_name"]);
        assert_eq!(value(&p, "q"), Some("a b!"));
        assert_eq!(value_ci(&p, "Q"), Some("a b!"));
    }
}
