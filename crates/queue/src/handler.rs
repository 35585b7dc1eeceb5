//! What runs a delivery on a node: a [`Handler`]. The one operators use is
//! [`CommandHandler`], a command run with the payload on its standard
//! input.

use std::sync::Arc;
use std::time::Duration;

use backstop_process::owner::{OWNER_ENV, Owner};
use backstop_process::{Command, Exit, Input, Replay, StopSignal};
use futures_util::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use crate::model::{OpId, Outcome, Token};

/// One attempt, as a handler sees it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Work {
    /// The attempt.
    pub token: Token,
    /// The operation.
    pub op: OpId,
    /// The node it runs on.
    pub node: String,
    /// What to do.
    pub kind: String,
    /// The operation's key.
    pub key: Option<String>,
    /// The payload, JSON text.
    pub payload: String,
    /// How long the handler may run, in milliseconds.
    pub timeout_ms: u64,
    /// How many of the last bytes of each of its output streams to keep
    /// (at most [`MAX_OUTPUT_TAIL`]; 0 keeps none). A coordinator that
    /// does not say asks for [`DEFAULT_OUTPUT_TAIL`].
    #[serde(default = "default_output_tail")]
    pub output_tail: u64,
    /// Who runs it, set by the transport or worker that runs it (never
    /// sent over the wire): a [`CommandHandler`] marks its processes with
    /// it, so that they do not outlive their owner
    /// ([`backstop_process::owner`]).
    #[serde(skip)]
    pub owner: Option<Owner>,
}

/// How much of each output stream of a handler is kept by default: the
/// last 16 KiB.
pub const DEFAULT_OUTPUT_TAIL: u64 = 16 << 10;

/// The most of each output stream of a handler that is ever kept: 256 KiB,
/// so that an outcome with its output fits in one NATS message.
pub const MAX_OUTPUT_TAIL: u64 = 256 << 10;

fn default_output_tail() -> u64 {
    DEFAULT_OUTPUT_TAIL
}

/// What a handler printed in one attempt: the end of its standard output
/// and of its standard error, each at most the tail asked for
/// ([`Work::output_tail`]), whole lines only, with anything that looks
/// like a credential replaced by `<redacted>` ([`backstop_core::redact`]).
///
/// ```
/// use backstop_queue::handler::Output;
///
/// let out = Output::new(b"step 1\nstep 2\n", b"using token=hunter2hunter2\n", 1024);
/// assert_eq!(out.stdout, "step 1\nstep 2\n");
/// assert_eq!(out.stderr, "using token=<redacted>\n");
/// let short = Output::new(b"one\ntwo\nthree\n", b"", 8);
/// assert_eq!(short.stdout, "three\n");
/// ```
#[derive(
    Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
pub struct Output {
    /// The end of its standard output.
    #[serde(default)]
    pub stdout: String,
    /// The end of its standard error.
    #[serde(default)]
    pub stderr: String,
}

impl Output {
    /// The output of `stdout` and `stderr` as kept: see [`Output`].
    pub fn new(stdout: &[u8], stderr: &[u8], tail: u64) -> Output {
        let keep = |bytes: &[u8]| tail_lines(&String::from_utf8_lossy(bytes), tail);
        Output {
            stdout: keep(stdout),
            stderr: keep(stderr),
        }
    }

    /// This output as kept by a coordinator from a node it does not trust
    /// to have done so: redacted again, and cut to `tail` bytes per
    /// stream.
    pub fn bounded(self, tail: u64) -> Output {
        Output {
            stdout: tail_lines(&self.stdout, tail),
            stderr: tail_lines(&self.stderr, tail),
        }
    }

    /// Nothing printed.
    pub fn is_empty(&self) -> bool {
        self.stdout.is_empty() && self.stderr.is_empty()
    }
}

/// The end of `text`: its credentials redacted, then at most `tail` bytes
/// of whole lines (a single line longer than that, cut on a character
/// boundary). Redacting before cutting keeps a cut from leaving the end of
/// a secret that no longer looks like one.
fn tail_lines(text: &str, tail: u64) -> String {
    let tail = usize::try_from(tail.min(MAX_OUTPUT_TAIL)).unwrap_or(0);
    let text = backstop_core::redact(text, &[]);
    if text.len() <= tail {
        return text;
    }
    let mut start = text.len() - tail;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    let kept = &text[start..];
    // From the first whole line, unless the cut fell inside the last one.
    let whole = match kept.find('\n') {
        Some(i) if i + 1 < kept.len() && !text[..start].ends_with('\n') => &kept[i + 1..],
        _ => kept,
    };
    whole.to_owned()
}

