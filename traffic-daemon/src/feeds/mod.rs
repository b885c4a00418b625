//! Blocklist feeds (`[[feeds]]`): fetched from a file or an HTTP(S) URL, parsed
//! ([`parse`]), and swapped into the kernel's feed tries one generation at a time
//! ([`generation`]) by the feed task ([`task`]).

pub mod fetch;
pub mod generation;
pub mod parse;
pub mod render;
pub mod state;
pub mod task;

pub use state::{FeedStatus, FeedsReport, FeedsState};
