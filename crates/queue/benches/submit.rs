//! Submitting on SQLite and on PostgreSQL, one operation per transaction
//! (`Store::submit`) against many per transaction (`Store::submit_all`,
//! what `POST /v1/ops/batch` and `backstop ops submit --from` use): 10,000
//! operations, each with its own key, to 3 nodes (30,000 deliveries), in
//! batches of [`MAX_BATCH`], no dispatcher running. Each case starts on an
//! empty store; the ratio is bulk over one by one, in the same run.
//!
//! `cargo bench -p backstop-queue --bench submit` (`-- --quick` for a
//! tenth of the work). PostgreSQL comes from `BACKSTOP_BENCH_POSTGRES`
//! (default `postgres://postgres@127.0.0.1:5432/test`); each case gets a
//! schema of its own. `BACKEND=sqlite` or `BACKEND=postgres` runs one.

use std::time::{Instant, SystemTime};

use backstop_queue::api::MAX_BATCH;
use backstop_queue::{NewOp, NodeSpec, PostgresStore, SqliteStore, Store};
use backstop_store::postgres::testing::TestSchema;

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let ops = if quick { 1_000 } else { 10_000 };
    let server = std::env::var("BACKSTOP_BENCH_POSTGRES")
        .unwrap_or_else(|_| backstop_store::postgres::testing::server_url());
    let only = std::env::var("BACKEND").ok();
    for backend in ["sqlite", "postgres"] {
        if only.as_deref().is_some_and(|b| b != backend) {
            continue;
        }
        let mut rates = Vec::new();
        for batch in [1, MAX_BATCH] {
            // Kept until the case ends: the store lives in it.
            let dir = tempfile::tempdir().expect("a temporary directory");
            let schema;
            let store: Box<dyn Store> = if backend == "sqlite" {
                Box::new(SqliteStore::open(dir.path().join("bench.db")).expect("open"))
            } else {
                schema = TestSchema::on(&server, "bench_submit");
                Box::new(PostgresStore::open(schema.url()).expect("open"))
            };
            let (cpu, server) = (cpu_seconds("self"), server_cpu_seconds());
            let rate = submit(&*store, ops, batch);
            let server = match backend {
                "postgres" => format!(
                    ", {:.2} s in PostgreSQL's processes",
                    server_cpu_seconds() - server
                ),
                _ => String::new(),
            };
            println!(
                "{backend}: {ops} operations x 3 nodes, {batch} per transaction: {rate:.0} \
                 operations/s ({:.2} s of CPU in this process{server}, for {:.2} s)",
                cpu_seconds("self") - cpu,
                ops as f64 / rate
            );
            rates.push(rate);
        }
        println!("{backend}: bulk {:.1}x one by one", rates[1] / rates[0]);
    }
}

/// Submits `ops` operations to 3 nodes, `batch` per transaction: how many
/// per second.
fn submit(store: &dyn Store, ops: usize, batch: usize) -> f64 {
    for i in 1..=3 {
        let node = NodeSpec {
            name: format!("gpu-{i}"),
            node_type: "gpu".into(),
            kinds: vec!["install".into()],
            capacity: 4,
            transport: "local".into(),
            session: "bench".into(),
            declaration: None,
        }
        .validate()
        .expect("a node");
        store.register(&node, SystemTime::now()).expect("register");
    }
    let all: Vec<NewOp> = (0..ops)
        .map(|i| NewOp::for_type("install", "gpu").key(format!("model-{i}")))
        .collect();
    let started = Instant::now();
    for chunk in all.chunks(batch) {
        let submitted = store
            .submit_all(chunk, SystemTime::now())
            .expect("submitted");
        assert_eq!(submitted.len(), chunk.len());
    }
    ops as f64 / started.elapsed().as_secs_f64()
}

/// CPU time process `pid` (or "self") has used (user and system), in
/// seconds, from `/proc/PID/stat` (ticks of 1/100 s); 0 where there is
/// none. Beside the wall time it shows how much of a run waited for the
/// CPU on a machine busy with other work.
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name (which is in parentheses).
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime: fields 14 and 15 of the line, 12 and 13 here.
    (ticks(11) + ticks(12)) / 100.0
}

/// CPU time used by every `postgres` process on this machine (the server
/// the bench uses, when it is local; whatever else uses it counts too).
fn server_cpu_seconds() -> f64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|pid| pid.bytes().all(|b| b.is_ascii_digit()))
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "postgres")
        })
        .map(|pid| cpu_seconds(&pid))
        .sum()
}
