//! Issue 13: suggest.
