//! A retry budget shared by many calls, so that a fleet of callers cannot
//! turn an outage into a retry storm.

use std::sync::atomic::{AtomicU32, Ordering};

/// Fixed-point scale: one token is 1000 milli-tokens.
const SCALE: u32 = 1000;

/// A token bucket in the style of gRPC retry throttling.
///
/// The bucket starts full. Every failed attempt costs one token, every
/// success refunds `token_ratio` tokens (never above the maximum), and
/// retries are allowed only while more than half the tokens remain. First
/// attempts are never refused: the budget limits *extra* load only. With
/// the defaults (10 tokens, ratio 0.1) a steady stream of calls keeps
/// retrying as long as failures stay below roughly one in ten successes.
///
/// Lock-free: one atomic, updated with compare-and-swap. Share it behind an
/// [`Arc`](std::sync::Arc).
///
/// ```
/// use backstop_core::RetryBudget;
///
/// let budget = RetryBudget::new(4, 0.5);
/// assert!(budget.allows_retry());
/// budget.record_failure();
/// budget.record_failure(); // 2 of 4 left: not more than half
/// assert!(!budget.allows_retry());
/// budget.record_success(); // 2.5 of 4
/// assert!(budget.allows_retry());
/// ```
#[derive(Debug)]
pub struct RetryBudget {
    tokens: AtomicU32,
    max: u32,
    ratio: u32,
}

impl Default for RetryBudget {
    /// 10 tokens, a refund of 0.1 per success: the values of gRPC's own
    /// retry-throttling example.
    fn default() -> Self {
        RetryBudget::new(10, 0.1)
    }
}

impl RetryBudget {
    /// A full bucket of `max_tokens` (1 to 1000, clamped, as gRPC allows),
    /// refunding `token_ratio` tokens per success (clamped to 0.001 – 1).
    pub fn new(max_tokens: u32, token_ratio: f64) -> Self {
        let max = max_tokens.clamp(1, 1000) * SCALE;
        let ratio = if token_ratio.is_finite() {
            (token_ratio.clamp(0.001, 1.0) * f64::from(SCALE)).round() as u32
        } else {
            SCALE
        };
        RetryBudget {
            tokens: AtomicU32::new(max),
            max,
            ratio,
        }
    }

    /// Tokens left, as a fraction.
    pub fn tokens(&self) -> f64 {
        f64::from(self.tokens.load(Ordering::Relaxed)) / f64::from(SCALE)
    }

    /// Whether a retry may start now: more than half the bucket remains.
    pub fn allows_retry(&self) -> bool {
        self.tokens.load(Ordering::Relaxed) > self.max / 2
    }

    /// One attempt failed: costs one token.
    pub fn record_failure(&self) {
        let _ = self
            .tokens
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                Some(t.saturating_sub(SCALE))
            });
    }

    /// One call succeeded: refunds the ratio.
    pub fn record_success(&self) {
        let (max, ratio) = (self.max, self.ratio);
        let _ = self
            .tokens
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                (t < max).then(|| (t + ratio).min(max))
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn stops_below_half_and_recovers() {
        let b = RetryBudget::default();
        for _ in 0..4 {
            b.record_failure();
        }
        assert!(b.allows_retry(), "6 of 10 left");
        b.record_failure();
        assert!(!b.allows_retry(), "5 of 10 is not more than half");
        b.record_success();
        assert!(b.allows_retry(), "5.1 of 10");
    }

    #[test]
    fn never_exceeds_max_nor_goes_negative() {
        let b = RetryBudget::new(3, 1.0);
        for _ in 0..10 {
            b.record_success();
        }
        assert_eq!(b.tokens(), 3.0);
        for _ in 0..10 {
            b.record_failure();
        }
        assert_eq!(b.tokens(), 0.0);
    }

    #[test]
    fn concurrent_updates_are_not_lost() {
        let b = Arc::new(RetryBudget::new(1000, 0.5));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let b = Arc::clone(&b);
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        b.record_failure();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(b.tokens(), 600.0);
    }
}
