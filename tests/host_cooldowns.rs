//! Hosts' cooldowns shared by every backstop process through the ledger:
//! a 429 one process gets holds the others, which send nothing before its
//! end, on SQLite and on PostgreSQL; a wait longer than `--max-wait` ends
//! every command at once; `--no-shared-cooldown` opts out; a ledger that
//! cannot be read is a warning.

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use backstop_faultserver::{FaultServer, Reply};
use backstop_store::postgres::testing::TestSchema;

mod common;

use common::{Bed, bed, stderr, stdout, text};

/// A server whose `/data` answers its first request 429 with
/// `Retry-After: SECS`, and every later one with the payload.
fn limited(secs: u64) -> FaultServer {
    let server = FaultServer::start();
    server.script(
        "/data",
        [Reply::status(429).header("Retry-After", &secs.to_string())],
    );
    server.always("/data", Reply::ok("payload"));
    server
}

fn host_key(server: &FaultServer) -> String {
    format!("host:{}", server.addr())
}

/// Cools `key` by hand for ten minutes; when it ends, as listed.
fn hold(l: &Bed, key: &str) -> String {
    let set = l.run(&[
        "cooldown",
        "set",
        key,
        "--reason",
        "rate_limit",
        "--for",
        "10m",
    ]);
    assert_eq!(set.status.code(), Some(0), "{}", stderr(&set));
    l.entry(key).expect("set by hand")["until"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn spawn(mut cmd: Command) -> Child {
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("backstop starts")
}

/// Waits for the ledger at `state` to hold `key`: the witness that the
/// first process has recorded its 429.
fn wait_for_entry(l: &Bed, state: &str, key: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = l
            .cmd()
            .env("BACKSTOP_STATE", state)
            .args(["cooldown", "list", "--json"])
            .output()
            .unwrap();
        if let Some(entry) = text(&out.stdout)
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .find(|e| e["key"] == key)
        {
            return entry;
        }
        assert!(
            Instant::now() < deadline,
            "{key} never recorded: {}",
            text(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Two `backstop get`s of one URL whose host answers the first request
/// 429 with `Retry-After: SECS`, the second started once the first has
/// recorded it in the ledger at `state`: both succeed, and no request
/// reaches the host before the wait is over.
fn two_processes_share_the_wait(state: &str, secs: u64) {
    let l = bed();
    let server = limited(secs);
    let url = server.url("/data");
    let key = host_key(&server);
    let get = |out: &str| {
        let mut cmd = l.cmd();
        cmd.env("BACKSTOP_STATE", state)
            .args(["get", &url, "-o", out]);
        spawn(cmd)
    };
    let first = get("first.bin");
    let entry = wait_for_entry(&l, state, &key);
    assert_eq!(entry["reason"], "rate_limit");
    assert_eq!(entry["source"], "header");
    assert_eq!(entry["state"], "cooling");

    let listed = l
        .cmd()
        .env("BACKSTOP_STATE", state)
        .args(["cooldown", "list"])
        .output()
        .unwrap();
    let table = stdout(&listed);
    let row = table
        .lines()
        .find(|line| line.starts_with(&key))
        .unwrap_or_else(|| panic!("no row for {key}:\n{table}"));
    assert!(
        row.contains("rate_limit") && row.contains("header"),
        "{row}"
    );

    let second = get("second.bin");
    let (first, second) = (
        first.wait_with_output().unwrap(),
        second.wait_with_output().unwrap(),
    );
    for (name, out) in [("first", &first), ("second", &second)] {
        assert_eq!(out.status.code(), Some(0), "{name}: {}", stderr(out));
        assert_eq!(
            std::fs::read(l.path(&format!("{name}.bin"))).unwrap(),
            b"payload"
        );
    }
    let requests = server.requests();
    let refused = requests[0].at;
    assert!(requests.len() >= 3, "both processes sent: {requests:?}");
    for later in &requests[1..] {
        let gap = later.at.duration_since(refused).unwrap_or_default();
        assert!(
            gap >= Duration::from_secs(secs),
            "a request went out {gap:?} after the 429 asked for {secs} s"
        );
    }
    assert!(
        stderr(&second).contains("cooling down until"),
        "the second says why it waits: {}",
        stderr(&second)
    );

    let after = l
        .cmd()
        .env("BACKSTOP_STATE", state)
        .args(["cooldown", "list", "--all", "--json"])
        .output()
        .unwrap();
    assert!(
        !stdout(&after).contains(&key),
        "a success clears the host: {}",
        stdout(&after)
    );
}

#[test]
fn two_processes_share_a_host_wait_through_a_sqlite_ledger() {
    let l = bed();
    two_processes_share_the_wait(&l.state, 5);
}

#[test]
fn two_processes_share_a_host_wait_through_a_postgres_ledger() {
    let schema = TestSchema::new("bs_hosts");
    two_processes_share_the_wait(schema.url(), 3);
}

/// Every command that calls a host, each with what it calls.
fn every_caller(l: &Bed, server: &FaultServer) -> Vec<(&'static str, Command)> {
    let addr = server.addr().to_string();
    std::fs::create_dir_all(l.path("model")).unwrap();
    std::fs::write(l.path("model/config.json"), "{}").unwrap();
    let cmd = |args: Vec<String>| {
        let mut cmd = l.cmd();
        cmd.env("HF_ENDPOINT", server.url("")).args(args);
        cmd
    };
    let args = |list: &[&str]| list.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>();
    vec![
        ("get", cmd(args(&["get", &server.url("/data")]))),
        (
            "pull",
            cmd(args(&["pull", &server.url("/data"), "--dir", "out"])),
        ),
        (
            "pull hf://",
            cmd(args(&["pull", "hf://org/model", "--dir", "out"])),
        ),
        (
            "pull oci://",
            cmd(args(&[
                "pull",
                &format!("oci://{addr}/m:v1"),
                "--plain-http",
                "--dir",
                "out",
            ])),
        ),
        (
            "push",
            cmd(args(&[
                "push",
                "model",
                &format!("oci://{addr}/m:v1"),
                "--plain-http",
            ])),
        ),
        ("hub search", cmd(args(&["hub", "search"]))),
        ("login", {
            let mut login = cmd(args(&[
                "login",
                &addr,
                "-u",
                "alice",
                "--password-stdin",
                "--plain-http",
            ]));
            login.stdin(Stdio::piped());
            login
        }),
    ]
}

fn run_with_input(mut cmd: Command) -> Output {
    let mut child = spawn({
        cmd.stdin(Stdio::piped());
        cmd
    });
    if let Some(mut input) = child.stdin.take() {
        use std::io::Write;
        let _ = input.write_all(b"secret\n");
    }
    child.wait_with_output().unwrap()
}

#[test]
fn a_wait_longer_than_max_wait_ends_every_caller_at_once_with_nothing_sent() {
    let l = bed();
    let server = limited(1);
    let until = hold(&l, &host_key(&server));
    let named = format!("{} is cooling down until {until}", server.addr());

    for (name, cmd) in every_caller(&l, &server) {
        let started = Instant::now();
        let out = run_with_input(cmd);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(75), "{name}: {err}");
        assert!(
            err.contains(&named),
            "{name} names the host and the time: {err}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{name} ended at once"
        );
    }
    let skipped = l
        .cmd()
        .env("HF_ENDPOINT", server.url(""))
        .args(["hub", "search", "--skip-on-rate-limit"])
        .output()
        .unwrap();
    assert_eq!(skipped.status.code(), Some(0), "{}", stderr(&skipped));
    assert!(stderr(&skipped).contains("skipped"), "{}", stderr(&skipped));
    assert!(stderr(&skipped).contains(&named), "{}", stderr(&skipped));
    assert!(
        server.requests().is_empty(),
        "nothing was sent: {:?}",
        server.requests()
    );
}

#[test]
fn no_shared_cooldown_neither_reads_nor_records() {
    let l = bed();
    let server = limited(1);
    let key = host_key(&server);
    hold(&l, &key);

    let flag = l.run(&[
        "get",
        &server.url("/data"),
        "--no-shared-cooldown",
        "-o",
        "a.bin",
    ]);
    assert_eq!(flag.status.code(), Some(0), "{}", stderr(&flag));
    assert_eq!(
        server.hits("/data"),
        2,
        "sent despite the ledger, 429 then 200"
    );

    l.run(&["cooldown", "clear", &key]);
    server.script("/data", [Reply::status(429).header("Retry-After", "1")]);
    let env = l
        .cmd()
        .env("BACKSTOP_NO_SHARED_COOLDOWN", "1")
        .args(["get", &server.url("/data"), "-o", "b.bin"])
        .output()
        .unwrap();
    assert_eq!(env.status.code(), Some(0), "{}", stderr(&env));
    assert_eq!(server.hits("/data"), 4);
    assert_eq!(l.entry(&key), None, "the 429 was not recorded");

    hold(&l, &key);
    let shared = l
        .cmd()
        .env("BACKSTOP_NO_SHARED_COOLDOWN", "0")
        .args(["get", &server.url("/data")])
        .output()
        .unwrap();
    assert_eq!(shared.status.code(), Some(75), "\"0\" is not an opt-out");
    assert_eq!(server.hits("/data"), 4);
}

#[test]
fn a_ledger_that_cannot_be_read_is_a_warning_and_the_call_goes_on() {
    let l = bed();
    let server = limited(1);
    let garbage = l.path("garbage.db");
    std::fs::write(&garbage, vec![0x5a; 8192]).unwrap();
    for state in [
        garbage.display().to_string(),
        "mysql://db/backstop".to_owned(),
    ] {
        let out = l
            .cmd()
            .env("BACKSTOP_STATE", &state)
            .args(["get", &server.url("/data"), "--max-wait", "5s"])
            .output()
            .unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(0), "{state}: {err}");
        assert_eq!(stdout(&out), "payload");
        assert!(
            err.contains("warning: hosts' cooldowns are not shared by this process"),
            "{state}: {err}"
        );
        assert_eq!(
            err.matches("warning: hosts' cooldowns").count(),
            1,
            "warned once: {err}"
        );
    }
    assert_eq!(
        std::fs::read(&garbage).unwrap(),
        vec![0x5a; 8192],
        "left as it was"
    );
}

#[test]
fn a_look_creates_no_ledger_and_a_429_does() {
    let l = bed();
    let server = FaultServer::start();
    server.always("/data", Reply::ok("payload"));
    let out = l.run(&["get", &server.url("/data")]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        !std::path::Path::new(&l.state).exists(),
        "no ledger file for a run that met no rate limit"
    );
    let started = SystemTime::now();
    server.script("/data", [Reply::status(503).header("Retry-After", "1")]);
    let out = l.run(&["get", &server.url("/data"), "--attempts", "1"]);
    assert_eq!(out.status.code(), Some(75), "{}", stderr(&out));
    let entry = l.entry(&host_key(&server)).expect("recorded");
    assert_eq!(entry["reason"], "overloaded");
    let until = backstop_core::time::parse_rfc3339(entry["until"].as_str().unwrap()).unwrap();
    assert!(until >= started, "{entry}");
}
