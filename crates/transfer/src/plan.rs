//! The plan of a pull: every file with the place it goes, checked before
//! anything is written.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use backstop_hub::Cache;

use crate::{Error, Item, UnsafeName, confine_on_disk};

/// One file of a plan.
#[derive(Clone, Debug)]
pub struct Planned {
    /// What to download.
    pub item: Item,
    /// Where it goes once complete and checked.
    pub dest: PathBuf,
    /// How it is placed there.
    pub placement: Placement,
}

/// How a file is placed at its destination.
#[derive(Clone, Debug)]
pub enum Placement {
    /// A file of a folder, named after its source, replaced whole once
    /// checked. What it was downloaded as (URL, size, `ETag`,
    /// `Last-Modified`) is kept at `validators`
    /// (`DIR/.backstop/NAME.json`), so that a later pull can revalidate
    /// it with the server.
    Folder {
        /// Where the validators are kept.
        validators: PathBuf,
    },
    /// A blob of a Hugging Face cache, named by its content: kept when it
    /// is there with the right size, else written under the lock
    /// huggingface_hub takes for it; then linked from its snapshot.
    HubCache(CacheSlot),
}

/// Where a blob of the Hugging Face cache is linked from, and what guards
/// it (see [`backstop_hub::Cache`] for the layout).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheSlot {
    /// The snapshot's file, `snapshots/<commit>/<path>`: made a symbolic
    /// link to the blob.
    pub pointer: PathBuf,
    /// What the link holds: the blob, relative to the link's folder
    /// (`../../blobs/<etag>`).
    pub target: PathBuf,
    /// `.locks/<repo folder>/<etag>.lock`: held, as huggingface_hub holds
    /// it, while the blob is written and linked.
    pub lock: PathBuf,
    /// The cache's `CACHEDIR.TAG`, written when missing.
    pub tag: PathBuf,
    /// The revision's ref to record once every file planned with it is in
    /// place; `None` when the revision asked for is the commit itself.
    pub reference: Option<RefFile>,
}

/// A ref of the Hugging Face cache: `refs/<revision>`, holding a commit.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RefFile {
    /// The file.
    pub path: PathBuf,
    /// The commit it holds.
    pub commit: String,
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
            placement: Placement::Folder { validators },
        }
    }

    /// The partial file the bytes go to until then, beside the
    /// destination: `NAME.part` in a folder, `<etag>.incomplete` in the
    /// Hugging Face cache (where huggingface_hub wrote its own before
    /// 2026, so that such a file is resumed).
    pub fn part(&self) -> PathBuf {
        match self.placement {
            Placement::Folder { .. } => with_suffix(&self.dest, ".part"),
            Placement::HubCache(_) => with_suffix(&self.dest, ".incomplete"),
        }
    }

    /// The partial file's progress record: the partial file's name and
    /// `.json`.
    pub fn record(&self) -> PathBuf {
        with_suffix(&self.part(), ".json")
    }

    /// Where the validators of a file of a folder are kept; `None` for a
    /// blob of the cache, which its name proves.
    pub fn validators(&self) -> Option<&Path> {
        match &self.placement {
            Placement::Folder { validators } => Some(validators),
            Placement::HubCache(_) => None,
        }
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
        let mut plan = Plan::default();
        let mut taken = HashMap::new();
        for item in items {
            let unsafe_name = |reason| unsafe_name(&item, &item.name, reason);
            let dest = confine_on_disk(dir, &item.name).map_err(unsafe_name)?;
            let validators = confine_on_disk(dir, &format!("{STATE_DIR}/{}.json", item.name))
                .map_err(unsafe_name)?;
            let planned = Planned {
                item,
                dest,
                placement: Placement::Folder {
                    validators: validators.clone(),
                },
            };
            let paths = [
                planned.dest.clone(),
                planned.part(),
                planned.record(),
                validators,
            ];
            plan.push(planned, paths, &mut taken)?;
        }
        Ok(plan)
    }

    /// Places every item in the Hugging Face cache `cache` the way
    /// huggingface_hub does: the content as the blob its ETag names,
    /// shared by every file, revision and process that has the same
    /// content, and the file as a link to it in the snapshot of its
    /// commit. Items must come from `hf://` sources (see
    /// [`crate::resolve`]).
    ///
    /// Fails, with nothing written, on an item from elsewhere, a listing
    /// that does not say the commit or a file's blob, a path that cannot
    /// be confined to the repository's folder, or two items that would be
    /// the same snapshot file.
    pub fn in_hub_cache(cache: &Cache, items: Vec<Item>) -> Result<Plan, Error> {
        let mut plan = Plan::default();
        let mut taken = HashMap::new();
        for item in items {
            let (dest, slot) = cache_slot(cache, &item)?;
            // Files with the same content share their blob, on purpose;
            // only the snapshot's files are each one's own.
            let paths = [slot.pointer.clone()];
            let planned = Planned {
                item,
                dest,
                placement: Placement::HubCache(slot),
            };
            plan.push(planned, paths, &mut taken)?;
        }
        Ok(plan)
    }

    /// Adds `planned`, unless one of `paths` is already another file's.
    fn push<const N: usize>(
        &mut self,
        planned: Planned,
        paths: [PathBuf; N],
        taken: &mut HashMap<PathBuf, usize>,
    ) -> Result<(), Error> {
        let index = self.files.len();
        for path in paths {
            if let Some(&other) = taken.get(&path) {
                let first = &self.files[other].item;
                return Err(Error::Collision {
                    path,
                    first: format!("{} ({})", first.name, first.origin),
                    second: format!("{} ({})", planned.item.name, planned.item.origin),
                });
            }
            taken.insert(path, index);
        }
        self.files.push(planned);
        Ok(())
    }
}

fn unsafe_name(item: &Item, name: &str, reason: UnsafeName) -> Error {
    Error::UnsafeName {
        origin: item.origin.clone(),
        name: name.to_owned(),
        reason,
    }
}

/// The blob an item of a Hub repository is, and its slot in `cache`.
fn cache_slot(cache: &Cache, item: &Item) -> Result<(PathBuf, CacheSlot), Error> {
    let Some(entry) = &item.hub else {
        return Err(Error::NotForCache {
            origin: item.origin.clone(),
        });
    };
    let unnamed = |missing| Error::Unnamed {
        origin: item.origin.clone(),
        name: item.name.clone(),
        missing,
    };
    let commit = entry
        .commit
        .as_deref()
        .ok_or_else(|| unnamed("the commit of the revision"))?;
    let etag = entry
        .etag
        .as_deref()
        .ok_or_else(|| unnamed("a blob id or sha256"))?;
    let repo = cache.repo(entry.kind, &entry.repo)?;
    let confined = |name: String| {
        confine_on_disk(repo.dir(), &name).map_err(|reason| unsafe_name(item, &name, reason))
    };
    let blob = confined(repo.blob_name(etag))?;
    let pointer = confined(repo.pointer_name(commit, &item.name))?;
    let reference = match entry.revision == commit {
        true => None,
        false => Some(RefFile {
            path: confined(repo.ref_name(&entry.revision))?,
            commit: commit.to_owned(),
        }),
    };
    let slot = CacheSlot {
        pointer,
        target: PathBuf::from(repo.link_target(&item.name, etag)),
        lock: repo.lock(etag),
        tag: cache.tag(),
        reference,
    };
    Ok((blob, slot))
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
            hub: None,
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
            plan.files[0].validators(),
            Some(Path::new("/dl/.backstop/a/b.bin.json"))
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
