//! The admin API as both sides see it: the `/v1` wire types and the one client.
//!
//! The server (`admin`) and every caller (`trafficctl`, the test kit, the load generator)
//! share these, so a JSON shape is defined once.

pub mod client;

pub use client::{Client, ClientError, Response};
use serde::{Deserialize, Serialize};

/// Body of every error response.
#[derive(Debug, Serialize, Deserialize)]
pub struct ApiError {
    pub error: String,
}

/// A one-line answer to an operation.
#[derive(Debug, Serialize, Deserialize)]
pub struct Message {
    pub message: String,
}
