//! What an operator does to a running fleet, through the binary: cancel
//! an operation (letting what runs finish, or stopping it), remove a node,
//! read what handlers printed, set how an operation runs, watch it to the
//! end, and reach the coordinator from a client file instead of the
//! shell's history.

use std::os::unix::fs::PermissionsExt;

use super::*;

/// A handler that notes its shell's pid in `DIR/pid-NODE-OP`, says it
/// started, and runs until `go` exists.
fn waits_for(dir: &Path, go: &Path) -> String {
    format!(
        "echo $$ > {dir}/pid-$BACKSTOP_NODE-$BACKSTOP_OP; echo \"started on $BACKSTOP_NODE\"; \
         while [ ! -f {go} ]; do sleep 0.05; done; echo finished",
        dir = dir.display(),
        go = go.display()
    )
}

impl Fleet {
    /// Waits until the handler of `op` on `node` ([`waits_for`]) runs; its
    /// pid.
    fn running_pid(&self, op: i64, node: &str) -> String {
        let file = self.path(&format!("pid-{node}-{op}"));
        let mut pid = String::new();
        self.wait_until(&format!("the handler of op {op} runs on {node}"), || {
            pid = read(&file).trim().to_owned();
            !pid.is_empty()
        });
        pid
    }

    /// Waits until some delivery of `op` to `node` is `state` (a node's
    /// name may have had two deliveries of it: a removed node's, and its
    /// successor's).
    fn wait_any_state(&self, op: i64, node: &str, state: &str) -> Value {
        let mut found = Value::Null;
        self.wait_until(
            &format!("a delivery of op {op} to {node} is {state}"),
            || {
                found = self.op(op)["deliveries"]
                    .as_array()
                    .and_then(|all| {
                        all.iter()
                            .find(|d| d["node"] == node && d["state"] == state)
                            .cloned()
                    })
                    .unwrap_or(Value::Null);
                !found.is_null()
            },
        );
        found
    }

    /// A command that must fail with `code`; its stderr.
    fn fails(&self, args: &[&str], code: i32) -> String {
        let out = self.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(code), "backstop {args:?}: {stderr}");
        stderr
    }

    /// Writes `backstop.toml`.
    fn config(&self, text: &str) {
        std::fs::write(self.path("backstop.toml"), text).unwrap();
    }
}

fn cancel_ends_what_waits_and_lets_what_runs_finish(f: Fleet) {
    let _serve = f.serve(&[]);
    let go = f.path("go");
    let handler = waits_for(f.dir.path(), &go);
    let _w1 = f.worker("gpu-1", "gpu", &[("install", &handler)]);
    let _w2 = f.worker("gpu-2", "gpu", &[("install", &handler)]);
    f.ok(&["nodes", "drain", "gpu-2"]);
    let op = f.submit("install", "gpu", &["--key", "llama"]);
    let id = op.to_string();
    f.running_pid(op, "gpu-1");
    let said = f.ok(&["ops", "cancel", &id, "--by", "alice"]);
    assert!(
        said.starts_with(&format!("operation {op} (install) cancelled by alice at "))
            && said.contains("1 delivery cancelled; 1 running finish"),
        "{said}"
    );
    let shown = f.op(op);
    assert_eq!(shown["cancelled"]["by"], "alice");
    assert_eq!(shown["live"], false);
    let waiting = delivery(&shown, "gpu-2");
    assert_eq!(
        (&waiting["state"], &waiting["cancelled"]["by"]),
        (&"cancelled".into(), &"alice".into())
    );
    let running = delivery(&shown, "gpu-1");
    assert_eq!(running["state"], "in_flight", "it runs on");
    let table = f.ok(&["ops", "show", &id]);
    assert!(
        table.contains("cancelled by alice at")
            && table.contains("cancelled by alice")
            && table.contains("in_flight (cancelling)"),
        "{table}"
    );
    // It finishes: done, as its handler succeeded.
    std::fs::write(&go, "").unwrap();
    f.wait_state(op, "gpu-1", "done");
    // A node that joins later does not get it: its registration, stored,
    // made no delivery of it.
    let _w3 = f.worker("gpu-3", "gpu", &[("install", "true")]);
    assert_eq!(delivery(&f.op(op), "gpu-3"), Value::Null);
    // The undrained node does not run it: a later operation runs there
    // first, and the cancelled delivery stays as it was.
    f.ok(&["nodes", "drain", "gpu-2", "--undo"]);
    let later = f.submit("install", "gpu", &["--key", "vllm"]);
    f.wait_state(later, "gpu-2", "done");
    assert_eq!(delivery(&f.op(op), "gpu-2")["attempt"], 0);
    // A newer one with the key goes to every node, as always.
    let newer = f.json(&[
        "ops", "submit", "install", "--type", "gpu", "--key", "llama",
    ]);
    assert_eq!(newer["deliveries"], 3);
    // Cancelling again changes nothing; the first who and when stay.
    let again = f.json(&["ops", "cancel", &id, "--by", "bob"]);
    assert_eq!(
        (&again["cancelled"], &again["running"]),
        (&0.into(), &0.into())
    );
    assert_eq!(again["op"]["cancelled"]["by"], "alice");
    let missing = f.fails(&["ops", "cancel", "999"], 1);
    assert!(missing.contains("there is no operation 999"), "{missing}");
    let secret = f.fails(&["ops", "cancel", &id, "--by", "token=abcdefghijklmnop"], 2);
    assert!(
        secret.contains("\"token=<redacted>\" cannot name who did this"),
        "{secret}"
    );
    assert!(!secret.contains("abcdefghijklmnop"), "{secret}");
}

