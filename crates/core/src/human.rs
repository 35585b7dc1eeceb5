//! Durations written for people: "250 ms", "7 s", "1.5 s", "2 min 5 s", "3 h 10 min".

use std::fmt;
use std::time::Duration;

/// Displays a duration the way backstop's messages and progress lines do:
/// milliseconds, seconds, minutes, hours, and days from two days on.
///
/// ```
/// use std::time::Duration;
/// use backstop_core::HumanDuration;
///
/// assert_eq!(HumanDuration(Duration::from_millis(250)).to_string(), "250 ms");
/// assert_eq!(HumanDuration(Duration::from_millis(1500)).to_string(), "1.5 s");
/// assert_eq!(HumanDuration(Duration::from_secs(55)).to_string(), "55 s");
/// assert_eq!(HumanDuration(Duration::from_secs(125)).to_string(), "2 min 5 s");
/// assert_eq!(HumanDuration(Duration::from_secs(3 * 3600 + 600)).to_string(), "3 h 10 min");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

/// A count with its noun, as every message of backstop writes one:
/// "1 file", "2 files", "1 delivery", "3 deliveries".
///
/// ```
/// assert_eq!(backstop_core::plural(1, "delivery", "deliveries"), "1 delivery");
/// assert_eq!(backstop_core::plural(0, "file", "files"), "0 files");
/// ```
pub fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// An error and its chain of sources on one line, as backstop's item
/// lines and warnings show one: "failed: HTTP 503; caused by: ...".
///
/// ```
/// let e = std::io::Error::other("the ledger at sqlite:/x cannot be opened");
/// assert_eq!(backstop_core::with_causes(&e), "the ledger at sqlite:/x cannot be opened");
/// ```
pub fn with_causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(&format!("; caused by: {cause}"));
        source = cause.source();
    }
    text
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        let secs = d.as_secs();
        if d < Duration::from_secs(1) {
            write!(f, "{} ms", d.as_millis())
        } else if secs < 10 {
            let tenths = d.as_millis() / 100;
            if tenths.is_multiple_of(10) {
                write!(f, "{} s", tenths / 10)
            } else {
                write!(f, "{}.{} s", tenths / 10, tenths % 10)
            }
        } else if secs < 60 {
            write!(f, "{secs} s")
        } else if secs < 3600 {
            match secs % 60 {
                0 => write!(f, "{} min", secs / 60),
                s => write!(f, "{} min {s} s", secs / 60),
            }
        } else if secs < 2 * 86_400 {
            match (secs % 3600) / 60 {
                0 => write!(f, "{} h", secs / 3600),
                m => write!(f, "{} h {m} min", secs / 3600),
            }
        } else {
            match (secs % 86_400) / 3600 {
                0 => write!(f, "{} d", secs / 86_400),
                h => write!(f, "{} d {h} h", secs / 86_400),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let cases = [
            (Duration::ZERO, "0 ms"),
            (Duration::from_micros(999_999), "999 ms"),
            (Duration::from_secs(1), "1 s"),
            (Duration::from_millis(9_950), "9.9 s"),
            (Duration::from_secs(31), "31 s"),
            (Duration::from_secs(60), "1 min"),
            (Duration::from_secs(3599), "59 min 59 s"),
            (Duration::from_secs(3600), "1 h"),
            (Duration::from_secs(86_400 * 2 - 60), "47 h 59 min"),
            (Duration::from_secs(86_400 * 2 + 60), "2 d"),
            (Duration::from_secs(86_400 * 400 + 7200), "400 d 2 h"),
        ];
        for (d, want) in cases {
            assert_eq!(HumanDuration(d).to_string(), want);
        }
    }
}
