//! SHA-256 digests: parsed from what users and servers write, shown as hex.

use std::fmt;
use std::str::FromStr;

/// A SHA-256 digest.
///
/// ```
/// use backstop_transfer::{BadDigest, Sha256};
///
/// let d: Sha256 = "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855".parse().unwrap();
/// assert_eq!(d, Sha256::of(b""));
/// assert!(d.to_string().starts_with("e3b0c442"));
/// assert_eq!("e3b0".parse::<Sha256>(), Err(BadDigest("e3b0".into())));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sha256(pub [u8; 32]);

impl Sha256 {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        use sha2::Digest;
        Sha256(sha2::Sha256::digest(bytes).into())
    }

    /// Reads the value of an ETag-like header that carries a digest
    /// (`X-Linked-Etag: "e3b0…"`): quotes and a weak prefix are dropped;
    /// `None` unless what is left is 64 hex digits.
    pub fn from_etag(value: &str) -> Option<Self> {
        let v = value.trim();
        let v = v.strip_prefix("W/").unwrap_or(v);
        v.trim_matches('"').parse().ok()
    }
}

/// Why a text is not a SHA-256 digest.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a sha256 digest (64 hex digits)")]
pub struct BadDigest(pub String);

impl FromStr for Sha256 {
    type Err = BadDigest;

    /// 64 hex digits, either case, optionally after `sha256:`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let hex = t.strip_prefix("sha256:").unwrap_or(t);
        let mut out = [0u8; 32];
        // `hex` accepts exactly two digits per byte and nothing else: no
        // sign, no `0x`, no separators, no non-ASCII.
        hex::decode_to_slice(hex, &mut out)
            .map_err(|_| BadDigest(s.chars().filter(|c| !c.is_control()).take(80).collect()))?;
        Ok(Sha256(out))
    }
}

impl fmt::Display for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags() {
        let hex = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(
            Sha256::from_etag(&format!("\"{hex}\"")),
            Some(Sha256::of(b""))
        );
        assert_eq!(
            Sha256::from_etag(&format!("W/\"{hex}\"")),
            Some(Sha256::of(b""))
        );
        assert_eq!(Sha256::from_etag("\"a1b2c3-git-sha1\""), None);
    }

    #[test]
    fn accepted() {
        let lower = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        for text in [
            lower.to_string(),
            lower.to_uppercase(),
            format!("sha256:{lower}"),
            format!("  {lower}\n"),
        ] {
            assert_eq!(text.parse::<Sha256>(), Ok(Sha256::of(b"")), "{text:?}");
        }
    }

    #[test]
    fn refused() {
        let good = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let table: &[(&str, String)] = &[
            ("a sign before each digit", "+f".repeat(32)),
            ("a minus before each digit", "-f".repeat(32)),
            ("a non-hex letter", "g".repeat(64)),
            ("multibyte characters", "é".repeat(32)),
            ("one digit short", good[..63].to_string()),
            ("one digit over", format!("{good}0")),
            ("a 0x prefix", format!("0x{}", &good[2..])),
            ("a space inside", format!("{} {}", &good[..32], &good[33..])),
            (
                "an underscore inside",
                format!("{}_{}", &good[..32], &good[33..]),
            ),
            ("another algorithm's prefix", format!("sha512:{good}")),
            ("empty", String::new()),
            ("only the prefix", "sha256:".to_string()),
            ("twice the prefix", format!("sha256:sha256:{good}")),
        ];
        for (why, text) in table {
            let shown: String = text.chars().take(80).collect();
            assert_eq!(
                text.parse::<Sha256>(),
                Err(BadDigest(shown)),
                "{why} must be refused: {text:?}"
            );
        }
    }
}
