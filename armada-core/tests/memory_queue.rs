//! The in-memory job queue, config store and event sink through the public, URL-chosen API.
//!
//! The crate's tokio dependency has no `test-util` feature, so `start_paused` and
//! `tokio::time::advance` are not available: delays are real but short, only lower bounds of
//! elapsed time are asserted, and "not delivered yet" is checked by polling a future once
//! (`now_or_never`), which needs no clock at all.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use armada_core::backend::{
    Consumer, DeadLetter, Delivery, PlannedJobs, Recorded, RunProgress, RunRecord, RunStatus,
    finish_run,
};
use armada_core::wire::{
    AgentConfigRecord, Event, EventBatch, EventKind, JobLimits, JobMessage, JobResult, JobStatus,
    WIRE_VERSION,
};
use armada_core::{ConfigStore, Error, EventSink, JobId, JobQueue, RunId};
use futures::FutureExt;
use serde_json::json;
use tokio::time::{Instant, timeout};

/// Generous bound for things that should happen at once; only hit when a test fails.
const PATIENCE: Duration = Duration::from_secs(10);

fn job(run: &RunId, index: u64) -> JobMessage {
    JobMessage {
        v: WIRE_VERSION,
        run_id: run.clone(),
        job_id: JobId::new(),
        index,
        attempt: 1,
        identity_retries: 0,
        payload: Arc::from(
            serde_json::value::to_raw_value(&json!({ "index": index })).expect("a JSON value"),
        ),
    }
}

async fn queue_with_jobs(run: &RunId, count: u64) -> (JobQueue, Vec<JobMessage>) {
    let queue = JobQueue::connect("memory://")
        .await
        .expect("memory:// is always available");
    let jobs: Vec<JobMessage> = (0..count).map(|index| job(run, index)).collect();
    queue
        .publish(run, jobs.clone())
        .await
        .expect("publishing to memory cannot fail");
    (queue, jobs)
}

/// The next delivery, which must be available now (no waiting at all).
fn next_now(consumer: &mut Consumer) -> Delivery {
    match consumer.next().now_or_never() {
        Some(Ok(Some(delivery))) => delivery,
        Some(Ok(None)) => panic!("the queue was deleted"),
        Some(Err(error)) => panic!("next failed: {error}"),
        None => panic!("no delivery was ready"),
    }
}

/// True when `next()` would have to wait.
fn nothing_ready(consumer: &mut Consumer) -> bool {
    consumer.next().now_or_never().is_none()
}

/// The next delivery, waiting for it.
async fn next_waiting(consumer: &mut Consumer) -> Option<Delivery> {
    timeout(PATIENCE, consumer.next())
        .await
        .expect("a delivery should arrive")
        .expect("next cannot fail in memory")
}

// ---------------------------------------------------------------------------------------------
// Job queue

