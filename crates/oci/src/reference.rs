//! Image references: `oci://REGISTRY/REPOSITORY:TAG` or `…@sha256:DIGEST`,
//! with docker's normalisation where it applies.

use std::fmt;
use std::str::FromStr;

use backstop_transfer::Sha256;

/// The registry a reference without one names (docker's rule).
pub const DOCKER_HUB: &str = "docker.io";
/// Where Docker Hub's registry API answers.
const DOCKER_HUB_API: &str = "registry-1.docker.io";
/// The tag of a reference without tag or digest.
pub const DEFAULT_TAG: &str = "latest";

/// A parsed reference to a manifest in a repository of a registry.
///
/// Docker's normalisation applies: a first component without `.` or `:`
/// (and not `localhost`) is a repository path on `docker.io`, whose
/// one-component names live under `library/`; no tag means `latest`.
///
/// ```
/// use backstop_oci::Reference;
///
/// let r: Reference = "oci://127.0.0.1:5000/models/qwen:0.6b".parse().unwrap();
/// assert_eq!(r.registry(), "127.0.0.1:5000");
/// assert_eq!(r.repository(), "models/qwen");
/// assert_eq!(r.tag(), Some("0.6b"));
///
/// let hub: Reference = "oci://ubuntu".parse().unwrap();
/// assert_eq!(hub.to_string(), "docker.io/library/ubuntu:latest");
/// assert!("oci://Registry/UPPER:tag".parse::<Reference>().is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Sha256>,
}

/// Why a text is not a reference. Nothing is sent for one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    /// Nothing after `oci://`.
    #[error("{input:?} names no repository")]
    Empty {
        /// The reference as given.
        input: String,
    },
    /// The registry part is not a host with an optional port.
    #[error("{input:?}: {registry:?} is not a registry host (HOST or HOST:PORT)")]
    Registry {
        /// The reference as given.
        input: String,
        /// The registry part.
        registry: String,
    },
    /// A path component is not lowercase letters and digits with `.`,
    /// `_`, `__` or `-` between them.
    #[error(
        "{input:?}: {component:?} is not a repository name component (lowercase letters and digits, separated by '.', '_', '__' or '-')"
    )]
    Repository {
        /// The reference as given.
        input: String,
        /// The component refused.
        component: String,
    },
    /// The tag is not 1 to 128 of `[A-Za-z0-9_.-]`, starting with a word
    /// character.
    #[error(
        "{input:?}: {tag:?} is not a tag (up to 128 of A-Z a-z 0-9 _ . -, not starting with . or -)"
    )]
    Tag {
        /// The reference as given.
        input: String,
        /// The tag refused.
        tag: String,
    },
    /// The digest is not `sha256:` and 64 lowercase hex digits.
    #[error("{input:?}: {digest:?} is not a digest (sha256: and 64 lowercase hex digits)")]
    Digest {
        /// The reference as given.
        input: String,
        /// The digest refused.
        digest: String,
    },
    /// The whole reference is longer than docker allows (255 characters of
    /// repository).
    #[error("{input:?}: the repository name is longer than 255 characters")]
    TooLong {
        /// The reference as given (cut).
        input: String,
    },
}

impl Reference {
    /// The registry as written (`docker.io` for Docker Hub), the key
    /// credentials are stored under.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The host (and port) the registry's API answers at.
    pub fn api_host(&self) -> &str {
        api_host(&self.registry)
    }

