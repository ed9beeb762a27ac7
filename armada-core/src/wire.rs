//! Types that cross a process boundary: the queue's job message, the config store's agent
//! record and job results, and the monitor's event batches.
//!
//! Each carries `v`, the wire version. A reader refuses a version it does not know instead of
//! guessing; internal state is never serialized straight onto a wire.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::{AgentIndex, Error, JobId, JobIndex, Result, RunId, RunSettings};

/// The wire version written by this build.
pub const WIRE_VERSION: u16 = 1;

/// One job on the run's queue.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobMessage {
    /// Wire version, [`WIRE_VERSION`] when written; a reader refuses a version it does not know.
    pub v: u16,
    /// The run the job belongs to.
    pub run_id: RunId,
    /// The job's id, the same on every attempt.
    pub job_id: JobId,
    /// The job's index in its run.
    pub index: JobIndex,
    /// Which attempt this message is, from 1.
    pub attempt: u32,
    /// Retries so far that did not count as attempts (the agent's identity failed).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub identity_retries: u32,
    /// The merged job message as compact JSON, deserialized into the script's payload type by
    /// the agent. Held as text, not as a `Value`: a queue may hold a million of them, a parsed
    /// object costs several times its text, and the agent passes it on to the monitor as is
    /// ([`Event::input`]).
    pub payload: Arc<RawValue>,
}

/// Messages are equal when their fields are, the payload compared as its JSON text.
impl PartialEq for JobMessage {
    fn eq(&self, other: &Self) -> bool {
        self.v == other.v
            && self.run_id == other.run_id
            && self.job_id == other.job_id
            && self.index == other.index
            && self.attempt == other.attempt
            && self.identity_retries == other.identity_retries
            && self.payload.get() == other.payload.get()
    }
}

/// Limits an agent applies to every job of its run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct JobLimits {
    /// Jobs in the run, as planned ([`RunRecord::jobs`](crate::backend::RunRecord::jobs)).
    pub jobs: u64,
    /// Attempts per job, the first included.
    pub max_attempts: u32,
    /// Time limit of one attempt, in milliseconds.
    pub job_timeout_ms: u64,
    /// Delay before the first retry, in milliseconds.
    pub retry_backoff_ms: u64,
    /// Upper bound of the retry delay, in milliseconds.
    pub retry_backoff_max_ms: u64,
}

impl JobLimits {
    /// The limits a plan's settings give.
    pub fn from_settings(settings: &RunSettings, jobs: u64) -> Self {
        let millis = |secs: f64| (secs * 1000.0).round() as u64;
        Self {
            jobs,
            max_attempts: settings.max_attempts,
            job_timeout_ms: millis(settings.job_timeout_secs),
            retry_backoff_ms: millis(settings.retry_backoff_secs),
            retry_backoff_max_ms: millis(settings.retry_backoff_max_secs),
        }
    }

    /// The per-attempt time limit.
    pub fn job_timeout(&self) -> Duration {
        Duration::from_millis(self.job_timeout_ms)
    }

    /// The delay before attempt `next_attempt` (2 for the first retry): exponential, capped.
    pub fn retry_delay(&self, next_attempt: u32) -> Duration {
        let doublings = next_attempt.saturating_sub(2).min(32);
        let delay = self.retry_backoff_ms.saturating_mul(1u64 << doublings);
        Duration::from_millis(delay.min(self.retry_backoff_max_ms))
    }
}

/// What the config store holds for one agent: read once when the agent starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentConfigRecord {
    /// Wire version, [`WIRE_VERSION`] when written; a reader refuses a version it does not know.
    pub v: u16,
    /// The run the agent belongs to; the record is stored under it and `index`.
    pub run_id: RunId,
    /// The agent's index, `0..agents`.
    pub index: AgentIndex,
    /// Agents in the run (`run_message.agents` after any run override); indexes go from 0 to
    /// `agents - 1`.
    pub agents: u32,
    /// Limits every job of the run gets (attempts, timeout, retry delays), from `run_message`.
    pub limits: JobLimits,
    /// The merged agent message, deserialized into the agent context's config type.
    pub config: Value,
}

/// How a job ended: its terminal state, as written in results and summaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// The script returned an output.
    Succeeded,
    /// The script failed for good, or ran out of attempts.
    Failed,
    /// The run was canceled before the job finished.
    Canceled,
    /// The run stopped with no agent left to run the job.
    Abandoned,
}

impl JobStatus {
    /// The status as written in results and summaries.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Canceled => "canceled",
            Self::Abandoned => "abandoned",
        }
    }
}

/// The terminal record of one job: one line of `results.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobResult {
    /// Wire version, [`WIRE_VERSION`] when written; a reader refuses a version it does not know.
    pub v: u16,
    /// The job's index, `0..jobs`.
    pub index: JobIndex,
    /// The job's id, the same on every attempt.
    pub id: JobId,
    /// How it ended; only a succeeded job has an `output`.
    pub status: JobStatus,
    /// Attempts made, the last included (0 when it never ran).
    pub attempts: u32,
    /// The agent of the last attempt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentIndex>,
    /// Duration of the last attempt, in milliseconds (microsecond precision).
    pub duration_ms: f64,
    /// The script's output, when it succeeded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    /// Why it did not succeed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The folder holding the evidence of its last failed attempt, if any was saved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<String>,
}

