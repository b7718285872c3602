//! The control plane: the supervisor and the background work it owns.

pub mod admin;
pub mod files;
pub mod health;
pub mod listeners;
pub mod registry;
pub mod reload;
pub mod supervisor;
