//! What tests and benchmarks ask of the loaded program beyond [`Dataplane`]: runs with
//! BPF_PROG_TEST_RUN, and the tracked-source bitmap's fill.
//!
//! [`Dataplane`]: super::Dataplane

use aya::programs::{SchedClassifier, Xdp};
use traffic_common::{EGRESS_PROGRAM_NAME, PROGRAM_NAME};

use super::{DataplaneError, Kernel};
use crate::dataplane::chain;

impl Kernel {
    /// Run the program once per `repeat` on `frame` with BPF_PROG_TEST_RUN; returns the XDP
    /// action and the mean duration per run in ns.
    pub fn test_run(&self, frame: &[u8], repeat: u32) -> Result<(u32, u64), DataplaneError> {
        self.test_run_out(frame, repeat).map(|(a, ns, _)| (a, ns))
    }

    /// Like [`Kernel::test_run`], plus the frame the program left (e.g. a RST it built).
    pub fn test_run_out(
        &self,
        frame: &[u8],
        repeat: u32,
    ) -> Result<(u32, u64, Vec<u8>), DataplaneError> {
        use aya::programs::{TestRun as _, TestRunOptions};
        let program: &Xdp = self
            .ebpf
            .program(PROGRAM_NAME)
            .ok_or_else(|| DataplaneError::Load("no program".into()))?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| DataplaneError::Load(chain(&e)))?;
        let mut out = vec![0u8; frame.len() + 256];
        let r = program
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                repeat,
                ..TestRunOptions::default()
            })
            .map_err(|e| DataplaneError::Other(format!("test run: {}", chain(&e))))?;
        out.truncate(r.data_size_out as usize);
        Ok((r.return_value, r.duration.as_nanos() as u64, out))
    }

    /// Run the TC egress program once on `frame`, as an skb leaving the node; returns the
    /// TC action.
    pub fn test_run_egress(&self, frame: &[u8]) -> Result<u32, DataplaneError> {
        use aya::programs::{TestRun as _, TestRunOptions};
        let program: &SchedClassifier = self
            .ebpf
            .program(EGRESS_PROGRAM_NAME)
            .ok_or_else(|| {
                DataplaneError::Load(format!("object has no program {EGRESS_PROGRAM_NAME}"))
            })?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| DataplaneError::Load(chain(&e)))?;
        let r = program
            .test_run(TestRunOptions {
                data_in: Some(frame),
                repeat: 1,
                ..TestRunOptions::default()
            })
            .map_err(|e| DataplaneError::Other(format!("egress test run: {}", chain(&e))))?;
        Ok(r.return_value)
    }

    /// Bits set in the tracked-source bitmap (the union of its generations), and its size.
    pub fn seen_bits(&self) -> (u64, u64) {
        self.seen.bits_set()
    }
}
