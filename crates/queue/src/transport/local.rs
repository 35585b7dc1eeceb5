//! Nodes inside the coordinator: each kind a node handles is a
//! [`Handler`] run in this process (a command from `backstop.toml`, or any
//! handler a library user gives).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use super::{Holding, Reply, Transport};
use crate::handler::{Handler, Work};
use crate::model::{NodeSpec, Outcome, Token, transport_name};

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
            },
            handlers: HashMap::new(),
        }
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
pub struct LocalTransport {
    nodes: HashMap<String, HashMap<String, Arc<dyn Handler>>>,
    stop: CancellationToken,
    running: Mutex<HashSet<(String, Token)>>,
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
            running: Mutex::new(HashSet::new()),
        }
    }
}

impl LocalTransport {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<(String, Token)>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
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
            let entry = (work.node.clone(), work.token);
            self.lock().insert(entry.clone());
            let outcome = handler.handle(work, &self.stop).await;
            self.lock().remove(&entry);
            Reply::new(outcome)
        })
    }

    fn holding<'a>(&'a self, node: &'a str) -> BoxFuture<'a, Holding> {
        Box::pin(async move {
            if !self.nodes.contains_key(node) {
                // Another coordinator's node: only it can say.
                return Holding::Unknown;
            }
            let tokens = self
                .lock()
                .iter()
                .filter(|(n, _)| n == node)
                .map(|(_, t)| *t)
                .collect();
            Holding::These(tokens)
        })
    }
}
