//! A coordinator: the store, the dispatcher, housekeeping (the health
//! monitor, the prune, the lease rescue, retention — on one coordinator of
//! a fleet at a time), the operators' API and, with NATS, the remote
//! workers' side — what `backstop serve` runs. Several coordinators can
//! share one PostgreSQL store; each keeps running, and says so on
//! `/healthz`, while it cannot reach the store or NATS.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use backstop_core::clock::{Clock, SystemClock};
use backstop_core::{Policy, Secret};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::{self, ApiState};
use crate::dependencies::Dependencies;
use crate::dispatch::{DispatchConfig, Dispatcher};
use crate::housekeeping::{self, DEFAULT_KEEP, Housekeeper, HousekeeperConfig, Intervals, StartUp};
use crate::listener::{self, ApiTls};
use crate::node_health::{DEFAULT_STALE_AFTER, Health};
use crate::schedule::Schedule;
use crate::store::{Store, StoreError};
use crate::transport::Transport;
use crate::transport::local::{LocalNode, LocalTransport};
use crate::transport::nats::coordinator::NatsTransport;
use crate::transport::nats::protocol::Subjects;
use crate::ui;
use backstop_process::owner::{self, Owner};

/// How a coordinator runs.
pub struct CoordinatorConfig {
    /// Where the API listens.
    pub listen: SocketAddr,
    /// Its certificate and key, to serve it over HTTPS; plain HTTP
    /// without.
    pub tls: Option<ApiTls>,
    /// The bearer token the API asks for.
    pub token: Secret,
    /// Also serve `GET /metrics` here, over plain HTTP and without the
    /// token (for a Prometheus on a private network).
    pub metrics_listen: Option<SocketAddr>,
    /// Nodes inside the coordinator.
    pub local: Vec<LocalNode>,
    /// A connected NATS client and its subjects, to serve remote workers.
    pub nats: Option<(async_nats::Client, Subjects)>,
    /// The dispatcher's pacing.
    pub dispatch: DispatchConfig,
    /// Every delivery's retry schedule.
    pub schedule: Schedule,
    /// How the operations of each kind run, where it differs from the
    /// defaults (`[kinds.KIND]` of `backstop.toml`): given to each
    /// operation of the kind submitted through this coordinator's API.
    pub kinds: std::collections::BTreeMap<String, crate::model::Settings>,
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
            tls: None,
            token,
            metrics_listen: None,
            local: Vec::new(),
            nats: None,
            dispatch: DispatchConfig::default(),
            schedule: Schedule::default(),
            kinds: std::collections::BTreeMap::new(),
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
    /// Another coordinator process on this machine runs handlers of these
    /// local nodes: two would run their deliveries at once.
    #[error(
        "another coordinator process (pid {pid}) on this machine runs handlers of these local \
         nodes on this store"
    )]
    Running {
        /// Its process id.
        pid: u32,
    },
    /// The store cannot be opened, and waiting will not help.
    #[error("cannot start without the queue's store")]
    Open(#[source] StoreError),
    /// An empty token would let anyone in.
    #[error("the API token is empty")]
    EmptyToken,
}

/// How [`Coordinator::start_when_ready`] waits for its store: from 250 ms
/// doubling to 10 s between tries, full jitter, for as long as it takes.
pub fn startup_retry() -> Policy {
    Policy::api()
        .with_initial_delay(Duration::from_millis(250))
        .with_max_delay(Duration::from_secs(10))
}

/// What answers on the API's address while the store does not: `/healthz`
/// from `status`, 503 for the rest, with a `Retry-After` that tells a
/// client the request was not acted on (so that even a POST may be sent
/// again).
fn waiting_router(status: Arc<Dependencies>) -> axum::Router {
    let healthz = move || {
        let status = Arc::clone(&status);
        async move { axum::Json(status.report()) }
    };
    axum::Router::new()
        .route("/healthz", axum::routing::get(healthz))
        .fallback(|| async {
            let error = "the coordinator is waiting for its store; see GET /healthz";
            (
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                [(axum::http::header::RETRY_AFTER, "1")],
                axum::Json(serde_json::json!({ "error": error })),
            )
        })
}

fn api_url(addr: SocketAddr, https: bool) -> String {
    format!("{}://{addr}", if https { "https" } else { "http" })
}

async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, CoordinatorError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| CoordinatorError::Listen { addr, source })
}

