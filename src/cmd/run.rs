//! `backstop run`: a command run with the first available model, falling
//! back to the next when the model or its provider cannot serve.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::IsTerminal;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use backstop_agent::template::{self, Commands, CommandsError, Names, substitute};
use backstop_agent::{
    Agent, Command, Diagnosis, Exit, Failure, Held, Input, Kind, MAX_HELD, Replay, classify,
};
use backstop_core::time::format_rfc3339;
use backstop_core::{Ending, HumanDuration, Policy, RetryEvent, Verdict};
use backstop_ledger::{Entry, Key, Ledger, Reason, Source, remaining};
use tokio_util::sync::CancellationToken;

use crate::cli::{OutputArg, RunArgs};
use crate::report::{Report, exit};

/// Exit code when the command is not found, as a shell says.
const NOT_FOUND: u8 = 127;

/// Exit code when the command is found but cannot be run (not
/// executable, a directory, not a program), as a shell says.
const CANNOT_RUN: u8 = 126;

pub fn run(args: RunArgs, state: Option<&str>) -> Result<(), Report> {
    let mut models: Vec<Key> = Vec::new();
    for model in args.models {
        if !models.contains(&model) {
            models.push(model);
        }
    }
    // Everything is checked before the ledger is opened or anything runs.
    let commands = models_file(args.models_file.as_deref())?;
    let plans = plan(
        &models,
        &commands,
        &args.command,
        args.agent.map(Agent::from),
    )?;
    let output = args.output.unwrap_or(if std::io::stdout().is_terminal() {
        OutputArg::Stream
    } else {
        OutputArg::Final
    });
    let policy = args.backoff.apply(Policy::api().attempt_timeout(None));
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
        plans,
        idle,
        input,
        policy,
        output,
        held: Mutex::new(None),
    };
    let outcome = runner.run(&models);
    runner.write_final_output();
    // A command that ignored every signal must not hold our exit.
    runner.runtime.shutdown_background();
    outcome
}

/// The `[run]` tables of `path`, else of ./backstop.toml when it exists.
fn models_file(path: Option<&Path>) -> Result<Commands, Report> {
    let default = Path::new("backstop.toml");
    let path = match path {
        Some(path) => path,
        None if default.exists() => default,
        None => return Ok(Commands::default()),
    };
    Commands::load(path).map_err(|e| {
        let code = match e {
            CommandsError::Read { .. } => exit::FAILURE,
            CommandsError::Invalid { .. } => exit::USAGE,
        };
        Report::from_error(code, &e)
    })
}

/// What runs for one model.
struct Plan {
    /// The program and its arguments, placeholders unfilled.
    argv: Vec<OsString>,
    /// How to read its output.
    agent: Agent,
    /// The program, for messages.
    name: String,
}

/// The command of each model — its own or its provider's from the models
/// file, else the command line's — with every placeholder checked.
fn plan(
    models: &[Key],
    commands: &Commands,
    command_line: &[OsString],
    agent: Option<Agent>,
) -> Result<HashMap<Key, Plan>, Report> {
    for arg in command_line {
        template::check(arg).map_err(|e| Report::from_error(exit::USAGE, &e))?;
    }
    let mut plans = HashMap::new();
    for model in models {
        let (argv, own_agent) = match commands.get(model.as_str(), model.provider()) {
            Some(c) => (c.argv.clone(), c.agent),
            None if !command_line.is_empty() => (command_line.to_vec(), None),
            None => {
                return Err(Report::new(
                    exit::USAGE,
                    format!("no command to run for {model}"),
                )
                .hint(format!(
                    "give one after --, or in [run.providers.{}] of backstop.toml (or --models-file)",
                    model.provider()
                )));
            }
        };
        let agent = agent
            .or(own_agent)
            .unwrap_or_else(|| Agent::detect(&argv[0]));
        let name = argv[0].to_string_lossy().into_owned();
        plans.insert(model.clone(), Plan { argv, agent, name });
    }
    Ok(plans)
}

struct Runner {
    ledger: Ledger,
    runtime: tokio::runtime::Runtime,
    cancel: CancellationToken,
    plans: HashMap<Key, Plan>,
    idle: Option<Duration>,
    input: Input,
    policy: Policy,
    output: OutputArg,
    /// The last attempt's standard output, held back until the run ends.
    held: Mutex<Option<LastOutput>>,
}

/// An attempt's standard output, held back.
struct LastOutput {
    model: Key,
    exit: Exit,
    held: Held,
}

