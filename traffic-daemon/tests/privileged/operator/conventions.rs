//! Issue 13: conventions.
