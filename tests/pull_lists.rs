//! `backstop pull` fed from a list (`-i`), checked against a sha256sum
//! list (`--sha256sums`), reporting in JSON Lines (`--json`) and held to
//! one rate (`--limit-rate`), as scripts run it.

use std::process::Output;
use std::time::{Duration, Instant};

use backstop_faultserver::{FaultServer, HubFile, Nginx, Reply};

mod common;

use common::{QUICK, backstop, run, run_with_stdin, stderr, stdout};

fn data(n: usize, seed: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 251 + seed) as u8).collect()
}

fn sha(bytes: &[u8]) -> String {
    HubFile::lfs("x", bytes.to_vec()).sha256()
}

/// Every line of stdout, each one JSON object.
fn json_lines(out: &Output) -> Vec<serde_json::Value> {
    stdout(out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

/// The line of the file whose path ends with `name`.
fn line_of<'a>(lines: &'a [serde_json::Value], name: &str) -> &'a serde_json::Value {
    lines
        .iter()
        .find(|l| l["type"] == "file" && l["path"].as_str().is_some_and(|p| p.ends_with(name)))
        .unwrap_or_else(|| panic!("no line for {name}: {lines:?}"))
}

/// A list read from standard input, with comments, blank lines, digests
/// and places, against a real nginx; the JSON Lines say what happened to
/// each file, and the same list again finds every file in place.
#[test]
fn a_list_on_stdin_places_and_checks_each_file_and_json_tells_each_end() {
    let root = tempfile::tempdir().unwrap();
    let (a, b, c) = (data(70_000, 1), data(30_000, 2), data(5_000, 3));
    std::fs::write(root.path().join("a.bin"), &a).unwrap();
    std::fs::write(root.path().join("b.bin"), &b).unwrap();
    std::fs::write(root.path().join("c.bin"), &c).unwrap();
    let nginx = Nginx::start(root.path());
    let list = format!(
        "# the nightly set\n\
         \n\
         {}   sha256={}\n\
         {} out=weights/b-renamed.bin sha256={}  # renamed\n\
         \t{}\n",
        nginx.url("/a.bin"),
        sha(&a),
        nginx.url("/b.bin"),
        sha(&b),
        nginx.url("/c.bin"),
    );
    let dir = tempfile::tempdir().unwrap();
    let pull = || {
        let mut cmd = backstop();
        cmd.args(["pull", "-i", "-", "--json", "--dir"])
            .arg(dir.path());
        cmd
    };
    let out = run_with_stdin(&mut pull(), list.as_bytes());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(std::fs::read(dir.path().join("a.bin")).unwrap(), a);
    assert_eq!(
        std::fs::read(dir.path().join("weights/b-renamed.bin")).unwrap(),
        b
    );
    assert!(!dir.path().join("b.bin").exists());
    assert_eq!(std::fs::read(dir.path().join("c.bin")).unwrap(), c);

    let lines = json_lines(&out);
    assert_eq!(lines.len(), 4, "three files and a total: {lines:?}");
    let b_line = line_of(&lines, "weights/b-renamed.bin");
    assert_eq!(b_line["source"], nginx.url("/b.bin"));
    assert_eq!(
        b_line["path"],
        dir.path()
            .join("weights/b-renamed.bin")
            .display()
            .to_string()
    );
    assert_eq!(b_line["outcome"], "downloaded");
    assert_eq!(b_line["size"], 30_000);
    assert_eq!(b_line["sha256"], sha(&b));
    assert_eq!(b_line["attempts"], 1);
    assert_eq!(b_line["fetched"], 30_000);
    assert_eq!(
        line_of(&lines, "c.bin")["sha256"],
        serde_json::Value::Null,
        "no digest was given, none was checked"
    );
    let total = lines.last().unwrap();
    assert_eq!(total["type"], "total");
    assert_eq!(total["files"], 3, "{total}");
    assert_eq!(total["downloaded"], 3, "{total}");
    assert_eq!(total["fetched"], 105_000, "{total}");
    // The human lines stay on stderr.
    assert!(
        stderr(&out).contains("backstop: pulled 3 of 3 files: 3 downloaded"),
        "{}",
        stderr(&out)
    );

    let out = run_with_stdin(&mut pull(), list.as_bytes());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let lines = json_lines(&out);
    for name in ["a.bin", "weights/b-renamed.bin", "c.bin"] {
        let line = line_of(&lines, name);
        assert_eq!(line["outcome"], "already_there", "{line}");
        assert_eq!(line["fetched"], 0, "{line}");
    }
}

