//! The conformance suites of the backend seams (feature `conformance`): every promise of
//! [`ConfigStoreBackend`] and of [`JobQueueBackend`] with its consumers and deliveries, as
//! checks any backend runs against itself. Armada runs them on the in-memory backends, Redis
//! and RabbitMQ (`armada-core/tests/conformance.rs`); a new backend runs them the same way:
//!
//! ```ignore
//! armada_core::config_store_conformance!(my_store, async { MyStore::connect("…").await.unwrap() });
//! armada_core::job_queue_conformance!(my_queue, async { MyQueue::connect("…").await.unwrap() });
//! ```
//!
//! Each macro writes one `#[tokio::test]` per check in a module of the given name. Checks make
//! runs of their own, so they can share one backend and run in parallel. A failed check panics
//! with what the backend did against what the contract says.

use std::time::Duration;

use serde_json::json;

use super::{ConfigStoreBackend, FinishedRun, Recorded, RunRecord, RunStatus};
use crate::wire::{AgentConfigRecord, JobLimits, JobMessage, JobResult, JobStatus, WIRE_VERSION};
use crate::{Error, JobId, RunId};

/// A run of `jobs` jobs, created in `store`.
async fn new_run<B: ConfigStoreBackend>(store: &B, jobs: u64) -> RunId {
    let run = RunId::new();
    store
        .create_run(RunRecord {
            v: WIRE_VERSION,
            run_id: run.clone(),
            agents: 2,
            jobs,
            created_ms: 1_000,
        })
        .await
        .expect("create_run of a new run succeeds");
    run
}

/// A terminal result of job `index`.
fn result(index: u64, status: JobStatus) -> JobResult {
    JobResult {
        v: WIRE_VERSION,
        index,
        id: JobId::new(),
        status,
        attempts: 1,
        agent: Some(0),
        duration_ms: 12.5,
        output: (status == JobStatus::Succeeded).then(|| json!({ "index": index })),
        error: (status != JobStatus::Succeeded).then(|| "it broke".to_owned()),
        evidence: None,
    }
}

/// The config store's checks.
pub mod config_store {
    use super::*;

    /// A run is created once and read back as created: the same record again changes
    /// nothing, another run under its id is refused, and an unknown run is `RunNotFound`.
    pub async fn runs_are_created_once<B: ConfigStoreBackend>(store: &B) {
        let run = new_run(store, 3).await;
        let record = store.run_record(&run).await.expect("run_record");
        assert_eq!(
            (record.run_id.clone(), record.agents, record.jobs),
            (run.clone(), 2, 3)
        );
        store
            .record_result(&run, result(0, JobStatus::Succeeded))
            .await
            .expect("record_result");
        let retried = store.create_run(record.clone()).await;
        assert!(retried.is_ok(), "the same record again: {retried:?}");
        let other = store.create_run(RunRecord { jobs: 4, ..record }).await;
        assert!(
            matches!(other, Err(Error::RunExists(_))),
            "another run, same id: {other:?}"
        );
        let progress = store.progress(&run).await.expect("progress");
        assert_eq!(
            (progress.jobs, progress.terminal, progress.status),
            (3, 1, RunStatus::Running),
            "a repeated create_run left the run as it was"
        );
        let unknown = store.run_record(&RunId::new()).await;
        assert!(
            matches!(unknown, Err(Error::RunNotFound(_))),
            "an unknown run: {unknown:?}"
        );
        let unknown = store.progress(&RunId::new()).await;
        assert!(
            matches!(unknown, Err(Error::RunNotFound(_))),
            "an unknown run: {unknown:?}"
        );
    }

    /// Agent configs are read back whole, each by its index; a missing one is an error.
    pub async fn agent_configs_are_kept_per_index<B: ConfigStoreBackend>(store: &B) {
        let run = new_run(store, 1).await;
        let limits = JobLimits {
            jobs: 1,
            max_attempts: 3,
            job_timeout_ms: 1_000,
            retry_backoff_ms: 10,
            retry_backoff_max_ms: 100,
        };
        let configs = (0..2)
            .map(|index| AgentConfigRecord {
                v: WIRE_VERSION,
                run_id: run.clone(),
                index,
                agents: 2,
                limits,
                config: json!({ "greeting": format!("agent {index}"), "proxy": null }),
            })
            .collect::<Vec<_>>();
        store
            .put_agent_configs(&run, configs.clone())
            .await
            .expect("put_agent_configs");
        for config in &configs {
            let read = store
                .agent_config(&run, config.index)
                .await
                .expect("agent_config");
            assert_eq!(&read, config);
        }
        let missing = store.agent_config(&run, 7).await;
        assert!(
            matches!(missing, Err(Error::AgentConfigMissing { .. })),
            "agent 7 has no config: {missing:?}"
        );
    }