/// A running coordinator.
pub struct Coordinator {
    addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    https: bool,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    startup: StartUp,
    status: Arc<Dependencies>,
    location: String,
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
        let listener = bind(config.listen).await?;
        Coordinator::start_on(listener, store, config).await
    }

    /// [`Coordinator::start`] for a store that may not answer yet (a
    /// PostgreSQL server still starting, or away): the API's address is
    /// listened on first, and `GET /healthz` answers `degraded` with the
    /// store `unreachable` (every other route 503) while `open` fails with
    /// a temporary error ([`StoreError::is_temporary`]). Each failure is
    /// logged, and `open` tried again after a backoff with full jitter
    /// ([`startup_retry`]), until it succeeds — then the coordinator
    /// starts on the same socket — or `shutdown` fires: `Ok(None)`. Any
    /// other error of `open` (a location of the wrong shape, refused
    /// credentials) is returned at once.
    pub async fn start_when_ready(
        open: impl Fn() -> Result<Arc<dyn Store>, StoreError> + Send + Sync + 'static,
        config: CoordinatorConfig,
        shutdown: &CancellationToken,
    ) -> Result<Option<Coordinator>, CoordinatorError> {
        if config.token.expose().trim().is_empty() {
            return Err(CoordinatorError::EmptyToken);
        }
        let listen = config.listen;
        let listen_error = |source| CoordinatorError::Listen {
            addr: listen,
            source,
        };
        let listener = bind(listen).await?;
        let addr = listener.local_addr().map_err(listen_error)?;
        // Two handles on one socket: connections wait in its backlog while
        // the one that answers meanwhile hands over to the coordinator.
        let socket = listener.into_std().map_err(listen_error)?;
        let kept = socket.try_clone().map_err(listen_error)?;
        let meanwhile = tokio::net::TcpListener::from_std(socket).map_err(listen_error)?;
        let status = Arc::new(Dependencies::new(
            config.nats.as_ref().map(|(client, _)| client.clone()),
        ));
        let ready = CancellationToken::new();
        let answering = tokio::spawn(listener::serve(
            meanwhile,
            config.tls.clone(),
            waiting_router(Arc::clone(&status)),
            ready.clone().cancelled_owned(),
        ));
        let url = api_url(addr, config.tls.is_some());
        let open = Arc::new(open);
        let policy = startup_retry();
        let mut rng = fastrand::Rng::new();
        let mut retry = 0;
        let opened = loop {
            let attempt = Arc::clone(&open);
            let result = match tokio::task::spawn_blocking(move || attempt()).await {
                Ok(result) => result,
                Err(e) => Err(StoreError::Failed {
                    component: "queue",
                    location: "the queue".to_owned(),
                    source: Box::new(e),
                }),
            };
            match result {
                Ok(store) => break Ok(Some(store)),
                Err(e) if e.is_temporary() => {
                    status.store_failed(config.clock.now());
                    let wait = policy.delay_after(retry, &mut rng);
                    retry = retry.saturating_add(1);
                    tracing::warn!(
                        "{}; trying again in {} (GET /healthz on {url} answers degraded \
                         meanwhile)",
                        crate::error_chain(&e),
                        backstop_core::HumanDuration(wait)
                    );
                    tokio::select! {
                        () = shutdown.cancelled() => break Ok(None),
                        () = tokio::time::sleep(wait) => {}
                    }
                }
                Err(e) => break Err(CoordinatorError::Open(e)),
            }
        };
        ready.cancel();
        let _ = answering.await;
        let Some(store) = opened? else {
            return Ok(None);
        };
        if retry > 0 {
            tracing::info!("the queue's store answers: {}", store.location());
        }
        let listener = tokio::net::TcpListener::from_std(kept).map_err(listen_error)?;
        Coordinator::start_on(listener, store, config)
            .await
            .map(Some)
    }

    /// Starts every part on a bound `listener`.
    async fn start_on(
        listener: tokio::net::TcpListener,
        store: Arc<dyn Store>,
        config: CoordinatorConfig,
    ) -> Result<Coordinator, CoordinatorError> {
        let clock = config.clock;
        let addr = listener
            .local_addr()
            .map_err(|source| CoordinatorError::Listen {
                addr: config.listen,
                source,
            })?;
        // Its address is taken before anything starts, so that a busy one
        // stops nothing half-started.
        let metrics = match config.metrics_listen {
            Some(addr) => {
                let listener = bind(addr).await?;
                let local = listener
                    .local_addr()
                    .map_err(|source| CoordinatorError::Listen { addr, source })?;
                Some((listener, local))
            }
            None => None,
        };
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
        let leftovers = owner::stop_previous(owners).await;
        if let Some(&pid) = leftovers.live_owners.first() {
            return Err(CoordinatorError::Running { pid });
        }
        // This process, as the session of its local nodes.
        let session = format!("local-{:016x}", fastrand::u64(..));
        let mut startup = housekeeping::start_up(&store, &clock, &config.local, &session)
            .await
            .map_err(CoordinatorError::StartUp)?;
        let status = Arc::new(Dependencies::new(nats_client));
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
            HousekeeperConfig {
                transports: transports.clone(),
                stale_after: config.stale_after,
                keep: config.keep,
                intervals,
            },
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
            dispatcher.clone(),
            &config.token,
        )
        .reporting(Arc::clone(&status))
        .kinds(config.kinds);
        let mut metrics_addr = None;
        if let Some((listener, addr)) = metrics {
            metrics_addr = Some(addr);
            let app = api::metrics_router(state.clone());
            let s = shutdown.clone();
            tasks.push(tokio::spawn(async move {
                let served = listener::serve(listener, None, app, s.cancelled_owned()).await;
                if let Err(e) = served {
                    tracing::error!("the metrics address stopped: {e}");
                }
            }));
        }
        let tls = config.tls;
        let https = tls.is_some();
        let app = api::router(state.clone()).merge(ui::router(ui::UiState::new(state, https)));
        let s = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            let served = listener::serve(listener, tls, app, s.cancelled_owned()).await;
            if let Err(e) = served {
                tracing::error!("the API stopped: {e}");
            }
        }));
        Ok(Coordinator {
            addr,
            metrics_addr,
            https,
            shutdown,
            tasks,
            startup,
            status,
            location,
        })
    }

    /// Where the API listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where `GET /metrics` is served without the token
    /// ([`CoordinatorConfig::metrics_listen`]), if anywhere.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The API's URL: `https://ADDR` when served over TLS, else
    /// `http://ADDR`.
    pub fn url(&self) -> String {
        api_url(self.addr, self.https)
    }

    /// Where its store is, for messages; never a password.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// What start-up housekeeping did.
    pub fn startup(&self) -> &StartUp {
        &self.startup
    }

    /// What it knows of its store and NATS now.
    pub fn status(&self) -> crate::dependencies::Report {
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