/// A list line that cannot be read, or that would write outside --dir,
/// is a usage error naming its line: nothing is fetched or written.
#[test]
fn a_bad_list_line_is_named_and_nothing_is_fetched() {
    let server = FaultServer::start();
    server.always("/a.bin", Reply::file(data(1000, 1)));
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), dir.path().join("link")).unwrap();
    let good = server.url("/a.bin");
    let cases = [
        (
            format!("{good} out=../escape.bin"),
            "line 2: out=../escape.bin: it climbs out of the directory with ..",
        ),
        (
            format!("{good} out=/etc/passwd"),
            "line 2: out=/etc/passwd: it is an absolute path",
        ),
        (
            format!("{good} out=link/x.bin"),
            "line 2: out=link/x.bin: a folder on its way is a symbolic link",
        ),
        (
            format!("{good} sha256=abc"),
            "line 2: sha256=: \"abc\" is not a sha256 digest",
        ),
        (format!("{good} mirror=x"), "line 2: unknown key \"mirror\""),
        (
            "ftp://example.com/x.bin".to_owned(),
            "line 2: \"ftp://example.com/x.bin\" is not a source",
        ),
        (
            "hf://org/repo out=x".to_owned(),
            "line 2: sha256= and out= name one file: give them to a URL",
        ),
    ];
    for (bad, want) in cases {
        let list = dir.path().join("list.txt");
        std::fs::write(&list, format!("{good}\n{bad}\n")).unwrap();
        let out = run(backstop()
            .args(["pull", "--dir"])
            .arg(dir.path())
            .arg("--input-file")
            .arg(&list));
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{bad}: {err}");
        assert!(
            err.contains(&format!("error: {}: {want}", list.display())),
            "{bad}: {err}"
        );
        assert!(err.contains("nothing was fetched"), "{err}");
    }
    assert!(server.requests().is_empty(), "{:?}", server.requests());
    let mut left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(left, ["link", "list.txt"]);
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);

    let out = run(backstop().args(["pull", "-i", "/nonexistent/list.txt"]));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("reading the pull list /nonexistent/list.txt"),
        "{}",
        stderr(&out)
    );
}

/// `--sha256sums` matches each file by its path under --dir, whatever
/// order the sources come in: a listed file is checked (a corrupted copy
/// is fetched again), a wrong digest fails that file alone and leaves
/// nothing in its place, and a URL the list does not name is refused
/// before anything is sent.
#[test]
fn sha256sums_check_each_file_by_its_path_under_dir() {
    let server = FaultServer::start();
    let (a, b, c) = (data(40_000, 1), data(20_000, 2), data(10_000, 3));
    server.script("/a.bin", [Reply::file(a.clone()).corrupt_at(123)]);
    server.always("/a.bin", Reply::file(a.clone()));
    server.always("/b.bin", Reply::file(b.clone()));
    server.always("/c.bin", Reply::file(c.clone()));
    let dir = tempfile::tempdir().unwrap();
    let lists = tempfile::tempdir().unwrap();
    let sums = lists.path().join("SHA256SUMS");
    std::fs::write(
        &sums,
        format!(
            "{}  ./sub/b.bin\n{} *a.bin\n{}  c.bin\n",
            sha(&b),
            sha(&a),
            sha(b"not c")
        ),
    )
    .unwrap();
    let list = lists.path().join("list.txt");
    std::fs::write(&list, format!("{} out=sub/b.bin\n", server.url("/b.bin"))).unwrap();
    let out = run(backstop()
        .args([
            "pull",
            &server.url("/a.bin"),
            &server.url("/c.bin"),
            "--dir",
        ])
        .arg(dir.path())
        .arg("-i")
        .arg(&list)
        .arg("--sha256sums")
        .arg(&sums)
        .args(["--json"])
        .args(QUICK));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(std::fs::read(dir.path().join("a.bin")).unwrap(), a);
    assert_eq!(std::fs::read(dir.path().join("sub/b.bin")).unwrap(), b);
    assert!(
        !dir.path().join("c.bin").exists(),
        "a wrong file is never put in place"
    );
    assert!(
        err.contains("a.bin: starting over: sha256 mismatch"),
        "{err}"
    );
    let lines = json_lines(&out);
    assert_eq!(line_of(&lines, "a.bin")["sha256"], sha(&a));
    assert_eq!(line_of(&lines, "a.bin")["fetched"], 80_000, "fetched twice");
    let c_line = line_of(&lines, "c.bin");
    assert_eq!(c_line["outcome"], "failed", "{c_line}");
    assert!(
        c_line["error"].as_str().unwrap().contains("sha256"),
        "{c_line}"
    );
    assert_eq!(lines.last().unwrap()["failed"], 1);

    // A URL the list has no line for: refused, nothing sent.
    let before = server.requests().len();
    let out = run(backstop()
        .args(["pull", &server.url("/b.bin"), "--dir"])
        .arg(dir.path())
        .arg("--sha256sums")
        .arg(&sums));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("the sha256 list has no line for \"b.bin\""),
        "{err}"
    );
    assert_eq!(server.requests().len(), before);
    // A list that is not a sha256sum list: its line is named.
    std::fs::write(&sums, "a.bin 1234\n").unwrap();
    let out = run(backstop()
        .args(["pull", &server.url("/a.bin"), "--dir"])
        .arg(dir.path())
        .arg("--sha256sums")
        .arg(&sums));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("{}: line 1: ", sums.display())),
        "{}",
        stderr(&out)
    );
    assert_eq!(server.requests().len(), before);
}

