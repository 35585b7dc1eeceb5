//! Parsers for the values servers use to say how long to wait: Retry-After,
//! `retry-after-ms`, the IETF `RateLimit` header, `x-ratelimit-reset` in
//! its OpenAI (durations) and GitHub (epoch seconds) shapes, and RFC 3339
//! reset instants.
//!
//! Every parser takes the header's *value* and returns the wait from `now`.
//! A value that is malformed, zero, negative or in the past gives `None`, so
//! the caller falls back to its computed backoff. A value that parses is the
//! server's request whatever its size: a wait too long to represent
//! saturates at [`Duration::MAX`], and it is the retry policy that refuses
//! to sit through it ([`MAX_SIGNAL`]). None of them panics on any input.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The longest server wait the retry engine ever sits through, whatever
/// its policy says: a week, longer than any real rate-limit window. A
/// longer request ends the call at once as rate limited, carrying the wait.
pub const MAX_SIGNAL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Epoch values below this (September 2001) are taken as delta-seconds.
const EPOCH_THRESHOLD: u64 = 1_000_000_000;

fn positive(wait: Duration) -> Option<Duration> {
    (!wait.is_zero()).then_some(wait)
}

/// Non-negative decimal seconds ("55", "1.5"), nothing else. Digits beyond
/// what an `f64` holds saturate at `f64::MAX`.
fn decimal(value: &str) -> Option<f64> {
    let value = value.trim();
    let mut dots = 0;
    let ok = !value.is_empty()
        && value.chars().all(|c| {
            dots += usize::from(c == '.');
            c.is_ascii_digit() || c == '.'
        })
        && dots <= 1
        && value != ".";
    if !ok {
        return None;
    }
    let n = value.parse::<f64>().ok()?;
    Some(if n.is_finite() { n } else { f64::MAX })
}

/// A wait of `secs` seconds, saturating at [`Duration::MAX`].
fn seconds(secs: f64) -> Option<Duration> {
    if secs.is_nan() || secs <= 0.0 {
        return None;
    }
    positive(Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX))
}

fn until(at: SystemTime, now: SystemTime) -> Option<Duration> {
    positive(at.duration_since(now).ok()?)
}

/// `Retry-After`: delta-seconds ("120") or an HTTP-date ("Wed, 21 Oct 2015
/// 07:28:00 GMT", and the obsolete RFC 850 and asctime forms).
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use backstop_core::wait::retry_after;
///
/// let now = SystemTime::now();
/// assert_eq!(retry_after("55", now), Some(Duration::from_secs(55)));
/// assert_eq!(retry_after("0", now), None);
/// assert_eq!(retry_after("-1", now), None);
/// assert_eq!(retry_after("soon", now), None);
/// ```
pub fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Some(secs) = decimal(value) {
        return seconds(secs);
    }
    until(httpdate::parse_http_date(value).ok()?, now)
}

/// `retry-after-ms` (OpenAI, Azure): milliseconds, possibly fractional.
///
/// ```
/// use std::time::Duration;
/// use backstop_core::wait::retry_after_ms;
///
/// assert_eq!(retry_after_ms("1500"), Some(Duration::from_millis(1500)));
/// assert_eq!(retry_after_ms("20.5"), Some(Duration::from_micros(20_500)));
/// ```
pub fn retry_after_ms(value: &str) -> Option<Duration> {
    seconds(decimal(value)? / 1000.0)
}

/// The IETF `RateLimit` header: the structured form of recent drafts
/// (`"api";r=0;t=55`, several policies separated by commas) and the older
/// `limit=100, remaining=0, reset=50`.
///
/// With several policies, the longest `t` among those with nothing
/// remaining (`r=0`) wins; when no policy says what remains, the longest
/// `t`. A policy with requests left does not ask anyone to wait.
///
/// ```
/// use std::time::Duration;
/// use backstop_core::wait::ratelimit;
///
/// assert_eq!(ratelimit(r#""api";r=0;t=55"#), Some(Duration::from_secs(55)));
/// assert_eq!(ratelimit("limit=100, remaining=0, reset=50"), Some(Duration::from_secs(50)));
/// assert_eq!(ratelimit(r#""api";r=10;t=55"#), None);
/// ```
pub fn ratelimit(value: &str) -> Option<Duration> {
    let read = RateLimit::read(value);
    if read.exhausted.is_some() {
        return read.exhausted;
    }
    if read.unknown.is_some() {
        return read.unknown;
    }
    match read.old_remaining {
        Some(r) if r > 0.0 => None,
        _ => read.old_reset,
    }
}

