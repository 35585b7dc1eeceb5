//! Why a run of a tool failed, read from what the tool itself reported.
//!
//! Structured signals come first: the exit code, the tool's JSON events
//! (`claude -p --output-format json|stream-json`, `codex exec --json`,
//! `opencode run --format json`), the reset time it prints. Only then the
//! tool's own error lines, matched where the tool writes them (Claude's
//! error result, Codex's `ERROR:` line, opencode's `Error:` line, aider's
//! `litellm.…Error` block). Text the model wrote — an answer that talks
//! about a 429, a transcript of a rate-limit handler it just wrote — is
//! never read: a model's words cannot cool a key down.

use std::ffi::OsStr;
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::reset_at;
use backstop_process::{Exit, Transcript};

/// The longest error message an [`AgentFailure`] keeps, in characters.
const MAX_MESSAGE: usize = 300;

/// Which tool's output to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Agent {
    /// Claude Code (`claude -p`), text, JSON or stream-JSON output.
    Claude,
    /// OpenAI Codex (`codex exec`), human or `--json` output.
    Codex,
    /// opencode (`opencode run`), text or `--format json` output.
    Opencode,
    /// aider (`aider --message`), which exits 0 whatever happened.
    Aider,
    /// Any other command: only its exit code and silences are read (0
    /// success, 75 a temporary failure, anything else a failure).
    Generic,
}

impl Agent {
    /// Every agent, in the order help texts list them.
    pub const ALL: [Agent; 5] = [
        Agent::Claude,
        Agent::Codex,
        Agent::Opencode,
        Agent::Aider,
        Agent::Generic,
    ];

    /// The agent a program is, from its file name (`/usr/bin/claude` is
    /// Claude); [`Agent::Generic`] for anything else.
    ///
    /// ```
    /// use backstop_agent::Agent;
    /// assert_eq!(Agent::detect("/home/me/.local/bin/codex".as_ref()), Agent::Codex);
    /// assert_eq!(Agent::detect("./my-script.sh".as_ref()), Agent::Generic);
    /// ```
    pub fn detect(program: &OsStr) -> Agent {
        let name = Path::new(program)
            .file_name()
            .and_then(OsStr::to_str)
            .unwrap_or_default();
        Agent::ALL
            .into_iter()
            .find(|a| *a != Agent::Generic && a.as_str() == name)
            .unwrap_or(Agent::Generic)
    }

    /// The name used on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Agent::Claude => "claude",
            Agent::Codex => "codex",
            Agent::Opencode => "opencode",
            Agent::Aider => "aider",
            Agent::Generic => "generic",
        }
    }
}

impl fmt::Display for Agent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An agent name that is not one of [`Agent::ALL`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an agent (one of claude, codex, opencode, aider, generic)")]
pub struct UnknownAgent(pub String);

impl FromStr for Agent {
    type Err = UnknownAgent;

    fn from_str(s: &str) -> Result<Agent, UnknownAgent> {
        Agent::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| UnknownAgent(s.chars().take(64).collect()))
    }
}

/// What kind of failure a run ended with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// The model's rate limit: try another model, or this one later.
    RateLimit,
    /// The provider is overloaded (HTTP 529/503, "at capacity").
    Overloaded,
    /// The account's allowance or credits are used up: every model of the
    /// provider is out until the reset.
    Quota,
    /// The credentials were refused or are missing.
    Auth,
    /// The provider failed (HTTP 5xx, a dropped stream, a timeout): worth
    /// another try on the same model.
    Provider,
    /// The tool printed nothing for the idle timeout and was stopped.
    Stalled,
    /// Anything else: the tool failed in a way retrying will not fix.
    Failed,
}

impl Kind {
    /// Whether another try of the same model may succeed soon.
    pub fn is_transient(self) -> bool {
        matches!(self, Kind::Provider | Kind::Stalled)
    }

    /// Whether the next model should be tried instead: the failure is the
    /// model's or the provider's, not the task's.
    pub fn falls_back(self) -> bool {
        matches!(
            self,
            Kind::RateLimit | Kind::Overloaded | Kind::Quota | Kind::Auth
        )
    }

