//! A coordinator: the store, the dispatcher, housekeeping (the health
//! monitor, the prune, the lease rescue, retention — on one coordinator of
//! a fleet at a time), the operators' API and, with NATS, the remote
//! workers' side — what `backstop serve` runs. Several coordinators can
//! share one PostgreSQL store; each keeps running, and says so on
//! `/healthz`, while it cannot reach the store or NATS.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use backstop_core::Secret;
use backstop_core::clock::{Clock, SystemClock};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::{self, ApiState};
use crate::dispatch::{DispatchConfig, Dispatcher};
use crate::health::{DEFAULT_STALE_AFTER, Health};
use crate::housekeeping::{self, DEFAULT_KEEP, Housekeeper, Intervals, StartUp};
use crate::owner::{self, Owner};
use crate::schedule::Schedule;
use crate::status::Status;
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
    /// How long finished deliveries are kept.
    pub keep: Duration,
    /// How often each housekeeping service runs.
    pub housekeeping: Intervals,
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
            keep: DEFAULT_KEEP,
            housekeeping: Intervals::default(),
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
    status: Arc<Status>,
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
        let location = store.location();
        let mut transports: Vec<Arc<dyn Transport>> = vec![Arc::new(
            LocalTransport::new(&config.local, stop_handlers.clone()).owned_by(&location),
        )];
        let nats_client = config.nats.as_ref().map(|(client, _)| client.clone());
        let nats = config
            .nats
            .map(|(client, subjects)| Arc::new(NatsTransport::new(client, subjects)));
        if let Some(nats) = &nats {
            transports.push(Arc::clone(nats) as Arc<dyn Transport>);
        }
        // Handlers a previous process of this coordinator left running go
        // before their deliveries are released to run again.
        let owners: Vec<Owner> = config
            .local
            .iter()
            .map(|n| LocalNode::owner(&location, &n.spec.name))
            .collect();
        owner::stop_previous(owners).await;
        // This process, as the session of its local nodes.
        let session = format!("local-{:016x}", fastrand::u64(..));
        let mut startup = housekeeping::start_up(&store, &clock, &config.local, &session)
            .await
            .map_err(CoordinatorError::StartUp)?;
        let status = Arc::new(Status::new(nats_client));
        let mut intervals = config.housekeeping.clone();
        intervals.monitor = intervals
            .monitor
            .min((config.stale_after / 4).max(Duration::from_millis(50)));
        intervals.rescue = intervals
            .rescue
            .min((config.dispatch.lease_grace / 2).max(Duration::from_millis(100)));
        let housekeeper = Housekeeper::new(
            Arc::clone(&store),
            Arc::clone(&clock),
            Arc::clone(&status),
            transports.clone(),
            config.stale_after,
            config.keep,
            intervals,
        );
        // The first pass before anything is dispatched: a coordinator that
        // takes the lock prunes and releases what nobody holds first, and
        // one that cannot do it should not start.
        let first = housekeeper
            .pass()
            .await
            .map_err(CoordinatorError::StartUp)?;
        startup.released += first.released;
        startup.pruned = first.pruned;
        startup.leader = first.leader;
        let dispatcher = Dispatcher::reporting(
            Arc::clone(&store),
            transports,
            Arc::new(config.schedule),
            Arc::clone(&clock),
            config.dispatch.clone(),
            Arc::clone(&status),
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
        let s = shutdown.clone();
        tasks.push(tokio::spawn(async move { housekeeper.run(s).await }));
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
        )
        .reporting(Arc::clone(&status));
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
            status,
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

    /// What it knows of its store and NATS now.
    pub fn status(&self) -> crate::status::Report {
        self.status.report()
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
