//! The backend seams: where agent configs and run state live ([`ConfigStore`]), where jobs wait
//! ([`JobQueue`]) and where events go ([`EventSink`]).
//!
//! Each seam is a closed enum over the backends compiled into this build, chosen at run time
//! from a URL in one place (`connect`). No public type carries a backend type parameter. A URL
//! whose backend exists but is not compiled in is an error naming the cargo feature.
//!
//! Only this module knows backend keys and message formats.

#[cfg(feature = "conformance")]
pub mod conformance;
mod contract;
pub mod memory;
mod planned;
#[cfg(feature = "rabbitmq")]
pub mod rabbitmq;
#[cfg(feature = "redis")]
pub mod redis;

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use serde::{Deserialize, Serialize};

pub use contract::{ConfigStoreBackend, JobQueueBackend, QueueConsumer, QueueDelivery};
pub use planned::PlannedJobs;

use crate::wire::{AgentConfigRecord, EventBatch, JobMessage, JobResult};
use crate::{AgentIndex, Error, JobIndex, Result, RunId};

/// How long an operation on Redis or RabbitMQ keeps trying through an outage of its service
/// (a restart, a failover, a cut network) before it fails.
pub const DEFAULT_OUTAGE_LIMIT: Duration = Duration::from_secs(60);

/// Where a run stands, as the config store keeps it ([`RunStatus::as_str`] is the stored text).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Jobs are being processed.
    Running,
    /// Every job is terminal.
    Completed,
    /// Canceled on request: its queue was deleted, and its agents take no more jobs.
    Canceled,
    /// The run stopped before every job was terminal (no agent left).
    Failed,
}

impl RunStatus {
    /// The status as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Canceled => "canceled",
            Self::Failed => "failed",
        }
    }

    /// Reads a status written by [`RunStatus::as_str`].
    pub fn parse(text: &str) -> Option<Self> {
        [Self::Running, Self::Completed, Self::Canceled, Self::Failed]
            .into_iter()
            .find(|status| status.as_str() == text)
    }
}

/// The run as created in the store at publish time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// Wire version, [`WIRE_VERSION`](crate::wire::WIRE_VERSION) when written; a reader refuses
    /// a version it does not know.
    pub v: u16,
    /// The run's id, which the record is stored under.
    pub run_id: RunId,
    /// Agents planned: `run_message.agents`, after any run override.
    pub agents: u32,
    /// Jobs planned: the run is complete when this many are terminal.
    pub jobs: u64,
    /// Creation time, in milliseconds since the Unix epoch.
    pub created_ms: u64,
}

/// Counters of a run, kept next to its configs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunProgress {
    /// Jobs planned, as in [`RunRecord::jobs`]: the run is complete when `terminal` reaches it.
    pub jobs: u64,
    /// Jobs that succeeded, each counted once, when its result is recorded.
    pub succeeded: u64,
    /// Jobs that failed for good.
    pub failed: u64,
    /// Jobs terminal for any reason.
    pub terminal: u64,
    /// Retries scheduled so far.
    pub retries: u64,
    /// Attempts lost with their agents: deliveries of a job again after its agent died.
    #[serde(default)]
    pub redeliveries: u64,
    /// Where the run stands; the store sets it to completed when it records the last result.
    pub status: RunStatus,
}

/// A message that left the queue for good, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The message as last delivered; `None` when it could not be decoded.
    pub message: Option<JobMessage>,
    /// Why it was dead-lettered.
    pub reason: String,
}

/// What recording a job's result did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Recorded {
    /// The job had a result already; nothing changed.
    Before,
    /// This call recorded the result, and the run still needs others.
    Now,
    /// The result was recorded and was the last one the running run needed: the store marked
    /// the run completed, and the caller ends it with [`finish_run`].
    LastOfRun,
}

impl Recorded {
    /// Whether this call recorded the result.
    pub fn is_new(self) -> bool {
        !matches!(self, Self::Before)
    }
}

/// The record a run leaves in the store once it ended: what `attach` and `results` read after
/// its agents, queues and configs are gone. Written once; the first writer wins.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FinishedRun {
    /// Wire version, [`WIRE_VERSION`](crate::wire::WIRE_VERSION) when written; a reader refuses
    /// a version it does not know.
    pub v: u16,
    /// How the run ended: completed, canceled or failed, never running.
    pub status: RunStatus,
    /// When it ended, in milliseconds since the Unix epoch.
    pub finished_ms: u64,
    /// What its queues dead-lettered, read before they were deleted.
    pub dead_letters: Vec<DeadLetter>,
}

