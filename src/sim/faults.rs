//! Fault injection (seeded) and request accounting, as one axum middleware per server.
//!
//! Order per request: count it; maybe answer 5xx or 429 at once; maybe sleep; run the handler;
//! maybe turn a 200 into a malformed body or a connection dropped mid-body; record the status.

use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::SimState;
use super::http_util::{json_value, with_type};
use crate::source::kind::SourceKind;

/// Faults to inject. All rates are probabilities per request in `0.0..=1.0`.
#[derive(Clone, Debug, Default)]
pub struct FaultConfig {
    /// Seed of the fault dice (reproducible for a given request order).
    pub seed: u64,
    /// Answer 500, 502 or 503.
    pub error_rate: f64,
    /// Answer 429 in the API's shape, whatever the real rate.
    pub rate_429: f64,
    /// Delay the answer by `slow_ms`.
    pub slow_rate: f64,
    pub slow_ms: u64,
    /// A 200 whose body is truncated or invalid JSON.
    pub malformed_rate: f64,
    /// Drop the connection after sending part of a 200 body.
    pub drop_rate: f64,
    /// CareValidate: always answer the same cursor with `hasMore: true`.
    pub repeat_cursor: bool,
    /// Page-number APIs: ignore the page asked for, serve the first one, claim more exist.
    pub repeat_page: bool,
    /// Insert this many new records before serving each list request.
    pub inserts_per_list_request: usize,
    /// Delete this many records before serving each list request.
    pub deletes_per_list_request: usize,
    /// PACE: requests allowed per UTC day (429 "Maximum quota of requests exceeded" after).
    pub pace_daily_quota: Option<u32>,
}

/// What the dice decided for one request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Decision {
    pub error: Option<u16>,
    pub too_many: bool,
    pub slow: bool,
    pub malformed: bool,
    /// Malformed by truncation (else by invalid JSON).
    pub truncate: bool,
    pub drop: bool,
}

pub fn roll(rng: &mut ChaCha8Rng, f: &FaultConfig) -> Decision {
    let mut hit = |p: f64| p > 0.0 && rng.r#gen::<f64>() < p;
    let error = hit(f.error_rate);
    let too_many = hit(f.rate_429);
    let slow = hit(f.slow_rate);
    let malformed = hit(f.malformed_rate);
    let drop = hit(f.drop_rate);
    let code = [500u16, 502, 503][rng.gen_range(0..3)];
    let truncate = malformed && rng.gen_bool(0.5);
    Decision {
        error: error.then_some(code),
        too_many: !error && too_many,
        slow,
        malformed,
        truncate,
        drop: !malformed && drop,
    }
}

/// The kind a request to a server is about (the CareHQ server serves both CareHQ kinds).
pub fn kind_of(server: SourceKind, path: &str) -> SourceKind {
    if server.is_carehq() {
        if path.starts_with("/v1/users") {
            SourceKind::CarehqUsers
        } else {
            SourceKind::CarehqServiceUsers
        }
    } else {
        server
    }
}

/// The body each API answers an injected failure with.
pub fn api_error(kind: SourceKind, status: u16, message: &str) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if status == 502 || status == 503 {
        let reason = code.canonical_reason().unwrap_or("Error");
        return with_type(
            code,
            format!("<html><head><title>{status} {reason}</title></head><body><h1>{status} {reason}</h1></body></html>")
                .into_bytes(),
            "text/html",
        );
    }
    match kind {
        SourceKind::CarehqServiceUsers | SourceKind::CarehqUsers => super::carehq::error(
            code,
            if status == 429 {
                "request_limit_exceeded"
            } else {
                "error"
            },
            message,
        ),
        SourceKind::MarketplaceUsers => json_value(code, &serde_json::json!({ "detail": message })),
        SourceKind::CarevalidateUsers => super::carevalidate::error(
            code,
            message,
            if status == 429 {
                "RATE_LIMIT_EXCEEDED"
            } else {
                "INTERNAL_ERROR"
            },
        ),
        SourceKind::PaceUsers => {
            if status == 429 {
                super::pace::too_many("Request rate exceeded", 1)
            } else {
                super::pace::problem(
                    code,
                    "An error occurred while processing your request.",
                    Some(message),
                )
            }
        }
    }
}

pub async fn middleware(
    State((state, server)): State<(SimState, SourceKind)>,
    req: Request,
    next: Next,
) -> Response {
    let kind = kind_of(server, req.uri().path());
    let faults = state.faults();
    let decision = state.roll(kind, &faults);
    state.note_request(kind);
    if decision.slow {
        tokio::time::sleep(Duration::from_millis(faults.slow_ms)).await;
    }
    let resp = if let Some(code) = decision.error {
        api_error(kind, code, "Internal server error (simulated)")
    } else if decision.too_many {
        api_error(kind, 429, "Rate limit exceeded (simulated)")
    } else {
        let resp = next.run(req).await;
        if resp.status() == StatusCode::OK && (decision.malformed || decision.drop) {
            mangle(resp, decision).await
        } else {
            resp
        }
    };
    if decision != Decision::default() {
        tracing::debug!(kind = %kind, status = resp.status().as_u16(), ?decision, "sim fault injected");
    }
    state.note_status(kind, resp.status().as_u16());
    resp
}

