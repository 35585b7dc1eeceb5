//! ModelPack (CNCF model-spec) artifacts: the files of a model as raw
//! layers, a config listing them, and a manifest that is the same for the
//! same files.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use backstop_transfer::{Pattern, Sha256};
use bytes::Bytes;
use serde::Serialize;

/// The manifest's media type.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// The manifest's `artifactType`.
pub const ARTIFACT_TYPE: &str = "application/vnd.cncf.model.manifest.v1+json";
/// The config's media type.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.cncf.model.config.v1+json";
/// The annotation naming a layer's path in the model directory.
pub const FILEPATH: &str = "org.cncf.model.filepath";
/// The annotation carrying a layer's file metadata as JSON.
pub const FILE_METADATA: &str = "org.cncf.model.file.metadata+json";
/// The OCI title annotation (oras names the file it writes by it).
pub const TITLE: &str = "org.opencontainers.image.title";
/// The OCI creation-time annotation.
pub const CREATED: &str = "org.opencontainers.image.created";

/// What a file is to the model; it chooses the layer's media type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Configuration the weights need: `config.json`, tokenizers.
    WeightConfig,
    /// Weights.
    Weight,
    /// Source code.
    Code,
    /// Documentation and licences.
    Doc,
    /// Data sets.
    Dataset,
}

impl Role {
    /// The media type of a raw layer of this role.
    pub fn media_type(self) -> &'static str {
        match self {
            Role::Weight => "application/vnd.cncf.model.weight.v1.raw",
            Role::WeightConfig => "application/vnd.cncf.model.weight.config.v1.raw",
            Role::Doc => "application/vnd.cncf.model.doc.v1.raw",
            Role::Code => "application/vnd.cncf.model.code.v1.raw",
            Role::Dataset => "application/vnd.cncf.model.dataset.v1.raw",
        }
    }

    /// The role's name on the command line: `weight`, `weight.config`,
    /// `doc`, `code`, `dataset`.
    pub fn name(self) -> &'static str {
        match self {
            Role::Weight => "weight",
            Role::WeightConfig => "weight.config",
            Role::Doc => "doc",
            Role::Code => "code",
            Role::Dataset => "dataset",
        }
    }

    /// The role named `name` (as [`Role::name`] writes it).
    pub fn from_name(name: &str) -> Option<Role> {
        [
            Role::Weight,
            Role::WeightConfig,
            Role::Doc,
            Role::Code,
            Role::Dataset,
        ]
        .into_iter()
        .find(|r| r.name() == name.trim())
    }
}

/// The built-in table, first match wins; a pattern without `/` is matched
/// against the file's name, one with `/` against its relative path.
pub const ROLE_TABLE: &[(&str, Role)] = &[
    ("config.json", Role::WeightConfig),
    ("generation_config.json", Role::WeightConfig),
    ("tokenizer*", Role::WeightConfig),
    ("vocab*", Role::WeightConfig),
    ("merges*", Role::WeightConfig),
    ("special_tokens_map.json", Role::WeightConfig),
    ("*.safetensors", Role::Weight),
    ("*.gguf", Role::Weight),
    ("*.bin", Role::Weight),
    ("*.pt", Role::Weight),
    ("*.pth", Role::Weight),
    ("*.onnx", Role::Weight),
    ("*.onnx_data", Role::Weight),
    ("*.ckpt", Role::Weight),
    ("*.h5", Role::Weight),
    ("*.msgpack", Role::Weight),
    ("*.tflite", Role::Weight),
    ("README*", Role::Doc),
    ("LICENSE*", Role::Doc),
    ("LICENCE*", Role::Doc),
    ("NOTICE*", Role::Doc),
    ("*.md", Role::Doc),
    ("*.txt", Role::Doc),
    ("*.pdf", Role::Doc),
    ("*.py", Role::Code),
    ("*.sh", Role::Code),
    ("*.ipynb", Role::Code),
    ("*.jinja", Role::WeightConfig),
    ("*.json", Role::WeightConfig),
    ("*.yaml", Role::WeightConfig),
    ("*.yml", Role::WeightConfig),
    ("*.toml", Role::WeightConfig),
    ("*.model", Role::WeightConfig),
    ("*.tiktoken", Role::WeightConfig),
    ("*.parquet", Role::Dataset),
    ("*.csv", Role::Dataset),
    ("*.tsv", Role::Dataset),
    ("*.jsonl", Role::Dataset),
    ("*.arrow", Role::Dataset),
];

