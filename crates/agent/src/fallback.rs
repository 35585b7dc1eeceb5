//! Running a command with the first available model, falling back to the
//! next when the model or its provider cannot serve — the rules of
//! `backstop run`.
//!
//! - Models are tried in the order given, each when neither it nor its
//!   provider is cooling in the [`Ledger`].
//! - A rate limit, an overload, a quota or refused credentials
//!   ([`Kind::falls_back`]) records a cooldown — of the model, or of its
//!   provider for a quota or credentials ([`backstop_ledger::Reason::scope`])
//!   — and the next available model runs.
//! - A transient failure ([`Kind::is_transient`]) runs the same model again
//!   under the [`Policy`] (full-jitter backoff); when its attempts run out
//!   the model is cooled and the next one runs. Each model gets at most the
//!   policy's attempts worth of turns in one run.
//! - Any other failure ends the run with the command's own exit code.
//! - When every model is cooling, the run waits for the first to free up
//!   if that is within the policy's `max_server_wait`, else it ends.
//! - Held standard output ([`Command::hold_stdout`]): only the final
//!   attempt's is kept, in [`Outcome::output`]; each one it replaces is
//!   summarised on the log.
//!
//! Time comes from the ledger's clock ([`Ledger::clock`]) and tokio's
//! timers; processes come through [`Attempts`], so the rules can be tested
//! on a paused clock without running anything.

use std::collections::HashMap;
use std::io;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use backstop_core::time::format_rfc3339;
use backstop_core::{Ending, HumanDuration, Policy, RetryError, RetryEvent, Verdict};
use backstop_ledger::{Entry, Key, Ledger, Reason, Source, remaining};
use tokio_util::sync::CancellationToken;

use crate::{Agent, AgentFailure, Command, Diagnosis, Exit, Held, Kind, Transcript, classify};

/// Exit code of a run that may succeed later (every model cooling or
/// failing, the deadline passed): `EX_TEMPFAIL` of sysexits.h.
const TEMPFAIL: u8 = 75;
/// Exit code of a run stopped by Ctrl-C or SIGTERM.
const INTERRUPTED: u8 = 130;
/// Exit code of a run that failed for good.
const FAILURE: u8 = 1;
/// Exit code when the command is not found, as a shell says.
const NOT_FOUND: u8 = 127;
/// Exit code when the command is found but cannot be run (not executable,
/// a directory, not a program), as a shell says.
const CANNOT_RUN: u8 = 126;

/// One model a run may use.
#[derive(Clone, Debug)]
pub struct Model {
    /// Its ledger key, `provider/model`.
    pub key: Key,
    /// How to read its command's output.
    pub agent: Agent,
    /// The program its command runs, for messages.
    pub program: String,
}

/// Runs one attempt of a model's command: the seam between the rules and
/// processes.
pub trait Attempts {
    /// Runs the command of `model` once, to its end or until `cancel`
    /// stops it. An error means it could not be started.
    fn attempt(
        &self,
        model: &Key,
        cancel: &CancellationToken,
    ) -> impl Future<Output = io::Result<Transcript>>;
}

/// The [`Attempts`] that run processes: one [`Command`] per model.
#[derive(Clone, Debug, Default)]
pub struct Processes {
    commands: HashMap<Key, Command>,
}

impl Processes {
    /// No commands yet.
    pub fn new() -> Self {
        Processes::default()
    }

    /// Runs `command` for `model`.
    pub fn insert(&mut self, model: Key, command: Command) {
        self.commands.insert(model, command);
    }
}

impl Attempts for Processes {
    async fn attempt(&self, model: &Key, cancel: &CancellationToken) -> io::Result<Transcript> {
        match self.commands.get(model) {
            Some(command) => command.run(cancel).await,
            None => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no command for {model}"),
            )),
        }
    }
}

/// An attempt's standard output, held back.
#[derive(Debug)]
pub struct LastOutput {
    /// The model of the attempt.
    pub model: Key,
    /// How its command exited.
    pub exit: Exit,
    /// Its standard output.
    pub held: Held,
}

