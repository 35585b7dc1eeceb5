//! A fake Hugging Face Hub: a repository's revision listing, its resolve
//! URLs redirecting to a CDN, and the CDN serving the files with Range.

use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::{FaultServer, Reply};

/// One file of a fake repository.
#[derive(Clone, Debug)]
pub struct HubFile {
    /// The path in the repository (`rfilename`), as listed.
    pub path: String,
    /// The content.
    pub bytes: Bytes,
    /// Stored in LFS: listed with its sha256, and resolved by a redirect
    /// to the CDN with the sha256 in `X-Linked-Etag`. Other files are
    /// served by the Hub itself.
    pub lfs: bool,
}

impl HubFile {
    /// A file stored in LFS.
    pub fn lfs(path: &str, bytes: impl Into<Bytes>) -> Self {
        HubFile {
            path: path.to_owned(),
            bytes: bytes.into(),
            lfs: true,
        }
    }

    /// A small file kept in git.
    pub fn git(path: &str, bytes: impl Into<Bytes>) -> Self {
        HubFile {
            lfs: false,
            ..HubFile::lfs(path, bytes)
        }
    }

    /// The hex sha256 of the content.
    pub fn sha256(&self) -> String {
        hex(&Sha256::digest(&self.bytes))
    }
}

/// Where the fake CDN serves content with this sha256.
pub fn cdn_path(sha256: &str) -> String {
    format!("/cdn-lfs/{sha256}")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl FaultServer {
    /// Serves a repository as the Hub does:
    ///
    /// - `/api/{kind}/{repo}/revision/{revision}` lists `files` with their
    ///   sizes, the sha256 of LFS files, and `commit` as the `sha`;
    /// - `/{repo}/resolve/{commit}/{path}` (`/datasets/{repo}/...` for a
    ///   dataset) redirects an LFS file to `cdn` (this server when `None`)
    ///   at [`cdn_path`] with `X-Linked-Etag` and `X-Linked-Size`, and
    ///   serves a git file itself;
    /// - the CDN serves each LFS file with Range support.
    ///
    /// `kind` is "models" or "datasets". Paths are used as given, so keep
    /// them to characters a URL carries unencoded. Scripted replies queued
    /// on the same paths go first.
    pub fn hub_repo(
        &self,
        kind: &str,
        repo: &str,
        revision: &str,
        commit: &str,
        files: &[HubFile],
        cdn: Option<&FaultServer>,
    ) {
        let siblings: Vec<String> = files
            .iter()
            .map(|f| {
                let size = f.bytes.len();
                let lfs = if f.lfs {
                    format!(
                        r#","lfs":{{"sha256":"{}","size":{size},"pointerSize":134}}"#,
                        f.sha256()
                    )
                } else {
                    String::new()
                };
                format!(
                    r#"{{"rfilename":{},"size":{size}{lfs}}}"#,
                    json_string(&f.path)
                )
            })
            .collect();
        let listing = format!(
            r#"{{"id":{},"sha":"{commit}","siblings":[{}]}}"#,
            json_string(repo),
            siblings.join(",")
        );
        self.always(
            &format!("/api/{kind}/{repo}/revision/{revision}"),
            Reply::json(listing),
        );
        let prefix = if kind == "datasets" { "/datasets" } else { "" };
        let cdn = cdn.unwrap_or(self);
        for f in files {
            let resolve = format!("{prefix}/{repo}/resolve/{commit}/{}", f.path);
            if f.lfs {
                let sha = f.sha256();
                let target = cdn_path(&sha);
                let location = if std::ptr::eq(cdn, self) {
                    target.clone()
                } else {
                    cdn.url(&target)
                };
                self.always(
                    &resolve,
                    Reply::redirect(302, &location)
                        .header("X-Linked-Etag", &format!("\"{sha}\""))
                        .header("X-Linked-Size", &f.bytes.len().to_string())
                        .header("X-Repo-Commit", commit),
                );
                cdn.always(
                    &target,
                    Reply::file(f.bytes.clone()).header("ETag", &format!("\"{sha}\"")),
                );
            } else {
                self.always(
                    &resolve,
                    Reply::file(f.bytes.clone()).header("X-Repo-Commit", commit),
                );
            }
        }
    }
}

/// A JSON string literal.
fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
