//! Submitting many operations at once: `POST /v1/ops/batch` and
//! `backstop ops submit --from FILE`, each batch one transaction.

use super::*;

/// A coordinator with one local node, `cpu-1`, drained: what is submitted
/// stays pending, so the tests read the queue without handlers running.
fn drained(f: &Fleet) -> Proc {
    std::fs::write(
        f.path("backstop.toml"),
        "[[node]]\nname = \"cpu-1\"\ntype = \"cpu\"\nhandle = { install = \"true\" }\n",
    )
    .unwrap();
    let serve = f.serve(&[]);
    f.ok(&["nodes", "drain", "cpu-1"]);
    serve
}

/// How many operations the queue holds.
fn ops_count(f: &Fleet) -> usize {
    f.json_lines(&["ops", "list", "--limit", "100000"]).len()
}

#[test]
fn a_batch_is_submitted_whole_or_refused_with_the_index_of_its_bad_operation() {
    let f = fleet();
    let _serve = drained(&f);
    let server = f.server.lock().unwrap().clone();
    let t = Some(f.token.as_str());
    let good = r#"{"kind":"install","type":"cpu"}"#;
    let too_many = format!("[{}]", vec![good; 1001].join(","));
    // (body, status, index, what the error says)
    let cases: &[(&str, u16, Option<u64>, &str)] = &[
        ("[]", 422, None, "empty"),
        (good, 400, None, "JSON array"),
        ("[{\"kind\": ", 400, None, "JSON array"),
        (
            r#"[{"kind":"install","type":"cpu"},{"kind":"install","type":"cpu","colour":1}]"#,
            400,
            Some(1),
            "colour",
        ),
        (
            r#"[{"kind":"install","type":"cpu","key":"a"},{"kind":"instal","type":"cpu"}]"#,
            422,
            Some(1),
            "handle: install",
        ),
        (
            r#"[{"kind":"install","nodes":["cpu-9"]},{"kind":"install","type":"cpu"}]"#,
            404,
            Some(0),
            "cpu-9",
        ),
        (
            r#"[{"kind":"install","type":"cpu","idempotency_key":"k 1"}]"#,
            422,
            Some(0),
            "Idempotency-Key",
        ),
        (&too_many, 413, None, "at most 1000"),
    ];
    for (body, want, index, says) in cases {
        let (status, json) = http(&server, "POST", "/v1/ops/batch", t, body);
        let error = json["error"].as_str().unwrap_or_default();
        let shown: String = body.chars().take(80).collect();
        assert_eq!(status, *want, "{shown}: {json}");
        assert!(error.contains(says), "{shown}: {error}");
        assert_eq!(json["index"].as_u64(), *index, "{shown}: {json}");
        if index.is_some() {
            assert!(
                error.contains("nothing of the batch was submitted"),
                "{error}"
            );
        }
    }
    assert_eq!(
        http(&server, "POST", "/v1/ops/batch", None, "[]").0,
        401,
        "the token is needed"
    );
    // A single submission may carry its key in the header or the body,
    // not two different ones.
    let (status, json) = http_raw(
        &server,
        "POST",
        "/v1/ops",
        &format!(
            "Authorization: Bearer {}\r\nIdempotency-Key: \"h-1\"\r\n",
            f.token
        ),
        r#"{"kind":"install","type":"cpu","idempotency_key":"b-9"}"#,
    );
    assert_eq!(status, 422, "{json}");
    assert!(json["error"].as_str().unwrap().contains("differ"), "{json}");
    assert_eq!(ops_count(&f), 0, "nothing changed");
    // A good batch: one answer per operation, in order; the second `a`
    // supersedes the first; sent again, every key answers what it made.
    let batch = r#"[{"kind":"install","type":"cpu","key":"a","idempotency_key":"b-1"},
        {"kind":"install","type":"cpu","key":"a","payload":{"v":2},"idempotency_key":"b-2"}]"#;
    let (status, first) = http(&server, "POST", "/v1/ops/batch", t, batch);
    assert_eq!(status, 201, "{first}");
    let answers = first.as_array().unwrap();
    assert_eq!(answers.len(), 2);
    assert!(answers[0]["op"]["id"].as_i64() < answers[1]["op"]["id"].as_i64());
    assert_eq!(answers[1]["superseded"], 1);
    assert_eq!(answers[1]["op"]["payload"], r#"{"v":2}"#);
    let (status, again) = http(&server, "POST", "/v1/ops/batch", t, batch);
    assert_eq!(status, 200, "{again}");
    for (a, b) in again.as_array().unwrap().iter().zip(answers) {
        assert_eq!(a["op"]["id"], b["op"]["id"]);
        assert_eq!(a["repeated"], true);
    }
    assert_eq!(ops_count(&f), 2);
}

