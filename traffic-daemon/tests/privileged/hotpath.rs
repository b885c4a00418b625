//! Issue 16: the hot path's second design.
