//! What a destination path names today, and so how a finished file gets
//! there: replaced whole, or written through.

use std::io;
use std::path::{Path, PathBuf};

/// Symbolic links followed before giving up, as Linux's `open` does.
const MAX_LINKS: usize = 40;

/// How the bytes of a file reach its destination.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Destination {
    /// A regular file, or nothing yet: the bytes go to a partial file
    /// beside `target`, renamed onto it once complete, so that `target` is
    /// replaced whole or not at all. `target` is the path itself or, when
    /// the path is a symbolic link, the file the link leads to: the link
    /// is kept and its target replaced.
    Replace(PathBuf),
    /// A character device, a FIFO, a socket: opened and written through,
    /// in order, with no partial file and no rename (as curl does), so
    /// that `/dev/null` stays a device and a pipe's reader gets the bytes.
    Through,
}

impl Destination {
    /// Looks at what `path` names now, following symbolic links as
    /// `open` does (`/dev/stdout` and the other links of `/proc` lead to
    /// what the descriptor is). Fails on a directory, a loop of links, or
    /// a path that cannot be looked at.
    pub(crate) fn of(path: &Path) -> io::Result<Destination> {
        let meta = match std::fs::metadata(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(Destination::Replace(missing(path)?));
            }
            meta => meta?,
        };
        if meta.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::IsADirectory,
                "it is a directory",
            ));
        }
        if !meta.is_file() {
            return Ok(Destination::Through);
        }
        if std::fs::symlink_metadata(path)?.file_type().is_symlink() {
            Ok(Destination::Replace(std::fs::canonicalize(path)?))
        } else {
            Ok(Destination::Replace(path.to_path_buf()))
        }
    }
}

/// Where a file that does not exist yet will be: the path itself, or, for
/// a link that leads nowhere yet, the path it leads to.
fn missing(path: &Path) -> io::Result<PathBuf> {
    let mut path = path.to_path_buf();
    for _ in 0..MAX_LINKS {
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_symlink() => {
                let link = std::fs::read_link(&path)?;
                // A relative link is relative to the link's folder; an
                // absolute one replaces the whole path.
                path = match path.parent() {
                    Some(parent) => parent.join(link),
                    None => link,
                };
            }
            _ => return Ok(path),
        }
    }
    Err(io::Error::other("too many levels of symbolic links"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn kinds() {
        let dir = tempfile::tempdir().unwrap();
        let at = |name: &str| dir.path().join(name);
        let of = |name: &str| Destination::of(&at(name));

        assert_eq!(of("absent").unwrap(), Destination::Replace(at("absent")));
        std::fs::write(at("file"), "x").unwrap();
        assert_eq!(of("file").unwrap(), Destination::Replace(at("file")));

        symlink("file", at("relative")).unwrap();
        assert_eq!(of("relative").unwrap(), Destination::Replace(at("file")));
        symlink(at("relative"), at("chain")).unwrap();
        assert_eq!(of("chain").unwrap(), Destination::Replace(at("file")));
        symlink("nowhere", at("dangling")).unwrap();
        assert_eq!(of("dangling").unwrap(), Destination::Replace(at("nowhere")));

        assert_eq!(
            Destination::of(Path::new("/dev/null")).unwrap(),
            Destination::Through
        );
        nix::unistd::mkfifo(&at("fifo"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert_eq!(of("fifo").unwrap(), Destination::Through);
        symlink(at("fifo"), at("to-fifo")).unwrap();
        assert_eq!(of("to-fifo").unwrap(), Destination::Through);

        std::fs::create_dir(at("dir")).unwrap();
        assert_eq!(of("dir").unwrap_err().kind(), io::ErrorKind::IsADirectory);
        symlink("loop", at("loop")).unwrap();
        assert_eq!(
            of("loop").unwrap_err().raw_os_error(),
            Some(nix::libc::ELOOP)
        );

        // A link of /proc leads to what the descriptor is, even where
        // reading it gives no path ("pipe:[1234]").
        let (read, write) = nix::unistd::pipe().unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&write);
        let proc = PathBuf::from(format!("/proc/self/fd/{fd}"));
        assert_eq!(Destination::of(&proc).unwrap(), Destination::Through);
        drop((read, write));
    }
}
