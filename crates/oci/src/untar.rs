//! Unpacking a tar layer (`application/vnd.cncf.model.*.v1.tar`, as
//! modctl builds with `--raw=false`) under a destination, with the
//! confinement every remote name gets: regular files and folders only,
//! no `..`, no absolute path, no link, device or FIFO, no folder on the
//! way that is a symbolic link.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use backstop_transfer::{UnsafeName, confine_on_disk};

/// Why a tar layer was not unpacked (entries before the bad one may be
/// in place; none is half-written).
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// Reading the archive or writing a file failed.
    #[error("cannot unpack into {}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// An entry names a path outside the destination.
    #[error("the layer names a file {name:?} that cannot be written safely: {reason}")]
    UnsafeName {
        /// The name as the archive gives it.
        name: String,
        /// Why it is refused.
        reason: UnsafeName,
    },
    /// An entry that is not a regular file or a folder.
    #[error("the layer holds {name:?}, a {kind}, which is not unpacked")]
    Refused {
        /// The name.
        name: String,
        /// What it is ("symbolic link", "device"...).
        kind: &'static str,
    },
    /// Not a tar archive.
    #[error("the layer is not a tar archive: {0}")]
    Invalid(&'static str),
}

/// Unpacks the tar archive at `archive` under `dest`; returns the files
/// written, relative to `dest`. Each file goes to a temporary name beside
/// its place and is renamed over it once complete.
pub fn unpack(archive: &Path, dest: &Path) -> Result<Vec<String>, UnpackError> {
    let io_at = |path: &Path| {
        let path = path.to_owned();
        move |source| UnpackError::Io { path, source }
    };
    let mut input = File::open(archive).map_err(io_at(archive))?;
    let mut written = Vec::new();
    let mut long_name: Option<String> = None;
    let mut header = [0u8; 512];
    loop {
        if !read_block(&mut input, &mut header).map_err(io_at(archive))? {
            return Err(UnpackError::Invalid("it ends without its end marker"));
        }
        if header.iter().all(|&b| b == 0) {
            return Ok(written);
        }
        if !checksum_ok(&header) {
            return Err(UnpackError::Invalid("a header's checksum is wrong"));
        }
        let size = octal(&header[124..136]).ok_or(UnpackError::Invalid("a size is not octal"))?;
        let typeflag = header[156];
        let mut name = long_name.take().unwrap_or_else(|| header_name(&header));
        match typeflag {
            b'L' | b'x' => {
                let data = read_data(&mut input, size).map_err(io_at(archive))?;
                let found = if typeflag == b'L' {
                    Some(
                        String::from_utf8_lossy(&data)
                            .trim_end_matches('\0')
                            .to_owned(),
                    )
                } else {
                    pax_path(&data)
                };
                if found.is_some() {
                    long_name = found;
                }
                continue;
            }
            b'g' => {
                read_data(&mut input, size).map_err(io_at(archive))?;
                continue;
            }
            _ => {}
        }
        let kind = match typeflag {
            b'0' | 0 | b'7' => None,
            b'5' => Some("folder"),
            b'1' => return Err(refused(name, "hard link")),
            b'2' => return Err(refused(name, "symbolic link")),
            b'3' | b'4' => return Err(refused(name, "device")),
            b'6' => return Err(refused(name, "FIFO")),
            _ => return Err(refused(name, "entry of an unknown type")),
        };
        while let Some(stripped) = name.strip_prefix("./") {
            name = stripped.to_owned();
        }
        let trimmed = name.trim_end_matches('/').to_owned();
        if kind == Some("folder") && trimmed.is_empty() {
            continue;
        }
        let path = confine_on_disk(dest, &trimmed).map_err(|reason| UnpackError::UnsafeName {
            name: trimmed
                .chars()
                .filter(|c| !c.is_control())
                .take(300)
                .collect(),
            reason,
        })?;
        if kind == Some("folder") {
            std::fs::create_dir_all(&path).map_err(io_at(&path))?;
            skip_data(&mut input, size).map_err(io_at(archive))?;
            continue;
        }
        let parent = path.parent().unwrap_or(dest).to_owned();
        std::fs::create_dir_all(&parent).map_err(io_at(&parent))?;
        let mut temp = tempfile::Builder::new()
            .prefix(".untar.")
            .tempfile_in(&parent)
            .map_err(io_at(&path))?;
        let mut left = size;
        let mut buf = vec![0u8; 1 << 16];
        while left > 0 {
            let n = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
            input.read_exact(&mut buf[..n]).map_err(io_at(archive))?;
            temp.write_all(&buf[..n]).map_err(io_at(&path))?;
            left -= n as u64;
        }
        skip_padding(&mut input, size).map_err(io_at(archive))?;
        temp.as_file().sync_all().map_err(io_at(&path))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = octal(&header[100..108]).unwrap_or(0o644) as u32 & 0o755;
            let _ = temp
                .as_file()
                .set_permissions(std::fs::Permissions::from_mode(mode | 0o600));
        }
        temp.persist(&path).map_err(|e| UnpackError::Io {
            path: path.clone(),
            source: e.error,
        })?;
        written.push(trimmed);
    }
}