/// What one attempt of a handler came to: its outcome and its output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Handled {
    /// The outcome.
    pub outcome: Outcome,
    /// What it printed.
    pub output: Output,
}

impl From<Outcome> for Handled {
    fn from(outcome: Outcome) -> Self {
        Handled {
            outcome,
            output: Output::default(),
        }
    }
}

impl Handled {
    /// The outcome of a handler stopped because its operation was cancelled
    /// (`--stop-running`): a release says so, rather than what the handler
    /// took its stop for.
    pub fn stopped_by_cancel(mut self) -> Handled {
        if let Outcome::Released(_) = self.outcome {
            self.outcome = Outcome::Released(
                "its operation was cancelled, and its handler stopped".to_owned(),
            );
        }
        self
    }

    /// Whether the attempt is worth a record of its own: it failed, or its
    /// handler printed something. A quiet success, or a delivery handed
    /// back before its handler ran, leaves none.
    pub fn worth_keeping(&self) -> bool {
        !self.output.is_empty()
            || matches!(self.outcome, Outcome::Failed(_) | Outcome::Temporary(_))
    }
}

/// Runs deliveries of one kind.
///
/// A handler returns [`Outcome::Done`], [`Outcome::Temporary`] or
/// [`Outcome::Failed`], with what it printed; when `stop` fires (its node
/// shuts down, or an operator cancelled its operation with
/// `--stop-running`) it should end soon and return [`Outcome::Released`].
pub trait Handler: Send + Sync {
    /// Runs one attempt.
    fn handle<'a>(&'a self, work: &'a Work, stop: &'a CancellationToken) -> BoxFuture<'a, Handled>;
}

/// A handler that succeeds at once: for benchmarks and tests.
#[derive(Clone, Copy, Debug, Default)]
pub struct Noop;

impl Handler for Noop {
    fn handle<'a>(&'a self, _: &'a Work, _: &'a CancellationToken) -> BoxFuture<'a, Handled> {
        Box::pin(async { Handled::from(Outcome::Done) })
    }
}

/// A handler from a closure returning a future of an [`Outcome`] (it
/// prints nothing).
pub struct FnHandler<F>(pub F);

impl<F, Fut> Handler for FnHandler<F>
where
    F: Fn(Work) -> Fut + Send + Sync,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    fn handle<'a>(&'a self, work: &'a Work, _: &'a CancellationToken) -> BoxFuture<'a, Handled> {
        let outcome = (self.0)(work.clone());
        Box::pin(async move { Handled::from(outcome.await) })
    }
}

/// The exit code a handler uses to say "try later" (`EX_TEMPFAIL`).
pub const EXIT_TEMPORARY: i32 = 75;

/// How much of a handler's standard error becomes the last error.
pub const STDERR_TAIL: usize = 2048;

/// The longest timeout a handler is given, whatever it is asked: 30 days.
pub const MAX_TIMEOUT_MS: u64 = 30 * 24 * 3600 * 1000;

/// How long a stopped handler has between SIGTERM and SIGKILL.
pub const KILL_GRACE: Duration = Duration::from_secs(5);

/// The variables of backstop's own secrets (the API token, NATS
/// credentials), never passed on to a handler.
pub const SECRET_ENV: &[&str] = &[
    "BACKSTOP_TOKEN",
    "BACKSTOP_NATS",
    "BACKSTOP_NATS_PASSWORD",
    "BACKSTOP_NATS_TOKEN",
];

/// A shell command run per delivery: `sh -c COMMAND`, in its own process
/// group, with the payload as JSON on standard input and the attempt in
/// the environment (`BACKSTOP_OP`, `BACKSTOP_KIND`, `BACKSTOP_KEY`,
/// `BACKSTOP_NODE`, `BACKSTOP_DELIVERY`, `BACKSTOP_ATTEMPT`).
///
/// backstop's own secrets ([`SECRET_ENV`]) are taken out of its
/// environment.
///
/// Exit 0 is success, 75 a temporary failure, anything else (a signal
/// included) a failure whose standard-error tail becomes the last error.
/// Past the attempt's timeout, or when stopped, the whole group gets
/// SIGTERM, then SIGKILL after [`KILL_GRACE`]; its shell dies with this
/// process. With an owner in the [`Work`], every process of it carries the
/// owner's mark, so the owner's next process stops what it left running
/// ([`backstop_process::owner`]).
#[derive(Clone, Debug)]
pub struct CommandHandler {
    command: Arc<str>,
}

