//! `backstop run`: a command run with the first available model, falling
//! back to the next when the model or its provider cannot serve.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::io::IsTerminal;
use std::time::{Duration, Instant, SystemTime};

use backstop_agent::{Agent, Command, Diagnosis, Exit, Failure, Input, Kind, Replay, classify};
use backstop_core::time::format_rfc3339;
use backstop_core::{Ending, HumanDuration, Policy, RetryEvent, Verdict};
use backstop_ledger::{Entry, Key, Ledger, Reason, Source, remaining};
use tokio_util::sync::CancellationToken;

use crate::cli::RunArgs;
use crate::report::{Report, exit};

/// Exit code when the command cannot be started at all, as a shell says.
const CANNOT_START: u8 = 127;

pub fn run(args: RunArgs, state: Option<&str>) -> Result<(), Report> {
    let Some(program) = args.command.first().cloned() else {
        return Err(Report::new(
            exit::USAGE,
            "no command to run was given after --",
        ));
    };
    let agent = args
        .agent
        .map(Agent::from)
        .unwrap_or_else(|| Agent::detect(&program));
    let mut models: Vec<Key> = Vec::new();
    for model in args.models {
        if !models.contains(&model) {
            models.push(model);
        }
    }
    let policy = args.backoff.apply(Policy::api().with_attempt_timeout(None));
    let idle = (!args.idle_timeout.is_zero()).then_some(args.idle_timeout);
    let ledger = crate::state::ledger(state)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| Report::from_error(exit::FAILURE, &e))?;
    let cancel = CancellationToken::new();
    let interrupt = cancel.clone();
    runtime.spawn(async move {
        crate::interrupted().await;
        interrupt.cancel();
    });
    // A piped prompt is read once and replayed to every attempt. A
    // terminal is not handed over: the command runs in its own process
    // group, where reading the terminal would stop it.
    let input = if std::io::stdin().is_terminal() {
        Input::Null
    } else {
        let _entered = runtime.enter();
        Input::Replay(Replay::start(tokio::io::stdin()))
    };
    let runner = Runner {
        ledger,
        runtime,
        cancel,
        agent,
        name: program.to_string_lossy().into_owned(),
        command: args.command,
        idle,
        input,
        policy,
    };
    let outcome = runner.run(&models);
    // A command that ignored every signal must not hold our exit.
    runner.runtime.shutdown_background();
    outcome
}

struct Runner {
    ledger: Ledger,
    runtime: tokio::runtime::Runtime,
    cancel: CancellationToken,
    agent: Agent,
    /// The program, for messages.
    name: String,
    command: Vec<OsString>,
    idle: Option<Duration>,
    input: Input,
    policy: Policy,
}

/// How one model's turn ended, when the engine did not end it.
enum Turn {
    Succeeded,
    FallBack(Failure),
}

/// An attempt that failed.
#[derive(Debug)]
enum AttemptError {
    Spawn(std::io::Error),
    Failed { failure: Failure, exit: Exit },
}

