//! Headway: whether a transfer moves forward fast enough, and how soon it
//! goes again after a break. One mechanism for both directions: a pull's
//! Range streams and a push's upload sessions.
//!
//! - The minimum-progress window ([`Headway::count`]): a transfer that
//!   moves fewer than [`MinProgress::bytes`] in [`MinProgress::window`],
//!   over however many connections, fails its attempt as
//!   [`TransferFailure::TooSlow`] (to be retried with backoff), even though
//!   bytes still trickle in.
//! - Going again after a break ([`resume_delay`]): at once when the broken
//!   connection had moved at least [`RESUME_AT_ONCE`], else after one first
//!   backoff of the policy, so that a server which takes a few bytes and
//!   cuts every connection is not hammered.
//! - Real progress ([`real_progress`]): the bytes after which the attempt
//!   count starts again.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use backstop_core::Policy;
use tokio::time::Instant;

use crate::{MinProgress, TransferFailure};

/// A connection that moved at least this much before it broke is resumed
/// at once; one that moved less waits one first backoff before the next.
/// Without a minimum-progress window, it is also the real progress after
/// which a transfer's attempt count starts again.
pub const RESUME_AT_ONCE: u64 = 64 << 10;

/// The minimum-progress window of one transfer (a pull's stream, a push's
/// blob). It spans reconnections, and starts again after the wait that
/// follows a failed attempt ([`Headway::restart`]). Time runs on tokio's
/// clock, so a test pauses it.
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// use std::time::Duration;
/// use backstop_transfer::{Headway, MinProgress, TransferFailure};
///
/// let min = MinProgress { bytes: 1 << 20, window: Duration::from_secs(60) };
/// let headway = Headway::new();
/// headway.begin();
/// assert!(headway.count(min, 512 << 10).is_ok(), "the window is still open");
/// tokio::time::advance(Duration::from_secs(61)).await;
/// assert!(matches!(headway.count(min, 0), Err(TransferFailure::TooSlow { .. })));
/// # }
/// ```
#[derive(Debug)]
pub struct Headway {
    window: Mutex<Window>,
    fresh: AtomicBool,
}

#[derive(Clone, Copy, Debug)]
struct Window {
    started: Instant,
    bytes: u64,
}

impl Default for Headway {
    fn default() -> Self {
        Headway::new()
    }
}

impl Headway {
    /// A window that opens at the first [`Headway::begin`].
    pub fn new() -> Headway {
        Headway {
            window: Mutex::new(Window {
                started: Instant::now(),
                bytes: 0,
            }),
            fresh: AtomicBool::new(true),
        }
    }

    fn window(&self) -> std::sync::MutexGuard<'_, Window> {
        self.window.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// At the start of an attempt: opens a new window when none is open
    /// yet or the last attempt failed.
    pub fn begin(&self) {
        if self.fresh.swap(false, Ordering::AcqRel) {
            *self.window() = Window {
                started: Instant::now(),
                bytes: 0,
            };
        }
    }

    /// An attempt failed: the wait before the next is not held against
    /// the window, which opens again at the next [`Headway::begin`].
    pub fn restart(&self) {
        self.fresh.store(true, Ordering::Release);
    }

    /// Counts `bytes` moved (0 to look only): `Err` when a window closed
    /// with fewer than the minimum; a window that closed with enough
    /// starts the next.
    pub fn count(&self, min: MinProgress, bytes: u64) -> Result<(), TransferFailure> {
        let mut w = self.window();
        w.bytes += bytes;
        let now = Instant::now();
        if now.duration_since(w.started) < min.window {
            return Ok(());
        }
        if w.bytes < min.bytes {
            return Err(TransferFailure::TooSlow {
                bytes: w.bytes,
                window: min.window,
            });
        }
        *w = Window {
            started: now,
            bytes: 0,
        };
        Ok(())
    }

    /// Time spent held back on purpose (by the run's rate limit, or
    /// waiting for a connection to the host) is not the other side's
    /// slowness: the window does not count it.
    pub fn excuse(&self, waited: Duration) {
        if !waited.is_zero() {
            self.window().started += waited;
        }
    }
}

/// The pause before going again after a connection that moved `moved`
/// bytes broke: none from [`RESUME_AT_ONCE`] on, else one first backoff of
/// `policy`, jittered as it says (even when it allows one attempt).
pub fn resume_delay(moved: u64, policy: &Policy) -> Duration {
    if moved >= RESUME_AT_ONCE {
        return Duration::ZERO;
    }
    policy
        .clone()
        .with_max_attempts(2)
        .delays()
        .next()
        .unwrap_or_default()
}

