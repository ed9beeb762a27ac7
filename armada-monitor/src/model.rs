//! What the monitor's API speaks: runs, jobs, events, agents, outputs and the bodies it
//! accepts. These are the HTTP API's types (`docs/monitor-api.md`), not database rows.

use std::collections::BTreeMap;

use armada_core::wire::EventKind;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Where a run stands in the monitor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Jobs are being processed.
    Running,
    /// Every job is terminal.
    Completed,
    /// Canceled on request; its unfinished jobs end `canceled`.
    Canceled,
    /// The run stopped with no agent left.
    Stopped,
    /// Running in the store, but no agent and no process following it has been heard from
    /// for longer than the store's stall limit: its processes died or lost the network. Shown,
    /// never stored: the run is `running` again as soon as one of them reports.
    Stalled,
}

/// Where a job stands in the monitor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Published, not started yet.
    Queued,
    /// An attempt is running on an agent (see [`Job::agent`]).
    Running,
    /// An attempt failed; the job waits for its next attempt.
    Retrying,
    /// The script returned an output.
    Succeeded,
    /// Failed for good: its script said so, or it ran out of attempts.
    Failed,
    /// Its agent died and none was left to take it.
    Abandoned,
    /// The run was canceled before it ended.
    Canceled,
}

macro_rules! text_enum {
    ($type:ty { $($variant:ident => $text:literal),* $(,)? }) => {
        impl $type {
            /// Every value, in order.
            pub const ALL: &'static [Self] = &[$(Self::$variant),*];

            /// The value as stored and sent.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),* }
            }

            /// Parses a stored or sent value.
            pub fn parse(text: &str) -> Option<Self> {
                match text { $($text => Some(Self::$variant),)* _ => None }
            }
        }
    };
}

text_enum!(RunState {
    Running => "running", Completed => "completed", Canceled => "canceled", Stopped => "stopped",
    Stalled => "stalled",
});

impl RunState {
    /// Whether the run has not ended: running, or stalled (which may still go on).
    pub fn is_open(self) -> bool {
        matches!(self, Self::Running | Self::Stalled)
    }
}
text_enum!(JobState {
    Queued => "queued", Running => "running", Retrying => "retrying", Succeeded => "succeeded",
    Failed => "failed", Abandoned => "abandoned", Canceled => "canceled",
});

impl JobState {
    /// Whether the job will not change any more.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Succeeded | Self::Failed | Self::Abandoned | Self::Canceled
        )
    }
}

/// Jobs of a run per state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct Counts {
    pub queued: u64,
    pub running: u64,
    pub retrying: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub abandoned: u64,
    pub canceled: u64,
}

impl Counts {
    /// Adds `count` jobs in `state`.
    pub fn add(&mut self, state: JobState, count: u64) {
        let slot = match state {
            JobState::Queued => &mut self.queued,
            JobState::Running => &mut self.running,
            JobState::Retrying => &mut self.retrying,
            JobState::Succeeded => &mut self.succeeded,
            JobState::Failed => &mut self.failed,
            JobState::Abandoned => &mut self.abandoned,
            JobState::Canceled => &mut self.canceled,
        };
        *slot += count;
    }

    /// Jobs that will not change any more.
    pub fn terminal(&self) -> u64 {
        self.succeeded + self.failed + self.abandoned + self.canceled
    }
}

/// A run as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    /// The run id, as the orchestrator chose it (ASCII letters, digits, `-` and `_`).
    pub id: String,
    /// The name of the project the run belongs to, as the orchestrator registered it.
    pub project: String,
    /// Where it stands; `stalled` is worked out when read, never stored.
    pub status: RunState,
    /// When it was registered.
    pub created_ms: u64,
    /// When it ended, in milliseconds since the Unix epoch; `None` while it runs.
    pub finished_ms: Option<u64>,
    /// Agents planned when the run was registered.
    pub agents: u32,
    /// Jobs planned, indexed `0..jobs`; each is queued until an event about it arrives.
    pub jobs: u64,
    /// How many of its jobs are in each state now.
    pub counts: Counts,
    /// Events stored for the run (heartbeats are not stored).
    pub events: u64,
    /// Terminal jobs per minute since the run started.
    pub throughput_per_min: f64,
    /// Time left at the current pace, while running.
    pub eta_ms: Option<u64>,
    /// The tune that resolved its placeholders.
    pub tune: Option<String>,
    /// The run this one was launched again from.
    pub relaunch_of: Option<String>,
    /// The run settings, secrets redacted.
    pub settings: Value,
    /// When the monitor last heard from one of its agents or a process following it.
    #[serde(default)]
    pub seen_ms: Option<u64>,
    /// What a person called it.
    #[serde(default)]
    pub name: Option<String>,
    /// Words it is grouped and found by.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Why it is `stalled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stalled_reason: Option<String>,
}

