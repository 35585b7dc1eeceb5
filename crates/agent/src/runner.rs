//! Running a command: its output streamed through unchanged and kept for
//! classification, a watchdog for silence, stdin replayed across attempts,
//! and a clean stop (TERM, then KILL) of its whole process group.

use std::ffi::OsString;
use std::io;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How much of each output stream is kept for classification.
pub const TAIL: usize = 1 << 20;

/// The most standard output [`Command::hold_stdout`] keeps by default:
/// 16 MiB, far more than any agent's final answer.
pub const MAX_HELD: usize = 16 << 20;

/// How long a stopped command has between TERM and KILL.
pub const KILL_GRACE: Duration = Duration::from_secs(10);

/// How long to wait for output pipes after the command exits (a background
/// grandchild may hold them open forever).
const DRAIN: Duration = Duration::from_secs(2);

/// The last bytes of an output stream.
#[derive(Clone, Debug, Default)]
pub struct Tail {
    bytes: Vec<u8>,
    /// Whether earlier bytes were dropped (the first line may be partial).
    pub truncated: bool,
}

impl Tail {
    /// A tail holding `bytes` (for tests and fixtures).
    pub fn from_bytes(bytes: impl Into<Vec<u8>>) -> Self {
        Tail {
            bytes: bytes.into(),
            truncated: false,
        }
    }

    fn push(&mut self, chunk: &[u8]) {
        self.bytes.extend_from_slice(chunk);
        if self.bytes.len() > 2 * TAIL {
            let cut = self.bytes.len() - TAIL;
            self.bytes.drain(..cut);
            self.truncated = true;
        }
    }

    /// The kept bytes.
    pub fn bytes(&self) -> &[u8] {
        let start = self.bytes.len().saturating_sub(TAIL);
        &self.bytes[start..]
    }

    /// The kept text, line by line (invalid UTF-8 replaced); a partial first
    /// line of a truncated tail is skipped.
    pub fn lines(&self) -> impl Iterator<Item = String> + '_ {
        let text = String::from_utf8_lossy(self.bytes());
        let skip = usize::from(self.truncated || self.bytes.len() > TAIL);
        text.lines()
            .skip(skip)
            .map(str::to_owned)
            .collect::<Vec<_>>()
            .into_iter()
    }
}

/// Standard output held back instead of echoed ([`Command::hold_stdout`]),
/// for the caller to write out or not once it knows whether the run is
/// the one that counts.
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

/// How the command ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// It exited with this code.
    Code(i32),
    /// A signal ended it.
    Signal(i32),
}

impl Exit {
    /// The exit code a shell would report: the code, or 128 + the signal.
    pub fn shell_code(self) -> i32 {
        match self {
            Exit::Code(c) => c,
            Exit::Signal(s) => 128 + s,
        }
    }

    /// Whether it exited 0.
    pub fn success(self) -> bool {
        self == Exit::Code(0)
    }
}

