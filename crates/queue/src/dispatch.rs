//! The dispatcher: claims due deliveries, runs each on its own task through
//! its node's transport, and stores the outcomes in batches.
//!
//! Deliveries to different nodes run in parallel; the store bounds how many
//! run on one node at once (its capacity), so one slow handler holds only
//! its own slot and never blocks the rest. Outcomes are written in batches
//! (one transaction for everything that finished meanwhile), which keeps
//! the store's commits far below the delivery rate.
//!
//! A store that cannot be reached is the coordinator's trouble, never the
//! delivery's: nothing is claimed while it is down, and the outcomes not
//! yet stored are kept and stored when it answers again — none is turned
//! into a failure, none is dropped (outcomes from remote workers are not
//! confirmed until stored, so the worker keeps them too).

use backstop_core::plural;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use backstop_core::clock::Clock;
use backstop_core::{HumanDuration, Policy};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::blocking::blocking;
use crate::dependencies::Dependencies;
use crate::handler::{DEFAULT_OUTPUT_TAIL, Handled, Output, Work};
use crate::metrics::Metrics;
use crate::model::{Claim, DeliveryState, Outcome, Token};
use crate::schedule::{Decision, Schedule, Settle};
use crate::store::{ClaimRequest, DeliveryFilter, Running, Settled, Store, StoreError};
use crate::transport::{LateReply, Receipt, Transport};

/// How long a stopping dispatcher waits for the deliveries it runs to end.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(30);

/// How the dispatcher paces itself.
#[derive(Clone, Debug)]
pub struct DispatchConfig {
    /// How long a handler may run before it is stopped (sent to remote
    /// workers with each attempt), unless its operation sets its own
    /// ([`crate::model::Settings::timeout`]).
    pub handler_timeout: Duration,
    /// How many of the last bytes of each output stream of a handler are
    /// kept with its attempt (asked of the node, and bounded again when it
    /// answers).
    pub output_tail: u64,
    /// How long past the handler timeout an attempt stays in flight with no
    /// reply before the lease rescue returns it to pending.
    pub lease_grace: Duration,
    /// The longest the dispatcher sleeps with nothing due; it wakes sooner
    /// when work arrives or a slot frees up.
    pub poll: Duration,
    /// The most deliveries claimed in one round.
    pub batch: u32,
    /// The backoff between tries to store outcomes the store did not take
    /// (it cannot be reached): full jitter under a ceiling of 100 ms
    /// doubling to 5 s by default, so that the coordinators of a fleet do
    /// not come back to their store at once. Its attempt limit is not
    /// used: outcomes are offered again for as long as the dispatcher
    /// runs.
    pub store_retry: Policy,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        DispatchConfig {
            handler_timeout: Duration::from_secs(10 * 60),
            output_tail: DEFAULT_OUTPUT_TAIL,
            lease_grace: Duration::from_secs(60),
            poll: Duration::from_secs(1),
            batch: 512,
            store_retry: Policy::api()
                .with_initial_delay(Duration::from_millis(100))
                .with_max_delay(Duration::from_secs(5)),
        }
    }
}

impl DispatchConfig {
    /// How long a claimed attempt holds its delivery, when its operation
    /// sets no handler timeout of its own.
    pub fn lease(&self) -> Duration {
        self.handler_timeout.saturating_add(self.lease_grace)
    }

    /// How long the handler of `claim` may run: its operation's own
    /// timeout, else the default.
    pub fn timeout(&self, claim: &Claim) -> Duration {
        claim.settings.timeout.unwrap_or(self.handler_timeout)
    }
}

/// Claims and runs deliveries; see the module documentation.
#[derive(Clone)]
pub struct Dispatcher {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    transports: HashMap<&'static str, Arc<dyn Transport>>,
    schedule: Arc<Schedule>,
    clock: Arc<dyn Clock>,
    config: DispatchConfig,
    wake: Arc<Notify>,
    status: Arc<Dependencies>,
    metrics: Arc<Metrics>,
    outcomes: mpsc::UnboundedSender<Finished>,
    receiver: std::sync::Mutex<Option<mpsc::UnboundedReceiver<Finished>>>,
}