impl Run {
    /// Shows a running run that nothing has been heard from for longer than `limit` as
    /// stalled, saying since when.
    pub(crate) fn derive_liveness(&mut self, now_ms: u64, limit: std::time::Duration) {
        let last = self.seen_ms.unwrap_or(self.created_ms);
        let silent = now_ms.saturating_sub(last);
        if self.status == RunState::Running && u128::from(silent) > limit.as_millis() {
            self.status = RunState::Stalled;
            self.stalled_reason = Some(format!(
                "no agent and no process following the run has been heard from for {} s \
                 (the limit is {} s): they stopped or lost the network; the run goes on if one \
                 reports again, or cancel it",
                silent / 1000,
                limit.as_secs()
            ));
        }
    }

    /// Fills in the figures derived from the counts and times.
    pub(crate) fn derive_pace(&mut self, now_ms: u64) {
        let end = self.finished_ms.unwrap_or(now_ms);
        let minutes = end.saturating_sub(self.created_ms) as f64 / 60_000.0;
        let done = self.counts.terminal();
        self.throughput_per_min = if minutes > 0.0 {
            done as f64 / minutes
        } else {
            0.0
        };
        let left = self.jobs.saturating_sub(done);
        self.eta_ms = (self.status == RunState::Running && done > 0 && left > 0)
            .then(|| (left as f64 / self.throughput_per_min * 60_000.0) as u64);
    }
}

/// A job as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// Its index in the run, `0..jobs`.
    pub index: u64,
    /// Its id, the same on every attempt.
    pub id: String,
    /// Where it stands, after its latest attempt.
    pub status: JobState,
    /// The agent of its latest attempt.
    pub agent: Option<u32>,
    /// Attempts started, the current one included (0 while queued).
    pub attempts: u32,
    /// When its latest attempt started.
    pub started_ms: Option<u64>,
    /// When it reached a terminal state, in milliseconds since the Unix epoch.
    pub finished_ms: Option<u64>,
    /// How long its latest finished attempt took.
    pub duration_ms: Option<f64>,
    /// Its latest event, as text.
    pub last_event: Option<String>,
    /// Why its latest attempt failed.
    pub error: Option<String>,
}

/// An event as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Its number in the run, from 1.
    pub seq: u64,
    /// What happened: the event's kind as the agent sent it.
    pub kind: EventKind,
    /// When the agent reported it, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// The agent that reported it.
    pub agent: u32,
    /// The job's index, for job events.
    pub job: Option<u64>,
    /// The attempt, for job events.
    pub attempt: Option<u32>,
    /// Text for people, as the script or agent wrote it.
    pub message: Option<String>,
    /// Structured data (an attachment's bytes are replaced by its size).
    pub data: Option<Value>,
}

/// An agent of a run as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Agent {
    /// Its index in the run, `0..agents`.
    pub index: u32,
    /// `starting` (its context is starting), `idle`, `busy` (with `running_job`), `gone`
    /// (not heard from for longer than the store's stall limit), `start_failed` or `stopped`.
    pub status: String,
    /// When the monitor last heard from it.
    #[serde(default)]
    pub seen_ms: Option<u64>,
    /// When its context started.
    pub started_ms: Option<u64>,
    /// When it stopped, in milliseconds since the Unix epoch; `None` while it runs.
    pub stopped_ms: Option<u64>,
    /// Why it failed to start.
    pub error: Option<String>,
    /// Jobs it ended with success.
    pub succeeded: u64,
    /// Jobs it ended with failure.
    pub failed: u64,
    /// Attempts of its that will be retried.
    pub retrying: u64,
    /// The index of the job it runs now, while it is `busy`.
    pub running_job: Option<u64>,
}

/// A structured output of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Output {
    /// The event that carried it.
    pub seq: u64,
    /// The index of the job that produced it.
    pub job: u64,
    /// The attempt that produced it, from 1.
    pub attempt: u32,
    /// When it was reported, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// The output as the script produced it: any JSON value.
    pub data: Value,
}

