//! End-to-end fan-out on SQLite with no-op handlers:
//!
//! 1. Throughput: 10,000 operations to 3 local nodes (30,000 deliveries),
//!    submitted while the dispatcher runs, timed from the first submit to
//!    the last delivery stored as done: submitted one per transaction, then
//!    in batches of [`MAX_BATCH`] (`Store::submit_all`, what
//!    `POST /v1/ops/batch` runs), and the ratio of the two.
//! 2. Dispatch latency with history: one due delivery claimed, run and
//!    stored, with no finished deliveries in the table and with 1,000,000.
//!
//! `cargo bench -p backstop-queue --bench fanout` (add `-- --quick` for a
//! tenth of the work).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use backstop_core::clock::SystemClock;
use backstop_queue::api::MAX_BATCH;
use backstop_queue::handler::{Handler, Noop};
use backstop_queue::store::OpFilter;
use backstop_queue::transport::Transport;
use backstop_queue::transport::local::{LocalNode, LocalTransport};
use backstop_queue::{DispatchConfig, Dispatcher, NewOp, Schedule, SqliteStore, Store};
use tokio_util::sync::CancellationToken;

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let ops = if quick { 1_000 } else { 10_000 };
    let history = if quick { 100_000 } else { 1_000_000 };
    let one = runtime.block_on(throughput(ops, 1));
    let bulk = runtime.block_on(throughput(ops, MAX_BATCH));
    println!("throughput: in batches {:.2}x one by one", bulk / one);
    runtime.block_on(latency(history));
}

fn nodes(capacity: u32) -> Vec<LocalNode> {
    (1..=3)
        .map(|i| {
            LocalNode::new(format!("gpu-{i}"), "gpu", capacity)
                .handle("install", Arc::new(Noop) as Arc<dyn Handler>)
        })
        .collect()
}

fn dispatcher(store: &Arc<dyn Store>, nodes: &[LocalNode]) -> Dispatcher {
    for node in nodes {
        store
            .register(&node.spec, SystemTime::now())
            .expect("register");
    }
    let transport: Arc<dyn Transport> =
        Arc::new(LocalTransport::new(nodes, CancellationToken::new()));
    Dispatcher::new(
        Arc::clone(store),
        vec![transport],
        Arc::new(Schedule::default()),
        Arc::new(SystemClock),
        DispatchConfig::default(),
    )
}

/// Deliveries per second end to end, `batch` operations submitted per
/// transaction.
async fn throughput(ops: usize, batch: usize) -> f64 {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(dir.path().join("bench.db")).expect("open"));
    let d = dispatcher(&store, &nodes(256));
    let shutdown = CancellationToken::new();
    let running = tokio::spawn({
        let (d, s) = (d.clone(), shutdown.clone());
        async move { d.run(s).await }
    });
    let started = Instant::now();
    let submitter = {
        let store = Arc::clone(&store);
        let waker = d.waker();
        tokio::task::spawn_blocking(move || {
            let all: Vec<NewOp> = (0..ops)
                .map(|i| NewOp::for_type("install", "gpu").key(format!("model-{i}")))
                .collect();
            for chunk in all.chunks(batch) {
                store.submit_all(chunk, SystemTime::now()).expect("submit");
                waker.notify_one();
            }
        })
    };
    submitter.await.expect("submitted");
    let submitted = started.elapsed();
    let want = ops as u64 * 3;
    loop {
        let s = Arc::clone(&store);
        let done: u64 = tokio::task::spawn_blocking(move || {
            s.ops(&OpFilter {
                limit: u32::MAX,
                ..OpFilter::default()
            })
            .expect("list")
            .iter()
            .map(|o| o.deliveries.done)
            .sum()
        })
        .await
        .expect("counted");
        if done >= want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    shutdown.cancel();
    let _ = running.await;
    let rate = want as f64 / elapsed.as_secs_f64();
    println!(
        "throughput: {ops} operations x 3 nodes = {want} deliveries, {batch} per transaction, \
         in {:.2} s: {rate:.0} deliveries/s (submitting alone: {:.2} s, {:.0} operations/s)",
        elapsed.as_secs_f64(),
        submitted.as_secs_f64(),
        ops as f64 / submitted.as_secs_f64()
    );
    rate
}

async fn latency(history: usize) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("bench.db");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).expect("open"));
    let d = dispatcher(&store, &nodes(4));
    let empty = measure(&store, &d).await;
    fill(&path, history);
    let full = measure(&store, &d).await;
    println!(
        "dispatch one due delivery (claim, run, store): median {:.0} µs with an empty history, \
         {:.0} µs with {history} finished deliveries ({:.2}x)",
        empty.as_secs_f64() * 1e6,
        full.as_secs_f64() * 1e6,
        full.as_secs_f64() / empty.as_secs_f64()
    );
}

/// The median time of one dispatch round with one delivery due.
async fn measure(store: &Arc<dyn Store>, d: &Dispatcher) -> Duration {
    let mut times = Vec::new();
    for i in 0..300 {
        let op = NewOp::for_type("install", "gpu").key(format!("probe-{i}"));
        let mut named = op.clone();
        named.target = backstop_queue::Target::Nodes(vec!["gpu-1".into()]);
        store.submit(&named, SystemTime::now()).expect("submit");
        let started = Instant::now();
        let round = d.step().await.expect("a round");
        times.push(started.elapsed());
        assert_eq!(round.len(), 1);
    }
    times.sort();
    times[times.len() / 2]
}

/// Adds `n` finished deliveries (and their operations) straight into the
/// database.
fn fill(path: &std::path::Path, n: usize) {
    let mut conn = rusqlite::Connection::open(path).expect("open");
    let tx = conn.transaction().expect("a transaction");
    {
        let mut op = tx
            .prepare(
                "INSERT INTO backstop_queue_ops (kind, node_type, nodes, present_only, op_key,
                 payload, live, created_ms) VALUES ('install', 'gpu', NULL, 0, ?1, '{}', 0, 0)",
            )
            .expect("prepare");
        let mut delivery = tx
            .prepare(
                "INSERT INTO backstop_queue_deliveries (op, node, kind, op_key, state, attempt,
                 failures, tries, next_at_ms, created_ms, updated_ms, finished_ms)
                 VALUES (?1, ?2, 'install', ?3, 'done', 1, 0, 0, 0, 0, 0, 0)",
            )
            .expect("prepare");
        for i in 0..n / 3 {
            let key = format!("old-{i}");
            op.execute([&key]).expect("insert");
            let id = tx.last_insert_rowid();
            for node in ["gpu-1", "gpu-2", "gpu-3"] {
                delivery
                    .execute(rusqlite::params![id, node, key])
                    .expect("insert");
            }
        }
    }
    tx.commit().expect("commit");
    conn.execute_batch("ANALYZE").expect("analyze");
}