#[test]
fn cancel_ends_what_waits_and_lets_what_runs_finish_sqlite() {
    cancel_ends_what_waits_and_lets_what_runs_finish(fleet());
}

#[test]
fn cancel_ends_what_waits_and_lets_what_runs_finish_postgres() {
    cancel_ends_what_waits_and_lets_what_runs_finish(fleet_pg());
}

#[test]
fn cancel_with_stop_running_stops_a_worker_s_handler_and_a_local_one() {
    let f = fleet();
    let go = f.path("never");
    let handler = waits_for(f.dir.path(), &go);
    f.config(&format!(
        "[[node]]\nname = \"cpu-1\"\ntype = \"cpu\"\nhandle = {{ install = {handler:?} }}\n"
    ));
    let _serve = f.serve(&[]);
    let _w = f.worker("gpu-1", "gpu", &[("install", &handler)]);
    for (node_type, node) in [("gpu", "gpu-1"), ("cpu", "cpu-1")] {
        let op = f.submit("install", node_type, &[]);
        let pid = f.running_pid(op, node);
        let said = f.ok(&["ops", "cancel", &op.to_string(), "--stop-running"]);
        assert!(said.contains("1 running, 1 told to stop"), "{said}");
        let stopped = f.wait_state(op, node, "cancelled");
        assert_eq!(stopped["failures"], 0, "a stop is not a failure");
        f.wait_until(&format!("the handler on {node} is gone"), || !running(&pid));
        let attempt = &f.op(op)["attempts"][0];
        assert_eq!(
            (&attempt["node"], &attempt["outcome"], &attempt["error"]),
            (
                &node.into(),
                &"released".into(),
                &"its operation was cancelled, and its handler stopped".into()
            )
        );
        assert_eq!(attempt["stdout"], format!("started on {node}\n"));
    }
}

#[test]
fn a_node_is_removed_when_down_or_drained_and_its_name_starts_afresh() {
    remove_a_node(fleet());
}

#[test]
fn a_node_is_removed_when_down_or_drained_and_its_name_starts_afresh_postgres() {
    remove_a_node(fleet_pg());
}

