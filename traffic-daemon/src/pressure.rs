//! Pressure sampling (to be written).