/// A run's end, as [`finish_run`] found or made it.
#[derive(Debug, Clone, PartialEq)]
pub struct RunEnd {
    /// The run's finished record: the one this call wrote, or the one another process wrote
    /// first.
    pub finished: FinishedRun,
    /// Whether this call ended the run; `false` when another process had.
    pub ended_here: bool,
}

/// Ends a run in the backends, whoever sees its end first (the agent that recorded its last
/// result, the process following it, `cancel`): sets its status, keeps its dead letters in the
/// store, deletes its queues (which ends its agents' loops), and leaves only the finished
/// record, its counters and its results in the store. Safe to call again and from several
/// processes at once: the first finished record stands, and only its writer is told it ended
/// the run.
pub async fn finish_run(
    store: &ConfigStore,
    queue: &JobQueue,
    run: &RunId,
    status: RunStatus,
) -> Result<RunEnd> {
    let end = match store.finished(run).await? {
        Some(finished) => RunEnd {
            finished,
            ended_here: false,
        },
        None => {
            // A run that ended another way (completed before a cancel) keeps its status.
            store.set_status(run, status).await?;
            let status = store.progress(run).await?.status;
            // Dead letters are read, then kept, and only then are the queues deleted: a
            // process that finds the record finds them in it.
            let ours = FinishedRun {
                v: crate::wire::WIRE_VERSION,
                status,
                finished_ms: crate::wire::now_ms(),
                dead_letters: queue.dead_letters(run).await?,
            };
            let (finished, ended_here) = store.mark_finished(run, ours).await?;
            RunEnd {
                finished,
                ended_here,
            }
        }
    };
    // Also when another process ended the run: it may have died before this step.
    queue.delete(run).await?;
    Ok(end)
}

fn scheme(url: &str) -> &str {
    url.split_once(':').map_or("", |(scheme, _)| scheme)
}

/// The URL with any password replaced by `***`, safe for messages and logs. Credentials end at
/// the last `@`, so a password holding `/` or `@` is hidden too.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.rsplit_once('@') {
        Some((credentials, host)) => match credentials.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// The error for a URL this seam cannot serve in this build: `features` maps the seam's
