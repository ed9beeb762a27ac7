//! The RabbitMQ job queue (feature `rabbitmq`).
//!
//! Per run, on the default exchange:
//! - `armada.{run}.jobs`: a durable quorum queue of persistent [`JobMessage`]s as JSON:
//!   replicated on a cluster and kept whole through a broker restart. It only says whether a
//!   message was redelivered; the agent counts redeliveries in the config store, so attempts
//!   lost with their agents are counted exactly.
//! - `armada.{run}.due`: a quorum queue of jobs taken before any never-tried job: retries whose
//!   delay ended, and jobs a consumer handed back unstarted. Consumers look into it between
//!   jobs (`basic.get`, every [`DUE_LOOK_EVERY`] at most) and, while they hold a due job, stop
//!   their subscription to the jobs queue, so that no never-tried job waits in their prefetch.
//! - `armada.{run}.delay.{ms}`: one quorum queue per retry delay; messages expire after `ms`
//!   and are dead-lettered to the due queue at least once. A queue per delay avoids the
//!   head-of-line blocking of per-message TTLs; each expires once unused.
//! - `armada.{run}.dead`: jobs that failed for good and messages that could not be decoded,
//!   with the reason in the `x-armada-reason` header.
//!
//! Every publish waits for the broker's confirm. Consumers ack manually, only after the job's
//! outcome is recorded, and reconnect with backoff when the broker goes away. Deleting the jobs
//! queue cancels its consumers: that is how agents learn that their run ended.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use lapin::Confirmation;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicGetOptions, BasicNackOptions,
    BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::contract::{JobQueueBackend, QueueConsumer, QueueDelivery};
use super::{DeadLetter, PlannedJobs, redact_url};
use crate::error::OutageOutlasted;
use crate::wire::JobMessage;
use crate::{BoxError, Error, Result, RunId};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Publishes in flight before waiting for their confirms.
const CONFIRM_WINDOW: usize = 1_024;
const REASON_HEADER: &str = "x-armada-reason";
/// How often a consumer looks into the due queue at most: a retry starts this much after its
/// delay at worst, once an agent is free; each look is one round trip to the broker.
pub const DUE_LOOK_EVERY: Duration = Duration::from_millis(50);

fn jobs_queue(run: &RunId) -> String {
    format!("armada.{run}.jobs")
}

fn due_queue(run: &RunId) -> String {
    format!("armada.{run}.due")
}

fn dead_queue(run: &RunId) -> String {
    format!("armada.{run}.dead")
}

fn delay_queue(run: &RunId, delay: Duration) -> String {
    format!("armada.{run}.delay.{}", delay.as_millis())
}

/// A connection to RabbitMQ with one confirm-mode channel for publishing.
#[derive(Clone)]
pub struct RabbitQueue {
    url: Arc<str>,
    shown: String,
    publisher: Arc<Mutex<Option<Link>>>,
    outage_limit: Duration,
}

impl std::fmt::Debug for RabbitQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitQueue")
            .field("url", &self.shown)
            .field("outage_limit", &self.outage_limit)
            .finish()
    }
}

/// A queue that the broker would not declare or delete.
#[derive(Debug, thiserror::Error)]
#[error("cannot {action} queue {queue}: {source}")]
struct QueueFailed {
    /// `declare` or `delete`.
    action: &'static str,
    /// The queue's name.
    queue: String,
    #[source]
    source: lapin::Error,
}

/// Whether a channel waits for the broker's confirms: publishing channels do; consuming and
/// reading channels do not need to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Confirms {
    On,
    Off,
}

struct Link {
    connection: Connection,
    channel: Channel,
}

impl Link {
    /// Closes the connection, waiting a bounded time for the broker's answer, then for lapin's
    /// I/O thread to end: that thread closes the socket through a task on this runtime, and
    /// panics if the runtime stops first (as it does when a process returns from `main`).
    async fn close(self, reason: &'static str) {
        let Self {
            connection,
            channel,
        } = self;
        drop(channel);
        let close = connection.close(200, reason.into());
        // Closed now, or closed already (by the broker, or a broken socket): either way the
        // I/O thread is ending, so joining it cannot hang. Unanswered, it may not be.
        if tokio::time::timeout(CONNECT_TIMEOUT, close).await.is_ok() {
            let _ = tokio::task::spawn_blocking(move || connection.run()).await;
        }
    }
}

