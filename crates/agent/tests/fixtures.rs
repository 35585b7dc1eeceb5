//! Every fixture under `tests/fixtures/<agent>/` — real output shapes of
//! each tool — is classified as its `.meta` file says (see the README
//! there), with the reset time it prints read.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use backstop_agent::{Agent, Diagnosis, Exit, Kind, Tail, Transcript, classify, reset_at};

/// 2026-08-01T00:00:00Z: before every dated reset in the fixtures.
fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_785_542_400)
}

struct Fixture {
    path: PathBuf,
    agent: Agent,
    transcript: Transcript,
    expected: Option<Kind>,
    reset: Option<String>,
}

fn meta(path: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

fn fixtures() -> Vec<Fixture> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut out = Vec::new();
    for agent in ["claude", "codex", "opencode", "aider"] {
        let mut entries: Vec<_> = std::fs::read_dir(root.join(agent))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e != "meta"))
            .collect();
        entries.sort();
        for path in entries {
            let fields = meta(&path.with_extension("meta"));
            let get = |k: &str| {
                fields
                    .iter()
                    .find(|(key, _)| key == k)
                    .map(|(_, v)| v.clone())
            };
            let bytes = std::fs::read(&path).unwrap();
            let exit: i32 = get("exit").unwrap().parse().unwrap();
            let (stdout, stderr) = match get("stream").as_deref() {
                Some("stderr") => (Tail::default(), Tail::from_bytes(bytes)),
                _ => (Tail::from_bytes(bytes), Tail::default()),
            };
            let expected = match get("expected").unwrap().as_str() {
                "success" => None,
                "rate_limit" => Some(Kind::RateLimit),
                "overloaded" => Some(Kind::Overloaded),
                "quota" => Some(Kind::Quota),
                "auth" => Some(Kind::Auth),
                "error" => Some(Kind::Failed),
                other => panic!("{}: unknown expectation {other}", path.display()),
            };
            out.push(Fixture {
                agent: agent.parse().unwrap(),
                transcript: Transcript {
                    exit: Exit::Code(exit),
                    stdout,
                    stderr,
                    stalled: false,
                    timed_out: false,
                    interrupted: false,
                    elapsed: Duration::from_secs(3),
                    held: None,
                },
                expected,
                reset: get("reset"),
                path,
            });
        }
    }
    out
}

#[test]
fn every_fixture_is_classified_as_its_meta_says() {
    let all = fixtures();
    assert!(all.len() >= 30, "only {} fixtures found", all.len());
    let mut wrong = Vec::new();
    for f in &all {
        let got = classify(f.agent, &f.transcript, now());
        let kind = got.failure().map(|x| x.kind);
        if kind != f.expected {
            wrong.push(format!(
                "{}: expected {:?}, got {got:?}",
                f.path.display(),
                f.expected
            ));
        }
    }
    assert!(wrong.is_empty(), "misclassified:\n{}", wrong.join("\n"));
}

#[test]
fn printed_reset_times_are_read() {
    for f in fixtures().iter().filter(|f| f.reset.is_some()) {
        let printed = f.reset.as_deref().unwrap();
        let Diagnosis::Failure(failure) = classify(f.agent, &f.transcript, now()) else {
            panic!("{}: not a failure", f.path.display());
        };
        // The instant the printed reset stands for, read on its own.
        let want = reset_at(&format!("|{printed}"), now())
            .or_else(|| reset_at(&format!("resets {printed}"), now()));
        assert!(
            want.is_some(),
            "{}: {printed:?} is unreadable",
            f.path.display()
        );
        assert_eq!(failure.reset, want, "{}", f.path.display());
    }
}

#[test]
fn failures_carry_the_tools_own_message() {
    for f in fixtures()
        .iter()
        .filter(|f| f.expected.is_some_and(|k| k != Kind::Failed))
    {
        let got = classify(f.agent, &f.transcript, now());
        let message = got.failure().and_then(|x| x.message.clone());
        let message = message.unwrap_or_else(|| panic!("{}: no message", f.path.display()));
        assert!(
            !message.contains('\n') && message.chars().count() <= 301,
            "{message:?}"
        );
    }
}

