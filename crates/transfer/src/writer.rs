//! The thread that writes a file's bytes: positional writes from any
//! number of streams into a regular file, or writes in order through
//! anything else (a FIFO, a device); the sha256 of the in-order prefix
//! computed on the way (on a thread of its own, so hashing and writing
//! overlap), and what is written published for checkpoints.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use sha2::Digest;
use tokio::sync::{mpsc, oneshot};

use crate::{Sha256, TransferFailure};

/// Writes are gathered to this size before they go to the thread.
const GATHER: usize = 1 << 20;
/// Gathered writes in flight per file before the streams wait.
const IN_FLIGHT: usize = 8;
/// Read size when hashing bytes back from the file.
const READ: usize = 1 << 20;
/// Written pieces waiting for the hasher before the writer waits.
const HASH_QUEUE: usize = 16;
/// Piece buffers kept for reuse in the process, once written (and
/// hashed): enough for 16 files at once of the sizes a model repository
/// holds, or 4 large files each with a full queue to its writer.
const SPARES: usize = 32;

/// Piece buffers done with, for any file's streams to gather into again:
/// a buffer reused is memory the process already has, where a new one is
/// fresh pages the kernel must fault in and zero (about 6 % of a verified
/// pull's CPU time, measured, and more with many small files, each of
/// which would otherwise start on new buffers). At most [`SPARES`] are
/// kept.
#[derive(Default)]
struct Spares(Mutex<Vec<BytesMut>>);

/// The spares of every writer of the process.
static SHARED: Spares = Spares(Mutex::new(Vec::new()));

impl Spares {
    /// A buffer of [`GATHER`] bytes' room: a spare, or a new one.
    fn take(&self) -> BytesMut {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
            .unwrap_or_else(|| BytesMut::with_capacity(GATHER))
    }

    /// Keeps `data`'s buffer when nothing else holds it and there is
    /// room; drops it otherwise.
    fn keep(&self, data: Bytes) {
        let Ok(mut buf) = data.try_into_mut() else {
            return;
        };
        buf.clear();
        let mut spares = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if buf.capacity() >= GATHER && spares.len() < SPARES {
            spares.push(buf);
        }
    }
}

enum Op {
    Write { stream: usize, at: u64, data: Bytes },
    Truncate(u64),
}

/// What the hasher thread is told, in the order the writer did it.
enum HashOp {
    Written { at: u64, data: Bytes },
    Truncated(u64),
}

/// The running hash of a file's bytes `0..upto`.
#[derive(Clone)]
pub(crate) struct Hashed {
    hasher: sha2::Sha256,
    upto: u64,
}

impl Default for Hashed {
    fn default() -> Self {
        Hashed {
            hasher: sha2::Sha256::new(),
            upto: 0,
        }
    }
}

impl Hashed {
    /// Takes in what the writer did: bytes that continue the in-order
    /// prefix are hashed, a truncation below it starts over.
    fn apply(&mut self, op: &HashOp) {
        match op {
            HashOp::Written { at, data } => {
                if self.upto == *at {
                    self.hasher.update(data);
                    self.upto += data.len() as u64;
                }
            }
            HashOp::Truncated(len) => {
                if self.upto > *len {
                    *self = Hashed::default();
                }
            }
        }
    }

    /// Hashes the file's bytes `upto..end` and returns the digest of
    /// `0..end`.
    pub(crate) fn finish(mut self, file: &File, end: u64) -> io::Result<Sha256> {
        self.catch_up(file, end)?;
        Ok(Sha256(self.hasher.finalize().into()))
    }

    fn catch_up(&mut self, file: &File, to: u64) -> io::Result<()> {
        let mut buf = vec![0u8; READ];
        while self.upto < to {
            let want = usize::try_from(to - self.upto).unwrap_or(READ).min(READ);
            let n = file.read_at(&mut buf[..want], self.upto)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the partial file is shorter than its record",
                ));
            }
            self.hasher.update(&buf[..n]);
            self.upto += n as u64;
        }
        Ok(())
    }
}

/// What the writer publishes for checkpoints.
pub(crate) struct Written {
    /// Per stream, the end of what it has written.
    ends: Vec<AtomicU64>,
    /// Bumped by every truncation: a checkpoint that saw another
    /// generation describes bytes that are gone.
    generation: AtomicU64,
    error: Mutex<Option<io::Error>>,
}

impl Written {
    /// The generation and each stream's end, as of now.
    pub(crate) fn snapshot(&self) -> (u64, Vec<u64>) {
        let generation = self.generation.load(Ordering::Acquire);
        let ends = self
            .ends
            .iter()
            .map(|e| e.load(Ordering::Acquire))
            .collect();
        (generation, ends)
    }

    /// The current generation.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
}

