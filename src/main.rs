//! The `backstop` command: parses arguments, wires the crates together and
//! reports. Everything else lives in the crates under `crates/`.

mod cli;
mod client;
mod cmd;
mod logging;
mod progress;
mod report;
mod state;
mod table;

use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use cli::{Cli, Command, HubCommand};
use report::{Report, exit};

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.verbose, cli.quiet);
    let state = cli.state.as_deref();
    // The ledger commands run without an async runtime: `pick` is called
    // from scripts in loops, and starts in a few milliseconds.
    let outcome = match cli.command {
        Command::Pick(args) => cmd::pick::run(args, state),
        Command::Cooldown { command } => cmd::cooldown::run(command, state),
        // `run` builds its own runtime: the ledger is read and written
        // between runs of the command, outside of it.
        Command::Run(args) => cmd::run::run(args, state),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "backstop",
                &mut std::io::stdout(),
            );
            Ok(())
        }
        Command::Serve(args) => run_service(|| cmd::serve::run(args, state)),
        Command::Worker(args) => run_service(|| cmd::worker::run(args)),
        command => run_async(command, state, cli.quiet),
    };
    match outcome {
        Ok(()) => ExitCode::from(exit::SUCCESS),
        Err(report) => {
            eprint!("{}", report.render());
            ExitCode::from(report.code)
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, Report> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Report::from_error(exit::FAILURE, &e))
}

/// Runs a long-lived service (`serve`, `worker`), which handles Ctrl-C and
/// SIGTERM itself: it stops cleanly and exits 0.
fn run_service<F: Future<Output = Result<(), Report>>>(
    service: impl FnOnce() -> F,
) -> Result<(), Report> {
    let runtime = runtime()?;
    let outcome = runtime.block_on(service());
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    outcome
}

fn run_async(command: Command, state: Option<&str>, quiet: bool) -> Result<(), Report> {
    let runtime = runtime()?;
    let outcome = runtime.block_on(async {
        // pull and get stop on their own at Ctrl-C, to sync and record
        // their partial files: they must not be dropped mid-write.
        match command {
            Command::Pull(args) => return cmd::pull::run(args, quiet).await,
            Command::Get(args) => return cmd::get::run(args).await,
            _ => {}
        }
        tokio::select! {
            outcome = run(command, state) => outcome,
            () = interrupted() => Err(Report::new(exit::INTERRUPTED, "interrupted")
                .hint("nothing was left half-written; run the same command again to retry")),
        }
    });
    // Stalled connections must not hold the exit.
    runtime.shutdown_background();
    outcome
}

async fn run(command: Command, state: Option<&str>) -> Result<(), Report> {
    match command {
        Command::Hub {
            command: HubCommand::Search(args),
        } => cmd::hub::search(args).await,
        Command::Demo => cmd::demo::run().await,
        Command::Ops { command } => cmd::ops::ops(command, state).await,
        Command::Nodes { command } => cmd::ops::nodes(command, state).await,
        Command::Pick(_)
        | Command::Cooldown { .. }
        | Command::Run(_)
        | Command::Completions { .. }
        | Command::Serve(_)
        | Command::Worker(_)
        | Command::Pull(_)
        | Command::Get(_) => {
            unreachable!("main and run_async run these themselves")
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM. Dropping the running command there stops
/// its retries at once and deletes any temporary file it was writing.
pub(crate) async fn interrupted() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    () = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => ctrl_c.await,
        }
    }
    #[cfg(not(unix))]
    ctrl_c.await;
}
