//! When a tool says its limit resets: "resets 3pm (Europe/Berlin)", "try
//! again in 2 days 3 hours", "usage limit reached|1719619200", "resets at
//! 2026-05-01T12:00:00Z".

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use backstop_core::time::parse_rfc3339;

/// Phrases after which a duration says how long until the reset.
const IN_PHRASES: &[&str] = &[
    "try again in ",
    "retry again in ",
    "retry in ",
    "retry after ",
    "resets in ",
    "reset in ",
    "available again in ",
    "available in ",
    "please wait ",
];

/// Phrases after which an instant (a time of day, or RFC 3339) says when.
const AT_PHRASES: &[&str] = &[
    "resets at ",
    "reset at ",
    "resets ",
    "try again at ",
    "available again at ",
    "available at ",
];

/// The moment `text` says a limit resets, if it says; `now` anchors
/// relative forms ("in 2 hours", "3pm"). Times of day without a zone are
/// read in the zone named after them in parentheses ("3pm
/// (America/New_York)") or else the machine's local zone, and mean their
/// next occurrence. Never panics; `None` when nothing readable is there.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use backstop_agent::reset_at;
///
/// let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
/// assert_eq!(
///     reset_at("Claude AI usage limit reached|1700003600", now),
///     Some(UNIX_EPOCH + Duration::from_secs(1_700_003_600))
/// );
/// assert_eq!(
///     reset_at("You've hit your usage limit. Try again in 2 hours 5 minutes.", now),
///     Some(now + Duration::from_secs(2 * 3600 + 300))
/// );
/// ```
pub fn reset_at(text: &str, now: SystemTime) -> Option<SystemTime> {
    epoch_after_bar(text)
        .or_else(|| {
            after_phrases(text, IN_PHRASES, |rest| {
                duration_prefix(rest).map(|d| now + d)
            })
        })
        .or_else(|| after_phrases(text, AT_PHRASES, |rest| instant_prefix(rest, now)))
}

/// Claude Code's "...|1719619200".
fn epoch_after_bar(text: &str) -> Option<SystemTime> {
    let (_, tail) = text.rsplit_once('|')?;
    let digits: String = tail
        .trim()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    if !(9..=11).contains(&digits.len()) {
        return None;
    }
    let secs: u64 = digits.parse().ok()?;
    UNIX_EPOCH.checked_add(Duration::from_secs(secs))
}

/// Tries `read` on the text after each occurrence of each phrase.
fn after_phrases(
    text: &str,
    phrases: &[&str],
    read: impl Fn(&str) -> Option<SystemTime>,
) -> Option<SystemTime> {
    let lower = text.to_ascii_lowercase();
    for phrase in phrases {
        let mut from = 0;
        while let Some(i) = lower[from..].find(phrase) {
            let start = from + i + phrase.len();
            if let Some(at) = text.get(start..).and_then(&read) {
                return Some(at);
            }
            from = start;
        }
    }
    None
}

/// A duration at the start of `text`: "2 days 3 hours", "4h 20m",
/// "1h30m", "90 seconds", "30s", "2 days, 3 hours and 4 minutes"; a bare
/// number is seconds ("retry after 30").
fn duration_prefix(text: &str) -> Option<Duration> {
    let mut total = 0.0f64;
    let mut found = false;
    let mut rest = text.trim_start();
    loop {
        rest = rest.trim_start_matches([' ', ',']);
        if let Some(r) = rest.strip_prefix("and ") {
            rest = r;
        }
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if digits == 0 {
            break;
        }
        let Ok(n) = rest[..digits].parse::<f64>() else {
            break;
        };
        let after = rest[digits..].trim_start();
        let word_len = after
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(after.len());
        let unit = after[..word_len].to_ascii_lowercase();
        let scale = match unit.as_str() {
            "d" | "day" | "days" => 86_400.0,
            "h" | "hr" | "hrs" | "hour" | "hours" => 3600.0,
            "m" | "min" | "mins" | "minute" | "minutes" => 60.0,
            "s" | "sec" | "secs" | "second" | "seconds" => 1.0,
            "ms" => 0.001,
            "" if !found => {
                // A bare number: seconds, and nothing may follow.
                total = n;
                found = true;
                break;
            }
            _ => break,
        };
        total += n * scale;
        found = true;
        rest = &after[word_len..];
    }
    let secs = found.then_some(total)?;
    (secs > 0.0 && secs < 400.0 * 86_400.0).then(|| Duration::from_secs_f64(secs))
}

