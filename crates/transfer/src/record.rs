//! The progress record of a partial file (`NAME.part.json`): what the
//! bytes are, and how many of them are safely on disk, so that another run
//! resumes where this one stopped.

use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// The record's format version.
const VERSION: u32 = 1;

/// One stream's share of the file and how far it got: bytes
/// `start..done` are on disk, synced, and `done..end` are to come.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Segment {
    pub start: u64,
    /// Exclusive; `None` until the server says where the file ends.
    pub end: Option<u64>,
    pub done: u64,
}

/// What a partial file holds. It is written only after the partial file
/// has been synced up to every `done`, and replaced atomically, so it
/// never claims a byte that a crash could lose.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Record {
    pub version: u32,
    /// The source, without credentials or query string.
    pub url: String,
    pub size: Option<u64>,
    pub sha256: Option<String>,
    /// What to send as `If-Range`: a strong ETag or a Last-Modified date.
    pub validator: Option<String>,
    pub segments: Vec<Segment>,
}

impl Record {
    pub(crate) fn new(url: String, size: Option<u64>, sha256: Option<String>) -> Self {
        Record {
            version: VERSION,
            url,
            size,
            sha256,
            validator: None,
            segments: Vec::new(),
        }
    }

    /// The record at `path`, when there is one that this version reads and
    /// that is consistent with a partial file of `part_len` bytes.
    pub(crate) fn load(path: &Path, part_len: u64) -> Option<Record> {
        let text = std::fs::read(path).ok()?;
        let record: Record = serde_json::from_slice(&text).ok()?;
        let consistent = record.version == VERSION
            && !record.segments.is_empty()
            && record.segments.iter().all(|s| {
                s.start <= s.done
                    && s.done <= part_len
                    && s.end.is_none_or(|e| s.done <= e)
                    && record
                        .size
                        .is_none_or(|size| s.end.is_some_and(|e| e <= size))
            });
        consistent.then_some(record)
    }

    /// Whether this record may describe the same bytes as a download of
    /// `url` whose size and digest, when known, are `size` and `sha256`:
    /// the same URL, and no size or digest known to both that differs (a
    /// digest learnt since is checked over the whole file at the end).
    pub(crate) fn describes(&self, url: &str, size: Option<u64>, sha256: Option<&str>) -> bool {
        let agree = |a: Option<&str>, b: Option<&str>| a.zip(b).is_none_or(|(a, b)| a == b);
        self.url == url
            && self.size.zip(size).is_none_or(|(a, b)| a == b)
            && agree(self.sha256.as_deref(), sha256)
    }

    /// Writes the record to `path` atomically: a temporary beside it, then
    /// a rename.
    pub(crate) fn save(&self, path: &Path) -> io::Result<()> {
        save_json(self, path)
    }
}

/// Writes `value` as JSON to `path` atomically (see [`write_atomically`]).
pub(crate) fn save_json(value: &impl serde::Serialize, path: &Path) -> io::Result<()> {
    let json = serde_json::to_vec(value).map_err(io::Error::other)?;
    write_atomically(path, &json)
}

/// Writes `bytes` to `path` atomically: a temporary file of its own beside
/// it, then a rename, so that a reader sees the old content or the new,
/// never half, and two processes writing at once never share a
/// temporary. The file gets the permissions a new file gets (the umask's).
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;

    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut temp = tempfile::Builder::new()
        .prefix(".")
        .suffix(".tmp")
        .permissions(std::fs::Permissions::from_mode(0o666))
        .tempfile_in(dir)?;
    temp.write_all(bytes)?;
    temp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        let mut r = Record::new("https://h/x".into(), Some(100), None);
        r.segments = vec![
            Segment {
                start: 0,
                end: Some(50),
                done: 20,
            },
            Segment {
                start: 50,
                end: Some(100),
                done: 70,
            },
        ];
        r
    }

    #[test]
    fn round_trip_and_consistency() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.part.json");
        record().save(&path).unwrap();
        assert_eq!(Record::load(&path, 70), Some(record()));
        assert_eq!(
            Record::load(&path, 69),
            None,
            "claims bytes the partial file lacks"
        );
        std::fs::write(&path, b"{garbage").unwrap();
        assert_eq!(Record::load(&path, 70), None);
        let mut bad = record();
        bad.segments[0].done = 60;
        bad.save(&path).unwrap();
        assert_eq!(Record::load(&path, 100), None, "done past its end");
        assert_eq!(Record::load(&dir.path().join("missing"), 0), None);
    }

    #[test]
    fn identity() {
        let r = record();
        assert!(r.describes("https://h/x", None, None));
        assert!(r.describes("https://h/x", Some(100), None));
        assert!(!r.describes("https://h/x", Some(101), None));
        assert!(!r.describes("https://h/y", None, None));
        assert!(
            r.describes("https://h/x", None, Some("ab")),
            "a digest learnt since"
        );
        let mut with = record();
        with.sha256 = Some("ab".into());
        assert!(!with.describes("https://h/x", None, Some("cd")));
    }
}
