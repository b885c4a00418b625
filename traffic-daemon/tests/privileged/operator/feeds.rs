//! Issue 13: feeds.
