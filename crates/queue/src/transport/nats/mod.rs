//! Remote workers over NATS core request/reply.
//!
//! Subjects, under a prefix (default `backstop`). What a worker receives is
//! under `PREFIX.node.NAME.>` and what it sends under `PREFIX.from.NAME.>`,
//! so that the NATS server can confine each worker's credentials to its
//! own name; a coordinator takes the name a message came from from its
//! subject and refuses one whose body speaks for another node.
//!
//! - `PREFIX.node.NAME.deliver` — the coordinator offers an attempt
//!   ([`Work`]); the worker answers at once with [`DeliverAck`]: accepted,
//!   or refused (busy, stopping, a kind it does not handle). NATS answers
//!   "no responders" itself when no worker listens: the node is
//!   unreachable and the handler surely did not start.
//! - `PREFIX.from.NAME.results.COORDINATOR` — the worker reports each
//!   outcome ([`ResultMsg`]) to the coordinator that offered the attempt
//!   (named in the [`Offer`]) and repeats it until a coordinator answers
//!   that it is stored; when that coordinator is gone ("no responders"),
//!   to `PREFIX.from.NAME.results`, which any coordinator answers — so an
//!   outcome survives the death of the coordinator that offered it. An
//!   outcome is stored only for an attempt offered to the node it came
//!   from.
//! - `PREFIX.from.NAME.register`, `PREFIX.from.NAME.heartbeat` — a worker
//!   declares itself ([`RegisterMsg`]) and then proves it is alive
//!   ([`HeartbeatMsg`]).
//! - `PREFIX.node.NAME.session.SESSION` — each worker process answers
//!   here, under the random session it registers with, from its start to
//!   its end: how a coordinator tells a live holder of a name from a dead
//!   one.
//! - `PREFIX.node.NAME.holding` — which attempts the worker holds.
//! - `PREFIX.node.NAME.inbox.>` — the answers to the worker's own requests
//!   (its inbox prefix, instead of `_INBOX`).
//!
//! Names are unique. A registration under a name another process holds
//! (another session) is refused with [`NodeAck::taken`] while that process
//! is live: it answers on its session subject, or its node is healthy and
//! it does not answer in time (so it may be). A name whose holder gets "no
//! responders" (its connection is gone), or is silent while its node is
//! not healthy (its heartbeats stopped, it left), is taken over: what the
//! old process had in flight runs again. A name of a node inside a
//! coordinator is never taken by a worker.
//!
//! The coordinators of a fleet share `PREFIX.from.*.results`,
//! `PREFIX.from.*.register` and `PREFIX.from.*.heartbeat` as a queue group:
//! each message is handled by one of them.
//!
//! Offering and reporting are separate so that a handler may run for as
//! long as its timeout allows without a request held open, and so that a
//! reply that comes late is still matched to its attempt by token.
//!
//! [`protocol`] is the wire protocol both sides share: the subjects and
//! the messages; [`connection`] connects to the server (credentials, TLS).
//! [`coordinator`] is the coordinator's side (the
//! [`Transport`](crate::transport::Transport) that offers attempts and
//! serves registrations, heartbeats and outcomes), [`worker`] the remote
//! node's.
//!
//! [`Work`]: crate::handler::Work
//! [`DeliverAck`]: protocol::DeliverAck
//! [`ResultMsg`]: protocol::ResultMsg
//! [`Offer`]: protocol::Offer
//! [`RegisterMsg`]: protocol::RegisterMsg
//! [`HeartbeatMsg`]: protocol::HeartbeatMsg
//! [`NodeAck::taken`]: protocol::NodeAck::taken

pub mod connection;
pub mod coordinator;
pub mod protocol;
pub mod worker;
