//! Issue 12: the control plane under hostile local input and faults. Every case here failed
//! on the main of 2026-12-04 and passes with its fix.

pub mod apply;
pub mod gates;
pub mod instance;
pub mod links;
pub mod listeners;
pub mod restart;
pub mod walks;