    /// A short name: "rate limit", "overloaded", "quota", "auth",
    /// "provider error", "stalled", "failed".
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::RateLimit => "rate limit",
            Kind::Overloaded => "overloaded",
            Kind::Quota => "quota",
            Kind::Auth => "auth",
            Kind::Provider => "provider error",
            Kind::Stalled => "stalled",
            Kind::Failed => "failed",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed run, as the tool reported it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentFailure {
    /// What kind of failure.
    pub kind: Kind,
    /// When the tool said its limit resets, if it said.
    pub reset: Option<SystemTime>,
    /// The tool's own error message, one line, at most 300 characters;
    /// `None` when the tool gave none (a bare exit code).
    pub message: Option<String>,
}

/// What a run came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Diagnosis {
    /// The tool did its job.
    Success,
    /// It did not.
    Failure(AgentFailure),
}

impl Diagnosis {
    fn failed(kind: Kind, reset: Option<SystemTime>, message: Option<&str>) -> Diagnosis {
        Diagnosis::Failure(AgentFailure {
            kind,
            reset,
            message: message.map(clean).filter(|m| !m.is_empty()),
        })
    }

    /// The failure, if it was one.
    pub fn failure(&self) -> Option<&AgentFailure> {
        match self {
            Diagnosis::Success => None,
            Diagnosis::Failure(f) => Some(f),
        }
    }
}

/// Reads a finished run of `agent`. `now` anchors relative reset times
/// ("try again in 2 hours", "resets 3pm").
///
/// A stalled run is [`Kind::Stalled`] whatever it printed. Otherwise the
/// agent's structured output decides, then its own error lines, then the
/// exit code: 0 is a success (unless the tool's output says it failed —
/// `claude -p` exits 0 on some rate limits, aider always does), 75
/// (`EX_TEMPFAIL`) a [`Kind::Provider`] failure, anything else
/// [`Kind::Failed`].
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use backstop_agent::{Agent, Diagnosis, Exit, Kind, Tail, Transcript, classify};
///
/// let out = r#"{"type":"result","subtype":"success","is_error":true,"result":"API Error: Rate limit reached","api_error_status":429}"#;
/// let run = Transcript {
///     exit: Exit::Code(0),
///     stdout: Tail::from_bytes(out),
///     stderr: Tail::default(),
///     stalled: false,
///     timed_out: false,
///     interrupted: false,
///     elapsed: Duration::from_secs(1),
///     held: None,
/// };
/// let Diagnosis::Failure(f) = classify(Agent::Claude, &run, SystemTime::now()) else { panic!() };
/// assert_eq!(f.kind, Kind::RateLimit);
/// ```
pub fn classify(agent: Agent, run: &Transcript, now: SystemTime) -> Diagnosis {
    if run.stalled {
        return Diagnosis::failed(Kind::Stalled, None, None);
    }
    let out = Output::new(run);
    let read = match agent {
        Agent::Claude => claude(&out, now),
        Agent::Codex => codex(&out, now),
        Agent::Opencode => opencode(&out, now),
        Agent::Aider => aider(&out, now),
        Agent::Generic => None,
    };
    read.unwrap_or_else(|| by_exit(run.exit, out.last_stderr_line()))
}

/// The exit code alone.
fn by_exit(exit: Exit, stderr_line: Option<&str>) -> Diagnosis {
    match exit {
        Exit::Code(0) => Diagnosis::Success,
        Exit::Code(75) => Diagnosis::failed(Kind::Provider, None, stderr_line),
        _ => Diagnosis::failed(Kind::Failed, None, stderr_line),
    }
}

/// The kept output of a run, decoded once.
struct Output {
    exit: Exit,
    stdout: Vec<String>,
    stderr: Vec<String>,
}

impl Output {
    fn new(run: &Transcript) -> Output {
        let lines = |tail: &crate::Tail| tail.lines().map(|l| strip_ansi(&l)).collect();
        Output {
            exit: run.exit,
            stdout: lines(&run.stdout),
            stderr: lines(&run.stderr),
        }
    }

    /// The JSON objects printed one per line on stdout.
    fn events(&self) -> impl Iterator<Item = Value> + '_ {
        self.stdout
            .iter()
            .filter(|l| l.trim_start().starts_with('{'))
            .filter_map(|l| serde_json::from_str::<Value>(l.trim()).ok())
            .filter(Value::is_object)
    }

    fn last_stderr_line(&self) -> Option<&str> {
        self.stderr
            .iter()
            .rev()
            .map(|l| l.trim())
            .find(|l| !l.is_empty())
    }

    fn failed(&self) -> bool {
        !self.exit.success()
    }
}

// ---------------------------------------------------------------- Claude