impl RabbitQueue {
    /// Connects and opens the publishing channel, so a bad URL or broker fails here.
    pub async fn connect(url: &str) -> Result<Self> {
        let queue = Self {
            url: url.into(),
            shown: redact_url(url),
            publisher: Arc::new(Mutex::new(None)),
            outage_limit: super::DEFAULT_OUTAGE_LIMIT,
        };
        let link = queue.open_link(Confirms::On).await?;
        *queue.publisher.lock().await = Some(link);
        Ok(queue)
    }

    fn failed(&self, error: impl Into<BoxError>) -> Error {
        Error::Backend {
            service: "RabbitMQ",
            url: self.shown.clone(),
            source: error.into(),
        }
    }

    async fn open_link(&self, confirms: Confirms) -> Result<Link> {
        let open = async {
            let connection =
                Connection::connect(&self.url, ConnectionProperties::default()).await?;
            let channel = connection.create_channel().await?;
            if confirms == Confirms::On {
                channel
                    .confirm_select(ConfirmSelectOptions::default())
                    .await?;
            }
            Ok::<_, lapin::Error>(Link {
                connection,
                channel,
            })
        };
        tokio::time::timeout(CONNECT_TIMEOUT, open)
            .await
            .map_err(|_| self.failed(format!("no answer within {CONNECT_TIMEOUT:?}")))?
            .map_err(|error| self.failed(error))
    }

    /// The publishing channel, reopened with backoff if the broker went away.
    async fn publisher(&self) -> Result<Channel> {
        let mut link = self.publisher.lock().await;
        if let Some(current) = link.as_ref()
            && current.channel.status().connected()
        {
            return Ok(current.channel.clone());
        }
        let fresh = self.reconnect().await?;
        let channel = fresh.channel.clone();
        *link = Some(fresh);
        Ok(channel)
    }

    /// How long reconnecting keeps trying through an outage before it fails (default
    /// [`super::DEFAULT_OUTAGE_LIMIT`]).
    pub fn with_outage_limit(mut self, limit: Duration) -> Self {
        self.outage_limit = limit;
        self
    }

    /// The error for an outage that outlasted the limit.
    fn outlasted(&self, error: Error) -> Error {
        self.failed(OutageOutlasted {
            limit: self.outage_limit,
            source: error.into(),
        })
    }

    async fn reconnect(&self) -> Result<Link> {
        let mut delay = Duration::from_millis(100);
        let deadline = Instant::now() + self.outage_limit;
        loop {
            match self.open_link(Confirms::On).await {
                Ok(link) => return Ok(link),
                Err(error) if Instant::now() + delay > deadline => {
                    return Err(self.outlasted(error));
                }
                Err(error) => {
                    tracing::warn!(%error, "RabbitMQ unreachable; reconnecting in {delay:?}");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(RECONNECT_BACKOFF_MAX);
                }
            }
        }
    }

    async fn declare(&self, channel: &Channel, name: &str, arguments: FieldTable) -> Result<()> {
        let options = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        channel
            .queue_declare(name.into(), options, arguments)
            .await
            .map(drop)
            .map_err(|source| {
                self.failed(QueueFailed {
                    action: "declare",
                    queue: name.to_owned(),
                    source,
                })
            })
    }

    async fn declare_run(&self, channel: &Channel, run: &RunId) -> Result<()> {
        let mut quorum = FieldTable::default();
        quorum.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
        self.declare(channel, &jobs_queue(run), quorum.clone())
            .await?;
        self.declare(channel, &due_queue(run), quorum).await?;
        self.declare(channel, &dead_queue(run), FieldTable::default())
            .await
    }

    /// Publishes with confirms, `CONFIRM_WINDOW` at a time; returns once the broker holds all.
    async fn publish_confirmed(
        &self,
        channel: &Channel,
        queue: &str,
        bodies: impl Iterator<Item = (Vec<u8>, FieldTable)>,
    ) -> Result<()> {
        let mut pending = Vec::with_capacity(CONFIRM_WINDOW);
        let mut bodies = bodies.peekable();
        while bodies.peek().is_some() {
            for (body, headers) in bodies.by_ref().take(CONFIRM_WINDOW) {
                let properties = BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_content_type("application/json".into())
                    .with_headers(headers);
                let confirm = channel
                    .basic_publish(
                        "".into(),
                        queue.into(),
                        BasicPublishOptions::default(),
                        &body,
                        properties,
                    )
                    .await
                    .map_err(|error| self.failed(error))?;
                pending.push(confirm);
            }
            for confirm in pending.drain(..) {
                match confirm.await.map_err(|error| self.failed(error))? {
                    Confirmation::Ack(_) | Confirmation::NotRequested => {}
                    Confirmation::Nack(_) => {
                        return Err(
                            self.failed(format!("the broker refused a message for {queue}"))
                        );
                    }
                }
            }
        }
        Ok(())
    }

