//! The Hugging Face cache, named exactly as huggingface_hub keeps it, so
//! that transformers, vLLM and llama.cpp find what backstop put there, and
//! backstop finds what they did:
//!
//! ```text
//! $HF_HUB_CACHE/
//! ├── CACHEDIR.TAG
//! ├── .locks/models--ORG--NAME/<etag>.lock       held while a blob is written
//! └── models--ORG--NAME/                          datasets--…, spaces--…
//!     ├── blobs/<etag>                            the content
//!     ├── blobs/<etag>.incomplete                 a download under way
//!     ├── refs/main                               the commit `main` named
//!     └── snapshots/<commit>/<path>               -> ../../blobs/<etag>
//! ```
//!
//! A blob's `<etag>` is the ETag the Hub gives the file, normalised: the
//! sha256 of an LFS file (`X-Linked-Etag`), the git blob id of a small
//! one. The Hub's listing gives both, so no request per file is needed to
//! name it.
//!
//! This module only names things. The names under [`CachedRepo::dir`]
//! contain a path and a commit from a server: the caller confines them
//! before writing anything.

use std::path::{Path, PathBuf};

use crate::{Error, RepoKind, repo::split_repo};

/// What huggingface_hub writes in `CACHEDIR.TAG` at the cache's root, so
/// that backup tools skip the folder (<https://bford.info/cachedir/>).
pub const CACHEDIR_TAG: &str = "Signature: 8a477f597d28d172789f06886806bc55\n\
# This file is a cache directory tag created by huggingface_hub.\n\
# For information about cache directory tags, see:\n\
#\thttps://bford.info/cachedir/\n";

/// A Hugging Face cache folder (`HF_HUB_CACHE`).
///
/// ```
/// use backstop_hub::{Cache, RepoKind};
///
/// let cache = Cache::new("/home/me/.cache/huggingface/hub");
/// let repo = cache.repo(RepoKind::Dataset, "org/data").unwrap();
/// assert_eq!(repo.folder(), "datasets--org--data");
/// assert_eq!(repo.pointer_name("c0ffee", "train/a.parquet"), "snapshots/c0ffee/train/a.parquet");
/// assert_eq!(repo.link_target("train/a.parquet", "9f86d0"), "../../../blobs/9f86d0");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cache {
    root: PathBuf,
}

impl Cache {
    /// The cache at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Cache {
        Cache { root: root.into() }
    }

    /// The cache huggingface_hub would use (see
    /// [`hub_cache_from_env`](crate::hub_cache_from_env)).
    pub fn from_env() -> Result<Cache, Error> {
        crate::hub_cache_from_env().map(Cache::new).ok_or_else(|| {
            Error::Invalid(
                "cannot tell where the Hugging Face cache is: set HF_HUB_CACHE or HF_HOME".into(),
            )
        })
    }

    /// The cache's folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where huggingface_hub writes [`CACHEDIR_TAG`].
    pub fn tag(&self) -> PathBuf {
        self.root.join("CACHEDIR.TAG")
    }

    /// The folder of one repository. Fails on an id that is not `ORG/NAME`.
    pub fn repo(&self, kind: RepoKind, repo: &str) -> Result<CachedRepo, Error> {
        let (org, name) = split_repo(repo)?;
        let folder = format!("{}--{org}--{name}", kind.api_name());
        Ok(CachedRepo {
            dir: self.root.join(&folder),
            locks: self.root.join(".locks").join(&folder),
            folder,
        })
    }
}

/// One repository's folder in a [`Cache`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CachedRepo {
    folder: String,
    dir: PathBuf,
    locks: PathBuf,
}

impl CachedRepo {
    /// `models--ORG--NAME`, `datasets--ORG--NAME`, `spaces--ORG--NAME`.
    pub fn folder(&self) -> &str {
        &self.folder
    }

    /// The repository's folder: the cache's root, then [`Self::folder`].
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The blob named `etag`, under [`Self::dir`]: `blobs/<etag>`.
    pub fn blob_name(&self, etag: &str) -> String {
        format!("blobs/{etag}")
    }