fn remove_a_node(f: Fleet) {
    let local = |concurrency: u32| {
        format!(
            "[[node]]\nname = \"cpu-1\"\ntype = \"cpu\"\nconcurrency = {concurrency}\n\
             handle = {{ install = \"true\" }}\n"
        )
    };
    f.config(&local(1));
    let mut serve = f.serve(&[]);
    let mut w = f.worker("gpu-1", "gpu", &[("install", "true")]);
    let refused = f.fails(&["nodes", "remove", "gpu-1"], 1);
    assert!(
        refused.contains("node gpu-1 cannot be removed: it is healthy and not drained"),
        "{refused}"
    );
    f.ok(&["nodes", "drain", "gpu-1"]);
    let op = f.submit("install", "gpu", &["--key", "llama"]);
    assert_eq!(delivery(&f.op(op), "gpu-1")["held"], "drained");
    let said = f.ok(&["nodes", "remove", "gpu-1", "--by", "alice"]);
    assert!(
        said.starts_with("node gpu-1 removed") && said.contains("1 delivery cancelled"),
        "{said}"
    );
    // The worker hears it at its next heartbeat, and stops as asked.
    assert_eq!(w.exit_code(), Some(0), "{}", w.log());
    assert!(
        w.log().contains("node gpu-1 was removed by alice"),
        "{}",
        w.log()
    );
    assert!(
        f.json_lines(&["nodes", "list"])
            .iter()
            .all(|n| n["name"] != "gpu-1")
    );
    let old = delivery(&f.op(op), "gpu-1");
    assert_eq!(
        (&old["state"], &old["cancelled"]["by"]),
        (&"cancelled".into(), &"alice".into())
    );
    // Started again, it is a new node: undrained, and it gets the live
    // operation of its type.
    let _w2 = f.worker("gpu-1", "gpu", &[("install", "true")]);
    f.wait_any_state(op, "gpu-1", "done");
    assert_eq!(f.node("gpu-1")["drained"], false);
    // A node of backstop.toml stays removed while its entry is unchanged.
    f.ok(&["nodes", "drain", "cpu-1"]);
    f.ok(&["nodes", "remove", "cpu-1"]);
    serve.stop();
    let mut serve = f.serve(&[]);
    serve.wait_for("node cpu-1 was removed by");
    assert!(
        f.json_lines(&["nodes", "list"])
            .iter()
            .all(|n| n["name"] != "cpu-1")
    );
    serve.stop();
    // Its entry changed: it is back, a new node.
    f.config(&local(2));
    let _serve = f.serve(&[]);
    let back = f.node("cpu-1");
    assert_eq!(
        (&back["drained"], &back["capacity"]),
        (&false.into(), &2.into())
    );
}

#[test]
fn what_a_handler_prints_is_kept_redacted_bounded_and_shown() {
    let f = fleet();
    f.config(
        "[[node]]\nname = \"cpu-1\"\ntype = \"cpu\"\nhandle = { install = \"echo step-1; \
         echo step-2; echo 'api_key=supersecret123456' >&2; echo 'no space left' >&2; exit 3\" }\n",
    );
    let _serve = f.serve(&["--max-failures", "1", "--output-tail", "1KiB"]);
    let chatty = "for i in $(seq 1 2000); do echo \"line $i\"; done; \
                  echo 'Authorization: Bearer abcdefghijklmnopqrstuvwxyz' >&2";
    let _w = f.worker("gpu-1", "gpu", &[("install", chatty)]);
    let local = f.submit("install", "cpu", &[]);
    f.wait_state(local, "cpu-1", "dead");
    let shown = f.ok(&["ops", "show", &local.to_string()]);
    assert!(
        shown.contains("to cpu-1, attempt 1: failed (exit 3: api_key=<redacted>")
            && shown.contains("  stdout:\n    step-1\n    step-2\n")
            && shown.contains("  stderr:\n    api_key=<redacted>\n    no space left\n"),
        "{shown}"
    );
    assert!(!shown.contains("supersecret"), "{shown}");
    let remote = f.submit("install", "gpu", &[]);
    f.wait_state(remote, "gpu-1", "done");
    let detail = f.op(remote);
    let attempt = &detail["attempts"][0];
    let stdout = attempt["stdout"].as_str().unwrap();
    assert!(stdout.len() <= 1024, "bounded: {} bytes", stdout.len());
    assert!(
        stdout.starts_with("line ") && stdout.ends_with("line 2000\n"),
        "{stdout}"
    );
    assert_eq!(
        attempt["stderr"], "Authorization: Bearer <redacted>\n",
        "redacted on the worker and again here"
    );
    let tail = f.ok(&["ops", "show", &remote.to_string(), "--lines", "2"]);
    assert!(
        tail.contains("earlier (--lines 0 shows all that is kept)")
            && tail.contains("    line 1999\n    line 2000\n"),
        "{tail}"
    );
    // The API serves every attempt kept of a delivery.
    let id = delivery(&detail, "gpu-1")["id"].as_i64().unwrap();
    let (status, attempts) = http(
        &server_of(&f),
        "GET",
        &format!("/v1/deliveries/{id}/attempts"),
        Some(&f.token),
        "",
    );
    assert_eq!(status, 200);
    assert_eq!(attempts[0]["outcome"], "done");
    let (status, _) = http(
        &server_of(&f),
        "GET",
        "/v1/deliveries/999999/attempts",
        Some(&f.token),
        "",
    );
    assert_eq!(status, 404);
}