impl LastOutput {
    /// Says on stderr what is not written to stdout.
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
        let deadline = self.policy.get_deadline();
        let max_turns = self.policy.get_max_attempts();
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
                        self.programs(),
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
                let within = wait <= self.policy.get_max_server_wait()
                    && left.is_none_or(|left| wait < left);
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
                Some(left) => self.policy.clone().deadline(left),
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
                        return Err(self.cannot_start(&model, &e));
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
                            format!("{} with {model} did not finish", self.name(&model)),
                        ));
                    }
                },
            }
        }
    }

    /// Runs the model's command, retrying transient failures under
    /// `policy`.
    fn turn(
        &self,
        model: &Key,
        policy: &Policy,
    ) -> Result<Turn, Box<backstop_core::RetryError<AttemptError>>> {
        let plan = &self.plans[model];
        let names = Names {
            model: model.model().unwrap_or(model.as_str()),
            provider: model.provider(),
            key: model.as_str(),
        };
        let argv: Vec<OsString> = plan.argv.iter().map(|a| substitute(a, &names)).collect();
        let mut command = Command::new(&argv[0], &argv[1..])
            .env("BACKSTOP_MODEL", names.model)
            .env("BACKSTOP_PROVIDER", names.provider)
            .env("BACKSTOP_KEY", names.key)
            .idle_timeout(self.idle)
            .input(self.input.clone());
        if self.output == OutputArg::Final {
            command = command.hold_stdout(MAX_HELD);
        }
        let name = &plan.name;
        tracing::info!("running {name} with {model}");
        let agent = plan.agent;
        let cancel = &self.cancel;
        let output = &self.held;
        self.runtime
            .block_on(
                policy
                    .retry(|_| attempt(&command, agent, cancel, output, model))
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
            self.name(model),
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
                self.name(model),
                exit.shell_code()
            ),
        );
        if let Some(message) = &failure.message {
            report = report.detail(backstop_core::redact(message, &[]));
        }
        report
    }

    /// The program run for `model`, for messages.
    fn name(&self, model: &Key) -> &str {
        self.plans
            .get(model)
            .map_or("the command", |p| p.name.as_str())
    }

    /// The programs run, for messages about the whole run: "claude", or
    /// "claude, codex".
    fn programs(&self) -> String {
        let mut names: Vec<&str> = self.plans.values().map(|p| p.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        names.join(", ")
    }

    /// The command of `model` could not be started: 127 when it is not
    /// found, 126 when it is there but cannot be run, as a shell says.
    fn cannot_start(&self, model: &Key, e: &std::io::Error) -> Report {
        let name = self.name(model);
        if e.kind() == std::io::ErrorKind::NotFound {
            Report::from_error(NOT_FOUND, e)
                .hint(format!("check that {name} is installed and on PATH"))
        } else {
            Report::new(CANNOT_RUN, format!("{name} cannot be run: {e}")).hint(format!(
                "check that {name} is an executable program (chmod +x)"
            ))
        }
    }

    /// Writes the last attempt's held-back output, if any, to stdout.
    fn write_final_output(&self) {
        let last = self.held.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(last) = last
            && !last.held.streamed()
        {
            // A closed stdout (`| head`) is not our failure.
            let _ = last.held.write_to(&mut std::io::stdout().lock());
        }
    }

    fn deadline_passed(&self, started: Instant) -> Report {
        Report::new(
            exit::TEMPFAIL,
            format!(
                "{}: the deadline passed after {}",
                self.programs(),
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

/// One run of the command, read by `agent`. Its held output, if any,
/// becomes the last attempt's in `output`; the one it replaces is summarised.
async fn attempt(
    command: &Command,
    agent: Agent,
    cancel: &CancellationToken,
    output: &Mutex<Option<LastOutput>>,
    model: &Key,
) -> Result<Turn, AttemptError> {
    let mut transcript = command.run(cancel).await.map_err(AttemptError::Spawn)?;
    if let Some(held) = transcript.held.take() {
        let this = LastOutput {
            model: model.clone(),
            exit: transcript.exit,
            held,
        };
        let earlier = output
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .replace(this);
        if let Some(earlier) = earlier {
            earlier.summarise();
        }
    }
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
    fn reasons() {
        assert_eq!(reason_of(Kind::RateLimit), Reason::RateLimit);
        assert_eq!(reason_of(Kind::Quota), Reason::Quota);
        assert_eq!(reason_of(Kind::Auth), Reason::Auth);
        assert_eq!(reason_of(Kind::Stalled), Reason::Error);
    }
}
