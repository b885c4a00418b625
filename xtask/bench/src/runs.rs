//! Frames and runs: test-run frames, the live-frames generator, the receiver's counters.

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, Ipv6Addr},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use aya::programs::{TestRun as _, TestRunAttrs, TestRunOptions, Xdp};
use traffic_ebpf_bench::{self as gen_abi, GenState};
use traffic_loadgen::{
    flood::{self, FloodNet, GEN_MAC, RCV_MAC, RCV_V4, RCV_V6},
    stats::BenchReport as Report,
};
use traffic_testkit::packet::Frame;

use crate::{FLOOD_PORT, GEN_BATCH, GEN_CHUNK, GEN_CPU, RCV_CPU, load::BenchObject};

/// An IPv4 UDP frame from `src` to the flood receiver, 60 bytes (minimum Ethernet frame).
pub(crate) fn udp4(src: Ipv4Addr) -> Vec<u8> {
    Frame::ipv4(src, RCV_V4)
        .macs(GEN_MAC, RCV_MAC)
        .udp(40_000, FLOOD_PORT)
        .pad_to(60)
        .build()
}

/// An IPv6 UDP frame from `src` to the flood receiver (62 bytes).
pub(crate) fn udp6(src: Ipv6Addr) -> Vec<u8> {
    Frame::ipv6(src, RCV_V6)
        .macs(GEN_MAC, RCV_MAC)
        .udp(40_000, FLOOD_PORT)
        .build()
}

/// One test run of `repeat` repeats; the action and the mean ns per repeat.
pub(crate) fn test_run(prog: &Xdp, frame: &[u8], repeat: u32) -> Result<(u32, f64)> {
    let mut out = vec![0u8; frame.len() + 256];
    let r = prog
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            repeat,
            ..TestRunOptions::new()
        })
        .context("BPF_PROG_TEST_RUN")?;
    Ok((r.return_value, r.duration.as_nanos() as f64))
}

/// The `struct xdp_md` a live-frames test run needs: frames "arrive" on `ifindex`, queue 0.
fn xdp_md(ifindex: u32, len: usize) -> Vec<u8> {
    let fields: [u32; 6] = [0, len as u32, 0, ifindex, 0, 0];
    fields.iter().flat_map(|f| f.to_ne_bytes()).collect()
}

/// What one generator run sent.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Sent {
    pub(crate) frames: u64,
    pub(crate) wall: Duration,
}

/// Run the generator in the sender namespace on [`GEN_CPU`] until `max_frames` are sent or
/// `max_time` has passed (checked every [`GEN_CHUNK`] frames).
pub(crate) fn generate(
    bench: &BenchObject,
    net: &FloodNet,
    frame: &[u8],
    max_frames: u64,
    max_time: Duration,
) -> Result<Sent> {
    let all: Vec<usize> = (0..traffic_testkit::netns::online_cpus()).collect();
    flood::set_affinity(0, &[GEN_CPU])?;
    let result = (|| {
        let _in = flood::enter(&net.sender)?;
        let ctx = xdp_md(flood::ifindex(&net.gen_if)?, frame.len());
        let prog = bench.program(gen_abi::GEN_PROGRAM)?;
        let start = Instant::now();
        let mut frames = 0u64;
        while frames < max_frames && start.elapsed() < max_time {
            let n = (max_frames - frames).min(GEN_CHUNK) as u32;
            prog.test_run(TestRunOptions {
                data_in: Some(frame),
                ctx_in: Some(&ctx),
                repeat: n,
                attrs: TestRunAttrs::new().xdp_live_frames(GEN_BATCH),
                ..TestRunOptions::new()
            })
            .context("live-frames test run of the generator")?;
            frames += u64::from(n);
        }
        Ok(Sent {
            frames,
            wall: start.elapsed(),
        })
    })();
    flood::set_affinity(0, &all)?;
    result
}

/// The receiver's NAPI thread pinned to its CPU; its CPU time and processed frames.
pub(crate) struct Receiver {
    napi_pid: u32,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct RxSnapshot {
    cpu_ns: u64,
    rx_packets: u64,
    pub(crate) udp: flood::UdpCounters,
}

impl Receiver {
    pub(crate) fn setup(net: &FloodNet, report: &mut Report) -> Result<Receiver> {
        let napi_pid = net
            .threaded_napi()
            .context("threaded NAPI on the receiver")?;
        if traffic_testkit::netns::online_cpus() > RCV_CPU {
            flood::set_affinity(napi_pid, &[RCV_CPU]).context("pin the NAPI thread")?;
            report.meta("napi_cpu", RCV_CPU);
        } else {
            report.note("one CPU only: generator and receiver share it; the CPU-time figures still hold, rates do not");
        }
        report.meta("generator_cpu", GEN_CPU);
        Ok(Receiver { napi_pid })
    }

    pub(crate) fn snapshot(&self, net: &FloodNet) -> Result<RxSnapshot> {
        let link = net.settle(Duration::from_millis(500))?;
        Ok(RxSnapshot {
            cpu_ns: flood::cpu_time_ns(self.napi_pid)?,
            rx_packets: link.rx_packets,
            udp: net.rcv_udp()?,
        })
    }
}

/// What the receiver did during one flood.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RxDelta {
    cpu_ns: u64,
    pub(crate) processed: u64,
    pub(crate) reached_udp: u64,
}

impl RxDelta {
    pub(crate) fn between(a: &RxSnapshot, b: &RxSnapshot) -> RxDelta {
        RxDelta {
            cpu_ns: b.cpu_ns - a.cpu_ns,
            processed: b.rx_packets - a.rx_packets,
            reached_udp: b.udp.since(&a.udp).reached(),
        }
    }

    pub(crate) fn ns_per_packet(&self) -> f64 {
        if self.processed == 0 {
            f64::NAN
        } else {
            self.cpu_ns as f64 / self.processed as f64
        }
    }
}

pub(crate) fn span_secs(s: &GenState) -> f64 {
    if s.first_ns == 0 || s.last_ns < s.first_ns {
        f64::NAN
    } else {
        (s.last_ns - s.first_ns) as f64 / 1e9
    }
}

/// Samples per figure name, in insertion order of first appearance.
#[derive(Default)]
pub(crate) struct Samples {
    pub(crate) order: Vec<String>,
    pub(crate) map: BTreeMap<String, Vec<f64>>,
}

impl Samples {
    pub(crate) fn push(&mut self, name: &str, rep: usize, value: f64) {
        if !self.map.contains_key(name) {
            self.order.push(name.to_owned());
        }
        let v = self.map.entry(name.to_owned()).or_default();
        if v.len() <= rep {
            v.resize(rep + 1, f64::NAN);
        }
        v[rep] = value;
    }

    pub(crate) fn take(&mut self, name: &str, reps: usize) -> Vec<f64> {
        let mut v = self.map.remove(name).unwrap_or_default();
        v.resize(reps, f64::NAN);
        v
    }
}
