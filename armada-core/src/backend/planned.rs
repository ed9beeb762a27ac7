//! [`PlannedJobs`]: the jobs a queue is given, as a count and a way to build each one.

use std::fmt;
use std::sync::Arc;

use crate::wire::JobMessage;

/// Jobs handed to a queue, built one by one when the queue needs them rather than all at
/// once: a run of a hundred million jobs without CSV rows costs a count and a closure until
/// its jobs are taken. A broker's publisher streams them out; the in-memory queue keeps the
/// closure and builds each message as an agent takes it, so neither holds the whole run.
#[derive(Clone)]
pub struct PlannedJobs {
    count: u64,
    build: Arc<dyn Fn(u64) -> JobMessage + Send + Sync>,
}

impl PlannedJobs {
    /// `count` jobs, the `n`th built by `build(n)` (`n` in `0..count`). `build` is called
    /// once per delivery of a fresh job, possibly from several threads, so it should be cheap
    /// and must give the same message for the same `n`.
    pub fn new(count: u64, build: impl Fn(u64) -> JobMessage + Send + Sync + 'static) -> Self {
        Self {
            count,
            build: Arc::new(build),
        }
    }

    /// How many jobs there are.
    pub fn len(&self) -> u64 {
        self.count
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Builds the `n`th job.
    ///
    /// # Panics
    ///
    /// When `n` is not below [`PlannedJobs::len`].
    pub fn build(&self, n: u64) -> JobMessage {
        assert!(n < self.count, "job {n} of {} planned", self.count);
        (self.build)(n)
    }

    /// Builds every job in order.
    pub fn iter(&self) -> impl Iterator<Item = JobMessage> + Send + '_ {
        (0..self.count).map(|n| (self.build)(n))
    }
}

impl fmt::Debug for PlannedJobs {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("PlannedJobs")
            .field("count", &self.count)
            .finish_non_exhaustive()
    }
}

/// Messages built beforehand, as tests and small tools have them.
impl From<Vec<JobMessage>> for PlannedJobs {
    fn from(messages: Vec<JobMessage>) -> Self {
        let messages = Arc::new(messages);
        Self::new(messages.len() as u64, move |n| messages[n as usize].clone())
    }
}
