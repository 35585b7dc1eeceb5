//! `backstop run` with stand-in agents: shell scripts that print the real
//! output shapes of each tool (the fixtures of `crates/agent`) for the
//! models they are given, and log every call.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

mod common;

use common::{Bed, bed, text};

fn fixture(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("crates/agent/tests/fixtures")
        .join(path)
}

/// Stand-in agents.
trait Agents {
    /// Writes an executable script `name` whose first argument is the
    /// model; every call appends the model to `calls.log`.
    fn agent(&self, name: &str, body: &str) -> String;
    /// The models the stand-ins were called with, in order.
    fn calls(&self) -> Vec<String>;
}

impl Agents for Bed {
    fn agent(&self, name: &str, body: &str) -> String {
        let path = self.path(name);
        let script = format!(
            "#!/bin/sh\nprintf '%s\\n' \"$1\" >> '{}'\nmodel=\"$1\"\n{body}\n",
            self.path("calls.log").display()
        );
        std::fs::write(&path, script).unwrap();
        let mut perms = std::fs::metadata(&path).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
        std::fs::set_permissions(&path, perms).unwrap();
        path.display().to_string()
    }

    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.path("calls.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

fn rfc3339(value: &serde_json::Value) -> SystemTime {
    backstop_core::time::parse_rfc3339(value.as_str().expect("a time")).expect("RFC 3339")
}

#[test]
fn a_rate_limit_falls_back_across_providers_and_cools_only_that_model() {
    let b = bed();
    let claude = b.agent(
        "claude",
        &format!(
            "case \"$model\" in claude-sonnet-4-5) cat '{}'; exit 1;; *) cat '{}';; esac",
            fixture("claude/rate-limit-429.json").display(),
            fixture("claude/success.json").display()
        ),
    );
    let out = b.run(&[
        "run",
        "--models",
        "anthropic/claude-sonnet-4-5,openai/gpt-5",
        "--",
        &claude,
        "{model}",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(b.calls(), ["claude-sonnet-4-5", "gpt-5"]);
    // stdout is not a terminal: only the final attempt's result reaches it,
    // byte for byte; the rate-limited one is summarised on stderr.
    let success = std::fs::read(fixture("claude/success.json")).unwrap();
    let rate_limited = std::fs::read(fixture("claude/rate-limit-429.json")).unwrap();
    assert_eq!(out.stdout, success);
    let err = text(&out.stderr);
    assert!(err.contains("falling back"), "{err}");
    assert!(
        err.contains(&format!(
            "held back {} bytes of standard output from the attempt with anthropic/claude-sonnet-4-5 (exit 1)",
            rate_limited.len()
        )),
        "{err}"
    );

    let entry = b.entry("anthropic/claude-sonnet-4-5").expect("a cooldown");
    assert_eq!(entry["reason"], "rate_limit");
    assert!(
        entry["last_error"]
            .as_str()
            .unwrap()
            .contains("Request rejected (429)")
    );
    assert!(
        b.entry("anthropic").is_none(),
        "a rate limit cools the model only"
    );
    assert!(
        b.entry("openai/gpt-5").is_none(),
        "a success records nothing"
    );

    // The next script asking for a model gets the other one.
    let out = b.run(&["pick", "anthropic/claude-sonnet-4-5", "openai/gpt-5"]);
    assert_eq!(text(&out.stdout), "openai/gpt-5\n");
}

#[test]
fn an_auth_failure_cools_the_whole_provider() {
    let b = bed();
    let claude = b.agent(
        "claude",
        &format!(
            "case \"$model\" in claude-*) cat '{}'; exit 1;; *) echo fine;; esac",
            fixture("claude/auth-oauth-expired.json").display()
        ),
    );
    let out = b.run(&[
        "run",
        "--models",
        "anthropic/claude-sonnet-4-5,anthropic/claude-opus-4-1,openai/gpt-5",
        "--",
        &claude,
        "{model}",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        b.calls(),
        ["claude-sonnet-4-5", "gpt-5"],
        "opus shares the refused credential and is skipped"
    );
    let entry = b.entry("anthropic").expect("a provider cooldown");
    assert_eq!(entry["reason"], "auth");
    assert!(b.entry("anthropic/claude-sonnet-4-5").is_none());
}

#[test]
fn a_reset_time_printed_by_the_tool_sets_the_cooldown() {
    let b = bed();
    let events = r#"{"type":"thread.started","thread_id":"t"}
{"type":"turn.started"}
{"type":"error","message":"You've hit your usage limit. Upgrade to Pro (https://chatgpt.com/explore/pro) or try again in 3 hours."}
{"type":"turn.failed","error":{"message":"You've hit your usage limit. Upgrade to Pro (https://chatgpt.com/explore/pro) or try again in 3 hours."}}"#;
    std::fs::write(b.path("limit.jsonl"), events).unwrap();
    let codex = b.agent(
        "codex",
        &format!(
            "case \"$model\" in gpt-5) cat '{}'; exit 1;; *) echo '{{\"type\":\"turn.completed\"}}';; esac",
            b.path("limit.jsonl").display()
        ),
    );
    let before = SystemTime::now();
    let out = b.run(&[
        "run",
        "--models",
        "openai/gpt-5,openrouter/qwen/qwen3-coder",
        "--",
        &codex,
        "{model}",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(b.calls(), ["gpt-5", "qwen/qwen3-coder"]);
    let entry = b.entry("openai").expect("a quota cools the provider");
    assert_eq!(entry["reason"], "quota");
    assert_eq!(entry["source"], "tool");
    let until = rfc3339(&entry["until"]);
    let three_hours = Duration::from_secs(3 * 3600);
    assert!(until >= before + three_hours - Duration::from_secs(2));
    assert!(until <= SystemTime::now() + three_hours + Duration::from_secs(2));
}

#[test]
fn a_permanent_failure_passes_the_exit_code_through() {
    let b = bed();
    let tool = b.agent("tool", "echo 'bad input file' >&2; exit 3");
    let out = b.run(&["run", "--models", "a/x,b/y", "--", &tool, "{model}"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert_eq!(b.calls(), ["x"], "no fallback for the task's own failure");
    assert!(b.entries().is_empty());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("bad input file") && stderr.contains("not retried"),
        "{stderr}"
    );
}

#[test]
fn transient_failures_are_retried_on_the_same_model() {
    let b = bed();
    let counter = b.path("count");
    let tool = b.agent(
        "tool",
        &format!(
            "n=$(cat '{0}' 2>/dev/null || echo 0); n=$((n+1)); echo $n > '{0}'\n\
             [ $n -ge 3 ] && exit 0; echo 'upstream 503' >&2; exit 75",
            counter.display()
        ),
    );
    let out = b.run(&[
        "run",
        "--models",
        "a/x,b/y",
        "--base-delay",
        "10ms",
        "--",
        &tool,
        "{model}",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(b.calls(), ["x", "x", "x"]);
    assert!(
        text(&out.stderr).contains("retry 2 of 4"),
        "{}",
        text(&out.stderr)
    );
    assert!(b.entries().is_empty());
}

#[test]
fn a_model_that_keeps_failing_is_cooled_and_the_next_one_used() {
    let b = bed();
    let tool = b.agent(
        "tool",
        "[ \"$model\" = x ] && { echo 'upstream 503' >&2; exit 75; }; exit 0",
    );
    let out = b.run(&[
        "run",
        "--models",
        "a/x,b/y",
        "--attempts",
        "2",
        "--base-delay",
        "10ms",
        "--",
        &tool,
        "{model}",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(b.calls(), ["x", "x", "y"]);
    let entry = b.entry("a/x").expect("an error cooldown");
    assert_eq!(entry["reason"], "error");
    assert_eq!(entry["last_error"], "upstream 503");
}

#[test]
fn a_silent_command_is_stopped_as_a_stall() {
    let b = bed();
    let tool = b.agent(
        "tool",
        "[ \"$model\" = x ] && { echo started; exec sleep 60; }; echo done",
    );
    let started = Instant::now();
    let out = b.run(&[
        "run",
        "--models",
        "a/x,b/y",
        "--idle-timeout",
        "300ms",
        "--attempts",
        "1",
        "--",
        &tool,
        "{model}",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(b.calls(), ["x", "y"]);
    assert!(text(&out.stderr).contains("printed nothing for 300 ms"));
    assert_eq!(b.entry("a/x").expect("a cooldown")["reason"], "error");
}

#[test]
fn with_every_model_cooling_it_exits_75_and_runs_nothing() {
    let b = bed();
    for key in ["a/x", "b"] {
        let out = b.run(&["cooldown", "set", key, "--reason", "quota", "--for", "10m"]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    }
    let tool = b.agent("tool", "exit 0");
    let out = b.run(&["run", "--models", "a/x,b/y", "--", &tool]);
    assert_eq!(out.status.code(), Some(75), "{}", text(&out.stderr));
    assert!(b.calls().is_empty());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("no model is available; the first to free up is"),
        "{stderr}"
    );
    assert!(stderr.contains("b/y: quota (its provider b)"), "{stderr}");
}

#[test]
fn it_waits_for_a_model_that_frees_up_within_max_wait() {
    let b = bed();
    let out = b.run(&[
        "cooldown",
        "set",
        "a/x",
        "--reason",
        "rate_limit",
        "--for",
        "600ms",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let tool = b.agent("tool", "exit 0");
    let out = b.run(&[
        "run",
        "--models",
        "a/x",
        "--max-wait",
        "10s",
        "--",
        &tool,
        "{model}",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(b.calls(), ["x"]);
    assert!(text(&out.stderr).contains("every model is cooling; waiting"));
}

#[test]
fn a_piped_prompt_reaches_every_model_tried() {
    let b = bed();
    let tool = b.agent(
        "claude",
        &format!(
            "cat > '{}'.\"$model\"\n[ \"$model\" = x ] && {{ echo 'API Error: Rate limit reached'; exit 1; }}; echo ok",
            b.path("prompt").display()
        ),
    );
    let mut child = b
        .cmd()
        .args(["run", "--models", "a/x,b/y", "--", &tool, "{model}"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"fix the flaky test\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(b.calls(), ["x", "y"]);
    for model in ["x", "y"] {
        let got = std::fs::read_to_string(b.path(&format!("prompt.{model}"))).unwrap();
        assert_eq!(got, "fix the flaky test\n");
    }
    assert_eq!(b.entry("a/x").unwrap()["reason"], "rate_limit");
}

#[test]
fn model_text_about_rate_limits_cools_nothing() {
    let b = bed();
    for (agent, fixture_path) in [
        ("claude", "claude/success.json"),
        ("codex", "codex/success.jsonl"),
        ("opencode", "opencode/success.txt"),
        ("aider", "aider/success.txt"),
    ] {
        let tool = b.agent(agent, &format!("cat '{}'", fixture(fixture_path).display()));
        let out = b.run(&["run", "--models", "a/x,b/y", "--", &tool, "{model}"]);
        assert_eq!(out.status.code(), Some(0), "{agent}: {}", text(&out.stderr));
    }
    assert_eq!(b.calls(), ["x", "x", "x", "x"]);
    assert!(b.entries().is_empty());
}

#[test]
fn a_success_after_a_cooldown_forgets_the_model_s_escalation() {
    let b = bed();
    let flag = b.path("limited");
    std::fs::write(&flag, "").unwrap();
    let tool = b.agent(
        "claude",
        &format!(
            "[ -e '{}' ] && [ \"$model\" = x ] && {{ echo 'API Error: Rate limit reached · try again in 1 second'; exit 1; }}; echo ok",
            flag.display()
        ),
    );
    let out = b.run(&["run", "--models", "a/x,b/y", "--", &tool, "{model}"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let entry = b.entry("a/x").expect("a cooldown");
    assert_eq!(entry["failures"], 1);
    assert_eq!(entry["source"], "tool");
    std::fs::remove_file(&flag).unwrap();
    // The model's own one-second wait runs out (`until` is printed to the
    // second, rounded down).
    let until = rfc3339(&entry["until"]) + Duration::from_secs(1);
    while SystemTime::now() <= until {
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = b.run(&["run", "--models", "a/x,b/y", "--", &tool, "{model}"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(b.calls(), ["x", "y", "x"]);
    assert!(b.entry("a/x").is_none(), "escalation decayed to nothing");
}

#[test]
fn output_stream_writes_every_attempt_and_final_holds_all_but_the_last() {
    let b = bed();
    let tool = b.agent(
        "tool",
        "echo \"out from $model\"; echo \"err from $model\" >&2; [ \"$model\" = y ] || exit 75",
    );
    let run = |mode: &str| {
        std::fs::remove_file(b.path("calls.log")).ok();
        b.run(&["cooldown", "clear", "--all"]);
        b.run(&[
            "run",
            "--models",
            "a/x,b/y",
            "--attempts",
            "2",
            "--base-delay",
            "1ms",
            "--output",
            mode,
            "--",
            &tool,
            "{model}",
        ])
    };
    let out = run("stream");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "out from x\nout from x\nout from y\n");
    let out = run("final");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "out from y\n");
    let err = text(&out.stderr);
    assert_eq!(
        err.lines().filter(|l| *l == "err from x").count(),
        2,
        "stderr streams: {err}"
    );
    assert_eq!(
        err.matches("held back 11 bytes of standard output from the attempt with a/x (exit 75)")
            .count(),
        2,
        "{err}"
    );
    // A run that ends in failure still writes its last attempt's output.
    b.run(&["cooldown", "clear", "--all"]);
    let out = b.run(&[
        "run",
        "--models",
        "a/x",
        "--attempts",
        "1",
        "--",
        &tool,
        "{model}",
    ]);
    assert_eq!(out.status.code(), Some(75), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "out from x\n");
}

#[test]
fn unknown_placeholders_are_refused_and_the_environment_matches_the_known_ones() {
    let b = bed();
    let tool = b.agent(
        "tool",
        "echo \"$BACKSTOP_MODEL|$BACKSTOP_PROVIDER|$BACKSTOP_KEY\"",
    );
    let out = b.run(&["run", "--models", "a/x", "--", &tool, "--model={modle}"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains(
            "unknown placeholder {modle} in \"--model={modle}\"; the known ones are {model}, {provider} and {key}"
        ),
        "{}",
        text(&out.stderr)
    );
    assert!(b.calls().is_empty(), "nothing ran");
    assert!(!Path::new(&b.state).exists(), "nothing was written");

    let out = b.run(&[
        "run",
        "--models",
        "openrouter/meta-llama/llama-3.1-70b",
        "--",
        &tool,
        "{model}",
        "${HOME}",
        r#"{"json": true}"#,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "meta-llama/llama-3.1-70b|openrouter|openrouter/meta-llama/llama-3.1-70b\n"
    );
}

#[test]
fn a_models_file_runs_each_provider_s_own_command_and_falls_back_across_them() {
    let b = bed();
    // claude is rate limited; codex, another program, serves openai.
    b.agent(
        "claude",
        &format!(
            "cat '{}'; exit 1",
            fixture("claude/rate-limit-429.json").display()
        ),
    );
    b.agent(
        "codex",
        &format!(
            "cat > '{}'; cat '{}'",
            b.path("codex-prompt").display(),
            fixture("codex/success.jsonl").display()
        ),
    );
    let toml = format!(
        r#"
[[node]]
name = "gpu-1"
type = "gpu"
handle = {{ install = "true" }}

[run.providers.anthropic]
command = ["{claude}", "{{model}}", "-p"]

[run.providers.openai]
command = ["{codex}", "{{model}}", "exec", "--json", "-"]
"#,
        claude = b.path("claude").display(),
        codex = b.path("codex").display(),
    );
    std::fs::write(b.path("backstop.toml"), &toml).unwrap();
    let mut cmd = b.cmd();
    cmd.args([
        "run",
        "--models",
        "anthropic/claude-sonnet-4-5,openai/gpt-5",
    ])
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"fix the failing test")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(b.calls(), ["claude-sonnet-4-5", "gpt-5"]);
    assert_eq!(
        out.stdout,
        std::fs::read(fixture("codex/success.jsonl")).unwrap()
    );
    assert_eq!(
        std::fs::read_to_string(b.path("codex-prompt")).unwrap(),
        "fix the failing test",
        "the piped prompt reached the second command"
    );
    assert_eq!(
        b.entry("anthropic/claude-sonnet-4-5").unwrap()["reason"],
        "rate_limit"
    );

    // The same file elsewhere, named by --models-file; a model of its own
    // beats its provider's; a model with no command anywhere is refused.
    std::fs::rename(b.path("backstop.toml"), b.path("models.toml")).unwrap();
    let own = b.agent("own", "echo own");
    std::fs::write(
        b.path("models.toml"),
        format!(
            "{toml}\n[run.models.\"openai/gpt-5-codex\"]\ncommand = [\"{own}\", \"{{key}}\"]\n"
        ),
    )
    .unwrap();
    let out = b.run(&[
        "run",
        "--models-file",
        "models.toml",
        "--models",
        "openai/gpt-5-codex",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "own\n");
    let out = b.run(&[
        "run",
        "--models-file",
        "models.toml",
        "--models",
        "google/gemini-2.5-pro",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("no command to run for google/gemini-2.5-pro"),
        "{}",
        text(&out.stderr)
    );
    std::fs::write(
        b.path("bad.toml"),
        "[run.providers.openai]\ncommand = [\"x\", \"{modle}\"]\n",
    )
    .unwrap();
    let out = b.run(&[
        "run",
        "--models-file",
        "bad.toml",
        "--models",
        "openai/gpt-5",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("unknown placeholder {modle}"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn bad_input_is_refused_before_anything_is_written() {
    let b = bed();
    let cases: &[&[&str]] = &[
        &["run", "--models", "not a model", "--", "true"],
        &["run", "--models", "anthropic", "--", "true"],
        &["run", "--models", "a/x"],
        &["run", "--models", "a/x", "--agent", "gemini", "--", "true"],
        &[
            "run",
            "--models",
            "a/x",
            "--idle-timeout",
            "-5s",
            "--",
            "true",
        ],
        &["run", "--", "true"],
        &["run", "--models", "a/x", "--output", "json", "--", "true"],
        &["run", "--models", "a/x", "--", "true", "{prompt}"],
    ];
    for args in cases {
        let out = b.run(args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    assert!(!Path::new(&b.state).exists(), "nothing was written");
    assert!(b.calls().is_empty());
}

#[test]
fn a_command_that_cannot_start_exits_127() {
    let b = bed();
    let out = b.run(&["run", "--models", "a/x", "--", "./no-such-agent"]);
    assert_eq!(out.status.code(), Some(127), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("installed and on PATH"));
    assert!(b.entries().is_empty());
}

#[test]
fn a_command_that_is_there_but_cannot_be_run_exits_126() {
    let b = bed();
    std::fs::write(b.path("not-executable"), "#!/bin/sh\necho hi\n").unwrap();
    std::fs::create_dir(b.path("a-directory")).unwrap();
    for program in ["./not-executable", "./a-directory"] {
        // Even root may not execute a file with no execute bit.
        let out = b.run(&["run", "--models", "a/x", "--", program]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(126), "{program}: {err}");
        assert!(
            err.contains(&format!("{program} cannot be run: Permission denied")),
            "{err}"
        );
        assert!(err.contains("chmod +x"), "{err}");
    }
}

#[test]
fn ctrl_c_reaches_the_command_and_exits_130_recording_nothing() {
    let b = bed();
    let got = b.path("got-int");
    let tool = b.agent(
        "tool",
        &format!(
            "trap 'echo INT > \"{}\"; exit 130' INT\necho working\nwhile true; do sleep 0.05; done",
            got.display()
        ),
    );
    let child = b
        .cmd()
        .args(["run", "--models", "a/x,b/y", "--", &tool, "{model}"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while b.calls().is_empty() && started.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    // Let the trap be installed.
    std::thread::sleep(Duration::from_millis(200));
    let killed = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", text(&out.stderr));
    assert_eq!(std::fs::read_to_string(&got).unwrap(), "INT\n");
    assert_eq!(b.calls(), ["x"], "no fallback after an interrupt");
    assert!(b.entries().is_empty());
}
