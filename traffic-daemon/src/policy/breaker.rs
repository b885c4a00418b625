//! Circuit breakers (to be written).
