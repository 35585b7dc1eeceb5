//! A Hugging Face Hub client whose every call goes through backstop's
//! resilient HTTP layer: a 429 on the third page of a listing is waited out
//! like a 429 on the first, never turned into a silently short result.
//!
//! Configuration follows huggingface_hub: `HF_ENDPOINT` (default
//! `https://huggingface.co`), and the token from `HF_TOKEN`, the older
//! `HUGGING_FACE_HUB_TOKEN`, or the token file (`HF_TOKEN_PATH`, else
//! `$HF_HOME/token`, else `~/.cache/huggingface/token`). [`Cache`] names
//! the files of huggingface_hub's cache (`HF_HUB_CACHE`).
//!
//! ```no_run
//! # async fn demo() -> Result<(), backstop_hub::Error> {
//! use backstop_hub::{Hub, Query, RepoKind, Sort};
//!
//! let hub = Hub::from_env(backstop_http::Client::new()?)?;
//! let query = Query { search: Some("gguf".into()), sort: Some(Sort::Trending), limit: 5, ..Default::default() };
//! for model in hub.search(RepoKind::Model, &query).await? {
//!     println!("{} ({} downloads)", model.id, model.downloads.unwrap_or(0));
//! }
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

mod cache;
mod config;
mod record;
mod repo;

use backstop_core::Secret;
use backstop_http::{Client, display_host};
use url::Url;

pub use cache::{CACHEDIR_TAG, Cache, CachedRepo, is_blob_name, normalize_etag};
pub use config::{DEFAULT_ENDPOINT, hub_cache_from_env, token_from_env};
pub use record::{LfsInfo, Query, Repo, RepoInfo, Sibling, Sort};
pub use repo::{RepoKind, RepoRef, check_repo_id, check_revision};

use repo::split_repo;

/// The Hub returns at most this many repositories per page.
const PAGE: usize = 1000;

/// Why a Hub call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The HTTP call failed after the engine's retries.
    #[error(transparent)]
    Http(#[from] backstop_http::Error),
    /// Input refused before anything was sent (an endpoint that is not a
    /// URL, a malformed repository id or revision): the caller's mistake.
    #[error("{0}")]
    Invalid(String),
    /// The Hub answered with something that is not what was asked for.
    #[error("{0}")]
    Answer(String),
}

impl Error {
    /// Whether trying again later may succeed.
    pub fn is_temporary(&self) -> bool {
        match self {
            Error::Http(e) => e.is_temporary(),
            Error::Invalid(_) | Error::Answer(_) => false,
        }
    }

    /// Whether the input itself is wrong (exit code 2): nothing was sent.
    pub fn is_usage(&self) -> bool {
        matches!(self, Error::Invalid(_))
    }
}

/// A Hub client.
#[derive(Clone, Debug)]
pub struct Hub {
    client: Client,
    endpoint: Url,
    token: Option<Secret>,
}

impl Hub {
    /// A client for the Hub at `endpoint`, authenticating with `token`.
    pub fn new(client: Client, endpoint: &str, token: Option<Secret>) -> Result<Hub, Error> {
        let mut endpoint = Url::parse(endpoint.trim()).map_err(|e| {
            Error::Invalid(format!("the Hub endpoint {endpoint:?} is not a URL: {e}"))
        })?;
        if !matches!(endpoint.scheme(), "http" | "https") || endpoint.host_str().is_none() {
            return Err(Error::Invalid(format!(
                "the Hub endpoint {} must be an http or https URL",
                backstop_http::redact_url(&endpoint)
            )));
        }
        if !endpoint.path().ends_with('/') {
            let path = format!("{}/", endpoint.path());
            endpoint.set_path(&path);
        }
        Ok(Hub {
            client,
            endpoint,
            token,
        })
    }

    /// A client configured from the environment the way huggingface_hub
    /// is (see the crate documentation).
    pub fn from_env(client: Client) -> Result<Hub, Error> {
        let endpoint = std::env::var("HF_ENDPOINT")
            .ok()
            .filter(|e| !e.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_owned());
        Hub::new(client, &endpoint, token_from_env())
    }

