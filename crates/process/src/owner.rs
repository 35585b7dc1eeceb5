//! Commands that do not outlive the process that started them: fan-out
//! handlers and their coordinator or worker, an agent and `backstop run`.
//!
//! A [`crate::Command`] runs in a process group of its own, so that a stop
//! or a timeout reaches everything it started. The same group would go on
//! running after its owner died (kill -9, the OOM killer): for a fan-out
//! handler, the owner's next process would offer the delivery again while
//! the first run still goes: two runs at once. Two things prevent it:
//!
//! - Every process of a handler carries its owner's [`Owner`] mark
//!   ([`crate::Command::owner`]) in its environment ([`OWNER_ENV`]: which nodes it ran for, and the process id
//!   and start time of the owner). Everything the handler starts inherits
//!   it, whatever process group or session it moves to. A coordinator or
//!   worker starting up calls [`stop_leftovers`] before it offers anything:
//!   every process carrying one of its marks whose owner process is gone
//!   is killed, with its group, and waited for. A mark whose owner still
//!   runs is left alone and reported ([`Leftovers::live_owners`]): a
//!   second process started by mistake for the same node never kills the
//!   first one's handlers, and refuses to start.
//! - On Linux the first process of every command also gets
//!   `PR_SET_PDEATHSIG` = SIGKILL, so that it dies at once with its owner. The kernel ties that signal to
//!   the thread that forked: commands are spawned from the async runtime's
//!   threads, which live as long as the owner does (never from a
//!   blocking-pool thread, which ends when idle). It reaches only the
//!   first process; what that started is found by its mark at the next
//!   start of an owner that marks its commands.
//!
//! The search reads `/proc`, so it works on Linux; elsewhere only the
//! process group remains. A handler that clears its environment (`env -i`)
//! and leaves its process group escapes both: don't.
//!
//! ```
//! use backstop_process::owner::Owner;
//!
//! let owner = Owner::new(&["serve", "/var/lib/backstop/backstop.db", "gpu-1"]);
//! let found = backstop_process::owner::stop_leftovers(&[owner], std::time::Duration::from_secs(5));
//! assert_eq!(found.surviving, 0);
//! ```

use std::time::{Duration, Instant};

/// The environment variable that carries a handler's owner mark.
pub const OWNER_ENV: &str = "BACKSTOP_HANDLER_OWNER";

/// Who runs a node's handlers: the same for every process that runs that
/// node on this machine (a coordinator's local node on one store, a worker
/// of one name under one subject prefix), plus which process it is now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    /// A fingerprint of what it runs: the same across restarts.
    role: String,
}

impl Owner {
    /// The owner of handlers for what `parts` names (for example the store
    /// and the node), in this process.
    pub fn new(parts: &[&str]) -> Owner {
        Owner {
            role: backstop_core::fingerprint(parts.join("\0").as_bytes()),
        }
    }

    /// The value of [`OWNER_ENV`] for handlers this process starts.
    pub fn mark(&self) -> String {
        let (pid, started) = this_process();
        format!("{}.{pid}.{started}", self.role)
    }
}