/// A `--role PATTERN=ROLE` override, tried before the table.
#[derive(Clone, Debug)]
pub struct RoleRule {
    text: String,
    pattern: Pattern,
    role: Role,
}

impl RoleRule {
    /// `PATTERN=ROLE`.
    pub fn parse(text: &str) -> Result<RoleRule, String> {
        let (pattern, role) = text
            .rsplit_once('=')
            .ok_or_else(|| "a role is written PATTERN=ROLE (*.bin=weight)".to_owned())?;
        let role = Role::from_name(role).ok_or_else(|| {
            format!("{role:?} is not a role: weight, weight.config, doc, code or dataset")
        })?;
        if pattern.trim().is_empty() {
            return Err("the pattern is empty".to_owned());
        }
        Ok(RoleRule {
            text: pattern.trim().to_owned(),
            pattern: Pattern::new(pattern.trim()),
            role,
        })
    }
}

fn matches(pattern: &Pattern, text: &str, path: &str) -> bool {
    if text.contains('/') {
        pattern.matches(path)
    } else {
        let name = path.rsplit('/').next().unwrap_or(path);
        pattern.matches(name)
    }
}

/// The role of the file at relative `path`: the first override that
/// matches, else the first row of [`ROLE_TABLE`]; `None` when neither does.
pub fn role_of(path: &str, overrides: &[RoleRule]) -> Option<Role> {
    for rule in overrides {
        if matches(&rule.pattern, &rule.text, path) {
            return Some(rule.role);
        }
    }
    ROLE_TABLE
        .iter()
        .find(|(p, _)| matches(&Pattern::new(p), p, path))
        .map(|&(_, role)| role)
}

/// Why an artifact cannot be built. Nothing is sent for one.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// A source cannot be read.
    #[error("cannot read {}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// Two sources give files the same relative path.
    #[error("two files would both be {0:?} in the artifact")]
    Duplicate(String),
    /// A file's role is not in the table.
    #[error("no role for {}: {}", plural(.0.len()), .0.join(", "))]
    NoRole(Vec<String>),
    /// A path is not UTF-8, or not a regular file.
    #[error("{} cannot be pushed: {reason}", path.display())]
    Unsupported {
        /// The path.
        path: PathBuf,
        /// Why.
        reason: &'static str,
    },
    /// No file at all.
    #[error("the sources hold no file")]
    Empty,
}

fn plural(n: usize) -> String {
    if n == 1 {
        "1 file".into()
    } else {
        format!("{n} files")
    }
}

/// A file to push, with its path in the artifact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceFile {
    /// Where it is on disk.
    pub path: PathBuf,
    /// Its path in the artifact (relative, `/`-separated).
    pub filepath: String,
}

