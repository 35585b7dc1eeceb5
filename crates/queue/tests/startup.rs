//! A coordinator starting while its store does not answer yet: it listens
//! at once, says `degraded` on `/healthz`, tries again on the core policy's
//! backoff (on a paused clock here), and starts when the store answers; an
//! error that waiting cannot fix ends it at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use backstop_core::Secret;
use backstop_queue::{
    Coordinator, CoordinatorConfig, CoordinatorError, SqliteStore, Store, StoreError,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

fn free_addr() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// `GET path` over plain HTTP/1.0: the status line and the body.
async fn get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    answer
}

/// An opener that fails with `error` until `ready`, counting its tries.
struct Opener {
    tries: watch::Sender<u32>,
    ready: AtomicBool,
    path: std::path::PathBuf,
    error: fn() -> StoreError,
}

impl Opener {
    fn open(&self) -> Result<Arc<dyn Store>, StoreError> {
        self.tries.send_modify(|n| *n += 1);
        if !self.ready.load(Ordering::SeqCst) {
            return Err((self.error)());
        }
        Ok(Arc::new(SqliteStore::open(&self.path)?))
    }
}

fn unreachable() -> StoreError {
    StoreError::Open {
        component: "queue",
        location: "postgres://db.internal:5432/ops".into(),
        source: "connection refused".into(),
    }
}

fn opener(dir: &tempfile::TempDir, error: fn() -> StoreError) -> Arc<Opener> {
    Arc::new(Opener {
        tries: watch::Sender::new(0),
        ready: AtomicBool::new(false),
        path: dir.path().join("q.db"),
        error,
    })
}

#[tokio::test(start_paused = true)]
async fn a_coordinator_waits_for_its_store_degraded_meanwhile_then_starts() {
    let dir = tempfile::tempdir().unwrap();
    let opener = opener(&dir, unreachable);
    let addr = free_addr();
    let config = CoordinatorConfig::new(addr, Secret::new("t0ken"));
    let shutdown = CancellationToken::new();
    let starting = tokio::spawn({
        let (opener, shutdown) = (Arc::clone(&opener), shutdown.clone());
        async move { Coordinator::start_when_ready(move || opener.open(), config, &shutdown).await }
    });
    let mut tries = opener.tries.subscribe();
    tries.wait_for(|n| *n >= 3).await.unwrap();
    let health = get(addr, "/healthz").await;
    assert!(health.starts_with("HTTP/1.0 200"), "{health}");
    assert!(
        health.contains(r#""status":"degraded""#) && health.contains(r#""store":"unreachable""#),
        "{health}"
    );
    let other = get(addr, "/v1/ops").await;
    assert!(other.starts_with("HTTP/1.0 503"), "{other}");
    assert!(
        other
            .to_ascii_lowercase()
            .contains("\r\nretry-after: 1\r\n"),
        "a wait tells clients nothing was done, so that a POST is sent again: {other}"
    );
    opener.ready.store(true, Ordering::SeqCst);
    let coordinator = starting.await.unwrap().unwrap().unwrap();
    assert_eq!(coordinator.addr(), addr, "the same socket");
    let health = get(addr, "/healthz").await;
    assert!(health.contains(r#""status":"ok""#), "{health}");
    coordinator.stop().await;
}

#[tokio::test(start_paused = true)]
async fn an_error_waiting_cannot_fix_ends_the_start_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let opener = opener(&dir, || StoreError::Location {
        component: "queue",
        location: "postgres://(unreadable URL)".into(),
        source: "invalid port".into(),
    });
    let config = CoordinatorConfig::new(free_addr(), Secret::new("t0ken"));
    let o = Arc::clone(&opener);
    let started =
        Coordinator::start_when_ready(move || o.open(), config, &CancellationToken::new()).await;
    assert!(
        matches!(
            started,
            Err(CoordinatorError::Open(StoreError::Location { .. }))
        ),
        "{:?}",
        started.err()
    );
    assert_eq!(*opener.tries.borrow(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_stop_while_waiting_ends_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let opener = opener(&dir, unreachable);
    let config = CoordinatorConfig::new(free_addr(), Secret::new("t0ken"));
    let shutdown = CancellationToken::new();
    let starting = tokio::spawn({
        let (opener, shutdown) = (Arc::clone(&opener), shutdown.clone());
        async move { Coordinator::start_when_ready(move || opener.open(), config, &shutdown).await }
    });
    opener
        .tries
        .subscribe()
        .wait_for(|n| *n >= 1)
        .await
        .unwrap();
    shutdown.cancel();
    let started = starting.await.unwrap();
    assert!(matches!(started, Ok(None)), "{:?}", started.err());
}
