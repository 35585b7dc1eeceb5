//! What one HTTP attempt failed with, and how the engine should treat it.

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::time::{Duration, SystemTime};

use backstop_core::time::format_rfc3339;
use backstop_core::{Class, Classified, HumanDuration, Verdict, classify_io_kind, classify_status};
use reqwest::StatusCode;

use crate::hosts::Cooling;

/// The failure of one attempt.
#[derive(Debug)]
pub enum HttpFailure {
    /// The server answered with a status that is not a success.
    Status {
        /// The status.
        status: StatusCode,
        /// The wait the server asked for (Retry-After and friends).
        wait: Option<Duration>,
        /// The body says the quota is used up (OpenAI's
        /// `insufficient_quota`), whatever the status.
        quota: bool,
        /// The server's own message, cleaned up and shortened, with any
        /// credential the request carried removed.
        detail: Option<String>,
    },
    /// No response headers arrived within the header timeout (counted
    /// from the end of the request body).
    HeaderTimeout(Duration),
    /// The server took none of the request body for this long.
    UploadStalled(Duration),
    /// The connection, TLS, or the body stream failed.
    Transport(reqwest::Error),
    /// The body was complete but not what was expected (invalid JSON, too
    /// large).
    Invalid(String),
    /// The body could not be written where it goes (a full disk): retrying
    /// the request does not mend it.
    Local(io::Error),
    /// Nothing was sent: the host asked to be left alone until `until`
    /// (this process or another one sharing the cooldown ledger was told
    /// so by a 429, 503 or 529), and that is `wait` away. Classified as
    /// rate limited with that wait: the retry engine sits through it when
    /// its policy allows, and ends the call at once otherwise.
    CoolingDown {
        /// The host, as shown to people.
        host: String,
        /// When its cooldown ends.
        until: SystemTime,
        /// How long that was from the moment the request was held back.
        wait: Duration,
    },
}

impl From<Cooling> for HttpFailure {
    fn from(c: Cooling) -> Self {
        HttpFailure::CoolingDown {
            host: c.host,
            until: c.until,
            wait: c.wait,
        }
    }
}

impl HttpFailure {
    /// The verdict, knowing whether the request may be repeated safely.
    ///
    /// A request that is not idempotent (POST, PATCH) is retried only when
    /// the server cannot have acted on it ([`HttpFailure::not_acted`]);
    /// any other failure ends it as permanent, its reason saying why it
    /// was not retried: the server may have acted, and asking again could
    /// make it act twice.
    pub fn verdict_for(&self, idempotent: bool) -> Verdict {
        let verdict = self.verdict();
        if idempotent || !verdict.class.is_retryable() || self.not_acted() {
            return verdict;
        }
        Verdict::permanent(format!(
            "{} (not retried: the server may have acted on it)",
            verdict.reason
        ))
    }

    /// Whether the failure shows that the server did not act on the
    /// request: nothing was sent (the connection was never made, or the
    /// host's cooldown held the request back), or the
    /// server answered that it did not take it — 408 (it did not receive
    /// the whole request), 425 (too early to process), 429 (rate limited),
    /// 529 (overloaded), or a 503 that says when to come back
    /// (`Retry-After` and friends). A 503 without a wait may come from a
    /// gateway whose backend failed midway; a 500, 502 or 504, no answer
    /// in time, or a connection that broke once the request went out
    /// leave it unknown.
    pub fn not_acted(&self) -> bool {
        match self {
            HttpFailure::Status { status, wait, .. } => match status.as_u16() {
                408 | 425 | 429 | 529 => true,
                503 => wait.is_some(),
                _ => false,
            },
            HttpFailure::Transport(e) => e.is_connect(),
            HttpFailure::CoolingDown { .. } => true,
            _ => false,
        }
    }

    /// A short reason for progress lines and retry hooks.
    pub fn reason(&self) -> String {
        self.verdict().reason.into_owned()
    }
}

