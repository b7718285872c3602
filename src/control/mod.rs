//! The control plane: the supervisor and the background work it owns.

pub mod admin;
pub mod health;
pub mod registry;
pub mod supervisor;
pub mod watch;