impl LastOutput {
    /// Says on the log what is not written to stdout.
    fn summarise(&self) {
        if self.held.streamed() || self.held.is_empty() {
            return;
        }
        tracing::info!(
            "held back {} bytes of standard output from the attempt with {} (exit {}); only the final attempt's is written",
            self.held.len(),
            self.model,
            self.exit.shell_code()
        );
    }
}

/// How a run ended.
#[derive(Debug)]
pub struct Outcome {
    /// The model whose command succeeded, or why none did.
    pub result: Result<Key, RunError>,
    /// The final attempt's standard output, when it was held back
    /// ([`Command::hold_stdout`]); written out by the caller, unless
    /// [`Held::streamed`].
    pub output: Option<LastOutput>,
}

/// Why a run ended without a success.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Every model used up its turns in this run.
    #[error("{programs}: every model failed {turns} time{} in this run", if *turns == 1 { "" } else { "s" })]
    Exhausted {
        /// The programs run, for the message: "claude, codex".
        programs: String,
        /// The turns each model had.
        turns: u32,
    },
    /// No models were given.
    #[error("no model is available")]
    NoModel,
    /// Every model is cooling, and the first frees up later than the run
    /// may wait.
    #[error(
        "no model is available; the first to free up is {first}, at {} (in {})",
        format_rfc3339(*at),
        HumanDuration(remaining(*at, *now))
    )]
    NoneAvailable {
        /// The model that frees up first.
        first: Key,
        /// When.
        at: SystemTime,
        /// Every model, with the entry that holds it back longest.
        blocked: Vec<(Key, Entry)>,
        /// When this was decided.
        now: SystemTime,
    },
    /// The policy's deadline passed.
    #[error("{programs}: the deadline passed after {}", HumanDuration(*after))]
    DeadlinePassed {
        /// The programs run, for the message.
        programs: String,
        /// How long the run took.
        after: Duration,
    },
    /// The run was cancelled while waiting.
    #[error("interrupted")]
    Interrupted,
    /// The command of a model could not be started.
    #[error("{program} cannot be run: {source}")]
    CannotStart {
        /// The model.
        model: Key,
        /// Its program.
        program: String,
        /// Why it could not start.
        #[source]
        source: io::Error,
    },
    /// The command failed for a reason of its own; nothing was recorded.
    #[error("{program} failed with {model} (exit {}); not retried", exit.shell_code())]
    Failed {
        /// The model.
        model: Key,
        /// Its program.
        program: String,
        /// How the command exited.
        exit: Exit,
        /// What it said went wrong, if it said.
        message: Option<String>,
    },
    /// The retry engine ended a model's turn without an attempt's result.
    #[error("{program} with {model} did not finish")]
    Unfinished {
        /// The model.
        model: Key,
        /// Its program.
        program: String,
        /// How the engine ended.
        ending: Ending,
    },
    /// The ledger could not be read or written.
    #[error(transparent)]
    Ledger(#[from] backstop_ledger::Error),
}

impl RunError {
    /// The exit code for this ending, as a shell script expects: 75 for
    /// "try later" (cooling, exhausted, deadline, a temporary ledger
    /// failure), 130 interrupted, 127 not found and 126 not runnable, the
    /// command's own code for its own failure (1 when it exited 0 after
    /// reporting a failure), else 1.
    pub fn exit_code(&self) -> u8 {
        match self {
            RunError::Exhausted { .. }
            | RunError::NoModel
            | RunError::NoneAvailable { .. }
            | RunError::DeadlinePassed { .. } => TEMPFAIL,
            RunError::Interrupted => INTERRUPTED,
            RunError::CannotStart { source, .. } if source.kind() == io::ErrorKind::NotFound => {
                NOT_FOUND
            }
            RunError::CannotStart { .. } => CANNOT_RUN,
            // A tool that exits 0 after reporting a failure (aider,
            // `claude -p` on some errors) still failed.
            RunError::Failed { exit, .. } => match exit.shell_code() {
                0 => FAILURE,
                c => u8::try_from(c).unwrap_or(FAILURE),
            },
            RunError::Unfinished { ending, .. } => match ending {
                Ending::Cancelled => INTERRUPTED,
                e if e.is_temporary() => TEMPFAIL,
                _ => FAILURE,
            },
            RunError::Ledger(e) if e.is_temporary() => TEMPFAIL,
            RunError::Ledger(_) => FAILURE,
        }
    }
}