/// An instant at the start of `text`: RFC 3339, a date with a time of day
/// ("Aug 29 at 11am (America/Los_Angeles)", "Aug 20th, 2026 11:50 AM"), or
/// a time of day alone ("3pm", "3:30 pm", "15:00"), each with an optional
/// "(Zone/Name)".
fn instant_prefix(text: &str, now: SystemTime) -> Option<SystemTime> {
    let text = text.trim_start();
    let word: String = text
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != ',' && *c != ')' && *c != '(')
        .collect();
    if let Some(at) = parse_rfc3339(word.trim_end_matches('.')) {
        return Some(at);
    }
    dated(text, now).or_else(|| time_of_day(text, now))
}

/// A clock time at the start of `text` ("3pm", "3:30 PM", "15:00"): the
/// hour (0–23), the minute, and the text after it. A bare number is not a
/// time ("resets 5").
fn clock_time(text: &str) -> Option<(i8, i8, &str)> {
    let hour_len = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    if hour_len == 0 || hour_len > 2 {
        return None;
    }
    let mut hour: i8 = text[..hour_len].parse().ok()?;
    let mut rest = &text[hour_len..];
    let mut minute: i8 = 0;
    let with_minutes = rest.starts_with(':');
    if let Some(r) = rest.strip_prefix(':') {
        let len = r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len());
        if len != 2 {
            return None;
        }
        minute = r[..2].parse().ok()?;
        rest = &r[2..];
    }
    let trimmed = rest.trim_start();
    let meridiem = trimmed.get(..2).map(str::to_ascii_lowercase);
    match meridiem.as_deref() {
        Some(m @ ("am" | "pm")) => {
            if !(1..=12).contains(&hour) {
                return None;
            }
            hour %= 12;
            if m == "pm" {
                hour += 12;
            }
            rest = &trimmed[2..];
        }
        // "resets 15:00" needs the colon: a bare "resets 5" is not a time.
        _ if !with_minutes => return None,
        _ => {}
    }
    (hour <= 23 && minute <= 59).then_some((hour, minute, rest))
}

/// The next occurrence of a time of day, in the zone named after it or
/// the machine's.
fn time_of_day(text: &str, now: SystemTime) -> Option<SystemTime> {
    let (hour, minute, rest) = clock_time(text)?;
    let zone = zone_in(rest).unwrap_or_else(jiff::tz::TimeZone::system);
    let now = jiff::Timestamp::try_from(now).ok()?.to_zoned(zone);
    let time = jiff::civil::Time::new(hour, minute, 0, 0).ok()?;
    let today = now
        .date()
        .to_datetime(time)
        .to_zoned(now.time_zone().clone())
        .ok()?;
    let next = if today.timestamp() > now.timestamp() {
        today
    } else {
        today.checked_add(jiff::Span::new().days(1)).ok()?
    };
    Some(SystemTime::from(next.timestamp()))
}

/// Month names as tools print them, with their numbers.
const MONTHS: &[(&str, i8)] = &[
    ("january", 1),
    ("february", 2),
    ("march", 3),
    ("april", 4),
    ("may", 5),
    ("june", 6),
    ("july", 7),
    ("august", 8),
    ("september", 9),
    ("sept", 9),
    ("october", 10),
    ("november", 11),
    ("december", 12),
    ("jan", 1),
    ("feb", 2),
    ("mar", 3),
    ("apr", 4),
    ("jun", 6),
    ("jul", 7),
    ("aug", 8),
    ("sep", 9),
    ("oct", 10),
    ("nov", 11),
    ("dec", 12),
];

