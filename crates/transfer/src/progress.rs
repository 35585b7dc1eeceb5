//! The progress seam: what a pull tells whoever shows it to a person.

use std::time::Duration;

use crate::FileReport;

/// Receives a pull's progress. `file` is the file's index in the plan.
///
/// Implementations must be cheap: [`Progress::advance`] is called for
/// every piece of every body. `()` ignores everything.
pub trait Progress: Send + Sync {
    /// `bytes` more bytes of `file` are in the partial file.
    fn advance(&self, file: usize, bytes: u64);
    /// Something else happened to `file`.
    fn event(&self, file: usize, event: Event<'_>);
}

/// What happened to a file, besides bytes arriving.
#[derive(Clone, Copy, Debug)]
pub enum Event<'a> {
    /// The file starts (or is found in place): `size` when known, `have`
    /// bytes already in a partial file from an earlier run or attempt.
    Start {
        /// The name in the destination.
        name: &'a str,
        /// The whole size, when known.
        size: Option<u64>,
        /// Bytes kept from before.
        have: u64,
    },
    /// The server told the size.
    Size(u64),
    /// An attempt failed without moving any bytes; the next starts after
    /// `delay`.
    Retry {
        /// The attempt that failed (1-based); the count starts again
        /// after real progress (see [`Options::policy`](crate::Options)).
        attempt: u32,
        /// Attempts allowed before the file fails.
        max_attempts: u32,
        /// A short reason: "HTTP 503", "read timed out".
        reason: &'a str,
        /// The wait before the next attempt.
        delay: Duration,
        /// Whether the server asked for that wait.
        server_wait: bool,
    },
    /// A transfer broke after moving bytes, and continues from byte `at`
    /// with a Range request: at once when it moved at least
    /// [`RESUME_AT_ONCE`](crate::RESUME_AT_ONCE) or the stream made real
    /// progress, else after `delay`.
    Resume {
        /// The byte the next request starts from.
        at: u64,
        /// Why the last one ended.
        reason: &'a str,
        /// The pause before the next request.
        delay: Duration,
    },
    /// What was downloaded is thrown away and the file starts over from
    /// byte 0.
    Restart {
        /// Why ("the server ignored the Range request", "sha256 mismatch").
        reason: &'a str,
    },
    /// The file waits, sending nothing, for something another download
    /// holds (the lock of a blob of the Hugging Face cache, which another
    /// process is writing).
    Waiting {
        /// What it waits for.
        reason: &'a str,
    },
    /// All bytes are in; the size and hash are being checked.
    Verify,
    /// The file is done, one way or another: its report as the summary
    /// will have it (how it ended, the bytes fetched for it).
    Finish(&'a FileReport),
}

impl Progress for () {
    fn advance(&self, _: usize, _: u64) {}
    fn event(&self, _: usize, _: Event<'_>) {}
}
