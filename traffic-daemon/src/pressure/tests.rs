#![allow(clippy::unwrap_used, reason = "a panic is how a test fails")]
use std::sync::atomic::{AtomicU32, Ordering};

use super::{sampler::resolve, *};

// Copied from a 2-CPU VM (kernel 6.18) while it was compiling.
const PSI_CPU: &str = "some avg10=93.09 avg60=87.56 avg300=65.04 total=554150201\n\
                       full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n";
const PSI_IO: &str = "some avg10=0.56 avg60=0.78 avg300=0.62 total=10775585\n\
                      full avg10=0.00 avg60=0.03 avg300=0.05 total=5525848\n";
const STAT: &str = "cpu  265215 0 28178 296571 1178 0 375 3726 0 0\n\
                    cpu0 133901 0 13765 147283 716 0 86 1896 0 0\n\
                    cpu1 131314 0 14412 149288 462 0 288 1830 0 0\n\
                    intr 1281178 0 0 0 0 0 0 0 0 0\n\
                    ctxt 2475757\n\
                    btime 1795326720\n\
                    processes 60038\n\
                    procs_running 7\n\
                    procs_blocked 0\n\
                    softirq 936515 0 123415 94 232254 111181 0 670 137952 0 330949\n";
const MEMINFO: &str = "MemTotal:       24684084 kB\n\
                       MemFree:        12093636 kB\n\
                       MemAvailable:   24006956 kB\n\
                       Buffers:           88728 kB\n\
                       Cached:         11774748 kB\n\
                       SwapCached:            0 kB\n\
                       HugePages_Total:       0\n\
                       Hugepagesize:       2048 kB\n";
const DISKSTATS: &str = "   7       0 loop0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n\
    \x20254       0 vda 33419 7726 5545626 23598 41840 100179 49682408 429093 0 36408 466247 56325 32 25062040 13454 1957 101\n\
    \x20254       1 vda1 33000 7700 5545000 23500 41800 100100 49682000 429000 0 36300 466000 56300 32 25062000 13400 0 0\n\
    \x20253       0 zram0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n";

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

/// A temporary root directory, removed on drop.
struct Root(PathBuf);

