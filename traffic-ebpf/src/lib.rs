//! The parts of the traffic eBPF programs that are the same on every target: header layouts,
//! the bounds-checked frame view, the header walk, checksums, GCRA arithmetic and its rescaling, the RST rewrite
//! and the verdict rules. None of
//! it touches a map or a helper, so it is unit-tested on the host
//! (`cargo test -p traffic-ebpf --lib`); the programs (`main.rs`, and the benchmark programs
//! in `bench/`) build on it for the bpf target.
//!
//! Also, for the bpf target only, what every eBPF object needs once: the panic handler and
//! the licence.
//!
//! Linting the programs needs the eBPF nightly (with its clippy component):
//! `cargo +nightly-2026-07-01 clippy -p traffic-ebpf -p traffic-ebpf-bench
//! --target bpfel-unknown-none -Z build-std=core`.
#![no_std]

pub mod csum;
pub mod flow;
pub mod frame;
pub mod gcra;
pub mod hdr;
pub mod parse;
pub mod rescale;
pub mod rst;
pub mod verdict;

/// BPF programs cannot unwind or report; the verifier rejects any path that reaches here,
/// so in practice this is never called.
#[cfg(all(target_arch = "bpf", not(test)))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// The licence of every program linked with this crate (GPL-compatible, so the programs may
/// call GPL-only helpers).
#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
#[used]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
