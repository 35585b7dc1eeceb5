//! The peer of `bench/fanout-pg.sh`: apalis on the same PostgreSQL, its own
//! enqueue and complete path, for as many jobs as backstop delivers.
//!
//! JOBS jobs (default 30,000) with a no-op handler, enqueued three to a
//! call (`push_bulk`, as one backstop operation makes three deliveries in
//! one transaction) by 4 concurrent tasks while WORKERS workers (1 or 2)
//! run, each taking 256 jobs at once in batches of 100 with LISTEN/NOTIFY.
//! Timed from the first enqueue to the last job stored as done; latency
//! from just before its enqueue to its handler's start. With
//! MODE=backlog, every job is enqueued first and the workers are timed
//! from their start.
//!
//! Prints one line: `apalis mode=M workers=N jobs=N secs=S rate=R p50_ms=A p99_ms=B`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use apalis::layers::WorkerBuilderExt;
use apalis::prelude::*;
use apalis_postgres::{Config, PgPool, PostgresStorage};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Job {
    /// Microseconds since the run started, just before the enqueue.
    enqueued_us: u64,
}

static START: OnceLock<Instant> = OnceLock::new();
static LATENCIES: Mutex<Vec<u64>> = Mutex::new(Vec::new());
static HANDLED: AtomicU64 = AtomicU64::new(0);

fn now_us() -> u64 {
    START.get_or_init(Instant::now).elapsed().as_micros() as u64
}

async fn handle(job: Job) -> Result<(), BoxDynError> {
    let waited = now_us().saturating_sub(job.enqueued_us);
    LATENCIES
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(waited);
    HANDLED.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), BoxDynError> {
    let url = std::env::var("BACKSTOP_BENCH_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let jobs: u64 = std::env::var("JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30_000);
    let workers: usize = std::env::var("WORKERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(12)
        .connect(&url)
        .await?;
    PostgresStorage::setup(&pool).await?;
    // Every run deletes its jobs when it ends; the rows they leave dead are
    // cleared before the next one, as autovacuum would on a server that
    // runs it (a test server may not: without this each run starts on a
    // larger table than the last, and apalis slows from run to run).
    sqlx::raw_sql("VACUUM ANALYZE apalis.jobs")
        .execute(&pool)
        .await?;
    let queue = format!("bench-{}-{workers}", std::process::id());
    let config = Config::default().queue(&queue).batch_size(100);
    let backlog = std::env::var("MODE").is_ok_and(|m| m == "backlog");
    START.get_or_init(Instant::now);
    let start_workers = || {
        for i in 0..workers {
            let backend = PostgresStorage::<Job>::new(&pool)
                .with_config(config.clone())
                .with_pubsub();
            let worker = WorkerBuilder::new(format!("peer-{i}"))
                .backend(backend)
                .concurrency(256)
                .build(handle);
            tokio::spawn(async move {
                let _ = worker.run().await;
            });
        }
    };
    if !backlog {
        start_workers();
    }
    let mut started = Instant::now();
    let mut enqueuers = Vec::new();
    let per = jobs / 3 / 4;
    for e in 0..4u64 {
        let pool: PgPool = pool.clone();
        let config = config.clone();
        let calls = if e == 3 { jobs / 3 - per * 3 } else { per };
        enqueuers.push(tokio::spawn(async move {
            let mut sink = PostgresStorage::<Job>::new(&pool).with_config(config);
            for _ in 0..calls {
                let at = now_us();
                let three = vec![Job { enqueued_us: at }; 3];
                sink.push_bulk(three).await?;
            }
            Ok::<(), BoxDynError>(())
        }));
    }
    for e in enqueuers {
        e.await??;
    }
    let enqueued = started.elapsed();
    if backlog {
        started = Instant::now();
        start_workers();
    }
    // Every handler ran; then the database is asked until every job is
    // stored as done (asking all along would load the database measured).
    while HANDLED.load(Ordering::Relaxed) < jobs {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    loop {
        let done: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM apalis.jobs WHERE job_type = $1 AND status = 'Done'",
        )
        .bind(&queue)
        .fetch_one(&pool)
        .await?;
        if done as u64 >= jobs {
            break;
        }
        if started.elapsed() > Duration::from_secs(600) {
            return Err(format!("only {done} of {jobs} jobs done after 10 minutes").into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    let mut lat = LATENCIES.lock().unwrap_or_else(|p| p.into_inner()).clone();
    lat.sort_unstable();
    println!(
        "apalis mode={} workers={workers} jobs={jobs} secs={secs:.2} rate={:.0} p50_ms={:.1} p99_ms={:.1} enqueue_secs={:.2}",
        if backlog { "backlog" } else { "live" },
        jobs as f64 / secs,
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        enqueued.as_secs_f64()
    );
    sqlx::query("DELETE FROM apalis.jobs WHERE job_type = $1")
        .bind(&queue)
        .execute(&pool)
        .await?;
    Ok(())
}