async fn mangle(resp: Response, d: Decision) -> Response {
    let (mut parts, body) = resp.into_parts();
    let bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(_) => Bytes::new(),
    };
    let cut = (bytes.len() / 2).max(1).min(bytes.len());
    parts.headers.remove(header::CONTENT_LENGTH);
    if d.malformed {
        let body: Vec<u8> = if d.truncate || bytes.is_empty() {
            bytes[..cut].to_vec()
        } else {
            let mut b = b"{\"items\": [{\"_id\": ".to_vec();
            b.extend_from_slice(&bytes[..cut.min(40)]);
            b.extend_from_slice(b"<html>oops</html>");
            b
        };
        return Response::from_parts(parts, Body::from(body));
    }
    // Announce the full length, send half, then fail the stream: hyper aborts the connection.
    if let Ok(v) = HeaderValue::from_str(&bytes.len().to_string()) {
        parts.headers.insert(header::CONTENT_LENGTH, v);
    }
    let head = bytes.slice(..cut);
    let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
        Ok(head),
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionAborted,
            "simulated drop",
        )),
    ];
    Response::from_parts(parts, Body::from_stream(futures::stream::iter(chunks)))
}

/// A sliding-window limiter: at most `limit` accepted requests in any `window`.
#[derive(Debug)]
pub struct SlidingWindow {
    pub limit: usize,
    pub window: Duration,
    accepted: std::collections::VecDeque<Instant>,
}

impl SlidingWindow {
    pub fn new(limit: usize, window: Duration) -> Self {
        SlidingWindow {
            limit,
            window,
            accepted: Default::default(),
        }
    }

    /// `Ok(())` and counts the request, or `Err(wait)` until a slot frees.
    pub fn check(&mut self, now: Instant) -> Result<(), Duration> {
        while let Some(first) = self.accepted.front() {
            if now.duration_since(*first) >= self.window {
                self.accepted.pop_front();
            } else {
                break;
            }
        }
        if self.accepted.len() >= self.limit {
            let first = self.accepted.front().copied().unwrap_or(now);
            return Err(self.window.saturating_sub(now.duration_since(first)));
        }
        self.accepted.push_back(now);
        Ok(())
    }
}

/// A fixed one-second window per key (CareHQ): `(window second, count)`.
#[derive(Debug, Default)]
pub struct PerSecond {
    windows: std::collections::HashMap<String, (i64, u32)>,
}

impl PerSecond {
    /// Counts a request; returns `(allowed, remaining, reset_epoch_secs)`.
    pub fn hit(&mut self, key: &str, now_ms: i64, limit: u32, enforce: bool) -> (bool, u32, f64) {
        let sec = now_ms.div_euclid(1000);
        let entry = self.windows.entry(key.to_string()).or_insert((sec, 0));
        if entry.0 != sec {
            *entry = (sec, 0);
        }
        let reset = (sec + 1) as f64;
        if enforce && entry.1 >= limit {
            return (false, 0, reset);
        }
        entry.1 += 1;
        (true, limit.saturating_sub(entry.1), reset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn sliding_window_allows_five_per_ten_seconds() {
        let mut w = SlidingWindow::new(5, Duration::from_secs(10));
        let t0 = Instant::now();
        for i in 0..5 {
            assert!(w.check(t0 + Duration::from_millis(i * 100)).is_ok());
        }
        let wait = w.check(t0 + Duration::from_secs(3)).err();
        assert_eq!(wait, Some(Duration::from_secs(7)));
        assert!(w.check(t0 + Duration::from_secs(10)).is_ok());
    }

    #[test]
    fn per_second_resets_each_second() {
        let mut p = PerSecond::default();
        for i in 0..10 {
            assert_eq!(p.hit("k", 1_000_500, 10, true), (true, 9 - i, 1001.0));
        }
        assert!(!p.hit("k", 1_000_900, 10, true).0);
        assert!(p.hit("k", 1_001_000, 10, true).0);
    }

    #[test]
    fn rolls_are_reproducible() {
        let f = FaultConfig {
            error_rate: 0.3,
            malformed_rate: 0.2,
            ..Default::default()
        };
        let a: Vec<_> = {
            let mut r = ChaCha8Rng::seed_from_u64(5);
            (0..50).map(|_| roll(&mut r, &f)).collect()
        };
        let b: Vec<_> = {
            let mut r = ChaCha8Rng::seed_from_u64(5);
            (0..50).map(|_| roll(&mut r, &f)).collect()
        };
        assert_eq!(a, b);
        assert!(a.iter().any(|d| d.error.is_some()));
        assert!(a.iter().any(|d| *d == Decision::default()));
    }
}
