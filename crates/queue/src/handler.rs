//! What runs a delivery on a node: a [`Handler`]. The one operators use is
//! [`CommandHandler`], a command run with the payload on its standard
//! input.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::model::{OpId, Outcome, Token};
use crate::owner::Owner;

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
    /// it, so that they do not outlive their owner ([`crate::owner`]).
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

/// A shell command run per delivery: `sh -c COMMAND`, in its own process
/// group, with the payload as JSON on standard input and the attempt in
/// the environment (`BACKSTOP_OP`, `BACKSTOP_KIND`, `BACKSTOP_KEY`,
/// `BACKSTOP_NODE`, `BACKSTOP_DELIVERY`, `BACKSTOP_ATTEMPT`).
///
/// Exit 0 is success, 75 a temporary failure, anything else (a signal
/// included) a failure whose standard-error tail becomes the last error.
/// Past the attempt's timeout, or when stopped, the whole group gets
/// SIGTERM, then SIGKILL after [`KILL_GRACE`]. With an owner in the
/// [`Work`], every process of it carries the owner's mark and dies with
/// its owner ([`crate::owner`]).
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
        let mut command = tokio::process::Command::new("sh");
        command
            .arg("-c")
            .arg(&*self.command)
            .env("BACKSTOP_OP", work.op.to_string())
            .env("BACKSTOP_KIND", &work.kind)
            .env("BACKSTOP_KEY", work.key.as_deref().unwrap_or(""))
            .env("BACKSTOP_NODE", &work.node)
            .env("BACKSTOP_DELIVERY", work.token.delivery.to_string())
            .env("BACKSTOP_ATTEMPT", work.token.attempt.to_string())
            .env_remove("BACKSTOP_TOKEN")
            .env_remove(crate::owner::OWNER_ENV)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        #[cfg(unix)]
        command.process_group(0);
        if let Some(owner) = &work.owner {
            owner.bind(&mut command);
        }
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) => {
                return Outcome::Failed(format!("cannot start sh -c {:?}: {e}", self.command));
            }
        };
        let group = child.id().and_then(|id| i32::try_from(id).ok());
        if let Some(mut stdin) = child.stdin.take() {
            let payload = work.payload.clone().into_bytes();
            // A handler that exits without reading its input closes the
            // pipe: not an error of ours.
            tokio::spawn(async move {
                let _ = stdin.write_all(&payload).await;
                let _ = stdin.shutdown().await;
            });
        }
        let stdout = child.stdout.take().map(|out| tokio::spawn(tail(out)));
        let stderr = child.stderr.take().map(|err| tokio::spawn(tail(err)));
        // The timeout comes over the network: bounded, so that no value of
        // it can overflow a deadline.
        let timeout = Duration::from_millis(work.timeout_ms.clamp(1, MAX_TIMEOUT_MS));
        let deadline = tokio::time::Instant::now() + timeout;
        let mut ended_by: Option<Outcome> = None;
        let mut kill_at: Option<tokio::time::Instant> = None;
        let status = loop {
            let kill_sleep = async {
                match kill_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                status = child.wait() => break status,
                () = tokio::time::sleep_until(deadline), if ended_by.is_none() => {
                    ended_by = Some(Outcome::Failed(format!(
                        "the handler ran past its {} timeout and was stopped",
                        backstop_core::HumanDuration(timeout)
                    )));
                    signal_group(group, nix::sys::signal::Signal::SIGTERM);
                    kill_at = Some(tokio::time::Instant::now() + KILL_GRACE);
                }
                () = stop.cancelled(), if ended_by.is_none() => {
                    ended_by = Some(Outcome::Released(
                        "the node stopped its handler to shut down; not counted as a failure".to_owned(),
                    ));
                    signal_group(group, nix::sys::signal::Signal::SIGTERM);
                    kill_at = Some(tokio::time::Instant::now() + KILL_GRACE);
                }
                () = kill_sleep => {
                    signal_group(group, nix::sys::signal::Signal::SIGKILL);
                    kill_at = None;
                }
            }
        };
        // Stdout is read only so that a chatty handler never blocks on a
        // full pipe.
        if let Some(out) = stdout {
            let _ = tokio::time::timeout(Duration::from_secs(2), out).await;
        }
        let err_tail = match stderr {
            Some(err) => tokio::time::timeout(Duration::from_secs(2), err)
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default(),
            None => String::new(),
        };
        if let Some(outcome) = ended_by {
            return outcome;
        }
        let status = match status {
            Ok(status) => status,
            Err(e) => return Outcome::Failed(format!("waiting for the handler failed: {e}")),
        };
        let with_tail = |head: String| {
            if err_tail.is_empty() {
                head
            } else {
                format!("{head}: {err_tail}")
            }
        };
        match status.code() {
            Some(0) => Outcome::Done,
            Some(EXIT_TEMPORARY) => Outcome::Temporary(with_tail("exit 75".to_owned())),
            Some(code) => Outcome::Failed(with_tail(format!("exit {code}"))),
            None => {
                #[cfg(unix)]
                let signal = std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(0);
                #[cfg(not(unix))]
                let signal = 0;
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

/// Reads a stream to its end, keeping the last [`STDERR_TAIL`] bytes as
/// trimmed text with credentials scrubbed.
async fn tail(mut from: impl AsyncRead + Unpin) -> String {
    let mut kept: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 8192];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                kept.extend_from_slice(&buf[..n]);
                if kept.len() > 2 * STDERR_TAIL {
                    kept.drain(..kept.len() - STDERR_TAIL);
                }
            }
        }
    }
    let start = kept.len().saturating_sub(STDERR_TAIL);
    let text = String::from_utf8_lossy(&kept[start..]);
    backstop_core::redact(text.trim(), &[])
}

fn signal_group(group: Option<i32>, signal: nix::sys::signal::Signal) {
    #[cfg(unix)]
    if let Some(pgid) = group {
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), signal);
    }
    #[cfg(not(unix))]
    let _ = (group, signal);
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
    async fn only_the_tail_of_stderr_is_kept() {
        let got = run("head -c 100000 /dev/zero | tr '\\0' x >&2; echo END >&2; exit 2").await;
        let Outcome::Failed(e) = got else {
            panic!("{got:?}")
        };
        assert!(
            e.ends_with("END") && e.len() < STDERR_TAIL + 16,
            "{}",
            e.len()
        );
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
        for timeout_ms in [0, u64::MAX] {
            let got = CommandHandler::new("true")
                .handle(&work(timeout_ms), &CancellationToken::new())
                .await;
            assert_eq!(got, Outcome::Done, "{timeout_ms}");
        }
    }

    #[tokio::test]
    async fn an_owned_handler_carries_its_owner_s_mark_and_an_unowned_one_none() {
        let owner = Owner::new(&["test", "cpu-1"]);
        let owned = Work {
            owner: Some(owner.clone()),
            ..work(10_000)
        };
        let check = format!(r#"test "$BACKSTOP_HANDLER_OWNER" = "{}""#, owner.mark());
        let got = CommandHandler::new(&check)
            .handle(&owned, &CancellationToken::new())
            .await;
        assert_eq!(got, Outcome::Done);
        let got = run(r#"test -z "$BACKSTOP_HANDLER_OWNER""#).await;
        assert_eq!(got, Outcome::Done);
    }

    #[tokio::test]
    async fn a_command_that_cannot_start_is_a_failure() {
        // sh itself starts; the command it is given is missing.
        let got = run("/nonexistent/handler").await;
        assert!(matches!(got, Outcome::Failed(e) if e.starts_with("exit 127")));
    }
}