impl Classified for HttpFailure {
    /// The verdict for an idempotent request.
    fn verdict(&self) -> Verdict {
        match self {
            HttpFailure::Status {
                status,
                wait,
                quota,
                ..
            } => {
                let verdict = classify_status(status.as_u16(), *wait);
                if *quota {
                    Verdict::new(Class::QuotaExhausted { reset: *wait }, verdict.reason)
                } else {
                    verdict
                }
            }
            HttpFailure::HeaderTimeout(_) => Verdict::transient("no response headers"),
            HttpFailure::UploadStalled(_) => Verdict::transient("upload stalled"),
            HttpFailure::Transport(e) => transport_verdict(e),
            HttpFailure::Invalid(_) => Verdict::permanent("invalid response"),
            HttpFailure::CoolingDown { until, wait, .. } => Verdict::new(
                Class::RateLimited { wait: Some(*wait) },
                format!("cooling down until {}", format_rfc3339(*until)),
            ),
            HttpFailure::Local(e) => {
                let verdict = classify_io_kind(e.kind());
                Verdict::permanent(format!("cannot write the body: {}", verdict.reason))
            }
        }
    }
}

/// Classifies a reqwest error by its kind and the typed errors in its
/// source chain (hyper's, std's I/O), never by its message.
fn transport_verdict(e: &reqwest::Error) -> Verdict {
    if e.is_builder() {
        return Verdict::permanent("invalid request");
    }
    if e.is_redirect() {
        return Verdict::permanent("too many redirects");
    }
    if let Some(io) = find_source::<io::Error>(e) {
        let v = classify_io_kind(io.kind());
        if innermost(io).kind() == io::ErrorKind::InvalidData {
            // rustls reports certificate and handshake failures this way,
            // inside the connector's own error.
            return Verdict::permanent("TLS error");
        }
        if io.kind() == io::ErrorKind::UnexpectedEof {
            // A body cut mid-way: the same event as hyper's incomplete
            // message below, in the same words.
            return Verdict::transient("connection closed early");
        }
        if v.class == Class::Transient {
            return v;
        }
    }
    if e.is_timeout() {
        return Verdict::transient("read timed out");
    }
    if let Some(h) = find_source::<hyper::Error>(e) {
        if h.is_incomplete_message() {
            return Verdict::transient("connection closed early");
        }
        if h.is_timeout() {
            return Verdict::transient("timed out");
        }
        if h.is_parse() || h.is_parse_status() {
            return Verdict::transient("malformed response");
        }
    }
    if e.is_connect() {
        return Verdict::transient("could not connect");
    }
    if e.is_body() || e.is_decode() {
        return Verdict::transient("body cut short");
    }
    // A network failure of a kind not listed above: the attempt count
    // bounds the cost of trying again.
    Verdict::transient("network error")
}

/// The I/O error `io` wraps, however deep: the connector wraps the
/// TLS layer's (whose kind says what happened) in one of its own, and an
/// I/O error's `source` skips the error it wraps.
fn innermost(mut io: &io::Error) -> &io::Error {
    while let Some(inner) = io.get_ref().and_then(|e| e.downcast_ref::<io::Error>()) {
        io = inner;
    }
    io
}

fn find_source<'a, T: StdError + 'static>(e: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    let mut current: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = current {
        if let Some(found) = err.downcast_ref::<T>() {
            return Some(found);
        }
        current = err.source();
    }
    None
}

impl fmt::Display for HttpFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpFailure::Status { status, detail, .. } => {
                write!(f, "HTTP {}", status.as_u16())?;
                if let Some(reason) = status.canonical_reason() {
                    write!(f, " {reason}")?;
                }
                if let Some(detail) = detail {
                    write!(f, ": {detail}")?;
                }
                Ok(())
            }
            HttpFailure::HeaderTimeout(d) => {
                write!(f, "no response headers within {}", HumanDuration(*d))
            }
            HttpFailure::UploadStalled(d) => {
                write!(
                    f,
                    "the server took no request bytes for {}",
                    HumanDuration(*d)
                )
            }
            HttpFailure::Transport(e) => {
                f.write_str(&transport_verdict(e).reason)?;
                match root_cause(e) {
                    Some(cause) => write!(f, ": {cause}"),
                    None => Ok(()),
                }
            }
            HttpFailure::Invalid(why) => write!(f, "invalid response: {why}"),
            HttpFailure::CoolingDown { host, until, wait } => write!(
                f,
                "{host} is cooling down until {}, {} away; nothing was sent",
                format_rfc3339(*until),
                HumanDuration(*wait)
            ),
            HttpFailure::Local(e) => write!(f, "cannot write the body: {e}"),
        }
    }
}