/// The IETF `RateLimit` header read as a promise about the next request:
/// the wait only when a policy says that nothing remains (`r=0`, or the
/// older `remaining=0`), `None` when requests are left or the header does
/// not say — unlike [`ratelimit`], which reads a refusal's header and
/// takes a bare `t=` as the wait.
///
/// ```
/// use std::time::Duration;
/// use backstop_core::wait::ratelimit_spent;
///
/// assert_eq!(ratelimit_spent(r#""api";r=0;t=55"#), Some(Duration::from_secs(55)));
/// assert_eq!(ratelimit_spent("t=55"), None, "nothing says the quota is spent");
/// assert_eq!(ratelimit_spent("limit=100, remaining=0, reset=50"), Some(Duration::from_secs(50)));
/// ```
pub fn ratelimit_spent(value: &str) -> Option<Duration> {
    let read = RateLimit::read(value);
    if read.exhausted.is_some() {
        return read.exhausted;
    }
    match read.old_remaining {
        Some(0.0) => read.old_reset,
        _ => None,
    }
}

/// What a `RateLimit` value says, in the shapes of the drafts.
struct RateLimit {
    /// The longest `t` of the policies with nothing remaining (`r=0`).
    exhausted: Option<Duration>,
    /// The longest `t` of the policies that do not say what remains.
    unknown: Option<Duration>,
    /// The older drafts' one dictionary: `remaining=` and `reset=`.
    old_remaining: Option<f64>,
    old_reset: Option<Duration>,
}

impl RateLimit {
    fn read(value: &str) -> RateLimit {
        let mut read = RateLimit {
            exhausted: None,
            unknown: None,
            old_remaining: None,
            old_reset: None,
        };
        for item in value.split(',') {
            let mut remaining = None;
            let mut reset = None;
            for param in item.split(';') {
                let Some((key, val)) = param.split_once('=') else {
                    continue;
                };
                let val = val.trim().trim_matches('"');
                match key.trim().to_ascii_lowercase().as_str() {
                    "r" => remaining = decimal(val),
                    "t" => reset = decimal(val).and_then(seconds),
                    "remaining" => read.old_remaining = decimal(val),
                    "reset" => read.old_reset = decimal(val).and_then(seconds),
                    _ => {}
                }
            }
            match (remaining, reset) {
                (Some(0.0), Some(t)) => read.exhausted = read.exhausted.max(Some(t)),
                (None, Some(t)) => read.unknown = read.unknown.max(Some(t)),
                _ => {}
            }
        }
        read
    }
}

/// What a `RateLimit-Remaining` value says: the requests left, and the
/// window they are counted over when it names one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Remaining {
    /// Requests left.
    pub count: u64,
    /// The window (`w=`), when given.
    pub window: Option<Duration>,
}

/// A `RateLimit-Remaining` value: Docker Hub's `0;w=21600` (none left in
/// a six-hour window), the drafts' plain `0`. `None` when the value is not
/// a count.
///
/// ```
/// use std::time::Duration;
/// use backstop_core::wait::{Remaining, remaining};
///
/// assert_eq!(
///     remaining("0;w=21600"),
///     Some(Remaining { count: 0, window: Some(Duration::from_secs(21600)) })
/// );
/// assert_eq!(remaining("3"), Some(Remaining { count: 3, window: None }));
/// assert_eq!(remaining("lots"), None);
/// ```
pub fn remaining(value: &str) -> Option<Remaining> {
    let mut parts = value.split(';');
    let count = parts.next()?.trim();
    if count.is_empty() || !count.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let count = count.parse().unwrap_or(u64::MAX);
    let window = parts.find_map(|param| {
        let (key, val) = param.split_once('=')?;
        key.trim()
            .eq_ignore_ascii_case("w")
            .then(|| decimal(val.trim().trim_matches('"')).and_then(seconds))?
    });
    Some(Remaining { count, window })
}

/// `x-ratelimit-reset` and its relatives: an OpenAI duration ("6m0s",
/// "12ms", "1.5s"), GitHub's epoch seconds ("1700000000"), or plain
/// delta-seconds ("30"). Integers of ten digits and more are epochs; a
/// client that took an epoch for a wait would sleep for fifty years.
///
/// ```
/// use std::time::{Duration, SystemTime, UNIX_EPOCH};
/// use backstop_core::wait::reset;
///
/// let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
/// assert_eq!(reset("6m0s", now), Some(Duration::from_secs(360)));
/// assert_eq!(reset("12ms", now), Some(Duration::from_millis(12)));
/// assert_eq!(reset("1700000042", now), Some(Duration::from_secs(42)));
/// assert_eq!(reset("30", now), Some(Duration::from_secs(30)));
/// ```
pub fn reset(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Some(n) = decimal(value) {
        if n >= EPOCH_THRESHOLD as f64 {
            // An instant past what the clock can represent is far in the
            // future: the longest wait there is.
            let at = Duration::try_from_secs_f64(n)
                .ok()
                .and_then(|d| UNIX_EPOCH.checked_add(d));
            return match at {
                Some(at) => until(at, now),
                None => Some(Duration::MAX),
            };
        }
        return seconds(n);
    }
    go_duration(value)
}