    async fn publish_retry(
        &self,
        run: &RunId,
        message: &JobMessage,
        delay: Duration,
    ) -> Result<()> {
        let body = serde_json::to_vec(message).map_err(|source| Error::Encode {
            what: "a job message",
            source,
        })?;
        if delay.is_zero() {
            return self
                .publish_one(&due_queue(run), None, body, FieldTable::default())
                .await;
        }
        let millis = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX / 2);
        let mut arguments = FieldTable::default();
        // A quorum queue dead-letters at least once; a classic one at most once, and a broker
        // restart lost a retry whose delay ran out before the jobs queue had its leader again
        // ("leader not known. Command is dropped"). At-least-once needs reject-publish.
        arguments.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
        arguments.insert(
            "x-dead-letter-strategy".into(),
            AMQPValue::LongString("at-least-once".into()),
        );
        arguments.insert(
            "x-overflow".into(),
            AMQPValue::LongString("reject-publish".into()),
        );
        arguments.insert("x-message-ttl".into(), AMQPValue::LongLongInt(millis));
        arguments.insert(
            "x-expires".into(),
            AMQPValue::LongLongInt(millis.saturating_add(60_000)),
        );
        arguments.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString("".into()),
        );
        arguments.insert(
            "x-dead-letter-routing-key".into(),
            AMQPValue::LongString(due_queue(run).as_str().into()),
        );
        self.publish_one(
            &delay_queue(run, delay),
            Some(arguments),
            body,
            FieldTable::default(),
        )
        .await
    }

    async fn publish_dead(&self, run: &RunId, body: Vec<u8>, reason: &str) -> Result<()> {
        let mut headers = FieldTable::default();
        headers.insert(REASON_HEADER.into(), AMQPValue::LongString(reason.into()));
        self.publish_one(&dead_queue(run), None, body, headers)
            .await
    }

    /// Publishes one message with its confirm, declaring its queue first when `declare` is
    /// given. Rides out a broker restart: a failed publish reconnects and tries again, so an
    /// agent survives the outage (at worst a message is published twice, and its job's
    /// outcome is still recorded once).
    async fn publish_one(
        &self,
        queue: &str,
        declare: Option<FieldTable>,
        body: Vec<u8>,
        headers: FieldTable,
    ) -> Result<()> {
        let mut delay = Duration::from_millis(100);
        let deadline = Instant::now() + self.outage_limit;
        loop {
            let channel = self.publisher().await?;
            let published = async {
                if let Some(arguments) = &declare {
                    self.declare(&channel, queue, arguments.clone()).await?;
                }
                self.publish_confirmed(
                    &channel,
                    queue,
                    std::iter::once((body.clone(), headers.clone())),
                )
                .await
            }
            .await;
            match published {
                Ok(()) => return Ok(()),
                Err(error) if Instant::now() + delay > deadline => {
                    return Err(self.outlasted(error));
                }
                Err(error) => {
                    tracing::warn!(%error, queue, "publish failed; reconnecting in {delay:?}");
                    // Force a fresh channel: this one may look open while its connection died.
                    *self.publisher.lock().await = None;
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(RECONNECT_BACKOFF_MAX);
                }
            }
        }
    }

    async fn read_dead_letters(&self, run: &RunId) -> Result<Vec<DeadLetter>> {
        let link = self.open_link(Confirms::Off).await?;
        let read = async {
            let mut letters = Vec::new();
            loop {
                let got = match link
                    .channel
                    .basic_get(
                        dead_queue(run).as_str().into(),
                        BasicGetOptions { no_ack: false },
                    )
                    .await
                {
                    Ok(got) => got,
                    Err(error) if queue_gone(&error) => break,
                    Err(error) => return Err(self.failed(error)),
                };
                let Some(message) = got else { break };
                let delivery = &message.delivery;
                let reason = header_text(delivery.properties.headers().as_ref(), REASON_HEADER)
                    .unwrap_or_else(|| "no reason recorded".to_owned());
                letters.push(DeadLetter {
                    message: serde_json::from_slice(&delivery.data).ok(),
                    reason,
                });
            }
            Ok(letters)
        }
        .await;
        // Closing the connection returns every message read to the queue.
        link.close("read dead letters").await;
        read
    }
}

