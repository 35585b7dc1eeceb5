//! File patterns for picking files out of a repository listing, matched as
//! huggingface_hub's `allow_patterns` are (Python's `fnmatch`).

use std::fmt;

/// A pattern over a file's path in a repository: `*` matches any run of
/// characters, `/` included (so `*.gguf` also picks `sub/x.gguf`), `?` one
/// character, `[abc]`, `[a-z]` and `[!abc]` one character of (or not of) a
/// set. A pattern ending in `/` matches everything under that folder.
///
/// ```
/// use backstop_transfer::Pattern;
///
/// let p = Pattern::new("*Q4_K_M*.gguf");
/// assert!(p.matches("qwen3-8b-Q4_K_M.gguf"));
/// assert!(!p.matches("qwen3-8b-Q8_0.gguf"));
/// assert!(Pattern::new("onnx/").matches("onnx/model.onnx"));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Pattern {
    text: String,
    chars: Vec<char>,
}

impl Pattern {
    /// The pattern `text`.
    pub fn new(text: &str) -> Self {
        let mut full = text.to_owned();
        if full.ends_with('/') {
            full.push('*');
        }
        Pattern {
            text: text.to_owned(),
            chars: full.chars().collect(),
        }
    }

    /// Whether `path` matches the whole pattern.
    pub fn matches(&self, path: &str) -> bool {
        let name: Vec<char> = path.chars().collect();
        let pat = &self.chars;
        // Backtracking over the last `*`, linear in practice.
        let (mut p, mut n) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while n < name.len() {
            if p < pat.len() && pat[p] == '*' {
                star = Some((p, n));
                p += 1;
                continue;
            }
            if p < pat.len()
                && let Some(next) = one(pat, p, name[n])
            {
                p = next;
                n += 1;
                continue;
            }
            match star {
                Some((sp, sn)) => {
                    p = sp + 1;
                    n = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            }
        }
        pat[p..].iter().all(|c| *c == '*')
    }
}

/// Whether the pattern element at `p` (not `*`) matches `c`; the index
/// after it when it does.
fn one(pat: &[char], p: usize, c: char) -> Option<usize> {
    match pat[p] {
        '?' => Some(p + 1),
        '[' => {
            let mut i = p + 1;
            let negate = matches!(pat.get(i), Some('!' | '^'));
            if negate {
                i += 1;
            }
            let mut hit = false;
            let mut first = true;
            while i < pat.len() && (first || pat[i] != ']') {
                first = false;
                if pat.get(i + 1) == Some(&'-') && pat.get(i + 2).is_some_and(|e| *e != ']') {
                    hit |= pat[i] <= c && c <= pat[i + 2];
                    i += 3;
                } else {
                    hit |= pat[i] == c;
                    i += 1;
                }
            }
            if i >= pat.len() {
                // No closing bracket: a literal '['.
                return (c == '[').then_some(p + 1);
            }
            (hit != negate).then_some(i + 1)
        }
        literal => (literal == c).then_some(p + 1),
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pattern({:?})", self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let cases: &[(&str, &str, bool)] = &[
            ("*", "anything/at/all", true),
            ("*.gguf", "model.gguf", true),
            ("*.gguf", "sub/model.gguf", true),
            ("*.gguf", "model.gguf.json", false),
            ("*Q4_K_M*", "Qwen3-8B-Q4_K_M.gguf", true),
            (
                "model-?????-of-00004.safetensors",
                "model-00002-of-00004.safetensors",
                true,
            ),
            (
                "model-?????-of-00004.safetensors",
                "model-002-of-00004.safetensors",
                false,
            ),
            ("[ab]*.bin", "a1.bin", true),
            ("[ab]*.bin", "c1.bin", false),
            ("[!ab]*.bin", "c1.bin", true),
            ("[a-c]x", "bx", true),
            ("[a-c]x", "dx", false),
            ("[]]x", "]x", true),
            ("[x", "[x", true),
            ("onnx/", "onnx/model.onnx", true),
            ("onnx/", "onnx", false),
            ("config.json", "config.json", true),
            ("config.json", "sub/config.json", false),
            ("**/*.json", "a/b.json", true),
            ("", "", true),
            ("", "x", false),
            ("a*b*c", "aXbYbZc", true),
            ("a*b*c", "aXbYbZ", false),
        ];
        for (pattern, path, want) in cases {
            assert_eq!(
                Pattern::new(pattern).matches(path),
                *want,
                "{pattern:?} ~ {path:?}"
            );
        }
    }
}
