//! The job's reporting handle. Reporting never blocks a script: events go into a bounded
//! channel drained by the monitoring client (`armada-monitor`); when it is full, events are
//! dropped and counted.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;
use tokio::sync::mpsc;

use crate::AgentIndex;
use crate::wire::{Attachment, Event, EventJob, EventKind, now_ms};

/// The sending half of a run's event channel; cheap to clone.
#[derive(Debug, Clone)]
pub struct EventSender {
    tx: mpsc::Sender<Event>,
    dropped: Arc<AtomicU64>,
}

impl EventSender {
    /// A channel holding at most `capacity` events not yet taken by the receiver.
    pub fn channel(capacity: usize) -> (Self, mpsc::Receiver<Event>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let sender = Self {
            tx,
            dropped: Arc::new(AtomicU64::new(0)),
        };
        (sender, rx)
    }

    /// Queues an event without waiting; counts it as dropped when the channel is full or closed.
    /// Its message and data leave with every [`Secret`](crate::Secret) hidden.
    pub fn send(&self, mut event: Event) {
        if let Some(message) = &mut event.message
            && let std::borrow::Cow::Owned(hidden) = crate::redact_secrets(message)
        {
            *message = hidden;
        }
        if let Some(data) = &mut event.data {
            crate::redact_secrets_in(data);
        }
        if let Some(input) = &mut event.input
            && let std::borrow::Cow::Owned(hidden) = crate::redact_secrets(input.get())
        {
            // A secret is hidden inside a JSON string, which stays one; were the text no
            // longer JSON, no input is sent rather than the secret.
            event.input = RawValue::from_string(hidden).ok().map(Arc::from);
        }
        if self.tx.try_send(event).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Events dropped so far because the monitor could not keep up or was gone.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Tells the monitor that a process following the run (not an agent) is alive.
    pub fn follower_heartbeat(&self) {
        self.send(Event {
            kind: EventKind::Heartbeat,
            at_ms: now_ms(),
            agent: 0,
            job: None,
            message: None,
            data: Some(serde_json::json!({ "follower": true })),
            input: None,
        });
    }

    /// Sends an agent-level event (no job).
    pub fn agent_event(&self, agent: AgentIndex, kind: EventKind, message: Option<String>) {
        self.send(Event {
            kind,
            at_ms: now_ms(),
            agent,
            job: None,
            message,
            data: None,
            input: None,
        });
    }
}

/// Reports the steps of one job attempt to the monitor.
#[derive(Debug, Clone)]
pub struct Reporter {
    sender: EventSender,
    agent: AgentIndex,
    job: EventJob,
}

impl Reporter {
    /// A reporter for one attempt of one job.
    pub fn new(sender: EventSender, agent: AgentIndex, job: EventJob) -> Self {
        Self { sender, agent, job }
    }

    /// Sends an event of any kind.
    pub fn event(&self, kind: EventKind, message: Option<String>, data: Option<Value>) {
        self.sender.send(Event {
            kind,
            at_ms: now_ms(),
            agent: self.agent,
            job: Some(self.job),
            message,
            data,
            input: None,
        });
    }

    /// Reports that the attempt started, with the job's input as its message carries it; for
    /// agents, which start attempts.
    pub fn job_started(&self, input: Arc<RawValue>) {
        self.sender.send(Event {
            kind: EventKind::JobStarted,
            at_ms: now_ms(),
            agent: self.agent,
            job: Some(self.job),
            message: None,
            data: None,
            input: Some(input),
        });
    }

    /// A step that went well ("Page loaded").
    pub fn success(&self, message: impl Into<String>) {
        self.event(EventKind::Success, Some(message.into()), None);
    }

    /// A step that went wrong, without failing the job.
    pub fn failure(&self, message: impl Into<String>) {
        self.event(EventKind::Failure, Some(message.into()), None);
    }

    /// Something worth knowing.
    pub fn info(&self, message: impl Into<String>) {
        self.event(EventKind::Info, Some(message.into()), None);
    }

    /// Progress within the job.
    pub fn progress(&self, done: u64, total: u64) {
        let data = serde_json::json!({ "done": done, "total": total });
        self.event(EventKind::Progress, None, Some(data));
    }

    /// A file of this attempt (a screenshot, a page's HTML), shown with the job in the
    /// dashboard. Files over [`Attachment::MAX_BYTES`] are reported by name only.
    pub fn attach(&self, name: &str, content_type: &str, bytes: &[u8]) {
        if bytes.len() > Attachment::MAX_BYTES {
            self.info(format!(
                "attachment {name} ({} bytes) is over the {} byte limit and was not sent",
                bytes.len(),
                Attachment::MAX_BYTES
            ));
            return;
        }
        let attachment = Attachment::new(name, content_type, bytes);
        // An attachment always encodes: it holds only strings.
        let data = serde_json::to_value(attachment).ok();
        self.event(EventKind::Attachment, Some(name.to_owned()), data);
    }

    /// A structured output, stored with the run's outputs.
    pub fn output(&self, output: &impl Serialize) -> crate::Result<()> {
        let data = serde_json::to_value(output).map_err(|source| crate::Error::Encode {
            what: "a job output",
            source,
        })?;
        self.event(EventKind::Output, None, Some(data));
        Ok(())
    }
}
