//! The HTTP core every source shares: authentication, pacing, retries, error reasons.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use backon::{BackoffBuilder, ExponentialBuilder};
use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::time::Instant;

use super::carehq::signing::{self, headers as hq};
use super::ratelimit::RateLimiter;
use crate::config::{Credentials, HttpSettings, RateLimit};
use crate::privacy::redact;

pub type Params = Vec<(String, String)>;

#[derive(Debug, Clone)]
pub enum Body {
    None,
    Form(Params),
    Json(Value),
}

/// One request, relative to the source's collection URL.
#[derive(Debug, Clone)]
pub struct RequestSpec {
    pub method: Method,
    /// Appended to the collection URL: "" for the list, "/<id>" for one record.
    pub suffix: String,
    pub query: Params,
    pub body: Body,
}

impl RequestSpec {
    pub fn get(query: Params) -> RequestSpec {
        RequestSpec {
            method: Method::GET,
            suffix: String::new(),
            query,
            body: Body::None,
        }
    }
}

/// Why a request did not produce a usable answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FetchError {
    /// The API refused the request; retrying cannot help.
    #[error("HTTP {status}: {reason}")]
    Refused { status: u16, reason: String },
    /// The API's request quota is used up for now (PACE's daily quota).
    #[error("request quota exhausted: {reason}")]
    QuotaExhausted { reason: String },
    /// A write's request may have reached the API but its answer was lost: it is not sent
    /// again here (that could create a record twice); write-back's outbox settles it.
    #[error("the answer to a write was lost ({reason}); it may or may not have been applied")]
    Uncertain { reason: String },
    /// Transient failures went on past the retry budget.
    #[error("gave up after {attempts} attempts; last problem: {last}")]
    GaveUp { attempts: usize, last: String },
}

impl FetchError {
    /// A bounded set of codes for `sync_error.kind` and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            FetchError::Refused {
                status: 401 | 403, ..
            } => "auth",
            FetchError::Refused { .. } => "http_refused",
            FetchError::QuotaExhausted { .. } => "quota_exhausted",
            FetchError::Uncertain { .. } => "write_uncertain",
            FetchError::GaveUp { .. } => "retries_exhausted",
        }
    }
}

/// A problem that was met and retried, kept for `sync_error`.
#[derive(Debug, Clone)]
pub struct Retried {
    pub kind: &'static str,
    pub message: String,
}

#[derive(Debug, Default)]
pub struct HttpStats {
    pub requests: AtomicU64,
    pub throttled: AtomicU64,
    pub retried: std::sync::Mutex<Vec<Retried>>,
}

impl HttpStats {
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
    pub fn take_retried(&self) -> Vec<Retried> {
        std::mem::take(&mut *self.retried.lock().unwrap_or_else(|p| p.into_inner()))
    }
    fn note(&self, kind: &'static str, message: String) {
        self.retried
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Retried { kind, message });
    }
}

/// Most 429s we sit out for one request before giving up.
const MAX_THROTTLED_WAITS: usize = 50;

/// A source's HTTP client: one per source, sharing its limiter with same-key sources.
pub struct HttpClient {
    client: reqwest::Client,
    collection_url: String,
    collection_path: String,
    credentials: Credentials,
    settings: HttpSettings,
    limiter: Arc<RateLimiter>,
    pub stats: Arc<HttpStats>,
}

enum Attempt<T> {
    Done(T),
    Retry {
        kind: &'static str,
        message: String,
        wait: Option<Duration>,
        /// Whether the request may have reached the API.
        sent: bool,
    },
    Throttled {
        wait: Duration,
        message: String,
    },
    Fail(FetchError),
}

impl HttpClient {
    pub fn new(
        client: reqwest::Client,
        collection_url: String,
        credentials: Credentials,
        settings: HttpSettings,
        limiter: Arc<RateLimiter>,
    ) -> HttpClient {
        let collection_path = url::Url::parse(&collection_url)
            .map(|u| u.path().to_string())
            .unwrap_or_default();
        HttpClient {
            client,
            collection_url,
            collection_path,
            credentials,
            settings,
            limiter,
            stats: Arc::default(),
        }
    }

    /// A `reqwest::Client` for all sources: rustls, no proxies from the environment.
    pub fn build_client(settings: &HttpSettings) -> anyhow::Result<reqwest::Client> {
        Ok(reqwest::Client::builder()
            .user_agent(concat!("caresync/", env!("CARGO_PKG_VERSION")))
            .timeout(settings.timeout)
            .connect_timeout(settings.connect_timeout)
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()?)
    }

