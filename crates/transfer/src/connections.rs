//! A bound on the connections a pull opens to one host at once
//! (`--max-connections-per-host`): every request of every file and stream
//! to that host takes a permit first and holds it until its body is read
//! or given up.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use url::Url;

/// The default bound: 16 connections to one host, aria2c's ceiling for
/// `-x` (its `--max-connection-per-server` refuses more) and what
/// throttling CDNs tolerate; enough for `--jobs 16` of small files, or
/// `--streams 8` of two large files at once.
pub const DEFAULT_CONNECTIONS_PER_HOST: u16 = 16;

/// At most so many requests in flight to one host (scheme, host and port)
/// at once, shared by everything that holds it: the files of a pull with
/// `--jobs` and the Range streams of each with `--streams` take a permit
/// for each request and keep it while its body arrives, so the jobs times
/// the streams never open more than the bound to one server. A request
/// that waits for a permit waits its turn (tokio's semaphore is fair).
///
/// The connection pool reuses an idle connection before it opens another
/// (HTTP keep-alive), so the connections open to a host are those in
/// flight. A redirect is followed under the permit of the host asked
/// first.
///
/// ```
/// # async fn demo() {
/// use std::num::NonZeroUsize;
/// use backstop_transfer::ConnectionLimit;
///
/// let limit = ConnectionLimit::new(NonZeroUsize::new(2).unwrap());
/// let url = "https://example.com/a.bin".parse().unwrap();
/// let first = limit.acquire(&url).await;
/// let second = limit.acquire(&url).await;
/// assert_eq!(limit.available(&url), 0); // a third waits for one of these
/// # drop((first, second)); }
/// ```
#[derive(Debug)]
pub struct ConnectionLimit {
    per_host: usize,
    hosts: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl Default for ConnectionLimit {
    /// [`DEFAULT_CONNECTIONS_PER_HOST`].
    fn default() -> Self {
        ConnectionLimit {
            per_host: usize::from(DEFAULT_CONNECTIONS_PER_HOST),
            hosts: Mutex::default(),
        }
    }
}

/// A request's permit to a host: the connection it is on counts until
/// this is dropped.
#[derive(Debug)]
pub struct ConnectionPermit {
    _permit: OwnedSemaphorePermit,
    waited: Duration,
}

impl ConnectionPermit {
    /// How long the request waited for the permit (other requests to the
    /// host held them all).
    pub fn waited(&self) -> Duration {
        self.waited
    }
}

impl ConnectionLimit {
    /// At most `per_host` connections to each host.
    pub fn new(per_host: NonZeroUsize) -> Self {
        ConnectionLimit {
            per_host: per_host.get(),
            hosts: Mutex::default(),
        }
    }

    /// The bound.
    pub fn per_host(&self) -> usize {
        self.per_host
    }

    /// Waits until fewer than the bound of requests to `url`'s host are in
    /// flight, and counts one more until the permit is dropped. Dropping
    /// the future while it waits takes nothing.
    pub async fn acquire(&self, url: &Url) -> ConnectionPermit {
        let started = Instant::now();
        let semaphore = self.semaphore(url);
        let permit = semaphore
            .acquire_owned()
            .await
            // Never closed: the semaphore lives in the map for good.
            .unwrap_or_else(|_| unreachable!("a host's semaphore is never closed"));
        ConnectionPermit {
            _permit: permit,
            waited: started.elapsed(),
        }
    }

    /// Permits of `url`'s host not taken now.
    pub fn available(&self, url: &Url) -> usize {
        self.semaphore(url).available_permits()
    }

    fn semaphore(&self, url: &Url) -> Arc<Semaphore> {
        let key = format!(
            "{}://{}:{}",
            url.scheme(),
            url.host_str().unwrap_or_default(),
            url.port_or_known_default().unwrap_or_default()
        );
        let mut hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(
            hosts
                .entry(key)
                .or_insert_with(|| Arc::new(Semaphore::new(self.per_host))),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(n: usize) -> ConnectionLimit {
        ConnectionLimit::new(NonZeroUsize::new(n).unwrap())
    }

    fn url(s: &str) -> Url {
        s.parse().unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_host_s_requests_wait_beyond_the_bound_and_others_do_not() {
        let l = Arc::new(limit(2));
        let a = url("http://a.example/x");
        let held = [l.acquire(&a).await, l.acquire(&a).await];
        assert_eq!(
            l.available(&url("http://a.example:80/other")),
            0,
            "same host and port"
        );
        // Another port, scheme or host is another server.
        for other in [
            "http://a.example:8080/x",
            "https://a.example/x",
            "http://b.example/x",
        ] {
            assert_eq!(l.available(&url(other)), 2, "{other}");
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let waiter = tokio::spawn({
            let l = Arc::clone(&l);
            let a = a.clone();
            async move {
                let p = l.acquire(&a).await;
                tx.send(p.waited()).unwrap();
            }
        });
        tokio::time::sleep(Duration::from_secs(3)).await;
        let [first, _second] = held;
        drop(first);
        assert_eq!(
            rx.await.unwrap(),
            Duration::from_secs(3),
            "it waited for a permit"
        );
        waiter.await.unwrap();
    }

    #[test]
    fn the_default_is_sixteen() {
        assert_eq!(ConnectionLimit::default().per_host(), 16);
    }
}
