//! Storing an event batch: events, outputs, attachments, and the state of the jobs and
//! agents they are about, in one transaction, once per batch id.

use super::backend::StoreBackend;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::{Backend, Rowless, Store};
use crate::model::{Event, Job, JobState};
use crate::{Error, Result};
use armada_core::wire::{Attachment, EventBatch, EventKind, WIRE_VERSION};
use base64::Engine as _;
use serde_json::Value;

/// Most events one batch may carry.
pub const MAX_EVENTS_PER_BATCH: usize = 10_000;
/// How fresh an agent's `seen_ms` is kept: far finer than the stall limit, and far coarser than
/// batches arrive.
const SEEN_PRECISION_MS: u64 = 1_000;
/// Runs whose agents' last writes are kept before those of old runs are dropped.
const SEEN_RUNS: usize = 10_000;

/// What one batch changed, for the live feed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ingested {
    /// `false` when this batch id was stored before and nothing changed.
    pub stored: bool,
    /// The stored events, numbered.
    pub events: Vec<Event>,
    /// The jobs whose state changed, as they are now.
    pub jobs: Vec<Job>,
}

/// The net change a batch makes to one job: a backend applies it only if `attempt` is newer
/// than the job's, or the same while the job is not terminal, so neither a late event of an
/// earlier attempt nor a stray one of the attempt that ended the job takes the job back.
#[derive(Debug, Default)]
pub(super) struct JobPatch {
    /// The job's id, for the row the patch may create.
    pub(super) id: String,
    pub(super) status: Option<JobState>,
    pub(super) agent: u32,
    pub(super) attempt: u32,
    pub(super) started_ms: Option<u64>,
    pub(super) finished_ms: Option<u64>,
    pub(super) duration_ms: Option<f64>,
    pub(super) last_event: String,
    pub(super) error: Option<String>,
}

/// Who a batch shows alive, and when the monitor heard it: the run, and the agents that
/// reported anything, heartbeats included.
#[derive(Debug)]
pub(super) struct Seen {
    pub(super) at_ms: u64,
    pub(super) agents: BTreeSet<u32>,
}

/// The net change a batch makes to one agent: a backend inserts the agent or updates it,
/// keeping status, times and error it already has when the patch has none (an agent first
/// heard from without a lifecycle event is `starting`).
#[derive(Debug)]
pub(super) struct AgentPatch {
    pub(super) status: Option<&'static str>,
    pub(super) seen_ms: u64,
    pub(super) started_ms: Option<u64>,
    pub(super) stopped_ms: Option<u64>,
    pub(super) error: Option<String>,
}

/// One checked event of a batch, with an attachment's bytes split off.
pub(super) struct Decoded {
    pub(super) event: Event,
    pub(super) attachment: Option<(Attachment, Vec<u8>)>,
}

impl Store {
    /// Stores a batch whole, once: a batch id seen before changes nothing.
    pub async fn ingest(&self, batch: &EventBatch) -> Result<Ingested> {
        if batch.v != WIRE_VERSION {
            return Err(Error::Invalid(format!(
                "event batch wire version {} is not {WIRE_VERSION}: agents and monitor must run \
                 the same Armada version",
                batch.v
            )));
        }
        if batch.events.len() > MAX_EVENTS_PER_BATCH {
            return Err(Error::Invalid(format!(
                "an event batch holds at most {MAX_EVENTS_PER_BATCH} events; this one has {}",
                batch.events.len()
            )));
        }
        let run_id = batch.run_id.as_str();
        let mut seen = Seen {
            at_ms: armada_core::wire::now_ms(),
            agents: BTreeSet::new(),
        };
        let mut decoded = Vec::with_capacity(batch.events.len());
        for (position, event) in batch.events.iter().enumerate() {
            let follower = event
                .data
                .as_ref()
                .is_some_and(|data| data.get("follower") == Some(&Value::Bool(true)));
            if !(event.kind == EventKind::Heartbeat && follower) {
                seen.agents.insert(event.agent);
            }
            // Heartbeats say who is alive, nothing else: they are not stored.
            if event.kind != EventKind::Heartbeat {
                decoded.push(decode(position, event)?);
            }
        }
        seen.agents = self.due_for_seen(run_id, seen.agents, seen.at_ms);
        let batch_id = batch.batch_id.to_string();
        let Some(jobs) = dispatch!(self, ingest(&batch.run_id, &batch_id, &mut decoded, &seen))?
        else {
            return Ok(Ingested::default());
        };
        Ok(Ingested {
            stored: true,
            events: decoded.into_iter().map(|item| item.event).collect(),
            jobs,
        })
    }
}

