//! Ledger keys: `provider`, `provider/model`, and `host:HOST` for a
//! server that asked every client to wait.

use std::fmt;
use std::str::FromStr;

/// What a key covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Every model of a provider (`anthropic`).
    Provider,
    /// One model (`anthropic/claude-sonnet-4-5`).
    Model,
    /// One HTTP host (`host:huggingface.co`, `host:127.0.0.1:8080`): every
    /// request to it waits.
    Host,
}

/// A ledger key: `provider`, `provider/model` or `host:HOST`.
///
/// The provider is lower-cased and made of letters, digits, `-`, `_` and
/// `.`; the model is everything after the first `/` (it may hold more
/// slashes, as OpenRouter's `openrouter/meta-llama/llama-3.1-70b` does) and
/// may also use `:`, `@` and `+`. No spaces, no control characters, at most
/// 256 bytes.
///
/// A host key is `host:` and the host as it is shown: the name (or IP
/// address, an IPv6 one in brackets) in lower case, followed by `:PORT`
/// when the port is not the scheme's default. http and https on their
/// default ports share one key; other ports of one name are other
/// servers, each its own key.
///
/// ```
/// use backstop_ledger::{Key, Scope};
///
/// let key: Key = "Anthropic/claude-sonnet-4-5".parse().unwrap();
/// assert_eq!(key.as_str(), "anthropic/claude-sonnet-4-5");
/// assert_eq!(key.scope(), Scope::Model);
/// assert_eq!(key.provider_key().as_str(), "anthropic");
/// assert!("bad key".parse::<Key>().is_err());
///
/// let host = Key::host("HuggingFace.co").unwrap();
/// assert_eq!(host.as_str(), "host:huggingface.co");
/// assert_eq!(host.scope(), Scope::Host);
/// assert_eq!(Key::host("127.0.0.1:8080").unwrap().as_str(), "host:127.0.0.1:8080");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key(String);

/// Why a key was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{key:?} is not a ledger key: {why} (expected PROVIDER, PROVIDER/MODEL or host:HOST)")]
pub struct KeyError {
    key: String,
    why: &'static str,
}

impl Key {
    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key of the host `host` (`huggingface.co`, `127.0.0.1:8080`,
    /// `[::1]:8080`), as the HTTP client shows it.
    pub fn host(host: &str) -> Result<Key, KeyError> {
        format!("{HOST_PREFIX}{host}").parse()
    }

    /// The host of a host key.
    pub fn host_name(&self) -> Option<&str> {
        self.0.strip_prefix(HOST_PREFIX)
    }

    /// The provider part (a host key is its own provider).
    pub fn provider(&self) -> &str {
        self.0.split_once('/').map_or(&self.0, |(p, _)| p)
    }

    /// The model part, for a model key.
    pub fn model(&self) -> Option<&str> {
        self.0.split_once('/').map(|(_, m)| m)
    }

    /// Whether it names a provider, a model or a host.
    pub fn scope(&self) -> Scope {
        if self.0.starts_with(HOST_PREFIX) {
            Scope::Host
        } else if self.0.contains('/') {
            Scope::Model
        } else {
            Scope::Provider
        }
    }

    /// The key of this key's provider.
    pub fn provider_key(&self) -> Key {
        Key(self.provider().to_owned())
    }

    /// Parses a key that must name a model.
    pub fn model_key(text: &str) -> Result<Key, KeyError> {
        let key: Key = text.parse()?;
        if key.scope() != Scope::Model {
            return Err(KeyError {
                key: text.to_owned(),
                why: "a model is needed here, written PROVIDER/MODEL",
            });
        }
        Ok(key)
    }
}

/// What starts a host key.
const HOST_PREFIX: &str = "host:";

impl FromStr for Key {
    type Err = KeyError;

    fn from_str(text: &str) -> Result<Key, KeyError> {
        let fail = |why| KeyError {
            key: text.chars().take(300).collect(),
            why,
        };
        if text.is_empty() {
            return Err(fail("it is empty"));
        }
        if text.len() > 256 {
            return Err(fail("it is longer than 256 bytes"));
        }
        if let Some(host) = strip_prefix_ignore_case(text, HOST_PREFIX) {
            return parse_host(host)
                .map(|host| Key(format!("{HOST_PREFIX}{host}")))
                .ok_or_else(|| {
                    fail("a host is a name or an IP address, with :PORT when not the default")
                });
        }
        let (provider, model) = match text.split_once('/') {
            Some((p, m)) => (p, Some(m)),
            None => (text, None),
        };
        if provider.is_empty() {
            return Err(fail("the provider is empty"));
        }
        if !provider
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(fail(
                "the provider may hold only letters, digits, '-', '_' and '.'",
            ));
        }
        if let Some(model) = model {
            if model.is_empty() || model.ends_with('/') || model.contains("//") {
                return Err(fail("the model is empty"));
            }
            if !model.chars().all(|c| {
                c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | '/' | ':' | '@' | '+')
            }) {
                return Err(fail(
                    "the model may hold only letters, digits and - _ . / : @ +",
                ));
            }
        }
        let mut key = provider.to_ascii_lowercase();
        if let Some(model) = model {
            key.push('/');
            key.push_str(model);
        }
        Ok(Key(key))
    }
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

