//! Which files a refused credential stops early: the ones the server would
//! certainly refuse too, and no others.
//!
//! On the Hub, gated and open repositories share one host, so a 401/403
//! for a file of one `hf://` repository stops the other files of that
//! repository only. For plain URLs one refusal says little about the next
//! URL of the same origin (a signed URL, a public file beside a private
//! one), so the other files of an origin stop only once a second file of
//! it has been refused with no success in between.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio_util::sync::CancellationToken;

use crate::Item;

/// Refusals in a row, with no success in between, after which the other
/// files of a URL origin stop.
const ORIGIN_REFUSALS: u32 = 2;

/// The files that one refusal speaks for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Scope {
    /// The files of one Hub repository (`hf://[datasets/]ORG/NAME`).
    Repo(String),
    /// The URLs of one origin (scheme, host and port).
    Origin(String),
}

impl Scope {
    pub(crate) fn of(item: &Item) -> Scope {
        match &item.repo {
            Some(repo) => Scope::Repo(repo.clone()),
            None => Scope::Origin(item.url.origin().ascii_serialization()),
        }
    }

    /// The repository, for messages.
    pub(crate) fn repo(&self) -> Option<&str> {
        match self {
            Scope::Repo(repo) => Some(repo),
            Scope::Origin(_) => None,
        }
    }
}

struct Group {
    /// Cancelled when the group's files stop.
    token: CancellationToken,
    refused_in_a_row: u32,
}

/// Every scope's token and refusals, shared by the files of a pull.
pub(crate) struct Refusals {
    parent: CancellationToken,
    groups: Mutex<HashMap<Scope, Group>>,
}

impl Refusals {
    /// Tokens that are cancelled with `parent` too.
    pub(crate) fn new(parent: CancellationToken) -> Self {
        Refusals {
            parent,
            groups: Mutex::new(HashMap::new()),
        }
    }

    fn groups(&self) -> std::sync::MutexGuard<'_, HashMap<Scope, Group>> {
        self.groups.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The token a file of `scope` stops on.
    pub(crate) fn token(&self, scope: &Scope) -> CancellationToken {
        self.groups()
            .entry(scope.clone())
            .or_insert_with(|| Group {
                token: self.parent.child_token(),
                refused_in_a_row: 0,
            })
            .token
            .clone()
    }

    /// A file of `scope` was refused; returns whether its other files stop.
    pub(crate) fn refused(&self, scope: &Scope) -> bool {
        let mut groups = self.groups();
        let Some(group) = groups.get_mut(scope) else {
            return false;
        };
        group.refused_in_a_row += 1;
        let stop = match scope {
            Scope::Repo(_) => true,
            Scope::Origin(_) => group.refused_in_a_row >= ORIGIN_REFUSALS,
        };
        if stop {
            group.token.cancel();
        }
        stop
    }

    /// A file of `scope` arrived: the refusals before it do not add up.
    pub(crate) fn succeeded(&self, scope: &Scope) {
        if let Some(group) = self.groups().get_mut(scope) {
            group.refused_in_a_row = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repository_stops_at_once_an_origin_after_two_refusals_in_a_row() {
        let refusals = Refusals::new(CancellationToken::new());
        let repo = Scope::Repo("hf://org/gated".into());
        let origin = Scope::Origin("https://cdn.example.com".into());
        let (r, o) = (refusals.token(&repo), refusals.token(&origin));
        let other = refusals.token(&Scope::Repo("hf://org/open".into()));

        assert!(!refusals.refused(&origin));
        refusals.succeeded(&origin);
        assert!(!refusals.refused(&origin), "a success in between");
        assert!(!o.is_cancelled());
        assert!(refusals.refused(&origin));
        assert!(o.is_cancelled());

        assert!(refusals.refused(&repo));
        assert!(r.is_cancelled());
        assert!(!other.is_cancelled(), "another repository of the same host");
    }
}