/// A file sent by a job, without its bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttachmentInfo {
    /// The event that carried it; the attachment's id in its run.
    pub seq: u64,
    /// The index of the job that sent it.
    pub job: u64,
    /// The attempt that sent it, from 1.
    pub attempt: u32,
    /// The file name the script gave it (`screenshot.png`).
    pub name: String,
    /// Its media type (`image/png`), served with its bytes.
    pub content_type: String,
    /// Its size in bytes.
    pub size: u64,
}

/// Failures of a run sharing one error message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailureGroup {
    /// The error message, the same for every job of the group.
    pub error: String,
    /// Jobs that failed with it.
    pub jobs: u64,
    /// The index of one of those jobs, to look at as an example.
    pub sample_job: u64,
}

/// Duration percentiles of a run's succeeded jobs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

/// How often an output field was filled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldCoverage {
    /// The top-level field of the outputs.
    pub field: String,
    /// Outputs where it is present and not null or empty.
    pub filled: u64,
}

/// One side of a comparison of two runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunStats {
    /// The run compared, with its counts and settings.
    pub run: Run,
    /// Succeeded jobs over terminal jobs (0 when none is terminal).
    pub success_rate: f64,
    /// Durations of succeeded jobs.
    pub duration_ms: Option<Percentiles>,
    /// Failures by error message.
    pub errors: Vec<FailureGroup>,
    /// Coverage of the outputs' fields.
    pub output_fields: Vec<FieldCoverage>,
    /// Outputs stored for the run: what `output_fields` counts coverage against.
    pub outputs: u64,
}

/// A run being registered, with all its jobs queued.
///
/// Its jobs are a count: job `i`'s id is `armada_core::JobId::of(run id, i)`, and the monitor
/// stores a job's row only once an event about it arrives, so registering costs the same for
/// any number of jobs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewRun {
    /// The run id, as the orchestrator chose it; later calls about the run use it.
    pub id: String,
    /// The name of the project the run belongs to, as the orchestrator registered it.
    pub project: String,
    /// Agents planned (`run_message.agents` after any run override).
    pub agents: u32,
    /// How many jobs the run has, indexed `0..jobs`, each queued until an event says otherwise.
    pub jobs: u64,
    /// The tune that resolved its placeholders.
    #[serde(default)]
    pub tune: Option<String>,
    /// The run this one was launched again from.
    #[serde(default)]
    pub relaunch_of: Option<String>,
    /// The run settings; secrets are redacted before they are stored.
    #[serde(default)]
    pub settings: Value,
    /// What a person calls the run, to find it again ([`RunLabel`] checks it).
    #[serde(default)]
    pub name: Option<String>,
    /// Words to group and find runs by ([`RunLabel`] checks them).
    #[serde(default)]
    pub tags: Vec<String>,
}

/// A run's optional name and tags, checked: what people give a run to find it again in a
/// store that keeps many.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunLabel {
    /// At most [`RunLabel::MAX_NAME`] characters, not blank.
    pub name: Option<String>,
    /// At most [`RunLabel::MAX_TAGS`], each a word of at most [`RunLabel::MAX_TAG`]
    /// characters, without repeats.
    pub tags: Vec<String>,
}

impl RunLabel {
    /// Longest name, in characters.
    pub const MAX_NAME: usize = 200;
    /// Most tags.
    pub const MAX_TAGS: usize = 20;
    /// Longest tag, in characters.
    pub const MAX_TAG: usize = 50;

    /// Checks a name and tags, trimmed; the error says which one is wrong and why.
    pub fn new(name: Option<&str>, tags: &[String]) -> Result<Self, String> {
        let name = name.map(str::trim).filter(|name| !name.is_empty());
        if let Some(name) = name {
            let length = name.chars().count();
            if length > Self::MAX_NAME || name.chars().any(char::is_control) {
                return Err(format!(
                    "the run's name must be at most {} characters without control characters \
                     ({length} given)",
                    Self::MAX_NAME
                ));
            }
        }
        let mut checked: Vec<String> = Vec::new();
        for tag in tags.iter().map(|tag| tag.trim()) {
            let word = tag
                .chars()
                .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '/'));
            if tag.is_empty() || !word || tag.chars().count() > Self::MAX_TAG {
                return Err(format!(
                    "tag `{tag}` is not a tag: a tag is a word of at most {} letters, digits \
                     and - _ . : /",
                    Self::MAX_TAG
                ));
            }
            if !checked.iter().any(|seen| seen == tag) {
                checked.push(tag.to_owned());
            }
        }
        if checked.len() > Self::MAX_TAGS {
            return Err(format!(
                "a run has at most {} tags ({} given)",
                Self::MAX_TAGS,
                checked.len()
            ));
        }
        Ok(Self {
            name: name.map(str::to_owned),
            tags: checked,
        })
    }
}

