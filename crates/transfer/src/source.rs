//! Sources: what the user names (`https://…`, `hf://ORG/REPO@REV/GLOB`),
//! and the files they resolve to.

use std::fmt;
use std::str::FromStr;

use backstop_core::Secret;
use backstop_hub::{Hub, RepoKind};
use url::Url;

use crate::{Error, Pattern, Sha256};

/// What to pull: one URL, or files of a Hugging Face repository.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// An http or https URL; the file is named after its last path segment.
    Url(Url),
    /// `hf://[datasets/]ORG/REPO[@REVISION][/PATTERN]`.
    Hub(HubSource),
}

/// Files of a Hub repository at a revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubSource {
    /// A model or a dataset.
    pub kind: RepoKind,
    /// `ORG/NAME`.
    pub repo: String,
    /// A branch, tag or commit (`main` when not given).
    pub revision: String,
    /// Which files; all of them when `None`.
    pub pattern: Option<Pattern>,
}

impl FromStr for Source {
    type Err = Error;

    /// Parses a source as the command line gives it.
    ///
    /// ```
    /// use backstop_transfer::Source;
    ///
    /// let Source::Hub(s) = "hf://Qwen/Qwen3-8B-GGUF@v1.0/*Q4_K_M*".parse().unwrap() else { panic!() };
    /// assert_eq!((s.repo.as_str(), s.revision.as_str()), ("Qwen/Qwen3-8B-GGUF", "v1.0"));
    /// assert!(s.pattern.unwrap().matches("Qwen3-8B-Q4_K_M.gguf"));
    /// assert!("ftp://example.com/x".parse::<Source>().is_err());
    /// ```
    fn from_str(input: &str) -> Result<Self, Error> {
        let invalid = |reason: &str| Error::InvalidSource {
            input: input
                .chars()
                .filter(|c| !c.is_control())
                .take(200)
                .collect(),
            reason: reason.to_owned(),
        };
        let input = input.trim();
        if let Some(rest) = input.strip_prefix("hf://") {
            return parse_hub(rest).map(Source::Hub).map_err(|r| invalid(&r));
        }
        let url = Url::parse(input).map_err(|e| invalid(&e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid("a source is an http(s) URL or hf://ORG/REPO"));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(invalid("the URL has no host"));
        }
        url_name(&url).map_err(|r| invalid(&r))?;
        Ok(Source::Url(url))
    }
}

fn parse_hub(rest: &str) -> Result<HubSource, String> {
    let (kind, rest) = RepoKind::split_prefix(rest);
    if kind == RepoKind::Space {
        return Err("Spaces are not supported; pull a model or a dataset".into());
    }
    let mut parts = rest.splitn(3, '/');
    let org = parts.next().unwrap_or_default();
    let name_rev = parts.next().unwrap_or_default();
    let pattern = parts.next().filter(|p| !p.is_empty());
    let (name, revision) = match name_rev.split_once('@') {
        Some((name, rev)) => {
            let rev =
                percent_decode(rev).ok_or("the revision is not valid percent-encoded UTF-8")?;
            (name, rev)
        }
        None => (name_rev, "main".to_owned()),
    };
    if org.is_empty() || name.is_empty() {
        return Err("expected hf://ORG/REPO[@REVISION][/PATTERN]".into());
    }
    if revision.is_empty() {
        return Err("the revision after @ is empty".into());
    }
    let repo = format!("{org}/{name}");
    backstop_hub::check_repo_id(&repo).map_err(|e| e.to_string())?;
    backstop_hub::check_revision(&revision).map_err(|e| e.to_string())?;
    Ok(HubSource {
        kind,
        repo,
        revision,
        pattern: pattern.map(Pattern::new),
    })
}

/// The file name a URL gives: its last path segment, percent-decoded.
fn url_name(url: &Url) -> Result<String, String> {
    let last = url
        .path_segments()
        .and_then(|mut s| s.next_back())
        .unwrap_or_default();
    if last.is_empty() {
        return Err("the URL's path does not end in a file name".into());
    }
    percent_decode(last)
        .ok_or_else(|| "the URL's file name is not valid percent-encoded UTF-8".into())
}

/// `s` percent-decoded; `None` when a `%` is not followed by two hex
/// digits or the bytes it decodes to are not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let escapes_are_hex = s.match_indices('%').all(|(i, _)| {
        s.as_bytes()
            .get(i + 1..i + 3)
            .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit))
    });
    if !escapes_are_hex {
        return None;
    }
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .ok()
        .map(std::borrow::Cow::into_owned)
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Url(url) => f.write_str(&backstop_http::redact_url(url)),
            Source::Hub(h) => {
                write!(f, "hf://{}{}@{}", h.kind.url_prefix(), h.repo, h.revision)?;
                if let Some(p) = &h.pattern {
                    write!(f, "/{p}")?;
                }
                Ok(())
            }
        }
    }
}