    /// A job's result is recorded once, counted by status, and read back in order.
    pub async fn results_are_recorded_once<B: ConfigStoreBackend>(store: &B) {
        let run = new_run(store, 3).await;
        let first = store
            .record_result(&run, result(0, JobStatus::Succeeded))
            .await;
        assert_eq!(first.expect("record_result"), Recorded::Now);
        let again = store
            .record_result(&run, result(0, JobStatus::Failed))
            .await;
        assert_eq!(
            again.expect("record_result"),
            Recorded::Before,
            "a second result of job 0"
        );
        assert!(store.is_recorded(&run, 0).await.expect("is_recorded"));
        assert!(!store.is_recorded(&run, 1).await.expect("is_recorded"));
        store
            .record_result(&run, result(1, JobStatus::Failed))
            .await
            .expect("record_result");
        store.record_retry(&run).await.expect("record_retry");
        let progress = store.progress(&run).await.expect("progress");
        assert_eq!(
            (
                progress.succeeded,
                progress.failed,
                progress.terminal,
                progress.retries
            ),
            (1, 1, 2, 1)
        );
        let all = store
            .results_after(&run, 0, Duration::ZERO)
            .await
            .expect("results_after");
        let order: Vec<_> = all
            .iter()
            .map(|result| (result.index, result.status))
            .collect();
        assert_eq!(order, [(0, JobStatus::Succeeded), (1, JobStatus::Failed)]);
        let rest = store
            .results_after(&run, 1, Duration::ZERO)
            .await
            .expect("results_after");
        assert_eq!(rest.len(), 1, "results after the first: {rest:?}");
        assert_eq!(rest[0].index, 1);
    }

    /// Releasing the results a reader took never loses one it has not: reads from that cursor
    /// on give every later result, whether the store let the others go or kept them.
    pub async fn released_results_leave_the_rest<B: ConfigStoreBackend>(store: &B) {
        let run = new_run(store, 4).await;
        for index in 0..3 {
            store
                .record_result(&run, result(index, JobStatus::Succeeded))
                .await
                .expect("record_result");
        }
        store
            .release_results(&run, 2)
            .await
            .expect("release_results");
        store
            .record_result(&run, result(3, JobStatus::Failed))
            .await
            .expect("record_result");
        let indexes = |results: Vec<JobResult>| {
            results
                .iter()
                .map(|result| result.index)
                .collect::<Vec<_>>()
        };
        let after_two = store.results_after(&run, 2, Duration::ZERO).await;
        assert_eq!(indexes(after_two.expect("results_after")), [2, 3]);
        let after_three = store.results_after(&run, 3, Duration::ZERO).await;
        assert_eq!(indexes(after_three.expect("results_after")), [3]);
        store
            .release_results(&run, 9)
            .await
            .expect("release_results");
        let progress = store.progress(&run).await.expect("progress");
        assert_eq!(progress.terminal, 4, "releasing results changes no counter");
    }

    /// A store connected again shares the first one's runs: what either records, both see.
    pub async fn a_store_connected_again_shares_its_runs<B: ConfigStoreBackend>(store: &B) {
        let run = new_run(store, 2).await;
        let again = store.connect_here().await.expect("connect_here");
        again
            .record_result(&run, result(0, JobStatus::Succeeded))
            .await
            .expect("record_result through the new connection");
        assert!(store.is_recorded(&run, 0).await.expect("is_recorded"));
        store
            .record_result(&run, result(1, JobStatus::Failed))
            .await
            .expect("record_result");
        let progress = again.progress(&run).await.expect("progress");
        assert_eq!(
            (progress.terminal, progress.status),
            (2, RunStatus::Completed)
        );
    }

    /// The last result a running run needs completes it, and exactly one of concurrent
    /// recorders is told so.
    pub async fn the_last_result_completes_the_run_once<B: ConfigStoreBackend>(store: &B) {
        let jobs = 16;
        let run = new_run(store, jobs).await;
        let recorded = futures::future::join_all(
            (0..jobs).map(|index| store.record_result(&run, result(index, JobStatus::Succeeded))),
        )
        .await;
        let last = recorded
            .into_iter()
            .map(|recorded| recorded.expect("record_result"))
            .filter(|recorded| *recorded == Recorded::LastOfRun)
            .count();
        assert_eq!(
            last, 1,
            "recorders told they recorded the run's last result"
        );
        let progress = store.progress(&run).await.expect("progress");
        assert_eq!(
            (progress.terminal, progress.status),
            (jobs, RunStatus::Completed)
        );
    }