#[test]
fn ops_submit_from_a_file_sends_its_lines_in_batches_and_names_the_line_it_refuses() {
    let f = fleet();
    let _serve = drained(&f);
    // 2,500 operations (three batches), a comment and a blank line, and
    // the last one superseding the first.
    let mut text = String::from("# models for the cpu nodes\n\n");
    for i in 0..2500 {
        text.push_str(&format!(
            "{{\"kind\":\"install\",\"type\":\"cpu\",\"key\":\"m{i}\"}}\n"
        ));
    }
    text.push_str("{\"kind\":\"install\",\"type\":\"cpu\",\"key\":\"m0\",\"payload\":{\"v\":2}}\n");
    std::fs::write(f.path("ops.jsonl"), &text).unwrap();
    let from = [
        "ops",
        "submit",
        "--from",
        "ops.jsonl",
        "--idempotency-key",
        "run-1",
    ];
    let said = f.ok(&from);
    assert!(
        said.contains("2501 operations from ops.jsonl: 2501 new, 2501 deliveries, 1 older"),
        "{said}"
    );
    assert_eq!(ops_count(&f), 2501);
    // Run again with the same key: every line answered, nothing made.
    let again = f.ok(&from);
    assert!(again.contains(": 0 new"), "{again}");
    assert!(again.contains("2501 submitted before"), "{again}");
    assert_eq!(ops_count(&f), 2501);
    // One line the coordinator refuses, in the second batch: the first
    // batch is in, nothing of the second, and the line is named.
    let mut bad = String::new();
    for i in 0..1200 {
        bad.push_str(&format!(
            "{{\"kind\":\"install\",\"type\":\"cpu\",\"key\":\"n{i}\"}}\n"
        ));
    }
    bad.push_str("# a typo\n{\"kind\":\"instal\",\"type\":\"cpu\"}\n");
    std::fs::write(f.path("bad.jsonl"), &bad).unwrap();
    let out = f.run(&["ops", "submit", "--from", "bad.jsonl"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("bad.jsonl line 1202: the coordinator refused it: no node of type \"cpu\" handles kind \"instal\""),
        "{err}"
    );
    assert!(
        err.contains("nothing from line 1001 on was submitted; the 1000 operations before line 1001 were submitted"),
        "{err}"
    );
    assert_eq!(ops_count(&f), 2501 + 1000);
    // A line that is not an operation: nothing is sent at all.
    std::fs::write(
        f.path("broken.jsonl"),
        "{\"kind\":\"install\",\"type\":\"cpu\"}\n{\"kind\": \n",
    )
    .unwrap();
    let out = f.run(&["ops", "submit", "--from", "broken.jsonl"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("broken.jsonl line 2: not an operation"),
        "{err}"
    );
    let out = f.run(&["ops", "submit", "--from", "missing.jsonl"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(ops_count(&f), 3501, "nothing more");
    // From stdin, as JSON lines.
    let mut child = f
        .cmd()
        .args(["ops", "submit", "--from", "-", "--json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"{\"kind\":\"install\",\"nodes\":[\"cpu-1\"],\"key\":\"solo\"}\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["op"]["nodes"][0], "cpu-1");
    assert_eq!(answer["deliveries"], 1);
    // --from takes no operation of its own.
    let out = f.run(&["ops", "submit", "install", "--from", "ops.jsonl"]);
    assert_eq!(out.status.code(), Some(2));
}
