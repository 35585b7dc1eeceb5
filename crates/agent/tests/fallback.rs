//! The rules of `backstop run` (the README's `run` table), on tokio's
//! paused clock with a scripted [`Attempts`] instead of processes: which
//! model runs next, what each failure cools, when the same model is retried,
//! how long a run waits for a cooling model, and how each run ends.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use backstop_agent::fallback::{Attempts, Fallback, Model, Outcome, RunError};
use backstop_agent::{Agent, Exit, Held, Tail, Transcript};
use backstop_core::Policy;
use backstop_core::clock::Clock;
use backstop_ledger::{Key, Ledger, LedgerFailure, Reason, Source, SqliteStore};
use tokio_util::sync::CancellationToken;

/// 2026-08-01T00:00:00Z, where every test's clock starts.
fn epoch() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_785_542_400)
}

/// Wall-clock time that moves only with tokio's paused clock: the ledger
/// sees exactly the time the run waited or slept, and nothing else.
struct PausedClock {
    epoch: SystemTime,
    start: tokio::time::Instant,
}

impl Clock for PausedClock {
    fn now(&self) -> SystemTime {
        self.epoch + self.start.elapsed()
    }
}

/// A ledger in a temporary SQLite file, on the paused clock.
struct Bench {
    _dir: tempfile::TempDir,
    ledger: Ledger,
}

fn bench() -> Bench {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("ledger.db")).unwrap();
    let clock = PausedClock {
        epoch: epoch(),
        start: tokio::time::Instant::now(),
    };
    let ledger = Ledger::new(Box::new(store))
        .with_clock(Arc::new(clock))
        .with_seed(7);
    Bench { _dir: dir, ledger }
}

fn key(s: &str) -> Key {
    s.parse().unwrap()
}

/// What one attempt does.
enum Step {
    Ran(Transcript),
    CannotStart(io::ErrorKind),
}

/// A run that exited `code` after printing `stdout`, held back.
fn transcript(code: i32, stdout: &str) -> Transcript {
    Transcript {
        exit: Exit::Code(code),
        stdout: Tail::from_bytes(stdout),
        stderr: Tail::default(),
        stalled: false,
        timed_out: false,
        interrupted: false,
        elapsed: Duration::from_secs(1),
        held: Some(Held::from_bytes(stdout)),
    }
}

fn exits(code: i32, stdout: &str) -> Step {
    Step::Ran(transcript(code, stdout))
}

/// A `claude -p --output-format json` result that failed with `message`.
fn claude_error(message: &str) -> Step {
    let json = serde_json::json!({
        "type": "result",
        "subtype": "success",
        "is_error": true,
        "result": message,
    });
    exits(1, &json.to_string())
}

fn rate_limit() -> Step {
    claude_error(
        "API Error: Request rejected (429) · This request would exceed your organization rate limit. Please try again later.",
    )
}

fn auth() -> Step {
    claude_error("Invalid API key · Please run /login")
}

fn success(answer: &str) -> Step {
    let json = serde_json::json!({
        "type": "result",
        "subtype": "success",
        "is_error": false,
        "result": answer,
    });
    exits(0, &json.to_string())
}

/// A run the idle watchdog stopped.
fn stalled() -> Step {
    Step::Ran(Transcript {
        stalled: true,
        timed_out: false,
        ..transcript(143, "")
    })
}

/// Attempts that follow a script per model and log which model ran.
#[derive(Default)]
struct Script {
    steps: Mutex<HashMap<Key, VecDeque<Step>>>,
    calls: Mutex<Vec<Key>>,
}

impl Script {
    fn then(self, model: &str, step: Step) -> Self {
        self.steps
            .lock()
            .unwrap()
            .entry(key(model))
            .or_default()
            .push_back(step);
        self
    }

    fn calls(&self) -> Vec<String> {
        let calls = self.calls.lock().unwrap();
        calls.iter().map(|k| k.to_string()).collect()
    }
}

impl Attempts for &Script {
    async fn attempt(&self, model: &Key, _cancel: &CancellationToken) -> io::Result<Transcript> {
        self.calls.lock().unwrap().push(model.clone());
        let step = self
            .steps
            .lock()
            .unwrap()
            .get_mut(model)
            .and_then(VecDeque::pop_front);
        match step {
            Some(Step::Ran(transcript)) => Ok(transcript),
            Some(Step::CannotStart(kind)) => Err(io::Error::from(kind)),
            None => Err(io::Error::other(format!("{model} ran more than scripted"))),
        }
    }
}

/// Models read as `claude` output, except those of provider `g` (generic:
/// the exit code alone).
fn models(keys: &[&str]) -> Vec<Model> {
    keys.iter()
        .map(|k| {
            let key = key(k);
            let (agent, program) = if key.provider() == "g" {
                (Agent::Generic, "tool")
            } else {
                (Agent::Claude, "claude")
            };
            Model {
                key,
                agent,
                program: program.to_owned(),
            }
        })
        .collect()
}