impl Runner {
    fn run(&self, models: &[Key]) -> Result<(), Report> {
        let started = Instant::now();
        let deadline = self.policy.deadline();
        let max_turns = self.policy.max_attempts();
        let mut turns: HashMap<Key, u32> = HashMap::new();
        loop {
            let left = deadline.map(|d| d.saturating_sub(started.elapsed()));
            if left == Some(Duration::ZERO) {
                return Err(self.deadline_passed(started));
            }
            let eligible: Vec<Key> = models
                .iter()
                .filter(|m| turns.get(*m).copied().unwrap_or(0) < max_turns)
                .cloned()
                .collect();
            if eligible.is_empty() {
                return Err(Report::new(
                    exit::TEMPFAIL,
                    format!(
                        "{}: every model failed {max_turns} time{} in this run",
                        self.name,
                        if max_turns == 1 { "" } else { "s" }
                    ),
                )
                .hint("see `backstop cooldown list` for why, and when each frees up"));
            }
            let pick = self.ledger.pick(&eligible)?;
            let Some(model) = pick.available.clone() else {
                let Some((first, at)) = pick.earliest() else {
                    return Err(Report::new(exit::TEMPFAIL, "no model is available"));
                };
                let wait = remaining(at, SystemTime::now());
                let within =
                    wait <= self.policy.max_server_wait() && left.is_none_or(|left| wait < left);
                if !within {
                    return Err(none_available(&pick.blocked, first, at));
                }
                tracing::info!(
                    "every model is cooling; waiting {} for {first}",
                    HumanDuration(wait)
                );
                if !self.pause(wait) {
                    return Err(interrupted());
                }
                continue;
            };
            *turns.entry(model.clone()).or_default() += 1;
            let policy = match left {
                Some(left) => self.policy.clone().with_deadline(left),
                None => self.policy.clone(),
            };
            match self.turn(&model, &policy) {
                Ok(Turn::Succeeded) => {
                    self.ledger.succeeded(&model)?;
                    return Ok(());
                }
                Ok(Turn::FallBack(failure)) => {
                    let entry = self.record(&model, &failure, reason_of(failure.kind))?;
                    self.falling_back(&model, &failure, &entry);
                }
                Err(e) => match (e.ending, e.into_last_error()) {
                    (Ending::Cancelled, _) => return Err(interrupted()),
                    (Ending::DeadlineExceeded, _) => return Err(self.deadline_passed(started)),
                    (_, Some(AttemptError::Spawn(e))) => {
                        return Err(Report::from_error(CANNOT_START, &e)
                            .hint(format!("check that {} is installed and on PATH", self.name)));
                    }
                    (Ending::Exhausted, Some(AttemptError::Failed { failure, .. })) => {
                        // The model kept failing: cool it and try the next.
                        let entry = self.record(&model, &failure, Reason::Error)?;
                        self.falling_back(&model, &failure, &entry);
                    }
                    (_, Some(AttemptError::Failed { failure, exit })) => {
                        return Err(self.failed(&model, &failure, exit));
                    }
                    (ending, None) => {
                        return Err(Report::new(
                            crate::report::code_for(ending),
                            format!("{} with {model} did not finish", self.name),
                        ));
                    }
                },
            }
        }
    }

    /// Runs the command with `model`, retrying transient failures under
    /// `policy`.
    fn turn(
        &self,
        model: &Key,
        policy: &Policy,
    ) -> Result<Turn, Box<backstop_core::RetryError<AttemptError>>> {
        let argv: Vec<OsString> = self.command.iter().map(|a| substitute(a, model)).collect();
        let command = Command::new(&argv[0], &argv[1..])
            .env("BACKSTOP_MODEL", model.as_str())
            .env("BACKSTOP_PROVIDER", model.provider())
            .idle_timeout(self.idle)
            .input(self.input.clone());
        tracing::info!("running {} with {model}", self.name);
        let name = &self.name;
        let agent = self.agent;
        let cancel = &self.cancel;
        self.runtime
            .block_on(
                policy
                    .retry(|_| attempt(&command, agent, cancel))
                    .classify(|e: &AttemptError| match e {
                        AttemptError::Spawn(_) => Verdict::permanent("cannot start"),
                        AttemptError::Failed { failure, .. } if failure.kind.is_transient() => {
                            Verdict::transient(failure.kind.as_str())
                        }
                        AttemptError::Failed { failure, .. } => {
                            Verdict::permanent(failure.kind.as_str())
                        }
                    })
                    .notify(|e: &RetryEvent<'_>| {
                        tracing::warn!(
                            "{name} with {model}: {}; retry {} of {} in {}",
                            e.reason,
                            e.attempt,
                            e.max_attempts - 1,
                            HumanDuration(e.delay)
                        );
                    })
                    .cancel_waits_on(cancel)
                    .run(),
            )
            .map_err(Box::new)
    }

    /// Records `failure` of `model` in the ledger as `reason`.
    fn record(&self, model: &Key, failure: &Failure, reason: Reason) -> Result<Entry, Report> {
        let recorded = backstop_ledger::Failure {
            reason,
            wait: failure.reset.map(|at| (at, Source::Tool)),
            message: failure.message.clone(),
        };
        Ok(self.ledger.record(model, &recorded)?)
    }

    fn falling_back(&self, model: &Key, failure: &Failure, entry: &Entry) {
        let said = failure
            .message
            .as_deref()
            .map(|m| format!(" ({})", backstop_core::redact(m, &[])))
            .unwrap_or_default();
        let scope = if &entry.key == model {
            String::new()
        } else {
            format!(", and so every {} model", entry.key)
        };
        tracing::warn!(
            "{} with {model}: {}{said}; {} cools until {} (in {}){scope}; falling back",
            self.name,
            failure.kind,
            entry.key,
            format_rfc3339(entry.until),
            HumanDuration(remaining(entry.until, SystemTime::now())),
        );
    }

    /// A permanent failure: the command's own exit code goes through.
    fn failed(&self, model: &Key, failure: &Failure, exit: Exit) -> Report {
        let code = match exit.shell_code() {
            // A tool that exits 0 after reporting a failure (aider,
            // `claude -p` on some errors) still failed.
            0 => exit::FAILURE,
            c => u8::try_from(c).unwrap_or(exit::FAILURE),
        };
        let mut report = Report::new(
            code,
            format!(
                "{} failed with {model} (exit {}); not retried",
                self.name,
                exit.shell_code()
            ),
        );
        if let Some(message) = &failure.message {
            report = report.detail(backstop_core::redact(message, &[]));
        }
        report
    }

    fn deadline_passed(&self, started: Instant) -> Report {
        Report::new(
            exit::TEMPFAIL,
            format!(
                "{}: the deadline passed after {}",
                self.name,
                HumanDuration(started.elapsed())
            ),
        )
    }

    /// Sleeps for `wait`; false when interrupted first.
    fn pause(&self, wait: Duration) -> bool {
        self.runtime.block_on(async {
            tokio::select! {
                () = self.cancel.cancelled() => false,
                () = tokio::time::sleep(wait) => true,
            }
        })
    }
}

