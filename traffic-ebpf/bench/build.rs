//! As `traffic-ebpf/build.rs`: rebuild when bpf-linker changes, and link with alu32 for the
//! bpf target, so the benchmark programs are built exactly like the program they measure.
use which::which;

fn main() {
    if let Ok(linker) = which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
    if std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("bpf") {
        println!("cargo::rustc-link-arg=--cpu-features=+alu32");
    }
}
