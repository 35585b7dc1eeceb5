//! What a request carries: bytes in memory, or part of a file read each
//! time the request is sent.

use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// A request body.
#[derive(Clone, Debug)]
pub enum Payload {
    /// Bytes in memory, sent again as they are on every send.
    Bytes(Bytes),
    /// Part of a file, read again on every send.
    File(FileBody),
}

impl Payload {
    /// Its length in bytes.
    pub fn len(&self) -> u64 {
        match self {
            Payload::Bytes(b) => b.len() as u64,
            Payload::File(f) => f.len(),
        }
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl From<Bytes> for Payload {
    fn from(bytes: Bytes) -> Self {
        Payload::Bytes(bytes)
    }
}

impl From<FileBody> for Payload {
    fn from(file: FileBody) -> Self {
        Payload::File(file)
    }
}

/// Bytes `offset..offset + len` of a file, sent as a request body in
/// pieces read as the connection takes them: a blob of any size is never
/// held in memory whole. Each send reads the file again from `offset`, and
/// [`FileBody::taken`] says how much of it the connection took.
///
/// ```
/// use backstop_http::FileBody;
///
/// let chunk = FileBody::new("model.safetensors", 16 << 20, 16 << 20);
/// assert_eq!(chunk.len(), 16 << 20);
/// assert_eq!(chunk.taken(), 0, "nothing sent yet");
/// ```
#[derive(Clone, Debug)]
pub struct FileBody {
    path: PathBuf,
    offset: u64,
    len: u64,
    taken: Arc<AtomicU64>,
}

/// The size of the pieces a file is read in.
const FILE_PIECE: usize = 256 << 10;

impl FileBody {
    /// `len` bytes of the file at `path`, from byte `offset`.
    pub fn new(path: impl Into<PathBuf>, offset: u64, len: u64) -> FileBody {
        FileBody {
            path: path.into(),
            offset,
            len,
            taken: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes the connection took on the latest send: all of them once the
    /// body went out whole, part of them when the connection broke midway
    /// (some may still have been in the sender's buffers).
    pub fn taken(&self) -> u64 {
        self.taken.load(Ordering::Acquire)
    }

    /// The whole range in memory (for a small body, which then stays
    /// replayable on a redirect), counted into [`FileBody::taken`].
    pub(crate) async fn read_whole(&self) -> std::io::Result<Bytes> {
        use futures_util::TryStreamExt;
        let capacity = usize::try_from(self.len).unwrap_or(0);
        let whole = self
            .pieces()
            .try_fold(
                BytesMut::with_capacity(capacity),
                |mut all, piece| async move {
                    all.extend_from_slice(&piece);
                    Ok(all)
                },
            )
            .await?;
        Ok(whole.freeze())
    }

    /// The pieces of a new send, counted into [`FileBody::taken`] as the
    /// connection takes them. A file that cannot be read, or that ends
    /// before `offset + len`, fails the body with that I/O error.
    pub(crate) fn pieces(
        &self,
    ) -> impl futures_util::Stream<Item = std::io::Result<Bytes>> + Send + 'static {
        self.taken.store(0, Ordering::Release);
        let taken = Arc::clone(&self.taken);
        let (path, offset) = (self.path.clone(), self.offset);
        let start = Reading {
            file: None,
            left: self.len,
        };
        futures_util::stream::try_unfold(start, move |mut reading| {
            let taken = Arc::clone(&taken);
            let path = path.clone();
            async move {
                if reading.left == 0 {
                    return Ok(None);
                }
                let file = match &mut reading.file {
                    Some(file) => file,
                    None => {
                        let mut file = tokio::fs::File::open(&path).await?;
                        file.seek(SeekFrom::Start(offset)).await?;
                        reading.file.insert(file)
                    }
                };
                let want = usize::try_from(reading.left)
                    .unwrap_or(usize::MAX)
                    .min(FILE_PIECE);
                let mut buf = BytesMut::zeroed(want);
                let mut filled = 0;
                while filled < want {
                    match file.read(&mut buf[filled..]).await? {
                        0 => {
                            return Err(std::io::Error::new(
                                std::io::ErrorKind::UnexpectedEof,
                                "the file is shorter than the body to send",
                            ));
                        }
                        n => filled += n,
                    }
                }
                reading.left -= want as u64;
                taken.fetch_add(want as u64, Ordering::AcqRel);
                Ok(Some((buf.freeze(), reading)))
            }
        })
    }
}

/// Where a send is in its file.
struct Reading {
    file: Option<tokio::fs::File>,
    left: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::TryStreamExt;

    #[tokio::test]
    async fn a_range_is_read_in_pieces_and_counted_each_send() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        let data: Vec<u8> = (0..700_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let body = FileBody::new(&path, 1000, 600_000);
        for _ in 0..2 {
            let pieces: Vec<Bytes> = body.pieces().try_collect().await.unwrap();
            assert!(pieces.iter().all(|p| p.len() <= FILE_PIECE));
            assert_eq!(pieces.concat(), &data[1000..601_000]);
            assert_eq!(body.taken(), 600_000, "counted again from 0");
        }
        let small = FileBody::new(&path, 10, 1000);
        assert_eq!(small.read_whole().await.unwrap(), &data[10..1010]);
        assert_eq!(small.taken(), 1000);
        let short = FileBody::new(&path, 500_000, 600_000);
        let err = short.pieces().try_collect::<Vec<_>>().await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
        let missing = FileBody::new(dir.path().join("none"), 0, 1);
        let err = missing.pieces().try_collect::<Vec<_>>().await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    }
}
