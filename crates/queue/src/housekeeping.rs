//! Housekeeping: what a coordinator does at start-up, and the services that
//! run on one coordinator of a fleet at a time — the health monitor, the
//! prune, the lease rescue, the release of attempts nobody holds, and
//! retention.
//!
//! Each service is small, does one pass per `tick`, and reads the time from
//! the injected clock, so it is tested on its own. [`Housekeeper`] runs
//! them on the coordinator that holds the store's housekeeping lock
//! ([`Store::lead`]); when that coordinator dies its lock is released and
//! another takes over within a tick. A pass that overlaps the moment the
//! lock moves does no harm: every step is one transaction that another
//! coordinator repeating it finds already done.

use backstop_core::plural;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use backstop_core::HumanDuration;
use backstop_core::clock::Clock;
use tokio_util::sync::CancellationToken;

use crate::blocking::blocking;
use crate::dependencies::Dependencies;
use crate::model::{DeliveryState, Token, transport_name};
use crate::node_health::Monitor;
use crate::store::{DeliveryFilter, Pruned, Rejection, Retained, Store, StoreError};
use crate::transport::local::LocalNode;
use crate::transport::nats::protocol::ACCEPT_TIMEOUT;
use crate::transport::{Holding, Transport};

/// How long finished deliveries are kept by default: 7 days, as River
/// keeps its finished jobs.
pub const DEFAULT_KEEP: Duration = Duration::from_secs(7 * 24 * 3600);

/// How long after its claim an attempt to a remote node must be offered
/// and accepted: a node that does not hold an attempt this old never will.
/// Younger ones may still be on their way from another coordinator.
pub const OFFER_WINDOW: Duration = ACCEPT_TIMEOUT.saturating_add(Duration::from_secs(2));

/// What start-up housekeeping did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StartUp {
    /// Local nodes removed because the configuration no longer has them.
    pub retired: Vec<String>,
    /// Local nodes an operator removed (`backstop nodes remove`), left out
    /// while the configuration declares them as it did then.
    pub removed: Vec<String>,
    /// Deliveries in flight when the previous coordinator stopped that
    /// their nodes do not hold (all of those to its local nodes), returned
    /// to pending.
    pub released: usize,
    /// Deliveries that can never be delivered, removed.
    pub pruned: Pruned,
    /// Whether this coordinator runs housekeeping (it holds the lock).
    pub leader: bool,
}

/// Brings the store in line with this coordinator's configuration, before
/// anything is dispatched: local nodes no longer configured are retired
/// (only by a coordinator that runs local nodes: in a fleet, the others
/// leave them alone), the configured ones registered under `session`, this
/// coordinator process's own. A session other than the one a node had
/// means the process that ran its handlers is gone, so what it had in
/// flight returns to pending, not counted as failures (its handlers died
/// with it, or were stopped by this one before this: [`backstop_process::owner`]);
/// from then on,
/// every attempt in flight to these nodes is this process's. Any failure
/// is returned: a coordinator that cannot do this should not start.
///
/// Returns what it did, with `pruned` and `leader` left for the first
/// housekeeping pass.
pub async fn start_up(
    store: &Arc<dyn Store>,
    clock: &Arc<dyn Clock>,
    local: &[LocalNode],
    session: &str,
) -> Result<StartUp, StoreError> {
    let now = clock.now();
    let mut done = StartUp::default();
    if !local.is_empty() {
        let names: Vec<String> = local.iter().map(|n| n.spec.name.clone()).collect();
        let s = Arc::clone(store);
        done.retired = blocking(move || s.retire(transport_name::LOCAL, &names, now)).await?;
    }
    for name in &done.retired {
        tracing::warn!(
            "local node {name} is no longer in the configuration; its unfinished deliveries are removed"
        );
    }
    for node in local {
        let s = Arc::clone(store);
        let mut spec = node.spec.clone();
        spec.session = session.to_owned();
        let registered = match blocking(move || s.register(&spec, now)).await {
            Ok(registered) => registered,
            Err(StoreError::Rejected(removed @ Rejection::Removed { .. })) => {
                tracing::warn!("{removed}");
                done.removed.push(node.spec.name.clone());
                continue;
            }
            Err(e) => return Err(e),
        };
        let released = usize::try_from(registered.released).unwrap_or(usize::MAX);
        done.released = done.released.saturating_add(released);
    }
    if done.released > 0 {
        tracing::info!(
            "{} in flight on this coordinator's local nodes when its previous process \
             stopped: they run again, not counted as failures",
            plural(done.released as u64, "delivery was", "deliveries were")
        );
    }
    Ok(done)
}

