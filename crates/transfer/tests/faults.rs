//! Transfers against the fault server: every way a download breaks, and
//! how the transfer gets through it (or says it cannot).

mod common;

use std::time::Duration;

use backstop_faultserver::{FaultServer, Reply};
use backstop_transfer::{FileError, Item, MinProgress, Options, Outcome, Sha256, TransferFailure};
use common::*;
use tokio_util::sync::CancellationToken;

const SIZE: usize = 10_000;

/// The one file most tests pull: `/f.bin` as `f.bin`.
fn f_bin(server: &FaultServer, size: Option<u64>, sha256: Option<Sha256>) -> Vec<Item> {
    vec![item(&server.url("/f.bin"), "f.bin", size, sha256)]
}

fn ranges(server: &FaultServer) -> Vec<Option<String>> {
    server
        .requests()
        .iter()
        .map(|r| r.header("range").map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn a_cut_body_resumes_from_the_last_byte_and_the_cut_is_not_a_counted_attempt() {
    let server = FaultServer::start();
    let body = data(SIZE);
    // Five cuts, each after some progress, with a policy of 2 attempts:
    // only failed attempts count, and a cut after bytes is not one.
    server.script(
        "/f.bin",
        [
            Reply::file(body.clone()).cut_after(3000),
            Reply::file(body.clone()).cut_after(1000),
            Reply::file(body.clone()).cut_after(1000),
            Reply::file(body.clone()).cut_after(1000),
            Reply::file(body.clone()).cut_after(1000),
        ],
    );
    server.always("/f.bin", Reply::file(body.clone()));
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        policy: policy().with_max_attempts(2),
        ..options()
    };
    let (summary, events) = pull(
        dir.path(),
        f_bin(&server, None, Some(Sha256::of(&body))),
        options,
    )
    .await;
    assert_arrived(&summary, 0, &dir.path().join("f.bin"), &body);
    assert_eq!(
        ranges(&server),
        [
            None,
            Some("bytes=3000-".into()),
            Some("bytes=4000-".into()),
            Some("bytes=5000-".into()),
            Some("bytes=6000-".into()),
            Some("bytes=7000-".into()),
        ]
    );
    assert_eq!(
        summary.files[0].fetched, SIZE as u64,
        "not a byte fetched twice"
    );
    assert!(events.any("resume 3000"), "{:?}", events.lines());
    assert!(!events.any("retry"), "a cut after progress is not a retry");
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(left.len(), 1, "no partial file or record left");
}

/// A server that sends a few bytes and cuts every connection resets the
/// attempt count each time, but is not hammered: a small advance waits one
/// first backoff before the next request, while a cut after a mebibyte or
/// more resumes at once.
#[tokio::test]
async fn a_cut_after_a_few_bytes_waits_before_reconnecting() {
    let server = FaultServer::start();
    let body = data(3 * backstop_transfer::RESUME_AT_ONCE as usize);
    server.script(
        "/f.bin",
        [
            Reply::file(body.clone()).cut_after(10),
            Reply::file(body.clone()).cut_after(10),
            Reply::file(body.clone()).cut_after(backstop_transfer::RESUME_AT_ONCE as usize),
        ],
    );
    server.always("/f.bin", Reply::file(body.clone()));
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        policy: policy()
            .with_initial_delay(Duration::from_millis(30))
            .with_max_delay(Duration::from_millis(30)),
        ..options()
    };
    let (summary, events) = pull(
        dir.path(),
        f_bin(&server, None, Some(Sha256::of(&body))),
        options,
    )
    .await;
    assert_arrived(&summary, 0, &dir.path().join("f.bin"), &body);
    let resumes: Vec<String> = events
        .lines()
        .into_iter()
        .filter(|l| l.contains(" resume "))
        .collect();
    assert_eq!(resumes.len(), 3, "{resumes:?}");
    assert!(
        resumes[0].starts_with("0 resume 10 ") && resumes[0].ends_with("after 30ms"),
        "{resumes:?}"
    );
    assert!(
        resumes[1].starts_with("0 resume 20 ") && resumes[1].ends_with("after 30ms"),
        "{resumes:?}"
    );
    assert!(
        resumes[2].ends_with("after 0ns"),
        "a big advance resumes at once: {resumes:?}"
    );
    assert!(!events.any("retry"), "progress is never a counted retry");
}

