//! The program lives in the `traffic` binary (`main.rs`). This empty library only exists so
//! that `traffic-daemon` can build-depend on this crate and be rebuilt when it changes.
#![no_std]