impl JobQueueBackend for RabbitQueue {
    type Consumer = RabbitConsumer;

    async fn publish(&self, run: &RunId, jobs: PlannedJobs) -> Result<()> {
        let channel = self.publisher().await?;
        self.declare_run(&channel, run).await?;
        let mut encoded = Vec::new();
        for message in jobs.iter() {
            let body = serde_json::to_vec(&message).map_err(|source| Error::Encode {
                what: "a job message",
                source,
            })?;
            encoded.push((body, FieldTable::default()));
            if encoded.len() == CONFIRM_WINDOW * 8 {
                self.publish_confirmed(&channel, &jobs_queue(run), encoded.drain(..))
                    .await?;
            }
        }
        self.publish_confirmed(&channel, &jobs_queue(run), encoded.into_iter())
            .await
    }

    async fn consume(&self, run: &RunId, prefetch: u16) -> Result<RabbitConsumer> {
        let mut consumer = RabbitConsumer {
            taker: Taker {
                queue: self.clone(),
                run: run.clone(),
                unsettled: Arc::new(AtomicUsize::new(0)),
            },
            prefetch: prefetch.max(1),
            link: None,
            gone: false,
            look: None,
            next_due_look: Instant::now(),
            no_due_queue: false,
        };
        consumer.gone = matches!(consumer.subscribe().await?, Subscribed::QueueGone);
        Ok(consumer)
    }

    /// Deletes the run's queues; consumers of its jobs are cancelled. Queues already gone
    /// (the run was canceled from elsewhere) are fine.
    async fn delete(&self, run: &RunId) -> Result<()> {
        // The jobs queue first: its consumers learn from its deletion that the run ended.
        for name in [jobs_queue(run), due_queue(run), dead_queue(run)] {
            // A NOT_FOUND closes the channel: take a fresh one for each queue.
            let channel = self.publisher().await?;
            match channel
                .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
                .await
            {
                Ok(_) => {}
                Err(error) if queue_gone(&error) => {}
                Err(error) => {
                    return Err(self.failed(QueueFailed {
                        action: "delete",
                        queue: name,
                        source: error,
                    }));
                }
            }
        }
        Ok(())
    }

    /// The run's dead letters, left in place (read on a connection that is closed unacked).
    /// Rides out an outage of the broker up to the outage limit.
    async fn dead_letters(&self, run: &RunId) -> Result<Vec<DeadLetter>> {
        let mut delay = Duration::from_millis(100);
        let deadline = Instant::now() + self.outage_limit;
        loop {
            match self.read_dead_letters(run).await {
                Err(error) if Instant::now() + delay <= deadline => {
                    tracing::warn!(%error, run = %run, "cannot read dead letters; retrying in {delay:?}");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(RECONNECT_BACKOFF_MAX);
                }
                Err(error) => return Err(self.outlasted(error)),
                read => return read,
            }
        }
    }

    /// Closes the publishing connection, if open. Call it before the runtime stops: lapin's
    /// I/O thread panics when the tasks it waits on are dropped with the runtime.
    async fn close(&self) {
        if let Some(link) = self.publisher.lock().await.take() {
            link.close("done").await;
        }
    }
}

/// Whether the broker answered that the queue does not exist (the run's queues were deleted).
fn queue_gone(error: &lapin::Error) -> bool {
    error.to_string().contains("NOT_FOUND")
}

fn header_text(headers: Option<&FieldTable>, name: &str) -> Option<String> {
    match headers?.inner().get(&ShortString::from(name))? {
        AMQPValue::LongString(text) => Some(text.to_string()),
        AMQPValue::ShortString(text) => Some(text.to_string()),
        _ => None,
    }
}