/// The files of `sources`: a directory gives all its regular files,
/// recursively, with paths relative to it (entries whose name starts with
/// `.` skipped: `.git`, `.cache`); a file gives itself under its name.
/// Symbolic links are followed to files. Sorted by path.
pub fn collect(sources: &[PathBuf]) -> Result<Vec<SourceFile>, ArtifactError> {
    let mut files = Vec::new();
    for source in sources {
        let io = |source: io::Error, path: &Path| ArtifactError::Io {
            path: path.to_owned(),
            source,
        };
        let meta = std::fs::metadata(source).map_err(|e| io(e, source))?;
        if meta.is_dir() {
            walk(source, "", &mut files)?;
        } else if meta.is_file() {
            let name =
                source
                    .file_name()
                    .and_then(|n| n.to_str())
                    .ok_or(ArtifactError::Unsupported {
                        path: source.clone(),
                        reason: "its name is not UTF-8",
                    })?;
            files.push(SourceFile {
                path: source.clone(),
                filepath: name.to_owned(),
            });
        } else {
            return Err(ArtifactError::Unsupported {
                path: source.clone(),
                reason: "it is neither a file nor a directory",
            });
        }
    }
    files.sort_by(|a, b| a.filepath.cmp(&b.filepath));
    for pair in files.windows(2) {
        if pair[0].filepath == pair[1].filepath {
            return Err(ArtifactError::Duplicate(pair[0].filepath.clone()));
        }
    }
    if files.is_empty() {
        return Err(ArtifactError::Empty);
    }
    Ok(files)
}

fn walk(dir: &Path, prefix: &str, out: &mut Vec<SourceFile>) -> Result<(), ArtifactError> {
    let io = |source: io::Error| ArtifactError::Io {
        path: dir.to_owned(),
        source,
    };
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            return Err(ArtifactError::Unsupported {
                path,
                reason: "its name is not UTF-8",
            });
        };
        if name.starts_with('.') {
            continue;
        }
        let meta = std::fs::metadata(&path).map_err(|source| ArtifactError::Io {
            path: path.clone(),
            source,
        })?;
        let filepath = format!("{prefix}{name}");
        if meta.is_dir() {
            walk(&path, &format!("{filepath}/"), out)?;
        } else if meta.is_file() {
            out.push(SourceFile { path, filepath });
        }
    }
    Ok(())
}

/// What the config's `descriptor` and `config` say of the model; every
/// field is left out when not given.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ModelInfo {
    /// `descriptor.name`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `descriptor.family`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
    /// `config.architecture`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub architecture: Option<String>,
    /// `config.format` (safetensors, gguf…).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// `config.paramSize` (8b…).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub param_size: Option<String>,
    /// `config.precision` (bf16…).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub precision: Option<String>,
    /// `config.quantization` (q4_k_m…).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quantization: Option<String>,
    /// `descriptor.createdAt` and the manifest's creation annotation, as
    /// RFC 3339; without it the artifact is the same whenever it is built.
    #[serde(skip)]
    pub created: Option<String>,
}

/// How to build an artifact.
#[derive(Clone, Debug, Default)]
pub struct ArtifactOptions {
    /// The model's descriptor and config fields.
    pub info: ModelInfo,
    /// Overrides of the role table.
    pub roles: Vec<RoleRule>,
}

/// One layer: a file's bytes as they are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layer {
    /// The file.
    pub source: SourceFile,
    /// Its role.
    pub role: Role,
    /// Its sha256.
    pub digest: Sha256,
    /// Its size.
    pub size: u64,
    /// Its permission bits.
    pub mode: u32,
}

impl Layer {
    /// `sha256:…`.
    pub fn digest_text(&self) -> String {
        format!("sha256:{}", self.digest)
    }
}

/// A built artifact: its layers, and the config and manifest exactly as
/// they are pushed.
#[derive(Clone, Debug)]
pub struct Artifact {
    /// The layers, in manifest order: weight configs, weights, code, docs,
    /// data sets, each sorted by path.
    pub layers: Vec<Layer>,
    /// The config blob.
    pub config: Bytes,
    /// The config's sha256.
    pub config_digest: Sha256,
    /// The manifest.
    pub manifest: Bytes,
    /// The manifest's sha256.
    pub manifest_digest: Sha256,
}

#[derive(Serialize)]
struct Descriptor<'a> {
    #[serde(rename = "mediaType")]
    media_type: &'a str,
    digest: String,
    size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    annotations: Option<BTreeMap<&'static str, String>>,
}

#[derive(Serialize)]
struct Manifest<'a> {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType")]
    media_type: &'a str,
    #[serde(rename = "artifactType")]
    artifact_type: &'a str,
    config: Descriptor<'a>,
    layers: Vec<Descriptor<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    annotations: Option<BTreeMap<&'static str, String>>,
}