/// Removes the unfinished deliveries that can never be delivered — their
/// node is gone, or no longer handles their kind. Run by the coordinator
/// that takes the housekeeping lock, when it takes it.
pub async fn prune(store: &Arc<dyn Store>, clock: &Arc<dyn Clock>) -> Result<Pruned, StoreError> {
    let s = Arc::clone(store);
    let now = clock.now();
    let pruned = blocking(move || s.prune(now)).await?;
    if pruned != Pruned::default() {
        tracing::warn!(
            "removed {} to nodes that are gone and {} of kinds their node no longer handles",
            plural(pruned.gone_nodes as u64, "delivery", "deliveries"),
            pruned.unhandled_kinds
        );
    }
    Ok(pruned)
}

/// Returns to pending the attempts whose lease ended with no reply: the
/// coordinator that ran them died, or their node went silent. Nothing is
/// counted as a failure. One small service, driven by the injected clock.
pub struct Rescuer {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
}

impl Rescuer {
    /// A rescuer over `store`.
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Self {
        Rescuer { store, clock }
    }

    /// One pass: how many attempts it returned.
    pub async fn tick(&self) -> Result<usize, StoreError> {
        let store = Arc::clone(&self.store);
        let now = self.clock.now();
        let rescued = blocking(move || store.rescue(now)).await?;
        for token in &rescued {
            tracing::warn!(
                "no reply for {token} before its lease ended; it waits for another attempt, not counted as a failure"
            );
        }
        Ok(rescued.len())
    }
}

/// Removes finished history older than the retention time, a batch at a
/// time, so that the hot table stays small (see [`Store::retain`]). One
/// small service, driven by the injected clock.
pub struct Retention {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    keep: Duration,
    batch: u32,
}

impl Retention {
    /// Keeps finished deliveries for `keep`.
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, keep: Duration) -> Self {
        Retention {
            store,
            clock,
            keep,
            batch: 1000,
        }
    }

    /// Removes at most this many deliveries per transaction.
    pub fn batch(mut self, batch: u32) -> Self {
        self.batch = batch.max(1);
        self
    }

    /// One pass: everything past the retention time, in batches.
    pub async fn tick(&self) -> Result<Retained, StoreError> {
        let before = self
            .clock
            .now()
            .checked_sub(self.keep)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let mut total = Retained::default();
        loop {
            let (store, batch) = (Arc::clone(&self.store), self.batch);
            let r = blocking(move || store.retain(before, batch)).await?;
            total.ended += r.ended;
            total.deliveries += r.deliveries;
            total.ops += r.ops;
            if r.deliveries < u64::from(self.batch) {
                break;
            }
        }
        if total != Retained::default() {
            tracing::info!(
                "retention ({} kept): removed {} finished deliveries and {} operations; {} \
                 keyless operations no longer go to nodes that join later",
                HumanDuration(self.keep),
                total.deliveries,
                total.ops,
                total.ended
            );
        }
        Ok(total)
    }
}

/// Asks the remote nodes with attempts in flight which ones they hold,
/// and returns to pending those nobody holds: claimed by a coordinator
/// that died before offering them, or offered to a worker process that is
/// gone (NATS answers that nothing listens for it) or restarted. This, not
/// a late heartbeat, is how the attempts of a worker that died return to
/// pending: a node parked for silence may still run them.
/// Only attempts claimed more than [`OFFER_WINDOW`] ago are judged, since
/// another coordinator may still be offering a younger one. Nodes inside a
/// coordinator are never judged here: their attempts are their
/// coordinator's own until it stops, and the next process of it releases
/// what the last one left ([`start_up`]) — so no pass ever releases an
/// attempt whose handler is about to start. Nodes that cannot be asked
/// keep theirs until their outcomes come or their leases end. One small
/// service, driven by the injected clock.
pub struct Reconciler {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    transports: Vec<Arc<dyn Transport>>,
}