/// Consumes one run's jobs, due ones first; reconnects when the broker goes away.
///
/// `next` is cancel-safe, as the agent's loop needs (it races `next` against its checks): the
/// subscription's stream loses nothing when a wait for it is dropped, and a look into the due
/// queue, which a dropped wait would cut between the broker's answer and its delivery, is kept
/// and finished by the next call.
pub struct RabbitConsumer {
    taker: Taker,
    prefetch: u16,
    link: Option<ConsumerLink>,
    /// The run's queue was found deleted: the run is over, and there is nothing to reconnect
    /// to (a reconnection cut short when the agent stops would outlive it).
    gone: bool,
    /// A look into the due queue under way; it holds the subscription while it runs.
    look: Option<BoxFuture<'static, Result<Looked>>>,
    /// When the due queue may be looked into next.
    next_due_look: Instant,
    /// The run has no due queue (a version without one published it): only its jobs queue is
    /// consumed.
    no_due_queue: bool,
}

/// A consumer's connection and, unless it holds due jobs, its subscription to the jobs queue.
struct ConsumerLink {
    link: Link,
    fresh: Option<lapin::Consumer>,
}

/// What turns broker deliveries into jobs, shared with the looks a consumer starts.
#[derive(Clone)]
struct Taker {
    queue: RabbitQueue,
    run: RunId,
    /// Deliveries handed out and not settled yet.
    unsettled: Arc<AtomicUsize>,
}

impl std::fmt::Debug for RabbitConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitConsumer")
            .field("run", &self.taker.run)
            .finish()
    }
}

/// What a subscription attempt found.
enum Subscribed {
    Ready,
    QueueGone,
}

/// What a look into the due queue found.
struct Looked {
    /// The job taken from the due queue (`None`: nothing was due, or what was is not a job
    /// and was set aside).
    taken: Option<RabbitDelivery>,
    /// Whether the due queue was found empty.
    empty: bool,
    /// The subscription to the jobs queue: cancelled when a job was taken, resumed when
    /// asked and nothing was due.
    fresh: Option<lapin::Consumer>,
    /// Whether the channel still works; a failed one is closed and subscribed again.
    link_ok: bool,
    /// The run has no due queue.
    no_due_queue: bool,
}

impl Looked {
    fn link_lost(no_due_queue: bool) -> Self {
        Self {
            taken: None,
            empty: true,
            fresh: None,
            link_ok: false,
            no_due_queue,
        }
    }
}

/// Counts a delivery as unsettled for as long as it lives.
struct Unsettled(Arc<AtomicUsize>);

impl Unsettled {
    fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(Arc::clone(count))
    }
}

