//! Upload sessions kept between runs: where an unfinished blob's session
//! is and how much of it the registry confirmed, so that the next push
//! continues it instead of starting from byte 0.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use backstop_transfer::Sha256;
use serde::{Deserialize, Serialize};

/// An unfinished upload, as the last run left it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// The registry (`host:port`).
    pub registry: String,
    /// The repository.
    pub repository: String,
    /// The blob's digest, `sha256:…`.
    pub digest: String,
    /// The session's latest `Location` (absolute).
    pub location: String,
    /// The bytes the registry confirmed with its last `Range`.
    pub offset: u64,
}

/// A directory of [`SessionRecord`]s, one file each, keyed by registry,
/// repository and digest. Every write is atomic (a private temporary
/// file renamed over the record), so a crash leaves the previous record
/// or the new one, never half of either.
#[derive(Clone, Debug)]
pub struct SessionStore {
    dir: PathBuf,
}

impl SessionStore {
    /// Records under `dir` (made, mode 0700, when first written).
    pub fn new(dir: impl Into<PathBuf>) -> SessionStore {
        SessionStore { dir: dir.into() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, registry: &str, repository: &str, digest: &str) -> PathBuf {
        let key = Sha256::of(format!("{registry}\n{repository}\n{digest}").as_bytes());
        self.dir.join(format!("{}.json", &key.to_string()[..32]))
    }

    /// The record of this blob, if a run left one. A record that cannot be
    /// read, or that is for another blob, counts as none.
    pub fn load(&self, registry: &str, repository: &str, digest: &str) -> Option<SessionRecord> {
        let text = std::fs::read(self.path(registry, repository, digest)).ok()?;
        let record: SessionRecord = serde_json::from_slice(&text).ok()?;
        (record.registry == registry && record.repository == repository && record.digest == digest)
            .then_some(record)
    }

    /// Saves `record`, replacing the one before.
    pub fn save(&self, record: &SessionRecord) -> io::Result<()> {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(&self.dir)?;
        let mut temp = tempfile::Builder::new()
            .prefix(".session.")
            .tempfile_in(&self.dir)?;
        temp.write_all(&serde_json::to_vec(record).map_err(io::Error::other)?)?;
        temp.as_file().sync_all()?;
        temp.persist(self.path(&record.registry, &record.repository, &record.digest))
            .map_err(|e| e.error)?;
        Ok(())
    }

    /// Forgets this blob's record (the blob is there, or its session is
    /// gone).
    pub fn forget(&self, registry: &str, repository: &str, digest: &str) {
        let _ = std::fs::remove_file(self.path(registry, repository, digest));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_kept_per_blob_and_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = SessionStore::new(dir.path().join("uploads"));
        let record = SessionRecord {
            registry: "127.0.0.1:5000".into(),
            repository: "m".into(),
            digest: "sha256:aa".into(),
            location: "http://127.0.0.1:5000/v2/m/blobs/uploads/x?_state=y".into(),
            offset: 64,
        };
        assert_eq!(store.load("127.0.0.1:5000", "m", "sha256:aa"), None);
        store.save(&record).unwrap();
        store
            .save(&SessionRecord {
                offset: 128,
                ..record.clone()
            })
            .unwrap();
        assert_eq!(
            store
                .load("127.0.0.1:5000", "m", "sha256:aa")
                .unwrap()
                .offset,
            128
        );
        assert_eq!(store.load("127.0.0.1:5000", "other", "sha256:aa"), None);
        let files = std::fs::read_dir(store.dir()).unwrap().count();
        assert_eq!(files, 1, "no temporary file left behind");
        store.forget("127.0.0.1:5000", "m", "sha256:aa");
        assert_eq!(store.load("127.0.0.1:5000", "m", "sha256:aa"), None);
    }
}
