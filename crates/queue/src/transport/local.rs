//! Nodes inside the coordinator: each kind a node handles is a
//! [`Handler`] run in this process (a command from `backstop.toml`, or any
//! handler a library user gives).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use super::{Reply, Transport};
use crate::handler::{Handler, Work};
use crate::model::{NodeSpec, Outcome, Token, transport_name};
use backstop_process::Owner;

/// The handlers of one local node.
#[derive(Clone)]
pub struct LocalNode {
    /// The node as it registers.
    pub spec: NodeSpec,
    /// One handler per kind it declares.
    pub handlers: HashMap<String, Arc<dyn Handler>>,
}

impl LocalNode {
    /// A node of `node_type` running `capacity` deliveries at once, with no
    /// handlers yet.
    pub fn new(name: impl Into<String>, node_type: impl Into<String>, capacity: u32) -> Self {
        LocalNode {
            spec: NodeSpec {
                name: name.into(),
                node_type: node_type.into(),
                kinds: Vec::new(),
                capacity,
                transport: transport_name::LOCAL.to_owned(),
                session: "local".to_owned(),
                declaration: None,
            },
            handlers: HashMap::new(),
        }
    }

    /// Who runs the handlers of node `name` on the store at `location`:
    /// the same for every coordinator process that runs it.
    pub fn owner(location: &str, name: &str) -> Owner {
        Owner::new(&["serve", location, name])
    }

    /// Handles `kind` with `handler`.
    pub fn handle(mut self, kind: impl Into<String>, handler: Arc<dyn Handler>) -> Self {
        let kind = kind.into();
        self.spec.kinds.push(kind.clone());
        self.handlers.insert(kind, handler);
        self
    }
}

/// Runs deliveries to local nodes in this process.
///
/// Its handlers stop with the coordinator, so it is never asked what it
/// holds: a coordinator starting up registers its local nodes under a
/// session of its own, which returns to pending whatever they had in
/// flight for the process before it (see [`Store::register`]), and every
/// attempt in flight to them after that is its own.
///
/// [`Store::register`]: crate::Store::register
pub struct LocalTransport {
    nodes: HashMap<String, HashMap<String, Arc<dyn Handler>>>,
    stop: CancellationToken,
    owners: HashMap<String, Owner>,
    /// What stops each attempt running now ([`Transport::stop`]), and
    /// whether it was stopped so.
    running: Mutex<HashMap<Token, (CancellationToken, bool)>>,
}

impl LocalTransport {
    /// A transport for `nodes`; `stop` stops their running handlers
    /// (handing their deliveries back).
    pub fn new(nodes: &[LocalNode], stop: CancellationToken) -> Self {
        LocalTransport {
            nodes: nodes
                .iter()
                .map(|n| (n.spec.name.clone(), n.handlers.clone()))
                .collect(),
            stop,
            owners: HashMap::new(),
            running: Mutex::new(HashMap::new()),
        }
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<Token, (CancellationToken, bool)>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks the handlers of each node as run by this process for the
    /// store at `location` ([`LocalNode::owner`]), so that they die with
    /// it or are stopped by its next process.
    pub fn owned_by(mut self, location: &str) -> Self {
        self.owners = self
            .nodes
            .keys()
            .map(|name| (name.clone(), LocalNode::owner(location, name)))
            .collect();
        self
    }
}

impl Transport for LocalTransport {
    fn name(&self) -> &'static str {
        transport_name::LOCAL
    }

    fn outlives_coordinator(&self) -> bool {
        false
    }

    fn hosts(&self) -> Option<Vec<String>> {
        let mut names: Vec<String> = self.nodes.keys().cloned().collect();
        names.sort();
        Some(names)
    }

    fn deliver<'a>(&'a self, work: &'a Work) -> BoxFuture<'a, Reply> {
        Box::pin(async move {
            let Some(handler) = self.nodes.get(&work.node).and_then(|h| h.get(&work.kind)) else {
                return Reply::new(Outcome::Unreachable(format!(
                    "node {} has no handler for {:?} in this coordinator's configuration",
                    work.node, work.kind
                )));
            };
            let owned;
            let work = match self.owners.get(&work.node) {
                Some(owner) => {
                    owned = Work {
                        owner: Some(owner.clone()),
                        ..work.clone()
                    };
                    &owned
                }
                None => work,
            };
            // Stopped with every handler of this coordinator, or on its own.
            let stop = self.stop.child_token();
            self.running().insert(work.token, (stop.clone(), false));
            let handled = handler.handle(work, &stop).await;
            match self.running().remove(&work.token) {
                Some((_, true)) => Reply::from(handled.stopped_by_cancel()),
                _ => Reply::from(handled),
            }
        })
    }

    fn stop<'a>(&'a self, _node: &'a str, attempts: &'a [Token]) -> BoxFuture<'a, usize> {
        Box::pin(async move {
            let mut running = self.running();
            let mut stopped = 0;
            for token in attempts {
                if let Some((stop, by_cancel)) = running.get_mut(token) {
                    *by_cancel = true;
                    stop.cancel();
                    stopped += 1;
                }
            }
            stopped
        })
    }
}
