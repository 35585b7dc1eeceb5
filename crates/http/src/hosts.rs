//! The client's one place for hosts that asked to be left alone: consulted
//! before every request, told after every answer.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use backstop_core::HumanDuration;
use backstop_core::clock::{Clock, SystemClock};
use backstop_core::hosts::{HostCooldowns, HostRefusal, HostsError};
use backstop_core::time::{from_millis, later, to_millis};
use backstop_core::wait::MAX_SIGNAL;

/// The longest a call to the shared store may take; past it the board goes
/// on without the store (for the rest of the process), as after a failure.
pub const SHARED_TIMEOUT: Duration = Duration::from_secs(2);

/// A cooldown this close to its end is waited out before sending, rather
/// than failed as an attempt: the end the board keeps and the wait the
/// retry engine sleeps are measured from moments a little apart.
const SETTLE: Duration = Duration::from_millis(50);

/// Which hosts asked to be left alone, and until when: in this process
/// (every clone of a client shares its board), and, when given a
/// [`HostCooldowns`] store, across every process that shares it (the
/// cooldown ledger).
///
/// - Before a request ([`HostBoard::before`]): a host cooling down is not
///   called; the request fails at once with [`Cooling`], which the retry
///   engine waits out like a server's `Retry-After` (up to its policy's
///   longest server wait) or ends the call with. Nothing is sent.
/// - After a 429, 503 or 529 that says how long to wait
///   ([`HostBoard::refused`]): the host cools until then. A shorter wait
///   never shortens a longer one.
/// - After a success ([`HostBoard::answered`]): the stored cooldown the
///   request waited out is forgotten. A success writes nothing unless an
///   entry was read before the request.
///
/// The store is read once per request, off the async runtime. A store that
/// fails or takes longer than [`SHARED_TIMEOUT`] is reported once, as a
/// warning, and not used again by this board: it never fails a request.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use std::time::Duration;
/// use backstop_http::HostBoard;
///
/// let board = HostBoard::new();
/// let until = board.deadline(Duration::from_secs(30));
/// board.refused("api.example.com", 429, until, "HTTP 429").await;
/// let cooling = board.before("api.example.com").await.unwrap_err();
/// assert_eq!(cooling.until, until);
/// assert!(board.before("other.example.com").await.is_ok());
/// # }
/// ```
pub struct HostBoard {
    /// This process's own knowledge: host → end of its cooldown.
    memory: Mutex<HashMap<String, SystemTime>>,
    shared: Option<Arc<dyn HostCooldowns>>,
    /// Set when the shared store failed: warned about, and not asked again.
    shared_off: AtomicBool,
    shared_timeout: Duration,
    clock: Arc<dyn Clock>,
}

/// What [`HostBoard::before`] read, handed back to
/// [`HostBoard::answered`] after the answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Look {
    /// The end of the host's stored cooldown, when an entry was there.
    stored: Option<SystemTime>,
}

/// A host that must not be called yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cooling {
    /// The host, as shown to people.
    pub host: String,
    /// When its cooldown ends.
    pub until: SystemTime,
    /// How long that is from the moment it was read.
    pub wait: Duration,
}

impl Default for HostBoard {
    fn default() -> Self {
        HostBoard::new()
    }
}

