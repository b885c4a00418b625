//! Issue 17: the data plane under hostile traffic. Every case here failed on the main of
//! 2026-12-04 and passes with its fix; each file covers one part of the program.

pub mod frames;
pub mod passive;
pub mod rescale;
pub mod table;
