//! `backstop pull` as users run it: exit codes, progress lines, the
//! summary, bad input, the Hub, and Ctrl-C followed by a resume.

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use backstop_faultserver::{FaultServer, HubFile, Nginx, Reply, cdn_path};

mod common;

use common::{QUICK, backstop, run, stderr};

fn data(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
}

fn sha(bytes: &[u8]) -> String {
    HubFile::lfs("x", bytes.to_vec()).sha256()
}

#[test]
fn pulls_through_faults_checks_hashes_and_exits_0() {
    let server = FaultServer::start();
    let (a, b) = (data(50_000), data(20_000));
    server.script(
        "/a.bin",
        [Reply::status(503), Reply::file(a.clone()).cut_after(20_000)],
    );
    server.always("/a.bin", Reply::file(a.clone()));
    server.always("/b.bin", Reply::file(b.clone()));
    let dir = tempfile::tempdir().unwrap();
    let out = run(backstop()
        .args([
            "pull",
            &server.url("/a.bin"),
            &server.url("/b.bin"),
            "--dir",
        ])
        .arg(dir.path())
        .args(["--sha256", &sha(&a), "--sha256", &sha(&b)])
        .args(QUICK));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(std::fs::read(dir.path().join("a.bin")).unwrap(), a);
    assert_eq!(std::fs::read(dir.path().join("b.bin")).unwrap(), b);
    assert!(
        err.contains("backstop: a.bin: retry 1 · HTTP 503 · waiting "),
        "{err}"
    );
    assert!(err.contains("resuming at byte 20000"), "{err}");
    assert!(
        err.contains("backstop: pulled 2 of 2 files: 2 downloaded (fetched "),
        "{err}"
    );
    assert!(
        err.contains("backstop: a.bin: done, 48.83 KiB, sha256 ok"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        2,
        "no partial files left"
    );

    // Again: nothing is fetched.
    let before = server.requests().len();
    let out = run(backstop()
        .args([
            "pull",
            &server.url("/a.bin"),
            &server.url("/b.bin"),
            "--dir",
        ])
        .arg(dir.path())
        .args(["--sha256", &sha(&a), "--sha256", &sha(&b)]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("2 already there"), "{}", stderr(&out));
    let again: Vec<String> = server.requests()[before..]
        .iter()
        .map(|r| r.method.clone())
        .collect();
    assert_eq!(
        again,
        ["HEAD", "HEAD"],
        "a HEAD for the size, then size and hash checked on disk"
    );
}

/// `--max-connections-per-host` bounds the requests in flight to one
/// server whatever `--jobs` asks for, as the server counts them (its
/// replies delayed so that requests overlap); a looser bound lets more
/// through, the witness that the count can show a breach.
#[test]
fn max_connections_per_host_bounds_what_jobs_ask_for() {
    let peak = |bound: &str| {
        let server = FaultServer::start();
        let mut args = vec!["pull".to_owned()];
        for i in 0..6 {
            let path = format!("/f{i}.bin");
            server.always(
                &path,
                Reply::file(data(10_000 + i)).delay(Duration::from_millis(50)),
            );
            args.push(server.url(&path));
        }
        let dir = tempfile::tempdir().unwrap();
        args.extend(["--jobs", "6", "--max-connections-per-host", bound].map(str::to_owned));
        let out = run(backstop().args(&args).arg("--dir").arg(dir.path()));
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        for i in 0..6 {
            assert_eq!(
                std::fs::read(dir.path().join(format!("f{i}.bin"))).unwrap(),
                data(10_000 + i)
            );
        }
        server.peak_concurrent()
    };
    let bounded = peak("2");
    assert!(bounded <= 2, "{bounded} requests at once, bound 2");
    let loose = peak("6");
    assert!(loose > 2, "only {loose} requests at once with a bound of 6");
}

/// On a pipe, a file that simply arrives gets exactly one line, and so
/// does one found in place (never "resuming at X of X"); the total comes
/// last, its counts agreeing with their nouns.
#[test]
fn a_file_that_arrives_gets_exactly_one_line_on_a_pipe() {
    let server = FaultServer::start();
    let (a, b) = (data(50_000), data(20_000));
    server.always("/a.bin", Reply::file(a.clone()));
    server.always("/b.bin", Reply::file(b.clone()));
    let dir = tempfile::tempdir().unwrap();
    let out = run(backstop()
        .args([
            "pull",
            &server.url("/a.bin"),
            &server.url("/b.bin"),
            "--dir",
        ])
        .arg(dir.path()));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let mut lines: Vec<&str> = err.lines().collect();
    assert_eq!(
        lines.pop(),
        Some("backstop: pulled 2 of 2 files: 2 downloaded (fetched 68.36 KiB)"),
        "{err}"
    );
    lines.sort_unstable();
    assert_eq!(
        lines,
        [
            "backstop: a.bin: done, 48.83 KiB",
            "backstop: b.bin: done, 19.53 KiB"
        ],
        "{err}"
    );

    let out = run(backstop()
        .args(["pull", &server.url("/a.bin"), "--dir"])
        .arg(dir.path())
        .args(["--sha256", &sha(&a)]));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(
        err.lines().collect::<Vec<_>>(),
        [
            "backstop: a.bin: already there, 48.83 KiB",
            "backstop: pulled 1 of 1 file: 0 downloaded, 1 already there (fetched 0 B)"
        ],
        "{err}"
    );
}

#[test]
fn exit_75_when_every_failure_is_temporary_and_1_otherwise() {
    let server = FaultServer::start();
    server.always("/ok.bin", Reply::file(data(1000)));
    server.always("/busy.bin", Reply::status(503));
    server.always("/gone.bin", Reply::status(404));
    let dir = tempfile::tempdir().unwrap();
    let out = run(backstop()
        .args([
            "pull",
            &server.url("/ok.bin"),
            &server.url("/busy.bin"),
            "--dir",
        ])
        .arg(dir.path())
        .args(["--attempts", "2"])
        .args(QUICK));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(75), "{err}");
    assert!(err.contains("  busy.bin: failed: "), "{err}");
    assert!(err.contains("is overloaded: 2 attempts over"), "{err}");
    assert!(
        err.contains("backstop: error: 1 of 2 files did not arrive"),
        "{err}"
    );
    assert!(
        err.contains("hint: every failure was temporary; run the same command again"),
        "{err}"
    );
    assert!(
        dir.path().join("ok.bin").exists(),
        "one failure never cancels another file"
    );

    let out = run(backstop()
        .args([
            "pull",
            &server.url("/busy.bin"),
            &server.url("/gone.bin"),
            "--dir",
        ])
        .arg(dir.path())
        .args(["--attempts", "2"])
        .args(QUICK));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("caused by: HTTP 404 Not Found"),
        "{}",
        stderr(&out)
    );
}

