//! `backstop pick` and `backstop cooldown` as scripts run them: output,
//! exit codes, bad input, and many processes sharing one ledger.

use std::process::Command;
use std::time::{Duration, SystemTime};

mod common;

use common::{bed as ledger, text};

#[test]
fn pick_prints_the_first_available_model() {
    let l = ledger();
    let out = l.run(&["pick", "anthropic/claude-sonnet-4-5", "openai/gpt-5"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "anthropic/claude-sonnet-4-5\n");

    let out = l.run(&[
        "cooldown",
        "set",
        "anthropic/claude-sonnet-4-5",
        "--reason",
        "rate_limit",
        "--for",
        "10m",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = l
        .cmd()
        .arg("pick")
        .env(
            "BACKSTOP_MODELS",
            "anthropic/claude-sonnet-4-5,openai/gpt-5",
        )
        .output()
        .unwrap();
    assert_eq!(text(&out.stdout), "openai/gpt-5\n");
}

#[test]
fn pick_exits_75_and_names_the_earliest_when_nothing_is_available() {
    let l = ledger();
    l.run(&[
        "cooldown",
        "set",
        "anthropic",
        "--reason",
        "quota",
        "--for",
        "2h",
    ]);
    l.run(&[
        "cooldown",
        "set",
        "openai/gpt-5",
        "--reason",
        "rate_limit",
        "--for",
        "5m",
    ]);
    let out = l.run(&["pick", "anthropic/claude-opus-4-1", "openai/gpt-5"]);
    assert_eq!(out.status.code(), Some(75));
    assert_eq!(text(&out.stdout), "");
    let err = text(&out.stderr);
    assert!(
        err.contains("no model is available; the first to free up is openai/gpt-5"),
        "{err}"
    );
    assert!(
        err.contains("anthropic/claude-opus-4-1: quota (its provider anthropic) until"),
        "{err}"
    );

    let out = l.run(&[
        "pick",
        "--json",
        "anthropic/claude-opus-4-1",
        "openai/gpt-5",
    ]);
    assert_eq!(out.status.code(), Some(75));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["available"], serde_json::Value::Null);
    assert_eq!(json["earliest"]["model"], "openai/gpt-5");
    let at = backstop_core::time::parse_rfc3339(json["earliest"]["at"].as_str().unwrap()).unwrap();
    let left = at.duration_since(SystemTime::now()).unwrap();
    assert!(
        left > Duration::from_secs(240) && left <= Duration::from_secs(300),
        "{left:?}"
    );

    let out = l.run(&["pick", "--json", "openai/gpt-4.1"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        text(&out.stdout),
        "{\"available\":\"openai/gpt-4.1\",\"earliest\":null}\n"
    );
}

#[test]
fn cooldowns_are_listed_kept_and_cleared() {
    let l = ledger();
    let out = l.run(&["cooldown", "list"]);
    assert_eq!(text(&out.stdout), "nothing is cooling down\n");
    let until =
        backstop_core::time::format_rfc3339(SystemTime::now() + Duration::from_secs(300 * 86_400));
    l.run(&[
        "cooldown",
        "set",
        "openai/gpt-5",
        "--reason",
        "overloaded",
        "--until",
        &until,
    ]);
    let out = l.run(&[
        "cooldown",
        "set",
        "openai/gpt-5",
        "--reason",
        "error",
        "--for",
        "1m",
    ]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).contains(&format!(
        "already cooling down (overloaded) until {until}, longer; kept it"
    )));
    let listed = l.entries();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["key"], "openai/gpt-5");
    assert_eq!(listed[0]["reason"], "overloaded");
    assert_eq!(listed[0]["source"], "manual");
    assert_eq!(listed[0]["state"], "cooling");

    let out = l.run(&["cooldown", "list"]);
    let table = text(&out.stdout);
    assert!(table.starts_with("KEY "), "{table}");
    assert!(
        table.contains(&format!("openai/gpt-5  overloaded  {until}")),
        "{table}"
    );

    let out = l.run(&["cooldown", "clear", "openai/gpt-5"]);
    assert_eq!(text(&out.stdout), "cleared openai/gpt-5\n");
    let out = l.run(&["cooldown", "clear", "openai/gpt-5"]);
    assert_eq!(text(&out.stdout), "openai/gpt-5 was not cooling down\n");
    l.run(&["cooldown", "set", "a", "--reason", "auth", "--for", "1h"]);
    l.run(&["cooldown", "set", "b/c", "--reason", "error", "--for", "1h"]);
    let out = l.run(&["cooldown", "clear", "--all"]);
    assert_eq!(text(&out.stdout), "cleared 2 entries\n");
    assert!(l.entries().is_empty());
}

#[test]
fn bad_input_is_refused_before_anything_is_written() {
    let l = ledger();
    l.run(&[
        "cooldown",
        "set",
        "openai/gpt-5",
        "--reason",
        "error",
        "--for",
        "30m",
    ]);
    let before = l.entries();
    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "cooldown",
                "set",
                "openai/gpt-5",
                "--reason",
                "slow",
                "--for",
                "1m",
            ],
            "invalid value 'slow'",
        ),
        (
            &[
                "cooldown",
                "set",
                "openai/gpt-5",
                "--reason",
                "error",
                "--for=-5m",
            ],
            "cannot be negative",
        ),
        (
            &[
                "cooldown",
                "set",
                "openai/gpt-5",
                "--reason",
                "error",
                "--for",
                "0s",
            ],
            "longer than zero",
        ),
        (
            &[
                "cooldown",
                "set",
                "openai/gpt-5",
                "--reason",
                "error",
                "--for",
                "soon",
            ],
            "is not a duration",
        ),
        (
            &[
                "cooldown",
                "set",
                "openai/gpt-5",
                "--reason",
                "error",
                "--until",
                "2001-01-01T00:00:00Z",
            ],
            "is in the past",
        ),
        (
            &[
                "cooldown",
                "set",
                "openai/gpt-5",
                "--reason",
                "error",
                "--until",
                "tomorrow",
            ],
            "not an RFC 3339 time",
        ),
        (
            &[
                "cooldown",
                "set",
                "open ai/gpt",
                "--reason",
                "error",
                "--for",
                "1m",
            ],
            "not a ledger key",
        ),
        (
            &[
                "cooldown",
                "set",
                "openai/gpt-5",
                "--reason",
                "overloaded",
                "--for",
                "99999999h",
            ],
            "--for 4166666 d 15 h: 9999-12-31T23:59:59Z is more than 365 days away, the longest a cooldown lasts",
        ),
        (
            &[
                "cooldown",
                "set",
                "openai/gpt-5",
                "--reason",
                "error",
                "--for",
                "366d",
            ],
            "is more than 365 days away",
        ),
        (
            &[
                "cooldown",
                "set",
                "openai/gpt-5",
                "--reason",
                "error",
                "--until",
                "9999-12-31T23:59:59Z",
            ],
            "--until: 9999-12-31T23:59:59Z is more than 365 days away",
        ),
        (&["cooldown", "set", "openai/gpt-5"], "--reason <REASON>"),
        (
            &[
                "cooldown",
                "set",
                "openai/gpt-5",
                "--reason",
                "error",
                "--for",
                "1m",
                "--until",
                "2099-01-01T00:00:00Z",
            ],
            "cannot be used with",
        ),
        (&["cooldown", "clear"], "required"),
        (&["pick", "openai"], "a model is needed here"),
        (&["pick", "openai/x;rm -rf"], "not a ledger key"),
        (&["pick"], "required"),
    ];
    for (args, message) in cases {
        let out = l.run(args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains(message),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    assert_eq!(l.entries(), before, "nothing changed");
}

#[test]
fn a_cooldown_set_without_a_length_takes_the_reasons_default() {
    let l = ledger();
    let before = SystemTime::now();
    let out = l.run(&["cooldown", "set", "openai/gpt-5", "--reason", "overloaded"]);
    let after = SystemTime::now();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("openai/gpt-5 cooling down (overloaded) until"),
        "{}",
        text(&out.stdout)
    );
    let e = l.entry("openai/gpt-5").unwrap();
    assert_eq!(
        (e["source"].as_str(), e["failures"].as_u64()),
        (Some("manual"), Some(1))
    );
    let until = backstop_core::time::parse_rfc3339(e["until"].as_str().unwrap()).unwrap();
    // Overloaded: 30 s, shortened by up to a fifth at random (RFC 3339
    // drops the milliseconds).
    assert!(
        until + Duration::from_secs(1) >= before + Duration::from_secs(24),
        "{e}"
    );
    assert!(until <= after + Duration::from_secs(30), "{e}");

    let help = text(&l.run(&["cooldown", "set", "--help"]).stdout);
    assert!(help.contains("--reason <REASON>"), "{help}");
    assert!(
        help.contains("[default: the reason's, escalated]"),
        "{help}"
    );
    assert!(help.contains("overloaded 30 s"), "{help}");
}

