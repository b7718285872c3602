//! Small helpers of the binary that every layer may use; they import nothing from the rest of the crate.

pub mod timefmt;