impl CommandHandler {
    /// A handler running `command` through `sh -c`.
    pub fn new(command: impl Into<String>) -> Self {
        CommandHandler {
            command: Arc::from(command.into()),
        }
    }

    /// The command.
    pub fn command(&self) -> &str {
        &self.command
    }

    async fn run(&self, work: &Work, stop: &CancellationToken) -> Handled {
        // The timeout comes over the network: bounded, so that no value of
        // it can overflow a deadline.
        let timeout = Duration::from_millis(work.timeout_ms.clamp(1, MAX_TIMEOUT_MS));
        let tail = work.output_tail.min(MAX_OUTPUT_TAIL);
        let mut command = Command::new("sh", ["-c", &*self.command])
            .env("BACKSTOP_OP", work.op.to_string())
            .env("BACKSTOP_KIND", &work.kind)
            .env("BACKSTOP_KEY", work.key.as_deref().unwrap_or(""))
            .env("BACKSTOP_NODE", &work.node)
            .env("BACKSTOP_DELIVERY", work.token.delivery.to_string())
            .env("BACKSTOP_ATTEMPT", work.token.attempt.to_string())
            .env_remove(OWNER_ENV)
            .input(Input::Replay(Replay::fixed(work.payload.as_bytes())))
            .echo(false)
            // One line more than is kept, so that the first kept line is
            // whole; never less than the error needs.
            .tail_limit(usize::try_from(tail).unwrap_or(0).max(STDERR_TAIL) + 1024)
            .timeout(Some(timeout))
            .cancel_signal(StopSignal::Terminate)
            .kill_grace(KILL_GRACE);
        for secret in SECRET_ENV {
            command = command.env_remove(secret);
        }
        if let Some(owner) = &work.owner {
            command = command.owner(owner.clone());
        }
        let run = match command.run(stop).await {
            Ok(run) => run,
            Err(e) => {
                return Outcome::Failed(format!("cannot start sh -c {:?}: {e}", self.command))
                    .into();
            }
        };
        let output = Output::new(run.stdout.bytes(), run.stderr.bytes(), tail);
        let outcome = if run.timed_out {
            Outcome::Failed(format!(
                "the handler ran past its {} timeout and was stopped",
                backstop_core::HumanDuration(timeout)
            ))
        } else if run.interrupted {
            Outcome::Released(
                "the node stopped its handler to shut down; not counted as a failure".to_owned(),
            )
        } else {
            let err_tail = tail_lines(
                String::from_utf8_lossy(run.stderr.bytes()).trim(),
                STDERR_TAIL as u64,
            );
            let with_tail = |head: String| {
                if err_tail.is_empty() {
                    head
                } else {
                    format!("{head}: {err_tail}")
                }
            };
            match run.exit {
                Exit::Code(0) => Outcome::Done,
                Exit::Code(EXIT_TEMPORARY) => Outcome::Temporary(with_tail("exit 75".to_owned())),
                Exit::Code(code) => Outcome::Failed(with_tail(format!("exit {code}"))),
                Exit::Signal(signal) => {
                    Outcome::Failed(with_tail(format!("killed by signal {signal}")))
                }
            }
        };
        Handled { outcome, output }
    }
}

