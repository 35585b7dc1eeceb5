//! What another tool pushed, backstop pulls: artifacts pushed by `oras`
//! (PyPI) with the model-spec media types, and with only the legacy
//! `org.cnai` annotations modctl once wrote, against a real registry.

mod common;

use std::path::Path;
use std::process::Command;

use backstop_faultserver::{DockerRegistry, oras_python};
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
