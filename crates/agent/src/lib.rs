//! Running command-line tools — AI coding agents and anything else — and
//! telling why a run failed.
//!
//! - [`Command`] ([`backstop_process`], re-exported) runs a tool with its
//!   output streamed through unchanged and kept for reading, a watchdog for
//!   silence, standard input replayed to every attempt, and a clean stop of
//!   its whole process group.
//! - [`classify`] reads a finished run ([`Transcript`]) the way each tool
//!   reports failures ([`Agent`]): structured output first, then the tool's
//!   own error lines, never the model's text.
//! - [`reset_at`] reads when a tool says its limit resets.
//! - [`fallback`]: a command run with the first available model of a
//!   cooldown ledger, falling back to the next when one cannot serve.
//! - [`template`]: the command run for each model, its placeholders
//!   checked and filled, from the command line or a models file.

#![forbid(unsafe_code)]

mod classify;
pub mod fallback;
mod reset;
pub mod template;

pub use backstop_process::{Command, Exit, Held, Input, MAX_HELD, Replay, Tail, Transcript};
pub use classify::{Agent, AgentFailure, Diagnosis, Kind, UnknownAgent, classify};
pub use reset::reset_at;
