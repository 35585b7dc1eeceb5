//! Watching a fleet from outside: `GET /metrics` scraped from a running
//! coordinator and checked by Prometheus's own `promtool`, and the API
//! held to its OpenAPI document by schemathesis.

use std::net::TcpStream;

use super::*;

/// One GET; (status, content type, body).
pub(crate) fn get_text(addr: &str, path: &str, token: Option<&str>) -> (u16, String, String) {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    get_with(addr, path, &auth)
}

/// One GET with these header lines (each ending in CRLF).
fn get_with(addr: &str, path: &str, headers: &str) -> (u16, String, String) {
    let addr = addr.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let status = answer[9..12].parse().unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let content_type = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type:")
                .map(|v| v.trim().to_owned())
        })
        .unwrap_or_default();
    (status, content_type, body.to_owned())
}

/// The value of the sample `name{labels}` exactly as written, if any.
pub(crate) fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// `promtool check metrics` on `text`: Prometheus's own parser and linter.
/// Without promtool the test fails: it is never skipped.
fn promtool_check(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "promtool is required to check /metrics and cannot be run ({e}): install \
                 Debian's prometheus package (.ci/run does)"
            )
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics refused /metrics:\n{}{}\n--- the text:\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn metrics_count_what_happened_and_pass_promtool() {
    let f = fleet();
    let mut cmd = f.cmd();
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--nats", &f.nats])
        .args(["--subject-prefix", &f.prefix])
        .args(QUICK_SERVE)
        .args(["--max-failures", "2", "--metrics-listen", "127.0.0.1:0"]);
    let mut serve = Proc::spawn(cmd, "backstop serve");
    let line = serve.wait_for("serving the fan-out API on ");
    let api = line
        .split("API on ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap()
        .to_owned();
    *f.server.lock().unwrap() = api.clone();
    let open = line
        .split("metrics on ")
        .nth(1)
        .and_then(|rest| rest.split("/metrics").next())
        .unwrap_or_else(|| panic!("no metrics address in {line:?}"))
        .to_owned();
    let _w = f.worker(
        "gpu-1",
        "gpu",
        &[("install", "echo installed"), ("poison", "exit 1")],
    );
    let installs = [
        f.submit("install", "gpu", &[]),
        f.submit("install", "gpu", &[]),
    ];
    let poison = f.submit("poison", "gpu", &[]);
    for op in installs {
        f.wait_state(op, "gpu-1", "done");
    }
    f.wait_state(poison, "gpu-1", "dead");

    // The API's /metrics needs the token; the metrics address does not.
    let (status, _, body) = get_text(&api, "/metrics", None);
    assert_eq!(status, 401, "{body}");
    let (status, _, body) = get_text(&api, "/metrics", Some("not-the-token"));
    assert_eq!(status, 401, "{body}");
    // Counters move once outcomes are stored: wait for them, then check
    // every number against what happened.
    let done = r#"backstop_deliveries_finished_total{kind="install",node="gpu-1",outcome="done"}"#;
    let dead = r#"backstop_deliveries_finished_total{kind="poison",node="gpu-1",outcome="dead"}"#;
    let mut text = String::new();
    f.wait_until("/metrics counts the deliveries finished", || {
        let (status, content_type, body) = get_text(&api, "/metrics", Some(&f.token));
        assert_eq!(status, 200, "{body}");
        assert!(
            content_type.starts_with("text/plain; version=0.0.4"),
            "{content_type}"
        );
        text = body;
        sample(&text, done) == Some(2.0) && sample(&text, dead) == Some(1.0)
    });
    promtool_check(&text);
    for (series, want) in [
        (
            r#"backstop_attempt_duration_seconds_count{kind="install",outcome="done"}"#,
            2.0,
        ),
        (
            r#"backstop_attempt_duration_seconds_count{kind="poison",outcome="failed"}"#,
            2.0,
        ),
        (r#"backstop_deliveries{state="dead",kind="poison"}"#, 1.0),
        (r#"backstop_deliveries{state="pending",kind="poison"}"#, 0.0),
        (
            r#"backstop_deliveries{state="in_flight",kind="poison"}"#,
            0.0,
        ),
        (r#"backstop_nodes{status="healthy",drained="false"}"#, 1.0),
        (r#"backstop_nodes{status="unhealthy",drained="false"}"#, 0.0),
        ("backstop_oldest_due_delivery_age_seconds", 0.0),
        ("backstop_store_up", 1.0),
        ("backstop_nats_up", 1.0),
        ("backstop_housekeeping_leader", 1.0),
    ] {
        assert_eq!(sample(&text, series), Some(want), "{series} in\n{text}");
    }
    assert_eq!(
        text.matches("backstop_deliveries_finished_total{").count(),
        2,
        "only what finished is counted, once:\n{text}"
    );
    assert!(
        !text.contains(r#"backstop_deliveries{state="done""#),
        "done deliveries are counted as they finish, not read back:\n{text}"
    );

    // What a Prometheus server asks for first: OpenMetrics, the same
    // samples.
    let prometheus = format!(
        "Authorization: Bearer {}\r\nAccept: application/openmetrics-text;version=1.0.0,\
         text/plain;version=0.0.4;q=0.5\r\n",
        f.token
    );
    let (status, content_type, open_metrics) = get_with(&api, "/metrics", &prometheus);
    assert_eq!(status, 200, "{open_metrics}");
    assert!(
        content_type.starts_with("application/openmetrics-text; version=1.0.0"),
        "{content_type}"
    );
    assert!(open_metrics.ends_with("# EOF\n"), "{open_metrics}");
    assert_eq!(sample(&open_metrics, done), Some(2.0), "{open_metrics}");
    assert_eq!(sample(&open_metrics, dead), Some(1.0), "{open_metrics}");

    // The same counters on the metrics address, without a token; it
    // serves nothing else.
    let (status, _, open_text) = get_text(&open, "/metrics", None);
    assert_eq!(status, 200, "{open_text}");
    promtool_check(&open_text);
    assert_eq!(sample(&open_text, done), Some(2.0), "{open_text}");
    let (status, _, body) = get_text(&open, "/v1/ops", None);
    assert_eq!(status, 404, "the metrics address serves no API: {body}");
    let (status, _, body) = get_text(&open, "/v1/ops", Some(&f.token));
    assert_eq!(status, 404, "not even with the token: {body}");

    // A drained node's delivery waits for it: it is not overdue.
    f.ok(&["nodes", "drain", "gpu-1"]);
    f.submit("install", "gpu", &[]);
    let (_, _, text) = get_text(&open, "/metrics", None);
    assert_eq!(
        sample(
            &text,
            r#"backstop_deliveries{state="pending",kind="install"}"#
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, r#"backstop_nodes{status="healthy",drained="true"}"#),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "backstop_oldest_due_delivery_age_seconds"),
        Some(0.0),
        "{text}"
    );
    drop(serve);
}

#[test]
fn metrics_listen_refuses_a_bad_address_at_once() {
    let f = fleet();
    let out = f.run(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "nowhere",
    ]);
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{log}");
    assert!(log.contains("is not HOST:PORT"), "{log}");
    // An address in use: serve stops before it starts anything.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (code, log) = f.exit_of(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        &addr,
    ]);
    assert_ne!(code, Some(0), "{log}");
    assert!(log.contains(&format!("cannot listen on {addr}")), "{log}");
    assert!(!log.contains("serving the fan-out API"), "{log}");
}

/// The API keeps to its OpenAPI document: schemathesis (from PyPI, in a
/// venv under target/) generates requests from `/openapi.json` — valid
/// ones, and ones the document forbids — against a coordinator with
/// operations done, dead, cancelled and waiting, and runs every check it
/// has: no 5xx, every status, header and body as documented, what the
/// document forbids refused with a 4xx, and what it allows never refused
/// as malformed (`tests/fixtures/schemathesis.toml`). Bounded: a fixed
/// seed and 25 examples per operation.
#[test]
fn the_api_keeps_to_its_openapi_document_under_schemathesis() {
    keeps_to_its_document(fleet());
}

/// The same on PostgreSQL, whose text holds no NUL byte.
#[test]
fn the_api_keeps_to_its_openapi_document_under_schemathesis_postgres() {
    keeps_to_its_document(fleet_pg());
}

fn keeps_to_its_document(f: Fleet) {
    let st = backstop_faultserver::schemathesis(Path::new(env!("CARGO_TARGET_TMPDIR")));
    std::fs::write(
        f.path("backstop.toml"),
        "[[node]]\nname = \"gpu-1\"\ntype = \"gpu\"\nconcurrency = 4\n\
         handle = { install = \"echo installed\", poison = \"echo no >&2; exit 1\", \
         hold = \"sleep 600\" }\n\n[kinds.install]\ntimeout = \"90s\"\n",
    )
    .unwrap();
    let _serve = f.serve(&["--max-failures", "1"]);
    let server = f.server.lock().unwrap().clone();

    // What the answers will hold: each state, settings, output, a
    // cancellation, a node that is drained. (The document's example
    // submits `install` to `gpu`: it is acted on.)
    let done = f.submit(
        "install",
        "gpu",
        &["--key", "llama", "--max-delay", "1h 30m"],
    );
    let dead = f.submit("poison", "gpu", &[]);
    f.wait_state(done, "gpu-1", "done");
    f.wait_state(dead, "gpu-1", "dead");
    let held = f.submit("hold", "gpu", &[]);
    f.wait_state(held, "gpu-1", "in_flight");
    f.ok(&["ops", "cancel", &held.to_string()]);
    f.ok(&["nodes", "drain", "gpu-1"]);
    f.submit("install", "gpu", &["--key", "llama"]);

    let (status, content_type, doc) = get_text(&server, "/openapi.json", None);
    assert_eq!(status, 200, "served without the token: {doc}");
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    let doc: Value = serde_json::from_str(&doc).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");

    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/schemathesis.toml");
    let out = Command::new(&st)
        .arg("--config-file")
        .arg(&config)
        .args(["run", &format!("{server}/openapi.json")])
        .args(["--header", &format!("Authorization: Bearer {}", f.token)])
        .args(["--checks", "all", "--max-examples", "25", "--seed", "15"])
        .args(["--request-timeout", "10", "--generation-database", "none"])
        .args(["--no-color", "--output-truncate", "false"])
        .current_dir(f.path(""))
        .env("NO_COLOR", "1")
        .output()
        .expect("schemathesis runs");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found the API off its document:\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        report.contains("14 selected / 14 total") && report.contains(" passed"),
        "every operation was tested:\n{report}"
    );
}
