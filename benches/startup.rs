//! `cargo xtask bench`: start-up, from calling `Orchestrator::launch` to the first job started
//! (the no-op script returns the wall clock when it starts), with 1 and 8 agents:
//!
//! - embedded: in-memory backends, agents as tasks; next to plain tokio tasks taking their
//!   first message from a channel;
//! - processes: Redis + RabbitMQ, each agent a process (this binary, `agent --run-id R --index
//!   I`, as `orchestrate` runs them); next to plain processes (this binary again) that connect
//!   to RabbitMQ with lapin and take one message.
//!
//! One job per agent; median of a few launches.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

mod support;

use armada::{Backends, Launcher, Orchestrator, ScriptAgent};
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use support::{Noop, Starts, median, noop_plan, wall_ns, wanted};

const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const REDIS_URL: &str = "redis://127.0.0.1:6379";
const ROUNDS: usize = 7;

/// Milliseconds between two wall-clock readings.
fn ms_between(from: u64, to: u64) -> f64 {
    to.saturating_sub(from) as f64 / 1e6
}

/// Launch to first job started, and launch to `launch` returning, in ms.
async fn armada(agents: u32, processes: bool) -> (f64, f64) {
    let plan = noop_plan(agents, u64::from(agents));
    let (backends, launcher) = if processes {
        let launcher = armada::Launcher::Processes(armada_orchestrator_launcher());
        (
            Backends::connect(REDIS_URL, AMQP_URL, "memory://")
                .await
                .unwrap(),
            launcher,
        )
    } else {
        (
            Backends::embedded().await.unwrap(),
            Launcher::InProcess(Arc::new(ScriptAgent::new(Noop))),
        )
    };
    let orchestrator = Orchestrator::new(backends, launcher);
    let launched = wall_ns();
    let handle = orchestrator.launch(&plan).await.unwrap();
    let returned = wall_ns();
    let (report, starts) = Starts::follow(handle).await;
    assert_eq!(report.progress.succeeded, u64::from(agents));
    (
        ms_between(launched, starts.first().unwrap()),
        ms_between(launched, returned),
    )
}

/// Agents as processes of this very binary, which runs `agent` like a project's `orchestrate`.
fn armada_orchestrator_launcher() -> armada_orchestrator::ProcessLauncher {
    armada_orchestrator::ProcessLauncher {
        program: std::env::current_exe().unwrap(),
        queue_url: AMQP_URL.to_owned(),
        store_url: REDIS_URL.to_owned(),
        monitor_url: None,
        monitor_token: None,
        restarts: armada_orchestrator::ProcessLauncher::DEFAULT_RESTARTS,
        detached_logs: None,
        outage_secs: None,
    }
}

/// Plain tokio: `tasks` tasks wait on one channel; from sending to the first receive, in ms.
async fn plain_tasks(tasks: u32) -> f64 {
    let (sender, receiver) = tokio::sync::mpsc::unbounded_channel::<u64>();
    let receiver = Arc::new(tokio::sync::Mutex::new(receiver));
    let started = wall_ns();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..tasks {
        let receiver = Arc::clone(&receiver);
        set.spawn(async move {
            let job = receiver.lock().await.recv().await;
            job.map(|_| wall_ns())
        });
    }
    for job in 0..u64::from(tasks) {
        sender.send(job).unwrap();
    }
    let mut first = u64::MAX;
    while let Some(received) = set.join_next().await {
        first = first.min(received.unwrap().unwrap_or(u64::MAX));
    }
    ms_between(started, first)
}