    /// Sends `spec`, retrying transient failures, and parses the body with `parse` off the
    /// async workers. A body `parse` rejects counts as transient (truncated or malformed).
    pub async fn execute<T, P>(&self, spec: &RequestSpec, parse: P) -> Result<T, FetchError>
    where
        T: Send + 'static,
        P: Fn(Bytes) -> Result<T, String> + Send + Sync + Clone + 'static,
    {
        let mut delays = ExponentialBuilder::default()
            .with_min_delay(self.settings.min_backoff)
            .with_max_delay(self.settings.max_backoff)
            .with_jitter()
            .with_max_times(self.settings.max_retries)
            .build();
        let mut attempts = 0;
        let mut throttled = 0;
        loop {
            attempts += 1;
            match self.attempt(spec, parse.clone()).await {
                Attempt::Done(v) => return Ok(v),
                Attempt::Fail(e) => return Err(e),
                Attempt::Throttled { wait, message } => {
                    throttled += 1;
                    self.stats.throttled.fetch_add(1, Ordering::Relaxed);
                    if throttled > MAX_THROTTLED_WAITS {
                        return Err(FetchError::GaveUp {
                            attempts,
                            last: message,
                        });
                    }
                    self.stats.note("throttled", message);
                    self.limiter.pause_until(Instant::now() + wait);
                }
                Attempt::Retry {
                    kind,
                    message,
                    wait,
                    sent,
                } => {
                    if sent && !is_read(&spec.method) {
                        return Err(FetchError::Uncertain { reason: message });
                    }
                    let Some(delay) = delays.next() else {
                        return Err(FetchError::GaveUp {
                            attempts,
                            last: message,
                        });
                    };
                    tracing::debug!(
                        kind,
                        attempt = attempts,
                        delay_ms = delay.as_millis() as u64,
                        "retrying"
                    );
                    self.stats.note(kind, message);
                    tokio::time::sleep(wait.unwrap_or(delay).max(delay)).await;
                }
            }
        }
    }

    async fn attempt<T, P>(&self, spec: &RequestSpec, parse: P) -> Attempt<T>
    where
        T: Send + 'static,
        P: Fn(Bytes) -> Result<T, String> + Send + Sync + 'static,
    {
        self.limiter.acquire().await;
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let request = match self.build(spec) {
            Ok(r) => r,
            Err(e) => {
                return Attempt::Fail(FetchError::Refused {
                    status: 0,
                    reason: e,
                });
            }
        };
        let response = match self.client.execute(request).await {
            Ok(r) => r,
            Err(e) => {
                let kind = if e.is_timeout() {
                    "timeout"
                } else {
                    "transport"
                };
                return Attempt::Retry {
                    kind,
                    message: transport_message(&e),
                    wait: None,
                    sent: !e.is_connect(),
                };
            }
        };
        let status = response.status();
        let headers = response.headers().clone();
        let body = match response.bytes().await {
            Ok(b) => b,
            Err(e) => {
                return Attempt::Retry {
                    kind: "transport",
                    message: transport_message(&e),
                    wait: None,
                    sent: true,
                };
            }
        };
        if status.is_success() {
            self.learn_rate_headers(&headers);
            let parsed = tokio::task::spawn_blocking(move || parse(body)).await;
            return match parsed {
                Ok(Ok(v)) => Attempt::Done(v),
                Ok(Err(reason)) => Attempt::Retry {
                    kind: "malformed_body",
                    message: redact(&reason),
                    wait: None,
                    sent: true,
                },
                Err(e) => Attempt::Fail(FetchError::Refused {
                    status: status.as_u16(),
                    reason: format!("parser failed: {e}"),
                }),
            };
        }
        let reason = api_reason(&body)
            .unwrap_or_else(|| status.canonical_reason().unwrap_or("").to_string());
        match status {
            StatusCode::TOO_MANY_REQUESTS => {
                if is_quota_exhausted(&body) {
                    return Attempt::Fail(FetchError::QuotaExhausted { reason });
                }
                let wait = retry_after(&headers, &body, &self.limiter);
                Attempt::Throttled {
                    wait,
                    message: format!("HTTP 429: {reason}"),
                }
            }
            s if s.is_server_error() || s == StatusCode::REQUEST_TIMEOUT => Attempt::Retry {
                kind: "http_status",
                message: format!("HTTP {}: {reason}", s.as_u16()),
                wait: None,
                sent: true,
            },
            s => Attempt::Fail(FetchError::Refused {
                status: s.as_u16(),
                reason,
            }),
        }
    }