/// The writer of one file, for one round of streams.
pub(crate) struct Writer {
    tx: mpsc::Sender<Op>,
    written: Arc<Written>,
    /// What the thread ends with, sent as it ends.
    done: oneshot::Receiver<io::Result<Option<Hashed>>>,
}

/// How a [`Writer`] starts: where each stream begins, what it hashes,
/// and the record it deletes on every truncation.
pub(crate) struct WriterConfig<'a> {
    /// Where each stream's bytes begin, one entry per stream.
    pub(crate) starts: &'a [u64],
    /// With a hash state, the in-order prefix is hashed as it is written.
    pub(crate) hashed: Option<Hashed>,
    /// With `hashed`, the bytes already in the file up to here are hashed
    /// first.
    pub(crate) catch_up: Option<u64>,
    /// The resume record, deleted on every truncation.
    pub(crate) record: Option<PathBuf>,
}

impl Writer {
    /// Starts the thread for `file` as `config` says.
    ///
    /// A `file` that is not a regular file (a FIFO, a device) cannot seek:
    /// it takes one stream's bytes in order, and a truncation that would
    /// take back bytes already written fails.
    pub(crate) fn start(file: Arc<File>, config: WriterConfig<'_>) -> Writer {
        let WriterConfig {
            starts,
            hashed,
            catch_up,
            record,
        } = config;
        let (tx, mut rx) = mpsc::channel::<Op>(IN_FLIGHT);
        let written = Arc::new(Written {
            ends: starts.iter().map(|s| AtomicU64::new(*s)).collect(),
            generation: AtomicU64::new(0),
            error: Mutex::new(None),
        });
        let shared = Arc::clone(&written);
        let (report, done) = oneshot::channel();
        // A thread of its own rather than one of tokio's blocking pool: it
        // lives as long as the streams, and a paused test clock must be
        // able to move meanwhile.
        std::thread::spawn(move || {
            // The hasher runs beside the writer, fed the same pieces in
            // the same order; it catches up on earlier bytes first.
            let hasher = hashed.map(|mut h| {
                let (to_hasher, from_writer) = std::sync::mpsc::sync_channel::<HashOp>(HASH_QUEUE);
                let file = Arc::clone(&file);
                let thread = std::thread::spawn(move || -> io::Result<Hashed> {
                    if let Some(to) = catch_up {
                        h.catch_up(&file, to)?;
                    }
                    for op in from_writer {
                        h.apply(&op);
                        if let HashOp::Written { data, .. } = op {
                            SHARED.keep(data);
                        }
                    }
                    Ok(h)
                });
                (to_hasher, thread)
            });
            // The hasher has the last use of a written piece, if there is
            // one; else the piece is done with once written.
            let feed = |op: HashOp| match &hasher {
                // A hasher that stopped reports its error when joined.
                Some((tx, _)) => {
                    let _ = tx.send(op);
                }
                None => {
                    if let HashOp::Written { data, .. } = op {
                        SHARED.keep(data);
                    }
                }
            };
            let seekable = file.metadata().is_ok_and(|m| m.is_file());
            let mut through = 0u64;
            let mut run = || -> io::Result<()> {
                while let Some(op) = rx.blocking_recv() {
                    match op {
                        Op::Write { stream, at, data } => {
                            if seekable {
                                file.write_all_at(&data, at)?;
                            } else if at == through {
                                (&*file).write_all(&data)?;
                                through += data.len() as u64;
                            } else {
                                return Err(io::Error::new(
                                    io::ErrorKind::Unsupported,
                                    format!(
                                        "bytes from {at} cannot follow the {through} already written: the output cannot seek"
                                    ),
                                ));
                            }
                            if let Some(end) = shared.ends.get(stream) {
                                end.store(at + data.len() as u64, Ordering::Release);
                            }
                            feed(HashOp::Written { at, data });
                        }
                        Op::Truncate(len) if !seekable => {
                            if len < through {
                                return Err(io::Error::new(
                                    io::ErrorKind::Unsupported,
                                    format!(
                                        "cannot start over: {through} bytes are already written to an output that is not a regular file"
                                    ),
                                ));
                            }
                        }
                        Op::Truncate(len) => {
                            shared.generation.fetch_add(1, Ordering::AcqRel);
                            if let Some(record) = &record {
                                match std::fs::remove_file(record) {
                                    Err(e) if e.kind() != io::ErrorKind::NotFound => {
                                        return Err(e);
                                    }
                                    _ => {}
                                }
                            }
                            file.set_len(len)?;
                            for end in &shared.ends {
                                end.fetch_min(len, Ordering::AcqRel);
                            }
                            feed(HashOp::Truncated(len));
                        }
                    }
                }
                Ok(())
            };
            let wrote = run();
            let hashed = match hasher {
                None => Ok(None),
                Some((tx, thread)) => {
                    drop(tx);
                    match thread.join() {
                        Ok(result) => result.map(Some),
                        Err(_) => Err(io::Error::other("the hashing thread panicked")),
                    }
                }
            };
            let result = match wrote.and(hashed) {
                Ok(hashed) => Ok(hashed),
                Err(e) => {
                    let copy = io::Error::new(e.kind(), e.to_string());
                    *shared.error.lock().unwrap_or_else(|p| p.into_inner()) = Some(copy);
                    Err(e)
                }
            };
            // Nobody waits for a writer that was dropped.
            let _ = report.send(result);
        });
        Writer { tx, written, done }
    }