/// A Go-style duration as OpenAI sends it: decimal numbers with units
/// `h`, `m`, `s`, `ms`, `us`/`µs`, `ns`, concatenated ("1h2m3.5s").
///
/// ```
/// use std::time::Duration;
/// use backstop_core::wait::go_duration;
///
/// assert_eq!(go_duration("1h2m3.5s"), Some(Duration::from_millis(3_723_500)));
/// assert_eq!(go_duration("-1s"), None);
/// assert_eq!(go_duration("5"), None);
/// ```
pub fn go_duration(value: &str) -> Option<Duration> {
    let mut rest = value.trim();
    rest = rest.strip_prefix('+').unwrap_or(rest);
    if rest.is_empty() || rest.len() > 64 {
        return None;
    }
    let mut total = 0.0f64;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number = decimal(&rest[..digits])?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" | "μs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * scale;
    }
    seconds(total)
}

/// An RFC 3339 instant ("2026-05-01T12:00:30Z", or with an offset such as
/// "+02:00"), as the wait from `now` until then. Anthropic's
/// `anthropic-ratelimit-*-reset` headers use it.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use backstop_core::wait::rfc3339;
///
/// let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000); // 2023-11-14T22:13:20Z
/// assert_eq!(rfc3339("2023-11-14T22:14:00Z", now), Some(Duration::from_secs(40)));
/// assert_eq!(rfc3339("2023-11-15T00:14:00+02:00", now), Some(Duration::from_secs(40)));
/// ```
pub fn rfc3339(value: &str, now: SystemTime) -> Option<Duration> {
    until(crate::time::parse_rfc3339(value)?, now)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> SystemTime {
        // Wed, 15 Nov 2023 06:13:20 GMT
        UNIX_EPOCH + Duration::from_secs(1_700_028_800)
    }

    const S: fn(u64) -> Option<Duration> = |s| Some(Duration::from_secs(s));

    #[test]
    fn retry_after_table() {
        let cases: &[(&str, Option<Duration>)] = &[
            ("120", S(120)),
            (" 55 ", S(55)),
            ("1", S(1)),
            ("1.5", Some(Duration::from_millis(1500))),
            ("0", None),
            ("-1", None),
            ("+5", None),
            ("", None),
            ("   ", None),
            (".", None),
            ("1.2.3", None),
            ("abc", None),
            ("5 seconds", None),
            // Parseable, however large: the server's request, saturated.
            ("99999999999999", S(99_999_999_999_999)),
            ("99999999999999999999999999", Some(Duration::MAX)),
            (&"9".repeat(400), Some(Duration::MAX)),
            ("1e3", None),
            ("NaN", None),
            ("inf", None),
            ("604800", S(604_800)),
            ("604801", S(604_801)),
            ("315360000", S(315_360_000)),
            ("Wed, 15 Nov 2023 06:14:15 GMT", S(55)),
            ("Wednesday, 15-Nov-23 06:14:15 GMT", S(55)),
            ("Wed Nov 15 06:14:15 2023", S(55)),
            ("Wed, 15 Nov 2023 06:13:20 GMT", None),
            ("Tue, 14 Nov 2023 06:13:20 GMT", None),
            ("Sun, 15 Nov 2099 06:13:20 GMT", S(2_398_377_600)),
            ("Wed, 15 Nov 2099 06:13:20 GMT", None),
            ("Wed, 32 Nov 2023 06:14:15 GMT", None),
            ("Wed, 15 Nov 2023 06:14:15", None),
            ("\u{0}\u{ff}", None),
        ];
        for (value, want) in cases {
            assert_eq!(retry_after(value, now()), *want, "Retry-After: {value:?}");
        }
    }

    #[test]
    fn retry_after_ms_table() {
        let cases: &[(&str, Option<Duration>)] = &[
            ("1500", Some(Duration::from_millis(1500))),
            ("20", Some(Duration::from_millis(20))),
            ("0.5", Some(Duration::from_micros(500))),
            ("0", None),
            ("-20", None),
            ("x", None),
            ("604800001", Some(Duration::from_millis(604_800_001))),
        ];
        for (value, want) in cases {
            assert_eq!(retry_after_ms(value), *want, "retry-after-ms: {value:?}");
        }
    }

    #[test]
    fn ratelimit_table() {
        let cases: &[(&str, Option<Duration>)] = &[
            // Hugging Face, draft 09 structured fields.
            (r#""api";r=0;t=55"#, S(55)),
            (r#""api";r=499;t=55"#, None),
            (r#""fixed window";"api";r=0;t=300"#, S(300)),
            (r#""burst";r=0;t=1, "daily";r=0;t=3600"#, S(3600)),
            (r#""burst";r=5;t=1, "daily";r=0;t=3600"#, S(3600)),
            (r#""burst";r=0;t=10, "daily";r=7;t=3600"#, S(10)),
            ("t=20", S(20)),
            // Drafts 03-06.
            ("limit=100, remaining=0, reset=50", S(50)),
            ("limit=100, remaining=3, reset=50", None),
            ("reset=7", S(7)),
            // Junk.
            (r#""api";r=0;t=-5"#, None),
            (r#""api";r=0;t=abc"#, None),
            (r#""api";r=0;t=0"#, None),
            ("", None),
            (";;;,,,==", None),
            ("t=99999999999", S(99_999_999_999)),
        ];
        for (value, want) in cases {
            assert_eq!(ratelimit(value), *want, "RateLimit: {value:?}");
        }
    }

    #[test]
    fn ratelimit_spent_table() {
        let cases: &[(&str, Option<Duration>)] = &[
            (r#""api";r=0;t=55"#, S(55)),
            (r#""api";r=499;t=55"#, None),
            (r#""burst";r=5;t=1, "daily";r=0;t=3600"#, S(3600)),
            ("t=20", None),
            ("limit=100, remaining=0, reset=50", S(50)),
            ("limit=100, remaining=3, reset=50", None),
            ("reset=7", None),
            (r#""api";r=0;t=-5"#, None),
            ("", None),
        ];
        for (value, want) in cases {
            assert_eq!(ratelimit_spent(value), *want, "RateLimit: {value:?}");
        }
    }

    #[test]
    fn remaining_table() {
        let r = |count, window| Some(Remaining { count, window });
        let cases: &[(&str, Option<Remaining>)] = &[
            // Docker Hub.
            ("0;w=21600", r(0, S(21600))),
            ("100;w=21600", r(100, S(21600))),
            (" 0 ; w=60 ", r(0, S(60))),
            // Drafts 03-06.
            ("0", r(0, None)),
            ("12", r(12, None)),
            ("0;w=0", r(0, None)),
            ("0;w=junk", r(0, None)),
            ("99999999999999999999999", r(u64::MAX, None)),
            ("-1", None),
            ("1.5", None),
            ("", None),
            (";w=60", None),
        ];
        for (value, want) in cases {
            assert_eq!(remaining(value), *want, "RateLimit-Remaining: {value:?}");
        }
    }

    #[test]
    fn reset_table() {
        let cases: &[(&str, Option<Duration>)] = &[
            // OpenAI x-ratelimit-reset-requests / -tokens.
            ("1s", S(1)),
            ("6m0s", S(360)),
            ("12ms", Some(Duration::from_millis(12))),
            ("2m59.56s", Some(Duration::from_millis(179_560))),
            ("1h30m", S(5400)),
            ("0s", None),
            ("-1s", None),
            ("1x", None),
            ("s", None),
            ("1.2.3s", None),
            // GitHub epoch seconds.
            ("1700028860", S(60)),
            ("1700028800", None),
            ("1600000000", None),
            ("9999999999", S(9_999_999_999 - 1_700_028_800)),
            ("99999999999999999999999", Some(Duration::MAX)),
            ("99999999h", S(99_999_999 * 3600)),
            // Delta seconds.
            ("30", S(30)),
            ("2.5", Some(Duration::from_millis(2500))),
            ("0", None),
            ("", None),
        ];
        for (value, want) in cases {
            assert_eq!(reset(value, now()), *want, "x-ratelimit-reset: {value:?}");
        }
    }

    #[test]
    fn rfc3339_table() {
        let cases: &[(&str, Option<Duration>)] = &[
            ("2023-11-15T06:14:15Z", S(55)),
            (
                "2023-11-15T06:14:15.500Z",
                Some(Duration::from_millis(55_500)),
            ),
            ("2023-11-15T08:14:15+02:00", S(55)),
            ("2023-11-15T01:14:15-05:00", S(55)),
            ("2023-11-15T06:13:20Z", None),
            ("2023-11-14T06:14:15Z", None),
            ("2023-11-15T06:14:15+25:00", None),
            ("2023-11-15 06:14:15", None),
            ("2023-13-15T06:14:15Z", None),
            ("not a date at all, honestly", None),
            ("2023-11-15T06:14:15é00:00", None),
        ];
        for (value, want) in cases {
            assert_eq!(rfc3339(value, now()), *want, "reset instant: {value:?}");
        }
    }
}
