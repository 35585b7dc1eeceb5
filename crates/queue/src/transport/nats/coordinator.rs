//! The coordinator's side of remote workers over NATS: offers attempts to
//! workers and serves their registrations, heartbeats and outcomes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::client::RequestErrorKind;
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use serde::Serialize;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::dispatch::LateSender;
use crate::handler::Work;
use crate::model::{NodeSpec, NodeStatus, Outcome, Token, transport_name};
use crate::node_health::Health;
use crate::store::{Heartbeat, Rejection, StoreError};
use crate::transport::{Holding, LateReply, Receipt, Reply, Transport};

use super::protocol::{
    ACCEPT_TIMEOUT, ANY_NODE, COORDINATORS, DeliverAck, HeartbeatMsg, HoldingMsg, LIVE_PROBE,
    NatsError, NodeAck, Offer, REPLY_MARGIN, RESULT_WAIT, Refusal, RegisterMsg, ResultAck,
    ResultMsg, StopMsg, Subjects,
};

/// An attempt offered and not yet answered: the node it was offered to,
/// and where its outcome goes (with its receipt).
struct Waiter {
    node: String,
    outcome: oneshot::Sender<(Reply, Receipt)>,
}

type Waiters = Arc<Mutex<HashMap<Token, Waiter>>>;

/// The coordinator's side: offers attempts to workers and serves their
/// registrations, heartbeats and outcomes.
pub struct NatsTransport {
    client: async_nats::Client,
    subjects: Subjects,
    waiting: Waiters,
    /// This coordinator, for outcomes of the attempts it offers.
    id: String,
}

impl NatsTransport {
    /// A transport on a connected `client`.
    pub fn new(client: async_nats::Client, subjects: Subjects) -> Self {
        NatsTransport {
            client,
            subjects,
            waiting: Arc::new(Mutex::new(HashMap::new())),
            id: format!("{:016x}", fastrand::u64(..)),
        }
    }

    fn waiters(&self) -> std::sync::MutexGuard<'_, HashMap<Token, Waiter>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Serves registrations, heartbeats and outcomes until `shutdown`.
    /// Outcomes nobody waits for go to `late`.
    pub async fn serve(
        &self,
        health: Health,
        late: LateSender,
        shutdown: CancellationToken,
    ) -> Result<(), NatsError> {
        let subscribe = |subject: String, shared: bool| {
            let client = self.client.clone();
            async move {
                let subscribed = if shared {
                    client
                        .queue_subscribe(subject.clone(), COORDINATORS.to_owned())
                        .await
                } else {
                    client.subscribe(subject.clone()).await
                };
                subscribed.map_err(|source| NatsError::Subscribe { subject, source })
            }
        };
        let mut registrations = subscribe(self.subjects.register(ANY_NODE), true).await?;
        let mut heartbeats = subscribe(self.subjects.heartbeat(ANY_NODE), true).await?;
        let mut results = futures_util::stream::select(
            subscribe(self.subjects.results(ANY_NODE), true).await?,
            subscribe(self.subjects.results_for(ANY_NODE, &self.id), false).await?,
        );
        let tasks = tokio_util::task::TaskTracker::new();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                Some(msg) = registrations.next() => {
                    let (client, health) = (self.client.clone(), health.clone());
                    let subjects = self.subjects.clone();
                    tasks.spawn(async move { on_register(client, subjects, health, msg).await });
                }
                Some(msg) = heartbeats.next() => {
                    let (client, health) = (self.client.clone(), health.clone());
                    let subjects = self.subjects.clone();
                    tasks.spawn(async move { on_heartbeat(client, subjects, health, msg).await });
                }
                Some(msg) = results.next() => {
                    let client = self.client.clone();
                    let subjects = self.subjects.clone();
                    let waiting = Arc::clone(&self.waiting);
                    let late = late.clone();
                    tasks.spawn(async move {
                        on_result(client, subjects, waiting, late, msg).await
                    });
                }
                else => break,
            }
        }
        tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), tasks.wait()).await;
        Ok(())
    }
}

fn refusal(node: &str, ack: &DeliverAck) -> Outcome {
    let reason = ack.reason.clone().unwrap_or_default();
    match ack.refused {
        Some(Refusal::Busy) => Outcome::Released(format!("node {node} is busy: {reason}")),
        Some(Refusal::Stopping) => {
            Outcome::Released(format!("node {node} is shutting down: {reason}"))
        }
        Some(Refusal::Unhandled) | Some(Refusal::Unreadable) | None => {
            Outcome::Failed(format!("node {node} refused the attempt: {reason}"))
        }
    }
}