impl Root {
    fn new() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "traffic-pressure-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(dir.join("pressure")).unwrap();
        Root(dir)
    }

    fn write(&self, rel: &str, text: &str) {
        std::fs::write(self.0.join(rel), text).unwrap();
    }

    fn remove(&self, rel: &str) {
        std::fs::remove_file(self.0.join(rel)).unwrap();
    }

    fn psi(&self, r: &str, avg10_pct: f64, some_us: u64, full: Option<(f64, u64)>) {
        let mut t = format!("some avg10={avg10_pct:.2} avg60=0.00 avg300=0.00 total={some_us}\n");
        if let Some((pct, us)) = full {
            t += &format!("full avg10={pct:.2} avg60=0.00 avg300=0.00 total={us}\n");
        }
        self.write(&format!("pressure/{r}"), &t);
    }

    /// `/proc/stat` with `busy` user ticks and `idle` idle ticks.
    fn stat(&self, busy: u64, idle: u64) {
        self.write(
            "stat",
            &format!("cpu  {busy} 0 0 {idle} 0 0 0 0 0 0\ncpu0 {busy} 0 0 {idle} 0 0 0 0 0 0\n"),
        );
    }

    fn meminfo(&self, total: u64, available: u64) {
        self.write(
            "meminfo",
            &format!("MemTotal: {total} kB\nMemFree: 1 kB\nMemAvailable: {available} kB\n"),
        );
    }

    /// Whole disk `sda` with a partition, and `nvme0n1`, with the given io_ticks.
    fn diskstats(&self, sda: u64, nvme: u64) {
        let line = |maj: u32, min: u32, name: &str, ticks: u64| {
            format!("{maj} {min} {name} 1 0 8 1 1 0 8 1 0 {ticks} 2 0 0 0 0 0 0\n")
        };
        self.write(
            "diskstats",
            &(line(8, 0, "sda", sda)
                + &line(8, 1, "sda1", sda)
                + &line(259, 0, "nvme0n1", nvme)
                + &line(7, 0, "loop0", 1_000_000)),
        );
    }

    fn sampler(&self, signal: PerResource<Signal>) -> Sampler {
        Sampler::new(self.0.clone(), signal)
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn all(s: Signal) -> PerResource<Signal> {
    PerResource::from_fn(|_| s)
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

// --- sources -------------------------------------------------------------------------

#[test]
fn real_proc_readings_are_fresh_ratios_after_one_interval() {
    let mut s = Sampler::new(DEFAULT_ROOT, all(Signal::Utilisation));
    let first = s.sample(secs(1.0)).unwrap();
    assert_eq!(
        first.get(Resource::Cpu).utilisation_ratio,
        None,
        "no delta yet"
    );
    let mem = first.get(Resource::Memory).utilisation_ratio.unwrap();
    assert!(mem > 0.0 && mem < 1.0, "memory {mem}");
    // The kept /proc/stat must give a fresh reading on every sample: wait (bounded) until
    // the kernel's CPU clock ticks, then the second sample has a delta.
    let ticks = |s: &str| parse_proc_stat_cpu(s).unwrap().total();
    let at_first = ticks(&std::fs::read_to_string("/proc/stat").unwrap());
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while ticks(&std::fs::read_to_string("/proc/stat").unwrap()) == at_first {
        assert!(
            std::time::Instant::now() < deadline,
            "/proc/stat never moved"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let second = s.sample(secs(2.0)).unwrap();
    let cpu = second.get(Resource::Cpu).utilisation_ratio.unwrap();
    assert!((0.0..=1.0).contains(&cpu), "cpu {cpu}");
    assert_eq!(second.get(Resource::Cpu).used, Signal::Utilisation);
}

#[test]
fn a_kept_file_reads_whole_from_its_start_every_time() {
    // A file longer than the first buffer, read twice through one kept source: both
    // readings are the whole text (the second buffer is sized by the first reading).
    let root = Root::new();
    let long: String = (0..3000).map(|i| format!("line {i}\n")).collect();
    let path = root.0.join("long");
    std::fs::write(&path, &long).unwrap();
    let mut src = super::sampler::Source::new(path.clone(), true);
    assert_eq!(src.read().unwrap().as_deref(), Some(long.as_str()));
    assert_eq!(src.read().unwrap().as_deref(), Some(long.as_str()));
    // Shorter now: the kept descriptor reads the new, shorter text, nothing stale after it.
    std::fs::write(&path, "short\n").unwrap();
    assert_eq!(src.read().unwrap().as_deref(), Some("short\n"));
}

#[test]
fn an_endless_or_unseekable_file_is_an_error_not_a_hang() {
    // /dev/zero never ends: refused at the cap, naming the file.
    let mut zero = super::sampler::Source::new("/dev/zero".into(), true);
    let e = zero.read().unwrap_err();
    assert_eq!(e.path(), std::path::Path::new("/dev/zero"));
    assert!(e.to_string().contains("larger than 4 MiB"), "{e}");
    // One byte over the cap, in a regular file; exactly the cap still reads.
    let root = Root::new();
    let big = root.0.join("big");
    std::fs::write(&big, vec![b'x'; super::sampler::MAX_FILE_BYTES + 1]).unwrap();
    assert!(
        super::sampler::Source::new(big.clone(), false)
            .read()
            .is_err()
    );
    std::fs::write(&big, vec![b'x'; super::sampler::MAX_FILE_BYTES]).unwrap();
    let whole = super::sampler::Source::new(big, false).read().unwrap();
    assert_eq!(whole.map(|t| t.len()), Some(super::sampler::MAX_FILE_BYTES));
    // A FIFO with no writer: a read at an offset fails at once (ESPIPE) instead of waiting.
    let fifo = root.0.join("fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(super::sampler::Source::new(fifo, false).read().is_err());
    });
    assert_eq!(rx.recv_timeout(Duration::from_secs(10)), Ok(true));
}

// --- parsers -------------------------------------------------------------------------

#[test]
fn psi_real_samples() {
    let cpu = parse_psi(PSI_CPU).unwrap();
    assert!(close(cpu.some.avg10_ratio, 0.9309));
    assert!(close(cpu.some.avg60_ratio, 0.8756));
    assert!(close(cpu.some.avg300_ratio, 0.6504));
    assert_eq!(cpu.some.total_us, 554_150_201);
    assert_eq!(cpu.full.map(|f| f.total_us), Some(0));

    let io = parse_psi(PSI_IO).unwrap();
    assert!(close(io.some.avg10_ratio, 0.0056));
    let full = io.full.unwrap();
    assert!(close(full.avg60_ratio, 0.0003));
    assert_eq!(full.total_us, 5_525_848);

    // Kernels before 5.13 have no `full` line for cpu; unknown keys and lines are
    // ignored.
    let old = parse_psi("some avg10=1.50 avg60=0.10 avg300=0.00 total=42 new=7\nnext 1\n").unwrap();
    assert!(close(old.some.avg10_ratio, 0.015));
    assert_eq!(old.full, None);
}

#[test]
fn psi_malformed() {
    let cases: &[(&str, &str)] = &[
        ("", "no `some` line"),
        ("garbage\n", "no `some` line"),
        (
            "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
            "no `some` line",
        ),
        (
            "some avg10=abc avg60=0.00 avg300=0.00 total=1\n",
            "line 1: avg10: `abc` is not a percentage",
        ),
        (
            "some avg10=-1 avg60=0.00 avg300=0.00 total=1\n",
            "line 1: avg10: `-1` is not a percentage",
        ),
        (
            "some avg10=1.00 avg60=0.00 avg300=0.00 total=-5\n",
            "line 1: total: `-5` is not a count of µs",
        ),
        (
            "some avg10=1.00 avg60=0.00 avg300=0.00\n",
            "line 1: `total=` is missing",
        ),
        (
            "some avg10=1.00 avg60=0.00 avg300=0.00 total=1\nfull avg10 avg60=0\n",
            "line 2: `avg10` is not key=value",
        ),
    ];
    for (text, want) in cases {
        let got = parse_psi(text).unwrap_err().to_string();
        assert_eq!(&got, want, "for {text:?}");
    }
}

#[test]
fn proc_stat_real_sample() {
    let cpu = parse_proc_stat_cpu(STAT).unwrap();
    assert_eq!(
        cpu,
        CpuTimes {
            user: 265_215,
            system: 28_178,
            idle: 296_571,
            iowait: 1178,
            softirq: 375,
            steal: 3726,
            ..CpuTimes::default()
        }
    );
    assert_eq!(cpu.total(), 265_215 + 28_178 + 296_571 + 1178 + 375 + 3726);
    assert_eq!(cpu.busy(), 265_215 + 28_178 + 375 + 3726);

    // Guest time is already in user/nice: not counted twice.
    let g = parse_proc_stat_cpu("cpu 10 5 0 85 0 0 0 0 10 5\n").unwrap();
    assert_eq!((g.total(), g.busy()), (100, 15));

    // Old kernels: four columns.
    let old = parse_proc_stat_cpu("cpu 1 2 3 4\n").unwrap();
    assert_eq!((old.total(), old.busy()), (10, 6));

    let later = CpuTimes {
        user: cpu.user + 30,
        idle: cpu.idle + 60,
        iowait: cpu.iowait + 10,
        ..cpu
    };
    assert!(close(later.utilisation_since(&cpu).unwrap(), 0.3));
    assert_eq!(cpu.utilisation_since(&cpu), None, "no tick passed");
    assert_eq!(
        cpu.utilisation_since(&later),
        None,
        "counters went backwards"
    );
}

#[test]
fn proc_stat_malformed() {
    let cases: &[(&str, &str)] = &[
        ("", "no aggregate `cpu` line"),
        ("cpu0 1 2 3 4\n", "no aggregate `cpu` line"),
        ("intr 1\ncpu 1 2 x 4\n", "line 2: `x` is not a tick count"),
        (
            "cpu 1 2 3\n",
            "line 1: `cpu` has 3 columns, expected at least 4",
        ),
    ];
    for (text, want) in cases {
        assert_eq!(
            &parse_proc_stat_cpu(text).unwrap_err().to_string(),
            want,
            "for {text:?}"
        );
    }
}

#[test]
fn meminfo_real_sample() {
    let m = parse_meminfo(MEMINFO).unwrap();
    assert_eq!(
        m,
        MemInfo {
            total_kib: 24_684_084,
            available_kib: 24_006_956
        }
    );
    assert!(close(m.utilisation(), 1.0 - 24_006_956.0 / 24_684_084.0));

    // Before 3.14: no MemAvailable, estimated from free + buffers + cached.
    let old = parse_meminfo("MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 50 kB\nCached: 250 kB\n")
        .unwrap();
    assert_eq!(old.available_kib, 400);
    assert!(close(old.utilisation(), 0.6));
}

#[test]
fn meminfo_malformed() {
    let cases: &[(&str, &str)] = &[
        ("MemFree: 1 kB\n", "no `MemTotal`"),
        ("MemTotal: 0 kB\nMemAvailable: 0 kB\n", "`MemTotal` is 0"),
        ("MemTotal: 10 kB\n", "neither `MemAvailable` nor `MemFree`"),
        (
            "MemTotal: 10 kB\nMemAvailable: lots kB\n",
            "line 2: MemAvailable: `lots kB` is not kB",
        ),
    ];
    for (text, want) in cases {
        assert_eq!(
            &parse_meminfo(text).unwrap_err().to_string(),
            want,
            "for {text:?}"
        );
    }
}

#[test]
fn diskstats_real_sample() {
    let d = parse_diskstats(DISKSTATS).unwrap();
    assert_eq!(d.len(), 4);
    assert_eq!(
        d[1],
        DiskStat {
            major: 254,
            minor: 0,
            name: "vda".into(),
            io_ticks_ms: 36_408
        }
    );
    let used: Vec<&str> = io_devices(&d).map(|d| d.name.as_str()).collect();
    assert_eq!(used, ["vda"]);

    // Pre-4.18 format: 11 statistics columns.
    let old = parse_diskstats("8 0 sda 1 2 3 4 5 6 7 8 9 10 11\n").unwrap();
    assert_eq!(old[0].io_ticks_ms, 10);
}

#[test]
fn diskstats_malformed() {
    let cases: &[(&str, &str)] = &[
        ("8 0 sda 1 2 3\n", "line 1: 6 columns, expected at least 13"),
        (
            "8 0 sda 1 2 3 4 5 6 7 8 9 x 11\n",
            "line 1: io_ticks: `x` is not a number",
        ),
        (
            "\n8 x sda 1 2 3 4 5 6 7 8 9 10 11\n",
            "line 2: minor: `x` is not a number",
        ),
    ];
    for (text, want) in cases {
        assert_eq!(
            &parse_diskstats(text).unwrap_err().to_string(),
            want,
            "for {text:?}"
        );
    }
}

#[test]
fn io_devices_are_whole_real_disks() {
    let names = [
        "sda",
        "sda1",
        "sda15",
        "sdaa",
        "nvme0n1",
        "nvme0n1p1",
        "nvme0n10",
        "mmcblk0",
        "mmcblk0p2",
        "mmcblk0boot0",
        "vda",
        "vda1",
        "xvda",
        "xvda1",
        "nbd0",
        "nbd0p1",
        "loop0",
        "loop0p1",
        "ram0",
        "zram0",
        "dm-0",
        "md127",
        "md127p1",
        "sr0",
        "fd0",
        "zd16",
        "mdisk",
    ];
    let stats: Vec<DiskStat> = names
        .iter()
        .map(|n| DiskStat {
            major: 1,
            minor: 0,
            name: (*n).to_owned(),
            io_ticks_ms: 0,
        })
        .collect();
    let used: Vec<&str> = io_devices(&stats).map(|d| d.name.as_str()).collect();
    // mmcblk0boot0 is a hardware boot area, named like a separate disk by the kernel.
    assert_eq!(
        used,
        [
            "sda",
            "sdaa",
            "nvme0n1",
            "nvme0n10",
            "mmcblk0",
            "mmcblk0boot0",
            "vda",
            "xvda",
            "nbd0",
            "mdisk"
        ]
    );
}

/// requested, psi, some Δ, full Δ, utilisation → used, ratio
type ResolveCase<'a> = (
    Signal,
    Option<&'a Psi>,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Signal,
    f64,
);

#[test]
fn resolve_table() {
    let line = |avg10_ratio: f64| PsiLine {
        avg10_ratio,
        avg60_ratio: 0.0,
        avg300_ratio: 0.0,
        total_us: 0,
    };
    let with_full = Psi {
        some: line(0.3),
        full: Some(line(0.1)),
    };
    let some_only = Psi {
        some: line(0.3),
        full: None,
    };
    use Signal::*;
    #[rustfmt::skip]
    let cases: &[ResolveCase] = &[
        // requested, psi, some Δ, full Δ, utilisation → used, ratio
        (Auto, Some(&with_full), None, None, Some(0.9), PsiSomeAvg10, 0.3),
        (Auto, Some(&with_full), Some(0.5), None, Some(0.9), PsiSomeDelta, 0.5),
        (Auto, Some(&with_full), Some(0.2), None, Some(0.9), PsiSomeAvg10, 0.3),
        (Auto, None, None, None, Some(0.9), Utilisation, 0.9),
        (Auto, None, None, None, None, Utilisation, 0.0),
        (PsiSomeAvg10, Some(&with_full), Some(0.5), None, None, PsiSomeAvg10, 0.3),
        (PsiSomeAvg10, None, None, None, Some(0.7), Utilisation, 0.7),
        (PsiFullAvg10, Some(&with_full), None, None, Some(0.7), PsiFullAvg10, 0.1),
        (PsiFullAvg10, Some(&some_only), None, None, Some(0.7), Utilisation, 0.7),
        (PsiSomeDelta, Some(&with_full), Some(0.05), None, None, PsiSomeDelta, 0.05),
        (PsiSomeDelta, Some(&with_full), None, None, None, PsiSomeAvg10, 0.3),
        (PsiSomeDelta, None, None, None, Some(0.4), Utilisation, 0.4),
        (PsiFullDelta, Some(&with_full), Some(0.5), Some(0.25), None, PsiFullDelta, 0.25),
        (PsiFullDelta, Some(&with_full), None, None, None, PsiFullAvg10, 0.1),
        (PsiFullDelta, Some(&some_only), Some(0.5), None, Some(0.6), Utilisation, 0.6),
        (Utilisation, Some(&with_full), Some(0.5), None, Some(0.6), Utilisation, 0.6),
        (Utilisation, None, None, None, Some(1.5), Utilisation, 1.0),
        (Off, Some(&with_full), Some(0.5), None, Some(0.6), Off, 0.0),
    ];
    for &(req, psi, sd, fd, util, used, ratio) in cases {
        let got = resolve(req, psi, sd, fd, util);
        assert_eq!(got.0, used, "{req:?} {psi:?} {sd:?} {fd:?} {util:?}");
        assert!(close(got.1, ratio), "{req:?}: {} != {ratio}", got.1);
    }
}

// --- sampler -------------------------------------------------------------------------

#[test]
fn psi_deltas_over_the_interval() {
    let root = Root::new();
    root.psi("cpu", 20.0, 1_000_000, Some((0.0, 0)));
    root.psi("memory", 0.0, 500, Some((0.0, 100)));
    root.psi("io", 1.0, 7_000, Some((0.5, 3_000)));
    let mut s = root.sampler(PerResource {
        cpu: Signal::Auto,
        memory: Signal::PsiFullDelta,
        io: Signal::PsiSomeDelta,
    });

    // First sample: no deltas, avg10 stands in.
    let first = s.sample(secs(10.0)).unwrap();
    assert_eq!(first.elapsed, None);
    let cpu = first.get(Resource::Cpu);
    assert_eq!(
        (cpu.used, cpu.psi_some_delta_ratio),
        (Signal::PsiSomeAvg10, None)
    );
    assert!(close(cpu.ratio, 0.2));
    assert_eq!(first.get(Resource::Memory).used, Signal::PsiFullAvg10);
    assert_eq!(first.get(Resource::Io).used, Signal::PsiSomeAvg10);
    assert!(close(first.get(Resource::Io).ratio, 0.01));
    // No utilisation files, none needed.
    assert_eq!(cpu.utilisation_ratio, None);

    // 2 s later: cpu stalled 1.2 s of 2 (0.6 > avg10 0.2), memory full 0.5 s, io 0.1 s.
    root.psi("cpu", 20.0, 2_200_000, Some((0.0, 0)));
    root.psi("memory", 0.0, 600_500, Some((0.0, 500_100)));
    root.psi("io", 1.0, 207_000, Some((0.5, 3_000)));
    let second = s.sample(secs(12.0)).unwrap();
    assert_eq!(second.elapsed, Some(secs(2.0)));
    let cpu = second.get(Resource::Cpu);
    assert_eq!(cpu.used, Signal::PsiSomeDelta);
    assert!(close(cpu.ratio, 0.6));
    assert!(close(cpu.psi_full_delta_ratio.unwrap(), 0.0));
    let mem = second.get(Resource::Memory);
    assert_eq!(mem.used, Signal::PsiFullDelta);
    assert!(close(mem.ratio, 0.25));
    assert!(close(mem.psi_some_delta_ratio.unwrap(), 0.3));
    let io = second.get(Resource::Io);
    assert_eq!(io.used, Signal::PsiSomeDelta);
    assert!(close(io.ratio, 0.1));

    let ratios = second.ratios();
    assert_eq!(ratios.len(), 3);
    assert_eq!(ratios[0].0, Resource::Cpu);
    assert!(close(ratios[0].1, 0.6));

    // A counter reset (or wrap) reads as no stall, not as a huge one.
    root.psi("cpu", 20.0, 5, Some((0.0, 0)));
    let third = s.sample(secs(13.0)).unwrap();
    assert!(close(
        third.get(Resource::Cpu).psi_some_delta_ratio.unwrap(),
        0.0
    ));
    assert_eq!(third.get(Resource::Cpu).used, Signal::PsiSomeAvg10);
}

#[test]
fn without_psi_utilisation_is_used() {
    let root = Root::new();
    root.stat(1_000, 9_000);
    root.meminfo(1_000_000, 250_000);
    root.diskstats(5_000, 100);
    let mut s = root.sampler(all(Signal::Auto));

    let first = s.sample(secs(1.0)).unwrap();
    for r in Resource::ALL {
        assert_eq!(first.get(r).used, Signal::Utilisation, "{r}");
        assert_eq!(first.get(r).psi, None);
    }
    // No interval yet for cpu and io: they read 0 until the next sample.
    assert_eq!(first.get(Resource::Cpu).utilisation_ratio, None);
    assert_eq!(first.get(Resource::Cpu).ratio, 0.0);
    assert_eq!(first.get(Resource::Io).utilisation_ratio, None);
    assert!(close(first.get(Resource::Memory).ratio, 0.75));

    // 500 ms later: 40 of 100 ticks busy; sda busy 250 ms (its partition and loop0 are
    // ignored even though loop0 would read 100 %), nvme 100 ms.
    root.stat(1_040, 9_060);
    root.meminfo(1_000_000, 100_000);
    root.diskstats(5_250, 200);
    root.write(
        "diskstats",
        &(std::fs::read_to_string(root.0.join("diskstats"))
            .unwrap()
            .replace(
                "loop0 1 0 8 1 1 0 8 1 0 1000000",
                "loop0 1 0 8 1 1 0 8 1 0 1000500",
            )),
    );
    let second = s.sample(secs(1.5)).unwrap();
    assert!(close(second.get(Resource::Cpu).ratio, 0.4));
    assert!(close(second.get(Resource::Memory).ratio, 0.9));
    assert!(close(second.get(Resource::Io).ratio, 0.5));
    assert!(close(
        second.get(Resource::Io).utilisation_ratio.unwrap(),
        0.5
    ));

    // A disk busier than the wall clock (rounding at the boundaries) reads as 1.
    root.diskstats(6_000, 200);
    assert!(close(
        s.sample(secs(2.0)).unwrap().get(Resource::Io).ratio,
        1.0
    ));
}

#[test]
fn psi_for_some_resources_only() {
    // E.g. psi=0 for io only, or a test that writes just one PSI file.
    let root = Root::new();
    root.psi("cpu", 75.0, 0, None);
    root.meminfo(100, 40);
    root.diskstats(0, 0);
    let mut s = root.sampler(all(Signal::Auto));
    let x = s.sample(secs(1.0)).unwrap();
    assert_eq!(x.get(Resource::Cpu).used, Signal::PsiSomeAvg10);
    assert!(close(x.get(Resource::Cpu).ratio, 0.75));
    assert_eq!(x.get(Resource::Memory).used, Signal::Utilisation);
    assert!(close(x.get(Resource::Memory).ratio, 0.6));
    assert_eq!(x.get(Resource::Io).used, Signal::Utilisation);
}

#[test]
fn explicit_psi_signal_falls_back_to_utilisation() {
    let root = Root::new();
    root.psi("cpu", 50.0, 0, None);
    root.stat(0, 0);
    root.meminfo(100, 10);
    root.diskstats(0, 0);
    let mut s = root.sampler(PerResource {
        cpu: Signal::PsiFullAvg10,    // no `full` line
        memory: Signal::PsiSomeAvg10, // no file
        io: Signal::Utilisation,
    });
    s.sample(secs(1.0)).unwrap();
    root.stat(10, 10);
    let x = s.sample(secs(2.0)).unwrap();
    let cpu = x.get(Resource::Cpu);
    assert_eq!(
        (cpu.requested, cpu.used),
        (Signal::PsiFullAvg10, Signal::Utilisation)
    );
    assert!(close(cpu.ratio, 0.5));
    assert_eq!(x.get(Resource::Memory).used, Signal::Utilisation);
    assert!(close(x.get(Resource::Memory).ratio, 0.9));
}

#[test]
fn off_resources_are_not_read() {
    let root = Root::new();
    root.psi("cpu", 10.0, 0, None);
    root.write("pressure/io", "not psi at all\n");
    root.write("diskstats", "broken\n");
    let mut s = root.sampler(PerResource {
        cpu: Signal::Auto,
        memory: Signal::Off,
        io: Signal::Off,
    });
    let x = s.sample(secs(1.0)).unwrap();
    assert_eq!(x.get(Resource::Io).used, Signal::Off);
    assert_eq!(x.get(Resource::Memory).ratio, 0.0);
    let ratios = x.ratios();
    assert_eq!(ratios.len(), 1);
    assert_eq!(ratios[0].0, Resource::Cpu);
}

#[test]
fn errors_name_the_file() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "pressure/cpu",
            "some avg10=x avg60=0 avg300=0 total=0\n",
            "pressure/cpu: line 1: avg10: `x` is not a percentage",
        ),
        (
            "pressure/memory",
            "nothing\n",
            "pressure/memory: no `some` line",
        ),
        ("pressure/io", "", "pressure/io: no `some` line"),
        (
            "stat",
            "cpu 1 2\n",
            "stat: line 1: `cpu` has 2 columns, expected at least 4",
        ),
        (
            "meminfo",
            "MemTotal: many kB\n",
            "meminfo: line 1: MemTotal: `many kB` is not kB",
        ),
        (
            "diskstats",
            "8 0 sda\n",
            "diskstats: line 1: 3 columns, expected at least 13",
        ),
    ];
    for (file, text, want) in cases {
        let root = Root::new();
        root.psi("cpu", 0.0, 0, None);
        root.psi("memory", 0.0, 0, None);
        root.psi("io", 0.0, 0, None);
        root.stat(0, 0);
        root.meminfo(10, 10);
        root.diskstats(0, 0);
        root.write(file, text);
        let e = root
            .sampler(all(Signal::Auto))
            .sample(secs(1.0))
            .unwrap_err();
        assert_eq!(e.path(), root.0.join(file));
        let msg = e.to_string();
        assert!(
            msg.ends_with(want),
            "{file}: `{msg}` does not end with `{want}`"
        );
        assert!(msg.starts_with(&root.0.display().to_string()), "{msg}");
    }
}

