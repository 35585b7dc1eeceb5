//! Running a command under supervision: its output streamed through (or
//! held) and kept, a watchdog for silence, a time limit, and a clean stop
//! (a signal, then KILL after a grace) of its whole process group.

use std::ffi::OsString;
use std::io;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::input::Input;
use crate::output::{Held, Holding, TAIL, Tail};
use crate::owner::Owner;

/// How long a stopped command has between its stop signal and KILL, unless
/// [`Command::kill_grace`] says otherwise.
pub const KILL_GRACE: Duration = Duration::from_secs(10);

/// How long to wait for output pipes after the command exits (a background
/// grandchild may hold them open forever).
const DRAIN: Duration = Duration::from_secs(2);

/// Any wait longer than this (`--idle-timeout 99999999h`, a timeout a
/// server sent) is this long, so that no deadline overflows.
const FAR: Duration = Duration::from_secs(365 * 24 * 3600);

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
    /// It ran past its [`Command::timeout`] and was stopped.
    pub timed_out: bool,
    /// The caller cancelled it (Ctrl-C, a shutdown).
    pub interrupted: bool,
    /// How long it ran.
    pub elapsed: Duration,
    /// Its standard output, when held back instead of echoed.
    pub held: Option<Held>,
}

/// The signal a cancelled command gets first ([`Command::cancel_signal`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StopSignal {
    /// SIGINT, what Ctrl-C sends: an agent saves its session and exits.
    #[default]
    Interrupt,
    /// SIGTERM: a service asked to shut down.
    Terminate,
}

/// A command to run.
///
/// ```no_run
/// # async fn demo() -> std::io::Result<()> {
/// use std::time::Duration;
/// use backstop_process::Command;
/// use tokio_util::sync::CancellationToken;
///
/// let run = Command::new("sh", ["-c", "make test"])
///     .idle_timeout(Some(Duration::from_secs(600)))
///     .run(&CancellationToken::new())
///     .await?;
/// println!("{} ({} bytes of stderr kept)", run.exit.shell_code(), run.stderr.bytes().len());
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Command {
    program: OsString,
    args: Vec<OsString>,
    env: Vec<(OsString, Option<OsString>)>,
    idle_timeout: Option<Duration>,
    timeout: Option<Duration>,
    kill_grace: Duration,
    cancel_signal: StopSignal,
    input: Input,
    echo: bool,
    hold: Option<usize>,
    tail: usize,
    owner: Option<Owner>,
}

impl Command {
    /// `program` with `args`; output echoed to ours, no watchdog, no time
    /// limit, no input.
    pub fn new(
        program: impl Into<OsString>,
        args: impl IntoIterator<Item = impl Into<OsString>>,
    ) -> Self {
        Command {
            program: program.into(),
            args: args.into_iter().map(Into::into).collect(),
            env: Vec::new(),
            idle_timeout: None,
            timeout: None,
            kill_grace: KILL_GRACE,
            cancel_signal: StopSignal::Interrupt,
            input: Input::Null,
            echo: true,
            hold: None,
            tail: TAIL,
            owner: None,
        }
    }

    /// The program.
    pub fn program(&self) -> &std::ffi::OsStr {
        &self.program
    }

