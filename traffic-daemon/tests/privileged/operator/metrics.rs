//! Issue 13: metrics.
