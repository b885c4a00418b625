//! Throttle levels (to be written).