/// What happened during one run.
#[derive(Clone, Debug)]
pub struct Transcript {
    /// How it ended.
    pub exit: Exit,
    /// The end of its standard output.
    pub stdout: Tail,
    /// The end of its standard error.
    pub stderr: Tail,
    /// The watchdog stopped it after a silence of the idle timeout.
    pub stalled: bool,
    /// The caller cancelled it (Ctrl-C).
    pub interrupted: bool,
    /// How long it ran.
    pub elapsed: Duration,
    /// Its standard output, when held back instead of echoed.
    pub held: Option<Held>,
}

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

    /// Replays a fixed input (for tests).
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
    async fn feed<W: AsyncWrite + Unpin>(&self, mut to: W) -> io::Result<()> {
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

/// A command to run.
#[derive(Clone, Debug)]
pub struct Command {
    program: OsString,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    idle_timeout: Option<Duration>,
    kill_grace: Duration,
    input: Input,
    echo: bool,
    hold: Option<usize>,
}

impl Command {
    /// `program` with `args`; output echoed to ours, no watchdog, no input.
    pub fn new(
        program: impl Into<OsString>,
        args: impl IntoIterator<Item = impl Into<OsString>>,
    ) -> Self {
        Command {
            program: program.into(),
            args: args.into_iter().map(Into::into).collect(),
            env: Vec::new(),
            idle_timeout: None,
            kill_grace: KILL_GRACE,
            input: Input::Null,
            echo: true,
            hold: None,
        }
    }

    /// Sets an environment variable for the command.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Stops the command when it prints nothing, on either stream, for
    /// this long.
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Time between TERM and KILL when stopping it.
    pub fn kill_grace(mut self, grace: Duration) -> Self {
        self.kill_grace = grace;
        self
    }

    /// Its standard input.
    pub fn input(mut self, input: Input) -> Self {
        self.input = input;
        self
    }

    /// Whether its output goes on to ours (default) or is only kept.
    pub fn echo(mut self, echo: bool) -> Self {
        self.echo = echo;
        self
    }

    /// Holds its standard output back instead of echoing it, up to
    /// `limit` bytes ([`MAX_HELD`] is a good one), in [`Transcript::held`].
    /// Output beyond the limit is not lost: what was held is written to our
    /// standard output then, and the rest streams ([`Held::streamed`]).
    /// Standard error still streams.
    pub fn hold_stdout(mut self, limit: usize) -> Self {
        self.hold = Some(limit);
        self
    }

    /// Runs it to the end. Its output streams through to ours byte for
    /// byte as it comes. The command runs in its own process group, so a
    /// stop reaches whatever it started too. `cancel` sends it SIGINT, then
    /// SIGKILL after the grace period.
    pub async fn run(&self, cancel: &CancellationToken) -> io::Result<Transcript> {
        let started = Instant::now();
        let mut command = tokio::process::Command::new(&self.program);
        command
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(match &self.input {
                Input::Inherit => Stdio::inherit(),
                Input::Null => Stdio::null(),
                Input::Replay(_) => Stdio::piped(),
            })
            .kill_on_drop(true);
        #[cfg(unix)]
        command.process_group(0);
        let mut child = command.spawn()?;
        let group = child.id().and_then(|id| i32::try_from(id).ok());

        let (activity, mut heard) = watch::channel(());
        let stdout = Arc::new(Mutex::new(Tail::default()));
        let stderr = Arc::new(Mutex::new(Tail::default()));
        let mut pumps = Vec::new();
        let held = self.hold.map(|limit| {
            Arc::new(Mutex::new(Holding {
                held: Held::default(),
                limit,
            }))
        });
        if let Some(out) = child.stdout.take() {
            let sink: Option<Box<dyn AsyncWrite + Unpin + Send>> =
                (self.echo || held.is_some()).then(|| Box::new(tokio::io::stdout()) as _);
            pumps.push(tokio::spawn(pump(
                out,
                sink,
                held.clone(),
                Arc::clone(&stdout),
                activity.clone(),
            )));
        }
        if let Some(err) = child.stderr.take() {
            let sink: Option<Box<dyn AsyncWrite + Unpin + Send>> =
                self.echo.then(|| Box::new(tokio::io::stderr()) as _);
            pumps.push(tokio::spawn(pump(
                err,
                sink,
                None,
                Arc::clone(&stderr),
                activity.clone(),
            )));
        }
        drop(activity);
        if let (Input::Replay(replay), Some(stdin)) = (&self.input, child.stdin.take()) {
            let replay = Arc::clone(replay);
            // A command that exits without reading all its input breaks the
            // pipe: not an error of ours.
            tokio::spawn(async move { replay.feed(stdin).await.ok() });
        }

        let mut stalled = false;
        let mut interrupted = false;
        let mut streams_open = true;
        let mut last_heard = Instant::now();
        let mut kill_at: Option<Instant> = None;
        let far = Duration::from_secs(365 * 24 * 3600);
        // An idle timeout of any size (`--idle-timeout 99999999h`) is "far".
        let after = |at: Instant, d: Duration| at.checked_add(d.min(far)).unwrap_or(at);
        let status = loop {
            let idle_deadline = match (self.idle_timeout, kill_at) {
                (Some(idle), None) => after(last_heard, idle),
                _ => after(Instant::now(), far),
            };
            let kill_deadline = kill_at.unwrap_or_else(|| after(Instant::now(), far));
            tokio::select! {
                status = child.wait() => break status?,
                changed = heard.changed(), if streams_open => {
                    match changed {
                        Ok(()) => last_heard = Instant::now(),
                        // Both streams closed; only the exit is left to wait for.
                        Err(_) => streams_open = false,
                    }
                }
                () = tokio::time::sleep_until(idle_deadline) => {
                    stalled = true;
                    tracing::warn!(
                        "{} printed nothing for {}; stopping it",
                        self.program.to_string_lossy(),
                        backstop_core::HumanDuration(self.idle_timeout.unwrap_or_default())
                    );
                    signal_group(group, Stop::Terminate);
                    kill_at = Some(after(Instant::now(), self.kill_grace));
                }
                () = cancel.cancelled(), if !interrupted => {
                    interrupted = true;
                    signal_group(group, Stop::Interrupt);
                    kill_at = Some(after(Instant::now(), self.kill_grace));
                }
                () = tokio::time::sleep_until(kill_deadline) => {
                    signal_group(group, Stop::Kill);
                    kill_at = Some(after(Instant::now(), far));
                }
            }
        };
        for pump in pumps {
            let _ = tokio::time::timeout(DRAIN, pump).await;
        }
        let exit = exit_of(status);
        let take = |tail: &Arc<Mutex<Tail>>| {
            std::mem::take(&mut *tail.lock().unwrap_or_else(|p| p.into_inner()))
        };
        Ok(Transcript {
            exit,
            stdout: take(&stdout),
            stderr: take(&stderr),
            stalled,
            interrupted,
            elapsed: started.elapsed(),
            held: held
                .map(|h| std::mem::take(&mut h.lock().unwrap_or_else(|p| p.into_inner()).held)),
        })
    }
}

/// Output being held back, and how much may be.
struct Holding {
    held: Held,
    limit: usize,
}

impl Holding {
    /// Keeps `chunk`; what to write out now, if the limit was outgrown.
    fn keep(&mut self, chunk: &[u8]) -> Option<Vec<u8>> {
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

/// Copies a stream to `sink` as it comes (or holds it, when `holding`),
/// keeping its tail.
async fn pump(
    mut from: impl AsyncRead + Unpin,
    mut sink: Option<Box<dyn AsyncWrite + Unpin + Send>>,
    holding: Option<Arc<Mutex<Holding>>>,
    tail: Arc<Mutex<Tail>>,
    activity: watch::Sender<()>,
) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        activity.send_replace(());
        let out_now = match &holding {
            None => Some(buf[..n].to_vec()),
            Some(h) => h.lock().unwrap_or_else(|p| p.into_inner()).keep(&buf[..n]),
        };
        if let Some(out) = sink.as_mut()
            && let Some(bytes) = out_now
            && (out.write_all(&bytes).await.is_err() || out.flush().await.is_err())
        {
            // Our own output went away (a closed pipe): keep reading so the
            // command is not blocked, but stop echoing.
            sink = None;
        }
        tail.lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(&buf[..n]);
    }
}

enum Stop {
    Interrupt,
    Terminate,
    Kill,
}

fn signal_group(group: Option<i32>, stop: Stop) {
    #[cfg(unix)]
    if let Some(pgid) = group {
        use nix::sys::signal::{Signal, killpg};
        let signal = match stop {
            Stop::Interrupt => Signal::SIGINT,
            Stop::Terminate => Signal::SIGTERM,
            Stop::Kill => Signal::SIGKILL,
        };
        let _ = killpg(nix::unistd::Pid::from_raw(pgid), signal);
    }
    #[cfg(not(unix))]
    let _ = (group, stop);
}

fn exit_of(status: std::process::ExitStatus) -> Exit {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return Exit::Signal(signal);
        }
    }
    Exit::Code(status.code().unwrap_or(1))
}
