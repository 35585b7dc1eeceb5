//! A `sha256sum` list (`pull --sha256sums FILE`): the digest each file
//! must have, by its path under the destination.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use crate::list::shown;
use crate::{BadLine, Error, Item, Sha256};

/// The digests of a `sha256sum` list, by name.
///
/// Names are paths relative to the destination, as `cd DIR && sha256sum
/// -c FILE` reads them: `a.bin`, `sub/b.bin` (a leading `./` is dropped).
///
/// ```
/// use backstop_transfer::Sha256Sums;
///
/// let text = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855  empty.txt\n";
/// let sums = Sha256Sums::parse(text).unwrap();
/// assert_eq!(sums.get("empty.txt"), Some(backstop_transfer::Sha256::of(b"")));
/// assert_eq!(sums.get("./empty.txt"), sums.get("empty.txt"));
/// ```
#[derive(Clone, Debug, Default)]
pub struct Sha256Sums {
    by_name: HashMap<String, Sha256>,
}

impl Sha256Sums {
    /// Reads the lines `sha256sum` writes: `HEX  NAME` (text mode), `HEX
    /// *NAME` (binary mode), either with a leading `\` when the name is
    /// escaped (`\\`, `\n`), and `SHA256 (NAME) = HEX` (`--tag`). Blank
    /// lines and lines starting with `#` are skipped; Windows line ends
    /// are taken. Fails on the first line that is none of those, or that
    /// gives a name a second, different digest, naming the line.
    pub fn parse(text: &str) -> Result<Sha256Sums, BadLine> {
        let mut by_name: HashMap<String, (Sha256, usize)> = HashMap::new();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let raw = raw.strip_suffix('\r').unwrap_or(raw);
            if raw.trim().is_empty() || raw.starts_with('#') {
                continue;
            }
            let (digest, name) = sum_line(raw).map_err(|reason| BadLine { line, reason })?;
            match by_name.entry(normal(&name).to_owned()) {
                Entry::Vacant(v) => {
                    v.insert((digest, line));
                }
                Entry::Occupied(o) if o.get().0 == digest => {}
                Entry::Occupied(o) => {
                    return Err(BadLine {
                        line,
                        reason: format!(
                            "{:?} has another sha256 on line {}",
                            shown(&name),
                            o.get().1
                        ),
                    });
                }
            }
        }
        Ok(Sha256Sums {
            by_name: by_name.into_iter().map(|(k, (d, _))| (k, d)).collect(),
        })
    }

    /// The digest listed for `name` (a path under the destination).
    pub fn get(&self, name: &str) -> Option<Sha256> {
        self.by_name.get(normal(name)).copied()
    }

    /// How many files the list names.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether it names none.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// Gives each item the digest listed for its name. A URL's file (an
    /// item of no repository) has no digest of its own, so it must be
    /// listed, or have one already (a list's `sha256=`); a file of a Hub
    /// repository or an OCI artifact is checked against its own digest,
    /// and against the list too when listed. Files the list names that
    /// are not pulled are left alone, as `sha256sum -c --ignore-missing`
    /// does.
    ///
    /// Fails, before anything is fetched, when a URL's file is neither
    /// listed nor given a digest ([`Error::NotListed`]), or when the list
    /// and another digest of the file differ ([`Error::DigestConflict`]).
    pub fn apply(&self, items: &mut [Item]) -> Result<(), Error> {
        for item in items {
            match (self.get(&item.name), item.sha256) {
                (Some(listed), Some(own)) if listed != own => {
                    return Err(Error::DigestConflict {
                        name: item.name.clone(),
                        first: own,
                        second: listed,
                    });
                }
                (Some(listed), _) => item.sha256 = Some(listed),
                (None, None) if item.repo.is_none() => {
                    return Err(Error::NotListed {
                        name: item.name.clone(),
                        origin: item.origin.clone(),
                    });
                }
                (None, _) => {}
            }
        }
        Ok(())
    }
}

/// A name as the list and the plan compare it.
fn normal(name: &str) -> &str {
    let mut name = name;
    while let Some(rest) = name.strip_prefix("./") {
        name = rest;
    }
    name
}

/// The digest and the name of one line.
fn sum_line(raw: &str) -> Result<(Sha256, String), String> {
    if let Some(rest) = raw.strip_prefix("SHA256 (") {
        // `SHA256 (NAME) = HEX`: the name may hold ") = " itself, the
        // digest never does.
        let (name, hex) = rest
            .rsplit_once(") = ")
            .ok_or("a --tag line is SHA256 (NAME) = HEX")?;
        return Ok((digest(hex)?, named(name)?));
    }
    let (escaped, line) = match raw.strip_prefix('\\') {
        Some(rest) => (true, rest),
        None => (false, raw),
    };
    let hex = line.get(..64).ok_or_else(|| not_a_line(raw))?;
    let rest = &line[64..];
    // One space, then ' ' for text mode or '*' for binary mode; one space
    // alone is taken too, as many tools write it.
    let name = rest
        .strip_prefix("  ")
        .or_else(|| rest.strip_prefix(" *"))
        .or_else(|| rest.strip_prefix(' '))
        .ok_or_else(|| not_a_line(raw))?;
    let name = if escaped {
        unescape(name)?
    } else {
        name.to_owned()
    };
    Ok((digest(hex)?, named(&name)?))
}

