//! End-to-end fan-out on PostgreSQL with no-op handlers, with one
//! coordinator and with two sharing the store, in two modes:
//!
//! - live: 10,000 operations to 3 nodes (30,000 deliveries), each with its
//!   own key, submitted by 4 threads (one transaction each) while the
//!   coordinators' dispatchers run; timed from the first submit to the last
//!   delivery stored as done. Latency is from just before an operation's
//!   submit to its handler's start, over every delivery.
//! - backlog: the same operations submitted first, then the dispatchers
//!   started and timed until the last delivery is stored as done: what
//!   claiming, running and settling alone sustain.
//!
//! The nodes run inside the coordinators (a no-op handler, 256 at once
//! each), so what is measured is the queue — claims, settles, submits —
//! not a transport. With two coordinators both dispatch to the same nodes,
//! so their claims contend for the same rows.
//!
//! `cargo bench -p backstop-queue --bench fanout_pg` (`-- --quick` for a
//! tenth of the work). PostgreSQL comes from `BACKSTOP_BENCH_POSTGRES`
//! (default `postgres://postgres@127.0.0.1:5432/test`); each run gets a
//! schema of its own. `bench/fanout-pg.sh` runs this and apalis and prints
//! the ratios. Prints one line per run:
//! `backstop mode=M coordinators=N deliveries=N secs=S rate=R p50_ms=A p99_ms=B`.
//! `MODE=live` or `MODE=backlog` and `COORDINATORS=1` or `2` run one case;
//! `CAPACITY=N` sets how many deliveries each node runs at once (256).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use backstop_core::clock::SystemClock;
use backstop_queue::handler::{FnHandler, Handler};
use backstop_queue::transport::Transport;
use backstop_queue::transport::local::{LocalNode, LocalTransport};
use backstop_queue::{DispatchConfig, Dispatcher, NewOp, Outcome, PostgresStore, Schedule, Store};
use backstop_store::postgres::postgres::{Client, NoTls};
use backstop_store::postgres::testing::TestSchema;
use tokio_util::sync::CancellationToken;

type Submitted = Arc<Mutex<HashMap<String, Instant>>>;

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let server = std::env::var("BACKSTOP_BENCH_POSTGRES")
        .unwrap_or_else(|_| backstop_store::postgres::testing::server_url());
    let ops = if quick { 1_000 } else { 10_000 };
    let only: Option<usize> = std::env::var("COORDINATORS")
        .ok()
        .and_then(|v| v.parse().ok());
    let mode = std::env::var("MODE").ok();
    for backlog in [false, true] {
        let name = if backlog { "backlog" } else { "live" };
        if mode.as_deref().is_some_and(|m| m != name) {
            continue;
        }
        for coordinators in [1, 2] {
            if only.is_some_and(|n| n != coordinators) {
                continue;
            }
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(run(&server, ops, coordinators, backlog));
        }
    }
}

/// Deliveries each node runs at once: `CAPACITY`, default 256.
fn capacity() -> u32 {
    std::env::var("CAPACITY")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(256)
}

fn nodes(submitted: &Submitted, latencies: &Arc<Mutex<Vec<Duration>>>) -> Vec<LocalNode> {
    let handler: Arc<dyn Handler> = {
        let (submitted, latencies) = (Arc::clone(submitted), Arc::clone(latencies));
        Arc::new(FnHandler(move |work: backstop_queue::Work| {
            let started = Instant::now();
            let at = work
                .key
                .as_ref()
                .and_then(|k| submitted.lock().ok()?.get(k).copied());
            if let (Some(at), Ok(mut l)) = (at, latencies.lock()) {
                l.push(started.duration_since(at));
            }
            async { Outcome::Done }
        }))
    };
    (1..=3)
        .map(|i| {
            LocalNode::new(format!("gpu-{i}"), "gpu", capacity())
                .handle("install", Arc::clone(&handler))
        })
        .collect()
}