/// Model text that names rate limits, overloads and 429s, in successful
/// runs of every agent, cools nothing.
#[test]
fn model_text_never_decides() {
    for f in fixtures().iter().filter(|f| f.expected.is_none()) {
        let text = String::from_utf8_lossy(f.transcript.stdout.bytes()).to_lowercase();
        assert!(
            text.contains("429") || text.contains("rate limit"),
            "{}: a success fixture should tempt a substring classifier",
            f.path.display()
        );
        assert_eq!(
            classify(f.agent, &f.transcript, now()),
            Diagnosis::Success,
            "{}",
            f.path.display()
        );
    }
}

#[test]
fn a_stall_is_a_stall_whatever_was_printed() {
    for f in fixtures() {
        let mut t = f.transcript.clone();
        t.stalled = true;
        t.exit = Exit::Signal(15);
        let got = classify(f.agent, &t, now());
        assert_eq!(
            got.failure().map(|x| x.kind),
            Some(Kind::Stalled),
            "{}",
            f.path.display()
        );
    }
}

#[test]
fn generic_commands_are_read_by_their_exit_code() {
    let run = |code, err: &str| Transcript {
        exit: Exit::Code(code),
        stdout: Tail::from_bytes("API Error: 429 rate limit reached\n"),
        stderr: Tail::from_bytes(err.to_owned()),
        stalled: false,
        timed_out: false,
        interrupted: false,
        elapsed: Duration::from_secs(1),
        held: None,
    };
    assert_eq!(
        classify(Agent::Generic, &run(0, ""), now()),
        Diagnosis::Success
    );
    let temp = classify(Agent::Generic, &run(75, "try later\n"), now());
    assert_eq!(temp.failure().map(|f| f.kind), Some(Kind::Provider));
    assert_eq!(
        temp.failure().and_then(|f| f.message.clone()).as_deref(),
        Some("try later")
    );
    let failed = classify(Agent::Generic, &run(3, ""), now());
    assert_eq!(failed.failure().map(|f| f.kind), Some(Kind::Failed));
}

/// aider reports an error and retries it itself; an error followed by
/// "Retrying in" and then a normal answer is no failure.
#[test]
fn aider_errors_it_recovered_from_are_not_failures() {
    let out = "litellm.RateLimitError: RateLimitError: OpenAIException - slow down\n\
The API provider has rate limited you. Try again later or check your quotas.\n\
Retrying in 0.2 seconds...\n\
Done: the edit is applied.\n\
Tokens: 3.2k sent, 188 received.\n";
    let t = Transcript {
        exit: Exit::Code(0),
        stdout: Tail::from_bytes(out),
        stderr: Tail::default(),
        stalled: false,
        timed_out: false,
        interrupted: false,
        elapsed: Duration::from_secs(1),
        held: None,
    };
    assert_eq!(classify(Agent::Aider, &t, now()), Diagnosis::Success);
}

/// A failing Claude run whose JSON says it succeeded is still a failure,
/// and one whose JSON says is_error with no status reads the error text.
#[test]
fn claude_exit_code_and_error_text() {
    let t = |exit, out: &str| Transcript {
        exit: Exit::Code(exit),
        stdout: Tail::from_bytes(out.to_owned()),
        stderr: Tail::default(),
        stalled: false,
        timed_out: false,
        interrupted: false,
        elapsed: Duration::from_secs(1),
        held: None,
    };
    let ok = r#"{"type":"result","is_error":false,"result":"fine"}"#;
    assert_eq!(
        classify(Agent::Claude, &t(0, ok), now()),
        Diagnosis::Success
    );
    assert_eq!(
        classify(Agent::Claude, &t(2, ok), now())
            .failure()
            .map(|f| f.kind),
        Some(Kind::Failed)
    );
    let credit = r#"{"type":"result","is_error":true,"result":"Credit balance is too low"}"#;
    assert_eq!(
        classify(Agent::Claude, &t(1, credit), now())
            .failure()
            .map(|f| f.kind),
        Some(Kind::Quota)
    );
    let server = r#"{"type":"result","is_error":true,"result":"API Error: 500 {\"type\":\"error\"}","api_error_status":500}"#;
    assert_eq!(
        classify(Agent::Claude, &t(1, server), now())
            .failure()
            .map(|f| f.kind),
        Some(Kind::Provider)
    );
    // Text mode: a long answer that ends well is a success even when it
    // quotes an error line.
    let answer = "I fixed it.\nAPI Error: 429 is now retried.\nAll tests pass.\n";
    assert_eq!(
        classify(Agent::Claude, &t(0, answer), now()),
        Diagnosis::Success
    );
}