#[tokio::test]
async fn a_stall_mid_body_is_cut_by_the_idle_timeout_and_resumed() {
    let server = FaultServer::start();
    let body = data(SIZE);
    server.script("/f.bin", [Reply::file(body.clone()).stall_after(5000)]);
    server.always("/f.bin", Reply::file(body.clone()));
    let dir = tempfile::tempdir().unwrap();
    let (summary, events) = pull(
        dir.path(),
        f_bin(&server, Some(SIZE as u64), None),
        options(),
    )
    .await;
    assert_arrived(&summary, 0, &dir.path().join("f.bin"), &body);
    assert_eq!(
        ranges(&server)[1].as_deref(),
        Some("bytes=5000-9999"),
        "the size is known"
    );
    assert!(
        events.any("resume 5000 read timed out"),
        "{:?}",
        events.lines()
    );
}

#[tokio::test]
async fn rate_limits_and_overloads_are_waited_out_as_the_server_asks() {
    let server = FaultServer::start();
    let body = data(SIZE);
    server.script(
        "/f.bin",
        [
            Reply::status(429).header("retry-after-ms", "40"),
            Reply::status(503).header("retry-after-ms", "30"),
        ],
    );
    server.always("/f.bin", Reply::file(body.clone()));
    let dir = tempfile::tempdir().unwrap();
    let (summary, events) = pull(dir.path(), f_bin(&server, None, None), options()).await;
    assert!(downloaded(&summary.files[0].outcome));
    let lines = events.lines();
    assert!(
        lines.contains(&"0 retry 1 HTTP 429 40ms server=true".to_owned()),
        "{lines:?}"
    );
    assert!(
        lines.contains(&"0 retry 2 HTTP 503 30ms server=true".to_owned()),
        "{lines:?}"
    );
}

#[tokio::test]
async fn a_server_that_ignores_range_restarts_the_file_cleanly() {
    let server = FaultServer::start();
    let body = data(SIZE);
    server.script("/f.bin", [Reply::file(body.clone()).cut_after(4000)]);
    server.always("/f.bin", Reply::file(body.clone()).ignore_range());
    let dir = tempfile::tempdir().unwrap();
    let (summary, events) = pull(
        dir.path(),
        f_bin(&server, None, Some(Sha256::of(&body))),
        options(),
    )
    .await;
    assert_arrived(&summary, 0, &dir.path().join("f.bin"), &body);
    assert_eq!(ranges(&server)[1].as_deref(), Some("bytes=4000-"));
    assert_eq!(
        server.requests().len(),
        2,
        "the whole-file answer is used, not asked again"
    );
    assert!(
        events.any("restart the server sent the whole file"),
        "{:?}",
        events.lines()
    );
    assert_eq!(summary.files[0].fetched, 4000 + SIZE as u64);
}

#[tokio::test]
async fn a_wrong_content_range_starts_over_without_range() {
    let server = FaultServer::start();
    let body = data(SIZE);
    server.script(
        "/f.bin",
        [
            Reply::file(body.clone()).cut_after(4000),
            Reply::file(body.clone()).wrong_content_range(),
            Reply::file(body.clone()).cut_after(2000),
        ],
    );
    server.always("/f.bin", Reply::file(body.clone()));
    let dir = tempfile::tempdir().unwrap();
    let (summary, events) = pull(
        dir.path(),
        f_bin(&server, None, Some(Sha256::of(&body))),
        options(),
    )
    .await;
    assert_arrived(&summary, 0, &dir.path().join("f.bin"), &body);
    assert_eq!(
        ranges(&server),
        [None, Some("bytes=4000-".into()), None, None],
        "after a wrong Content-Range, never Range again: a cut restarts from 0"
    );
    assert!(
        events.any("restart wrong Content-Range"),
        "{:?}",
        events.lines()
    );
}