    /// A registry as `login` and `logout` take it: `HOST[:PORT]`, with an
    /// `oci://`, `https://` or `http://` in front and a `/` behind
    /// tolerated. Docker Hub's names all become `docker.io`.
    ///
    /// ```
    /// use backstop_oci::Reference;
    ///
    /// assert_eq!(Reference::parse_registry("http://127.0.0.1:5000/").unwrap(), "127.0.0.1:5000");
    /// assert_eq!(Reference::parse_registry("index.docker.io").unwrap(), "docker.io");
    /// assert!(Reference::parse_registry("not a host").is_err());
    /// ```
    pub fn parse_registry(text: &str) -> Result<String, ReferenceError> {
        let t = text.trim();
        let t = ["oci://", "https://", "http://"]
            .iter()
            .find_map(|p| t.strip_prefix(p))
            .unwrap_or(t);
        let host = t.trim_end_matches('/');
        let host = match host.to_ascii_lowercase().as_str() {
            "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
                DOCKER_HUB.to_owned()
            }
            _ => host.to_owned(),
        };
        let input: String = text.chars().filter(|c| !c.is_control()).take(300).collect();
        if host.contains('/') {
            return Err(ReferenceError::Registry {
                input,
                registry: host,
            });
        }
        check_registry(&input, &host)?;
        Ok(host)
    }

    /// The repository path (`library/ubuntu`, `models/qwen`).
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag, if the reference names one.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest, if the reference names one.
    pub fn digest(&self) -> Option<Sha256> {
        self.digest
    }

    /// What goes after `/manifests/`: the digest when there is one, else
    /// the tag (`latest` when neither was given).
    pub fn manifest_ref(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => format!("sha256:{d}"),
            (None, Some(t)) => t.clone(),
            (None, None) => DEFAULT_TAG.to_owned(),
        }
    }

    /// This reference, in another repository of the same registry.
    pub fn with_repository(&self, repository: &str) -> Result<Reference, ReferenceError> {
        let input = format!("{}/{repository}", self.registry);
        check_repository(&input, repository)?;
        Ok(Reference {
            repository: repository.to_owned(),
            ..self.clone()
        })
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@sha256:{d}")?;
        }
        Ok(())
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;

    /// `[oci://]REGISTRY/REPOSITORY[:TAG][@sha256:HEX]`.
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let input: String = raw.chars().filter(|c| !c.is_control()).take(300).collect();
        let text = raw.trim();
        let text = text.strip_prefix("oci://").unwrap_or(text);
        if text.is_empty() {
            return Err(ReferenceError::Empty { input });
        }
        let (rest, digest) = match text.split_once('@') {
            Some((rest, d)) => {
                let bad = || ReferenceError::Digest {
                    input: input.clone(),
                    digest: d.to_owned(),
                };
                let hex = d.strip_prefix("sha256:").ok_or_else(bad)?;
                if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                    return Err(bad());
                }
                (rest, Some(hex.parse::<Sha256>().map_err(|_| bad())?))
            }
            None => (text, None),
        };
        // A tag is after the last ':' that comes after the last '/'.
        let slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[slash..].rfind(':') {
            Some(i) => (&rest[..slash + i], Some(&rest[slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(tag) = tag {
            check_tag(&input, tag)?;
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, path))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                check_registry(&input, first)?;
                (first.to_owned(), path.to_owned())
            }
            Some(_) => (DOCKER_HUB.to_owned(), name.to_owned()),
            None => (DOCKER_HUB.to_owned(), format!("library/{name}")),
        };
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        check_repository(&input, &repository)?;
        let tag = match (tag, digest) {
            (Some(t), _) => Some(t.to_owned()),
            (None, Some(_)) => None,
            (None, None) => Some(DEFAULT_TAG.to_owned()),
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }
}

/// Where the API of `registry` answers (Docker Hub's is not `docker.io`).
pub fn api_host(registry: &str) -> &str {
    if registry == DOCKER_HUB {
        DOCKER_HUB_API
    } else {
        registry
    }
}

fn check_registry(input: &str, registry: &str) -> Result<(), ReferenceError> {
    let bad = || ReferenceError::Registry {
        input: input.to_owned(),
        registry: registry.to_owned(),
    };
    let (host, port) = match registry.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || registry.starts_with('[') => (h, Some(p)),
        _ => (registry, None),
    };
    if let Some(port) = port
        && (port.is_empty() || port.len() > 5 || port.parse::<u16>().is_err())
    {
        return Err(bad());
    }
    let ipv6 = host.starts_with('[') && host.ends_with(']');
    let ok = !host.is_empty()
        && (ipv6
            || host.split('.').all(|label| {
                !label.is_empty()
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            }));
    if ok { Ok(()) } else { Err(bad()) }
}

fn check_repository(input: &str, repository: &str) -> Result<(), ReferenceError> {
    if repository.len() > 255 {
        return Err(ReferenceError::TooLong {
            input: input.chars().take(80).collect(),
        });
    }
    for component in repository.split('/') {
        if !is_component(component) {
            return Err(ReferenceError::Repository {
                input: input.to_owned(),
                component: component.to_owned(),
            });
        }
    }
    Ok(())
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn is_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let dashes = sep.bytes().all(|x| x == b'-');
        if !(sep == "." || sep == "_" || sep == "__" || dashes) {
            return false;
        }
    }
    true
}

