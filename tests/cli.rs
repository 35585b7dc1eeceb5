//! The `backstop` binary as users run it: exit codes, messages, files and
//! output, against the fault server.

use std::os::unix::fs::FileTypeExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use backstop_faultserver::{FaultServer, HubFile, Reply};

mod common;

use common::{QUICK, backstop, run, stderr, stdout};

mod get {
    use super::*;

    #[test]
    fn prints_the_body_after_retrying() {
        let server = FaultServer::start();
        server.script(
            "/data",
            [
                Reply::status(503),
                Reply::ok("hello").cut_after(2),
                Reply::ok("hello"),
            ],
        );
        let out = run(backstop().args(["get", &server.url("/data")]).args(QUICK));
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert_eq!(stdout(&out), "hello", "only the complete body, once");
        let err = stderr(&out);
        assert!(err.contains(": HTTP 503; retry 1 of 4 in "), "{err}");
        assert!(
            err.contains(": connection closed early; resuming from byte 2 in "),
            "{err}"
        );
    }

    #[test]
    fn verbose_output_piped_carries_no_escapes() {
        let server = FaultServer::start();
        server.script("/data", [Reply::status(503), Reply::ok("x")]);
        let out = run(backstop()
            .args(["-vv", "get", &server.url("/data")])
            .args(QUICK));
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains("attempt=1"), "structured fields shown: {err}");
        assert!(!err.contains('\x1b'), "{err:?}");
    }

    #[test]
    fn quiet_means_quiet() {
        let server = FaultServer::start();
        server.script("/data", [Reply::status(503), Reply::ok("x")]);
        let out = run(backstop()
            .args(["-q", "get", &server.url("/data")])
            .args(QUICK));
        assert_eq!(out.status.code(), Some(0));
        assert_eq!(stderr(&out), "");
    }

    #[test]
    fn a_persistent_rate_limit_exits_75_and_says_so() {
        let server = FaultServer::start();
        server.always("/data", Reply::status(429));
        let out = run(backstop()
            .args(["get", &server.url("/data"), "--attempts", "3"])
            .args(QUICK));
        assert_eq!(out.status.code(), Some(75));
        let err = stderr(&out);
        let host = server.addr().to_string();
        assert!(
            err.contains(&format!(
                "backstop: error: rate limited by {host}: 3 attempts over "
            )),
            "{err}"
        );
        assert!(
            err.contains("caused by: HTTP 429 Too Many Requests"),
            "{err}"
        );
        assert_eq!(server.hits("/data"), 3);
    }

    #[test]
    fn a_wait_beyond_max_wait_exits_75_at_once_with_the_wait() {
        let server = FaultServer::start();
        server.always("/data", Reply::status(429).header("Retry-After", "55"));
        let out = run(backstop()
            .args(["get", &server.url("/data"), "--max-wait", "10s"])
            .args(QUICK));
        assert_eq!(out.status.code(), Some(75));
        assert!(
            stderr(&out).contains("1 attempt over ")
                && stderr(&out).contains(" ms; the server asks to wait 55 s"),
            "{}",
            stderr(&out)
        );
        assert_eq!(server.hits("/data"), 1);
    }

    #[test]
    fn a_huge_server_wait_exits_75_at_once_and_says_what_was_asked() {
        let server = FaultServer::start();
        server.always(
            "/data",
            Reply::status(429).header("Retry-After", "99999999999999"),
        );
        let out = run(backstop()
            .args(["get", &server.url("/data"), "--max-wait", "1000d"])
            .args(QUICK));
        assert_eq!(out.status.code(), Some(75), "{}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains("1 attempt over ")
                && err.contains("; the server asks to wait 1157407407 d 9 h"),
            "{err}"
        );
        assert_eq!(server.hits("/data"), 1, "not retried early");
    }

    #[test]
    fn the_root_cause_is_shown_without_verbose() {
        let out = run(backstop()
            .args(["get", "http://backstop-test.invalid/x", "--attempts", "1"])
            .args(QUICK));
        assert_eq!(out.status.code(), Some(75), "{}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains("\n  caused by: could not connect: dns error: failed to lookup address"),
            "{err}"
        );
        assert!(!err.contains("client error (Connect)"), "{err}");
    }

    #[test]
    fn a_permanent_failure_exits_1_at_once() {
        let server = FaultServer::start();
        server.always(
            "/missing",
            Reply::status(404).body(r#"{"error":"Repository not found"}"#),
        );
        let out = run(backstop()
            .args(["get", &server.url("/missing")])
            .args(QUICK));
        assert_eq!(out.status.code(), Some(1));
        let err = stderr(&out);
        assert!(err.contains("failed, not retried: 1 attempt"), "{err}");
        assert!(
            err.contains("caused by: HTTP 404 Not Found: Repository not found"),
            "{err}"
        );
        assert_eq!(server.hits("/missing"), 1);
    }

    #[test]
    fn transient_failures_exhausted_exit_75() {
        let server = FaultServer::start();
        server.always("/flaky", Reply::status(502));
        let out = run(backstop()
            .args(["get", &server.url("/flaky"), "--attempts", "2"])
            .args(QUICK));
        assert_eq!(out.status.code(), Some(75));
        assert!(
            stderr(&out).contains("kept failing: 2 attempts over"),
            "{}",
            stderr(&out)
        );
    }

    #[test]
    fn credentials_are_sent_but_never_printed() {
        let server = FaultServer::start();
        let secret = "sk-live-ThisMustNotLeak42";
        server.always(
            "/private",
            Reply::status(401).body(format!(r#"{{"error":"invalid key {secret}"}}"#)),
        );
        let out = run(backstop()
            .args(["-vv", "get", &server.url("/private")])
            .args(["-H", &format!("Authorization: Bearer {secret}")])
            .args(QUICK));
        assert_eq!(out.status.code(), Some(1));
        let err = stderr(&out);
        assert!(!err.contains(secret), "{err}");
        assert!(err.contains("refused the credentials"), "{err}");
        assert!(err.contains("hint: check the credentials"), "{err}");
        assert_eq!(
            server.requests()[0].header("authorization"),
            Some(&*format!("Bearer {secret}"))
        );
    }

    #[test]
    fn output_files_are_written_whole_or_not_at_all() {
        let server = FaultServer::start();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        server.script(
            "/config.json",
            [
                Reply::json(r#"{"a":1}"#).cut_after(3),
                Reply::json(r#"{"a":1}"#),
            ],
        );
        let out = run(backstop()
            .args(["get", &server.url("/config.json"), "-o"])
            .arg(&path)
            .args(QUICK));
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), r#"{"a":1}"#);
        assert_eq!(stdout(&out), "");

        server.always("/config.json", Reply::status(500));
        let out = run(backstop()
            .args(["get", &server.url("/config.json"), "-o"])
            .arg(&path)
            .args(["--attempts", "2"])
            .args(QUICK));
        assert_eq!(out.status.code(), Some(75));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), r#"{"a":1}"#);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporaries"
        );
    }

    /// A body of `n` bytes that differ from one offset to the next.
    fn body(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 % 251) as u8).collect()
    }

    fn ranges(server: &FaultServer) -> Vec<Option<String>> {
        server
            .requests()
            .iter()
            .map(|r| r.header("range").map(str::to_owned))
            .collect()
    }

    #[test]
    fn a_cut_body_continues_by_range_to_a_file_and_to_stdout() {
        let server = FaultServer::start();
        let data = body(100_000);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.bin");
        for output in [Some(&path), None] {
            server.script("/model.bin", [Reply::file(data.clone()).cut_after(70_000)]);
            server.always("/model.bin", Reply::file(data.clone()));
            let before = server.requests().len();
            let mut cmd = backstop();
            cmd.args(["get", &server.url("/model.bin")]).args(QUICK);
            if let Some(path) = output {
                cmd.arg("-o").arg(path);
            }
            let out = run(&mut cmd);
            assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
            let got = match output {
                Some(path) => std::fs::read(path).unwrap(),
                None => out.stdout.clone(),
            };
            assert!(got == data, "the body, whole and once");
            assert_eq!(
                ranges(&server)[before..],
                [None, Some("bytes=70000-".into())],
                "the rest only, not the whole body again"
            );
            assert!(
                stderr(&out).contains(": connection closed early; resuming from byte 70000 in "),
                "{}",
                stderr(&out)
            );
        }
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no partial file left"
        );
    }

    #[test]
    fn a_failed_download_keeps_what_arrived_and_the_next_run_resumes_it() {
        let server = FaultServer::start();
        let data = body(100_000);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.bin");
        server.script("/model.bin", [Reply::file(data.clone()).cut_after(70_000)]);
        server.always("/model.bin", Reply::status(503));
        let get = || {
            run(backstop()
                .args(["get", &server.url("/model.bin"), "-o"])
                .arg(&path)
                .args(["--attempts", "2"])
                .args(QUICK))
        };
        let out = get();
        assert_eq!(out.status.code(), Some(75), "{}", stderr(&out));
        assert!(!path.exists(), "never a half-written file in place");
        assert!(dir.path().join("model.bin.part").exists());

        server.always("/model.bin", Reply::file(data.clone()));
        let out = get();
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert!(std::fs::read(&path).unwrap() == data);
        assert_eq!(
            ranges(&server).last(),
            Some(&Some("bytes=70000-99999".into())),
            "only the rest"
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_fifo_is_written_through_to_its_reader() {
        let server = FaultServer::start();
        let data = body(100_000);
        server.script("/f.bin", [Reply::file(data.clone()).cut_after(30_000)]);
        server.always("/f.bin", Reply::file(data.clone()));
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let reader = {
            let fifo = fifo.clone();
            std::thread::spawn(move || std::fs::read(fifo).unwrap())
        };
        let out = run(backstop()
            .args(["get", &server.url("/f.bin"), "-o"])
            .arg(&fifo)
            .args(QUICK));
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert!(
            reader.join().unwrap() == data,
            "the reader got the body once"
        );
        assert!(
            std::fs::symlink_metadata(&fifo)
                .unwrap()
                .file_type()
                .is_fifo()
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn dev_stdout_is_the_pipe_it_leads_to() {
        let server = FaultServer::start();
        server.always("/f.bin", Reply::file("hello"));
        let out = run(backstop()
            .args(["get", &server.url("/f.bin"), "-o", "/dev/stdout"])
            .args(QUICK));
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert_eq!(stdout(&out), "hello");
    }

    #[test]
    fn a_device_stays_a_device() {
        let server = FaultServer::start();
        server.always("/f.bin", Reply::file(body(50_000)));
        let dir = tempfile::tempdir().unwrap();
        let (null, full) = (dir.path().join("null"), dir.path().join("full"));
        // The tests run as root: a /dev/null and a /dev/full of their own.
        for (path, minor) in [(&null, 3), (&full, 7)] {
            nix::sys::stat::mknod(
                path,
                nix::sys::stat::SFlag::S_IFCHR,
                nix::sys::stat::Mode::from_bits_truncate(0o666),
                nix::sys::stat::makedev(1, minor),
            )
            .unwrap();
        }
        let get = |to: &std::path::Path| {
            run(backstop()
                .args(["get", &server.url("/f.bin"), "-o"])
                .arg(to)
                .args(QUICK))
        };
        let out = get(&null);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let out = get(&full);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains(&format!("backstop: error: cannot write {}", full.display()))
                && err.contains("caused by: No space left on device"),
            "{err}"
        );
        for device in [&null, &full] {
            let kind = std::fs::symlink_metadata(device).unwrap().file_type();
            assert!(kind.is_char_device(), "{}", device.display());
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn a_symlink_keeps_pointing_where_it_did() {
        let server = FaultServer::start();
        let data = body(20_000);
        server.always("/f.bin", Reply::file(data.clone()));
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("blobs")).unwrap();
        let target = dir.path().join("blobs/abc123");
        std::fs::write(&target, "old").unwrap();
        let link = dir.path().join("model.bin");
        std::os::unix::fs::symlink("blobs/abc123", &link).unwrap();
        let out = run(backstop()
            .args(["get", &server.url("/f.bin"), "-o"])
            .arg(&link)
            .args(QUICK));
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert_eq!(
            std::fs::read_link(&link).unwrap(),
            std::path::Path::new("blobs/abc123")
        );
        assert!(std::fs::read(&target).unwrap() == data);
        assert_eq!(
            std::fs::read_dir(dir.path().join("blobs")).unwrap().count(),
            1
        );
    }

    #[test]
    fn a_missing_folder_is_reported_before_sending() {
        let server = FaultServer::start();
        let out = run(backstop()
            .args(["get", &server.url("/x"), "-o", "/nonexistent/dir/file"])
            .args(QUICK));
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert!(
            stderr(&out)
                .contains("cannot write /nonexistent/dir/file: /nonexistent/dir is not a folder"),
            "{}",
            stderr(&out)
        );
        assert!(server.requests().is_empty());
    }

    #[test]
    fn bad_input_is_a_usage_error_and_sends_nothing() {
        let server = FaultServer::start();
        let url = server.url("/x");
        let cases: &[(&[&str], &str)] = &[
            (
                &["get", "ftp://example.com/x"],
                "the scheme must be http or https",
            ),
            (&["get", "not a url"], "invalid URL"),
            (&["get", &url, "-H", "no colon here"], "a header is written"),
            (&["get", &url, "-H", "bad name: v"], "is not a header name"),
            (&["get", &url, "--attempts", "0"], "--attempts"),
            (&["get", &url, "--max-wait=-5s"], "cannot be negative"),
            (&["get", &url, "--deadline", "soon"], "is not a duration"),
            (&["get"], "URL"),
            (&["frobnicate"], "unrecognized subcommand"),
        ];
        for (args, message) in cases {
            let out = run(backstop().args(*args));
            assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
            assert!(stderr(&out).contains(message), "{args:?}: {}", stderr(&out));
        }
        assert!(server.requests().is_empty());
    }

    #[test]
    fn interrupting_exits_130_and_leaves_nothing_behind() {
        let server = FaultServer::start();
        server.always("/slow", Reply::status(503).header("Retry-After", "30"));
        let dir = tempfile::tempdir().unwrap();
        let child = backstop()
            .args(["get", &server.url("/slow"), "-o"])
            .arg(dir.path().join("out.bin"))
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_for(|| server.hits("/slow") >= 1);
        let status = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
        assert!(stderr(&out).contains("backstop: error: interrupted"));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}

mod hub {
    use super::*;

    const PAGE: &str = r#"[
        {"id":"Qwen/Qwen3-8B-GGUF","modelId":"Qwen/Qwen3-8B-GGUF","downloads":152311,"likes":312,"pipeline_tag":"text-generation","createdAt":"2026-04-28T09:12:44.000Z","tags":["gguf"]},
        {"id":"someone/tiny","modelId":"someone/tiny","downloads":7,"likes":0}
    ]"#;

    fn search(server: &FaultServer) -> Command {
        let mut cmd = backstop();
        cmd.env("HF_ENDPOINT", server.url(""))
            .args(["hub", "search"])
            .args(QUICK);
        cmd
    }

    #[test]
    fn prints_a_table() {
        let server = FaultServer::start();
        server.script("/api/models", [Reply::status(503), Reply::json(PAGE)]);
        let out =
            run(search(&server).args(["--search", "gguf", "--sort", "downloads", "--limit", "2"]));
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert_eq!(
            stdout(&out),
            "MODEL               DOWNLOADS  LIKES  TASK             CREATED\n\
             Qwen/Qwen3-8B-GGUF    152,311    312  text-generation  2026-04-28\n\
             someone/tiny                7      0  -                -\n"
        );
        assert!(
            server.requests()[0]
                .uri
                .contains("search=gguf&sort=downloads&direction=-1&limit=2")
        );
    }

    #[test]
    fn prints_one_json_object_per_line_and_sends_the_token() {
        let server = FaultServer::start();
        server.script("/api/models", [Reply::json(PAGE)]);
        let out = run(search(&server).arg("--json").env("HF_TOKEN", "hf_abc123"));
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let lines: Vec<serde_json::Value> = stdout(&out)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["id"], "Qwen/Qwen3-8B-GGUF");
        assert_eq!(lines[0]["tags"][0], "gguf", "fields pass through");
        assert_eq!(
            server.requests()[0].header("authorization"),
            Some("Bearer hf_abc123")
        );
    }

    #[test]
    fn the_token_file_is_read_when_no_variable_is_set() {
        let server = FaultServer::start();
        server.script("/api/models", [Reply::json("[]")]);
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "hf_fromfile\n").unwrap();
        let out = run(search(&server).env("HF_TOKEN_PATH", &token));
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert_eq!(
            server.requests()[0].header("authorization"),
            Some("Bearer hf_fromfile")
        );
    }

    #[test]
    fn skip_on_rate_limit_turns_a_persistent_429_into_an_empty_success() {
        let server = FaultServer::start();
        server.always(
            "/api/models",
            Reply::status(429).header("RateLimit", "\"api\";r=0;t=55"),
        );
        let out =
            run(search(&server).args(["--skip-on-rate-limit", "--max-wait", "30s", "--json"]));
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert_eq!(stdout(&out), "");
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.starts_with("backstop: skipped: rate limited by "),
            "{err}"
        );
        assert!(err.contains("the server asks to wait 55 s"), "{err}");

        let out = run(search(&server).args(["--max-wait", "30s"]));
        assert_eq!(out.status.code(), Some(75), "without the flag it fails");
    }

    #[test]
    fn skip_on_rate_limit_does_not_hide_other_errors() {
        let server = FaultServer::start();
        server.always("/api/models", Reply::status(500));
        let out = run(search(&server).args(["--skip-on-rate-limit", "--attempts", "2"]));
        assert_eq!(out.status.code(), Some(75));
        server.always("/api/models", Reply::status(401));
        let out = run(search(&server).arg("--skip-on-rate-limit"));
        assert_eq!(out.status.code(), Some(1));
        assert!(
            stderr(&out).contains("hint: set HF_TOKEN"),
            "{}",
            stderr(&out)
        );
    }

    #[test]
    fn a_bad_endpoint_is_a_usage_error() {
        let dir = tempfile::tempdir().unwrap();
        for (endpoint, message) in [
            ("ftp://hub.example", "must be an http or https URL"),
            ("hub.example", "is not a URL"),
        ] {
            let d = dir.path().to_str().unwrap();
            for args in [
                &["hub", "search"][..],
                &["pull", "hf://acme/tiny", "--dir", d][..],
            ] {
                let out = run(backstop().env("HF_ENDPOINT", endpoint).args(args));
                assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
                assert!(stderr(&out).contains(message), "{}", stderr(&out));
            }
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn datasets_are_searched_with_their_own_columns() {
        let server = FaultServer::start();
        server.script(
            "/api/datasets",
            [
                Reply::status(429).header("Retry-After", "0"),
                Reply::json(
                    r#"[{"id":"HuggingFaceFW/fineweb","downloads":1234567,"likes":2100,"createdAt":"2024-04-18T00:00:00.000Z"}]"#,
                ),
            ],
        );
        let out = run(search(&server).args(["--datasets", "--search", "fineweb"]));
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert_eq!(
            stdout(&out),
            "DATASET                DOWNLOADS  LIKES  CREATED\n\
             HuggingFaceFW/fineweb  1,234,567  2,100  2024-04-18\n"
        );
        assert_eq!(server.hits("/api/datasets"), 2, "the 429 was retried");
    }

    fn repo_command(server: &FaultServer, args: &[&str]) -> std::process::Output {
        run(backstop()
            .env("HF_ENDPOINT", server.url(""))
            .arg("hub")
            .args(args)
            .args(QUICK))
    }

    #[test]
    fn info_and_files_describe_a_repository_at_a_revision() {
        let server = FaultServer::start();
        let files = [
            HubFile::lfs("model-Q4_K_M.gguf", vec![7u8; 3000]),
            HubFile::git("config.json", &b"{}"[..]),
        ];
        server.hub_repo("models", "org/repo", "v1", "c0ffee", &files, None);
        let listing = "/api/models/org/repo/revision/v1";
        server.script(listing, [Reply::status(503)]);

        let out = repo_command(&server, &["info", "org/repo@v1"]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert_eq!(
            stdout(&out),
            "id             org/repo\n\
             revision       v1\n\
             sha            c0ffee\n\
             last modified  2026-05-02T11:00:00.000Z\n\
             private        no\n\
             gated          no\n\
             downloads      1,234\n\
             likes          5\n\
             files          2\n\
             total size     2.93 KiB (3,002 bytes)\n"
        );
        assert_eq!(server.hits(listing), 2, "the 503 was retried");

        let out = repo_command(&server, &["files", "org/repo@v1"]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let sha = files[0].sha256();
        assert_eq!(
            stdout(&out),
            format!(
                "PATH                SIZE  LFS SHA256\n\
                 model-Q4_K_M.gguf  3,000  {sha}\n\
                 config.json            2  -\n"
            )
        );
        let out = repo_command(&server, &["files", "org/repo@v1", "--json"]);
        let lines: Vec<serde_json::Value> = stdout(&out)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["path"], "model-Q4_K_M.gguf");
        assert_eq!(lines[0]["size"], 3000);
        assert_eq!(lines[0]["sha256"], sha);
        assert_eq!(lines[1]["sha256"], serde_json::Value::Null);
        assert_eq!(lines[1]["blob_id"], files[1].blob_id());
        let out = repo_command(&server, &["info", "org/repo@v1", "--json"]);
        let info: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
        assert_eq!(info["sha"], "c0ffee");

        // A dataset, at its default branch.
        server.hub_repo("datasets", "org/data", "main", "d00d", &files[1..], None);
        let out = repo_command(&server, &["files", "datasets/org/data"]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert!(stdout(&out).contains("config.json"), "{}", stdout(&out));
        assert!(server.hits("/api/datasets/org/data") == 1);

        // A repository that is not there, and one that is not a name.
        let out = repo_command(&server, &["info", "org/missing", "--attempts", "1"]);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        let before = server.requests().len();
        for bad in ["org", "org/na me", "../etc", "org/repo@"] {
            let out = repo_command(&server, &["info", bad]);
            assert_eq!(out.status.code(), Some(2), "{bad}: {}", stderr(&out));
        }
        assert_eq!(
            server.requests().len(),
            before,
            "nothing sent for a bad name"
        );
    }

    #[test]
    fn a_malformed_hub_source_is_a_usage_error_and_sends_nothing() {
        let server = FaultServer::start();
        let dir = tempfile::tempdir().unwrap();
        for (source, message) in [
            ("hf://acme/ti ny", "is not a repository id"),
            ("hf://../etc", "is not a repository id"),
            ("hf://datasets/acme/../../etc", "is not a repository id"),
            ("hf://acme/tiny@main%0A", "is not a revision"),
        ] {
            let out = run(backstop()
                .env("HF_ENDPOINT", server.url(""))
                .args(["pull", source, "--dir"])
                .arg(dir.path()));
            assert_eq!(out.status.code(), Some(2), "{source}: {}", stderr(&out));
            assert!(stderr(&out).contains(message), "{source}: {}", stderr(&out));
        }
        assert!(server.requests().is_empty());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}

/// The client commands against a stand-in coordinator: how its answers
/// become exit codes.
mod ops {
    use super::*;

    fn submit(server: &FaultServer) -> Command {
        let mut cmd = backstop();
        cmd.env("BACKSTOP_TOKEN", "tok-test")
            .env("BACKSTOP_SERVER", server.url(""))
            .args(["ops", "submit", "install", "--type", "gpu"]);
        cmd
    }

    #[test]
    fn input_the_coordinator_refuses_is_a_usage_error() {
        let server = FaultServer::start();
        let refusal = r#"{"error":"no node of type \"gpu\" handles kind \"install\""}"#;
        for status in [400, 422] {
            server.script("/v1/ops", [Reply::status(status).body(refusal)]);
            let out = run(&mut submit(&server));
            assert_eq!(
                out.status.code(),
                Some(2),
                "HTTP {status}: {}",
                stderr(&out)
            );
            assert!(
                stderr(&out).contains("the coordinator refused: no node of type \"gpu\""),
                "{}",
                stderr(&out)
            );
        }
        assert_eq!(server.hits("/v1/ops"), 2, "never retried");
    }

    #[test]
    fn an_unknown_node_is_a_failure_and_an_outage_is_temporary() {
        let server = FaultServer::start();
        server.script(
            "/v1/ops",
            [Reply::status(404).body(r#"{"error":"there is no node named \"gpu-9\""}"#)],
        );
        assert_eq!(run(&mut submit(&server)).status.code(), Some(1));
        server.always("/v1/ops", Reply::status(503));
        let out = run(&mut submit(&server));
        assert_eq!(out.status.code(), Some(75), "{}", stderr(&out));
        // Every try carried the one key the hint names.
        let keys: Vec<String> = server
            .requests()
            .iter()
            .filter_map(|r| r.header("idempotency-key").map(str::to_owned))
            .collect();
        assert_eq!(keys.len(), 4, "the 404, then three tries: {keys:?}");
        assert!(
            keys[1..].iter().all(|k| *k == keys[1]) && keys[0] != keys[1],
            "{keys:?}"
        );
        let key = keys[1].trim_matches('"');
        assert_eq!(key.len(), 32, "128 bits, hex: {key}");
        assert!(
            stderr(&out).contains(&format!("--idempotency-key {key}")),
            "{}",
            stderr(&out)
        );
        let nobody = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed = format!("http://{}", nobody.local_addr().unwrap());
        drop(nobody);
        let out = run(submit(&server).env("BACKSTOP_SERVER", &closed));
        assert_eq!(out.status.code(), Some(75), "{}", stderr(&out));
    }

    #[test]
    fn submit_from_a_file_names_the_refused_line_and_an_outage_names_the_key_to_rerun_with() {
        let server = FaultServer::start();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ops.jsonl");
        std::fs::write(
            &file,
            "# two\n{\"kind\":\"install\",\"type\":\"gpu\"}\n\n{\"kind\":\"delete\",\"type\":\"gpu\",\"idempotency_key\":\"mine\"}\n",
        )
        .unwrap();
        let from = || {
            let mut cmd = backstop();
            cmd.env("BACKSTOP_TOKEN", "tok-test")
                .env("BACKSTOP_SERVER", server.url(""))
                .args(["ops", "submit", "--from"])
                .arg(&file);
            cmd
        };
        // The coordinator refuses the batch's operation 1: line 4.
        let refusal = r#"{"error":"operation 1 of the batch (from 0): no node of type \"gpu\" handles kind \"delete\"; nothing of the batch was submitted","index":1}"#;
        server.script("/v1/ops/batch", [Reply::status(422).body(refusal)]);
        let out = run(&mut from());
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(
            stderr(&out).contains(&format!(
                "{} line 4: the coordinator refused it: no node of type \"gpu\" handles kind \"delete\"",
                file.display()
            )),
            "{}",
            stderr(&out)
        );
        // An outage: temporary, every try the same body, and the key that
        // makes a rerun answer what was made.
        server.always("/v1/ops/batch", Reply::status(503));
        let out = run(&mut from());
        assert_eq!(out.status.code(), Some(75), "{}", stderr(&out));
        let bodies: Vec<serde_json::Value> = server
            .requests()
            .iter()
            .skip(1)
            .map(|r| serde_json::from_slice(&r.body).unwrap())
            .collect();
        assert_eq!(bodies.len(), 3, "three tries");
        assert!(bodies.iter().all(|b| *b == bodies[0]));
        let key = bodies[0][0]["idempotency_key"].as_str().unwrap();
        assert_eq!(
            bodies[0][1]["idempotency_key"], "mine",
            "a line's own key stays"
        );
        let base = key
            .strip_suffix("-2")
            .unwrap_or_else(|| panic!("line 2: {key}"));
        assert!(
            stderr(&out).contains(&format!("--idempotency-key {base}")),
            "{}",
            stderr(&out)
        );
    }

    #[test]
    fn a_limit_of_0_is_refused_by_every_listing() {
        for args in [
            &["ops", "list", "--limit", "0"][..],
            &["hub", "search", "--limit", "0"][..],
        ] {
            let out = run(backstop()
                .args(args)
                .env("BACKSTOP_SERVER", "http://127.0.0.1:9"));
            assert_eq!(out.status.code(), Some(2), "{args:?}");
            assert!(
                stderr(&out).contains("the limit is 1 to 100000, not 0"),
                "{args:?}: {}",
                stderr(&out)
            );
        }
    }
}

#[test]
fn completions_are_generated() {
    for shell in ["bash", "zsh", "fish"] {
        let out = run(backstop().args(["completions", shell]));
        assert_eq!(out.status.code(), Some(0));
        assert!(stdout(&out).contains("backstop"), "{shell}");
    }
}

#[test]
fn the_quick_start_demo_runs_offline() {
    let out = run(backstop().arg("demo"));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("Qwen/Qwen3-8B-GGUF"));
    let err = stderr(&out);
    assert!(err.contains(": HTTP 429; retry 1 of 4 in 1 s"), "{err}");
    assert!(
        err.contains("the listing came through after 4 requests"),
        "{err}"
    );
}

/// Polls `done` until it holds; fails the test after 20 s.
fn wait_for(done: impl Fn() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out waiting"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