    /// The endpoint, with a trailing slash.
    pub fn endpoint(&self) -> &Url {
        &self.endpoint
    }

    /// The endpoint's host, as messages show it.
    pub fn host(&self) -> String {
        display_host(&self.endpoint)
    }

    /// Whether a token will be sent.
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// Lists models or datasets (`GET /api/models`, `/api/datasets`),
    /// following the Hub's next-page links until `query.limit` of them are
    /// in hand. Each page is its own retried call.
    pub async fn search(&self, kind: RepoKind, query: &Query) -> Result<Vec<Repo>, Error> {
        let collection = kind.api_name();
        let mut url = self.api_url(&["api", collection]);
        {
            let mut pairs = url.query_pairs_mut();
            if let Some(search) = query.search.as_deref().filter(|s| !s.is_empty()) {
                pairs.append_pair("search", search);
            }
            if let Some(author) = query.author.as_deref().filter(|s| !s.is_empty()) {
                pairs.append_pair("author", author);
            }
            if let Some(sort) = query.sort {
                pairs.append_pair("sort", sort.api_name());
                pairs.append_pair("direction", "-1");
            }
            pairs.append_pair("limit", &query.limit.clamp(1, PAGE).to_string());
        }
        let mut repos = Vec::new();
        let mut next = Some(url);
        while let Some(page) = next.take() {
            if repos.len() >= query.limit {
                break;
            }
            let body = self.get(&page).bytes().await?;
            let batch: Vec<Repo> = body.json().map_err(|e| {
                Error::Answer(format!(
                    "{} answered /api/{collection} with something that is not a list of {collection}: {e}",
                    self.host()
                ))
            })?;
            if batch.is_empty() {
                break;
            }
            for repo in batch {
                match repo.named() {
                    Some(repo) => repos.push(repo),
                    None => tracing::warn!(
                        "{} listed one of its {collection} without an id; it is left out",
                        self.host()
                    ),
                }
            }
            next = next_link(&body.headers).and_then(|link| self.same_origin(&page, &link));
        }
        repos.truncate(query.limit);
        Ok(repos)
    }

    /// A repository at a revision, or at its default branch when
    /// `revision` is `None` (`GET /api/{models|datasets|spaces}/{repo}[/revision/{revision}]?blobs=true`):
    /// the commit it names, when it was made, and its files with their
    /// sizes, git blob ids and the sha256 of LFS files.
    pub async fn info(
        &self,
        kind: RepoKind,
        repo: &str,
        revision: Option<&str>,
    ) -> Result<RepoInfo, Error> {
        let (org, name) = split_repo(repo)?;
        let mut segments = vec!["api", kind.api_name(), org, name];
        if let Some(revision) = revision {
            check_revision(revision)?;
            segments.extend(["revision", revision]);
        }
        let mut url = self.api_url(&segments);
        url.query_pairs_mut().append_pair("blobs", "true");
        let body = self.get(&url).bytes().await?;
        let mut info: RepoInfo = body.json().map_err(|e| {
            Error::Answer(format!(
                "{} answered for {}{repo}@{} with something that is not repository info: {e}",
                self.host(),
                kind.url_prefix(),
                revision.unwrap_or("(default branch)")
            ))
        })?;
        record::record_id(&mut info.id, &info.extra);
        Ok(info)
    }

    /// Where one file of a repository is downloaded from:
    /// `{endpoint}/{repo}/resolve/{revision}/{path}` (with `datasets/` or
    /// `spaces/` before the repository). The Hub answers with a
    /// redirect to its CDN and the file's sha256 in `X-Linked-Etag`. Every
    /// segment of `path` is percent-encoded; the path itself is not checked
    /// here (confining it on disk is the caller's job).
    pub fn file_url(
        &self,
        kind: RepoKind,
        repo: &str,
        revision: &str,
        path: &str,
    ) -> Result<Url, Error> {
        let (org, name) = split_repo(repo)?;
        check_revision(revision)?;
        let mut segments: Vec<&str> = Vec::new();
        if kind != RepoKind::Model {
            segments.push(kind.api_name());
        }
        segments.extend([org, name, "resolve", revision]);
        segments.extend(path.split('/'));
        Ok(self.api_url(&segments))
    }