    fn build(&self, spec: &RequestSpec) -> Result<reqwest::Request, String> {
        let url = format!("{}{}", self.collection_url, spec.suffix);
        let mut rb = self
            .client
            .request(spec.method.clone(), &url)
            .header("Accept", "application/json");
        if !spec.query.is_empty() {
            rb = rb.query(&spec.query);
        }
        let signed_params: &[(String, String)] = match &spec.body {
            Body::Form(p) => p,
            _ if spec.method == Method::GET => &spec.query,
            _ => &[],
        };
        rb = match &spec.body {
            Body::None => rb,
            Body::Form(p) => rb
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(
                    serde_urlencoded::to_string(p)
                        .map_err(|e| format!("cannot encode the form: {e}"))?,
                ),
            Body::Json(v) => rb
                .header("Content-Type", "application/json")
                .body(v.to_string()),
        };
        let mut headers = HeaderMap::new();
        match &self.credentials {
            Credentials::CareHq {
                account_id,
                api_key,
                api_secret,
            } => {
                let timestamp = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs() as i64)
                    .unwrap_or(0);
                let nonce = signing::new_nonce();
                let path = format!("{}{}", self.collection_path, spec.suffix);
                let signature = signing::signature(
                    api_secret.expose(),
                    timestamp,
                    &nonce,
                    spec.method.as_str(),
                    &path,
                    signed_params,
                );
                for (name, value) in [
                    (hq::ACCOUNT_ID, account_id.expose().to_string()),
                    (hq::API_KEY, api_key.expose().to_string()),
                    (hq::NONCE, nonce),
                    (hq::TIMESTAMP, timestamp.to_string()),
                    (
                        hq::SIGNATURE_VERSION,
                        signing::SIGNATURE_VERSION.to_string(),
                    ),
                    (hq::SIGNATURE, signature),
                ] {
                    headers.insert(name, header_value(&value)?);
                }
            }
            Credentials::Bearer(token) => {
                headers.insert(
                    "Authorization",
                    header_value(&format!("Bearer {}", token.expose()))?,
                );
            }
            Credentials::CvApiKey(key) => {
                headers.insert("cv-api-key", header_value(key.expose())?);
            }
            Credentials::Pace {
                api_key,
                customer_id,
                customer_id_header,
            } => {
                headers.insert("x-api-key", header_value(api_key.expose())?);
                let name = reqwest::header::HeaderName::from_bytes(customer_id_header.as_bytes())
                    .map_err(|_| {
                    format!("`{customer_id_header}` is not a valid header name")
                })?;
                headers.insert(name, header_value(customer_id.expose())?);
            }
        }
        rb.headers(headers)
            .build()
            .map_err(|e| format!("cannot build the request: {e}"))
    }

    /// CareHQ announces its budget on every success; adopt it and respect an empty one.
    fn learn_rate_headers(&self, headers: &HeaderMap) {
        let num = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|s| s.trim().parse::<f64>().ok())
        };
        if let Some(limit) = num(hq::RATE_LIMIT).filter(|l| *l >= 1.0) {
            self.limiter.learn_limit(RateLimit {
                requests: limit as u32,
                per: Duration::from_secs(1),
            });
        }
        if let (Some(remaining), Some(reset)) = (num(hq::RATE_REMAINING), num(hq::RATE_RESET))
            && remaining < 1.0
        {
            self.limiter
                .pause_until(Instant::now() + until_epoch(reset));
        }
    }
}

fn header_value(v: &str) -> Result<HeaderValue, String> {
    HeaderValue::from_str(v)
        .map_err(|_| "a credential holds characters not allowed in a header".to_string())
}

fn transport_message(e: &reqwest::Error) -> String {
    // reqwest's messages carry the URL; ours carry no query strings, so they hold no personal data.
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    redact(&msg)
}

fn until_epoch(epoch_secs: f64) -> Duration {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    Duration::from_secs_f64((epoch_secs - now).clamp(0.0, 3600.0))
}

/// How long a 429 asks us to wait: `Retry-After`, PACE's "try again in N second(s)",
/// or one window of the limit we know.
fn retry_after(headers: &HeaderMap, body: &[u8], limiter: &RateLimiter) -> Duration {
    if let Some(secs) = headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
    {
        return Duration::from_secs_f64(secs.clamp(0.0, 3600.0));
    }
    if let Some(secs) = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("detail").and_then(Value::as_str).map(str::to_string))
        .and_then(|d| seconds_in(&d))
    {
        return Duration::from_secs(secs);
    }
    limiter
        .limit()
        .map(|l| l.per)
        .unwrap_or(Duration::from_secs(1))
}