/// networked schemes to the cargo feature that compiles them in.
fn unavailable(
    role: &'static str,
    url: &str,
    supported: &'static str,
    features: &[(&str, &'static str)],
) -> Error {
    let scheme = scheme(url);
    let url = redact_url(url);
    match features.iter().find(|(known, _)| *known == scheme) {
        Some(&(_, feature)) => Error::FeatureMissing { role, url, feature },
        None => Error::UnsupportedUrl {
            role,
            url,
            supported,
        },
    }
}

/// Agent configs and run state: counters, status, cancel flag and terminal job results; the
/// backend [`ConfigStore::connect`] picked by URL (contract: [`ConfigStoreBackend`]).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ConfigStore {
    /// In this process only (`memory://`).
    Memory(memory::MemoryStore),
    /// In Redis (`redis://`, `rediss://`; feature `redis`).
    #[cfg(feature = "redis")]
    Redis(redis::RedisStore),
}

/// Runs `$body` on whichever backend `$seam` holds, bound to `$backend`.
macro_rules! dispatch {
    ($seam:expr, $kind:ident, $backend:ident => $body:expr) => {
        match $seam {
            $kind::Memory($backend) => $body,
            #[cfg(feature = "redis")]
            $kind::Redis($backend) => $body,
        }
    };
}

impl ConfigStore {
    /// Connects to the store at `url`: `memory://` (a new store private to this process) or
    /// `redis://…` (feature `redis`).
    pub async fn connect(url: &str) -> Result<Self> {
        match scheme(url) {
            "memory" => Ok(Self::Memory(memory::MemoryStore::default())),
            #[cfg(feature = "redis")]
            "redis" | "rediss" => Ok(Self::Redis(redis::RedisStore::connect(url).await?)),
            _ => Err(unavailable(
                "config store",
                url,
                "memory://, redis://, rediss://",
                &[("redis", "redis"), ("rediss", "redis")],
            )),
        }
    }

    /// Whether the store lives only in this process.
    pub fn is_in_process(&self) -> bool {
        matches!(self, Self::Memory(_))
    }

    /// The same store with connections of its own, driven by the calling runtime: for work on
    /// other threads than the connecting one, which would otherwise hand every operation to
    /// the connecting runtime and back. The in-process store is shared as it is.
    pub async fn connect_here(&self) -> Result<Self> {
        match self {
            Self::Memory(store) => Ok(Self::Memory(store.connect_here().await?)),
            #[cfg(feature = "redis")]
            Self::Redis(store) => Ok(Self::Redis(store.connect_here().await?)),
        }
    }

    /// How long each operation keeps trying while the store's service is unreachable
    /// (restarting, failing over, cut off) before it fails (default [`DEFAULT_OUTAGE_LIMIT`]).
    /// The in-process store is never unreachable.
    #[must_use]
    #[cfg_attr(not(feature = "redis"), allow(unused_variables))]
    pub fn with_outage_limit(self, limit: Duration) -> Self {
        match self {
            Self::Memory(store) => Self::Memory(store),
            #[cfg(feature = "redis")]
            Self::Redis(store) => Self::Redis(store.with_outage_limit(limit)),
        }
    }

    /// Creates a run; fails if it exists.
    pub async fn create_run(&self, record: RunRecord) -> Result<()> {
        dispatch!(self, Self, store => store.create_run(record).await)
    }

    /// Stores every agent's config for its run.
    pub async fn put_agent_configs(
        &self,
        run: &RunId,
        configs: Vec<AgentConfigRecord>,
    ) -> Result<()> {
        dispatch!(self, Self, store => store.put_agent_configs(run, configs).await)
    }

    /// Reads one agent's config.
    pub async fn agent_config(&self, run: &RunId, index: AgentIndex) -> Result<AgentConfigRecord> {
        dispatch!(self, Self, store => store.agent_config(run, index).await)
    }

    /// The run's record as written at publish time: its planned agents and jobs.
    pub async fn run_record(&self, run: &RunId) -> Result<RunRecord> {
        dispatch!(self, Self, store => store.run_record(run).await)
    }

    /// Records a job's terminal result once. When it is the last result a running run
    /// needed, the run is marked completed in the same step and [`Recorded::LastOfRun`] says
    /// so, to exactly one caller.
    pub async fn record_result(&self, run: &RunId, result: JobResult) -> Result<Recorded> {
        dispatch!(self, Self, store => store.record_result(run, result).await)
    }

    /// Whether a job already has a terminal result.
    pub async fn is_recorded(&self, run: &RunId, index: JobIndex) -> Result<bool> {
        dispatch!(self, Self, store => store.is_recorded(run, index).await)
    }

    /// Counts a scheduled retry.
    pub async fn record_retry(&self, run: &RunId) -> Result<()> {
        dispatch!(self, Self, store => store.record_retry(run).await)
    }

    /// Counts one more redelivery of a job (a delivery its agent never settled) and returns
    /// how many it has had. Exact whatever the queue can tell, so lost attempts are counted.
    pub async fn count_redelivery(&self, run: &RunId, index: JobIndex) -> Result<u32> {
        dispatch!(self, Self, store => store.count_redelivery(run, index).await)
    }

    /// The run's counters and status.
    pub async fn progress(&self, run: &RunId) -> Result<RunProgress> {
        dispatch!(self, Self, store => store.progress(run).await)
    }

    /// Results recorded after the first `cursor` ones, waiting up to `wait` for one to arrive.
    pub async fn results_after(
        &self,
        run: &RunId,
        cursor: u64,
        wait: Duration,
    ) -> Result<Vec<JobResult>> {
        dispatch!(self, Self, store => store.results_after(run, cursor, wait).await)
    }

    /// Moves a running run to `status`; `Canceled` is the flag agents and orchestrators check.
    /// A run that is no longer running keeps its status: an end is never overwritten.
    pub async fn set_status(&self, run: &RunId, status: RunStatus) -> Result<()> {
        dispatch!(self, Self, store => store.set_status(run, status).await)
    }

    /// Stores the run's finished record unless it has one, drops what only a running run needs
    /// (agent configs, redelivery counts), and returns the record that is stored and whether
    /// it is this one.
    pub async fn mark_finished(
        &self,
        run: &RunId,
        finished: FinishedRun,
    ) -> Result<(FinishedRun, bool)> {
        dispatch!(self, Self, store => store.mark_finished(run, finished).await)
    }

    /// The run's finished record, once it ended.
    pub async fn finished(&self, run: &RunId) -> Result<Option<FinishedRun>> {
        dispatch!(self, Self, store => store.finished(run).await)
    }

    /// Lets the store drop the first `cursor` results, taken by the run's only reader; only an
    /// in-process store does (see [`ConfigStoreBackend::release_results`]).
    pub async fn release_results(&self, run: &RunId, cursor: u64) -> Result<()> {
        dispatch!(self, Self, store => store.release_results(run, cursor).await)
    }

    /// Removes everything of the run, its finished record and results too.
    pub async fn remove_run(&self, run: &RunId) -> Result<()> {
        dispatch!(self, Self, store => store.remove_run(run).await)
    }
}

/// The run's job queue: a queue per run, prefetch, manual ack, requeue of a dead consumer's
/// unacked jobs, delayed retry and a dead-letter queue; the backend [`JobQueue::connect`]
/// picked by URL (contract: [`JobQueueBackend`]).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum JobQueue {
    /// In this process only (`memory://`).
    Memory(memory::MemoryQueue),
    /// In RabbitMQ (`amqp://`, `amqps://`; feature `rabbitmq`).
    #[cfg(feature = "rabbitmq")]
    RabbitMq(rabbitmq::RabbitQueue),
}

