//! `backstop request`: curl's verbs and bodies under the engine's
//! retries, against a fault server that counts requests and keeps what
//! each one carried.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use backstop_faultserver::{FaultServer, HubFile, Reply};

mod common;

use common::{QUICK, backstop, run, run_with_stdin, stderr, stdout};

fn request(server: &FaultServer, path: &str) -> Command {
    let mut cmd = backstop();
    cmd.args(["request", &server.url(path)]).args(QUICK);
    cmd
}

fn sha(bytes: &[u8]) -> String {
    HubFile::lfs("x", bytes.to_vec()).sha256()
}

/// A POST without a key that gets a 503 with no wait is sent once: a
/// gateway may answer so after its backend acted. It exits 1 (not 75: a
/// script must not send it again blindly), saying how to make retries
/// safe.
#[test]
fn a_post_without_a_key_is_not_sent_again_after_a_503() {
    let server = FaultServer::start();
    server.always("/v1/jobs", Reply::status(503));
    let out = run(request(&server, "/v1/jobs").args(["--json", r#"{"model":"qwen3"}"#]));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(server.hits("/v1/jobs"), 1);
    assert!(err.contains("failed, not retried: 1 attempt"), "{err}");
    assert!(
        err.contains("caused by: HTTP 503 Service Unavailable"),
        "{err}"
    );
    assert!(
        err.contains("hint: not sent again: the server may have acted on this POST; if it honours idempotency keys, --idempotency-key auto makes retries safe"),
        "{err}"
    );
    let sent = &server.requests()[0];
    assert_eq!(sent.method, "POST", "a body makes it a POST, as in curl");
    assert_eq!(&sent.body[..], br#"{"model":"qwen3"}"#);
    assert_eq!(sent.header("content-type"), Some("application/json"));
    assert_eq!(sent.header("accept"), Some("application/json"));

    // An answer lost after the server took the request: not sent again
    // either.
    server.script("/v1/lost", [Reply::ok("x".repeat(1000)).cut_after(10)]);
    let out = run(request(&server, "/v1/lost").args(["-d", "a=1"]));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(server.hits("/v1/lost"), 1);
    assert!(
        stderr(&out).contains("not sent again: the server may have acted"),
        "{}",
        stderr(&out)
    );

    // A PUT is idempotent: retried like a GET, temporary when the
    // attempts run out.
    server.always("/v1/put", Reply::status(502));
    let out = run(request(&server, "/v1/put").args(["-X", "PUT", "-d", "x", "--attempts", "2"]));
    assert_eq!(out.status.code(), Some(75), "{}", stderr(&out));
    assert_eq!(server.hits("/v1/put"), 2);
    assert!(!stderr(&out).contains("not sent again"), "{}", stderr(&out));
}

/// With an idempotency key the same POST is retried like a GET, and every
/// attempt carries the same key and the same body.
#[test]
fn with_a_key_a_post_is_retried_and_every_attempt_carries_the_same_key() {
    let server = FaultServer::start();
    server.script(
        "/v1/jobs",
        [
            Reply::status(503),
            Reply::status(502),
            Reply::ok("x".repeat(1000)).cut_after(10),
            Reply::json(r#"{"id":42}"#),
        ],
    );
    let out = run(request(&server, "/v1/jobs").args([
        "--json",
        r#"{"model":"qwen3"}"#,
        "--idempotency-key",
        "auto",
    ]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), r#"{"id":42}"#, "the whole answer, once");
    let sent = server.requests();
    assert_eq!(sent.len(), 4);
    let key = sent[0].header("idempotency-key").unwrap().to_owned();
    let shape: Vec<usize> = key.split('-').map(str::len).collect();
    assert_eq!(shape, [8, 4, 4, 4, 12], "a UUID: {key}");
    assert_eq!(key.as_bytes()[14], b'4', "version 4: {key}");
    for r in &sent {
        assert_eq!(r.method, "POST");
        assert_eq!(r.header("idempotency-key"), Some(key.as_str()));
        assert_eq!(&r.body[..], br#"{"model":"qwen3"}"#);
    }

    // A key of the caller's own; another run makes another auto key.
    server.always("/v1/other", Reply::ok("ok"));
    let out = run(request(&server, "/v1/other").args([
        "-d",
        "x=1",
        "--idempotency-key",
        "nightly-2026-12-01",
    ]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let last = server.requests().pop().unwrap();
    assert_eq!(last.header("idempotency-key"), Some("nightly-2026-12-01"));

    // A temporary failure names the key that makes a rerun the same
    // request.
    server.always("/v1/down", Reply::status(503));
    let out = run(request(&server, "/v1/down").args([
        "--json",
        "{}",
        "--idempotency-key",
        "auto",
        "--attempts",
        "2",
    ]));
    assert_eq!(out.status.code(), Some(75), "{}", stderr(&out));
    let key = server
        .requests()
        .pop()
        .unwrap()
        .header("idempotency-key")
        .unwrap()
        .to_owned();
    assert!(
        stderr(&out).contains(&format!(
            "run the same command with --idempotency-key {key}"
        )),
        "{}",
        stderr(&out)
    );

    // --retry-unsafe retries without a key.
    server.script("/v1/unsafe", [Reply::status(502), Reply::ok("made")]);
    let out =
        run(request(&server, "/v1/unsafe").args(["-X", "PATCH", "-d", "a=1", "--retry-unsafe"]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(server.hits("/v1/unsafe"), 2);
    assert!(
        server
            .requests()
            .iter()
            .rev()
            .take(2)
            .all(|r| r.method == "PATCH")
    );
}

/// Without a key, what proves the server did not act is retried: a
/// connection never made, a 429 or a 503 that says when to come back,
/// whose wait is honoured.
#[test]
fn a_refused_connection_and_a_rate_limit_are_retried_without_a_key() {
    let nobody = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = format!("http://{}/v1/jobs", nobody.local_addr().unwrap());
    drop(nobody);
    let out = run(backstop()
        .args(["request", &closed, "-d", "a=1", "--attempts", "3"])
        .args(QUICK));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(75), "{err}");
    assert!(err.contains("3 attempts"), "{err}");
    assert!(err.contains("connection refused"), "{err}");

    let server = FaultServer::start();
    server.script(
        "/v1/jobs",
        [
            Reply::status(429).header("Retry-After", "1"),
            Reply::status(503).header("Retry-After", "1"),
            Reply::ok("queued"),
        ],
    );
    let started = Instant::now();
    let out = run(request(&server, "/v1/jobs").args(["-d", "a=1"]));
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "queued");
    assert_eq!(server.hits("/v1/jobs"), 3);
    assert!(
        took >= Duration::from_secs(2),
        "the server asked for 1 s twice, and is never asked sooner: {took:?}"
    );
}

/// `--data-binary @FILE` is read from the file for every attempt: each
/// one carries the whole file, and the process never holds it in memory
/// (its peak resident size stays far below the file's size).
#[test]
fn data_binary_from_a_file_is_sent_whole_on_every_attempt_and_never_held() {
    const SIZE: usize = 64 << 20;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weights.bin");
    let data: Vec<u8> = (0..SIZE).map(|i| (i % 251) as u8).collect();
    std::fs::write(&path, &data).unwrap();
    let digest = sha(&data);
    drop(data);
    let server = FaultServer::start();
    // The last answer waits, so that the process is looked at with the
    // whole body sent a second time.
    server.script(
        "/v1/upload",
        [
            Reply::status(503),
            Reply::ok("stored").delay(Duration::from_secs(3)),
        ],
    );
    let child = request(&server, "/v1/upload")
        .arg("--data-binary")
        .arg(format!("@{}", path.display()))
        .args(["--idempotency-key", "auto"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while server
        .requests()
        .get(1)
        .is_none_or(|r| r.body_sha256.is_none())
    {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the second body never arrived"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    let peak_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "stored");
    let sent = server.requests();
    assert_eq!(sent.len(), 2);
    for r in &sent {
        assert_eq!(r.body_len, SIZE as u64);
        assert_eq!(r.body_sha256.as_deref(), Some(digest.as_str()));
        assert_eq!(r.header("content-length"), Some(SIZE.to_string().as_str()));
    }
    eprintln!("peak resident: {peak_kib} KiB");
    assert!(
        peak_kib < 48 << 10,
        "a 64 MiB body sent twice peaked at {peak_kib} KiB resident"
    );
}

/// `-d` joins its pieces with & and drops the newlines of files, as curl
/// does; `--data-binary @-` sends standard input as it is, kept to be sent
/// again; `-o` gets the whole answer, or is left as it was.
#[test]
fn bodies_as_curl_builds_them_and_answers_written_whole() {
    let server = FaultServer::start();
    let dir = tempfile::tempdir().unwrap();
    let form = dir.path().join("form.txt");
    std::fs::write(&form, "b=2\r\nc=3\n").unwrap();
    server.always("/form", Reply::ok("ok"));
    let out = run(request(&server, "/form")
        .args(["-d", "a=1", "-d"])
        .arg(format!("@{}", form.display())));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let sent = server.requests().pop().unwrap();
    assert_eq!(&sent.body[..], b"a=1&b=2c=3");
    assert_eq!(
        sent.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );

    server.script("/stdin", [Reply::status(500), Reply::json("{}")]);
    let out = run_with_stdin(
        request(&server, "/stdin").args([
            "--data-binary",
            "@-",
            "-H",
            "Content-Type: text/csv",
            "--idempotency-key",
            "k1",
        ]),
        b"a,b\n1,2\n",
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let sent = server.requests();
    let (first, second) = (&sent[sent.len() - 2], &sent[sent.len() - 1]);
    assert_eq!(&first.body[..], b"a,b\n1,2\n");
    assert_eq!(
        &second.body[..],
        b"a,b\n1,2\n",
        "standard input, sent again"
    );
    assert_eq!(second.header("content-type"), Some("text/csv"), "-H wins");

    let answer = dir.path().join("answer.json");
    std::fs::write(&answer, "old").unwrap();
    server.script(
        "/put",
        [
            Reply::ok("new answer").cut_after(3),
            Reply::ok("new answer"),
        ],
    );
    let out = run(request(&server, "/put")
        .args(["-X", "PUT", "-d", "x", "-o"])
        .arg(&answer));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&answer).unwrap(), "new answer");
    server.always("/gone", Reply::status(404));
    let out = run(request(&server, "/gone")
        .args(["-d", "x", "-o"])
        .arg(&answer));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&answer).unwrap(), "new answer");
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(left.len(), 2, "no spool file left behind: {left:?}");
}

/// Bad input is a usage error before anything is sent.
#[test]
fn bad_input_is_refused_before_anything_is_sent() {
    let server = FaultServer::start();
    server.always("/x", Reply::ok("ok"));
    let cases: &[(&[&str], &str)] = &[
        (
            &["--json", "{\"a\":"],
            "--json: not valid JSON: EOF while parsing",
        ),
        (
            &["--json", "@/nonexistent/body.json"],
            "--json @/nonexistent/body.json: cannot be read",
        ),
        (
            &["-d", "@/nonexistent/form.txt"],
            "-d @/nonexistent/form.txt: cannot be read",
        ),
        (
            &["--data-binary", "@/nonexistent/w.bin"],
            "--data-binary @/nonexistent/w.bin: cannot be read",
        ),
        (
            &["-X", "BAD METHOD"],
            "\"BAD METHOD\" is not an HTTP method",
        ),
        (
            &[
                "-d",
                "a",
                "--idempotency-key",
                "k",
                "-H",
                "Idempotency-Key: j",
            ],
            "--idempotency-key and -H 'Idempotency-Key: ...' both give a key",
        ),
        (&["-d", "a", "--json", "{}"], "cannot be used with"),
        (
            &["-d", "a", "-H", "Bad Header: x"],
            "\"Bad Header\" is not a header name",
        ),
    ];
    for (args, want) in cases {
        let out = run(request(&server, "/x").args(*args));
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{\"a\": [1, 2,]}").unwrap();
    let out = run(request(&server, "/x")
        .arg("--json")
        .arg(format!("@{}", bad.display())));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("not valid JSON"), "{}", stderr(&out));
    assert!(server.requests().is_empty(), "{:?}", server.requests());
}

/// Without a method or a body, `request` is `get`: an answer cut short
/// continues by Range from what arrived; with a method, it is fetched
/// whole again.
#[test]
fn a_plain_request_is_get_and_resumes_by_range() {
    let server = FaultServer::start();
    let body: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
    server.script("/file", [Reply::file(body.clone()).cut_after(70_000)]);
    server.always("/file", Reply::file(body.clone()));
    let out = run(&mut request(&server, "/file"));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(out.stdout == body, "the whole body, once");
    let sent = server.requests();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[1].header("range"), Some("bytes=70000-"));

    server.script("/file", [Reply::file(body.clone()).cut_after(70_000)]);
    let before = server.requests().len();
    let out = run(request(&server, "/file").args(["-X", "OPTIONS"]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(out.stdout == body);
    let sent = &server.requests()[before..];
    assert_eq!(sent.len(), 2);
    assert!(
        sent.iter()
            .all(|r| r.method == "OPTIONS" && r.header("range").is_none())
    );
}