    /// The file `path` of the snapshot of `commit`, under [`Self::dir`]:
    /// `snapshots/<commit>/<path>`.
    pub fn pointer_name(&self, commit: &str, path: &str) -> String {
        format!("snapshots/{commit}/{path}")
    }

    /// The file holding the commit `revision` names, under
    /// [`Self::dir`]: `refs/<revision>` (a revision such as `refs/pr/3`
    /// makes folders, as in huggingface_hub).
    pub fn ref_name(&self, revision: &str) -> String {
        format!("refs/{revision}")
    }

    /// What the snapshot file `path` links to: the blob `etag`, relative
    /// to the link's own folder, so that the cache can be moved whole.
    pub fn link_target(&self, path: &str, etag: &str) -> String {
        // snapshots/<commit>/ and one level per folder of the path.
        let depth = 2 + path.matches('/').count();
        format!("{}blobs/{etag}", "../".repeat(depth))
    }

    /// The lock huggingface_hub holds while it writes the blob `etag` of
    /// this repository: `<cache>/.locks/<folder>/<etag>.lock`, an
    /// exclusive `flock(2)` on Linux (Python's `filelock`).
    pub fn lock(&self, etag: &str) -> PathBuf {
        self.locks.join(format!("{etag}.lock"))
    }
}

/// An ETag as huggingface_hub turns it into a blob's name: a leading `W/`
/// and the quotes dropped (`W/"abc"` and `"abc"` both name `abc`). Like
/// Python's `lstrip("W/")`, any leading run of `W` and `/` goes.
///
/// ```
/// assert_eq!(backstop_hub::normalize_etag("W/\"d7edf6bd\""), "d7edf6bd");
/// assert_eq!(backstop_hub::normalize_etag("\"9f86d081\""), "9f86d081");
/// ```
pub fn normalize_etag(etag: &str) -> &str {
    etag.trim_start_matches(['W', '/']).trim_matches('"')
}

/// Whether `etag` (normalised) can name a blob: 1 to 128 ASCII letters,
/// digits, `-` or `_`, so a single plain file name whatever the server
/// sent.
pub fn is_blob_name(etag: &str) -> bool {
    (1..=128).contains(&etag.len())
        && etag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_huggingface_hub() {
        let cache = Cache::new("/c");
        let repo = cache
            .repo(RepoKind::Model, "julien-c/EsperBERTo-small")
            .unwrap();
        assert_eq!(repo.folder(), "models--julien-c--EsperBERTo-small");
        assert_eq!(
            repo.dir(),
            Path::new("/c/models--julien-c--EsperBERTo-small")
        );
        assert_eq!(
            repo.lock("403450e2"),
            Path::new("/c/.locks/models--julien-c--EsperBERTo-small/403450e2.lock")
        );
        assert_eq!(repo.blob_name("403450e2"), "blobs/403450e2");
        assert_eq!(repo.ref_name("refs/pr/3"), "refs/refs/pr/3");
        assert_eq!(repo.link_target("README.md", "d7"), "../../blobs/d7");
        assert_eq!(repo.link_target("a/b/c.bin", "d7"), "../../../../blobs/d7");
        assert_eq!(
            cache.repo(RepoKind::Space, "org/demo").unwrap().folder(),
            "spaces--org--demo"
        );
        assert!(matches!(
            cache.repo(RepoKind::Model, "../x"),
            Err(crate::Error::Invalid(_))
        ));
        assert_eq!(cache.tag(), Path::new("/c/CACHEDIR.TAG"));
    }

    #[test]
    fn etags() {
        assert_eq!(normalize_etag("W/\"abc\""), "abc");
        assert_eq!(normalize_etag("\"abc\""), "abc");
        assert_eq!(normalize_etag("abc"), "abc");
        // Python's lstrip takes a set of characters, not a prefix.
        assert_eq!(normalize_etag("WW//abc"), "abc");
        assert!(is_blob_name("d7edf6bd2a681fb0175f7735299831ee1b22b812"));
        for bad in ["", "a/b", "..", "a b", "a\0", &"a".repeat(129)] {
            assert!(!is_blob_name(bad), "{bad:?}");
        }
    }
}
