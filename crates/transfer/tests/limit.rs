//! One rate for a whole pull, on tokio's paused clock: a server in the
//! test's own runtime answers at once, so every moment that passes is the
//! limit's doing.

mod common;

use std::num::NonZeroU64;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use backstop_transfer::{MinProgress, Options, RateLimit};
use common::{assert_arrived, data, item};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

const SIZE: usize = 400_000;

/// Serves `body` for every path, whole and at once, counting requests.
async fn serve(body: Arc<Vec<u8>>) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let requests = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&requests);
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let (body, counted) = (Arc::clone(&body), Arc::clone(&counted));
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.ends_with(b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                counted.fetch_add(1, Ordering::SeqCst);
                let headers = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
                let _ = conn.write_all(headers.as_bytes()).await;
                let _ = conn.write_all(&body).await;
            });
        }
    });
    (base, requests)
}

/// Three files at once share 300 kB/s: together they take the time the
/// rate says, not a third of it. Each stream moves about 100 kB/s, below
/// a minimum progress of 200 kB/s; being held back is not being slow, so
/// no stream is cut and every file arrives with one request.
#[tokio::test(start_paused = true)]
async fn every_file_of_a_pull_shares_one_rate() {
    let body = Arc::new(data(SIZE));
    let (base, requests) = serve(Arc::clone(&body)).await;
    let dir = tempfile::tempdir().unwrap();
    let limit = Arc::new(RateLimit::new(NonZeroU64::new(300_000).unwrap()));
    let options = Options {
        jobs: 3,
        min_progress: Some(MinProgress {
            bytes: 200_000,
            window: Duration::from_secs(1),
        }),
        limit: Some(Arc::clone(&limit)),
        ..common::options()
    };
    let items = ["a.bin", "b.bin", "c.bin"]
        .map(|name| item(&format!("{base}/{name}"), name, Some(SIZE as u64), None))
        .to_vec();
    let started = Instant::now();
    let (summary, events) = common::pull(dir.path(), items, options).await;
    let took = started.elapsed();
    for (i, name) in ["a.bin", "b.bin", "c.bin"].iter().enumerate() {
        assert_arrived(&summary, i, &dir.path().join(name), &body);
    }
    assert_eq!(
        requests.load(Ordering::SeqCst),
        3,
        "never cut: {:?}",
        events.lines()
    );
    let least = Duration::from_secs_f64((3 * SIZE) as f64 / 300_000.0)
        - Duration::from_secs_f64(limit.burst() as f64 / 300_000.0);
    assert!(took >= least, "1.2 MB at 300 kB/s took {took:?}");
}