/// The bytes a transfer moves before its attempt count starts again: the
/// window's minimum, or [`RESUME_AT_ONCE`] without a window.
pub fn real_progress(min: Option<MinProgress>) -> u64 {
    min.map_or(RESUME_AT_ONCE, |m| m.bytes.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_window_counts_bytes_over_time() {
        let min = MinProgress {
            bytes: 100,
            window: Duration::from_secs(10),
        };
        let h = Headway::new();
        h.begin();
        assert!(h.count(min, 10).is_ok(), "the window is still open");
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(
            matches!(
                h.count(min, 10),
                Err(TransferFailure::TooSlow { bytes: 20, .. })
            ),
            "20 bytes in 11 s is too slow"
        );
        let h = Headway::new();
        h.begin();
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(
            h.count(min, 500).is_ok(),
            "fast enough; a new window starts"
        );
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(h.count(min, 1).is_ok());
        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(h.count(min, 1).is_err(), "2 bytes in the second window");
    }

    /// Between two connections no byte arrives, and the window is looked
    /// at all the same: bytes from every connection count, and time spent
    /// reconnecting counts too.
    #[tokio::test(start_paused = true)]
    async fn the_window_spans_reconnections() {
        let min = MinProgress {
            bytes: 100 << 10,
            window: Duration::from_secs(15),
        };
        let h = Headway::new();
        h.begin();
        for _ in 0..5 {
            assert!(h.count(min, 1024).is_ok(), "a connection's 1 KiB");
            tokio::time::advance(Duration::from_secs(3)).await;
            if let Err(slow) = h.count(min, 0) {
                assert!(
                    matches!(slow, TransferFailure::TooSlow { bytes: 5120, .. }),
                    "{slow}"
                );
                return;
            }
        }
        panic!("five connections of 1 KiB in 15 s are below 100 KiB/15 s");
    }

    /// After a failed attempt, the window opens again when the next one
    /// begins: the wait in between is not held against it.
    #[tokio::test(start_paused = true)]
    async fn a_failed_attempt_s_wait_is_not_held_against_the_next_window() {
        let min = MinProgress {
            bytes: 100,
            window: Duration::from_secs(10),
        };
        let h = Headway::new();
        h.begin();
        h.restart();
        tokio::time::advance(Duration::from_secs(30)).await;
        h.begin();
        assert!(h.count(min, 0).is_ok(), "a new window has just opened");
        h.begin();
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(h.count(min, 0).is_err(), "begin without restart keeps it");
    }

    /// A transfer held back by the run's rate limit moves slowly because
    /// it is told to: only the time it was not held back counts.
    #[tokio::test(start_paused = true)]
    async fn time_held_back_by_the_rate_limit_is_not_held_against_the_window() {
        let min = MinProgress {
            bytes: 100,
            window: Duration::from_secs(10),
        };
        let h = Headway::new();
        h.begin();
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(h.count(min, 10).is_ok());
        tokio::time::advance(Duration::from_secs(9)).await;
        h.excuse(Duration::from_secs(9));
        assert!(
            h.count(min, 10).is_ok(),
            "2 s of the window's 10 have passed, not 11"
        );
        tokio::time::advance(Duration::from_secs(8)).await;
        assert!(
            matches!(
                h.count(min, 10),
                Err(TransferFailure::TooSlow { bytes: 30, .. })
            ),
            "10 s of its own, 30 bytes"
        );
    }

    #[test]
    fn real_progress_is_the_window_s_bytes_or_64_kib_without_one() {
        let min = MinProgress {
            bytes: 100 << 10,
            window: Duration::from_secs(15),
        };
        assert_eq!(real_progress(Some(min)), 100 << 10);
        assert_eq!(real_progress(None), RESUME_AT_ONCE);
    }

    #[test]
    fn a_break_after_64_kib_goes_again_at_once_and_one_before_waits_a_first_backoff() {
        let policy = Policy::transfer(0);
        assert_eq!(resume_delay(RESUME_AT_ONCE, &policy), Duration::ZERO);
        assert!(resume_delay(RESUME_AT_ONCE - 1, &policy) > Duration::ZERO);
    }
}
