//! Why a key cools down, and where the length of its cooldown came from.

use std::fmt;
use std::str::FromStr;

use crate::Scope;

/// Why a key is cooling down.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The model's rate limit was hit (HTTP 429, "rate limited").
    RateLimit,
    /// The provider is overloaded (HTTP 529/503): not your quota.
    Overloaded,
    /// The account's quota or usage allowance is used up.
    Quota,
    /// The credentials were refused.
    Auth,
    /// The provider failed (HTTP 5xx and the like).
    Error,
}

impl Reason {
    /// Every reason, in the order tables list them.
    pub const ALL: [Reason; 5] = [
        Reason::RateLimit,
        Reason::Overloaded,
        Reason::Quota,
        Reason::Auth,
        Reason::Error,
    ];

    /// Which key it cools: a rate limit, an overload or a provider error
    /// cools the model only; a quota or an auth failure cools the whole
    /// provider, since every model of it would fail the same way.
    pub fn scope(self) -> Scope {
        match self {
            Reason::Quota | Reason::Auth => Scope::Provider,
            Reason::RateLimit | Reason::Overloaded | Reason::Error => Scope::Model,
        }
    }

    /// The name used on the command line and in the store.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::RateLimit => "rate_limit",
            Reason::Overloaded => "overloaded",
            Reason::Quota => "quota",
            Reason::Auth => "auth",
            Reason::Error => "error",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A reason name that is not one of [`Reason::ALL`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a reason (one of rate_limit, overloaded, quota, auth, error)")]
pub struct UnknownReason(pub String);

impl FromStr for Reason {
    type Err = UnknownReason;

    fn from_str(s: &str) -> Result<Reason, UnknownReason> {
        Reason::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownReason(s.chars().take(64).collect()))
    }
}

/// Where the length of a cooldown came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    /// A server's header (Retry-After and friends).
    Header,
    /// A server's error body.
    Body,
    /// The output of the tool that ran (a reset time it printed).
    Tool,
    /// backstop's default for the reason, escalated.
    Default,
    /// Set by hand (`backstop cooldown set`).
    Manual,
}

impl Source {
    /// The name used in the store and in listings.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Header => "header",
            Source::Body => "body",
            Source::Tool => "tool",
            Source::Default => "default",
            Source::Manual => "manual",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Source> {
        [
            Source::Header,
            Source::Body,
            Source::Tool,
            Source::Default,
            Source::Manual,
        ]
        .into_iter()
        .find(|x| x.as_str() == s)
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for r in Reason::ALL {
            assert_eq!(r.as_str().parse::<Reason>(), Ok(r));
        }
        assert!("ratelimit".parse::<Reason>().is_err());
        assert_eq!(Source::parse("tool"), Some(Source::Tool));
        assert_eq!(Source::parse("nope"), None);
    }

    #[test]
    fn scopes() {
        assert_eq!(Reason::RateLimit.scope(), Scope::Model);
        assert_eq!(Reason::Overloaded.scope(), Scope::Model);
        assert_eq!(Reason::Error.scope(), Scope::Model);
        assert_eq!(Reason::Quota.scope(), Scope::Provider);
        assert_eq!(Reason::Auth.scope(), Scope::Provider);
    }
}
