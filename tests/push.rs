//! `backstop push`, `login` and `logout` against a real registry
//! (distribution 2.8, Debian's `docker-registry`).

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use backstop_faultserver::{DockerRegistry, HttpProxy};
use common::{QUICK, backstop, run, stderr, stdout};

const MIB: usize = 1 << 20;

fn model(dir: &Path, big: usize) {
    let weights: Vec<u8> = (0..big).map(|i| (i * 7 % 253) as u8).collect();
    std::fs::write(dir.join("model.safetensors"), weights).unwrap();
    std::fs::write(dir.join("config.json"), br#"{"model_type":"t"}"#).unwrap();
    std::fs::write(dir.join("README.md"), b"# t\n").unwrap();
}

/// backstop with its own state and docker config under `home`.
fn cmd(home: &Path) -> Command {
    let mut cmd = backstop();
    cmd.env("BACKSTOP_STATE", home.join("state/backstop.db"))
        .env("DOCKER_CONFIG", home.join("docker"))
        .env_remove("REGISTRY_AUTH_FILE")
        .env("XDG_RUNTIME_DIR", home.join("run"))
        .stdin(Stdio::null());
    cmd
}

fn uploads(home: &Path) -> Vec<serde_json::Value> {
    let Ok(entries) = std::fs::read_dir(home.join("state/oci-uploads")) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| std::fs::read(e.ok()?.path()).ok())
        .filter_map(|b| serde_json::from_slice(&b).ok())
        .collect()
}

#[test]
fn ctrl_c_stops_between_chunks_and_the_next_push_sends_only_the_rest() {
    let registry = DockerRegistry::start();
    let proxy = HttpProxy::start(registry.addr());
    let home = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    model(src.path(), 10 * MIB);
    let target = format!("oci://{}/models/t:v1", proxy.addr());
    // A slow link: every chunk takes 300 ms to get there.
    proxy.delay_all("PATCH", "/blobs/uploads/", Duration::from_millis(300));
    let child = cmd(home.path())
        .arg("push")
        .arg(src.path())
        .args([&target, "--plain-http", "--chunk-size", "1MiB"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !uploads(home.path())
        .iter()
        .any(|r| r["offset"].as_u64() > Some(0))
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no chunk confirmed"
        );
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
    assert!(err.contains("stopping after the chunks in flight"), "{err}");
    assert!(err.contains("model.safetensors: interrupted, "), "{err}");
    assert!(
        err.contains("hint: run the same command again: it continues"),
        "{err}"
    );
    let held = uploads(home.path())[0]["offset"].as_u64().unwrap();
    assert!(held > 0 && held < (10 * MIB) as u64, "{held}");

    proxy.clear();
    let before = proxy.body_bytes();
    let out = run(cmd(home.path()).arg("push").arg(src.path()).args([
        &target,
        "--plain-http",
        "--chunk-size",
        "1MiB",
    ]));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("model.safetensors: pushed, "), "{err}");
    assert!(err.contains(" continued from "), "{err}");
    let sent = proxy.body_bytes() - before;
    assert!(
        sent <= (10 * MIB) as u64 - held + 4096,
        "sent {sent} after the registry held {held}"
    );
    assert!(
        stdout(&out).contains("/models/t:v1@sha256:"),
        "{}",
        stdout(&out)
    );
    assert!(
        uploads(home.path()).is_empty(),
        "finished sessions forgotten"
    );
}

