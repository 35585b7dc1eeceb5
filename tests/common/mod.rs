//! What the tests that run the `backstop` binary share: the binary kept
//! away from the developer's own settings and tokens, and a ledger of its
//! own in a temporary directory.

#![allow(dead_code, reason = "each test file uses a part")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Fast retries, so that tests spend no time sleeping.
pub const QUICK: &[&str] = &["--base-delay", "1ms", "--max-delay", "5ms"];

/// The binary, with none of the caller's Hub or backstop settings, never
/// the developer's own token file or Hugging Face cache, and a default
/// state of its own (a directory made only if the command writes there):
/// hosts' cooldowns recorded by one test never hold another.
pub fn backstop() -> Command {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static STATES: AtomicUsize = AtomicUsize::new(0);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_backstop"));
    for var in [
        "HF_TOKEN",
        "HUGGING_FACE_HUB_TOKEN",
        "HF_ENDPOINT",
        "HF_HOME",
        "HUGGINGFACE_HUB_CACHE",
        "XDG_CACHE_HOME",
        "BACKSTOP_LOG",
        "BACKSTOP_MODELS",
        "BACKSTOP_STATE",
        "BACKSTOP_NO_SHARED_COOLDOWN",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("HF_TOKEN_PATH", "/nonexistent/backstop-test-token");
    // A test that means the Hugging Face cache names one of its own.
    cmd.env("HF_HUB_CACHE", "/nonexistent/backstop-test-cache");
    let state = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "state-{}-{}",
        std::process::id(),
        STATES.fetch_add(1, Ordering::Relaxed)
    ));
    cmd.env("XDG_STATE_HOME", state);
    cmd
}

pub fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("backstop runs")
}

/// Runs `cmd` with `input` on its standard input.
pub fn run_with_stdin(cmd: &mut Command, input: &[u8]) -> Output {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("backstop runs");
    if let Some(mut stdin) = child.stdin.take() {
        // A command that stops reading early is its own failure to
        // report, not the test's.
        let _ = stdin.write_all(input);
    }
    child.wait_with_output().expect("backstop runs")
}

pub fn stdout(o: &Output) -> String {
    text(&o.stdout)
}

pub fn stderr(o: &Output) -> String {
    text(&o.stderr)
}

pub struct Bed {
    dir: tempfile::TempDir,
    /// The ledger's file (`BACKSTOP_STATE`); not created until used.
    pub state: String,
}

pub fn bed() -> Bed {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state/backstop.db").display().to_string();
    Bed { dir, state }
}

impl Bed {
    /// The temporary directory, where commands run.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `backstop` with this ledger, run in the directory, with no
    /// standard input and none of the caller's backstop settings.
    pub fn cmd(&self) -> Command {
        let mut cmd = backstop();
        cmd.env("BACKSTOP_STATE", &self.state)
            .current_dir(self.dir.path())
            .stdin(Stdio::null());
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("backstop runs")
    }

    /// Every ledger entry, expired ones too, as `cooldown list --all
    /// --json` prints them.
    pub fn entries(&self) -> Vec<serde_json::Value> {
        let out = self.run(&["cooldown", "list", "--all", "--json"]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        text(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    pub fn entry(&self, key: &str) -> Option<serde_json::Value> {
        self.entries().into_iter().find(|e| e["key"] == key)
    }
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
