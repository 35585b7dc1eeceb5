//! The `backstop` command: parses arguments, wires the crates together and
//! reports. Everything else lives in the crates under `crates/`.

mod cli;
mod client;
mod client_config;
mod cmd;
mod logging;
mod nats;
mod progress;
mod report;
mod results;
mod state;
mod table;

use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use cli::{Cli, Command};
use report::{Report, exit};

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.verbose, cli.quiet);
    let state = cli.state.as_deref();
    client::share_host_cooldowns(state, !cli.no_shared_cooldown);
    let outcome = match cli.command {
        // The ledger commands run without an async runtime: `pick` is
        // called from scripts in loops, and starts in a few milliseconds.
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
        Command::Serve(args) => run_service(cmd::serve::run(args, state)),
        Command::Worker(args) => run_service(cmd::worker::run(args)),
        // pull and get stop on their own at Ctrl-C, to sync and record
        // their partial files: they must not be dropped mid-write.
        Command::Pull(args) => run_async(cmd::pull::run(args, cli.quiet)),
        // push stops on its own between chunks, to record its sessions.
        Command::Push(args) => run_async(cmd::push::run(*args, state, cli.quiet)),
        Command::Login(args) => run_interruptible(cmd::login::login(args)),
        Command::Logout(args) => cmd::login::logout(args),
        Command::Get(args) => run_async(cmd::get::run(args)),
        // A GET without a body is get's download; any other request is
        // dropped at Ctrl-C, its answer never half-written.
        Command::Request(args) if args.send.is_plain_get() => run_async(cmd::request::run(*args)),
        Command::Request(args) => run_interruptible(cmd::request::run(*args)),
        Command::Hub { command } => run_interruptible(cmd::hub::run(command)),
        Command::Demo => run_interruptible(cmd::demo::run()),
        Command::Ops { command } => run_interruptible(cmd::ops::ops(command, state)),
        Command::Nodes { command } => run_interruptible(cmd::ops::nodes(command, state)),
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
fn run_service(service: impl Future<Output = Result<(), Report>>) -> Result<(), Report> {
    let runtime = runtime()?;
    let outcome = runtime.block_on(service);
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    outcome
}

/// Runs a command that handles Ctrl-C and SIGTERM itself.
fn run_async(command: impl Future<Output = Result<(), Report>>) -> Result<(), Report> {
    let runtime = runtime()?;
    let outcome = runtime.block_on(command);
    // Stalled connections must not hold the exit.
    runtime.shutdown_background();
    outcome
}

/// Runs a command that is dropped at Ctrl-C or SIGTERM, which stops its
/// retries at once and deletes any temporary file it was writing.
fn run_interruptible(command: impl Future<Output = Result<(), Report>>) -> Result<(), Report> {
    run_async(async {
        tokio::select! {
            outcome = command => outcome,
            () = interrupted() => Err(Report::new(exit::INTERRUPTED, "interrupted")
                .hint("nothing was left half-written; run the same command again to retry")),
        }
    })
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
