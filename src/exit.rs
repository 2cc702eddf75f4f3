//! Exit statuses, as the command-line contract (and Docker before it) defines them.

/// Success, or the contained command's own status for `run`.
pub const OK: u8 = 0;
/// `doctor`: this host cannot run containers. `cache verify`: faults were found.
pub const CHECK_FAILED: u8 = 1;
/// lpmx-job itself failed: bad flags, bad config, a cache or registry error.
pub const OWN_FAILURE: u8 = 125;
/// The command was found but could not be executed.
pub const NOT_EXECUTABLE: u8 = 126;
/// The command was not found.
pub const NOT_FOUND: u8 = 127;