/// `--json` counts a file's attempts and tells a failure's cause; the
/// exit code is the one without `--json`.
#[test]
fn json_lines_count_attempts_and_tell_failures() {
    let server = FaultServer::start();
    let a = data(20_000, 1);
    server.script("/a.bin", [Reply::status(503), Reply::status(503)]);
    server.always("/a.bin", Reply::file(a.clone()));
    server.always("/gone.bin", Reply::status(404));
    let dir = tempfile::tempdir().unwrap();
    let out = run(backstop()
        .args([
            "pull",
            &server.url("/a.bin"),
            &server.url("/gone.bin"),
            "-q",
            "--json",
            "--dir",
        ])
        .arg(dir.path())
        .args(QUICK));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 3, "{lines:?}");
    let a_line = line_of(&lines, "a.bin");
    assert_eq!(a_line["outcome"], "downloaded");
    assert_eq!(a_line["attempts"], 3, "two 503s, then the file: {a_line}");
    let gone = line_of(&lines, "gone.bin");
    assert_eq!(gone["outcome"], "failed");
    assert_eq!(gone["attempts"], 1, "a 404 is not retried");
    assert_eq!(gone["size"], serde_json::Value::Null);
    assert!(
        gone["error"].as_str().unwrap().contains("HTTP 404"),
        "{gone}"
    );
    let total = &lines[2];
    assert_eq!(
        (
            total["type"].as_str(),
            total["downloaded"].as_u64(),
            total["failed"].as_u64()
        ),
        (Some("total"), Some(1), Some(1))
    );
    assert!(
        !stderr(&out).contains("backstop: a.bin: done"),
        "-q keeps stderr to errors: {}",
        stderr(&out)
    );
}

/// Two files of 1 MiB each at 1M (1 MiB/s) for the whole run take about
/// two seconds, not one each side by side. Only the floor is asserted:
/// a slow machine makes a pull slower, never faster.
#[test]
fn limit_rate_holds_the_whole_run_to_one_rate() {
    let root = tempfile::tempdir().unwrap();
    let (a, b) = (data(1 << 20, 1), data(1 << 20, 2));
    std::fs::write(root.path().join("a.bin"), &a).unwrap();
    std::fs::write(root.path().join("b.bin"), &b).unwrap();
    let nginx = Nginx::start(root.path());
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let out = run(backstop()
        .args([
            "pull",
            &nginx.url("/a.bin"),
            &nginx.url("/b.bin"),
            "--limit-rate",
            "1M",
            "--dir",
        ])
        .arg(dir.path()));
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(std::fs::read(dir.path().join("a.bin")).unwrap(), a);
    assert_eq!(std::fs::read(dir.path().join("b.bin")).unwrap(), b);
    // 2 MiB at 1 MiB/s, less the bucket's burst of a tenth of a second.
    assert!(
        took >= Duration::from_millis(1900),
        "2 MiB at 1 MiB/s took {took:?}"
    );

    let out = run(backstop().args(["pull", &nginx.url("/a.bin"), "--limit-rate", "fast"]));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is not a rate in bytes per second (examples: 500K, 10M, 1G)"),
        "{}",
        stderr(&out)
    );
}

/// The sources of a list choose the place as the command line's do: Hub
/// repositories alone go to the Hugging Face cache, and `--json` names
/// each file where its snapshot shows it. A sha256 list that disagrees
/// with the Hub's own digest is refused before anything is fetched.
#[test]
fn hub_sources_of_a_list_go_to_the_cache_and_json_names_their_snapshot_path() {
    let hub = FaultServer::start();
    let cdn = FaultServer::start();
    let weights = data(30_000, 4);
    let files = [
        HubFile::lfs("sub/w.bin", weights.clone()),
        HubFile::git("config.json", &b"{}"[..]),
    ];
    hub.hub_repo("models", "org/repo", "main", "c0ffee", &files, Some(&cdn));
    let home = tempfile::tempdir().unwrap();
    let cache = home.path().join("hub");
    let list = home.path().join("list.txt");
    std::fs::write(&list, "# one repository\nhf://org/repo\n").unwrap();
    let sums = home.path().join("SHA256SUMS");
    std::fs::write(&sums, format!("{}  sub/w.bin\n", sha(b"other bytes"))).unwrap();
    let pull = || {
        let mut cmd = backstop();
        cmd.env("HF_HUB_CACHE", &cache)
            .env("HF_ENDPOINT", hub.url(""))
            .args(["pull", "--json", "-i"])
            .arg(&list);
        cmd
    };
    let out = run(pull().arg("--sha256sums").arg(&sums));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("\"sub/w.bin\" is given two different sha256 digests"),
        "{err}"
    );
    assert!(cdn.requests().is_empty(), "nothing fetched");

    let out = run(&mut pull());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let snapshot = cache.join("models--org--repo/snapshots/c0ffee");
    let lines = json_lines(&out);
    let w = line_of(&lines, "sub/w.bin");
    assert_eq!(w["path"], snapshot.join("sub/w.bin").display().to_string());
    assert_eq!(w["source"], "hf://org/repo@main");
    assert_eq!(w["sha256"], sha(&weights));
    assert_eq!(std::fs::read(snapshot.join("sub/w.bin")).unwrap(), weights);
}