/// How a run ended, with the final state of jobs that never ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Finish {
    /// The run's final state: `completed`, `canceled` or `stopped`.
    pub status: RunState,
    /// Jobs left unfinished, with the state they end in.
    #[serde(default)]
    pub jobs: Vec<FinishedJob>,
}

/// A job's final state set when its run ends.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FinishedJob {
    /// The index of a job that had not ended when the run did.
    pub index: u64,
    /// Its final state (`canceled` or `abandoned`).
    pub status: JobState,
}

/// A run's jobs over time, for its charts: how many started and how many ended in each state
/// per bucket of `bucket_ms` from `start_ms`, and how long succeeded jobs took.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Timeline {
    /// The first bucket's start: when the run was registered.
    pub start_ms: u64,
    /// When the run ended, or now while it runs.
    pub end_ms: u64,
    /// Each bucket's width: a round figure (from 100 ms) that makes at most
    /// [`Timeline::MAX_BUCKETS`].
    pub bucket_ms: u64,
    /// Every bucket from `start_ms` to `end_ms`, empty ones included.
    pub buckets: Vec<TimelineBucket>,
    /// The spread of succeeded jobs' durations; `None` before one succeeded.
    pub durations: Option<DurationHistogram>,
}

impl Timeline {
    /// Most buckets a timeline has.
    pub const MAX_BUCKETS: u64 = 120;
    /// Bars of the duration histogram.
    pub const DURATION_BARS: usize = 30;
}

/// What happened to a run's jobs in one time bucket. A job is counted where its latest
/// attempt started and where it ended; jobs that never started and ended with their run
/// (canceled, abandoned) are counted in the last bucket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct TimelineBucket {
    /// The bucket's start.
    pub at_ms: u64,
    /// Jobs whose latest attempt started in it.
    pub started: u64,
    /// Jobs that succeeded in it.
    pub succeeded: u64,
    /// Jobs that failed for good in it.
    pub failed: u64,
    /// Jobs canceled in it.
    pub canceled: u64,
    /// Jobs abandoned in it (no agent was left).
    pub abandoned: u64,
}

/// Succeeded jobs counted per equal slice of their durations, from the shortest to the
/// longest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DurationHistogram {
    /// The shortest duration.
    pub min_ms: f64,
    /// The longest duration.
    pub max_ms: f64,
    /// Each bar's width; bar `i` counts durations from `min_ms + i * bucket_ms`.
    pub bucket_ms: f64,
    /// Jobs per bar.
    pub counts: Vec<u64>,
}

/// Filters of a run's jobs list.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobFilter {
    /// Only jobs in these states (all when empty).
    pub states: Vec<JobState>,
    /// Only jobs whose latest attempt ran on this agent.
    pub agent: Option<u32>,
    /// Only jobs with exactly this many attempts.
    pub attempts: Option<u32>,
    /// Only jobs that failed with exactly this message.
    pub error: Option<String>,
    /// Only jobs an attempt of which was given an input with this key and value.
    pub input: Option<PayloadMatch>,
    /// Only jobs that sent an output with this key and value.
    pub output: Option<PayloadMatch>,
}

/// A top-level key of a job's input or output and the value it must hold: a string equal
/// to it, or a number or boolean whose JSON text is it (`3` matches `{"n": 3}` and
/// `{"n": "3"}`). Objects, arrays and `null` match nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadMatch {
    key: String,
    value: String,
}

impl PayloadMatch {
    /// Checks the key: letters, digits, `_` and `-`, so that it names a key in every
    /// database's JSON path syntax alike.
    pub fn new(key: &str, value: &str) -> Result<Self, String> {
        let word = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
        if key.is_empty() || !key.chars().all(word) {
            return Err(format!(
                "the key `{key}` is not one a search takes: use letters, digits, `_` and `-`"
            ));
        }
        Ok(Self {
            key: key.to_owned(),
            value: value.to_owned(),
        })
    }

    /// Reads `KEY:VALUE` (the value may hold more colons).
    pub fn parse(text: &str) -> Result<Self, String> {
        let (key, value) = text
            .split_once(':')
            .ok_or_else(|| "it is not KEY:VALUE".to_owned())?;
        Self::new(key, value)
    }

    /// The key searched.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The value it must hold.
    pub fn value(&self) -> &str {
        &self.value
    }
}

