//! The runner with real processes: output kept, exits, the stall
//! watchdog, process groups, stdin replay and cancellation.

use std::time::Duration;

use backstop_agent::{Command, Exit, Input, Replay};
use tokio_util::sync::CancellationToken;

fn sh(script: &str) -> Command {
    Command::new("sh", ["-c", script]).echo(false)
}

async fn run(cmd: Command) -> backstop_agent::Transcript {
    cmd.run(&CancellationToken::new()).await.expect("spawns")
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
    tokio::time::sleep(Duration::from_millis(200)).await;
    let alive = std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ");
    assert!(!alive, "the grandchild {pid} survived");
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
    let stop = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        stop.cancel();
    });
    let t = sh("echo running; exec sleep 30")
        .run(&cancel)
        .await
        .unwrap();
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
    assert!(t.stdout.bytes().len() <= backstop_agent::runner::TAIL);
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