/// What happened, in one monitor event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// An agent began: it reads its config and starts its context (a browser may take a
    /// while).
    AgentStarting,
    /// An agent's context started.
    AgentStarted,
    /// An agent's context failed to start; its share of jobs goes to the others.
    AgentStartFailed,
    /// An agent stopped taking jobs and left the run.
    AgentStopped,
    /// An agent started an attempt of a job (`job` says which job and attempt).
    JobStarted,
    /// The script reported a step that went well.
    Success,
    /// The script reported a step that went wrong.
    Failure,
    /// The script reported something worth knowing.
    Info,
    /// The script reported progress (`data`: `{"done": n, "total": m}`).
    Progress,
    /// The script produced a structured output (`data`).
    Output,
    /// A file of the attempt (`data`: [`Attachment`]), such as a failure screenshot.
    Attachment,
    /// The attempt failed and the job will be retried.
    Retrying,
    /// The job succeeded: its script returned an output, recorded as its result.
    JobSucceeded,
    /// The job failed for good: its script said so, or it ran out of attempts.
    JobFailed,
    /// The agent recorded the run's last result and ended the run: the monitor marks it
    /// completed, whether or not a process follows it.
    RunCompleted,
    /// A process of the run is alive: an agent (`agent`), or with `data` `{"follower": true}`
    /// a process following the run. Sent every [`HEARTBEAT_INTERVAL`]; the monitor notes when
    /// it last heard from each and does not store the event.
    Heartbeat,
}

/// How often agents and the processes following a run tell the monitor they are alive.
pub const HEARTBEAT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

impl EventKind {
    /// The kind as written on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AgentStarting => "agent_starting",
            Self::AgentStarted => "agent_started",
            Self::AgentStartFailed => "agent_start_failed",
            Self::AgentStopped => "agent_stopped",
            Self::JobStarted => "job_started",
            Self::Success => "success",
            Self::Failure => "failure",
            Self::Info => "info",
            Self::Progress => "progress",
            Self::Output => "output",
            Self::Attachment => "attachment",
            Self::Retrying => "retrying",
            Self::JobSucceeded => "job_succeeded",
            Self::JobFailed => "job_failed",
            Self::RunCompleted => "run_completed",
            Self::Heartbeat => "heartbeat",
        }
    }
}

/// One event of a run, reported by an agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    /// What happened; it says what `job`, `message` and `data` hold.
    pub kind: EventKind,
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// The agent that reported it.
    pub agent: AgentIndex,
    /// The job, for job events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<EventJob>,
    /// Text for people, as the script or agent wrote it; the monitor shows it as is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Structured data whose shape depends on `kind` (progress counts, an output, an
    /// [`Attachment`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    /// The job's input, on `job_started` events: its payload as the queue gave it, secrets
    /// hidden. Text, not a `Value`: the agent sends the message's own JSON without parsing
    /// it, and the monitor reads it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<Arc<RawValue>>,
}

/// Events are equal when their fields are, the input compared as its JSON text.
impl PartialEq for Event {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind
            && self.at_ms == other.at_ms
            && self.agent == other.agent
            && self.job == other.job
            && self.message == other.message
            && self.data == other.data
            && self.input.as_deref().map(RawValue::get) == other.input.as_deref().map(RawValue::get)
    }
}

/// The job an event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventJob {
    /// The job's id, the same on every attempt.
    pub id: JobId,
    /// The job's index, `0..jobs`.
    pub index: JobIndex,
    /// The attempt, from 1.
    pub attempt: u32,
}

/// A file sent with an [`EventKind::Attachment`] event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// The file name (`screenshot.png`).
    pub name: String,
    /// Its media type (`image/png`).
    pub content_type: String,
    /// The bytes, base64 (standard alphabet, padded).
    pub base64: String,
}

impl Attachment {
    /// Largest file sent as an attachment; a bigger one is reported by name only.
    pub const MAX_BYTES: usize = 4 * 1024 * 1024;

    /// An attachment holding `bytes`.
    pub fn new(name: impl Into<String>, content_type: impl Into<String>, bytes: &[u8]) -> Self {
        use base64::Engine as _;
        Self {
            name: name.into(),
            content_type: content_type.into(),
            base64: base64::engine::general_purpose::STANDARD.encode(bytes),
        }
    }
}

/// Identifies an event batch.
pub type BatchId = uuid::Uuid;

/// Events of one run, delivered together; `batch_id` makes a re-sent batch count once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventBatch {
    /// Wire version, [`WIRE_VERSION`] when written; a reader refuses a version it does not know.
    pub v: u16,
    /// Identifies the batch for idempotent ingest.
    pub batch_id: BatchId,
    /// The run every event of the batch belongs to.
    pub run_id: RunId,
    /// The events, in the order they happened.
    pub events: Vec<Event>,
}

/// A record that carries its wire version, `v`.
pub trait Versioned {
    /// The wire version it was written with.
    fn version(&self) -> u16;
}

macro_rules! versioned {
    ($($record:ty),+) => {$(
        impl Versioned for $record {
            fn version(&self) -> u16 {
                self.v
            }
        }
    )+};
}

versioned!(
    JobMessage,
    AgentConfigRecord,
    JobResult,
    EventBatch,
    crate::backend::RunRecord,
    crate::backend::FinishedRun
);

/// Reads a record of this build's wire version from JSON; `what` names it in the error
/// (`a job message`). A record of another version is refused, not misread.
pub fn decode<T>(json: &[u8], what: &'static str) -> Result<T>
where
    T: serde::de::DeserializeOwned + Versioned,
{
    let record: T =
        serde_json::from_slice(json).map_err(|source| Error::Decode { what, source })?;
    match record.version() {
        WIRE_VERSION => Ok(record),
        other => Err(Error::Decode {
            what,
            source: serde::de::Error::custom(format!(
                "it is of wire version {other}, and this build reads version {WIRE_VERSION}"
            )),
        }),
    }
}

fn is_zero(value: &u32) -> bool {
    *value == 0
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}