#[tokio::test]
async fn a_corrupted_body_is_fetched_again_never_accepted() {
    let server = FaultServer::start();
    let body = data(SIZE);
    server.script("/f.bin", [Reply::file(body.clone()).corrupt_at(77)]);
    server.always("/f.bin", Reply::file(body.clone()));
    let dir = tempfile::tempdir().unwrap();
    let (summary, events) = pull(
        dir.path(),
        f_bin(&server, None, Some(Sha256::of(&body))),
        options(),
    )
    .await;
    assert_arrived(&summary, 0, &dir.path().join("f.bin"), &body);
    assert!(
        events.any("restart sha256 mismatch"),
        "{:?}",
        events.lines()
    );
    assert_eq!(summary.files[0].fetched, 2 * SIZE as u64);
}

#[tokio::test]
async fn the_same_wrong_bytes_twice_fail_for_good_and_leave_nothing() {
    let server = FaultServer::start();
    let body = data(SIZE);
    server.always("/f.bin", Reply::file(body.clone()));
    let wrong = Sha256::of(b"another file");
    let dir = tempfile::tempdir().unwrap();
    let (summary, _) = pull(dir.path(), f_bin(&server, None, Some(wrong)), options()).await;
    match &summary.files[0].outcome {
        Outcome::Failed(e @ FileError::Digest { repeated: true, .. }) => {
            assert!(!e.is_temporary());
            assert!(
                e.to_string().contains("(the same bytes arrived twice)"),
                "{e}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(server.requests().len(), 2);
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing kept"
    );
}

#[tokio::test]
async fn the_x_linked_etag_of_the_answer_is_checked_when_no_digest_is_given() {
    let server = FaultServer::start();
    let body = data(SIZE);
    let sha = Sha256::of(&body).to_string();
    server.always(
        "/f.bin",
        Reply::file(body.clone())
            .header("X-Linked-Etag", &format!("\"{sha}\""))
            .corrupt_at(9),
    );
    let dir = tempfile::tempdir().unwrap();
    let (summary, _) = pull(dir.path(), f_bin(&server, None, None), options()).await;
    assert!(
        matches!(
            summary.files[0].outcome,
            Outcome::Failed(FileError::Digest { .. })
        ),
        "{:?}",
        summary.files[0]
    );
    assert!(!dir.path().join("f.bin").exists());
}

#[tokio::test]
async fn a_server_whose_file_is_another_size_than_listed_fails_without_renaming() {
    let server = FaultServer::start();
    server.always("/f.bin", Reply::file(data(SIZE / 2)));
    let dir = tempfile::tempdir().unwrap();
    let (summary, _) = pull(
        dir.path(),
        f_bin(&server, Some(SIZE as u64), None),
        options(),
    )
    .await;
    let Outcome::Failed(e) = &summary.files[0].outcome else {
        panic!("{:?}", summary.files[0])
    };
    assert!(!e.is_temporary());
    let cause = std::error::Error::source(e).map(|s| s.to_string());
    assert_eq!(
        cause.as_deref(),
        Some("the server's copy is 5000 bytes, 10000 expected")
    );
    assert!(!dir.path().join("f.bin").exists());
}

#[tokio::test]
async fn a_trickle_below_the_minimum_progress_is_cut_and_retried() {
    let server = FaultServer::start();
    let body = data(SIZE);
    server.script(
        "/f.bin",
        [Reply::file(body.clone()).trickle(50, Duration::from_millis(20))],
    );
    server.always("/f.bin", Reply::file(body.clone()));
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        min_progress: Some(MinProgress {
            bytes: 5000,
            window: Duration::from_millis(200),
        }),
        ..options()
    };
    let (summary, events) = pull(
        dir.path(),
        f_bin(&server, None, Some(Sha256::of(&body))),
        options,
    )
    .await;
    assert!(
        downloaded(&summary.files[0].outcome),
        "{:?}",
        summary.files[0]
    );
    assert!(events.any("retry 1 too slow"), "{:?}", events.lines());
    let second = &ranges(&server)[1];
    assert!(
        second
            .as_deref()
            .is_some_and(|r| r.starts_with("bytes=") && r != "bytes=0-"),
        "the trickled bytes are kept: {second:?}"
    );
}

/// A server that cuts every connection after 1 KiB: the stream reconnects
/// within one attempt, the window runs across the connections, and the
/// attempt count never starts again, since nothing is real progress.
#[tokio::test]
async fn a_server_that_cuts_every_connection_early_fails_as_too_slow() {
    let server = FaultServer::start();
    server.always("/f.bin", Reply::file(data(1 << 20)).cut_after(1024));
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        policy: policy()
            .with_max_attempts(2)
            .with_initial_delay(Duration::from_millis(30))
            .with_max_delay(Duration::from_millis(30)),
        min_progress: Some(MinProgress {
            bytes: 100 << 10,
            window: Duration::from_millis(300),
        }),
        ..options()
    };
    let (summary, events) = tokio::time::timeout(
        Duration::from_secs(20),
        pull(dir.path(), f_bin(&server, None, None), options),
    )
    .await
    .expect("the pull ends: cuts after a few bytes are not progress");
    let Outcome::Failed(e @ FileError::Transfer { source, .. }) = &summary.files[0].outcome else {
        panic!("{:?}", summary.files[0]);
    };
    assert_eq!(source.ending, backstop_core::Ending::Exhausted);
    assert_eq!(source.attempts, 2, "two windows, two attempts");
    assert!(
        matches!(source.last_error(), Some(TransferFailure::TooSlow { bytes, .. }) if *bytes < 100 << 10),
        "{:?}",
        source.last
    );
    assert!(e.is_temporary());
    let cause = std::error::Error::source(e).map(|c| c.to_string());
    assert!(
        cause
            .as_deref()
            .is_some_and(|c| c.starts_with("below the minimum progress: only ")),
        "{cause:?}"
    );
    let retries: Vec<String> = events
        .lines()
        .into_iter()
        .filter(|l| l.contains(" retry "))
        .collect();
    assert_eq!(retries.len(), 1, "{retries:?}");
    assert!(retries[0].starts_with("0 retry 1 too slow"), "{retries:?}");
    assert!(
        server.hits("/f.bin") > 2,
        "the cuts reconnect within an attempt"
    );
    assert!(
        summary.files[0].fetched >= 2048,
        "the bytes of every connection are kept"
    );
}