    /// The token sent to the Hub, for requests made outside this client
    /// (downloads from [`Hub::file_url`]).
    pub fn token(&self) -> Option<&Secret> {
        self.token.as_ref()
    }

    fn get(&self, url: &Url) -> backstop_http::RequestBuilder<'_> {
        let request = self.client.get(url.as_str());
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    fn api_url(&self, segments: &[&str]) -> Url {
        let mut url = self.endpoint.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// Follows a next-page link only to the host the token belongs to.
    fn same_origin(&self, page: &Url, link: &str) -> Option<Url> {
        let next = page.join(link).ok()?;
        if next.origin() == self.endpoint.origin() {
            Some(next)
        } else {
            tracing::warn!(
                "{} sent a next-page link to another host ({}); stopping the listing there",
                self.host(),
                backstop_http::redact_url(&next)
            );
            None
        }
    }
}

/// The `rel="next"` target of a `Link` header.
fn next_link(headers: &backstop_http::header::HeaderMap) -> Option<String> {
    headers
        .get_all("link")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|part| {
            let (target, params) = part.split_once(';')?;
            let is_next = params.split(';').any(|p| {
                p.trim()
                    .strip_prefix("rel=")
                    .is_some_and(|r| r.trim_matches('"') == "next")
            });
            let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
            is_next.then(|| target.to_owned())
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use backstop_http::header::{HeaderMap, HeaderValue};

    #[test]
    fn link_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            "link",
            HeaderValue::from_static(
                r#"<https://huggingface.co/api/models?limit=1000&cursor=abc>; rel="next""#,
            ),
        );
        assert_eq!(
            next_link(&h).as_deref(),
            Some("https://huggingface.co/api/models?limit=1000&cursor=abc")
        );
        h.insert(
            "link",
            HeaderValue::from_static(
                r#"<https://x/prev>; rel="prev", </api/models?cursor=2>; rel=next"#,
            ),
        );
        assert_eq!(next_link(&h).as_deref(), Some("/api/models?cursor=2"));
        h.insert("link", HeaderValue::from_static("garbage"));
        assert_eq!(next_link(&h), None);
    }

    #[test]
    fn endpoints() {
        let client = Client::new().unwrap();
        let hub = Hub::new(client.clone(), "https://hf-mirror.example.com/prefix", None).unwrap();
        assert_eq!(
            hub.api_url(&["api", "models"]).as_str(),
            "https://hf-mirror.example.com/prefix/api/models"
        );
        let url = hub.api_url(&["api", "models", "org", "name", "revision", "refs/pr/1"]);
        assert_eq!(
            url.path(),
            "/prefix/api/models/org/name/revision/refs%2Fpr%2F1"
        );
        let file = hub
            .file_url(
                RepoKind::Dataset,
                "org/name",
                "abc123",
                "data/train 1.parquet",
            )
            .unwrap();
        assert_eq!(
            file.path(),
            "/prefix/datasets/org/name/resolve/abc123/data/train%201.parquet"
        );
        let file = hub
            .file_url(RepoKind::Model, "org/name", "refs/pr/1", "a.bin")
            .unwrap();
        assert_eq!(file.path(), "/prefix/org/name/resolve/refs%2Fpr%2F1/a.bin");
        let invalid = |r: Result<(), Error>| matches!(r, Err(Error::Invalid(_)));
        assert!(invalid(
            hub.file_url(RepoKind::Model, "org/name", "", "a")
                .map(|_| ())
        ));
        assert!(invalid(
            Hub::new(client.clone(), "not a url", None).map(|_| ())
        ));
        assert!(invalid(Hub::new(client, "file:///tmp", None).map(|_| ())));
    }
}