impl StdError for HttpFailure {
    /// None: a transport failure's message already ends with its root
    /// cause, and the layers of reqwest and hyper around it say nothing
    /// more.
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        None
    }
}

/// What a transport error comes down to, for people: the errors under
/// reqwest's and hyper-util's wrappers ("error sending request", "client
/// error (Connect)"), joined — "dns error: failed to lookup address
/// information: Name or service not known", "tls handshake eof",
/// "tcp connect error: Connection refused (os error 111)".
fn root_cause(e: &reqwest::Error) -> Option<String> {
    let mut parts: Vec<String> = Vec::new();
    let mut current = e.source();
    while let Some(err) = current {
        let wrapper = err.is::<reqwest::Error>() || err.is::<hyper_util::client::legacy::Error>();
        let text = err.to_string();
        if !wrapper && !text.is_empty() && parts.last() != Some(&text) {
            parts.push(text);
        }
        current = err.source();
    }
    (!parts.is_empty()).then(|| parts.join(": "))
}

/// The server's own explanation from an error body: the `error`,
/// `error.message`, `message` or `detail` field of a JSON body, or the
/// first line of a text body. Control characters are dropped (a server
/// must not be able to drive the user's terminal), the result is cut to
/// 200 characters, and every `secret`, and anything shaped like a
/// credential, is replaced by `<redacted>` ([`backstop_core::redact`]).
pub(crate) fn detail(body: &[u8], secrets: &[String]) -> Option<String> {
    let text = match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(json) => json_message(&json)?,
        Err(_) => String::from_utf8_lossy(body)
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())?
            .to_owned(),
    };
    let clean: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let known: Vec<&str> = secrets.iter().map(String::as_str).collect();
    let clean = backstop_core::redact(&clean, &known);
    let clean = clean.trim();
    if clean.is_empty() {
        return None;
    }
    let mut out: String = clean.chars().take(200).collect();
    if clean.chars().count() > 200 {
        out.push('…');
    }
    Some(out)
}

fn json_message(json: &serde_json::Value) -> Option<String> {
    let pick = |v: &serde_json::Value| -> Option<String> {
        match v {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Object(o) => {
                o.get("message").and_then(|m| m.as_str()).map(str::to_owned)
            }
            _ => None,
        }
    };
    ["error", "message", "detail"]
        .iter()
        .find_map(|k| json.get(k).and_then(pick))
}

/// Whether an error body says the account's quota is used up, in the
/// structured fields providers use for it (OpenAI's `insufficient_quota`
/// code or type).
pub(crate) fn says_quota(body: &[u8]) -> bool {
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(body) else {
        return false;
    };
    let error = json.get("error");
    ["code", "type"].iter().any(|k| {
        error.and_then(|e| e.get(k)).and_then(|v| v.as_str()) == Some("insufficient_quota")
    })
}