impl Drop for Unsettled {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Subscribes `channel` to the run's jobs queue.
async fn consume_fresh(channel: &Channel, run: &RunId) -> lapin::Result<lapin::Consumer> {
    channel
        .basic_consume(
            jobs_queue(run).as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
}

impl Taker {
    /// Takes one job from the due queue if one is there. Taking it cancels the subscription
    /// `fresh`; finding none resumes a cancelled one when `resume` says so.
    async fn look(
        self,
        channel: Channel,
        fresh: Option<lapin::Consumer>,
        resume: bool,
    ) -> Result<Looked> {
        let got = channel
            .basic_get(
                due_queue(&self.run).as_str().into(),
                BasicGetOptions { no_ack: false },
            )
            .await;
        match got {
            Ok(Some(message)) => {
                if let Some(fresh) = fresh
                    && !self.pause(&channel, fresh).await?
                {
                    // The taken job goes back to the due queue with its channel.
                    return Ok(Looked::link_lost(false));
                }
                Ok(Looked {
                    taken: self.accept(message.delivery).await?,
                    empty: false,
                    fresh: None,
                    link_ok: true,
                    no_due_queue: false,
                })
            }
            Ok(None) => {
                let fresh = match fresh {
                    None if resume => match consume_fresh(&channel, &self.run).await {
                        Ok(fresh) => Some(fresh),
                        Err(error) => {
                            // A deleted jobs queue closes the channel; subscribing again finds
                            // the run over.
                            tracing::debug!(%error, run = %self.run, "cannot subscribe to the jobs queue again");
                            return Ok(Looked::link_lost(false));
                        }
                    },
                    fresh => fresh,
                };
                Ok(Looked {
                    taken: None,
                    empty: true,
                    fresh,
                    link_ok: true,
                    no_due_queue: false,
                })
            }
            Err(error) => {
                tracing::debug!(%error, run = %self.run, "cannot look into the due queue");
                // Without a due queue, the jobs queue tells whether the run is over.
                Ok(Looked::link_lost(queue_gone(&error)))
            }
        }
    }

    /// Cancels the subscription `fresh`, and hands back the never-tried jobs the broker sent
    /// before the cancel: no job waits in a consumer busy with a due one. Returns whether the
    /// channel still works.
    async fn pause(&self, channel: &Channel, mut fresh: lapin::Consumer) -> Result<bool> {
        let cancel = channel.basic_cancel(fresh.tag(), BasicCancelOptions::default());
        if !matches!(
            tokio::time::timeout(CONNECT_TIMEOUT, cancel).await,
            Ok(Ok(()))
        ) {
            return Ok(false);
        }
        // After the cancel is confirmed, the stream yields what came before it, then ends.
        loop {
            match tokio::time::timeout(CONNECT_TIMEOUT, fresh.next()).await {
                Ok(Some(Ok(delivery))) => self.hand_back(delivery).await?,
                Ok(None) => return Ok(true),
                Ok(Some(Err(_))) | Err(_) => return Ok(false),
            }
        }
    }

    /// Gives back a job that will not be started here. A never-tried one goes to the due queue
    /// as a fresh copy, so it is not taken for an attempt lost with an agent; one that was
    /// redelivered already goes back marked so.
    async fn hand_back(&self, delivery: lapin::message::Delivery) -> Result<()> {
        if delivery.redelivered {
            let requeue = BasicNackOptions {
                requeue: true,
                ..BasicNackOptions::default()
            };
            let _ = delivery.acker.nack(requeue).await;
            return Ok(());
        }
        self.queue
            .publish_one(
                &due_queue(&self.run),
                None,
                delivery.data.clone(),
                FieldTable::default(),
            )
            .await?;
        let _ = delivery.acker.ack(BasicAckOptions::default()).await;
        Ok(())
    }

    /// The delivery as a job, or `None` for a message that is not one, which is set aside in
    /// the dead-letter queue with the reason.
    async fn accept(&self, delivery: lapin::message::Delivery) -> Result<Option<RabbitDelivery>> {
        match crate::wire::decode::<JobMessage>(&delivery.data, "a job message") {
            Ok(message) => Ok(Some(RabbitDelivery {
                queue: self.queue.clone(),
                run: self.run.clone(),
                message,
                redeliveries: u32::from(delivery.redelivered),
                delivery: Some(delivery),
                _unsettled: Unsettled::new(&self.unsettled),
            })),
            Err(error) => {
                let reason = format!("the message is not a job message: {error}");
                tracing::warn!(run = %self.run, "{reason}; dead-lettering it");
                self.queue
                    .publish_dead(&self.run, delivery.data.clone(), &reason)
                    .await?;
                let _ = delivery.acker.ack(BasicAckOptions::default()).await;
                Ok(None)
            }
        }
    }
}

impl RabbitConsumer {
    async fn try_subscribe(&mut self) -> Result<Subscribed> {
        let link = self.taker.queue.open_link(Confirms::Off).await?;
        let channel = &link.channel;
        let consumed = async {
            channel
                .basic_qos(self.prefetch, BasicQosOptions::default())
                .await?;
            consume_fresh(channel, &self.taker.run).await
        }
        .await;
        match consumed {
            Ok(fresh) => {
                self.link = Some(ConsumerLink {
                    link,
                    fresh: Some(fresh),
                });
                Ok(Subscribed::Ready)
            }
            Err(error) => {
                // A failed channel leaves its connection open: close it, or it outlives the
                // consumer (and lapin's I/O thread panics when the runtime stops under it).
                link.close("cannot consume").await;
                if queue_gone(&error) {
                    // The run's queue was deleted: the run is over.
                    Ok(Subscribed::QueueGone)
                } else {
                    Err(self.taker.queue.failed(error))
                }
            }
        }
    }

    async fn subscribe(&mut self) -> Result<Subscribed> {
        let mut delay = Duration::from_millis(100);
        let mut tries = 0;
        let deadline = Instant::now() + self.taker.queue.outage_limit;
        loop {
            match self.try_subscribe().await {
                Ok(found) => return Ok(found),
                Err(error) if Instant::now() + delay > deadline => {
                    return Err(self.taker.queue.outlasted(error));
                }
                Err(error) => {
                    // RabbitMQ 3.10 fails a consume that races the queue's deletion at the end
                    // of a run with INTERNAL_ERROR; the next try sees the queue gone. Only a
                    // failure that lasts is worth a warning.
                    let run = &self.taker.run;
                    if tries == 0 {
                        tracing::debug!(%error, %run, "cannot consume; retrying in {delay:?}");
                    } else {
                        tracing::warn!(%error, %run, "cannot consume; retrying in {delay:?}");
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(RECONNECT_BACKOFF_MAX);
                    tries += 1;
                }
            }
        }
    }

    /// Closes a failed link; the next call subscribes again.
    async fn lose_link(&mut self) {
        if let Some(lost) = self.link.take() {
            lost.link.close("link lost").await;
        }
    }

    fn unsettled(&self) -> usize {
        self.taker.unsettled.load(Ordering::Relaxed)
    }

    /// Whether to look into the due queue now: there is room for a delivery, and either the
    /// last look is old enough or the consumer paused for due jobs has settled them all.
    fn due_look_wanted(&self) -> bool {
        let unsettled = self.unsettled();
        let paused = self.link.as_ref().is_some_and(|link| link.fresh.is_none());
        !self.no_due_queue
            && unsettled < usize::from(self.prefetch)
            && (Instant::now() >= self.next_due_look || (paused && unsettled == 0))
    }

    /// Starts a look into the due queue, which takes the subscription along.
    fn start_look(&mut self) {
        let Some(link) = self.link.as_mut() else {
            return;
        };
        let fresh = link.fresh.take();
        let resume = fresh.is_none() && self.taker.unsettled.load(Ordering::Relaxed) == 0;
        let look = self
            .taker
            .clone()
            .look(link.link.channel.clone(), fresh, resume);
        self.look = Some(Box::pin(look));
    }

    /// Finishes the look under way, if any: what it took, with the subscription put back.
    async fn finish_look(&mut self) -> Result<Option<Looked>> {
        let Some(look) = self.look.as_mut() else {
            return Ok(None);
        };
        let looked = look.await;
        self.look = None;
        let mut looked = match looked {
            Ok(looked) => looked,
            Err(error) => {
                self.lose_link().await;
                return Err(error);
            }
        };
        self.no_due_queue |= looked.no_due_queue;
        if looked.empty {
            self.next_due_look = Instant::now() + DUE_LOOK_EVERY;
        }
        match self.link.as_mut() {
            Some(link) if looked.link_ok => link.fresh = looked.fresh.take(),
            _ => self.lose_link().await,
        }
        Ok(Some(looked))
    }

    /// Waits for a never-tried job until the next look into the due queue is wanted. `Ok(None)`
    /// means look again (or subscribe again, when the link is gone).
    async fn next_fresh(&mut self) -> Result<Option<RabbitDelivery>> {
        let look_due = !self.no_due_queue && self.unsettled() < usize::from(self.prefetch);
        let next_look = self.next_due_look;
        let Some(link) = self.link.as_mut() else {
            return Ok(None);
        };
        let Some(fresh) = link.fresh.as_mut() else {
            // Paused with due jobs in hand: nothing is taken until they settle.
            tokio::time::sleep(DUE_LOOK_EVERY).await;
            return Ok(None);
        };
        let item = tokio::select! {
            item = fresh.next() => item,
            () = tokio::time::sleep_until(next_look), if look_due => return Ok(None),
        };
        match item {
            Some(Ok(delivery)) => self.taker.accept(delivery).await,
            // The consumer was cancelled (queue deleted) or the connection died: the
            // resubscription tells which.
            Some(Err(error)) => {
                tracing::warn!(%error, run = %self.taker.run, "consumer lost; resubscribing");
                self.link = None;
                Ok(None)
            }
            None => {
                self.link = None;
                Ok(None)
            }
        }
    }
}

impl QueueConsumer for RabbitConsumer {
    type Delivery = RabbitDelivery;

    async fn next(&mut self) -> Result<Option<RabbitDelivery>> {
        loop {
            if let Some(looked) = self.finish_look().await? {
                match looked.taken {
                    Some(delivery) => return Ok(Some(delivery)),
                    None => continue,
                }
            }
            if self.gone {
                return Ok(None);
            }
            if self.link.is_none() {
                self.gone = matches!(self.subscribe().await?, Subscribed::QueueGone);
                continue;
            }
            if self.due_look_wanted() {
                self.start_look();
                continue;
            }
            if let Some(delivery) = self.next_fresh().await? {
                return Ok(Some(delivery));
            }
        }
    }

    async fn stop_taking(&mut self) {
        // A look under way is finished, and what it took handed back: nothing is taken after
        // this. The subscription is cancelled, its channel kept: deliveries in hand are
        // settled on it.
        self.gone = true;
        if let Ok(Some(Looked {
            taken: Some(mut taken),
            ..
        })) = self.finish_look().await
            && let Some(delivery) = taken.delivery.take()
            && let Err(error) = self.taker.hand_back(delivery).await
        {
            tracing::debug!(%error, run = %self.taker.run, "cannot hand back a due job");
        }
        if let Some(ConsumerLink {
            link,
            fresh: Some(fresh),
        }) = &self.link
        {
            let cancel = link
                .channel
                .basic_cancel(fresh.tag(), BasicCancelOptions::default());
            match tokio::time::timeout(CONNECT_TIMEOUT, cancel).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    tracing::debug!(%error, run = %self.taker.run, "cannot cancel the consumer");
                }
                Err(_) => {
                    tracing::debug!(run = %self.taker.run, "cancelling the consumer timed out");
                }
            }
        }
    }

    async fn close(mut self) {
        // A look under way goes with the connection: what it holds returns to the queue.
        self.look = None;
        if let Some(link) = self.link.take() {
            link.link.close("consumer closed").await;
        }
    }
}

/// A job delivered from RabbitMQ. Dropped unsettled, it is returned to the queue.
pub struct RabbitDelivery {
    queue: RabbitQueue,
    run: RunId,
    message: JobMessage,
    redeliveries: u32,
    delivery: Option<lapin::message::Delivery>,
    _unsettled: Unsettled,
}

impl std::fmt::Debug for RabbitDelivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitDelivery")
            .field("message", &self.message)
            .field("redeliveries", &self.redeliveries)
            .finish()
    }
}

