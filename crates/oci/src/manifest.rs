//! Reading a model artifact's manifest for a pull: which layer goes to
//! which file, checked before anything is written.

use std::collections::BTreeMap;

use backstop_http::{Method, StatusCode};
use backstop_transfer::{Sha256, UnsafeName, confine};
use bytes::{Bytes, BytesMut};
use serde::Deserialize;

use crate::modelpack::{FILEPATH, MANIFEST_MEDIA_TYPE, TITLE};
use crate::registry::{Call, Registry, pull_scope};
use crate::{Fault, Reference};

/// The largest manifest read. Registries must take at least 4 MiB;
/// twice that leaves room, and a larger answer is refused unread.
pub const MAX_MANIFEST: usize = 8 << 20;

/// The legacy filepath annotation modctl still reads and Harbor keys on.
pub const LEGACY_FILEPATH: &str = "org.cnai.model.filepath";

/// The media types a manifest request accepts.
const ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

/// How a layer's bytes become a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerFormat {
    /// The file's bytes as they are.
    Raw,
    /// A tar archive to unpack under the destination.
    Tar,
}

/// One layer to fetch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PullLayer {
    /// Where it goes, relative to the destination (checked: no `..`, no
    /// absolute path, no control character, no empty component).
    pub filepath: String,
    /// Its sha256, to verify what arrives.
    pub digest: Sha256,
    /// Its size.
    pub size: u64,
    /// Its media type as the manifest gives it.
    pub media_type: String,
    /// Raw or tar.
    pub format: LayerFormat,
}

/// A model artifact's manifest, read and checked.
#[derive(Clone, Debug)]
pub struct ModelManifest {
    /// The manifest's bytes as served.
    pub bytes: Bytes,
    /// Their sha256.
    pub digest: Sha256,
    /// The `artifactType`, if any.
    pub artifact_type: Option<String>,
    /// The layers, in manifest order.
    pub layers: Vec<PullLayer>,
}

/// Why a manifest cannot be pulled. Nothing is written for one.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Larger than [`MAX_MANIFEST`].
    #[error("the manifest is larger than {MAX_MANIFEST} bytes ({0} bytes)")]
    TooLarge(u64),
    /// Not JSON, or not a manifest.
    #[error("not an OCI manifest: {0}")]
    Invalid(String),
    /// An image index (several platforms), not one artifact.
    #[error("{0} is an index of manifests, not one artifact; name one of its manifests by digest")]
    Index(String),
    /// The bytes served are not the digest asked for.
    #[error("the manifest served is sha256:{actual}, not the sha256:{expected} asked for")]
    Digest {
        /// The digest in the reference.
        expected: Sha256,
        /// The digest of what was served.
        actual: Sha256,
    },
    /// A layer's path would escape the destination.
    #[error("layer {digest} names a file {name:?} that cannot be written safely: {reason}")]
    UnsafeName {
        /// The layer's digest.
        digest: String,
        /// The path as the manifest gives it.
        name: String,
        /// Why it is refused.
        reason: UnsafeName,
    },
    /// A layer has no path to write it to.
    #[error("layer {0} has no file path ({FILEPATH}, {LEGACY_FILEPATH} or {TITLE})")]
    NoPath(String),
    /// A compressed layer, which modctl cannot unpack either.
    #[error("layer {digest} is {media_type}: compressed model layers are not unpacked")]
    Compressed {
        /// The layer's digest.
        digest: String,
        /// Its media type.
        media_type: String,
    },
    /// A layer digest that is not sha256.
    #[error("layer digest {0:?} is not a sha256 digest")]
    BadDigest(String),
    /// Two layers for the same path.
    #[error("two layers are both {0:?}")]
    Duplicate(String),
}

#[derive(Deserialize)]
struct RawManifest {
    #[serde(rename = "schemaVersion")]
    schema_version: Option<u32>,
    #[serde(rename = "mediaType")]
    media_type: Option<String>,
    #[serde(rename = "artifactType")]
    artifact_type: Option<String>,
    manifests: Option<serde_json::Value>,
    layers: Option<Vec<RawDescriptor>>,
}

