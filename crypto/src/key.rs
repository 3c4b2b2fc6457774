//! The size of every key this crate holds.

/// Length of each master key.
pub const KEY_LEN: usize = 32;