impl Reconciler {
    /// Asks through `transports`.
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        transports: Vec<Arc<dyn Transport>>,
    ) -> Self {
        Reconciler {
            store,
            clock,
            transports,
        }
    }

    /// One pass: how many attempts it returned.
    pub async fn tick(&self) -> Result<usize, StoreError> {
        let s = Arc::clone(&self.store);
        let in_flight = blocking(move || {
            s.deliveries(&DeliveryFilter {
                state: Some(DeliveryState::InFlight),
                limit: u32::MAX,
                ..DeliveryFilter::default()
            })
        })
        .await?;
        if in_flight.is_empty() {
            return Ok(0);
        }
        let s = Arc::clone(&self.store);
        let nodes = blocking(move || s.nodes()).await?;
        let now = self.clock.now();
        let offered_before = now.checked_sub(OFFER_WINDOW).unwrap_or(now);
        let mut by_node: HashMap<String, (Arc<dyn Transport>, Vec<Token>)> = HashMap::new();
        for d in in_flight {
            let Some(transport) = nodes
                .iter()
                .find(|n| n.name == d.node)
                .and_then(|n| self.transports.iter().find(|t| t.name() == n.transport))
            else {
                continue;
            };
            if !transport.outlives_coordinator() || d.updated >= offered_before {
                continue;
            }
            by_node
                .entry(d.node)
                .or_insert_with(|| (Arc::clone(transport), Vec::new()))
                .1
                .push(Token {
                    delivery: d.id,
                    attempt: d.attempt,
                });
        }
        let asked = futures_util::future::join_all(by_node.into_iter().map(
            |(node, (transport, tokens))| async move {
                let held = transport.holding(&node).await;
                (node, tokens, held)
            },
        ))
        .await;
        let mut released = 0;
        for (node, tokens, held) in asked {
            let orphans: Vec<Token> = match held {
                Holding::These(held) => tokens.into_iter().filter(|t| !held.contains(t)).collect(),
                Holding::Nothing => tokens,
                Holding::Unknown => continue,
            };
            if orphans.is_empty() {
                continue;
            }
            let s = Arc::clone(&self.store);
            let now = self.clock.now();
            let why = format!(
                "node {node} does not hold this attempt (its worker process is gone, or the \
                 coordinator that claimed it stopped before offering it); not counted as a failure"
            );
            released += blocking(move || s.release(&orphans, &why, now))
                .await?
                .len();
        }
        if released > 0 {
            tracing::info!(
                "{} in flight but not held by their nodes (a worker process is gone, or a \
                 coordinator stopped before offering them): they run again, not counted as failures",
                plural(released as u64, "delivery was", "deliveries were")
            );
        }
        Ok(released)
    }
}

/// How often each housekeeping service runs.
#[derive(Clone, Debug)]
pub struct Intervals {
    /// Whether this coordinator holds the lock (and takes it when free).
    pub lead: Duration,
    /// The health monitor.
    pub monitor: Duration,
    /// The lease rescue.
    pub rescue: Duration,
    /// The release of attempts nobody holds.
    pub reconcile: Duration,
    /// Retention.
    pub retain: Duration,
}

impl Default for Intervals {
    fn default() -> Self {
        Intervals {
            lead: Duration::from_secs(1),
            monitor: Duration::from_secs(5),
            rescue: Duration::from_secs(10),
            reconcile: Duration::from_secs(3),
            retain: Duration::from_secs(15 * 60),
        }
    }
}

/// Runs the housekeeping services on the one coordinator of a fleet that
/// holds the housekeeping lock: on taking it, the prune and a release of
/// attempts nobody holds; then each service on its own interval. Any
/// coordinator may take the lock when it is free, so housekeeping moves to
/// another when its holder dies.
pub struct Housekeeper {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    status: Arc<Dependencies>,
    monitor: Monitor,
    rescuer: Rescuer,
    reconciler: Reconciler,
    retention: Retention,
    intervals: Intervals,
}

/// What one [`Housekeeper::pass`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pass {
    /// Whether this coordinator holds the housekeeping lock.
    pub leader: bool,
    /// Whether it took the lock in this pass.
    pub took_over: bool,
    /// The prune, when it took the lock.
    pub pruned: Pruned,
    /// Attempts nobody holds, returned to pending.
    pub released: usize,
    /// Nodes parked for silence.
    pub parked: Vec<String>,
    /// Attempts whose lease ended, returned to pending.
    pub rescued: usize,
    /// What retention removed.
    pub retained: Retained,
}

/// When each service last ran, for [`Housekeeper::run`].
#[derive(Default)]
struct Last {
    monitor: Option<tokio::time::Instant>,
    rescue: Option<tokio::time::Instant>,
    reconcile: Option<tokio::time::Instant>,
    retain: Option<tokio::time::Instant>,
}

fn due(last: &mut Option<tokio::time::Instant>, every: Duration) -> bool {
    let now = tokio::time::Instant::now();
    if last.is_some_and(|t| now.duration_since(t) < every) {
        return false;
    }
    *last = Some(now);
    true
}

/// What a [`Housekeeper`] does besides its seams: which transports it
/// asks what their nodes hold, when a node is stale, how long finished
/// deliveries are kept, and how often each service runs.
pub struct HousekeeperConfig {
    /// The transports whose nodes' holdings the release of unheld
    /// attempts asks about.
    pub transports: Vec<Arc<dyn Transport>>,
    /// How long a node may stay silent before the health monitor parks it.
    pub stale_after: Duration,
    /// How long finished deliveries are kept ([`DEFAULT_KEEP`]).
    pub keep: Duration,
    /// How often each service runs.
    pub intervals: Intervals,
}

