//! In-process backends: the embedded defaults, with the semantics the networked ones have.
//!
//! Each `memory://` connection is a new, private instance; the orchestrator hands clones of it
//! to the agents it runs as tasks.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use fixedbitset::FixedBitSet;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::contract::{ConfigStoreBackend, JobQueueBackend, QueueConsumer, QueueDelivery};
use super::{DeadLetter, FinishedRun, PlannedJobs, Recorded, RunProgress, RunRecord, RunStatus};
use crate::wire::{AgentConfigRecord, Event, EventBatch, JobMessage, JobResult, JobStatus};
use crate::{AgentIndex, Error, JobIndex, Result, RunId};

/// Locks a mutex whose data stays consistent even if a holder panicked (every critical section
/// here is a few field updates that cannot panic halfway).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Waits until `notify` fires or `deadline` passes. The `Notified` future is enabled by the
/// caller before checking state, so no wake-up is lost in between.
async fn wait_for(
    notified: std::pin::Pin<&mut tokio::sync::futures::Notified<'_>>,
    deadline: Option<Instant>,
) {
    match deadline {
        Some(deadline) => {
            tokio::select! {
                () = notified => {}
                () = tokio::time::sleep_until(deadline) => {}
            }
        }
        None => notified.await,
    }
}

// ---------------------------------------------------------------------------------------------
// Job queue

/// An in-memory job queue with a queue per run.
#[derive(Debug, Clone, Default)]
pub struct MemoryQueue {
    runs: Arc<Mutex<HashMap<RunId, Arc<RunQueue>>>>,
}

#[derive(Debug, Default)]
struct RunQueue {
    state: Mutex<QueueState>,
    changed: Notify,
}

#[derive(Debug, Default)]
struct QueueState {
    /// Retries whose delay ended, taken first: a retry is not sent to the back of a long
    /// queue, where it would start long after its delay.
    due: VecDeque<Queued>,
    /// Jobs whose consumer left them unsettled, taken next: they had their turn already.
    returned: VecDeque<Queued>,
    /// Jobs never tried, in publish order: each batch is a count and a builder until its jobs
    /// are taken, so a queued job costs nothing until then.
    fresh: VecDeque<FreshJobs>,
    /// Retries waiting for their delay, by (due time, sequence).
    delayed: BTreeMap<(Instant, u64), Queued>,
    sequence: u64,
    dead: Vec<DeadLetter>,
    deleted: bool,
}

#[derive(Debug)]
struct Queued {
    message: JobMessage,
    redeliveries: u32,
}

/// A published batch of jobs and how many of it were taken.
#[derive(Debug)]
struct FreshJobs {
    jobs: PlannedJobs,
    taken: u64,
}

/// What a consumer took: a job held by the queue, or the next fresh job, which it builds
/// after letting go of the queue's lock.
enum Taken {
    Held(Queued),
    Fresh(PlannedJobs, u64),
}

impl Taken {
    fn into_queued(self) -> Queued {
        match self {
            Self::Held(queued) => queued,
            Self::Fresh(jobs, n) => Queued {
                message: jobs.build(n),
                redeliveries: 0,
            },
        }
    }
}

impl QueueState {
    fn promote_due(&mut self, now: Instant) {
        while let Some(entry) = self.delayed.first_entry() {
            if entry.key().0 > now {
                break;
            }
            self.due.push_back(entry.remove());
        }
    }

    fn take(&mut self) -> Option<Taken> {
        if let Some(queued) = self.due.pop_front().or_else(|| self.returned.pop_front()) {
            return Some(Taken::Held(queued));
        }
        loop {
            let batch = self.fresh.front_mut()?;
            if batch.taken < batch.jobs.len() {
                batch.taken += 1;
                return Some(Taken::Fresh(batch.jobs.clone(), batch.taken - 1));
            }
            self.fresh.pop_front();
        }
    }

    fn clear(&mut self) {
        self.due.clear();
        self.returned.clear();
        self.fresh.clear();
        self.delayed.clear();
    }
}

impl MemoryQueue {
    fn run(&self, run: &RunId) -> Arc<RunQueue> {
        lock(&self.runs).entry(run.clone()).or_default().clone()
    }
}

impl JobQueueBackend for MemoryQueue {
    type Consumer = MemoryConsumer;

    async fn publish(&self, run: &RunId, jobs: PlannedJobs) -> Result<()> {
        let queue = self.run(run);
        lock(&queue.state)
            .fresh
            .push_back(FreshJobs { jobs, taken: 0 });
        queue.changed.notify_waiters();
        Ok(())
    }

