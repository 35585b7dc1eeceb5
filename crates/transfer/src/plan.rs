//! The plan of a pull: every file with the place it goes, checked before
//! anything is written.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::{Error, Item, confine_on_disk};

/// One file of a plan.
#[derive(Clone, Debug)]
pub struct Planned {
    /// What to download.
    pub item: Item,
    /// Where it goes once complete and checked.
    pub dest: PathBuf,
    /// Where what it was downloaded as (URL, size, `ETag`,
    /// `Last-Modified`) is kept once it is in place, so that a later pull
    /// can revalidate it with the server: `DIR/.backstop/NAME.json`.
    pub validators: PathBuf,
}

impl Planned {
    /// One file the caller places at `dest` itself (`get -o FILE`), not
    /// confined to a folder; its validators go where a pull into that
    /// folder keeps them, `FOLDER/.backstop/NAME.json`.
    pub fn at(item: Item, dest: PathBuf) -> Planned {
        let mut name = dest.file_name().unwrap_or_default().to_os_string();
        name.push(".json");
        let validators = dest.with_file_name(STATE_DIR).join(name);
        Planned {
            item,
            dest,
            validators,
        }
    }

    /// The partial file the bytes go to until then: `NAME.part`, beside
    /// the destination.
    pub fn part(&self) -> PathBuf {
        with_suffix(&self.dest, ".part")
    }

    /// The partial file's progress record: `NAME.part.json`.
    pub fn record(&self) -> PathBuf {
        with_suffix(&self.dest, ".part.json")
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

/// The folder of the destination where backstop keeps what it knows about
/// the files in place.
pub const STATE_DIR: &str = ".backstop";

/// The files of a pull and where each goes.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    /// The files, in the order given.
    pub files: Vec<Planned>,
}

impl Plan {
    /// Places every item under `dir`. Fails, with nothing written, when a
    /// name cannot be confined to `dir` (see [`crate::confine`]) or two
    /// items would write the same file (or one's partial file would be
    /// another's destination).
    pub fn new(dir: &Path, items: Vec<Item>) -> Result<Plan, Error> {
        let mut files: Vec<Planned> = Vec::with_capacity(items.len());
        let mut taken: HashMap<PathBuf, usize> = HashMap::new();
        for item in items {
            let dest = confine_on_disk(dir, &item.name).map_err(|reason| Error::UnsafeName {
                origin: item.origin.clone(),
                name: item.name.clone(),
                reason,
            })?;
            let validators = confine_on_disk(dir, &format!("{STATE_DIR}/{}.json", item.name))
                .map_err(|reason| Error::UnsafeName {
                    origin: item.origin.clone(),
                    name: item.name.clone(),
                    reason,
                })?;
            let planned = Planned {
                item,
                dest,
                validators,
            };
            let index = files.len();
            for path in [
                planned.dest.clone(),
                planned.part(),
                planned.record(),
                planned.validators.clone(),
            ] {
                if let Some(&other) = taken.get(&path) {
                    let first = &files[other].item;
                    return Err(Error::Collision {
                        path,
                        first: format!("{} ({})", first.name, first.origin),
                        second: format!("{} ({})", planned.item.name, planned.item.origin),
                    });
                }
                taken.insert(path, index);
            }
            files.push(planned);
        }
        Ok(Plan { files })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use url::Url;

    fn item(name: &str, origin: &str) -> Item {
        Item {
            name: name.to_owned(),
            url: Url::parse("https://example.com/x").unwrap(),
            size: None,
            sha256: None,
            token: None,
            headers: Vec::new(),
            authorizer: None,
            origin: origin.to_owned(),
            repo: None,
        }
    }

    #[test]
    fn places_and_refuses() {
        let dir = Path::new("/dl");
        let plan = Plan::new(dir, vec![item("a/b.bin", "one"), item("c.bin", "two")]).unwrap();
        assert_eq!(plan.files[0].dest, Path::new("/dl/a/b.bin"));
        assert_eq!(plan.files[0].part(), Path::new("/dl/a/b.bin.part"));
        assert_eq!(plan.files[0].record(), Path::new("/dl/a/b.bin.part.json"));
        assert_eq!(
            plan.files[0].validators,
            Path::new("/dl/.backstop/a/b.bin.json")
        );
        let err = Plan::new(
            dir,
            vec![item("x.bin", "one"), item(".backstop/x.bin.json", "two")],
        );
        assert!(matches!(err, Err(Error::Collision { .. })), "{err:?}");

        let err = Plan::new(dir, vec![item("x.bin", "one"), item("x.bin", "two")]).unwrap_err();
        assert!(matches!(err, Error::Collision { .. }), "{err}");
        assert!(
            err.to_string().contains("x.bin (one) and x.bin (two)"),
            "{err}"
        );
        let err = Plan::new(dir, vec![item("x.bin", "one"), item("x.bin.part", "two")]);
        assert!(matches!(err, Err(Error::Collision { .. })));
        let err = Plan::new(dir, vec![item("ok.bin", "r"), item("../evil", "r")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "r names a file \"../evil\" that cannot be written safely: it climbs out of the directory with .."
        );
    }
}
