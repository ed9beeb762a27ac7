//! The in-process monitor: a [`Store`] plus the live feed the WebSocket serves.
//!
//! Ingest never waits for a subscriber: the feed is a bounded broadcast channel, and a
//! subscriber that falls behind is told how much it missed (`lagged`) and reloads through
//! REST. Run figures (counts, pace) are recomputed for changed runs at most every
//! [`RUN_REFRESH`], not per batch.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use armada_core::backend::EventWriter;
use armada_core::wire::{EventBatch, EventKind, Versioned, WIRE_VERSION, now_ms};
use futures::future::BoxFuture;
use serde::Serialize;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::control::{About, Control, Serves};
use crate::model::{Event, Finish, Job, NewRun, Run, RunState};
use crate::store::Store;
use crate::{Error, Result};

/// How often changed runs' figures are sent to subscribers.
pub const RUN_REFRESH: Duration = Duration::from_millis(250);

/// Messages the feed holds for its slowest subscriber before that one starts to lag.
const FEED_CAPACITY: usize = 4_096;

/// One message of the live feed, serialized once for every subscriber.
#[derive(Debug, Clone)]
pub struct Notice {
    /// The run it is about.
    pub run_id: Arc<str>,
    /// Whether the runs list shows it too (run changes and deletions).
    pub for_list: bool,
    /// The JSON text sent.
    pub text: Arc<str>,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Message<'a> {
    Run {
        run: &'a Run,
    },
    Jobs {
        run_id: &'a str,
        jobs: &'a [Job],
    },
    Events {
        run_id: &'a str,
        events: &'a [Event],
    },
    Deleted {
        run_id: &'a str,
    },
}

/// The monitor backend of one process: its store, its live feed, and optionally the
/// project's orchestrator for launching, cancelling and retrying from the dashboard.
/// Cheap to clone.
#[derive(Clone)]
pub struct Monitor {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    feed: broadcast::Sender<Notice>,
    changed_runs: Mutex<HashSet<String>>,
    control: Option<Arc<dyn Control>>,
    closed: CancellationToken,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.closed.cancel();
    }
}

impl std::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitor")
            .field("store", &self.inner.store.url())
            .field("control", &self.inner.control.is_some())
            .finish_non_exhaustive()
    }
}

impl Monitor {
    /// Opens the store at `url` (see [`Store::open`]) and starts the feed. Must be called
    /// inside a tokio runtime; the feed's refresh task ends when the last clone is dropped.
    pub async fn open(url: &str) -> Result<Self> {
        Ok(Self::new(Store::open(url).await?, None))
    }