fn check_tag(input: &str, tag: &str) -> Result<(), ReferenceError> {
    let b = tag.as_bytes();
    let word = |x: u8| x.is_ascii_alphanumeric() || x == b'_';
    let ok = !b.is_empty()
        && b.len() <= 128
        && word(b[0])
        && b.iter().all(|&x| word(x) || x == b'.' || x == b'-');
    if ok {
        Ok(())
    } else {
        Err(ReferenceError::Tag {
            input: input.to_owned(),
            tag: tag.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_as_users_write_them() {
        let hex = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let cases: &[(&str, &str, &str, Option<&str>, bool)] = &[
            (
                "oci://127.0.0.1:5000/m:v1",
                "127.0.0.1:5000",
                "m",
                Some("v1"),
                false,
            ),
            ("localhost/a/b", "localhost", "a/b", Some("latest"), false),
            (
                "oci://ghcr.io/org/model",
                "ghcr.io",
                "org/model",
                Some("latest"),
                false,
            ),
            (
                "oci://ubuntu:22.04",
                "docker.io",
                "library/ubuntu",
                Some("22.04"),
                false,
            ),
            (
                "oci://org/model:q4",
                "docker.io",
                "org/model",
                Some("q4"),
                false,
            ),
            (
                "docker.io/ubuntu",
                "docker.io",
                "library/ubuntu",
                Some("latest"),
                false,
            ),
            (
                "oci://h.io:443/a/b-c__d.e",
                "h.io:443",
                "a/b-c__d.e",
                Some("latest"),
                false,
            ),
        ];
        for &(text, registry, repo, tag, _) in cases {
            let r: Reference = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(
                (r.registry(), r.repository(), r.tag()),
                (registry, repo, tag),
                "{text}"
            );
        }
        let r: Reference = format!("oci://h.io/m@sha256:{hex}").parse().unwrap();
        assert_eq!(r.tag(), None);
        assert_eq!(r.manifest_ref(), format!("sha256:{hex}"));
        let both: Reference = format!("h.io/m:v1@sha256:{hex}").parse().unwrap();
        assert_eq!(
            both.manifest_ref(),
            format!("sha256:{hex}"),
            "the digest wins"
        );
        assert_eq!(
            "oci://ubuntu".parse::<Reference>().unwrap().api_host(),
            "registry-1.docker.io"
        );
    }

    #[test]
    fn malformed_references_say_what_is_wrong() {
        let e = |t: &str| t.parse::<Reference>().unwrap_err();
        assert!(matches!(e("oci://"), ReferenceError::Empty { .. }));
        assert!(
            matches!(e("oci://h.io/Model"), ReferenceError::Repository { component, .. } if component == "Model")
        );
        assert!(matches!(
            e("oci://h.io/a//b"),
            ReferenceError::Repository { .. }
        ));
        assert!(matches!(
            e("oci://h.io/a/../b"),
            ReferenceError::Repository { .. }
        ));
        assert!(matches!(
            e("oci://h.io/-a"),
            ReferenceError::Repository { .. }
        ));
        assert!(matches!(e("oci://h.io/a:.x"), ReferenceError::Tag { .. }));
        assert!(matches!(e("oci://h.io/a:"), ReferenceError::Tag { .. }));
        assert!(matches!(
            e(&format!("h.io/a:{}", "x".repeat(129))),
            ReferenceError::Tag { .. }
        ));
        assert!(matches!(
            e("oci://h.io/a@sha256:abc"),
            ReferenceError::Digest { .. }
        ));
        assert!(matches!(
            e("oci://h.io/a@md5:abc"),
            ReferenceError::Digest { .. }
        ));
        assert!(matches!(
            e("oci://h.io:99999/a"),
            ReferenceError::Registry { .. }
        ));
        assert!(matches!(
            e("oci://h_x.io/a"),
            ReferenceError::Registry { .. }
        ));
        assert!(matches!(
            e("oci://h.io:/a"),
            ReferenceError::Registry { .. }
        ));
        assert!(matches!(
            e(&format!("oci://h.io/{}", "a".repeat(256))),
            ReferenceError::TooLong { .. }
        ));
    }
}