fn seconds_in(detail: &str) -> Option<u64> {
    let lower = detail.to_ascii_lowercase();
    let at = lower.find("try again in")? + "try again in".len();
    lower[at..].split_whitespace().next()?.parse().ok()
}

fn is_quota_exhausted(body: &[u8]) -> bool {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| {
            v.get("title")
                .and_then(Value::as_str)
                .map(|t| t.to_ascii_lowercase().contains("quota"))
        })
        .unwrap_or(false)
}

/// The API's own reason, from any of the error shapes our APIs use (redacted):
/// CareHQ `hint`/`arg_errors`, FastAPI `detail`, CareValidate `error`/`code`,
/// PACE problem+json `title`/`detail`.
pub fn api_reason(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let obj = v.as_object()?;
    let text = |k: &str| obj.get(k).and_then(Value::as_str).filter(|s| !s.is_empty());
    let mut parts: Vec<String> = Vec::new();
    if let Some(t) = text("error_type").or(text("code")).or(text("title")) {
        parts.push(t.to_string());
    }
    if let Some(t) = text("hint").or(text("error")) {
        parts.push(t.to_string());
    }
    match obj.get("detail") {
        Some(Value::String(s)) => parts.push(s.clone()),
        Some(Value::Array(items)) => {
            for item in items {
                let loc = item.get("loc").and_then(Value::as_array).map(|l| {
                    l.iter()
                        .map(|p| {
                            p.as_str()
                                .map(str::to_string)
                                .unwrap_or_else(|| p.to_string())
                        })
                        .collect::<Vec<_>>()
                        .join(".")
                });
                let msg = item.get("msg").and_then(Value::as_str).unwrap_or("invalid");
                parts.push(format!("{}: {msg}", loc.unwrap_or_default()));
            }
        }
        _ => {}
    }
    if let Some(Value::Object(args)) = obj.get("arg_errors") {
        for (field, msgs) in args {
            let msgs = match msgs {
                Value::Array(a) => a
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(", "),
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            parts.push(format!("{field}: {msgs}"));
        }
    }
    (!parts.is_empty()).then(|| redact(&parts.join("; ")))
}

/// Reads may be repeated freely; writes may not.
fn is_read(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_from_every_error_shape() {
        let cases: [(&str, &str); 5] = [
            (
                r#"{"error_type":"invalid_request","hint":"Invalid arguments","arg_errors":{"per_page":["Must be at most 100."]}}"#,
                "invalid_request; Invalid arguments; per_page: Must be at most 100.",
            ),
            (
                r#"{"detail":[{"loc":["query","size"],"msg":"ensure this value is less than or equal to 100","type":"value_error"}]}"#,
                "query.size: ensure this value is less than or equal to 100",
            ),
            (
                r#"{"status":400,"success":false,"error":"Missing cv-api-key header","code":"CASE_ERROR"}"#,
                "CASE_ERROR; Missing cv-api-key header",
            ),
            (
                r#"{"type":"https://tools.ietf.org/html/rfc7231#section-6.5.1","title":"Request rate exceeded","status":429,"detail":"Please try again in 7 second(s).","traceId":"x"}"#,
                "Request rate exceeded; Please try again in 7 second(s).",
            ),
            (r#"{"detail":"Not authenticated"}"#, "Not authenticated"),
        ];
        for (body, expected) in cases {
            assert_eq!(api_reason(body.as_bytes()).as_deref(), Some(expected));
        }
        assert_eq!(api_reason(b"<html>"), None);
    }

    #[test]
    fn reasons_never_carry_emails_or_numbers() {
        let r =
            api_reason(br#"{"detail":"user jo@x.org with phone 07700 900123 exists"}"#).unwrap();
        assert_eq!(r, "user <email> with phone <number> exists");
    }

    #[test]
    fn pace_wait_and_quota_are_read_from_the_problem() {
        assert_eq!(seconds_in("Please try again in 7 second(s)."), Some(7));
        assert_eq!(seconds_in("Nope"), None);
        assert!(is_quota_exhausted(
            br#"{"title":"Maximum quota of requests exceeded","status":429}"#
        ));
        assert!(!is_quota_exhausted(
            br#"{"title":"Request rate exceeded","status":429}"#
        ));
        let limiter = RateLimiter::unlimited();
        let wait = retry_after(
            &HeaderMap::new(),
            br#"{"detail":"Please try again in 3 second(s)."}"#,
            &limiter,
        );
        assert_eq!(wait, Duration::from_secs(3));
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("2"));
        assert_eq!(retry_after(&h, b"", &limiter), Duration::from_secs(2));
    }
}
