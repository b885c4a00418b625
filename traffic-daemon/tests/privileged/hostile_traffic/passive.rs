//! Cases: see the table in main.rs.
