//! One registry: its base URL, its credentials and the tokens its realm
//! gave, shared by every request of a push. The rate limit it asks for is
//! kept by the client's host board, as for every host.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use backstop_core::Secret;
use backstop_http::{Client, Method, Payload, Prepared, StatusCode};
use serde::Deserialize;
use tokio::time::Instant;
use url::Url;

use crate::{Credentials, Fault};

/// A token's life when the realm does not say (the distribution spec's
/// default).
const DEFAULT_TOKEN_LIFE: Duration = Duration::from_secs(60);
/// A token is fetched again this long before it expires, so that a chunk
/// sent with it does not arrive after.
const TOKEN_MARGIN: Duration = Duration::from_secs(15);

/// How a registry asks to be authenticated (`WWW-Authenticate`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Challenge {
    /// `Basic realm=…`: send the user and password with every request.
    Basic,
    /// `Bearer realm=…,service=…`: get a token from `realm`.
    Bearer {
        /// The token service's URL.
        realm: String,
        /// The `service` to ask it for.
        service: Option<String>,
        /// The `scope` the registry named, if any.
        scope: Option<String>,
    },
}

impl Challenge {
    /// Parses a `WWW-Authenticate` value; `None` for a scheme that is
    /// neither Basic nor Bearer, or a Bearer without a realm.
    ///
    /// ```
    /// use backstop_oci::Challenge;
    ///
    /// let c = Challenge::parse(r#"Bearer realm="https://auth.example/token",service="reg",scope="repository:a/b:pull,push""#);
    /// assert_eq!(c, Some(Challenge::Bearer {
    ///     realm: "https://auth.example/token".into(),
    ///     service: Some("reg".into()),
    ///     scope: Some("repository:a/b:pull,push".into()),
    /// }));
    /// assert_eq!(Challenge::parse("Basic realm=\"Registry Realm\""), Some(Challenge::Basic));
    /// ```
    pub fn parse(value: &str) -> Option<Challenge> {
        let value = value.trim();
        let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
        let params = params(rest);
        let get = |k: &str| {
            params
                .iter()
                .find(|(key, _)| key.eq_ignore_ascii_case(k))
                .map(|(_, v)| v.clone())
        };
        if scheme.eq_ignore_ascii_case("basic") {
            Some(Challenge::Basic)
        } else if scheme.eq_ignore_ascii_case("bearer") {
            Some(Challenge::Bearer {
                realm: get("realm").filter(|r| !r.is_empty())?,
                service: get("service"),
                scope: get("scope"),
            })
        } else {
            None
        }
    }
}

/// `k=v, k="quoted, with commas"` pairs.
fn params(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.peek().copied() {
                if c == ',' {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        out.push((key.trim().to_owned(), value.trim().to_owned()));
    }
    out
}

#[derive(Deserialize)]
struct TokenAnswer {
    token: Option<String>,
    access_token: Option<String>,
    expires_in: Option<u64>,
}

#[derive(Default)]
struct AuthState {
    challenge: Option<Challenge>,
    /// Tokens by scope, with when they stop being used.
    tokens: HashMap<String, (Secret, Instant)>,
}

/// A request to a registry, sent by [`Registry::send`].
pub struct Call<'a> {
    /// The method.
    pub method: Method,
    /// The absolute URL (an upload `Location` may be on another host).
    pub url: Url,
    /// The token scope it needs (`repository:a/b:pull,push`).
    pub scope: &'a str,
    /// The body, sent again if a stale token makes the registry refuse it
    /// (a file's part is read again).
    pub body: Option<Payload>,
    /// Extra headers.
    pub headers: Vec<(&'static str, String)>,
}

/// A response, with the request it answers (to turn a refusal into a
/// [`Fault`] scrubbed of the request's credentials).
pub struct Answer<'r> {
    /// The response, body unread.
    pub response: reqwest::Response,
    prepared: Prepared<'r>,
}

impl Answer<'_> {
    /// The status.
    pub fn status(&self) -> StatusCode {
        self.response.status()
    }

    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.response.headers().get(name)?.to_str().ok()
    }

    /// The fault this answer stands for: a refusal with its wait and the
    /// registry's message.
    pub async fn refusal(self) -> Fault {
        Fault::Http(self.prepared.failure(self.response).await)
    }
}

/// A registry, shared by every blob of a push.
pub struct Registry {
    client: Client,
    base: Url,
    host: String,
    credentials: Option<Credentials>,
    auth: Mutex<AuthState>,
}

impl Registry {
    /// The registry named `registry` (as [`Reference::registry`] gives
    /// it), over https, or plain http with `plain_http`.
    pub fn new(
        client: Client,
        registry: &str,
        plain_http: bool,
        credentials: Option<Credentials>,
    ) -> Result<Registry, crate::Error> {
        let scheme = if plain_http { "http" } else { "https" };
        let base = Url::parse(&format!(
            "{scheme}://{}/",
            crate::reference::api_host(registry)
        ))
        .map_err(|e| crate::Error::Invalid(Fault::Protocol(format!("registry URL: {e}"))))?;
        Ok(Registry {
            client,
            host: backstop_http::display_host(&base),
            base,
            credentials,
            auth: Mutex::new(AuthState::default()),
        })
    }

    /// The host as shown to people.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The client requests go through.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// `path` on the registry (`v2/…`).
    pub fn url(&self, path: &str) -> Result<Url, Fault> {
        self.base
            .join(path)
            .map_err(|e| Fault::Protocol(format!("URL {path:?}: {e}")))
    }