    /// A wait for results ends as soon as one is recorded, and a wait with none ends empty.
    pub async fn a_wait_for_results_ends_when_one_arrives<B: ConfigStoreBackend>(store: &B) {
        let run = new_run(store, 2).await;
        let empty = store
            .results_after(&run, 0, Duration::from_millis(50))
            .await
            .expect("results_after");
        assert!(empty.is_empty());
        let waiting = store.results_after(&run, 0, Duration::from_secs(20));
        let recording = async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            store
                .record_result(&run, result(1, JobStatus::Succeeded))
                .await
                .expect("record_result");
        };
        let started = std::time::Instant::now();
        let (arrived, ()) = tokio::join!(waiting, recording);
        assert_eq!(arrived.expect("results_after").len(), 1);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the wait ended {:?} after a result arrived",
            started.elapsed()
        );
    }

    /// Redeliveries are counted per job, from 1, and for the run.
    pub async fn redeliveries_are_counted_per_job<B: ConfigStoreBackend>(store: &B) {
        let run = new_run(store, 2).await;
        for expected in 1..=3 {
            let count = store
                .count_redelivery(&run, 0)
                .await
                .expect("count_redelivery");
            assert_eq!(count, expected);
        }
        assert_eq!(
            store
                .count_redelivery(&run, 1)
                .await
                .expect("count_redelivery"),
            1
        );
        let progress = store.progress(&run).await.expect("progress");
        assert_eq!(progress.redeliveries, 4);
    }

    /// A cancel flags a running run; an ended run keeps its status whatever comes after.
    pub async fn an_end_is_never_overwritten<B: ConfigStoreBackend>(store: &B) {
        let run = new_run(store, 1).await;
        store
            .set_status(&run, RunStatus::Canceled)
            .await
            .expect("set_status");
        store
            .set_status(&run, RunStatus::Running)
            .await
            .expect("set_status");
        let status = store.progress(&run).await.expect("progress").status;
        assert_eq!(status, RunStatus::Canceled);

        let completed = new_run(store, 1).await;
        store
            .record_result(&completed, result(0, JobStatus::Succeeded))
            .await
            .expect("record_result");
        store
            .set_status(&completed, RunStatus::Canceled)
            .await
            .expect("set_status");
        let status = store.progress(&completed).await.expect("progress").status;
        assert_eq!(
            status,
            RunStatus::Completed,
            "a cancel after the run completed"
        );
    }

    /// The first finished record stands, and of concurrent writers exactly one wrote it;
    /// results outlive the end, and removing the run removes everything.
    pub async fn the_first_finished_record_stands<B: ConfigStoreBackend>(store: &B) {
        let run = new_run(store, 1).await;
        store
            .record_result(&run, result(0, JobStatus::Failed))
            .await
            .expect("record_result");
        assert_eq!(store.finished(&run).await.expect("finished"), None);
        let record = |finished_ms| FinishedRun {
            v: WIRE_VERSION,
            status: RunStatus::Completed,
            finished_ms,
            dead_letters: Vec::new(),
        };
        let (first, second) = tokio::join!(
            store.mark_finished(&run, record(10)),
            store.mark_finished(&run, record(20)),
        );
        let (first, second) = (
            first.expect("mark_finished"),
            second.expect("mark_finished"),
        );
        assert!(
            first.1 != second.1,
            "exactly one writer: {first:?} {second:?}"
        );
        assert_eq!(first.0, second.0, "both see the record that stands");
        let stored = store.finished(&run).await.expect("finished");
        assert_eq!(stored.as_ref(), Some(&first.0));
        let results = store
            .results_after(&run, 0, Duration::ZERO)
            .await
            .expect("results_after of an ended run");
        assert_eq!(results.len(), 1);
        store.remove_run(&run).await.expect("remove_run");
        let gone = store.run_record(&run).await;
        assert!(
            matches!(gone, Err(Error::RunNotFound(_))),
            "a removed run: {gone:?}"
        );
        assert_eq!(store.finished(&run).await.ok().flatten(), None);
    }
}

