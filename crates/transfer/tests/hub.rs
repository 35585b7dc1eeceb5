//! `hf://` sources against a fake Hub and its CDN on another origin.

mod common;

use backstop_core::Secret;
use backstop_faultserver::{FaultServer, HubFile, Reply, cdn_path};
use backstop_hub::Hub;
use backstop_transfer::{Error, Options, Plan, Source, resolve};
use common::*;

fn hub(server: &FaultServer, token: Option<&str>) -> Hub {
    Hub::new(client(), &server.url(""), token.map(Secret::new)).unwrap()
}

fn sources(list: &[&str]) -> Vec<Source> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

#[tokio::test]
async fn a_repository_is_listed_pinned_filtered_and_fetched_through_the_cdn() {
    let server = FaultServer::start();
    let cdn = FaultServer::start();
    let files = [
        HubFile::lfs("model-Q4_K_M.gguf", data(30_000)),
        HubFile::lfs("sub/model-Q8_0.gguf", data(20_000)),
        HubFile::git("config.json", &b"{\"a\":1}"[..]),
    ];
    server.hub_repo("models", "org/repo", "main", "c0ffee", &files, Some(&cdn));
    // The CDN cuts the first file once.
    cdn.script(
        &cdn_path(&files[0].sha256()),
        [Reply::file(files[0].bytes.clone()).cut_after(10_000)],
    );
    let hub = hub(&server, Some("hf_secrettoken1234567890"));
    let items = resolve(&sources(&["hf://org/repo/*.gguf"]), &hub, &[], &[])
        .await
        .unwrap();
    let names: Vec<&str> = items.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["model-Q4_K_M.gguf", "sub/model-Q8_0.gguf"]);
    assert!(
        items[0].url.path().contains("/resolve/c0ffee/"),
        "pinned to the commit"
    );
    assert_eq!(items[0].size, Some(30_000));

    let dir = tempfile::tempdir().unwrap();
    let (summary, events) = pull(dir.path(), items, options()).await;
    assert!(summary.succeeded(), "{:?}", summary.files);
    assert_eq!(
        std::fs::read(dir.path().join("sub/model-Q8_0.gguf")).unwrap(),
        files[1].bytes
    );
    assert!(events.any("resume 10000"), "{:?}", events.lines());
    assert!(!dir.path().join("config.json").exists());

    // The token goes to the Hub and never to the CDN.
    assert!(
        server
            .requests()
            .iter()
            .all(|r| { r.header("authorization") == Some("Bearer hf_secrettoken1234567890") })
    );
    assert!(
        cdn.requests()
            .iter()
            .all(|r| r.header("authorization").is_none())
    );
    // Every resume asks the Hub again, so an expired CDN link is renewed.
    assert_eq!(server.hits("/org/repo/resolve/c0ffee/model-Q4_K_M.gguf"), 2);
}

#[tokio::test]
async fn datasets_and_git_files() {
    let server = FaultServer::start();
    let files = [
        HubFile::lfs("data/train.parquet", data(5000)),
        HubFile::git("README.md", &b"# data"[..]),
    ];
    server.hub_repo("datasets", "org/data", "v1", "abc123", &files, None);
    let items = resolve(
        &sources(&["hf://datasets/org/data@v1"]),
        &hub(&server, None),
        &[],
        &[],
    )
    .await
    .unwrap();
    assert_eq!(items.len(), 2);
    assert!(items[1].sha256.is_none(), "git files have no listed sha256");
    let dir = tempfile::tempdir().unwrap();
    let (summary, _) = pull(dir.path(), items, Options::default()).await;
    assert!(summary.succeeded(), "{:?}", summary.files);
    assert_eq!(
        std::fs::read(dir.path().join("README.md")).unwrap(),
        b"# data"
    );
    assert_eq!(
        server.requests()[0].uri,
        "/api/datasets/org/data/revision/v1?blobs=true"
    );
}