/// A run of a command across models.
///
/// ```no_run
/// use backstop_agent::fallback::{Fallback, Model, Processes};
/// use backstop_agent::{Agent, Command};
/// use backstop_ledger::{Ledger, SqliteStore};
///
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// let ledger = Ledger::new(Box::new(SqliteStore::open("ledger.db")?));
/// let key: backstop_ledger::Key = "anthropic/claude-sonnet-4-5".parse()?;
/// let mut processes = Processes::new();
/// processes.insert(key.clone(), Command::new("claude", ["-p", "hello"]));
/// let model = Model { key, agent: Agent::Claude, program: "claude".into() };
/// let outcome = Fallback::new(&ledger, vec![model], processes).run().await;
/// println!("{:?}", outcome.result);
/// # Ok(())
/// # }
/// ```
pub struct Fallback<'l, A> {
    ledger: &'l Ledger,
    models: Vec<Model>,
    attempts: A,
    policy: Policy,
    cancel: CancellationToken,
}

/// How one model's turn ended, when the engine did not end it.
enum Turn {
    Succeeded,
    FallBack(AgentFailure),
}

/// An attempt that failed.
#[derive(Debug)]
enum AttemptError {
    Spawn(io::Error),
    Failed { failure: AgentFailure, exit: Exit },
}

impl<'l, A: Attempts> Fallback<'l, A> {
    /// A run of `models`, in order (a model given twice is tried once),
    /// recorded in `ledger`, each attempt run by `attempts`; under
    /// [`Policy::api`] without an attempt timeout, never cancelled.
    pub fn new(ledger: &'l Ledger, models: Vec<Model>, attempts: A) -> Self {
        let mut unique: Vec<Model> = Vec::with_capacity(models.len());
        for model in models {
            if !unique.iter().any(|m| m.key == model.key) {
                unique.push(model);
            }
        }
        Fallback {
            ledger,
            models: unique,
            attempts,
            policy: Policy::api().with_attempt_timeout(None),
            cancel: CancellationToken::new(),
        }
    }

    /// The retries of one model (attempts, backoff), the turns each model
    /// gets (its attempts), the longest wait for a cooling model
    /// (`max_server_wait`) and the run's deadline.
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// Stops the run when `token` is cancelled: a running command is
    /// stopped, a wait cut short.
    pub fn cancel_on(mut self, token: CancellationToken) -> Self {
        self.cancel = token;
        self
    }

    /// Runs until a command succeeds or the rules end the run.
    pub async fn run(&self) -> Outcome {
        let held = Mutex::new(None);
        let result = self.models(&held).await;
        let output = held.into_inner().unwrap_or_else(|p| p.into_inner());
        Outcome { result, output }
    }