/// One file to download: where from, under which name, and what it must
/// be.
#[derive(Clone, Debug)]
pub struct Item {
    /// The path under the destination, `/`-separated, as the server or
    /// the URL names it (confined before use, see [`crate::Plan`]).
    pub name: String,
    /// Where the bytes come from.
    pub url: Url,
    /// Its size, when known in advance (a Hub listing).
    pub size: Option<u64>,
    /// Its sha256, when known in advance (a Hub listing, `--sha256`).
    pub sha256: Option<Sha256>,
    /// A bearer token for the URL's host (the Hub's); reqwest drops it on
    /// a redirect to another host, such as the Hub's CDN.
    pub token: Option<Secret>,
    /// Extra request headers, `(name, value)`.
    pub headers: Vec<(String, String)>,
    /// Asked for the `Authorization` of every request of the file, when
    /// it may change during the pull (a registry's bearer token, which
    /// expires); it replaces `token` and any `authorization` header.
    pub authorizer: Option<crate::Authorizer>,
    /// Where the item comes from, for messages ("hf://org/repo@main").
    pub origin: String,
    /// The Hub repository the file belongs to (`hf://ORG/NAME`,
    /// `hf://datasets/ORG/NAME`), when it comes from one: a 401/403 for
    /// one of its files stops the others at once. `None` for a URL, whose
    /// origin's other files stop only after a second refusal in a row.
    pub repo: Option<String>,
    /// Where the file belongs in the Hugging Face cache, when it comes
    /// from a Hub repository (see [`crate::Plan::in_hub_cache`]).
    pub hub: Option<HubEntry>,
}

/// What places a file of a Hub repository in the Hugging Face cache: its
/// repository, the revision asked for and the commit it named, and the
/// blob it is. The file's path in the repository is the item's name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubEntry {
    /// A model or a dataset.
    pub kind: RepoKind,
    /// `ORG/NAME`.
    pub repo: String,
    /// The revision asked for (`main`, a tag, a commit).
    pub revision: String,
    /// The commit the listing says the revision names; `None` when it did
    /// not say.
    pub commit: Option<String>,
    /// The blob's name: the file's ETag as huggingface_hub names it (see
    /// [`backstop_hub::Sibling::etag`]); `None` when the listing gives
    /// none.
    pub etag: Option<String>,
}

/// Resolves sources into the files to download, in order: URLs as they
/// are (paired in order with `sha256s`, which must be empty or one per
/// URL, and sent with `headers`), repositories listed through `hub` at
/// their revision and pinned to the commit it names, filtered by their
/// pattern.
///
/// Fails before anything is downloaded: on a listing error, a pattern
/// that matches nothing, or a listed digest that is not one.
pub async fn resolve(
    sources: &[Source],
    hub: &Hub,
    sha256s: &[Sha256],
    headers: &[(String, String)],
) -> Result<Vec<Item>, Error> {
    let urls = sources
        .iter()
        .filter(|s| matches!(s, Source::Url(_)))
        .count();
    if !sha256s.is_empty() && sha256s.len() != urls {
        return Err(Error::DigestCount {
            digests: sha256s.len(),
            urls,
        });
    }
    let mut digests = sha256s.iter();
    let mut items = Vec::new();
    for source in sources {
        match source {
            Source::Url(url) => items.push(Item {
                name: url_name(url).map_err(|reason| Error::InvalidSource {
                    input: source.to_string(),
                    reason,
                })?,
                url: url.clone(),
                size: None,
                sha256: digests.next().copied(),
                token: None,
                headers: headers.to_vec(),
                authorizer: None,
                origin: source.to_string(),
                repo: None,
                hub: None,
            }),
            Source::Hub(h) => items.extend(hub_items(h, hub, &source.to_string()).await?),
        }
    }
    Ok(items)
}

