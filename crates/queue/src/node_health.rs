//! Node health: registrations, heartbeats, and the monitor that parks
//! nodes whose heartbeats stopped.
//!
//! A node is healthy while its heartbeats arrive. When they stop for
//! longer than the staleness limit it becomes unhealthy: nothing new is
//! claimed for it. What it runs stays in flight, since silence does not
//! prove a handler stopped (a loaded machine answers late): its outcome is
//! stored when it comes, and an attempt runs again only once the node's
//! process is known gone — it registers anew, or says (or NATS says for
//! it) that it does not hold the attempt — or the attempt's lease ends. A
//! node a delivery could not reach is unreachable (see the dispatcher).
//! Either way its deliveries wait, and the next heartbeat over the same
//! transport makes it healthy again.

use backstop_core::plural;
use std::sync::Arc;
use std::time::Duration;

use backstop_core::HumanDuration;
use backstop_core::clock::Clock;
use tokio::sync::Notify;

use crate::blocking::blocking;
use crate::model::{Node, NodeSpec, NodeStatus};
use crate::store::{Heartbeat, Registered, Store, StoreError};

/// How often workers send heartbeats by default.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(5);
/// How long without a heartbeat makes a node unhealthy by default: six
/// missed heartbeats, so one slow network moment parks nothing.
pub const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(30);

/// Records what nodes say about themselves, and logs every change of
/// health once.
#[derive(Clone)]
pub struct Health {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    wake: Arc<Notify>,
}

impl Health {
    /// Health records in `store`; `wake` is told when a node can take work
    /// again.
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, wake: Arc<Notify>) -> Self {
        Health { store, clock, wake }
    }

    /// Registers a node (see [`Store::register`]) and logs what it brought.
    pub async fn register(&self, spec: NodeSpec) -> Result<Registered, StoreError> {
        let store = Arc::clone(&self.store);
        let now = self.clock.now();
        let name = spec.name.clone();
        let kinds = spec.kinds.join(", ");
        let done = blocking(move || store.register(&spec, now)).await?;
        tracing::info!(
            "node {name} registered (handles {kinds}); {} for it",
            plural(done.delivered as u64, "new delivery", "new deliveries")
        );
        if done.released > 0 {
            tracing::info!(
                "node {name} restarted: {} it was running get another attempt, none counted as failed",
                plural(done.released as u64, "delivery", "deliveries")
            );
        }
        if done.removed > 0 {
            tracing::warn!(
                "node {name} no longer handles some kinds: removed {} of its unfinished deliveries",
                done.removed
            );
        }
        self.wake.notify_one();
        Ok(done)
    }

    /// Now, by its clock.
    pub fn now(&self) -> std::time::SystemTime {
        self.clock.now()
    }

    /// The node named `name`, if there is one.
    pub async fn node(&self, name: &str) -> Result<Option<Node>, StoreError> {
        let store = Arc::clone(&self.store);
        let nodes = blocking(move || store.nodes()).await?;
        Ok(nodes.into_iter().find(|n| n.name == name))
    }

    /// Records a heartbeat; a node that comes back is logged and the
    /// dispatcher woken.
    pub async fn heartbeat(
        &self,
        name: &str,
        session: &str,
        leaving: bool,
    ) -> Result<Heartbeat, StoreError> {
        let store = Arc::clone(&self.store);
        let now = self.clock.now();
        let (n, s) = (name.to_owned(), session.to_owned());
        let beat = blocking(move || store.heartbeat(&n, &s, leaving, now)).await?;
        if let Heartbeat::Recovered(was) = beat {
            tracing::info!("node {name} is back (it was {was}); its deliveries resume");
            self.wake.notify_one();
        }
        if leaving && beat != Heartbeat::Unknown {
            tracing::info!("node {name} is shutting down; its deliveries wait for it");
        }
        Ok(beat)
    }
}

/// Parks nodes whose heartbeats stopped. One small service, driven by the
/// injected clock: [`Monitor::tick`] does one pass.
///
/// A node is judged only on the silence this monitor has seen: for the
/// first `stale_after` after it starts (or [`Monitor::restart`]s: its
/// coordinator takes over housekeeping, or could not hear for a while),
/// nothing is parked, so a coordinator coming back after an outage does not
/// park every worker whose heartbeats went unanswered while it was away.
pub struct Monitor {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    stale_after: Duration,
    started: std::sync::Mutex<std::time::SystemTime>,
}

impl Monitor {
    /// A monitor marking nodes silent for `stale_after` unhealthy.
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, stale_after: Duration) -> Self {
        let started = std::sync::Mutex::new(clock.now());
        Monitor {
            store,
            clock,
            stale_after,
            started,
        }
    }

    /// Judges only silence from now on.
    pub fn restart(&self) {
        *self.started.lock().unwrap_or_else(|p| p.into_inner()) = self.clock.now();
    }

    /// One pass: returns the nodes it parked. A pass the store does not
    /// answer restarts the monitor: heartbeats were not recorded meanwhile.
    pub async fn tick(&self) -> Result<Vec<String>, StoreError> {
        let now = self.clock.now();
        let started = *self.started.lock().unwrap_or_else(|p| p.into_inner());
        let judged_from = started.checked_add(self.stale_after);
        if judged_from.is_none_or(|t| now < t) {
            return Ok(Vec::new());
        }
        let store = Arc::clone(&self.store);
        let before = now.checked_sub(self.stale_after).unwrap_or(now);
        let parked = blocking(move || store.mark_stale(before, now))
            .await
            .inspect_err(|_| self.restart())?;
        for name in &parked {
            tracing::warn!(
                "node {name} sent no heartbeat for {}: {}; its deliveries wait for it without \
                 spending attempts, and what it runs stays its own",
                HumanDuration(self.stale_after),
                NodeStatus::Unhealthy
            );
        }
        Ok(parked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SqliteStore;
    use crate::model::transport_name;
    use backstop_core::clock::ManualClock;
    use std::time::UNIX_EPOCH;

    #[tokio::test]
    async fn silence_parks_a_node_but_only_silence_the_monitor_saw() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open(dir.path().join("q.db")).unwrap_or_else(|e| panic!("{e}")));
        let clock = Arc::new(ManualClock::new(
            UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        ));
        let spec = NodeSpec {
            name: "gpu-1".into(),
            node_type: "gpu".into(),
            kinds: vec!["install".into()],
            capacity: 1,
            transport: transport_name::NATS.into(),
            session: "s".into(),
            declaration: None,
        };
        store
            .register(&spec, clock.now())
            .unwrap_or_else(|e| panic!("{e}"));
        // The coordinator was away for a minute.
        clock.advance(Duration::from_secs(60));
        let monitor = Monitor::new(Arc::clone(&store), clock.clone(), Duration::from_secs(30));
        assert!(
            monitor.tick().await.unwrap_or_default().is_empty(),
            "not judged on the outage"
        );
        let health = Health::new(Arc::clone(&store), clock.clone(), Arc::new(Notify::new()));
        clock.advance(Duration::from_secs(10));
        assert_eq!(
            health.heartbeat("gpu-1", "s", false).await.ok(),
            Some(Heartbeat::Recorded)
        );
        clock.advance(Duration::from_secs(29));
        assert!(
            monitor.tick().await.unwrap_or_default().is_empty(),
            "29 s of silence"
        );
        clock.advance(Duration::from_secs(2));
        assert_eq!(monitor.tick().await.unwrap_or_default(), ["gpu-1"]);
        assert_eq!(
            health.heartbeat("gpu-1", "s", false).await.ok(),
            Some(Heartbeat::Recovered(NodeStatus::Unhealthy))
        );
    }
}