/// One run of the command, read by `agent`.
async fn attempt(
    command: &Command,
    agent: Agent,
    cancel: &CancellationToken,
) -> Result<Turn, AttemptError> {
    let transcript = command.run(cancel).await.map_err(AttemptError::Spawn)?;
    let exit = transcript.exit;
    if transcript.interrupted {
        let failure = Failure {
            kind: Kind::Failed,
            reset: None,
            message: Some("interrupted".to_owned()),
        };
        return Err(AttemptError::Failed { failure, exit });
    }
    match classify(agent, &transcript, SystemTime::now()) {
        Diagnosis::Success => Ok(Turn::Succeeded),
        Diagnosis::Failure(failure) if failure.kind.falls_back() => Ok(Turn::FallBack(failure)),
        Diagnosis::Failure(failure) => Err(AttemptError::Failed { failure, exit }),
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

/// `arg` with `{model}`, `{provider}` and `{key}` replaced. An argument
/// that is not UTF-8 is passed as it is.
fn substitute(arg: &OsStr, model: &Key) -> OsString {
    let Some(text) = arg.to_str() else {
        return arg.to_owned();
    };
    if !text.contains('{') {
        return arg.to_owned();
    }
    text.replace("{model}", model.model().unwrap_or(model.as_str()))
        .replace("{provider}", model.provider())
        .replace("{key}", model.as_str())
        .into()
}

fn none_available(blocked: &[(Key, Entry)], first: &Key, at: SystemTime) -> Report {
    let now = SystemTime::now();
    let mut report = Report::new(
        exit::TEMPFAIL,
        format!(
            "no model is available; the first to free up is {first}, at {} (in {})",
            format_rfc3339(at),
            HumanDuration(remaining(at, now))
        ),
    );
    for (model, entry) in blocked {
        report = report.detail(crate::cmd::pick::blocked_line(model, entry, now));
    }
    report.hint("raise --max-wait to wait for it, or add models to --models")
}

fn interrupted() -> Report {
    Report::new(exit::INTERRUPTED, "interrupted")
        .hint("the command was stopped; run the same backstop run again to start over")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_replaced() {
        let key: Key = "openrouter/meta-llama/llama-3.1-70b".parse().unwrap();
        let got = |arg: &str| substitute(OsStr::new(arg), &key);
        assert_eq!(got("--model={model}"), "--model=meta-llama/llama-3.1-70b");
        assert_eq!(got("{provider}"), "openrouter");
        assert_eq!(got("-m {key}"), "-m openrouter/meta-llama/llama-3.1-70b");
        assert_eq!(got("plain"), "plain");
        assert_eq!(got("{unknown}"), "{unknown}");
    }

    #[test]
    fn reasons() {
        assert_eq!(reason_of(Kind::RateLimit), Reason::RateLimit);
        assert_eq!(reason_of(Kind::Quota), Reason::Quota);
        assert_eq!(reason_of(Kind::Auth), Reason::Auth);
        assert_eq!(reason_of(Kind::Stalled), Reason::Error);
    }
}
