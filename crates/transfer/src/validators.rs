//! What a finished file was downloaded as — its URL, size, `ETag` and
//! `Last-Modified` — kept so that a later pull can ask the server whether
//! the file is still current instead of trusting its size.
//!
//! The record of `NAME` lives in `DIR/.backstop/NAME.json` (see
//! [`crate::Planned::validators`]): out of sight in the destination, beside
//! the files it describes, and gone with them when the folder is removed
//! (huggingface_hub keeps its `--local-dir` metadata the same way, under
//! `.cache/huggingface/`). It describes the file only while the file keeps
//! the size and modification time it had when recorded: a file replaced or
//! edited since is not proven current by it.

use std::io;
use std::path::Path;
use std::time::UNIX_EPOCH;

use backstop_http::header::{HeaderName, HeaderValue, IF_MODIFIED_SINCE, IF_NONE_MATCH};
use serde::{Deserialize, Serialize};

/// The record's format version.
const VERSION: u32 = 1;

/// A finished file's validators.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Validators {
    version: u32,
    /// The source, without credentials or query string.
    url: String,
    size: u64,
    /// The file's modification time when recorded, in nanoseconds since
    /// the Unix epoch.
    modified: u128,
    etag: Option<String>,
    last_modified: Option<String>,
}

/// A file's modification time in nanoseconds since the epoch.
fn modified(meta: &std::fs::Metadata) -> Option<u128> {
    meta.modified()
        .ok()?
        .duration_since(UNIX_EPOCH)
        .ok()
        .map(|d| d.as_nanos())
}

impl Validators {
    /// The validators a server sent for the file `url`, now complete at
    /// `dest`; `None` when it sent none (nothing could prove it current).
    pub(crate) fn of(
        url: &str,
        dest: &Path,
        etag: Option<&HeaderValue>,
        last_modified: Option<&HeaderValue>,
    ) -> Option<Validators> {
        let text = |v: Option<&HeaderValue>| {
            v.and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        let (etag, last_modified) = (text(etag), text(last_modified));
        if etag.is_none() && last_modified.is_none() {
            return None;
        }
        let meta = std::fs::metadata(dest).ok()?;
        Some(Validators {
            version: VERSION,
            url: url.to_owned(),
            size: meta.len(),
            modified: modified(&meta)?,
            etag,
            last_modified,
        })
    }

    /// The record at `path`, when there is one that this version reads and
    /// that describes the file at `dest` as downloaded from `url`: the
    /// same URL, and the file still of the size and modification time
    /// recorded.
    pub(crate) fn load(path: &Path, url: &str, dest: &Path) -> Option<Validators> {
        let text = std::fs::read(path).ok()?;
        let record: Validators = serde_json::from_slice(&text).ok()?;
        let meta = std::fs::metadata(dest).ok()?;
        let describes = record.version == VERSION
            && record.url == url
            && meta.is_file()
            && meta.len() == record.size
            && modified(&meta) == Some(record.modified);
        describes.then_some(record)
    }

    /// The size recorded.
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// The headers that ask the server to answer 304 if the file is
    /// unchanged: `If-None-Match` with the ETag, `If-Modified-Since` with
    /// the date (a server that has both looks at the ETag).
    pub(crate) fn conditions(&self) -> Vec<(HeaderName, HeaderValue)> {
        let mut headers = Vec::new();
        let pairs = [
            (IF_NONE_MATCH, &self.etag),
            (IF_MODIFIED_SINCE, &self.last_modified),
        ];
        for (name, value) in pairs {
            if let Some(v) = value.as_deref().and_then(|v| HeaderValue::from_str(v).ok()) {
                headers.push((name, v));
            }
        }
        headers
    }

    /// Writes the record to `path` atomically (a temporary beside it, then
    /// a rename), creating its folder.
    pub(crate) fn save(&self, path: &Path) -> io::Result<()> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        crate::record::save_json(self, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    fn touch(path: &Path, at: SystemTime) {
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(at)
            .unwrap();
    }

    #[test]
    fn a_record_describes_the_file_only_while_it_is_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let (dest, path) = (
            dir.path().join("f.bin"),
            dir.path().join(".backstop/f.bin.json"),
        );
        std::fs::write(&dest, b"0123456789").unwrap();
        let etag = HeaderValue::from_static("\"abc\"");
        let date = HeaderValue::from_static("Tue, 01 Dec 2026 10:00:00 GMT");
        assert_eq!(Validators::of("https://h/f.bin", &dest, None, None), None);
        let record = Validators::of("https://h/f.bin", &dest, Some(&etag), Some(&date)).unwrap();
        record.save(&path).unwrap();
        assert_eq!(
            Validators::load(&path, "https://h/f.bin", &dest),
            Some(record.clone())
        );
        let names: Vec<_> = record.conditions().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, [IF_NONE_MATCH, IF_MODIFIED_SINCE]);
        assert_eq!(Validators::load(&path, "https://h/other.bin", &dest), None);

        // Same size, touched since: not the file recorded.
        touch(&dest, SystemTime::now() + Duration::from_secs(5));
        assert_eq!(Validators::load(&path, "https://h/f.bin", &dest), None);
        std::fs::write(&path, b"{garbage").unwrap();
        assert_eq!(Validators::load(&path, "https://h/f.bin", &dest), None);
    }
}
