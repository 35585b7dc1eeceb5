//! One module per command.

pub mod demo;
pub mod get;
pub mod hub;
