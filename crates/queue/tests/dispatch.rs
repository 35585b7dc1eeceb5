//! The dispatcher's rules, on a manual clock: backoff between failures,
//! the dead-letter cap and requeue, unreachable nodes parked without
//! spending attempts, and parallel deliveries that one slow handler does
//! not hold up.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use backstop_core::clock::{Clock, ManualClock, SystemClock};
use backstop_queue::handler::{FnHandler, Handler, Work};
use backstop_queue::node_health::Monitor;
use backstop_queue::store::{DeliveryFilter, Heartbeat, Requeue, Settled};
use backstop_queue::transport::local::{LocalNode, LocalTransport};
use backstop_queue::transport::{Reply, Transport};
use backstop_queue::{
    DeliveryState, DispatchConfig, Dispatcher, NewOp, NodeSpec, NodeStatus, Outcome, Schedule,
    SqliteStore, Store, Token,
};
use backstop_queue::{Settle, StoreError};
use futures_util::future::BoxFuture;
use tokio_util::sync::CancellationToken;

struct Setup {
    _dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    clock: Arc<ManualClock>,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path().join("q.db")).unwrap());
    let clock = Arc::new(ManualClock::new(
        UNIX_EPOCH + Duration::from_secs(1_800_000_000),
    ));
    Setup {
        _dir: dir,
        store,
        clock,
    }
}

fn schedule(max_failures: u32) -> Arc<Schedule> {
    Arc::new(
        Schedule::default()
            .base(Duration::from_secs(10))
            .cap(Duration::from_secs(60))
            .max_failures(max_failures)
            .seed(5),
    )
}

/// A handler that fails its first `n` runs, then succeeds.
fn flaky(n: u32, runs: Arc<AtomicU32>) -> Arc<dyn Handler> {
    Arc::new(FnHandler(move |_| {
        let run = runs.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            if run <= n {
                Outcome::Failed(format!("run {run} failed"))
            } else {
                Outcome::Done
            }
        }
    }))
}

fn dispatcher(s: &Setup, nodes: &[LocalNode], schedule: Arc<Schedule>) -> Dispatcher {
    let transport: Arc<dyn Transport> =
        Arc::new(LocalTransport::new(nodes, CancellationToken::new()));
    for node in nodes {
        s.store.register(&node.spec, s.clock.now()).unwrap();
    }
    Dispatcher::new(
        Arc::clone(&s.store),
        vec![transport],
        schedule,
        s.clock.clone() as Arc<dyn Clock>,
        DispatchConfig::default(),
    )
}

fn delivery(store: &dyn Store) -> backstop_queue::Delivery {
    store
        .deliveries(&DeliveryFilter::default())
        .unwrap()
        .remove(0)
}

/// Moves the clock to the delivery's next attempt time.
fn to_next_attempt(s: &Setup) {
    let d = delivery(&*s.store);
    let wait = d.next_at.duration_since(s.clock.now()).unwrap_or_default();
    assert!(wait <= Duration::from_secs(60), "the cap holds: {wait:?}");
    s.clock.advance(wait);
}

