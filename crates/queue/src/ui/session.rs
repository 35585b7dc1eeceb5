//! The dashboard's sessions: kept in the memory of the coordinator
//! process, so a restart signs everyone out, and each coordinator of a
//! fleet has its own (sign in on the one you browse).
//!
//! A session is made by signing in with the API token. The browser gets
//! only a random session id, in an `HttpOnly`, `SameSite=Strict` cookie
//! (and `Secure` over HTTPS); the token is never stored, in the cookie or
//! here. Each session has its own random CSRF token, which every form of
//! the dashboard sends back and every POST must carry.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The cookie that carries the session id.
pub const COOKIE: &str = "backstop_session";

/// A session unused for this long is forgotten: its browser signs in again.
pub const IDLE: Duration = Duration::from_secs(12 * 3600);

/// At most this many sessions are kept; past it, the one unused for the
/// longest is forgotten.
pub const MAX_SESSIONS: usize = 1000;

/// What a page learns of the session it is shown in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedIn {
    /// The token every form sends back.
    pub csrf: String,
    /// What the last action did, shown once.
    pub flash: Option<Flash>,
}

/// The result of an action, shown on the next page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flash {
    /// It failed.
    pub error: bool,
    /// One sentence.
    pub message: String,
}

struct Session {
    csrf: String,
    last_seen: SystemTime,
    flash: Option<Flash>,
}

/// The sessions of one coordinator process, by the digest of their id.
#[derive(Default)]
pub struct Sessions {
    by_digest: Mutex<HashMap<[u8; 32], Session>>,
}

/// No random bytes could be had from the operating system.
#[derive(Debug, thiserror::Error)]
#[error("the operating system gave no random bytes for a session: {0}")]
pub struct NoRandomness(String);

fn random_hex() -> Result<String, NoRandomness> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| NoRandomness(e.to_string()))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn digest(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

impl Sessions {
    /// Starts a session; its id, for the cookie.
    pub fn start(&self, now: SystemTime) -> Result<String, NoRandomness> {
        let id = random_hex()?;
        let csrf = random_hex()?;
        let mut sessions = self.lock();
        sessions.retain(|_, s| !expired(s, now));
        if sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.last_seen)
                .map(|(k, _)| *k)
        {
            sessions.remove(&oldest);
        }
        sessions.insert(
            digest(&id),
            Session {
                csrf,
                last_seen: now,
                flash: None,
            },
        );
        Ok(id)
    }

    /// The session with this id, if it is live; takes its flash.
    pub fn find(&self, id: &str, now: SystemTime) -> Option<SignedIn> {
        let mut sessions = self.lock();
        let key = digest(id);
        let session = sessions.get_mut(&key)?;
        if expired(session, now) {
            sessions.remove(&key);
            return None;
        }
        session.last_seen = now;
        Some(SignedIn {
            csrf: session.csrf.clone(),
            flash: session.flash.take(),
        })
    }

    /// Whether `given` is the CSRF token of session `id` (compared in
    /// constant time).
    pub fn csrf_matches(&self, id: &str, given: &str) -> bool {
        self.lock()
            .get(&digest(id))
            .is_some_and(|s| bool::from(s.csrf.as_bytes().ct_eq(given.as_bytes())))
    }

    /// Leaves `flash` for the next page of session `id`.
    pub fn flash(&self, id: &str, flash: Flash) {
        if let Some(session) = self.lock().get_mut(&digest(id)) {
            session.flash = Some(flash);
        }
    }

    /// Ends session `id`.
    pub fn end(&self, id: &str) {
        self.lock().remove(&digest(id));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Session>> {
        self.by_digest
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn expired(session: &Session, now: SystemTime) -> bool {
    now.duration_since(session.last_seen)
        .is_ok_and(|idle| idle >= IDLE)
}

/// The session id in a `Cookie` header, if there is one.
pub fn from_cookies(header: &str) -> Option<&str> {
    header.split(';').find_map(|pair| {
        let (name, value) = pair.trim().split_once('=')?;
        (name == COOKIE && !value.is_empty()).then_some(value)
    })
}

/// The `Set-Cookie` value that gives the browser session `id`.
pub fn cookie(id: &str, secure: bool) -> String {
    format!(
        "{COOKIE}={id}; Path=/ui; HttpOnly; SameSite=Strict{}",
        if secure { "; Secure" } else { "" }
    )
}

/// The `Set-Cookie` value that makes the browser forget its session.
pub fn cleared(secure: bool) -> String {
    format!(
        "{COOKIE}=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0{}",
        if secure { "; Secure" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn a_session_is_found_by_its_id_only_and_its_csrf_token_checked() {
        let sessions = Sessions::default();
        let id = sessions.start(at(0)).unwrap();
        let other = sessions.start(at(0)).unwrap();
        assert_ne!(id, other);
        assert_eq!(id.len(), 64);
        let signed = sessions.find(&id, at(1)).unwrap();
        assert_ne!(signed.csrf, sessions.find(&other, at(1)).unwrap().csrf);
        assert!(sessions.csrf_matches(&id, &signed.csrf));
        assert!(!sessions.csrf_matches(&id, ""));
        assert!(!sessions.csrf_matches(&other, &signed.csrf));
        assert!(sessions.find("not-a-session", at(1)).is_none());
        sessions.end(&id);
        assert!(sessions.find(&id, at(2)).is_none());
        assert!(!sessions.csrf_matches(&id, &signed.csrf));
    }

    #[test]
    fn a_session_idle_too_long_is_forgotten_and_one_in_use_is_kept() {
        let sessions = Sessions::default();
        let id = sessions.start(at(0)).unwrap();
        let idle = IDLE.as_secs();
        assert!(sessions.find(&id, at(idle - 1)).is_some());
        // Used at idle - 1: live until 2 * idle - 1.
        assert!(sessions.find(&id, at(2 * idle - 2)).is_some());
        assert!(sessions.find(&id, at(3 * idle)).is_none());
    }

    #[test]
    fn a_flash_is_shown_once() {
        let sessions = Sessions::default();
        let id = sessions.start(at(0)).unwrap();
        let flash = Flash {
            error: false,
            message: "requeued 1 dead delivery".into(),
        };
        sessions.flash(&id, flash.clone());
        assert_eq!(sessions.find(&id, at(1)).unwrap().flash, Some(flash));
        assert_eq!(sessions.find(&id, at(2)).unwrap().flash, None);
    }

    #[test]
    fn past_the_cap_the_session_unused_longest_goes() {
        let sessions = Sessions::default();
        let first = sessions.start(at(0)).unwrap();
        let ids: Vec<String> = (1..MAX_SESSIONS as u64)
            .map(|i| sessions.start(at(i)).unwrap())
            .collect();
        sessions.start(at(MAX_SESSIONS as u64)).unwrap();
        assert!(sessions.find(&first, at(MAX_SESSIONS as u64)).is_none());
        assert!(sessions.find(&ids[0], at(MAX_SESSIONS as u64)).is_some());
    }

    #[test]
    fn the_cookie_is_http_only_and_same_site_strict_and_read_back() {
        let set = cookie("abc", false);
        assert_eq!(
            set,
            "backstop_session=abc; Path=/ui; HttpOnly; SameSite=Strict"
        );
        assert!(cookie("abc", true).ends_with("; Secure"));
        assert_eq!(from_cookies("a=1; backstop_session=abc; b=2"), Some("abc"));
        assert_eq!(from_cookies("backstop_session="), None);
        assert_eq!(from_cookies("other=abc"), None);
    }
}
