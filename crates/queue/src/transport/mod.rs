//! How the coordinator reaches a node: a small trait, with nodes inside
//! the coordinator ([`local`]) and remote workers over NATS ([`nats`]).

pub mod local;
pub mod nats;

use futures_util::future::BoxFuture;
use tokio::sync::oneshot;

use crate::handler::{Handled, Output, Work};
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

    /// Whether it can deliver now. Nothing is claimed for its nodes while
    /// it cannot (NATS is disconnected), so no delivery churns through
    /// attempts that could not even be offered.
    fn available(&self) -> bool {
        true
    }

    /// The nodes it reaches, when that is a fixed set of its own (the nodes
    /// inside this coordinator; other coordinators of a fleet run theirs);
    /// `None` for every node registered with it.
    fn hosts(&self) -> Option<Vec<String>> {
        None
    }

    /// Whether an attempt goes on when the coordinator stops (a remote
    /// node, which reports its outcome to the next coordinator), so that a
    /// stopping coordinator lets go instead of waiting for it. Handlers
    /// inside the coordinator stop with it and hand their deliveries back.
    fn outlives_coordinator(&self) -> bool {
        true
    }

    /// The attempts `node` holds: running, or finished with an outcome not
    /// yet stored. Asked by housekeeping about attempts a coordinator that
    /// stopped left in flight; only transports whose nodes outlive their
    /// coordinator are asked, and the others answer [`Holding::Unknown`].
    fn holding<'a>(&'a self, _node: &'a str) -> BoxFuture<'a, Holding> {
        Box::pin(async { Holding::Unknown })
    }

    /// Tells `node` to stop these attempts' handlers (an operator cancelled
    /// their operation with `--stop-running`): a handler stopped ends with
    /// [`Outcome::Released`], as at a shutdown, and its outcome comes back
    /// as any other. Attempts the transport does not run, or no longer
    /// runs, are left alone; no answer is awaited. Returns how many it
    /// asked to stop (those it knows it does not run are not counted).
    fn stop<'a>(&'a self, _node: &'a str, _attempts: &'a [Token]) -> BoxFuture<'a, usize> {
        Box::pin(async { 0 })
    }
}

/// What a node says it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Holding {
    /// These attempts; any other in flight to it will never be answered.
    These(Vec<Token>),
    /// Nothing answers for the node: it holds nothing.
    Nothing,
    /// It could not be asked (it did not answer in time): wait for its
    /// outcomes, or for the leases to end.
    Unknown,
}

/// What a transport reports for one attempt.
#[derive(Debug)]
pub struct Reply {
    /// The outcome.
    pub outcome: Outcome,
    /// What the handler printed, as the node sent it (the coordinator
    /// bounds it again: [`Output::bounded`]).
    pub output: Output,
    /// Confirmed once the outcome is stored, so that a remote node can let
    /// go of it only then.
    pub receipt: Option<Receipt>,
}

impl Reply {
    /// An outcome nobody waits to hear is stored, with no output.
    pub fn new(outcome: Outcome) -> Self {
        Reply {
            outcome,
            output: Output::default(),
            receipt: None,
        }
    }
}

impl From<Handled> for Reply {
    fn from(handled: Handled) -> Self {
        Reply {
            outcome: handled.outcome,
            output: handled.output,
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
    /// The node that sent it: an outcome for a delivery to another node is
    /// ignored.
    pub node: String,
    /// What it came to.
    pub outcome: Outcome,
    /// What the handler printed.
    pub output: Output,
    /// Confirmed once stored (or found stale).
    pub receipt: Option<Receipt>,
}