/// "Aug 29 at 11am (America/Los_Angeles)" (Claude) or "Aug 20th, 2026
/// 11:50 AM" (Codex): a month, a day with an optional ordinal suffix, an
/// optional year, an optional "at", a clock time and an optional zone.
/// Without a year, the date means its next occurrence (one that passed
/// less than a day ago is kept: the limit has just reset).
fn dated(text: &str, now: SystemTime) -> Option<SystemTime> {
    let lower = text.to_ascii_lowercase();
    let (name, month) = MONTHS.iter().find(|(name, _)| {
        lower.starts_with(name)
            && !lower[name.len()..].starts_with(|c: char| c.is_ascii_alphabetic())
    })?;
    let rest = text[name.len()..].trim_start_matches('.').trim_start();
    let day_len = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    if day_len == 0 || day_len > 2 {
        return None;
    }
    let day: i8 = rest[..day_len].parse().ok()?;
    let mut rest = &rest[day_len..];
    for suffix in ["st", "nd", "rd", "th"] {
        if rest.to_ascii_lowercase().starts_with(suffix) {
            rest = &rest[2..];
            break;
        }
    }
    rest = rest.trim_start_matches(',').trim_start();
    let year_len = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    let year: Option<i16> = if year_len == 4 {
        let y = rest[..4].parse().ok()?;
        rest = rest[4..].trim_start_matches(',').trim_start();
        Some(y)
    } else {
        None
    };
    if rest.to_ascii_lowercase().starts_with("at ") {
        rest = rest[3..].trim_start();
    }
    let (hour, minute, after) = clock_time(rest)?;
    let zone = zone_in(after).unwrap_or_else(jiff::tz::TimeZone::system);
    let time = jiff::civil::Time::new(hour, minute, 0, 0).ok()?;
    let now_zoned = jiff::Timestamp::try_from(now).ok()?.to_zoned(zone.clone());
    let at = |year: i16| -> Option<jiff::Timestamp> {
        let date = jiff::civil::Date::new(year, *month, day).ok()?;
        Some(
            date.to_datetime(time)
                .to_zoned(zone.clone())
                .ok()?
                .timestamp(),
        )
    };
    let when = match year {
        Some(y) => at(y)?,
        None => {
            let this_year = now_zoned.year();
            let candidate = at(this_year)?;
            let day_ago = now_zoned
                .timestamp()
                .checked_sub(jiff::Span::new().hours(24))
                .ok()?;
            if candidate >= day_ago {
                candidate
            } else {
                at(this_year.checked_add(1)?)?
            }
        }
    };
    Some(SystemTime::from(when))
}