#[test]
fn missing_file_is_an_error_only_when_needed() {
    let root = Root::new();
    root.psi("cpu", 0.0, 0, None);
    root.psi("memory", 0.0, 0, None);
    root.psi("io", 0.0, 0, None);
    // PSI everywhere: no utilisation file needed.
    let mut s = root.sampler(all(Signal::Auto));
    s.sample(secs(1.0)).unwrap();

    // Utilisation asked for: the missing file is named.
    let mut s = root.sampler(PerResource {
        cpu: Signal::Auto,
        memory: Signal::Utilisation,
        io: Signal::Auto,
    });
    let e = s.sample(secs(1.0)).unwrap_err();
    assert!(matches!(e, SampleError::Read { .. }));
    assert_eq!(e.path(), root.0.join("meminfo"));

    // PSI gone: stat is needed for cpu.
    root.remove("pressure/cpu");
    let e = root
        .sampler(all(Signal::Auto))
        .sample(secs(1.0))
        .unwrap_err();
    assert_eq!(e.path(), root.0.join("stat"));
    assert!(e.to_string().contains("utilisation needs it"), "{e}");
}

#[test]
fn failed_sample_keeps_the_baseline() {
    let root = Root::new();
    root.psi("cpu", 0.0, 0, None);
    root.stat(0, 0);
    root.diskstats(0, 0);
    let mut s = root.sampler(PerResource {
        cpu: Signal::PsiSomeDelta,
        memory: Signal::Off,
        io: Signal::Utilisation,
    });
    s.sample(secs(1.0)).unwrap();
    root.write("pressure/cpu", "torn write\n");
    assert!(s.sample(secs(2.0)).is_err());
    root.psi("cpu", 0.0, 1_500_000, None);
    root.diskstats(1_000, 0);
    let x = s.sample(secs(3.0)).unwrap();
    assert_eq!(x.elapsed, Some(secs(2.0)));
    assert!(close(x.get(Resource::Cpu).ratio, 0.75));
    assert!(close(x.get(Resource::Io).ratio, 0.5));
}