fn not_a_line(raw: &str) -> String {
    format!(
        "{:?} is not a sha256sum line (HEX  NAME, HEX *NAME or SHA256 (NAME) = HEX)",
        shown(raw)
    )
}

fn digest(hex: &str) -> Result<Sha256, String> {
    hex.parse::<Sha256>().map_err(|e| e.to_string())
}

fn named(name: &str) -> Result<String, String> {
    if name.is_empty() {
        return Err("the name is empty".to_owned());
    }
    Ok(name.to_owned())
}

/// A name `sha256sum` escaped: `\\` for a backslash, `\n` for a newline,
/// `\r` for a carriage return.
fn unescape(name: &str) -> Result<String, String> {
    let mut out = String::with_capacity(name.len());
    let mut chars = name.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            _ => return Err(format!("{:?} has an unknown escape", shown(name))),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    const B: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn d(hex: &str) -> Sha256 {
        hex.parse().unwrap()
    }

    /// Lines as GNU sha256sum (text, binary, escaped, --tag), BSD shasum
    /// and hand-made lists write them.
    #[test]
    fn every_shape_sha256sum_writes() {
        let text = format!(
            "{A}  a.bin\n\
             {B} *sub/b.bin\n\
             {A}  ./c.bin\r\n\
             {B}  name with  spaces.txt\n\
             \\{A}  back\\\\slash\\nnewline\n\
             SHA256 (tagged (1).bin) = {B}\n\
             {}  upper.bin\n\
             {A} single.bin\n\
             \n\
             # a comment\n",
            A.to_uppercase()
        );
        let sums = Sha256Sums::parse(&text).unwrap();
        for (name, want) in [
            ("a.bin", A),
            ("sub/b.bin", B),
            ("c.bin", A),
            ("./c.bin", A),
            ("name with  spaces.txt", B),
            ("back\\slash\nnewline", A),
            ("tagged (1).bin", B),
            ("upper.bin", A),
            ("single.bin", A),
        ] {
            assert_eq!(sums.get(name), Some(d(want)), "{name:?}");
        }
        assert_eq!(sums.len(), 8);
        assert_eq!(sums.get("b.bin"), None, "names are paths, not base names");
    }

    #[test]
    fn a_bad_line_is_named() {
        let cases = [
            (
                "abc  a.bin".to_owned(),
                "line 2: \"abc  a.bin\" is not a sha256sum line (HEX  NAME, HEX *NAME or SHA256 (NAME) = HEX)",
            ),
            (format!("{A}a.bin"), "is not a sha256sum line"),
            (
                format!("{}  a.bin", "z".repeat(64)),
                "is not a sha256 digest (64 hex digits)",
            ),
            (format!("{A}  "), "line 2: the name is empty"),
            (
                format!("\\{A}  a\\tb"),
                "line 2: \"a\\\\tb\" has an unknown escape",
            ),
            (
                format!("{B}  a.bin"),
                "line 2: \"a.bin\" has another sha256 on line 1",
            ),
            (
                format!("SHA256 (a.bin) {A}"),
                "a --tag line is SHA256 (NAME) = HEX",
            ),
        ];
        for (line, want) in cases {
            let text = format!("{A}  a.bin\n{line}\n");
            let err = Sha256Sums::parse(&text).unwrap_err();
            assert_eq!(err.line, 2, "{line}");
            assert!(err.to_string().contains(want), "{line}: {err}");
        }
        assert!(
            Sha256Sums::parse(&format!("{A}  a.bin\n{A}  ./a.bin\n")).is_ok(),
            "the same digest twice is no conflict"
        );
    }

    fn item(name: &str, sha256: Option<&str>, repo: Option<&str>) -> Item {
        Item {
            name: name.to_owned(),
            url: url::Url::parse("https://example.com/x").unwrap(),
            size: None,
            sha256: sha256.map(d),
            token: None,
            headers: Vec::new(),
            authorizer: None,
            origin: "https://example.com/x".to_owned(),
            repo: repo.map(str::to_owned),
            hub: None,
        }
    }

    #[test]
    fn applied_by_name_under_the_destination() {
        let sums =
            Sha256Sums::parse(&format!("{A}  a.bin\n{B}  sub/b.bin\n{A}  unused\n")).unwrap();
        let mut items = vec![
            item("a.bin", None, None),
            item("sub/b.bin", None, Some("hf://org/repo")),
            item("README.md", None, Some("hf://org/repo")),
            item("own.bin", Some(B), None),
        ];
        sums.apply(&mut items).unwrap();
        let got: Vec<_> = items.iter().map(|i| i.sha256).collect();
        assert_eq!(got, [Some(d(A)), Some(d(B)), None, Some(d(B))]);

        let err = sums.apply(&mut [item("c.bin", None, None)]).unwrap_err();
        assert!(
            matches!(err, Error::NotListed { ref name, .. } if name == "c.bin"),
            "{err}"
        );
        let err = sums
            .apply(&mut [item("a.bin", Some(B), Some("hf://org/repo"))])
            .unwrap_err();
        assert!(
            matches!(err, Error::DigestConflict { first, second, .. } if first == d(B) && second == d(A)),
            "{err}"
        );
        assert!(err.is_usage());
    }
}
