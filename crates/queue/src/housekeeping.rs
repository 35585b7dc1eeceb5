//! Housekeeping: what a coordinator does at start-up, and the lease rescue
//! that returns attempts nobody answered for.

use std::sync::Arc;
use std::time::Duration;

use backstop_core::clock::Clock;
use tokio_util::sync::CancellationToken;

use std::collections::HashMap;

use crate::dispatch::blocking;
use crate::model::{DeliveryState, Token, transport_name};
use crate::store::{DeliveryFilter, Pruned, Store, StoreError};
use crate::transport::local::LocalNode;
use crate::transport::{Holding, Transport};

/// What start-up housekeeping did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StartUp {
    /// Local nodes removed because the configuration no longer has them.
    pub retired: Vec<String>,
    /// Deliveries in flight when the previous coordinator stopped that
    /// their nodes do not hold, returned to pending.
    pub released: usize,
    /// Deliveries that can never be delivered, removed.
    pub pruned: Pruned,
}

/// Brings the store in line with this coordinator's configuration, before
/// anything is dispatched: local nodes no longer configured are retired,
/// the configured ones registered; attempts a previous coordinator left in
/// flight are returned to pending unless their node says it holds them
/// (handlers inside that coordinator died with it; an offer to a remote
/// node may never have gone out); and deliveries that can never be
/// delivered are pruned under the store's exclusive lock. Any failure is
/// returned: a coordinator that cannot do this should not start.
pub async fn start_up(
    store: &Arc<dyn Store>,
    clock: &Arc<dyn Clock>,
    local: &[LocalNode],
    transports: &[Arc<dyn Transport>],
) -> Result<StartUp, StoreError> {
    let now = clock.now();
    let names: Vec<String> = local.iter().map(|n| n.spec.name.clone()).collect();
    let s = Arc::clone(store);
    let retired = blocking(move || s.retire(transport_name::LOCAL, &names, now)).await?;
    for name in &retired {
        tracing::warn!(
            "local node {name} is no longer in the configuration; its unfinished deliveries are removed"
        );
    }
    for node in local {
        let s = Arc::clone(store);
        let spec = node.spec.clone();
        blocking(move || s.register(&spec, now)).await?;
    }
    let released = reconcile(store, clock, transports).await?;
    if released > 0 {
        tracing::info!(
            "{released} deliveries were in flight when the previous coordinator stopped and \
             their nodes do not hold them; they run again, not counted as failures"
        );
    }
    let s = Arc::clone(store);
    let pruned = blocking(move || s.prune(now)).await?;
    if pruned != Pruned::default() {
        tracing::warn!(
            "removed {} deliveries to nodes that are gone and {} of kinds their node no longer handles",
            pruned.gone_nodes,
            pruned.unhandled_kinds
        );
    }
    Ok(StartUp {
        retired,
        released,
        pruned,
    })
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

    /// Runs a pass every `every` until `shutdown`; errors are logged.
    pub async fn run(&self, every: Duration, shutdown: CancellationToken) {
        repeat("the lease rescue", every, shutdown, || self.tick()).await;
    }
}

/// Runs `pass` every `every` until `shutdown`. A pass that fails is
/// reported at ERROR, with `service` named, and the next one tries again:
/// housekeeping never stops quietly.
pub(crate) async fn repeat<T, F: Future<Output = Result<T, StoreError>>>(
    service: &str,
    every: Duration,
    shutdown: CancellationToken,
    mut pass: impl FnMut() -> F,
) {
    loop {
        if let Err(e) = pass().await {
            tracing::error!("{service} failed: {}", crate::error_chain(&e));
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}

/// Asks each node with attempts in flight which ones it holds, and returns
/// the others to pending. Nodes that cannot be asked keep theirs until
/// their outcomes come or their leases end.
async fn reconcile(
    store: &Arc<dyn Store>,
    clock: &Arc<dyn Clock>,
    transports: &[Arc<dyn Transport>],
) -> Result<usize, StoreError> {
    let s = Arc::clone(store);
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
    let s = Arc::clone(store);
    let nodes = blocking(move || s.nodes()).await?;
    let mut by_node: HashMap<String, Vec<Token>> = HashMap::new();
    for d in in_flight {
        by_node.entry(d.node).or_default().push(Token {
            delivery: d.id,
            attempt: d.attempt,
        });
    }
    let mut released = 0;
    for (node, tokens) in by_node {
        let Some(transport) = nodes
            .iter()
            .find(|n| n.name == node)
            .and_then(|n| transports.iter().find(|t| t.name() == n.transport))
        else {
            continue;
        };
        let orphans: Vec<Token> = match transport.holding(&node).await {
            Holding::These(held) => tokens.into_iter().filter(|t| !held.contains(t)).collect(),
            Holding::Nothing => tokens,
            Holding::Unknown => continue,
        };
        if orphans.is_empty() {
            continue;
        }
        let s = Arc::clone(store);
        let now = clock.now();
        let why = format!(
            "the coordinator stopped while this was in flight and node {node} does not hold it; \
             not counted as a failure"
        );
        released += blocking(move || s.release(&orphans, &why, now))
            .await?
            .len();
    }
    Ok(released)
}
