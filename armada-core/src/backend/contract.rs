//! The contract of each backend seam, as traits a backend implements: [`ConfigStoreBackend`]
//! (agent configs and run state) and [`JobQueueBackend`] with its [`QueueConsumer`] and
//! [`QueueDelivery`] (where jobs wait). [`ConfigStore`](super::ConfigStore) and
//! [`JobQueue`](super::JobQueue) pick one of the compiled-in backends by URL and forward to
//! it; a new backend implements these traits, gets a variant and a scheme in `connect`, and
//! passes the conformance suites (`armada_core::backend::conformance`, feature
//! `conformance`), which hold every promise written here.
//!
//! The futures are `Send`: agents run them on a multi-threaded runtime.

use std::future::Future;
use std::time::Duration;

use super::{DeadLetter, FinishedRun, PlannedJobs, Recorded, RunProgress, RunRecord, RunStatus};
use crate::wire::{AgentConfigRecord, JobMessage, JobResult};
use crate::{AgentIndex, JobIndex, Result, RunId};

/// Agent configs and run state: counters, status, cancel flag and terminal job results, shared
/// by every process of a run. Every operation on a run that does not exist (or no longer) is
/// [`Error::RunNotFound`](crate::Error::RunNotFound).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a config store backend",
    note = "a config store implements `armada_core::backend::ConfigStoreBackend`, and checks \
            itself with `armada_core::backend::conformance::config_store`"
)]
pub trait ConfigStoreBackend: std::fmt::Debug + Send + Sync + 'static {
    /// The same store with connections of its own, opened on the calling runtime: its state
    /// is shared, its I/O driven by the threads that use it (an agent on its script threads),
    /// not by the runtime that connected first.
    fn connect_here(&self) -> impl Future<Output = Result<Self>> + Send
    where
        Self: Sized;

    /// Creates a run with zeroed counters, status running. An id that holds another run is
    /// [`Error::RunExists`](crate::Error::RunExists); the same record again (a retry after a
    /// lost reply) succeeds and leaves the run as it is.
    fn create_run(&self, record: RunRecord) -> impl Future<Output = Result<()>> + Send;

    /// Stores every agent's config for its run.
    fn put_agent_configs(
        &self,
        run: &RunId,
        configs: Vec<AgentConfigRecord>,
    ) -> impl Future<Output = Result<()>> + Send;

    /// One agent's config; an index without one is
    /// [`Error::AgentConfigMissing`](crate::Error::AgentConfigMissing).
    fn agent_config(
        &self,
        run: &RunId,
        index: AgentIndex,
    ) -> impl Future<Output = Result<AgentConfigRecord>> + Send;

    /// The run's record as written at publish time: its planned agents and jobs.
    fn run_record(&self, run: &RunId) -> impl Future<Output = Result<RunRecord>> + Send;

    /// Records a job's terminal result once, counting it by status, atomically with the
    /// check. When it is the last result a running run needed, the run is marked completed in
    /// the same step and [`Recorded::LastOfRun`] says so, to exactly one caller across every
    /// process.
    fn record_result(
        &self,
        run: &RunId,
        result: JobResult,
    ) -> impl Future<Output = Result<Recorded>> + Send;

    /// Whether a job already has a terminal result.
    fn is_recorded(
        &self,
        run: &RunId,
        index: JobIndex,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Counts a scheduled retry.
    fn record_retry(&self, run: &RunId) -> impl Future<Output = Result<()>> + Send;

    /// Counts one more redelivery of a job and returns how many it has had, from 1.
    fn count_redelivery(
        &self,
        run: &RunId,
        index: JobIndex,
    ) -> impl Future<Output = Result<u32>> + Send;

    /// The run's counters and status.
    fn progress(&self, run: &RunId) -> impl Future<Output = Result<RunProgress>> + Send;

    /// Results in the order they were recorded, after the first `cursor` ones; when there are
    /// none yet, waits up to `wait` for one.
    fn results_after(
        &self,
        run: &RunId,
        cursor: u64,
        wait: Duration,
    ) -> impl Future<Output = Result<Vec<JobResult>>> + Send;

    /// Says that the run's only reader has taken the first `cursor` results, so that a store
    /// nothing else can read may let them go: a run of many jobs then costs no memory per
    /// result taken. A shared store keeps them (the default), for `attach` and `results`.
    /// Later reads from a cursor below it get what is kept.
    fn release_results(&self, run: &RunId, cursor: u64) -> impl Future<Output = Result<()>> + Send {
        let _ = (run, cursor);
        async { Ok(()) }
    }

    /// Moves a running run to `status`; a run that is no longer running keeps its status.
    fn set_status(&self, run: &RunId, status: RunStatus)
    -> impl Future<Output = Result<()>> + Send;

    /// Stores the run's finished record unless it has one, drops what only a running run
    /// needs (agent configs, redelivery counts), and returns the stored record and whether it
    /// is this one. Of concurrent callers, exactly one is told it wrote the record.
    fn mark_finished(
        &self,
        run: &RunId,
        finished: FinishedRun,
    ) -> impl Future<Output = Result<(FinishedRun, bool)>> + Send;

    /// The run's finished record, once it ended; `None` for a running run.
    fn finished(&self, run: &RunId) -> impl Future<Output = Result<Option<FinishedRun>>> + Send;

    /// Removes everything of the run, its finished record and results too.
    fn remove_run(&self, run: &RunId) -> impl Future<Output = Result<()>> + Send;
}