/// Where this coordinator stands with the housekeeping lock after a
/// [`Housekeeper`] asked for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Lead {
    /// It holds the lock.
    leader: bool,
    /// It took the lock just now (it did not hold it before).
    took_over: bool,
}

impl Housekeeper {
    /// Housekeeping over `store`, reporting in `status`.
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        status: Arc<Dependencies>,
        config: HousekeeperConfig,
    ) -> Self {
        let HousekeeperConfig {
            transports,
            stale_after,
            keep,
            intervals,
        } = config;
        Housekeeper {
            monitor: Monitor::new(Arc::clone(&store), Arc::clone(&clock), stale_after),
            rescuer: Rescuer::new(Arc::clone(&store), Arc::clone(&clock)),
            reconciler: Reconciler::new(Arc::clone(&store), Arc::clone(&clock), transports),
            retention: Retention::new(Arc::clone(&store), Arc::clone(&clock), keep),
            store,
            clock,
            status,
            intervals,
        }
    }

    /// Takes the lock if it is free, or checks this coordinator still
    /// holds it; logs every change.
    async fn lead(&self) -> Lead {
        let was = self.status.is_leader();
        let store = Arc::clone(&self.store);
        let leader = match blocking(move || store.lead()).await {
            Ok(leader) => {
                self.status.store_ok();
                leader
            }
            Err(e) => {
                // Reported here too: with nothing to claim, the dispatcher
                // may not ask the store at all.
                self.status.store_failed(self.clock.now());
                if was {
                    tracing::warn!(
                        "this coordinator lost the housekeeping lock ({}); another takes over",
                        crate::error_chain(&e)
                    );
                }
                false
            }
        };
        self.status.set_leader(leader);
        if leader && !was {
            tracing::info!(
                "this coordinator runs housekeeping (health monitor, prune, lease rescue, retention)"
            );
            // Silence heard by another coordinator, or during our own
            // outage, is not silence this monitor saw.
            self.monitor.restart();
        } else if was && !leader {
            tracing::info!("another coordinator runs housekeeping now");
        }
        Lead {
            leader,
            took_over: leader && !was,
        }
    }

    /// Takes (or keeps) the lock and runs, if it holds it, every service
    /// once — all of them, whatever their intervals. Errors are returned.
    pub async fn pass(&self) -> Result<Pass, StoreError> {
        let Lead { leader, took_over } = self.lead().await;
        let mut pass = Pass {
            leader,
            took_over,
            ..Pass::default()
        };
        if !leader {
            return Ok(pass);
        }
        if took_over {
            pass.pruned = prune(&self.store, &self.clock).await?;
        }
        pass.released = self.reconciler.tick().await?;
        pass.parked = self.monitor_tick().await?;
        pass.rescued = self.rescuer.tick().await?;
        pass.retained = self.retention.tick().await?;
        Ok(pass)
    }

    /// The monitor's pass, unless this coordinator cannot hear heartbeats
    /// now (NATS is down): then nobody's silence counts, until it hears
    /// again for as long as the staleness limit.
    async fn monitor_tick(&self) -> Result<Vec<String>, StoreError> {
        if !self.status.nats_connected() {
            self.monitor.restart();
            return Ok(Vec::new());
        }
        self.monitor.tick().await
    }

    /// Runs until `shutdown`: checks the lock every `lead` interval and,
    /// while it holds it, each service on its own. Errors are reported at
    /// ERROR and the next pass tries again; housekeeping never stops
    /// quietly. On shutdown the lock is let go, so that another
    /// coordinator takes over at once.
    pub async fn run(&self, shutdown: CancellationToken) {
        let mut last = Last::default();
        let i = &self.intervals;
        loop {
            let Lead { leader, took_over } = self.lead().await;
            if took_over {
                last = Last::default();
                report("the prune", prune(&self.store, &self.clock).await);
            }
            if leader {
                if due(&mut last.reconcile, i.reconcile) {
                    report(
                        "the release of unheld attempts",
                        self.reconciler.tick().await,
                    );
                }
                if due(&mut last.monitor, i.monitor) {
                    report("the health monitor", self.monitor_tick().await);
                }
                if due(&mut last.rescue, i.rescue) {
                    report("the lease rescue", self.rescuer.tick().await);
                }
                if due(&mut last.retain, i.retain) {
                    report("retention", self.retention.tick().await);
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(i.lead) => {}
            }
        }
        let store = Arc::clone(&self.store);
        let _ = tokio::task::spawn_blocking(move || store.resign()).await;
        self.status.set_leader(false);
    }
}

fn report<T>(service: &str, result: Result<T, StoreError>) {
    if let Err(e) = result {
        tracing::error!("{service} failed: {}", crate::error_chain(&e));
    }
}