#[tokio::test]
async fn a_handler_that_fails_three_times_then_succeeds() {
    let s = setup();
    let runs = Arc::new(AtomicU32::new(0));
    let node = LocalNode::new("cpu-1", "cpu", 1).handle("install", flaky(3, runs.clone()));
    let d = dispatcher(&s, &[node], schedule(10));
    s.store
        .submit(&NewOp::for_type("install", "cpu"), s.clock.now())
        .unwrap();
    for n in 1..=3 {
        let round = d.step().await.unwrap();
        assert_eq!(round.len(), 1);
        assert_eq!(round[0].2, Settled::Applied(DeliveryState::Pending));
        let pending = delivery(&*s.store);
        assert_eq!((pending.failures, pending.attempt), (n, n));
        assert_eq!(
            pending.last_error.as_deref(),
            Some(&*format!("run {n} failed"))
        );
        // Not before its time.
        assert!(d.step().await.unwrap().is_empty() || pending.next_at <= s.clock.now());
        to_next_attempt(&s);
    }
    let round = d.step().await.unwrap();
    assert_eq!(round[0].2, Settled::Applied(DeliveryState::Done));
    assert_eq!(runs.load(Ordering::SeqCst), 4);
    assert!(d.step().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_poison_op_dies_at_the_cap_then_a_requeue_runs_it_afresh() {
    let s = setup();
    let runs = Arc::new(AtomicU32::new(0));
    let node = LocalNode::new("cpu-1", "cpu", 1).handle("install", flaky(4, runs.clone()));
    let d = dispatcher(&s, &[node], schedule(4));
    s.store
        .submit(&NewOp::for_type("install", "cpu"), s.clock.now())
        .unwrap();
    for _ in 0..3 {
        d.step().await.unwrap();
        to_next_attempt(&s);
    }
    let round = d.step().await.unwrap();
    assert_eq!(round[0].2, Settled::Applied(DeliveryState::Dead));
    // Dead stays dead, and stays listed with its last error.
    s.clock.advance(Duration::from_secs(3600));
    assert!(d.step().await.unwrap().is_empty());
    let dead = delivery(&*s.store);
    assert_eq!(dead.state, DeliveryState::Dead);
    assert_eq!(dead.failures, 4);
    assert_eq!(dead.last_error.as_deref(), Some("run 4 failed"));
    assert_eq!(s.store.requeue(&Requeue::All, s.clock.now()).unwrap(), 1);
    let round = d.step().await.unwrap();
    assert_eq!(round[0].2, Settled::Applied(DeliveryState::Done));
    assert_eq!(round[0].0.token.attempt, 5, "the token keeps counting");
    assert_eq!(round[0].0.failures, 0, "the budget was reset");
}

#[tokio::test]
async fn an_unreachable_node_is_parked_without_spending_attempts() {
    let s = setup();
    let node = LocalNode::new("cpu-1", "cpu", 1).handle(
        "install",
        Arc::new(FnHandler(|_| async {
            Outcome::Unreachable("no responders".into())
        })),
    );
    let d = dispatcher(&s, &[node], schedule(2));
    s.store
        .submit(&NewOp::for_type("install", "cpu"), s.clock.now())
        .unwrap();
    for _ in 0..5 {
        d.step().await.unwrap();
        s.clock.advance(Duration::from_secs(600));
    }
    let parked = delivery(&*s.store);
    assert_eq!(parked.state, DeliveryState::Pending);
    assert_eq!(
        (parked.failures, parked.attempt),
        (0, 1),
        "parked after one try"
    );
    assert_eq!(s.store.nodes().unwrap()[0].status, NodeStatus::Unreachable);
}

#[tokio::test]
async fn a_timed_out_attempt_stays_in_flight_and_is_never_failed_twice() {
    let s = setup();
    let node = LocalNode::new("cpu-1", "cpu", 1).handle(
        "install",
        Arc::new(FnHandler(|_| async { Outcome::TimedOut })),
    );
    let d = dispatcher(&s, &[node], schedule(1));
    s.store
        .submit(&NewOp::for_type("install", "cpu"), s.clock.now())
        .unwrap();
    let round = d.step().await.unwrap();
    assert_eq!(round[0].2, Settled::Stale, "nothing decided");
    let running = delivery(&*s.store);
    assert_eq!(running.state, DeliveryState::InFlight);
    // Its lease ends: back to pending, and with a cap of one failure it is
    // still not dead.
    s.clock
        .advance(DispatchConfig::default().lease() + Duration::from_secs(1));
    s.store.rescue(s.clock.now()).unwrap();
    let back = delivery(&*s.store);
    assert_eq!((back.state, back.failures), (DeliveryState::Pending, 0));
}

#[tokio::test]
async fn one_slow_handler_never_blocks_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path().join("q.db")).unwrap());
    let slow_started = Arc::new(tokio::sync::Notify::new());
    let release = Arc::new(tokio::sync::Semaphore::new(0));
    let (started, gate) = (slow_started.clone(), release.clone());
    let slow = LocalNode::new("slow", "cpu", 1).handle(
        "install",
        Arc::new(FnHandler(move |_| {
            let (started, gate) = (started.clone(), gate.clone());
            async move {
                started.notify_one();
                let _pass = gate.acquire().await;
                Outcome::Done
            }
        })),
    );
    let quick = LocalNode::new("quick", "cpu", 4).handle(
        "install",
        Arc::new(backstop_queue::handler::Noop) as Arc<dyn Handler>,
    );
    let nodes = [slow, quick];
    for node in &nodes {
        store.register(&node.spec, SystemTime::now()).unwrap();
    }
    let transport: Arc<dyn Transport> =
        Arc::new(LocalTransport::new(&nodes, CancellationToken::new()));
    let config = DispatchConfig {
        poll: Duration::from_millis(20),
        ..DispatchConfig::default()
    };
    let d = Dispatcher::new(
        Arc::clone(&store),
        vec![transport],
        schedule(3),
        Arc::new(SystemClock),
        config,
    );
    let shutdown = CancellationToken::new();
    let running = tokio::spawn({
        let (d, s) = (d.clone(), shutdown.clone());
        async move { d.run(s).await }
    });
    for _ in 0..20 {
        store
            .submit(&NewOp::for_type("install", "cpu"), SystemTime::now())
            .unwrap();
    }
    d.wake();
    tokio::time::timeout(Duration::from_secs(10), slow_started.notified())
        .await
        .unwrap();
    let quick_done = || {
        store
            .deliveries(&DeliveryFilter {
                node: Some("quick".into()),
                state: Some(DeliveryState::Done),
                limit: 1000,
                ..DeliveryFilter::default()
            })
            .unwrap()
            .len()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while quick_done() < 20 {
        assert!(
            std::time::Instant::now() < deadline,
            "quick node stuck at {}",
            quick_done()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The slow node still runs its first delivery, and only one.
    let slow = store
        .nodes()
        .unwrap()
        .into_iter()
        .find(|n| n.name == "slow")
        .unwrap();
    assert_eq!((slow.in_flight, slow.pending), (1, 19));
    release.add_permits(1000);
    shutdown.cancel();
    // Stopping hands back what is still running and stores what finished.
    tokio::time::timeout(Duration::from_secs(20), running)
        .await
        .unwrap()
        .unwrap();
    let slow = store
        .nodes()
        .unwrap()
        .into_iter()
        .find(|n| n.name == "slow")
        .unwrap();
    assert_eq!(
        slow.in_flight, 0,
        "nothing left in flight after a clean stop"
    );
}

/// A SQLite store watched by a test: its first `fail` writes of outcomes
/// fail as if it could not be reached, it notes when (on tokio's clock)
/// each write was tried, and it logs the dispatcher's claims and its asks
/// for the next due time, running `on_claim` inside the first claim.
struct Watched {
    inner: SqliteStore,
    fail: AtomicU32,
    tries: std::sync::Mutex<Vec<tokio::time::Instant>>,
    stored: tokio::sync::Notify,
    calls: std::sync::Mutex<Vec<&'static str>>,
    on_claim: std::sync::Mutex<Option<Box<dyn FnOnce() + Send>>>,
    asked_when_due: tokio::sync::Notify,
}

impl Watched {
    fn new(dir: &tempfile::TempDir, fail: u32) -> Self {
        Watched {
            inner: SqliteStore::open(dir.path().join("q.db")).unwrap(),
            fail: AtomicU32::new(fail),
            tries: std::sync::Mutex::new(Vec::new()),
            stored: tokio::sync::Notify::new(),
            calls: std::sync::Mutex::new(Vec::new()),
            on_claim: std::sync::Mutex::new(None),
            asked_when_due: tokio::sync::Notify::new(),
        }
    }
}

impl Watched {
    /// A dispatcher on this store for one local node, `cpu-1`, that runs
    /// `install` with a no-op handler, one at a time.
    fn dispatcher(self: &Arc<Self>, clock: Arc<dyn Clock>, config: DispatchConfig) -> Dispatcher {
        let node = LocalNode::new("cpu-1", "cpu", 1).handle(
            "install",
            Arc::new(backstop_queue::handler::Noop) as Arc<dyn Handler>,
        );
        self.register(&node.spec, clock.now()).unwrap();
        let transport: Arc<dyn Transport> =
            Arc::new(LocalTransport::new(&[node], CancellationToken::new()));
        Dispatcher::new(
            Arc::clone(self) as Arc<dyn Store>,
            vec![transport],
            schedule(3),
            clock,
            config,
        )
    }
}

impl Store for Watched {
    fn settle(&self, batch: &[Settle]) -> Result<Vec<Settled>, StoreError> {
        self.tries.lock().unwrap().push(tokio::time::Instant::now());
        if self
            .fail
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(StoreError::Open {
                component: "queue",
                location: self.location(),
                source: "connection refused".into(),
            });
        }
        let settled = self.inner.settle(batch);
        self.stored.notify_one();
        settled
    }
    fn register(
        &self,
        node: &backstop_queue::NodeSpec,
        now: SystemTime,
    ) -> Result<backstop_queue::store::Registered, StoreError> {
        self.inner.register(node, now)
    }
    fn retire(
        &self,
        transport: &str,
        keep: &[String],
        now: SystemTime,
    ) -> Result<Vec<String>, StoreError> {
        self.inner.retire(transport, keep, now)
    }
    fn heartbeat(
        &self,
        name: &str,
        session: &str,
        leaving: bool,
        now: SystemTime,
    ) -> Result<backstop_queue::store::Heartbeat, StoreError> {
        self.inner.heartbeat(name, session, leaving, now)
    }
    fn mark_stale(
        &self,
        stale_before: SystemTime,
        now: SystemTime,
    ) -> Result<Vec<String>, StoreError> {
        self.inner.mark_stale(stale_before, now)
    }
    fn drain(
        &self,
        name: &str,
        drained: bool,
        now: SystemTime,
    ) -> Result<backstop_queue::Node, StoreError> {
        self.inner.drain(name, drained, now)
    }
    fn nodes(&self) -> Result<Vec<backstop_queue::Node>, StoreError> {
        self.inner.nodes()
    }
    fn gauges(&self) -> Result<backstop_queue::store::Gauges, StoreError> {
        self.inner.gauges()
    }
    fn remove_node(
        &self,
        name: &str,
        by: &str,
        now: SystemTime,
    ) -> Result<backstop_queue::store::Removed, StoreError> {
        self.inner.remove_node(name, by, now)
    }
    fn cancel(
        &self,
        id: backstop_queue::OpId,
        by: &str,
        now: SystemTime,
    ) -> Result<backstop_queue::store::Cancelled, StoreError> {
        self.inner.cancel(id, by, now)
    }
    fn attempts(
        &self,
        of: &backstop_queue::store::AttemptsOf,
    ) -> Result<Vec<backstop_queue::Attempt>, StoreError> {
        self.inner.attempts(of)
    }
    fn submit_all(
        &self,
        ops: &[NewOp],
        now: SystemTime,
    ) -> Result<Vec<backstop_queue::store::Submitted>, StoreError> {
        self.inner.submit_all(ops, now)
    }
    fn ops(
        &self,
        filter: &backstop_queue::store::OpFilter,
    ) -> Result<Vec<backstop_queue::store::OpSummary>, StoreError> {
        self.inner.ops(filter)
    }
    fn op(
        &self,
        id: backstop_queue::OpId,
    ) -> Result<(backstop_queue::Op, Vec<backstop_queue::Delivery>), StoreError> {
        self.inner.op(id)
    }
    fn deliveries(
        &self,
        filter: &DeliveryFilter,
    ) -> Result<Vec<backstop_queue::Delivery>, StoreError> {
        self.inner.deliveries(filter)
    }
    fn requeue(&self, which: &Requeue, now: SystemTime) -> Result<u64, StoreError> {
        self.inner.requeue(which, now)
    }
    fn claim(
        &self,
        request: &backstop_queue::store::ClaimRequest,
    ) -> Result<Vec<backstop_queue::Claim>, StoreError> {
        self.calls.lock().unwrap().push("claim");
        if let Some(hook) = self.on_claim.lock().unwrap().take() {
            hook();
        }
        self.inner.claim(request)
    }
    fn rescue(&self, now: SystemTime) -> Result<Vec<backstop_queue::Token>, StoreError> {
        self.inner.rescue(now)
    }
    fn release(
        &self,
        tokens: &[backstop_queue::Token],
        why: &str,
        now: SystemTime,
    ) -> Result<Vec<backstop_queue::Token>, StoreError> {
        self.inner.release(tokens, why, now)
    }
    fn prune(&self, now: SystemTime) -> Result<backstop_queue::store::Pruned, StoreError> {
        self.inner.prune(now)
    }
    fn retain(
        &self,
        before: SystemTime,
        limit: u32,
    ) -> Result<backstop_queue::store::Retained, StoreError> {
        self.inner.retain(before, limit)
    }
    fn next_due(
        &self,
        transports: &[String],
        local: Option<&[String]>,
    ) -> Result<Option<SystemTime>, StoreError> {
        self.calls.lock().unwrap().push("next_due");
        self.asked_when_due.notify_one();
        self.inner.next_due(transports, local)
    }
    fn location(&self) -> String {
        self.inner.location()
    }
    fn activity(&self, since: SystemTime) -> Result<backstop_queue::store::Activity, StoreError> {
        self.inner.activity(since)
    }
}

/// Runs one delivery on a dispatcher whose store refuses the first five
/// writes of its outcome, with the outcome writer's backoff seeded by
/// `seed`; the waits between the writes.
async fn waits_between_outcome_writes(seed: u64) -> Vec<Duration> {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Watched::new(&dir, 5));
    let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_800_000_000));
    let config = DispatchConfig {
        store_retry: DispatchConfig::default().store_retry.with_seed(seed),
        ..DispatchConfig::default()
    };
    let d = store.dispatcher(Arc::new(clock), config);
    store
        .submit(&NewOp::for_type("install", "cpu"), UNIX_EPOCH)
        .unwrap();
    let shutdown = CancellationToken::new();
    let running = tokio::spawn({
        let (d, s) = (d.clone(), shutdown.clone());
        async move { d.run(s).await }
    });
    store.stored.notified().await;
    shutdown.cancel();
    running.await.unwrap();
    let done = delivery(&store.inner);
    assert_eq!(done.state, DeliveryState::Done, "stored at the sixth write");
    let tries = store.tries.lock().unwrap().clone();
    assert_eq!(tries.len(), 6, "{tries:?}");
    tries.windows(2).map(|w| w[1] - w[0]).collect()
}

