//! What another tool pushed, backstop pulls: artifacts pushed by `oras`
//! (PyPI) with the model-spec media types, and with only the legacy
//! `org.cnai` annotations modctl once wrote, against a real registry.

mod common;

use std::path::Path;
use std::process::Command;

use backstop_faultserver::{DockerRegistry, HttpProxy, oras_python};
use common::{backstop, run, stderr};

const PUSH: &str = r#"
import json, sys
import oras.client
target, files, annotations = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
r = oras.client.OrasClient(insecure=True).push(files=files, target=target, annotation_file=annotations)
sys.exit(0 if r.status_code == 201 else 1)
"#;

fn oras_push(
    python: &Path,
    dir: &Path,
    target: &str,
    files: &[&str],
    annotations: serde_json::Value,
) {
    std::fs::write(dir.join("annotations.json"), annotations.to_string()).unwrap();
    let out = Command::new(python)
        .current_dir(dir)
        .args(["-c", PUSH, target])
        .arg(serde_json::to_string(files).unwrap())
        .arg("annotations.json")
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "oras push failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn backstop_pulls_what_oras_pushed_with_model_spec_and_legacy_annotations() {
    let python = oras_python(Path::new(env!("CARGO_TARGET_TMPDIR")));
    let registry = DockerRegistry::start();
    let src = tempfile::tempdir().unwrap();
    let weights: Vec<u8> = (0..3_000_017usize).map(|i| (i % 239) as u8).collect();
    std::fs::write(src.path().join("w.bin"), &weights).unwrap();
    std::fs::write(src.path().join("config.json"), b"{\"a\":1}").unwrap();
    let host = registry.addr().to_string();

    // The model-spec names: the file path annotation puts the weights in
    // a folder the title does not name.
    oras_push(
        &python,
        src.path(),
        &format!("{host}/spec/m:v1"),
        &[
            "w.bin:application/vnd.cncf.model.weight.v1.raw",
            "config.json:application/vnd.cncf.model.weight.config.v1.raw",
        ],
        serde_json::json!({"w.bin": {"org.cncf.model.filepath": "weights/w.bin"}}),
    );
    // Only the legacy names modctl wrote before model-spec.
    oras_push(
        &python,
        src.path(),
        &format!("{host}/legacy/m:v1"),
        &[
            "w.bin:application/vnd.cnai.model.weight.v1.raw",
            "config.json:application/vnd.cnai.model.weight.config.v1.raw",
        ],
        serde_json::json!({"w.bin": {"org.cnai.model.filepath": "old/w.bin"}}),
    );

    for (repo, path) in [("spec", "weights/w.bin"), ("legacy", "old/w.bin")] {
        let dest = tempfile::tempdir().unwrap();
        let out = run(backstop()
            .args([
                "pull",
                &format!("oci://{host}/{repo}/m:v1"),
                "--plain-http",
                "--dir",
            ])
            .arg(dest.path())
            .env("DOCKER_CONFIG", dest.path().join(".docker")));
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(0), "{repo}: {err}");
        assert_eq!(
            std::fs::read(dest.path().join(path)).unwrap(),
            weights,
            "{repo}"
        );
        assert_eq!(
            std::fs::read(dest.path().join("config.json")).unwrap(),
            b"{\"a\":1}",
            "{repo}: the title names a file without a path annotation"
        );
    }
}

#[test]
fn a_tar_layer_is_unpacked_under_the_destination_and_a_hostile_one_is_refused() {
    let python = oras_python(Path::new(env!("CARGO_TARGET_TMPDIR")));
    let registry = DockerRegistry::start();
    let host = registry.addr().to_string();
    let src = tempfile::tempdir().unwrap();
    let tree = src.path().join("tree");
    std::fs::create_dir_all(tree.join("docs/api")).unwrap();
    std::fs::write(tree.join("docs/api/index.md"), b"# api\n").unwrap();
    std::fs::write(tree.join("docs/guide.md"), b"# guide\n").unwrap();
    std::os::unix::fs::symlink("/etc/passwd", tree.join("evil")).unwrap();
    let tar = |name: &str, entries: &[&str]| {
        let status = Command::new("tar")
            .arg("-cf")
            .arg(src.path().join(name))
            .arg("-C")
            .arg(&tree)
            .args(entries)
            .status()
            .expect("tar runs");
        assert!(status.success());
    };
    tar("docs.tar", &["docs"]);
    tar("evil.tar", &["evil"]);
    oras_push(
        &python,
        src.path(),
        &format!("{host}/tar/m:v1"),
        &["docs.tar:application/vnd.cncf.model.doc.v1.tar"],
        serde_json::json!({"docs.tar": {"org.cncf.model.filepath": "docs"}}),
    );
    oras_push(
        &python,
        src.path(),
        &format!("{host}/tar/evil:v1"),
        &["evil.tar:application/vnd.cncf.model.doc.v1.tar"],
        serde_json::json!({"evil.tar": {"org.cncf.model.filepath": "evil"}}),
    );

    let dest = tempfile::tempdir().unwrap();
    let pull_from = |host: &str, reference: &str| {
        run(backstop()
            .args([
                "pull",
                &format!("oci://{host}/{reference}"),
                "--plain-http",
                "--dir",
            ])
            .arg(dest.path())
            .env("DOCKER_CONFIG", dest.path().join(".docker")))
    };
    let pull = |reference: &str| pull_from(&host, reference);
    let unpacked = || {
        assert_eq!(
            std::fs::read(dest.path().join("docs/api/index.md")).unwrap(),
            b"# api\n"
        );
        assert_eq!(
            std::fs::read(dest.path().join("docs/guide.md")).unwrap(),
            b"# guide\n"
        );
        assert!(
            !dest.path().join("docs.oci-layer.tar").exists(),
            "the archive is removed"
        );
    };
    let out = pull("tar/m:v1");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    unpacked();

    // Unpacked and unchanged: not fetched again. Through a proxy that
    // would corrupt any blob it carried, so that a fetch could not pass.
    let proxy = HttpProxy::start(registry.addr());
    proxy.flip_all("GET", "/blobs/");
    let through = proxy.addr().to_string();
    let out = pull_from(&through, "tar/m:v1");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("1 already there"), "{err}");
    assert_eq!(proxy.matched(), 0, "no blob was asked for");
    unpacked();

    // One of its files edited: the layer is fetched and unpacked again.
    std::fs::write(dest.path().join("docs/guide.md"), b"# mine\n").unwrap();
    proxy.clear();
    let out = pull_from(&through, "tar/m:v1");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("1 downloaded"), "{err}");
    unpacked();

    let out = pull("tar/evil:v1");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("a symbolic link, which is not unpacked"),
        "{err}"
    );
    assert!(std::fs::symlink_metadata(dest.path().join("evil")).is_err());
    assert!(!dest.path().join("evil.oci-layer.tar").exists());
}
