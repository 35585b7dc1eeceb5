//! One module per command.

pub mod cooldown;
pub mod demo;
pub mod get;
pub mod hub;
pub mod login;
pub mod ops;
pub mod pick;
pub mod pull;
pub mod push;
pub mod request;
pub mod run;
pub mod serve;
pub mod worker;
