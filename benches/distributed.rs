//! `cargo xtask bench`: no-op jobs through whole runs on the local Redis and RabbitMQ (agents as
//! tasks, so only the backends are measured), next to a plain lapin loop on the same broker in
//! the same process: persistent publishes with confirms, then consumers with prefetch 1 and
//! manual ack. The plain loop runs on a quorum queue, the type of Armada's jobs queue, so the
//! ratio measures Armada and not the queue type; its figure on a classic queue is shown too.
//!
//! Throughput is jobs over the time from the first publish to the last ack (for Armada, from
//! `launch` to the end of `follow`). Latency is the job cycle on one agent
//! ([`support::Starts::cycle_quantiles`]); on the plain loop, the time between two consecutive
//! deliveries to one consumer, which holds acknowledging the first (prefetch 1).
//!
//! Then (key `retries`) how late retries start, in memory and over RabbitMQ: a run with a long
//! queue of short jobs, some of which fail their first attempt with a retry delay. Lateness is
//! the time from the end of the delay (counted from the failure) to the second attempt's start.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod support;

use armada::prelude::*;
use armada::{Backends, Launcher, Orchestrator, Plan, ProjectFiles, RunOverrides, ScriptAgent};
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use support::{Noop, Starts, median, noop_plan, target, wall_ns, wanted};

const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const REDIS_URL: &str = "redis://127.0.0.1:6379";
const JOBS: u64 = 3_000;
const ROUNDS: usize = 3;

async fn armada_run(agents: u32) -> (Duration, Starts) {
    let plan = noop_plan(agents, JOBS);
    let backends = Backends::connect(REDIS_URL, AMQP_URL, "memory://")
        .await
        .expect("Redis and RabbitMQ on 127.0.0.1 (cargo xtask bench starts them)");
    let orchestrator = Orchestrator::new(
        backends,
        Launcher::InProcess(Arc::new(ScriptAgent::new(Noop))),
    );
    let start = Instant::now();
    let handle = orchestrator.launch(&plan).await.expect("launch");
    let (report, starts) = Starts::follow(handle).await;
    assert_eq!(report.progress.succeeded, JOBS);
    (start.elapsed(), starts)
}

/// RabbitMQ's queue types, as `x-queue-type` names them.
#[derive(Clone, Copy)]
enum QueueType {
    Quorum,
    Classic,
}

