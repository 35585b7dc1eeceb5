//! The Hub's records of repositories and their files, read leniently: a
//! field the Hub adds, drops or sends as null never breaks a listing.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// How `/api/models` and `/api/datasets` order their results (always
/// descending).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sort {
    /// By the Hub's trending score.
    Trending,
    /// By downloads over the last 30 days.
    Downloads,
    /// By likes.
    Likes,
    /// Newest first.
    Created,
}

impl Sort {
    /// The value of the API's `sort` parameter.
    pub fn api_name(self) -> &'static str {
        match self {
            Sort::Trending => "trendingScore",
            Sort::Downloads => "downloads",
            Sort::Likes => "likes",
            Sort::Created => "createdAt",
        }
    }
}

/// What to list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    /// Free-text search over repository ids.
    pub search: Option<String>,
    /// Only this user's or organisation's repositories.
    pub author: Option<String>,
    /// The order.
    pub sort: Option<Sort>,
    /// How many repositories at most.
    pub limit: usize,
}

impl Default for Query {
    fn default() -> Self {
        Query {
            search: None,
            author: None,
            sort: None,
            limit: 20,
        }
    }
}

/// One repository of a listing (a model or a dataset). Fields backstop
/// does not use are kept in `extra`, so serialising one gives back
/// everything the Hub sent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Repo {
    /// `ORG/NAME` (from `modelId` when the Hub sends only that).
    #[serde(default)]
    pub id: String,
    /// The owner, when the Hub says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// Downloads over the last 30 days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downloads: Option<u64>,
    /// Likes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub likes: Option<u64>,
    /// The trending score.
    #[serde(
        default,
        rename = "trendingScore",
        skip_serializing_if = "Option::is_none"
    )]
    pub trending_score: Option<f64>,
    /// The task ("text-generation"); models only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline_tag: Option<String>,
    /// The library ("gguf", "transformers"); models only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub library_name: Option<String>,
    /// Creation time, RFC 3339.
    #[serde(default, rename = "createdAt", skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// Everything else the Hub sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The id of a record: `id`, else the older `modelId`.
pub(crate) fn record_id(id: &mut String, extra: &Map<String, Value>) {
    if id.is_empty()
        && let Some(Value::String(model_id)) = extra.get("modelId")
    {
        id.clone_from(model_id);
    }
}

impl Repo {
    /// Fills `id` from `modelId` when needed; `None` when the record has
    /// neither and so names no repository.
    pub(crate) fn named(mut self) -> Option<Repo> {
        record_id(&mut self.id, &self.extra);
        (!self.id.is_empty()).then_some(self)
    }
}

/// A repository at one revision, with its files.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RepoInfo {
    /// `ORG/NAME` (from `modelId` when the Hub sends only that).
    #[serde(default)]
    pub id: String,
    /// The commit the revision resolved to.
    #[serde(default)]
    pub sha: Option<String>,
    /// When the revision's commit was made, RFC 3339.
    #[serde(
        default,
        rename = "lastModified",
        skip_serializing_if = "Option::is_none"
    )]
    pub last_modified: Option<String>,
    /// Readable only with a token that has access.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private: Option<bool>,
    /// `false`, or how access to a gated repository is granted: `"auto"`,
    /// `"manual"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gated: Option<Value>,
    /// Downloads over the last 30 days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downloads: Option<u64>,
    /// Likes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub likes: Option<u64>,
    /// The files.
    #[serde(default)]
    pub siblings: Vec<Sibling>,
    /// Everything else the Hub sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One file of a repository. Its name comes from the server: confine it
/// before using it as a path.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sibling {
    /// The path inside the repository.
    pub rfilename: String,
    /// Its size, when the Hub was asked for blobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// The git blob id, when the Hub was asked for blobs.
    #[serde(default, rename = "blobId", skip_serializing_if = "Option::is_none")]
    pub blob_id: Option<String>,
    /// LFS details (large files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lfs: Option<LfsInfo>,
}