/// The minimum progress is measured across reconnections: a server that
/// cuts every connection after 1 KiB moves far less than 100 KiB in 15 s,
/// and the file fails as temporary once the attempts are spent, instead of
/// reconnecting forever. (Two 15 s windows: about 30 s of real time.)
#[test]
fn a_server_cutting_every_connection_after_1_kib_ends_75_below_the_minimum_progress() {
    let server = FaultServer::start();
    server.always("/f.bin", Reply::file(data(1 << 20)).cut_after(1024));
    let dir = tempfile::tempdir().unwrap();
    let start = Instant::now();
    let out = run(backstop()
        .args(["pull", &server.url("/f.bin"), "--dir"])
        .arg(dir.path())
        .args(["--min-progress", "100KiB/15s", "--attempts", "2"])
        .args(["--base-delay", "1s", "--max-delay", "1s"]));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(75), "{err}");
    assert!(err.contains("  f.bin: failed: 127.0.0.1:"), "{err}");
    assert!(err.contains("kept failing: 2 attempts over "), "{err}");
    assert!(
        err.contains("; caused by: below the minimum progress: only "),
        "{err}"
    );
    assert!(err.contains("hint: every failure was temporary"), "{err}");
    assert!(start.elapsed() < Duration::from_secs(60), "{err}");
    assert!(server.hits("/f.bin") > 2, "{err}");
}