/// "(Europe/Berlin)" at the start of `text`.
fn zone_in(text: &str) -> Option<jiff::tz::TimeZone> {
    let inner = text.trim_start().strip_prefix('(')?;
    let name = &inner[..inner.find(')')?];
    // The text was lower-cased for matching; zone names are not.
    let proper: String = name
        .split('/')
        .map(|part| {
            part.split('_')
                .map(|w| {
                    let mut c = w.chars();
                    c.next()
                        .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                        .unwrap_or_default()
                })
                .collect::<Vec<_>>()
                .join("_")
        })
        .collect::<Vec<_>>()
        .join("/");
    jiff::tz::TimeZone::get(&proper)
        .or_else(|_| jiff::tz::TimeZone::get(name))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Wed 2023-11-15 06:13:20 UTC.
    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_028_800)
    }

    fn secs(s: u64) -> Option<SystemTime> {
        Some(now() + Duration::from_secs(s))
    }

    #[test]
    fn durations() {
        let cases: &[(&str, Option<SystemTime>)] = &[
            (
                "Try again in 2 days 3 hours 15 minutes.",
                secs(2 * 86_400 + 3 * 3600 + 900),
            ),
            ("try again in 4h 20m", secs(4 * 3600 + 1200)),
            ("Please try again in 1h30m.", secs(5400)),
            ("retry after 30 seconds", secs(30)),
            ("Retry after 45", secs(45)),
            ("resets in 5m", secs(300)),
            (
                "try again in 2 days, 3 hours and 4 minutes",
                secs(2 * 86_400 + 3 * 3600 + 240),
            ),
            (
                "Rate limit reached. Please try again in 6.5s.",
                Some(now() + Duration::from_millis(6500)),
            ),
            ("try again in a moment", None),
            ("try again in 0 seconds", None),
            ("try again in 5 fortnights", None),
            ("try again later", None),
        ];
        for (text, want) in cases {
            assert_eq!(reset_at(text, now()), *want, "{text:?}");
        }
    }

    #[test]
    fn instants() {
        let utc = |h, m| {
            let at = jiff::civil::date(2023, 11, 15)
                .at(h, m, 0, 0)
                .to_zoned(jiff::tz::TimeZone::UTC)
                .unwrap();
            Some(SystemTime::from(at.timestamp()))
        };
        let tomorrow = |h, m| utc(h, m).map(|t| t + Duration::from_secs(86_400));
        let zoned = |zone: &str, y, month, day, h, m| {
            let at = jiff::civil::date(y, month, day)
                .at(h, m, 0, 0)
                .to_zoned(jiff::tz::TimeZone::get(zone).unwrap())
                .unwrap();
            Some(SystemTime::from(at.timestamp()))
        };
        let on = |month, day, h, m| zoned("UTC", 2023, month, day, h, m);
        let cases: &[(&str, Option<SystemTime>)] = &[
            (
                "Claude AI usage limit reached|1700032400",
                Some(UNIX_EPOCH + Duration::from_secs(1_700_032_400)),
            ),
            ("5-hour limit reached ∙ resets 3pm (UTC)", utc(15, 0)),
            ("You've hit your limit · resets 3:30 PM (UTC)", utc(15, 30)),
            ("limit reached, resets 5am (UTC)", tomorrow(5, 0)),
            ("resets 9am (Europe/Berlin)", utc(8, 0)),
            ("resets at 2023-11-15T20:00:00Z", utc(20, 0)),
            ("Try again at 2023-11-16T01:02:00+01:00.", tomorrow(0, 2)),
            ("resets 23:15 (UTC)", utc(23, 15)),
            ("resets Nov 29 at 11am (UTC)", on(11, 29, 11, 0)),
            (
                "resets Dec 1 at 3:30 PM (Europe/Berlin)",
                zoned("Europe/Berlin", 2023, 12, 1, 15, 30),
            ),
            (
                "try again at Nov 20th, 2023 11:50 AM (UTC).",
                on(11, 20, 11, 50),
            ),
            (
                "try again at August 2nd, 2024 9am (UTC)",
                Some(SystemTime::from(
                    jiff::civil::date(2024, 8, 2)
                        .at(9, 0, 0, 0)
                        .to_zoned(jiff::tz::TimeZone::UTC)
                        .unwrap()
                        .timestamp(),
                )),
            ),
            // Earlier today: the limit has just reset, not next year.
            ("resets Nov 15 at 1am (UTC)", on(11, 15, 1, 0)),
            // Passed weeks ago: next year's.
            (
                "resets Jan 3 at 1am (UTC)",
                Some(SystemTime::from(
                    jiff::civil::date(2024, 1, 3)
                        .at(1, 0, 0, 0)
                        .to_zoned(jiff::tz::TimeZone::UTC)
                        .unwrap()
                        .timestamp(),
                )),
            ),
            ("resets Feb 30 at 1am (UTC)", None),
            ("resets Nov 29", None),
            ("resets Novel 29 at 1am", None),
            ("resets 25:00 (UTC)", None),
            ("resets 13pm", None),
            ("resets 5", None),
            ("resets soon", None),
            ("what|12", None),
            ("", None),
        ];
        for (text, want) in cases {
            assert_eq!(reset_at(text, now()), *want, "{text:?}");
        }
    }
}