/// On Linux, `PR_SET_PDEATHSIG` = SIGKILL in the child, and an exit at
/// once if the parent is already gone.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
pub(crate) fn die_with_parent(command: &mut tokio::process::Command) {
    let parent = nix::unistd::getpid();
    // SAFETY: the closure runs in the forked child before exec and makes
    // only async-signal-safe system calls (prctl, getppid); it allocates
    // nothing and takes no lock.
    unsafe {
        command.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
            if nix::unistd::getppid() != parent {
                return Err(std::io::Error::from(nix::errno::Errno::ESRCH));
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn die_with_parent(_: &mut tokio::process::Command) {}

/// This process's id and start time (clock ticks since boot, from
/// `/proc/self/stat`; 0 where there is none).
fn this_process() -> (u32, u64) {
    static THIS: std::sync::OnceLock<(u32, u64)> = std::sync::OnceLock::new();
    *THIS.get_or_init(|| {
        let pid = std::process::id();
        (pid, start_time(pid).unwrap_or(0))
    })
}

/// How long a process starting up waits for the handlers its previous
/// process left running to be gone.
pub const LEFTOVER_WAIT: Duration = Duration::from_secs(10);

/// Kills the handlers of `owners` whose owner process is gone (see
/// [`stop_leftovers`]), off the async threads, waiting up to
/// [`LEFTOVER_WAIT`]; logs what it did and returns it. For an owner
/// starting up (a coordinator, a worker), before it offers anything.
pub async fn stop_previous(owners: Vec<Owner>) -> Leftovers {
    if owners.is_empty() {
        return Leftovers::default();
    }
    let done = tokio::task::spawn_blocking(move || stop_leftovers(&owners, LEFTOVER_WAIT))
        .await
        .unwrap_or_default();
    if done.killed > 0 {
        tracing::warn!(
            "stopped {} handler processes a previous process of this node left running; their \
             deliveries run again",
            done.killed
        );
    }
    if done.surviving > 0 {
        tracing::error!(
            "{} handler processes a previous process of this node left running did not die \
             within {}; their deliveries may run twice at once",
            done.surviving,
            backstop_core::HumanDuration(LEFTOVER_WAIT)
        );
    }
    done
}

/// What [`stop_leftovers`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Leftovers {
    /// Processes found with one of the marks, their owner gone; killed.
    pub killed: usize,
    /// Those still there when the wait ended.
    pub surviving: usize,
    /// Other processes, alive, whose handlers carry one of the marks: the
    /// same node already runs here. Their handlers are left alone.
    pub live_owners: Vec<u32>,
}

/// Kills every process that carries the mark of one of `owners` while the
/// process that started it is gone, with its process group, and waits up
/// to `wait` for them to be gone. Reports the other live processes whose
/// handlers carry one of the marks. Blocking (it reads `/proc` and sleeps
/// between looks): call it off the async threads. Nothing is found where
/// there is no `/proc`.
pub fn stop_leftovers(owners: &[Owner], wait: Duration) -> Leftovers {
    let found = marked(owners);
    let live_owners = found.live_owners;
    if found.orphans.is_empty() {
        return Leftovers {
            live_owners,
            ..Leftovers::default()
        };
    }
    let killed = found.orphans.len();
    let deadline = Instant::now() + wait;
    let mut left = found.orphans;
    loop {
        for &pid in &left {
            kill(pid);
        }
        std::thread::sleep(Duration::from_millis(20));
        left = marked(owners).orphans;
        if left.is_empty() || Instant::now() >= deadline {
            return Leftovers {
                killed,
                surviving: left.len(),
                live_owners,
            };
        }
    }
}

/// SIGKILL to `pid` and to its process group (never this process's own).
fn kill(pid: i32) {
    use nix::sys::signal::{Signal, kill, killpg};
    use nix::unistd::{Pid, getpgid, getpgrp};
    let target = Pid::from_raw(pid);
    if let Ok(group) = getpgid(Some(target))
        && group != getpgrp()
        && group.as_raw() > 1
    {
        let _ = killpg(group, Signal::SIGKILL);
    }
    let _ = kill(target, Signal::SIGKILL);
}

/// What a look through `/proc` found.
#[derive(Default)]
struct Marked {
    /// Live (not zombie) processes carrying a mark of the owners whose
    /// owner process is gone.
    orphans: Vec<i32>,
    /// Other live processes whose handlers carry a mark of the owners.
    live_owners: Vec<u32>,
}

fn marked(owners: &[Owner]) -> Marked {
    let mut found = Marked::default();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    let me = std::process::id();
    let prefix = format!("{OWNER_ENV}=");
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        // Another user's process, or one that just ended: not ours.
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let Some(mark) = environ
            .split(|b| *b == 0)
            .find_map(|var| var.strip_prefix(prefix.as_bytes()))
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(Mark::parse)
        else {
            continue;
        };
        if !owners.iter().any(|o| o.role == mark.role) {
            continue;
        }
        if mark.owner_alive() {
            if mark.pid != me && !found.live_owners.contains(&mark.pid) {
                found.live_owners.push(mark.pid);
            }
            continue;
        }
        if state(pid).is_some_and(|s| s != 'Z' && s != 'X')
            && let Ok(pid) = i32::try_from(pid)
        {
            found.orphans.push(pid);
        }
    }
    found
}

/// A mark as read back from a process's environment.
struct Mark<'a> {
    role: &'a str,
    pid: u32,
    started: u64,
}

