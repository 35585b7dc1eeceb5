//! Running command-line tools — AI coding agents and anything else — and
//! telling why a run failed.

mod reset;
pub mod runner;

pub use reset::reset_at;
pub use runner::{Command, Exit, Input, Replay, Tail, Transcript};
