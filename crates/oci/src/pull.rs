//! The files of a model artifact, as `backstop pull` fetches them: one
//! [`Item`] per layer, named by its file path, checked by its digest.

use std::sync::Arc;

use backstop_core::{Policy, Secret};
use backstop_transfer::{AuthorizationFuture, Authorize, Authorizer, Item, Pattern};

use crate::manifest::{LayerFormat, parse_manifest};
use crate::registry::pull_scope;
use crate::{Error, Fault, ManifestError, Reference, Registry};

/// What the name of a tar layer's download ends with: the archive is
/// fetched and checked like any file, then unpacked and removed.
pub const TAR_SUFFIX: &str = ".oci-layer.tar";

/// An `oci://` source of a pull: a reference, and an optional pattern of
/// the file paths to take (as `hf://`'s: `*.gguf`, `onnx/`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OciSource {
    /// The manifest.
    pub reference: Reference,
    /// The files to take; all when `None`.
    pub pattern: Option<String>,
}

impl std::str::FromStr for OciSource {
    type Err = crate::ReferenceError;

    /// `oci://REGISTRY/REPOSITORY(:TAG|@sha256:DIGEST)[/PATTERN]`: a
    /// pattern follows a tag or a digest (a path alone would be read as
    /// more of the repository).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let t = text.trim();
        let body = t.strip_prefix("oci://").unwrap_or(t);
        let split = match body.find('/') {
            Some(first) => {
                let rest = &body[first + 1..];
                let end = if let Some(at) = rest.find("@sha256:") {
                    let digest_end = at + "@sha256:".len() + 64;
                    (digest_end < rest.len() && rest.as_bytes()[digest_end] == b'/')
                        .then_some(digest_end)
                } else if let Some(colon) = rest.find(':') {
                    rest[colon..].find('/').map(|slash| colon + slash)
                } else {
                    None
                };
                end.map(|e| first + 1 + e)
            }
            None => None,
        };
        let (reference, pattern) = match split {
            Some(at) => (&body[..at], Some(body[at + 1..].to_owned())),
            None => (body, None),
        };
        Ok(OciSource {
            reference: reference.parse()?,
            pattern: pattern.filter(|p| !p.is_empty()),
        })
    }
}

impl std::fmt::Display for OciSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "oci://{}", self.reference)?;
        if let Some(p) = &self.pattern {
            write!(f, "/{p}")?;
        }
        Ok(())
    }
}

/// The items of `source`: its manifest fetched (retried under `policy`),
/// checked ([`parse_manifest`]), each raw layer an item with its digest,
/// size and the registry's credential (a tar layer named with
/// [`TAR_SUFFIX`]): a bearer token is asked of `registry` before every
/// request, so that one that expires during a long pull is replaced.
/// Fails before anything is downloaded.
pub async fn pull_items(
    registry: &Arc<Registry>,
    source: &OciSource,
    policy: &Policy,
) -> Result<Vec<Item>, Error> {
    let reference = &source.reference;
    let scope = pull_scope(reference.repository());
    let retried = |e| Error::Registry {
        host: registry.host().to_owned(),
        source: Box::new(e),
    };
    let bytes = policy
        .retry(|_| registry.manifest(reference))
        .run()
        .await
        .map_err(retried)?;
    let shown = source.to_string();
    let manifest = parse_manifest(bytes, &shown).map_err(|e| Error::Manifest {
        source_name: shown.clone(),
        error: e,
    })?;
    let authorization = policy
        .retry(|_| registry.authorization_for(&scope))
        .run()
        .await
        .map_err(retried)?;
    let pattern = source.pattern.as_deref().map(Pattern::new);
    let mut items = Vec::new();
    for layer in &manifest.layers {
        if pattern
            .as_ref()
            .is_some_and(|p| !p.matches(&layer.filepath))
        {
            continue;
        }
        // A tar layer arrives beside its place, to be unpacked there
        // ([`unpack`](crate::unpack)) once its digest checks.
        let name = match layer.format {
            LayerFormat::Raw => layer.filepath.clone(),
            LayerFormat::Tar => format!("{}{TAR_SUFFIX}", layer.filepath),
        };
        let url = registry
            .url(&format!(
                "v2/{}/blobs/sha256:{}",
                reference.repository(),
                layer.digest
            ))
            .map_err(Error::Invalid)?;
        let (headers, authorizer) = match &authorization {
            Some(a) if a.expose().starts_with("Bearer ") => (
                Vec::new(),
                Some(Authorizer::new(RegistryAuthorization {
                    registry: Arc::clone(registry),
                    scope: scope.clone(),
                })),
            ),
            Some(a) => (
                vec![("authorization".to_owned(), a.expose().to_owned())],
                None,
            ),
            None => (Vec::new(), None),
        };
        items.push(Item {
            name,
            url,
            size: Some(layer.size),
            sha256: Some(layer.digest),
            token: None,
            headers,
            authorizer,
            origin: shown.clone(),
            repo: Some(format!(
                "oci://{}/{}",
                reference.registry(),
                reference.repository()
            )),
            hub: None,
        });
    }
    if items.is_empty() {
        return Err(Error::Manifest {
            source_name: shown,
            error: ManifestError::Invalid("no layer matches".to_owned()),
        });
    }
    Ok(items)
}

/// A registry's bearer token for one scope, from its cache while it is
/// good, from the realm again when it is near expiry.
struct RegistryAuthorization {
    registry: Arc<Registry>,
    scope: String,
}

impl Authorize for RegistryAuthorization {
    fn authorization(&self) -> AuthorizationFuture<'_> {
        Box::pin(async move {
            self.registry
                .authorization(&self.scope)
                .await
                .map_err(|e| e.to_string())
        })
    }
}

impl Registry {
    /// The `Authorization` value a request for `scope` carries now (after
    /// a [`ping`](Registry::ping) learned how the registry authenticates),
    /// for a transfer that sends its own requests.
    pub async fn authorization_for(&self, scope: &str) -> Result<Option<Secret>, Fault> {
        self.ping(scope).await?;
        self.authorization(scope).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_with_and_without_patterns() {
        let hex = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let s = |t: &str| t.parse::<OciSource>().unwrap();
        let a = s("oci://127.0.0.1:5000/models/q:v1/*.gguf");
        assert_eq!(a.reference.repository(), "models/q");
        assert_eq!(a.reference.tag(), Some("v1"));
        assert_eq!(a.pattern.as_deref(), Some("*.gguf"));
        let b = s(&format!("oci://h.io/a/b@sha256:{hex}/onnx/"));
        assert_eq!(b.reference.digest().unwrap().to_string(), hex);
        assert_eq!(b.pattern.as_deref(), Some("onnx/"));
        let c = s("oci://h.io/a/b/c:v2");
        assert_eq!((c.reference.repository(), c.pattern), ("a/b/c", None));
        let d = s("oci://h.io/a/b/c");
        assert_eq!(
            d.reference.repository(),
            "a/b/c",
            "a path alone is the repository"
        );
        assert_eq!(s("oci://h.io:5000/m:v1").reference.registry(), "h.io:5000");
        assert!("oci://h.io/A:v1/x".parse::<OciSource>().is_err());
    }
}
