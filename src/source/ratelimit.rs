//! A sliding-window limiter: at most N requests start in *any* window of S seconds.
//!
//! A token bucket (GCRA, as in `governor`) lets a full burst through at the end of one
//! window and another at the start of the next, so up to 2N can land in one S-second span;
//! the APIs we pace (PACE: 5 per 10 s) count spans, so we keep the start times instead.
//! Sources that share an API key share one limiter.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::RateLimit;

#[derive(Debug)]
pub struct RateLimiter {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    limit: Option<RateLimit>,
    /// Whether the API's own rate-limit headers may replace `limit`.
    learn_from_headers: bool,
    started: VecDeque<Instant>,
    paused_until: Option<Instant>,
}

impl RateLimiter {
    pub fn new(limit: Option<RateLimit>, learn_from_headers: bool) -> RateLimiter {
        RateLimiter {
            state: Mutex::new(State {
                limit,
                learn_from_headers,
                started: VecDeque::new(),
                paused_until: None,
            }),
        }
    }

    pub fn unlimited() -> RateLimiter {
        RateLimiter::new(None, false)
    }

    pub fn limit(&self) -> Option<RateLimit> {
        self.lock().limit
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Safety margin on each window for clock and network jitter between us and the server.
    fn margin(per: Duration) -> Duration {
        (per / 50).max(Duration::from_millis(25))
    }

    /// Waits until one more request may start, and records its start.
    pub async fn acquire(&self) {
        loop {
            let wait_until = {
                let mut s = self.lock();
                let now = Instant::now();
                match s.paused_until {
                    Some(until) if until > now => Some(until),
                    _ => match s.limit {
                        None => {
                            s.paused_until = None;
                            None
                        }
                        Some(limit) => {
                            let span = limit.per + Self::margin(limit.per);
                            while s.started.front().is_some_and(|&t| t + span <= now) {
                                s.started.pop_front();
                            }
                            if s.started.len() < limit.requests as usize {
                                s.started.push_back(now);
                                None
                            } else {
                                s.started.front().map(|&t| t + span)
                            }
                        }
                    },
                }
            };
            match wait_until {
                None => return,
                Some(at) => tokio::time::sleep_until(at).await,
            }
        }
    }

    /// Stops every request sharing this limiter until `until` (a 429, or a budget spent).
    pub fn pause_until(&self, until: Instant) {
        let mut s = self.lock();
        if s.paused_until.is_none_or(|p| p < until) {
            s.paused_until = Some(until);
        }
    }

    /// Adopts the limit an API announces (CareHQ's `X-CareHQ-RateLimit-Limit`, per second).
    pub fn learn_limit(&self, limit: RateLimit) {
        let mut s = self.lock();
        if s.learn_from_headers && s.limit != Some(limit) {
            s.limit = Some(limit);
        }
    }
}

/// Limiters shared by every source that uses the same API key on the same API.
#[derive(Default)]
pub struct Budgets {
    by_key: Mutex<HashMap<(String, u64), Arc<RateLimiter>>>,
}

impl Budgets {
    pub fn limiter(
        &self,
        api: &str,
        key: u64,
        make: impl FnOnce() -> RateLimiter,
    ) -> Arc<RateLimiter> {
        let mut map = self.by_key.lock().unwrap_or_else(|p| p.into_inner());
        map.entry((api.to_string(), key))
            .or_insert_with(|| Arc::new(make()))
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn never_more_than_n_in_any_window() {
        let limiter = RateLimiter::new(
            Some(RateLimit {
                requests: 5,
                per: Duration::from_secs(10),
            }),
            false,
        );
        let start = Instant::now();
        let mut starts = Vec::new();
        for _ in 0..23 {
            limiter.acquire().await;
            starts.push(Instant::now() - start);
        }
        for (i, t) in starts.iter().enumerate() {
            let in_window = starts
                .iter()
                .filter(|u| **u >= *t && **u < *t + Duration::from_secs(10))
                .count();
            assert!(
                in_window <= 5,
                "request {i} at {t:?} has {in_window} in its window"
            );
        }
        // Close to the floor: 23 requests at 5 per 10 s need 4 full windows plus margins.
        let total = *starts.last().unwrap();
        assert!(
            total >= Duration::from_secs(40) && total < Duration::from_secs(42),
            "{total:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_holds_every_caller() {
        let limiter = RateLimiter::unlimited();
        let start = Instant::now();
        limiter.pause_until(start + Duration::from_secs(7));
        limiter.acquire().await;
        assert!(Instant::now() - start >= Duration::from_secs(7));
    }

    #[tokio::test(start_paused = true)]
    async fn learned_limits_apply_only_when_allowed() {
        let fixed = RateLimiter::new(
            Some(RateLimit {
                requests: 2,
                per: Duration::from_secs(1),
            }),
            false,
        );
        fixed.learn_limit(RateLimit {
            requests: 50,
            per: Duration::from_secs(1),
        });
        assert_eq!(fixed.limit().unwrap().requests, 2);
        let learning = RateLimiter::new(
            Some(RateLimit {
                requests: 2,
                per: Duration::from_secs(1),
            }),
            true,
        );
        learning.learn_limit(RateLimit {
            requests: 50,
            per: Duration::from_secs(1),
        });
        assert_eq!(learning.limit().unwrap().requests, 50);
    }

    #[test]
    fn budgets_are_shared_per_key() {
        let b = Budgets::default();
        let a = b.limiter("carehq", 1, RateLimiter::unlimited);
        let same = b.limiter("carehq", 1, RateLimiter::unlimited);
        let other = b.limiter("carehq", 2, RateLimiter::unlimited);
        assert!(Arc::ptr_eq(&a, &same));
        assert!(!Arc::ptr_eq(&a, &other));
    }
}
