//! Supervising a child process, the one way backstop does it for `backstop
//! run`'s agents and for fan-out handlers alike.
//!
//! - [`Command`] runs a program in its own process group: its output
//!   streamed through unchanged (or [held](Command::hold_stdout) for the
//!   caller to write or drop) and the [`Tail`] of each stream kept, an idle
//!   watchdog, a time limit, standard input [replayed](Replay) to every
//!   attempt, and a clean stop — SIGTERM (or the cancel signal), then
//!   SIGKILL after a grace — that reaches everything it started.
//! - [`owner`]: a command dies with the process that started it
//!   (`PR_SET_PDEATHSIG` on Linux), and a marked command's leftovers are
//!   found and stopped by its owner's next process — a fan-out delivery
//!   never runs twice at once.
//!
//! This is the only crate of the workspace with `unsafe` code: the
//! `pre_exec` hook that sets the parent-death signal.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! use std::time::Duration;
//! use backstop_process::{Command, Exit};
//! use tokio_util::sync::CancellationToken;
//!
//! let run = Command::new("sh", ["-c", "echo done; exit 3"])
//!     .echo(false)
//!     .timeout(Some(Duration::from_secs(60)))
//!     .run(&CancellationToken::new())
//!     .await?;
//! assert_eq!(run.exit, Exit::Code(3));
//! assert_eq!(run.stdout.bytes(), b"done\n");
//! # Ok(()) }
//! ```

#![deny(unsafe_code)]

mod command;
mod input;
mod output;
pub mod owner;

pub use command::{Command, Exit, KILL_GRACE, StopSignal, Transcript};
pub use input::{Input, MAX_REPLAY, Replay};
pub use output::{Held, MAX_HELD, TAIL, Tail};
pub use owner::Owner;