fn policy() -> Policy {
    Policy::api().with_attempt_timeout(None).with_seed(3)
}

async fn run(bench: &Bench, keys: &[&str], script: &Script, policy: Policy) -> Outcome {
    Fallback::new(&bench.ledger, models(keys), script)
        .policy(policy)
        .run()
        .await
}

/// The entry cooling `model` (it, or its provider), if any.
fn cooling(bench: &Bench, model: &str) -> Option<backstop_ledger::Entry> {
    let pick = bench.ledger.pick(&[key(model)]).unwrap();
    pick.blocked.into_iter().next().map(|(_, e)| e)
}

#[tokio::test(start_paused = true)]
async fn a_rate_limit_cools_only_that_model_and_the_next_one_runs() {
    let bench = bench();
    let script = Script::default()
        .then("a/x", rate_limit())
        .then("a/y", success("done"));
    let outcome = run(&bench, &["a/x", "a/y", "b/z"], &script, policy()).await;
    assert_eq!(outcome.result.unwrap(), key("a/y"));
    assert_eq!(script.calls(), ["a/x", "a/y"]);
    let entry = cooling(&bench, "a/x").expect("a/x cools");
    assert_eq!((entry.key, entry.reason), (key("a/x"), Reason::RateLimit));
    assert!(entry.until > bench.ledger.clock().now());
    assert!(cooling(&bench, "a/y").is_none());
}

#[tokio::test(start_paused = true)]
async fn refused_credentials_cool_the_provider_and_skip_its_other_models() {
    let bench = bench();
    let script = Script::default()
        .then("a/x", auth())
        .then("b/z", success("done"));
    let outcome = run(&bench, &["a/x", "a/y", "b/z"], &script, policy()).await;
    assert_eq!(outcome.result.unwrap(), key("b/z"));
    assert_eq!(script.calls(), ["a/x", "b/z"]);
    let entry = cooling(&bench, "a/y").expect("a/y cools with its provider");
    assert_eq!((entry.key, entry.reason), (key("a"), Reason::Auth));
}

#[tokio::test(start_paused = true)]
async fn a_reset_time_the_tool_prints_sets_the_cooldown() {
    let bench = bench();
    let reset = epoch() + Duration::from_secs(2 * 3600);
    let at = reset
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let script = Script::default()
        .then(
            "a/x",
            claude_error(&format!("Claude AI usage limit reached|{at}")),
        )
        .then("b/z", success("done"));
    let outcome = run(&bench, &["a/x", "b/z"], &script, policy()).await;
    assert_eq!(outcome.result.unwrap(), key("b/z"));
    let entry = cooling(&bench, "a/x").expect("a cools");
    assert_eq!(
        (entry.key, entry.reason, entry.until, entry.source),
        (key("a"), Reason::Quota, reset, Source::Tool)
    );
}

#[tokio::test(start_paused = true)]
async fn a_transient_failure_is_retried_on_the_same_model() {
    let bench = bench();
    let script = Script::default()
        .then("g/x", exits(75, ""))
        .then("g/x", stalled())
        .then("g/x", exits(0, "ok"));
    let started = tokio::time::Instant::now();
    let outcome = run(&bench, &["g/x", "g/y"], &script, policy()).await;
    assert_eq!(outcome.result.unwrap(), key("g/x"));
    assert_eq!(script.calls(), ["g/x", "g/x", "g/x"]);
    // Two backoff waits, each at most the capped delay.
    assert!(started.elapsed() <= Duration::from_secs(1 + 2));
    assert!(cooling(&bench, "g/x").is_none());
}

#[tokio::test(start_paused = true)]
async fn transient_failures_that_run_out_cool_the_model_and_fall_back() {
    let bench = bench();
    let script = Script::default()
        .then("g/x", exits(75, ""))
        .then("g/x", exits(75, ""))
        .then("g/x", exits(75, ""))
        .then("g/y", exits(0, "ok"));
    let outcome = run(
        &bench,
        &["g/x", "g/y"],
        &script,
        policy().with_max_attempts(3),
    )
    .await;
    assert_eq!(outcome.result.unwrap(), key("g/y"));
    assert_eq!(script.calls(), ["g/x", "g/x", "g/x", "g/y"]);
    let entry = cooling(&bench, "g/x").expect("g/x cools");
    assert_eq!((entry.key, entry.reason), (key("g/x"), Reason::Error));
}

