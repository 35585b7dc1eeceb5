//! Registry credentials where docker, podman and oras keep them: the
//! `auths` of `$DOCKER_CONFIG/config.json` (or `~/.docker/config.json`),
//! `REGISTRY_AUTH_FILE`, and `$XDG_RUNTIME_DIR/containers/auth.json`.

use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use backstop_core::Secret;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value};

/// A user name and password (or token) for a registry.
#[derive(Clone)]
pub struct Credentials {
    /// The user name.
    pub username: String,
    /// The password or token; never shown.
    pub password: Secret,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credentials({}, {})", self.username, self.password)
    }
}

impl Credentials {
    /// The value of a Basic `Authorization` header for these.
    pub fn basic(&self) -> Secret {
        Secret::new(format!(
            "Basic {}",
            STANDARD.encode(format!("{}:{}", self.username, self.password.expose()))
        ))
    }
}

/// Why a credentials file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// The file exists and cannot be read, or cannot be written.
    #[error("cannot {action} {}", path.display())]
    Io {
        /// "read" or "write".
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The file is not the JSON docker writes.
    #[error("{} is not a credentials file: {reason}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it (never the secret itself).
        reason: String,
    },
    /// There is no home directory and no `DOCKER_CONFIG`.
    #[error("there is no home directory and DOCKER_CONFIG is not set")]
    NoHome,
}

/// The files credentials are read from, in the order they are searched.
#[derive(Clone, Debug, Default)]
pub struct CredentialFiles {
    /// Searched first: podman's and skopeo's `REGISTRY_AUTH_FILE`, then
    /// `$XDG_RUNTIME_DIR/containers/auth.json`.
    pub containers: Vec<PathBuf>,
    /// docker's config, searched last and the one [`store`](Self::store)
    /// writes: `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`.
    pub docker: Option<PathBuf>,
}

impl CredentialFiles {
    /// The files the environment names.
    pub fn from_env() -> CredentialFiles {
        let var = |n| {
            std::env::var_os(n)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let mut containers = Vec::new();
        if let Some(file) = var("REGISTRY_AUTH_FILE") {
            containers.push(file);
        }
        if let Some(dir) = var("XDG_RUNTIME_DIR") {
            containers.push(dir.join("containers").join("auth.json"));
        }
        let docker = var("DOCKER_CONFIG")
            .map(|d| d.join("config.json"))
            .or_else(|| var("HOME").map(|h| h.join(".docker").join("config.json")));
        CredentialFiles { containers, docker }
    }

    /// The credentials for `registry` (`host[:port]`, `docker.io`), from
    /// the first file that has an entry for it. A file that does not exist
    /// is skipped; one that cannot be parsed is an error.
    pub fn lookup(&self, registry: &str) -> Result<Option<Credentials>, CredentialsError> {
        for path in self.containers.iter().chain(self.docker.as_ref()) {
            let Some(config) = read(path)? else { continue };
            if let Some(found) = find(path, &config, registry)? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// Stores `credentials` for `registry` in docker's config, keeping
    /// everything else it holds; written to a private temporary file
    /// (mode 0600) beside it, synced, then renamed over it. Returns the
    /// file written.
    pub fn store(
        &self,
        registry: &str,
        credentials: &Credentials,
    ) -> Result<PathBuf, CredentialsError> {
        let path = self.docker.clone().ok_or(CredentialsError::NoHome)?;
        let mut config = read(&path)?.unwrap_or_default();
        let auths = auths_mut(&path, &mut config)?;
        auths.retain(|key, _| normalise(key) != normalise(registry));
        let auth = STANDARD.encode(format!(
            "{}:{}",
            credentials.username,
            credentials.password.expose()
        ));
        let mut entry = Map::new();
        entry.insert("auth".to_owned(), Value::String(auth));
        auths.insert(key_for(registry), Value::Object(entry));
        write(&path, &config)?;
        Ok(path)
    }

    /// Removes the credentials of `registry` from docker's config. Returns
    /// whether there were any.
    pub fn remove(&self, registry: &str) -> Result<bool, CredentialsError> {
        let path = self.docker.clone().ok_or(CredentialsError::NoHome)?;
        let Some(mut config) = read(&path)? else {
            return Ok(false);
        };
        let auths = auths_mut(&path, &mut config)?;
        let before = auths.len();
        auths.retain(|key, _| normalise(key) != normalise(registry));
        if auths.len() == before {
            return Ok(false);
        }
        write(&path, &config)?;
        Ok(true)
    }
}

/// The key docker itself writes for `registry`.
fn key_for(registry: &str) -> String {
    let host = normalise(registry);
    if host == crate::reference::DOCKER_HUB {
        "https://index.docker.io/v1/".to_owned()
    } else {
        host
    }
}

/// A key of `auths` reduced to `host[:port]`: docker has written
/// `https://host/v1/`, `http://host`, and the bare host over the years;
/// every name of Docker Hub becomes `docker.io`.
fn normalise(key: &str) -> String {
    let key = key.trim();
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = key.split('/').next().unwrap_or(key).to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            crate::reference::DOCKER_HUB.to_owned()
        }
        _ => host,
    }
}

fn read(path: &Path) -> Result<Option<Map<String, Value>>, CredentialsError> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(CredentialsError::Io {
                action: "read",
                path: path.to_owned(),
                source,
            });
        }
    };
    if text.iter().all(u8::is_ascii_whitespace) {
        return Ok(Some(Map::new()));
    }
    match serde_json::from_slice(&text) {
        Ok(Value::Object(map)) => Ok(Some(map)),
        Ok(_) => Err(invalid(path, "not a JSON object")),
        // serde's message can quote the text; give the position only.
        Err(e) => Err(invalid(
            path,
            &format!("invalid JSON at line {} column {}", e.line(), e.column()),
        )),
    }
}