#[derive(Deserialize)]
struct RawDescriptor {
    #[serde(rename = "mediaType")]
    media_type: String,
    digest: String,
    size: u64,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

/// Parses and checks a manifest: every layer gets a confined path, a
/// sha256 and a format. A layer whose media type is not a model-spec one
/// (`application/vnd.cncf.model.*` or the legacy `vnd.cnai.model.*`) is
/// pulled as a plain file under its title, as oras does.
pub fn parse_manifest(bytes: Bytes, shown: &str) -> Result<ModelManifest, ManifestError> {
    if bytes.len() > MAX_MANIFEST {
        return Err(ManifestError::TooLarge(bytes.len() as u64));
    }
    let raw: RawManifest = serde_json::from_slice(&bytes).map_err(|e| {
        ManifestError::Invalid(format!(
            "line {} column {}: {}",
            e.line(),
            e.column(),
            json_problem(&e)
        ))
    })?;
    if raw.manifests.is_some()
        || raw
            .media_type
            .as_deref()
            .is_some_and(|m| m.contains("index") || m.contains("manifest.list"))
    {
        return Err(ManifestError::Index(shown.to_owned()));
    }
    if raw.schema_version != Some(2) {
        return Err(ManifestError::Invalid("schemaVersion is not 2".to_owned()));
    }
    let layers = raw
        .layers
        .ok_or_else(|| ManifestError::Invalid("no layers".to_owned()))?;
    let mut out: Vec<PullLayer> = Vec::with_capacity(layers.len());
    for layer in layers {
        let digest = layer
            .digest
            .strip_prefix("sha256:")
            .and_then(|h| h.parse::<Sha256>().ok())
            .ok_or_else(|| ManifestError::BadDigest(layer.digest.clone()))?;
        let name = [FILEPATH, LEGACY_FILEPATH, TITLE]
            .iter()
            .find_map(|k| layer.annotations.get(*k))
            .ok_or_else(|| ManifestError::NoPath(layer.digest.clone()))?;
        confine(std::path::Path::new("/dest"), name).map_err(|reason| {
            ManifestError::UnsafeName {
                digest: layer.digest.clone(),
                name: name.chars().filter(|c| !c.is_control()).take(300).collect(),
                reason,
            }
        })?;
        let format = format_of(&layer.media_type, &layer.digest)?;
        if out.iter().any(|l| &l.filepath == name) {
            return Err(ManifestError::Duplicate(name.clone()));
        }
        out.push(PullLayer {
            filepath: name.clone(),
            digest,
            size: layer.size,
            media_type: layer.media_type,
            format,
        });
    }
    Ok(ModelManifest {
        digest: Sha256::of(&bytes),
        bytes,
        artifact_type: raw.artifact_type,
        layers: out,
    })
}

/// What is wrong with a JSON text, without quoting it.
fn json_problem(e: &serde_json::Error) -> &'static str {
    match e.classify() {
        serde_json::error::Category::Io => "unreadable",
        serde_json::error::Category::Syntax => "not JSON",
        serde_json::error::Category::Data => "not the shape of a manifest",
        serde_json::error::Category::Eof => "cut short",
    }
}

fn format_of(media_type: &str, digest: &str) -> Result<LayerFormat, ManifestError> {
    let model = media_type.starts_with("application/vnd.cncf.model.")
        || media_type.starts_with("application/vnd.cnai.model.");
    if !model {
        return Ok(LayerFormat::Raw);
    }
    if media_type.ends_with(".raw") {
        Ok(LayerFormat::Raw)
    } else if media_type.ends_with(".tar") {
        Ok(LayerFormat::Tar)
    } else if media_type.ends_with("+gzip") || media_type.ends_with("+zstd") {
        Err(ManifestError::Compressed {
            digest: digest.to_owned(),
            media_type: media_type.to_owned(),
        })
    } else {
        // A model layer of a kind this version does not know: its bytes
        // as they are, as for any other media type.
        Ok(LayerFormat::Raw)
    }
}

impl Registry {
    /// Fetches the manifest `reference` names (once; retries are the
    /// caller's), reading at most [`MAX_MANIFEST`] bytes, and checks it
    /// against the reference's digest when it names one.
    pub async fn manifest(&self, reference: &Reference) -> Result<Bytes, Fault> {
        let url = self.url(&format!(
            "v2/{}/manifests/{}",
            reference.repository(),
            reference.manifest_ref()
        ))?;
        let scope = pull_scope(reference.repository());
        let answer = self
            .send(Call {
                method: Method::GET,
                url,
                scope: &scope,
                body: None,
                headers: vec![("accept", format!("{MANIFEST_MEDIA_TYPE}, {ACCEPT}"))],
            })
            .await?;
        if answer.status() != StatusCode::OK {
            return Err(answer.refusal().await);
        }
        let mut response = answer.response;
        if response
            .content_length()
            .is_some_and(|n| n > MAX_MANIFEST as u64)
        {
            return Err(Fault::Protocol(
                ManifestError::TooLarge(response.content_length().unwrap_or(0)).to_string(),
            ));
        }
        let mut buf = BytesMut::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| Fault::Http(backstop_http::HttpFailure::Transport(e.without_url())))?
        {
            if buf.len() + chunk.len() > MAX_MANIFEST {
                return Err(Fault::Protocol(
                    ManifestError::TooLarge((buf.len() + chunk.len()) as u64).to_string(),
                ));
            }
            buf.extend_from_slice(&chunk);
        }
        let bytes = buf.freeze();
        if let Some(expected) = reference.digest() {
            let actual = Sha256::of(&bytes);
            if actual != expected {
                return Err(Fault::Protocol(
                    ManifestError::Digest { expected, actual }.to_string(),
                ));
            }
        }
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn manifest(layers: serde_json::Value) -> Bytes {
        Bytes::from(
            serde_json::json!({
                "schemaVersion": 2,
                "mediaType": MANIFEST_MEDIA_TYPE,
                "artifactType": crate::ARTIFACT_TYPE,
                "config": {"mediaType": crate::CONFIG_MEDIA_TYPE, "digest": format!("sha256:{HEX}"), "size": 2},
                "layers": layers,
            })
            .to_string(),
        )
    }