#[test]
fn same_instant_gives_no_deltas() {
    let root = Root::new();
    root.psi("cpu", 30.0, 0, None);
    let mut s = root.sampler(PerResource {
        cpu: Signal::PsiSomeDelta,
        memory: Signal::Off,
        io: Signal::Off,
    });
    s.sample(secs(5.0)).unwrap();
    root.psi("cpu", 30.0, 1_000_000, None);
    let x = s.sample(secs(5.0)).unwrap();
    assert_eq!(x.elapsed, None);
    assert_eq!(x.get(Resource::Cpu).used, Signal::PsiSomeAvg10);
}

/// The real /proc parses, and every reading is a ratio.
#[test]
fn real_proc() {
    let mut s = Sampler::from_settings(&PressureSettings::default());
    s.sample(Duration::from_secs(1)).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let x = s.sample(Duration::from_millis(1050)).unwrap();
    for (r, reading) in x.readings.iter() {
        assert!((0.0..=1.0).contains(&reading.ratio), "{r}: {reading:?}");
        assert!(reading.used != Signal::Auto);
    }
    assert!(x.get(Resource::Memory).utilisation_ratio.is_some());
}

#[test]
fn settings() {
    assert_eq!(PressureSettings::default().validate(), Ok(()));
    let bad = PressureSettings {
        root: PathBuf::new(),
        interval: Duration::from_millis(50),
        signal: PerResource {
            cpu: Signal::PsiFullDelta,
            ..PerResource::default()
        },
    };
    let keys: Vec<String> = bad
        .validate()
        .unwrap_err()
        .into_iter()
        .map(|e| e.key)
        .collect();
    assert_eq!(
        keys,
        ["pressure.interval", "pressure.root", "pressure.signal.cpu"]
    );
    let slow = PressureSettings {
        interval: Duration::from_secs(11),
        ..PressureSettings::default()
    };
    assert_eq!(
        slow.validate().unwrap_err()[0].to_string(),
        "pressure.interval: must be between 100ms and 10s"
    );
}

#[test]
fn signal_names() {
    let s: PerResource<Signal> =
        toml::from_str("cpu = \"psi_some_delta\"\nmemory = \"utilization\"\nio = \"off\"\n")
            .unwrap();
    assert_eq!(
        s,
        PerResource {
            cpu: Signal::PsiSomeDelta,
            memory: Signal::Utilisation,
            io: Signal::Off
        }
    );
    for sig in [
        Signal::Auto,
        Signal::PsiSomeAvg10,
        Signal::PsiFullAvg10,
        Signal::PsiSomeDelta,
        Signal::PsiFullDelta,
        Signal::Utilisation,
        Signal::Off,
    ] {
        let json = serde_json::to_string(&sig).unwrap();
        assert_eq!(json, format!("\"{}\"", sig.as_str()));
    }
    let e =
        toml::from_str::<PerResource<Signal>>("cpu = \"psi\"\nmemory = \"auto\"\nio = \"auto\"\n")
            .unwrap_err();
    assert!(e.to_string().contains("unknown variant `psi`"), "{e}");
    assert_eq!(Resource::Io.psi_path(), Path::new("pressure/io"));
}