impl Handler for CommandHandler {
    fn handle<'a>(&'a self, work: &'a Work, stop: &'a CancellationToken) -> BoxFuture<'a, Handled> {
        Box::pin(self.run(work, stop))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn work(timeout_ms: u64) -> Work {
        Work {
            token: Token {
                delivery: 7,
                attempt: 2,
            },
            op: 3,
            node: "cpu-1".into(),
            kind: "install".into(),
            key: Some("llama".into()),
            payload: r#"{"backend":"llama-cpp"}"#.into(),
            timeout_ms,
            output_tail: DEFAULT_OUTPUT_TAIL,
            owner: None,
        }
    }

    async fn run(command: &str) -> Outcome {
        CommandHandler::new(command)
            .handle(&work(10_000), &CancellationToken::new())
            .await
            .outcome
    }

    #[tokio::test]
    async fn the_output_is_kept_bounded_whole_lines_and_redacted() {
        let w = Work {
            output_tail: 100,
            ..work(10_000)
        };
        let handled = CommandHandler::new(
            "for i in $(seq 1 50); do echo \"line $i of stdout\"; done; \
             echo 'Authorization: Bearer abcdefghijklmnop' >&2; \
             echo 'key sk-ant-api03-abcdefghijklmnopqrstuvwxyz' >&2; exit 3",
        )
        .handle(&w, &CancellationToken::new())
        .await;
        let out = &handled.output;
        assert!(out.stdout.len() <= 100, "{:?}", out.stdout);
        assert!(
            out.stdout.starts_with("line "),
            "whole lines: {:?}",
            out.stdout
        );
        assert!(
            out.stdout.ends_with("line 50 of stdout\n"),
            "{:?}",
            out.stdout
        );
        assert_eq!(
            out.stderr,
            "Authorization: Bearer <redacted>\nkey <redacted>\n"
        );
        assert!(
            matches!(&handled.outcome, Outcome::Failed(e) if e == "exit 3: Authorization: Bearer <redacted>\nkey <redacted>"),
            "{:?}",
            handled.outcome
        );
        assert!(handled.worth_keeping());
        let quiet = CommandHandler::new("true")
            .handle(&work(10_000), &CancellationToken::new())
            .await;
        assert_eq!(quiet.output, Output::default());
        assert!(!quiet.worth_keeping(), "a quiet success leaves no record");
    }

    #[test]
    fn a_coordinator_bounds_what_a_node_sends_however_much_it_is() {
        let sent = Output {
            stdout: format!("{}\nlast\n", "x".repeat(1_000_000)),
            stderr: "password=swordfish1\n".to_owned(),
        };
        let kept = sent.bounded(u64::MAX);
        assert!(kept.stdout.len() as u64 <= MAX_OUTPUT_TAIL);
        assert!(kept.stdout.ends_with("last\n"));
        assert_eq!(kept.stderr, "password=<redacted>\n");
        assert_eq!(
            Output::new("é".repeat(10).as_bytes(), b"", 5).stdout,
            "éé",
            "cut on a character boundary"
        );
        assert_eq!(Output::new(b"abc\n", b"", 0), Output::default());
    }

    #[tokio::test]
    async fn exit_codes_become_outcomes() {
        assert_eq!(run("cat > /dev/null").await, Outcome::Done);
        assert_eq!(
            run("echo 'registry says slow down' >&2; exit 75").await,
            Outcome::Temporary("exit 75: registry says slow down".into())
        );
        assert_eq!(
            run("echo 'no space left' >&2; exit 3").await,
            Outcome::Failed("exit 3: no space left".into())
        );
        assert_eq!(run("exit 1").await, Outcome::Failed("exit 1".into()));
        assert!(
            matches!(run("kill -9 $$").await, Outcome::Failed(e) if e.starts_with("killed by signal 9"))
        );
    }

    #[tokio::test]
    async fn the_handler_reads_its_payload_and_attempt() {
        let got = run(
            r#"read -r line; test "$line" = '{"backend":"llama-cpp"}' && test "$BACKSTOP_KIND $BACKSTOP_KEY $BACKSTOP_DELIVERY $BACKSTOP_ATTEMPT $BACKSTOP_NODE $BACKSTOP_OP" = "install llama 7 2 cpu-1 3" || { echo "got $line $BACKSTOP_KIND" >&2; exit 1; }"#,
        )
        .await;
        assert_eq!(got, Outcome::Done);
    }

    #[tokio::test]
    async fn a_timeout_or_a_stop_ends_the_whole_group() {
        let started = std::time::Instant::now();
        let got = CommandHandler::new("sleep 30 & sleep 30; wait")
            .handle(&work(200), &CancellationToken::new())
            .await
            .outcome;
        assert!(
            matches!(&got, Outcome::Failed(e) if e.contains("timeout")),
            "{got:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(10));
        let stop = CancellationToken::new();
        let handler = CommandHandler::new("sleep 30");
        let w = work(60_000);
        let run = handler.handle(&w, &stop);
        stop.cancel();
        assert!(matches!(run.await.outcome, Outcome::Released(_)));
    }

    #[tokio::test]
    async fn any_timeout_a_coordinator_sends_is_safe() {
        let got = CommandHandler::new("true")
            .handle(&work(u64::MAX), &CancellationToken::new())
            .await
            .outcome;
        assert_eq!(got, Outcome::Done);
        // No timeout is 1 ms: `true` may or may not finish within it, and
        // either way the outcome says which.
        let got = CommandHandler::new("true")
            .handle(&work(0), &CancellationToken::new())
            .await
            .outcome;
        assert!(
            matches!(&got, Outcome::Done)
                || matches!(&got, Outcome::Failed(e) if e.ends_with("1 ms timeout and was stopped")),
            "{got:?}"
        );
    }

    #[tokio::test]
    async fn a_command_that_cannot_start_is_a_failure() {
        // sh itself starts; the command it is given is missing.
        let got = run("/nonexistent/handler").await;
        assert!(matches!(got, Outcome::Failed(e) if e.starts_with("exit 127")));
    }
}