/// Defines `mod $name` with one `#[tokio::test]` per config store check, each on the backend
/// `$make` (an `async` block) gives.
#[macro_export]
macro_rules! config_store_conformance {
    ($name:ident, $make:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            use $crate::backend::conformance::config_store as checks;
            $crate::__conformance_tests!($make, checks;
                runs_are_created_once,
                agent_configs_are_kept_per_index,
                results_are_recorded_once,
                released_results_leave_the_rest,
                a_store_connected_again_shares_its_runs,
                the_last_result_completes_the_run_once,
                a_wait_for_results_ends_when_one_arrives,
                redeliveries_are_counted_per_job,
                an_end_is_never_overwritten,
                the_first_finished_record_stands,
            );
        }
    };
}

/// The job queue's checks.
pub mod job_queue {
    use std::time::Duration;

    use super::super::{JobQueueBackend, QueueConsumer, QueueDelivery};
    use super::*;

    /// How long a check waits for a delivery the contract says comes.
    const ARRIVES: Duration = Duration::from_secs(20);
    /// How long a check waits to see that a delivery the contract says does not come, doesn't.
    const STAYS_AWAY: Duration = Duration::from_millis(400);

    fn jobs(run: &RunId, count: u64) -> Vec<JobMessage> {
        (0..count)
            .map(|index| JobMessage {
                v: WIRE_VERSION,
                run_id: run.clone(),
                job_id: JobId::new(),
                index,
                attempt: 1,
                identity_retries: 0,
                payload: serde_json::value::to_raw_value(&json!({ "n": index }))
                    .expect("a JSON payload")
                    .into(),
            })
            .collect()
    }

    /// A run of `count` jobs published, and a consumer of it taking `prefetch` at a time.
    async fn published<Q: JobQueueBackend>(
        queue: &Q,
        count: u64,
        prefetch: u16,
    ) -> (RunId, Q::Consumer) {
        let run = RunId::new();
        queue
            .publish(&run, jobs(&run, count).into())
            .await
            .expect("publish");
        let consumer = queue.consume(&run, prefetch).await.expect("consume");
        (run, consumer)
    }

    /// Closes the consumer and deletes the run's queues.
    async fn close_and_delete<Q: JobQueueBackend>(queue: &Q, run: &RunId, consumer: Q::Consumer) {
        consumer.close().await;
        queue.delete(run).await.expect("delete");
    }

    async fn next<C: QueueConsumer>(consumer: &mut C) -> C::Delivery {
        tokio::time::timeout(ARRIVES, consumer.next())
            .await
            .expect("a delivery arrives")
            .expect("next")
            .expect("the queue is not deleted")
    }

    async fn nothing_comes<C: QueueConsumer>(consumer: &mut C, why: &str) {
        if let Ok(delivery) = tokio::time::timeout(STAYS_AWAY, consumer.next()).await {
            panic!("{why}, yet {delivery:?} came");
        }
    }

    /// Every published job is delivered once, whole, and an acked one never again.
    pub async fn published_jobs_are_delivered_and_acked<Q: JobQueueBackend>(queue: &Q) {
        let run = RunId::new();
        let published = jobs(&run, 5);
        queue
            .publish(&run, published.clone().into())
            .await
            .expect("publish");
        let mut consumer = queue.consume(&run, 10).await.expect("consume");
        let mut seen = Vec::new();
        for _ in 0..5 {
            let delivery = next(&mut consumer).await;
            assert_eq!(delivery.redeliveries(), 0);
            seen.push(delivery.message().clone());
            delivery.ack().await.expect("ack");
        }
        seen.sort_by_key(|message| message.index);
        assert_eq!(seen, published);
        nothing_comes(&mut consumer, "every job was acked").await;
        close_and_delete(queue, &run, consumer).await;
    }

    /// No more than `prefetch` deliveries are unsettled at once.
    pub async fn prefetch_bounds_unsettled_deliveries<Q: JobQueueBackend>(queue: &Q) {
        let (run, mut consumer) = published(queue, 3, 1).await;
        let first = next(&mut consumer).await;
        nothing_comes(&mut consumer, "prefetch 1 and one delivery unsettled").await;
        first.ack().await.expect("ack");
        next(&mut consumer).await.ack().await.expect("ack");
        close_and_delete(queue, &run, consumer).await;
    }

