//! One module per command.

pub mod cooldown;
pub mod demo;
pub mod get;
pub mod hub;
pub mod pick;
pub mod pull;