#[derive(Serialize)]
struct FileMetadata<'a> {
    name: &'a str,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    mtime: &'a str,
    typeflag: u8,
}

/// The creation time written when `--created` is not given: the epoch, so
/// that the same files give the same manifest on every machine.
const EPOCH: &str = "1970-01-01T00:00:00Z";

/// Hashes the files and builds the artifact. Blocking: it reads every
/// byte (run it on a blocking thread).
pub fn build(files: Vec<SourceFile>, options: &ArtifactOptions) -> Result<Artifact, ArtifactError> {
    let mut unknown = Vec::new();
    let mut roles = Vec::with_capacity(files.len());
    for file in &files {
        match role_of(&file.filepath, &options.roles) {
            Some(role) => roles.push(role),
            None => unknown.push(file.filepath.clone()),
        }
    }
    if !unknown.is_empty() {
        return Err(ArtifactError::NoRole(unknown));
    }
    let mut layers = Vec::with_capacity(files.len());
    for (source, role) in files.into_iter().zip(roles) {
        let (digest, size, mode) = hash(&source.path)?;
        layers.push(Layer {
            source,
            role,
            digest,
            size,
            mode,
        });
    }
    Ok(assemble(layers, &options.info))
}

/// The artifact of layers already hashed: sorted, described, serialized.
pub fn assemble(mut layers: Vec<Layer>, info: &ModelInfo) -> Artifact {
    layers.sort_by(|a, b| (a.role, &a.source.filepath).cmp(&(b.role, &b.source.filepath)));
    let created = info.created.clone();
    let mut descriptor = serde_json::Map::new();
    if let Some(c) = &created {
        descriptor.insert("createdAt".into(), c.clone().into());
    }
    for (key, value) in [("name", &info.name), ("family", &info.family)] {
        if let Some(v) = value {
            descriptor.insert(key.into(), v.clone().into());
        }
    }
    let mut model_config = serde_json::Map::new();
    for (key, value) in [
        ("architecture", &info.architecture),
        ("format", &info.format),
        ("paramSize", &info.param_size),
        ("precision", &info.precision),
        ("quantization", &info.quantization),
    ] {
        if let Some(v) = value {
            model_config.insert(key.into(), v.clone().into());
        }
    }
    let diff_ids: Vec<String> = layers.iter().map(Layer::digest_text).collect();
    // serde_json's maps keep insertion order only with a feature; build
    // the text in a fixed order by hand for the top level.
    let config = format!(
        "{{\"descriptor\":{},\"config\":{},\"modelfs\":{{\"type\":\"layers\",\"diffIds\":{}}}}}",
        serde_json::Value::Object(descriptor),
        serde_json::Value::Object(model_config),
        serde_json::to_string(&diff_ids).unwrap_or_else(|_| "[]".into()),
    );
    let config = Bytes::from(config);
    let config_digest = Sha256::of(&config);
    let mtime = created.as_deref().unwrap_or(EPOCH);
    let layer_descriptors = layers
        .iter()
        .map(|l| {
            let metadata = FileMetadata {
                name: &l.source.filepath,
                mode: l.mode,
                uid: 0,
                gid: 0,
                size: l.size,
                mtime,
                typeflag: b'0',
            };
            let mut annotations = BTreeMap::new();
            annotations.insert(FILEPATH, l.source.filepath.clone());
            annotations.insert(
                FILE_METADATA,
                serde_json::to_string(&metadata).unwrap_or_default(),
            );
            annotations.insert(TITLE, l.source.filepath.clone());
            Descriptor {
                media_type: l.role.media_type(),
                digest: l.digest_text(),
                size: l.size,
                annotations: Some(annotations),
            }
        })
        .collect();
    let manifest = Manifest {
        schema_version: 2,
        media_type: MANIFEST_MEDIA_TYPE,
        artifact_type: ARTIFACT_TYPE,
        config: Descriptor {
            media_type: CONFIG_MEDIA_TYPE,
            digest: format!("sha256:{config_digest}"),
            size: config.len() as u64,
            annotations: None,
        },
        layers: layer_descriptors,
        annotations: created.map(|c| BTreeMap::from([(CREATED, c)])),
    };
    let manifest = Bytes::from(serde_json::to_vec(&manifest).unwrap_or_default());
    let manifest_digest = Sha256::of(&manifest);
    Artifact {
        layers,
        config,
        config_digest,
        manifest,
        manifest_digest,
    }
}