    async fn models(&self, held: &Mutex<Option<LastOutput>>) -> Result<Key, RunError> {
        let clock = self.ledger.clock();
        let started = clock.now();
        let elapsed = || clock.now().duration_since(started).unwrap_or_default();
        let deadline = self.policy.deadline();
        let max_turns = self.policy.max_attempts();
        let mut turns: HashMap<&Key, u32> = HashMap::new();
        loop {
            let left = deadline.map(|d| d.saturating_sub(elapsed()));
            if left == Some(Duration::ZERO) {
                return Err(self.deadline_passed(elapsed()));
            }
            let eligible: Vec<Key> = self
                .models
                .iter()
                .filter(|m| turns.get(&m.key).copied().unwrap_or(0) < max_turns)
                .map(|m| m.key.clone())
                .collect();
            if eligible.is_empty() {
                if self.models.is_empty() {
                    return Err(RunError::NoModel);
                }
                return Err(RunError::Exhausted {
                    programs: self.programs(),
                    turns: max_turns,
                });
            }
            let pick = self.ledger.pick(&eligible)?;
            let Some(available) = pick.available.clone() else {
                let Some((first, at)) = pick.earliest() else {
                    return Err(RunError::NoModel);
                };
                let now = clock.now();
                let wait = remaining(at, now);
                let within =
                    wait <= self.policy.max_server_wait() && left.is_none_or(|left| wait < left);
                if !within {
                    let first = first.clone();
                    return Err(RunError::NoneAvailable {
                        first,
                        at,
                        blocked: pick.blocked,
                        now,
                    });
                }
                tracing::info!(
                    "every model is cooling; waiting {} for {first}",
                    HumanDuration(wait)
                );
                tokio::select! {
                    () = self.cancel.cancelled() => return Err(RunError::Interrupted),
                    () = tokio::time::sleep(wait) => {}
                }
                continue;
            };
            let Some(model) = self.models.iter().find(|m| m.key == available) else {
                return Err(RunError::NoModel);
            };
            *turns.entry(&model.key).or_default() += 1;
            let policy = match left {
                Some(left) => self.policy.clone().with_deadline(left),
                None => self.policy.clone(),
            };
            match self.turn(model, &policy, held).await {
                Ok(Turn::Succeeded) => {
                    self.ledger.succeeded(&model.key)?;
                    return Ok(model.key.clone());
                }
                Ok(Turn::FallBack(failure)) => {
                    let entry = self.record(&model.key, &failure, reason_of(failure.kind))?;
                    self.falling_back(model, &failure, &entry);
                }
                Err(e) => match (e.ending, e.into_last_error()) {
                    (Ending::Cancelled, _) => return Err(RunError::Interrupted),
                    (Ending::DeadlineExceeded, _) => return Err(self.deadline_passed(elapsed())),
                    (_, Some(AttemptError::Spawn(source))) => {
                        return Err(RunError::CannotStart {
                            model: model.key.clone(),
                            program: model.program.clone(),
                            source,
                        });
                    }
                    (Ending::Exhausted, Some(AttemptError::Failed { failure, .. })) => {
                        // The model kept failing: cool it and try the next.
                        let entry = self.record(&model.key, &failure, Reason::Error)?;
                        self.falling_back(model, &failure, &entry);
                    }
                    (_, Some(AttemptError::Failed { failure, exit })) => {
                        return Err(RunError::Failed {
                            model: model.key.clone(),
                            program: model.program.clone(),
                            exit,
                            message: failure.message,
                        });
                    }
                    (ending, None) => {
                        return Err(RunError::Unfinished {
                            model: model.key.clone(),
                            program: model.program.clone(),
                            ending,
                        });
                    }
                },
            }
        }
    }

