//! Issue 13: bans.