    /// A consumer that stopped taking still settles what it holds, and what it settles lets
    /// the next job go to another consumer, not into the stopped one.
    pub async fn a_consumer_that_stopped_taking_settles_and_takes_nothing<Q: JobQueueBackend>(
        queue: &Q,
    ) {
        let run = RunId::new();
        queue
            .publish(&run, jobs(&run, 2).into())
            .await
            .expect("publish");
        let mut stopped = queue.consume(&run, 1).await.expect("consume");
        let held = next(&mut stopped).await;
        stopped.stop_taking().await;
        held.ack()
            .await
            .expect("a delivery settles after its consumer stopped taking");
        let mut other = queue.consume(&run, 1).await.expect("consume");
        let second = next(&mut other).await;
        assert_eq!(
            second.redeliveries(),
            0,
            "no consumer held the second job before"
        );
        second.ack().await.expect("ack");
        stopped.close().await;
        nothing_comes(&mut other, "both jobs were acked").await;
        other.close().await;
        queue.delete(&run).await.expect("delete");
    }

    /// A delivery dropped unsettled, or held by a consumer that closes, comes back marked
    /// redelivered.
    pub async fn unsettled_deliveries_come_back<Q: JobQueueBackend>(queue: &Q) {
        let run = RunId::new();
        let published = jobs(&run, 1);
        queue
            .publish(&run, published.clone().into())
            .await
            .expect("publish");
        let mut consumer = queue.consume(&run, 1).await.expect("consume");
        drop(next(&mut consumer).await);
        let again = next(&mut consumer).await;
        assert_eq!(again.message(), &published[0]);
        assert!(
            again.redeliveries() >= 1,
            "a dropped delivery comes back redelivered"
        );
        // Held by a consumer that closes: the next consumer gets it.
        let held = again;
        consumer.close().await;
        drop(held);
        let mut other = queue.consume(&run, 1).await.expect("consume");
        let third = next(&mut other).await;
        assert_eq!(third.message().index, 0);
        third.ack().await.expect("ack");
        other.close().await;
        queue.delete(&run).await.expect("delete");
    }

    /// A retry comes back as the attempt it names, after its delay; a retry elsewhere comes
    /// back at once as the same attempt, its identity retry counted.
    pub async fn retries_come_back_as_told<Q: JobQueueBackend>(queue: &Q) {
        let (run, mut consumer) = published(queue, 1, 1).await;
        let first = next(&mut consumer).await;
        let delay = Duration::from_millis(800);
        let retried_at = std::time::Instant::now();
        first.retry(2, delay).await.expect("retry");
        let second = next(&mut consumer).await;
        assert!(
            retried_at.elapsed() >= delay.mul_f64(0.9),
            "a retry with a {delay:?} delay came back after {:?}",
            retried_at.elapsed()
        );
        assert_eq!(second.message().attempt, 2);
        second
            .retry_new_identity()
            .await
            .expect("retry_new_identity");
        let third = next(&mut consumer).await;
        assert_eq!(
            (third.message().attempt, third.message().identity_retries),
            (2, 1)
        );
        third.ack().await.expect("ack");
        close_and_delete(queue, &run, consumer).await;
    }

    /// A retry whose delay ended is taken before jobs never tried, and the jobs that waited
    /// behind it come as never tried.
    pub async fn due_retries_come_before_fresh_jobs<Q: JobQueueBackend>(queue: &Q) {
        let (run, mut consumer) = published(queue, 4, 1).await;
        let first = next(&mut consumer).await;
        assert_eq!(first.message().index, 0);
        let delay = Duration::from_millis(300);
        first.retry(2, delay).await.expect("retry");
        let second = next(&mut consumer).await;
        assert_eq!(second.message().index, 1, "the retry is not due yet");
        tokio::time::sleep(delay * 2).await;
        second.ack().await.expect("ack");
        let retried = next(&mut consumer).await;
        assert_eq!(
            (retried.message().index, retried.message().attempt),
            (0, 2),
            "the due retry comes before jobs 2 and 3, never tried"
        );
        retried.ack().await.expect("ack");
        for index in [2, 3] {
            let fresh = next(&mut consumer).await;
            assert_eq!(fresh.message().index, index);
            assert_eq!(
                fresh.redeliveries(),
                0,
                "job {index} waited; it was not tried"
            );
            fresh.ack().await.expect("ack");
        }
        nothing_comes(&mut consumer, "every job was acked").await;
        close_and_delete(queue, &run, consumer).await;
    }