#[test]
fn after_kill_9_the_next_push_continues_from_the_registry_offset() {
    let registry = DockerRegistry::start();
    let proxy = HttpProxy::start(registry.addr());
    let home = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    model(src.path(), 10 * MIB);
    let target = format!("oci://{}/models/t:v1", proxy.addr());
    proxy.delay_all("PATCH", "/blobs/uploads/", Duration::from_millis(200));
    let mut child = cmd(home.path())
        .arg("push")
        .arg(src.path())
        .args([&target, "--plain-http", "--chunk-size", "1MiB"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !uploads(home.path())
        .iter()
        .any(|r| r["offset"].as_u64() > Some(0))
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no chunk confirmed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The next chunk dies on the way with the process.
    proxy.stall_next("PATCH", "/blobs/uploads/");
    while proxy.stalled() == 0 {
        assert!(start.elapsed() < Duration::from_secs(30), "no chunk held");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let held = uploads(home.path())[0]["offset"].as_u64().unwrap();
    assert!(held > 0 && held < (10 * MIB) as u64, "{held}");

    proxy.clear();
    let before = proxy.body_bytes();
    let out = run(cmd(home.path()).arg("push").arg(src.path()).args([
        &target,
        "--plain-http",
        "--chunk-size",
        "1MiB",
    ]));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains(" continued from "), "{err}");
    let sent = proxy.body_bytes() - before;
    assert!(
        sent <= (10 * MIB) as u64 - held + 4096,
        "sent {sent} after the registry held {held}"
    );
}

#[test]
fn login_checks_stores_privately_and_push_uses_the_stored_credentials() {
    let registry = DockerRegistry::with_user("alice", "s3cret");
    let home = tempfile::tempdir().unwrap();
    let host = registry.addr().to_string();
    let login = |password: &str| {
        let mut child = cmd(home.path())
            .args([
                "login",
                &host,
                "-u",
                "alice",
                "--password-stdin",
                "--plain-http",
            ])
            .args(QUICK)
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(password.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let config = home.path().join("docker/config.json");
    let out = login("wrong\n");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("refused the credentials"), "{err}");
    assert!(!err.contains("wrong"), "{err}");
    assert!(!config.exists(), "nothing stored");

    let out = login("s3cret\n");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let stored: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
    // base64("alice:s3cret"): the newline was dropped.
    assert_eq!(stored["auths"][&host]["auth"], "YWxpY2U6czNjcmV0");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&config).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    let src = tempfile::tempdir().unwrap();
    model(src.path(), MIB);
    let target = format!("oci://{host}/models/t:v1");
    let out = run(cmd(home.path())
        .arg("push")
        .arg(src.path())
        .args([&target, "--plain-http"]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    let out = run(cmd(home.path()).args(["logout", &host]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = run(cmd(home.path())
        .arg("push")
        .arg(src.path())
        .args([&target, "--plain-http"])
        .args(QUICK));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("backstop login"), "{err}");
}

#[test]
fn bad_input_is_refused_before_anything_is_sent() {
    let registry = DockerRegistry::start();
    let proxy = HttpProxy::start(registry.addr());
    let home = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    model(src.path(), 1024);
    std::fs::write(src.path().join("blob.xyz"), b"?").unwrap();
    let push = |target: &str, extra: &[&str]| {
        run(cmd(home.path())
            .arg("push")
            .arg(src.path())
            .args([target, "--plain-http"])
            .args(extra))
    };
    let host = proxy.addr().to_string();
    for bad in [
        format!("oci://{host}/Models:v1"),
        format!("oci://{host}/m:bad:tag!"),
        format!("{host}/m:v1"),
        format!("oci://{host}/m@sha256:abc"),
    ] {
        let out = push(&bad, &[]);
        assert_eq!(out.status.code(), Some(2), "{bad}: {}", stderr(&out));
    }
    let out = push(&format!("oci://{host}/m:v1"), &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("no role for 1 file: blob.xyz"), "{err}");
    assert!(err.contains("--role PATTERN=ROLE"), "{err}");
    let out = push(&format!("oci://{host}/m:v1"), &["--role", "*.xyz=weights"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_eq!(proxy.body_bytes(), 0);
    assert!(
        !registry.storage().exists(),
        "the registry never stored anything"
    );
    let out = push(&format!("oci://{host}/m:v1"), &["--role", "*.xyz=dataset"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn pull_oci_fetches_what_push_sent_and_refuses_a_hostile_manifest() {
    let registry = DockerRegistry::start();
    let home = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    model(src.path(), 3 * MIB);
    std::fs::create_dir_all(src.path().join("sub")).unwrap();
    std::fs::write(src.path().join("sub/q.gguf"), b"gguf").unwrap();
    let host = registry.addr().to_string();
    let target = format!("oci://{host}/models/t:v1");
    let out = run(cmd(home.path()).arg("push").arg(src.path()).args([
        &target,
        "--plain-http",
        "--chunk-size",
        "1MiB",
    ]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    let dest = tempfile::tempdir().unwrap();
    let out = run(cmd(home.path())
        .args(["pull", &target, "--plain-http", "--dir"])
        .arg(dest.path()));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("pulled 4 of 4 files"), "{err}");
    for name in [
        "model.safetensors",
        "config.json",
        "README.md",
        "sub/q.gguf",
    ] {
        assert_eq!(
            std::fs::read(dest.path().join(name)).unwrap(),
            std::fs::read(src.path().join(name)).unwrap(),
            "{name}"
        );
    }
    let only = tempfile::tempdir().unwrap();
    let out = run(cmd(home.path())
        .args(["pull", &format!("{target}/*.gguf"), "--plain-http", "--dir"])
        .arg(only.path()));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(only.path().join("sub/q.gguf").exists());
    assert!(!only.path().join("model.safetensors").exists());

    // A manifest whose layer would write outside the destination.
    let hostile = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json",
                   "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a", "size": 2},
        "layers": [{"mediaType": "application/vnd.cncf.model.weight.v1.raw",
                    "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a", "size": 2,
                    "annotations": {"org.cncf.model.filepath": "../../escaped"}}]
    });
    // The blob it names must exist for the registry to take the manifest.
    let digest = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let client = backstop_http::Client::new().unwrap();
        let started = client
            .request(
                backstop_http::Method::POST,
                &registry.url("/v2/models/evil/blobs/uploads/"),
            )
            .send()
            .await
            .unwrap();
        let location = started.headers()["location"].to_str().unwrap().to_owned();
        let location = if location.starts_with("http") {
            location
        } else {
            registry.url(&location)
        };
        let sep = if location.contains('?') { '&' } else { '?' };
        client
            .request(
                backstop_http::Method::PUT,
                &format!("{location}{sep}digest={digest}"),
            )
            .body(&b"{}"[..])
            .send()
            .await
            .unwrap();
        client
            .request(
                backstop_http::Method::PUT,
                &registry.url("/v2/models/evil/manifests/v1"),
            )
            .header("content-type", "application/vnd.oci.image.manifest.v1+json")
            .body(hostile.to_string())
            .send()
            .await
            .unwrap();
    });
    let dest = tempfile::tempdir().unwrap();
    let inner = dest.path().join("a/b");
    std::fs::create_dir_all(&inner).unwrap();
    let out = run(cmd(home.path())
        .args([
            "pull",
            &format!("oci://{host}/models/evil:v1"),
            "--plain-http",
            "--dir",
        ])
        .arg(&inner));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("\"../../escaped\" that cannot be written safely"),
        "{err}"
    );
    assert!(!dest.path().join("escaped").exists());
    assert_eq!(
        std::fs::read_dir(&inner).unwrap().count(),
        0,
        "nothing written"
    );
}

/// A certificate authority and a certificate for 127.0.0.1 it signed, as
/// PEM files in `dir`: (authority, certificate, key).
fn certificates(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let openssl = |args: &[&str]| {
        let out = run(Command::new("openssl").current_dir(dir).args(args));
        assert!(out.status.success(), "openssl {args:?}: {}", stderr(&out));
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        &[
            &["req", "-x509"][..],
            &ec,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=backstop test authority",
            ],
        ]
        .concat(),
    );
    openssl(
        &[
            &["req"][..],
            &ec,
            &[
                "-keyout",
                "key.pem",
                "-out",
                "leaf.csr",
                "-subj",
                "/CN=127.0.0.1",
            ],
        ]
        .concat(),
    );
    std::fs::write(
        dir.join("leaf.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "cert.pem",
        "-days",
        "2",
        "-extfile",
        "leaf.ext",
    ]);
    (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    )
}

#[test]
fn push_and_pull_trust_a_private_registry_by_its_ca_file() {
    let registry = DockerRegistry::start();
    let pki = tempfile::tempdir().unwrap();
    let (authority, certificate, key) = certificates(pki.path());
    let tls = backstop_faultserver::Nginx::tls_reverse_proxy(registry.addr(), &certificate, &key);
    let home = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    model(src.path(), 2 * MIB);
    let target = format!("oci://{}/models/t:v1", tls.addr());

    let out = run(cmd(home.path()).arg("push").arg(src.path()).args([&target]));
    let err = stderr(&out);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("certificate"),
        "an unknown authority is refused: {err}"
    );

    let out = run(cmd(home.path())
        .arg("push")
        .arg(src.path())
        .args([&target, "--chunk-size", "1MiB", "--ca-file"])
        .arg(&authority));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    let dest = tempfile::tempdir().unwrap();
    let out = run(cmd(home.path())
        .args(["pull", &target, "--dir"])
        .arg(dest.path()));
    let err = stderr(&out);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("certificate"),
        "an unknown authority is refused: {err}"
    );
    assert_eq!(
        std::fs::read_dir(dest.path()).unwrap().count(),
        0,
        "nothing written"
    );

    let out = run(cmd(home.path())
        .args(["pull", &target, "--ca-file"])
        .arg(&authority)
        .arg("--dir")
        .arg(dest.path()));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("pulled 3 of 3 files"), "{err}");
    for name in ["model.safetensors", "config.json", "README.md"] {
        assert_eq!(
            std::fs::read(dest.path().join(name)).unwrap(),
            std::fs::read(src.path().join(name)).unwrap(),
            "{name}"
        );
    }
}

/// `push --json`: one line per blob as it ends (the layers by their path
/// in the artifact, then the config) and a total naming what was pushed;
/// a second push finds every blob there and sends nothing.
#[test]
fn push_json_tells_each_blob_and_the_reference() {
    let registry = DockerRegistry::start();
    let home = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    model(src.path(), 2 * MIB);
    let target = format!("oci://{}/models/j:v1", registry.addr());
    let push = || {
        let out = run(cmd(home.path()).arg("push").arg(src.path()).args([
            &target,
            "--plain-http",
            "--json",
        ]));
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        stdout(&out)
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .collect::<Vec<_>>()
    };
    let lines = push();
    assert_eq!(
        lines.len(),
        5,
        "three layers, the config, a total: {lines:?}"
    );
    let weights = lines
        .iter()
        .find(|l| l["path"] == "model.safetensors")
        .unwrap();
    assert_eq!(weights["type"], "blob");
    assert_eq!(weights["outcome"], "pushed");
    assert_eq!(weights["size"], 2 * MIB);
    assert_eq!(weights["sent"], 2 * MIB);
    assert_eq!(
        weights["source"],
        src.path().join("model.safetensors").display().to_string()
    );
    assert_eq!(weights["sha256"].as_str().map(str::len), Some(64));
    let total = lines.last().unwrap();
    assert_eq!(total["type"], "total");
    assert_eq!((&total["blobs"], &total["pushed"]), (&4.into(), &4.into()));
    let digest = total["digest"].as_str().unwrap();
    assert_eq!(
        total["reference"],
        format!("{}/models/j:v1@{digest}", registry.addr()),
        "what push prints on stdout without --json"
    );

    let lines = push();
    assert!(
        lines[..4]
            .iter()
            .all(|l| l["outcome"] == "already_there" && l["sent"] == 0),
        "{lines:?}"
    );
    assert_eq!(lines[4]["sent"], 0);
}

/// `--min-progress` is pull's guard: a blob that moves less than SIZE in
/// DURATION fails its attempt as too slow, although the link still moves.
#[test]
fn push_min_progress_fails_a_blob_that_moves_too_little_in_its_window() {
    let registry = DockerRegistry::start();
    let proxy = HttpProxy::start(registry.addr());
    let home = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    model(src.path(), 3 * MIB);
    // Every chunk takes 3 s to get through: 1 MiB in a 1 s window.
    proxy.delay_all("PATCH", "/blobs/uploads/", Duration::from_secs(3));
    let target = format!("oci://{}/models/t:v1", proxy.addr());
    let out = run(cmd(home.path())
        .arg("push")
        .arg(src.path())
        .args([&target, "--plain-http", "--chunk-size", "1MiB"])
        .args(["--min-progress", "2MiB/1s", "--attempts", "1"]));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(75), "{err}");
    assert!(err.contains("below the minimum progress"), "{err}");
}
