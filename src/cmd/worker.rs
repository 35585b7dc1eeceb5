//! `backstop worker`: a remote fan-out node over NATS.

use std::sync::Arc;

use backstop_queue::CommandHandler;
use backstop_queue::transport::nats::protocol::Subjects;
use backstop_queue::transport::nats::worker::{self, WorkerConfig};
use tokio_util::sync::CancellationToken;

use crate::cli::WorkerArgs;
use crate::report::Report;

pub async fn run(args: WorkerArgs) -> Result<(), Report> {
    let subjects = Subjects::new(&args.subject_prefix)?;
    let server = crate::nats::server(&args.nats, &args.nats_auth)?;
    let mut config = WorkerConfig::new(&args.name, &args.node_type);
    for (kind, command) in &args.handlers {
        backstop_queue::program::check_handler(&args.name, kind, command)?;
        config = config.handle(kind, Arc::new(CommandHandler::new(command)));
    }
    config.concurrency = args.concurrency;
    config.heartbeat = args.heartbeat;
    config.grace = args.grace;
    config.spec("check")?;
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        crate::interrupted().await;
        tracing::info!("stopping: no new deliveries; running handlers may finish");
        stop.cancel();
    });
    // Until NATS answers, each failure is logged and tried again.
    let ran = match worker::run(&server, subjects, config, shutdown).await {
        // Decommissioned: stopping is what the operator asked for.
        Err(worker::WorkerError::Removed(why)) => {
            tracing::warn!("{why}");
            Ok(())
        }
        other => other,
    };
    ran.map_err(|e| match e {
        worker::WorkerError::Invalid(e) => Report::from(e),
        removed @ worker::WorkerError::Removed(_) => {
            Report::from_error(crate::report::exit::FAILURE, &removed)
        }
        worker::WorkerError::Nats(e) => Report::from(e),
        taken @ worker::WorkerError::NameTaken(_) => {
            Report::from_error(crate::report::exit::USAGE, &taken)
        }
        denied @ worker::WorkerError::Denied { .. } => {
            Report::from_error(crate::report::exit::FAILURE, &denied).hint(
                "give this worker the credentials of its --name, or the server's \
                     permissions for it (see `backstop worker` in the README)",
            )
        }
    })?;
    Ok(())
}
