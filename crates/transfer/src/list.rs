//! A pull list (`pull -i FILE`): one source a line, each with the digest
//! its file must have and the path it goes to, when given.

use std::fmt;
use std::path::Path;

use crate::{Sha256, confine};

/// A line of a list file that cannot be read, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadLine {
    /// The line's number, from 1.
    pub line: usize,
    /// Why, in a few words.
    pub reason: String,
}

impl fmt::Display for BadLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

impl std::error::Error for BadLine {}

/// One source of a pull list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListEntry<S> {
    /// Its line, from 1.
    pub line: usize,
    /// The source, as the caller's parser made it.
    pub source: S,
    /// `sha256=HEX`: the digest its file must have.
    pub sha256: Option<Sha256>,
    /// `out=PATH`: where its file goes, `/`-separated and relative to the
    /// destination; checked by [`confine`], so it names a place inside it.
    pub out: Option<String>,
}

/// Reads a pull list: on each line a source, then, in any order, at most
/// one `sha256=HEX` and one `out=PATH`, separated by spaces or tabs.
/// Blank lines and lines starting with `#` are skipped, as is anything
/// after a `#` that follows a space. `source` parses the source (a URL, an
/// `hf://` repository...), and its error becomes the line's.
///
/// Fails on the first line that cannot be read, naming it: an unknown
/// `key=`, a key given twice, a digest that is not 64 hex digits, or a
/// path that would leave the destination (`..`, absolute, empty parts).
///
/// ```
/// use backstop_transfer::parse_list;
///
/// let text = "# models\nhttps://example.com/a.bin sha256=9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08 out=x/a.bin\n\n";
/// let list = parse_list(text, |s| Ok::<_, String>(s.to_owned())).unwrap();
/// assert_eq!((list[0].line, list[0].out.as_deref()), (2, Some("x/a.bin")));
/// let bad = parse_list("https://example.com/a.bin out=../a.bin", |s| Ok::<_, String>(s.to_owned()));
/// assert_eq!(bad.unwrap_err().to_string(), "line 1: out=../a.bin: it climbs out of the directory with ..");
/// ```
pub fn parse_list<S, E: fmt::Display>(
    text: &str,
    source: impl Fn(&str) -> Result<S, E>,
) -> Result<Vec<ListEntry<S>>, BadLine> {
    let mut entries = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let bad = |reason: String| BadLine { line, reason };
        let mut words = uncommented(raw).split_whitespace();
        let Some(first) = words.next() else {
            continue;
        };
        let source = source(first).map_err(|e| bad(e.to_string()))?;
        let mut entry = ListEntry {
            line,
            source,
            sha256: None,
            out: None,
        };
        for word in words {
            let Some((key, value)) = word.split_once('=') else {
                return Err(bad(format!(
                    "{:?} is not KEY=VALUE (sha256=HEX, out=PATH)",
                    shown(word)
                )));
            };
            match key {
                "sha256" if entry.sha256.is_none() => {
                    let digest = value
                        .parse::<Sha256>()
                        .map_err(|e| bad(format!("sha256=: {e}")))?;
                    entry.sha256 = Some(digest);
                }
                "out" if entry.out.is_none() => {
                    confine(Path::new(""), value)
                        .map_err(|why| bad(format!("out={}: {why}", shown(value))))?;
                    entry.out = Some(value.to_owned());
                }
                "sha256" | "out" => return Err(bad(format!("{key}= is given twice"))),
                _ => {
                    return Err(bad(format!(
                        "unknown key {:?} (sha256=HEX, out=PATH)",
                        shown(key)
                    )));
                }
            }
        }
        entries.push(entry);
    }
    Ok(entries)
}

/// A line without its comment: none when it starts with `#`, and what
/// comes before a `#` that follows a space or a tab (a URL's `#fragment`
/// is kept).
fn uncommented(line: &str) -> &str {
    let line = line.trim();
    if line.starts_with('#') {
        return "";
    }
    let bytes = line.as_bytes();
    match (1..bytes.len()).find(|&i| bytes[i] == b'#' && bytes[i - 1].is_ascii_whitespace()) {
        Some(at) => &line[..at],
        None => line,
    }
}

/// Text from a file, as an error may show it: no control characters, not
/// too long.
pub(crate) fn shown(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    fn parse(text: &str) -> Result<Vec<ListEntry<String>>, BadLine> {
        parse_list(text, |s| {
            if s.starts_with("https://") || s.starts_with("hf://") {
                Ok(s.to_owned())
            } else {
                Err(format!("{s:?} is not a source"))
            }
        })
    }

    #[test]
    fn lines_as_people_write_them() {
        let text = format!(
            "# weights for the nightly job\n\
             \n\
             https://example.com/a.bin\n\
             \thttps://example.com/b.bin   sha256={HEX}\n\
             https://example.com/c.bin out=sub/c.bin sha256={}  # the big one\n\
             hf://org/repo@main/*.json\r\n\
             https://example.com/d.bin#part out=d.bin\n",
            HEX.to_uppercase()
        );
        let list = parse(&text).unwrap();
        let digest: Sha256 = HEX.parse().unwrap();
        let got: Vec<_> = list
            .iter()
            .map(|e| (e.line, e.source.as_str(), e.sha256, e.out.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                (3, "https://example.com/a.bin", None, None),
                (4, "https://example.com/b.bin", Some(digest), None),
                (
                    5,
                    "https://example.com/c.bin",
                    Some(digest),
                    Some("sub/c.bin")
                ),
                (6, "hf://org/repo@main/*.json", None, None),
                (7, "https://example.com/d.bin#part", None, Some("d.bin")),
            ]
        );
        assert!(parse("").unwrap().is_empty());
        assert!(parse("# nothing\n   \n").unwrap().is_empty());
    }

    #[test]
    fn a_bad_line_is_named_with_its_reason() {
        let cases = [
            (
                "ftp://example.com/x",
                "line 1: \"ftp://example.com/x\" is not a source",
            ),
            (
                "https://example.com/a.bin sha256=abc",
                "line 1: sha256=: \"abc\" is not a sha256 digest (64 hex digits)",
            ),
            (
                "https://example.com/a.bin out=/etc/passwd",
                "line 1: out=/etc/passwd: it is an absolute path",
            ),
            (
                "https://example.com/a.bin out=a/../../b",
                "line 1: out=a/../../b: it climbs out of the directory with ..",
            ),
            (
                "https://example.com/a.bin out=",
                "line 1: out=: it is empty",
            ),
            (
                "https://example.com/a.bin out=a//b",
                "line 1: out=a//b: it has an empty or . component",
            ),
            (
                "https://example.com/a.bin out=a out=b",
                "line 1: out= is given twice",
            ),
            (
                "https://example.com/a.bin size=3",
                "line 1: unknown key \"size\" (sha256=HEX, out=PATH)",
            ),
            (
                "https://example.com/a.bin b.bin",
                "line 1: \"b.bin\" is not KEY=VALUE (sha256=HEX, out=PATH)",
            ),
        ];
        for (text, want) in cases {
            let text = format!("# first\n\n{text}");
            let err = parse(&text).unwrap_err();
            assert_eq!(err.line, 3, "{text}");
            assert_eq!(
                err.to_string(),
                want.replacen("line 1", "line 3", 1),
                "{text}"
            );
        }
    }
}