impl fmt::Debug for HostBoard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostBoard")
            .field("shared", &self.shared.is_some())
            .field("shared_off", &self.shared_off.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl HostBoard {
    /// A board for this process alone, on the system clock.
    pub fn new() -> HostBoard {
        HostBoard {
            memory: Mutex::new(HashMap::new()),
            shared: None,
            shared_off: AtomicBool::new(false),
            shared_timeout: SHARED_TIMEOUT,
            clock: Arc::new(SystemClock),
        }
    }

    /// Shares cooldowns through `store` too (the cooldown ledger).
    pub fn with_shared(mut self, store: Arc<dyn HostCooldowns>) -> Self {
        self.shared = Some(store);
        self
    }

    /// How long a call to the shared store may take (default
    /// [`SHARED_TIMEOUT`]).
    pub fn with_shared_timeout(mut self, timeout: Duration) -> Self {
        self.shared_timeout = timeout;
        self
    }

    /// Reads "now" from `clock` (a test's).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The end of a wait of `wait` from now, at millisecond precision and
    /// rounded up (never a moment early), at most a week away
    /// ([`MAX_SIGNAL`]).
    pub fn deadline(&self, wait: Duration) -> SystemTime {
        let exact = later(self.clock.now(), wait.min(MAX_SIGNAL));
        let floor = from_millis(to_millis(exact));
        if floor < exact {
            from_millis(to_millis(exact).saturating_add(1))
        } else {
            exact
        }
    }

    /// Before a request to `host`: `Ok` to send it (keep the [`Look`] for
    /// [`HostBoard::answered`]), or the cooldown that holds it back. A
    /// cooldown within a few milliseconds of its end is waited out here.
    pub async fn before(&self, host: &str) -> Result<Look, Cooling> {
        let now = self.clock.now();
        let (until, look) = match self.remembered(host, now) {
            Some(until) => (Some(until), Look::default()),
            None => {
                let stored = self.shared(host, |s, h| s.until(h)).await.flatten();
                (stored.filter(|t| *t > now), Look { stored })
            }
        };
        let Some(until) = until else {
            return Ok(look);
        };
        let wait = until.duration_since(now).unwrap_or_default();
        if wait <= SETTLE {
            tokio::time::sleep(wait).await;
            return Ok(look);
        }
        self.remember(host, until);
        Err(Cooling {
            host: host.to_owned(),
            until,
            wait,
        })
    }

    /// `host` answered `status` (429, 503, 529) asking to be left alone
    /// until `until` ([`HostBoard::deadline`] of its wait): every request
    /// to it from this board waits until then, and so does every process
    /// sharing the store. `message` is what it said, credentials removed.
    pub async fn refused(&self, host: &str, status: u16, until: SystemTime, message: &str) {
        self.record(
            host,
            HostRefusal {
                status,
                quota: false,
                until,
                from_body: false,
                message: message.to_owned(),
            },
        )
        .await;
    }

    /// As [`HostBoard::refused`], with every detail of the answer.
    pub async fn record(&self, host: &str, refusal: HostRefusal) {
        self.remember(host, refusal.until);
        if let Some(stored) = self.shared(host, move |s, h| s.cool(h, &refusal)).await {
            self.remember(host, stored);
        }
    }

    /// `host` answered a request with a success: the stored cooldown that
    /// `look` read before it, if any, is over and forgotten. Writes nothing
    /// when `look` read no entry.
    pub async fn answered(&self, host: &str, look: Look) {
        if let Some(seen) = look.stored {
            self.shared(host, move |s, h| s.clear(h, seen)).await;
        }
    }

    /// This process's own cooldown of `host`, if it is still running.
    fn remembered(&self, host: &str, now: SystemTime) -> Option<SystemTime> {
        let mut memory = self.memory.lock().unwrap_or_else(|p| p.into_inner());
        match memory.get(host) {
            Some(until) if *until > now => Some(*until),
            Some(_) => {
                memory.remove(host);
                None
            }
            None => None,
        }
    }

    /// Remembers that `host` cools until `until`, unless longer already.
    fn remember(&self, host: &str, until: SystemTime) {
        let mut memory = self.memory.lock().unwrap_or_else(|p| p.into_inner());
        let end = memory.entry(host.to_owned()).or_insert(until);
        if *end < until {
            *end = until;
        }
    }

    /// Runs `call` on the shared store off the runtime, within
    /// the timeout; `None` when there is no store, or it failed
    /// (then it is reported once and left alone from now on).
    async fn shared<T, F>(&self, host: &str, call: F) -> Option<T>
    where
        T: Send + 'static,
        F: FnOnce(&dyn HostCooldowns, &str) -> Result<T, HostsError> + Send + 'static,
    {
        let store = Arc::clone(self.shared.as_ref()?);
        if self.shared_off.load(Ordering::Acquire) {
            return None;
        }
        let host = host.to_owned();
        let task = tokio::task::spawn_blocking(move || call(&*store, &host));
        let failure = match tokio::time::timeout(self.shared_timeout, task).await {
            Ok(Ok(Ok(value))) => return Some(value),
            Ok(Ok(Err(e))) => backstop_core::with_causes(&*e),
            Ok(Err(e)) => format!("the call to the store failed: {e}"),
            Err(_) => format!(
                "the store did not answer within {}",
                HumanDuration(self.shared_timeout)
            ),
        };
        if !self.shared_off.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                "hosts' cooldowns are not shared by this process from now on: {failure}"
            );
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use backstop_core::time::format_rfc3339;
    use tokio::time::Instant;

    use super::*;

    /// Wall-clock time that moves with tokio's (paused) clock.
    struct TokioClock {
        start: SystemTime,
        at: Instant,
    }

    impl TokioClock {
        fn new() -> Arc<TokioClock> {
            Arc::new(TokioClock {
                start: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
                at: Instant::now(),
            })
        }
    }

    impl Clock for TokioClock {
        fn now(&self) -> SystemTime {
            self.start + self.at.elapsed()
        }
    }

    /// A shared store in memory, counting its calls, failing on demand.
    #[derive(Default)]
    struct Store {
        rows: Mutex<HashMap<String, SystemTime>>,
        reads: AtomicUsize,
        writes: AtomicUsize,
        broken: AtomicBool,
    }

    impl Store {
        fn row(&self, host: &str) -> Option<SystemTime> {
            self.rows.lock().unwrap().get(host).copied()
        }
        fn check(&self) -> Result<(), HostsError> {
            if self.broken.load(Ordering::SeqCst) {
                return Err("the ledger at sqlite:/x cannot be read: not a database".into());
            }
            Ok(())
        }
    }

    impl HostCooldowns for Store {
        fn until(&self, host: &str) -> Result<Option<SystemTime>, HostsError> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            self.check()?;
            Ok(self.row(host))
        }
        fn cool(&self, host: &str, refusal: &HostRefusal) -> Result<SystemTime, HostsError> {
            self.writes.fetch_add(1, Ordering::SeqCst);
            self.check()?;
            let mut rows = self.rows.lock().unwrap();
            let end = rows.entry(host.to_owned()).or_insert(refusal.until);
            *end = (*end).max(refusal.until);
            Ok(*end)
        }
        fn clear(&self, host: &str, seen: SystemTime) -> Result<bool, HostsError> {
            self.writes.fetch_add(1, Ordering::SeqCst);
            self.check()?;
            let mut rows = self.rows.lock().unwrap();
            if rows.get(host).is_some_and(|end| *end <= seen) {
                rows.remove(host);
                return Ok(true);
            }
            Ok(false)
        }
    }

    fn board(store: &Arc<Store>, clock: &Arc<TokioClock>) -> HostBoard {
        HostBoard::new()
            .with_shared(Arc::clone(store) as Arc<dyn HostCooldowns>)
            .with_clock(Arc::clone(clock) as Arc<dyn Clock>)
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_in_one_process_holds_another_until_its_end() {
        let (store, clock) = (Arc::new(Store::default()), TokioClock::new());
        let (first, second) = (board(&store, &clock), board(&store, &clock));
        let until = first.deadline(Duration::from_secs(5));
        first.refused("hf.co", 429, until, "HTTP 429").await;
        assert_eq!(store.row("hf.co"), Some(until));

        let cooling = second.before("hf.co").await.unwrap_err();
        assert_eq!(cooling.until, until);
        assert_eq!(cooling.wait, Duration::from_secs(5));
        assert_eq!(cooling.host, "hf.co");
        assert!(second.before("other.example").await.is_ok());

        tokio::time::sleep(Duration::from_secs(3)).await;
        let cooling = second.before("hf.co").await.unwrap_err();
        assert_eq!(cooling.wait, Duration::from_secs(2));

        tokio::time::sleep(cooling.wait).await;
        let look = second.before("hf.co").await.expect("over");
        assert_eq!(look.stored, Some(until), "the entry is still there");
        second.answered("hf.co", look).await;
        assert_eq!(store.row("hf.co"), None, "a success clears it");
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_writes_nothing_when_no_entry_was_read() {
        let (store, clock) = (Arc::new(Store::default()), TokioClock::new());
        let board = board(&store, &clock);
        for _ in 0..3 {
            let look = board.before("hf.co").await.unwrap();
            board.answered("hf.co", look).await;
        }
        assert_eq!(store.reads.load(Ordering::SeqCst), 3, "one read a request");
        assert_eq!(store.writes.load(Ordering::SeqCst), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_keeps_a_cooldown_written_after_it_looked() {
        let (store, clock) = (Arc::new(Store::default()), TokioClock::new());
        let (first, second) = (board(&store, &clock), board(&store, &clock));
        first
            .refused("hf.co", 429, first.deadline(Duration::from_secs(1)), "")
            .await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let look = second.before("hf.co").await.unwrap();
        // Meanwhile another request of another process is refused again.
        let later = first.deadline(Duration::from_secs(30));
        first.refused("hf.co", 429, later, "").await;
        second.answered("hf.co", look).await;
        assert_eq!(store.row("hf.co"), Some(later));
    }

    #[tokio::test(start_paused = true)]
    async fn a_shorter_wait_never_shortens_a_longer_one() {
        let (store, clock) = (Arc::new(Store::default()), TokioClock::new());
        let board = board(&store, &clock);
        let long = board.deadline(Duration::from_secs(60));
        board.refused("hf.co", 429, long, "").await;
        board
            .refused("hf.co", 503, board.deadline(Duration::from_secs(2)), "")
            .await;
        assert_eq!(board.before("hf.co").await.unwrap_err().until, long);
        assert_eq!(store.row("hf.co"), Some(long));
    }

    #[tokio::test(start_paused = true)]
    async fn the_last_milliseconds_are_waited_out_in_place() {
        let (store, clock) = (Arc::new(Store::default()), TokioClock::new());
        let board = board(&store, &clock);
        let until = board.deadline(Duration::from_millis(20));
        board.refused("hf.co", 429, until, "").await;
        let start = Instant::now();
        board.before("hf.co").await.expect("no attempt spent");
        assert_eq!(start.elapsed(), Duration::from_millis(20));
        assert!(clock.now() >= until);
    }

    #[tokio::test(start_paused = true)]
    async fn a_broken_store_is_reported_once_and_the_board_goes_on_alone() {
        let (store, clock) = (Arc::new(Store::default()), TokioClock::new());
        store.broken.store(true, Ordering::SeqCst);
        let board = board(&store, &clock);
        assert!(board.before("hf.co").await.is_ok(), "never fails a request");
        assert!(board.shared_off.load(Ordering::SeqCst));
        let until = board.deadline(Duration::from_secs(5));
        board.refused("hf.co", 429, until, "").await;
        assert_eq!(store.reads.load(Ordering::SeqCst), 1, "not asked again");
        assert_eq!(store.writes.load(Ordering::SeqCst), 0);
        assert_eq!(
            board.before("hf.co").await.unwrap_err().until,
            until,
            "this process still holds the host"
        );
    }

    #[tokio::test]
    async fn a_store_that_hangs_is_given_up_on() {
        /// Answers only once the test lets it.
        struct Hanging(Mutex<std::sync::mpsc::Receiver<()>>);
        impl HostCooldowns for Hanging {
            fn until(&self, _: &str) -> Result<Option<SystemTime>, HostsError> {
                let _ = self.0.lock().unwrap().recv();
                Ok(None)
            }
            fn cool(&self, _: &str, r: &HostRefusal) -> Result<SystemTime, HostsError> {
                Ok(r.until)
            }
            fn clear(&self, _: &str, _: SystemTime) -> Result<bool, HostsError> {
                Ok(false)
            }
        }
        let (release, held) = std::sync::mpsc::channel();
        let board = HostBoard::new()
            .with_shared(Arc::new(Hanging(Mutex::new(held))))
            .with_shared_timeout(Duration::from_millis(20));
        assert!(board.before("hf.co").await.is_ok(), "while the store hangs");
        assert!(board.shared_off.load(Ordering::SeqCst));
        release.send(()).unwrap();
    }

    /// The requests of one client, through the board it shares.
    mod through_the_client {
        use backstop_core::{Ending, Jitter, Policy};
        use backstop_faultserver::{FaultServer, Reply};

        use super::*;
        use crate::{Client, Error};

        fn client(store: &Arc<Store>) -> Client {
            let board = HostBoard::new().with_shared(Arc::clone(store) as Arc<dyn HostCooldowns>);
            Client::builder()
                .policy(
                    Policy::api()
                        .with_initial_delay(Duration::from_millis(1))
                        .with_jitter(Jitter::None),
                )
                .host_board(Arc::new(board))
                .build()
                .unwrap()
        }

        #[tokio::test]
        async fn a_429_to_one_client_holds_another_sharing_the_store() {
            let server = FaultServer::start();
            server.script("/api", [Reply::status(429).header("Retry-After", "1")]);
            server.always("/api", Reply::ok("fine"));
            let store = Arc::new(Store::default());
            let (first, second) = (client(&store), client(&store));
            let (refused, heard) = tokio::sync::oneshot::channel();
            let mut refused = Some(refused);
            let url = server.url("/api");
            let one = first
                .get(&url)
                .on_retry(move |_| {
                    if let Some(tx) = refused.take() {
                        let _ = tx.send(());
                    }
                })
                .bytes();
            let two = async {
                heard.await.unwrap();
                assert!(
                    store.row(&server.addr().to_string()).is_some(),
                    "recorded before the first client waits"
                );
                let reasons = Arc::new(Mutex::new(Vec::new()));
                let seen = Arc::clone(&reasons);
                let body = second
                    .get(&url)
                    .on_retry(move |e| seen.lock().unwrap().push(e.reason.to_owned()))
                    .bytes()
                    .await;
                (body, reasons)
            };
            let (one, (two, reasons)) = tokio::join!(one, two);
            assert_eq!(&one.unwrap().bytes[..], b"fine");
            assert_eq!(&two.unwrap().bytes[..], b"fine");
            let requests = server.requests();
            assert_eq!(requests.len(), 3, "{requests:?}");
            let refused_at = requests[0].at;
            for later in &requests[1..] {
                let gap = later.at.duration_since(refused_at).unwrap();
                assert!(gap >= Duration::from_secs(1), "sent {gap:?} after the 429");
            }
            let reasons = reasons.lock().unwrap();
            assert_eq!(reasons.len(), 1, "{reasons:?}");
            assert!(reasons[0].starts_with("cooling down until "), "{reasons:?}");
            assert_eq!(
                store.row(&server.addr().to_string()),
                None,
                "a success cleared it"
            );
        }

        #[tokio::test]
        async fn a_cooldown_longer_than_the_policy_sits_through_ends_the_call_unsent() {
            let server = FaultServer::start();
            server.always("/api", Reply::ok("fine"));
            let store = Arc::new(Store::default());
            let host = server.addr().to_string();
            let until = SystemTime::now() + Duration::from_secs(600);
            store.rows.lock().unwrap().insert(host.clone(), until);
            let err = client(&store)
                .get(&server.url("/api"))
                .bytes()
                .await
                .unwrap_err();
            assert!(server.requests().is_empty(), "nothing sent");
            let Error::Call { source, .. } = &err else {
                panic!("{err:?}")
            };
            assert!(
                matches!(source.ending, Ending::RateLimited { wait: Some(w) } if w > Duration::from_secs(590)),
                "{:?}",
                source.ending
            );
            assert_eq!(source.attempts, 1);
            let cause = std::error::Error::source(&err).unwrap().to_string();
            assert!(
                cause.starts_with(&format!(
                    "{host} is cooling down until {}",
                    format_rfc3339(until)
                )),
                "{cause}"
            );
        }

        #[tokio::test]
        async fn one_client_holds_its_own_requests_after_a_429() {
            let server = FaultServer::start();
            server.script(
                "/a",
                [
                    Reply::status(503).header("Retry-After", "1"),
                    Reply::ok("a"),
                ],
            );
            server.always("/b", Reply::ok("b"));
            let client = Client::builder()
                .policy(Policy::api().with_max_attempts(1))
                .build()
                .unwrap();
            let err = client.get(&server.url("/a")).bytes().await.unwrap_err();
            assert!(
                matches!(err.ending(), Some(Ending::Overloaded { .. })),
                "{err}"
            );
            let err = client.get(&server.url("/b")).bytes().await.unwrap_err();
            assert!(
                matches!(err.ending(), Some(Ending::RateLimited { .. })),
                "{err}"
            );
            assert_eq!(server.hits("/b"), 0, "the host is held, path or not");
        }
    }

    #[test]
    fn deadlines_round_up_to_the_millisecond() {
        let clock = Arc::new(backstop_core::clock::ManualClock::new(
            SystemTime::UNIX_EPOCH + Duration::from_nanos(1_700_000_000_000_000_001),
        ));
        let board = HostBoard::new().with_clock(clock);
        let until = board.deadline(Duration::from_secs(5));
        assert_eq!(format_rfc3339(until), "2023-11-14T22:13:25Z");
        assert_eq!(
            until,
            SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_005_001)
        );
        let far = board.deadline(Duration::MAX);
        assert_eq!(
            far.duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_secs(),
            1_700_000_000 + MAX_SIGNAL.as_secs()
        );
    }
}