/// Claude Code. In JSON modes the last `result` event decides: `is_error`
/// (its `subtype` says "success" even on API failures), then
/// `api_error_status`, the synthetic assistant message's `error`, a
/// rejected `rate_limit_event`, and the error text of the result itself
/// (which, when `is_error` is set, is Claude Code's message, not the
/// model's). In text mode, a failing run's last line, or an output that is
/// nothing but one of Claude Code's error lines.
fn claude(out: &Output, now: SystemTime) -> Option<Diagnosis> {
    let mut result: Option<Value> = None;
    let mut synthetic_error: Option<String> = None;
    let mut usage_reset: Option<Option<SystemTime>> = None;
    for event in out.events() {
        match event.get("type").and_then(Value::as_str) {
            Some("result") => result = Some(event),
            Some("assistant") => {
                let is_api_error = event
                    .get("is_api_error_message")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                if let Some(e) = event.get("error").and_then(Value::as_str)
                    && is_api_error
                {
                    synthetic_error = Some(e.to_owned());
                }
            }
            Some("rate_limit_event") => {
                let info = event.get("rate_limit_info");
                let status = info.and_then(|i| i.get("status")).and_then(Value::as_str);
                if status == Some("rejected") {
                    let reset = info
                        .and_then(|i| i.get("resetsAt"))
                        .and_then(Value::as_u64)
                        .and_then(|s| UNIX_EPOCH.checked_add(Duration::from_secs(s)));
                    usage_reset = Some(reset);
                }
            }
            _ => {}
        }
    }
    if let Some(result) = result {
        let is_error = result
            .get("is_error")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let text = result.get("result").and_then(Value::as_str).unwrap_or("");
        if !is_error {
            return (!out.failed()).then_some(Diagnosis::Success);
        }
        let status = result
            .get("api_error_status")
            .and_then(Value::as_u64)
            .and_then(|s| u16::try_from(s).ok());
        let line = first_line(text);
        let reset = usage_reset.flatten().or_else(|| reset_at(text, now));
        let kind = match status {
            Some(429) if usage_reset.is_some() || claude_usage_limit(line) => Kind::Quota,
            Some(status) => kind_of_status(status),
            None => match synthetic_error.as_deref() {
                Some("authentication_failed") => Kind::Auth,
                Some("billing_error") => Kind::Quota,
                Some("rate_limit") if usage_reset.is_some() || claude_usage_limit(line) => {
                    Kind::Quota
                }
                Some("rate_limit") => Kind::RateLimit,
                Some("server_error") => Kind::Provider,
                _ if usage_reset.is_some() => Kind::Quota,
                _ => claude_line(line).unwrap_or(Kind::Failed),
            },
        };
        return Some(Diagnosis::failed(kind, reset, Some(line)));
    }
    // Text mode: the error is the whole of a short output, or the last line
    // of a failing one.
    let lines: Vec<&str> = out
        .stdout
        .iter()
        .chain(&out.stderr)
        .map(|l| l.trim())
        .filter(|l| !l.is_empty())
        .collect();
    let candidate = match lines.as_slice() {
        [only] => Some(*only),
        [.., last] if out.failed() => Some(*last),
        _ => None,
    }?;
    let kind = claude_line(candidate)?;
    Some(Diagnosis::failed(
        kind,
        reset_at(candidate, now),
        Some(candidate),
    ))
}

/// Claude Code's own error lines, matched at their start.
fn claude_line(line: &str) -> Option<Kind> {
    if claude_usage_limit(line) {
        return Some(Kind::Quota);
    }
    let lower = line.to_ascii_lowercase();
    if let Some(rest) = lower.strip_prefix("api error: ") {
        if let Some(status) = leading_status(rest).or_else(|| status_in(rest)) {
            return Some(kind_of_status(status));
        }
        if rest.starts_with("rate limit") || rest.contains("(not your usage limit)") {
            return Some(Kind::RateLimit);
        }
        if rest.starts_with("overloaded") {
            return Some(Kind::Overloaded);
        }
        return Some(Kind::Provider);
    }
    const AUTH: &[&str] = &[
        "invalid api key",
        "not logged in",
        "failed to authenticate",
        "oauth token has expired",
        "oauth token revoked",
    ];
    if AUTH.iter().any(|p| lower.starts_with(p)) {
        return Some(Kind::Auth);
    }
    if lower.starts_with("credit balance is too low") {
        return Some(Kind::Quota);
    }
    None
}

