//! Naming a repository: its kind, its id, a revision, checked before
//! anything is sent or any path is made from them.

use std::fmt;
use std::str::FromStr;

use crate::Error;

/// What kind of repository a name refers to: the Hub keeps models,
/// datasets and Spaces under different paths.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RepoKind {
    /// `/api/models/...`, `/{repo}/resolve/...`.
    #[default]
    Model,
    /// `/api/datasets/...`, `/datasets/{repo}/resolve/...`.
    Dataset,
    /// `/api/spaces/...`, `/spaces/{repo}/resolve/...`.
    Space,
}

impl RepoKind {
    /// The API's collection name, which is also the prefix a name may
    /// start with and the first part of a cache folder's name: "models",
    /// "datasets", "spaces".
    pub fn api_name(self) -> &'static str {
        match self {
            RepoKind::Model => "models",
            RepoKind::Dataset => "datasets",
            RepoKind::Space => "spaces",
        }
    }

    /// The prefix a name carries on the Hub's web paths (`datasets/`,
    /// `spaces/`); none for a model.
    pub fn url_prefix(self) -> &'static str {
        match self {
            RepoKind::Model => "",
            RepoKind::Dataset => "datasets/",
            RepoKind::Space => "spaces/",
        }
    }

    /// Splits the kind off a name the way the Hub spells it:
    /// `datasets/ORG/NAME`, `spaces/ORG/NAME`, `models/ORG/NAME` or plain
    /// `ORG/NAME` (a model).
    ///
    /// ```
    /// use backstop_hub::RepoKind;
    ///
    /// assert_eq!(RepoKind::split_prefix("datasets/org/data"), (RepoKind::Dataset, "org/data"));
    /// assert_eq!(RepoKind::split_prefix("org/model"), (RepoKind::Model, "org/model"));
    /// ```
    pub fn split_prefix(name: &str) -> (RepoKind, &str) {
        for kind in [RepoKind::Dataset, RepoKind::Space, RepoKind::Model] {
            if let Some(rest) = name
                .strip_prefix(kind.api_name())
                .and_then(|r| r.strip_prefix('/'))
            {
                return (kind, rest);
            }
        }
        (RepoKind::Model, name)
    }
}

/// A repository and, optionally, a revision: `[datasets/|spaces/]ORG/NAME[@REVISION]`
/// as the command line gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepoRef {
    /// A model, a dataset or a Space.
    pub kind: RepoKind,
    /// `ORG/NAME`, checked by [`check_repo_id`].
    pub repo: String,
    /// A branch, tag or commit; the repository's default branch when
    /// `None`.
    pub revision: Option<String>,
}

impl FromStr for RepoRef {
    type Err = Error;

    /// ```
    /// use backstop_hub::{RepoKind, RepoRef};
    ///
    /// let r: RepoRef = "datasets/org/data@refs/pr/3".parse().unwrap();
    /// assert_eq!((r.kind, r.repo.as_str(), r.revision.as_deref()), (RepoKind::Dataset, "org/data", Some("refs/pr/3")));
    /// assert!("org/name@".parse::<RepoRef>().is_err());
    /// ```
    fn from_str(input: &str) -> Result<RepoRef, Error> {
        let (kind, rest) = RepoKind::split_prefix(input.trim());
        let (repo, revision) = match rest.split_once('@') {
            Some((repo, revision)) => {
                check_revision(revision)?;
                (repo, Some(revision.to_owned()))
            }
            None => (rest, None),
        };
        check_repo_id(repo)?;
        Ok(RepoRef {
            kind,
            repo: repo.to_owned(),
            revision,
        })
    }
}

impl fmt::Display for RepoRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.kind.url_prefix(), self.repo)?;
        match &self.revision {
            Some(revision) => write!(f, "@{revision}"),
            None => Ok(()),
        }
    }
}

/// Refuses a revision that cannot be one (empty, too long, control
/// characters), before anything is sent.
///
/// ```
/// assert!(backstop_hub::check_revision("refs/pr/3").is_ok());
/// assert!(backstop_hub::check_revision("main\n").is_err());
/// ```
pub fn check_revision(revision: &str) -> Result<(), Error> {
    if revision.is_empty() || revision.len() > 256 || revision.chars().any(char::is_control) {
        return Err(Error::Invalid(format!("{revision:?} is not a revision")));
    }
    Ok(())
}

/// Refuses anything that is not a plain repository id `ORG/NAME` (ASCII
/// letters, digits, `-`, `_` and `.`, neither part `.` or `..`), before
/// anything is sent.
///
/// ```
/// assert!(backstop_hub::check_repo_id("Qwen/Qwen3-8B-GGUF").is_ok());
/// assert!(backstop_hub::check_repo_id("acme/ti ny").is_err());
/// assert!(backstop_hub::check_repo_id("../etc").is_err());
/// ```
pub fn check_repo_id(repo: &str) -> Result<(), Error> {
    split_repo(repo).map(|_| ())
}

/// Splits `org/name`, refusing anything that is not a plain repository id.
pub(crate) fn split_repo(repo: &str) -> Result<(&str, &str), Error> {
    let valid = |part: &str| {
        !part.is_empty()
            && part.len() <= 96
            && part != "."
            && part != ".."
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    match repo.split_once('/') {
        Some((org, name)) if valid(org) && valid(name) => Ok((org, name)),
        _ => Err(Error::Invalid(format!(
            "{repo:?} is not a repository id (expected ORG/NAME)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_ids() {
        assert!(split_repo("TheBloke/Llama-2-7B-GGUF").is_ok());
        assert!(split_repo("google/gemma-2b.v1_0").is_ok());
        for bad in [
            "", "noslash", "a/b/c", "../etc", "a/..", "a/", "/b", "a b/c", "a/b?x=1",
        ] {
            assert!(matches!(split_repo(bad), Err(Error::Invalid(_))), "{bad:?}");
        }
    }

    #[test]
    fn references() {
        let parse = |s: &str| s.parse::<RepoRef>();
        let r = parse("Qwen/Qwen3-8B-GGUF").unwrap();
        assert_eq!(
            (r.kind, r.repo.as_str(), r.revision),
            (RepoKind::Model, "Qwen/Qwen3-8B-GGUF", None)
        );
        let r = parse("spaces/org/demo@v2").unwrap();
        assert_eq!(
            (r.kind, r.revision.as_deref()),
            (RepoKind::Space, Some("v2"))
        );
        assert_eq!(r.to_string(), "spaces/org/demo@v2");
        let r = parse("models/org/m").unwrap();
        assert_eq!((r.kind, r.to_string().as_str()), (RepoKind::Model, "org/m"));
        for bad in [
            "",
            "org",
            "org/name@",
            "datasets/org",
            "org/na me",
            "a/b/c@x",
        ] {
            assert!(
                matches!(parse(bad), Err(Error::Invalid(_))),
                "{bad:?}: {:?}",
                parse(bad)
            );
        }
    }
}
