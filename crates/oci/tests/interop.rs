//! What backstop pushes, another tool pulls: `oras` (the PyPI package,
//! in a virtual environment this test sets up under the target directory)
//! pulls a pushed artifact byte for byte, and reads the model-spec media
//! types in its manifest and config.

use std::path::Path;
use std::process::Command;

use backstop_faultserver::{DockerRegistry, oras_python};
use backstop_oci::{
    ARTIFACT_TYPE, ArtifactOptions, CONFIG_MEDIA_TYPE, MANIFEST_MEDIA_TYPE, PushOptions, Pusher,
    Reference, Registry, UploadOptions, build, collect,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oras_pulls_what_backstop_pushed_byte_for_byte() {
    let python = oras_python(Path::new(env!("CARGO_TARGET_TMPDIR")));
    let registry = DockerRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::create_dir_all(p.join("sub")).unwrap();
    let weights: Vec<u8> = (0..(5 << 20) + 17)
        .map(|i: usize| (i % 241) as u8)
        .collect();
    std::fs::write(p.join("model.safetensors"), &weights).unwrap();
    std::fs::write(p.join("sub/extra.gguf"), b"gguf bytes").unwrap();
    std::fs::write(p.join("config.json"), br#"{"model_type":"t"}"#).unwrap();
    std::fs::write(p.join("README.md"), b"# interop\n").unwrap();
    let artifact = build(
        collect(&[p.to_owned()]).unwrap(),
        &ArtifactOptions::default(),
    )
    .unwrap();
    let reference: Reference = format!("oci://{}/models/interop:v1", registry.addr())
        .parse()
        .unwrap();
    let client = backstop_http::Client::new().unwrap();
    let target = Registry::new(client, reference.registry(), true, None).unwrap();
    let options = PushOptions {
        upload: UploadOptions {
            chunk_size: 1 << 20,
            ..UploadOptions::default()
        },
        ..PushOptions::default()
    };
    let summary = Pusher::new(&target, &reference)
        .options(options)
        .run(&artifact)
        .await;
    assert!(
        summary.succeeded(),
        "{:?}",
        summary.failures().collect::<Vec<_>>()
    );

    let out = tempfile::tempdir().unwrap();
    let script = r#"
import json, sys
import oras.client
c = oras.client.OrasClient(insecure=True)
target, outdir = sys.argv[1], sys.argv[2]
c.pull(target=target, outdir=outdir)
m = c.get_manifest(target)
print(json.dumps({"mediaType": m.get("mediaType"), "artifactType": m.get("artifactType"),
                  "config": m["config"]["mediaType"], "layers": [l["mediaType"] for l in m["layers"]]}))
"#;
    let pulled = Command::new(&python)
        .args(["-c", script])
        .arg(format!("{}/models/interop:v1", registry.addr()))
        .arg(out.path())
        .output()
        .expect("python runs");
    assert!(
        pulled.status.success(),
        "oras pull failed: {}",
        String::from_utf8_lossy(&pulled.stderr)
    );
    for name in [
        "model.safetensors",
        "sub/extra.gguf",
        "config.json",
        "README.md",
    ] {
        assert_eq!(
            std::fs::read(out.path().join(name)).unwrap(),
            std::fs::read(p.join(name)).unwrap(),
            "{name}"
        );
    }
    let seen: serde_json::Value = serde_json::from_slice(&pulled.stdout).unwrap();
    assert_eq!(seen["mediaType"], MANIFEST_MEDIA_TYPE);
    assert_eq!(seen["artifactType"], ARTIFACT_TYPE);
    assert_eq!(seen["config"], CONFIG_MEDIA_TYPE);
    assert_eq!(
        seen["layers"],
        serde_json::json!([
            "application/vnd.cncf.model.weight.config.v1.raw",
            "application/vnd.cncf.model.weight.v1.raw",
            "application/vnd.cncf.model.weight.v1.raw",
            "application/vnd.cncf.model.doc.v1.raw",
        ])
    );
}
