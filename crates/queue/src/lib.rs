//! backstop's fan-out queue.

pub mod model;
pub mod schedule;
pub mod store;

pub use model::{
    Claim, Delivery, DeliveryId, DeliveryState, Invalid, NewOp, Node, NodeSpec, NodeStatus, Op,
    OpId, Outcome, Target, Token,
};
pub use schedule::{Schedule, Settle, Verdict};
pub use store::{SqliteStore, Store, StoreError};