    /// What is written so far, for checkpoints.
    pub(crate) fn written(&self) -> &Arc<Written> {
        &self.written
    }

    async fn send(&self, op: Op) -> Result<(), TransferFailure> {
        if self.tx.send(op).await.is_ok() {
            return Ok(());
        }
        let error = self
            .written
            .error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .unwrap_or_else(|| io::Error::other("the writer stopped"));
        Err(TransferFailure::Local(error))
    }

    /// Cuts the file to `len` bytes (0: starting over), forgetting its
    /// record.
    pub(crate) async fn truncate(&self, len: u64) -> Result<(), TransferFailure> {
        self.send(Op::Truncate(len)).await
    }

    /// Waits for every write, and returns the hash state.
    pub(crate) async fn finish(self) -> io::Result<Option<Hashed>> {
        drop(self.tx);
        self.done
            .await
            .map_err(|_| io::Error::other("the writer thread stopped without a word"))?
    }
}

/// One stream's bytes on their way to the writer: gathered, then sent in
/// pieces of about [`GATHER`] bytes. `at` is where the gathered bytes go.
pub(crate) struct Pending<'w> {
    writer: &'w Writer,
    stream: usize,
    at: u64,
    buf: BytesMut,
}

impl<'w> Pending<'w> {
    pub(crate) fn new(writer: &'w Writer, stream: usize, at: u64) -> Self {
        Pending {
            writer,
            stream,
            at,
            buf: BytesMut::new(),
        }
    }

    /// Adds bytes; sends the gathered ones each time there are
    /// [`GATHER`]. Returns the position up to which bytes are with the
    /// writer, when some were sent.
    ///
    /// Each piece is gathered in a buffer of [`GATHER`] bytes' room, one a
    /// writer of the process is done with when there is one: a buffer left
    /// to grow would be reallocated and copied on each doubling (about one
    /// more copy of every byte) and could end at twice the size.
    pub(crate) async fn push(&mut self, mut data: &[u8]) -> Result<Option<u64>, TransferFailure> {
        let mut sent = None;
        while !data.is_empty() {
            if self.buf.capacity() == 0 {
                self.buf = SHARED.take();
            }
            let take = (GATHER - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() >= GATHER {
                sent = Some(self.flush().await?);
            }
        }
        Ok(sent)
    }

    /// Nothing is gathered and not yet sent.
    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Sends what is gathered; returns the position up to which bytes are
    /// with the writer.
    pub(crate) async fn flush(&mut self) -> Result<u64, TransferFailure> {
        if !self.buf.is_empty() {
            let data = self.buf.split().freeze();
            let len = data.len() as u64;
            self.writer
                .send(Op::Write {
                    stream: self.stream,
                    at: self.at,
                    data,
                })
                .await?;
            self.at += len;
        }
        Ok(self.at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_piece_done_with_is_gathered_into_again() {
        let spares = Spares::default();
        let mut piece = spares.take();
        piece.extend_from_slice(&[7; GATHER]);
        let at = piece.as_ptr();
        spares.keep(piece.freeze());
        assert_eq!(spares.0.lock().unwrap().len(), 1);
        let again = spares.take();
        assert_eq!(again.as_ptr(), at, "the same memory, not fresh pages");
        assert!(again.is_empty() && again.capacity() >= GATHER);
    }

    #[test]
    fn a_piece_still_held_elsewhere_is_not_kept() {
        let spares = Spares::default();
        let mut piece = spares.take();
        piece.extend_from_slice(&[7; GATHER]);
        let piece = piece.freeze();
        let held = piece.clone();
        spares.keep(piece);
        assert!(spares.0.lock().unwrap().is_empty());
        assert_ne!(spares.take().as_ptr(), held.as_ptr());
        // At most SPARES are kept, however many come back.
        for _ in 0..SPARES + 3 {
            let mut p = BytesMut::with_capacity(GATHER);
            p.extend_from_slice(&[1]);
            spares.keep(p.freeze());
        }
        assert_eq!(spares.0.lock().unwrap().len(), SPARES);
    }
}
