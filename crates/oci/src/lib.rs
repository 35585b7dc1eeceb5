//! OCI registries for backstop: push model files as a ModelPack artifact,
//! resumably.
//!
//! - [`Reference`]: `oci://REGISTRY/REPOSITORY:TAG` or `…@sha256:…`,
//!   normalised as docker does, with typed errors for malformed ones.
//! - [`CredentialFiles`]: credentials where docker, podman and oras keep
//!   them; [`Registry`]: anonymous, basic or bearer-token auth (tokens
//!   fetched from the `WWW-Authenticate` realm with the push's scope and
//!   refreshed when they expire or are refused mid-push), and one rate
//!   limit wait shared by every request to the registry.
//! - [`collect`], [`build`]: a directory's files become one raw layer
//!   each, with media types by role ([`ROLE_TABLE`]), a config listing
//!   their digests, and a manifest that is the same for the same files.
//! - [`Pusher`]: each blob on its own — `HEAD` first, a cross-repository
//!   mount, one `PUT` for a small blob, `PATCH` chunks for a large one
//!   with every `Range` checked, a broken session continued from the
//!   offset the registry holds (within a run, and across runs through a
//!   [`SessionStore`]), a lost closing answer checked with `HEAD` — then
//!   the manifest.
//! - [`parse_manifest`], [`Registry::manifest`]: the pull direction's
//!   first step — a manifest read within [`MAX_MANIFEST`], checked against
//!   the reference's digest, each layer given a confined path (the legacy
//!   `org.cnai` annotations read too) and a format.
//!
//! Every request goes through [`backstop_http`] and its waits through
//! [`backstop_core`]'s policy.
//!
//! ```no_run
//! # async fn demo() -> Result<(), backstop_oci::Error> {
//! use std::path::PathBuf;
//! use backstop_oci::{ArtifactOptions, CredentialFiles, Pusher, Reference, Registry, build, collect};
//!
//! let reference: Reference = "oci://127.0.0.1:5000/models/qwen:0.6b".parse()?;
//! let artifact = build(collect(&[PathBuf::from("Qwen3-0.6B")])?, &ArtifactOptions::default())?;
//! let credentials = CredentialFiles::from_env().lookup(reference.registry())?;
//! let registry = Registry::new(backstop_http::Client::new()?, reference.registry(), true, credentials)?;
//! let summary = Pusher::new(&registry, &reference).run(&artifact).await;
//! println!("pushed sha256:{}: {}", summary.digest, summary.succeeded());
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

mod credentials;
mod error;
mod manifest;
mod modelpack;
mod pull;
mod push;
mod reference;
mod registry;
mod session;
mod unpacked;
mod untar;
mod upload;

pub use credentials::{CredentialFiles, Credentials, CredentialsError};
pub use error::{Error, Fault};
pub use manifest::{
    LEGACY_FILEPATH, LayerFormat, MAX_MANIFEST, ManifestError, ModelManifest, PullLayer,
    parse_manifest,
};
pub use modelpack::{
    ARTIFACT_TYPE, Artifact, ArtifactError, ArtifactOptions, CONFIG_MEDIA_TYPE, CREATED,
    FILE_METADATA, FILEPATH, Layer, MANIFEST_MEDIA_TYPE, ModelInfo, ROLE_TABLE, Role, RoleRule,
    SourceFile, TITLE, assemble, build, collect, role_of,
};
pub use pull::{OciSource, TAR_SUFFIX, pull_items};
pub use push::{BlobReport, PushOptions, PushProgress, PushSummary, Pusher};
pub use reference::{DEFAULT_TAG, DOCKER_HUB, Reference, ReferenceError};
pub use registry::{Answer, Call, Challenge, Registry, pull_scope, push_scope};
pub use session::{SessionRecord, SessionStore};
pub use unpacked::UnpackedLayer;
pub use untar::{UnpackError, unpack};
pub use upload::{Blob, BlobOutcome, Content, DEFAULT_CHUNK_SIZE, UploadOptions, Uploader};
