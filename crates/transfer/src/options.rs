//! How hard a pull tries, and how long it waits.

use std::sync::Arc;
use std::time::Duration;

use backstop_core::{Policy, TRANSFER_MAX_ATTEMPT};

use crate::{ConnectionLimit, RateLimit};

/// The minimum-progress window: a stream that moves fewer than `bytes` in
/// `window`, over however many connections, fails its attempt as too slow
/// (and is retried), even though bytes still trickle in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MinProgress {
    /// Bytes that must arrive within each window.
    pub bytes: u64,
    /// The window.
    pub window: Duration,
}

impl Default for MinProgress {
    /// 1 MiB in 2 minutes: a link slower than about 8.7 KiB/s is no link.
    fn default() -> Self {
        MinProgress {
            bytes: 1 << 20,
            window: Duration::from_secs(120),
        }
    }
}

/// The per-attempt ceiling of a pull.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AttemptTimeout {
    /// [`Policy::transfer_attempt_timeout`] of the bytes one stream still
    /// has to move (its 8 h maximum when the size is unknown): a runaway
    /// guard only, since stalls and slow links are caught
    /// by the read-idle timeout and the minimum-progress window.
    #[default]
    BySize,
    /// This ceiling for every attempt (`None`: none).
    Fixed(Option<Duration>),
}

/// What a pull does and how hard it tries. The defaults are the transfer
/// preset, 4 files at once, one stream per file, at most
/// [`DEFAULT_CONNECTIONS_PER_HOST`](crate::DEFAULT_CONNECTIONS_PER_HOST)
/// connections to one host.
///
/// ```
/// use std::time::Duration;
/// use backstop_transfer::{MinProgress, Options};
///
/// let options = Options {
///     jobs: 8,
///     streams: 4,
///     min_progress: Some(MinProgress { bytes: 1 << 20, window: Duration::from_secs(60) }),
///     ..Options::default()
/// };
/// assert_eq!(options.policy.max_attempts(), 6);
/// ```
#[derive(Clone, Debug)]
pub struct Options {
    /// Files downloaded at once (at least 1).
    pub jobs: usize,
    /// Range streams for one file whose size is known and at least
    /// [`Options::min_stream_bytes`] per stream (at least 1).
    pub streams: usize,
    /// The smallest share of a file worth a stream of its own.
    pub min_stream_bytes: u64,
    /// Attempts and waits of each stream. The attempt count starts again
    /// after real progress: once the stream has moved
    /// [`MinProgress::bytes`] (or [`RESUME_AT_ONCE`](crate::RESUME_AT_ONCE)
    /// without a window) since it last started; a connection that breaks
    /// before that reconnects within the same attempt. Its attempt timeout
    /// is replaced by [`Options::attempt_timeout`].
    pub policy: Policy,
    /// The per-attempt ceiling.
    pub attempt_timeout: AttemptTimeout,
    /// The minimum-progress window; `None` turns it off.
    pub min_progress: Option<MinProgress>,
    /// How often the partial file is synced to disk and its progress
    /// recorded, so that a crash loses at most this much work.
    pub checkpoint_every: Duration,
    /// Trust a file already in place whose size is right, without a hash
    /// to check. Off by default: such a file is kept only when the server
    /// answers a conditional request (with the `ETag` and `Last-Modified`
    /// recorded when it arrived) with 304 Not Modified, and fetched again
    /// otherwise.
    pub skip_existing: bool,
    /// Fetch every file and replace what is in place (`get -o` does):
    /// by default a file already in place with the right size, and digest
    /// when one is known, is kept and not fetched again.
    pub replace_existing: bool,
    /// One byte rate for every stream of every file (`--limit-rate`);
    /// `None`: as fast as the link goes. Time spent waiting for it is not
    /// held against the minimum-progress window.
    pub limit: Option<Arc<RateLimit>>,
    /// The connections open to one host at once, over every file and
    /// stream (`--max-connections-per-host`); shared by every clone of
    /// these options. Time spent waiting for one is not held against the
    /// minimum-progress window.
    pub connections: Arc<ConnectionLimit>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            jobs: 4,
            streams: 1,
            min_stream_bytes: 32 << 20,
            policy: Policy::transfer(0),
            attempt_timeout: AttemptTimeout::BySize,
            min_progress: Some(MinProgress::default()),
            checkpoint_every: Duration::from_secs(2),
            skip_existing: false,
            replace_existing: false,
            limit: None,
            connections: Arc::default(),
        }
    }
}

impl Options {
    /// The policy of a stream that has `bytes` to move.
    pub(crate) fn policy_for(&self, bytes: Option<u64>) -> Policy {
        let timeout = match self.attempt_timeout {
            AttemptTimeout::BySize => {
                let by_size = bytes.map_or(TRANSFER_MAX_ATTEMPT, Policy::transfer_attempt_timeout);
                Some(match (bytes, &self.limit) {
                    (Some(bytes), Some(limit)) => by_size.max(self.limited(bytes, limit)),
                    _ => by_size,
                })
            }
            AttemptTimeout::Fixed(t) => t,
        };
        self.policy.clone().with_attempt_timeout(timeout)
    }

    /// Twice the time `bytes` take when every stream of every job shares
    /// the rate: a runaway guard that the limit itself cannot trip.
    fn limited(&self, bytes: u64, limit: &RateLimit) -> Duration {
        let sharing = (self.jobs.max(1) * self.streams.max(1)) as u128;
        let nanos =
            u128::from(bytes) * sharing * 2 * 1_000_000_000 / u128::from(limit.bytes_per_second());
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}