    async fn consume(&self, run: &RunId, prefetch: u16) -> Result<MemoryConsumer> {
        Ok(MemoryConsumer {
            queue: self.run(run),
            prefetch: Arc::new(Semaphore::new(usize::from(prefetch.max(1)))),
        })
    }

    async fn delete(&self, run: &RunId) -> Result<()> {
        if let Some(queue) = lock(&self.runs).remove(run) {
            let mut state = lock(&queue.state);
            state.deleted = true;
            state.clear();
            drop(state);
            queue.changed.notify_waiters();
        }
        Ok(())
    }

    async fn dead_letters(&self, run: &RunId) -> Result<Vec<DeadLetter>> {
        Ok(lock(&self.runs)
            .get(run)
            .map(|queue| lock(&queue.state).dead.clone())
            .unwrap_or_default())
    }

    /// Nothing to close: the queue lives as long as its clones.
    async fn close(&self) {}
}

/// Consumes one run's in-memory queue.
#[derive(Debug)]
pub struct MemoryConsumer {
    queue: Arc<RunQueue>,
    prefetch: Arc<Semaphore>,
}

impl QueueConsumer for MemoryConsumer {
    type Delivery = MemoryDelivery;

    async fn next(&mut self) -> Result<Option<MemoryDelivery>> {
        let permit = Arc::clone(&self.prefetch)
            .acquire_owned()
            .await
            .expect("the prefetch semaphore is never closed");
        loop {
            let mut notified = pin!(self.queue.changed.notified());
            notified.as_mut().enable();
            let deadline = {
                let mut state = lock(&self.queue.state);
                if state.deleted {
                    return Ok(None);
                }
                state.promote_due(Instant::now());
                match state.take() {
                    Some(taken) => {
                        // A fresh job is built here, outside the lock other agents wait on.
                        drop(state);
                        return Ok(Some(MemoryDelivery {
                            queue: Arc::clone(&self.queue),
                            queued: Some(taken.into_queued()),
                            _permit: permit,
                        }));
                    }
                    None => state.delayed.first_key_value().map(|((due, _), _)| *due),
                }
            };
            wait_for(notified, deadline).await;
        }
    }

    /// Nothing to close: what it holds goes back when its deliveries drop.
    /// Nothing to stop: this consumer takes a job only when asked for the next.
    async fn stop_taking(&mut self) {}

    async fn close(self) {}
}

/// A job delivered from an in-memory queue.
#[derive(Debug)]
pub struct MemoryDelivery {
    queue: Arc<RunQueue>,
    queued: Option<Queued>,
    _permit: OwnedSemaphorePermit,
}

impl MemoryDelivery {
    fn queued(&self) -> &Queued {
        self.queued
            .as_ref()
            .expect("a delivery holds its job until it is settled")
    }
}

impl QueueDelivery for MemoryDelivery {
    fn message(&self) -> &JobMessage {
        &self.queued().message
    }

    fn redeliveries(&self) -> u32 {
        self.queued().redeliveries
    }

    async fn ack(mut self) -> Result<()> {
        self.queued = None;
        Ok(())
    }

    async fn retry(mut self, attempt: u32, delay: Duration) -> Result<()> {
        let Some(mut queued) = self.queued.take() else {
            return Ok(());
        };
        queued.message.attempt = attempt;
        queued.redeliveries = 0;
        let mut state = lock(&self.queue.state);
        if state.deleted {
            return Ok(());
        }
        if delay.is_zero() {
            state.due.push_back(queued);
        } else {
            state.sequence += 1;
            // A delay past what a clock can hold means "not in this run's lifetime".
            let now = Instant::now();
            let due = now
                .checked_add(delay)
                .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600));
            let key = (due, state.sequence);
            state.delayed.insert(key, queued);
        }
        drop(state);
        self.queue.changed.notify_waiters();
        Ok(())
    }

    async fn retry_new_identity(mut self) -> Result<()> {
        let Some(mut queued) = self.queued.take() else {
            return Ok(());
        };
        queued.message.identity_retries = queued.message.identity_retries.saturating_add(1);
        queued.redeliveries = 0;
        let mut state = lock(&self.queue.state);
        if !state.deleted {
            state.due.push_back(queued);
            drop(state);
            self.queue.changed.notify_waiters();
        }
        Ok(())
    }

    async fn dead_letter(mut self, reason: String) -> Result<()> {
        if let Some(queued) = self.queued.take() {
            lock(&self.queue.state).dead.push(DeadLetter {
                message: Some(queued.message),
                reason,
            });
        }
        Ok(())
    }
}

