//! What a command reads on standard input, and the [`Replay`] that gives
//! every attempt the same input.

use std::io;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

/// What the command reads on standard input.
#[derive(Clone, Debug)]
pub enum Input {
    /// Our own standard input (a terminal).
    Inherit,
    /// Nothing.
    Null,
    /// A copy of our standard input, replayed in full to every attempt.
    Replay(Arc<Replay>),
}

/// Standard input read once and replayed to each attempt, so that
/// `cat prompt.md | backstop run ... -- claude -p` still has its prompt when
/// it falls back to another model. The first attempt is fed as the input
/// arrives.
#[derive(Debug)]
pub struct Replay {
    state: Mutex<(Vec<u8>, bool)>,
    changed: watch::Sender<usize>,
}

/// The most standard input kept for replay.
pub const MAX_REPLAY: usize = 64 << 20;

impl Replay {
    /// Starts reading `input` in the background.
    pub fn start<R: AsyncRead + Unpin + Send + 'static>(mut input: R) -> Arc<Replay> {
        let (changed, _) = watch::channel(0);
        let replay = Arc::new(Replay {
            state: Mutex::new((Vec::new(), false)),
            changed,
        });
        let writer = Arc::clone(&replay);
        tokio::spawn(async move {
            let mut buf = vec![0u8; 64 << 10];
            loop {
                let n = match input.read(&mut buf).await {
                    Ok(0) | Err(_) => 0,
                    Ok(n) => n,
                };
                let mut state = writer.lock();
                if n == 0 {
                    state.1 = true;
                } else if state.0.len() + n > MAX_REPLAY {
                    tracing::warn!(
                        "standard input is larger than {} MiB; only that much is replayed",
                        MAX_REPLAY >> 20
                    );
                    state.1 = true;
                } else {
                    state.0.extend_from_slice(&buf[..n]);
                }
                let (len, done) = (state.0.len(), state.1);
                drop(state);
                writer.changed.send_replace(len);
                if done {
                    return;
                }
            }
        });
        replay
    }

    /// Replays a fixed input: a payload, or a prompt in a test.
    pub fn fixed(bytes: impl Into<Vec<u8>>) -> Arc<Replay> {
        let (changed, _) = watch::channel(0);
        Arc::new(Replay {
            state: Mutex::new((bytes.into(), true)),
            changed,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (Vec<u8>, bool)> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes everything read so far, and the rest as it arrives, then
    /// closes `to`.
    pub(crate) async fn feed<W: AsyncWrite + Unpin>(&self, mut to: W) -> io::Result<()> {
        let mut sent = 0;
        let mut changes = self.changed.subscribe();
        loop {
            let (chunk, done) = {
                let state = self.lock();
                (state.0[sent..].to_vec(), state.1)
            };
            if !chunk.is_empty() {
                to.write_all(&chunk).await?;
                sent += chunk.len();
            }
            if done && chunk.is_empty() {
                break;
            }
            if !done && changes.changed().await.is_err() {
                break;
            }
        }
        to.shutdown().await
    }
}