impl<'a> Mark<'a> {
    fn parse(value: &'a str) -> Option<Mark<'a>> {
        let mut parts = value.split('.');
        let role = parts.next()?;
        let pid = parts.next()?.parse().ok()?;
        let started = parts.next()?.parse().ok()?;
        Some(Mark { role, pid, started })
    }

    /// Whether the process that set it still runs (the same pid started at
    /// the same time: not a reused pid).
    fn owner_alive(&self) -> bool {
        if self.pid == std::process::id() {
            return true;
        }
        start_time(self.pid).is_some_and(|t| t == self.started)
    }
}

/// Fields of `/proc/PID/stat` after the command name, which may itself
/// hold spaces and parentheses.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    Some(after.split_whitespace().map(str::to_owned).collect())
}

/// A process's state letter (`R`, `S`, `Z`...).
fn state(pid: u32) -> Option<char> {
    stat_fields(pid)?.first()?.chars().next()
}

/// A process's start time, in clock ticks since boot (field 22 of
/// `/proc/PID/stat`, the 20th after the name).
fn start_time(pid: u32) -> Option<u64> {
    stat_fields(pid)?.get(19)?.parse().ok()
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn spawn_marked(mark: &str) -> std::process::Child {
        use std::os::unix::process::CommandExt;
        std::process::Command::new("sh")
            .arg("-c")
            .arg("sleep 60 & sleep 60; wait")
            .env(OWNER_ENV, mark)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn leftovers_of_a_dead_owner_are_killed_and_a_live_owner_s_are_kept() {
        let owner = Owner::new(&["test", &format!("{:x}", fastrand::u64(..))]);
        // A mark left by an owner that is gone: no process has that pid.
        let mut leftover = spawn_marked(&format!("{}.4294967295.0", owner.role));
        let mut ours = spawn_marked(&owner.mark());
        // A mark whose owner runs: pid 1, as started.
        let init = start_time(1).unwrap_or_else(|| panic!("no start time for pid 1"));
        let mut twin = spawn_marked(&format!("{}.1.{init}", owner.role));
        let stranger = Owner::new(&["someone else"]);
        let mut theirs = spawn_marked(&format!("{}.4294967295.0", stranger.role));
        // Both sleeps of the leftover are found (the shell and its child).
        let deadline = Instant::now() + Duration::from_secs(10);
        while marked(std::slice::from_ref(&owner)).orphans.len() < 2
            || marked(std::slice::from_ref(&owner)).live_owners.is_empty()
        {
            assert!(Instant::now() < deadline, "the leftover never showed up");
            std::thread::sleep(Duration::from_millis(10));
        }
        let done = stop_leftovers(std::slice::from_ref(&owner), Duration::from_secs(5));
        assert!(done.killed >= 2, "{done:?}");
        assert_eq!(done.surviving, 0);
        assert_eq!(
            done.live_owners,
            [1],
            "another live owner runs this node here"
        );
        let status = leftover.wait().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9)
        );
        assert_eq!(ours.try_wait().ok().flatten(), None, "its owner runs");
        assert_eq!(twin.try_wait().ok().flatten(), None, "its owner runs");
        assert_eq!(theirs.try_wait().ok().flatten(), None, "not this owner's");
        for child in [&mut ours, &mut twin, &mut theirs] {
            let group = nix::unistd::Pid::from_raw(-(child.id() as i32));
            let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGKILL);
            let _ = child.wait();
        }
    }
}
