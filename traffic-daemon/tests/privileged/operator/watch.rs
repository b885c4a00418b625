//! Issue 13: watch.
