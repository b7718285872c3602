//! Subcommands of the binary that are more than a call into the library: `switchyard node
//! ...` ([`node`], writing and reading the Redis registry) and `switchyard demo` ([`demo`]).
//! The top layer with `main.rs`: they may import anything below.

pub mod demo;
pub mod node;
