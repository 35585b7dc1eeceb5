//! The Hub's model records, read leniently: a field the Hub adds, drops or
//! sends as null never breaks a listing.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// How `/api/models` orders its results (always descending).
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
pub struct ModelQuery {
    /// Free-text search over model ids.
    pub search: Option<String>,
    /// Only this user's or organisation's models.
    pub author: Option<String>,
    /// The order.
    pub sort: Option<Sort>,
    /// How many models at most.
    pub limit: usize,
}

impl Default for ModelQuery {
    fn default() -> Self {
        ModelQuery {
            search: None,
            author: None,
            sort: None,
            limit: 20,
        }
    }
}

/// One model of a listing. Fields backstop does not use are kept in
/// `extra`, so serialising a model gives back everything the Hub sent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Model {
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
    /// The task ("text-generation").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline_tag: Option<String>,
    /// The library ("gguf", "transformers").
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

impl Model {
    /// Fills `id` from `modelId` when needed; `None` when the record has
    /// neither and so names no model.
    pub(crate) fn named(mut self) -> Option<Model> {
        record_id(&mut self.id, &self.extra);
        (!self.id.is_empty()).then_some(self)
    }
}

/// A model at one revision, with its files.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// `ORG/NAME` (from `modelId` when the Hub sends only that).
    #[serde(default)]
    pub id: String,
    /// The commit the revision resolved to.
    #[serde(default)]
    pub sha: Option<String>,
    /// The files.
    #[serde(default)]
    pub siblings: Vec<Sibling>,
    /// Everything else the Hub sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One file of a model. Its name comes from the server: confine it before
/// using it as a path.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sibling {
    /// The path inside the repository.
    pub rfilename: String,
    /// Its size, when the Hub was asked for blobs.
    #[serde(default)]
    pub size: Option<u64>,
    /// LFS details (large files).
    #[serde(default)]
    pub lfs: Option<LfsInfo>,
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
        let models: Vec<Model> = serde_json::from_str::<Vec<Model>>(body)
            .unwrap()
            .into_iter()
            .filter_map(Model::named)
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
            Model::named(serde_json::from_str(r#"{"likes":1}"#).unwrap()),
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
        let info: ModelInfo = serde_json::from_str(body).unwrap();
        assert_eq!(info.id, "Qwen/Qwen3-8B-GGUF");
        assert_eq!(info.siblings.len(), 3);
        let lfs = info.siblings[1].lfs.as_ref().unwrap();
        assert_eq!(lfs.size, 5_027_783_488);
        assert_eq!(lfs.sha256.len(), 64);
    }
}