/// Claude's subscription limits: "You've hit your session limit · resets
/// 9am", "You've hit your limit", "Claude AI usage limit reached|1753441200".
fn claude_usage_limit(line: &str) -> bool {
    let lower = line.to_ascii_lowercase();
    let lower = lower.replace('’', "'");
    (lower.starts_with("you've hit your") && lower.contains("limit"))
        || lower.contains("usage limit reached")
}

// ---------------------------------------------------------------- Codex

/// Codex. With `--json`, `turn.failed` is the terminal failure (the
/// `error` events before it may be retry narration, "Reconnecting...
/// 2/5"); `turn.completed` a success. Without it, the last `ERROR: ` line
/// Codex prints.
fn codex(out: &Output, now: SystemTime) -> Option<Diagnosis> {
    let mut failed: Option<String> = None;
    let mut completed = false;
    let mut last_error: Option<String> = None;
    for event in out.events() {
        match event.get("type").and_then(Value::as_str) {
            Some("turn.failed") => {
                let message = event
                    .get("error")
                    .and_then(|e| e.get("message"))
                    .and_then(Value::as_str)
                    .unwrap_or("");
                failed = Some(message.to_owned());
                completed = false;
            }
            Some("turn.completed") => {
                completed = true;
                failed = None;
            }
            Some("error") => {
                last_error = event
                    .get("message")
                    .and_then(Value::as_str)
                    .map(str::to_owned);
            }
            _ => {}
        }
    }
    let message = match (failed, completed) {
        (Some(message), _) => message,
        (None, true) => return (!out.failed()).then_some(Diagnosis::Success),
        // An error before any turn (a refused login at start-up) ends the
        // run without a turn.failed.
        (None, false) if out.failed() => match last_error {
            Some(m) => m,
            None => codex_error_line(out)?,
        },
        (None, false) => return None,
    };
    let kind = api_message_kind(&message);
    Some(Diagnosis::failed(
        kind,
        reset_at(&message, now),
        Some(&message),
    ))
}

/// The message of the last "ERROR: " line of Codex's human output.
fn codex_error_line(out: &Output) -> Option<String> {
    out.stderr
        .iter()
        .chain(&out.stdout)
        .rev()
        .find_map(|l| l.trim().strip_prefix("ERROR: "))
        .map(str::to_owned)
}

// ---------------------------------------------------------------- opencode

/// opencode. With `--format json`, the last `error` event: its `name`
/// (`ProviderAuthError`, `APIError` with a `statusCode`, `UnknownError`)
/// and message. Without it, the last `Error: ` line it prints on stderr.
fn opencode(out: &Output, now: SystemTime) -> Option<Diagnosis> {
    let mut error: Option<Value> = None;
    for event in out.events() {
        if event.get("type").and_then(Value::as_str) == Some("error") {
            error = event.get("error").cloned();
        }
    }
    if let Some(error) = error {
        let name = error.get("name").and_then(Value::as_str).unwrap_or("");
        let data = error.get("data");
        let message = data
            .and_then(|d| d.get("message"))
            .and_then(Value::as_str)
            .unwrap_or(name);
        let status = data
            .and_then(|d| d.get("statusCode"))
            .and_then(Value::as_u64)
            .and_then(|s| u16::try_from(s).ok());
        let by_message = api_message_kind(message);
        let kind = match (name, status) {
            // Billing failures come with any status (401 included).
            _ if by_message == Kind::Quota => Kind::Quota,
            ("ProviderAuthError", _) => Kind::Auth,
            (_, Some(status)) => kind_of_status(status),
            ("MessageAbortedError" | "MessageOutputLengthError", _) => Kind::Failed,
            _ => by_message,
        };
        return Some(Diagnosis::failed(
            kind,
            reset_at(message, now),
            Some(message),
        ));
    }
    if !out.failed() {
        return None;
    }
    let message = out
        .stderr
        .iter()
        .rev()
        .find_map(|l| l.trim().strip_prefix("Error: "))?;
    Some(Diagnosis::failed(
        api_message_kind(message),
        reset_at(message, now),
        Some(message),
    ))
}

// ---------------------------------------------------------------- aider

/// What aider says after each litellm exception it reports (its
/// `aider/exceptions.py`), and what kind of failure each is.
const AIDER_DESCRIPTIONS: &[(&str, Kind)] = &[
    (
        "The API provider has rate limited you. Try again later or check your quotas.",
        Kind::RateLimit,
    ),
    (
        "The API provider is not able to authenticate you. Check your API key.",
        Kind::Auth,
    ),
    (
        "The API provider's servers are down or overloaded.",
        Kind::Overloaded,
    ),
    (
        "Insufficient credits with the API provider. Please add credits.",
        Kind::Quota,
    ),
    (
        "The API provider timed out without returning a response. They may be down or overloaded.",
        Kind::Provider,
    ),
];