#[tokio::test]
async fn a_listing_with_an_unsafe_name_is_refused_before_anything_is_written() {
    let server = FaultServer::start();
    let files = [
        HubFile::lfs("fine.bin", data(100)),
        HubFile::lfs("../../.bashrc", data(100)),
    ];
    server.hub_repo("models", "org/evil", "main", "e1e1", &files, None);
    let items = resolve(&sources(&["hf://org/evil"]), &hub(&server, None), &[], &[])
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let err = Plan::new(dir.path(), items).unwrap_err();
    assert!(matches!(err, Error::UnsafeName { .. }));
    assert_eq!(
        err.to_string(),
        "hf://org/evil@main names a file \"../../.bashrc\" that cannot be written safely: \
         it climbs out of the directory with .."
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    assert_eq!(server.requests().len(), 1, "only the listing");
}

#[tokio::test]
async fn a_pattern_that_matches_nothing_and_a_garbage_digest_are_errors() {
    let server = FaultServer::start();
    server.hub_repo(
        "models",
        "org/repo",
        "main",
        "c0ffee",
        &[HubFile::lfs("a.bin", data(10))],
        None,
    );
    let err = resolve(
        &sources(&["hf://org/repo/*.gguf"]),
        &hub(&server, None),
        &[],
        &[],
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "no file of org/repo matches \"*.gguf\" (1 files listed)"
    );

    server.always(
        "/api/models/org/bad/revision/main",
        Reply::json(r#"{"sha":"x","siblings":[{"rfilename":"a","lfs":{"sha256":"zz","size":1}}]}"#),
    );
    let err = resolve(&sources(&["hf://org/bad"]), &hub(&server, None), &[], &[])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidDigest { .. }), "{err}");
}

/// Gated and open repositories share the Hub's host: a 401 for a file of
/// one repository stops its other files at once, and never the files of
/// another repository.
#[tokio::test]
async fn a_refused_repository_stops_its_own_files_only() {
    let server = FaultServer::start();
    let gated = [
        HubFile::lfs("a.gguf", data(1000)),
        HubFile::lfs("b.gguf", data(1000)),
        HubFile::git("c.json", &b"{}"[..]),
    ];
    let open = [
        HubFile::lfs("d.gguf", data(2000)),
        HubFile::git("e.json", &b"[]"[..]),
    ];
    server.hub_repo("models", "org/gated", "main", "9a7ed", &gated, None);
    server.hub_repo("models", "org/open", "main", "0be11", &open, None);
    for f in &gated {
        server.always(
            &format!("/org/gated/resolve/9a7ed/{}", f.path),
            Reply::status(401),
        );
    }
    let hub = hub(&server, Some("hf_secrettoken1234567890"));
    let items = resolve(
        &sources(&["hf://org/gated", "hf://org/open"]),
        &hub,
        &[],
        &[],
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        jobs: 1,
        ..options()
    };
    let (summary, _) = pull(dir.path(), items, options).await;
    let outcomes: Vec<String> = summary
        .files
        .iter()
        .map(|f| match &f.outcome {
            backstop_transfer::Outcome::Failed(e) => e.to_string(),
            other => format!("{other:?}"),
        })
        .collect();
    let host = server.addr().to_string();
    assert!(
        outcomes[0].starts_with(&format!("{host} refused the credentials")),
        "{outcomes:?}"
    );
    for o in &outcomes[1..3] {
        assert_eq!(
            *o,
            format!("stopped: {host} refused the credentials for another file of hf://org/gated")
        );
    }
    assert!(
        summary.files[3..].iter().all(|f| f.outcome.is_success()),
        "{outcomes:?}"
    );
    assert_eq!(
        server.hits("/org/gated/resolve/9a7ed/b.gguf")
            + server.hits("/org/gated/resolve/9a7ed/c.json"),
        0
    );
    assert_eq!(std::fs::read(dir.path().join("e.json")).unwrap(), b"[]");
}