/// The attempt count starts again only after real progress (here 64 KiB):
/// with 2 attempts, a 503, a cut after real progress and another 503 get
/// through; a 503, a cut after a few bytes and another 503 do not.
#[tokio::test]
async fn the_attempt_count_starts_again_only_after_real_progress() {
    let body = data(200 << 10);
    let options = || Options {
        policy: policy().with_max_attempts(2),
        min_progress: Some(MinProgress {
            bytes: 64 << 10,
            window: Duration::from_secs(60),
        }),
        ..options()
    };
    let mut ends = Vec::new();
    for cut in [80 << 10, 10 << 10] {
        let server = FaultServer::start();
        server.script(
            "/f.bin",
            [
                Reply::status(503),
                Reply::file(body.clone()).cut_after(cut),
                Reply::status(503),
            ],
        );
        server.always("/f.bin", Reply::file(body.clone()));
        let dir = tempfile::tempdir().unwrap();
        let (mut summary, events) = pull(
            dir.path(),
            f_bin(&server, None, Some(Sha256::of(&body))),
            options(),
        )
        .await;
        let retries: Vec<String> = events
            .lines()
            .into_iter()
            .filter(|l| l.contains(" retry "))
            .collect();
        ends.push((summary.files.remove(0).outcome, retries));
    }
    let (after_progress, retries) = &ends[0];
    assert!(downloaded(after_progress), "{after_progress:?}");
    assert_eq!(retries.len(), 2, "{retries:?}");
    assert!(
        retries.iter().all(|r| r.starts_with("0 retry 1 HTTP 503")),
        "each 503 is the first of its count: {retries:?}"
    );
    let (after_a_few_bytes, retries) = &ends[1];
    let Outcome::Failed(FileError::Transfer { source, .. }) = after_a_few_bytes else {
        panic!("{after_a_few_bytes:?}");
    };
    assert_eq!(
        (source.ending, source.attempts),
        (backstop_core::Ending::Overloaded { wait: None }, 2),
        "the second 503 was the second attempt"
    );
    assert_eq!(retries.len(), 1, "{retries:?}");
}

