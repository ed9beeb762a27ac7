//! The time and heap bounds every fuzz case is held to.

use std::time::{Duration, Instant};

use proptest::prelude::*;

/// How much a case may take for an input of some size.
pub struct Bounds {
    /// Heap held at once, per byte of input.
    pub bytes_per_input_byte: u64,
    /// Heap held at once, whatever the input.
    pub fixed_allowance: u64,
    /// Far beyond any case's time: reaching it means a loop that does not end.
    pub hang: Duration,
}

impl Bounds {
    /// Runs `case` on `input_bytes` bytes of input (`doing` names it in failures) and checks
    /// its outcome, its time, and the most heap it held at once on this thread.
    pub fn check(
        &self,
        doing: &str,
        input_bytes: usize,
        case: impl FnOnce() -> Result<(), TestCaseError>,
    ) -> Result<(), TestCaseError> {
        let started = Instant::now();
        let mut outcome = Ok(());
        let allocated = allocation_counter::measure(|| outcome = case());
        outcome?;
        let took = started.elapsed();
        prop_assert!(took < self.hang, "{} took {:?}", doing, took);
        let allowed = self.bytes_per_input_byte * input_bytes as u64 + self.fixed_allowance;
        prop_assert!(
            allocated.bytes_max <= allowed,
            "{} {} bytes held {} bytes at once (allowed {})",
            doing,
            input_bytes,
            allocated.bytes_max,
            allowed
        );
        Ok(())
    }
}
