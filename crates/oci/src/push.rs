//! Pushing an artifact: every blob on its own, a few at once, then the
//! manifest once they are all there.

use std::sync::atomic::{AtomicBool, Ordering};

use backstop_core::{Policy, RetryError};
use backstop_http::{Method, StatusCode};
use backstop_transfer::{Progress, Sha256};
use futures_util::future::join_all;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::modelpack::{Artifact, MANIFEST_MEDIA_TYPE};
use crate::registry::{Call, Registry, push_scope};
use crate::upload::{Blob, BlobOutcome, Content, UploadOptions, Uploader};
use crate::{Error, Fault};

/// Told about a push as it goes: bytes and retries through
/// [`Progress`] (`file` is the blob's index in [`PushSummary::blobs`]), and
/// each blob's end.
pub trait PushProgress: Progress {
    /// Blob `index` is done, one way or another.
    fn finished(&self, index: usize, name: &str, outcome: &BlobOutcome);
}

impl PushProgress for () {
    fn finished(&self, _: usize, _: &str, _: &BlobOutcome) {}
}

/// How to push.
#[derive(Clone, Debug)]
pub struct PushOptions {
    /// How each blob is uploaded. Its policy's attempt timeout is replaced
    /// by [`Policy::transfer_attempt_timeout`] of each blob's size when
    /// `timeout_by_size` is set.
    pub upload: UploadOptions,
    /// Whether each blob's attempt timeout comes from its size.
    pub timeout_by_size: bool,
    /// Blobs pushed at once (at least 1).
    pub jobs: usize,
    /// The retry policy of the manifest and the first request.
    pub api_policy: Policy,
}

impl Default for PushOptions {
    fn default() -> Self {
        PushOptions {
            upload: UploadOptions::default(),
            timeout_by_size: true,
            jobs: 4,
            api_policy: Policy::api(),
        }
    }
}

/// One blob's end.
#[derive(Debug)]
pub struct BlobReport {
    /// The file's path in the artifact, or `config`.
    pub name: String,
    /// Its size.
    pub size: u64,
    /// How it ended.
    pub outcome: BlobOutcome,
}

/// How a push ended.
#[derive(Debug)]
pub struct PushSummary {
    /// Every blob: the layers in manifest order, then the config.
    pub blobs: Vec<BlobReport>,
    /// The manifest's push: `None` when not tried (a blob is missing);
    /// the error of the first request when the registry could not be
    /// reached at all (then `blobs` is empty).
    pub manifest: Option<Result<(), Error>>,
    /// The manifest's digest.
    pub digest: Sha256,
}

impl PushSummary {
    /// Whether the artifact is in the registry under its tag.
    pub fn succeeded(&self) -> bool {
        matches!(self.manifest, Some(Ok(())))
    }

    /// Whether the push was stopped (Ctrl-C) with blobs unfinished.
    pub fn interrupted(&self) -> bool {
        self.blobs
            .iter()
            .any(|b| matches!(b.outcome, BlobOutcome::Interrupted { .. }))
    }

    /// Bytes sent in this run over every blob, resent ones included.
    pub fn sent(&self) -> u64 {
        self.blobs.iter().map(|b| b.outcome.sent()).sum()
    }

    /// The failures: each blob's, then the manifest's.
    pub fn failures(&self) -> impl Iterator<Item = &Error> {
        let blobs = self.blobs.iter().filter_map(|b| match &b.outcome {
            BlobOutcome::Failed(e) => Some(e),
            _ => None,
        });
        let manifest = match &self.manifest {
            Some(Err(e)) => Some(e),
            _ => None,
        };
        blobs.chain(manifest)
    }

    /// Whether every failure was temporary (trying later may succeed).
    pub fn failures_temporary(&self) -> bool {
        let mut any = false;
        for e in self.failures() {
            any = true;
            if !e.is_temporary() {
                return false;
            }
        }
        any
    }
}

/// Pushes an artifact to one repository under one tag.
///
/// ```no_run
/// # async fn demo() -> Result<(), backstop_oci::Error> {
/// use std::path::PathBuf;
/// use backstop_oci::{ArtifactOptions, PushOptions, Pusher, Reference, Registry, build, collect};
///
/// let reference: Reference = "oci://127.0.0.1:5000/models/qwen:0.6b".parse()?;
/// let files = collect(&[PathBuf::from("models/Qwen3-0.6B")])?;
/// let artifact = build(files, &ArtifactOptions::default())?;
/// let client = backstop_http::Client::new()?;
/// let registry = Registry::new(client, reference.registry(), true, None)?;
/// let summary = Pusher::new(&registry, &reference).run(&artifact).await;
/// assert!(summary.succeeded());
/// # Ok(()) }
/// ```
pub struct Pusher<'a> {
    registry: &'a Registry,
    repository: &'a str,
    tag: String,
    options: PushOptions,
    progress: &'a dyn PushProgress,
    cancel: CancellationToken,
}

impl<'a> Pusher<'a> {
    /// A push of `reference`'s repository and tag (its digest, when it
    /// names one) with the default options.
    pub fn new(registry: &'a Registry, reference: &'a crate::Reference) -> Self {
        Pusher {
            registry,
            repository: reference.repository(),
            tag: reference.manifest_ref(),
            options: PushOptions::default(),
            progress: &(),
            cancel: CancellationToken::new(),
        }
    }