/// The outcome of an attempt this dispatcher ran.
struct Ran {
    claim: Claim,
    settle: Settle,
    outcome: Outcome,
    receipt: Option<Receipt>,
}

/// An outcome on its way to the store.
enum Finished {
    /// The outcome of an attempt this dispatcher ran.
    Ran(Box<Ran>),
    /// An outcome nobody was waiting for.
    Late(LateReply),
    /// Confirmed once everything before it is stored.
    Flush(Receipt),
}

impl Dispatcher {
    /// A dispatcher over `store`, delivering through `transports`.
    pub fn new(
        store: Arc<dyn Store>,
        transports: Vec<Arc<dyn Transport>>,
        schedule: Arc<Schedule>,
        clock: Arc<dyn Clock>,
        config: DispatchConfig,
    ) -> Self {
        Dispatcher::reporting(
            store,
            transports,
            schedule,
            clock,
            config,
            Arc::new(Dependencies::default()),
        )
    }

    /// [`Dispatcher::new`], recording in `status` whether the store
    /// answers.
    pub fn reporting(
        store: Arc<dyn Store>,
        transports: Vec<Arc<dyn Transport>>,
        schedule: Arc<Schedule>,
        clock: Arc<dyn Clock>,
        config: DispatchConfig,
        status: Arc<Dependencies>,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Dispatcher {
            inner: Arc::new(Inner {
                store,
                transports: transports.into_iter().map(|t| (t.name(), t)).collect(),
                schedule,
                clock,
                config,
                wake: Arc::new(Notify::new()),
                status,
                metrics: Arc::new(Metrics::default()),
                outcomes: tx,
                receiver: std::sync::Mutex::new(Some(rx)),
            }),
        }
    }

