//! CPU load for the demo's pressure chapter.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use traffic_testkit::netns::{online_cpus, pin_to_cpu};

use super::interrupted;

/// Busy threads raising the node's CPU pressure: two per CPU, both runnable for the same
/// first `duty` of every 100 ms period, so one of them waits for the CPU about `duty` of
/// the time — what PSI's `some` counts, and what trafficd reads for CPU by default. Niced
/// to 19: the demo's own threads and trafficd still get the CPU when they want it. Bounded
/// by `max` and stopped on drop.
pub(super) struct Busy {
    stop: Arc<AtomicBool>,
    duty: Arc<AtomicU64>,
    threads: Vec<JoinHandle<()>>,
}

impl Busy {
    pub(super) fn start(max: Duration) -> Self {
        const PERIOD: Duration = Duration::from_millis(100);
        let stop = Arc::new(AtomicBool::new(false));
        let duty = Arc::new(AtomicU64::new(0));
        let epoch = Instant::now();
        let end = epoch + max;
        let mut threads = Vec::new();
        for cpu in 0..online_cpus() {
            for _ in 0..2 {
                let (stop, duty) = (stop.clone(), duty.clone());
                threads.push(std::thread::spawn(move || {
                    pin_to_cpu(cpu);
                    #[allow(unsafe_code, reason = "a libc call; its SAFETY comment follows")]
                    // SAFETY: setpriority on the calling thread (its tid) only.
                    unsafe {
                        libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 19);
                    }
                    let mut x = 0u64;
                    while !stop.load(Ordering::Relaxed) && Instant::now() < end && !interrupted() {
                        let k = epoch.elapsed().as_micros() / PERIOD.as_micros();
                        let start = epoch + PERIOD * k as u32;
                        let on =
                            start + PERIOD.mul_f64(duty.load(Ordering::Relaxed) as f64 / 1000.0);
                        while Instant::now() < on {
                            for _ in 0..1000 {
                                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                            }
                        }
                        if let Some(rest) = (start + PERIOD).checked_duration_since(Instant::now())
                        {
                            std::thread::sleep(rest);
                        }
                    }
                    std::hint::black_box(x);
                }));
            }
        }
        Self {
            stop,
            duty,
            threads,
        }
    }

    /// Share of each period the threads run, in per mille.
    pub(super) fn set_duty(&self, per_mille: u64) {
        self.duty.store(per_mille.min(1000), Ordering::Relaxed);
    }

    pub(super) fn finished(&self) -> bool {
        self.threads.iter().all(JoinHandle::is_finished)
    }

    pub(super) fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.stop();
    }
}