#[tokio::test]
async fn jobs_are_delivered_in_fifo_order_and_ack_removes_them() {
    let run = RunId::new();
    let (queue, jobs) = queue_with_jobs(&run, 3).await;
    let mut consumer = queue.consume(&run, 1).await.unwrap();
    for expected in &jobs {
        let delivery = next_now(&mut consumer);
        assert_eq!(delivery.message(), expected);
        assert_eq!(delivery.redeliveries(), 0);
        delivery.ack().await.unwrap();
    }
    assert!(nothing_ready(&mut consumer));
    let mut other = queue.consume(&run, 1).await.unwrap();
    assert!(nothing_ready(&mut other), "acked jobs must not come back");
    assert!(queue.dead_letters(&run).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_hundred_million_planned_jobs_are_built_one_at_a_time_as_they_are_taken() {
    let run = RunId::new();
    let queue = JobQueue::connect("memory://").await.unwrap();
    let built = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&built);
    let planned_run = run.clone();
    let jobs = PlannedJobs::new(100_000_000, move |n| {
        counter.fetch_add(1, Ordering::Relaxed);
        job(&planned_run, n)
    });
    queue.publish(&run, jobs).await.unwrap();
    assert_eq!(built.load(Ordering::Relaxed), 0, "publishing builds no job");
    let more = (0..2)
        .map(|index| job(&run, 100_000_000 + index))
        .collect::<Vec<_>>();
    queue.publish(&run, more.clone()).await.unwrap();
    let mut consumer = queue.consume(&run, 1).await.unwrap();
    for index in 0..3 {
        let delivery = next_now(&mut consumer);
        assert_eq!(
            delivery.message().index,
            index,
            "fresh jobs come in publish order"
        );
        delivery.ack().await.unwrap();
    }
    assert_eq!(
        built.load(Ordering::Relaxed),
        3,
        "one job is built per delivery"
    );
    queue.delete(&run).await.unwrap();
}

#[tokio::test]
async fn prefetch_1_holds_the_next_delivery_until_the_first_is_settled() {
    let run = RunId::new();
    let (queue, jobs) = queue_with_jobs(&run, 2).await;
    let mut consumer = queue.consume(&run, 1).await.unwrap();
    let first = next_now(&mut consumer);
    assert_eq!(first.message().index, 0);
    assert!(
        nothing_ready(&mut consumer),
        "job 1 is waiting but prefetch is 1"
    );
    assert!(
        timeout(Duration::from_millis(50), consumer.next())
            .await
            .is_err()
    );

    let mut pending = Box::pin(consumer.next());
    assert!(futures::poll!(pending.as_mut()).is_pending());
    first.ack().await.unwrap();
    let second = timeout(PATIENCE, pending)
        .await
        .expect("settling the first delivery frees the prefetch slot")
        .unwrap()
        .expect("the queue is not deleted");
    assert_eq!(second.message(), &jobs[1]);
}

#[tokio::test]
async fn prefetch_counts_every_kind_of_settlement() {
    let run = RunId::new();
    let (queue, _) = queue_with_jobs(&run, 5).await;
    let mut consumer = queue.consume(&run, 2).await.unwrap();
    let a = next_now(&mut consumer);
    let b = next_now(&mut consumer);
    assert_eq!((a.message().index, b.message().index), (0, 1));
    assert!(
        nothing_ready(&mut consumer),
        "prefetch 2 allows two unsettled deliveries"
    );
    a.dead_letter("gone".to_owned()).await.unwrap();
    let c = next_now(&mut consumer);
    assert_eq!(c.message().index, 2);
    assert!(nothing_ready(&mut consumer));
    let attempt = b.message().attempt + b.redeliveries() + 1;
    b.retry(attempt, Duration::from_secs(3600)).await.unwrap();
    let d = next_now(&mut consumer);
    assert_eq!(d.message().index, 3);
    drop(c);
    // The dropped job 2 is back at the front.
    let again = next_now(&mut consumer);
    assert_eq!((again.message().index, again.redeliveries()), (2, 1));
}

#[tokio::test]
async fn prefetch_0_is_treated_as_1() {
    let run = RunId::new();
    let (queue, _) = queue_with_jobs(&run, 2).await;
    let mut consumer = queue.consume(&run, 0).await.unwrap();
    let first = next_now(&mut consumer);
    assert_eq!(first.message().index, 0);
    assert!(nothing_ready(&mut consumer));
    first.ack().await.unwrap();
    assert_eq!(next_now(&mut consumer).message().index, 1);
}

#[tokio::test]
async fn dropping_an_unsettled_delivery_requeues_it_at_the_front_for_another_consumer() {
    let run = RunId::new();
    let (queue, jobs) = queue_with_jobs(&run, 2).await;
    let mut dying = queue.consume(&run, 1).await.unwrap();
    let mut survivor = queue.consume(&run, 1).await.unwrap();

    let delivery = next_now(&mut dying);
    assert_eq!(delivery.message(), &jobs[0]);
    drop(delivery);

    let redelivered = next_now(&mut survivor);
    assert_eq!(
        redelivered.message(),
        &jobs[0],
        "same job id, same attempt, same payload"
    );
    assert_eq!(redelivered.redeliveries(), 1);
    drop(redelivered);
    let twice = next_now(&mut survivor);
    assert_eq!(twice.message(), &jobs[0]);
    assert_eq!(twice.redeliveries(), 2);
    twice.ack().await.unwrap();

    let next = next_now(&mut dying);
    assert_eq!(next.message(), &jobs[1]);
    assert_eq!(next.redeliveries(), 0);
}

#[tokio::test]
async fn dropping_the_consumer_then_its_delivery_requeues_the_job() {
    let run = RunId::new();
    let (queue, jobs) = queue_with_jobs(&run, 1).await;
    let mut consumer = queue.consume(&run, 1).await.unwrap();
    let delivery = next_now(&mut consumer);
    drop(consumer);
    let mut other = queue.consume(&run, 1).await.unwrap();
    assert!(nothing_ready(&mut other), "the delivery is still held");
    drop(delivery);
    let redelivered = next_now(&mut other);
    assert_eq!(redelivered.message(), &jobs[0]);
    assert_eq!(redelivered.redeliveries(), 1);
}

#[tokio::test]
async fn aborting_an_agent_task_mid_job_wakes_a_waiting_consumer_with_the_job() {
    let run = RunId::new();
    let (queue, jobs) = queue_with_jobs(&run, 1).await;

    let (taken_tx, taken_rx) = tokio::sync::oneshot::channel();
    let agent = tokio::spawn({
        let queue = queue.clone();
        let run = run.clone();
        async move {
            let mut consumer = queue.consume(&run, 1).await.unwrap();
            let delivery = consumer.next().await.unwrap().unwrap();
            taken_tx.send(delivery.message().index).unwrap();
            // The script hangs: the agent is killed before it settles the job.
            std::future::pending::<()>().await;
            delivery.ack().await.unwrap();
        }
    });
    assert_eq!(timeout(PATIENCE, taken_rx).await.unwrap().unwrap(), 0);

    let waiting = tokio::spawn({
        let queue = queue.clone();
        let run = run.clone();
        async move {
            let mut consumer = queue.consume(&run, 1).await.unwrap();
            let delivery = consumer.next().await.unwrap().unwrap();
            (delivery.message().clone(), delivery.redeliveries())
        }
    });
    // Let the second consumer park on the empty queue.
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(
        !waiting.is_finished(),
        "the only job is held by the first agent"
    );

    agent.abort();
    assert!(agent.await.unwrap_err().is_cancelled());
    let (message, redeliveries) = timeout(PATIENCE, waiting).await.unwrap().unwrap();
    assert_eq!(message, jobs[0]);
    assert_eq!(redeliveries, 1);
}

#[tokio::test]
async fn retry_hides_the_job_until_its_delay_then_returns_it_as_the_next_attempt() {
    let run = RunId::new();
    let (queue, jobs) = queue_with_jobs(&run, 2).await;
    let mut consumer = queue.consume(&run, 1).await.unwrap();
    let delay = Duration::from_millis(300);

    let first = next_now(&mut consumer);
    assert_eq!(first.message(), &jobs[0]);
    let retried_at = Instant::now();
    let attempt = first.message().attempt + first.redeliveries() + 1;
    first.retry(attempt, delay).await.unwrap();

    // Job 1 overtakes the delayed job 0.
    let other = next_now(&mut consumer);
    assert_eq!(other.message(), &jobs[1]);
    other.ack().await.unwrap();
    assert!(
        nothing_ready(&mut consumer),
        "job 0 is invisible during its delay"
    );

    let again = next_waiting(&mut consumer).await.unwrap();
    assert!(
        retried_at.elapsed() >= delay,
        "delivered after {:?}, before the {delay:?} delay",
        retried_at.elapsed()
    );
    let message = again.message();
    assert_eq!(message.job_id, jobs[0].job_id);
    assert_eq!(message.index, 0);
    assert_eq!(message.attempt, 2);
    assert_eq!(message.payload.get(), jobs[0].payload.get());
    assert_eq!(again.redeliveries(), 0);
}

#[tokio::test]
async fn a_retry_without_delay_comes_before_jobs_never_tried() {
    let run = RunId::new();
    let (queue, jobs) = queue_with_jobs(&run, 2).await;
    let mut consumer = queue.consume(&run, 1).await.unwrap();
    let delivery = next_now(&mut consumer);
    let attempt = delivery.message().attempt + delivery.redeliveries() + 1;
    delivery.retry(attempt, Duration::ZERO).await.unwrap();
    let retried = next_now(&mut consumer);
    assert_eq!(retried.message().job_id, jobs[0].job_id);
    assert_eq!(retried.message().attempt, 2);
    // A redelivered job that is then retried counts the attempt lost with its consumer: the
    // agent ran it as attempt 3, so it retries it as attempt 4, with no redelivery.
    drop(retried);
    let redelivered = next_now(&mut consumer);
    assert_eq!(
        (redelivered.message().attempt, redelivered.redeliveries()),
        (2, 1)
    );
    let attempt = redelivered.message().attempt + redelivered.redeliveries() + 1;
    redelivered.retry(attempt, Duration::ZERO).await.unwrap();
    let third = next_now(&mut consumer);
    assert_eq!((third.message().attempt, third.redeliveries()), (4, 0));
    third.ack().await.unwrap();
    assert_eq!(next_now(&mut consumer).message(), &jobs[1]);
}

#[tokio::test]
async fn a_retry_whose_delay_ended_starts_before_two_thousand_queued_jobs() {
    let run = RunId::new();
    let (queue, jobs) = queue_with_jobs(&run, 2_001).await;
    let mut consumer = queue.consume(&run, 1).await.unwrap();
    let first = next_now(&mut consumer);
    let attempt = first.message().attempt + first.redeliveries() + 1;
    first
        .retry(attempt, Duration::from_millis(50))
        .await
        .unwrap();
    // Jobs never tried run while the retry waits for its delay.
    let waiting = next_now(&mut consumer);
    assert_eq!(waiting.message(), &jobs[1]);
    tokio::time::sleep(Duration::from_millis(60)).await;
    waiting.ack().await.unwrap();
    // Its delay over, the retry is next, ahead of the 1,999 jobs still queued.
    let retried = next_now(&mut consumer);
    assert_eq!((retried.message().index, retried.message().attempt), (0, 2));
}

#[tokio::test]
async fn retry_new_identity_keeps_the_attempt_and_counts_an_identity_retry() {
    let run = RunId::new();
    let (queue, jobs) = queue_with_jobs(&run, 1).await;
    let mut consumer = queue.consume(&run, 1).await.unwrap();
    next_now(&mut consumer).retry_new_identity().await.unwrap();
    let again = next_now(&mut consumer);
    assert_eq!(again.message().job_id, jobs[0].job_id);
    assert_eq!(
        (again.message().attempt, again.message().identity_retries),
        (1, 1)
    );
}

#[tokio::test]
async fn retry_with_an_enormous_delay_does_not_panic() {
    // A script may ask for any delay (`ScriptError::retry_after`), for example from a server's
    // Retry-After header; the queue must not overflow `Instant` and lose the job.
    let run = RunId::new();
    let (queue, jobs) = queue_with_jobs(&run, 2).await;
    let mut consumer = queue.consume(&run, 1).await.unwrap();
    let first = next_now(&mut consumer);
    let attempt = first.message().attempt + first.redeliveries() + 1;
    first.retry(attempt, Duration::MAX).await.unwrap();
    let second = next_now(&mut consumer);
    assert_eq!(second.message(), &jobs[1]);
    second.ack().await.unwrap();
    assert!(
        nothing_ready(&mut consumer),
        "job 0 waits for its (very long) delay"
    );
}

#[tokio::test]
async fn delayed_retries_come_back_in_due_order() {
    let run = RunId::new();
    let (queue, jobs) = queue_with_jobs(&run, 2).await;
    let mut consumer = queue.consume(&run, 2).await.unwrap();
    let a = next_now(&mut consumer);
    let b = next_now(&mut consumer);
    let attempt = a.message().attempt + a.redeliveries() + 1;
    a.retry(attempt, Duration::from_millis(200)).await.unwrap();
    let attempt = b.message().attempt + b.redeliveries() + 1;
    b.retry(attempt, Duration::from_millis(100)).await.unwrap();
    let first = next_waiting(&mut consumer).await.unwrap();
    let second = next_waiting(&mut consumer).await.unwrap();
    assert_eq!(first.message().job_id, jobs[1].job_id);
    assert_eq!(second.message().job_id, jobs[0].job_id);
}

#[tokio::test]
async fn dead_letter_records_the_message_and_the_reason() {
    let run = RunId::new();
    let (queue, jobs) = queue_with_jobs(&run, 2).await;
    let mut consumer = queue.consume(&run, 1).await.unwrap();
    let delivery = next_now(&mut consumer);
    let attempt = delivery.message().attempt + delivery.redeliveries() + 1;
    delivery.retry(attempt, Duration::ZERO).await.unwrap();
    let retried = next_now(&mut consumer);
    retried
        .dead_letter("3 attempts failed".to_owned())
        .await
        .unwrap();
    let second = next_now(&mut consumer);
    second
        .dead_letter("script failed: no such element".to_owned())
        .await
        .unwrap();
    let mut attempt_2 = jobs[0].clone();
    attempt_2.attempt = 2;
    assert_eq!(
        queue.dead_letters(&run).await.unwrap(),
        vec![
            DeadLetter {
                message: Some(attempt_2),
                reason: "3 attempts failed".to_owned(),
            },
            DeadLetter {
                message: Some(jobs[1].clone()),
                reason: "script failed: no such element".to_owned(),
            },
        ]
    );
    assert!(
        nothing_ready(&mut consumer),
        "dead letters are not redelivered"
    );
    assert!(queue.dead_letters(&RunId::new()).await.unwrap().is_empty());
}

#[tokio::test]
async fn delete_makes_waiting_consumers_get_none() {
    let run = RunId::new();
    let queue = JobQueue::connect("memory://").await.unwrap();
    let mut waiting = queue.consume(&run, 1).await.unwrap();
    let parked = tokio::spawn(async move { waiting.next().await.unwrap().is_none() });
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(
        !parked.is_finished(),
        "the queue is empty: the consumer waits"
    );
    queue.delete(&run).await.unwrap();
    assert!(
        timeout(PATIENCE, parked).await.unwrap().unwrap(),
        "a consumer waiting on a deleted queue gets None"
    );
}

#[tokio::test]
async fn delete_drops_waiting_jobs_and_settled_deliveries_do_not_come_back() {
    let run = RunId::new();
    let (queue, _) = queue_with_jobs(&run, 4).await;
    let mut holder = queue.consume(&run, 2).await.unwrap();
    let mut idle = queue.consume(&run, 1).await.unwrap();
    let dropped = next_now(&mut holder);
    let retried = next_now(&mut holder);

    queue.delete(&run).await.unwrap();
    assert!(
        idle.next().await.unwrap().is_none(),
        "jobs 2 and 3 were dropped with the queue"
    );
    drop(dropped);
    let attempt = retried.message().attempt + retried.redeliveries() + 1;
    retried.retry(attempt, Duration::ZERO).await.unwrap();
    assert!(holder.next().await.unwrap().is_none());

    // The run's name can be used again, but nothing of the deleted queue is in it.
    let mut fresh = queue.consume(&run, 1).await.unwrap();
    assert!(nothing_ready(&mut fresh));
    assert!(queue.dead_letters(&run).await.unwrap().is_empty());
}

#[tokio::test]
async fn two_runs_on_one_queue_never_see_each_others_jobs() {
    let queue = JobQueue::connect("memory://").await.unwrap();
    let (red, blue) = (RunId::new(), RunId::new());
    let red_jobs = vec![job(&red, 0), job(&red, 1)];
    let blue_jobs = vec![job(&blue, 0)];
    queue.publish(&red, red_jobs.clone()).await.unwrap();
    queue.publish(&blue, blue_jobs.clone()).await.unwrap();

    let mut red_consumer = queue.consume(&red, 5).await.unwrap();
    let mut blue_consumer = queue.consume(&blue, 5).await.unwrap();
    let blue_delivery = next_now(&mut blue_consumer);
    assert_eq!(blue_delivery.message(), &blue_jobs[0]);
    assert!(nothing_ready(&mut blue_consumer));
    let red_0 = next_now(&mut red_consumer);
    let red_1 = next_now(&mut red_consumer);
    assert_eq!(
        (red_0.message(), red_1.message()),
        (&red_jobs[0], &red_jobs[1])
    );
    assert!(nothing_ready(&mut red_consumer));

    // Dead letters, redeliveries and deletion stay inside their run.
    red_0.dead_letter("red only".to_owned()).await.unwrap();
    drop(red_1);
    assert!(queue.dead_letters(&blue).await.unwrap().is_empty());
    assert_eq!(queue.dead_letters(&red).await.unwrap().len(), 1);
    assert!(nothing_ready(&mut blue_consumer));
    queue.delete(&red).await.unwrap();
    let attempt = blue_delivery.message().attempt + blue_delivery.redeliveries() + 1;
    blue_delivery.retry(attempt, Duration::ZERO).await.unwrap();
    let blue_again = next_now(&mut blue_consumer);
    assert_eq!(blue_again.message().job_id, blue_jobs[0].job_id);
    assert_eq!(blue_again.message().attempt, 2);
}

#[tokio::test]
async fn consumers_share_the_jobs_of_a_run_without_duplicates() {
    let run = RunId::new();
    let (queue, _) = queue_with_jobs(&run, 6).await;
    let mut consumers = vec![
        queue.consume(&run, 1).await.unwrap(),
        queue.consume(&run, 1).await.unwrap(),
    ];
    let mut seen = Vec::new();
    for round in 0..3 {
        let deliveries: Vec<Delivery> = consumers.iter_mut().map(next_now).collect();
        for delivery in deliveries {
            seen.push(delivery.message().index);
            delivery.ack().await.unwrap();
        }
        assert_eq!(seen.len(), (round + 1) * 2);
    }
    assert_eq!(seen, vec![0, 1, 2, 3, 4, 5]);
    for consumer in &mut consumers {
        assert!(nothing_ready(consumer));
    }
}

#[tokio::test]
async fn each_memory_connection_is_a_private_queue() {
    let run = RunId::new();
    let (_queue, _) = queue_with_jobs(&run, 1).await;
    let other = JobQueue::connect("memory://").await.unwrap();
    let mut consumer = other.consume(&run, 1).await.unwrap();
    assert!(nothing_ready(&mut consumer));
}

// ---------------------------------------------------------------------------------------------
// Config store

fn record(run: &RunId, agents: u32, jobs: u64) -> RunRecord {
    RunRecord {
        v: WIRE_VERSION,
        run_id: run.clone(),
        agents,
        jobs,
        created_ms: 1_700_000_000_000,
    }
}

fn result(index: u64, status: JobStatus) -> JobResult {
    JobResult {
        v: WIRE_VERSION,
        index,
        id: JobId::new(),
        status,
        attempts: 1,
        agent: Some(0),
        duration_ms: 12.5,
        output: Some(json!({ "index": index })),
        error: None,
        evidence: None,
    }
}

fn agent_config(run: &RunId, index: u32) -> AgentConfigRecord {
    AgentConfigRecord {
        v: WIRE_VERSION,
        run_id: run.clone(),
        index,
        agents: 2,
        limits: JobLimits {
            jobs: 3,
            max_attempts: 3,
            job_timeout_ms: 1000,
            retry_backoff_ms: 10,
            retry_backoff_max_ms: 100,
        },
        config: json!({ "proxy": format!("p{index}") }),
    }
}

async fn store_with_run(run: &RunId) -> ConfigStore {
    let store = ConfigStore::connect("memory://")
        .await
        .expect("memory:// is always available");
    store
        .create_run(record(run, 2, 3))
        .await
        .expect("a new run id is not in a new store");
    store
}

#[tokio::test]
async fn released_results_are_let_go_and_later_reads_start_at_what_is_kept() {
    let run = RunId::new();
    let store = store_with_run(&run).await;
    for index in 0..3 {
        store
            .record_result(&run, result(index, JobStatus::Succeeded))
            .await
            .unwrap();
    }
    store.release_results(&run, 2).await.unwrap();
    // The in-process store has one reader, which took the first two: they are gone.
    let kept = store.results_after(&run, 0, Duration::ZERO).await.unwrap();
    assert_eq!(kept.iter().map(|r| r.index).collect::<Vec<_>>(), [2]);
    assert_eq!(store.progress(&run).await.unwrap().terminal, 3);
    assert!(store.is_recorded(&run, 0).await.unwrap(), "still recorded");
}

#[tokio::test]
async fn record_result_is_idempotent_per_job_index() {
    let run = RunId::new();
    let store = store_with_run(&run).await;
    let first = result(0, JobStatus::Succeeded);
    assert_eq!(
        store.record_result(&run, first.clone()).await.unwrap(),
        Recorded::Now
    );
    let progress = RunProgress {
        jobs: 3,
        succeeded: 1,
        failed: 0,
        terminal: 1,
        retries: 0,
        redeliveries: 0,
        status: RunStatus::Running,
    };
    assert_eq!(store.progress(&run).await.unwrap(), progress);

    // A redelivered job finishing again (even differently) is not counted twice.
    assert_eq!(
        store
            .record_result(&run, result(0, JobStatus::Failed))
            .await
            .unwrap(),
        Recorded::Before
    );
    assert_eq!(
        store.record_result(&run, first.clone()).await.unwrap(),
        Recorded::Before
    );
    assert_eq!(store.progress(&run).await.unwrap(), progress);

    let failed = result(2, JobStatus::Failed);
    assert!(
        store
            .record_result(&run, failed.clone())
            .await
            .unwrap()
            .is_new()
    );
    store.record_retry(&run).await.unwrap();
    store.record_retry(&run).await.unwrap();
    assert_eq!(
        store.progress(&run).await.unwrap(),
        RunProgress {
            jobs: 3,
            succeeded: 1,
            failed: 1,
            terminal: 2,
            retries: 2,
            redeliveries: 0,
            status: RunStatus::Running,
        }
    );
    assert!(store.is_recorded(&run, 0).await.unwrap());
    assert!(!store.is_recorded(&run, 1).await.unwrap());
    assert!(store.is_recorded(&run, 2).await.unwrap());
    assert_eq!(
        store.results_after(&run, 0, Duration::ZERO).await.unwrap(),
        vec![first, failed]
    );

    // Canceled and abandoned jobs are terminal but neither succeeded nor failed. The last
    // result completes the running run, and says so once.
    assert_eq!(
        store
            .record_result(&run, result(1, JobStatus::Abandoned))
            .await
            .unwrap(),
        Recorded::LastOfRun
    );
    let progress = store.progress(&run).await.unwrap();
    assert_eq!(
        (
            progress.succeeded,
            progress.failed,
            progress.terminal,
            progress.status
        ),
        (1, 1, 3, RunStatus::Completed)
    );
    assert_eq!(
        store
            .record_result(&run, result(1, JobStatus::Succeeded))
            .await
            .unwrap(),
        Recorded::Before
    );
}

#[tokio::test]
async fn a_run_ended_by_any_process_keeps_one_finished_record_and_its_results() {
    let run = RunId::new();
    let store = store_with_run(&run).await;
    let queue = JobQueue::connect("memory://").await.unwrap();
    queue.publish(&run, vec![job(&run, 0)]).await.unwrap();
    let mut consumer = queue.consume(&run, 1).await.unwrap();
    let delivery = consumer.next().await.unwrap().unwrap();
    delivery.dead_letter("poison".into()).await.unwrap();
    store
        .record_result(&run, result(0, JobStatus::Failed))
        .await
        .unwrap();

    let end = finish_run(&store, &queue, &run, RunStatus::Canceled)
        .await
        .unwrap();
    assert!(end.ended_here);
    let first = end.finished;
    assert_eq!(first.status, RunStatus::Canceled);
    assert_eq!(first.dead_letters.len(), 1);
    assert_eq!(first.dead_letters[0].reason, "poison");
    // The queue is gone, so its consumers end.
    assert!(consumer.next().await.unwrap().is_none());
    // A second process ending it the other way changes nothing.
    let again = finish_run(&store, &queue, &run, RunStatus::Completed)
        .await
        .unwrap();
    assert!(!again.ended_here, "only the first process ends the run");
    assert_eq!(again.finished, first);
    assert_eq!(store.finished(&run).await.unwrap(), Some(first));
    assert_eq!(
        store.progress(&run).await.unwrap().status,
        RunStatus::Canceled
    );
    // What attach and results read stays; what only running agents need is gone.
    assert_eq!(store.run_record(&run).await.unwrap().jobs, 3);
    assert_eq!(
        store
            .results_after(&run, 0, Duration::ZERO)
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(matches!(
        store.agent_config(&run, 0).await,
        Err(Error::AgentConfigMissing { .. })
    ));
}

#[tokio::test]
async fn results_after_returns_only_new_results_and_waits_up_to_the_timeout() {
    let run = RunId::new();
    let store = store_with_run(&run).await;
    let r0 = result(0, JobStatus::Succeeded);
    let r1 = result(1, JobStatus::Failed);
    store.record_result(&run, r0.clone()).await.unwrap();
    store.record_result(&run, r1.clone()).await.unwrap();

    let ready = store
        .results_after(&run, 1, Duration::from_secs(3600))
        .now_or_never()
        .expect("a result after the cursor is returned without waiting")
        .unwrap();
    assert_eq!(ready, vec![r1.clone()]);

    let wait = Duration::from_millis(200);
    let started = Instant::now();
    assert!(store.results_after(&run, 2, wait).await.unwrap().is_empty());
    assert!(
        started.elapsed() >= wait,
        "returned after {:?}",
        started.elapsed()
    );
    assert!(
        store
            .results_after(&run, 99, Duration::ZERO)
            .await
            .unwrap()
            .is_empty()
    );

    let recorder = tokio::spawn({
        let store = store.clone();
        let run = run.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let r2 = result(2, JobStatus::Succeeded);
            store.record_result(&run, r2.clone()).await.unwrap();
            r2
        }
    });
    let started = Instant::now();
    let arrived = store.results_after(&run, 2, PATIENCE).await.unwrap();
    assert!(started.elapsed() < PATIENCE / 2, "woken by the new result");
    let r2 = recorder.await.unwrap();
    assert_eq!(arrived, vec![r2.clone()]);
    assert_eq!(
        store.results_after(&run, 0, Duration::ZERO).await.unwrap(),
        vec![r0, r1, r2]
    );
}

#[tokio::test]
async fn agent_configs_and_their_errors() {
    let run = RunId::new();
    let store = store_with_run(&run).await;
    store
        .put_agent_configs(&run, vec![agent_config(&run, 0)])
        .await
        .unwrap();
    assert_eq!(
        store.agent_config(&run, 0).await.unwrap(),
        agent_config(&run, 0)
    );

    for index in [1, 7] {
        match store.agent_config(&run, index).await {
            Err(Error::AgentConfigMissing {
                run: missing_run,
                index: missing_index,
            }) => assert_eq!((missing_run, missing_index), (run.clone(), index)),
            other => panic!("expected AgentConfigMissing for agent {index}, got {other:?}"),
        }
    }
    let unknown = RunId::parse("no-such-run").unwrap();
    match store.agent_config(&unknown, 0).await {
        Err(Error::RunNotFound(missing)) => assert_eq!(missing, unknown),
        other => panic!("expected RunNotFound, got {other:?}"),
    }
    assert!(matches!(
        store
            .record_result(&unknown, result(0, JobStatus::Succeeded))
            .await,
        Err(Error::RunNotFound(_))
    ));
    match store.create_run(record(&run, 1, 1)).await {
        Err(Error::RunExists(existing)) => assert_eq!(existing, run),
        other => panic!("expected RunExists, got {other:?}"),
    }

    store.set_status(&run, RunStatus::Canceled).await.unwrap();
    assert_eq!(
        store.progress(&run).await.unwrap().status,
        RunStatus::Canceled
    );
    store.remove_run(&run).await.unwrap();
    assert!(matches!(
        store.agent_config(&run, 0).await,
        Err(Error::RunNotFound(_))
    ));
}

#[tokio::test]
async fn event_batches_are_stored_once() {
    let sink = EventSink::connect("memory://").await.unwrap();
    let run = RunId::new();
    let batch = EventBatch {
        v: WIRE_VERSION,
        batch_id: uuid::Uuid::new_v4(),
        run_id: run.clone(),
        events: vec![Event {
            kind: EventKind::Info,
            at_ms: 1,
            agent: 0,
            job: None,
            message: Some("hello".to_owned()),
            data: None,
            input: None,
        }],
    };
    assert!(sink.write(batch.clone()).await.unwrap());
    assert!(!sink.write(batch.clone()).await.unwrap());
    let EventSink::Memory(events) = &sink else {
        panic!("memory:// gives the in-memory sink");
    };
    assert_eq!(events.count(&run), 1);
    assert_eq!(events.recent(&run), batch.events);
}

// ---------------------------------------------------------------------------------------------
// URLs

// Only meaningful where the backend is not compiled in: `cargo xtask test` runs this file
// once with armada-core's features off.
#[cfg(not(feature = "rabbitmq"))]
#[tokio::test]
async fn an_amqp_url_names_the_rabbitmq_feature_and_hides_the_password() {
    let error = JobQueue::connect("amqp://guest:secret@host/")
        .await
        .unwrap_err();
    let text = error.to_string();
    match error {
        Error::FeatureMissing { role, url, feature } => {
            assert_eq!(
                (role, url.as_str(), feature),
                ("queue", "amqp://guest:***@host/", "rabbitmq")
            );
        }
        other => panic!("expected FeatureMissing, got {other:?}"),
    }
    assert!(!text.contains("secret"), "{text}");
    assert!(text.contains("features = [\"rabbitmq\"]"), "{text}");
}

// Only meaningful where the backend is not compiled in: `cargo xtask test` runs this file
// once with armada-core's features off.
#[cfg(not(feature = "redis"))]
#[tokio::test]
async fn a_redis_url_names_the_redis_feature() {
    match ConfigStore::connect("redis://x").await {
        Err(Error::FeatureMissing { role, url, feature }) => {
            assert_eq!(
                (role, url.as_str(), feature),
                ("config store", "redis://x", "redis")
            );
        }
        other => panic!("expected FeatureMissing, got {other:?}"),
    }
    let error = ConfigStore::connect("redis://:hunter2@cache:6379/0")
        .await
        .unwrap_err();
    assert!(
        matches!(&error, Error::FeatureMissing { url, .. } if url == "redis://:***@cache:6379/0"),
        "{error:?}"
    );
    assert!(!error.to_string().contains("hunter2"));
}

// Only meaningful where the backend is not compiled in: `cargo xtask test` runs this file
// once with armada-core's features off.
#[cfg(not(feature = "rabbitmq"))]
#[tokio::test]
async fn an_amqps_url_names_the_rabbitmq_feature() {
    match JobQueue::connect("amqps://guest:secret@host/").await {
        Err(Error::FeatureMissing { feature, url, .. }) => {
            assert_eq!(
                (feature, url.as_str()),
                ("rabbitmq", "amqps://guest:***@host/")
            );
        }
        other => panic!("expected FeatureMissing naming rabbitmq for amqps://, got {other:?}"),
    }
}

// Only meaningful where the backend is not compiled in: `cargo xtask test` runs this file
// once with armada-core's features off.
#[cfg(not(feature = "redis"))]
#[tokio::test]
async fn a_rediss_url_names_the_redis_feature() {
    match ConfigStore::connect("rediss://cache:6380").await {
        Err(Error::FeatureMissing { feature, .. }) => assert_eq!(feature, "redis"),
        other => panic!("expected FeatureMissing naming redis for rediss://, got {other:?}"),
    }
}

// Only meaningful where the backend is not compiled in: `cargo xtask test` runs this file
// once with armada-core's features off.
#[cfg(not(feature = "rabbitmq"))]
#[tokio::test]
async fn a_password_containing_a_slash_is_hidden_too() {
    // Generated passwords (base64) often hold `/`; the error must still not show them.
    let error = JobQueue::connect("amqp://guest:s3/cr3t@host/vhost")
        .await
        .unwrap_err();
    let text = error.to_string();
    assert!(
        matches!(
            error,
            Error::FeatureMissing {
                feature: "rabbitmq",
                ..
            }
        ),
        "{error:?}"
    );
    assert!(!text.contains("cr3t"), "{text}");
}

#[tokio::test]
async fn unknown_schemes_are_unsupported_urls() {
    match JobQueue::connect("ftp://x").await {
        Err(Error::UnsupportedUrl {
            role,
            url,
            supported,
        }) => {
            assert_eq!(
                (role, url.as_str(), supported),
                ("queue", "ftp://x", "memory://, amqp://, amqps://")
            );
        }
        other => panic!("expected UnsupportedUrl, got {other:?}"),
    }
    match ConfigStore::connect("ftp://user:pw@x/").await {
        Err(Error::UnsupportedUrl {
            role,
            url,
            supported,
        }) => {
            assert_eq!(
                (role, url.as_str(), supported),
                (
                    "config store",
                    "ftp://user:***@x/",
                    "memory://, redis://, rediss://"
                )
            );
        }
        other => panic!("expected UnsupportedUrl, got {other:?}"),
    }
    // A backend of another seam is not this seam's backend.
    assert!(matches!(
        JobQueue::connect("redis://x").await,
        Err(Error::UnsupportedUrl { role: "queue", .. })
    ));
    assert!(matches!(
        EventSink::connect("amqp://x").await,
        Err(Error::UnsupportedUrl {
            role: "event sink",
            ..
        })
    ));
    assert!(matches!(
        ConfigStore::connect("memory").await,
        Err(Error::UnsupportedUrl { .. })
    ));
}
