//! How the coordinator reaches a node: a small trait, with nodes inside
//! the coordinator ([`local`]) and remote workers over NATS ([`nats`]).

pub mod local;
pub mod nats;

use futures_util::future::BoxFuture;
use tokio::sync::oneshot;

use crate::handler::Work;
use crate::model::{Outcome, Token};

/// Delivers attempts to nodes.
///
/// `deliver` returns once the outcome is known or the transport stops
/// waiting ([`Outcome::TimedOut`]); it never panics and never returns an
/// error of its own: a node that cannot be reached is
/// [`Outcome::Unreachable`] — and only when the handler surely did not
/// start.
pub trait Transport: Send + Sync {
    /// The name nodes of this transport are registered with.
    fn name(&self) -> &'static str;

    /// Delivers one attempt to `work.node` and waits for its outcome.
    fn deliver<'a>(&'a self, work: &'a Work) -> BoxFuture<'a, Reply>;
}

/// What a transport reports for one attempt.
#[derive(Debug)]
pub struct Reply {
    /// The outcome.
    pub outcome: Outcome,
    /// Confirmed once the outcome is stored, so that a remote node can let
    /// go of it only then.
    pub receipt: Option<Receipt>,
}

impl Reply {
    /// An outcome nobody waits to hear is stored.
    pub fn new(outcome: Outcome) -> Self {
        Reply {
            outcome,
            receipt: None,
        }
    }
}

/// Fired when an outcome is stored; dropping it unfired tells the sender it
/// was not.
#[derive(Debug)]
pub struct Receipt(pub(crate) oneshot::Sender<()>);

impl Receipt {
    /// A receipt and the receiver that learns when it is confirmed.
    pub fn new() -> (Receipt, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        (Receipt(tx), rx)
    }

    /// The outcome is stored.
    pub fn confirm(self) {
        let _ = self.0.send(());
    }
}

/// An outcome that arrived when nobody was waiting for it (after the
/// attempt timed out, or from before a coordinator restart). The
/// dispatcher settles it if its token is still current.
#[derive(Debug)]
pub struct LateReply {
    /// The attempt.
    pub token: Token,
    /// What it came to.
    pub outcome: Outcome,
    /// Confirmed once stored (or found stale).
    pub receipt: Option<Receipt>,
}