#[test]
fn an_operation_runs_by_its_own_settings_over_its_kind_s_and_bad_ones_are_refused() {
    let f = fleet();
    f.config(
        "[kinds.install]\nmax_failures = 2\n\n[[node]]\nname = \"cpu-1\"\ntype = \"cpu\"\n\
         handle = { install = \"echo nope >&2; exit 1\", probe = \"sleep 30\" }\n",
    );
    let _serve = f.serve(&[]);
    let by_kind = f.submit("install", "cpu", &[]);
    let dead = f.wait_state(by_kind, "cpu-1", "dead");
    assert_eq!(dead["failures"], 2, "the kind's cap, not serve's 10");
    assert_eq!(f.op(by_kind)["settings"]["max_failures"], 2);
    let own = f.submit("install", "cpu", &["--max-failures", "1"]);
    assert_eq!(f.wait_state(own, "cpu-1", "dead")["failures"], 1);
    let said = f.ok(&[
        "ops",
        "submit",
        "probe",
        "--type",
        "cpu",
        "--timeout",
        "1s",
        "--max-failures",
        "1",
    ]);
    assert!(
        said.contains("settings: timeout 1s, max_failures 1"),
        "{said}"
    );
    let timed = f.json_lines(&["ops", "list", "--limit", "1"])[0]["id"]
        .as_i64()
        .unwrap();
    let stopped = f.wait_state(timed, "cpu-1", "dead");
    assert!(
        stopped["last_error"]
            .as_str()
            .unwrap()
            .contains("ran past its 1 s timeout"),
        "{stopped}"
    );
    for (args, want) in [
        (
            &["--timeout", "40d"][..],
            "timeout 40 d is out of bounds: use 1 s to 30 d",
        ),
        (
            &["--base-delay", "1h", "--max-delay", "1m"][..],
            "base_delay 1 h is out of bounds: it is longer than max_delay 1 min",
        ),
        (&["--max-failures", "0"][..], "0 is not in 1..=1000"),
        (&["--timeout", "soon"][..], "is not a duration"),
    ] {
        let mut all = vec!["ops", "submit", "install", "--type", "cpu"];
        all.extend_from_slice(args);
        let refused = f.fails(&all, 2);
        assert!(refused.contains(want), "{args:?}: {refused}");
    }
    std::fs::write(f.path("bad.toml"), "[kinds.install]\ntimeout = \"0s\"\n").unwrap();
    let (code, said) = f.exit_of(&["serve", "--listen", "127.0.0.1:0", "--config", "bad.toml"]);
    assert_eq!(code, Some(2), "{said}");
    assert!(
        said.contains("[kinds.install]: timeout 0 ms is out of bounds: use 1 s to 30 d"),
        "{said}"
    );
}

/// `ops watch` as a process of its own: its stdout, line by line.
struct Watching {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Watching {
    fn start(f: &Fleet, args: &[&str]) -> Watching {
        let mut child = f
            .cmd()
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().unwrap();
        let seen = Arc::clone(&lines);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                seen.lock().unwrap().push(line);
            }
        });
        Watching {
            child,
            lines,
            reader: Some(reader),
        }
    }

    fn wait_line(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self
            .lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains(needle))
        {
            assert!(
                Instant::now() < deadline,
                "watch never said {needle:?}: {:?}",
                self.lines.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Its exit code, stdout and stderr once it ends by itself.
    fn end(mut self) -> (Option<i32>, String, String) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "watch did not end");
            std::thread::sleep(Duration::from_millis(20));
        };
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        let mut stderr = String::new();
        if let Some(mut err) = self.child.stderr.take() {
            let _ = err.read_to_string(&mut stderr);
        }
        let stdout = self.lines.lock().unwrap().join("\n");
        (status.code(), stdout, stderr)
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn ops_watch_follows_until_every_delivery_is_finished_and_says_how_they_ended() {
    let f = fleet();
    let _serve = f.serve(&[]);
    let go = f.path("go");
    let _w1 = f.worker(
        "gpu-1",
        "gpu",
        &[
            ("install", &waits_for(f.dir.path(), &go)),
            ("delete", "echo 'model in use' >&2; exit 3"),
        ],
    );
    let _w2 = f.worker("gpu-2", "gpu", &[("install", "true")]);
    let op = f.submit("install", "gpu", &[]);
    let id = op.to_string();
    let watch = Watching::start(&f, &["ops", "watch", &id, "--interval", "100ms"]);
    watch.wait_line("to gpu-1: in flight, attempt 1");
    std::fs::write(&go, "").unwrap();
    let (code, stdout, stderr) = watch.end();
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.starts_with(&format!("operation {op}: install for type gpu"))
            && stdout.contains("to gpu-1: done")
            && stdout.contains("to gpu-2: done")
            && stdout.ends_with(&format!("operation {op}: every delivery done (2 done)")),
        "{stdout}"
    );
    // One that dies: `ops show --follow` ends too, and says so (exit 1).
    let poison = f.submit("delete", "gpu", &["--max-failures", "1"]);
    let follow = Watching::start(&f, &["ops", "show", &poison.to_string(), "--follow"]);
    let (code, stdout, stderr) = follow.end();
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("to gpu-1: dead after 1 failure (exit 3: model in use)"),
        "{stdout}"
    );
    assert!(
        stderr.contains(&format!(
            "operation {poison} finished, not all done: 1 dead"
        )),
        "{stderr}"
    );
    // JSON: the delivery as it is at each change.
    let (code, stdout, _) = Watching::start(&f, &["ops", "watch", &id, "--json"]).end();
    assert_eq!(code, Some(0));
    let last: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(last["state"], "done");
}

