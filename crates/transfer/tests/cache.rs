//! Pulls into the Hugging Face cache, against a fake Hub and its CDN on
//! another origin: the layout huggingface_hub reads, blobs shared and
//! never fetched twice, partial blobs resumed, the blob lock honoured, and
//! remote names kept inside the cache.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use backstop_faultserver::{FaultServer, HubFile, Reply, cdn_path};
use backstop_hub::{Cache, Hub};
use backstop_transfer::{Error, Event, Outcome, Plan, Progress, Pull, Source, Summary, resolve};
use common::*;
use tokio::sync::mpsc;

struct Bed {
    hub: FaultServer,
    cdn: FaultServer,
    dir: tempfile::TempDir,
}

impl Bed {
    fn new() -> Bed {
        Bed {
            hub: FaultServer::start(),
            cdn: FaultServer::start(),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn serve(&self, repo: &str, revision: &str, commit: &str, files: &[HubFile]) {
        self.hub
            .hub_repo("models", repo, revision, commit, files, Some(&self.cdn));
    }

    fn cache(&self) -> Cache {
        Cache::new(self.dir.path().join("hub"))
    }

    fn repo_dir(&self) -> PathBuf {
        self.dir.path().join("hub/models--org--repo")
    }

    async fn plan(&self, source: &str) -> Result<Plan, Error> {
        let hub = Hub::new(client(), &self.hub.url(""), None).unwrap();
        let sources: Vec<Source> = vec![source.parse().unwrap()];
        let items = resolve(&sources, &hub, &[], &[]).await?;
        Plan::in_hub_cache(&self.cache(), items)
    }

    async fn pull(&self, source: &str) -> Summary {
        let plan = self.plan(source).await.unwrap();
        Pull::new(client())
            .options(options())
            .run(&plan)
            .await
            .unwrap()
    }

    /// GETs of the blob of `file` at the CDN.
    fn fetches(&self, file: &HubFile) -> usize {
        let path = cdn_path(&file.sha256());
        self.cdn
            .requests()
            .iter()
            .filter(|r| r.method == "GET" && r.uri == path)
            .count()
    }
}

fn link(path: &Path) -> String {
    std::fs::read_link(path)
        .unwrap_or_else(|e| panic!("{} is not a link: {e}", path.display()))
        .display()
        .to_string()
}

#[tokio::test]
async fn a_repository_lands_in_the_cache_as_huggingface_hub_lays_it_out() {
    let bed = Bed::new();
    let files = [
        HubFile::lfs("sub/weights.bin", data(40_000)),
        HubFile::git("config.json", &b"{\"a\":1}"[..]),
    ];
    bed.serve("org/repo", "main", "c0ffee", &files);
    let summary = bed.pull("hf://org/repo").await;
    assert!(summary.succeeded(), "{:?}", summary.files);

    let repo = bed.repo_dir();
    let (lfs, git) = (files[0].sha256(), files[1].blob_id());
    assert_eq!(
        std::fs::read(repo.join("blobs").join(&lfs)).unwrap(),
        files[0].bytes
    );
    assert_eq!(
        std::fs::read(repo.join("blobs").join(&git)).unwrap(),
        files[1].bytes
    );
    assert_eq!(
        link(&repo.join("snapshots/c0ffee/sub/weights.bin")),
        format!("../../../blobs/{lfs}")
    );
    assert_eq!(
        link(&repo.join("snapshots/c0ffee/config.json")),
        format!("../../blobs/{git}")
    );
    assert_eq!(
        std::fs::read(repo.join("snapshots/c0ffee/sub/weights.bin")).unwrap(),
        files[0].bytes
    );
    assert_eq!(
        std::fs::read_to_string(repo.join("refs/main")).unwrap(),
        "c0ffee"
    );
    let root = bed.dir.path().join("hub");
    assert!(
        std::fs::read_to_string(root.join("CACHEDIR.TAG"))
            .unwrap()
            .starts_with("Signature: 8a477f597d28d172789f06886806bc55")
    );
    for etag in [&lfs, &git] {
        let lock = root.join(format!(".locks/models--org--repo/{etag}.lock"));
        assert!(lock.is_file(), "{} is left in place", lock.display());
    }
    let mut blobs: Vec<String> = std::fs::read_dir(repo.join("blobs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    blobs.sort();
    let mut want = vec![lfs, git];
    want.sort();
    assert_eq!(blobs, want, "no partial file or record is left behind");
}

#[tokio::test]
async fn a_blob_in_the_cache_is_never_fetched_again() {
    let bed = Bed::new();
    let weights = HubFile::lfs("weights.bin", data(30_000));
    // The same content twice in one revision: one blob, one fetch.
    let copy = HubFile::lfs("copy/weights.bin", weights.bytes.clone());
    let v1 = [
        weights.clone(),
        copy.clone(),
        HubFile::git("config.json", &b"{\"v\":1}"[..]),
    ];
    bed.serve("org/repo", "main", "aaa111", &v1);
    let summary = bed.pull("hf://org/repo").await;
    assert!(summary.succeeded(), "{:?}", summary.files);
    assert_eq!(bed.fetches(&weights), 1);
    let repo = bed.repo_dir();
    assert_eq!(
        std::fs::read(repo.join("snapshots/aaa111/copy/weights.bin")).unwrap(),
        weights.bytes
    );

    // Another revision sharing the weights: only its new config is
    // fetched, and its snapshot links the blob already there.
    let v2 = [
        weights.clone(),
        HubFile::git("config.json", &b"{\"v\":2}"[..]),
    ];
    bed.serve("org/repo", "v2", "bbb222", &v2);
    let summary = bed.pull("hf://org/repo@v2").await;
    assert!(summary.succeeded(), "{:?}", summary.files);
    assert!(
        matches!(
            summary.files[0].outcome,
            Outcome::AlreadyThere { bytes: 30_000 }
        ),
        "{:?}",
        summary.files[0]
    );
    assert!(matches!(
        summary.files[1].outcome,
        Outcome::Downloaded { .. }
    ));
    assert_eq!(
        bed.fetches(&weights),
        1,
        "the shared blob was not fetched again"
    );
    assert_eq!(
        std::fs::read(repo.join("snapshots/bbb222/weights.bin")).unwrap(),
        weights.bytes
    );
    assert_eq!(
        std::fs::read_to_string(repo.join("refs/v2")).unwrap(),
        "bbb222"
    );
    assert_eq!(
        std::fs::read_to_string(repo.join("refs/main")).unwrap(),
        "aaa111"
    );

    // A blob of the wrong size is not the blob: it is fetched again.
    std::fs::write(repo.join("blobs").join(weights.sha256()), b"truncated").unwrap();
    let summary = bed.pull("hf://org/repo@v2").await;
    assert!(matches!(
        summary.files[0].outcome,
        Outcome::Downloaded { .. }
    ));
    assert_eq!(bed.fetches(&weights), 2);
}

#[tokio::test]
async fn a_partial_blob_left_by_huggingface_hub_is_resumed_and_checked() {
    let bed = Bed::new();
    let weights = HubFile::lfs("weights.bin", data(50_000));
    bed.serve("org/repo", "main", "c0ffee", std::slice::from_ref(&weights));
    let blobs = bed.repo_dir().join("blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    // The first 20 000 bytes, as an older huggingface_hub leaves them when
    // stopped: `<etag>.incomplete`, with no record of ours.
    let incomplete = blobs.join(format!("{}.incomplete", weights.sha256()));
    std::fs::write(&incomplete, &weights.bytes[..20_000]).unwrap();
    let summary = bed.pull("hf://org/repo").await;
    assert!(summary.succeeded(), "{:?}", summary.files);
    assert!(
        matches!(
            summary.files[0].outcome,
            Outcome::Downloaded {
                resumed_from: 20_000,
                ..
            }
        ),
        "{:?}",
        summary.files[0]
    );
    let ranges: Vec<Option<String>> = bed
        .cdn
        .requests()
        .iter()
        .map(|r| r.header("range").map(str::to_owned))
        .collect();
    assert_eq!(ranges, [Some("bytes=20000-49999".to_owned())]);
    assert_eq!(
        std::fs::read(blobs.join(weights.sha256())).unwrap(),
        weights.bytes
    );
    assert!(!incomplete.exists());

    // Wrong bytes in a partial blob are caught by the sha256 and fetched
    // whole: never renamed into the cache.
    std::fs::remove_file(blobs.join(weights.sha256())).unwrap();
    std::fs::write(&incomplete, vec![0u8; 20_000]).unwrap();
    let summary = bed.pull("hf://org/repo").await;
    assert!(summary.succeeded(), "{:?}", summary.files);
    assert_eq!(
        std::fs::read(blobs.join(weights.sha256())).unwrap(),
        weights.bytes
    );
    let ranges: Vec<Option<String>> = bed.cdn.requests()[1..]
        .iter()
        .map(|r| r.header("range").map(str::to_owned))
        .collect();
    assert_eq!(ranges, [Some("bytes=20000-49999".to_owned()), None]);
}

#[tokio::test]
async fn a_ref_is_recorded_only_once_every_file_of_its_revision_is_in() {
    let bed = Bed::new();
    let files = [
        HubFile::lfs("a.bin", data(10_000)),
        HubFile::lfs("b.bin", data(11_000)),
    ];
    bed.serve("org/repo", "main", "c0ffee", &files);
    bed.cdn
        .always(&cdn_path(&files[1].sha256()), Reply::status(404));
    let summary = bed.pull("hf://org/repo").await;
    assert!(!summary.succeeded());
    let repo = bed.repo_dir();
    assert!(repo.join("snapshots/c0ffee/a.bin").exists());
    assert!(
        !repo.join("refs/main").exists(),
        "main would name an incomplete snapshot"
    );

    bed.serve("org/repo", "main", "c0ffee", &files);
    let summary = bed.pull("hf://org/repo").await;
    assert!(summary.succeeded(), "{:?}", summary.files);
    assert_eq!(
        std::fs::read_to_string(repo.join("refs/main")).unwrap(),
        "c0ffee"
    );

    // Asked by commit: no ref to record.
    let summary = bed.pull("hf://org/repo@c0ffee").await;
    assert!(summary.succeeded());
    assert!(!repo.join("refs/c0ffee").exists());
}

/// Sends every event of file 0 down a channel.
struct Events(mpsc::UnboundedSender<String>);

impl Progress for Events {
    fn advance(&self, _: usize, _: u64) {}
    fn event(&self, _: usize, event: Event<'_>) {
        let _ = self.0.send(format!("{event:?}"));
    }
}

#[tokio::test]
async fn a_blob_whose_lock_another_process_holds_is_waited_for_then_taken_as_it_is() {
    let bed = Bed::new();
    let weights = HubFile::lfs("weights.bin", data(30_000));
    bed.serve("org/repo", "main", "c0ffee", std::slice::from_ref(&weights));
    // Another downloader (huggingface_hub's filelock takes the same
    // flock) holds the blob's lock.
    let locks = bed.dir.path().join("hub/.locks/models--org--repo");
    std::fs::create_dir_all(&locks).unwrap();
    let lock = std::fs::File::create(locks.join(format!("{}.lock", weights.sha256()))).unwrap();
    lock.lock().unwrap();

    let plan = bed.plan("hf://org/repo").await.unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let pull = tokio::spawn(async move {
        Pull::new(client())
            .options(options())
            .progress(Arc::new(Events(tx)))
            .run(&plan)
            .await
            .unwrap()
    });
    loop {
        let event = rx.recv().await.expect("the pull says it waits");
        if event.contains("Waiting") {
            assert!(event.contains("lock"), "{event}");
            break;
        }
    }
    assert_eq!(
        bed.fetches(&weights),
        0,
        "nothing is fetched under another's lock"
    );
    // The other downloader finishes: the blob is in place, then the lock
    // is released.
    let blob = bed.repo_dir().join("blobs").join(weights.sha256());
    std::fs::write(&blob, &weights.bytes).unwrap();
    drop(lock);
    let summary = pull.await.unwrap();
    assert!(
        matches!(summary.files[0].outcome, Outcome::AlreadyThere { .. }),
        "{:?}",
        summary.files[0]
    );
    assert_eq!(bed.fetches(&weights), 0);
    assert_eq!(
        std::fs::read(bed.repo_dir().join("snapshots/c0ffee/weights.bin")).unwrap(),
        weights.bytes
    );
}

#[tokio::test]
async fn remote_names_stay_inside_the_cache() {
    let bed = Bed::new();
    bed.serve(
        "org/repo",
        "main",
        "c0ffee",
        &[
            HubFile::git("ok.json", &b"{}"[..]),
            HubFile::git("../../escape", &b"x"[..]),
        ],
    );
    let err = bed.plan("hf://org/repo").await.unwrap_err();
    assert!(
        matches!(&err, Error::UnsafeName { name, .. } if name == "snapshots/c0ffee/../../escape"),
        "{err}"
    );

    // A snapshot folder planted as a link elsewhere is not followed.
    let bed = Bed::new();
    bed.serve(
        "org/repo",
        "main",
        "c0ffee",
        &[HubFile::git("a.json", &b"{}"[..])],
    );
    let outside = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(bed.repo_dir().join("snapshots")).unwrap();
    std::os::unix::fs::symlink(outside.path(), bed.repo_dir().join("snapshots/c0ffee")).unwrap();
    let err = bed.plan("hf://org/repo").await.unwrap_err();
    assert!(matches!(err, Error::UnsafeName { .. }), "{err}");
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);

    // A listing whose blob id cannot name a file, or no commit, is refused.
    let bed = Bed::new();
    bed.hub.always(
        "/api/models/org/repo/revision/main",
        Reply::json(
            r#"{"id":"org/repo","sha":"c0ffee","siblings":[{"rfilename":"a","size":1,"blobId":"../../x"}]}"#,
        ),
    );
    let err = bed.plan("hf://org/repo").await.unwrap_err();
    assert!(matches!(err, Error::Unnamed { .. }), "{err}");
    assert!(err.to_string().contains("--dir"), "{err}");
    bed.hub.always(
        "/api/models/org/repo/revision/main",
        Reply::json(r#"{"id":"org/repo","siblings":[{"rfilename":"a","size":1,"blobId":"ab12"}]}"#),
    );
    let err = bed.plan("hf://org/repo").await.unwrap_err();
    assert!(
        matches!(&err, Error::Unnamed { missing, .. } if missing.contains("commit")),
        "{err}"
    );

    // A URL has no place in the cache.
    let url = item("https://example.com/x.bin", "x.bin", None, None);
    let err = Plan::in_hub_cache(&bed.cache(), vec![url]).unwrap_err();
    assert!(matches!(err, Error::NotForCache { .. }), "{err}");
    assert!(err.is_usage());
    assert!(!bed.dir.path().join("hub").exists(), "nothing was written");
}

#[tokio::test]
async fn a_pull_stopped_while_it_waits_for_a_lock_ends_at_once_as_interrupted() {
    let bed = Bed::new();
    let weights = HubFile::lfs("weights.bin", data(10_000));
    bed.serve("org/repo", "main", "c0ffee", std::slice::from_ref(&weights));
    let locks = bed.dir.path().join("hub/.locks/models--org--repo");
    std::fs::create_dir_all(&locks).unwrap();
    let lock = std::fs::File::create(locks.join(format!("{}.lock", weights.sha256()))).unwrap();
    lock.lock().unwrap();

    let plan = bed.plan("hf://org/repo").await.unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let stop = tokio_util::sync::CancellationToken::new();
    let pull = Pull::new(client())
        .options(options())
        .progress(Arc::new(Events(tx)))
        .cancel_on(stop.clone());
    let waiting = async {
        while let Some(event) = rx.recv().await {
            if event.contains("Waiting") {
                stop.cancel();
                return;
            }
        }
    };
    let (summary, ()) = tokio::join!(pull.run(&plan), waiting);
    let summary = summary.unwrap();
    assert!(summary.interrupted(), "{:?}", summary.files);
    assert_eq!(bed.fetches(&weights), 0);
    drop(lock);
}
