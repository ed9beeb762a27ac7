//! Consecutive runs into the PostgreSQL monitor: every event each run sent is a row, counted
//! in SQL. sqlx 0.9.0 typed a cached statement's parameter float4 when it was first run with a
//! NULL duration, and later batches that reused it failed ("incorrect binary data format"):
//! a few runs in five lost events and showed succeeded jobs as abandoned.
//!
//! Needs PostgreSQL (`ARMADA_POSTGRES_URL`, default the local `test` database), which
//! `cargo xtask test` starts, and `psql`, which comes with it.

#![cfg(feature = "postgres")]
#![allow(clippy::unwrap_used)] // Test helpers: a panic is the failure report.

use std::process::Command;
use std::sync::Arc;

use armada::monitor::{Monitor, MonitorLink, Store};
use armada::prelude::*;
use armada::{Backends, Launcher, Orchestrator, Plan, ProjectFiles, RunOverrides, RunStatus};
use serde::Deserialize;
use serde_json::json;

const RUNS: usize = 20;
const AGENTS: u64 = 3;
const JOBS: u64 = 50;

fn postgres_url() -> String {
    std::env::var("ARMADA_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// One number from SQL, through `psql`.
fn sql_count(query: &str) -> u64 {
    let output = Command::new("psql")
        .arg(postgres_url())
        .args(["-tAc", query])
        .output()
        .unwrap_or_else(|error| panic!("psql is needed ({error}): it comes with PostgreSQL"));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap()
}

#[derive(Deserialize)]
struct Task {}

/// Like hello: a step reported per job, and every tenth job fails its first attempt, so that
/// batches mix events with and without a duration.
struct Greet;

impl Script for Greet {
    type Agent = PlainAgent;
    type Job = Job<Task>;
    type Output = u64;

    async fn run(&self, _agent: &mut PlainAgent, job: &mut Job<Task>) -> Result<u64, ScriptError> {
        if job.info.index % 10 == 3 && job.info.attempt == 1 {
            return Err(ScriptError::retry("first attempt fails on purpose"));
        }
        job.report().info("greeted");
        Ok(job.info.index)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_consecutive_runs_keep_every_event_in_postgresql() {
    let store = Store::open(&postgres_url()).await.unwrap_or_else(|error| {
        panic!("this test needs PostgreSQL ({error}); `cargo xtask test` starts it")
    });
    let monitor = Monitor::new(store, None);
    let template = json!({
        "run_message": { "agents": AGENTS, "jobs": JOBS, "retry_backoff_secs": 0.01 },
        "default_agent_message": {},
        "default_job_message": {},
    });
    let files = ProjectFiles::from_template(template.to_string());
    let plan = Plan::for_script::<Greet>(&files, &RunOverrides::default()).unwrap();
    // Per job: started, the step and succeeded; a failed first attempt adds started and
    // retrying. Per agent: starting, started and stopped.
    let retried = (0..JOBS).filter(|index| index % 10 == 3).count() as u64;
    let expected = 3 * JOBS + 2 * retried + 3 * AGENTS;
    for round in 0..RUNS {
        let mut backends = Backends::embedded().await.unwrap();
        backends.monitor = MonitorLink::Local(monitor.clone());
        let launcher = Launcher::InProcess(Arc::new(armada::ScriptAgent::new(Greet)));
        let handle = Orchestrator::new(backends, launcher)
            .launch(&plan)
            .await
            .unwrap();
        let run_id = handle.run_id().to_string();
        let report = handle.follow(|_| {}).await.unwrap();
        assert_eq!(report.status, RunStatus::Completed, "run {round}");
        assert_eq!(report.events.dropped, 0, "run {round}");
        let rows = sql_count(&format!(
            "SELECT COUNT(*) FROM armada_events WHERE run_id = '{run_id}' \
             AND kind <> 'run_completed'"
        ));
        assert_eq!(rows, expected, "run {round}: every event is a row");
        // The run's end: one `run_completed` when an agent ended it, none when the launcher
        // got there first; either way the monitor has it completed.
        let ends = sql_count(&format!(
            "SELECT COUNT(*) FROM armada_events WHERE run_id = '{run_id}' \
             AND kind = 'run_completed'"
        ));
        assert!(ends <= 1, "run {round}: {ends} ends");
        let completed = sql_count(&format!(
            "SELECT COUNT(*) FROM armada_runs WHERE id = '{run_id}' AND status = 'completed' \
             AND finished_ms IS NOT NULL"
        ));
        assert_eq!(completed, 1, "run {round}");
        let succeeded = sql_count(&format!(
            "SELECT COUNT(*) FROM armada_jobs WHERE run_id = '{run_id}' AND status = 'succeeded' \
             AND duration_ms IS NOT NULL"
        ));
        assert_eq!(
            succeeded, JOBS,
            "run {round}: every job succeeded, with its duration"
        );
    }
    monitor.close();
}
