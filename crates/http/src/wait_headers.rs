//! Reading a server's requested wait from a response's headers.

use std::time::{Duration, SystemTime};

use backstop_core::wait;
use reqwest::header::HeaderMap;

/// The wait a response asks for, from the most precise signal present:
///
/// 1. `retry-after-ms` (OpenAI, Azure);
/// 2. `Retry-After`, delta-seconds or HTTP-date;
/// 3. the IETF `RateLimit` header's `t=` (Hugging Face), or the older
///    `RateLimit-Reset`;
/// 4. `x-ratelimit-reset`, as an OpenAI duration or GitHub's epoch seconds,
///    when `x-ratelimit-remaining` is absent or 0;
/// 5. OpenAI's `x-ratelimit-reset-{requests,tokens}` and Anthropic's
///    `anthropic-ratelimit-*-reset` for the limits that are exhausted
///    (their `-remaining` is 0), the longest of them; when no `-remaining`
///    says which, the longest reset.
///
/// A header that is malformed, zero, negative or past is skipped, and the
/// next one is tried; `None` means the caller uses its own backoff. A wait
/// that parses is returned whatever its size (saturating): the policy
/// decides whether to sit through it.
pub fn server_wait(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(wait) = get("retry-after-ms").and_then(wait::retry_after_ms) {
        return Some(wait);
    }
    if let Some(wait) = get("retry-after").and_then(|v| wait::retry_after(v, now)) {
        return Some(wait);
    }
    if let Some(wait) = get("ratelimit").and_then(wait::ratelimit) {
        return Some(wait);
    }
    if let Some(wait) = get("ratelimit-reset").and_then(|v| wait::retry_after(v, now)) {
        return Some(wait);
    }
    let exhausted = |remaining: Option<&str>| remaining.is_none_or(|r| r.trim() == "0");
    if exhausted(get("x-ratelimit-remaining"))
        && let Some(wait) = get("x-ratelimit-reset").and_then(|v| wait::reset(v, now))
    {
        return Some(wait);
    }
    per_limit_resets(headers, now)
}

/// The wait a response announces *before* any refusal: its rate-limit
/// headers say that no request remains, and until when. A success can
/// carry it (Docker Hub counts each manifest GET), and a client that
/// heeds it waits instead of spending requests on 429s:
///
/// 1. the IETF `RateLimit` with a policy at `r=0` (its `t`);
/// 2. `RateLimit-Remaining: 0` with `RateLimit-Reset`, or, without a
///    reset, the window it names — Docker Hub's `ratelimit-remaining:
///    0;w=21600`, a six-hour window, the longest the wait can be;
/// 3. `x-ratelimit-remaining: 0` with `x-ratelimit-reset` (GitHub's epoch,
///    an OpenAI duration).
///
/// `None` when requests remain, or when nothing says how long to wait.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use backstop_http::header::{HeaderMap, HeaderValue};
/// use backstop_http::spent_quota;
///
/// let mut headers = HeaderMap::new();
/// headers.insert("ratelimit-limit", HeaderValue::from_static("100;w=21600"));
/// headers.insert("ratelimit-remaining", HeaderValue::from_static("0;w=21600"));
/// assert_eq!(spent_quota(&headers, SystemTime::now()), Some(Duration::from_secs(21600)));
/// headers.insert("ratelimit-remaining", HeaderValue::from_static("76;w=21600"));
/// assert_eq!(spent_quota(&headers, SystemTime::now()), None);
/// ```
pub fn spent_quota(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(wait) = get("ratelimit").and_then(wait::ratelimit_spent) {
        return Some(wait);
    }
    if let Some(spent) = get("ratelimit-remaining")
        .and_then(wait::remaining)
        .filter(|r| r.count == 0)
    {
        let reset = get("ratelimit-reset").and_then(|v| wait::retry_after(v, now));
        let limit_window = get("ratelimit-limit")
            .and_then(wait::remaining)
            .and_then(|limit| limit.window);
        return reset.or(spent.window).or(limit_window);
    }
    if get("x-ratelimit-remaining").is_some_and(|r| r.trim() == "0") {
        return get("x-ratelimit-reset").and_then(|v| wait::reset(v, now));
    }
    None
}