#[tokio::test(start_paused = true)]
async fn outcome_writers_back_off_with_full_jitter_not_in_lockstep() {
    let one = waits_between_outcome_writes(1).await;
    let two = waits_between_outcome_writes(2).await;
    assert_ne!(one, two, "two coordinators retry their store in lockstep");
    for waits in [&one, &two] {
        // Full jitter under a ceiling of 100 ms doubling: 100, 200, 400...
        for (n, wait) in waits.iter().enumerate() {
            let ceiling = Duration::from_millis(100 << n);
            assert!(*wait <= ceiling, "wait {n} of {waits:?}");
        }
        assert!(
            waits
                .iter()
                .enumerate()
                .any(|(n, wait)| *wait < Duration::from_millis(100 << n)),
            "never below the ceiling, so never jittered: {waits:?}"
        );
    }
    assert_eq!(one, waits_between_outcome_writes(1).await, "a seed repeats");
}

/// A dispatcher woken while it claims (a submission came in, an outcome
/// was stored) claims again at once: asking the store when the next
/// delivery is due would be a round trip whose answer it does not use.
#[tokio::test]
async fn a_dispatcher_woken_while_claiming_claims_again_before_asking_what_is_due() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Watched::new(&dir, 0));
    let d = store.dispatcher(Arc::new(SystemClock), DispatchConfig::default());
    let waker = d.waker();
    *store.on_claim.lock().unwrap() = Some(Box::new(move || waker.notify_one()));
    let shutdown = CancellationToken::new();
    let running = tokio::spawn({
        let (d, s) = (d.clone(), shutdown.clone());
        async move { d.run(s).await }
    });
    store.asked_when_due.notified().await;
    shutdown.cancel();
    running.await.unwrap();
    let calls = store.calls.lock().unwrap().clone();
    assert_eq!(calls[..3], ["claim", "claim", "next_due"], "{calls:?}");
}

