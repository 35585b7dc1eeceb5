//! Ledger keys: `provider` and `provider/model`.

use std::fmt;
use std::str::FromStr;

/// What a key covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Every model of a provider (`anthropic`).
    Provider,
    /// One model (`anthropic/claude-sonnet-4-5`).
    Model,
}

/// A ledger key: `provider` or `provider/model`.
///
/// The provider is lower-cased and made of letters, digits, `-`, `_` and
/// `.`; the model is everything after the first `/` (it may hold more
/// slashes, as OpenRouter's `openrouter/meta-llama/llama-3.1-70b` does) and
/// may also use `:`, `@` and `+`. No spaces, no control characters, at most
/// 256 bytes.
///
/// ```
/// use backstop_ledger::{Key, Scope};
///
/// let key: Key = "Anthropic/claude-sonnet-4-5".parse().unwrap();
/// assert_eq!(key.as_str(), "anthropic/claude-sonnet-4-5");
/// assert_eq!(key.scope(), Scope::Model);
/// assert_eq!(key.provider_key().as_str(), "anthropic");
/// assert!("bad key".parse::<Key>().is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key(String);

/// Why a key was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{key:?} is not a ledger key: {why} (expected PROVIDER or PROVIDER/MODEL)")]
pub struct KeyError {
    key: String,
    why: &'static str,
}

impl Key {
    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The provider part.
    pub fn provider(&self) -> &str {
        self.0.split_once('/').map_or(&self.0, |(p, _)| p)
    }

    /// The model part, for a model key.
    pub fn model(&self) -> Option<&str> {
        self.0.split_once('/').map(|(_, m)| m)
    }

    /// Whether it names a provider or a model.
    pub fn scope(&self) -> Scope {
        if self.0.contains('/') {
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
        assert!("x".repeat(300).parse::<Key>().is_err());
        assert!(Key::model_key("anthropic").is_err());
        assert!(Key::model_key("anthropic/x").is_ok());
    }

    #[test]
    fn parts() {
        let key: Key = "openrouter/meta-llama/llama-3".parse().unwrap();
        assert_eq!(key.provider(), "openrouter");
        assert_eq!(key.model(), Some("meta-llama/llama-3"));
        assert_eq!(key.provider_key().model(), None);
    }
}
