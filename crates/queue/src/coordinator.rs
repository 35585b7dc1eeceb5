//! A coordinator: the store, the dispatcher, the health monitor, the lease
//! rescue, the operators' API and, with NATS, the remote workers' side —
//! what `backstop serve` runs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use backstop_core::Secret;
use backstop_core::clock::{Clock, SystemClock};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::{self, ApiState};
use crate::dispatch::{DispatchConfig, Dispatcher};
use crate::health::{DEFAULT_STALE_AFTER, Health, Monitor};
use crate::housekeeping::{self, Rescuer, StartUp};
use crate::schedule::Schedule;
use crate::store::{Store, StoreError};
use crate::transport::Transport;
use crate::transport::local::{LocalNode, LocalTransport};
use crate::transport::nats::{NatsTransport, Subjects};

/// How a coordinator runs.
pub struct CoordinatorConfig {
    /// Where the API listens.
    pub listen: SocketAddr,
    /// The bearer token the API asks for.
    pub token: Secret,
    /// Nodes inside the coordinator.
    pub local: Vec<LocalNode>,
    /// A connected NATS client and its subjects, to serve remote workers.
    pub nats: Option<(async_nats::Client, Subjects)>,
    /// The dispatcher's pacing.
    pub dispatch: DispatchConfig,
    /// Every delivery's retry schedule.
    pub schedule: Schedule,
    /// Silence after which a worker is unhealthy.
    pub stale_after: Duration,
    /// The clock.
    pub clock: Arc<dyn Clock>,
}

impl CoordinatorConfig {
    /// Listens on `listen`, asks for `token`, default pacing and schedule,
    /// no nodes yet.
    pub fn new(listen: SocketAddr, token: Secret) -> Self {
        CoordinatorConfig {
            listen,
            token,
            local: Vec::new(),
            nats: None,
            dispatch: DispatchConfig::default(),
            schedule: Schedule::default(),
            stale_after: DEFAULT_STALE_AFTER,
            clock: Arc::new(SystemClock),
        }
    }
}

/// Why a coordinator could not start.
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    /// Start-up housekeeping failed.
    #[error("start-up housekeeping failed")]
    StartUp(#[source] StoreError),
    /// The API's address cannot be listened on.
    #[error("cannot listen on {addr}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// An empty token would let anyone in.
    #[error("the API token is empty")]
    EmptyToken,
}

/// A running coordinator.
pub struct Coordinator {
    addr: SocketAddr,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    startup: StartUp,
}

impl Coordinator {
    /// Runs start-up housekeeping, then starts every part. Returns once
    /// the API listens.
    pub async fn start(
        store: Arc<dyn Store>,
        config: CoordinatorConfig,
    ) -> Result<Coordinator, CoordinatorError> {
        if config.token.expose().trim().is_empty() {
            return Err(CoordinatorError::EmptyToken);
        }
        let clock = config.clock;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| CoordinatorError::Listen {
                addr: config.listen,
                source,
            })?;
        let addr = listener
            .local_addr()
            .map_err(|source| CoordinatorError::Listen {
                addr: config.listen,
                source,
            })?;
        let shutdown = CancellationToken::new();
        let stop_handlers = CancellationToken::new();
        let mut transports: Vec<Arc<dyn Transport>> = vec![Arc::new(LocalTransport::new(
            &config.local,
            stop_handlers.clone(),
        ))];
        let nats = config
            .nats
            .map(|(client, subjects)| Arc::new(NatsTransport::new(client, subjects)));
        if let Some(nats) = &nats {
            transports.push(Arc::clone(nats) as Arc<dyn Transport>);
        }
        let startup = housekeeping::start_up(&store, &clock, &config.local, &transports)
            .await
            .map_err(CoordinatorError::StartUp)?;
        let dispatcher = Dispatcher::new(
            Arc::clone(&store),
            transports,
            Arc::new(config.schedule),
            Arc::clone(&clock),
            config.dispatch.clone(),
        );
        let mut tasks = Vec::new();
        {
            let (d, s, stop) = (dispatcher.clone(), shutdown.clone(), stop_handlers);
            tasks.push(tokio::spawn(async move {
                let stopping = s.clone();
                // Handlers inside the coordinator are stopped with it; their
                // deliveries are handed back, not failed.
                tokio::spawn(async move {
                    stopping.cancelled().await;
                    stop.cancel();
                });
                d.run(s).await;
            }));
        }
        let every =
            (config.stale_after / 4).clamp(Duration::from_millis(50), Duration::from_secs(5));
        let monitor = Monitor::new(Arc::clone(&store), Arc::clone(&clock), config.stale_after);
        let s = shutdown.clone();
        tasks.push(tokio::spawn(async move { monitor.run(every, s).await }));
        let rescuer = Rescuer::new(Arc::clone(&store), Arc::clone(&clock));
        let s = shutdown.clone();
        let rescue_every = (config.dispatch.lease_grace / 2)
            .clamp(Duration::from_millis(100), Duration::from_secs(10));
        tasks.push(tokio::spawn(
            async move { rescuer.run(rescue_every, s).await },
        ));
        if let Some(nats) = nats {
            let health = Health::new(Arc::clone(&store), Arc::clone(&clock), dispatcher.waker());
            let late = dispatcher.late_sender();
            let s = shutdown.clone();
            tasks.push(tokio::spawn(async move {
                if let Err(e) = nats.serve(health, late, s).await {
                    tracing::error!(
                        "remote workers cannot be served: {}",
                        crate::error_chain(&e)
                    );
                }
            }));
        }
        let state = ApiState::new(
            Arc::clone(&store),
            Arc::clone(&clock),
            dispatcher.waker(),
            &config.token,
        );
        let app = api::router(state);
        let s = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move { s.cancelled().await })
                .await;
            if let Err(e) = served {
                tracing::error!("the API stopped: {e}");
            }
        }));
        Ok(Coordinator {
            addr,
            shutdown,
            tasks,
            startup,
        })
    }

    /// Where the API listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What start-up housekeeping did.
    pub fn startup(&self) -> &StartUp {
        &self.startup
    }

    /// Stops taking work, hands back what local handlers still run, stores
    /// the last outcomes, and returns.
    pub async fn stop(self) {
        self.shutdown.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
    }
}
