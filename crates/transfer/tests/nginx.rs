//! Transfers from a real nginx on this machine: many files at once,
//! cuts through a proxy, several streams, and resuming across runs, with
//! `If-Range` catching a file that changed in between.

mod common;

use std::time::Duration;

use backstop_faultserver::{Nginx, Proxy};
use backstop_transfer::{Options, Outcome, Plan, Pull, Sha256};
use common::*;
use tokio_util::sync::CancellationToken;

const MIB: usize = 1 << 20;

#[tokio::test]
async fn many_files_at_once_each_checked() {
    let root = tempfile::tempdir().unwrap();
    let sizes = [MIB, 3 * MIB + 17, 5 * MIB, 0];
    let mut items = Vec::new();
    let nginx = Nginx::start(root.path());
    for (i, size) in sizes.iter().enumerate() {
        let body = data(*size);
        let name = format!("dir{i}/file{i}.bin");
        std::fs::create_dir_all(root.path().join(format!("dir{i}"))).unwrap();
        std::fs::write(root.path().join(&name), &body).unwrap();
        items.push(item(
            &nginx.url(&format!("/{name}")),
            &name,
            None,
            Some(Sha256::of(&body)),
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        jobs: 2,
        ..options()
    };
    let (summary, _) = pull(dir.path(), items, options).await;
    for (i, file) in summary.files.iter().enumerate() {
        assert!(downloaded(&file.outcome), "{file:?}");
        assert_eq!(
            std::fs::read(dir.path().join(format!("dir{i}/file{i}.bin"))).unwrap(),
            data(sizes[i])
        );
    }
    assert!(summary.succeeded());
}

#[tokio::test]
async fn a_connection_cut_every_mebibyte_costs_almost_nothing() {
    let root = tempfile::tempdir().unwrap();
    let body = data(8 * MIB);
    std::fs::write(root.path().join("big.bin"), &body).unwrap();
    let nginx = Nginx::start(root.path());
    let proxy = Proxy::cutting(nginx.addr(), MIB as u64);
    let url = format!("http://{}/big.bin", proxy.addr());
    let dir = tempfile::tempdir().unwrap();
    let (summary, _) = pull(
        dir.path(),
        vec![item(&url, "big.bin", None, Some(Sha256::of(&body)))],
        options(),
    )
    .await;
    assert_arrived(&summary, 0, &dir.path().join("big.bin"), &body);
    assert!(
        proxy.connections() >= 8,
        "{} connections",
        proxy.connections()
    );
    // Every byte once, plus response headers.
    let overhead = proxy.forwarded() - body.len() as u64;
    assert!(overhead < 8 * 1024, "{overhead} bytes beyond the file");
    assert_eq!(summary.files[0].fetched, body.len() as u64);
}

#[tokio::test]
async fn several_streams_from_nginx() {
    let root = tempfile::tempdir().unwrap();
    let body = data(16 * MIB + 3);
    std::fs::write(root.path().join("big.bin"), &body).unwrap();
    let nginx = Nginx::start(root.path());
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        streams: 4,
        min_stream_bytes: MIB as u64,
        ..options()
    };
    let (summary, _) = pull(
        dir.path(),
        vec![item(
            &nginx.url("/big.bin"),
            "big.bin",
            None,
            Some(Sha256::of(&body)),
        )],
        options,
    )
    .await;
    assert_arrived(&summary, 0, &dir.path().join("big.bin"), &body);
    let log = nginx.access_log();
    assert_eq!(
        log.matches("\"GET /big.bin HTTP/1.1\" 206").count(),
        4,
        "{log}"
    );
    assert_eq!(log.matches("\"HEAD /big.bin").count(), 1, "{log}");
}

/// Pulls `url` at 1 MiB/s until `have` bytes are in the partial file,
/// then interrupts.
async fn interrupted(dir: &std::path::Path, url: &str, have: u64) {
    let mut slow = item(url, "big.bin", None, None);
    slow.headers = vec![("X-Slow".into(), "1".into())];
    let plan = Plan::new(dir, vec![slow]).unwrap();
    let token = CancellationToken::new();
    let stop = token.clone();
    let part = dir.join("big.bin.part");
    let watch = tokio::spawn(async move {
        while std::fs::metadata(&part).map_or(0, |m| m.len()) < have {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        stop.cancel();
    });
    let summary = Pull::new(client())
        .options(options())
        .cancel_on(token)
        .run(&plan)
        .await
        .unwrap();
    watch.await.unwrap();
    assert!(
        matches!(summary.files[0].outcome, Outcome::Interrupted { have: h } if h >= have),
        "{:?}",
        summary.files[0]
    );
}

#[tokio::test]
async fn a_pull_resumes_across_runs_from_where_it_stopped() {
    let root = tempfile::tempdir().unwrap();
    let body = data(4 * MIB);
    std::fs::write(root.path().join("big.bin"), &body).unwrap();
    let nginx = Nginx::start(root.path());
    let dir = tempfile::tempdir().unwrap();
    interrupted(dir.path(), &nginx.url("/big.bin"), MIB as u64).await;
    let have = std::fs::metadata(dir.path().join("big.bin.part"))
        .unwrap()
        .len();

    let (summary, _) = pull(
        dir.path(),
        vec![item(
            &nginx.url("/big.bin"),
            "big.bin",
            None,
            Some(Sha256::of(&body)),
        )],
        options(),
    )
    .await;
    let Outcome::Downloaded { resumed_from, .. } = summary.files[0].outcome else {
        panic!("{:?}", summary.files[0])
    };
    assert!(
        resumed_from >= MIB as u64 && resumed_from <= have,
        "{resumed_from}"
    );
    assert_eq!(summary.files[0].fetched, body.len() as u64 - resumed_from);
    assert_eq!(std::fs::read(dir.path().join("big.bin")).unwrap(), body);
    assert!(nginx.access_log().contains("\"GET /big.bin HTTP/1.1\" 206"));
}

#[tokio::test]
async fn a_file_that_changed_between_runs_is_fetched_whole_again() {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("big.bin"), data(4 * MIB)).unwrap();
    let nginx = Nginx::start(root.path());
    let dir = tempfile::tempdir().unwrap();
    interrupted(dir.path(), &nginx.url("/big.bin"), MIB as u64).await;

    // Same size, new content and time: nginx's ETag changes, and it
    // answers the If-Range with the whole new file.
    let mut new = data(4 * MIB);
    new.reverse();
    std::thread::sleep(Duration::from_millis(1100));
    std::fs::write(root.path().join("big.bin"), &new).unwrap();
    let (summary, events) = pull(
        dir.path(),
        vec![item(&nginx.url("/big.bin"), "big.bin", None, None)],
        options(),
    )
    .await;
    assert_arrived(&summary, 0, &dir.path().join("big.bin"), &new);
    assert!(
        events.any("restart the server sent the whole file"),
        "{:?}",
        events.lines()
    );
}

/// nginx's own ETag and Last-Modified: a file in place is revalidated
/// with a conditional HEAD (304, kept), and fetched again once the
/// server's copy changed (200).
#[tokio::test]
async fn a_file_in_place_is_revalidated_with_nginx() {
    let root = tempfile::tempdir().unwrap();
    let served = root.path().join("f.bin");
    std::fs::write(&served, data(MIB)).unwrap();
    let nginx = Nginx::start(root.path());
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("f.bin");
    let items = || vec![item(&nginx.url("/f.bin"), "f.bin", None, None)];
    let (summary, _) = pull(dir.path(), items(), options()).await;
    assert_arrived(&summary, 0, &dest, &data(MIB));

    let (summary, _) = pull(dir.path(), items(), options()).await;
    assert!(
        matches!(summary.files[0].outcome, Outcome::AlreadyThere { .. }),
        "{:?}",
        summary.files[0]
    );
    logged(&nginx, "\"HEAD /f.bin HTTP/1.1\" 304").await;

    // Same size, new bytes and time on the server: its ETag changes.
    let mut new = data(MIB);
    new.reverse();
    std::fs::write(&served, &new).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&served)
        .unwrap()
        .set_modified(std::time::SystemTime::now() + Duration::from_secs(10))
        .unwrap();
    let (summary, _) = pull(dir.path(), items(), options()).await;
    assert_arrived(&summary, 0, &dest, &new);
    logged(&nginx, "\"HEAD /f.bin HTTP/1.1\" 200").await;
}

/// Waits for nginx to log `line`: it writes a request's line after sending
/// the answer, so a fast client can look before it is there.
async fn logged(nginx: &Nginx, line: &str) {
    let start = std::time::Instant::now();
    while !nginx.access_log().contains(line) {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{line} not in {}",
            nginx.access_log()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