fn refused(name: String, kind: &'static str) -> UnpackError {
    UnpackError::Refused {
        name: name.chars().filter(|c| !c.is_control()).take(300).collect(),
        kind,
    }
}

fn read_block(input: &mut File, block: &mut [u8; 512]) -> io::Result<bool> {
    match input.read_exact(block) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

fn read_data(input: &mut File, size: u64) -> io::Result<Vec<u8>> {
    if size > 1 << 20 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "a metadata entry over 1 MiB",
        ));
    }
    let mut data = vec![0u8; size as usize];
    input.read_exact(&mut data)?;
    skip_padding(input, size)?;
    Ok(data)
}

fn skip_data(input: &mut File, size: u64) -> io::Result<()> {
    io::copy(&mut input.take(size), &mut io::sink())?;
    skip_padding(input, size)
}

fn skip_padding(input: &mut File, size: u64) -> io::Result<()> {
    let pad = (512 - size % 512) % 512;
    io::copy(&mut input.take(pad), &mut io::sink())?;
    Ok(())
}

fn header_name(header: &[u8; 512]) -> String {
    let field = |b: &[u8]| {
        let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
        String::from_utf8_lossy(&b[..end]).into_owned()
    };
    let name = field(&header[0..100]);
    let ustar = &header[257..262] == b"ustar";
    let prefix = if ustar {
        field(&header[345..500])
    } else {
        String::new()
    };
    if prefix.is_empty() {
        name
    } else {
        format!("{prefix}/{name}")
    }
}

/// The `path` record of a pax header.
fn pax_path(data: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(data);
    text.lines().find_map(|line| {
        let (_, record) = line.split_once(' ')?;
        record.strip_prefix("path=").map(str::to_owned)
    })
}

fn octal(field: &[u8]) -> Option<u64> {
    let text: String = field
        .iter()
        .take_while(|&&b| b != 0)
        .map(|&b| b as char)
        .collect();
    let text = text.trim();
    if text.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(text, 8).ok()
}

fn checksum_ok(header: &[u8; 512]) -> bool {
    let Some(stored) = octal(&header[148..156]) else {
        return false;
    };
    let sum: u64 = header
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u64::from(b)
            }
        })
        .sum();
    sum == stored
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// An archive made by the system's tar from `files` in `src`.
    fn tar_of(src: &Path, args: &[&str]) -> PathBuf {
        let out = src.parent().unwrap().join(format!(
            "{}.tar",
            src.file_name().unwrap().to_string_lossy()
        ));
        let status = Command::new("tar")
            .arg("-cf")
            .arg(&out)
            .arg("-C")
            .arg(src)
            .args(args)
            .status()
            .expect("tar runs");
        assert!(status.success());
        out
    }

    #[test]
    fn files_and_folders_are_unpacked_in_place() {
        let root = tempfile::tempdir().unwrap();
        let src = root.path().join("src");
        std::fs::create_dir_all(src.join("a/b")).unwrap();
        std::fs::write(src.join("a/b/w.bin"), vec![9u8; 70_000]).unwrap();
        let long = "x".repeat(150);
        std::fs::write(src.join(&long), b"long name").unwrap();
        let archive = tar_of(&src, &["a", &long]);
        let dest = root.path().join("dest");
        std::fs::create_dir_all(&dest).unwrap();
        let mut written = unpack(&archive, &dest).unwrap();
        written.sort();
        assert_eq!(written, ["a/b/w.bin", long.as_str()]);
        assert_eq!(
            std::fs::read(dest.join("a/b/w.bin")).unwrap(),
            vec![9u8; 70_000]
        );
        assert_eq!(std::fs::read(dest.join(&long)).unwrap(), b"long name");
    }

    #[test]
    fn links_escapes_and_broken_archives_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let src = root.path().join("links");
        std::fs::create_dir_all(&src).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", src.join("evil")).unwrap();
        let archive = tar_of(&src, &["evil"]);
        let dest = root.path().join("dest");
        std::fs::create_dir_all(&dest).unwrap();
        let e = unpack(&archive, &dest).unwrap_err();
        assert!(
            matches!(
                e,
                UnpackError::Refused {
                    kind: "symbolic link",
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(!dest.join("evil").exists());

        let up = root.path().join("up");
        std::fs::create_dir_all(up.join("d")).unwrap();
        std::fs::write(root.path().join("outside"), b"x").unwrap();
        let escaping = root.path().join("escaping.tar");
        let status = Command::new("tar")
            .arg("-cf")
            .arg(&escaping)
            .arg("-P")
            .arg("-C")
            .arg(up.join("d"))
            .arg("../../outside")
            .status()
            .unwrap();
        assert!(status.success());
        let e = unpack(&escaping, &dest).unwrap_err();
        assert!(matches!(e, UnpackError::UnsafeName { .. }), "{e:?}");

        let junk = root.path().join("junk.tar");
        std::fs::write(&junk, vec![1u8; 1024]).unwrap();
        assert!(matches!(unpack(&junk, &dest), Err(UnpackError::Invalid(_))));
        assert_eq!(
            std::fs::read_dir(&dest).unwrap().count(),
            0,
            "nothing written"
        );
    }
}
