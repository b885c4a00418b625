//! bpf-linker is an undeclared dependency of this crate: rebuild when it changes, and give it
//! the options the program needs (alu32 for 32-bit atomics and CAS) only for the bpf target.
use which::which;

fn main() {
    if let Ok(linker) = which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
    if std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("bpf") {
        println!("cargo::rustc-link-arg=--cpu-features=+alu32");
    }
}