#[tokio::test]
async fn one_file_failing_never_cancels_the_others() {
    let server = FaultServer::start();
    let body = data(SIZE);
    server.always("/missing.bin", Reply::status(404));
    server.script("/slow.bin", [Reply::status(503), Reply::status(502)]);
    server.always("/slow.bin", Reply::file(body.clone()));
    server.always("/ok.bin", Reply::file(body.clone()));
    let dir = tempfile::tempdir().unwrap();
    let (summary, _) = pull(
        dir.path(),
        vec![
            item(&server.url("/missing.bin"), "missing.bin", None, None),
            item(&server.url("/slow.bin"), "slow.bin", None, None),
            item(&server.url("/ok.bin"), "ok.bin", None, None),
        ],
        options(),
    )
    .await;
    assert!(matches!(summary.files[0].outcome, Outcome::Failed(_)));
    assert!(downloaded(&summary.files[1].outcome));
    assert!(downloaded(&summary.files[2].outcome));
    assert!(!summary.succeeded());
    assert!(!summary.failures_temporary(), "a 404 is permanent");
    assert_eq!(server.hits("/missing.bin"), 1);
}

#[tokio::test]
async fn exhausted_retries_are_temporary() {
    let server = FaultServer::start();
    server.always("/f.bin", Reply::status(503));
    let dir = tempfile::tempdir().unwrap();
    let (summary, _) = pull(dir.path(), f_bin(&server, None, None), options()).await;
    assert!(summary.failures_temporary());
    assert_eq!(server.hits("/f.bin"), 4);
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "no empty partial file"
    );
    let Outcome::Failed(e) = &summary.files[0].outcome else {
        panic!()
    };
    assert!(
        e.to_string().contains("is overloaded: 4 attempts over"),
        "{e}"
    );
}