impl Drop for MemoryDelivery {
    fn drop(&mut self) {
        if let Some(mut queued) = self.queued.take() {
            queued.redeliveries += 1;
            let mut state = lock(&self.queue.state);
            if !state.deleted {
                state.returned.push_front(queued);
                drop(state);
                self.queue.changed.notify_waiters();
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Config store

/// An in-memory config store.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    runs: Arc<Mutex<HashMap<RunId, Arc<RunSlot>>>>,
}

#[derive(Debug)]
struct RunSlot {
    state: Mutex<RunState>,
    changed: Notify,
}

#[derive(Debug)]
struct RunState {
    record: RunRecord,
    finished: Option<FinishedRun>,
    configs: Vec<Option<AgentConfigRecord>>,
    /// Results not yet released by the run's reader; the first is result number
    /// `released`.
    results: VecDeque<JobResult>,
    released: u64,
    /// A bit per job, grown as results come: a run's size costs nothing up front.
    recorded: FixedBitSet,
    redeliveries: HashMap<JobIndex, u32>,
    progress: RunProgress,
}

impl MemoryStore {
    fn slot(&self, run: &RunId) -> Result<Arc<RunSlot>> {
        lock(&self.runs)
            .get(run)
            .cloned()
            .ok_or_else(|| Error::RunNotFound(run.clone()))
    }

    fn with_state<T>(&self, run: &RunId, f: impl FnOnce(&mut RunState) -> T) -> Result<T> {
        let slot = self.slot(run)?;
        let mut state = lock(&slot.state);
        Ok(f(&mut state))
    }
}

impl ConfigStoreBackend for MemoryStore {
    /// The same store: it has no connection.
    async fn connect_here(&self) -> Result<Self> {
        Ok(self.clone())
    }

    async fn create_run(&self, record: RunRecord) -> Result<()> {
        let mut runs = lock(&self.runs);
        if let Some(slot) = runs.get(&record.run_id) {
            return if lock(&slot.state).record == record {
                Ok(())
            } else {
                Err(Error::RunExists(record.run_id))
            };
        }
        let state = RunState {
            record: record.clone(),
            finished: None,
            configs: vec![None; record.agents as usize],
            results: VecDeque::new(),
            released: 0,
            recorded: FixedBitSet::new(),
            redeliveries: HashMap::new(),
            progress: RunProgress {
                jobs: record.jobs,
                succeeded: 0,
                failed: 0,
                terminal: 0,
                retries: 0,
                redeliveries: 0,
                status: RunStatus::Running,
            },
        };
        runs.insert(
            record.run_id,
            Arc::new(RunSlot {
                state: Mutex::new(state),
                changed: Notify::new(),
            }),
        );
        Ok(())
    }

    async fn put_agent_configs(&self, run: &RunId, configs: Vec<AgentConfigRecord>) -> Result<()> {
        self.with_state(run, |state| {
            for config in configs {
                let index = config.index as usize;
                if state.configs.len() <= index {
                    state.configs.resize(index + 1, None);
                }
                state.configs[index] = Some(config);
            }
        })
    }

    async fn agent_config(&self, run: &RunId, index: AgentIndex) -> Result<AgentConfigRecord> {
        self.with_state(run, |state| {
            state.configs.get(index as usize).cloned().flatten()
        })?
        .ok_or_else(|| Error::AgentConfigMissing {
            run: run.clone(),
            index,
        })
    }

    async fn run_record(&self, run: &RunId) -> Result<RunRecord> {
        self.with_state(run, |state| state.record.clone())
    }

    async fn record_result(&self, run: &RunId, result: JobResult) -> Result<Recorded> {
        let slot = self.slot(run)?;
        let mut state = lock(&slot.state);
        let index = usize::try_from(result.index).unwrap_or(usize::MAX);
        if result.index >= state.record.jobs {
            // Not a job of this run: only a broken agent sends one, and no bit may be grown
            // for it. Nothing is recorded, as for a job recorded before.
            return Ok(Recorded::Before);
        }
        state.recorded.grow(index + 1);
        if state.recorded.put(index) {
            return Ok(Recorded::Before);
        }
        let progress = &mut state.progress;
        progress.terminal += 1;
        match result.status {
            JobStatus::Succeeded => progress.succeeded += 1,
            JobStatus::Failed => progress.failed += 1,
            JobStatus::Canceled | JobStatus::Abandoned => {}
        }
        let last = progress.terminal >= progress.jobs && progress.status == RunStatus::Running;
        if last {
            progress.status = RunStatus::Completed;
        }
        state.results.push_back(result);
        drop(state);
        slot.changed.notify_waiters();
        Ok(if last {
            Recorded::LastOfRun
        } else {
            Recorded::Now
        })
    }

    async fn is_recorded(&self, run: &RunId, index: JobIndex) -> Result<bool> {
        let index = usize::try_from(index).unwrap_or(usize::MAX);
        self.with_state(run, |state| state.recorded.contains(index))
    }

    async fn record_retry(&self, run: &RunId) -> Result<()> {
        self.with_state(run, |state| state.progress.retries += 1)
    }

    async fn count_redelivery(&self, run: &RunId, index: JobIndex) -> Result<u32> {
        self.with_state(run, |state| {
            state.progress.redeliveries += 1;
            let count = state.redeliveries.entry(index).or_default();
            *count += 1;
            *count
        })
    }

    async fn progress(&self, run: &RunId) -> Result<RunProgress> {
        self.with_state(run, |state| state.progress)
    }

    async fn results_after(
        &self,
        run: &RunId,
        cursor: u64,
        wait: Duration,
    ) -> Result<Vec<JobResult>> {
        let slot = self.slot(run)?;
        let deadline = Instant::now() + wait;
        loop {
            let mut notified = pin!(slot.changed.notified());
            notified.as_mut().enable();
            {
                let state = lock(&slot.state);
                let start =
                    usize::try_from(cursor.saturating_sub(state.released)).unwrap_or(usize::MAX);
                if start < state.results.len() || Instant::now() >= deadline {
                    return Ok(state.results.iter().skip(start).cloned().collect());
                }
            }
            wait_for(notified, Some(deadline)).await;
        }
    }

    /// Nothing else can read this store: results its reader took need not stay in memory.
    async fn release_results(&self, run: &RunId, cursor: u64) -> Result<()> {
        self.with_state(run, |state| {
            let taken = cursor.saturating_sub(state.released);
            let taken = usize::try_from(taken)
                .map_or(state.results.len(), |taken| taken.min(state.results.len()));
            state.results.drain(..taken);
            state.released += taken as u64;
        })
    }

    async fn set_status(&self, run: &RunId, status: RunStatus) -> Result<()> {
        let slot = self.slot(run)?;
        let mut state = lock(&slot.state);
        if state.progress.status == RunStatus::Running {
            state.progress.status = status;
        }
        drop(state);
        slot.changed.notify_waiters();
        Ok(())
    }

    async fn mark_finished(
        &self,
        run: &RunId,
        finished: FinishedRun,
    ) -> Result<(FinishedRun, bool)> {
        let slot = self.slot(run)?;
        let mut state = lock(&slot.state);
        let first = state.finished.is_none();
        let kept = state.finished.get_or_insert(finished).clone();
        state.progress.status = kept.status;
        state.configs.clear();
        state.redeliveries.clear();
        drop(state);
        slot.changed.notify_waiters();
        Ok((kept, first))
    }

    async fn finished(&self, run: &RunId) -> Result<Option<FinishedRun>> {
        self.with_state(run, |state| state.finished.clone())
    }

    async fn remove_run(&self, run: &RunId) -> Result<()> {
        lock(&self.runs).remove(run);
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Event sink

/// Recent events kept per run; older ones are counted, not kept.
const RECENT_EVENTS: usize = 10_000;

/// An in-memory event sink: counts every event and keeps the most recent ones of each run.
#[derive(Debug, Clone, Default)]
pub struct MemoryEvents {
    runs: Arc<Mutex<HashMap<RunId, RunEvents>>>,
}

#[derive(Debug, Default)]
struct RunEvents {
    batches: HashSet<crate::wire::BatchId>,
    total: u64,
    recent: VecDeque<Event>,
}

impl MemoryEvents {
    /// Stores a batch unless one with its `batch_id` was stored before; returns whether it was
    /// new.
    pub fn write(&self, batch: EventBatch) -> bool {
        let mut runs = lock(&self.runs);
        let run = runs.entry(batch.run_id).or_default();
        if !run.batches.insert(batch.batch_id) {
            return false;
        }
        run.total += batch.events.len() as u64;
        for event in batch.events {
            if run.recent.len() == RECENT_EVENTS {
                run.recent.pop_front();
            }
            run.recent.push_back(event);
        }
        true
    }

    /// Events stored for the run.
    pub fn count(&self, run: &RunId) -> u64 {
        lock(&self.runs).get(run).map_or(0, |events| events.total)
    }

    /// The run's most recent events, oldest first.
    pub fn recent(&self, run: &RunId) -> Vec<Event> {
        lock(&self.runs)
            .get(run)
            .map(|events| events.recent.iter().cloned().collect())
            .unwrap_or_default()
    }
}