/// Like `dispatch!`, for the queue's types.
macro_rules! dispatch_queue {
    ($seam:expr, $kind:ident, $backend:ident => $body:expr) => {
        match $seam {
            $kind::Memory($backend) => $body,
            #[cfg(feature = "rabbitmq")]
            $kind::RabbitMq($backend) => $body,
        }
    };
}

impl JobQueue {
    /// Connects to the queue at `url`: `memory://` (a new queue private to this process) or
    /// `amqp://…` (feature `rabbitmq`).
    pub async fn connect(url: &str) -> Result<Self> {
        match scheme(url) {
            "memory" => Ok(Self::Memory(memory::MemoryQueue::default())),
            #[cfg(feature = "rabbitmq")]
            "amqp" | "amqps" => Ok(Self::RabbitMq(rabbitmq::RabbitQueue::connect(url).await?)),
            _ => Err(unavailable(
                "queue",
                url,
                "memory://, amqp://, amqps://",
                &[("amqp", "rabbitmq"), ("amqps", "rabbitmq")],
            )),
        }
    }

    /// Whether the queue lives only in this process.
    pub fn is_in_process(&self) -> bool {
        matches!(self, Self::Memory(_))
    }

    /// How long reconnecting keeps trying while the broker is unreachable before the
    /// operation fails (default [`DEFAULT_OUTAGE_LIMIT`]). The in-process queue is never
    /// unreachable.
    #[must_use]
    #[cfg_attr(not(feature = "rabbitmq"), allow(unused_variables))]
    pub fn with_outage_limit(self, limit: Duration) -> Self {
        match self {
            Self::Memory(queue) => Self::Memory(queue),
            #[cfg(feature = "rabbitmq")]
            Self::RabbitMq(queue) => Self::RabbitMq(queue.with_outage_limit(limit)),
        }
    }

    /// Publishes jobs to the run's queue, declaring it if needed; returns when all are held.
    pub async fn publish(&self, run: &RunId, jobs: impl Into<PlannedJobs>) -> Result<()> {
        let jobs = jobs.into();
        dispatch_queue!(self, Self, queue => queue.publish(run, jobs).await)
    }

    /// Starts consuming the run's queue with at most `prefetch` unsettled deliveries.
    pub async fn consume(&self, run: &RunId, prefetch: u16) -> Result<Consumer> {
        match self {
            Self::Memory(queue) => Ok(Consumer::Memory(queue.consume(run, prefetch).await?)),
            #[cfg(feature = "rabbitmq")]
            Self::RabbitMq(queue) => Ok(Consumer::RabbitMq(Box::new(
                queue.consume(run, prefetch).await?,
            ))),
        }
    }

    /// Deletes the run's queue: waiting jobs are dropped and consumers see the end.
    pub async fn delete(&self, run: &RunId) -> Result<()> {
        dispatch_queue!(self, Self, queue => queue.delete(run).await)
    }

    /// Messages dead-lettered in the run so far.
    pub async fn dead_letters(&self, run: &RunId) -> Result<Vec<DeadLetter>> {
        dispatch_queue!(self, Self, queue => queue.dead_letters(run).await)
    }

    /// Closes the connection to the broker (all clones share it); the next publish opens it
    /// again. Call it before the runtime stops, so that no connection is cut mid-frame.
    pub async fn close(&self) {
        dispatch_queue!(self, Self, queue => queue.close().await);
    }
}

/// A consumer of one run's queue.
#[derive(Debug)]
#[non_exhaustive]
pub enum Consumer {
    /// A consumer of an in-process queue (`memory://`).
    Memory(memory::MemoryConsumer),
    /// A consumer of a RabbitMQ queue (feature `rabbitmq`).
    #[cfg(feature = "rabbitmq")]
    RabbitMq(Box<rabbitmq::RabbitConsumer>),
}

