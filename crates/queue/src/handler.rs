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
    /// Who runs it, set by the transport or worker that runs it (never
    /// sent over the wire): a [`CommandHandler`] marks its processes with
    /// it, so that they do not outlive their owner
    /// ([`backstop_process::owner`]).
    #[serde(skip)]
    pub owner: Option<Owner>,
}

/// Runs deliveries of one kind.
///
/// A handler returns [`Outcome::Done`], [`Outcome::Temporary`] or
/// [`Outcome::Failed`]; when `stop` fires it should end soon and return
/// [`Outcome::Released`], which hands the delivery back without spending an
/// attempt.
pub trait Handler: Send + Sync {
    /// Runs one attempt.
    fn handle<'a>(&'a self, work: &'a Work, stop: &'a CancellationToken) -> BoxFuture<'a, Outcome>;
}

/// A handler that succeeds at once: for benchmarks and tests.
#[derive(Clone, Copy, Debug, Default)]
pub struct Noop;

impl Handler for Noop {
    fn handle<'a>(&'a self, _: &'a Work, _: &'a CancellationToken) -> BoxFuture<'a, Outcome> {
        Box::pin(async { Outcome::Done })
    }
}

/// A handler from a closure returning a future.
pub struct FnHandler<F>(pub F);

impl<F, Fut> Handler for FnHandler<F>
where
    F: Fn(Work) -> Fut + Send + Sync,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    fn handle<'a>(&'a self, work: &'a Work, _: &'a CancellationToken) -> BoxFuture<'a, Outcome> {
        Box::pin((self.0)(work.clone()))
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

    async fn run(&self, work: &Work, stop: &CancellationToken) -> Outcome {
        // The timeout comes over the network: bounded, so that no value of
        // it can overflow a deadline.
        let timeout = Duration::from_millis(work.timeout_ms.clamp(1, MAX_TIMEOUT_MS));
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
            // Stdout is kept only so that a chatty handler never blocks on
            // a full pipe.
            .tail_limit(STDERR_TAIL)
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
                return Outcome::Failed(format!("cannot start sh -c {:?}: {e}", self.command));
            }
        };
        if run.timed_out {
            return Outcome::Failed(format!(
                "the handler ran past its {} timeout and was stopped",
                backstop_core::HumanDuration(timeout)
            ));
        }
        if run.interrupted {
            return Outcome::Released(
                "the node stopped its handler to shut down; not counted as a failure".to_owned(),
            );
        }
        let err_tail =
            backstop_core::redact(String::from_utf8_lossy(run.stderr.bytes()).trim(), &[]);
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
    }
}

impl Handler for CommandHandler {
    fn handle<'a>(&'a self, work: &'a Work, stop: &'a CancellationToken) -> BoxFuture<'a, Outcome> {
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
            owner: None,
        }
    }

    async fn run(command: &str) -> Outcome {
        CommandHandler::new(command)
            .handle(&work(10_000), &CancellationToken::new())
            .await
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
            .await;
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
        assert!(matches!(run.await, Outcome::Released(_)));
    }

    #[tokio::test]
    async fn any_timeout_a_coordinator_sends_is_safe() {
        let got = CommandHandler::new("true")
            .handle(&work(u64::MAX), &CancellationToken::new())
            .await;
        assert_eq!(got, Outcome::Done);
        // No timeout is 1 ms: `true` may or may not finish within it, and
        // either way the outcome says which.
        let got = CommandHandler::new("true")
            .handle(&work(0), &CancellationToken::new())
            .await;
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
