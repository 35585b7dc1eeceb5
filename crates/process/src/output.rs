//! What is kept of a command's output: the [`Tail`] of each stream, and
//! standard output [`Held`] back instead of echoed.

use std::io;

/// How much of each output stream is kept by default: 1 MiB.
pub const TAIL: usize = 1 << 20;

/// The most standard output [`crate::Command::hold_stdout`] keeps by
/// default: 16 MiB, far more than any agent's final answer.
pub const MAX_HELD: usize = 16 << 20;

/// The last bytes of an output stream: at most its limit
/// ([`crate::Command::tail_limit`], [`TAIL`] by default).
#[derive(Clone, Debug)]
pub struct Tail {
    bytes: Vec<u8>,
    limit: usize,
    /// Whether earlier bytes were dropped (the first line may be partial).
    pub truncated: bool,
}

impl Default for Tail {
    fn default() -> Self {
        Tail::with_limit(TAIL)
    }
}

impl Tail {
    /// A tail holding `bytes` (for tests and fixtures).
    pub fn from_bytes(bytes: impl Into<Vec<u8>>) -> Self {
        Tail {
            bytes: bytes.into(),
            ..Tail::default()
        }
    }

    /// An empty tail keeping the last `limit` bytes.
    pub(crate) fn with_limit(limit: usize) -> Self {
        Tail {
            bytes: Vec::new(),
            limit,
            truncated: false,
        }
    }

    pub(crate) fn push(&mut self, chunk: &[u8]) {
        self.bytes.extend_from_slice(chunk);
        if self.bytes.len() > 2 * self.limit {
            let cut = self.bytes.len() - self.limit;
            self.bytes.drain(..cut);
            self.truncated = true;
        }
    }

    /// The kept bytes.
    pub fn bytes(&self) -> &[u8] {
        let start = self.bytes.len().saturating_sub(self.limit);
        &self.bytes[start..]
    }

    /// The kept text, line by line (invalid UTF-8 replaced); a partial first
    /// line of a truncated tail is skipped.
    pub fn lines(&self) -> impl Iterator<Item = String> + '_ {
        let text = String::from_utf8_lossy(self.bytes());
        let skip = usize::from(self.truncated || self.bytes.len() > self.limit);
        text.lines()
            .skip(skip)
            .map(str::to_owned)
            .collect::<Vec<_>>()
            .into_iter()
    }
}

/// Standard output held back instead of echoed
/// ([`crate::Command::hold_stdout`]), for the caller to write out or not
/// once it knows whether the run is the one that counts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Held {
    bytes: Vec<u8>,
    len: u64,
    streamed: bool,
}

impl Held {
    /// Output of `bytes` held in full (for tests and fixtures).
    pub fn from_bytes(bytes: impl Into<Vec<u8>>) -> Self {
        let bytes = bytes.into();
        Held {
            len: bytes.len() as u64,
            bytes,
            streamed: false,
        }
    }

    /// The bytes still held (empty once [`Held::streamed`]).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// How many bytes the command printed in all.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether it printed nothing.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the output outgrew the limit and was written out after all
    /// (what was held, then the rest as it came), so nothing is left to
    /// write.
    pub fn streamed(&self) -> bool {
        self.streamed
    }

    /// Writes what is held to `out`.
    pub fn write_to(&self, out: &mut impl std::io::Write) -> io::Result<()> {
        out.write_all(&self.bytes)?;
        out.flush()
    }
}

/// Output being held back, and how much may be.
pub(crate) struct Holding {
    pub(crate) held: Held,
    pub(crate) limit: usize,
}

impl Holding {
    /// Keeps `chunk`; what to write out now, if the limit was outgrown.
    pub(crate) fn keep(&mut self, chunk: &[u8]) -> Option<Vec<u8>> {
        self.held.len += chunk.len() as u64;
        if self.held.streamed {
            return Some(chunk.to_vec());
        }
        self.held.bytes.extend_from_slice(chunk);
        if self.held.bytes.len() <= self.limit {
            return None;
        }
        tracing::warn!(
            "the command printed more than {} MiB; its output is written out as it comes",
            self.limit >> 20
        );
        self.held.streamed = true;
        Some(std::mem::take(&mut self.held.bytes))
    }
}
