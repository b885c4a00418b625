//! Exit codes shared by `trafficd` and `trafficctl`.

/// Success.
pub const OK: u8 = 0;
/// Runtime failure.
pub const FAILURE: u8 = 1;
/// Usage error or invalid configuration.
pub const USAGE: u8 = 2;
/// The daemon could not be reached (CLI only).
pub const UNREACHABLE: u8 = 3;