impl Consumer {
    /// Stops consuming: what the consumer still holds unsettled goes back to the queue.
    pub async fn close(self) {
        dispatch_queue!(self, Self, consumer => consumer.close().await);
    }

    /// Stops receiving deliveries; those in hand stay valid to settle.
    pub async fn stop_taking(&mut self) {
        dispatch_queue!(self, Self, consumer => consumer.stop_taking().await);
    }

    /// The next delivery; `None` when the run's queue was deleted.
    pub async fn next(&mut self) -> Result<Option<Delivery>> {
        match self {
            Self::Memory(consumer) => Ok(consumer.next().await?.map(Delivery::Memory)),
            #[cfg(feature = "rabbitmq")]
            Self::RabbitMq(consumer) => Ok(consumer
                .next()
                .await?
                .map(|delivery| Delivery::RabbitMq(Box::new(delivery)))),
        }
    }
}

/// One delivered job. Dropping it unsettled puts it back on the queue, marked redelivered, as a
/// broker does when a consumer's connection dies.
#[derive(Debug)]
#[non_exhaustive]
pub enum Delivery {
    /// A message delivered by an in-process queue (`memory://`).
    Memory(memory::MemoryDelivery),
    /// A message delivered by RabbitMQ (feature `rabbitmq`).
    #[cfg(feature = "rabbitmq")]
    RabbitMq(Box<rabbitmq::RabbitDelivery>),
}

impl Delivery {
    /// The delivered job message, as published (its `attempt` says which attempt this is).
    pub fn message(&self) -> &JobMessage {
        dispatch_queue!(self, Self, delivery => delivery.message())
    }

    /// How many times this message was delivered before without being settled, as far as the
    /// queue knows (RabbitMQ only says whether it was: 0 or 1).
    pub fn redeliveries(&self) -> u32 {
        dispatch_queue!(self, Self, delivery => delivery.redeliveries())
    }

    /// Done with the job: it leaves the queue.
    pub async fn ack(self) -> Result<()> {
        dispatch_queue!(self, Self, delivery => delivery.ack().await)
    }

    /// Puts the job back as attempt number `attempt`, available after `delay`.
    pub async fn retry(self, attempt: u32, delay: Duration) -> Result<()> {
        dispatch_queue!(self, Self, delivery => delivery.retry(attempt, delay).await)
    }

    /// Puts the job back at once as the same attempt, counting an identity retry.
    pub async fn retry_new_identity(self) -> Result<()> {
        dispatch_queue!(self, Self, delivery => delivery.retry_new_identity().await)
    }

    /// Moves the job to the run's dead letters with `reason`.
    pub async fn dead_letter(self, reason: String) -> Result<()> {
        dispatch_queue!(self, Self, delivery => delivery.dead_letter(reason).await)
    }
}

/// Where agents' event batches go.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum EventSink {
    /// Kept in this process (`memory://`).
    Memory(memory::MemoryEvents),
    /// Written by an [`EventWriter`] from another crate: the monitor's SQL store in this
    /// process, or its HTTP ingest (`armada_monitor::MonitorLink`).
    Writer(Arc<dyn EventWriter>),
}

/// A destination for event batches implemented outside this crate (the monitor), so that
/// `armada-core` stays free of HTTP and SQL.
pub trait EventWriter: std::fmt::Debug + Send + Sync + 'static {
    /// Stores a batch once; `false` when this batch id was stored before. Errors are
    /// [`Error::Backend`] naming the monitor, so that the client retries them.
    fn write(&self, batch: EventBatch) -> BoxFuture<'_, Result<bool>>;
}

impl EventSink {
    /// Connects to the sink at `url`: `memory://`. The monitor's own URLs (`sqlite:`,
    /// `postgres://`, `http://`) are opened by `armada_monitor::MonitorLink`.
    pub async fn connect(url: &str) -> Result<Self> {
        match scheme(url) {
            "memory" => Ok(Self::Memory(memory::MemoryEvents::default())),
            _ => Err(unavailable("event sink", url, "memory://", &[])),
        }
    }

    /// Stores a batch once; `false` when this batch was stored before.
    pub async fn write(&self, batch: EventBatch) -> Result<bool> {
        match self {
            Self::Memory(events) => Ok(events.write(batch)),
            Self::Writer(writer) => writer.write(batch).await,
        }
    }
}