async fn run(server: &str, ops: usize, coordinators: usize, backlog: bool) {
    let schema = TestSchema::on(server, "bs_bench");
    let url = schema.url().to_owned();
    let submitted: Submitted = Arc::new(Mutex::new(HashMap::with_capacity(ops)));
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(ops * 3)));
    let nodes = nodes(&submitted, &latencies);
    let u = url.clone();
    let specs: Vec<_> = nodes.iter().map(|n| n.spec.clone()).collect();
    let submitter: Arc<dyn Store> = tokio::task::spawn_blocking(move || {
        let store = PostgresStore::open_with(&u, 4).expect("open");
        for spec in &specs {
            store.register(spec, SystemTime::now()).expect("register");
        }
        store
    })
    .await
    .map(|s| Arc::new(s) as Arc<dyn Store>)
    .expect("opened");
    let shutdown = CancellationToken::new();
    let mut running = Vec::new();
    let mut dispatchers = Vec::new();
    for _ in 0..coordinators {
        let u = url.clone();
        let store: Arc<dyn Store> = Arc::new(
            tokio::task::spawn_blocking(move || PostgresStore::open(&u))
                .await
                .expect("joined")
                .expect("open"),
        );
        let transport: Arc<dyn Transport> =
            Arc::new(LocalTransport::new(&nodes, CancellationToken::new()));
        dispatchers.push(Dispatcher::new(
            store,
            vec![transport],
            Arc::new(Schedule::default()),
            Arc::new(SystemClock),
            DispatchConfig::default(),
        ));
    }
    let wakers: Vec<_> = dispatchers.iter().map(Dispatcher::waker).collect();
    let mut start = |dispatchers: &mut Vec<Dispatcher>| {
        for d in dispatchers.drain(..) {
            let s = shutdown.clone();
            running.push(tokio::spawn(async move { d.run(s).await }));
        }
    };
    if !backlog {
        start(&mut dispatchers);
    }
    let mut started = Instant::now();
    let submitters: Vec<_> = (0..4)
        .map(|t| {
            let (store, submitted) = (Arc::clone(&submitter), Arc::clone(&submitted));
            // As the API does: the coordinator that took the submission
            // dispatches it at once; the others find it on their next look.
            let waker = Arc::clone(&wakers[t % wakers.len()]);
            tokio::task::spawn_blocking(move || {
                for i in (t..ops).step_by(4) {
                    let key = format!("model-{i}");
                    if let Ok(mut s) = submitted.lock() {
                        s.insert(key.clone(), Instant::now());
                    }
                    let op = NewOp::for_type("install", "gpu").key(key);
                    store.submit(&op, SystemTime::now()).expect("submit");
                    waker.notify_one();
                }
            })
        })
        .collect();
    for s in submitters {
        s.await.expect("submitted");
    }
    let submit_secs = started.elapsed().as_secs_f64();
    if backlog {
        started = Instant::now();
        start(&mut dispatchers);
    }
    let want = ops as i64 * 3;
    // Every handler ran; then the store is asked until every outcome is
    // stored (asking all along would load the database being measured).
    while latencies.lock().map(|l| l.len()).unwrap_or(0) < want as usize {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let u = url.clone();
    tokio::task::spawn_blocking(move || {
        let mut admin = Client::connect(&u, NoTls).expect("connect");
        loop {
            let done: i64 = admin
                .query_one(
                    "SELECT count(*) FROM backstop_queue_deliveries WHERE state = 'done'",
                    &[],
                )
                .map(|r| r.get(0))
                .expect("count");
            if done >= want {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    })
    .await
    .expect("counted");
    let secs = started.elapsed().as_secs_f64();
    shutdown.cancel();
    for r in running {
        let _ = r.await;
    }
    let mut lat = latencies.lock().map(|l| l.clone()).unwrap_or_default();
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len().max(1) - 1) as f64 * p).round() as usize)
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    let mode = if backlog { "backlog" } else { "live" };
    println!(
        "backstop mode={mode} coordinators={coordinators} deliveries={want} secs={secs:.2} \
         rate={:.0} p50_ms={:.1} p99_ms={:.1} submit_secs={submit_secs:.2}",
        want as f64 / secs,
        pct(0.5),
        pct(0.99),
    );
    drop(submitter);
    drop(schema);
}