    /// A wait for the next delivery that is dropped unfinished loses nothing (the agent races
    /// `next` against its other checks): every job still comes, once.
    pub async fn a_dropped_wait_loses_no_job<Q: JobQueueBackend>(queue: &Q) {
        let (run, mut consumer) = published(queue, 3, 1).await;
        let first = next(&mut consumer).await;
        first
            .retry(2, Duration::from_millis(100))
            .await
            .expect("retry");
        let mut seen = Vec::new();
        let deadline = std::time::Instant::now() + ARRIVES;
        while seen.len() < 3 && std::time::Instant::now() < deadline {
            // Most waits are dropped before the broker answers.
            let wait = tokio::time::timeout(Duration::from_millis(1), consumer.next());
            if let Ok(delivery) = wait.await {
                let delivery = delivery.expect("next").expect("the queue is not deleted");
                seen.push((delivery.message().index, delivery.message().attempt));
                delivery.ack().await.expect("ack");
            }
        }
        seen.sort_unstable();
        assert_eq!(seen, [(0, 2), (1, 1), (2, 1)]);
        nothing_comes(&mut consumer, "every job was acked").await;
        close_and_delete(queue, &run, consumer).await;
    }

    /// A dead-lettered job leaves the queue and is kept with its reason.
    pub async fn dead_letters_are_kept_with_their_reason<Q: JobQueueBackend>(queue: &Q) {
        let run = RunId::new();
        let published = jobs(&run, 2);
        queue
            .publish(&run, published.clone().into())
            .await
            .expect("publish");
        let mut consumer = queue.consume(&run, 2).await.expect("consume");
        let deliveries = [next(&mut consumer).await, next(&mut consumer).await];
        for delivery in deliveries {
            let reason = format!("job {} was unreadable", delivery.message().index);
            delivery.dead_letter(reason).await.expect("dead_letter");
        }
        nothing_comes(&mut consumer, "both jobs were dead-lettered").await;
        let mut dead = queue.dead_letters(&run).await.expect("dead_letters");
        dead.sort_by_key(|letter| letter.message.as_ref().map(|message| message.index));
        let found: Vec<_> = dead
            .iter()
            .map(|letter| (letter.message.clone(), letter.reason.clone()))
            .collect();
        let expected: Vec<_> = published
            .iter()
            .map(|message| {
                let reason = format!("job {} was unreadable", message.index);
                (Some(message.clone()), reason)
            })
            .collect();
        assert_eq!(found, expected);
        close_and_delete(queue, &run, consumer).await;
    }

    /// Deleting a run's queue ends its consumers and drops its waiting jobs; other runs'
    /// queues are untouched.
    pub async fn deleting_a_run_ends_its_consumers_only<Q: JobQueueBackend>(queue: &Q) {
        let (run, other) = (RunId::new(), RunId::new());
        queue
            .publish(&run, jobs(&run, 2).into())
            .await
            .expect("publish");
        queue
            .publish(&other, jobs(&other, 1).into())
            .await
            .expect("publish");
        let mut consumer = queue.consume(&run, 1).await.expect("consume");
        let held = next(&mut consumer).await;
        queue.delete(&run).await.expect("delete");
        drop(held);
        let end = tokio::time::timeout(ARRIVES, async {
            loop {
                match consumer.next().await {
                    Ok(None) => return Ok(()),
                    Ok(Some(delivery)) => drop(delivery),
                    Err(error) => return Err(error),
                }
            }
        })
        .await
        .expect("a deleted queue ends its consumers");
        end.expect("the end of a deleted queue is not an error");
        let mut other_consumer = queue.consume(&other, 1).await.expect("consume");
        let delivery = next(&mut other_consumer).await;
        assert_eq!(delivery.message().run_id, other);
        delivery.ack().await.expect("ack");
        other_consumer.close().await;
        queue.delete(&other).await.expect("delete");
        queue.close().await;
    }
}

/// Defines `mod $name` with one `#[tokio::test]` per job queue check, each on the backend
/// `$make` (an `async` block) gives.
#[macro_export]
macro_rules! job_queue_conformance {
    ($name:ident, $make:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            use $crate::backend::conformance::job_queue as checks;
            $crate::__conformance_tests!($make, checks;
                published_jobs_are_delivered_and_acked,
                prefetch_bounds_unsettled_deliveries,
                unsettled_deliveries_come_back,
                a_consumer_that_stopped_taking_settles_and_takes_nothing,
                retries_come_back_as_told,
                due_retries_come_before_fresh_jobs,
                a_dropped_wait_loses_no_job,
                dead_letters_are_kept_with_their_reason,
                deleting_a_run_ends_its_consumers_only,
            );
        }
    };
}

/// One test per check; not a public API.
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_tests {
    ($make:expr, $checks:ident; $($check:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let backend = $make.await;
                $checks::$check(&backend).await;
            }
        )+
    };
}