#[test]
fn rows_written_by_hand_or_another_version_never_break_pick_or_list() {
    let l = ledger();
    l.run(&[
        "cooldown",
        "set",
        "good/model",
        "--reason",
        "error",
        "--for",
        "5m",
    ]);
    let conn = backstop_store::sqlite::rusqlite::Connection::open(&l.state).unwrap();
    conn.execute_batch(
        "INSERT INTO backstop_cooldowns
            (key, reason, until_ms, source, last_error, failures, fingerprint, created_ms, updated_ms)
         VALUES
            ('a/huge', 'rate_limit', 9223372036854775807, 'header', NULL, 9223372036854775807, NULL, 0, 9223372036854775807),
            ('a/negative', 'error', -5, 'default', NULL, -3, NULL, -1, -1),
            ('a/odd', 'reason_from_the_future', 'soon', 'carrier_pigeon', x'ff00', 1e300, NULL, 'x', 0),
            ('not a key!', 'error', 0, 'default', NULL, 1, NULL, 0, 0)",
    )
    .unwrap();
    drop(conn);
    let out = l.run(&["pick", "a/huge", "a/odd", "a/negative"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "a/odd\n");
    let out = l.run(&["pick", "a/huge"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(75), "{err}");
    assert!(err.contains("a/huge: rate_limit until"), "{err}");
    assert!(err.contains("(in 364 d 23 h)"), "held to a year: {err}");
    let out = l.run(&["cooldown", "list", "--all"]);
    let listed = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    for k in ["a/huge", "a/negative", "a/odd", "good/model"] {
        assert!(listed.contains(k), "{listed}");
    }
    let odd = l.entry("a/odd").unwrap();
    assert_eq!(odd["reason"], "error");
    assert_eq!(odd["until"], "1970-01-01T00:00:00Z");
    assert_eq!(odd["failures"], u64::from(u32::MAX));
    assert!(
        odd["last_error"]
            .as_str()
            .unwrap()
            .starts_with("stored reason \"reason_from_the_future\" is unknown"),
        "{odd}"
    );
}

#[test]
fn an_unusable_state_location_is_a_failure_not_a_reason_to_retry() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "not a directory").unwrap();
    // A directory the command may not write: as root, the command runs as
    // nobody, for whom a root-owned 0555 directory is read-only.
    let locked = dir.path().join("locked");
    std::fs::create_dir(&locked).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o555)).unwrap();
    let cases = [
        (file.join("ledger.db"), "a-file is not a directory"),
        (locked.join("ledger.db"), "Permission denied"),
        (locked.join("sub/ledger.db"), "Permission denied"),
    ];
    for (state, cause) in cases {
        for (args, names) in [
            (&["pick", "a/b"][..], "cannot use sqlite:{} for the ledger"),
            (&["cooldown", "list"], "cannot use sqlite:{} for the ledger"),
            (
                &["serve", "--listen", "127.0.0.1:0"],
                "cannot use sqlite:{} for the queue",
            ),
        ] {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_backstop"));
            cmd.args(args)
                .env("BACKSTOP_STATE", &state)
                .current_dir(dir.path());
            as_nobody_when_root(&mut cmd, &file);
            let out = cmd.output().unwrap();
            let err = text(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{state:?} {args:?}: {err}");
            let names = names.replace("{}", &state.display().to_string());
            assert!(err.contains(&names), "{err}");
            assert!(err.contains(cause), "{err}");
        }
    }
    assert!(!locked.join("ledger.db").exists());
}

