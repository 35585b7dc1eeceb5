//! backstop and huggingface_hub (from PyPI) share one Hugging Face cache:
//! what backstop pulls, huggingface_hub finds offline, file by file and
//! byte for byte, with its own cache scan finding nothing amiss; what
//! huggingface_hub downloaded, backstop does not fetch again.

mod common;

use std::io::{BufRead, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use backstop_faultserver::{FaultServer, HubFile, huggingface_hub_python};
use common::{backstop, run, stderr};

fn data(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect()
}

/// Reads every file of a repository offline, through both of
/// huggingface_hub's entry points, and prints their sha256s as JSON; fails
/// when its cache scan warns about anything.
const READ_OFFLINE: &str = r#"
import hashlib, json, os, sys
from huggingface_hub import hf_hub_download, scan_cache_dir, snapshot_download
repo, kind, revision, files = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
folder = snapshot_download(repo, repo_type=kind, revision=revision, local_files_only=True)
found = {}
for name in files:
    one = hf_hub_download(repo, name, repo_type=kind, revision=revision, local_files_only=True)
    assert os.path.samefile(one, os.path.join(folder, name)), (one, folder)
    with open(one, "rb") as f:
        found[name] = hashlib.sha256(f.read()).hexdigest()
scan = scan_cache_dir()
assert not scan.warnings, scan.warnings
print(json.dumps({"folder": folder, "files": found}))
"#;

/// Downloads a whole repository online, as transformers does.
const DOWNLOAD: &str = r#"
import sys
from huggingface_hub import snapshot_download
print(snapshot_download(sys.argv[1], repo_type=sys.argv[2]))
"#;

/// Holds a blob's lock the way huggingface_hub does while it downloads
/// the blob, until a line comes on stdin.
const HOLD_LOCK: &str = r#"
import sys
from huggingface_hub.utils import WeakFileLock
with WeakFileLock(sys.argv[1]):
    print("held", flush=True)
    sys.stdin.readline()
"#;

/// huggingface_hub's Python, run with `script` against `cache` and the
/// Hub at `endpoint`, and none of the caller's settings.
fn python_command(script: &str, cache: &Path, endpoint: &str, args: &[&str]) -> Command {
    let python = huggingface_hub_python(Path::new(env!("CARGO_TARGET_TMPDIR")));
    let mut cmd = Command::new(python);
    cmd.args(["-c", script])
        .args(args)
        .env("HF_HUB_CACHE", cache)
        .env("HF_ENDPOINT", endpoint)
        .env("HF_HUB_DISABLE_TELEMETRY", "1")
        .env("HF_HUB_DISABLE_XET", "1")
        .env_remove("HF_TOKEN")
        .env("HF_TOKEN_PATH", "/nonexistent/backstop-test-token");
    cmd
}

fn python(script: &str, cache: &Path, endpoint: &str, args: &[&str]) -> String {
    let out = python_command(script, cache, endpoint, args)
        .output()
        .expect("python runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "huggingface_hub failed: {}{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[test]
fn huggingface_hub_finds_offline_what_backstop_pulled() {
    let hub = FaultServer::start();
    let cdn = FaultServer::start();
    let model = [
        HubFile::lfs("model.safetensors", data(300_000, 1)),
        HubFile::lfs("onnx/model.onnx", data(120_000, 2)),
        HubFile::git("config.json", &b"{\"model_type\":\"llama\"}"[..]),
        HubFile::git("tokenizer/vocab.txt", &b"a\nb\n"[..]),
    ];
    let commit = "0123456789abcdef0123456789abcdef01234567";
    hub.hub_repo("models", "org/model", "main", commit, &model, Some(&cdn));
    let dataset = [HubFile::lfs("train/part-0.parquet", data(50_000, 3))];
    let data_commit = "89abcdef0123456789abcdef0123456789abcdef";
    hub.hub_repo(
        "datasets",
        "org/data",
        "v1",
        data_commit,
        &dataset,
        Some(&cdn),
    );

    let cache = tempfile::tempdir().unwrap();
    let out = run(backstop()
        .env("HF_HUB_CACHE", cache.path())
        .env("HF_ENDPOINT", hub.url(""))
        .args(["pull", "hf://org/model", "hf://datasets/org/data@v1"]));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");

    for (repo, kind, revision, files, commit) in [
        ("org/model", "model", "main", &model[..], commit),
        ("org/model", "model", commit, &model[..], commit),
        ("org/data", "dataset", "v1", &dataset[..], data_commit),
    ] {
        let names: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
        let names = serde_json::to_string(&names).unwrap();
        let found = python(
            READ_OFFLINE,
            cache.path(),
            &hub.url(""),
            &[repo, kind, revision, &names],
        );
        let found: serde_json::Value = serde_json::from_str(&found).unwrap();
        let folder = found["folder"].as_str().unwrap();
        assert!(
            folder.ends_with(&format!("/snapshots/{commit}")),
            "{folder}"
        );
        assert!(err.contains(folder), "backstop names the snapshot: {err}");
        for file in files {
            assert_eq!(
                found["files"][&file.path],
                file.sha256(),
                "{repo}@{revision}: {}",
                file.path
            );
        }
    }
}

#[test]
fn backstop_does_not_fetch_again_what_huggingface_hub_downloaded() {
    let hub = FaultServer::start();
    let cdn = FaultServer::start();
    let files = [
        HubFile::lfs("model.safetensors", data(200_000, 4)),
        HubFile::lfs("sub/adapter.safetensors", data(70_000, 5)),
        HubFile::git("config.json", &b"{}"[..]),
    ];
    let commit = "fedcba9876543210fedcba9876543210fedcba98";
    hub.hub_repo("models", "org/model", "main", commit, &files, Some(&cdn));
    let cache = tempfile::tempdir().unwrap();
    let folder = python(
        DOWNLOAD,
        cache.path(),
        &hub.url(""),
        &["org/model", "model"],
    );
    assert!(folder.trim().ends_with(commit), "{folder}");
    let cdn_gets = || cdn.requests().iter().filter(|r| r.method == "GET").count();
    assert_eq!(cdn_gets(), 2, "huggingface_hub fetched each LFS file once");
    let listing = "/api/models/org/model/revision/main";
    let (listed, hub_requests) = (hub.hits(listing), hub.requests().len());

    let out = run(backstop()
        .env("HF_HUB_CACHE", cache.path())
        .env("HF_ENDPOINT", hub.url(""))
        .args(["pull", "hf://org/model"]));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("3 already there"), "{err}");
    assert_eq!(
        hub.hits(listing),
        listed + 1,
        "backstop listed the repository"
    );
    assert_eq!(
        hub.requests().len(),
        hub_requests + 1,
        "and asked the Hub for nothing else"
    );
    assert_eq!(cdn_gets(), 2, "nor the CDN");
    let snapshot = cache
        .path()
        .join("models--org--model/snapshots")
        .join(commit);
    for file in &files {
        assert_eq!(
            std::fs::read(snapshot.join(&file.path)).unwrap(),
            file.bytes
        );
    }
}

#[test]
fn backstop_waits_for_the_lock_huggingface_hub_holds_on_a_blob() {
    let hub = FaultServer::start();
    let cdn = FaultServer::start();
    let weights = HubFile::lfs("model.safetensors", data(100_000, 6));
    hub.hub_repo(
        "models",
        "org/model",
        "main",
        "c0ffee",
        std::slice::from_ref(&weights),
        Some(&cdn),
    );
    let cache = tempfile::tempdir().unwrap();
    let lock = cache
        .path()
        .join(".locks/models--org--model")
        .join(format!("{}.lock", weights.sha256()));
    std::fs::create_dir_all(lock.parent().unwrap()).unwrap();
    let mut holder = python_command(
        HOLD_LOCK,
        cache.path(),
        &hub.url(""),
        &[lock.to_str().unwrap()],
    )
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .spawn()
    .expect("python runs");
    let mut held = String::new();
    std::io::BufReader::new(holder.stdout.take().unwrap())
        .read_line(&mut held)
        .unwrap();
    assert_eq!(held, "held\n");

    let mut pull = backstop()
        .env("HF_HUB_CACHE", cache.path())
        .env("HF_ENDPOINT", hub.url(""))
        .args(["pull", "hf://org/model"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(pull.stderr.take().unwrap()).lines();
    let waiting = lines
        .by_ref()
        .map(Result::unwrap)
        .find(|l| l.contains("waiting for its lock"));
    assert!(
        waiting.is_some(),
        "backstop says it waits for huggingface_hub"
    );
    assert!(cdn.requests().is_empty(), "and fetches nothing meanwhile");

    writeln!(holder.stdin.take().unwrap()).unwrap();
    assert!(holder.wait().unwrap().success());
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    let status = pull.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{}", rest.join("\n"));
    let blob = cache
        .path()
        .join("models--org--model/blobs")
        .join(weights.sha256());
    assert_eq!(std::fs::read(blob).unwrap(), weights.bytes);
    assert_eq!(cdn.requests().len(), 1, "fetched once the lock was free");
}
