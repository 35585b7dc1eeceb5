//! A file of a Hub repository placed in the Hugging Face cache as
//! huggingface_hub places it: the blob written under the lock
//! huggingface_hub takes for it, then linked from the snapshot; the
//! revision's ref recorded once all its files are in.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use backstop_http::Prepared;

use crate::download::{self, Job, blocking, local, remove};
use crate::plan::{CacheSlot, Placement, RefFile};
use crate::stream::Learned;
use crate::{Event, FileError, FileReport, Outcome, Planned};

/// Places the blob of `job` and links it from its snapshot: kept when a
/// blob of the right size is there already (from any revision, any
/// repository file with the same content, or huggingface_hub itself),
/// else downloaded into `<etag>.incomplete` while holding the blob's
/// lock, and renamed into place once checked.
pub(crate) async fn fetch(
    job: &Job<'_>,
    slot: &CacheSlot,
    prepared: &Prepared<'_>,
    fetched: &AtomicU64,
) -> Result<Outcome, FileError> {
    let planned = job.planned;
    make_folders(planned, slot)?;
    let replace = job.options.replace_existing;
    if !replace && let Some(outcome) = in_place(job, slot)? {
        return Ok(outcome);
    }
    let held = hold(job, &slot.lock).await?;
    if let Held::Stopped = held {
        let have = std::fs::metadata(planned.part()).map_or(0, |m| m.len());
        return Ok(Outcome::Interrupted { have });
    }
    // Whoever held the lock before may have put the blob in place.
    if !replace && let Some(outcome) = in_place(job, slot)? {
        return Ok(outcome);
    }
    let identity = identity(planned);
    let probe = download::probe(job).await;
    let learned = Mutex::new(Learned::default());
    let outcome = download::receive(job, prepared, probe, &identity, &learned, fetched).await?;
    if outcome.is_success() {
        link(slot).map_err(local(&slot.pointer))?;
    }
    drop(held);
    Ok(outcome)
}

/// What a partial blob is recorded as the download of: the blob itself,
/// whichever revision's URL it comes from (they all serve its bytes).
fn identity(planned: &Planned) -> String {
    let name = planned.dest.file_name().unwrap_or_default();
    format!("blob {}", name.to_string_lossy())
}

fn make_folders(planned: &Planned, slot: &CacheSlot) -> Result<(), FileError> {
    for path in [&planned.dest, &slot.pointer, &slot.lock] {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(local(parent))?;
        }
    }
    if !slot.tag.exists()
        && let Err(e) =
            crate::record::write_atomically(&slot.tag, backstop_hub::CACHEDIR_TAG.as_bytes())
    {
        tracing::debug!("cannot tag the cache {}: {e}", slot.tag.display());
    }
    Ok(())
}

/// The blob, linked, when it is in place: a regular file (or a link to
/// one, as huggingface_hub's shared store makes) of the listed size, or of
/// any size when the listing gives none, as huggingface_hub trusts it.
fn in_place(job: &Job<'_>, slot: &CacheSlot) -> Result<Option<Outcome>, FileError> {
    let planned = job.planned;
    let Some(bytes) = std::fs::metadata(&planned.dest)
        .ok()
        .filter(std::fs::Metadata::is_file)
        .map(|m| m.len())
        .filter(|len| planned.item.size.is_none_or(|size| size == *len))
    else {
        return Ok(None);
    };
    link(slot).map_err(local(&slot.pointer))?;
    job.progress.event(
        job.id,
        Event::Start {
            name: &planned.item.name,
            size: Some(bytes),
            have: bytes,
        },
    );
    Ok(Some(Outcome::AlreadyThere { bytes }))
}

