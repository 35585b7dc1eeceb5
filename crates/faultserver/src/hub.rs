//! A fake Hugging Face Hub that answers as the real one does: a
//! repository's revision listing and file tree, its resolve URLs with
//! `X-Repo-Commit` and the ETags huggingface_hub names its cache's blobs
//! by, LFS files redirected to a CDN, and the CDN serving them with Range.

use bytes::Bytes;
use sha1::Sha1;
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

    /// The git blob id: the sha1 of `blob <size>\0` and the content.
    pub fn blob_id(&self) -> String {
        let mut git = Sha1::new();
        git.update(format!("blob {}\0", self.bytes.len()));
        git.update(&self.bytes);
        hex(&git.finalize())
    }

    /// The ETag the Hub gives the file, by which huggingface_hub names its
    /// blob in the cache: the sha256 of an LFS file (`X-Linked-Etag`),
    /// else the git blob id (`ETag`).
    pub fn etag(&self) -> String {
        if self.lfs {
            self.sha256()
        } else {
            self.blob_id()
        }
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
    /// - `/api/{kind}/{repo}/revision/{revision}` (and the same with the
    ///   commit, and `/api/{kind}/{repo}` for `main`) lists `files` with
    ///   their sizes, git blob ids, the sha256 of LFS files, and `commit`
    ///   as the `sha`; `/api/{kind}/{repo}/tree/{revision}` (or the commit)
    ///   lists them as huggingface_hub's `list_repo_tree` reads them;
    /// - `/{repo}/resolve/{revision}/{path}` (or the commit;
    ///   `/datasets/{repo}/...` for a dataset) answers with
    ///   `X-Repo-Commit`: for an LFS file, a redirect to `cdn` (this server
    ///   when `None`) at [`cdn_path`] with `X-Linked-Etag` and
    ///   `X-Linked-Size`; for a git file, the file itself with its blob id
    ///   as `ETag`;
    /// - the CDN serves each LFS file with Range support.
    ///
    /// huggingface_hub follows a redirect to the Hub's own host, so give
    /// it a `cdn` of its own. `kind` is "models" or "datasets". Paths are
    /// used as given, so keep them to characters a URL carries unencoded.
    /// Scripted replies queued on the same paths go first.
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
                format!(
                    r#"{{"rfilename":{},"size":{},"blobId":"{}"{}}}"#,
                    json_string(&f.path),
                    f.bytes.len(),
                    f.blob_id(),
                    lfs_field(f, "sha256")
                )
            })
            .collect();
        let listing = format!(
            r#"{{"id":{},"sha":"{commit}","lastModified":"2026-05-02T11:00:00.000Z","private":false,"gated":false,"downloads":1234,"likes":5,"siblings":[{}]}}"#,
            json_string(repo),
            siblings.join(",")
        );
        let tree: Vec<String> = files
            .iter()
            .map(|f| {
                format!(
                    r#"{{"type":"file","oid":"{}","size":{},"path":{}{}}}"#,
                    f.blob_id(),
                    f.bytes.len(),
                    json_string(&f.path),
                    lfs_field(f, "oid")
                )
            })
            .collect();
        let tree = format!("[{}]", tree.join(","));
        let api = format!("/api/{kind}/{repo}");
        let mut names = vec![revision];
        if commit != revision {
            names.push(commit);
        }
        if revision == "main" {
            self.always(&api, Reply::json(listing.clone()));
        }
        for name in &names {
            self.always(
                &format!("{api}/revision/{name}"),
                Reply::json(listing.clone()),
            );
            self.always(&format!("{api}/tree/{name}"), Reply::json(tree.clone()));
        }
        let prefix = if kind == "datasets" { "/datasets" } else { "" };
        let cdn = cdn.unwrap_or(self);
        for f in files {
            let reply = if f.lfs {
                let sha = f.sha256();
                let target = cdn_path(&sha);
                let location = if std::ptr::eq(cdn, self) {
                    target.clone()
                } else {
                    cdn.url(&target)
                };
                cdn.always(
                    &target,
                    Reply::file(f.bytes.clone()).header("ETag", &format!("\"{sha}\"")),
                );
                Reply::redirect(302, &location)
                    .header("X-Linked-Etag", &format!("\"{sha}\""))
                    .header("X-Linked-Size", &f.bytes.len().to_string())
            } else {
                Reply::file(f.bytes.clone()).header("ETag", &format!("\"{}\"", f.blob_id()))
            };
            for name in &names {
                self.always(
                    &format!("{prefix}/{repo}/resolve/{name}/{}", f.path),
                    reply.clone().header("X-Repo-Commit", commit),
                );
            }
        }
    }
}

/// The `"lfs"` member of a listing entry, the sha256 under `key` ("sha256"
/// in a revision's siblings, "oid" in a tree); empty for a git file.
fn lfs_field(f: &HubFile, key: &str) -> String {
    if f.lfs {
        format!(
            r#","lfs":{{"{key}":"{}","size":{},"pointerSize":134}}"#,
            f.sha256(),
            f.bytes.len()
        )
    } else {
        String::new()
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
