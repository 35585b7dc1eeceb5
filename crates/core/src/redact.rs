//! Scrubbing credentials out of free text (tool output, server messages)
//! before it is shown, logged or stored.

/// Token prefixes of well-known credentials, with the least number of
/// token characters that must follow for the match to count.
const PREFIXES: &[(&str, usize)] = &[
    ("sk-", 16),  // OpenAI, Anthropic (sk-ant-...), OpenRouter (sk-or-...)
    ("hf_", 20),  // Hugging Face
    ("AIza", 30), // Google API keys
    ("ghp_", 20), // GitHub
    ("gho_", 20),
    ("ghs_", 20),
    ("ghu_", 20),
    ("github_pat_", 20),
    ("glpat-", 16), // GitLab
    ("xoxb-", 10),  // Slack
    ("xoxp-", 10),
    ("AKIA", 16),  // AWS access key ids
    ("eyJ", 30),   // JWTs (OAuth access tokens)
    ("gsk_", 20),  // Groq
    ("pplx-", 20), // Perplexity
];

/// Words after which a `=` or `:` introduces a secret value.
const LABELS: &[&str] = &[
    "api_key",
    "apikey",
    "api-key",
    "access_token",
    "refresh_token",
    "token",
    "secret",
    "password",
    "authorization",
];

const REDACTED: &str = "<redacted>";

fn token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/' | b'+' | b'=')
}

/// Replaces every credential in `text` with `<redacted>`: each of `known`
/// (the exact secrets in play, at least 4 characters long), tokens with the
/// prefixes of well-known providers (`sk-`, `hf_`, `AIza`, `ghp_`, JWTs...),
/// the credential after `Bearer`, and values after labels such as
/// `api_key=` or `"token": "`.
///
/// ```
/// use backstop_core::redact;
///
/// let line = "401 for key sk-ant-api03-abcdefghijklmnopqrstuvwxyz: Bearer abc.def.ghi";
/// assert_eq!(redact(line, &[]), "401 for key <redacted>: Bearer <redacted>");
/// assert_eq!(redact("token=hunter2hunter2 ok", &[]), "token=<redacted> ok");
/// assert_eq!(redact("my pass is swordfish", &["swordfish"]), "my pass is <redacted>");
/// ```
pub fn redact(text: &str, known: &[&str]) -> String {
    let mut out = text.to_owned();
    for secret in known.iter().map(|s| s.trim()).filter(|s| s.len() >= 4) {
        out = out.replace(secret, REDACTED);
    }
    let mut spans = Vec::new();
    let bytes = out.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let at_word_start = i == 0
            || !(bytes[i - 1].is_ascii_alphanumeric() || matches!(bytes[i - 1], b'-' | b'_'));
        if at_word_start && let Some(end) = prefixed_token(bytes, i) {
            spans.push((i, end));
            i = end;
            continue;
        }
        if let Some((start, end)) = labelled_value(bytes, i) {
            spans.push((start, end));
            i = end;
            continue;
        }
        i += 1;
    }
    for (start, end) in spans.into_iter().rev() {
        out.replace_range(start..end, REDACTED);
    }
    out
}

fn run_of_token_chars(bytes: &[u8], from: usize) -> usize {
    bytes[from..].iter().take_while(|b| token_char(**b)).count()
}

fn prefixed_token(bytes: &[u8], i: usize) -> Option<usize> {
    PREFIXES.iter().find_map(|(prefix, min)| {
        let p = prefix.as_bytes();
        if bytes.len() >= i + p.len() && &bytes[i..i + p.len()] == p {
            let rest = run_of_token_chars(bytes, i + p.len());
            (rest >= *min).then_some(i + p.len() + rest)
        } else {
            None
        }
    })
}

/// `Bearer X`, `label=X`, `label: X`, `"label": "X"`: the span of X.
fn labelled_value(bytes: &[u8], i: usize) -> Option<(usize, usize)> {
    let lower = |b: &u8| b.to_ascii_lowercase();
    let starts_with = |word: &str| {
        bytes.len() >= i + word.len()
            && bytes[i..i + word.len()].iter().map(lower).eq(word.bytes())
            && (i == 0 || !bytes[i - 1].is_ascii_alphanumeric())
    };
    let mut j = if starts_with("bearer ") {
        i + "bearer ".len()
    } else {
        let word = LABELS.iter().find(|w| starts_with(w))?;
        let mut j = i + word.len();
        // Optional closing quote of a JSON key, spaces, then = or :
        if bytes.get(j) == Some(&b'"') {
            j += 1;
        }
        while bytes.get(j) == Some(&b' ') {
            j += 1;
        }
        if !matches!(bytes.get(j), Some(b'=' | b':')) {
            return None;
        }
        j += 1;
        while bytes.get(j) == Some(&b' ') {
            j += 1;
        }
        if bytes.get(j) == Some(&b'"') {
            j += 1;
        }
        j
    };
    while bytes.get(j) == Some(&b' ') {
        j += 1;
    }
    let len = run_of_token_chars(bytes, j);
    // Short values are words, not credentials ("token: none").
    (len >= 8).then_some((j, j + len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let cases: &[(&str, &str)] = &[
            ("no secrets here", "no secrets here"),
            (
                "Invalid API key sk-proj-AbCdEfGhIjKlMnOpQrStUv",
                "Invalid API key <redacted>",
            ),
            (
                "token hf_abcdefghijklmnopqrstuvwx rejected",
                "token <redacted> rejected",
            ),
            (
                "key=AIzaSyA1234567890abcdefghijklmnopqrstuv",
                "key=<redacted>",
            ),
            (
                "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig",
                "Authorization: Bearer <redacted>",
            ),
            (
                r#"{"api_key": "abcd1234efgh5678"}"#,
                r#"{"api_key": "<redacted>"}"#,
            ),
            ("password: short", "password: short"),
            (
                "task-runner and sk-short are words",
                "task-runner and sk-short are words",
            ),
            (
                "ask-questions-about-everything-here",
                "ask-questions-about-everything-here",
            ),
            (
                "résumé sk-ant-api03-ZZZZZZZZZZZZZZZZZZZZ ✓",
                "résumé <redacted> ✓",
            ),
            ("AKIAIOSFODNN7EXAMPLE", "<redacted>"),
        ];
        for (text, want) in cases {
            assert_eq!(redact(text, &[]), *want, "{text:?}");
        }
    }

    #[test]
    fn known_secrets_go_first() {
        assert_eq!(
            redact("x abc y abc", &["abc"]),
            "x abc y abc",
            "too short to trust"
        );
        assert_eq!(redact("x abcd y", &["abcd", ""]), "x <redacted> y");
    }
}
