//! What a response to a download request says about the bytes it carries:
//! a part of the file (206 and `Content-Range`) or the whole file (200).
//! Servers send garbage here too; nothing in this module panics on it.

use backstop_http::StatusCode;
use backstop_http::header::{CONTENT_LENGTH, CONTENT_RANGE, HeaderMap};

/// The bytes a successful response carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Answer {
    /// 206: bytes `start..=end` of a file of `total` bytes (`None` when
    /// the server wrote `*`).
    Part {
        start: u64,
        end: u64,
        total: Option<u64>,
    },
    /// 200: the whole file, of `length` bytes when the server said.
    Whole { length: Option<u64> },
}

impl Answer {
    /// The size of the whole file, when the answer tells it.
    pub(crate) fn total(&self) -> Option<u64> {
        match *self {
            Answer::Part { total, .. } => total,
            Answer::Whole { length } => length,
        }
    }
}

/// Reads a successful response's status and headers. `Err` says, in a
/// few words, what makes it unusable.
pub(crate) fn answer(status: StatusCode, headers: &HeaderMap) -> Result<Answer, String> {
    let length = match headers.get(CONTENT_LENGTH) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or("a Content-Length that is not a number")?,
        ),
    };
    match status.as_u16() {
        200 => Ok(Answer::Whole { length }),
        206 => {
            let value = headers
                .get(CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .ok_or("a 206 without Content-Range")?;
            let (start, end, total) =
                content_range(value).ok_or("a Content-Range that does not parse")?;
            if length.is_some_and(|l| Some(l) != (end - start).checked_add(1)) {
                return Err("a Content-Length that disagrees with its Content-Range".into());
            }
            Ok(Answer::Part { start, end, total })
        }
        other => Err(format!("HTTP {other} where a file was expected")),
    }
}

/// `bytes START-END/TOTAL` or `bytes START-END/*`, with `START <= END`
/// and `END < TOTAL`; `None` for anything else (including the `bytes
/// */TOTAL` of a 416, which carries no bytes).
pub(crate) fn content_range(value: &str) -> Option<(u64, u64, Option<u64>)> {
    let rest = value.trim().strip_prefix("bytes")?.trim_start();
    let (span, total) = rest.split_once('/')?;
    let (start, end) = span.trim().split_once('-')?;
    let number = |s: &str| {
        let s = s.trim();
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u64>().ok())
            .flatten()
    };
    let (start, end) = (number(start)?, number(end)?);
    let total = match total.trim() {
        "*" => None,
        t => Some(number(t)?),
    };
    if start > end || total.is_some_and(|t| end >= t) {
        return None;
    }
    Some((start, end, total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use backstop_http::header::HeaderValue;

    #[test]
    fn content_ranges_as_servers_send_them() {
        type Span = Option<(u64, u64, Option<u64>)>;
        let cases: &[(&str, Span)] = &[
            ("bytes 0-499/1234", Some((0, 499, Some(1234)))),
            ("bytes 500-1233/1234", Some((500, 1233, Some(1234)))),
            ("bytes 734-1233/*", Some((734, 1233, None))),
            (
                "bytes  21010-47021/47022",
                Some((21010, 47021, Some(47022))),
            ),
            ("bytes 0-0/1", Some((0, 0, Some(1)))),
            ("bytes */1234", None),
            ("bytes 5-3/10", None),
            ("bytes 0-10/5", None),
            ("bytes 0-9/10/", None),
            ("bytes a-b/c", None),
            ("bytes -1-5/10", None),
            ("bytes +1-5/10", None),
            ("items 0-1/2", None),
            ("bytes 0-18446744073709551616/*", None),
            ("", None),
            ("bytes", None),
        ];
        for (value, want) in cases {
            assert_eq!(content_range(value), *want, "{value:?}");
        }
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn answers() {
        let ok = |code| StatusCode::from_u16(code).unwrap();
        assert_eq!(
            answer(ok(200), &headers(&[("content-length", "10")])),
            Ok(Answer::Whole { length: Some(10) })
        );
        assert_eq!(
            answer(ok(200), &headers(&[])),
            Ok(Answer::Whole { length: None })
        );
        assert_eq!(
            answer(
                ok(206),
                &headers(&[("content-range", "bytes 4-9/10"), ("content-length", "6")])
            ),
            Ok(Answer::Part {
                start: 4,
                end: 9,
                total: Some(10)
            })
        );
        for bad in [
            answer(ok(206), &headers(&[])),
            answer(
                ok(206),
                &headers(&[("content-range", "bytes 4-9/10"), ("content-length", "5")]),
            ),
            answer(ok(206), &headers(&[("content-range", "garbage")])),
            answer(ok(200), &headers(&[("content-length", "ten")])),
            answer(ok(200), &headers(&[("content-length", "-1")])),
            answer(ok(204), &headers(&[])),
        ] {
            assert!(bad.is_err(), "{bad:?}");
        }
    }
}