/// One 401 says little about the next URL of the same origin: an open
/// file beside a private one still arrives. A second refusal with no
/// success in between stops the origin's other files; another origin's
/// files go on.
#[tokio::test]
async fn refused_credentials_stop_an_origin_only_after_a_second_refusal_in_a_row() {
    let server = FaultServer::start();
    let other = FaultServer::start();
    let body = data(SIZE);
    for path in ["/a.bin", "/c.bin", "/d.bin"] {
        server.always(path, Reply::status(401));
    }
    for path in ["/b.bin", "/e.bin", "/f.bin"] {
        server.always(path, Reply::file(body.clone()));
    }
    other.always("/g.bin", Reply::file(body.clone()));
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        jobs: 1,
        ..options()
    };
    let names = ["a", "b", "c", "d", "e", "f"];
    let mut items: Vec<Item> = names
        .iter()
        .map(|n| {
            let name = format!("{n}.bin");
            item(&server.url(&format!("/{name}")), &name, None, None)
        })
        .collect();
    items.push(item(&other.url("/g.bin"), "g.bin", None, None));
    let (summary, _) = pull(dir.path(), items, options).await;
    let outcomes: Vec<String> = summary
        .files
        .iter()
        .map(|f| match &f.outcome {
            Outcome::Failed(e) => e.to_string(),
            other => format!("{other:?}"),
        })
        .collect();
    let host = server.addr().to_string();
    let refused = format!("{host} refused the credentials: 1 attempt over ");
    assert!(outcomes[0].starts_with(&refused), "{outcomes:?}");
    assert!(
        downloaded(&summary.files[1].outcome),
        "an open URL of the same host after one 401: {outcomes:?}"
    );
    assert!(outcomes[2].starts_with(&refused), "{outcomes:?}");
    assert!(outcomes[3].starts_with(&refused), "{outcomes:?}");
    for o in &outcomes[4..6] {
        assert_eq!(
            *o,
            format!("stopped: {host} refused the credentials for two other files in a row")
        );
    }
    assert!(downloaded(&summary.files[6].outcome), "{outcomes:?}");
    assert_eq!(
        server.hits("/e.bin") + server.hits("/f.bin"),
        0,
        "no bandwidth burnt"
    );
    assert!(!summary.failures_temporary());
}

#[tokio::test]
async fn an_interrupted_pull_keeps_its_partial_file_and_the_next_one_resumes() {
    let server = FaultServer::start();
    let body = data(SIZE);
    server.script("/f.bin", [Reply::file(body.clone()).stall_after(6000)]);
    let dir = tempfile::tempdir().unwrap();
    let items = || f_bin(&server, None, Some(Sha256::of(&body)));
    let plan = backstop_transfer::Plan::new(dir.path(), items()).unwrap();
    let token = CancellationToken::new();
    let stop = token.clone();
    let part = dir.path().join("f.bin.part");
    let record = dir.path().join("f.bin.part.json");
    let watch = {
        let part = part.clone();
        tokio::spawn(async move {
            while std::fs::metadata(&part).map_or(0, |m| m.len()) < 6000 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            stop.cancel();
        })
    };
    let options = Options {
        // Long enough that the stall is interrupted, not timed out.
        ..options()
    };
    let client = backstop_http::Client::builder()
        .read_idle_timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let summary = backstop_transfer::Pull::new(client)
        .options(options)
        .cancel_on(token)
        .run(&plan)
        .await
        .unwrap();
    watch.await.unwrap();
    assert!(
        matches!(
            summary.files[0].outcome,
            Outcome::Interrupted { have: 6000 }
        ),
        "{:?}",
        summary.files[0]
    );
    assert!(summary.interrupted());
    assert_eq!(std::fs::metadata(&part).unwrap().len(), 6000);
    assert!(record.exists(), "progress recorded for the next run");

    // The next run: another process, as far as the files can tell.
    server.always("/f.bin", Reply::file(body.clone()));
    let (summary, events) = pull(dir.path(), items(), common::options()).await;
    assert!(
        downloaded(&summary.files[0].outcome),
        "{:?}",
        summary.files[0]
    );
    assert!(
        matches!(
            summary.files[0].outcome,
            Outcome::Downloaded {
                resumed_from: 6000,
                ..
            }
        ),
        "{:?}",
        summary.files[0]
    );
    assert_eq!(
        ranges(&server)[1].as_deref(),
        Some("bytes=6000-9999"),
        "the record knows the size"
    );
    assert_eq!(summary.files[0].fetched, (SIZE - 6000) as u64);
    assert!(
        events.any("start f.bin Some(10000) 6000"),
        "{:?}",
        events.lines()
    );
    assert_eq!(std::fs::read(dir.path().join("f.bin")).unwrap(), body);
    assert!(!part.exists() && !record.exists());
}

