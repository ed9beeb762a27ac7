//! `cargo xtask bench`: no-op jobs through a whole embedded run (in-memory queue and store,
//! agents as tasks), next to a plain tokio channel loop doing the same hand-off in the same
//! process. The ratio is what counts on a shared, noisy machine.
//!
//! Throughput is jobs over the time from `launch` to the end of `follow`. Latency is the job
//! cycle on one agent ([`support::Starts::cycle_quantiles`]): on the plain loop, the time
//! between two consecutive receives of one consumer task, which hold sending the result.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

mod support;

use armada::{Backends, Launcher, Orchestrator, ScriptAgent};
use support::{Noop, Starts, cpu_seconds, noop_plan, target, wall_ns, wanted};
use tokio::sync::{Mutex, mpsc};

const JOBS: u64 = 200_000;
const ROUNDS: usize = 3;

struct Measure {
    wall: Duration,
    cpu: f64,
    events_dropped: u64,
    starts: Starts,
}

fn best(mut measures: Vec<Measure>) -> Measure {
    measures.sort_by_key(|measure| measure.wall);
    measures.swap_remove(0)
}

async fn armada_run(agents: u32) -> Measure {
    let plan = noop_plan(agents, JOBS);
    let orchestrator = Orchestrator::new(
        Backends::embedded().await.unwrap(),
        Launcher::InProcess(Arc::new(ScriptAgent::new(Noop))),
    );
    let (start, cpu) = (Instant::now(), cpu_seconds());
    let handle = orchestrator.launch(&plan).await.unwrap();
    let (report, starts) = Starts::follow(handle).await;
    assert_eq!(report.progress.succeeded, JOBS);
    Measure {
        wall: start.elapsed(),
        cpu: cpu_seconds() - cpu,
        events_dropped: report.events.dropped,
        starts,
    }
}

/// The same hand-off with plain tokio: a shared job channel, `agents` consumer tasks, a result
/// channel the main task drains.
async fn plain_run(agents: u32) -> Measure {
    let (start, cpu) = (Instant::now(), cpu_seconds());
    let (job_tx, job_rx) = mpsc::unbounded_channel::<u64>();
    let (result_tx, mut result_rx) = mpsc::unbounded_channel::<u64>();
    for job in 0..JOBS {
        job_tx.send(job).unwrap();
    }
    drop(job_tx);
    let job_rx = Arc::new(Mutex::new(job_rx));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..agents {
        let (job_rx, result_tx) = (Arc::clone(&job_rx), result_tx.clone());
        tasks.spawn(async move {
            let mut received = Vec::with_capacity((JOBS / u64::from(agents)) as usize);
            loop {
                let job = job_rx.lock().await.recv().await;
                let Some(job) = job else { break };
                received.push(wall_ns());
                result_tx.send(job).unwrap();
            }
            received
        });
    }
    drop(result_tx);
    let mut done = 0;
    while result_rx.recv().await.is_some() {
        done += 1;
    }
    assert_eq!(done, JOBS);
    let mut starts = Starts::default();
    let mut agent = 0;
    while let Some(received) = tasks.join_next().await {
        for at in received.unwrap() {
            starts.push(agent, at);
        }
        agent += 1;
    }
    Measure {
        wall: start.elapsed(),
        cpu: cpu_seconds() - cpu,
        events_dropped: 0,
        starts,
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    println!(
        "{JOBS} no-op jobs per run, in-memory queue, store and monitor, agents as tasks; best of \
         {ROUNDS} runs by wall time; {cores} cores.\n"
    );
    println!(
        "| agents | armada jobs/s | cycle p50 / p99 µs | CPU µs/job | monitor events dropped | plain tokio jobs/s | plain cycle p50 / p99 µs | armada / plain jobs/s |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut with_four = None;
    for agents in [1, 4, 16] {
        if !wanted(&agents.to_string()) {
            continue;
        }
        let mut armada = best(
            (0..ROUNDS)
                .map(|_| runtime.block_on(armada_run(agents)))
                .collect(),
        );
        let mut plain = best(
            (0..ROUNDS)
                .map(|_| runtime.block_on(plain_run(agents)))
                .collect(),
        );
        let rate = |m: &Measure| JOBS as f64 / m.wall.as_secs_f64();
        let (armada_p50, armada_p99) = armada.starts.cycle_quantiles();
        let (plain_p50, plain_p99) = plain.starts.cycle_quantiles();
        println!(
            "| {agents} | {:.0} | {armada_p50:.1} / {armada_p99:.1} | {:.2} | {} | {:.0} | {plain_p50:.2} / {plain_p99:.2} | {:.3} |",
            rate(&armada),
            armada.cpu * 1e6 / JOBS as f64,
            armada.events_dropped,
            rate(&plain),
            rate(&armada) / rate(&plain),
        );
        if agents == 4 {
            with_four = Some(rate(&armada));
        }
    }
    println!(
        "\nCycle: the time between two consecutive jobs starting on the same agent (the \
         script's start on the wall clock, returned as its output): recording and acknowledging \
         one job, then taking, decoding and starting the next. Prefetch is 1, so this is the \
         dispatch-to-ack round of one job as an agent sees it; with more agents than cores it \
         also holds waiting for a core.\n"
    );
    if let Some(rate) = with_four {
        target(
            "embedded, at least 50,000 no-op jobs/s with 4 agents",
            rate >= 50_000.0,
            &format!("{rate:.0} jobs/s"),
        );
    }
}