#[test]
fn the_client_finds_its_server_and_token_in_its_file_and_flags_and_variables_come_first() {
    let f = fleet();
    let _serve = f.serve(&[]);
    let config = f.path("config");
    std::fs::create_dir_all(config.join("backstop")).unwrap();
    let token = config.join("backstop/api.token");
    std::fs::write(&token, &f.token).unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let wrong = f.path("wrong.token");
    std::fs::write(&wrong, "not-the-token").unwrap();
    std::fs::set_permissions(&wrong, std::fs::Permissions::from_mode(0o600)).unwrap();
    let client_file = config.join("backstop/client.toml");
    std::fs::write(
        &client_file,
        format!(
            "server = \"{}\"\ntoken_file = \"api.token\"\n",
            server_of(&f)
        ),
    )
    .unwrap();
    // Nothing in the environment but where the client file is.
    let client = |env: &[(&str, &str)], args: &[&str]| {
        let mut cmd = f.cmd();
        cmd.env_remove("BACKSTOP_TOKEN")
            .env_remove("BACKSTOP_SERVER")
            .env_remove("BACKSTOP_TOKEN_FILE")
            .env("XDG_CONFIG_HOME", &config)
            .envs(env.iter().copied())
            .args(args);
        let out = cmd.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = client(&[], &["nodes", "list"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, "no nodes\n");
    // A flag comes before the file...
    let (code, _, err) = client(&[], &["nodes", "list", "--server", "http://127.0.0.1:9"]);
    assert_eq!(code, Some(75), "{err}");
    assert!(
        err.contains("is `backstop serve` running at http://127.0.0.1:9"),
        "{err}"
    );
    // ...and so does the environment.
    let (code, _, err) = client(&[("BACKSTOP_TOKEN", "nope")], &["nodes", "list"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("the token is not this coordinator's"), "{err}");
    let wrong_path = wrong.display().to_string();
    let (code, _, _) = client(&[("BACKSTOP_TOKEN_FILE", &wrong_path)], &["nodes", "list"]);
    assert_eq!(code, Some(1));
    // --token-file before BACKSTOP_TOKEN.
    let token_path = token.display().to_string();
    let (code, _, err) = client(
        &[("BACKSTOP_TOKEN", "nope")],
        &["nodes", "list", "--token-file", &token_path],
    );
    assert_eq!(code, Some(0), "{err}");
    // A token others can read is not used; one the group can read is, with
    // a warning.
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, _, err) = client(&[], &["nodes", "list"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("can be read by every user of this machine (mode 0644)")
            && err.contains(&format!("chmod 600 {token_path}")),
        "{err}"
    );
    assert!(!err.contains(&f.token), "{err}");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o640)).unwrap();
    let (code, _, err) = client(&[], &["nodes", "list"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("can be read by its group"), "{err}");
    // A file that is not one says so, naming it.
    std::fs::write(&client_file, "srever = \"http://x\"\n").unwrap();
    let (code, _, err) = client(&[], &["nodes", "list"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains(&format!(
            "{} is not a valid client file",
            client_file.display()
        )) && err.contains("unknown field"),
        "{err}"
    );
    // No file, no variable: the token `backstop serve` keeps here is all
    // that is left, and this one was given its token instead.
    std::fs::remove_file(&client_file).unwrap();
    let server = server_of(&f);
    let (code, _, err) = client(&[("BACKSTOP_SERVER", &server)], &["nodes", "list"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("no API token"), "{err}");
}

#[test]
fn cancel_remove_and_attempts_answer_bad_input_with_a_clear_4xx_and_change_nothing() {
    let f = fleet();
    f.config("[[node]]\nname = \"cpu-1\"\ntype = \"cpu\"\nhandle = { install = \"true\" }\n");
    let _serve = f.serve(&[]);
    let op = f.submit("install", "cpu", &[]);
    f.wait_state(op, "cpu-1", "done");
    let server = server_of(&f);
    let cancel = format!("/v1/ops/{op}/cancel");
    let cases: &[(&str, &str, &str, u16, &str)] = &[
        (
            "POST",
            "/v1/ops/abc/cancel",
            "",
            400,
            "\"abc\" is not an operation id",
        ),
        (
            "POST",
            "/v1/ops/999/cancel",
            "",
            404,
            "there is no operation 999",
        ),
        (
            "POST",
            &cancel,
            r#"{"stop": true}"#,
            400,
            "unknown field `stop`",
        ),
        ("POST", &cancel, "[", 400, "malformed JSON"),
        (
            "POST",
            &cancel,
            r#"{"by": ""}"#,
            422,
            "cannot name who did this",
        ),
        (
            "POST",
            &cancel,
            r#"{"by": "a\u0007b"}"#,
            422,
            "cannot name who did this",
        ),
        (
            "POST",
            "/v1/nodes/cpu-9/remove",
            "",
            404,
            "there is no node named \"cpu-9\"",
        ),
        (
            "POST",
            "/v1/nodes/cpu-1/remove",
            "",
            409,
            "node cpu-1 cannot be removed",
        ),
        (
            "GET",
            "/v1/deliveries/x/attempts",
            "",
            400,
            "\"x\" is not a delivery id",
        ),
        (
            "POST",
            "/v1/ops",
            r#"{"kind": "install", "type": "cpu", "timeout": "a fortnight"}"#,
            400,
            "is not a duration",
        ),
        (
            "POST",
            "/v1/ops",
            r#"{"kind": "install", "type": "cpu", "max_failures": 5000}"#,
            422,
            "max_failures 5000 is out of bounds: use 1 to 1000",
        ),
    ];
    for (method, path, body, status, want) in cases {
        let (got, answer) = http(&server, method, path, Some(&f.token), body);
        assert_eq!(got, *status, "{method} {path} {body}: {answer}");
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(error.contains(want), "{method} {path} {body}: {error}");
    }
    let (got, _) = http(&server, "POST", &cancel, None, "");
    assert_eq!(got, 401);
    // Nothing changed: the operation is not cancelled, the node is there,
    // and only the one operation exists.
    assert_eq!(f.op(op)["cancelled"], Value::Null);
    assert_eq!(f.node("cpu-1")["drained"], false);
    assert_eq!(f.json_lines(&["ops", "list"]).len(), 1);
}

#[test]
fn a_worker_that_died_mid_run_is_removed_and_what_it_ran_ends_cancelled() {
    let f = fleet();
    let _serve = f.serve(&[]);
    let never = f.path("never");
    let mut w = f.worker(
        "gpu-1",
        "gpu",
        &[("install", &waits_for(f.dir.path(), &never))],
    );
    let op = f.submit("install", "gpu", &[]);
    let pid = f.running_pid(op, "gpu-1");
    w.kill9();
    f.wait_until("its handler died with it", || !running(&pid));
    f.wait_until("gpu-1 is down", || f.node("gpu-1")["status"] != "healthy");
    // Down: removed undrained, whether its attempt is still in flight or
    // was already found unheld.
    let said = f.ok(&["nodes", "remove", "gpu-1", "--by", "alice"]);
    assert!(said.starts_with("node gpu-1 removed"), "{said}");
    let ended = f.wait_state(op, "gpu-1", "cancelled");
    assert_eq!(ended["cancelled"]["by"], "alice");
    assert_eq!(ended["failures"], 0);
    assert!(
        f.json_lines(&["nodes", "list"])
            .iter()
            .all(|n| n["name"] != "gpu-1")
    );
}
