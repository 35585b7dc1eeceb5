//! Fan-out with real processes: `backstop serve`, `backstop worker` and the
//! client commands, over the NATS server on this machine (127.0.0.1:4222,
//! or `BACKSTOP_TEST_NATS`). Without NATS these tests fail, loudly: they
//! are never skipped. Every test uses its own subject prefix and state.
//!
//! The fleet tests at the end put the queue on the PostgreSQL server on
//! this machine (`BACKSTOP_TEST_POSTGRES`, a schema per test) with several
//! coordinators, and cut PostgreSQL or NATS away from one process through
//! a TCP proxy, or restart a NATS server of their own — never the servers
//! other tests share.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backstop_faultserver::Proxy;
use backstop_store::postgres::testing::TestSchema;
use serde_json::Value;

#[path = "fanout/bulk.rs"]
mod bulk;
#[path = "fanout/observe.rs"]
mod observe;
#[path = "fanout/operations.rs"]
mod operations;
#[path = "fanout/secure.rs"]
mod secure;
#[path = "fanout/ui.rs"]
mod ui;

fn nats_url() -> String {
    let url =
        std::env::var("BACKSTOP_TEST_NATS").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned());
    let addr = url.trim_start_matches("nats://");
    if std::net::TcpStream::connect(addr).is_err() {
        panic!(
            "NATS is required for these tests and is not reachable at {url}. Start it \
             (nats-server -a 127.0.0.1 -p 4222 -js), or point BACKSTOP_TEST_NATS at one."
        );
    }
    url
}

/// A process of ours, killed when dropped; its stderr is collected.
struct Proc {
    child: Child,
    log: Arc<Mutex<String>>,
    /// Reads its stderr into `log` until the end.
    reader: Option<std::thread::JoinHandle<()>>,
    what: String,
}

impl Proc {
    fn spawn(mut cmd: Command, what: &str) -> Proc {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("backstop starts");
        let log = Arc::new(Mutex::new(String::new()));
        let reader = child.stderr.take().map(|err| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    let mut log = log.lock().unwrap();
                    log.push_str(&line);
                    log.push('\n');
                }
            })
        });
        Proc {
            child,
            log,
            reader,
            what: what.to_owned(),
        }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits for a line containing `needle`; returns that line.
    fn wait_for(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(line) = self.log().lines().find(|l| l.contains(needle)) {
                return line.to_owned();
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited ({status}) before saying {needle:?}:\n{}",
                    self.what,
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} never said {needle:?}:\n{}",
                self.what,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// SIGTERM, then waits for a clean exit.
    fn stop(&mut self) {
        self.signal("-TERM");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                assert_eq!(status.code(), Some(0), "{}:\n{}", self.what, self.log());
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not stop:\n{}",
                self.what,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for it to exit by itself; its exit code, once all it wrote
    /// is in its log.
    fn exit_code(&mut self) -> Option<i32> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                if let Some(reader) = self.reader.take() {
                    let _ = reader.join();
                }
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit:\n{}",
                self.what,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// How many lines of each process's stderr a failing test prints.
const TAIL: usize = 60;

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            // What it wrote last, unless a process it left holds its
            // stderr open.
            let deadline = Instant::now() + Duration::from_secs(2);
            while self.reader.as_ref().is_some_and(|r| !r.is_finished())
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!(
                "--- {} (pid {}): the last {} of {} lines of its stderr ---\n{}",
                self.what,
                self.child.id(),
                lines.len().min(TAIL),
                lines.len(),
                lines[lines.len().saturating_sub(TAIL)..].join("\n")
            );
        }
    }
}

/// One test's coordinator state, NATS prefix, token and files.
struct Fleet {
    dir: tempfile::TempDir,
    prefix: String,
    token: String,
    server: Mutex<String>,
    nats: String,
    /// `BACKSTOP_STATE`: a SQLite file in `dir`, or a PostgreSQL schema.
    state: String,
    schema: Option<TestSchema>,
}

fn fleet() -> Fleet {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state/backstop.db").display().to_string();
    fleet_on(dir, state, None)
}

/// A fleet whose queue is in a PostgreSQL schema of its own.
fn fleet_pg() -> Fleet {
    let schema = TestSchema::new("bs_fleet");
    let state = schema.url().to_owned();
    fleet_on(tempfile::tempdir().unwrap(), state, Some(schema))
}

fn fleet_on(dir: tempfile::TempDir, state: String, schema: Option<TestSchema>) -> Fleet {
    static N: AtomicU32 = AtomicU32::new(0);
    let nats = nats_url();
    Fleet {
        state,
        schema,
        dir,
        prefix: format!(
            "bstest{}x{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ),
        token: format!("tok-{:016x}", fastrand_u64()),
        server: Mutex::new(String::new()),
        nats,
    }
}

fn fastrand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish()
}

/// Quick retries and quick health, so that tests spend little time waiting.
const QUICK_SERVE: &[&str] = &[
    "--base-delay",
    "50ms",
    "--max-delay",
    "200ms",
    "--stale-after",
    "1s",
    "--lease-grace",
    "2s",
    "--handler-timeout",
    "20s",
];

impl Fleet {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn state(&self) -> String {
        self.state.clone()
    }

    fn cmd(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_backstop"));
        cmd.env("BACKSTOP_STATE", self.state())
            .env("BACKSTOP_TOKEN", &self.token)
            .env("BACKSTOP_SERVER", &*self.server.lock().unwrap())
            .env_remove("BACKSTOP_LOG")
            .env_remove("BACKSTOP_NATS")
            .current_dir(self.dir.path());
        cmd
    }

    /// Starts `backstop serve` with NATS and `extra` flags; remembers its
    /// address.
    fn serve(&self, extra: &[&str]) -> Proc {
        self.serve_with(&self.state, &self.nats, extra)
    }

    /// `backstop serve` on this `state` and `nats`.
    fn serve_with(&self, state: &str, nats: &str, extra: &[&str]) -> Proc {
        let mut cmd = self.cmd();
        cmd.env("BACKSTOP_STATE", state)
            .args(["serve", "--listen", "127.0.0.1:0", "--nats", nats])
            .args(["--subject-prefix", &self.prefix])
            .args(QUICK_SERVE)
            .args(extra);
        self.serving(cmd)
    }

    /// Starts `cmd`, a `backstop serve`; waits until it serves and
    /// remembers its URL.
    fn serving(&self, cmd: Command) -> Proc {
        let mut proc = Proc::spawn(cmd, "backstop serve");
        let line = proc.wait_for("serving the fan-out API on ");
        let url = line
            .split("API on ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap();
        *self.server.lock().unwrap() = url.to_owned();
        proc
    }

    /// Starts `backstop worker NAME` of `node_type` with handlers; waits
    /// until it is registered.
    fn worker(&self, name: &str, node_type: &str, handlers: &[(&str, &str)]) -> Proc {
        let mut proc = self.spawn_worker(&self.nats, name, node_type, handlers, &[]);
        proc.wait_for("registered as node");
        proc
    }

    /// `backstop worker` on `nats` with `extra` flags, not waited for.
    fn spawn_worker(
        &self,
        nats: &str,
        name: &str,
        node_type: &str,
        handlers: &[(&str, &str)],
        extra: &[&str],
    ) -> Proc {
        let mut cmd = self.cmd();
        cmd.args(["worker", "--nats", nats, "--name", name])
            .args(["--type", node_type, "--subject-prefix", &self.prefix])
            .args(["--heartbeat", "200ms", "--grace", "2s"]);
        for (kind, command) in handlers {
            cmd.arg("--handle").arg(format!("{kind}={command}"));
        }
        cmd.args(extra);
        Proc::spawn(cmd, &format!("backstop worker {name}"))
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().unwrap()
    }

    /// Runs a command that must exit by itself (a `serve` or `worker` that
    /// refuses to start); its exit code and stderr. One that keeps running
    /// fails the test instead of hanging it.
    fn exit_of(&self, args: &[&str]) -> (Option<i32>, String) {
        let mut cmd = self.cmd();
        cmd.args(args);
        let mut proc = Proc::spawn(cmd, &format!("backstop {}", args[0]));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = proc.child.try_wait() {
                // Its stderr is collected by a thread: wait for the error.
                while !proc.log().contains("backstop: error") && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(10));
                }
                return (status.code(), proc.log());
            }
            assert!(
                Instant::now() < deadline,
                "backstop {args:?} kept running:\n{}",
                proc.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs a client command that must succeed; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "backstop {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        serde_json::from_str(self.ok(&all).trim()).unwrap()
    }

