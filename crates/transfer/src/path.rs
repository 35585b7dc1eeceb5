//! Confining names that come from a server (a repository listing, a URL)
//! to the destination directory.

use std::fmt;
use std::path::{Component, Path, PathBuf};

/// Why a remote name cannot be written under the destination directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnsafeName {
    /// The name is empty.
    Empty,
    /// It starts at the root (`/etc/passwd`) or with a drive (`C:`).
    Absolute,
    /// A `..` component would climb out of the directory.
    ParentDir,
    /// A `.` component, or an empty one (`a//b`, a trailing `/`).
    EmptyComponent,
    /// A backslash: a separator on Windows, never in a Hub path.
    Backslash,
    /// A NUL or another control character.
    Control,
    /// A component longer than 255 bytes, which no common file system
    /// takes.
    TooLong,
    /// A folder on the way is a symbolic link, which could lead anywhere.
    Symlink,
}

impl fmt::Display for UnsafeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UnsafeName::Empty => "it is empty",
            UnsafeName::Absolute => "it is an absolute path",
            UnsafeName::ParentDir => "it climbs out of the directory with ..",
            UnsafeName::EmptyComponent => "it has an empty or . component",
            UnsafeName::Backslash => "it contains a backslash",
            UnsafeName::Control => "it contains a control character",
            UnsafeName::TooLong => "a component is longer than 255 bytes",
            UnsafeName::Symlink => "a folder on its way is a symbolic link",
        })
    }
}

impl std::error::Error for UnsafeName {}

/// The path under `dir` where the remote file `name` (`/`-separated, as a
/// Hub listing gives it) goes, or why it cannot go anywhere.
///
/// The promise: an `Ok` path is `dir` followed by the name's components,
/// each of them a plain file name: no root, no `..`, no `.`, no empty
/// component, no backslash, no control character. Nothing on disk is
/// looked at; see [`confine_on_disk`] for symbolic links.
///
/// ```
/// use std::path::Path;
/// use backstop_transfer::{UnsafeName, confine};
///
/// let dir = Path::new("/models");
/// assert_eq!(confine(dir, "sub/model.gguf").unwrap(), Path::new("/models/sub/model.gguf"));
/// assert_eq!(confine(dir, "../.ssh/id_rsa"), Err(UnsafeName::ParentDir));
/// assert_eq!(confine(dir, "/etc/passwd"), Err(UnsafeName::Absolute));
/// ```
pub fn confine(dir: &Path, name: &str) -> Result<PathBuf, UnsafeName> {
    if name.is_empty() {
        return Err(UnsafeName::Empty);
    }
    if name.chars().any(char::is_control) {
        return Err(UnsafeName::Control);
    }
    if name.contains('\\') {
        return Err(UnsafeName::Backslash);
    }
    let bytes = name.as_bytes();
    if name.starts_with('/')
        || (bytes.len() >= 2 && bytes[1] == b':' && bytes[0].is_ascii_alphabetic())
    {
        return Err(UnsafeName::Absolute);
    }
    let mut path = dir.to_path_buf();
    for part in name.split('/') {
        match part {
            "" | "." => return Err(UnsafeName::EmptyComponent),
            ".." => return Err(UnsafeName::ParentDir),
            p if p.len() > 255 => return Err(UnsafeName::TooLong),
            p => path.push(p),
        }
    }
    // Belt and braces: whatever the rules above miss, the path must still
    // be `dir` followed by normal components only.
    let rest = path.strip_prefix(dir).map_err(|_| UnsafeName::Absolute)?;
    if !rest.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(UnsafeName::ParentDir);
    }
    Ok(path)
}

/// [`confine`], and also refuses a name whose folders under `dir` exist
/// as symbolic links (a link planted in the destination could send the
/// file anywhere).
pub fn confine_on_disk(dir: &Path, name: &str) -> Result<PathBuf, UnsafeName> {
    let path = confine(dir, name)?;
    let mut current = dir.to_path_buf();
    if let Ok(rest) = path.strip_prefix(dir)
        && let Some(parent) = rest.parent()
    {
        for part in parent.components() {
            current.push(part);
            if std::fs::symlink_metadata(&current).is_ok_and(|m| m.file_type().is_symlink()) {
                return Err(UnsafeName::Symlink);
            }
        }
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_from_real_listings_and_attacks() {
        let dir = Path::new("/data");
        let ok = [
            ("model.gguf", "/data/model.gguf"),
            ("sub/dir/x.safetensors", "/data/sub/dir/x.safetensors"),
            (".gitattributes", "/data/.gitattributes"),
            ("a..b", "/data/a..b"),
            ("..hidden", "/data/..hidden"),
            ("résumé ✓.txt", "/data/résumé ✓.txt"),
        ];
        for (name, want) in ok {
            assert_eq!(confine(dir, name).unwrap(), Path::new(want), "{name:?}");
        }
        let bad = [
            ("", UnsafeName::Empty),
            ("..", UnsafeName::ParentDir),
            ("../x", UnsafeName::ParentDir),
            ("a/../../x", UnsafeName::ParentDir),
            ("/etc/passwd", UnsafeName::Absolute),
            ("C:/Windows", UnsafeName::Absolute),
            ("a\\..\\b", UnsafeName::Backslash),
            ("a\0b", UnsafeName::Control),
            ("line\nbreak", UnsafeName::Control),
            ("a//b", UnsafeName::EmptyComponent),
            ("a/./b", UnsafeName::EmptyComponent),
            ("dir/", UnsafeName::EmptyComponent),
            (".", UnsafeName::EmptyComponent),
        ];
        for (name, want) in bad {
            assert_eq!(confine(dir, name), Err(want), "{name:?}");
        }
        assert_eq!(confine(dir, &"x".repeat(256)), Err(UnsafeName::TooLong));
    }

    #[test]
    fn symlinked_folders_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("link")).unwrap();
        assert_eq!(
            confine_on_disk(dir.path(), "link/x.bin"),
            Err(UnsafeName::Symlink)
        );
        assert!(confine_on_disk(dir.path(), "plain/x.bin").is_ok());
        assert!(
            confine_on_disk(dir.path(), "link").is_ok(),
            "the file itself is replaced, not followed"
        );
    }

    proptest! {
        /// Whatever a server sends, an accepted name stays under the
        /// directory, and is made of exactly the name's own components.
        #[test]
        fn accepted_names_stay_inside(name in "[a-z./\\\\\0 :Ω-]{0,24}") {
            let dir = Path::new("/base/dir");
            if let Ok(path) = confine(dir, &name) {
                let rest = path.strip_prefix(dir).unwrap();
                prop_assert!(rest.components().all(|c| matches!(c, Component::Normal(_))));
                let parts: Vec<_> = rest.iter().map(|p| p.to_str().unwrap().to_owned()).collect();
                prop_assert_eq!(parts.join("/"), name);
            }
        }
    }
}