#[tokio::test]
async fn a_partial_file_without_a_trustworthy_record_is_started_over() {
    let server = FaultServer::start();
    let body = data(SIZE);
    server.always("/f.bin", Reply::file(body.clone()));
    let dir = tempfile::tempdir().unwrap();
    // Bytes of unknown origin, and a record from another URL.
    std::fs::write(dir.path().join("f.bin.part"), vec![0u8; 4000]).unwrap();
    std::fs::write(
        dir.path().join("f.bin.part.json"),
        r#"{"version":1,"url":"http://elsewhere/f.bin","size":null,"sha256":null,"validator":null,"segments":[{"start":0,"end":null,"done":4000}]}"#,
    )
    .unwrap();
    let (summary, _) = pull(dir.path(), f_bin(&server, None, None), options()).await;
    assert!(downloaded(&summary.files[0].outcome));
    assert_eq!(ranges(&server), [None]);
    assert_eq!(std::fs::read(dir.path().join("f.bin")).unwrap(), body);
}

#[tokio::test]
async fn a_file_already_in_place_is_not_fetched_again() {
    let server = FaultServer::start();
    let body = data(SIZE);
    server.always("/f.bin", Reply::file(body.clone()));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f.bin"), &body).unwrap();
    let sha = Some(Sha256::of(&body));
    let (summary, _) = pull(
        dir.path(),
        f_bin(&server, Some(SIZE as u64), sha),
        options(),
    )
    .await;
    assert!(matches!(
        summary.files[0].outcome,
        Outcome::AlreadyThere { .. }
    ));
    assert_eq!(server.requests().len(), 0);

    // Same size, other bytes: replaced.
    std::fs::write(dir.path().join("f.bin"), vec![1u8; SIZE]).unwrap();
    let (summary, _) = pull(
        dir.path(),
        f_bin(&server, Some(SIZE as u64), sha),
        options(),
    )
    .await;
    assert!(downloaded(&summary.files[0].outcome));
    assert_eq!(std::fs::read(dir.path().join("f.bin")).unwrap(), body);

    // A URL without a known size and without a hash, trusted by its size:
    // a HEAD tells it.
    let options = Options {
        skip_existing: true,
        ..options()
    };
    let (summary, _) = pull(dir.path(), f_bin(&server, None, None), options).await;
    assert!(matches!(
        summary.files[0].outcome,
        Outcome::AlreadyThere { .. }
    ));
    assert_eq!(server.requests().last().unwrap().method, "HEAD");
}

/// What each request since `from` was: "HEAD", "HEAD if-none-match=\"v1\"".
fn asked(server: &FaultServer, from: usize) -> Vec<String> {
    server.requests()[from..]
        .iter()
        .map(|r| match r.header("if-none-match") {
            Some(tag) => format!("{} if-none-match={tag}", r.method),
            None => r.method.clone(),
        })
        .collect()
}

