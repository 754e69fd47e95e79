//! Wall-clock helpers: Unix seconds, RFC 3339 and HTTP dates.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch.
pub type UnixTime = u64;

/// Now, in seconds since the Unix epoch (0 if the clock is set before 1970).
pub fn now() -> UnixTime {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
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
}