/// A queue per run with prefetch, manual settlement, redelivery of what a consumer left
/// unsettled, delayed retry and dead letters.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a job queue backend",
    note = "a job queue implements `armada_core::backend::JobQueueBackend`, and checks itself \
            with `armada_core::backend::conformance::job_queue`"
)]
pub trait JobQueueBackend: std::fmt::Debug + Send + Sync + 'static {
    /// The consumer of one run's queue.
    type Consumer: QueueConsumer;

    /// Publishes jobs to the run's queue, declaring it if needed; returns once all are held
    /// (a broker confirmed them, or the in-process queue keeps `jobs` to build each one when
    /// it is taken). Never-tried jobs are delivered in the order given.
    fn publish(&self, run: &RunId, jobs: PlannedJobs) -> impl Future<Output = Result<()>> + Send;

    /// Starts consuming the run's queue with at most `prefetch` unsettled deliveries.
    fn consume(
        &self,
        run: &RunId,
        prefetch: u16,
    ) -> impl Future<Output = Result<Self::Consumer>> + Send;

    /// Deletes the run's queues: waiting jobs are dropped and consumers see the end.
    fn delete(&self, run: &RunId) -> impl Future<Output = Result<()>> + Send;

    /// Messages dead-lettered in the run so far.
    fn dead_letters(&self, run: &RunId) -> impl Future<Output = Result<Vec<DeadLetter>>> + Send;

    /// Closes connections, so that none is cut mid-frame when the runtime stops; the next
    /// operation opens them again.
    fn close(&self) -> impl Future<Output = ()> + Send;
}

/// A consumer of one run's queue.
pub trait QueueConsumer: std::fmt::Debug + Send + 'static {
    /// One job handed to this consumer.
    type Delivery: QueueDelivery;

    /// The next delivery; `None` once the run's queue was deleted.
    fn next(&mut self) -> impl Future<Output = Result<Option<Self::Delivery>>> + Send;

    /// Stops receiving deliveries, while those already received stay valid to settle: a job
    /// settled afterwards frees no prefetch slot for another job to sit in this consumer.
    fn stop_taking(&mut self) -> impl Future<Output = ()> + Send;

    /// Stops consuming: what the consumer still holds unsettled goes back to the queue.
    fn close(self) -> impl Future<Output = ()> + Send;
}

/// One delivered job. Dropped unsettled, it goes back to the queue marked redelivered, as a
/// broker does when a consumer's connection dies.
pub trait QueueDelivery: std::fmt::Debug + Send + 'static {
    /// The delivered job message, as published (its `attempt` says which attempt this is).
    fn message(&self) -> &JobMessage;

    /// How many times this message was delivered before without being settled, as far as the
    /// queue knows (at least whether it was: 0 or 1).
    fn redeliveries(&self) -> u32;

    /// Done with the job: it leaves the queue.
    fn ack(self) -> impl Future<Output = Result<()>> + Send;

    /// Puts the job back as attempt number `attempt`, available after `delay`.
    fn retry(self, attempt: u32, delay: Duration) -> impl Future<Output = Result<()>> + Send;

    /// Puts the job back at once as the same attempt, counting an identity retry.
    fn retry_new_identity(self) -> impl Future<Output = Result<()>> + Send;

    /// Moves the job to the run's dead letters with `reason`.
    fn dead_letter(self, reason: String) -> impl Future<Output = Result<()>> + Send;
}