/// Without a hash, a file in place is kept only when the server says it
/// is current: the ETag and Last-Modified recorded when it arrived go back
/// in a conditional HEAD, and only a 304 keeps it.
#[tokio::test]
async fn a_file_without_a_hash_is_kept_only_when_the_server_says_it_is_current() {
    let server = FaultServer::start();
    let body = data(SIZE);
    let date = "Tue, 01 Dec 2026 10:00:00 GMT";
    server.always(
        "/f.bin",
        Reply::file(body.clone())
            .header("ETag", "\"v1\"")
            .header("Last-Modified", date),
    );
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("f.bin");
    let record = dir.path().join(".backstop/f.bin.json");

    // The right size, other bytes, nothing recorded: fetched again.
    std::fs::write(&dest, vec![1u8; SIZE]).unwrap();
    let (summary, _) = pull(dir.path(), f_bin(&server, None, None), options()).await;
    assert_arrived(&summary, 0, &dest, &body);
    assert_eq!(asked(&server, 0), ["HEAD", "GET"]);
    assert!(record.exists());

    // 304 to the validators recorded: kept, after one request.
    let before = server.requests().len();
    server.script("/f.bin", [Reply::status(304)]);
    let (summary, _) = pull(dir.path(), f_bin(&server, None, None), options()).await;
    assert!(
        matches!(
            summary.files[0].outcome,
            Outcome::AlreadyThere { bytes } if bytes == SIZE as u64
        ),
        "{:?}",
        summary.files[0]
    );
    assert_eq!(asked(&server, before), ["HEAD if-none-match=\"v1\""]);
    assert_eq!(
        server.requests()[before].header("if-modified-since"),
        Some(date)
    );

    // 200 to the conditional request: the file changed, fetched again.
    let before = server.requests().len();
    let (summary, _) = pull(dir.path(), f_bin(&server, None, None), options()).await;
    assert_arrived(&summary, 0, &dest, &body);
    assert_eq!(asked(&server, before), ["HEAD if-none-match=\"v1\"", "GET"]);

    // Other bytes of the same size written since: the record does not
    // describe them, so they are not asked about, and fetched again.
    std::fs::write(&dest, vec![2u8; SIZE]).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&dest)
        .unwrap()
        .set_modified(std::time::SystemTime::now() + Duration::from_secs(10))
        .unwrap();
    let before = server.requests().len();
    let (summary, _) = pull(dir.path(), f_bin(&server, None, None), options()).await;
    assert_arrived(&summary, 0, &dest, &body);
    assert_eq!(asked(&server, before), ["HEAD", "GET"]);

    // --skip-existing trusts the size.
    std::fs::write(&dest, vec![3u8; SIZE]).unwrap();
    let before = server.requests().len();
    let options = Options {
        skip_existing: true,
        ..options()
    };
    let (summary, _) = pull(dir.path(), f_bin(&server, None, None), options).await;
    assert!(matches!(
        summary.files[0].outcome,
        Outcome::AlreadyThere { .. }
    ));
    assert_eq!(asked(&server, before), ["HEAD"]);
    assert_eq!(std::fs::read(&dest).unwrap(), vec![3u8; SIZE]);
}

#[tokio::test]
async fn several_streams_share_one_file() {
    let server = FaultServer::start();
    let body = data(40_000);
    server.script("/f.bin", [Reply::file(body.clone()).cut_after(3000)]);
    server.always("/f.bin", Reply::file(body.clone()));
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        streams: 4,
        min_stream_bytes: 5000,
        ..options()
    };
    let (summary, _) = pull(
        dir.path(),
        f_bin(&server, Some(40_000), Some(Sha256::of(&body))),
        options,
    )
    .await;
    assert_arrived(&summary, 0, &dir.path().join("f.bin"), &body);
    let mut asked: Vec<String> = ranges(&server).into_iter().flatten().collect();
    asked.sort();
    assert!(asked.contains(&"bytes=10000-19999".to_owned()), "{asked:?}");
    assert!(asked.contains(&"bytes=30000-39999".to_owned()), "{asked:?}");
    assert_eq!(asked.len(), 5, "four streams and one resume: {asked:?}");
    assert_eq!(summary.files[0].fetched, 40_000);
}

#[tokio::test]
async fn several_streams_fall_back_to_one_when_ranges_are_ignored() {
    let server = FaultServer::start();
    let body = data(40_000);
    server.always("/f.bin", Reply::file(body.clone()).ignore_range());
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        streams: 4,
        min_stream_bytes: 5000,
        ..options()
    };
    let (summary, events) = pull(
        dir.path(),
        f_bin(&server, Some(40_000), Some(Sha256::of(&body))),
        options,
    )
    .await;
    assert_arrived(&summary, 0, &dir.path().join("f.bin"), &body);
    assert!(
        events.any("restart the server does not serve ranges"),
        "{:?}",
        events.lines()
    );
}
