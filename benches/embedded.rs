//! `cargo xtask bench`: no-op jobs through a whole embedded run (in-memory queue and store,
//! agents as tasks), next to a plain tokio channel loop doing the same hand-off in the same
//! process. The ratio is what counts on a shared, noisy machine.

use std::sync::Arc;
use std::time::{Duration, Instant};

mod support;

use armada::{Backends, Launcher, Orchestrator, ScriptAgent};
use support::{Noop, noop_plan};
use tokio::sync::{Mutex, mpsc};

const JOBS: u64 = 200_000;
const ROUNDS: usize = 3;

/// Seconds of CPU this process has used (user + system), from /proc.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |index: usize| {
        fields
            .get(index)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the command name.
    (ticks(11) + ticks(12)) / 100.0
}

struct Measure {
    wall: Duration,
    cpu: f64,
    events_dropped: u64,
}

fn best(mut measures: Vec<Measure>) -> Measure {
    measures.sort_by_key(|measure| measure.wall);
    measures.swap_remove(0)
}

async fn armada_run(agents: u32) -> Measure {
    let plan = noop_plan(agents, JOBS);
    let orchestrator = Orchestrator::new(
        Backends::embedded().await.expect("embedded backends"),
        Launcher::InProcess(Arc::new(ScriptAgent::new(Noop))),
    );
    let (start, cpu) = (Instant::now(), cpu_seconds());
    let handle = orchestrator.launch(&plan).await.expect("launch");
    let report = handle.follow(|_| {}).await.expect("run");
    assert_eq!(report.progress.succeeded, JOBS);
    Measure {
        wall: start.elapsed(),
        cpu: cpu_seconds() - cpu,
        events_dropped: report.events.dropped,
    }
}

/// The same hand-off with plain tokio: a shared job channel, `agents` consumer tasks, a result
/// channel the main task drains.
async fn plain_run(agents: u32) -> Measure {
    let (start, cpu) = (Instant::now(), cpu_seconds());
    let (job_tx, job_rx) = mpsc::unbounded_channel::<u64>();
    let (result_tx, mut result_rx) = mpsc::unbounded_channel::<u64>();
    for job in 0..JOBS {
        job_tx.send(job).expect("open channel");
    }
    drop(job_tx);
    let job_rx = Arc::new(Mutex::new(job_rx));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..agents {
        let (job_rx, result_tx) = (Arc::clone(&job_rx), result_tx.clone());
        tasks.spawn(async move {
            loop {
                let job = job_rx.lock().await.recv().await;
                let Some(job) = job else { break };
                result_tx.send(job).expect("open channel");
            }
        });
    }
    drop(result_tx);
    let mut done = 0;
    while result_rx.recv().await.is_some() {
        done += 1;
    }
    assert_eq!(done, JOBS);
    while tasks.join_next().await.is_some() {}
    Measure {
        wall: start.elapsed(),
        cpu: cpu_seconds() - cpu,
        events_dropped: 0,
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    println!("## Embedded no-op jobs ({JOBS} jobs per run, best of {ROUNDS}, {cores} cores)\n");
    println!(
        "| agents | armada jobs/s | µs/job (wall) | CPU µs/job | monitor events dropped | plain tokio jobs/s | armada / plain |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for agents in [1, 4, 16] {
        let armada = best(
            (0..ROUNDS)
                .map(|_| runtime.block_on(armada_run(agents)))
                .collect(),
        );
        let plain = best(
            (0..ROUNDS)
                .map(|_| runtime.block_on(plain_run(agents)))
                .collect(),
        );
        let rate = |m: &Measure| JOBS as f64 / m.wall.as_secs_f64();
        println!(
            "| {agents} | {:.0} | {:.2} | {:.2} | {} | {:.0} | {:.3} |",
            rate(&armada),
            armada.wall.as_secs_f64() * 1e6 / JOBS as f64,
            armada.cpu * 1e6 / JOBS as f64,
            armada.events_dropped,
            rate(&plain),
            rate(&armada) / rate(&plain),
        );
    }
}