impl Store {
    /// The agents heard from whose `seen_ms` was not written within [`SEEN_PRECISION_MS`]:
    /// those the batch writes it for (an agent's lifecycle events write it regardless).
    fn due_for_seen(&self, run_id: &str, heard: BTreeSet<u32>, now_ms: u64) -> BTreeSet<u32> {
        let Ok(mut written) = self.seen_written.lock() else {
            return heard;
        };
        if written.len() > SEEN_RUNS {
            written.retain(|_, agents| {
                agents.retain(|_, at| now_ms.saturating_sub(*at) < 60 * SEEN_PRECISION_MS);
                !agents.is_empty()
            });
        }
        // Looked up by `&str`: a run's key is allocated once, not once a batch.
        if !written.contains_key(run_id) {
            written.insert(run_id.to_owned(), HashMap::new());
        }
        let Some(agents) = written.get_mut(run_id) else {
            return heard;
        };
        heard
            .into_iter()
            .filter(|&agent| {
                let last = agents.entry(agent).or_insert(0);
                let due = now_ms.saturating_sub(*last) >= SEEN_PRECISION_MS;
                if due {
                    *last = now_ms;
                }
                due
            })
            .collect()
    }
}

/// Numbers a batch's events after the run's event count was raised by their number to
/// `last_seq`, in the transaction that stores them.
pub(super) fn number(decoded: &mut [Decoded], last_seq: u64) {
    let first_seq = last_seq + 1 - decoded.len() as u64;
    for (offset, item) in decoded.iter_mut().enumerate() {
        item.event.seq = first_seq + offset as u64;
    }
}

/// The outputs a batch carries: `output` events' data and succeeded jobs' `output`.
pub(super) fn outputs(decoded: &[Decoded]) -> Vec<(&Event, &Value)> {
    decoded
        .iter()
        .filter_map(|Decoded { event, .. }| {
            let data = event.data.as_ref()?;
            let output = match event.kind {
                EventKind::Output => data,
                EventKind::JobSucceeded => data.get("output")?,
                _ => return None,
            };
            (event.job.is_some() && !output.is_null()).then_some((event, output))
        })
        .collect()
}

/// The net change a batch makes to each job it is about, by job index. An event about a job
/// the run does not have (`rowless.jobs` or past) is stored but changes no job.
pub(super) fn job_patches(decoded: &[Decoded], rowless: &Rowless) -> BTreeMap<u64, JobPatch> {
    let mut patches: BTreeMap<u64, JobPatch> = BTreeMap::new();
    for Decoded { event, .. } in decoded {
        let (Some(index), Some(attempt)) = (event.job, event.attempt) else {
            continue;
        };
        if index >= rowless.jobs {
            continue;
        }
        let patch = patches.entry(index).or_insert_with(|| JobPatch {
            id: rowless.id(index),
            ..JobPatch::default()
        });
        if attempt < patch.attempt {
            continue; // a late event of an earlier attempt
        }
        patch.attempt = attempt;
        patch.agent = event.agent;
        patch.last_event = event
            .message
            .clone()
            .unwrap_or_else(|| event.kind.as_str().to_owned());
        let duration = || {
            event
                .data
                .as_ref()
                .and_then(|data| data.get("duration_ms"))
                .and_then(Value::as_f64)
        };
        match event.kind {
            EventKind::JobStarted => {
                patch.status = Some(JobState::Running);
                patch.started_ms = Some(event.at_ms);
            }
            EventKind::Retrying => {
                patch.status = Some(JobState::Retrying);
                patch.duration_ms = duration();
                patch.error = event.message.clone();
            }
            EventKind::JobSucceeded => {
                patch.status = Some(JobState::Succeeded);
                patch.finished_ms = Some(event.at_ms);
                patch.duration_ms = duration();
            }
            EventKind::JobFailed => {
                patch.status = Some(JobState::Failed);
                patch.finished_ms = Some(event.at_ms);
                patch.duration_ms = duration();
                patch.error = event.message.clone();
            }
            _ => {}
        }
    }
    patches
}