/// The sha256, size and permission bits of a file.
fn hash(path: &Path) -> Result<(Sha256, u64, u32), ArtifactError> {
    use sha2::Digest;
    let io = |source| ArtifactError::Io {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    #[cfg(unix)]
    let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777;
    #[cfg(not(unix))]
    let mode = 0o644;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((Sha256(hasher.finalize().into()), size, mode))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_role_table() {
        let cases = [
            ("model-00001-of-00002.safetensors", Some(Role::Weight)),
            ("model.safetensors.index.json", Some(Role::WeightConfig)),
            ("sub/qwen-Q4_K_M.gguf", Some(Role::Weight)),
            ("pytorch_model.bin", Some(Role::Weight)),
            ("onnx/model.onnx", Some(Role::Weight)),
            ("x.pt", Some(Role::Weight)),
            ("config.json", Some(Role::WeightConfig)),
            ("generation_config.json", Some(Role::WeightConfig)),
            ("tokenizer.json", Some(Role::WeightConfig)),
            ("tokenizer_config.json", Some(Role::WeightConfig)),
            ("tokenizer.model", Some(Role::WeightConfig)),
            ("merges.txt", Some(Role::WeightConfig)),
            ("vocab.json", Some(Role::WeightConfig)),
            ("README.md", Some(Role::Doc)),
            ("LICENSE", Some(Role::Doc)),
            ("docs/usage.md", Some(Role::Doc)),
            ("modeling_qwen.py", Some(Role::Code)),
            ("data/train.parquet", Some(Role::Dataset)),
            ("weights.xyz", None),
        ];
        for (path, role) in cases {
            assert_eq!(role_of(path, &[]), role, "{path}");
        }
        let rules = [
            RoleRule::parse("*.xyz=weight").unwrap(),
            RoleRule::parse("docs/=code").unwrap(),
        ];
        assert_eq!(role_of("a/weights.xyz", &rules), Some(Role::Weight));
        assert_eq!(role_of("docs/usage.md", &rules), Some(Role::Code));
        assert_eq!(role_of("README.md", &rules), Some(Role::Doc));
        assert!(RoleRule::parse("*.bin").is_err());
        assert!(
            RoleRule::parse("*.bin=weights")
                .unwrap_err()
                .contains("not a role")
        );
        assert_eq!(
            Role::Weight.media_type(),
            "application/vnd.cncf.model.weight.v1.raw"
        );
        assert_eq!(
            Role::WeightConfig.media_type(),
            "application/vnd.cncf.model.weight.config.v1.raw"
        );
    }

    fn model_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::create_dir_all(p.join("sub")).unwrap();
        std::fs::create_dir_all(p.join(".git")).unwrap();
        std::fs::write(p.join("model.safetensors"), b"weights").unwrap();
        std::fs::write(p.join("config.json"), b"{}").unwrap();
        std::fs::write(p.join("README.md"), b"# m").unwrap();
        std::fs::write(p.join("sub/b.gguf"), b"more weights").unwrap();
        std::fs::write(p.join("run.py"), b"print()").unwrap();
        std::fs::write(p.join(".git/HEAD"), b"ref").unwrap();
        dir
    }

    #[test]
    fn the_same_files_give_the_same_manifest_in_modctl_order() {
        let dir = model_dir();
        let build_it = |info: &ModelInfo| {
            let files = collect(&[dir.path().to_owned()]).unwrap();
            build(
                files,
                &ArtifactOptions {
                    info: info.clone(),
                    roles: vec![],
                },
            )
            .unwrap()
        };
        let a = build_it(&ModelInfo::default());
        let order: Vec<&str> = a
            .layers
            .iter()
            .map(|l| l.source.filepath.as_str())
            .collect();
        assert_eq!(
            order,
            [
                "config.json",
                "model.safetensors",
                "sub/b.gguf",
                "run.py",
                "README.md"
            ]
        );
        // Rebuilt from a copy with other times: the same bytes.
        let copy = tempfile::tempdir().unwrap();
        for l in &a.layers {
            let to = copy.path().join(&l.source.filepath);
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(&l.source.path, &to).unwrap();
        }
        let files = collect(&[copy.path().to_owned()]).unwrap();
        let b = build(files, &ArtifactOptions::default()).unwrap();
        assert_eq!(a.manifest, b.manifest);
        assert_eq!(a.manifest_digest, b.manifest_digest);

        let manifest: serde_json::Value = serde_json::from_slice(&a.manifest).unwrap();
        assert_eq!(manifest["mediaType"], MANIFEST_MEDIA_TYPE);
        assert_eq!(manifest["artifactType"], ARTIFACT_TYPE);
        assert_eq!(manifest["config"]["mediaType"], CONFIG_MEDIA_TYPE);
        assert!(
            manifest.get("annotations").is_none(),
            "no time without --created"
        );
        let layer = &manifest["layers"][2];
        assert_eq!(layer["annotations"][FILEPATH], "sub/b.gguf");
        assert_eq!(layer["annotations"][TITLE], "sub/b.gguf");
        assert_eq!(layer["size"], 12);
        let meta: serde_json::Value =
            serde_json::from_str(layer["annotations"][FILE_METADATA].as_str().unwrap()).unwrap();
        assert_eq!(meta["name"], "sub/b.gguf");
        assert_eq!(meta["typeflag"], 48);
        let config: serde_json::Value = serde_json::from_slice(&a.config).unwrap();
        assert_eq!(config["modelfs"]["type"], "layers");
        assert_eq!(config["modelfs"]["diffIds"][1], a.layers[1].digest_text());
        assert_eq!(a.config_digest, Sha256::of(&a.config));

        let created = build_it(&ModelInfo {
            name: Some("m".into()),
            format: Some("safetensors".into()),
            created: Some("2026-01-02T03:04:05Z".into()),
            ..ModelInfo::default()
        });
        let manifest: serde_json::Value = serde_json::from_slice(&created.manifest).unwrap();
        assert_eq!(manifest["annotations"][CREATED], "2026-01-02T03:04:05Z");
        let config: serde_json::Value = serde_json::from_slice(&created.config).unwrap();
        assert_eq!(config["descriptor"]["createdAt"], "2026-01-02T03:04:05Z");
        assert_eq!(config["descriptor"]["name"], "m");
        assert_eq!(config["config"]["format"], "safetensors");
    }

    #[test]
    fn bad_sources_are_refused_before_anything_is_read() {
        let dir = model_dir();
        std::fs::write(dir.path().join("blob.xyz"), b"?").unwrap();
        let files = collect(&[dir.path().to_owned()]).unwrap();
        let e = build(files, &ArtifactOptions::default()).unwrap_err();
        assert!(
            matches!(&e, ArtifactError::NoRole(f) if f == &["blob.xyz"]),
            "{e:?}"
        );
        let dup = collect(&[dir.path().join("config.json"), dir.path().to_owned()]).unwrap_err();
        assert!(matches!(dup, ArtifactError::Duplicate(p) if p == "config.json"));
        let missing = collect(&[dir.path().join("nope")]).unwrap_err();
        assert!(matches!(missing, ArtifactError::Io { .. }));
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(
            collect(&[empty.path().to_owned()]),
            Err(ArtifactError::Empty)
        ));
    }
}