/// A column a run's jobs list can be ordered by besides the index, which pages with `after`
/// ([`crate::Store::jobs_by_index`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobSort {
    /// How long the latest finished attempt took.
    Duration,
    /// Attempts started.
    Attempts,
    /// When the latest attempt started.
    Started,
    /// When the job ended.
    Finished,
}

text_enum!(JobSort {
    Duration => "duration", Attempts => "attempts", Started => "started", Finished => "finished",
});

impl JobSort {
    /// This column's value of `job`, as a cursor holds it.
    pub fn value_of(self, job: &Job) -> Option<SortValue> {
        match self {
            Self::Duration => job.duration_ms.map(SortValue::Float),
            Self::Attempts => Some(SortValue::Int(i64::from(job.attempts))),
            Self::Started => job.started_ms.map(|at| SortValue::Int(at as i64)),
            Self::Finished => job.finished_ms.map(|at| SortValue::Int(at as i64)),
        }
    }
}

/// Which way a list is ordered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SortOrder {
    /// Smallest first.
    #[default]
    Asc,
    /// Largest first.
    Desc,
}

text_enum!(SortOrder { Asc => "asc", Desc => "desc" });

/// A value of a [`JobSort`] column.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SortValue {
    /// Attempts and times.
    Int(i64),
    /// Durations.
    Float(f64),
}

/// Where a sorted jobs list goes on: after a job with a row, by its column's value (`None`
/// for NULL) and index, or, once rows ran out, after the job without a row at `index`.
/// Shown as `VALUE:INDEX`, `null:INDEX` or `rowless:INDEX`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum JobCursor {
    /// After a job with a row.
    Row {
        /// Its value of the sorted column.
        value: Option<SortValue>,
        /// Its index, which orders equal values.
        index: u64,
    },
    /// After a job without a row: those come after every row, by index.
    Rowless {
        /// Its index.
        index: u64,
    },
}

impl JobCursor {
    /// Reads a cursor of a list sorted by `sort`, as [`JobCursor`]'s `Display` wrote it.
    pub fn parse(text: &str, sort: JobSort) -> Option<Self> {
        let (value, index) = text.rsplit_once(':')?;
        let index = index.parse().ok()?;
        Some(match value {
            "rowless" => Self::Rowless { index },
            "null" => Self::Row { value: None, index },
            _ if sort == JobSort::Duration => Self::Row {
                value: Some(SortValue::Float(
                    value.parse().ok().filter(|v: &f64| v.is_finite())?,
                )),
                index,
            },
            _ => Self::Row {
                value: Some(SortValue::Int(value.parse().ok()?)),
                index,
            },
        })
    }
}

impl std::fmt::Display for JobCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A float's `Display` is the shortest text that reads back as the same float, so
        // the next page starts exactly after it.
        match self {
            Self::Row {
                value: Some(SortValue::Int(value)),
                index,
            } => write!(f, "{value}:{index}"),
            Self::Row {
                value: Some(SortValue::Float(value)),
                index,
            } => write!(f, "{value}:{index}"),
            Self::Row { value: None, index } => write!(f, "null:{index}"),
            Self::Rowless { index } => write!(f, "rowless:{index}"),
        }
    }
}

/// Filters of a run's events list.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventFilter {
    /// Only events of this kind.
    pub kind: Option<EventKind>,
    /// Only events of this agent.
    pub agent: Option<u32>,
    /// Only events of this job.
    pub job: Option<u64>,
}

/// A page of a list, and where the next one starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T, K = u64> {
    /// The items of this page, at most as many as the page size asked for.
    pub items: Vec<T>,
    /// The key to pass back (as `after`, or `cursor` for a sorted jobs list) for the next
    /// page, if there is one.
    pub next: Option<K>,
}

/// Top-level fields of outputs, counted.
pub(crate) fn coverage(outputs: impl Iterator<Item = Value>) -> (u64, Vec<FieldCoverage>) {
    let mut total = 0;
    let mut filled: BTreeMap<String, u64> = BTreeMap::new();
    for output in outputs {
        total += 1;
        if let Value::Object(fields) = output {
            for (field, value) in fields {
                let present = !matches!(&value, Value::Null)
                    && value.as_str().is_none_or(|text| !text.is_empty())
                    && value.as_array().is_none_or(|items| !items.is_empty());
                let slot = filled.entry(field).or_default();
                *slot += u64::from(present);
            }
        }
    }
    let fields = filled
        .into_iter()
        .map(|(field, filled)| FieldCoverage { field, filled })
        .collect();
    (total, fields)
}