/// A remote node: its first attempt runs until the test lets it end (the
/// node is slow, not gone); any later one ends at once. Every offer is
/// recorded.
#[derive(Default)]
struct SlowRemote {
    offered: std::sync::Mutex<Vec<Token>>,
    first_runs: tokio::sync::Notify,
    first_ends: tokio::sync::Notify,
}

impl Transport for SlowRemote {
    fn name(&self) -> &'static str {
        "nats"
    }

    fn deliver<'a>(&'a self, work: &'a Work) -> BoxFuture<'a, Reply> {
        Box::pin(async move {
            let first = {
                let mut offered = self.offered.lock().unwrap();
                offered.push(work.token);
                offered.len() == 1
            };
            if first {
                self.first_runs.notify_one();
                self.first_ends.notified().await;
            }
            Reply::new(Outcome::Done)
        })
    }
}

/// A heartbeat that comes late under load parks the node, but does not
/// take the attempt it runs away from it: nothing is offered again while
/// it runs, and its outcome is stored when it comes — the handler runs
/// once.
#[tokio::test]
async fn a_node_parked_for_a_late_heartbeat_keeps_the_attempt_it_runs() {
    let s = setup();
    let remote = Arc::new(SlowRemote::default());
    let spec = NodeSpec {
        name: "gpu-1".into(),
        node_type: "gpu".into(),
        kinds: vec!["install".into()],
        capacity: 1,
        transport: "nats".into(),
        session: "s1".into(),
        declaration: None,
    };
    s.store.register(&spec, s.clock.now()).unwrap();
    let d = Dispatcher::new(
        Arc::clone(&s.store),
        vec![Arc::clone(&remote) as Arc<dyn Transport>],
        schedule(3),
        s.clock.clone() as Arc<dyn Clock>,
        DispatchConfig::default(),
    );
    let monitor = Monitor::new(
        Arc::clone(&s.store),
        s.clock.clone() as Arc<dyn Clock>,
        Duration::from_secs(1),
    );
    s.store
        .submit(&NewOp::for_type("install", "gpu"), s.clock.now())
        .unwrap();
    let first_round = tokio::spawn({
        let d = d.clone();
        async move { d.step().await }
    });
    tokio::time::timeout(Duration::from_secs(10), remote.first_runs.notified())
        .await
        .unwrap();
    // Its heartbeat is late: parked.
    s.clock.advance(Duration::from_secs(2));
    assert_eq!(monitor.tick().await.unwrap(), ["gpu-1"]);
    assert_eq!(s.store.nodes().unwrap()[0].status, NodeStatus::Unhealthy);
    // The next one comes while the handler still runs.
    assert_eq!(
        s.store
            .heartbeat("gpu-1", "s1", false, s.clock.now())
            .unwrap(),
        Heartbeat::Recovered(NodeStatus::Unhealthy)
    );
    let meanwhile = d.step().await.unwrap();
    assert!(
        meanwhile.is_empty(),
        "offered again while the node runs it: {meanwhile:?}"
    );
    remote.first_ends.notify_one();
    let first = first_round.await.unwrap().unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].2, Settled::Applied(DeliveryState::Done));
    let done = delivery(&*s.store);
    assert_eq!((done.state, done.attempt), (DeliveryState::Done, 1));
    assert_eq!(
        remote.offered.lock().unwrap().len(),
        1,
        "the handler ran once"
    );
}