/// Without a hash, a file in place of the right size is not trusted: it
/// is fetched again unless the server answers the validators recorded
/// when it arrived with 304. `--skip-existing` trusts the size.
#[test]
fn a_file_of_the_right_size_is_kept_only_when_proven_current() {
    let server = FaultServer::start();
    let body = data(5000);
    server.always("/f.bin", Reply::file(body.clone()).header("ETag", "\"v1\""));
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("f.bin");
    let pull = |extra: &[&str]| {
        run(backstop()
            .args(["pull", &server.url("/f.bin"), "--dir"])
            .arg(dir.path())
            .args(extra))
    };
    std::fs::write(&dest, vec![0u8; 5000]).unwrap();
    let out = pull(&["--skip-existing"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("f.bin: already there"),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read(&dest).unwrap(), vec![0u8; 5000]);

    let out = pull(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("f.bin: done, "), "{}", stderr(&out));
    assert_eq!(std::fs::read(&dest).unwrap(), body);
    assert!(
        dir.path().join(".backstop/f.bin.json").exists(),
        "the validators are kept out of sight"
    );

    server.script("/f.bin", [Reply::status(304)]);
    let before = server.requests().len();
    let out = pull(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("f.bin: already there"),
        "{}",
        stderr(&out)
    );
    let methods: Vec<String> = server.requests()[before..]
        .iter()
        .map(|r| format!("{} {:?}", r.method, r.header("if-none-match")))
        .collect();
    assert_eq!(methods, ["HEAD Some(\"\\\"v1\\\"\")"]);
}

#[test]
fn bad_input_is_a_usage_error_and_changes_nothing() {
    let server = FaultServer::start();
    let url = server.url("/x.bin");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let hex = "a".repeat(64);
    let cases: &[(&[&str], &str)] = &[
        (&["pull"], "SOURCE"),
        (
            &["pull", "ftp://example.com/x", "-d", d],
            "a source is an http(s) URL or hf://ORG/REPO",
        ),
        (&["pull", "hf://org", "-d", d], "expected hf://ORG/REPO"),
        (
            &["pull", "https://example.com/", "-d", d],
            "does not end in a file name",
        ),
        (
            &["pull", &url, "-d", d, "--sha256", "abc"],
            "is not a sha256 digest",
        ),
        (&["pull", &url, "-d", d, "--jobs", "0"], "--jobs"),
        (
            &["pull", &url, "-d", d, "--max-connections-per-host", "0"],
            "--max-connections-per-host",
        ),
        (
            &["pull", &url, "-d", d, "--min-progress", "fast"],
            "is not SIZE/DURATION",
        ),
        (
            &["pull", &url, "-d", d, "-H", "no colon"],
            "a header is written",
        ),
        (
            &["pull", &url, "-d", d, "--sha256", &hex, "--sha256", &hex],
            "2 sha256 digests for 1 URL: give one per URL",
        ),
        (&["pull", &url, &url, "-d", d], "would both be written to"),
    ];
    for (args, message) in cases {
        let out = run(backstop().args(*args));
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(message), "{args:?}: {}", stderr(&out));
    }
    assert!(server.requests().is_empty());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn hf_sources_come_from_the_hub_and_the_token_never_shows() {
    let server = FaultServer::start();
    let token = "hf_NeverPrintThisToken1234567890";
    let files = [
        HubFile::lfs("model-Q4_K_M.gguf", data(40_000)),
        HubFile::lfs("model-Q8_0.gguf", data(60_000)),
        HubFile::git("config.json", &b"{}"[..]),
    ];
    server.hub_repo("models", "org/repo", "main", "c0ffee", &files, None);
    let dir = tempfile::tempdir().unwrap();
    let out = run(backstop()
        .env("HF_ENDPOINT", server.url(""))
        .env("HF_TOKEN", token)
        .args(["-vv", "pull", "hf://org/repo/*Q4_K_M*", "--dir"])
        .arg(dir.path())
        .args(QUICK));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(
        std::fs::read(dir.path().join("model-Q4_K_M.gguf")).unwrap(),
        data(40_000)
    );
    assert!(!dir.path().join("model-Q8_0.gguf").exists());
    assert!(!err.contains(token) && !err.contains("NeverPrint"), "{err}");

    // A refused token: the message says so, and does not repeat it.
    let refusing = FaultServer::start();
    refusing.always(
        "/api/models/org/repo/revision/main",
        Reply::status(401).body(format!(r#"{{"error":"bad token {token}"}}"#)),
    );
    let out = run(backstop()
        .env("HF_ENDPOINT", refusing.url(""))
        .env("HF_TOKEN", token)
        .args(["-vv", "pull", "hf://org/repo", "--dir"])
        .arg(dir.path()));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("refused the credentials") && err.contains("hint: set HF_TOKEN"),
        "{err}"
    );
    assert!(!err.contains("NeverPrint"), "{err}");
}

#[test]
fn an_unsafe_name_in_a_listing_is_refused_and_nothing_is_written() {
    let server = FaultServer::start();
    let files = [
        HubFile::lfs("ok.bin", data(10)),
        HubFile::lfs("/etc/cron.d/x", data(10)),
    ];
    server.hub_repo("models", "org/evil", "main", "e1", &files, None);
    let dir = tempfile::tempdir().unwrap();
    let out = run(backstop()
        .env("HF_ENDPOINT", server.url(""))
        .args(["pull", "hf://org/evil", "--dir"])
        .arg(dir.path()));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(
            "names a file \"/etc/cron.d/x\" that cannot be written safely: it is an absolute path"
        ),
        "{err}"
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn ctrl_c_keeps_the_partial_file_and_the_next_run_resumes_it() {
    let root = tempfile::tempdir().unwrap();
    let body = data(3 << 20);
    std::fs::write(root.path().join("big.bin"), &body).unwrap();
    let nginx = Nginx::start(root.path());
    let dir = tempfile::tempdir().unwrap();
    let part = dir.path().join("big.bin.part");
    // nginx serves requests with X-Slow at 1 MiB/s.
    let child = backstop()
        .args(["pull", &nginx.url("/big.bin"), "-H", "X-Slow: 1", "--dir"])
        .arg(dir.path())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while std::fs::metadata(&part).map_or(0, |m| m.len()) < 1 << 20 {
        assert!(start.elapsed() < Duration::from_secs(20), "no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(
        err.contains("backstop: stopping; partial files are kept"),
        "{err}"
    );
    assert!(err.contains("  big.bin: interrupted, "), "{err}");
    assert!(
        err.contains("hint: partial files are kept; run the same command again to resume"),
        "{err}"
    );
    let have = std::fs::metadata(&part).unwrap().len();
    assert!(have >= 1 << 20, "{have}");
    assert!(dir.path().join("big.bin.part.json").exists());

    let out = run(backstop()
        .args(["pull", &nginx.url("/big.bin"), "--dir"])
        .arg(dir.path())
        .args(["--sha256", &sha(&body)]));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("big.bin: resuming at "), "{err}");
    assert_eq!(std::fs::read(dir.path().join("big.bin")).unwrap(), body);
    assert!(nginx.access_log().contains("\"GET /big.bin HTTP/1.1\" 206"));
}

#[test]
fn hf_sources_go_to_the_hugging_face_cache_unless_a_dir_is_given() {
    let hub = FaultServer::start();
    let cdn = FaultServer::start();
    let files = [
        HubFile::lfs("sub/w.bin", data(30_000)),
        HubFile::git("config.json", &b"{}"[..]),
    ];
    hub.hub_repo("models", "org/repo", "main", "c0ffee", &files, Some(&cdn));
    let home = tempfile::tempdir().unwrap();
    // HF_HUB_CACHE, else $HF_HOME/hub, as huggingface_hub has it.
    let out = run(backstop()
        .env_remove("HF_HUB_CACHE")
        .env("HF_HOME", home.path().join("hf"))
        .env("HF_ENDPOINT", hub.url(""))
        .args(["pull", "hf://org/repo"]));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let snapshot = home
        .path()
        .join("hf/hub/models--org--repo/snapshots/c0ffee");
    assert!(
        err.contains(&format!(
            "in the Hugging Face cache: {}",
            snapshot.display()
        )),
        "{err}"
    );
    assert_eq!(
        std::fs::read(snapshot.join("sub/w.bin")).unwrap(),
        data(30_000)
    );
    assert_eq!(std::fs::read(snapshot.join("config.json")).unwrap(), b"{}");

    // Again: every blob is there, nothing is fetched.
    let cdn_before = cdn.requests().len();
    let out = run(backstop()
        .env("HF_HUB_CACHE", home.path().join("hf/hub"))
        .env("HF_ENDPOINT", hub.url(""))
        .args(["pull", "hf://org/repo", "--cache"]));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("2 already there"), "{err}");
    assert_eq!(cdn.requests().len(), cdn_before);
}

#[test]
fn a_run_that_would_split_between_the_cache_and_a_folder_is_refused() {
    let server = FaultServer::start();
    let cache = tempfile::tempdir().unwrap();
    let url = server.url("/a.bin");
    let cases: &[(&[&str], &str)] = &[
        (
            &["pull", "hf://org/repo", &url],
            "cannot go to the Hugging Face cache: it holds hf:// sources only",
        ),
        (
            &["pull", &url, "--cache"],
            "cannot go to the Hugging Face cache: it holds hf:// sources only",
        ),
        (
            &["pull", "hf://org/repo", "--cache", "--dir", "x"],
            "cannot be used with",
        ),
    ];
    for (args, message) in cases {
        let out = run(backstop()
            .env("HF_HUB_CACHE", cache.path())
            .env("HF_ENDPOINT", server.url(""))
            .args(*args));
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(message), "{args:?}: {err}");
    }
    assert!(server.requests().is_empty());
    assert_eq!(std::fs::read_dir(cache.path()).unwrap().count(), 0);
}

#[test]
fn two_pulls_of_the_same_blob_at_once_fetch_it_once_and_both_succeed() {
    let hub = FaultServer::start();
    let cdn = FaultServer::start();
    let weights = HubFile::lfs("weights.bin", data(1 << 20));
    hub.hub_repo(
        "models",
        "org/repo",
        "main",
        "c0ffee",
        std::slice::from_ref(&weights),
        Some(&cdn),
    );
    // The first pull's download trickles, so that the second one comes
    // while the first holds the blob's lock.
    let blob_path = cdn_path(&weights.sha256());
    cdn.script(
        &blob_path,
        [Reply::file(weights.bytes.clone()).trickle(64 << 10, Duration::from_millis(150))],
    );
    let cache = tempfile::tempdir().unwrap();
    let pull = || {
        backstop()
            .env("HF_HUB_CACHE", cache.path())
            .env("HF_ENDPOINT", hub.url(""))
            .args(["pull", "hf://org/repo"])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let first = pull();
    let start = Instant::now();
    while cdn.hits(&blob_path) == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the first pull never asked"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut second = pull();
    let mut said = String::new();
    let mut lines = std::io::BufReader::new(second.stderr.take().unwrap()).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        said.push_str(&line);
        said.push('\n');
        if line.contains("waiting for its lock") {
            break;
        }
    }
    assert!(
        said.contains("weights.bin: another download is writing this blob"),
        "{said}"
    );
    let first = first.wait_with_output().unwrap();
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    let second = second.wait().unwrap();
    let (first_err, second_err) = (stderr(&first), rest.join("\n"));
    assert_eq!(first.status.code(), Some(0), "{first_err}");
    assert_eq!(second.code(), Some(0), "{said}{second_err}");
    assert!(first_err.contains("1 downloaded"), "{first_err}");
    assert!(second_err.contains("1 already there"), "{second_err}");
    let gets = cdn.requests().iter().filter(|r| r.method == "GET").count();
    assert_eq!(gets, 1, "the blob was fetched once");
    let blobs = cache.path().join("models--org--repo/blobs");
    assert_eq!(
        std::fs::read(blobs.join(weights.sha256())).unwrap(),
        weights.bytes
    );
    assert_eq!(
        std::fs::read_dir(&blobs).unwrap().count(),
        1,
        "no partial file left"
    );
}

#[test]
fn the_cache_is_found_where_huggingface_hub_looks() {
    let hub = FaultServer::start();
    let files = [HubFile::git("config.json", &b"{}"[..])];
    hub.hub_repo("models", "org/repo", "main", "c0ffee", &files, None);
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let xdg = h.join("xdg").display().to_string();
    let cases = [
        (Some(("HF_HUB_CACHE", "~/hc")), h.join("hc")),
        (Some(("HUGGINGFACE_HUB_CACHE", "~/old")), h.join("old")),
        (Some(("HF_HOME", "~/hf")), h.join("hf/hub")),
        (
            Some(("XDG_CACHE_HOME", xdg.as_str())),
            h.join("xdg/huggingface/hub"),
        ),
        (None, h.join(".cache/huggingface/hub")),
    ];
    for (var, root) in cases {
        let mut cmd = backstop();
        cmd.env_remove("HF_HUB_CACHE")
            .env("HOME", h)
            .env("HF_ENDPOINT", hub.url(""))
            .args(["pull", "hf://org/repo"]);
        if let Some((name, value)) = var {
            cmd.env(name, value);
        }
        let out = run(&mut cmd);
        assert_eq!(out.status.code(), Some(0), "{var:?}: {}", stderr(&out));
        let pointer = root.join("models--org--repo/snapshots/c0ffee/config.json");
        assert_eq!(std::fs::read(&pointer).unwrap(), b"{}", "{var:?}");
    }
}