async fn hub_items(source: &HubSource, hub: &Hub, origin: &str) -> Result<Vec<Item>, Error> {
    let info = hub
        .info(source.kind, &source.repo, Some(&source.revision))
        .await?;
    // Pin every file to the commit the listing describes, so that a push
    // during a long pull cannot mix two versions.
    let listed_commit = info
        .sha
        .as_deref()
        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric()));
    let commit = listed_commit.unwrap_or(&source.revision);
    let listed = info.siblings.len();
    let repo = format!("hf://{}{}", source.kind.url_prefix(), source.repo);
    let mut items = Vec::new();
    for file in info.siblings {
        if source
            .pattern
            .as_ref()
            .is_some_and(|p| !p.matches(&file.rfilename))
        {
            continue;
        }
        let sha256 = match &file.lfs {
            Some(lfs) => Some(
                lfs.sha256
                    .parse::<Sha256>()
                    .map_err(|_| Error::InvalidDigest {
                        origin: origin.to_owned(),
                        name: file.rfilename.clone(),
                    })?,
            ),
            None => None,
        };
        let entry = HubEntry {
            kind: source.kind,
            repo: source.repo.clone(),
            revision: source.revision.clone(),
            commit: listed_commit.map(str::to_owned),
            etag: file.etag().map(str::to_owned),
        };
        items.push(Item {
            url: hub.file_url(source.kind, &source.repo, commit, &file.rfilename)?,
            size: file.content_size(),
            name: file.rfilename,
            sha256,
            token: hub.token().cloned(),
            headers: Vec::new(),
            authorizer: None,
            origin: origin.to_owned(),
            repo: Some(repo.clone()),
            hub: Some(entry),
        });
    }
    if items.is_empty() {
        return Err(Error::NoMatch {
            repo: source.repo.clone(),
            pattern: source
                .pattern
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_else(|| "*".into()),
            listed,
        });
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub(s: &str) -> HubSource {
        match s.parse::<Source>() {
            Ok(Source::Hub(h)) => h,
            other => panic!("{s}: {other:?}"),
        }
    }

    #[test]
    fn hub_sources() {
        let h = hub("hf://Qwen/Qwen3-8B-GGUF");
        assert_eq!(
            (h.kind, h.repo.as_str(), h.revision.as_str(), h.pattern),
            (RepoKind::Model, "Qwen/Qwen3-8B-GGUF", "main", None)
        );
        let h = hub("hf://datasets/HuggingFaceFW/fineweb@v1.2.0/sample/10BT/*.parquet");
        assert_eq!(h.kind, RepoKind::Dataset);
        assert_eq!(h.revision, "v1.2.0");
        assert!(h.pattern.unwrap().matches("sample/10BT/000_00000.parquet"));
        let h = hub("hf://org/repo@refs%2Fpr%2F3");
        assert_eq!(h.revision, "refs/pr/3");
        let h = hub("hf://models/org/repo/");
        assert_eq!((h.repo.as_str(), h.pattern), ("org/repo", None));
        for bad in [
            "hf://",
            "hf://org",
            "hf://org/",
            "hf:///repo",
            "hf://org/repo@",
            "hf://spaces/org/app",
            "hf://org/repo@%ff",
            "hf://acme/ti ny",
            "hf://../etc",
            "hf://acme/..",
            "hf://datasets/../../etc/passwd",
            "hf://acme/tiny@main%0A",
        ] {
            assert!(
                matches!(bad.parse::<Source>(), Err(Error::InvalidSource { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn percent_decoding_refuses_what_is_not_an_escape_or_not_utf8() {
        let cases = [
            ("plain", Some("plain")),
            ("model%20v2.bin", Some("model v2.bin")),
            ("refs%2Fpr%2F3", Some("refs/pr/3")),
            ("%2f%2F", Some("//")),
            ("caf%C3%A9", Some("café")),
            ("", Some("")),
            // An escape is `%` and two hex digits, nothing else.
            ("%+f", None),
            ("%-1", None),
            ("% f", None),
            ("%f", None),
            ("a%", None),
            ("%%41", None),
            ("%g0", None),
            // Bytes that are not UTF-8.
            ("%ff", None),
            ("%C3", None),
            ("%C3%28", None),
        ];
        for (input, want) in cases {
            assert_eq!(percent_decode(input).as_deref(), want, "{input:?}");
        }
        for bad in ["hf://org/repo@v%+f", "https://example.com/x%+f.bin"] {
            assert!(
                matches!(bad.parse::<Source>(), Err(Error::InvalidSource { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn url_sources() {
        let Ok(Source::Url(u)) = "https://example.com/dir/model%20v2.bin?sig=abc".parse() else {
            panic!()
        };
        assert_eq!(url_name(&u).unwrap(), "model v2.bin");
        for bad in [
            "ftp://example.com/x",
            "https://example.com/",
            "https://example.com",
            "not a url",
            "file:///etc/passwd",
        ] {
            assert!(bad.parse::<Source>().is_err(), "{bad}");
        }
        // A name that decodes to a path is left for the plan to refuse.
        let Ok(Source::Url(u)) = "https://example.com/..%2F..%2Fetc%2Fpasswd".parse() else {
            panic!()
        };
        assert_eq!(url_name(&u).unwrap(), "../../etc/passwd");
    }

    #[test]
    fn shown_sources_hide_query_strings() {
        let s: Source = "https://user:pw@cdn.example.com/x.bin?X-Amz-Signature=s3cr3t"
            .parse()
            .unwrap();
        assert_eq!(s.to_string(), "https://cdn.example.com/x.bin");
    }
}