    /// Runs the model's command, retrying transient failures under
    /// `policy`.
    async fn turn(
        &self,
        model: &Model,
        policy: &Policy,
        held: &Mutex<Option<LastOutput>>,
    ) -> Result<Turn, RetryError<AttemptError>> {
        let name = &model.program;
        let key = &model.key;
        tracing::info!("running {name} with {key}");
        let cancel = &self.cancel;
        policy
            .retry(|_| self.attempt(model, held))
            .classify(|e: &AttemptError| match e {
                AttemptError::Spawn(_) => Verdict::permanent("cannot start"),
                AttemptError::Failed { failure, .. } if failure.kind.is_transient() => {
                    Verdict::transient(failure.kind.as_str())
                }
                AttemptError::Failed { failure, .. } => Verdict::permanent(failure.kind.as_str()),
            })
            .notify(|e: &RetryEvent<'_>| {
                tracing::warn!(
                    "{name} with {key}: {}; retry {} of {} in {}",
                    e.reason,
                    e.attempt,
                    e.max_attempts - 1,
                    HumanDuration(e.delay)
                );
            })
            .cancel_waits_on(cancel)
            .run()
            .await
    }

    /// One run of the command, read by the model's agent. Its held output,
    /// if any, becomes the last attempt's in `held`; the one it replaces is
    /// summarised.
    async fn attempt(
        &self,
        model: &Model,
        held: &Mutex<Option<LastOutput>>,
    ) -> Result<Turn, AttemptError> {
        let mut transcript = self
            .attempts
            .attempt(&model.key, &self.cancel)
            .await
            .map_err(AttemptError::Spawn)?;
        if let Some(output) = transcript.held.take() {
            let this = LastOutput {
                model: model.key.clone(),
                exit: transcript.exit,
                held: output,
            };
            let earlier = held.lock().unwrap_or_else(|p| p.into_inner()).replace(this);
            if let Some(earlier) = earlier {
                earlier.summarise();
            }
        }
        let exit = transcript.exit;
        if transcript.interrupted {
            let failure = AgentFailure {
                kind: Kind::Failed,
                reset: None,
                message: Some("interrupted".to_owned()),
            };
            return Err(AttemptError::Failed { failure, exit });
        }
        match classify(model.agent, &transcript, self.ledger.clock().now()) {
            Diagnosis::Success => Ok(Turn::Succeeded),
            Diagnosis::Failure(failure) if failure.kind.falls_back() => Ok(Turn::FallBack(failure)),
            Diagnosis::Failure(failure) => Err(AttemptError::Failed { failure, exit }),
        }
    }

    /// Records `failure` of `model` in the ledger as `reason`.
    fn record(
        &self,
        model: &Key,
        failure: &AgentFailure,
        reason: Reason,
    ) -> Result<Entry, RunError> {
        let recorded = backstop_ledger::LedgerFailure {
            reason,
            wait: failure.reset.map(|at| (at, Source::Tool)),
            message: failure.message.clone(),
        };
        Ok(self.ledger.record(model, &recorded)?)
    }

    fn falling_back(&self, model: &Model, failure: &AgentFailure, entry: &Entry) {
        let said = failure
            .message
            .as_deref()
            .map(|m| format!(" ({})", backstop_core::redact(m, &[])))
            .unwrap_or_default();
        let scope = if entry.key == model.key {
            String::new()
        } else {
            format!(", and so every {} model", entry.key)
        };
        tracing::warn!(
            "{} with {}: {}{said}; {} cools until {} (in {}){scope}; falling back",
            model.program,
            model.key,
            failure.kind,
            entry.key,
            format_rfc3339(entry.until),
            HumanDuration(remaining(entry.until, self.ledger.clock().now())),
        );
    }

    /// The programs run, for messages about the whole run: "claude", or
    /// "claude, codex".
    fn programs(&self) -> String {
        let mut names: Vec<&str> = self.models.iter().map(|m| m.program.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        names.join(", ")
    }

    fn deadline_passed(&self, after: Duration) -> RunError {
        RunError::DeadlinePassed {
            programs: self.programs(),
            after,
        }
    }
}

/// The ledger reason a kind of failure is recorded as.
fn reason_of(kind: Kind) -> Reason {
    match kind {
        Kind::RateLimit => Reason::RateLimit,
        Kind::Overloaded => Reason::Overloaded,
        Kind::Quota => Reason::Quota,
        Kind::Auth => Reason::Auth,
        Kind::Provider | Kind::Stalled | Kind::Failed => Reason::Error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons() {
        assert_eq!(reason_of(Kind::RateLimit), Reason::RateLimit);
        assert_eq!(reason_of(Kind::Overloaded), Reason::Overloaded);
        assert_eq!(reason_of(Kind::Quota), Reason::Quota);
        assert_eq!(reason_of(Kind::Auth), Reason::Auth);
        assert_eq!(reason_of(Kind::Provider), Reason::Error);
        assert_eq!(reason_of(Kind::Stalled), Reason::Error);
    }
}
