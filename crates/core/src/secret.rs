//! Secrets (API keys, tokens) that can be used but never shown.

use std::fmt;

use sha2::{Digest, Sha256};

/// A secret string. `Debug` and `Display` print only a fingerprint, so a
/// secret that ends up in a log line, an error or a database leaks nothing.
///
/// ```
/// use backstop_core::Secret;
///
/// let token = Secret::new("hf_abcdefghijklmnopqrstuvwxyz");
/// assert_eq!(token.expose(), "hf_abcdefghijklmnopqrstuvwxyz");
/// assert!(!format!("{token:?} {token}").contains("abcdef"));
/// assert_eq!(token.fingerprint().len(), 12);
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The first 12 hex digits of the secret's SHA-256: enough to tell two
    /// credentials apart, useless for recovering either.
    pub fn fingerprint(&self) -> String {
        fingerprint(self.0.as_bytes())
    }
}

/// The first 12 hex digits of the SHA-256 of `bytes`.
pub fn fingerprint(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest[..6].iter().map(|b| format!("{b:02x}")).collect()
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(sha256:{})", self.fingerprint())
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<secret sha256:{}>", self.fingerprint())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_is_stable_and_short() {
        // sha256("abc") = ba7816bf8f01cfea...
        assert_eq!(fingerprint(b"abc"), "ba7816bf8f01");
        let s = Secret::new("abc");
        assert_eq!(format!("{s:?}"), "Secret(sha256:ba7816bf8f01)");
        assert_eq!(s.to_string(), "<secret sha256:ba7816bf8f01>");
    }
}
