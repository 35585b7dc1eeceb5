//! The supervisor with real processes: output kept, exits, the stall
//! watchdog, the time limit, process groups, stdin replay, cancellation,
//! owner marks and death with the owner.

use std::time::Duration;

use backstop_process::owner::OWNER_ENV;
use backstop_process::{Command, Exit, Input, Owner, Replay, StopSignal};
use tokio_util::sync::CancellationToken;

fn sh(script: &str) -> Command {
    Command::new("sh", ["-c", script]).echo(false)
}

async fn run(cmd: Command) -> backstop_process::Transcript {
    cmd.run(&CancellationToken::new()).await.expect("spawns")
}

/// Whether process `pid` runs (a zombie does not).
fn alive(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| !stat.contains(") Z ") && !stat.contains(") X "))
}

/// A file the command touches once it runs, and the wait for it: the
/// witness that a cancel reaches a running child, not one still starting.
fn started() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("started");
    (dir, file)
}

async fn wait_exists(file: &std::path::Path) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !file.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the command never ran"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits for process `pid` to be gone, failing after 10 s.
async fn wait_gone(pid: &str) {
    assert!(!pid.is_empty(), "no pid printed");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while alive(pid) {
        assert!(
            std::time::Instant::now() < deadline,
            "the process {pid} survived"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn output_and_exit_codes_are_kept() {
    let t = run(sh("printf 'out\\n'; printf 'err\\n' >&2; exit 3")).await;
    assert_eq!(t.exit, Exit::Code(3));
    assert_eq!(t.exit.shell_code(), 3);
    assert_eq!(t.stdout.bytes(), b"out\n");
    assert_eq!(t.stderr.bytes(), b"err\n");
    assert!(!t.stalled && !t.interrupted);
}

#[tokio::test]
async fn a_silent_command_is_stopped_by_the_watchdog() {
    let t = run(sh("echo started; exec sleep 30")
        .idle_timeout(Some(Duration::from_millis(300)))
        .kill_grace(Duration::from_secs(5)))
    .await;
    assert!(t.stalled);
    assert_eq!(t.exit, Exit::Signal(15), "TERM first");
    assert!(t.elapsed < Duration::from_secs(5));
}

#[tokio::test]
async fn output_keeps_the_watchdog_away() {
    let t = run(sh("for i in 1 2 3 4 5 6; do echo $i; sleep 0.1; done")
        .idle_timeout(Some(Duration::from_millis(400))))
    .await;
    assert!(!t.stalled);
    assert_eq!(t.exit, Exit::Code(0));
}

#[tokio::test]
async fn a_command_ignoring_term_is_killed_after_the_grace() {
    let t = run(sh("trap '' TERM; echo hi; while true; do sleep 0.05; done")
        .idle_timeout(Some(Duration::from_millis(200)))
        .kill_grace(Duration::from_millis(300)))
    .await;
    assert!(t.stalled);
    assert_eq!(t.exit, Exit::Signal(9));
}

#[tokio::test]
async fn the_whole_process_group_is_stopped() {
    let t =
        run(sh("sleep 30 & echo $!; wait").idle_timeout(Some(Duration::from_millis(300)))).await;
    assert!(t.stalled);
    let pid = String::from_utf8_lossy(t.stdout.bytes()).trim().to_owned();
    wait_gone(&pid).await;
}

#[tokio::test]
async fn stdin_is_replayed_to_every_attempt() {
    let replay = Replay::fixed("the prompt\n");
    for _ in 0..2 {
        let t = run(Command::new("cat", Vec::<String>::new())
            .echo(false)
            .input(Input::Replay(replay.clone())))
        .await;
        assert_eq!(t.stdout.bytes(), b"the prompt\n");
    }
}

#[tokio::test]
async fn streaming_stdin_reaches_the_first_attempt_as_it_arrives() {
    let (mut writer, reader) = tokio::io::duplex(64);
    let replay = Replay::start(reader);
    let feeder = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        for part in ["one ", "two ", "three"] {
            writer.write_all(part.as_bytes()).await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let t = run(Command::new("cat", Vec::<String>::new())
        .echo(false)
        .input(Input::Replay(replay.clone())))
    .await;
    feeder.await.unwrap();
    assert_eq!(t.stdout.bytes(), b"one two three");
    // And the next attempt gets all of it at once.
    let t = run(Command::new("cat", Vec::<String>::new())
        .echo(false)
        .input(Input::Replay(replay)))
    .await;
    assert_eq!(t.stdout.bytes(), b"one two three");
}

#[tokio::test]
async fn cancelling_interrupts_the_group() {
    let cancel = CancellationToken::new();
    let (_dir, file) = started();
    let command = sh(&format!("touch {}; exec sleep 30", file.display()));
    let (t, ()) = tokio::join!(command.run(&cancel), async {
        wait_exists(&file).await;
        cancel.cancel();
    });
    let t = t.unwrap();
    assert!(t.interrupted);
    assert_eq!(t.exit, Exit::Signal(2));
}

#[tokio::test]
async fn a_missing_program_is_an_error() {
    let err = Command::new("/nonexistent/agent", ["x"])
        .run(&CancellationToken::new())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
}

#[tokio::test]
async fn long_output_keeps_its_tail() {
    let t = run(sh("i=0; while [ $i -lt 40000 ]; do echo line-$i-padding-padding-padding-padding; i=$((i+1)); done; echo LAST")).await;
    let lines: Vec<String> = t.stdout.lines().collect();
    assert_eq!(lines.last().map(String::as_str), Some("LAST"));
    assert!(t.stdout.bytes().len() <= backstop_process::TAIL);
    assert!(
        lines[0].starts_with("line-"),
        "no partial first line: {}",
        lines[0]
    );
}

#[tokio::test]
async fn held_output_is_kept_whole_and_outgrowing_the_limit_streams_it() {
    let script = "printf 'first\\n'; printf 'err\\n' >&2; printf 'second\\n'";
    let t = run(Command::new("sh", ["-c", script]).hold_stdout(1 << 20)).await;
    let held = t.held.expect("held");
    assert_eq!(held.bytes(), b"first\nsecond\n");
    assert_eq!((held.len(), held.streamed()), (13, false));
    assert_eq!(t.stdout.bytes(), b"first\nsecond\n", "kept for reading too");
    assert_eq!(t.stderr.bytes(), b"err\n");

    let t = run(Command::new("sh", ["-c", script]).hold_stdout(4)).await;
    let held = t.held.expect("held");
    assert!(held.streamed());
    assert_eq!((held.bytes(), held.len()), (&b""[..], 13));

    let t = run(sh("echo plain")).await;
    assert_eq!(t.held, None, "not held unless asked");
}

#[tokio::test]
async fn a_time_limit_stops_the_whole_group() {
    let t = run(sh("sleep 30 & echo $!; wait").timeout(Some(Duration::from_millis(300)))).await;
    assert!(t.timed_out && !t.stalled && !t.interrupted, "{t:?}");
    assert_eq!(t.exit, Exit::Signal(15), "TERM first");
    let pid = String::from_utf8_lossy(t.stdout.bytes()).trim().to_owned();
    wait_gone(&pid).await;
}

#[tokio::test]
async fn any_time_limit_or_idle_timeout_is_safe() {
    let t = run(sh("exit 0")
        .timeout(Some(Duration::MAX))
        .idle_timeout(Some(Duration::MAX))
        .kill_grace(Duration::MAX))
    .await;
    assert_eq!(t.exit, Exit::Code(0));
}

#[tokio::test]
async fn a_cancel_can_terminate_instead_of_interrupting() {
    let cancel = CancellationToken::new();
    let (_dir, file) = started();
    let command = sh(&format!("touch {}; exec sleep 30", file.display()))
        .cancel_signal(StopSignal::Terminate);
    let (t, ()) = tokio::join!(command.run(&cancel), async {
        wait_exists(&file).await;
        cancel.cancel();
    });
    let t = t.expect("spawns");
    assert!(t.interrupted && !t.timed_out);
    assert_eq!(t.exit, Exit::Signal(15));
}

#[tokio::test]
async fn a_tail_limit_bounds_what_is_kept() {
    let t =
        run(sh("head -c 100000 /dev/zero | tr '\\0' x >&2; echo END >&2; exit 2").tail_limit(2048))
            .await;
    assert_eq!(t.exit, Exit::Code(2));
    let kept = t.stderr.bytes();
    assert_eq!(kept.len(), 2048);
    assert!(
        kept.ends_with(b"xxxEND\n"),
        "{:?}",
        String::from_utf8_lossy(kept)
    );
    assert!(t.stderr.truncated);
}

#[tokio::test]
async fn an_owned_command_carries_its_owner_s_mark_and_a_removed_mark_is_gone() {
    let owner = Owner::new(&["test", "cpu-1"]);
    let t = run(sh("printf %s \"$BACKSTOP_HANDLER_OWNER\"").owner(owner.clone())).await;
    assert_eq!(t.stdout.bytes(), owner.mark().as_bytes());
    let t = run(sh("printf %s \"${BACKSTOP_HANDLER_OWNER-unset}\"")
        .env(OWNER_ENV, "inherited")
        .env_remove(OWNER_ENV))
    .await;
    assert_eq!(t.stdout.bytes(), b"unset");
}

/// Set in the copy of this test binary that plays the owner in
/// `a_command_dies_with_its_owner`.
const OWNER_ROLE: &str = "BACKSTOP_PROCESS_TEST_OWNER";

/// The owner's side of `a_command_dies_with_its_owner`: runs a command
/// that prints its pid and sleeps; the test kills this process meanwhile.
#[tokio::test]
async fn owner_side_of_the_death_test() {
    if std::env::var_os(OWNER_ROLE).is_none() {
        return;
    }
    let _ = Command::new("sh", ["-c", "echo child-pid=$$; exec sleep 60"])
        .run(&CancellationToken::new())
        .await;
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_command_dies_with_its_owner() {
    use tokio::io::AsyncBufReadExt;
    let me = std::env::current_exe().expect("the test binary");
    let mut owner = tokio::process::Command::new(me)
        .args([
            "--exact",
            "owner_side_of_the_death_test",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(OWNER_ROLE, "1")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the owner starts");
    let out = owner.stdout.take().expect("piped");
    let mut lines = tokio::io::BufReader::new(out).lines();
    let mut pid = String::new();
    while let Some(line) = lines.next_line().await.expect("reads") {
        // The harness prints the test's name on the same line first.
        if let Some((_, printed)) = line.split_once("child-pid=") {
            pid = printed.trim().to_owned();
            break;
        }
    }
    assert!(alive(&pid), "the command {pid:?} runs");
    owner.start_kill().expect("kills the owner");
    let _ = owner.wait().await;
    wait_gone(&pid).await;
}