#[tokio::test(start_paused = true)]
async fn a_failure_of_its_own_ends_the_run_with_its_exit_code_and_records_nothing() {
    let bench = bench();
    let script = Script::default().then("g/x", exits(3, ""));
    let outcome = run(&bench, &["g/x", "g/y"], &script, policy()).await;
    match outcome.result {
        Err(e @ RunError::Failed { exit, .. }) => {
            assert_eq!(exit, Exit::Code(3));
            assert_eq!(e.exit_code(), 3);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(script.calls(), ["g/x"]);
    assert!(bench.ledger.list().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn with_every_model_cooling_it_waits_within_max_wait_for_the_first_to_free_up() {
    let bench = bench();
    let until = epoch() + Duration::from_secs(30);
    for (model, wait) in [("a/x", 30), ("a/y", 50)] {
        let failure = LedgerFailure {
            reason: Reason::RateLimit,
            wait: Some((epoch() + Duration::from_secs(wait), Source::Tool)),
            message: None,
        };
        bench.ledger.record(&key(model), &failure).unwrap();
    }
    let script = Script::default().then("a/x", success("done"));
    let policy = policy().with_max_server_wait(Duration::from_secs(45));
    let outcome = run(&bench, &["a/x", "a/y"], &script, policy).await;
    assert_eq!(outcome.result.unwrap(), key("a/x"));
    assert_eq!(script.calls(), ["a/x"]);
    assert_eq!(bench.ledger.clock().now(), until);
}

#[tokio::test(start_paused = true)]
async fn with_every_model_cooling_beyond_max_wait_it_ends_75_naming_the_first() {
    let bench = bench();
    for (model, wait) in [("a/x", 90), ("a/y", 70)] {
        let failure = LedgerFailure {
            reason: Reason::RateLimit,
            wait: Some((epoch() + Duration::from_secs(wait), Source::Tool)),
            message: None,
        };
        bench.ledger.record(&key(model), &failure).unwrap();
    }
    let script = Script::default();
    let policy = policy().with_max_server_wait(Duration::from_secs(60));
    let outcome = run(&bench, &["a/x", "a/y"], &script, policy).await;
    let error = outcome.result.expect_err("no model runs");
    assert_eq!(error.exit_code(), 75);
    match error {
        RunError::NoneAvailable {
            first, at, blocked, ..
        } => {
            assert_eq!(first, key("a/y"));
            assert_eq!(at, epoch() + Duration::from_secs(70));
            assert_eq!(blocked.len(), 2);
        }
        other => panic!("{other:?}"),
    }
    assert!(script.calls().is_empty());
    assert_eq!(bench.ledger.clock().now(), epoch());
}

#[tokio::test(start_paused = true)]
async fn each_model_has_as_many_turns_as_attempts_then_the_run_ends_75() {
    let bench = bench();
    let mut script = Script::default();
    for _ in 0..4 {
        script = script.then("g/x", exits(75, ""));
    }
    let policy = policy()
        .with_max_attempts(2)
        .with_max_server_wait(Duration::from_secs(24 * 3600));
    let outcome = run(&bench, &["g/x"], &script, policy).await;
    match outcome.result {
        Err(e @ RunError::Exhausted { turns: 2, .. }) => {
            assert_eq!(e.exit_code(), 75);
            assert_eq!(
                e.to_string(),
                "tool: every model failed 2 times in this run"
            );
        }
        other => panic!("{other:?}"),
    }
    // Two turns of two attempts, with a wait for the cooldown between.
    assert_eq!(script.calls(), ["g/x"; 4]);
    assert!(bench.ledger.clock().now() > epoch() + Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn the_deadline_ends_the_run_75() {
    let bench = bench();
    let mut script = Script::default();
    for _ in 0..5 {
        script = script.then("g/x", exits(75, ""));
    }
    let policy = policy()
        .with_initial_delay(Duration::from_secs(20))
        .with_max_delay(Duration::from_secs(20))
        .with_jitter(backstop_core::Jitter::None)
        .with_deadline(Duration::from_secs(30));
    let outcome = run(&bench, &["g/x"], &script, policy).await;
    match outcome.result {
        Err(e @ RunError::DeadlinePassed { .. }) => assert_eq!(e.exit_code(), 75),
        other => panic!("{other:?}"),
    }
    assert!(bench.ledger.clock().now() <= epoch() + Duration::from_secs(30));
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_wait_ends_the_run_130() {
    let bench = bench();
    let failure = LedgerFailure {
        reason: Reason::RateLimit,
        wait: Some((epoch() + Duration::from_secs(30), Source::Tool)),
        message: None,
    };
    bench.ledger.record(&key("a/x"), &failure).unwrap();
    let cancel = CancellationToken::new();
    cancel.cancel();
    let script = Script::default();
    let outcome = Fallback::new(&bench.ledger, models(&["a/x"]), &script)
        .policy(policy())
        .cancel_on(cancel)
        .run()
        .await;
    match outcome.result {
        Err(e @ RunError::Interrupted) => assert_eq!(e.exit_code(), 130),
        other => panic!("{other:?}"),
    }
    assert!(script.calls().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_command_that_cannot_start_ends_127_or_126_untried_elsewhere() {
    for (kind, code) in [
        (io::ErrorKind::NotFound, 127),
        (io::ErrorKind::PermissionDenied, 126),
    ] {
        let bench = bench();
        let script = Script::default().then("a/x", Step::CannotStart(kind));
        let outcome = run(&bench, &["a/x", "b/z"], &script, policy()).await;
        match outcome.result {
            Err(e @ RunError::CannotStart { .. }) => assert_eq!(e.exit_code(), code),
            other => panic!("{kind:?}: {other:?}"),
        }
        assert_eq!(script.calls(), ["a/x"]);
        assert!(bench.ledger.list().unwrap().is_empty());
    }
}

#[tokio::test(start_paused = true)]
async fn only_the_final_attempt_s_held_output_is_kept() {
    let bench = bench();
    let script = Script::default()
        .then("a/x", rate_limit())
        .then("g/y", exits(75, "second"))
        .then("g/y", exits(0, "third"));
    let outcome = run(&bench, &["a/x", "g/y"], &script, policy()).await;
    assert_eq!(outcome.result.unwrap(), key("g/y"));
    let last = outcome.output.expect("the final attempt's output");
    assert_eq!((last.model, last.exit), (key("g/y"), Exit::Code(0)));
    assert_eq!(last.held.bytes(), b"third");

    // A run that fails keeps its final attempt's output too.
    let bench = self::bench();
    let script = Script::default()
        .then("g/x", exits(0, "first"))
        .then("g/y", exits(2, "partial"));
    let outcome = run(&bench, &["g/y", "g/x"], &script, policy()).await;
    assert!(matches!(outcome.result, Err(RunError::Failed { .. })));
    assert_eq!(outcome.output.expect("kept").held.bytes(), b"partial");
}

/// What the run logs, as text.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl io::Write for Log {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn each_held_output_replaced_is_summarised_on_the_log() {
    let log = Log::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .without_time()
        .finish();
    let _logging = tracing::subscriber::set_default(subscriber);
    let bench = bench();
    let script = Script::default()
        .then("a/x", rate_limit())
        .then("g/y", exits(0, "final"));
    let outcome = run(&bench, &["a/x", "g/y"], &script, policy()).await;
    assert_eq!(outcome.result.unwrap(), key("g/y"));
    let text = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
    assert_eq!(script.calls(), ["a/x", "g/y"]);
    assert_eq!(
        text.matches("held back").count(),
        1,
        "one summary, of the attempt with a/x: {text}"
    );
    assert!(
        text.contains("from the attempt with a/x (exit 1); only the final attempt's is written"),
        "{text}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_success_decays_the_model_s_escalation() {
    let bench = bench();
    let failure = LedgerFailure {
        reason: Reason::RateLimit,
        wait: Some((epoch() + Duration::from_secs(1), Source::Tool)),
        message: None,
    };
    let before = bench.ledger.record(&key("a/x"), &failure).unwrap().failures;
    assert_eq!(before, 1);
    let script = Script::default().then("a/x", success("done"));
    let outcome = run(&bench, &["a/x"], &script, policy()).await;
    assert_eq!(outcome.result.unwrap(), key("a/x"));
    let after = bench
        .ledger
        .list()
        .unwrap()
        .into_iter()
        .find(|(e, _)| e.key == key("a/x"))
        .map_or(0, |(e, _)| e.failures);
    assert_eq!(after, 0);
}

#[test]
fn each_ending_has_its_exit_code() {
    let failed = |exit| RunError::Failed {
        model: key("a/x"),
        program: "claude".into(),
        exit,
        message: None,
    };
    let unfinished = |ending| RunError::Unfinished {
        model: key("a/x"),
        program: "claude".into(),
        ending,
    };
    let cases = [
        (failed(Exit::Code(3)), 3),
        // A tool that exits 0 after reporting a failure still failed.
        (failed(Exit::Code(0)), 1),
        (failed(Exit::Signal(9)), 137),
        (failed(Exit::Code(300)), 1),
        (RunError::NoModel, 75),
        (RunError::Interrupted, 130),
        (
            RunError::DeadlinePassed {
                programs: "claude".into(),
                after: Duration::from_secs(1),
            },
            75,
        ),
        (unfinished(backstop_core::Ending::Cancelled), 130),
        (unfinished(backstop_core::Ending::Permanent), 1),
    ];
    for (error, code) in cases {
        assert_eq!(error.exit_code(), code, "{error:?}");
    }
}
