//! Fingerprints of the credentials in use, so that an auth cooldown ends as
//! soon as someone logs in again.

use std::path::PathBuf;

use backstop_core::fingerprint;

/// Tells the fingerprint of the credential currently in use for a provider.
pub trait Credentials: Send + Sync {
    /// A short hash of the provider's credential (12 hex digits), or `None`
    /// when no credential for it can be found. Never the credential.
    fn fingerprint(&self, provider: &str) -> Option<String>;
}

/// Where each known provider's command-line tools keep their credentials:
/// environment variables, and files under the home directory.
const KNOWN: &[(&str, &[&str], &[&str])] = &[
    (
        "anthropic",
        &[
            "ANTHROPIC_API_KEY",
            "ANTHROPIC_AUTH_TOKEN",
            "CLAUDE_CODE_OAUTH_TOKEN",
        ],
        &[".claude/.credentials.json"],
    ),
    (
        "openai",
        &["OPENAI_API_KEY", "CODEX_API_KEY"],
        &[".codex/auth.json"],
    ),
    (
        "google",
        &[
            "GEMINI_API_KEY",
            "GOOGLE_API_KEY",
            "GOOGLE_GENERATIVE_AI_API_KEY",
        ],
        &[".gemini/oauth_creds.json"],
    ),
    (
        "gemini",
        &["GEMINI_API_KEY", "GOOGLE_API_KEY"],
        &[".gemini/oauth_creds.json"],
    ),
    (
        "huggingface",
        &["HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"],
        &[".cache/huggingface/token"],
    ),
    (
        "hf",
        &["HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"],
        &[".cache/huggingface/token"],
    ),
    ("azure", &["AZURE_OPENAI_API_KEY", "AZURE_API_KEY"], &[]),
    ("cohere", &["COHERE_API_KEY", "CO_API_KEY"], &[]),
];

/// opencode keeps every provider's login in one file.
const SHARED_FILES: &[&str] = &[".local/share/opencode/auth.json"];

/// The credentials of this machine: for a provider, its known environment
/// variables and credential files (see the table in the source), its
/// `<PROVIDER>_API_KEY` variable, and the file named by
/// `BACKSTOP_CREDENTIAL_FILE_<PROVIDER>` if set. The fingerprint hashes
/// every one of those that exists, names and contents together, so any
/// change — a new key, a fresh login that rewrites a token file — changes
/// it. Modification times are never used: rewriting the same token is not
/// a new login, and a new login within the same second still is.
#[derive(Clone, Debug, Default)]
pub struct LocalCredentials {
    home: Option<PathBuf>,
}

impl LocalCredentials {
    /// Credentials under `$HOME`.
    pub fn new() -> Self {
        LocalCredentials {
            home: std::env::var_os("HOME").map(PathBuf::from),
        }
    }

    /// Credentials under another home directory (for tests).
    pub fn with_home(home: impl Into<PathBuf>) -> Self {
        LocalCredentials {
            home: Some(home.into()),
        }
    }
}

fn env_name(provider: &str) -> String {
    provider
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

impl Credentials for LocalCredentials {
    fn fingerprint(&self, provider: &str) -> Option<String> {
        let (vars, files) = KNOWN
            .iter()
            .find(|(name, _, _)| *name == provider)
            .map(|(_, vars, files)| (vars.to_vec(), files.to_vec()))
            .unwrap_or_default();
        let generic = format!("{}_API_KEY", env_name(provider));
        let mut material = Vec::new();
        for var in vars
            .iter()
            .copied()
            .chain(std::iter::once(generic.as_str()))
        {
            if let Ok(value) = std::env::var(var)
                && !value.trim().is_empty()
            {
                material.extend_from_slice(format!("env:{var}\n").as_bytes());
                material.extend_from_slice(value.trim().as_bytes());
                material.push(b'\n');
            }
        }
        let mut paths: Vec<PathBuf> = files
            .iter()
            .chain(SHARED_FILES)
            .filter_map(|f| self.home.as_ref().map(|h| h.join(f)))
            .collect();
        if let Some(extra) =
            std::env::var_os(format!("BACKSTOP_CREDENTIAL_FILE_{}", env_name(provider)))
        {
            paths.push(PathBuf::from(extra));
        }
        for path in paths {
            if let Ok(contents) = std::fs::read(&path) {
                material.extend_from_slice(format!("file:{}\n", path.display()).as_bytes());
                material.extend_from_slice(&contents);
                material.push(b'\n');
            }
        }
        (!material.is_empty()).then(|| fingerprint(&material))
    }
}

/// Fixed fingerprints, for tests and for callers that know better.
#[derive(Clone, Debug, Default)]
pub struct StaticCredentials(pub std::collections::HashMap<String, String>);

impl Credentials for StaticCredentials {
    fn fingerprint(&self, provider: &str) -> Option<String> {
        self.0.get(provider).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_change_the_fingerprint_by_content_only() {
        let home = tempfile::tempdir().unwrap();
        let creds = LocalCredentials::with_home(home.path());
        // A provider no environment of a test machine has a key for.
        assert_eq!(creds.fingerprint("backstop-test-provider"), None);
        let dir = home.path().join(".local/share/opencode");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("auth.json"), r#"{"x":{"key":"one"}}"#).unwrap();
        let first = creds.fingerprint("backstop-test-provider").unwrap();
        assert_eq!(first.len(), 12);
        std::fs::write(dir.join("auth.json"), r#"{"x":{"key":"one"}}"#).unwrap();
        assert_eq!(
            creds.fingerprint("backstop-test-provider").unwrap(),
            first,
            "same content"
        );
        std::fs::write(dir.join("auth.json"), r#"{"x":{"key":"two"}}"#).unwrap();
        assert_ne!(creds.fingerprint("backstop-test-provider").unwrap(), first);
    }

    #[test]
    fn provider_names_become_variable_names() {
        assert_eq!(env_name("together-ai"), "TOGETHER_AI");
        assert_eq!(env_name("x.ai"), "X_AI");
    }
}
