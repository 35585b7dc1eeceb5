//! Pushes against a real registry (distribution 2.8, Debian's
//! `docker-registry`), with faults injected between client and registry.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backstop_core::{Ending, Policy};
use backstop_faultserver::{DockerRegistry, HttpProxy, Nginx, Proxy};
use backstop_oci::{
    Artifact, ArtifactOptions, BlobOutcome, Credentials, PushOptions, PushProgress, PushSummary,
    Pusher, Reference, Registry, SessionStore, UploadOptions, build, collect,
};
use backstop_transfer::{Event, MinProgress, Progress};
use tokio_util::sync::CancellationToken;

const MIB: u64 = 1 << 20;

/// A model directory: one large weight (chunked), two small files (one PUT
/// each).
fn model(big: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let weights: Vec<u8> = (0..big).map(|i| (i * 31 % 251) as u8).collect();
    std::fs::write(dir.path().join("model.safetensors"), weights).unwrap();
    std::fs::write(dir.path().join("config.json"), br#"{"model_type":"test"}"#).unwrap();
    std::fs::write(dir.path().join("README.md"), b"# test model\n").unwrap();
    dir
}

fn artifact(dir: &Path) -> Artifact {
    build(
        collect(&[dir.to_owned()]).unwrap(),
        &ArtifactOptions::default(),
    )
    .unwrap()
}

fn options(chunk: u64, sessions: Option<SessionStore>) -> PushOptions {
    let quick = Policy::transfer(0)
        .with_initial_delay(Duration::from_millis(10))
        .with_max_delay(Duration::from_millis(50))
        .with_max_attempts(6);
    PushOptions {
        upload: UploadOptions {
            chunk_size: chunk,
            mount_from: None,
            policy: quick.clone(),
            sessions,
            min_progress: None,
        },
        timeout_by_size: true,
        jobs: 3,
        api_policy: quick,
    }
}

/// Counts bytes, keeps retries, and cancels a token once `stop_after`
/// bytes are confirmed.
#[derive(Default)]
struct Recorder {
    confirmed: AtomicU64,
    stop_after: Option<u64>,
    token: CancellationToken,
    retries: Mutex<Vec<(String, Duration, bool)>>,
    resumes: Mutex<Vec<(u64, Duration)>>,
    /// The bytes of each advance, in order.
    advances: Mutex<Vec<u64>>,
}

impl Progress for Recorder {
    fn advance(&self, _: usize, bytes: u64) {
        self.advances.lock().unwrap().push(bytes);
        let total = self.confirmed.fetch_add(bytes, Ordering::SeqCst) + bytes;
        if self.stop_after.is_some_and(|n| total >= n) {
            self.token.cancel();
        }
    }
    fn event(&self, _: usize, event: Event<'_>) {
        match event {
            Event::Retry {
                reason,
                delay,
                server_wait,
                ..
            } => self
                .retries
                .lock()
                .unwrap()
                .push((reason.to_owned(), delay, server_wait)),
            Event::Resume { at, delay, .. } => self.resumes.lock().unwrap().push((at, delay)),
            _ => {}
        }
    }
}

impl PushProgress for Recorder {
    fn finished(&self, _: usize, _: &str, _: &BlobOutcome) {}
}

async fn push(
    addr: &str,
    dir: &Path,
    options: PushOptions,
    credentials: Option<Credentials>,
    progress: &Recorder,
) -> PushSummary {
    let reference: Reference = format!("oci://{addr}/models/test:v1").parse().unwrap();
    let client = backstop_http::Client::new().unwrap();
    let registry = Registry::new(client, reference.registry(), true, credentials).unwrap();
    Pusher::new(&registry, &reference)
        .options(options)
        .progress(progress)
        .cancel_on(progress.token.clone())
        .run(&artifact(dir))
        .await
}

/// What the registry serves for `path`, read straight from it.
async fn get(registry: &DockerRegistry, path: &str, auth: Option<&str>) -> Vec<u8> {
    let client = backstop_http::Client::new().unwrap();
    let mut request = client
        .get(&registry.url(path))
        .header("accept", backstop_oci::MANIFEST_MEDIA_TYPE);
    if let Some(auth) = auth {
        request = request.header("authorization", auth);
    }
    request.bytes().await.unwrap().bytes.to_vec()
}

/// The manifest and every blob are in the registry, byte for byte.
async fn assert_pushed(registry: &DockerRegistry, dir: &Path, auth: Option<&str>) {
    let artifact = artifact(dir);
    let manifest = get(registry, "/v2/models/test/manifests/v1", auth).await;
    assert_eq!(
        manifest,
        artifact.manifest.to_vec(),
        "the manifest as built"
    );
    for layer in &artifact.layers {
        let blob = get(
            registry,
            &format!("/v2/models/test/blobs/{}", layer.digest_text()),
            auth,
        )
        .await;
        assert_eq!(
            blob,
            std::fs::read(&layer.source.path).unwrap(),
            "{}",
            layer.source.filepath
        );
    }
    let config = get(
        registry,
        &format!("/v2/models/test/blobs/sha256:{}", artifact.config_digest),
        auth,
    )
    .await;
    assert_eq!(config, artifact.config.to_vec());
}

fn total(dir: &Path) -> u64 {
    let a = artifact(dir);
    a.layers.iter().map(|l| l.size).sum::<u64>() + a.config.len() as u64
}

fn assert_ok(summary: &PushSummary) {
    let failures: Vec<String> = summary.failures().map(|e| format!("{e:?}")).collect();
    assert!(summary.succeeded(), "push failed: {failures:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_is_pushed_whole_and_pushing_it_again_sends_nothing() {
    let registry = DockerRegistry::start();
    let dir = model((3 * MIB + MIB / 2) as usize);
    let addr = registry.addr().to_string();
    let summary = push(
        &addr,
        dir.path(),
        options(MIB, None),
        None,
        &Recorder::default(),
    )
    .await;
    assert_ok(&summary);
    assert_eq!(summary.sent(), total(dir.path()), "every byte once");
    assert_pushed(&registry, dir.path(), None).await;

    let again = push(
        &addr,
        dir.path(),
        options(MIB, None),
        None,
        &Recorder::default(),
    )
    .await;
    assert_ok(&again);
    assert_eq!(again.sent(), 0);
    assert!(
        again
            .blobs
            .iter()
            .all(|b| matches!(b.outcome, BlobOutcome::AlreadyThere)),
        "{:?}",
        again.blobs
    );
    assert_eq!(again.digest, summary.digest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_credentials_are_sent_and_refused_ones_stop_the_push() {
    let registry = DockerRegistry::with_user("alice", "s3cret");
    let dir = model(MIB as usize);
    let addr = registry.addr().to_string();
    let wrong = Credentials {
        username: "alice".into(),
        password: backstop_core::Secret::new("wrong"),
    };
    let refused = push(
        &addr,
        dir.path(),
        options(MIB, None),
        Some(wrong),
        &Recorder::default(),
    )
    .await;
    let error = match &refused.manifest {
        Some(Err(e)) => e,
        other => panic!("expected a refusal, got {other:?}"),
    };
    assert_eq!(error.ending(), Some(Ending::Auth), "{error}");
    assert!(!error.to_string().contains("wrong"), "{error}");
    assert!(refused.blobs.is_empty(), "nothing was tried");

    let right = Credentials {
        username: "alice".into(),
        password: backstop_core::Secret::new("s3cret"),
    };
    let summary = push(
        &addr,
        dir.path(),
        options(MIB, None),
        Some(right.clone()),
        &Recorder::default(),
    )
    .await;
    assert_ok(&summary);
    assert_pushed(&registry, dir.path(), Some(right.basic().expose())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_cut_behind_a_buffering_proxy_costs_that_chunk_alone() {
    let registry = DockerRegistry::start();
    let nginx = Nginx::reverse_proxy(registry.addr());
    let link = Proxy::start(nginx.addr());
    let dir = model((16 * MIB) as usize);
    link.cut_upload_after(7 * MIB + MIB / 2);
    let recorder = Recorder::default();
    let summary = push(
        &link.addr().to_string(),
        dir.path(),
        options(MIB, None),
        None,
        &recorder,
    )
    .await;
    assert_ok(&summary);
    assert!(link.connections() > 1, "the link was cut");
    let blob_bytes = total(dir.path());
    assert!(
        summary.sent() <= blob_bytes + blob_bytes / 20 + MIB,
        "sent {} for {blob_bytes}",
        summary.sent()
    );
    let resumes = recorder.resumes.lock().unwrap().clone();
    assert!(
        resumes.iter().any(|&(at, _)| at > 0),
        "continued where the registry stood: {resumes:?}"
    );
    assert_pushed(&registry, dir.path(), None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_torn_straight_against_distribution_gets_a_new_session() {
    let registry = DockerRegistry::start();
    let link = Proxy::start(registry.addr());
    let dir = model((6 * MIB) as usize);
    link.cut_upload_after(3 * MIB + MIB / 2);
    let summary = push(
        &link.addr().to_string(),
        dir.path(),
        options(MIB, None),
        None,
        &Recorder::default(),
    )
    .await;
    assert_ok(&summary);
    assert!(link.connections() > 1, "the link was cut");
    assert_pushed(&registry, dir.path(), None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_on_the_closing_put_is_retried() {
    let registry = DockerRegistry::start();
    let proxy = HttpProxy::start(registry.addr());
    let dir = model((2 * MIB + 1) as usize);
    proxy.fail_next("PUT", "digest=", 503, &[]);
    let recorder = Recorder::default();
    let summary = push(
        &proxy.addr().to_string(),
        dir.path(),
        options(MIB, None),
        None,
        &recorder,
    )
    .await;
    assert_ok(&summary);
    assert_eq!(proxy.matched(), 1);
    let retries = recorder.retries.lock().unwrap().clone();
    assert!(
        retries.iter().any(|(r, _, _)| r == "HTTP 503"),
        "{retries:?}"
    );
    assert_pushed(&registry, dir.path(), None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_closing_answer_is_checked_with_head_and_nothing_is_sent_again() {
    let registry = DockerRegistry::start();
    let proxy = HttpProxy::start(registry.addr());
    let dir = model((3 * MIB) as usize);
    proxy.lose_next("PUT", "digest=");
    let summary = push(
        &proxy.addr().to_string(),
        dir.path(),
        options(MIB, None),
        None,
        &Recorder::default(),
    )
    .await;
    assert_ok(&summary);
    assert_eq!(proxy.matched(), 1, "an answer was lost");
    assert_eq!(summary.sent(), total(dir.path()), "no byte sent twice");
    assert_pushed(&registry, dir.path(), None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_is_waited_out_for_as_long_as_the_registry_asks() {
    let registry = DockerRegistry::start();
    let proxy = HttpProxy::start(registry.addr());
    let dir = model((3 * MIB) as usize);
    proxy.fail_next("PATCH", "/blobs/uploads/", 429, &[("retry-after", "1")]);
    let recorder = Recorder::default();
    let summary = push(
        &proxy.addr().to_string(),
        dir.path(),
        options(MIB, None),
        None,
        &recorder,
    )
    .await;
    assert_ok(&summary);
    let retries = recorder.retries.lock().unwrap().clone();
    assert!(
        retries.contains(&("HTTP 429".to_owned(), Duration::from_secs(1), true)),
        "{retries:?}"
    );
    assert_pushed(&registry, dir.path(), None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_stopped_between_chunks_continues_in_the_next_run_after_a_registry_restart() {
    let mut registry = DockerRegistry::start();
    let dir = model((8 * MIB) as usize);
    let state = tempfile::tempdir().unwrap();
    let sessions = || Some(SessionStore::new(state.path().join("uploads")));
    let addr = registry.addr().to_string();
    let stopper = Recorder {
        stop_after: Some(4 * MIB),
        ..Recorder::default()
    };
    let first = push(&addr, dir.path(), options(MIB, sessions()), None, &stopper).await;
    assert!(first.interrupted(), "{:?}", first.blobs);
    let held = first
        .blobs
        .iter()
        .find_map(|b| match b.outcome {
            BlobOutcome::Interrupted { offset, .. } if offset > 0 => Some(offset),
            _ => None,
        })
        .expect("the large blob stopped part way");
    assert!(first.manifest.is_none());

    registry.restart();
    let second = push(
        &addr,
        dir.path(),
        options(MIB, sessions()),
        None,
        &Recorder::default(),
    )
    .await;
    assert_ok(&second);
    let big = second
        .blobs
        .iter()
        .find(|b| b.name == "model.safetensors")
        .unwrap();
    match big.outcome {
        BlobOutcome::Uploaded { sent, resumed_from } => {
            assert_eq!(resumed_from, held, "continued from the registry's offset");
            assert_eq!(sent, 8 * MIB - held, "only the rest was sent");
        }
        ref other => panic!("{other:?}"),
    }
    assert_eq!(
        std::fs::read_dir(state.path().join("uploads"))
            .unwrap()
            .count(),
        0,
        "finished sessions are forgotten"
    );
    assert_pushed(&registry, dir.path(), None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_restarted_mid_push_is_waited_for_and_the_session_continues() {
    let mut registry = DockerRegistry::start();
    let proxy = HttpProxy::start(registry.addr());
    let dir = model((6 * MIB) as usize);
    // Slow chunks, so that the restart lands mid-push.
    proxy.delay_all("PATCH", "/blobs/uploads/", Duration::from_millis(100));
    let recorder = Recorder::default();
    let addr = proxy.addr().to_string();
    // Enough attempts to outlast the restart (about 10 s of waiting).
    let mut patient = options(MIB, None);
    patient.upload.policy = patient
        .upload
        .policy
        .with_max_attempts(60)
        .with_max_delay(Duration::from_millis(200));
    let pushing = push(&addr, dir.path(), patient, None, &recorder);
    let restart = async {
        while recorder.confirmed.load(Ordering::SeqCst) < 2 * MIB {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::task::block_in_place(|| registry.restart());
    };
    let (summary, ()) = tokio::join!(pushing, restart);
    assert_ok(&summary);
    let big = summary
        .blobs
        .iter()
        .find(|b| b.name == "model.safetensors")
        .unwrap();
    assert!(
        big.outcome.sent() <= 7 * MIB,
        "continued, not restarted: sent {}",
        big.outcome.sent()
    );
    assert_pushed(&registry, dir.path(), None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_refused_for_one_blob_stop_the_blobs_not_started() {
    let registry = DockerRegistry::start();
    let proxy = HttpProxy::start(registry.addr());
    let dir = model(MIB as usize);
    let first = artifact(dir.path()).layers[0].digest_text();
    proxy.fail_next("HEAD", &first, 403, &[]);
    let mut one_at_a_time = options(MIB, None);
    one_at_a_time.jobs = 1;
    let summary = push(
        &proxy.addr().to_string(),
        dir.path(),
        one_at_a_time,
        None,
        &Recorder::default(),
    )
    .await;
    assert!(summary.manifest.is_none(), "not pushed with a blob missing");
    match &summary.blobs[0].outcome {
        BlobOutcome::Failed(e) => assert_eq!(e.ending(), Some(Ending::Auth), "{e}"),
        other => panic!("{other:?}"),
    }
    for blob in &summary.blobs[1..] {
        assert!(
            matches!(
                &blob.outcome,
                BlobOutcome::Failed(backstop_oci::Error::Stopped { .. })
            ),
            "{}: {:?}",
            blob.name,
            blob.outcome
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_download_cut_midway_is_resumed_by_the_pull_that_follows() {
    // The pull side's transfer engine is backstop_transfer's; here only
    // that a registry's blob URL and digest are what it needs.
    let registry = DockerRegistry::start();
    let dir = model((3 * MIB) as usize);
    let addr = registry.addr().to_string();
    assert_ok(
        &push(
            &addr,
            dir.path(),
            options(MIB, None),
            None,
            &Recorder::default(),
        )
        .await,
    );
    let link = Proxy::cutting(registry.addr(), MIB);
    let (out, summary) = pull_through(&link.addr().to_string()).await;
    assert!(summary.succeeded(), "{:?}", summary.files);
    assert!(link.connections() > 3, "the link was cut");
    assert_eq!(
        std::fs::read(out.path().join("model.safetensors")).unwrap(),
        std::fs::read(dir.path().join("model.safetensors")).unwrap()
    );
}

/// The files of `oci://ADDR/models/test:v1` pulled into a new directory.
async fn pull_through(addr: &str) -> (tempfile::TempDir, backstop_transfer::Summary) {
    let source: backstop_oci::OciSource = format!("oci://{addr}/models/test:v1").parse().unwrap();
    let client = backstop_http::Client::new().unwrap();
    let through =
        Arc::new(Registry::new(client.clone(), source.reference.registry(), true, None).unwrap());
    let items = backstop_oci::pull_items(&through, &source, &Policy::api())
        .await
        .unwrap();
    let out = tempfile::tempdir().unwrap();
    let plan = backstop_transfer::Plan::new(out.path(), items).unwrap();
    let summary = backstop_transfer::Pull::new(client)
        .run(&plan)
        .await
        .unwrap();
    (out, summary)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_with_a_flipped_byte_is_fetched_again_and_the_second_copy_kept() {
    let registry = DockerRegistry::start();
    let dir = model((3 * MIB) as usize);
    let addr = registry.addr().to_string();
    assert_ok(
        &push(
            &addr,
            dir.path(),
            options(MIB, None),
            None,
            &Recorder::default(),
        )
        .await,
    );
    let proxy = HttpProxy::start(registry.addr());
    let weights = std::fs::read(dir.path().join("model.safetensors")).unwrap();
    let digest = backstop_transfer::Sha256::of(&weights);
    let blob = format!("/blobs/sha256:{digest}");
    proxy.flip_next("GET", &blob);
    let (out, summary) = pull_through(&proxy.addr().to_string()).await;
    assert!(summary.succeeded(), "{:?}", summary.files);
    assert_eq!(proxy.matched(), 1, "one copy was corrupted on the way");
    assert_eq!(
        std::fs::read(out.path().join("model.safetensors")).unwrap(),
        weights
    );

    // A registry that serves the same wrong bytes every time: refused for
    // good, nothing left in place.
    proxy.flip_all("GET", &blob);
    let (out, summary) = pull_through(&proxy.addr().to_string()).await;
    let weights_report = summary
        .files
        .iter()
        .find(|f| f.name == "model.safetensors")
        .unwrap();
    match &weights_report.outcome {
        backstop_transfer::Outcome::Failed(backstop_transfer::FileError::Digest {
            expected,
            repeated: true,
            ..
        }) => assert_eq!(*expected, digest),
        other => panic!("expected a repeated digest mismatch, got {other:?}"),
    }
    assert!(
        !summary.failures_temporary(),
        "a repeated mismatch is permanent"
    );
    assert!(!out.path().join("model.safetensors").exists());
    assert_eq!(
        std::fs::read(out.path().join("config.json")).unwrap(),
        std::fs::read(dir.path().join("config.json")).unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_refused_as_too_large_are_sent_smaller() {
    let registry = DockerRegistry::start();
    let proxy = HttpProxy::start(registry.addr());
    let dir = model((3 * MIB) as usize);
    let middle: Vec<u8> = (0..(3 * MIB / 2) as usize).map(|i| (i % 7) as u8).collect();
    std::fs::write(dir.path().join("extra.bin"), &middle).unwrap();
    let whole = backstop_transfer::Sha256::of(&middle);
    // A cap like GHCR's on the first PATCH, and on a whole-blob PUT.
    proxy.fail_next("PATCH", "/blobs/uploads/", 413, &[]);
    proxy.fail_next("PUT", &format!("digest=sha256%3A{whole}"), 413, &[]);
    let recorder = Recorder::default();
    let summary = push(
        &proxy.addr().to_string(),
        dir.path(),
        options(2 * MIB, None),
        None,
        &recorder,
    )
    .await;
    assert_ok(&summary);
    assert_eq!(proxy.matched(), 2);
    let retries = recorder.retries.lock().unwrap().clone();
    assert!(
        retries.iter().any(|(r, _, _)| r == "chunk too large"),
        "{retries:?}"
    );
    assert_pushed(&registry, dir.path(), None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blobs_another_repository_holds_are_mounted_not_sent() {
    let registry = DockerRegistry::start();
    let dir = model((2 * MIB) as usize);
    let addr = registry.addr().to_string();
    assert_ok(
        &push(
            &addr,
            dir.path(),
            options(MIB, None),
            None,
            &Recorder::default(),
        )
        .await,
    );
    let reference: Reference = format!("oci://{addr}/other/copy:v1").parse().unwrap();
    let client = backstop_http::Client::new().unwrap();
    let target = Registry::new(client, reference.registry(), true, None).unwrap();
    let mut mounting = options(MIB, None);
    mounting.upload.mount_from = Some("models/test".to_owned());
    let summary = Pusher::new(&target, &reference)
        .options(mounting)
        .run(&artifact(dir.path()))
        .await;
    assert_ok(&summary);
    assert_eq!(summary.sent(), 0);
    assert!(
        summary
            .blobs
            .iter()
            .all(|b| matches!(b.outcome, BlobOutcome::Mounted)),
        "{:?}",
        summary.blobs
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_first_look_at_the_recorded_session_is_retried_not_forgotten() {
    let registry = DockerRegistry::start();
    let proxy = HttpProxy::start(registry.addr());
    let dir = model((6 * MIB) as usize);
    let state = tempfile::tempdir().unwrap();
    let sessions = || Some(SessionStore::new(state.path().join("uploads")));
    let addr = proxy.addr().to_string();
    let stopper = Recorder {
        stop_after: Some(3 * MIB),
        ..Recorder::default()
    };
    let first = push(&addr, dir.path(), options(MIB, sessions()), None, &stopper).await;
    assert!(first.interrupted(), "{:?}", first.blobs);
    // The next run's first question to the session fails.
    proxy.fail_next("GET", "/blobs/uploads/", 503, &[]);
    let second = push(
        &addr,
        dir.path(),
        options(MIB, sessions()),
        None,
        &Recorder::default(),
    )
    .await;
    assert_ok(&second);
    assert_eq!(proxy.matched(), 1);
    let big = second
        .blobs
        .iter()
        .find(|b| b.name == "model.safetensors")
        .unwrap();
    match big.outcome {
        BlobOutcome::Uploaded { resumed_from, .. } => assert!(resumed_from > 0, "resumed"),
        ref other => panic!("{other:?}"),
    }
}

/// The advances of the large blob (the small ones move a few bytes each).
fn large_advances(recorder: &Recorder) -> Vec<u64> {
    let advances = recorder.advances.lock().unwrap();
    advances.iter().copied().filter(|&b| b >= MIB / 4).collect()
}

/// Straight against distribution 2.8 a torn chunk breaks the session: the
/// blob goes again at once (the cut followed confirmed chunks, so no
/// attempt failed and nothing waited a backoff), on a new session, in
/// smaller chunks that double back; it costs the lost session and the
/// torn chunk, no more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_torn_straight_against_distribution_goes_again_at_once_in_smaller_chunks() {
    let registry = DockerRegistry::start();
    let link = Proxy::start(registry.addr());
    let dir = model((14 * MIB) as usize);
    // In the second 4 MiB chunk of the weights (the small blobs and the
    // requests' headers are a few KiB).
    link.cut_upload_after(6 * MIB);
    let recorder = Recorder::default();
    let summary = push(
        &link.addr().to_string(),
        dir.path(),
        options(4 * MIB, None),
        None,
        &recorder,
    )
    .await;
    assert_ok(&summary);
    assert!(link.connections() > 1, "the link was cut");
    assert_eq!(*recorder.retries.lock().unwrap(), vec![], "no backoff");
    let resumes = recorder.resumes.lock().unwrap().clone();
    assert!(!resumes.is_empty(), "the cut was seen");
    assert!(
        resumes.iter().all(|&(_, delay)| delay.is_zero()),
        "{resumes:?}"
    );
    assert_eq!(
        large_advances(&recorder),
        [4, 1, 2, 4, 4, 3].map(|m| m * MIB),
        "a quarter after the tear, then doubling back to 4 MiB"
    );
    let blob_bytes = total(dir.path());
    assert!(
        summary.sent() <= blob_bytes + 8 * MIB,
        "sent {} for {blob_bytes}: more than the lost session and the torn chunk",
        summary.sent()
    );
    assert_pushed(&registry, dir.path(), None).await;
}

/// A chunk torn before the registry confirmed any: the connection had
/// taken bytes, so the blob goes again at once rather than after a
/// backoff.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_chunk_torn_after_it_moved_goes_again_without_a_backoff() {
    let registry = DockerRegistry::start();
    let link = Proxy::start(registry.addr());
    let dir = model((8 * MIB) as usize);
    link.cut_upload_after(MIB);
    let recorder = Recorder::default();
    let summary = push(
        &link.addr().to_string(),
        dir.path(),
        options(4 * MIB, None),
        None,
        &recorder,
    )
    .await;
    assert_ok(&summary);
    assert!(link.connections() > 1, "the link was cut");
    assert_eq!(*recorder.retries.lock().unwrap(), vec![], "no backoff");
    let resumes = recorder.resumes.lock().unwrap().clone();
    assert!(
        resumes.contains(&(0, Duration::ZERO)),
        "went again from byte 0 at once: {resumes:?}"
    );
    assert_pushed(&registry, dir.path(), None).await;
}

/// A registry (or the proxy before it) that refuses `PATCH` outright gets
/// each large blob in one streamed `PUT`, after one refused chunk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_that_refuses_chunks_gets_each_blob_in_one_put() {
    for status in [405, 400] {
        let registry = DockerRegistry::start();
        let proxy = HttpProxy::start(registry.addr());
        proxy.fail_all("PATCH", "/blobs/uploads/", status, &[]);
        let dir = model((3 * MIB) as usize);
        let summary = push(
            &proxy.addr().to_string(),
            dir.path(),
            options(MIB, None),
            None,
            &Recorder::default(),
        )
        .await;
        assert_ok(&summary);
        assert_eq!(proxy.matched(), 1, "HTTP {status}: one PATCH refused");
        assert!(
            summary.sent() <= total(dir.path()) + MIB,
            "HTTP {status}: sent {}",
            summary.sent()
        );
        assert_pushed(&registry, dir.path(), None).await;
    }
}

/// An answer that says the quota is spent (`ratelimit-remaining: 0` with a
/// reset) holds every blob before it sends anything, as a 429 would,
/// through the client's host board.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_quota_holds_every_blob_until_its_reset() {
    let registry = DockerRegistry::start();
    let proxy = HttpProxy::start(registry.addr());
    // The first request (GET /v2/) succeeds, and says the quota is spent.
    proxy.annotate_next(
        "GET",
        "/v2/",
        &[("ratelimit-remaining", "0"), ("ratelimit-reset", "1")],
    );
    let dir = model((2 * MIB) as usize);
    let recorder = Recorder::default();
    let summary = push(
        &proxy.addr().to_string(),
        dir.path(),
        options(MIB, None),
        None,
        &recorder,
    )
    .await;
    assert_ok(&summary);
    assert_eq!(proxy.matched(), 1);
    let retries = recorder.retries.lock().unwrap().clone();
    let held: Vec<_> = retries
        .iter()
        .filter(|(reason, delay, server)| {
            reason.starts_with("cooling down") && *server && *delay > Duration::from_millis(500)
        })
        .collect();
    assert_eq!(
        held.len(),
        3,
        "each of the 3 blobs started at once waited the reset: {retries:?}"
    );
    assert_pushed(&registry, dir.path(), None).await;
}

/// A blob that moves less than the minimum progress in the window fails
/// its attempt as too slow, however slowly it still moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_below_the_minimum_progress_fails_its_attempts_as_too_slow() {
    let registry = DockerRegistry::start();
    let proxy = HttpProxy::start(registry.addr());
    // Every chunk takes 3 s to get through: 1 MiB in a 1 s window.
    proxy.delay_all("PATCH", "/blobs/uploads/", Duration::from_secs(3));
    let dir = model((3 * MIB) as usize);
    let mut options = options(MIB, None);
    options.upload.min_progress = Some(MinProgress {
        bytes: 2 * MIB,
        window: Duration::from_secs(1),
    });
    options.upload.policy = options.upload.policy.with_max_attempts(2);
    let recorder = Recorder::default();
    let summary = push(
        &proxy.addr().to_string(),
        dir.path(),
        options,
        None,
        &recorder,
    )
    .await;
    assert!(!summary.succeeded());
    let big = summary
        .blobs
        .iter()
        .find(|b| b.name == "model.safetensors")
        .unwrap();
    match &big.outcome {
        BlobOutcome::Failed(e) => {
            assert!(e.is_temporary(), "{e}");
            let last = std::error::Error::source(e).map(|s| s.to_string());
            assert!(
                last.as_deref()
                    .is_some_and(|m| m.contains("minimum progress")),
                "{e}: {last:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    let retries = recorder.retries.lock().unwrap().clone();
    assert!(
        retries.iter().any(|(reason, _, _)| reason == "too slow"),
        "{retries:?}"
    );
}
