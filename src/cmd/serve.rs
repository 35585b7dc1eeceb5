//! `backstop serve`: the fan-out coordinator.

use std::path::PathBuf;
use std::sync::Arc;

use backstop_core::StateLocation;
use backstop_queue::listener::ApiTls;
use backstop_queue::transport::nats::protocol::Subjects;
use backstop_queue::{Config, Coordinator, CoordinatorConfig, DispatchConfig, Schedule};
use tokio_util::sync::CancellationToken;

use crate::cli::ServeArgs;
use crate::report::Report;

pub async fn run(args: ServeArgs, state: Option<&str>) -> Result<(), Report> {
    let config_path = args.config.clone().or_else(|| {
        let default = PathBuf::from("backstop.toml");
        default.exists().then_some(default)
    });
    let config = match &config_path {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    config.check_handlers()?;
    let local = config.local_nodes()?;
    let subjects = Subjects::new(&args.subject_prefix)?;
    let nats = match &args.nats {
        Some(url) => Some(crate::nats::server(url, &args.nats_auth)?),
        None => None,
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(
            ApiTls::from_pem_files(cert, key)
                .map_err(|e| Report::from_error(crate::report::exit::USAGE, &e))?,
        ),
        _ => None,
    };
    if local.is_empty() && args.nats.is_none() {
        tracing::warn!(
            "no local nodes (no backstop.toml here, and no --config) and no --nats: \
             operations can be submitted only once nodes exist"
        );
    }
    let queue = crate::state::queue(state)?;
    // A SQLite file can be used or not, and waiting changes nothing: it is
    // opened now. A database server may not answer yet: the coordinator
    // waits for it.
    let opened = match &queue {
        StateLocation::Sqlite(_) => Some(backstop_queue::store::open(&queue).map(Arc::from)?),
        StateLocation::Postgres(_) => None,
    };
    let (token, token_from) = crate::state::serve_token(state)?;
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        crate::interrupted().await;
        stop.cancel();
    });
    let nats_url = nats.as_ref().map(|server| server.url());
    let nats = match nats {
        Some(server) => {
            let connection = server.connect("backstop serve").await?;
            Some((connection.into_client(), subjects))
        }
        None => None,
    };
    let mut coordinator = CoordinatorConfig::new(args.listen, token);
    coordinator.tls = tls;
    coordinator.metrics_listen = args.metrics_listen;
    coordinator.local = local;
    coordinator.nats = nats;
    coordinator.stale_after = args.stale_after;
    coordinator.keep = args.keep;
    coordinator.schedule = Schedule::default()
        .base(args.base_delay)
        .cap(args.max_delay)
        .max_failures(args.max_failures);
    coordinator.kinds = config.kinds.clone();
    coordinator.dispatch = DispatchConfig {
        handler_timeout: args.handler_timeout,
        lease_grace: args.lease_grace,
        output_tail: args.output_tail,
        ..DispatchConfig::default()
    };
    let local_names: Vec<String> = coordinator
        .local
        .iter()
        .map(|n| n.spec.name.clone())
        .collect();
    // Until the store answers, the API's address answers /healthz
    // "degraded"; the PostgreSQL client blocks, so it is opened off the
    // async threads.
    let opened = std::sync::Mutex::new(opened);
    let open = move || {
        let ready = opened.lock().unwrap_or_else(|p| p.into_inner()).take();
        match ready {
            Some(store) => Ok(store),
            None => backstop_queue::store::open(&queue).map(Arc::from),
        }
    };
    let Some(running) = Coordinator::start_when_ready(open, coordinator, &shutdown).await? else {
        tracing::info!("stopped before the queue's store answered");
        return Ok(());
    };
    let location = running.location();
    tracing::info!(
        "serving the fan-out API on {} (token from {token_from}); queue at {location}; \
         local nodes: {}{}{}",
        running.url(),
        if local_names.is_empty() {
            "none".to_owned()
        } else {
            local_names.join(", ")
        },
        match &nats_url {
            Some(url) => format!("; remote workers on {url} under {}", args.subject_prefix),
            None => String::new(),
        },
        match running.metrics_addr() {
            Some(addr) => format!("; metrics on http://{addr}/metrics"),
            None => String::new(),
        }
    );
    shutdown.cancelled().await;
    tracing::info!("stopping: no new deliveries; running local handlers are handed back");
    running.stop().await;
    Ok(())
}
