//! Cron schedules with seconds (`sec min hour day-of-month month day-of-week`), parsed by the
//! same parser tokio-cron-scheduler runs them with, so a schedule that validates is one the
//! daemon can run.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_cron_scheduler::Job;

/// Why a schedule was refused, for the config's problem list.
pub fn validate(expr: &str) -> Result<(), String> {
    next_after(expr, Utc::now()).map(|_| ())
}

/// The first run strictly after `after`.
pub fn next_after(expr: &str, after: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    let refused = || {
        format!(
            "`{expr}` is not a cron schedule with seconds, such as \"0 */15 * * * *\" \
             (second minute hour day-of-month month day-of-week)"
        )
    };
    let fields = expr.split_whitespace().count();
    if !(6..=7).contains(&fields) {
        return Err(refused());
    }
    let mut job = Job::new_async(expr, |_, _| Box::pin(async {})).map_err(|_| refused())?;
    let cron = job
        .job_data()
        .ok()
        .and_then(|data| data.schedule())
        .ok_or_else(refused)?;
    cron.find_next_occurrence(&after, false)
        .map_err(|_| format!("`{expr}` never runs"))
}

/// The gap between the next two runs: the schedule's interval, for the default health window.
pub fn interval(expr: &str, from: DateTime<Utc>) -> Option<Duration> {
    let first = next_after(expr, from).ok()?;
    let second = next_after(expr, first).ok()?;
    (second - first).to_std().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_with_seconds_parse_and_step() {
        let t = DateTime::parse_from_rfc3339("2025-01-01T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            next_after("*/5 * * * * *", t).unwrap().to_rfc3339(),
            "2025-01-01T10:00:05+00:00"
        );
        assert_eq!(
            next_after("0 */15 * * * *", t).unwrap().to_rfc3339(),
            "2025-01-01T10:15:00+00:00"
        );
        assert_eq!(interval("0 0 * * * *", t), Some(Duration::from_secs(3600)));
        for bad in [
            "",
            "* * * * *",
            "61 * * * * *",
            "every hour",
            "* * * * * * * *",
        ] {
            assert!(validate(bad).is_err(), "{bad}");
        }
    }
}