impl Transport for NatsTransport {
    fn name(&self) -> &'static str {
        transport_name::NATS
    }

    fn available(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    fn holding<'a>(&'a self, node: &'a str) -> BoxFuture<'a, Holding> {
        Box::pin(async move {
            let request = async_nats::Request::new()
                .payload(Bytes::from_static(b"{}"))
                .timeout(Some(Duration::from_secs(2)));
            match self
                .client
                .send_request(self.subjects.holding(node), request)
                .await
            {
                Ok(msg) => match serde_json::from_slice::<HoldingMsg>(&msg.payload) {
                    Ok(h) => Holding::These(h.tokens),
                    Err(_) => Holding::Unknown,
                },
                Err(e) if matches!(e.kind(), RequestErrorKind::NoResponders) => Holding::Nothing,
                Err(_) => Holding::Unknown,
            }
        })
    }

    fn stop<'a>(&'a self, node: &'a str, attempts: &'a [Token]) -> BoxFuture<'a, usize> {
        Box::pin(async move {
            let msg = StopMsg {
                tokens: attempts.to_vec(),
            };
            let Ok(body) = serde_json::to_vec(&msg) else {
                return 0;
            };
            match self
                .client
                .publish(self.subjects.stop(node), Bytes::from(body))
                .await
            {
                Ok(()) => attempts.len(),
                Err(e) => {
                    tracing::warn!("could not tell node {node} to stop its attempts: {e}");
                    0
                }
            }
        })
    }

    fn deliver<'a>(&'a self, work: &'a Work) -> BoxFuture<'a, Reply> {
        Box::pin(async move {
            if self.client.connection_state() != async_nats::connection::State::Connected {
                return Reply::new(Outcome::Released(
                    "the coordinator is not connected to NATS right now; not counted as a failure"
                        .to_owned(),
                ));
            }
            let offer = Offer {
                work: work.clone(),
                report_to: Some(self.subjects.results_for(&work.node, &self.id)),
            };
            let body = match serde_json::to_vec(&offer) {
                Ok(body) => Bytes::from(body),
                Err(e) => {
                    return Reply::new(Outcome::Failed(format!("cannot encode the attempt: {e}")));
                }
            };
            // Waiting before offering: the outcome of a quick handler may
            // arrive before the acceptance does.
            let (tx, rx) = oneshot::channel();
            self.waiters().insert(
                work.token,
                Waiter {
                    node: work.node.clone(),
                    outcome: tx,
                },
            );
            let subject = self.subjects.deliver(&work.node);
            let request = async_nats::Request::new()
                .payload(body)
                .timeout(Some(ACCEPT_TIMEOUT));
            let refused = match self.client.send_request(subject.clone(), request).await {
                Ok(msg) => match serde_json::from_slice::<DeliverAck>(&msg.payload) {
                    Ok(ack) if ack.accepted => None,
                    Ok(ack) => Some(refusal(&work.node, &ack)),
                    Err(e) => Some(Outcome::Failed(format!(
                        "node {} answered the offer with something unreadable: {e}",
                        work.node
                    ))),
                },
                Err(e) => Some(match e.kind() {
                    RequestErrorKind::NoResponders => Outcome::Unreachable(format!(
                        "no worker listens on {subject} (no responders)"
                    )),
                    RequestErrorKind::TimedOut => Outcome::Unreachable(format!(
                        "node {} did not answer the offer within {}",
                        work.node,
                        backstop_core::HumanDuration(ACCEPT_TIMEOUT)
                    )),
                    _ => Outcome::Released(format!(
                        "the offer to node {} could not be sent ({e}); not counted as a failure",
                        work.node
                    )),
                }),
            };
            if let Some(outcome) = refused {
                self.waiters().remove(&work.token);
                return Reply::new(outcome);
            }
            let wait = Duration::from_millis(work.timeout_ms).saturating_add(REPLY_MARGIN);
            match tokio::time::timeout(wait, rx).await {
                Ok(Ok((reply, receipt))) => Reply {
                    receipt: Some(receipt),
                    ..reply
                },
                _ => {
                    self.waiters().remove(&work.token);
                    Reply::new(Outcome::TimedOut)
                }
            }
        })
    }
}

