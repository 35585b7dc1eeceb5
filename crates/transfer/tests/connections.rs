//! `--max-connections-per-host`: many files with many streams each never
//! have more requests in flight to one host than the bound, counted by
//! the server, whose replies are delayed so that requests overlap.

mod common;

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use backstop_faultserver::{FaultServer, Reply};
use backstop_transfer::{ConnectionLimit, Options, Sha256};
use common::*;

const FILES: usize = 12;

/// Pulls `FILES` files of 1 MiB, 8 at once with 4 streams each (32
/// requests wanted at once), under a bound of `per_host`; returns the
/// most requests the server answered at once.
async fn peak_with(per_host: usize) -> usize {
    let server = FaultServer::start();
    let mut items = Vec::new();
    let mut bodies = Vec::new();
    for i in 0..FILES {
        let body = data((1 << 20) + i);
        let name = format!("f{i}.bin");
        server.always(
            &format!("/{name}"),
            Reply::file(body.clone()).delay(Duration::from_millis(30)),
        );
        items.push(item(
            &server.url(&format!("/{name}")),
            &name,
            Some(body.len() as u64),
            Some(Sha256::of(&body)),
        ));
        bodies.push(body);
    }
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        jobs: 8,
        streams: 4,
        min_stream_bytes: 256 << 10,
        connections: Arc::new(ConnectionLimit::new(NonZeroUsize::new(per_host).unwrap())),
        ..options()
    };
    let (summary, _) = pull(dir.path(), items, options).await;
    for (i, body) in bodies.iter().enumerate() {
        assert_arrived(&summary, i, &dir.path().join(format!("f{i}.bin")), body);
    }
    assert_eq!(server.requests().len(), FILES * 4, "4 ranges a file");
    server.peak_concurrent()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_times_streams_never_have_more_than_the_bound_in_flight_to_one_host() {
    let peak = peak_with(3).await;
    assert!(peak <= 3, "{peak} requests at once to one host, bound 3");
    assert!(peak >= 2, "the pull ran {peak} request at a time");
}

/// The witness that the test above can fail: with a loose bound the same
/// pull has many more requests in flight at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_loose_bound_the_same_pull_has_more_in_flight() {
    let peak = peak_with(64).await;
    assert!(peak > 3, "only {peak} requests at once with a bound of 64");
}
