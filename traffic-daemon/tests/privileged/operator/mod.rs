//! Issue 13: what operators reach for on a bad day — watch, bans, feeds, suggested limits,
//! metrics and the dashboard, CLI conventions — driven through the real daemon.

pub mod bans;
pub mod conventions;
pub mod feeds;
pub mod metrics;
pub mod suggest;
pub mod watch;