/// Runs `cmd` as nobody when the tests run as root (for whom no permission
/// is ever denied), which `ours`, a file the test made, tells.
fn as_nobody_when_root(cmd: &mut Command, ours: &std::path::Path) {
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::process::CommandExt;
    if std::fs::metadata(ours).unwrap().uid() == 0 {
        cmd.uid(65534).gid(65534);
    }
}

#[test]
fn a_state_url_of_an_unknown_scheme_is_refused_and_creates_nothing() {
    let l = ledger();
    for spec in [
        "postgress://ops:hunter2@db.internal/ledger",
        "mysql://db.internal/ledger",
        "http://db.internal/ledger",
    ] {
        for args in [
            &["pick", "a/b"][..],
            &["cooldown", "list"],
            &["serve", "--listen", "127.0.0.1:0"],
        ] {
            let out = l.cmd().args(["--state", spec]).args(args).output().unwrap();
            let err = text(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{spec} {args:?}: {err}");
            let scheme = spec.split("://").next().unwrap();
            assert!(
                err.contains(&format!(
                    "{scheme}:// is not a state location backstop knows; use a path, \
                     sqlite:PATH, file:PATH, or a postgres:// or postgresql:// URL"
                )),
                "{err}"
            );
            assert!(!err.contains("hunter2"), "{err}");
        }
    }
    let left: Vec<_> = std::fs::read_dir(l.dir()).unwrap().collect();
    assert!(left.is_empty(), "nothing was created: {left:?}");
}

#[test]
fn fifty_processes_share_the_ledger_without_losing_an_update() {
    let l = ledger();
    // Create the file first so that every process below races on writes,
    // not on creation.
    l.run(&["cooldown", "list"]);
    let started = SystemTime::now();
    let children: Vec<_> = (1..=50)
        .flat_map(|i| {
            let own = l
                .cmd()
                .args([
                    "cooldown",
                    "set",
                    &format!("p{i}/m"),
                    "--reason",
                    "error",
                    "--for",
                    "1h",
                ])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let reader = l
                .cmd()
                .args(["pick", "shared/model", &format!("p{i}/m"), "free/model"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            [own, reader]
        })
        .collect();
    // The shared key is set from 50 processes at once too.
    let shared: Vec<_> = (1..=50)
        .map(|i| {
            l.cmd()
                .args([
                    "cooldown",
                    "set",
                    "shared/model",
                    "--reason",
                    "rate_limit",
                    "--for",
                ])
                .arg(format!("{i}m"))
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children.into_iter().chain(shared) {
        let out = child.wait_with_output().unwrap();
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{err}");
        assert!(!err.contains("locked"), "{err}");
    }
    let listed = l.entries();
    assert_eq!(listed.len(), 51, "every process's own key landed");
    let shared = listed.iter().find(|e| e["key"] == "shared/model").unwrap();
    let until = backstop_core::time::parse_rfc3339(shared["until"].as_str().unwrap()).unwrap();
    // The longest deadline won, whatever the order the writers ran in.
    assert!(
        until >= started + Duration::from_secs(50 * 60 - 5),
        "{shared}"
    );
}

#[test]
fn a_postgres_ledger_is_shared_by_url() {
    let url = std::env::var("BACKSTOP_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let schema = format!("bs_cli_{}", std::process::id());
    let mut admin = postgres::Client::connect(&url, postgres::NoTls).unwrap_or_else(|e| {
        panic!("PostgreSQL is required for this test and is not reachable at {url}: {e}")
    });
    admin
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
        ))
        .unwrap();
    let sep = if url.contains('?') { '&' } else { '?' };
    let state = format!("{url}{sep}options=-csearch_path%3D{schema}");
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_backstop"))
            .args(["--state", &state])
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&[
        "cooldown",
        "set",
        "anthropic",
        "--reason",
        "auth",
        "--for",
        "1h",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = run(&[
        "pick",
        "anthropic/claude-sonnet-4-5",
        "google/gemini-2.5-pro",
    ]);
    assert_eq!(text(&out.stdout), "google/gemini-2.5-pro\n");
    let n: i64 = admin
        .query_one(
            &format!("SELECT count(*) FROM {schema}.backstop_cooldowns"),
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    admin
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .unwrap();
}