/// The server wait a JSON error body carries: Google's
/// `error.details[].retryDelay` ("34s") on a `RetryInfo` detail.
pub(crate) fn body_wait(body: &[u8]) -> Option<Duration> {
    let json = serde_json::from_slice::<serde_json::Value>(body).ok()?;
    let details = json.get("error")?.get("details")?.as_array()?;
    details.iter().find_map(|d| {
        let kind = d.get("@type")?.as_str()?;
        if !kind.ends_with("RetryInfo") {
            return None;
        }
        backstop_core::wait::go_duration(d.get("retryDelay")?.as_str()?)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kind_of_an_io_error_is_its_innermost_one() {
        // How a refused certificate reaches reqwest: rustls's error in an
        // InvalidData I/O error, in the connector's Other one.
        let tls = io::Error::new(io::ErrorKind::InvalidData, "invalid peer certificate");
        let wrapped = io::Error::other(tls);
        assert_eq!(innermost(&wrapped).kind(), io::ErrorKind::InvalidData);
        let plain = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(innermost(&plain).kind(), io::ErrorKind::ConnectionRefused);
    }

    fn status(code: u16) -> HttpFailure {
        HttpFailure::Status {
            status: StatusCode::from_u16(code).unwrap(),
            wait: None,
            quota: false,
            detail: None,
        }
    }

    /// Which answers say the server did not act, so that a POST may be
    /// sent again, and which leave it unknown.
    #[test]
    fn non_idempotent_requests_retry_only_refusals() {
        let waiting = |code: u16| HttpFailure::Status {
            status: StatusCode::from_u16(code).unwrap(),
            wait: Some(Duration::from_secs(2)),
            quota: false,
            detail: None,
        };
        for (failure, retried) in [
            (status(408), true),
            (status(425), true),
            (status(429), true),
            (waiting(429), true),
            (status(529), true),
            (waiting(503), true),
            (status(503), false),
            (status(500), false),
            (status(502), false),
            (status(504), false),
            (HttpFailure::HeaderTimeout(Duration::from_secs(1)), false),
            (HttpFailure::UploadStalled(Duration::from_secs(1)), false),
        ] {
            let verdict = failure.verdict_for(false);
            assert_eq!(verdict.class.is_retryable(), retried, "{failure}");
            assert!(failure.verdict_for(true).class.is_retryable(), "{failure}");
            if !retried {
                assert_eq!(verdict.class, Class::Permanent, "{failure}");
                assert!(
                    verdict
                        .reason
                        .ends_with("(not retried: the server may have acted on it)"),
                    "{}",
                    verdict.reason
                );
            }
        }
        assert_eq!(
            waiting(503).verdict_for(false).class,
            Class::Overloaded {
                wait: Some(Duration::from_secs(2))
            },
            "the server's wait is kept"
        );
    }

    #[test]
    fn a_cooling_host_is_a_rate_limit_with_its_wait_and_nothing_sent() {
        let until = std::time::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let f = HttpFailure::CoolingDown {
            host: "hf.co".into(),
            until,
            wait: Duration::from_secs(42),
        };
        let verdict = f.verdict_for(false);
        assert_eq!(
            verdict.class,
            Class::RateLimited {
                wait: Some(Duration::from_secs(42))
            },
            "retried even when not idempotent: nothing was sent"
        );
        assert_eq!(verdict.reason, "cooling down until 2027-01-15T08:00:00Z");
        assert_eq!(
            f.to_string(),
            "hf.co is cooling down until 2027-01-15T08:00:00Z, 42 s away; nothing was sent"
        );
    }

    #[test]
    fn quota_bodies_override_the_status() {
        let f = HttpFailure::Status {
            status: StatusCode::TOO_MANY_REQUESTS,
            wait: None,
            quota: true,
            detail: None,
        };
        assert_eq!(f.verdict().class, Class::QuotaExhausted { reset: None });
        assert!(says_quota(
            br#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","code":"insufficient_quota"}}"#
        ));
        assert!(!says_quota(br#"{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}"#));
        assert!(!says_quota(
            b"insufficient_quota in plain text is not a signal"
        ));
    }

    #[test]
    fn details_are_clean_and_short() {
        let cases: &[(&[u8], Option<&str>)] = &[
            (
                br#"{"error":"Invalid username or password."}"#,
                Some("Invalid username or password."),
            ),
            (
                br#"{"error":{"message":"Rate limit reached for gpt-4"}}"#,
                Some("Rate limit reached for gpt-4"),
            ),
            (br#"{"detail":"Not Found"}"#, Some("Not Found")),
            (br#"{"other":1}"#, None),
            (
                b"\n\nupstream connect error\nsecond line",
                Some("upstream connect error"),
            ),
            (
                b"evil \x1b[2J\x1b]0;pwned\x07 text",
                Some("evil  [2J ]0;pwned  text"),
            ),
            (b"", None),
            (
                b"token hf_secret123 echoed",
                Some("token <redacted> echoed"),
            ),
        ];
        for (body, want) in cases {
            assert_eq!(
                detail(body, &["hf_secret123".to_owned()]).as_deref(),
                *want,
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
        let long = "x".repeat(500);
        assert_eq!(detail(long.as_bytes(), &[]).unwrap().chars().count(), 201);
    }

    #[test]
    fn google_retry_info() {
        let body = br#"{"error":{"code":429,"status":"RESOURCE_EXHAUSTED","details":[
            {"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[]},
            {"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"34s"}]}}"#;
        assert_eq!(body_wait(body), Some(Duration::from_secs(34)));
        assert_eq!(body_wait(b"{}"), None);
        assert_eq!(body_wait(b"not json"), None);
    }
}