async fn answer<T: Serialize>(client: &async_nats::Client, msg: &async_nats::Message, body: &T) {
    let Some(reply) = msg.reply.clone() else {
        return;
    };
    if let Ok(bytes) = serde_json::to_vec(body) {
        let _ = client.publish(reply, Bytes::from(bytes)).await;
    }
}

fn refused(error: String) -> NodeAck {
    NodeAck {
        ok: false,
        register: false,
        taken: false,
        removed: false,
        error: Some(error),
    }
}

fn accepted(register: bool) -> NodeAck {
    NodeAck {
        ok: !register,
        register,
        taken: false,
        removed: false,
        error: None,
    }
}

/// Why `spec` may not have its name: another process that is live holds
/// it. `None` when it may (a new name, the same process, or a holder that
/// is gone).
async fn holder_of(
    client: &async_nats::Client,
    subjects: &Subjects,
    health: &Health,
    spec: &NodeSpec,
) -> Result<Option<String>, crate::store::StoreError> {
    let Some(node) = health.node(&spec.name).await? else {
        return Ok(None);
    };
    if node.transport == transport_name::LOCAL {
        return Ok(Some(format!(
            "node {} runs inside a coordinator (backstop.toml); a worker cannot take its name",
            node.name
        )));
    }
    if node.session == spec.session {
        return Ok(None);
    }
    let request = async_nats::Request::new()
        .payload(Bytes::from_static(b"{}"))
        .timeout(Some(LIVE_PROBE));
    let probe = client
        .send_request(subjects.session(&node.name, &node.session), request)
        .await;
    let how = match probe {
        Ok(_) => "it answers on NATS".to_owned(),
        // Its connection is gone.
        Err(e) if matches!(e.kind(), RequestErrorKind::NoResponders) => return Ok(None),
        // Silent, and its heartbeats stopped (or it left).
        Err(_) if node.status != NodeStatus::Healthy => return Ok(None),
        Err(_) => format!(
            "it is healthy and did not answer within {}",
            backstop_core::HumanDuration(LIVE_PROBE)
        ),
    };
    let beat = node
        .last_heartbeat
        .and_then(|t| health.now().duration_since(t).ok())
        .map(|ago| {
            format!(
                "; its last heartbeat was {} ago",
                backstop_core::HumanDuration(ago)
            )
        })
        .unwrap_or_default();
    Ok(Some(format!(
        "node name {} is held by another live worker process ({how}{beat}); stop that worker, \
         or pick another --name",
        node.name
    )))
}

/// Why a message that names `node` in its body may not be heeded: it came
/// on the subjects of another node (or of none), which the server lets
/// its sender use. `None` when it came from `node` itself.
fn impostor(subjects: &Subjects, msg: &async_nats::Message, node: &str) -> Option<String> {
    let sender = subjects.sender(msg.subject.as_str());
    if sender == Some(node) {
        return None;
    }
    let why = format!(
        "a message for node {node} arrived on {}, a subject of {}; ignored",
        msg.subject,
        sender.map_or_else(|| "no node".to_owned(), |s| format!("node {s}"))
    );
    tracing::warn!("{why}");
    Some(why)
}

async fn on_register(
    client: async_nats::Client,
    subjects: Subjects,
    health: Health,
    msg: async_nats::Message,
) {
    let ack = match serde_json::from_slice::<RegisterMsg>(&msg.payload) {
        Err(e) => refused(format!("unreadable registration: {e}")),
        Ok(r) if impostor(&subjects, &msg, &r.name).is_some() => refused(format!(
            "node {} registers on its own subjects only",
            r.name
        )),
        Ok(r) => {
            let spec = NodeSpec {
                name: r.name,
                node_type: r.node_type,
                kinds: r.kinds,
                capacity: r.capacity,
                transport: transport_name::NATS.to_owned(),
                session: r.session,
                declaration: None,
            };
            match spec.validate() {
                Err(e) => refused(e.to_string()),
                Ok(spec) => match holder_of(&client, &subjects, &health, &spec).await {
                    Ok(Some(taken)) => {
                        tracing::warn!("refused a worker's registration: {taken}");
                        NodeAck {
                            taken: true,
                            ..refused(taken)
                        }
                    }
                    Ok(None) => match health.register(spec).await {
                        Ok(_) => accepted(false),
                        Err(StoreError::Rejected(removed @ Rejection::Removed { .. })) => {
                            tracing::info!("refused a worker's registration: {removed}");
                            NodeAck {
                                removed: true,
                                ..refused(removed.to_string())
                            }
                        }
                        Err(e) => {
                            tracing::error!("cannot register a node: {}", crate::error_chain(&e));
                            refused("the coordinator cannot store the registration now".to_owned())
                        }
                    },
                    Err(e) => {
                        tracing::error!("cannot register a node: {}", crate::error_chain(&e));
                        refused("the coordinator cannot read its nodes now".to_owned())
                    }
                },
            }
        }
    };
    answer(&client, &msg, &ack).await;
}

