//! Instants written as text: RFC 3339 in, RFC 3339 (UTC) out, and the
//! millisecond timestamps stores keep.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Parses an RFC 3339 instant: "2026-05-01T12:00:30Z", with fractional
/// seconds or an offset such as "+02:00". `None` for anything else; never
/// panics.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use backstop_core::time::parse_rfc3339;
///
/// let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
/// assert_eq!(parse_rfc3339("2023-11-14T22:13:20Z"), Some(t));
/// assert_eq!(parse_rfc3339("2023-11-15T00:13:20+02:00"), Some(t));
/// assert_eq!(parse_rfc3339("yesterday"), None);
/// ```
pub fn parse_rfc3339(value: &str) -> Option<SystemTime> {
    let value = value.trim();
    if !value.is_ascii() || value.len() < 20 || value.len() > 40 {
        return None;
    }
    let (base, offset_secs): (&str, i64) =
        if let Some(base) = value.strip_suffix('Z').or_else(|| value.strip_suffix('z')) {
            (base, 0)
        } else {
            let (base, offset) = value.split_at(value.len() - 6);
            let sign = match offset.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let (h, m) = offset[1..].split_once(':')?;
            let (h, m): (i64, i64) = (h.parse().ok()?, m.parse().ok()?);
            if h > 23 || m > 59 {
                return None;
            }
            (base, sign * (h * 3600 + m * 60))
        };
    let local = humantime::parse_rfc3339_weak(&format!("{base}Z")).ok()?;
    if offset_secs >= 0 {
        local.checked_sub(Duration::from_secs(offset_secs.unsigned_abs()))
    } else {
        local.checked_add(Duration::from_secs(offset_secs.unsigned_abs()))
    }
}

/// The latest instant backstop writes or reads: 9999-12-31T23:59:59Z, the
/// last one RFC 3339 can write. Later instants are clamped to it.
pub fn latest() -> SystemTime {
    // Within the range of SystemTime on every platform Rust supports.
    UNIX_EPOCH + Duration::from_secs(253_402_300_799)
}

/// Formats an instant as RFC 3339 in UTC, to the second:
/// "2026-11-22T14:03:00Z". Instants before 1970 are written as the epoch,
/// instants after [`latest`] as it; never panics.
pub fn format_rfc3339(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at.clamp(UNIX_EPOCH, latest())).to_string()
}

/// `at` plus `d`, at most [`latest`]: never overflows.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use backstop_core::time::{latest, later};
///
/// assert_eq!(later(UNIX_EPOCH, Duration::from_secs(5)), UNIX_EPOCH + Duration::from_secs(5));
/// assert_eq!(later(UNIX_EPOCH, Duration::MAX), latest());
/// ```
pub fn later(at: SystemTime, d: Duration) -> SystemTime {
    at.checked_add(d).map_or_else(latest, |t| t.min(latest()))
}

/// Milliseconds since the Unix epoch, saturating (instants before 1970
/// become 0).
pub fn to_millis(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The instant `millis` milliseconds after the Unix epoch: negative values
/// become the epoch, values after [`latest`] become it.
pub fn from_millis(millis: i64) -> SystemTime {
    later(
        UNIX_EPOCH,
        Duration::from_millis(u64::try_from(millis).unwrap_or(0)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert_eq!(from_millis(to_millis(t)), t);
        assert_eq!(format_rfc3339(t), "2023-11-14T22:13:20Z");
        assert_eq!(from_millis(-5), UNIX_EPOCH);
        assert_eq!(to_millis(UNIX_EPOCH - Duration::from_secs(1)), 0);
        assert_eq!(from_millis(i64::MAX), latest());
        assert_eq!(
            format_rfc3339(from_millis(i64::MAX)),
            "9999-12-31T23:59:59Z"
        );
        assert_eq!(
            format_rfc3339(UNIX_EPOCH + Duration::from_secs(1 << 40)),
            "9999-12-31T23:59:59Z"
        );
        assert_eq!(
            format_rfc3339(UNIX_EPOCH - Duration::from_secs(5)),
            "1970-01-01T00:00:00Z"
        );
    }

    #[test]
    fn parse_table() {
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let cases: &[(&str, Option<SystemTime>)] = &[
            ("2023-11-14T22:13:20Z", Some(t)),
            ("2023-11-14T22:13:20z", Some(t)),
            (
                "2023-11-14T22:13:20.500Z",
                Some(t + Duration::from_millis(500)),
            ),
            ("2023-11-14T17:13:20-05:00", Some(t)),
            ("2023-11-14T22:13:20+25:00", None),
            ("2023-11-14 22:13:20", None),
            ("2023-02-30T00:00:00Z", None),
            ("", None),
            ("2023-11-14T22:13:20é0:00", None),
        ];
        for (value, want) in cases {
            assert_eq!(parse_rfc3339(value), *want, "{value:?}");
        }
    }
}