    fn layer(media_type: &str, key: &str, path: &str) -> serde_json::Value {
        serde_json::json!({"mediaType": media_type, "digest": format!("sha256:{HEX}"), "size": 0,
                           "annotations": {key: path}})
    }

    #[test]
    fn what_backstop_builds_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/m.gguf"), b"w").unwrap();
        std::fs::write(dir.path().join("config.json"), b"{}").unwrap();
        let artifact = crate::build(
            crate::collect(&[dir.path().to_owned()]).unwrap(),
            &crate::ArtifactOptions::default(),
        )
        .unwrap();
        let m = parse_manifest(artifact.manifest.clone(), "m").unwrap();
        assert_eq!(m.digest, artifact.manifest_digest);
        assert_eq!(m.artifact_type.as_deref(), Some(crate::ARTIFACT_TYPE));
        let paths: Vec<_> = m.layers.iter().map(|l| l.filepath.as_str()).collect();
        assert_eq!(paths, ["config.json", "sub/m.gguf"]);
        assert!(m.layers.iter().all(|l| l.format == LayerFormat::Raw));
    }

    #[test]
    fn legacy_annotations_tar_layers_and_other_media_types() {
        let m = parse_manifest(
            manifest(serde_json::json!([
                layer(
                    "application/vnd.cnai.model.weight.v1.raw",
                    LEGACY_FILEPATH,
                    "a.bin"
                ),
                layer("application/vnd.cncf.model.doc.v1.tar", FILEPATH, "docs"),
                layer("application/octet-stream", TITLE, "notes.txt"),
            ])),
            "m",
        )
        .unwrap();
        let got: Vec<_> = m
            .layers
            .iter()
            .map(|l| (l.filepath.as_str(), l.format))
            .collect();
        assert_eq!(
            got,
            [
                ("a.bin", LayerFormat::Raw),
                ("docs", LayerFormat::Tar),
                ("notes.txt", LayerFormat::Raw),
            ],
            "an unknown media type is pulled as a plain file"
        );
    }

    #[test]
    fn hostile_and_malformed_manifests_are_refused_before_anything_is_written() {
        for hostile in [
            "../../etc/cron.d/x",
            "/etc/passwd",
            "a/../../b",
            "a\u{1b}[2J",
            "a//b",
            "",
        ] {
            let e = parse_manifest(
                manifest(serde_json::json!([layer(
                    "application/vnd.cncf.model.weight.v1.raw",
                    FILEPATH,
                    hostile
                )])),
                "m",
            )
            .unwrap_err();
            assert!(
                matches!(e, ManifestError::UnsafeName { .. }),
                "{hostile:?}: {e:?}"
            );
            assert!(!e.to_string().contains('\u{1b}'), "{e}");
        }
        let big = Bytes::from(vec![b' '; 10 << 20]);
        assert!(
            matches!(parse_manifest(big, "m"), Err(ManifestError::TooLarge(n)) if n == 10 << 20)
        );
        assert!(matches!(
            parse_manifest(Bytes::from_static(b"{not json"), "m"),
            Err(ManifestError::Invalid(_))
        ));
        let index = Bytes::from(
            r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#,
        );
        assert!(matches!(
            parse_manifest(index, "m"),
            Err(ManifestError::Index(_))
        ));
        let gz = manifest(serde_json::json!([layer(
            "application/vnd.cncf.model.weight.v1.tar+gzip",
            FILEPATH,
            "w"
        )]));
        assert!(matches!(
            parse_manifest(gz, "m"),
            Err(ManifestError::Compressed { .. })
        ));
        let nopath = manifest(serde_json::json!([layer(
            "application/vnd.cncf.model.weight.v1.raw",
            "other",
            "w"
        )]));
        assert!(matches!(
            parse_manifest(nopath, "m"),
            Err(ManifestError::NoPath(_))
        ));
        let dup = manifest(serde_json::json!([
            layer("application/vnd.cncf.model.weight.v1.raw", FILEPATH, "w"),
            layer("application/vnd.cncf.model.weight.v1.raw", TITLE, "w"),
        ]));
        assert!(matches!(
            parse_manifest(dup, "m"),
            Err(ManifestError::Duplicate(_))
        ));
        let md5 = manifest(
            serde_json::json!([{"mediaType": "x", "digest": "md5:abc", "size": 1, "annotations": {TITLE: "w"}}]),
        );
        assert!(matches!(
            parse_manifest(md5, "m"),
            Err(ManifestError::BadDigest(_))
        ));
    }
}