/// A host as the HTTP client shows it, lower-cased: a name or an IPv4
/// address (letters, digits, `-`, `_`, `.`), or an IPv6 address in
/// brackets, then `:PORT` (1 to 65535) or nothing.
fn parse_host(text: &str) -> Option<String> {
    let (name, port) = if let Some(rest) = text.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        let ok = !inside.is_empty()
            && inside
                .chars()
                .all(|c| c.is_ascii_hexdigit() || matches!(c, ':' | '.'));
        if !ok {
            return None;
        }
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (&text[..inside.len() + 2], port)
    } else {
        match text.split_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (text, None),
        }
    };
    if name.is_empty()
        || !name.starts_with('[')
            && !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return None;
    }
    if let Some(port) = port {
        let ok = !port.is_empty()
            && port.len() <= 5
            && port.chars().all(|c| c.is_ascii_digit())
            && port.parse::<u32>().is_ok_and(|p| (1..=65535).contains(&p));
        if !ok {
            return None;
        }
    }
    Some(text.to_ascii_lowercase())
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let good = [
            ("anthropic", "anthropic", Scope::Provider),
            ("OpenAI/gpt-5", "openai/gpt-5", Scope::Model),
            (
                "openrouter/meta-llama/llama-3.1-70b-instruct:free",
                "openrouter/meta-llama/llama-3.1-70b-instruct:free",
                Scope::Model,
            ),
            (
                "google/gemini-2.5-pro@001",
                "google/gemini-2.5-pro@001",
                Scope::Model,
            ),
            ("hf.co/Qwen/Qwen3-8B", "hf.co/Qwen/Qwen3-8B", Scope::Model),
        ];
        for (text, normal, scope) in good {
            let key: Key = text.parse().unwrap();
            assert_eq!(key.as_str(), normal);
            assert_eq!(key.scope(), scope);
        }
        let bad = [
            "",
            "/",
            "/model",
            "anthropic/",
            "a b/c",
            "a/b c",
            "a/b\n",
            "a\u{0}",
            "a/b//c",
            "ant hropic",
            "a/b;drop table",
            "é/x",
        ];
        for text in bad {
            assert!(text.parse::<Key>().is_err(), "{text:?}");
        }
        let why = |r: Result<Key, KeyError>| r.err().map(|e| e.why);
        assert_eq!(
            why("x".repeat(300).parse()),
            Some("it is longer than 256 bytes")
        );
        let not_a_model = Some("a model is needed here, written PROVIDER/MODEL");
        assert_eq!(why(Key::model_key("anthropic")), not_a_model);
        assert_eq!(why(Key::model_key("host:hf.co")), not_a_model);
        assert!(Key::model_key("anthropic/x").is_ok());
    }

    #[test]
    fn hosts() {
        let good = [
            ("host:huggingface.co", "host:huggingface.co"),
            ("HOST:HuggingFace.CO", "host:huggingface.co"),
            ("host:127.0.0.1:8080", "host:127.0.0.1:8080"),
            ("host:[::1]", "host:[::1]"),
            ("host:[::1]:5000", "host:[::1]:5000"),
            ("host:[2001:DB8::1]:443", "host:[2001:db8::1]:443"),
            ("host:xn--bcher-kva.example", "host:xn--bcher-kva.example"),
            ("host:registry-1.docker.io", "host:registry-1.docker.io"),
        ];
        for (text, normal) in good {
            let key: Key = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(key.as_str(), normal);
            assert_eq!(key.scope(), Scope::Host);
            assert_eq!(key.provider_key(), key, "a host is its own provider");
            assert_eq!(key.model(), None);
        }
        assert_eq!(
            Key::host("127.0.0.1:8080").unwrap().host_name(),
            Some("127.0.0.1:8080")
        );
        let bad = [
            "host:",
            "host::80",
            "host:a:",
            "host:a:0",
            "host:a:65536",
            "host:a:80:80",
            "host:a b",
            "host:a/b",
            "host:[::1",
            "host:[]",
            "host:[::1]x",
            "host:[zz::1]",
            "host:a\n",
            "host:é.example",
        ];
        for text in bad {
            let refused = text.parse::<Key>().err().map(|e| e.why);
            assert_eq!(
                refused,
                Some("a host is a name or an IP address, with :PORT when not the default"),
                "{text:?}"
            );
        }
        assert_eq!("hosting".parse::<Key>().unwrap().scope(), Scope::Provider);
    }

    #[test]
    fn parts() {
        let key: Key = "openrouter/meta-llama/llama-3".parse().unwrap();
        assert_eq!(key.provider(), "openrouter");
        assert_eq!(key.model(), Some("meta-llama/llama-3"));
        assert_eq!(key.provider_key().model(), None);
    }
}
