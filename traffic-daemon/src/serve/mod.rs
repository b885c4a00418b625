//! The daemon as a process: the event loop ([`runtime`]), the admin API server
//! ([`admin`]), the Prometheus listener ([`metrics`]) and systemd notifications ([`notify`]).

pub mod admin;
pub mod bans;
pub mod exposition;
pub mod fdbudget;
pub mod fleet;
pub mod instance;
pub mod links;
pub mod listener;
pub mod metrics;
pub mod notify;
pub mod probe;
pub mod runtime;
mod shared;
pub mod sockets;
pub mod walks;
pub mod watch;

pub use shared::{Listeners, Shared};
