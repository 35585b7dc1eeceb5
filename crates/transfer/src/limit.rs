//! One byte rate for a whole run (`--limit-rate`): every stream of every
//! file takes its bytes from one token bucket.

use std::num::NonZeroU64;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

const NANOS: u128 = 1_000_000_000;

/// The smallest burst: a few reads' worth, so that a low rate still lets
/// whole pieces of a body through one at a time rather than a byte at a
/// time.
const MIN_BURST: u64 = 16 << 10;

/// A rate in bytes per second shared by everything that holds it: the
/// streams of every file of a pull take the bytes they received from it,
/// and wait when they are ahead.
///
/// A token bucket that fills at the rate and holds at most a tenth of a
/// second's bytes (at least 16 KiB): over any stretch of time `t`, the
/// bytes let through are at most the burst plus `rate × t`. A taker that
/// asks for more than the bucket holds goes into debt and waits it out, so
/// takers queue behind each other and none is starved. Time is tokio's, so
/// tests run it on a paused clock.
///
/// ```
/// # async fn demo() {
/// use std::num::NonZeroU64;
/// use backstop_transfer::RateLimit;
///
/// let limit = RateLimit::new(NonZeroU64::new(1_000_000).unwrap()); // 1 MB/s
/// let waited = limit.take(64 << 10).await; // waits once the burst is spent
/// # let _ = waited; }
/// ```
#[derive(Debug)]
pub struct RateLimit {
    rate: u64,
    burst: u64,
    bucket: Mutex<Bucket>,
}

/// The bucket's content, in byte-nanoseconds (bytes × 10⁹) so that
/// refilling and waiting are exact integers; negative while in debt.
#[derive(Debug)]
struct Bucket {
    tokens: i128,
    at: Instant,
}

impl RateLimit {
    /// A bucket of `bytes_per_second`, full.
    pub fn new(bytes_per_second: NonZeroU64) -> RateLimit {
        let rate = bytes_per_second.get();
        let burst = (rate / 10).max(MIN_BURST);
        RateLimit {
            rate,
            burst,
            bucket: Mutex::new(Bucket {
                tokens: i128::from(burst) * NANOS as i128,
                at: Instant::now(),
            }),
        }
    }

    /// The rate, in bytes per second.
    pub fn bytes_per_second(&self) -> u64 {
        self.rate
    }

    /// The most bytes let through at once, on top of the rate.
    pub fn burst(&self) -> u64 {
        self.burst
    }

    /// Takes `bytes` from the bucket and waits, when it runs into debt,
    /// until the rate has paid for them. Returns how long it waited.
    /// Dropping the future gives nothing back: the bytes were received.
    pub async fn take(&self, bytes: u64) -> Duration {
        let wait = self.debit(bytes, Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        wait
    }

    /// Refills the bucket up to `now`, takes `bytes`, and says how long
    /// until the debt, if any, is paid.
    fn debit(&self, bytes: u64, now: Instant) -> Duration {
        let mut bucket = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
        let elapsed = now.saturating_duration_since(bucket.at).as_nanos();
        let full = i128::from(self.burst) * NANOS as i128;
        let refill =
            i128::try_from(elapsed.saturating_mul(u128::from(self.rate))).unwrap_or(i128::MAX);
        bucket.tokens = bucket.tokens.saturating_add(refill).min(full);
        bucket.at = now;
        bucket.tokens -= i128::from(bytes) * NANOS as i128;
        if bucket.tokens >= 0 {
            return Duration::ZERO;
        }
        // Rounded up: never let a byte through before its time.
        let debt = bucket.tokens.unsigned_abs();
        let nanos = debt.div_ceil(u128::from(self.rate));
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn limit(rate: u64) -> RateLimit {
        RateLimit::new(NonZeroU64::new(rate).unwrap())
    }

    #[tokio::test(start_paused = true)]
    async fn the_burst_passes_at_once_and_the_rest_at_the_rate() {
        let l = limit(1_000_000);
        assert_eq!(l.burst(), 100_000);
        let start = Instant::now();
        assert_eq!(l.take(100_000).await, Duration::ZERO, "the burst");
        assert_eq!(
            l.take(250_000).await,
            Duration::from_millis(250),
            "250 kB at 1 MB/s"
        );
        // The bucket refilled nothing while it was in debt.
        assert_eq!(l.take(1).await, Duration::from_micros(1));
        let least = Duration::from_nanos(250_001_000);
        let took = start.elapsed();
        assert!(
            took >= least && took < least + Duration::from_millis(1),
            "{took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_bucket_fills_up_to_its_burst_only() {
        let l = limit(1_000_000);
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(l.take(100_000).await, Duration::ZERO);
        assert_eq!(
            l.take(100_000).await,
            Duration::from_millis(100),
            "a minute of idling is not a minute of credit"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn low_rates_round_waits_up() {
        let l = limit(3);
        assert_eq!(l.burst(), MIN_BURST, "at least 16 KiB at once");
        assert_eq!(l.take(MIN_BURST).await, Duration::ZERO);
        // 1 byte at 3 B/s is 333,333,333.3 ns: never early.
        assert_eq!(l.take(1).await, Duration::from_nanos(333_333_334));
    }

    /// Many takers at once share the rate: together they move the burst
    /// plus rate × time, whatever their number.
    #[tokio::test(start_paused = true)]
    async fn concurrent_takers_share_one_rate() {
        let l = Arc::new(limit(1_000_000));
        let start = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let l = Arc::clone(&l);
            tasks.spawn(async move {
                for _ in 0..25 {
                    l.take(16 << 10).await;
                }
            });
        }
        while tasks.join_next().await.is_some() {}
        let moved = 8 * 25 * (16u64 << 10);
        let least = Duration::from_nanos((moved - l.burst()) * 1_000);
        // tokio's timers fire on whole milliseconds; the bucket counts
        // from the real instant, so the rounding never adds up.
        let took = start.elapsed();
        assert!(
            took >= least && took < least + Duration::from_millis(1),
            "{moved} bytes at 1 MB/s took {took:?}"
        );
    }
}
