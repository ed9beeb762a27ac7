//! Scripts that hold their thread: a busy loop that never yields, as CPU-bound work run
//! without `spawn_blocking` does. The run's control (dashboard, progress, Ctrl-C) must not
//! notice, and an attempt that holds its thread past the time limit is timed out and its agent
//! replaced.

#![allow(clippy::unwrap_used)] // Test helpers: a panic is the failure report.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use armada::testing::binary::{self, Launch, ProjectCopy};
use serde_json::Value;

fn project() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A copy of hello whose jobs at `spinning` busy-loop for `spin_ms`.
fn project_spinning(spinning: &[u64], spin_ms: u64) -> ProjectCopy {
    let copy = ProjectCopy::of(project());
    let mut rows = String::from("targetted_job,spin_ms\n");
    for index in spinning {
        rows.push_str(&format!("{index},{spin_ms}\n"));
    }
    copy.write("data_job.csv", &rows)
        .remove("config_distant.json");
    copy
}

fn launch(copy: &ProjectCopy, dir: &Path, flags: &[&str]) -> Launch {
    let results = dir.join("results.jsonl");
    let mut command = binary::command(env!("CARGO_BIN_EXE_orchestrate"));
    command
        .arg("launch")
        .arg("--project")
        .arg(copy.path())
        .arg("--output")
        .arg(&results)
        .arg("--monitor")
        .arg(format!("sqlite:{}", dir.join("m.sqlite").display()))
        .args(flags)
        .current_dir(dir);
    Launch::start(command, &results)
}

/// `GET path` on `address`; the status line and how long the whole answer took.
fn get(address: &str, path: &str) -> (String, Duration) {
    let answer = binary::http_get(address, path);
    (answer.status_line, answer.elapsed)
}

fn by_index(results: &[Value], index: u64) -> &Value {
    results
        .iter()
        .find(|result| result["index"] == index)
        .unwrap_or_else(|| panic!("no result for job {index} in {results:?}"))
}

#[test]
fn two_jobs_spinning_both_cores_leave_the_dashboard_answering_and_ctrl_c_whole() {
    let dir = tempfile::tempdir().unwrap();
    // Jobs 0 and 1 spin for 30 s, within their 60 s limit: on 2 cores, every core is busy.
    let copy = project_spinning(&[0, 1], 30_000);
    let run = launch(
        &copy,
        dir.path(),
        &[
            "--agents",
            "2",
            "--jobs",
            "12",
            "--job-timeout-secs",
            "60",
            "--grace-secs",
            "1",
        ],
    );
    let address = run
        .dashboard()
        .expect("launch serves a dashboard")
        .to_owned();
    let paths = [
        format!("/api/v1/runs/{}", run.run_id()),
        format!("/api/v1/runs/{}/jobs", run.run_id()),
        "/api/v1/runs".to_owned(),
    ];
    // Six seconds of questions while the jobs spin.
    let asked = Instant::now();
    let mut slowest = Duration::ZERO;
    while asked.elapsed() < Duration::from_secs(6) {
        for path in &paths {
            let (status, took) = get(&address, path);
            assert!(status.contains(" 200 "), "{path}: {status}");
            slowest = slowest.max(took);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        slowest < Duration::from_secs(1),
        "the dashboard API took {slowest:?} to answer while scripts spun"
    );
    let interrupted = Command::new("kill")
        .args(["-INT", &run.pid().to_string()])
        .status()
        .unwrap();
    assert!(interrupted.success());
    let finished = run.finish(Duration::from_secs(20));
    assert_eq!(
        finished.status.code(),
        Some(130),
        "Ctrl-C ends the launch as interrupted: {}",
        finished.stderr
    );
    assert!(
        finished.stdout.contains("canceled"),
        "the summary is printed: {}",
        finished.stdout
    );
    // Every job has its line: the spinning ones and those never started as canceled.
    assert_eq!(finished.results.len(), 12, "{:?}", finished.results);
    for index in [0, 1] {
        assert_eq!(
            by_index(&finished.results, index)["status"],
            "canceled",
            "{:?}",
            finished.results
        );
    }
}

#[test]
fn an_attempt_holding_its_thread_past_the_limit_times_out_and_a_fresh_agent_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    // One agent: the jobs after job 2 run only if its agent is replaced.
    let copy = project_spinning(&[2], 20_000);
    let run = launch(
        &copy,
        dir.path(),
        &[
            "--agents",
            "1",
            "--jobs",
            "6",
            "--job-timeout-secs",
            "1",
            "--max-attempts",
            "2",
        ],
    );
    let finished = run.finish(Duration::from_secs(60));
    assert_eq!(
        finished.status.code(),
        Some(2),
        "one job failed: {}",
        finished.stderr
    );
    let results = &finished.results;
    assert_eq!(results.len(), 6, "{results:?}");
    let blocked = by_index(results, 2);
    assert_eq!(blocked["status"], "failed", "{blocked}");
    assert_eq!(blocked["attempts"], 2, "{blocked}");
    let error = blocked["error"].as_str().unwrap();
    assert!(
        error.contains("timed out after 1.0s") && error.contains("spawn_blocking"),
        "{error}"
    );
    // Each attempt was settled while it still spun, not when the 20 s loop ended.
    assert!(
        blocked["duration_ms"].as_f64().unwrap() < 10_000.0,
        "{blocked}"
    );
    for index in [0, 1, 3, 4, 5] {
        assert_eq!(
            by_index(results, index)["status"],
            "succeeded",
            "{results:?}"
        );
    }
    assert!(
        finished.stderr.contains("was replaced"),
        "the replacement is logged: {}",
        finished.stderr
    );
}