    /// Sets an environment variable for the command.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), Some(value.into())));
        self
    }

    /// Removes an environment variable it would inherit from ours.
    pub fn env_remove(mut self, key: impl Into<OsString>) -> Self {
        self.env.push((key.into(), None));
        self
    }

    /// Stops the command when it prints nothing, on either stream, for
    /// this long.
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Stops the command when it has run this long
    /// ([`Transcript::timed_out`]).
    pub fn timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = timeout;
        self
    }

    /// Time between the stop signal (TERM, or the cancel signal) and KILL;
    /// [`KILL_GRACE`] unless set.
    pub fn kill_grace(mut self, grace: Duration) -> Self {
        self.kill_grace = grace;
        self
    }

    /// The signal a cancel sends first: SIGINT unless set.
    pub fn cancel_signal(mut self, signal: StopSignal) -> Self {
        self.cancel_signal = signal;
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
    /// `limit` bytes ([`crate::MAX_HELD`] is a good one), in
    /// [`Transcript::held`]. Output beyond the limit is not lost: what was
    /// held is written to our standard output then, and the rest streams
    /// ([`Held::streamed`]). Standard error still streams.
    pub fn hold_stdout(mut self, limit: usize) -> Self {
        self.hold = Some(limit);
        self
    }

    /// How many of the last bytes of each stream the [`Transcript`] keeps:
    /// [`TAIL`] unless set.
    pub fn tail_limit(mut self, bytes: usize) -> Self {
        self.tail = bytes;
        self
    }

    /// Marks every process of the command as `owner`'s, so that the
    /// owner's next process finds and stops what it left running
    /// ([`crate::owner`]).
    pub fn owner(mut self, owner: Owner) -> Self {
        self.owner = Some(owner);
        self
    }

    fn spawn(&self) -> io::Result<tokio::process::Child> {
        let mut command = tokio::process::Command::new(&self.program);
        command
            .args(&self.args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(match &self.input {
                Input::Inherit => Stdio::inherit(),
                Input::Null => Stdio::null(),
                Input::Replay(_) => Stdio::piped(),
            })
            .kill_on_drop(true);
        for (key, value) in &self.env {
            match value {
                Some(value) => command.env(key, value),
                None => command.env_remove(key),
            };
        }
        #[cfg(unix)]
        command.process_group(0);
        if let Some(owner) = &self.owner {
            command.env(crate::owner::OWNER_ENV, owner.mark());
        }
        crate::owner::die_with_parent(&mut command);
        command.spawn()
    }

    /// Runs it to the end. Its output streams through to ours byte for
    /// byte as it comes (unless held or not echoed), and its tails are
    /// kept. The command runs in its own process group, so a stop reaches
    /// whatever it started too: a silence of the idle timeout or the end
    /// of its time limit sends the group SIGTERM, `cancel` the cancel
    /// signal, and SIGKILL follows one grace after the first of them. On
    /// Linux its first process is also killed if this process dies.
    ///
    /// An error is that it could not be started (or waited for).
    pub async fn run(&self, cancel: &CancellationToken) -> io::Result<Transcript> {
        let started = Instant::now();
        let mut child = self.spawn()?;
        let group = child.id().and_then(|id| i32::try_from(id).ok());

        let (activity, mut heard) = watch::channel(());
        let stdout = Arc::new(Mutex::new(Tail::with_limit(self.tail)));
        let stderr = Arc::new(Mutex::new(Tail::with_limit(self.tail)));
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
        let mut timed_out = false;
        let mut interrupted = false;
        let mut streams_open = true;
        let mut last_heard = Instant::now();
        let mut kill_at: Option<Instant> = None;
        let after = |at: Instant, d: Duration| at.checked_add(d.min(FAR)).unwrap_or(at);
        // The time limit counts from the start of the command, not of the
        // spawn.
        let ends_at = self.timeout.map(|t| after(Instant::now(), t));
        let status = loop {
            // The watchdog and the time limit start a stop; once one is
            // under way only the KILL is left to come.
            let idle_deadline = match (self.idle_timeout, kill_at) {
                (Some(idle), None) => after(last_heard, idle),
                _ => after(Instant::now(), FAR),
            };
            let time_limit = match (ends_at, kill_at) {
                (Some(at), None) => at,
                _ => after(Instant::now(), FAR),
            };
            let kill_deadline = kill_at.unwrap_or_else(|| after(Instant::now(), FAR));
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
                    signal_group(group, Signal::Terminate);
                    kill_at = Some(after(Instant::now(), self.kill_grace));
                }
                () = tokio::time::sleep_until(time_limit) => {
                    timed_out = true;
                    signal_group(group, Signal::Terminate);
                    kill_at = Some(after(Instant::now(), self.kill_grace));
                }
                () = cancel.cancelled(), if !interrupted => {
                    interrupted = true;
                    signal_group(group, match self.cancel_signal {
                        StopSignal::Interrupt => Signal::Interrupt,
                        StopSignal::Terminate => Signal::Terminate,
                    });
                    kill_at.get_or_insert_with(|| after(Instant::now(), self.kill_grace));
                }
                () = tokio::time::sleep_until(kill_deadline) => {
                    signal_group(group, Signal::Kill);
                    kill_at = Some(after(Instant::now(), FAR));
                }
            }
        };
        for pump in pumps {
            let _ = tokio::time::timeout(DRAIN, pump).await;
        }
        let take = |tail: &Arc<Mutex<Tail>>| {
            std::mem::take(&mut *tail.lock().unwrap_or_else(|p| p.into_inner()))
        };
        Ok(Transcript {
            exit: exit_of(status),
            stdout: take(&stdout),
            stderr: take(&stderr),
            stalled,
            timed_out,
            interrupted,
            elapsed: started.elapsed(),
            held: held
                .map(|h| std::mem::take(&mut h.lock().unwrap_or_else(|p| p.into_inner()).held)),
        })
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
    use tokio::io::AsyncWriteExt;
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

enum Signal {
    Interrupt,
    Terminate,
    Kill,
}

/// Sends `signal` to the process group `group`, if there is one.
fn signal_group(group: Option<i32>, signal: Signal) {
    #[cfg(unix)]
    if let Some(pgid) = group {
        use nix::sys::signal::{Signal as Sig, killpg};
        let signal = match signal {
            Signal::Interrupt => Sig::SIGINT,
            Signal::Terminate => Sig::SIGTERM,
            Signal::Kill => Sig::SIGKILL,
        };
        let _ = killpg(nix::unistd::Pid::from_raw(pgid), signal);
    }
    #[cfg(not(unix))]
    let _ = (group, signal);
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
