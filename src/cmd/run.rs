//! `backstop run`: a command run with the first available model, falling
//! back to the next when the model or its provider cannot serve. The rules
//! live in [`backstop_agent::fallback`]; this parses, wires and reports.

use std::ffi::OsString;
use std::io::IsTerminal;
use std::path::Path;
use std::time::SystemTime;

use backstop_agent::fallback::{Fallback, Model, Processes, RunError};
use backstop_agent::template::{self, Commands, CommandsError, Names, substitute};
use backstop_agent::{Agent, Command, Input, MAX_HELD, Replay};
use backstop_core::Policy;
use backstop_ledger::{Entry, Key};
use tokio_util::sync::CancellationToken;

use crate::cli::{OutputArg, RunArgs};
use crate::report::{Report, exit};

pub fn run(args: RunArgs, state: Option<&str>) -> Result<(), Report> {
    let mut keys: Vec<Key> = Vec::new();
    for key in args.models {
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    // Everything is checked before the ledger is opened or anything runs.
    let commands = models_file(args.models_file.as_deref())?;
    let plans = plan(&keys, &commands, &args.command, args.agent.map(Agent::from))?;
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
    let mut processes = Processes::new();
    let mut models = Vec::with_capacity(plans.len());
    for (key, plan) in plans {
        let names = Names {
            model: key.model().unwrap_or(key.as_str()),
            provider: key.provider(),
            key: key.as_str(),
        };
        let argv: Vec<OsString> = plan.argv.iter().map(|a| substitute(a, &names)).collect();
        let mut command = Command::new(&argv[0], &argv[1..])
            .env("BACKSTOP_MODEL", names.model)
            .env("BACKSTOP_PROVIDER", names.provider)
            .env("BACKSTOP_KEY", names.key)
            .idle_timeout(idle)
            .input(input.clone());
        if output == OutputArg::Final {
            command = command.hold_stdout(MAX_HELD);
        }
        processes.insert(key.clone(), command);
        models.push(Model {
            key,
            agent: plan.agent,
            program: plan.program,
        });
    }
    let fallback = Fallback::new(&ledger, models, processes)
        .policy(policy)
        .cancel_on(cancel);
    let outcome = runtime.block_on(fallback.run());
    if let Some(last) = outcome.output
        && !last.held.streamed()
    {
        // A closed stdout (`| head`) is not our failure.
        let _ = last.held.write_to(&mut std::io::stdout().lock());
    }
    // A command that ignored every signal must not hold our exit.
    runtime.shutdown_background();
    outcome.result.map(|_| ()).map_err(report)
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
    program: String,
}

/// The command of each model — its own or its provider's from the models
/// file, else the command line's — with every placeholder checked.
fn plan(
    models: &[Key],
    commands: &Commands,
    command_line: &[OsString],
    agent: Option<Agent>,
) -> Result<Vec<(Key, Plan)>, Report> {
    for arg in command_line {
        template::check(arg).map_err(|e| Report::from_error(exit::USAGE, &e))?;
    }
    let mut plans = Vec::with_capacity(models.len());
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
        let program = argv[0].to_string_lossy().into_owned();
        plans.push((
            model.clone(),
            Plan {
                argv,
                agent,
                program,
            },
        ));
    }
    Ok(plans)
}

/// How a run that did not succeed is told.
fn report(e: RunError) -> Report {
    let code = e.exit_code();
    match e {
        RunError::Exhausted { .. } => Report::new(code, e.to_string())
            .hint("see `backstop cooldown list` for why, and when each frees up"),
        RunError::NoneAvailable {
            ref blocked, now, ..
        } => none_available(Report::new(code, e.to_string()), blocked, now),
        RunError::Interrupted => Report::new(code, "interrupted")
            .hint("the command was stopped; run the same backstop run again to start over"),
        RunError::CannotStart {
            ref program,
            ref source,
            ..
        } if source.kind() == std::io::ErrorKind::NotFound => Report::from_error(code, source)
            .hint(format!("check that {program} is installed and on PATH")),
        RunError::CannotStart { ref program, .. } => {
            let hint = format!("check that {program} is an executable program (chmod +x)");
            Report::new(code, e.to_string()).hint(hint)
        }
        RunError::Failed { ref message, .. } => {
            let detail = message.as_deref().map(|m| backstop_core::redact(m, &[]));
            let report = Report::new(code, e.to_string());
            match detail {
                Some(detail) => report.detail(detail),
                None => report,
            }
        }
        RunError::Ledger(e) => e.into(),
        RunError::NoModel | RunError::DeadlinePassed { .. } | RunError::Unfinished { .. } => {
            Report::new(code, e.to_string())
        }
    }
}

fn none_available(mut report: Report, blocked: &[(Key, Entry)], now: SystemTime) -> Report {
    for (model, entry) in blocked {
        report = report.detail(crate::cmd::pick::blocked_line(model, entry, now));
    }
    report.hint("raise --max-wait to wait for it, or add models to --models")
}
