//! backstop's fan-out queue: delivers operations to every node that should
//! get them, retries each delivery on its own schedule, waits out unhealthy
//! nodes without spending attempts, and dead-letters visibly.
//!
//! - [`model`]: nodes, operations, one delivery per (operation, node), and
//!   the attempt [`Token`] that keeps a late reply from overwriting a newer
//!   attempt.
//! - Desired state, not an op log: a newer operation with the same key
//!   supersedes the undelivered ones, and a node never starts it while it
//!   still runs an older one with the key — install-then-delete never runs
//!   backwards.
//! - [`Schedule`]: exponential backoff with full jitter per delivery, a
//!   dead-letter cap on handler failures (default 10), each overridden by
//!   an operation's own [`Settings`]. Failing to reach a node spends
//!   nothing and parks the node until a heartbeat.
//! - Operators cancel operations ([`Store::cancel`]) and remove nodes
//!   ([`Store::remove_node`]); each attempt worth it is kept with the end
//!   of its handler's output ([`Output`], [`Store::attempts`]).
//! - [`store`]: the [`Store`] trait, its SQLite implementation for one
//!   machine and its PostgreSQL implementation for a fleet with several
//!   coordinators.
//! - [`dispatch`], [`node_health`], [`housekeeping`]: the coordinator's services,
//!   each small and driven by an injectable clock; housekeeping runs on one
//!   coordinator at a time. [`dependencies`]: what a coordinator knows of its own
//!   store and NATS, for `/healthz`.
//! - [`handler`]: what runs a delivery; a [`CommandHandler`] runs under
//!   [`backstop_process`], so its processes die with the coordinator or
//!   worker that started them, or are stopped by its next process before
//!   their deliveries are offered again — a delivery never runs twice at
//!   once.
//! - [`transport`]: nodes inside the coordinator and remote workers over
//!   NATS; [`transport::nats::worker`] is the remote side, [`api`] the operators' HTTP API
//!   (over HTTPS with [`listener`]; its OpenAPI document: [`openapi`]; its
//!   `/metrics`: [`metrics`]), [`ui`] the operators' web dashboard beside
//!   it, [`coordinator`] wires it all. [`program`] checks at start-up that each
//!   handler's program can be started.
//!
//! ```
//! use std::time::SystemTime;
//! use backstop_queue::{NewOp, NodeSpec, SqliteStore, Store};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let store = SqliteStore::open(dir.path().join("backstop.db")).unwrap();
//! let node = NodeSpec {
//!     name: "gpu-1".into(),
//!     node_type: "gpu".into(),
//!     kinds: vec!["install".into()],
//!     capacity: 2,
//!     transport: "local".into(),
//!     session: "local".into(),
//!     declaration: None,
//! };
//! store.register(&node, SystemTime::now()).unwrap();
//! let op = NewOp::for_type("install", "gpu").key("llama-cpp");
//! let submitted = store.submit(&op, SystemTime::now()).unwrap();
//! assert_eq!(submitted.deliveries, 1);
//! ```

#![forbid(unsafe_code)]

pub mod api;
mod blocking;
pub mod config;
pub mod coordinator;
pub mod dependencies;
pub mod dispatch;
pub mod handler;
pub mod housekeeping;
pub mod listener;
pub mod metrics;
pub mod model;
pub mod node_health;
pub mod openapi;
pub mod program;
pub mod schedule;
pub mod store;
pub mod transport;
pub mod ui;

pub use config::Config;
pub use coordinator::{Coordinator, CoordinatorConfig, CoordinatorError};
pub use dispatch::{DispatchConfig, Dispatcher};
pub use handler::{CommandHandler, Handled, Handler, Output, Work};
pub use model::{
    Attempt, Cancellation, Claim, Delivery, DeliveryId, DeliveryState, Hold, Invalid, NewOp, Node,
    NodeSpec, NodeStatus, Op, OpId, Outcome, Settings, Target, Token,
};
pub use schedule::{Decision, Schedule, Settle};
pub use store::{PostgresStore, SqliteStore, Store, StoreError};

/// An error and its sources on one line: "a: b: c".
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.ends_with(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}