/// aider exits 0 whatever happened, so its output decides. An error is a
/// `litellm.<Exception>:` line followed, within a few wrapped lines, by
/// one of aider's fixed descriptions; it ends the run when no "Retrying
/// in" follows it. The exception's own text (the provider's message)
/// tells an exhausted quota from a rate limit.
fn aider(out: &Output, now: SystemTime) -> Option<Diagnosis> {
    let lines = &out.stdout;
    let mut last: Option<(usize, usize, Kind)> = None;
    for (i, line) in lines.iter().enumerate() {
        let Some(rest) = line.strip_prefix("litellm.") else {
            continue;
        };
        let class_len = rest
            .find(|c: char| !c.is_ascii_alphanumeric())
            .unwrap_or(rest.len());
        if class_len == 0 || !rest[class_len..].starts_with(':') {
            continue;
        }
        let class = &rest[..class_len];
        let described = lines
            .iter()
            .enumerate()
            .skip(i + 1)
            .take(8)
            .take_while(|(_, l)| !l.starts_with("litellm."))
            .find_map(|(j, l)| {
                AIDER_DESCRIPTIONS
                    .iter()
                    .find(|(d, _)| l.trim() == *d)
                    .map(|(_, kind)| (j, *kind))
            });
        let (end, kind) = match described {
            Some(found) => found,
            None => match class {
                // Exceptions aider reports without a description of their
                // own, and which retrying will not fix.
                "ContextWindowExceededError" | "BadRequestError" | "NotFoundError" => {
                    (i, Kind::Failed)
                }
                "APIConnectionError" => (i, Kind::Provider),
                _ => continue,
            },
        };
        last = Some((i, end, kind));
    }
    let (start, end, mut kind) = last?;
    let retried = lines
        .iter()
        .skip(end + 1)
        .map(|l| l.trim())
        .find(|l| !l.is_empty())
        .is_some_and(|l| l.starts_with("Retrying in "));
    if retried {
        return None;
    }
    // The exception's text up to the description: the provider's message.
    let block = lines[start..end.max(start + 1)].join(" ");
    let message = block.strip_prefix("litellm.").unwrap_or(&block).to_owned();
    if kind == Kind::RateLimit && api_message_kind(&message) == Kind::Quota {
        kind = Kind::Quota;
    }
    Some(Diagnosis::failed(
        kind,
        reset_at(&message, now),
        Some(&message),
    ))
}

// ---------------------------------------------------------------- shared

/// The kind of an HTTP status a tool reports.
fn kind_of_status(status: u16) -> Kind {
    match status {
        429 => Kind::RateLimit,
        503 | 529 => Kind::Overloaded,
        401 | 403 => Kind::Auth,
        402 => Kind::Quota,
        408 | 425 | 500 | 502 | 504 => Kind::Provider,
        _ => Kind::Failed,
    }
}

/// The kind of a provider error message as a tool relays it ("unexpected
/// status 401 Unauthorized: ...", "exceeded retry limit, last status: 429
/// Too Many Requests", "Quota exceeded. Check your plan and billing
/// details."). Only ever applied to a tool's error message, never to the
/// model's text.
fn api_message_kind(message: &str) -> Kind {
    let lower = message
        .to_ascii_lowercase()
        .replace('’', "'")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let any = |phrases: &[&str]| phrases.iter().any(|p| lower.contains(p));
    if any(&[
        "usage limit",
        "quota exceeded",
        "exceeded your current quota",
        "insufficient_quota",
        "insufficient balance",
        "insufficient credits",
        "credit balance is too low",
        "billing",
        "payment required",
    ]) {
        return Kind::Quota;
    }
    if any(&[
        "refresh token",
        "sign in again",
        "log in again",
        "not logged in",
        "invalid api key",
        "invalid x-api-key",
        "invalid_api_key",
        "authentication",
        "unauthorized",
    ]) {
        return Kind::Auth;
    }
    if let Some(status) = status_in(&lower) {
        return kind_of_status(status);
    }
    if any(&["at capacity", "overloaded"]) {
        return Kind::Overloaded;
    }
    if any(&["rate limit", "too many requests"]) {
        return Kind::RateLimit;
    }
    if any(&[
        "stream disconnected",
        "internal server error",
        "bad gateway",
        "gateway timeout",
        "timed out",
        "connection reset",
        "connection refused",
    ]) {
        return Kind::Provider;
    }
    Kind::Failed
}

