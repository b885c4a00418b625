//! Pure policy: no I/O, no clocks, no aya. Time and samples come in as arguments.

pub mod baseline;
pub mod breaker;
pub mod limits;
pub mod throttle;
pub mod upstream;