    fn json_lines(&self, args: &[&str]) -> Vec<Value> {
        let mut all = args.to_vec();
        all.push("--json");
        self.ok(&all)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Submits `kind` for `node_type` with `more` flags; the operation id.
    fn submit(&self, kind: &str, node_type: &str, more: &[&str]) -> i64 {
        let mut args = vec!["ops", "submit", kind, "--type", node_type];
        args.extend_from_slice(more);
        self.json(&args)["op"]["id"].as_i64().unwrap()
    }

    fn op(&self, id: i64) -> Value {
        self.json(&["ops", "show", &id.to_string()])
    }

    fn node(&self, name: &str) -> Value {
        self.json_lines(&["nodes", "list"])
            .into_iter()
            .find(|n| n["name"] == name)
            .unwrap_or_else(|| panic!("no node {name}"))
    }

    /// Polls `check` until it holds.
    fn wait_until(&self, what: &str, mut check: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !check() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_state(&self, op: i64, node: &str, state: &str) -> Value {
        let mut last = Value::Null;
        self.wait_until(&format!("op {op} is {state} on {node}"), || {
            last = delivery(&self.op(op), node);
            last["state"] == state
        });
        last
    }
}

fn delivery(op: &Value, node: &str) -> Value {
    op["deliveries"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["node"] == node))
        .cloned()
        .unwrap_or(Value::Null)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Whether process `pid` runs (exists and is not a zombie).
fn running(pid: &str) -> bool {
    let stat = read(Path::new(&format!("/proc/{pid}/stat")));
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim().chars().next());
    state.is_some_and(|s| s != 'Z' && s != 'X')
}

#[test]
fn a_handler_that_fails_three_times_then_succeeds() {
    let f = fleet();
    let _serve = f.serve(&[]);
    let count = f.path("count");
    let handler = format!(
        "n=$(cat {c} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {c}; \
         if [ $n -le 3 ]; then echo \"try $n: registry unreachable\" >&2; exit 1; fi",
        c = count.display()
    );
    let _w = f.worker("gpu-1", "gpu", &[("install", &handler)]);
    let op = f.submit(
        "install",
        "gpu",
        &["--payload", r#"{"backend":"llama-cpp"}"#],
    );
    let done = f.wait_state(op, "gpu-1", "done");
    assert_eq!(done["attempt"], 4);
    assert_eq!(done["failures"], 3);
    assert_eq!(done["last_error"], Value::Null, "done: no error shown");
    assert_eq!(read(&count).trim(), "4");
}

#[test]
fn a_poison_op_dies_at_the_cap_and_runs_again_once_requeued() {
    let f = fleet();
    let mut serve = f.serve(&["--max-failures", "3"]);
    let fixed = f.path("fixed");
    let handler = format!(
        "test -f {} || {{ echo 'poison: unknown backend \"llama-cpp\"' >&2; exit 2; }}",
        fixed.display()
    );
    let _w = f.worker("gpu-1", "gpu", &[("install", &handler)]);
    let op = f.submit("install", "gpu", &["--key", "llama-cpp"]);
    let dead = f.wait_state(op, "gpu-1", "dead");
    assert_eq!(dead["failures"], 3);
    serve.wait_for("is dead after 3 failures");
    assert!(
        serve.log().contains("backstop: error: delivery"),
        "logged at ERROR"
    );
    // It stays listed, with its last error, and stays dead: a second
    // poison operation, submitted after it, goes through its three
    // attempts and dies meanwhile, and the first is still dead after its 3.
    let second = f.submit("install", "gpu", &["--key", "vllm"]);
    f.wait_state(second, "gpu-1", "dead");
    assert_eq!(delivery(&f.op(op), "gpu-1")["failures"], 3);
    let letters = f.json_lines(&["ops", "list", "--dead"]);
    assert_eq!(letters.len(), 2);
    let letters: Vec<Value> = letters.into_iter().filter(|l| l["op"] == op).collect();
    assert_eq!(letters.len(), 1);
    assert!(
        letters[0]["last_error"]
            .as_str()
            .unwrap()
            .contains("poison")
    );
    let table = f.ok(&["ops", "list", "--dead"]);
    assert!(
        table.contains("gpu-1") && table.contains("poison"),
        "{table}"
    );
    // Fixed, requeued: attempts start again and it succeeds.
    std::fs::write(&fixed, "").unwrap();
    assert!(
        f.ok(&["ops", "requeue", &op.to_string()])
            .contains("requeued 1 dead delivery")
    );
    let done = f.wait_state(op, "gpu-1", "done");
    assert_eq!(done["failures"], 0);
    assert_eq!(
        (done["attempts"].as_u64(), done["attempt"].as_u64()),
        (Some(1), Some(4))
    );
    let shown = f.ok(&["ops", "show", &op.to_string()]);
    let row = shown
        .lines()
        .find(|l| l.contains("gpu-1"))
        .unwrap_or_default();
    assert!(
        row.contains(" done ") && row.contains(" 1 (4 in all) "),
        "{shown}"
    );
    assert!(
        !row.contains("poison"),
        "a done delivery shows no error: {shown}"
    );
    let dead: Vec<Value> = f.json_lines(&["ops", "list", "--dead"]);
    assert_eq!(dead.len(), 1, "only the other one stays dead: {dead:?}");
    assert_eq!(dead[0]["op"], second);
}

#[test]
fn only_nodes_of_the_type_that_handle_the_kind_receive_it() {
    let f = fleet();
    let _serve = f.serve(&[]);
    let marker = |n: &str, op: i64| f.path(&format!("ran-{n}-{op}"));
    let touch = |n: &str| {
        format!(
            "touch {}-$BACKSTOP_OP",
            f.path(&format!("ran-{n}")).display()
        )
    };
    let _gpu = f.worker("gpu-1", "gpu", &[("install", &touch("gpu-1"))]);
    let _cpu = f.worker("cpu-1", "cpu", &[("install", &touch("cpu-1"))]);
    // A node of the type that does not handle the kind: it must not be
    // offered the delivery, nor loop on it.
    let _agent = f.worker("agent-1", "gpu", &[("chat", &touch("agent-1"))]);
    let op = f.submit("install", "gpu", &[]);
    f.wait_state(op, "gpu-1", "done");
    let shown = f.op(op);
    assert_eq!(shown["deliveries"].as_array().unwrap().len(), 1);
    // The witnesses: operations submitted after it reach the other two
    // nodes and finish there, so it would have reached them first.
    let cpu = f.submit("install", "cpu", &[]);
    let chat = f.submit("chat", "gpu", &[]);
    f.wait_state(cpu, "cpu-1", "done");
    f.wait_state(chat, "agent-1", "done");
    assert!(marker("gpu-1", op).exists());
    assert!(marker("cpu-1", cpu).exists() && marker("agent-1", chat).exists());
    assert!(!marker("cpu-1", op).exists(), "the cpu node never ran it");
    assert!(!marker("agent-1", op).exists());
    assert_eq!(
        f.node("agent-1")["status"],
        "healthy",
        "and nothing loops on it"
    );
}

#[test]
fn a_worker_killed_mid_run_costs_no_attempt_and_finishes_when_back() {
    let f = fleet();
    let _serve = f.serve(&[]);
    let (started, pid) = (f.path("started"), f.path("handler.pid"));
    let handler = format!(
        "if [ -f {s} ]; then exit 0; fi; touch {s}; echo $$ > {p}; sleep 60",
        s = started.display(),
        p = pid.display()
    );
    let mut w = f.worker("gpu-1", "gpu", &[("install", &handler)]);
    let op = f.submit("install", "gpu", &["--key", "llama-cpp"]);
    f.wait_until("the handler started", || {
        read(&pid).trim().parse::<i32>().is_ok()
    });
    w.kill9();
    // Its shell dies with it at once (PR_SET_PDEATHSIG); the `sleep` it
    // started goes on until the worker's next process stops it.
    let shell = read(&pid).trim().to_owned();
    f.wait_until("the handler's shell died with its worker", || {
        !running(&shell)
    });
    f.wait_until("the node is unhealthy", || {
        f.node("gpu-1")["status"] == "unhealthy"
    });
    // Silence alone does not take the attempt away (a loaded node answers
    // late); NATS saying that nothing listens for the node does.
    let waiting = f.wait_state(op, "gpu-1", "pending");
    assert_eq!(waiting["failures"], 0, "no attempt spent");
    // The handler the killed worker left running is stopped by the next.
    let mut again = f.worker("gpu-1", "gpu", &[("install", &handler)]);
    again.wait_for("stopped 1 handler processes a previous process of this node left running");
    let done = f.wait_state(op, "gpu-1", "done");
    assert_eq!(done["failures"], 0);
}

#[test]
fn kill_9_of_the_coordinator_mid_run_loses_nothing_and_leaves_nothing_in_flight() {
    let f = fleet();
    let (local_ran, remote_ran) = (f.path("local-ran"), f.path("remote-ran"));
    std::fs::write(
        f.path("backstop.toml"),
        format!(
            "[[node]]\nname = \"cpu-local\"\ntype = \"cpu\"\nconcurrency = 2\n\
             [node.handle]\ninstall = \"sleep 0.2; echo $BACKSTOP_OP >> {}\"\n",
            local_ran.display()
        ),
    )
    .unwrap();
    let mut serve = f.serve(&[]);
    let _w = f.worker(
        "cpu-remote",
        "cpu",
        &[(
            "install",
            &format!("sleep 0.2; echo $BACKSTOP_OP >> {}", remote_ran.display()),
        )],
    );
    let ops: Vec<i64> = (0..12)
        .map(|i| f.submit("install", "cpu", &["--key", &format!("model-{i}")]))
        .collect();
    f.wait_until("some deliveries ran", || {
        read(&local_ran).lines().count() >= 2 && read(&remote_ran).lines().count() >= 1
    });
    serve.kill9();
    let restarted = Instant::now();
    let _again = f.serve(&[]);
    f.wait_until("every delivery is done", || {
        f.json_lines(&["ops", "list"]).iter().all(|op| {
            let d = &op["deliveries"];
            d["done"] == 2 && d["pending"] == 0 && d["in_flight"] == 0
        })
    });
    // Sooner than the 22 s leases: what the old coordinator claimed and
    // never offered is found at start-up, since no node holds it.
    assert!(
        restarted.elapsed() < Duration::from_secs(15),
        "{:?}",
        restarted.elapsed()
    );
    let listed = f.json_lines(&["ops", "list"]);
    assert_eq!(listed.len(), ops.len(), "no operation lost");
    for op in &ops {
        let ran_local = read(&local_ran).lines().any(|l| l == op.to_string());
        let ran_remote = read(&remote_ran).lines().any(|l| l == op.to_string());
        assert!(ran_local && ran_remote, "op {op} ran on both nodes");
    }
}

#[test]
fn install_then_delete_on_a_node_that_was_down_runs_only_the_delete() {
    let f = fleet();
    let _serve = f.serve(&[]);
    let log = f.path("log");
    let handler = format!("echo $BACKSTOP_KIND >> {}", log.display());
    let handlers = [("install", handler.as_str()), ("delete", handler.as_str())];
    let mut w = f.worker("gpu-1", "gpu", &handlers);
    w.stop();
    assert_eq!(f.node("gpu-1")["status"], "unhealthy");
    let install = f.submit("install", "gpu", &["--key", "llama-cpp"]);
    let answer = f.json(&[
        "ops",
        "submit",
        "delete",
        "--type",
        "gpu",
        "--key",
        "llama-cpp",
    ]);
    assert_eq!(answer["superseded"], 1);
    let delete = answer["op"]["id"].as_i64().unwrap();
    let _w = f.worker("gpu-1", "gpu", &handlers);
    f.wait_state(delete, "gpu-1", "done");
    assert_eq!(delivery(&f.op(install), "gpu-1")["state"], "superseded");
    // The witness: an operation submitted after it runs and finishes.
    let later = f.submit("delete", "gpu", &["--key", "vllm"]);
    f.wait_state(later, "gpu-1", "done");
    assert_eq!(read(&log), "delete\ndelete\n", "the install never ran");
}

/// Method, path, token, body, the status wanted, and what its error says.
type Case<'a> = (&'a str, &'a str, Option<&'a str>, &'a str, u16, &'a str);

/// One HTTP/1.1 request to the API; (status, body).
fn http(server: &str, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, Value) {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    http_raw(server, method, path, &auth, body)
}

/// One HTTP/1.1 request with these header lines (each ending in CRLF).
fn http_raw(server: &str, method: &str, path: &str, headers: &str, body: &str) -> (u16, Value) {
    let addr = server.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}Content-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let status = answer[9..12].parse().unwrap();
    let json = answer
        .split_once("\r\n\r\n")
        .and_then(|(_, b)| serde_json::from_str(b).ok())
        .unwrap_or(Value::Null);
    (status, json)
}