impl RabbitDelivery {
    async fn settle(delivery: Option<lapin::message::Delivery>) {
        if let Some(delivery) = delivery
            && let Err(error) = delivery.acker.ack(BasicAckOptions::default()).await
        {
            tracing::warn!(%error, "ack failed; the job will be redelivered and skipped");
        }
    }
}

impl QueueDelivery for RabbitDelivery {
    fn message(&self) -> &JobMessage {
        &self.message
    }

    fn redeliveries(&self) -> u32 {
        self.redeliveries
    }

    /// Acks the job. If the channel died meanwhile, the broker redelivers the job, and the
    /// store's record of its outcome makes the next agent ack it without running it.
    async fn ack(mut self) -> Result<()> {
        Self::settle(self.delivery.take()).await;
        Ok(())
    }

    async fn retry(mut self, attempt: u32, delay: Duration) -> Result<()> {
        let mut next = self.message.clone();
        next.attempt = attempt;
        self.queue.publish_retry(&self.run, &next, delay).await?;
        Self::settle(self.delivery.take()).await;
        Ok(())
    }

    async fn retry_new_identity(mut self) -> Result<()> {
        let mut next = self.message.clone();
        next.identity_retries = next.identity_retries.saturating_add(1);
        self.queue
            .publish_retry(&self.run, &next, Duration::ZERO)
            .await?;
        Self::settle(self.delivery.take()).await;
        Ok(())
    }

    async fn dead_letter(mut self, reason: String) -> Result<()> {
        let body = serde_json::to_vec(&self.message).map_err(|source| Error::Encode {
            what: "a job message",
            source,
        })?;
        self.queue.publish_dead(&self.run, body, &reason).await?;
        Self::settle(self.delivery.take()).await;
        Ok(())
    }
}

impl Drop for RabbitDelivery {
    fn drop(&mut self) {
        let Some(delivery) = self.delivery.take() else {
            return;
        };
        // Unsettled (its agent stopped mid-job): hand it back now rather than when the channel
        // closes. The nack is one frame; if no runtime is left, channel close requeues it.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let options = BasicNackOptions {
                    requeue: true,
                    ..BasicNackOptions::default()
                };
                let _ = delivery.acker.nack(options).await;
            });
        }
    }
}

impl Drop for RabbitConsumer {
    fn drop(&mut self) {
        let Some(ConsumerLink { link, .. }) = self.link.take() else {
            return;
        };
        // Close the consumer's own connection so the broker requeues what it still holds.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(link.close("consumer dropped"));
        }
    }
}