    /// A monitor over `store`, with the project's orchestrator when there is one.
    pub fn new(store: Store, control: Option<Arc<dyn Control>>) -> Self {
        let (feed, _) = broadcast::channel(FEED_CAPACITY);
        let inner = Arc::new(Inner {
            store,
            feed,
            changed_runs: Mutex::default(),
            control,
            closed: CancellationToken::new(),
        });
        tokio::spawn(refresh_runs(Arc::downgrade(&inner), inner.closed.clone()));
        Self { inner }
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The project's orchestrator, if this monitor has one.
    pub fn control(&self) -> Option<&Arc<dyn Control>> {
        self.inner.control.as_ref()
    }

    /// Ends the live feed: WebSocket connections close and the refresh task stops. Also
    /// happens when the last clone is dropped.
    pub fn close(&self) {
        self.inner.closed.cancel();
    }

    /// Cancelled once the monitor is closed.
    pub fn closed(&self) -> CancellationToken {
        self.inner.closed.clone()
    }

    /// Subscribes to the live feed.
    pub fn subscribe(&self) -> broadcast::Receiver<Notice> {
        self.inner.feed.subscribe()
    }

    /// How many subscribers the live feed has: the dashboard tabs open on it.
    pub fn watchers(&self) -> usize {
        self.inner.feed.receiver_count()
    }

    /// Who serves this monitor's dashboard.
    pub fn about(&self) -> About {
        self.inner.control.as_ref().map_or(
            About {
                serves: Serves::Monitor,
                run_id: None,
                later: None,
            },
            |control| control.about(),
        )
    }

    /// Registers a run (idempotent) and tells subscribers.
    pub async fn register_run(&self, run: &NewRun) -> Result<()> {
        self.inner.store.register_run(run, now_ms()).await?;
        self.changed(&run.id);
        Ok(())
    }

    /// Marks a run ended and tells subscribers.
    pub async fn finish_run(&self, run_id: &str, finish: &Finish) -> Result<Run> {
        let run = self
            .inner
            .store
            .finish_run(run_id, finish, now_ms())
            .await?;
        self.publish(run_id, true, &Message::Run { run: &run });
        Ok(run)
    }

    /// Deletes a run with everything under it and tells subscribers.
    pub async fn delete_run(&self, run_id: &str) -> Result<()> {
        self.inner.store.delete_run(run_id).await?;
        self.publish(run_id, true, &Message::Deleted { run_id });
        Ok(())
    }

    /// Stores a batch once and sends what changed to subscribers; `false` when this batch id
    /// was stored before.
    pub async fn ingest(&self, batch: &EventBatch) -> Result<bool> {
        if batch.version() != WIRE_VERSION {
            return Err(crate::Error::Invalid(format!(
                "the event batch is of wire version {}, and this monitor reads version \
                 {WIRE_VERSION}: agents and monitor must be of the same Armada version",
                batch.version()
            )));
        }
        let ingested = self.inner.store.ingest(batch).await?;
        if !ingested.stored {
            return Ok(false);
        }
        let run_id = batch.run_id.as_str();
        if !ingested.jobs.is_empty() {
            let message = Message::Jobs {
                run_id,
                jobs: &ingested.jobs,
            };
            self.publish(run_id, false, &message);
        }
        let message = Message::Events {
            run_id,
            events: &ingested.events,
        };
        self.publish(run_id, false, &message);
        self.changed(run_id);
        if batch
            .events
            .iter()
            .any(|event| event.kind == EventKind::RunCompleted)
        {
            // The run ended without its launcher being needed: its last agent says so.
            let completed = Finish {
                status: RunState::Completed,
                jobs: Vec::new(),
            };
            // The batch is stored: failing it now would not mark the run again when it is
            // resent. Whoever follows or attaches to the run marks it as well.
            if let Err(error) = self.finish_run(run_id, &completed).await {
                tracing::warn!(run = run_id, %error, "cannot mark the completed run finished");
            }
        }
        Ok(true)
    }

    fn changed(&self, run_id: &str) {
        if let Ok(mut runs) = self.inner.changed_runs.lock() {
            runs.insert(run_id.to_owned());
        }
    }

    fn publish(&self, run_id: &str, for_list: bool, message: &Message<'_>) {
        self.inner.publish(run_id, for_list, message);
    }
}

impl Inner {
    fn publish(&self, run_id: &str, for_list: bool, message: &Message<'_>) {
        // Only plain data is serialized here; it cannot fail.
        let Ok(text) = serde_json::to_string(message) else {
            return;
        };
        // No subscriber is not an error: nobody is watching.
        let _ = self.feed.send(Notice {
            run_id: run_id.into(),
            for_list,
            text: text.into(),
        });
    }
}

/// Sends the figures of runs that changed, at most every [`RUN_REFRESH`].
async fn refresh_runs(inner: Weak<Inner>, closed: CancellationToken) {
    let mut tick = tokio::time::interval(RUN_REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = closed.cancelled() => return,
        }
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let runs: Vec<String> = match inner.changed_runs.lock() {
            Ok(mut runs) => runs.drain().collect(),
            Err(_) => return,
        };
        if inner.feed.receiver_count() == 0 {
            continue;
        }
        for run_id in runs {
            match inner.store.run(&run_id, now_ms()).await {
                Ok(run) => inner.publish(&run_id, true, &Message::Run { run: &run }),
                Err(Error::UnknownRun(_)) => {}
                Err(error) => tracing::warn!(%error, "cannot refresh a run for the dashboard"),
            }
        }
    }
}

impl EventWriter for Monitor {
    fn write(&self, batch: EventBatch) -> BoxFuture<'_, armada_core::Result<bool>> {
        Box::pin(async move {
            self.ingest(&batch)
                .await
                .map_err(|error| armada_core::Error::Backend {
                    service: "the monitor",
                    url: self.inner.store.url().to_owned(),
                    source: error.into(),
                })
        })
    }
}