/// Plain processes: `processes` copies of this binary connect to RabbitMQ and take one message
/// each from a queue filled beforehand; from spawning to the first message taken, in ms.
async fn plain_processes(processes: u32) -> f64 {
    let queue = format!("bench.startup.{}", std::process::id());
    let connection = Connection::connect(AMQP_URL, ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    for job in 0..processes {
        channel
            .basic_publish(
                "".into(),
                queue.as_str().into(),
                BasicPublishOptions::default(),
                job.to_string().as_bytes(),
                BasicProperties::default(),
            )
            .await
            .unwrap();
    }
    let started = wall_ns();
    let children: Vec<_> = (0..processes)
        .map(|_| {
            tokio::process::Command::new(std::env::current_exe().unwrap())
                .args(["plain-consumer", &queue])
                .stdout(std::process::Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .unwrap()
        })
        .collect();
    let mut first = u64::MAX;
    for child in children {
        let output = child.wait_with_output().await.unwrap();
        let taken: u64 = String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .unwrap_or(u64::MAX);
        first = first.min(taken);
    }
    channel
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    ms_between(started, first)
}

/// The plain process: takes one message, prints when, acks it.
async fn plain_consumer(queue: &str) {
    let connection = Connection::connect(AMQP_URL, ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel
        .basic_qos(1, BasicQosOptions::default())
        .await
        .unwrap();
    let mut deliveries = channel
        .basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    if let Some(Ok(delivery)) = deliveries.next().await {
        println!("{}", wall_ns());
        delivery
            .acker
            .ack(BasicAckOptions::default())
            .await
            .unwrap();
    }
    let _ = connection.close(200, "done".into()).await;
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    // Started as an agent by the process launcher: run it like a project binary does.
    if args.get(1).map(String::as_str) == Some("agent") {
        return armada::run(Noop, Path::new(env!("CARGO_MANIFEST_DIR")));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    if let (Some("plain-consumer"), Some(queue)) = (args.get(1).map(String::as_str), args.get(2)) {
        runtime.block_on(plain_consumer(queue));
        return ExitCode::SUCCESS;
    }
    println!(
        "From calling `launch` to the first job started (its script's first instruction, on the \
         wall clock), one job per agent; median of {ROUNDS} launches.\n"
    );
    println!(
        "| key | agents | where | armada launch → first job ms | armada `launch` returned ms | plain ms | plain baseline |"
    );
    println!("|---|---:|---|---:|---:|---:|---|");
    for (processes, kind) in [(false, "embedded"), (true, "processes")] {
        for agents in [1, 8] {
            let key = format!("{kind}-{agents}");
            if !wanted(&key) {
                continue;
            }
            let (mut first, mut returned, mut plain) = (Vec::new(), Vec::new(), Vec::new());
            let began = Instant::now();
            for _ in 0..ROUNDS {
                let (to_first, to_return) = runtime.block_on(armada(agents, processes));
                first.push(to_first);
                returned.push(to_return);
                plain.push(if processes {
                    runtime.block_on(plain_processes(agents))
                } else {
                    runtime.block_on(plain_tasks(agents))
                });
            }
            let (where_, baseline) = if processes {
                (
                    "Redis + RabbitMQ, agents as processes",
                    "processes of the same binary connect to RabbitMQ (lapin) and take a message",
                )
            } else {
                (
                    "embedded, agents as tasks",
                    "tokio tasks take a message from a channel",
                )
            };
            println!(
                "| {key} | {agents} | {where_} | {:.3} | {:.3} | {:.3} | {baseline} |",
                median(first),
                median(returned),
                median(plain),
            );
            eprintln!("startup {key}: {:.1} s", began.elapsed().as_secs_f64());
        }
    }
    println!(
        "\nAgents as tasks may start their first job before `launch` returns. `launch` publishes the plan (run record, agent configs, the jobs (a message per job \
         on RabbitMQ; a count and a builder in memory), the run registered with the monitor) and spawns the agents; the rest is the agents' own \
         start (for processes: exec, runtime, connecting to Redis and RabbitMQ, reading the \
         agent config) and their first take. The process baseline pays the exec and the broker \
         connection too, but no Redis and no config.\n"
    );
    ExitCode::SUCCESS
}