#[test]
fn bad_input_gets_a_clear_4xx_and_changes_nothing_and_the_token_never_leaks() {
    let f = fleet();
    std::fs::write(
        f.path("backstop.toml"),
        "[[node]]\nname = \"cpu-1\"\ntype = \"cpu\"\nhandle = { install = \"true\" }\n",
    )
    .unwrap();
    let serve = f.serve(&["-v"]);
    let server = f.server.lock().unwrap().clone();
    let t = Some(f.token.as_str());
    assert_eq!(http(&server, "GET", "/healthz", None, "").0, 200);
    let cases: &[Case<'_>] = &[
        ("GET", "/v1/nodes", None, "", 401, "Bearer"),
        ("GET", "/v1/nodes", Some("nope"), "", 401, "token"),
        ("POST", "/v1/ops", t, "{\"kind\": ", 400, "malformed JSON"),
        ("POST", "/v1/ops", t, "", 400, "JSON body"),
        (
            "POST",
            "/v1/ops",
            t,
            r#"{"kind":"instal","type":"cpu"}"#,
            422,
            "handle: install",
        ),
        (
            "POST",
            "/v1/ops",
            t,
            r#"{"kind":"install","type":"cpu","key":""}"#,
            422,
            "key",
        ),
        (
            "POST",
            "/v1/ops",
            t,
            r#"{"kind":"install","nodes":["cpu-9"]}"#,
            404,
            "cpu-9",
        ),
        (
            "POST",
            "/v1/ops",
            t,
            r#"{"kind":"install"}"#,
            400,
            "\"type\" or \"nodes\"",
        ),
        (
            "POST",
            "/v1/ops",
            t,
            r#"{"kind":"install","type":"cpu","colour":1}"#,
            400,
            "colour",
        ),
        (
            "POST",
            "/v1/requeue",
            t,
            r#"{"node":"cpu-9"}"#,
            404,
            "cpu-9",
        ),
        ("POST", "/v1/requeue", t, r#"{}"#, 400, "exactly one"),
        ("POST", "/v1/nodes/cpu-9/drain", t, "", 404, "cpu-9"),
        ("GET", "/v1/ops/abc", t, "", 400, "number"),
        ("GET", "/v1/ops/99", t, "", 404, "99"),
        (
            "GET",
            "/v1/ops?state=lost",
            t,
            "",
            400,
            "not a delivery state",
        ),
        ("GET", "/v1/ops?state=", t, "", 400, "not a delivery state"),
        (
            "GET",
            "/v1/deliveries?limit=100001",
            t,
            "",
            400,
            "at most 100000",
        ),
        ("GET", "/v1/ops/%FF", t, "", 400, "bad path"),
        // JSON has one type of number: 7.0 is the integer 7.
        ("POST", "/v1/requeue", t, r#"{"delivery": 7.0}"#, 404, "7"),
        ("POST", "/v1/requeue", t, r#"{"delivery": 7.5}"#, 400, "7.5"),
        // A body that may be left out may be null.
        ("POST", "/v1/ops/99/cancel", t, "null", 404, "99"),
        // A NUL byte (which PostgreSQL's text cannot hold) is refused, or
        // names nothing: never a 500.
        ("POST", "/v1/nodes/cpu%00/drain", t, "", 404, "no node"),
        (
            "POST",
            "/v1/requeue",
            t,
            r#"{"node": "cpu\u0000"}"#,
            404,
            "no node",
        ),
        ("GET", "/v1/ops?kind=a%00b", t, "", 422, "kind"),
        ("GET", "/v1/ops?key=a%00b", t, "", 422, "key"),
        ("GET", "/v1/deliveries?node=a%00b", t, "", 422, "node name"),
        (
            "POST",
            "/v1/ops",
            t,
            r#"{"kind":"install","type":"cpu","key":"a\u0000b"}"#,
            422,
            "control characters",
        ),
    ];
    for (method, path, token, body, want, says) in cases {
        let (status, json) = http(&server, method, path, *token, body);
        let error = json["error"].as_str().unwrap_or_default();
        assert_eq!(status, *want, "{method} {path} {body}: {json}");
        assert!(error.contains(says), "{method} {path} {body}: {error}");
    }
    assert!(f.json_lines(&["ops", "list"]).is_empty(), "nothing changed");
    // What the API refuses as invalid is a usage error for `ops submit`.
    let refused: &[(&[&str], &str)] = &[
        (
            &["instal", "--type", "cpu"],
            "the coordinator refused: no node of type \"cpu\" handles kind \"instal\"",
        ),
        (
            &["install", "--type", "cpu", "--key", " "],
            "key must not be empty",
        ),
        (
            &["install", "--node", "cpu 1"],
            "node name \"cpu 1\" is not valid",
        ),
    ];
    for (args, says) in refused {
        let out = f.run(&[&["ops", "submit"][..], args].concat());
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
    // A real submission, then a look for the token everywhere it must not be.
    let op = f.submit("install", "cpu", &[]);
    f.wait_state(op, "cpu-1", "done");
    let mut seen = serve.log();
    for entry in std::fs::read_dir(f.path("state")).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        seen.push_str(&String::from_utf8_lossy(&bytes));
    }
    assert!(!seen.contains(&f.token), "the token leaked");
}

#[test]
fn serve_listens_on_a_name_it_resolves() {
    let f = fleet();
    let mut cmd = f.cmd();
    cmd.args(["serve", "--listen", "localhost:0"]);
    let mut serve = Proc::spawn(cmd, "backstop serve");
    let line = serve.wait_for("serving the fan-out API on http://");
    assert!(line.contains("http://127.0.0.1:"), "{line}");
    serve.stop();
    let out = f.run(&["serve", "--listen", "localhost"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not HOST:PORT"));
}

#[test]
fn a_submit_whose_answer_is_lost_is_retried_and_makes_one_operation() {
    let f = fleet();
    std::fs::write(
        f.path("backstop.toml"),
        "[[node]]\nname = \"cpu-1\"\ntype = \"cpu\"\nhandle = { install = \"true\" }\n",
    )
    .unwrap();
    let _serve = f.serve(&[]);
    let coordinator = server_of(&f).trim_start_matches("http://").parse().unwrap();
    // The first request reaches the coordinator, which makes the
    // operation; its answer never reaches the client.
    let proxy = Proxy::start(coordinator);
    proxy.drop_responses(1);
    let out = f
        .cmd()
        .env("BACKSTOP_SERVER", format!("http://{}", proxy.addr()))
        .args(["ops", "submit", "install", "--type", "cpu", "--json"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(proxy.connections(), 2, "sent twice: {err}");
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    let ops = f.json_lines(&["ops", "list"]);
    assert_eq!(ops.len(), 1, "one operation: {ops:?}");
    assert_eq!(ops[0]["id"], answer["op"]["id"]);
    assert_eq!(answer["deliveries"], 1);
    // A key given on the command line makes a rerun answer the same.
    let key = ["--idempotency-key", "nightly-2026-12-01"];
    let first = f.submit("install", "cpu", &key);
    assert_eq!(f.submit("install", "cpu", &key), first);
    let out = f.run(
        &[
            &["ops", "submit", "install", "--type", "cpu", "--key", "k"][..],
            &key,
        ]
        .concat(),
    );
    assert_eq!(out.status.code(), Some(2), "another request, the same key");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("used for a different request"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(f.json_lines(&["ops", "list"]).len(), 2);
}

#[test]
fn a_handler_whose_program_cannot_run_is_refused_at_start_up() {
    let f = fleet();
    std::fs::write(f.path("not-executable.sh"), "#!/bin/sh\n").unwrap();
    let cases = [
        (
            "./handlers/delete.sh",
            "runs \"./handlers/delete.sh\", which does not exist",
        ),
        (
            "./not-executable.sh --now",
            "runs \"./not-executable.sh\", which is not executable",
        ),
        (
            "delete-backend --all",
            "runs \"delete-backend\", which is not on PATH",
        ),
    ];
    for (command, says) in cases {
        std::fs::write(
            f.path("backstop.toml"),
            format!(
                "[[node]]\nname = \"gpu-1\"\ntype = \"gpu\"\n\
                 handle = {{ install = \"true\", delete = \"{command}\" }}\n"
            ),
        )
        .unwrap();
        let (code, err) = f.exit_of(&["serve", "--listen", "127.0.0.1:0"]);
        assert_eq!(code, Some(2), "{command}: {err}");
        assert!(
            err.contains(&format!(
                "node gpu-1: the handler for kind \"delete\" {says}"
            )),
            "{err}"
        );
        let handle = format!("delete={command}");
        let (code, err) = f.exit_of(&[
            "worker",
            "--nats",
            &f.nats,
            "--name",
            "gpu-7",
            "--type",
            "gpu",
            "--handle",
            "install=true",
            "--handle",
            &handle,
        ]);
        assert_eq!(code, Some(2), "{command}: {err}");
        assert!(
            err.contains(&format!(
                "node gpu-7: the handler for kind \"delete\" {says}"
            )),
            "{err}"
        );
    }
    assert!(
        !f.path("state").exists(),
        "refused before the queue was opened"
    );
}

#[test]
fn a_worker_stopped_mid_run_hands_its_work_back_unspent() {
    let f = fleet();
    let _serve = f.serve(&[]);
    let started = f.path("started");
    let handler = format!(
        "if [ -f {s} ]; then exit 0; fi; touch {s}; sleep 30",
        s = started.display()
    );
    let mut w = f.worker("gpu-1", "gpu", &[("install", &handler)]);
    let op = f.submit("install", "gpu", &[]);
    f.wait_until("the handler started", || started.exists());
    // Two seconds of grace, then the handler is stopped and its delivery
    // handed back.
    w.stop();
    assert!(w.log().contains("handed back"), "{}", w.log());
    let back = delivery(&f.op(op), "gpu-1");
    assert_eq!(back["state"], "pending");
    assert_eq!(back["failures"], 0);
    assert!(
        back["last_error"].as_str().unwrap().contains("shut down"),
        "{back}"
    );
    let _w = f.worker("gpu-1", "gpu", &[("install", &handler)]);
    assert_eq!(f.wait_state(op, "gpu-1", "done")["failures"], 0);
}

#[test]
fn a_stopped_coordinator_lets_remote_work_finish_and_stores_it_when_back() {
    let f = fleet();
    let mut serve = f.serve(&[]);
    let (started, finished) = (f.path("started"), f.path("finished"));
    let handler = format!(
        "touch {}; sleep 1; touch {}",
        started.display(),
        finished.display()
    );
    let _w = f.worker("gpu-1", "gpu", &[("install", &handler)]);
    let op = f.submit("install", "gpu", &[]);
    f.wait_until("the handler started", || started.exists());
    let stopping = Instant::now();
    serve.stop();
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "it did not wait for the remote handler"
    );
    f.wait_until("the handler finished", || finished.exists());
    let _serve = f.serve(&[]);
    let done = f.wait_state(op, "gpu-1", "done");
    assert_eq!(
        done["attempt"], 1,
        "the outcome reported while no coordinator ran"
    );
}

#[test]
fn a_drained_node_gets_nothing_new_until_undrained() {
    let f = fleet();
    let ran = f.path("ran");
    std::fs::write(
        f.path("backstop.toml"),
        format!(
            "[[node]]\nname = \"cpu-1\"\ntype = \"cpu\"\nhandle = {{ install = \"touch {}\" }}\n\
             [[node]]\nname = \"cpu-2\"\ntype = \"cpu\"\nhandle = {{ install = \"true\" }}\n",
            ran.display()
        ),
    )
    .unwrap();
    let _serve = f.serve(&[]);
    let said = f.ok(&["nodes", "drain", "cpu-1"]);
    assert!(said.starts_with("node cpu-1 drained"), "{said}");
    assert_eq!(f.node("cpu-1")["drained"], true);
    let op = f.submit("install", "cpu", &[]);
    // The witness: the same operation reaches the node that is not
    // drained and finishes there.
    f.wait_state(op, "cpu-2", "done");
    let held = delivery(&f.op(op), "cpu-1");
    assert_eq!(
        (&held["state"], &held["held"]),
        (&"pending".into(), &"drained".into())
    );
    assert!(!ran.exists());
    let shown = f.ok(&["ops", "show", &op.to_string()]);
    assert!(
        shown.contains("held: node drained") && !shown.contains("next "),
        "{shown}"
    );
    f.ok(&["nodes", "drain", "cpu-1", "--undo"]);
    f.wait_state(op, "cpu-1", "done");
    let table = f.ok(&["nodes", "list"]);
    assert!(
        table.starts_with("NAME") && table.contains("cpu-1"),
        "{table}"
    );
    let out = f.run(&["nodes", "drain", "cpu-9"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("there is no node named \"cpu-9\""));
}

// Across machines: the queue on PostgreSQL, several coordinators, and the
// faults a fleet meets.

/// A handler that records which attempt of which delivery ran where.
fn recorder(log: &Path, sleep: &str) -> String {
    format!(
        "sleep {sleep}; echo \"$BACKSTOP_DELIVERY $BACKSTOP_ATTEMPT $BACKSTOP_NODE\" >> {}",
        log.display()
    )
}

fn server_of(f: &Fleet) -> String {
    f.server.lock().unwrap().clone()
}

/// Submits `n` keyed operations for nodes of `node_type`, spread over
/// `servers`, through the HTTP API.
fn submit_many(f: &Fleet, servers: &[String], n: usize, node_type: &str) {
    for i in 0..n {
        let server = &servers[i % servers.len()];
        let body = format!(r#"{{"kind":"install","type":"{node_type}","key":"model-{i}"}}"#);
        let (status, json) = http(server, "POST", "/v1/ops", Some(&f.token), &body);
        assert_eq!(status, 201, "{json}");
    }
}

fn all_deliveries(f: &Fleet, server: &str) -> Vec<Value> {
    let (status, json) = http(
        server,
        "GET",
        "/v1/deliveries?limit=100000",
        Some(&f.token),
        "",
    );
    assert_eq!(status, 200, "{json}");
    json.as_array().cloned().unwrap_or_default()
}

fn healthz(server: &str) -> Value {
    http(server, "GET", "/healthz", None, "").1
}

/// Waits until `want` deliveries are done and none waits or runs; returns
/// them.
fn wait_all_done(f: &Fleet, server: &str, want: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let all = all_deliveries(f, server);
        let done = all.iter().filter(|d| d["state"] == "done").count();
        if done == want && all.len() == want {
            return all;
        }
        assert!(
            Instant::now() < deadline,
            "{done} of {want} deliveries done; the others: {:?}",
            all.iter()
                .filter(|d| d["state"] != "done")
                .take(5)
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Checks the handlers' record: no attempt token ran twice, and the last
/// attempt of every delivery ran. Returns how many attempts ran.
fn ran_once_per_token(log: &Path, deliveries: &[Value]) -> usize {
    let mut seen = std::collections::HashSet::new();
    for line in read(log).lines() {
        let mut parts = line.split_whitespace();
        let delivery: i64 = parts.next().and_then(|p| p.parse().ok()).unwrap();
        let attempt: i64 = parts.next().and_then(|p| p.parse().ok()).unwrap();
        assert!(
            seen.insert((delivery, attempt)),
            "attempt {attempt} of delivery {delivery} ran twice"
        );
    }
    for d in deliveries {
        let token = (d["id"].as_i64().unwrap(), d["attempt"].as_i64().unwrap());
        assert!(seen.contains(&token), "{d} never ran");
        assert_eq!(d["failures"], 0, "{d}");
    }
    seen.len()
}

fn lines(path: &Path) -> usize {
    read(path).lines().count()
}

#[test]
fn fleet_two_coordinators_and_three_workers_run_1000_operations_once_each() {
    let f = fleet_pg();
    let _a = f.serve(&[]);
    let a = server_of(&f);
    let _b = f.serve(&[]);
    let b = server_of(&f);
    let log = f.path("ran");
    let handler = recorder(&log, "0");
    let _workers: Vec<Proc> = (1..=3)
        .map(|i| {
            let mut w = f.spawn_worker(
                &f.nats,
                &format!("gpu-{i}"),
                "gpu",
                &[("install", &handler)],
                &["--concurrency", "8"],
            );
            w.wait_for("registered as node");
            w
        })
        .collect();
    submit_many(&f, &[a.clone(), b.clone()], 1000, "gpu");
    let done = wait_all_done(&f, &a, 3000);
    assert_eq!(
        ran_once_per_token(&log, &done),
        3000,
        "each delivery ran once"
    );
    assert!(done.iter().all(|d| d["attempt"] == 1));
    let roles: Vec<Value> = [&a, &b]
        .iter()
        .map(|s| healthz(s)["housekeeping"].clone())
        .collect();
    assert!(
        roles.contains(&Value::from("leader")) && roles.contains(&Value::from("standby")),
        "housekeeping on one of them: {roles:?}"
    );
}

#[test]
fn fleet_one_idempotency_key_makes_one_operation_across_coordinators() {
    let f = fleet_pg();
    let _a = f.serve(&[]);
    let a = server_of(&f);
    let _b = f.serve(&[]);
    let b = server_of(&f);
    let _w = f.worker("gpu-1", "gpu", &[("install", "true")]);
    let headers = format!(
        "Authorization: Bearer {}\r\nIdempotency-Key: \"fleet-submit-1\"\r\n",
        f.token
    );
    let body = r#"{"kind":"install","type":"gpu","key":"llama-cpp"}"#;
    let (status, first) = http_raw(&a, "POST", "/v1/ops", &headers, body);
    assert_eq!(status, 201, "{first}");
    let (status, again) = http_raw(&b, "POST", "/v1/ops", &headers, body);
    assert_eq!(status, 200, "{again}");
    assert_eq!(
        again, first,
        "the other coordinator answers the same operation"
    );
    let other = r#"{"kind":"install","type":"gpu","key":"vllm"}"#;
    let (status, refused) = http_raw(&b, "POST", "/v1/ops", &headers, other);
    assert_eq!(status, 422, "{refused}");
    assert!(
        refused["error"]
            .as_str()
            .unwrap_or_default()
            .contains("used for a different request"),
        "{refused}"
    );
    let ops = f.json_lines(&["ops", "list"]);
    assert_eq!(ops.len(), 1, "{ops:?}");
}

#[test]
fn fleet_kill_9_of_one_coordinator_mid_run_and_the_other_finishes() {
    let f = fleet_pg();
    let mut doomed = f.serve(&[]);
    let a = server_of(&f);
    let survivor = f.serve(&[]);
    let b = server_of(&f);
    let log = f.path("ran");
    let handler = recorder(&log, "0.2");
    let _workers: Vec<Proc> = (1..=2)
        .map(|i| f.worker(&format!("gpu-{i}"), "gpu", &[("install", &handler)]))
        .collect();
    submit_many(&f, &[a, b.clone()], 150, "gpu");
    f.wait_until("some deliveries ran", || lines(&log) >= 60);
    assert!(lines(&log) < 250, "the run is still going");
    doomed.kill9();
    let done = wait_all_done(&f, &b, 300);
    let ran = ran_once_per_token(&log, &done);
    assert!(ran >= 300, "{ran}");
    f.wait_until("it took over housekeeping", || {
        healthz(&b)["housekeeping"] == "leader"
    });
    assert!(
        survivor
            .log()
            .contains("this coordinator runs housekeeping")
    );
}

#[test]
fn fleet_postgres_cut_mid_run_loses_nothing_and_leaves_nothing_stuck() {
    let f = fleet_pg();
    let schema = f.schema.as_ref().unwrap();
    let proxy = Proxy::start(schema.server_addr());
    let through = schema.url_via(proxy.addr());
    let _serve = f.serve_with(&through, &f.nats, &[]);
    let server = server_of(&f);
    let log = f.path("ran");
    let handler = recorder(&log, "0.02");
    let _workers: Vec<Proc> = (1..=2)
        .map(|i| f.worker(&format!("gpu-{i}"), "gpu", &[("install", &handler)]))
        .collect();
    submit_many(&f, std::slice::from_ref(&server), 150, "gpu");
    f.wait_until("some deliveries ran", || lines(&log) >= 40);
    // PostgreSQL "restarts" for this coordinator: every connection drops
    // and none can be made for a while.
    proxy.cut();
    f.wait_until("/healthz says the store is unreachable", || {
        healthz(&server)["store"] == "unreachable"
    });
    assert_eq!(healthz(&server)["status"], "degraded");
    // /metrics says so at once, without the store's gauges.
    let (status, _, metrics) = observe::get_text(&server, "/metrics", Some(&f.token));
    assert_eq!(status, 200, "{metrics}");
    assert_eq!(
        observe::sample(&metrics, "backstop_store_up"),
        Some(0.0),
        "{metrics}"
    );
    assert!(!metrics.contains("backstop_nodes{"), "{metrics}");
    // The outage lasts until the coordinator has knocked at the store a
    // few times in vain.
    let knocked = proxy.refused();
    f.wait_until("the store is tried again while it is down", || {
        proxy.refused() >= knocked + 3
    });
    proxy.restore();
    let done = wait_all_done(&f, &server, 300);
    ran_once_per_token(&log, &done);
    assert_eq!(healthz(&server)["status"], "ok");
    // Each delivery counted done once, those whose outcome waited out the
    // outage too.
    let mut metrics = String::new();
    f.wait_until("/metrics counts every delivery done", || {
        metrics = observe::get_text(&server, "/metrics", Some(&f.token)).2;
        let done = |node: &str| {
            let series = format!(
                r#"backstop_deliveries_finished_total{{kind="install",node="{node}",outcome="done"}}"#
            );
            observe::sample(&metrics, &series).unwrap_or(0.0)
        };
        done("gpu-1") + done("gpu-2") >= 300.0
    });
    assert_eq!(
        observe::sample(&metrics, "backstop_store_up"),
        Some(1.0),
        "{metrics}"
    );
    let counted: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("backstop_deliveries_finished_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(
        counted, 300.0,
        "nothing counted twice, nothing else:\n{metrics}"
    );
}

/// A NATS server of the test's own, on a free port.
struct Nats {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Nats {
    fn start() -> Nats {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let child = Nats::spawn(port, dir.path());
        Nats { child, port, dir }
    }

    fn spawn(port: u16, dir: &Path) -> Child {
        let bin = if Path::new("/usr/sbin/nats-server").exists() {
            "/usr/sbin/nats-server"
        } else {
            "nats-server"
        };
        let child = Command::new(bin)
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server starts (apt-get install nats-server)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server never listened");
            std::thread::sleep(Duration::from_millis(20));
        }
        child
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn restart(&mut self, down_for: Duration) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::thread::sleep(down_for);
        self.child = Nats::spawn(self.port, self.dir.path());
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn fleet_nats_restart_mid_run_and_deliveries_resume() {
    let f = fleet_pg();
    let mut nats = Nats::start();
    let _serve = f.serve_with(&f.state, &nats.url(), &[]);
    let server = server_of(&f);
    let log = f.path("ran");
    let handler = recorder(&log, "0.02");
    let _workers: Vec<Proc> = (1..=2)
        .map(|i| {
            let mut w = f.spawn_worker(
                &nats.url(),
                &format!("gpu-{i}"),
                "gpu",
                &[("install", &handler)],
                &[],
            );
            w.wait_for("registered as node");
            w
        })
        .collect();
    submit_many(&f, std::slice::from_ref(&server), 100, "gpu");
    f.wait_until("some deliveries ran", || lines(&log) >= 30);
    let _ = nats.child.kill();
    let _ = nats.child.wait();
    f.wait_until("/healthz says NATS is down", || {
        healthz(&server)["nats"] == "disconnected"
    });
    assert_eq!(healthz(&server)["status"], "degraded");
    nats.restart(Duration::from_millis(500));
    let done = wait_all_done(&f, &server, 200);
    ran_once_per_token(&log, &done);
    assert_eq!(healthz(&server)["status"], "ok");
}

#[test]
fn fleet_a_partitioned_worker_s_deliveries_wait_then_finish_when_it_returns() {
    let f = fleet_pg();
    let _serve = f.serve(&[]);
    let server = server_of(&f);
    let nats_addr: std::net::SocketAddr = f
        .nats
        .trim_start_matches("nats://")
        .parse()
        .expect("BACKSTOP_TEST_NATS is host:port");
    let proxy = Proxy::start(nats_addr);
    let log = f.path("ran");
    let handler = recorder(&log, "0");
    let mut far = f.spawn_worker(
        &format!("nats://{}", proxy.addr()),
        "gpu-far",
        "gpu",
        &[("install", &handler)],
        &[],
    );
    far.wait_for("registered as node");
    let _near = f.worker("gpu-near", "gpu", &[("install", &handler)]);
    proxy.cut();
    f.wait_until("the far worker is parked", || {
        f.node("gpu-far")["status"] == "unhealthy"
    });
    submit_many(&f, std::slice::from_ref(&server), 10, "gpu");
    f.wait_until("the near worker ran its ten", || lines(&log) >= 10);
    // The witness: the near node's deliveries of the same ten operations
    // are all stored as done, so the far node's were looked at too.
    f.wait_until("the near worker's ten are done", || {
        all_deliveries(&f, &server)
            .iter()
            .filter(|d| d["node"] == "gpu-near" && d["state"] == "done")
            .count()
            == 10
    });
    let far_ones: Vec<Value> = all_deliveries(&f, &server)
        .into_iter()
        .filter(|d| d["node"] == "gpu-far")
        .collect();
    assert_eq!(far_ones.len(), 10);
    assert!(
        far_ones
            .iter()
            .all(|d| d["state"] == "pending" && d["failures"] == 0),
        "they wait, unspent: {far_ones:?}"
    );
    proxy.restore();
    let done = wait_all_done(&f, &server, 20);
    assert_eq!(ran_once_per_token(&log, &done), 20);
}

// Restarts: a node never runs more handlers than its concurrency, and no
// delivery runs twice at once — after a SIGTERM, a kill -9 of the
// coordinator, or a kill -9 of a worker.

/// A handler that proves what ran at once, written as a script in `dir`.
/// Each run holds two flocks for as long as any of its processes lives
/// (the `sleep` inherits them): `own-DELIVERY`, which nothing else touches,
/// so that a run finding it taken is a second run of its delivery at once
/// (recorded in `overlaps`); and `live-DELIVERY`, which each run probes
/// with a shared lock at its start to record in `concurrent` how many runs
/// hold one (shared probes never see each other). While `hold` exists in
/// `dir`, runs last a minute: longer than any restart takes.
fn guarded_handler(dir: &Path, sleep: &str) -> String {
    let script = dir.join("guarded.sh");
    std::fs::write(
        &script,
        format!(
            r#"D={d}
exec 8>"$D/own-$BACKSTOP_DELIVERY"
if ! flock -n 8; then echo "$BACKSTOP_DELIVERY $BACKSTOP_ATTEMPT" >> "$D/overlaps"; exit 1; fi
exec 9>"$D/live-$BACKSTOP_DELIVERY"
flock 9
n=0
for f in "$D"/live-*; do flock -n -s "$f" true || n=$((n+1)); done
echo "$n" >> "$D/concurrent"
echo "$BACKSTOP_DELIVERY $BACKSTOP_ATTEMPT" >> "$D/started"
if [ -f "$D/hold" ]; then sleep 60; else sleep {sleep}; fi
"#,
            d = dir.display()
        ),
    )
    .unwrap();
    format!("sh {}", script.display())
}

/// The most runs `guarded_handler` saw at once, and the overlaps it saw.
fn guarded_record(dir: &Path) -> (usize, String) {
    let most = read(&dir.join("concurrent"))
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .max()
        .unwrap_or(0);
    (most, read(&dir.join("overlaps")))
}

#[test]
fn a_node_never_runs_more_than_its_concurrency_or_a_delivery_twice_across_restarts() {
    let f = fleet();
    let runs = f.path("runs");
    std::fs::create_dir(&runs).unwrap();
    std::fs::write(
        f.path("backstop.toml"),
        format!(
            "[[node]]\nname = \"cpu-local\"\ntype = \"cpu\"\nconcurrency = 3\n\
             [node.handle]\ninstall = \"{}\"\n",
            guarded_handler(&runs, "1")
        ),
    )
    .unwrap();
    let hold = runs.join("hold");
    std::fs::write(&hold, "").unwrap();
    let mut serve = f.serve(&[]);
    for i in 0..15 {
        f.submit("install", "cpu", &["--key", &format!("model-{i}")]);
    }
    let started = runs.join("started");
    f.wait_until("three handlers run", || lines(&started) >= 3);
    // A clean stop hands the running deliveries back; the next process
    // finds them waiting, with others.
    serve.stop();
    let mut serve = f.serve(&[]);
    f.wait_until("the next three run", || lines(&started) >= 6);
    // A kill -9 leaves three handlers running; the next process stops them
    // before it runs their deliveries again.
    serve.kill9();
    std::fs::remove_file(&hold).unwrap();
    let mut serve = f.serve(&[]);
    serve.wait_for("handler processes a previous process of this node left running");
    let done = wait_all_done(&f, &server_of(&f), 15);
    let log = serve.log();
    let (most, overlaps) = guarded_record(&runs);
    let record = format!(
        "started:\n{}at once:\n{}\nlog:\n{log}",
        read(&started),
        read(&runs.join("concurrent")).replace('\n', " ")
    );
    assert!(
        done.iter().all(|d| d["failures"] == 0),
        "{done:?}\n{record}"
    );
    assert_eq!(overlaps, "", "runs of one delivery overlapped\n{record}");
    assert!(
        most <= 3,
        "{most} handlers ran at once on a node of concurrency 3\n{record}"
    );
    assert!(
        !log.contains("in flight but not held by their nodes"),
        "the reconcile judged this coordinator's own attempts:\n{log}"
    );
}

#[test]
fn a_worker_killed_with_9_and_restarted_never_runs_a_delivery_twice_at_once() {
    let f = fleet();
    let _serve = f.serve(&[]);
    let runs = f.path("runs");
    std::fs::create_dir(&runs).unwrap();
    let handler = guarded_handler(&runs, "0.5");
    let extra = ["--concurrency", "3"];
    let spawn = || {
        let mut w = f.spawn_worker(&f.nats, "gpu-1", "gpu", &[("install", &handler)], &extra);
        w.wait_for("registered as node");
        w
    };
    let hold = runs.join("hold");
    std::fs::write(&hold, "").unwrap();
    let mut w = spawn();
    for i in 0..6 {
        f.submit("install", "gpu", &["--key", &format!("model-{i}")]);
    }
    f.wait_until("three handlers run", || lines(&runs.join("started")) >= 3);
    w.kill9();
    std::fs::remove_file(&hold).unwrap();
    let mut w = spawn();
    w.wait_for("handler processes a previous process of this node left running");
    let done = wait_all_done(&f, &server_of(&f), 6);
    assert!(done.iter().all(|d| d["failures"] == 0), "{done:?}");
    let (most, overlaps) = guarded_record(&runs);
    assert_eq!(overlaps, "", "runs of one delivery overlapped");
    assert!(
        most <= 3,
        "{most} handlers ran at once on a node of concurrency 3"
    );
}

#[test]
fn a_second_worker_under_a_live_name_is_refused_and_a_dead_one_s_name_is_taken_over() {
    let f = fleet();
    let _serve = f.serve(&[]);
    let runs = f.path("runs");
    std::fs::create_dir(&runs).unwrap();
    let handler = guarded_handler(&runs, "2");
    let mut first = f.worker("gpu-1", "gpu", &[("install", &handler)]);
    // A second process under the same name, while the first is live: the
    // coordinator refuses it.
    let mut second = f.spawn_worker(&f.nats, "gpu-1", "gpu", &[("install", &handler)], &[]);
    assert_eq!(second.exit_code(), Some(2), "{}", second.log());
    let said = second.log();
    assert!(
        said.contains("node name gpu-1 is held by another live worker process"),
        "{said}"
    );
    // While the first runs a handler, a third on the same machine finds
    // it before it even asks.
    let op = f.submit("install", "gpu", &["--key", "llama-cpp"]);
    f.wait_until("the handler runs", || lines(&runs.join("started")) == 1);
    let mut third = f.spawn_worker(&f.nats, "gpu-1", "gpu", &[("install", &handler)], &[]);
    assert_eq!(third.exit_code(), Some(2), "{}", third.log());
    let said = third.log();
    assert!(
        said.contains("on this machine runs handlers as node gpu-1"),
        "{said}"
    );
    // The live one keeps its delivery: the same attempt finishes, once.
    let done = f.wait_state(op, "gpu-1", "done");
    assert_eq!(
        (done["attempt"].as_i64(), done["failures"].as_i64()),
        (Some(1), Some(0))
    );
    assert_eq!(lines(&runs.join("started")), 1);
    assert!(first.log().contains("registered as node gpu-1"));
    // Once the first is gone, its name is taken over at once — no wait for
    // its heartbeats to go stale — and the node works.
    first.kill9();
    let _fourth = f.worker("gpu-1", "gpu", &[("install", &handler)]);
    let next = f.submit("install", "gpu", &["--key", "whisper"]);
    let done = f.wait_state(next, "gpu-1", "done");
    assert_eq!(done["failures"], 0);
    let (_, overlaps) = guarded_record(&runs);
    assert_eq!(overlaps, "");
}

// Start-up waits for what it needs: the store for `serve`, NATS for
// `worker`; a location of the wrong shape or refused credentials end it at
// once.

/// A port of 127.0.0.1 that nothing listens on (for now).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn serve_waits_for_postgres_answering_degraded_meanwhile_and_then_delivers() {
    let f = fleet_pg();
    let schema = f.schema.as_ref().unwrap();
    let pg_port = free_port();
    let state = schema.url_via(([127, 0, 0, 1], pg_port).into());
    let ran = f.path("ran");
    std::fs::write(
        f.path("backstop.toml"),
        format!(
            "[[node]]\nname = \"cpu-1\"\ntype = \"cpu\"\n[node.handle]\ninstall = \"echo $BACKSTOP_OP >> {}\"\n",
            ran.display()
        ),
    )
    .unwrap();
    let api = format!("127.0.0.1:{}", free_port());
    let mut cmd = f.cmd();
    cmd.env("BACKSTOP_STATE", &state)
        .args(["serve", "--listen", &api])
        .args(QUICK_SERVE);
    let mut serve = Proc::spawn(cmd, "backstop serve");
    let failed = serve.wait_for("cannot open the queue at");
    assert!(!failed.contains(&f.token), "{failed}");
    serve.wait_for("trying again in");
    let server = format!("http://{api}");
    let health = healthz(&server);
    assert_eq!(
        (health["status"].as_str(), health["store"].as_str()),
        (Some("degraded"), Some("unreachable")),
        "{health}"
    );
    let (status, _) = http(&server, "GET", "/v1/ops", Some(&f.token), "");
    assert_eq!(status, 503);
    // PostgreSQL appears on that port.
    let _pg = Proxy::start_on(&format!("127.0.0.1:{pg_port}"), schema.server_addr(), 0);
    serve.wait_for("serving the fan-out API on http://");
    assert_eq!(healthz(&server)["status"], "ok");
    *f.server.lock().unwrap() = server.clone();
    let op = f.submit("install", "cpu", &[]);
    f.wait_state(op, "cpu-1", "done");
    assert_eq!(read(&ran).trim(), op.to_string());
    serve.stop();
}

#[test]
fn serve_refuses_a_bad_store_location_or_refused_credentials_at_once() {
    let f = fleet_pg();
    let schema = f.schema.as_ref().unwrap();
    // The same server and database, as a role that does not exist.
    let (scheme, rest) = schema.url().split_once("://").unwrap();
    let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let refused = format!("{scheme}://no_such_role_bs@{host}");
    for (state, code, says) in [
        (
            "postgres://127.0.0.1:notaport/test",
            2,
            "is not a queue location",
        ),
        (refused.as_str(), 1, "refused the credentials"),
    ] {
        let out = f
            .cmd()
            .env("BACKSTOP_STATE", state)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{state}: {err}");
        assert!(err.contains(says), "{state}: {err}");
    }
}

#[test]
fn a_worker_waits_for_nats_and_then_takes_deliveries() {
    let f = fleet();
    let _serve = f.serve(&[]);
    let nats_port = free_port();
    let ran = f.path("ran");
    let handler = format!("echo $BACKSTOP_OP >> {}", ran.display());
    let mut w = f.spawn_worker(
        &format!("nats://127.0.0.1:{nats_port}"),
        "gpu-1",
        "gpu",
        &[("install", &handler)],
        &[],
    );
    w.wait_for("cannot connect to NATS at nats://127.0.0.1:");
    w.wait_for("trying again in");
    let upstream: std::net::SocketAddr = f.nats.trim_start_matches("nats://").parse().unwrap();
    let _nats = Proxy::start_on(&format!("127.0.0.1:{nats_port}"), upstream, 0);
    w.wait_for("registered as node gpu-1");
    let op = f.submit("install", "gpu", &[]);
    f.wait_state(op, "gpu-1", "done");
    assert_eq!(read(&ran).trim(), op.to_string());
    w.stop();
}

#[test]
fn a_worker_refuses_a_bad_nats_url_or_refused_credentials_at_once() {
    let f = fleet();
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let bin = if Path::new("/usr/sbin/nats-server").exists() {
        "/usr/sbin/nats-server"
    } else {
        "nats-server"
    };
    let mut guarded = Command::new(bin)
        .args(["-a", "127.0.0.1", "-p", &port.to_string()])
        .args(["--user", "backstop", "--pass", "right-password"])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nats-server starts (apt-get install nats-server)");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nats-server never listened");
        std::thread::sleep(Duration::from_millis(20));
    }
    let wrong = format!("nats://backstop:wrong-password@127.0.0.1:{port}");
    for (url, code, says) in [
        ("nats://127.0.0.1:99999", 2, "is not a NATS URL"),
        (wrong.as_str(), 1, "refused the connection"),
    ] {
        let out = f
            .cmd()
            .args(["worker", "--nats", url, "--name", "gpu-1", "--type", "gpu"])
            .args(["--handle", "install=true"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{url}: {err}");
        assert!(err.contains(says), "{url}: {err}");
        assert!(!err.contains("wrong-password"), "{err}");
    }
    let _ = guarded.kill();
    let _ = guarded.wait();
}

#[test]
fn a_worker_that_comes_back_to_find_its_name_taken_stops() {
    let f = fleet();
    let _serve = f.serve(&[]);
    let upstream: std::net::SocketAddr = f.nats.trim_start_matches("nats://").parse().unwrap();
    let proxy = Proxy::start(upstream);
    let ran = f.path("ran");
    let handler = format!("echo \"$BACKSTOP_OP\" >> {}", ran.display());
    let via = format!("nats://{}", proxy.addr());
    let mut old = f.spawn_worker(&via, "gpu-1", "gpu", &[("install", &handler)], &[]);
    old.wait_for("registered as node gpu-1");
    // Cut away from NATS, it is gone as far as anyone can tell: another
    // process takes its name.
    proxy.cut();
    let _new = f.worker("gpu-1", "gpu", &[("install", &handler)]);
    proxy.restore();
    assert_eq!(old.exit_code(), Some(2), "{}", old.log());
    assert!(
        old.log()
            .contains("node name gpu-1 is held by another live worker process"),
        "{}",
        old.log()
    );
    let op = f.submit("install", "gpu", &[]);
    f.wait_state(op, "gpu-1", "done");
    assert_eq!(read(&ran).trim(), op.to_string());
}

#[test]
fn a_second_coordinator_for_the_same_local_nodes_is_refused_and_changes_nothing() {
    let f = fleet();
    let runs = f.path("runs");
    std::fs::create_dir(&runs).unwrap();
    std::fs::write(runs.join("hold"), "").unwrap();
    std::fs::write(
        f.path("backstop.toml"),
        format!(
            "[[node]]\nname = \"cpu-local\"\ntype = \"cpu\"\n[node.handle]\ninstall = \"{}\"\n",
            guarded_handler(&runs, "0.1")
        ),
    )
    .unwrap();
    let _serve = f.serve(&[]);
    let op = f.submit("install", "cpu", &[]);
    f.wait_until("the handler runs", || lines(&runs.join("started")) == 1);
    let out = f
        .cmd()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("another coordinator process (pid"), "{err}");
    let running = delivery(&f.op(op), "cpu-local");
    assert_eq!(
        (running["state"].as_str(), running["attempt"].as_i64()),
        (Some("in_flight"), Some(1)),
        "{running}"
    );
    assert_eq!(guarded_record(&runs).1, "", "no second run");
}