/// The net change a batch makes to each agent it shows alive, by agent index.
pub(super) fn agent_patches(decoded: &[Decoded], seen: &Seen) -> BTreeMap<u32, AgentPatch> {
    let mut patches: BTreeMap<u32, AgentPatch> = seen
        .agents
        .iter()
        .map(|&agent| {
            let patch = AgentPatch {
                status: None,
                seen_ms: seen.at_ms,
                started_ms: None,
                stopped_ms: None,
                error: None,
            };
            (agent, patch)
        })
        .collect();
    for Decoded { event, .. } in decoded {
        let (status, started, stopped, error) = match event.kind {
            EventKind::AgentStarting => ("starting", None, None, None),
            EventKind::AgentStarted => ("running", Some(event.at_ms), None, None),
            EventKind::AgentStartFailed => (
                "start_failed",
                None,
                Some(event.at_ms),
                event.message.clone(),
            ),
            EventKind::AgentStopped => ("stopped", None, Some(event.at_ms), None),
            _ => continue,
        };
        let patch = patches.entry(event.agent).or_insert(AgentPatch {
            status: None,
            seen_ms: seen.at_ms,
            started_ms: None,
            stopped_ms: None,
            error: None,
        });
        patch.status = Some(status);
        patch.started_ms = started.or(patch.started_ms);
        patch.stopped_ms = stopped.or(patch.stopped_ms);
        patch.error = error.or(patch.error.take());
    }
    patches
}

/// Checks one event and splits off an attachment's bytes, which are stored apart from it.
fn decode(position: usize, event: &armada_core::wire::Event) -> Result<Decoded> {
    let job = event.job.map(|job| job.index);
    let attempt = event.job.map(|job| job.attempt);
    let mut data = event.data.clone();
    let mut attachment = None;
    if event.kind == EventKind::Attachment {
        let invalid = |why: String| {
            Error::Invalid(format!(
                "event {position} of the batch is a bad attachment: {why}"
            ))
        };
        if job.is_none() {
            return Err(invalid("it names no job".into()));
        }
        let mut file: Attachment = serde_json::from_value(data.take().unwrap_or_default())
            .map_err(|error| invalid(error.to_string()))?;
        file.name = storable_text(&file.name);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&file.base64)
            .map_err(|error| invalid(format!("its base64 does not decode: {error}")))?;
        if bytes.len() > Attachment::MAX_BYTES {
            return Err(invalid(format!(
                "{} bytes is over the {} byte limit",
                bytes.len(),
                Attachment::MAX_BYTES
            )));
        }
        data = Some(serde_json::json!({
            "name": file.name,
            "content_type": file.content_type,
            "size": bytes.len(),
        }));
        attachment = Some((file, bytes));
    }
    if let Some(input) = job_input(event) {
        match &mut data {
            Some(Value::Object(fields)) => {
                fields.insert("input".to_owned(), input);
            }
            _ => data = Some(serde_json::json!({ "input": input })),
        }
    }
    // Agents hide their secrets before sending; this hides those the monitor's own process
    // read (a run launched from it) from an agent that did not.
    if let Some(data) = &mut data {
        armada_core::redact_secrets_in(data);
    }
    Ok(Decoded {
        event: Event {
            seq: 0,
            kind: event.kind,
            at_ms: event.at_ms,
            agent: event.agent,
            job,
            attempt,
            message: event.message.as_deref().map(storable_text),
            data,
        },
        attachment,
    })
}

/// The job's input an event carries, as the dashboard shows it: under `input` in the event's
/// data, with values under secret-looking keys hidden too (an agent in another process hides
/// only the secrets it typed).
fn job_input(event: &armada_core::wire::Event) -> Option<Value> {
    let input = serde_json::from_str(event.input.as_deref()?.get()).ok()?;
    Some(super::redact(input))
}

/// `text` as every store holds it: PostgreSQL's text type refuses NUL, which becomes `␀`
/// (U+2400, the symbol for null) instead of costing the whole batch; a secret shows `***`.
fn storable_text(text: &str) -> String {
    armada_core::redact_secrets(text).replace('\0', "\u{2400}")
}