/// How the wait for a blob's lock ended.
enum Held {
    /// Held until dropped.
    Locked(#[allow(dead_code, reason = "held for its lock")] File),
    /// The file system takes no locks; going on without.
    Unavailable,
    /// The pull was stopped while waiting.
    Stopped,
}

/// Takes the blob's lock as huggingface_hub's `filelock` does on Linux:
/// an exclusive `flock(2)` on the lock file, which stays in place. While
/// another process holds it, says so and waits (a wait the pull stops
/// leaves its blocking thread until the lock is free, which it then lets
/// go at once). A file system without locks gets a warning and no lock,
/// as huggingface_hub goes on without one.
async fn hold(job: &Job<'_>, path: &Path) -> Result<Held, FileError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o664)
        .open(path)
        .map_err(local(path))?;
    match file.try_lock() {
        Ok(()) => return Ok(Held::Locked(file)),
        Err(std::fs::TryLockError::WouldBlock) => {}
        Err(std::fs::TryLockError::Error(e)) => return Ok(unlocked(path, &e)),
    }
    job.progress.event(
        job.id,
        Event::Waiting {
            reason: "another download is writing this blob; waiting for its lock",
        },
    );
    let wait = blocking(move || file.lock().map(|()| file));
    Ok(tokio::select! {
        locked = wait => match locked {
            Ok(file) => Held::Locked(file),
            Err(e) => unlocked(path, &e),
        },
        () = job.cancel.cancelled() => Held::Stopped,
    })
}

fn unlocked(path: &Path, e: &io::Error) -> Held {
    tracing::warn!(
        "cannot lock {} ({e}); writing the blob without the lock",
        path.display()
    );
    Held::Unavailable
}

/// Makes the snapshot's file a symbolic link to the blob, relative, as
/// huggingface_hub does; one already there is kept.
fn link(slot: &CacheSlot) -> io::Result<()> {
    let points_there = || std::fs::read_link(&slot.pointer).is_ok_and(|t| t == slot.target);
    if points_there() {
        return Ok(());
    }
    remove(&slot.pointer)?;
    match std::os::unix::fs::symlink(&slot.target, &slot.pointer) {
        // Another process linked it between the two calls.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && points_there() => Ok(()),
        linked => linked,
    }
}

/// Records each revision's ref (`refs/main` → the commit) once every file
/// planned with it is in place, so that a ref never names a snapshot
/// this pull left incomplete. A ref that cannot be written costs offline
/// lookups by that name, not data: it is a warning.
pub(crate) fn record_refs(files: &[Planned], reports: &[FileReport]) {
    let mut complete: HashMap<&RefFile, bool> = HashMap::new();
    for (planned, report) in files.iter().zip(reports) {
        if let Placement::HubCache(CacheSlot {
            reference: Some(reference),
            ..
        }) = &planned.placement
        {
            *complete.entry(reference).or_insert(true) &= report.outcome.is_success();
        }
    }
    for (reference, _) in complete.into_iter().filter(|(_, done)| *done) {
        let current = std::fs::read_to_string(&reference.path);
        if current.is_ok_and(|c| c == reference.commit) {
            continue;
        }
        let written = reference
            .path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| {
                crate::record::write_atomically(&reference.path, reference.commit.as_bytes())
            });
        if let Err(e) = written {
            tracing::warn!(
                "cannot record commit {} in {}: {e}",
                reference.commit,
                reference.path.display()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn links_are_relative_replaced_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = dir.path().join("blobs");
        let snap = dir.path().join("snapshots/c0/sub");
        std::fs::create_dir_all(&blobs).unwrap();
        std::fs::create_dir_all(&snap).unwrap();
        std::fs::write(blobs.join("e1"), b"x").unwrap();
        let slot = CacheSlot {
            pointer: snap.join("f.bin"),
            target: PathBuf::from("../../../blobs/e1"),
            lock: dir.path().join("lock"),
            tag: dir.path().join("CACHEDIR.TAG"),
            reference: None,
        };
        link(&slot).unwrap();
        assert_eq!(std::fs::read(&slot.pointer).unwrap(), b"x");
        link(&slot).unwrap();
        // A plain file (a cache made without symlinks) or a stale link is
        // replaced.
        std::fs::remove_file(&slot.pointer).unwrap();
        std::fs::write(&slot.pointer, b"old").unwrap();
        link(&slot).unwrap();
        assert_eq!(std::fs::read_link(&slot.pointer).unwrap(), slot.target);
    }
}
