//! What a download does to what its destination names: a regular file is
//! replaced whole, a symbolic link keeps pointing where it did while its
//! target is replaced, and a device or a FIFO is written through, never
//! replaced by a regular file.

mod common;

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use backstop_faultserver::{FaultServer, Reply};
use backstop_transfer::{FileError, Options, Outcome, Plan, Planned, Pull, Summary};
use common::*;
use nix::sys::stat::{Mode, SFlag, makedev, mknod};

const SIZE: usize = 10_000;

/// `get -o`'s options: the destination is replaced whatever it holds.
fn replacing() -> Options {
    Options {
        replace_existing: true,
        ..options()
    }
}

/// Downloads the server's `/f.bin` to `dest`, a path the caller chose.
async fn fetch_to(server: &FaultServer, dest: &Path, options: Options) -> Summary {
    let plan = Plan {
        files: vec![Planned::at(
            item(&server.url("/f.bin"), "f.bin", None, None),
            dest.to_owned(),
        )],
    };
    Pull::new(client())
        .options(options)
        .run(&plan)
        .await
        .unwrap()
}

/// A body cut after 3000 bytes, then served whole: the second request
/// must ask for the rest.
fn cut_once(server: &FaultServer, body: &[u8]) {
    server.script("/f.bin", [Reply::file(body.to_vec()).cut_after(3000)]);
    server.always("/f.bin", Reply::file(body.to_vec()));
}

fn ranges(server: &FaultServer) -> Vec<Option<String>> {
    server
        .requests()
        .iter()
        .map(|r| r.header("range").map(str::to_owned))
        .collect()
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn a_regular_file_is_replaced_whole_keeping_its_permissions() {
    let server = FaultServer::start();
    let body = data(SIZE);
    cut_once(&server, &body);
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("out.bin");
    std::fs::write(&dest, "old").unwrap();
    std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o600)).unwrap();
    let before = std::fs::metadata(&dest).unwrap().ino();

    let summary = fetch_to(&server, &dest, replacing()).await;
    assert_arrived(&summary, 0, &dest, &body);
    let after = std::fs::metadata(&dest).unwrap();
    assert_ne!(after.ino(), before, "a new file renamed into place");
    assert_eq!(after.permissions().mode() & 0o777, 0o600);
    assert_eq!(ranges(&server), [None, Some("bytes=3000-".into())]);
    assert_eq!(names(dir.path()), ["out.bin"], "no partial file left");
}

#[tokio::test]
async fn a_file_in_place_is_fetched_again_when_replacing() {
    let server = FaultServer::start();
    let body = data(SIZE);
    server.always("/f.bin", Reply::file(body.clone()));
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("out.bin");
    std::fs::write(&dest, vec![0u8; SIZE]).unwrap();

    let summary = fetch_to(&server, &dest, replacing()).await;
    assert_arrived(&summary, 0, &dest, &body);
    assert_eq!(ranges(&server), [None], "no HEAD, one GET");
}

#[tokio::test]
async fn a_symlink_is_kept_and_its_target_replaced() {
    let server = FaultServer::start();
    let body = data(SIZE);
    cut_once(&server, &body);
    let dir = tempfile::tempdir().unwrap();
    let blobs = dir.path().join("blobs");
    std::fs::create_dir(&blobs).unwrap();
    let target = blobs.join("target.bin");
    std::fs::write(&target, "old").unwrap();
    let link = dir.path().join("link.bin");
    symlink("blobs/target.bin", &link).unwrap();

    let summary = fetch_to(&server, &link, replacing()).await;
    assert_arrived(&summary, 0, &target, &body);
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(
        std::fs::read_link(&link).unwrap(),
        PathBuf::from("blobs/target.bin")
    );
    assert_eq!(ranges(&server), [None, Some("bytes=3000-".into())]);
    assert_eq!(
        names(&blobs),
        ["target.bin"],
        "the partial file was beside the target"
    );
    assert_eq!(names(dir.path()), ["blobs", "link.bin"]);
}

#[tokio::test]
async fn a_fifo_is_written_through_to_its_reader_and_resumed_by_range() {
    let server = FaultServer::start();
    let body = data(SIZE);
    cut_once(&server, &body);
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("pipe");
    nix::unistd::mkfifo(&fifo, Mode::S_IRWXU).unwrap();
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read(fifo).unwrap())
    };

    let summary = fetch_to(&server, &fifo, replacing()).await;
    assert!(
        matches!(summary.files[0].outcome, Outcome::Downloaded { bytes, .. } if bytes == SIZE as u64),
        "{:?}",
        summary.files[0]
    );
    assert!(
        reader.join().unwrap() == body,
        "the reader got the body once, in order"
    );
    assert!(
        std::fs::symlink_metadata(&fifo)
            .unwrap()
            .file_type()
            .is_fifo()
    );
    assert_eq!(ranges(&server), [None, Some("bytes=3000-".into())]);
    assert_eq!(names(dir.path()), ["pipe"], "no partial file, no record");
}

#[tokio::test]
async fn a_fifo_that_would_have_to_start_over_fails_instead() {
    let server = FaultServer::start();
    let body = data(SIZE);
    server.script("/f.bin", [Reply::file(body.clone()).cut_after(3000)]);
    server.always("/f.bin", Reply::ok(body.clone()));
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("pipe");
    nix::unistd::mkfifo(&fifo, Mode::S_IRWXU).unwrap();
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read(fifo).unwrap())
    };

    let summary = fetch_to(&server, &fifo, replacing()).await;
    let Outcome::Failed(FileError::Local { path, source }) = &summary.files[0].outcome else {
        panic!("{:?}", summary.files[0]);
    };
    assert_eq!(path, &fifo);
    assert_eq!(
        source.to_string(),
        "cannot start over: 3000 bytes are already written to an output that is not a regular file"
    );
    assert_eq!(
        reader.join().unwrap(),
        body[..3000],
        "never the same bytes twice"
    );
}

#[tokio::test]
async fn a_device_is_written_through_and_stays_a_device() {
    let server = FaultServer::start();
    let body = data(SIZE);
    server.always("/f.bin", Reply::file(body.clone()));
    let dir = tempfile::tempdir().unwrap();
    // The tests run as root: a /dev/null and a /dev/full of their own.
    let null = dir.path().join("null");
    let full = dir.path().join("full");
    let chr = |path: &Path, minor| {
        mknod(
            path,
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            makedev(1, minor),
        )
        .unwrap()
    };
    chr(&null, 3);
    chr(&full, 7);

    let summary = fetch_to(&server, &null, replacing()).await;
    assert!(
        matches!(summary.files[0].outcome, Outcome::Downloaded { bytes, .. } if bytes == SIZE as u64),
        "{:?}",
        summary.files[0]
    );
    let summary = fetch_to(&server, &full, replacing()).await;
    let Outcome::Failed(FileError::Local { path, source }) = &summary.files[0].outcome else {
        panic!("{:?}", summary.files[0]);
    };
    assert_eq!(path, &full);
    assert_eq!(source.kind(), std::io::ErrorKind::StorageFull);

    for device in [&null, &full] {
        let meta = std::fs::symlink_metadata(device).unwrap();
        assert!(meta.file_type().is_char_device(), "{}", device.display());
    }
    assert_eq!(
        names(dir.path()),
        ["full", "null"],
        "no partial file, no record"
    );
}