    /// Other options.
    pub fn options(mut self, options: PushOptions) -> Self {
        self.options = options;
        self
    }

    /// Shows progress.
    pub fn progress(mut self, progress: &'a dyn PushProgress) -> Self {
        self.progress = progress;
        self
    }

    /// Stops between chunks when `token` is cancelled, recording each
    /// unfinished session for the next run.
    pub fn cancel_on(mut self, token: CancellationToken) -> Self {
        self.cancel = token;
        self
    }

    /// Pushes every blob of `artifact`, each retried on its own (one's
    /// failure never stops another; credentials refused for one stop
    /// those not started yet), then the manifest when all are there.
    pub async fn run(&self, artifact: &Artifact) -> PushSummary {
        let mut blobs: Vec<Blob> = artifact
            .layers
            .iter()
            .map(|l| Blob {
                name: l.source.filepath.clone(),
                digest: l.digest,
                size: l.size,
                content: Content::File(l.source.path.clone()),
            })
            .collect();
        blobs.push(Blob {
            name: "config".to_owned(),
            digest: artifact.config_digest,
            size: artifact.config.len() as u64,
            content: Content::Memory(artifact.config.clone()),
        });
        let scope = push_scope(self.repository);
        let mut reports: Vec<BlobReport> = Vec::with_capacity(blobs.len());
        // One request first: it learns how the registry authenticates, so
        // no chunk goes out only to be refused for a missing token.
        if let Err(error) = self.retried(|| self.registry.ping(&scope)).await {
            return PushSummary {
                blobs: reports,
                manifest: Some(Err(error)),
                digest: artifact.manifest_digest,
            };
        }
        let refused = AtomicBool::new(false);
        let slots = Semaphore::new(self.options.jobs.max(1));
        let outcomes = join_all(blobs.iter().enumerate().map(|(index, blob)| {
            let scope = &scope;
            let refused = &refused;
            let slots = &slots;
            async move {
                let _permit = slots.acquire().await;
                let outcome = if refused.load(Ordering::Acquire) {
                    BlobOutcome::Failed(Error::Stopped {
                        host: self.registry.host().to_owned(),
                    })
                } else if self.cancel.is_cancelled() {
                    BlobOutcome::Interrupted { offset: 0, sent: 0 }
                } else {
                    let mut upload = self.options.upload.clone();
                    if self.options.timeout_by_size {
                        upload.policy = upload
                            .policy
                            .with_attempt_timeout(Policy::transfer_attempt_timeout(blob.size));
                    }
                    Uploader {
                        registry: self.registry,
                        repository: self.repository,
                        scope,
                        options: &upload,
                        progress: self.progress,
                        cancel: &self.cancel,
                    }
                    .push(index, blob)
                    .await
                };
                if let BlobOutcome::Failed(e) = &outcome
                    && e.ending() == Some(backstop_core::Ending::Auth)
                {
                    refused.store(true, Ordering::Release);
                }
                self.progress.finished(index, &blob.name, &outcome);
                outcome
            }
        }))
        .await;
        for (blob, outcome) in blobs.iter().zip(outcomes) {
            reports.push(BlobReport {
                name: blob.name.clone(),
                size: blob.size,
                outcome,
            });
        }
        let manifest = if reports.iter().all(|r| r.outcome.is_success()) {
            Some(self.put_manifest(artifact, &scope).await)
        } else {
            None
        };
        PushSummary {
            blobs: reports,
            manifest,
            digest: artifact.manifest_digest,
        }
    }

    /// Runs `op` under the API policy, cancelled with the push.
    async fn retried<T, F, Fut>(&self, mut op: F) -> Result<T, Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Fault>>,
    {
        self.options
            .api_policy
            .retry(|_| op())
            .cancel_on(&self.cancel)
            .run()
            .await
            .map_err(|source: RetryError<Fault>| Error::Registry {
                host: self.registry.host().to_owned(),
                source: Box::new(source),
            })
    }

    /// `PUT /v2/<name>/manifests/<tag>`, unless the tag already names
    /// this very manifest.
    async fn put_manifest(&self, artifact: &Artifact, scope: &str) -> Result<(), Error> {
        let url = self
            .registry
            .url(&format!("v2/{}/manifests/{}", self.repository, self.tag))
            .map_err(Error::Invalid)?;
        let digest = format!("sha256:{}", artifact.manifest_digest);
        self.retried(|| async {
            let head = self
                .registry
                .send(Call {
                    method: Method::HEAD,
                    url: url.clone(),
                    scope,
                    body: None,
                    headers: vec![("accept", MANIFEST_MEDIA_TYPE.to_owned())],
                })
                .await?;
            if head.status().is_success() && head.header("docker-content-digest") == Some(&digest) {
                return Ok(());
            }
            let answer = self
                .registry
                .send(Call {
                    method: Method::PUT,
                    url: url.clone(),
                    scope,
                    body: Some(artifact.manifest.clone().into()),
                    headers: vec![("content-type", MANIFEST_MEDIA_TYPE.to_owned())],
                })
                .await?;
            match answer.status() {
                StatusCode::CREATED | StatusCode::OK | StatusCode::ACCEPTED => Ok(()),
                _ => Err(answer.refusal().await),
            }
        })
        .await
    }
}
