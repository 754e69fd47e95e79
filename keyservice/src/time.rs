//! Wall-clock helpers: Unix seconds, RFC 3339 and HTTP dates.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch.
pub type UnixTime = u64;

/// Now, in seconds since the Unix epoch (0 if the clock is set before 1970).
pub fn now() -> UnixTime {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Where the server reads the time of day from: handed to the app, so that expiries,
/// idle limits, request dates and sweeps all read one clock, and a test can move it.
pub trait Clock: Send + Sync + 'static {
    /// Now, in seconds since the Unix epoch.
    fn now(&self) -> UnixTime;
}

/// The system's clock: what a server runs on.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> UnixTime {
        now()
    }
}

/// The system's clock moved forward by whatever [`ShiftedClock::advance`] added: time
/// passes as usual, and a test (or a drill) can skip ahead instead of waiting.
#[derive(Debug, Default)]
pub struct ShiftedClock {
    ahead: std::sync::atomic::AtomicU64,
}

impl ShiftedClock {
    /// Moves the clock `by` forward (whole seconds; the rest is dropped).
    pub fn advance(&self, by: Duration) {
        self.ahead.fetch_add(by.as_secs(), std::sync::atomic::Ordering::Relaxed);
    }
}

impl Clock for ShiftedClock {
    fn now(&self) -> UnixTime {
        now() + self.ahead.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// `secs` as RFC 3339 in UTC, e.g. `2026-11-22T06:00:00Z`.
pub fn rfc3339(secs: UnixTime) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string()
}

/// Now as RFC 3339 in UTC, formatted once a second per thread (audit lines take it for
/// every request).
pub fn rfc3339_now() -> String {
    thread_local! {
        // No second is `UnixTime::MAX`: the first call always formats.
        static LAST: std::cell::RefCell<(UnixTime, String)> =
            const { std::cell::RefCell::new((UnixTime::MAX, String::new())) };
    }
    let secs = now();
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        if last.0 != secs {
            *last = (secs, rfc3339(secs));
        }
        last.1.clone()
    })
}

/// `millis` (since the Unix epoch) as RFC 3339 in UTC, e.g. `2026-11-22T06:00:00.250Z`.
pub fn rfc3339_millis(millis: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(millis)).to_string()
}

/// Parses an HTTP date (IMF-fixdate, or the obsolete RFC 850 and asctime forms) into
/// Unix seconds.
pub fn parse_http_date(text: &str) -> Option<UnixTime> {
    let time = httpdate::parse_http_date(text).ok()?;
    time.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses() {
        assert_eq!(rfc3339(1_318_023_197), "2011-10-07T21:33:17Z");
        assert_eq!(parse_http_date("Fri, 07 Oct 2011 21:33:17 GMT"), Some(1_318_023_197));
        assert_eq!(parse_http_date("yesterday"), None);
        let (before, formatted, after) = (now(), rfc3339_now(), now());
        assert!(formatted == rfc3339(before) || formatted == rfc3339(after), "{formatted}");
    }

    #[test]
    fn a_shifted_clock_runs_ahead_by_what_was_added() {
        let clock = ShiftedClock::default();
        let before = SystemClock.now();
        clock.advance(Duration::from_millis(90_500));
        let shifted = clock.now();
        assert!((before + 90..=SystemClock.now() + 90).contains(&shifted), "{before} {shifted}");
    }
}
