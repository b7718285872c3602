//! Subcommands of the binary that are more than a call into the library: `switchyard node ...` and `switchyard demo`.

pub mod demo;
pub mod node;
