//! backstop's transfers: many large files at once, each retried on its
//! own, resumed by Range, checked by hash.
//!
//! - [`Source`]: an http(s) URL or `hf://[datasets/]ORG/REPO[@REV][/PATTERN]`,
//!   [`resolve`]d into [`Item`]s through the Hub API (pinned to the commit
//!   the revision names, with sizes and LFS sha256s).
//! - [`Plan`]: every item placed under the destination, names confined to
//!   it ([`confine`]), collisions refused, before anything is written; or,
//!   for `hf://` items, in the Hugging Face cache exactly as
//!   huggingface_hub keeps it ([`Plan::in_hub_cache`]): blobs named by
//!   their ETag, shared and never fetched twice, written under
//!   huggingface_hub's own lock, linked from the snapshot of their commit.
//! - [`Pull`]: the files at most [`Options::jobs`] at once, each in one or
//!   several Range streams under the retry engine of `backstop-core`:
//!   - a transfer that breaks after moving bytes resumes from the last
//!     byte handed to the disk without counting an attempt; the count
//!     starts again only after real progress (the minimum-progress
//!     window's bytes), and the window runs across reconnections, so a
//!     server that cuts every connection early fails as too slow;
//!   - a server that ignores Range, or answers with the wrong bytes, is
//!     caught and the file starts over cleanly;
//!   - connect and read-idle timeouts (the client's), a minimum-progress
//!     window, and a per-attempt ceiling from the size as a runaway guard;
//!   - bytes go to `NAME.part`, synced and recorded in `NAME.part.json`
//!     every [`Options::checkpoint_every`], so that the next run resumes
//!     after Ctrl-C or a crash; the file is renamed into place only when
//!     its size and sha256 (the Hub's, or the caller's) match, with the
//!     permissions of the file it replaces;
//!   - a destination that is a symbolic link keeps pointing where it did
//!     and its target is replaced the same way; a FIFO or a device is
//!     written through in order (no partial file, no rename);
//!   - a file already in place is kept when its hash matches, or without
//!     a hash when the server answers 304 to the `ETag`/`Last-Modified`
//!     recorded when it arrived (in `DIR/.backstop/NAME.json`); anything
//!     else fetches it again, unless [`Options::skip_existing`] trusts
//!     its size;
//!   - a 401/403 stops the other files of the same `hf://` repository,
//!     and a second one in a row the other URLs of the same origin.
//! - [`parse_list`] and [`Sha256Sums`]: a pull list (`SOURCE [sha256=HEX]
//!   [out=PATH]` a line) and a `sha256sum` list, read with each bad line
//!   named; [`Sha256Sums::apply`] gives items their digests by name.
//! - [`RateLimit`]: one byte rate for every stream of a pull
//!   ([`Options::limit`]), on tokio's clock.
//! - [`ConnectionLimit`]: at most so many connections to one host over
//!   every file and stream of a pull ([`Options::connections`]).
//! - [`Spool`]: a whole body that cannot be resumed (the answer to a
//!   POST), put at a destination as a finished download is, or not at all.
//! - [`Progress`]: the seam a progress display plugs into.
//! - [`Authorizer`]: the seam a changing credential plugs into, asked for
//!   the `Authorization` of every request of a file (a registry's bearer
//!   token, which expires during a long pull).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::path::Path;
//! use backstop_transfer::{Plan, Pull, Source, resolve};
//!
//! let client = backstop_http::Client::new()?;
//! let hub = backstop_hub::Hub::from_env(client.clone())?;
//! let sources: Vec<Source> = vec![
//!     "hf://Qwen/Qwen3-0.6B-GGUF/*Q8_0.gguf".parse()?,
//!     "https://example.com/tokenizer.json".parse()?,
//! ];
//! let plan = Plan::new(Path::new("models"), resolve(&sources, &hub, &[], &[]).await?)?;
//! let summary = Pull::new(client).run(&plan).await?;
//! for file in &summary.files {
//!     println!("{}: {:?}", file.name, file.outcome);
//! }
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

mod authorize;
mod cache;
mod connections;
mod destination;
mod digest;
mod download;
mod error;
mod glob;
mod headway;
mod limit;
mod list;
mod options;
mod path;
mod plan;
mod progress;
mod pull;
mod record;
mod refusal;
mod response;
mod source;
mod stream;
mod sums;
mod validators;
mod writer;

pub use authorize::{AuthorizationFuture, Authorize, Authorizer};
pub use connections::{ConnectionLimit, ConnectionPermit, DEFAULT_CONNECTIONS_PER_HOST};
pub use destination::Spool;
pub use digest::{BadDigest, Sha256};
pub use error::{Error, FileError, TransferFailure};
pub use glob::Pattern;
pub use headway::{Headway, RESUME_AT_ONCE, real_progress, resume_delay};
pub use limit::RateLimit;
pub use list::{BadLine, ListEntry, parse_list};
pub use options::{AttemptTimeout, MinProgress, Options};
pub use path::{UnsafeName, confine, confine_on_disk};
pub use plan::{CacheSlot, Placement, Plan, Planned, RefFile, STATE_DIR};
pub use progress::{Event, Progress};
pub use pull::{FileReport, Outcome, Pull, Summary};
pub use source::{HubEntry, HubSource, Item, Source, resolve};
pub use sums::Sha256Sums;