/// An HTTP status a message names: "status 401", "status: 429", "(429)",
/// "failed: 401", "API Error: 529".
fn status_in(lower: &str) -> Option<u16> {
    const BEFORE: &[&str] = &["status ", "status: ", "status=", "failed: ", "error: ", "("];
    for marker in BEFORE {
        let mut from = 0;
        while let Some(i) = lower[from..].find(marker) {
            let start = from + i + marker.len();
            if let Some(status) = leading_status(&lower[start..]) {
                return Some(status);
            }
            from = start;
        }
    }
    None
}

/// A three-digit HTTP error status at the start of `text`, not followed
/// by another digit.
fn leading_status(text: &str) -> Option<u16> {
    let digits = text.get(..3)?;
    if !digits.bytes().all(|b| b.is_ascii_digit())
        || text[3..].starts_with(|c: char| c.is_ascii_digit())
    {
        return None;
    }
    let status: u16 = digits.parse().ok()?;
    (400..600).contains(&status).then_some(status)
}

fn first_line(text: &str) -> &str {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("")
}

/// One line, at most [`MAX_MESSAGE`] characters.
fn clean(message: &str) -> String {
    let one_line = message.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut out: String = one_line.chars().take(MAX_MESSAGE).collect();
    if one_line.chars().count() > MAX_MESSAGE {
        out.push('…');
    }
    out
}

/// Removes terminal escape sequences (colours, cursor moves, titles).
fn strip_ansi(line: &str) -> String {
    anstream::adapter::strip_str(line).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_in_messages() {
        let cases = [
            (
                "unexpected status 401 unauthorized: missing bearer",
                Some(401),
            ),
            (
                "exceeded retry limit, last status: 429 too many requests",
                Some(429),
            ),
            ("request rejected (429) · slow down", Some(429)),
            ("token refresh failed: 401", Some(401)),
            ("status 4290", None),
            ("status 200", None),
            ("nothing here", None),
            ("status ", None),
        ];
        for (text, want) in cases {
            assert_eq!(status_in(text), want, "{text:?}");
        }
    }

    #[test]
    fn ansi_is_stripped() {
        let cases = [
            ("\x1b[91m\x1b[1mError: \x1b[0mbad key", "Error: bad key"),
            ("\x1b]0;title\x07plain", "plain"),
            (
                "\x1b]8;;https://x.example\x1b\\link\x1b]8;;\x1b\\ text",
                "link text",
            ),
            ("\x1b[2K\x1b[1Gprogress 5%", "progress 5%"),
            ("tail \x1b", "tail "),
            ("résumé ✓ {\"a\":[1]}", "résumé ✓ {\"a\":[1]}"),
        ];
        for (line, want) in cases {
            assert_eq!(strip_ansi(line), want, "{line:?}");
        }
    }

    #[test]
    fn agents_by_name() {
        for a in Agent::ALL {
            assert_eq!(a.as_str().parse::<Agent>(), Ok(a));
        }
        assert!("claude-code".parse::<Agent>().is_err());
        assert_eq!(Agent::detect(OsStr::new("claude")), Agent::Claude);
        assert_eq!(Agent::detect(OsStr::new("/opt/bin/aider")), Agent::Aider);
        assert_eq!(Agent::detect(OsStr::new("generic")), Agent::Generic);
        assert_eq!(Agent::detect(OsStr::new("sh")), Agent::Generic);
    }

    #[test]
    fn api_messages() {
        let cases = [
            (
                "Quota exceeded. Check your plan and billing details.",
                Kind::Quota,
            ),
            (
                "Selected model is at capacity. Please try a different model.",
                Kind::Overloaded,
            ),
            ("Token refresh failed: 401", Kind::Auth),
            (
                "stream disconnected before completion: error sending request",
                Kind::Provider,
            ),
            (
                "unexpected status 500 Internal Server Error",
                Kind::Provider,
            ),
            (
                "unexpected status 400 Bad Request: context too long",
                Kind::Failed,
            ),
            ("something odd", Kind::Failed),
        ];
        for (text, want) in cases {
            assert_eq!(api_message_kind(text), want, "{text:?}");
        }
    }
}