/// A handler that prints, says it started, and runs until it is stopped.
struct UntilStopped {
    started: Arc<tokio::sync::Notify>,
}

impl Handler for UntilStopped {
    fn handle<'a>(
        &'a self,
        _: &'a backstop_queue::Work,
        stop: &'a CancellationToken,
    ) -> futures_util::future::BoxFuture<'a, backstop_queue::Handled> {
        Box::pin(async move {
            self.started.notify_one();
            stop.cancelled().await;
            backstop_queue::Handled {
                outcome: Outcome::Released("stopped".into()),
                output: backstop_queue::Output {
                    stdout: "halfway\n".into(),
                    stderr: "api_key=abcdef123456 \n".into(),
                },
            }
        })
    }
}

/// `--stop-running` on a node inside the coordinator: the store cancels,
/// the dispatcher stops the handler through its transport, the delivery
/// ends cancelled, and what the handler printed is kept, redacted.
#[tokio::test]
async fn a_cancelled_op_s_running_handler_is_stopped_and_its_output_kept() {
    let s = setup();
    let started = Arc::new(tokio::sync::Notify::new());
    let node = LocalNode::new("cpu-1", "cpu", 1).handle(
        "install",
        Arc::new(UntilStopped {
            started: Arc::clone(&started),
        }),
    );
    let d = dispatcher(&s, &[node], schedule(10));
    let op = s
        .store
        .submit(&NewOp::for_type("install", "cpu"), s.clock.now())
        .unwrap()
        .op;
    let stepping = tokio::spawn({
        let d = d.clone();
        async move { d.step().await }
    });
    started.notified().await;
    let cancelled = s.store.cancel(op.id, "alice", s.clock.now()).unwrap();
    assert_eq!(cancelled.running.len(), 1);
    assert_eq!(d.stop(&cancelled.running).await, 1);
    let round = stepping.await.unwrap().unwrap();
    assert_eq!(round[0].2, Settled::Applied(DeliveryState::Cancelled));
    let kept = s
        .store
        .attempts(&backstop_queue::store::AttemptsOf::Op(op.id))
        .unwrap();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].outcome, "released");
    assert_eq!(
        kept[0].error.as_deref(),
        Some("its operation was cancelled, and its handler stopped")
    );
    assert_eq!(kept[0].output.stdout, "halfway\n");
    assert_eq!(kept[0].output.stderr, "api_key=<redacted> \n");
    // Stopping what no longer runs asks nothing.
    assert_eq!(d.stop(&cancelled.running).await, 0);
}
