//! What a tar layer was unpacked as — its digest and each file it wrote,
//! with the size and modification time it had — kept so that the next
//! pull leaves an unpacked layer whose files are unchanged alone instead
//! of fetching it again (the archive itself is removed once unpacked).
//!
//! The record of a layer lives where the transfer engine keeps a file's
//! validators: `DIR/.backstop/<filepath>.oci-layer.tar.json`
//! ([`backstop_transfer::Planned::validators`]), gone with the folder.

use std::io::{self, Write};
use std::path::Path;
use std::time::UNIX_EPOCH;

use backstop_transfer::Sha256;
use serde::{Deserialize, Serialize};

/// The record's format version.
const VERSION: u32 = 1;

/// A tar layer unpacked under a destination.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnpackedLayer {
    version: u32,
    /// The layer's sha256, in hex.
    digest: String,
    files: Vec<UnpackedFile>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct UnpackedFile {
    /// Relative to the destination, as [`crate::unpack`] returned it.
    path: String,
    size: u64,
    /// Nanoseconds since the Unix epoch.
    modified: u128,
}

/// A file's size and modification time, when it is a regular file.
fn stat(path: &Path) -> Option<(u64, u128)> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    let modified = meta.modified().ok()?.duration_since(UNIX_EPOCH).ok()?;
    meta.is_file().then_some((meta.len(), modified.as_nanos()))
}

impl UnpackedLayer {
    /// The layer `digest` whose files `files` (relative to `dir`) were just
    /// unpacked; fails when one of them is not a regular file there.
    pub fn of(dir: &Path, digest: Sha256, files: &[String]) -> io::Result<UnpackedLayer> {
        let files = files
            .iter()
            .map(|path| {
                let (size, modified) = stat(&dir.join(path)).ok_or_else(|| {
                    io::Error::new(io::ErrorKind::NotFound, format!("{path} is not in place"))
                })?;
                Ok(UnpackedFile {
                    path: path.clone(),
                    size,
                    modified,
                })
            })
            .collect::<io::Result<_>>()?;
        Ok(UnpackedLayer {
            version: VERSION,
            digest: digest.to_string(),
            files,
        })
    }

    /// Whether the record at `record` says the layer `digest` is unpacked
    /// under `dir` and every file it wrote is still there, of the size
    /// and modification time recorded. A missing, unreadable or foreign
    /// record, or a file edited, replaced or removed since, is `false`:
    /// the layer is fetched again.
    pub fn is_current(record: &Path, dir: &Path, digest: Sha256) -> bool {
        let Ok(text) = std::fs::read(record) else {
            return false;
        };
        let Ok(layer) = serde_json::from_slice::<UnpackedLayer>(&text) else {
            return false;
        };
        layer.version == VERSION
            && layer.digest == digest.to_string()
            && layer.files.iter().all(|f| {
                backstop_transfer::confine(dir, &f.path)
                    .ok()
                    .and_then(|path| stat(&path))
                    == Some((f.size, f.modified))
            })
    }

    /// Writes the record to `path` atomically (a temporary beside it,
    /// synced, then renamed over it), creating its folder.
    pub fn save(&self, path: &Path) -> io::Result<()> {
        let parent = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent)?;
        let mut temp = tempfile::NamedTempFile::new_in(parent)?;
        serde_json::to_writer(&mut temp, self)?;
        temp.flush()?;
        temp.as_file().sync_all()?;
        temp.persist(path).map_err(|e| e.error)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    #[test]
    fn a_record_holds_while_every_file_is_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a")).unwrap();
        std::fs::write(dir.path().join("a/x.bin"), b"xx").unwrap();
        std::fs::write(dir.path().join("y.txt"), b"y").unwrap();
        let record = dir.path().join(".backstop/a.oci-layer.tar.json");
        let digest = Sha256::of(b"layer");
        let names = ["a/x.bin".to_owned(), "y.txt".to_owned()];
        assert!(!UnpackedLayer::is_current(&record, dir.path(), digest));
        UnpackedLayer::of(dir.path(), digest, &names)
            .unwrap()
            .save(&record)
            .unwrap();
        assert!(UnpackedLayer::is_current(&record, dir.path(), digest));
        assert!(
            !UnpackedLayer::is_current(&record, dir.path(), Sha256::of(b"other")),
            "another layer"
        );

        // Same size, touched since: not what was unpacked.
        std::fs::File::options()
            .write(true)
            .open(dir.path().join("y.txt"))
            .unwrap()
            .set_modified(SystemTime::now() + Duration::from_secs(5))
            .unwrap();
        assert!(!UnpackedLayer::is_current(&record, dir.path(), digest));
        UnpackedLayer::of(dir.path(), digest, &names)
            .unwrap()
            .save(&record)
            .unwrap();
        std::fs::remove_file(dir.path().join("a/x.bin")).unwrap();
        assert!(!UnpackedLayer::is_current(&record, dir.path(), digest));
        std::fs::write(&record, b"{garbage").unwrap();
        assert!(!UnpackedLayer::is_current(&record, dir.path(), digest));
        assert_eq!(
            UnpackedLayer::of(dir.path(), digest, &names)
                .unwrap_err()
                .kind(),
            io::ErrorKind::NotFound
        );
    }
}