fn invalid(path: &Path, reason: &str) -> CredentialsError {
    CredentialsError::Invalid {
        path: path.to_owned(),
        reason: reason.to_owned(),
    }
}

fn auths_mut<'a>(
    path: &Path,
    config: &'a mut Map<String, Value>,
) -> Result<&'a mut Map<String, Value>, CredentialsError> {
    match config
        .entry("auths")
        .or_insert_with(|| Value::Object(Map::new()))
    {
        Value::Object(auths) => Ok(auths),
        _ => Err(invalid(path, "\"auths\" is not an object")),
    }
}

fn find(
    path: &Path,
    config: &Map<String, Value>,
    registry: &str,
) -> Result<Option<Credentials>, CredentialsError> {
    let Some(auths) = config.get("auths") else {
        return Ok(None);
    };
    let Value::Object(auths) = auths else {
        return Err(invalid(path, "\"auths\" is not an object"));
    };
    let wanted = normalise(registry);
    let Some(entry) = auths
        .iter()
        .find(|(key, _)| normalise(key) == wanted)
        .map(|(_, v)| v)
    else {
        return Ok(None);
    };
    let field = |name: &str| {
        entry
            .get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    if let Some(auth) = field("auth") {
        let decoded = STANDARD
            .decode(auth.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| invalid(path, &format!("the auth of {wanted} is not base64 text")))?;
        let (user, pass) = decoded
            .split_once(':')
            .ok_or_else(|| invalid(path, &format!("the auth of {wanted} is not user:password")))?;
        return Ok(Some(Credentials {
            username: user.to_owned(),
            password: Secret::new(pass),
        }));
    }
    match (field("username"), field("password")) {
        (Some(user), Some(pass)) => Ok(Some(Credentials {
            username: user.to_owned(),
            password: Secret::new(pass),
        })),
        _ => Ok(None),
    }
}

fn write(path: &Path, config: &Map<String, Value>) -> Result<(), CredentialsError> {
    let io = |source| CredentialsError::Io {
        action: "write",
        path: path.to_owned(),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(&dir).map_err(io)?;
    // tempfile creates its files with mode 0600.
    let mut temp = tempfile::Builder::new()
        .prefix(".config.json.")
        .tempfile_in(&dir)
        .map_err(io)?;
    let text = serde_json::to_vec_pretty(config).map_err(|e| io(io::Error::other(e)))?;
    temp.write_all(&text).map_err(io)?;
    temp.write_all(b"\n").map_err(io)?;
    temp.as_file().sync_all().map_err(io)?;
    temp.persist(path).map_err(|e| io(e.error))?;
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &Path) -> CredentialFiles {
        CredentialFiles {
            containers: vec![dir.join("auth.json")],
            docker: Some(dir.join("docker").join("config.json")),
        }
    }

    #[test]
    fn entries_are_found_under_every_key_docker_has_written() {
        let dir = tempfile::tempdir().unwrap();
        let f = files(dir.path());
        std::fs::create_dir_all(dir.path().join("docker")).unwrap();
        let b64 = |s: &str| STANDARD.encode(s);
        std::fs::write(
            f.docker.as_ref().unwrap(),
            serde_json::json!({"auths": {
                "https://index.docker.io/v1/": {"auth": b64("hub:hubpass")},
                "http://127.0.0.1:5000/v2/": {"auth": b64("local:pa:ss")},
                "quay.io": {"username": "q", "password": "qp"},
                "empty.io": {},
            }, "credsStore": "desktop"})
            .to_string(),
        )
        .unwrap();
        let user = |r: &str| {
            f.lookup(r)
                .unwrap()
                .map(|c| (c.username, c.password.expose().to_owned()))
        };
        assert_eq!(user("docker.io"), Some(("hub".into(), "hubpass".into())));
        assert_eq!(
            user("127.0.0.1:5000"),
            Some(("local".into(), "pa:ss".into()))
        );
        assert_eq!(user("quay.io"), Some(("q".into(), "qp".into())));
        assert_eq!(user("empty.io"), None);
        assert_eq!(user("ghcr.io"), None);
        // The containers file comes first.
        std::fs::write(
            &f.containers[0],
            serde_json::json!({"auths": {"quay.io": {"auth": b64("podman:pp")}}}).to_string(),
        )
        .unwrap();
        assert_eq!(user("quay.io"), Some(("podman".into(), "pp".into())));
    }

    #[test]
    fn a_broken_file_is_an_error_that_does_not_quote_it() {
        let dir = tempfile::tempdir().unwrap();
        let f = files(dir.path());
        std::fs::write(
            &f.containers[0],
            "{\"auths\": {\"x.io\": {\"auth\": \"s3cret",
        )
        .unwrap();
        let e = f.lookup("x.io").unwrap_err();
        assert!(matches!(e, CredentialsError::Invalid { .. }), "{e:?}");
        assert!(!e.to_string().contains("s3cret"), "{e}");
        std::fs::write(&f.containers[0], r#"{"auths": {"x.io": {"auth": "!!"}}}"#).unwrap();
        assert!(matches!(
            f.lookup("x.io"),
            Err(CredentialsError::Invalid { .. })
        ));
    }

    #[test]
    fn store_keeps_the_rest_of_the_file_private_and_remove_takes_only_its_entry() {
        let dir = tempfile::tempdir().unwrap();
        let f = files(dir.path());
        let path = f.docker.clone().unwrap();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(
            &path,
            r#"{"auths": {"other.io": {"auth": "eDp5"}}, "psFormat": "x"}"#,
        )
        .unwrap();
        let creds = Credentials {
            username: "u".into(),
            password: Secret::new("p"),
        };
        f.store("http://127.0.0.1:5000", &creds).unwrap();
        f.store("127.0.0.1:5000", &creds).unwrap();
        let written: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(written["psFormat"], "x");
        assert_eq!(written["auths"]["other.io"]["auth"], "eDp5");
        assert_eq!(
            written["auths"]["127.0.0.1:5000"]["auth"],
            STANDARD.encode("u:p")
        );
        assert_eq!(
            written["auths"].as_object().unwrap().len(),
            2,
            "one entry per registry"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(f.remove("127.0.0.1:5000").unwrap());
        assert!(!f.remove("127.0.0.1:5000").unwrap());
        assert_eq!(f.lookup("other.io").unwrap().unwrap().username, "x");
        assert!(f.lookup("127.0.0.1:5000").unwrap().is_none());
    }
}
