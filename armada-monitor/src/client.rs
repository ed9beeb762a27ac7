//! The batching client behind every job's [`Reporter`](armada_core::Reporter). Scripts never
//! wait for it: events go into a bounded channel; a background task owned by the client
//! gathers them into batches, flushes them to the run's [`EventSink`] on a short interval and
//! at close, retries a failing sink with backoff, and counts what it had to drop.

use std::time::Duration;

use armada_core::wire::{BatchId, Event, EventBatch, WIRE_VERSION};
use armada_core::{EventSender, EventSink, RunId};
use futures::FutureExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How the client batches and retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientOptions {
    /// Events buffered before new ones are dropped (and counted).
    pub buffer: usize,
    /// Events in one batch at most.
    pub max_batch: usize,
    /// How long the first event of a batch waits for others.
    pub flush_interval: Duration,
    /// Attempts to write one batch before its events are counted as dropped.
    pub write_attempts: u32,
    /// Delay after the first failed write; doubled after each further failure.
    pub retry_backoff: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            buffer: 65_536,
            max_batch: 1_024,
            flush_interval: Duration::from_millis(25),
            write_attempts: 5,
            retry_backoff: Duration::from_millis(100),
        }
    }
}

/// What the client delivered, once closed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Events written to the sink.
    pub delivered: u64,
    /// Batches written to the sink, each of up to [`ClientOptions::max_batch`] events.
    pub batches: u64,
    /// Events lost: the buffer was full, or the sink kept failing.
    pub dropped: u64,
}

/// Batches one run's events into its sink. Owns its flushing task; [`MonitorClient::close`]
/// flushes what is buffered and ends it.
#[derive(Debug)]
pub struct MonitorClient {
    sender: EventSender,
    stop: CancellationToken,
    task: JoinHandle<ClientStats>,
}

impl MonitorClient {
    /// Starts the client for `run_id`. Must be called inside a tokio runtime.
    pub fn start(run_id: RunId, sink: EventSink, options: ClientOptions) -> Self {
        let (sender, receiver) = EventSender::channel(options.buffer);
        let stop = CancellationToken::new();
        let task = tokio::spawn(flush_loop(run_id, sink, options, receiver, stop.clone()));
        Self { sender, stop, task }
    }

    /// The sending half given to agents and reporters.
    pub fn sender(&self) -> EventSender {
        self.sender.clone()
    }

    /// Flushes everything sent so far and stops the flushing task.
    pub async fn close(self) -> ClientStats {
        self.stop.cancel();
        let dropped_at_send = self.sender.dropped();
        let mut stats = match self.task.await {
            Ok(stats) => stats,
            Err(error) => {
                tracing::error!(%error, "the monitor client's flushing task failed");
                ClientStats::default()
            }
        };
        stats.dropped += dropped_at_send;
        if stats.dropped > 0 {
            tracing::warn!(
                dropped = stats.dropped,
                "monitor events were dropped: the event sink could not keep up or was unreachable"
            );
        }
        stats
    }
}

async fn flush_loop(
    run_id: RunId,
    sink: EventSink,
    options: ClientOptions,
    mut receiver: mpsc::Receiver<Event>,
    stop: CancellationToken,
) -> ClientStats {
    let mut stats = ClientStats::default();
    let mut batch = Vec::with_capacity(options.max_batch);
    let mut stopping = false;
    while !stopping {
        tokio::select! {
            received = receiver.recv_many(&mut batch, options.max_batch) => {
                if received == 0 {
                    break;
                }
            }
            () = stop.cancelled() => stopping = true,
        }
        if !stopping {
            stopping = fill(&mut receiver, &mut batch, &options, &stop).await;
        }
        if stopping {
            while batch.len() < options.max_batch {
                match receiver.try_recv() {
                    Ok(event) => batch.push(event),
                    Err(_) => break,
                }
            }
        }
        write_batch(&run_id, &sink, &options, &mut batch, &mut stats).await;
        if stopping {
            // Drain whatever is left in full batches.
            while !receiver.is_empty() {
                receiver.recv_many(&mut batch, options.max_batch).await;
                write_batch(&run_id, &sink, &options, &mut batch, &mut stats).await;
            }
        }
    }
    stats
}

/// How often a filling batch takes what was sent.
const FILL_STEP: Duration = Duration::from_millis(1);

/// Lets a batch fill for a moment (fewer, larger writes), taking what was sent every
/// [`FILL_STEP`] rather than being woken by each event: senders on other threads (agents on
/// their script runtime) would otherwise pay a thread wake-up per event. Returns whether the
/// client was told to stop.
async fn fill(
    receiver: &mut mpsc::Receiver<Event>,
    batch: &mut Vec<Event>,
    options: &ClientOptions,
    stop: &CancellationToken,
) -> bool {
    let deadline = tokio::time::Instant::now() + options.flush_interval;
    while batch.len() < options.max_batch {
        let room = options.max_batch - batch.len();
        // Only what is there now: polled once with a waker that does nothing, so a sender
        // wakes no thread.
        if let Some(0) = receiver.recv_many(batch, room).now_or_never() {
            break; // closed and empty
        }
        let now = tokio::time::Instant::now();
        if batch.len() >= options.max_batch || now >= deadline {
            break;
        }
        tokio::select! {
            () = tokio::time::sleep_until((now + FILL_STEP).min(deadline)) => {}
            () = stop.cancelled() => return true,
        }
    }
    false
}

async fn write_batch(
    run_id: &RunId,
    sink: &EventSink,
    options: &ClientOptions,
    events: &mut Vec<Event>,
    stats: &mut ClientStats,
) {
    if events.is_empty() {
        return;
    }
    let count = events.len() as u64;
    let batch = EventBatch {
        v: WIRE_VERSION,
        batch_id: BatchId::new_v4(),
        run_id: run_id.clone(),
        events: std::mem::take(events),
    };
    let mut delay = options.retry_backoff;
    for attempt in 1..=options.write_attempts.max(1) {
        // The same batch id on every attempt: a write that succeeded but whose answer was lost
        // is not stored twice.
        match sink.write(batch.clone()).await {
            Ok(_) => {
                stats.delivered += count;
                stats.batches += 1;
                return;
            }
            Err(error) if attempt < options.write_attempts => {
                tracing::debug!(%error, attempt, "event batch write failed; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            Err(error) => {
                tracing::warn!(%error, events = count, "event batch dropped after retries");
            }
        }
    }
    stats.dropped += count;
}