impl Sibling {
    /// The ETag the Hub gives the file, normalised as huggingface_hub
    /// does to name its blob in the cache: the LFS sha256 (`X-Linked-Etag`)
    /// of a large file, else the git blob id (`ETag`). `None` when the
    /// listing has neither, or one that cannot name a file (see
    /// [`is_blob_name`](crate::is_blob_name)).
    pub fn etag(&self) -> Option<&str> {
        let etag = match &self.lfs {
            Some(lfs) => &lfs.sha256,
            None => self.blob_id.as_ref()?,
        };
        Some(crate::normalize_etag(etag)).filter(|e| crate::is_blob_name(e))
    }

    /// The size of the content: the LFS size of a large file, else the
    /// listed size.
    pub fn content_size(&self) -> Option<u64> {
        self.lfs.as_ref().map(|l| l.size).or(self.size)
    }
}

/// The LFS pointer of a large file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LfsInfo {
    /// The sha256 of the content, hex.
    pub sha256: String,
    /// The size of the content.
    pub size: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_listing_shapes_parse() {
        let body = include_str!("../tests/fixtures/models-page.json");
        let models: Vec<Repo> = serde_json::from_str::<Vec<Repo>>(body)
            .unwrap()
            .into_iter()
            .filter_map(Repo::named)
            .collect();
        assert_eq!(models.len(), 3);
        assert_eq!(models[0].id, "Qwen/Qwen3-8B-GGUF");
        assert_eq!(models[0].downloads, Some(152_311));
        assert_eq!(models[0].trending_score, Some(119.0));
        assert!(models[0].extra.contains_key("tags"));
        // An entry with only `modelId` and nulls.
        assert_eq!(models[2].id, "someone/minimal");
        assert_eq!(models[2].downloads, None);
        assert_eq!(
            Repo::named(serde_json::from_str(r#"{"likes":1}"#).unwrap()),
            None
        );
        // Round trip keeps the fields backstop does not model.
        let again = serde_json::to_value(&models[0]).unwrap();
        assert_eq!(again["tags"][0], "gguf");
        assert_eq!(again["trendingScore"], 119.0);
    }

    #[test]
    fn revision_info_parses() {
        let body = include_str!("../tests/fixtures/model-revision.json");
        let info: RepoInfo = serde_json::from_str(body).unwrap();
        assert_eq!(info.id, "Qwen/Qwen3-8B-GGUF");
        assert_eq!(
            info.last_modified.as_deref(),
            Some("2026-05-02T11:00:00.000Z")
        );
        assert_eq!(
            (info.private, info.gated.clone()),
            (Some(false), Some(Value::Bool(false)))
        );
        assert_eq!((info.downloads, info.likes), (Some(152_311), Some(312)));
        assert_eq!(info.siblings.len(), 3);
        let lfs = info.siblings[1].lfs.as_ref().unwrap();
        assert_eq!(lfs.size, 5_027_783_488);
        assert_eq!(lfs.sha256.len(), 64);
        // A blob is named by the LFS sha256, else by the git blob id.
        assert_eq!(info.siblings[1].etag(), Some(lfs.sha256.as_str()));
        assert_eq!(
            info.siblings[0].etag(),
            Some("a6344aac8c09253b3b630fb776ae94478aa0275b")
        );
        assert_eq!(info.siblings[1].content_size(), Some(5_027_783_488));
        let bare: Sibling = serde_json::from_str(r#"{"rfilename":"a","blobId":"../x"}"#).unwrap();
        assert_eq!(bare.etag(), None, "a blob id that cannot name a file");
        // Round trip keeps what backstop does not model.
        let again = serde_json::to_value(&info).unwrap();
        assert_eq!(again["usedStorage"], 30_912_457_728u64);
        assert_eq!(again["gated"], false);
    }
}