type Parser = fn(&str, SystemTime) -> Option<Duration>;

/// The longest reset among the exhausted per-limit headers of OpenAI and
/// Anthropic.
fn per_limit_resets(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let mut exhausted: Option<Duration> = None;
    let mut unlabelled: Option<Duration> = None;
    for (name, value) in headers {
        let name = name.as_str();
        let (prefix, parse): (&str, Parser) =
            if let Some(limit) = name.strip_prefix("x-ratelimit-reset-") {
                (limit, wait::reset)
            } else if let Some(limit) = name
                .strip_prefix("anthropic-ratelimit-")
                .and_then(|rest| rest.strip_suffix("-reset"))
            {
                (limit, wait::rfc3339)
            } else {
                continue;
            };
        let Some(wait) = value.to_str().ok().and_then(|v| parse(v, now)) else {
            continue;
        };
        let remaining_name = if name.starts_with("x-") {
            format!("x-ratelimit-remaining-{prefix}")
        } else {
            format!("anthropic-ratelimit-{prefix}-remaining")
        };
        match headers.get(&remaining_name).and_then(|v| v.to_str().ok()) {
            Some(r) if r.trim() == "0" => exhausted = exhausted.max(Some(wait)),
            Some(_) => {}
            None => unlabelled = unlabelled.max(Some(wait)),
        }
    }
    exhausted.or(unlabelled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderName, HeaderValue};
    use std::time::UNIX_EPOCH;

    fn now() -> SystemTime {
        // Wed, 15 Nov 2023 06:13:20 GMT
        UNIX_EPOCH + Duration::from_secs(1_700_028_800)
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    const S: fn(u64) -> Option<Duration> = |s| Some(Duration::from_secs(s));

    /// Header sets as real servers send them.
    #[test]
    fn real_responses() {
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], Option<Duration>);
        let cases: &[Case<'_>] = &[
            ("plain Retry-After", &[("retry-after", "55")], S(55)),
            (
                "Retry-After as a date",
                &[("retry-after", "Wed, 15 Nov 2023 06:14:15 GMT")],
                S(55),
            ),
            (
                "OpenAI 429",
                &[
                    ("retry-after", "20"),
                    ("retry-after-ms", "19876"),
                    ("x-ratelimit-limit-requests", "500"),
                    ("x-ratelimit-remaining-requests", "0"),
                    ("x-ratelimit-reset-requests", "6m0s"),
                    ("x-ratelimit-remaining-tokens", "149984"),
                    ("x-ratelimit-reset-tokens", "6ms"),
                ],
                Some(Duration::from_millis(19_876)),
            ),
            (
                "OpenAI without Retry-After: the exhausted limit's reset",
                &[
                    ("x-ratelimit-remaining-requests", "0"),
                    ("x-ratelimit-reset-requests", "1s"),
                    ("x-ratelimit-remaining-tokens", "12"),
                    ("x-ratelimit-reset-tokens", "6m0s"),
                ],
                S(1),
            ),
            (
                "Anthropic 429",
                &[
                    ("anthropic-ratelimit-requests-remaining", "0"),
                    ("anthropic-ratelimit-requests-reset", "2023-11-15T06:13:50Z"),
                    ("anthropic-ratelimit-tokens-remaining", "9000"),
                    ("anthropic-ratelimit-tokens-reset", "2023-11-15T06:14:20Z"),
                ],
                S(30),
            ),
            (
                "Hugging Face",
                &[
                    ("ratelimit", r#""api";r=0;t=55"#),
                    ("ratelimit-policy", r#""fixed window";"api";q=500;w=300"#),
                ],
                S(55),
            ),
            (
                "draft RateLimit-Reset",
                &[("ratelimit-remaining", "0"), ("ratelimit-reset", "12")],
                S(12),
            ),
            (
                "GitHub primary limit",
                &[
                    ("x-ratelimit-limit", "60"),
                    ("x-ratelimit-remaining", "0"),
                    ("x-ratelimit-reset", "1700028860"),
                ],
                S(60),
            ),
            (
                "GitHub with requests left: the reset is not a wait",
                &[
                    ("x-ratelimit-remaining", "59"),
                    ("x-ratelimit-reset", "1700028860"),
                ],
                None,
            ),
            (
                "junk Retry-After falls through to RateLimit",
                &[("retry-after", "soon"), ("ratelimit", "\"api\";r=0;t=9")],
                S(9),
            ),
            ("negative", &[("retry-after", "-3")], None),
            ("zero", &[("retry-after", "0")], None),
            (
                "past date",
                &[("retry-after", "Tue, 14 Nov 2023 06:13:20 GMT")],
                None,
            ),
            (
                "ten years: parseable, so the server's request",
                &[("retry-after", "315360000")],
                S(315_360_000),
            ),
            (
                "beyond any clock: saturated",
                &[("retry-after", "99999999999999999999999999")],
                Some(Duration::MAX),
            ),
            (
                "a huge retry-after-ms wins over a short Retry-After",
                &[("retry-after-ms", "86400000000"), ("retry-after", "5")],
                S(86_400_000),
            ),
            ("none", &[("content-type", "text/plain")], None),
        ];
        for (what, pairs, want) in cases {
            assert_eq!(server_wait(&headers(pairs), now()), *want, "{what}");
        }
    }

    /// Headers of answers that succeeded, as registries and APIs send them.
    #[test]
    fn spent_quotas() {
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], Option<Duration>);
        let cases: &[Case<'_>] = &[
            (
                "Docker Hub, quota spent",
                &[
                    ("ratelimit-limit", "100;w=21600"),
                    ("ratelimit-remaining", "0;w=21600"),
                    ("docker-ratelimit-source", "192.0.2.1"),
                ],
                S(21600),
            ),
            (
                "Docker Hub, requests left",
                &[
                    ("ratelimit-limit", "100;w=21600"),
                    ("ratelimit-remaining", "76;w=21600"),
                ],
                None,
            ),
            (
                "the window on the limit only",
                &[
                    ("ratelimit-limit", "100;w=3600"),
                    ("ratelimit-remaining", "0"),
                ],
                S(3600),
            ),
            (
                "draft headers with a reset",
                &[
                    ("ratelimit-limit", "100"),
                    ("ratelimit-remaining", "0"),
                    ("ratelimit-reset", "12"),
                ],
                S(12),
            ),
            (
                "spent, but no word on how long",
                &[("ratelimit-remaining", "0")],
                None,
            ),
            (
                "Hugging Face, spent",
                &[("ratelimit", r#""api";r=0;t=55"#)],
                S(55),
            ),
            (
                "Hugging Face, requests left",
                &[("ratelimit", r#""api";r=12;t=55"#)],
                None,
            ),
            (
                "GitHub, spent",
                &[
                    ("x-ratelimit-remaining", "0"),
                    ("x-ratelimit-reset", "1700028860"),
                ],
                S(60),
            ),
            (
                "GitHub, requests left",
                &[
                    ("x-ratelimit-remaining", "59"),
                    ("x-ratelimit-reset", "1700028860"),
                ],
                None,
            ),
            (
                "a Retry-After on a success is not a spent quota",
                &[("retry-after", "30")],
                None,
            ),
            ("junk", &[("ratelimit-remaining", "none;w=60")], None),
        ];
        for (what, pairs, want) in cases {
            assert_eq!(spent_quota(&headers(pairs), now()), *want, "{what}");
        }
    }

    #[test]
    fn non_utf8_values_are_skipped() {
        let mut map = HeaderMap::new();
        map.insert("retry-after", HeaderValue::from_bytes(b"\xff\xfe").unwrap());
        map.insert("retry-after-ms", HeaderValue::from_bytes(b"\x80").unwrap());
        assert_eq!(server_wait(&map, now()), None);
    }
}
