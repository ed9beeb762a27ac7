//! `cargo xtask bench`: no-op jobs through whole runs on the local Redis and RabbitMQ (agents as
//! tasks, so only the backends are measured), next to a plain lapin loop on the same broker in
//! the same process: persistent publishes with confirms, then consumers with prefetch 1 and
//! manual ack.

use std::sync::Arc;
use std::time::{Duration, Instant};

mod support;

use armada::{Backends, Launcher, Orchestrator, ScriptAgent};
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use support::{Noop, noop_plan};

const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const REDIS_URL: &str = "redis://127.0.0.1:6379";
const JOBS: u64 = 5_000;

async fn armada_run(agents: u32) -> Duration {
    let plan = noop_plan(agents, JOBS);
    let backends = Backends::connect(REDIS_URL, AMQP_URL, "memory://")
        .await
        .expect("Redis and RabbitMQ on 127.0.0.1 (cargo xtask bench starts them)");
    let orchestrator = Orchestrator::new(
        backends,
        Launcher::InProcess(Arc::new(ScriptAgent::new(Noop))),
    );
    let start = Instant::now();
    let report = orchestrator
        .launch(&plan)
        .await
        .expect("launch")
        .follow(|_| {})
        .await
        .expect("run");
    assert_eq!(report.progress.succeeded, JOBS);
    start.elapsed()
}

async fn plain_lapin(consumers: u32) -> Duration {
    let queue = format!("bench.plain.{}", std::process::id());
    let connection = Connection::connect(AMQP_URL, ConnectionProperties::default())
        .await
        .expect("RabbitMQ on 127.0.0.1");
    let channel = connection.create_channel().await.expect("a channel");
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(queue.as_str().into(), durable, FieldTable::default())
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
                delivery
                    .acker
                    .ack(BasicAckOptions::default())
                    .await
                    .expect("ack");
            }
            channel.close(200, "done".into()).await.expect("close");
        });
    }
    while tasks.join_next().await.is_some() {}
    let elapsed = start.elapsed();
    channel
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await
        .expect("delete");
    elapsed
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    println!("## No-op jobs over Redis + RabbitMQ ({JOBS} jobs per run, publish to last ack)\n");
    println!("| agents | armada jobs/s | plain lapin msgs/s | armada / plain |");
    println!("|---:|---:|---:|---:|");
    for agents in [1, 4, 16] {
        let plain = runtime.block_on(plain_lapin(agents));
        let armada = runtime.block_on(armada_run(agents));
        let rate = |elapsed: Duration| JOBS as f64 / elapsed.as_secs_f64();
        println!(
            "| {agents} | {:.0} | {:.0} | {:.3} |",
            rate(armada),
            rate(plain),
            rate(armada) / rate(plain)
        );
    }
}