async fn plain_lapin(consumers: u32, queue_type: QueueType) -> (Duration, Starts) {
    let queue = format!("bench.plain.{}", std::process::id());
    let mut arguments = FieldTable::default();
    if let QueueType::Quorum = queue_type {
        arguments.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
    }
    let connection = Connection::connect(AMQP_URL, ConnectionProperties::default())
        .await
        .expect("RabbitMQ on 127.0.0.1");
    let channel = connection.create_channel().await.expect("a channel");
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(queue.as_str().into(), durable, arguments)
        .await
        .expect("declare");
    let start = Instant::now();
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    let mut confirms = Vec::with_capacity(JOBS as usize);
    for job in 0..JOBS {
        let body = job.to_string();
        let confirm = channel
            .basic_publish(
                "".into(),
                queue.as_str().into(),
                BasicPublishOptions::default(),
                body.as_bytes(),
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .expect("publish");
        confirms.push(confirm);
    }
    for confirm in confirms {
        confirm.await.expect("confirm");
    }
    let mut tasks = tokio::task::JoinSet::new();
    let per_consumer = JOBS / u64::from(consumers);
    for index in 0..consumers {
        let channel = connection.create_channel().await.expect("a channel");
        let queue = queue.clone();
        let take = per_consumer + u64::from(index == 0) * (JOBS % u64::from(consumers));
        tasks.spawn(async move {
            let mut received = Vec::with_capacity(take as usize);
            channel
                .basic_qos(1, BasicQosOptions::default())
                .await
                .expect("qos");
            let mut deliveries = channel
                .basic_consume(
                    queue.as_str().into(),
                    "".into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
                .expect("consume");
            for _ in 0..take {
                let delivery = deliveries.next().await.expect("open").expect("a delivery");
                received.push(wall_ns());
                delivery
                    .acker
                    .ack(BasicAckOptions::default())
                    .await
                    .expect("ack");
            }
            channel.close(200, "done".into()).await.expect("close");
            received
        });
    }
    let mut starts = Starts::default();
    let mut consumer = 0;
    while let Some(received) = tasks.join_next().await {
        for at in received.unwrap() {
            starts.push(consumer, at);
        }
        consumer += 1;
    }
    let elapsed = start.elapsed();
    channel
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await
        .expect("delete");
    (elapsed, starts)
}

/// Jobs of the retries run, its agents, and the work of each attempt.
const RETRY_JOBS: u64 = 2_000;
const RETRY_AGENTS: u32 = 4;
const RETRY_WORK: Duration = Duration::from_millis(5);
/// Every `RETRY_EVERY`th job fails its first attempt and asks to be retried after `RETRY_DELAY`.
const RETRY_EVERY: u64 = 10;
const RETRY_DELAY: Duration = Duration::from_millis(200);

/// Works [`RETRY_WORK`]; every [`RETRY_EVERY`]th job fails its first attempt, noting when. A
/// second attempt returns how late it started after its delay, in nanoseconds.
#[derive(Default)]
struct FailOnce {
    failed_at: Mutex<HashMap<u64, u64>>,
}

impl Script for FailOnce {
    type Agent = PlainAgent;
    type Job = Job<serde::de::IgnoredAny>;
    type Output = Option<u64>;

    async fn run(
        &self,
        _: &mut PlainAgent,
        job: &mut Job<serde::de::IgnoredAny>,
    ) -> Result<Option<u64>, ScriptError> {
        let started = wall_ns();
        let index = job.info.index;
        if job.info.attempt > 1 {
            let failed = self.failed_at.lock().unwrap().get(&index).copied();
            let due = failed.map(|at| at + RETRY_DELAY.as_nanos() as u64);
            return Ok(due.map(|due| started.saturating_sub(due)));
        }
        tokio::time::sleep(RETRY_WORK).await;
        if index.is_multiple_of(RETRY_EVERY) {
            self.failed_at.lock().unwrap().insert(index, wall_ns());
            return Err(ScriptError::retry_after("fails once", RETRY_DELAY));
        }
        Ok(None)
    }
}

/// How late retries started, in milliseconds: (p50, p95, max), on these backends.
async fn retry_lateness(store: &str, queue: &str) -> (f64, f64, f64) {
    let template = serde_json::json!({
        "run_message": { "agents": RETRY_AGENTS, "jobs": RETRY_JOBS, "max_attempts": 2 },
        "default_job_message": {},
    });
    let files = ProjectFiles::from_template(template.to_string());
    let plan = Plan::for_script::<FailOnce>(&files, &RunOverrides::default()).expect("a plan");
    let backends = Backends::connect(store, queue, "memory://")
        .await
        .expect("the backends (cargo xtask bench starts Redis and RabbitMQ)");
    let script = ScriptAgent::new(FailOnce::default());
    let orchestrator = Orchestrator::new(backends, Launcher::InProcess(Arc::new(script)));
    let handle = orchestrator.launch(&plan).await.expect("launch");
    let mut late = Vec::new();
    let report = handle
        .follow(|event| {
            if let armada::FollowEvent::Result(result) = event
                && let Some(ns) = result.output.as_ref().and_then(serde_json::Value::as_u64)
            {
                late.push(ns as f64 / 1e6);
            }
        })
        .await
        .expect("the run ends");
    assert_eq!(report.progress.succeeded, RETRY_JOBS);
    assert_eq!(late.len() as u64, RETRY_JOBS / RETRY_EVERY);
    late.sort_by(f64::total_cmp);
    let at = |q: f64| late[((late.len() as f64 * q) as usize).min(late.len() - 1)];
    (at(0.5), at(0.95), late[late.len() - 1])
}

/// The `retries` section: how late retries start behind a long queue of fresh jobs.
fn retries_section(runtime: &tokio::runtime::Runtime) {
    let fresh_secs = RETRY_JOBS as f64 * RETRY_WORK.as_secs_f64() / f64::from(RETRY_AGENTS);
    println!(
        "\n### Retries on time\n\n{RETRY_JOBS} jobs of {} ms on {RETRY_AGENTS} agents (about \
         {fresh_secs:.1} s of queue); every {RETRY_EVERY}th job fails its first attempt and asks \
         for a retry after {} ms. Lateness: from the end of that delay, counted from the failure, \
         to the second attempt's start. A retry sent to the back of the queue would start up to \
         {fresh_secs:.1} s late.\n",
        RETRY_WORK.as_millis(),
        RETRY_DELAY.as_millis(),
    );
    println!("| queue | late p50 ms | late p95 ms | late max ms |");
    println!("|---|---:|---:|---:|");
    let mut worst_p95: f64 = 0.0;
    for (name, store, queue) in [
        ("in memory", "memory://", "memory://"),
        ("RabbitMQ (store Redis)", REDIS_URL, AMQP_URL),
    ] {
        let (p50, p95, max) = runtime.block_on(retry_lateness(store, queue));
        println!("| {name} | {p50:.1} | {p95:.1} | {max:.1} |");
        worst_p95 = worst_p95.max(p95);
    }
    println!(
        "\nA due retry waits for the first agent to finish its current job ({} ms here); over \
         RabbitMQ, agents look into the run's due queue at most every {} ms between jobs.\n",
        RETRY_WORK.as_millis(),
        armada_core::backend::rabbitmq::DUE_LOOK_EVERY.as_millis(),
    );
    target(
        "retries start within 100 ms of their delay's end (p95, in memory and over RabbitMQ)",
        worst_p95 <= 100.0,
        &format!("worst p95 {worst_p95:.1} ms"),
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    println!(
        "{JOBS} no-op jobs per run over the local Redis (store) and RabbitMQ (queue), agents as \
         tasks, monitor in memory; from the first publish to the last ack; median of {ROUNDS} \
         runs, alternating with the plain loop.\n"
    );
    println!(
        "| agents | armada jobs/s | cycle p50 / p99 µs | plain lapin msgs/s, quorum queue | plain cycle p50 / p99 µs | armada / plain msgs/s | plain lapin msgs/s, classic queue |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    let mut worst: Option<(u32, f64)> = None;
    for agents in [1, 4, 16] {
        if !wanted(&agents.to_string()) {
            continue;
        }
        let rate = |elapsed: Duration| JOBS as f64 / elapsed.as_secs_f64();
        let (mut armada_rates, mut plain_rates, mut classic_rates) =
            (Vec::new(), Vec::new(), Vec::new());
        let (mut armada_starts, mut plain_starts) = (Starts::default(), Starts::default());
        for _ in 0..ROUNDS {
            let (elapsed, starts) = runtime.block_on(plain_lapin(agents, QueueType::Quorum));
            plain_rates.push(rate(elapsed));
            plain_starts = starts;
            let (elapsed, _) = runtime.block_on(plain_lapin(agents, QueueType::Classic));
            classic_rates.push(rate(elapsed));
            let (elapsed, starts) = runtime.block_on(armada_run(agents));
            armada_rates.push(rate(elapsed));
            armada_starts = starts;
        }
        let (armada, plain, classic) = (
            median(armada_rates),
            median(plain_rates),
            median(classic_rates),
        );
        let (armada_p50, armada_p99) = armada_starts.cycle_quantiles();
        let (plain_p50, plain_p99) = plain_starts.cycle_quantiles();
        println!(
            "| {agents} | {armada:.0} | {armada_p50:.0} / {armada_p99:.0} | {plain:.0} | {plain_p50:.0} / {plain_p99:.0} | {:.3} | {classic:.0} |",
            armada / plain
        );
        if worst.is_none_or(|(_, ratio)| armada / plain < ratio) {
            worst = Some((agents, armada / plain));
        }
    }
    println!(
        "\nCycle: as in the embedded table, the time between two consecutive jobs (deliveries) \
         starting on one agent (consumer), from the last round. Armada's cycle also holds \
         recording the result in Redis before the ack. Armada's jobs queue is a quorum queue \
         (replicated, and kept whole through a broker restart); the last column shows what the \
         plain loop gets from a classic queue on the same broker.\n"
    );
    if let Some((agents, ratio)) = worst {
        target(
            "over RabbitMQ, at least half the plain lapin loop's msgs/s (same queue type)",
            ratio >= 0.5,
            &format!("lowest ratio {ratio:.2}, with {agents} agents"),
        );
    }
    if wanted("retries") {
        retries_section(&runtime);
    }
}
