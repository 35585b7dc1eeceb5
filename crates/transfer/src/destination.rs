//! What a destination path names today, and so how a finished file gets
//! there: replaced whole, or written through; and a whole body bound for
//! it that cannot be resumed ([`Spool`]).

use std::fs::{File, OpenOptions};
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

/// A whole body bound for a destination, which cannot be resumed (the
/// answer to a POST): written to a spool file first — beside the file it
/// will replace, or in the temporary folder for a device or a FIFO — and
/// put in place only by [`Spool::commit`], as a finished download is: a
/// regular file (or a link's target) replaced by a rename, with the
/// permissions of the file it replaces; a device or a FIFO written to in
/// one go. Dropped without a commit, the spool file is removed and the
/// destination is as it was.
///
/// ```no_run
/// # fn demo() -> std::io::Result<()> {
/// use std::io::Write;
/// use backstop_transfer::Spool;
///
/// let spool = Spool::for_path(std::path::Path::new("answer.json"))?;
/// spool.file().write_all(b"{}")?;
/// spool.commit()?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Spool {
    file: File,
    path: PathBuf,
    /// Where the body goes, and how.
    dest: PathBuf,
    through: bool,
    committed: bool,
}

impl Spool {
    /// A spool for `dest`, following symbolic links as `open` does. Fails
    /// when `dest` is a folder, or the spool file cannot be made (a
    /// folder that does not exist or cannot be written).
    pub fn for_path(dest: &Path) -> io::Result<Spool> {
        let (dest, through, folder) = match Destination::of(dest)? {
            Destination::Replace(target) => {
                let folder = match target.parent() {
                    Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                    _ => PathBuf::from("."),
                };
                (target, false, folder)
            }
            Destination::Through => (dest.to_path_buf(), true, std::env::temp_dir()),
        };
        let name = dest.file_name().unwrap_or_default().to_string_lossy();
        let (file, path) = create_new(&folder, &name)?;
        Ok(Spool {
            file,
            path,
            dest,
            through,
            committed: false,
        })
    }

    /// The spool file, empty at first, to write the body into (truncate
    /// it to start again).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Puts the body in place; the spool file goes.
    pub fn commit(mut self) -> io::Result<()> {
        self.file.sync_all()?;
        if self.through {
            let mut from = File::open(&self.path)?;
            let mut to = OpenOptions::new().write(true).open(&self.dest)?;
            io::copy(&mut from, &mut to)?;
            std::fs::remove_file(&self.path)?;
        } else {
            if let Ok(meta) = std::fs::metadata(&self.dest) {
                self.file.set_permissions(meta.permissions())?;
            }
            std::fs::rename(&self.path, &self.dest)?;
        }
        self.committed = true;
        Ok(())
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A new, hidden file in `folder` named after `name`, created with the
/// permissions any new file gets (not a temporary file's 0600).
fn create_new(folder: &Path, name: &str) -> io::Result<(File, PathBuf)> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    for n in 0u32..100 {
        let path = folder.join(format!(
            ".{name}.{}.{stamp:x}{n}.backstop-spool",
            std::process::id()
        ));
        match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(file) => return Ok((file, path)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        "no free name for a spool file",
    ))
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

    #[test]
    fn a_spool_replaces_whole_or_not_at_all() {
        use std::io::Write;
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let at = |name: &str| dir.path().join(name);
        let listing = || {
            let mut names: Vec<String> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            names.sort();
            names
        };
        std::fs::write(at("answer.json"), "old").unwrap();
        std::fs::set_permissions(at("answer.json"), std::fs::Permissions::from_mode(0o640))
            .unwrap();
        symlink("answer.json", at("link")).unwrap();

        let spool = Spool::for_path(&at("link")).unwrap();
        spool.file().write_all(b"half").unwrap();
        drop(spool);
        assert_eq!(std::fs::read_to_string(at("answer.json")).unwrap(), "old");
        assert_eq!(listing(), ["answer.json", "link"], "nothing left behind");

        let spool = Spool::for_path(&at("link")).unwrap();
        spool.file().write_all(b"new").unwrap();
        spool.commit().unwrap();
        assert_eq!(std::fs::read_to_string(at("answer.json")).unwrap(), "new");
        assert!(
            std::fs::symlink_metadata(at("link"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
        let mode = std::fs::metadata(at("answer.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o640, "the permissions of the file replaced");
        assert_eq!(listing(), ["answer.json", "link"]);

        nix::unistd::mkfifo(&at("fifo"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        let reader = std::thread::spawn({
            let fifo = at("fifo");
            move || std::fs::read(fifo).unwrap()
        });
        let spool = Spool::for_path(&at("fifo")).unwrap();
        spool.file().write_all(b"through").unwrap();
        spool.commit().unwrap();
        assert_eq!(reader.join().unwrap(), b"through");
        use std::os::unix::fs::FileTypeExt;
        assert!(
            std::fs::metadata(at("fifo")).unwrap().file_type().is_fifo(),
            "still a FIFO"
        );
        assert!(Spool::for_path(dir.path()).is_err(), "a folder");
    }
}