    /// Wakes the dispatcher now (an operation was submitted, a node came
    /// back).
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    /// What it counts of the attempts it runs and the outcomes it stores,
    /// for `/metrics`.
    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.inner.metrics)
    }

    /// A handle that wakes the dispatcher.
    pub fn waker(&self) -> Arc<Notify> {
        Arc::clone(&self.inner.wake)
    }

    /// Hands an outcome that nobody waited for to the dispatcher, which
    /// stores it if its token is still current.
    pub fn late(&self, reply: LateReply) {
        // The receiver lives as long as the dispatcher runs; after that the
        // receipt is dropped unconfirmed, and the sender tries again later.
        let _ = self.inner.outcomes.send(Finished::Late(reply));
    }

    /// A sender for late outcomes, for transports.
    pub fn late_sender(&self) -> LateSender {
        LateSender(self.inner.outcomes.clone())
    }

    /// The transports that can deliver now: nothing is claimed for nodes
    /// behind a transport that is down (NATS disconnected).
    fn transports(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .inner
            .transports
            .iter()
            .filter(|(_, t)| t.available())
            .map(|(name, _)| (*name).to_owned())
            .collect();
        names.sort();
        names
    }

    /// The local nodes this dispatcher runs (`None`: every one).
    fn local(&self) -> Option<Vec<String>> {
        self.inner
            .transports
            .get(crate::model::transport_name::LOCAL)
            .and_then(|t| t.hosts())
    }

    /// Claims due deliveries once.
    async fn claim(&self) -> Result<Vec<Claim>, StoreError> {
        let store = Arc::clone(&self.inner.store);
        let request = ClaimRequest {
            now: self.inner.clock.now(),
            lease: self.inner.config.lease(),
            lease_grace: self.inner.config.lease_grace,
            limit: self.inner.config.batch,
            transports: self.transports(),
            local: self.local(),
        };
        blocking(move || store.claim(&request)).await
    }

    /// Runs until `shutdown`: claims, delivers, stores outcomes. Outcomes
    /// that arrive after `shutdown` are still stored until every running
    /// delivery has ended.
    pub async fn run(&self, shutdown: CancellationToken) {
        let receiver = self
            .inner
            .receiver
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let Some(receiver) = receiver else {
            tracing::error!("the dispatcher is already running");
            return;
        };
        let running = tokio_util::task::TaskTracker::new();
        let writer = tokio::spawn(self.clone().write_outcomes(receiver));
        let mut store_failing = false;
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            let claimed = match self.claim().await {
                Ok(claims) => {
                    if store_failing {
                        tracing::info!("the queue's store answers again; dispatching resumes");
                        store_failing = false;
                    }
                    self.inner.status.store_ok();
                    claims
                }
                Err(e) => {
                    if !store_failing {
                        tracing::error!(
                            "cannot claim deliveries: {}; this coordinator keeps running and \
                             tries again every {}",
                            crate::error_chain(&e),
                            HumanDuration(self.inner.config.poll)
                        );
                        store_failing = true;
                    }
                    self.inner.status.store_failed(self.inner.clock.now());
                    Vec::new()
                }
            };
            let full = claimed.len() as u32 >= self.inner.config.batch;
            for claim in claimed {
                let this = self.clone();
                let stop = shutdown.clone();
                running.spawn(async move { this.deliver(claim, stop).await });
            }
            if full {
                tokio::task::yield_now().await;
                continue;
            }
            // Woken while claiming (a submission, a stored outcome): claim
            // again at once, without asking the store when the next
            // delivery is due.
            let woken = self.inner.wake.notified();
            tokio::pin!(woken);
            if woken.as_mut().enable() {
                continue;
            }
            let wait = self.idle_wait(store_failing).await;
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = woken => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
        // Local handlers were told to stop and hand their deliveries back;
        // attempts on remote nodes were let go (see `deliver`).
        running.close();
        if tokio::time::timeout(SHUTDOWN_WAIT, running.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                "some deliveries did not end within {}; their leases will return them",
                HumanDuration(SHUTDOWN_WAIT)
            );
        }
        // Everything the deliveries sent is queued before this; once it is
        // stored, the writer can stop.
        let (receipt, stored) = Receipt::new();
        let _ = self.inner.outcomes.send(Finished::Flush(receipt));
        if tokio::time::timeout(Duration::from_secs(10), stored)
            .await
            .is_err()
        {
            tracing::warn!(
                "the last outcomes were not stored within 10 s; their leases will return them"
            );
        }
        writer.abort();
    }

    /// How long to sleep with nothing claimed: until the next due
    /// delivery, at most the poll interval.
    async fn idle_wait(&self, store_failing: bool) -> Duration {
        let poll = self.inner.config.poll;
        if store_failing {
            return poll;
        }
        let store = Arc::clone(&self.inner.store);
        let transports = self.transports();
        let local = self.local();
        let next = blocking(move || store.next_due(&transports, local.as_deref())).await;
        match next {
            Ok(Some(at)) => at
                .duration_since(self.inner.clock.now())
                .unwrap_or(Duration::ZERO)
                .clamp(Duration::from_millis(1), poll),
            _ => poll,
        }
    }

    /// What the handler of `claim` is given.
    fn work(&self, claim: &Claim) -> Work {
        Work {
            token: claim.token,
            op: claim.op,
            node: claim.node.clone(),
            kind: claim.kind.clone(),
            key: claim.key.clone(),
            payload: claim.payload.clone(),
            timeout_ms: u64::try_from(self.inner.config.timeout(claim).as_millis())
                .unwrap_or(u64::MAX),
            output_tail: self.inner.config.output_tail,
            owner: None,
        }
    }

    /// The decision for the outcome of `claim`'s attempt, with the
    /// attempt's record when it is worth one; `None` for no reply in time.
    /// Whatever the node sent of its output is bounded and redacted here,
    /// whoever ran it.
    fn decide(
        &self,
        claim: &Claim,
        outcome: &Outcome,
        output: Output,
        now: SystemTime,
    ) -> Option<Settle> {
        let mut settle = self.inner.schedule.decide(claim, outcome, now)?;
        let handled = Handled {
            outcome: outcome.clone(),
            output: output.bounded(self.inner.config.output_tail),
        };
        settle.handled = handled.worth_keeping().then_some(handled);
        Some(settle)
    }

    /// Tells the nodes of these running attempts to stop their handlers,
    /// through their transports ([`Transport::stop`]); a transport this
    /// coordinator does not have is skipped, and so are the local nodes of
    /// other coordinators. Returns how many attempts it asked to stop.
    pub async fn stop(&self, running: &[Running]) -> usize {
        let mut by_node: HashMap<(&str, &str), Vec<Token>> = HashMap::new();
        for r in running {
            by_node
                .entry((r.transport.as_str(), r.node.as_str()))
                .or_default()
                .push(r.token);
        }
        let mut asked = 0;
        for ((transport, node), tokens) in by_node {
            if let Some(t) = self.inner.transports.get(transport) {
                asked += t.stop(node, &tokens).await;
            }
        }
        asked
    }

    /// Runs one claimed attempt and queues its outcome for the store.
    async fn deliver(&self, claim: Claim, shutdown: CancellationToken) {
        let Some(transport) = self.inner.transports.get(claim.transport.as_str()) else {
            // Claims are only made for our transports.
            return;
        };
        let work = self.work(&claim);
        tracing::debug!(
            "delivering {} ({}) to {}",
            claim.token,
            claim.kind,
            claim.node
        );
        let started = self.inner.clock.now();
        let reply = if transport.outlives_coordinator() {
            tokio::select! {
                reply = transport.deliver(&work) => reply,
                // The node goes on and reports its outcome to whichever
                // coordinator runs next; the attempt stays in flight.
                () = shutdown.cancelled() => return,
            }
        } else {
            transport.deliver(&work).await
        };
        let now = self.inner.clock.now();
        self.inner.metrics.attempt(
            &claim.kind,
            &reply.outcome,
            now.duration_since(started).unwrap_or(Duration::ZERO),
        );
        let Some(settle) = self.decide(&claim, &reply.outcome, reply.output, now) else {
            tracing::warn!(
                "no reply from node {} for {} within {}; the handler may still be running, so \
                 the attempt stays in flight until a reply or the end of its lease",
                claim.node,
                claim.token,
                HumanDuration(self.inner.config.timeout(&claim))
            );
            return;
        };
        let _ = self.inner.outcomes.send(Finished::Ran(Box::new(Ran {
            claim,
            settle,
            outcome: reply.outcome,
            receipt: reply.receipt,
        })));
    }

    /// Stores outcomes in batches until every sender is gone. Outcomes the
    /// store does not take (it cannot be reached) are kept and offered
    /// again with the next batch, after a backoff of
    /// [`DispatchConfig::store_retry`], for as long as the dispatcher runs.
    async fn write_outcomes(self, mut receiver: mpsc::UnboundedReceiver<Finished>) {
        let mut batch = Vec::new();
        let mut unstored = Unstored::default();
        let retry = self
            .inner
            .config
            .store_retry
            .clone()
            .with_max_attempts(u32::MAX);
        let mut delays = retry.delays();
        let mut delay = Duration::ZERO;
        loop {
            let received = if unstored.is_empty() {
                receiver.recv_many(&mut batch, 1024).await
            } else {
                tokio::select! {
                    n = receiver.recv_many(&mut batch, 1024) => n,
                    () = tokio::time::sleep(delay) => usize::MAX,
                }
            };
            if received == 0 && unstored.is_empty() {
                return;
            }
            self.store_batch(std::mem::take(&mut batch), &mut unstored)
                .await;
            if unstored.is_empty() {
                delays = retry.delays();
                self.inner.wake.notify_one();
            } else {
                delay = delays.next().unwrap_or(delay);
                if received == 0 {
                    // Every sender is gone; keep trying while the
                    // dispatcher's shutdown waits for the last flush.
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// Stores one batch of outcomes, with those kept from before, logs
    /// what they came to, and confirms their receipts. What cannot be
    /// stored stays in `unstored`.
    async fn store_batch(&self, batch: Vec<Finished>, unstored: &mut Unstored) {
        for item in batch {
            match item {
                Finished::Ran(ran) => unstored.ran.push(*ran),
                Finished::Flush(receipt) => unstored.flushes.push(receipt),
                Finished::Late(late) => unstored.late.push(late),
            }
        }
        for late in std::mem::take(&mut unstored.late) {
            match self.decide_late(&late).await {
                Err(_) => unstored.late.push(late),
                Ok(Some((claim, settle))) => unstored.ran.push(Ran {
                    claim,
                    settle,
                    outcome: late.outcome,
                    receipt: late.receipt,
                }),
                Ok(None) => {
                    tracing::debug!(
                        "a late reply for {} ({}) is stale; ignored",
                        late.token,
                        late.outcome.describe()
                    );
                    if let Some(r) = late.receipt {
                        r.confirm();
                    }
                }
            }
        }
        if !unstored.late.is_empty() {
            // Flushes wait until everything before them is stored.
            return;
        }
        if unstored.ran.is_empty() {
            std::mem::take(&mut unstored.flushes)
                .into_iter()
                .for_each(Receipt::confirm);
            return;
        }
        let settles: Vec<Settle> = unstored.ran.iter().map(|r| r.settle.clone()).collect();
        let store = Arc::clone(&self.inner.store);
        let n = settles.len();
        let results = match blocking(move || store.settle(&settles)).await {
            Ok(results) => results,
            Err(e) => {
                if self.inner.status.store_failed(self.inner.clock.now()) {
                    tracing::error!(
                        "cannot store {n} outcomes: {}; they are kept and stored when the \
                         store answers again",
                        crate::error_chain(&e)
                    );
                }
                return;
            }
        };
        if self.inner.status.store_ok() {
            tracing::info!("the queue's store answers again; {n} kept outcomes are stored");
        }
        std::mem::take(&mut unstored.flushes)
            .into_iter()
            .for_each(Receipt::confirm);
        for (ran, settled) in std::mem::take(&mut unstored.ran).into_iter().zip(results) {
            log_settled(&ran.claim, &ran.settle, &ran.outcome, settled);
            self.inner
                .metrics
                .settled(&ran.claim.kind, &ran.claim.node, settled);
            if let Some(r) = ran.receipt {
                r.confirm();
            }
        }
    }

    /// The decision for a late outcome, from the delivery as stored;
    /// `None` when it is stale, or sent by another node than the
    /// delivery's. An error when the store cannot say.
    async fn decide_late(&self, late: &LateReply) -> Result<Option<(Claim, Settle)>, StoreError> {
        let store = Arc::clone(&self.inner.store);
        let id = late.token.delivery;
        let found = blocking(move || {
            store.deliveries(&DeliveryFilter {
                id: Some(id),
                ..DeliveryFilter::default()
            })
        })
        .await?
        .pop();
        let Some(found) = found.filter(|f| f.attempt == late.token.attempt && f.node == late.node)
        else {
            return Ok(None);
        };
        // Its operation's own settings decide, as they would have on time.
        let store = Arc::clone(&self.inner.store);
        let op = found.op;
        let (op, _) = blocking(move || store.op(op)).await?;
        let claim = Claim {
            token: late.token,
            op: found.op,
            node: found.node,
            transport: String::new(),
            kind: found.kind,
            key: found.key,
            payload: String::new(),
            failures: found.failures,
            tries: found.tries,
            lease_until: found.lease_until.unwrap_or(SystemTime::UNIX_EPOCH),
            settings: op.settings,
        };
        Ok(self
            .decide(
                &claim,
                &late.outcome,
                late.output.clone(),
                self.inner.clock.now(),
            )
            .map(|settle| (claim, settle)))
    }

    /// One round for tests and tools: claims what is due, runs it all to
    /// the end, and stores the outcomes before returning them.
    pub async fn step(&self) -> Result<Vec<(Claim, Outcome, Settled)>, StoreError> {
        let claims = self.claim().await?;
        let replies = futures_util::future::join_all(claims.into_iter().map(|claim| async move {
            let started = self.inner.clock.now();
            let reply = match self.inner.transports.get(claim.transport.as_str()) {
                Some(t) => t.deliver(&self.work(&claim)).await,
                None => crate::transport::Reply::new(Outcome::TimedOut),
            };
            let took = self.inner.clock.now().duration_since(started);
            self.inner
                .metrics
                .attempt(&claim.kind, &reply.outcome, took.unwrap_or(Duration::ZERO));
            (claim, reply)
        }))
        .await;
        let now = self.inner.clock.now();
        let mut settles = Vec::new();
        let mut decided = Vec::new();
        let mut out = Vec::new();
        for (claim, reply) in replies {
            let outcome = reply.outcome.clone();
            match self.decide(&claim, &outcome, reply.output, now) {
                Some(s) => {
                    settles.push(s);
                    decided.push((claim, outcome));
                }
                None => out.push((claim, outcome, Settled::Stale)),
            }
        }
        let store = Arc::clone(&self.inner.store);
        let batch = settles.clone();
        let results = blocking(move || store.settle(&batch)).await?;
        for ((settle, settled), (claim, outcome)) in settles.iter().zip(results).zip(decided) {
            log_settled(&claim, settle, &outcome, settled);
            self.inner
                .metrics
                .settled(&claim.kind, &claim.node, settled);
            out.push((claim, outcome, settled));
        }
        Ok(out)
    }
}

/// Outcomes waiting for the store.
#[derive(Default)]
struct Unstored {
    /// Decided, not yet stored.
    ran: Vec<Ran>,
    /// Not yet decided: the store could not be read.
    late: Vec<LateReply>,
    /// Confirmed once everything before them is stored.
    flushes: Vec<Receipt>,
}

impl Unstored {
    fn is_empty(&self) -> bool {
        self.ran.is_empty() && self.late.is_empty()
    }
}

/// Sends late outcomes to a running dispatcher.
#[derive(Clone, Debug)]
pub struct LateSender(mpsc::UnboundedSender<Finished>);

impl std::fmt::Debug for Finished {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Finished")
    }
}

impl LateSender {
    /// Hands over an outcome nobody waited for.
    pub fn send(&self, reply: LateReply) {
        let _ = self.0.send(Finished::Late(reply));
    }
}

fn log_settled(claim: &Claim, settle: &Settle, outcome: &Outcome, settled: Settled) {
    let what = format!(
        "delivery {} of operation {} ({}) to node {}",
        claim.token.delivery, claim.op, claim.kind, claim.node
    );
    match (settled, &settle.decision) {
        (Settled::Stale, _) => tracing::debug!(
            "the reply for {} came too late ({}); ignored",
            claim.token,
            outcome.describe()
        ),
        (
            Settled::Applied(DeliveryState::Dead),
            Decision::Dead {
                failures, error, ..
            },
        ) => {
            tracing::error!(
                "{what} is dead after {}; last error: {error}. \
                 Requeue it with `backstop ops requeue --delivery {}` once fixed",
                plural(u64::from(*failures), "failure", "failures"),
                claim.token.delivery
            );
        }
        (Settled::Applied(DeliveryState::Superseded), _) => tracing::info!(
            "{what} ended ({}) after a newer operation with the same key replaced it",
            outcome.describe()
        ),
        (Settled::Applied(_), Decision::Done) => tracing::debug!("{what}: done"),
        (
            Settled::Applied(_),
            Decision::Retry {
                next_at,
                failures,
                error,
                ..
            },
        ) => {
            let wait = next_at.duration_since(settle.at).unwrap_or(Duration::ZERO);
            tracing::warn!(
                "{what} failed (attempt {}, {} so far): {error}; retrying in {}",
                claim.token.attempt,
                plural(u64::from(*failures), "failure", "failures"),
                HumanDuration(wait)
            );
        }
        (
            Settled::Applied(_),
            Decision::Release {
                error, unreachable, ..
            },
        ) => {
            if *unreachable {
                tracing::warn!(
                    "node {} cannot be reached ({error}); its deliveries wait for its next heartbeat",
                    claim.node
                );
            } else {
                tracing::info!("{what} was handed back ({error}); it waits for another attempt");
            }
        }
        (Settled::Applied(_), Decision::Dead { .. }) => {}
    }
}