    /// `GET /v2/` once: learns how the registry authenticates, and checks
    /// that it accepts the credentials (a 401 after authenticating is an
    /// [`Auth`](backstop_core::Class::Auth) fault).
    pub async fn ping(&self, scope: &str) -> Result<(), Fault> {
        let answer = self
            .send(Call {
                method: Method::GET,
                url: self.url("v2/")?,
                scope,
                body: None,
                headers: Vec::new(),
            })
            .await?;
        if answer.status().is_success() {
            Ok(())
        } else {
            Err(answer.refusal().await)
        }
    }

    /// Sends `call` once, authenticated as the registry last asked. A 401
    /// makes it learn the challenge, get a fresh token and send once more;
    /// a 401 again, or a 429, is returned as a fault. Any other status is
    /// returned for the caller to read.
    ///
    /// A 429 (or 503) with a wait holds every later request to the
    /// registry's host until then, through the client's
    /// [`HostBoard`](backstop_http::HostBoard): a request held back fails
    /// at once with nothing sent
    /// ([`HttpFailure::CoolingDown`](backstop_http::HttpFailure::CoolingDown)),
    /// for the caller's retry to wait out within its policy.
    pub async fn send(&self, call: Call<'_>) -> Result<Answer<'_>, Fault> {
        let mut challenged = false;
        loop {
            let authorization = self.authorization(call.scope).await?;
            let mut request = self.client.request(call.method.clone(), call.url.as_str());
            if let Some(a) = &authorization {
                request = request.header("authorization", a.expose());
            }
            for (name, value) in &call.headers {
                request = request.header(name, value);
            }
            if let Some(body) = &call.body {
                request = request.payload(body.clone());
            }
            let prepared = request
                .prepare()
                .map_err(|e| Fault::Protocol(e.to_string()))?;
            let response = prepared.send_any(&[]).await?;
            let status = response.status();
            if status == StatusCode::UNAUTHORIZED && !challenged {
                let challenge = response
                    .headers()
                    .get_all("www-authenticate")
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .find_map(Challenge::parse);
                if let Some(challenge) = challenge {
                    let mut auth = self.lock_auth();
                    auth.tokens.remove(call.scope);
                    auth.challenge = Some(challenge);
                    drop(auth);
                    challenged = true;
                    continue;
                }
            }
            if status == StatusCode::TOO_MANY_REQUESTS {
                return Err(Fault::Http(prepared.failure(response).await));
            }
            return Ok(Answer { response, prepared });
        }
    }

    fn lock_auth(&self) -> std::sync::MutexGuard<'_, AuthState> {
        self.auth.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The `Authorization` value for `scope`, fetching a token when the
    /// registry wants one and the one held is missing or near expiry.
    pub(crate) async fn authorization(&self, scope: &str) -> Result<Option<Secret>, Fault> {
        let challenge = self.lock_auth().challenge.clone();
        let (realm, service, named) = match challenge {
            None => return Ok(None),
            Some(Challenge::Basic) => return Ok(self.credentials.as_ref().map(Credentials::basic)),
            Some(Challenge::Bearer {
                realm,
                service,
                scope,
            }) => (realm, service, scope),
        };
        if let Some((token, until)) = self.lock_auth().tokens.get(scope)
            && *until > Instant::now()
        {
            return Ok(Some(Secret::new(format!("Bearer {}", token.expose()))));
        }
        let mut url = Url::parse(&realm)
            .map_err(|e| Fault::Protocol(format!("the token realm {realm:?}: {e}")))?;
        {
            let mut query = url.query_pairs_mut();
            if let Some(service) = &service {
                query.append_pair("service", service);
            }
            let mut scopes: Vec<&str> = scope.split_whitespace().collect();
            if let Some(named) = named.as_deref()
                && !scopes.contains(&named)
            {
                scopes.push(named);
            }
            for s in scopes {
                query.append_pair("scope", s);
            }
        }
        let mut request = self.client.get(url.as_str());
        if let Some(c) = &self.credentials {
            request = request.header("authorization", c.basic().expose());
        }
        let answer: TokenAnswer = request.json().await.map_err(Fault::Token)?;
        let token = answer
            .token
            .or(answer.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Fault::Protocol("the token service answered no token".to_owned()))?;
        let life = answer
            .expires_in
            .map_or(DEFAULT_TOKEN_LIFE, Duration::from_secs)
            .saturating_sub(TOKEN_MARGIN)
            .max(Duration::from_secs(1));
        let token = Secret::new(token);
        let value = Secret::new(format!("Bearer {}", token.expose()));
        self.lock_auth()
            .tokens
            .insert(scope.to_owned(), (token, Instant::now() + life));
        Ok(Some(value))
    }
}

/// The token scope of pushing to `repository`.
pub fn push_scope(repository: &str) -> String {
    format!("repository:{repository}:pull,push")
}

/// The token scope of pulling from `repository`.
pub fn pull_scope(repository: &str) -> String {
    format!("repository:{repository}:pull")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_as_registries_send_them() {
        assert_eq!(
            Challenge::parse(
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: None,
            })
        );
        assert_eq!(
            Challenge::parse(r#"bearer realm=https://h/t, scope="repository:a:pull,push""#),
            Some(Challenge::Bearer {
                realm: "https://h/t".into(),
                service: None,
                scope: Some("repository:a:pull,push".into()),
            })
        );
        assert_eq!(Challenge::parse("Basic"), Some(Challenge::Basic));
        assert_eq!(Challenge::parse(r#"Bearer service="x""#), None, "no realm");
        assert_eq!(Challenge::parse("Negotiate abc"), None);
    }
}
