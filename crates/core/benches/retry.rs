//! The engine's overhead against a hand-written loop and backon on the same
//! operation: a success on the first try, and three failures then a success
//! with zero delay.
//!
//! Run: `cargo bench -p backstop-core --bench retry`. Figures and ratios are
//! recorded in docs/benchmarks.md.

use std::cell::Cell;
use std::hint::black_box;
use std::io;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use backstop_core::{Class, Policy, classify_io_kind};
use criterion::{Criterion, criterion_group, criterion_main};

const MAX_ATTEMPTS: u32 = 5;

/// The operation: fails `fail_first` times with a reset, then answers.
/// Every contender calls it through the same `Cell` counter.
async fn op(calls: &Cell<u32>, fail_first: u32) -> Result<u64, io::Error> {
    let n = calls.get() + 1;
    calls.set(n);
    if black_box(n) <= fail_first {
        Err(io::Error::from(io::ErrorKind::ConnectionReset))
    } else {
        Ok(black_box(42))
    }
}

fn transient(e: &io::Error) -> bool {
    classify_io_kind(e.kind()).class == Class::Transient
}

/// What a careful caller writes by hand: bounded attempts, a classifier,
/// exponential delays, and no timer for a zero delay.
async fn hand_loop(fail_first: u32, initial: Duration) -> Result<u64, io::Error> {
    let calls = Cell::new(0);
    let mut attempt = 0;
    loop {
        attempt += 1;
        match op(&calls, fail_first).await {
            Ok(v) => return Ok(v),
            Err(e) if attempt < MAX_ATTEMPTS && transient(&e) => {
                let delay = initial * 2u32.pow(attempt - 1);
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
            }
            Err(e) => return Err(e),
        }
    }
}

async fn backstop(policy: &Policy, fail_first: u32) -> Result<u64, io::Error> {
    let calls = Cell::new(0);
    policy
        .retry(|_| op(&calls, fail_first))
        .run()
        .await
        .map_err(|e| {
            e.into_last_error()
                .unwrap_or_else(|| io::Error::other("no error"))
        })
}

async fn backon(builder: ExponentialBuilder, fail_first: u32) -> Result<u64, io::Error> {
    let calls = Cell::new(0);
    (|| op(&calls, fail_first))
        .retry(builder)
        .when(transient)
        .await
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");

    // No per-attempt timeout or deadline: neither backon nor the hand loop
    // has one, so all three do the same work.
    let policy = Policy::api().with_attempt_timeout(None);
    let zero = policy.clone().with_initial_delay(Duration::ZERO);
    let backon_default = ExponentialBuilder::default().with_max_times(MAX_ATTEMPTS as usize - 1);
    let backon_zero = backon_default.with_min_delay(Duration::ZERO);

    let mut g = c.benchmark_group("first_try");
    g.bench_function("hand_loop", |b| {
        b.to_async(&rt)
            .iter(|| async { hand_loop(0, Duration::from_secs(1)).await.unwrap() })
    });
    g.bench_function("backstop", |b| {
        b.to_async(&rt)
            .iter(|| async { backstop(&policy, 0).await.unwrap() })
    });
    g.bench_function("backon", |b| {
        b.to_async(&rt)
            .iter(|| async { backon(backon_default, 0).await.unwrap() })
    });
    g.finish();

    let mut g = c.benchmark_group("three_failures_zero_delay");
    g.bench_function("hand_loop", |b| {
        b.to_async(&rt)
            .iter(|| async { hand_loop(3, Duration::ZERO).await.unwrap() })
    });
    g.bench_function("backstop", |b| {
        b.to_async(&rt)
            .iter(|| async { backstop(&zero, 3).await.unwrap() })
    });
    g.bench_function("backon", |b| {
        b.to_async(&rt)
            .iter(|| async { backon(backon_zero, 3).await.unwrap() })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