async fn on_heartbeat(
    client: async_nats::Client,
    subjects: Subjects,
    health: Health,
    msg: async_nats::Message,
) {
    let ack = match serde_json::from_slice::<HeartbeatMsg>(&msg.payload) {
        Err(e) => refused(format!("unreadable heartbeat: {e}")),
        Ok(h) if impostor(&subjects, &msg, &h.name).is_some() => refused(format!(
            "node {} sends heartbeats on its own subjects only",
            h.name
        )),
        Ok(h) => match health.heartbeat(&h.name, &h.session, h.leaving).await {
            Ok(Heartbeat::Unknown) => accepted(true),
            Ok(_) => accepted(false),
            Err(e) => {
                tracing::error!("cannot record a heartbeat: {}", crate::error_chain(&e));
                refused("the coordinator cannot store the heartbeat now".to_owned())
            }
        },
    };
    answer(&client, &msg, &ack).await;
}

async fn on_result(
    client: async_nats::Client,
    subjects: Subjects,
    waiting: Waiters,
    late: LateSender,
    msg: async_nats::Message,
) {
    // Stored is a lie only in the sense that nothing can be done with an
    // outcome that cannot be read or that speaks for another node: asking
    // again would bring the same bytes.
    let result = match serde_json::from_slice::<ResultMsg>(&msg.payload) {
        Ok(r) if impostor(&subjects, &msg, &r.node).is_some() => {
            answer(&client, &msg, &ResultAck { stored: true }).await;
            return;
        }
        Ok(r) => r,
        Err(e) => {
            tracing::warn!("an unreadable outcome arrived on NATS ({e}); ignored");
            answer(&client, &msg, &ResultAck { stored: true }).await;
            return;
        }
    };
    let (receipt, stored) = Receipt::new();
    let waiter = {
        let mut waiting = waiting.lock().unwrap_or_else(|p| p.into_inner());
        match waiting.get(&result.token) {
            Some(w) if w.node != result.node => Err(w.node.clone()),
            Some(_) => Ok(waiting.remove(&result.token)),
            None => Ok(None),
        }
    };
    match waiter {
        Err(offered_to) => {
            tracing::warn!(
                "node {} reported an outcome for {}, which was offered to node {offered_to}; \
                 ignored",
                result.node,
                result.token,
            );
            answer(&client, &msg, &ResultAck { stored: true }).await;
            return;
        }
        Ok(Some(w)) => {
            let reply = Reply {
                outcome: result.outcome,
                output: result.output,
                receipt: None,
            };
            if let Err((reply, receipt)) = w.outcome.send((reply, receipt)) {
                late.send(LateReply {
                    token: result.token,
                    node: result.node,
                    outcome: reply.outcome,
                    output: reply.output,
                    receipt: Some(receipt),
                });
            }
        }
        Ok(None) => late.send(LateReply {
            token: result.token,
            node: result.node,
            outcome: result.outcome,
            output: result.output,
            receipt: Some(receipt),
        }),
    }
    let stored = matches!(tokio::time::timeout(RESULT_WAIT, stored).await, Ok(Ok(())));
    answer(&client, &msg, &ResultAck { stored }).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_spend_attempts_only_when_the_node_cannot_ever_run_it() {
        let ack = |r| DeliverAck {
            accepted: false,
            refused: Some(r),
            reason: Some("x".into()),
        };
        assert!(matches!(
            refusal("n", &ack(Refusal::Busy)),
            Outcome::Released(_)
        ));
        assert!(matches!(
            refusal("n", &ack(Refusal::Stopping)),
            Outcome::Released(_)
        ));
        assert!(matches!(
            refusal("n", &ack(Refusal::Unhandled)),
            Outcome::Failed(_)
        ));
    }
}
