//! The hello project on real infrastructure: agent configs in Redis, jobs in RabbitMQ, agents
//! as separate processes, and the faults that matter (a killed agent, a restarted broker,
//! unreachable services, poison messages, concurrent runs, cancel).
//!
//! Redis and RabbitMQ must be running (`cargo xtask test` starts them where installed). These
//! tests share the services and one of them restarts the broker, so they take turns.

#![allow(clippy::unwrap_used)] // Test helpers: a panic is the failure report.

use std::collections::BTreeSet;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, ExitStatus};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use armada::testing::binary::{self, Launch, ProjectCopy};
use serde_json::{Value, json};

const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const REDIS_URL: &str = "redis://127.0.0.1:6379";

static SERVICES: Mutex<()> = Mutex::new(());

/// Takes the services for one test, after checking they answer.
fn services() -> MutexGuard<'static, ()> {
    let guard = SERVICES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for (name, address, install) in [
        ("Redis", "127.0.0.1:6379", "redis-server"),
        ("RabbitMQ", "127.0.0.1:5672", "rabbitmq-server"),
    ] {
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(address).is_err() {
            assert!(
                Instant::now() < deadline,
                "{name} is not reachable at {address}: `cargo xtask test` starts it when it is \
                 installed; install it with `apt-get install {install}`"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    guard
}

/// A copy of the hello project whose template, tune values and data_job.csv the test chooses.
fn project(edit: impl FnOnce(&mut Value), tune: Value, job_csv: &str) -> ProjectCopy {
    let copy = ProjectCopy::of(Path::new(env!("CARGO_MANIFEST_DIR")));
    copy.edit_template(edit)
        .write("config_local.json", &tune.to_string())
        .write("data_agent.csv", "targetted_agent,greeting\n")
        .write("data_job.csv", job_csv);
    copy
}

/// The hello project whose jobs each take `work_ms`, with `job_csv` as its `data_job.csv`.
fn hello_project(work_ms: u64, job_csv: &str) -> ProjectCopy {
    project(
        |template| set(template, "default_job_message", "work_ms", json!(work_ms)),
        json!({ "DEFAULT_NUMBER": 27 }),
        job_csv,
    )
}

fn set(template: &mut Value, section: &str, key: &str, value: Value) {
    template[section][key] = value;
}

/// How long a test waits for a run's results, or for its end.
const WAIT: Duration = Duration::from_secs(120);

/// `launch` on Redis and RabbitMQ in the background, its results in the project's folder.
fn launch(project: &Path, args: &[&str]) -> Launch {
    launch_on(project, REDIS_URL, args)
}

fn launch_on(project: &Path, redis_url: &str, args: &[&str]) -> Launch {
    let results = project.join("results.jsonl");
    let mut command = binary::command(env!("CARGO_BIN_EXE_orchestrate"));
    command
        .arg("launch")
        .arg("--project")
        .arg(project)
        .args(["--queue", AMQP_URL, "--config-store", redis_url, "--output"])
        .arg(&results)
        .args(args);
    Launch::start(command, &results)
}

/// The run's end, checking that no process of the run panicked, at its end either (lapin's
/// I/O thread did when an agent's runtime stopped with its connections open).
fn finish(run: Launch) -> (ExitStatus, String, Vec<Value>) {
    let finished = run.finish(WAIT);
    assert!(!finished.stderr.contains("panicked"), "{}", finished.stderr);
    (finished.status, finished.stdout, finished.results)
}

/// Like `finish`, for a run whose agents abort on purpose.
fn finish_allowing_aborts(run: Launch) -> (ExitStatus, String, Vec<Value>) {
    let finished = run.finish(WAIT);
    (finished.status, finished.stdout, finished.results)
}

fn agent_pids(run: &Launch) -> Vec<u32> {
    let output = Command::new("pgrep")
        .args(["-f", &format!("agent --run-id {}", run.run_id())])
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.trim().parse().ok())
        .collect()
}

fn indexes(results: &[Value]) -> BTreeSet<u64> {
    results
        .iter()
        .map(|r| r["index"].as_u64().unwrap())
        .collect()
}

/// What the run left in Redis beyond its finished record (`record`, `state`, `recorded`,
/// `results`, `finished`, kept for `attach` and `results`), and its jobs and dead-letter
/// queues left in RabbitMQ.
fn run_leftovers(run_id: &str) -> (String, String) {
    let keys = Command::new("redis-cli")
        .args(["--scan", "--pattern", &format!("armada:run:{run_id}:*")])
        .output()
        .unwrap();
    let kept = ["record", "state", "recorded", "results", "finished"]
        .map(|suffix| format!("armada:run:{run_id}:{suffix}"));
    let mut keys: Vec<String> = String::from_utf8_lossy(&keys.stdout)
        .lines()
        .filter(|key| !kept.iter().any(|kept| kept == key))
        .map(str::to_owned)
        .collect();
    keys.sort();
    let queues = Command::new("rabbitmqctl")
        .args(["list_queues", "--quiet", "name"])
        .output()
        .unwrap();
    // Retry-delay queues expire by themselves a minute after their last use.
    let run_queues = ["jobs", "due", "dead"].map(|suffix| format!("armada.{run_id}.{suffix}"));
    let queues: Vec<String> = String::from_utf8_lossy(&queues.stdout)
        .lines()
        .filter(|name| run_queues.iter().any(|queue| queue == name))
        .map(str::to_owned)
        .collect();
    (keys.join(","), queues.join(","))
}

/// A field of the run's state in Redis ("" when it has none).
fn run_state(run_id: &str, field: &str) -> String {
    let output = Command::new("redis-cli")
        .args(["HGET", &format!("armada:run:{run_id}:state"), field])
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// Runs `orchestrate` with these arguments and the shared backends; its exit status and output.
fn orchestrate(args: &[&str]) -> (ExitStatus, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_orchestrate"))
        .args(args)
        .args(["--queue", AMQP_URL, "--config-store", REDIS_URL])
        .output()
        .unwrap();
    (
        output.status,
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn four_agent_processes_complete_200_jobs_and_leave_nothing_behind() {
    let _services = services();
    let dir = hello_project(5, "targetted_job,name\n");
    let run = launch(dir.path(), &["--agents", "4", "--jobs", "200"]);
    let run_id = run.run_id().to_owned();
    let (status, stdout, results) = finish(run);
    assert!(status.success(), "{stdout}");
    // The launch says what it uses and why, the broker's password hidden.
    assert!(
        stdout.contains(
            "backends: queue amqp://guest:***@127.0.0.1:5672/%2f (--queue), config store \
             redis://127.0.0.1:6379 (--config-store); agents as processes (the default with \
             shared backends)"
        ),
        "{stdout}"
    );
    assert_eq!(results.len(), 200);
    assert_eq!(indexes(&results), (0..200).collect());
    assert!(results.iter().all(|r| r["status"] == "succeeded"));
    let agents: BTreeSet<u64> = results
        .iter()
        .map(|r| r["agent"].as_u64().unwrap())
        .collect();
    assert!(agents.len() > 1, "one agent did everything: {agents:?}");
    assert_eq!(run_leftovers(&run_id), (String::new(), String::new()));
    assert_eq!(run_state(&run_id, "status"), "completed");
    // The finished record serves `results`, which writes the same lines as the launch did.
    let (status, exported, stderr) = orchestrate(&["results", &run_id]);
    assert!(status.success(), "{stderr}");
    let exported: Vec<Value> = exported
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(exported, results);
    // A run that ended cannot be canceled; it says how it ended.
    let (status, _, stderr) = orchestrate(&["cancel", &run_id]);
    assert_eq!(status.code(), Some(1));
    assert!(stderr.contains("already ended: completed"), "{stderr}");
}

#[test]
fn a_queue_url_left_in_the_environment_is_named_at_launch() {
    let _services = services();
    let dir = hello_project(5, "targetted_job,name\n");
    let results = dir.path().join("results.jsonl");
    let mut command = binary::command(env!("CARGO_BIN_EXE_orchestrate"));
    command
        .args([
            "launch",
            "--agents",
            "1",
            "--jobs",
            "3",
            "--agents-as",
            "tasks",
            "--project",
        ])
        .arg(dir.path())
        .arg("--output")
        .arg(&results)
        // The queue's former variable name, as an old shell profile might still export it.
        .env("ARMADA_AMQP_URL", AMQP_URL)
        .env("ARMADA_STORE_URL", REDIS_URL);
    let (status, stdout, results) = finish(Launch::start(command, &results));
    assert!(status.success(), "{stdout}");
    assert_eq!(results.len(), 3);
    assert!(
        stdout.contains(
            "backends: queue amqp://guest:***@127.0.0.1:5672/%2f (ARMADA_AMQP_URL), config \
             store redis://127.0.0.1:6379 (ARMADA_STORE_URL); agents as tasks (--agents-as)"
        ),
        "{stdout}"
    );
}

#[test]
fn a_job_that_kills_its_agent_fails_after_its_attempts_and_the_run_goes_on() {
    let _services = services();
    let dir = hello_project(5, "targetted_job,abort_agent\n7,true\n");
    let run = launch(
        dir.path(),
        &["--agents", "4", "--jobs", "30", "--max-attempts", "3"],
    );
    let run_id = run.run_id().to_owned();
    let (status, stdout, results) = finish_allowing_aborts(run);
    assert_eq!(status.code(), Some(2), "{stdout}");
    assert_eq!(indexes(&results), (0..30).collect());
    let poison = results.iter().find(|r| r["index"] == 7).unwrap();
    assert_eq!(poison["status"], "failed", "{poison}");
    assert_eq!(poison["attempts"], 3, "{poison}");
    assert_eq!(
        poison["error"], "the agent died during this job 3 times",
        "{poison}"
    );
    let succeeded = results.iter().filter(|r| r["status"] == "succeeded");
    assert_eq!(succeeded.count(), 29);
    // Its dead letter carries the reason.
    assert!(
        stdout.contains("the agent died during this job 3 times"),
        "{stdout}"
    );
    assert_eq!(run_leftovers(&run_id), (String::new(), String::new()));
}

#[test]
fn an_agent_process_whose_script_holds_its_thread_ends_and_is_started_again() {
    let _services = services();
    // Job 5 spins far past its 1 s limit on each of its 4 attempts, each ending the one agent.
    let dir = hello_project(5, "targetted_job,spin_ms\n5,30000\n");
    let run = launch(
        dir.path(),
        &[
            "--agents",
            "1",
            "--jobs",
            "10",
            "--job-timeout-secs",
            "1",
            "--max-attempts",
            "4",
        ],
    );
    let run_id = run.run_id().to_owned();
    let finished = run.finish(WAIT);
    assert_eq!(finished.status.code(), Some(2), "{}", finished.stderr);
    let results = &finished.results;
    assert_eq!(indexes(results), (0..10).collect());
    let blocked = results.iter().find(|r| r["index"] == 5).unwrap();
    assert_eq!(blocked["status"], "failed", "{blocked}");
    assert_eq!(blocked["attempts"], 4, "{blocked}");
    let error = blocked["error"].as_str().unwrap();
    assert!(error.contains("timed out after 1.0s"), "{error}");
    let succeeded = results.iter().filter(|r| r["status"] == "succeeded");
    assert_eq!(succeeded.count(), 9, "{results:?}");
    // Each attempt ended the agent's process, which was started again without counting a
    // crash: four ends, beyond the three restarts a crashing agent gets, and the run went on.
    assert_eq!(
        finished
            .stderr
            .matches("ended to free a thread its script held")
            .count(),
        4,
        "{}",
        finished.stderr
    );
    assert!(
        !finished.stderr.contains("abnormally"),
        "{}",
        finished.stderr
    );
    assert_eq!(run_leftovers(&run_id), (String::new(), String::new()));
}

#[test]
fn a_run_whose_launcher_is_killed_ends_by_itself_and_attach_writes_every_result_once() {
    let _services = services();
    let dir = hello_project(20, "targetted_job,name\n");
    let mut run = launch(dir.path(), &["--agents", "4", "--jobs", "500"]);
    let run_id = run.run_id().to_owned();
    run.wait_for_results(170, WAIT);
    run.child().kill().unwrap(); // SIGKILL
    run.child().wait().unwrap();
    assert!(
        run.results().len() < 500,
        "the launcher finished before it was killed"
    );
    // No one follows the run: its agents end it.
    let deadline = Instant::now() + Duration::from_secs(120);
    while run_state(&run_id, "status") != "completed" {
        assert!(Instant::now() < deadline, "the run did not end by itself");
        std::thread::sleep(Duration::from_millis(100));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while run_leftovers(&run_id) != (String::new(), String::new()) || !agent_pids(&run).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the run's queues, agent keys or agents stay: {:?} {:?}",
            run_leftovers(&run_id),
            agent_pids(&run)
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Attaching continues the launcher's file: exactly one line per job.
    let output = run.results_file().display().to_string();
    let attach = || {
        let (status, stdout, stderr) = orchestrate(&["attach", &run_id, "--output", &output]);
        assert_eq!(status.code(), Some(0), "{stdout}{stderr}");
        let text = std::fs::read_to_string(run.results_file()).unwrap();
        let results: Vec<Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        results
    };
    let results = attach();
    assert_eq!(results.len(), 500);
    assert_eq!(indexes(&results), (0..500).collect());
    assert!(results.iter().all(|r| r["status"] == "succeeded"));
    // Attaching again changes nothing.
    assert_eq!(attach(), results);
    assert_eq!(run_leftovers(&run_id), (String::new(), String::new()));
}

#[test]
fn a_redis_restart_mid_run_is_ridden_out_and_every_job_recorded_once() {
    let _services = services();
    let redis = PrivateRedis::start();
    let dir = hello_project(50, "targetted_job,name\n");
    let run = launch_on(
        dir.path(),
        &redis.url(),
        &["--agents", "3", "--jobs", "120"],
    );
    run.wait_for_results(20, WAIT);
    redis.restart(Duration::from_secs(3));
    let (status, stdout, results) = finish(run);
    assert!(status.success(), "{stdout}");
    assert!(
        !stdout.contains("exited abnormally"),
        "every agent rides out the restart: {stdout}"
    );
    assert_eq!(results.len(), 120, "each job exactly once");
    assert_eq!(indexes(&results), (0..120).collect());
    assert!(results.iter().all(|r| r["status"] == "succeeded"));
}

/// A Redis server of the test's own, on a free port, persisting to a temporary folder, so
/// that it can be restarted with its data while other tests use the shared one.
struct PrivateRedis {
    port: u16,
    dir: tempfile::TempDir,
}

impl PrivateRedis {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let redis = Self {
            port,
            dir: tempfile::tempdir().unwrap(),
        };
        redis.launch();
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn launch(&self) {
        let status = Command::new("redis-server")
            .args(["--daemonize", "yes", "--bind", "127.0.0.1"])
            .args(["--port", &self.port.to_string(), "--dir"])
            .arg(self.dir.path())
            .args(["--appendonly", "yes", "--save", ""])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "the test's Redis did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn shutdown(&self) {
        let _ = Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "shutdown"])
            .output();
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            assert!(Instant::now() < deadline, "the test's Redis did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server (it writes its data first), waits `down`, and starts it again.
    fn restart(&self, down: Duration) {
        self.shutdown();
        std::thread::sleep(down);
        self.launch();
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[test]
fn a_killed_agent_s_job_is_redelivered_and_recorded_once() {
    let _services = services();
    let dir = hello_project(300, "targetted_job,name\n");
    let run = launch(dir.path(), &["--agents", "4", "--jobs", "40"]);
    run.wait_for_results(4, WAIT);
    // The four agents ended their first jobs together, and the fourth result is seen while
    // they record, ack and take their next: halfway through those, every agent is mid-job,
    // so the kill loses an attempt rather than landing between two.
    std::thread::sleep(Duration::from_millis(150));
    let pids = agent_pids(&run);
    assert_eq!(pids.len(), 4, "{pids:?}");
    let killed = Command::new("kill")
        .args(["-9", &pids[0].to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let armada::testing::binary::Finished {
        status,
        stdout,
        stderr,
        results,
    } = run.finish(WAIT);
    assert!(status.success(), "{stdout}");
    // The launcher starts the killed agent again; the run never misses it.
    assert!(
        stderr.contains("exited abnormally (signal: 9 (SIGKILL)): starting it again (1 of 3)"),
        "{stderr}"
    );
    assert!(!stdout.contains("exited abnormally"), "{stdout}");
    assert_eq!(results.len(), 40, "each job exactly once");
    assert_eq!(indexes(&results), (0..40).collect());
    assert!(results.iter().all(|r| r["status"] == "succeeded"));
    // Jobs 3, 13, 23, 33 fail their first attempt on purpose; the killed agent's job lost one.
    let attempts: u64 = results
        .iter()
        .map(|r| r["attempts"].as_u64().unwrap())
        .sum();
    assert_eq!(attempts, 40 + 4 + 1, "the lost attempt is counted once");
    assert!(
        stdout.contains("attempts      45 (4 retries, 1 lost with its agent)"),
        "the summary tells retries from the attempt lost with its agent: {stdout}"
    );
}

#[test]
fn a_broker_restart_mid_run_loses_and_duplicates_nothing() {
    let _services = services();
    let dir = hello_project(100, "targetted_job,name\n");
    let run = launch(dir.path(), &["--agents", "3", "--jobs", "60"]);
    run.wait_for_results(6, WAIT);
    let rabbitmqctl = |action: &str| {
        let status = Command::new("rabbitmqctl").arg(action).status().unwrap();
        assert!(status.success(), "rabbitmqctl {action}");
    };
    rabbitmqctl("stop_app");
    std::thread::sleep(Duration::from_secs(2));
    rabbitmqctl("start_app");
    let (status, stdout, results) = finish(run);
    assert!(status.success(), "{stdout}");
    assert!(
        !stdout.contains("exited abnormally"),
        "every agent rides out the restart: {stdout}"
    );
    assert_eq!(results.len(), 60, "each job exactly once");
    assert_eq!(indexes(&results), (0..60).collect());
    assert!(results.iter().all(|r| r["status"] == "succeeded"));
}

#[test]
fn an_unreachable_service_at_launch_publishes_nothing() {
    let _services = services();
    let dir = hello_project(5, "targetted_job,name\n");
    let count_keys = || {
        let output = Command::new("redis-cli")
            .args(["--scan", "--pattern", "armada:run:*:record"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).lines().count()
    };
    let before = count_keys();
    for (flag, url, service) in [
        (
            "--config-store",
            "redis://127.0.0.1:1",
            "Redis at redis://127.0.0.1:1",
        ),
        (
            "--queue",
            "amqp://guest:secret@127.0.0.1:1/%2f",
            "RabbitMQ at amqp://guest:***@127.0.0.1:1/%2f",
        ),
        // Reachable, but the credentials are refused.
        (
            "--queue",
            "amqp://guest:secret@127.0.0.1:5672/%2f",
            "RabbitMQ at amqp://guest:***@127.0.0.1:5672/%2f",
        ),
        (
            "--config-store",
            "redis://:secret@127.0.0.1:6379",
            "Redis at redis://:***@127.0.0.1:6379",
        ),
    ] {
        let project = dir.path().to_str().unwrap();
        let (queue, store) = match flag {
            "--queue" => (url, REDIS_URL),
            _ => (AMQP_URL, url),
        };
        let args = [
            "launch",
            "--project",
            project,
            "--queue",
            queue,
            "--config-store",
            store,
        ];
        let output = Command::new(env!("CARGO_BIN_EXE_orchestrate"))
            .args(args)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(service), "{stderr}");
        assert!(!stderr.contains("secret"), "{stderr}");
        if url.contains(":6379") || url.contains(":5672") {
            // A refused login says so at once instead of timing out.
            let refused = stderr.contains("Authentication") || stderr.contains("ACCESS_REFUSED");
            assert!(refused, "{stderr}");
        }
    }
    assert_eq!(count_keys(), before, "nothing may be published");
    assert!(!dir.path().join(".armada").exists());
}

#[test]
fn a_retry_starts_on_time_ahead_of_two_thousand_queued_jobs() {
    let _services = services();
    // Job 3 fails its first attempt on purpose; its retry waits 500 ms, while 2,000 jobs of
    // 10 ms on 2 agents take seconds.
    let dir = hello_project(10, "targetted_job,name\n");
    dir.edit_template(|template| {
        set(template, "run_message", "retry_backoff_secs", json!(0.5));
    });
    let run = launch(dir.path(), &["--agents", "2", "--jobs", "2000"]);
    let dashboard = run.dashboard().unwrap().to_owned();
    let retry = binary::retry_start(&dashboard, run.run_id(), 3, WAIT);
    // The acceptance's bound; `cargo xtask bench` measures the lateness itself.
    assert!(retry.late_ms < 2_000, "{retry:?}");
    assert!(retry.queued >= 1_000, "{retry:?}");
    let (status, stdout, results) = finish(run);
    assert_eq!(status.code(), Some(0), "{stdout}");
    assert_eq!(results.len(), 2_000);
}

#[test]
fn a_poison_message_and_a_job_that_always_fails_are_dead_lettered_with_their_reasons() {
    let _services = services();
    // The poison message lands behind every planned job, once the first result is in the
    // results file (flushed about once a second). The last job is slow: while one agent works
    // it, the other takes the poison message and sets it aside long before the run ends. A
    // message that arrives as the run ends is deleted with its queue, not reported.
    let dir = hello_project(
        400,
        "targetted_job,name,always_fail,work_ms\n2,Doomed,true,400\n11,Last,false,4000\n",
    );
    let run = launch(dir.path(), &["--agents", "2", "--jobs", "12"]);
    run.wait_for_results(1, WAIT);
    // Something that is not a job message lands on the run's queue.
    let queue = format!("armada.{}.jobs", run.run_id());
    publish_raw(&queue, b"{\"not\": \"a job\"}");
    let (status, stdout, results) = finish(run);
    assert_eq!(
        status.code(),
        Some(2),
        "a failed job makes exit code 2: {stdout}"
    );
    assert_eq!(results.len(), 12);
    let doomed = results.iter().find(|r| r["index"] == 2).unwrap();
    assert_eq!(doomed["status"], "failed");
    assert_eq!(doomed["attempts"], 3);
    assert_eq!(
        doomed["error"],
        "this job always fails, on purpose (after 3 attempts)"
    );
    assert_eq!(
        results
            .iter()
            .filter(|r| r["status"] == "succeeded")
            .count(),
        11
    );
    assert!(
        stdout.contains(
            "set aside     2 in the run's dead-letter queue: 1 failed job, 1 message that is not a job"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("the message is not a job message"),
        "{stdout}"
    );
}

/// Publishes raw bytes to a queue through the broker's default exchange.
fn publish_raw(queue: &str, body: &[u8]) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
        let connection =
            lapin::Connection::connect(AMQP_URL, lapin::ConnectionProperties::default())
                .await
                .unwrap();
        let channel = connection.create_channel().await.unwrap();
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        let confirm = channel
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                body,
                lapin::BasicProperties::default(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(matches!(confirm, lapin::Confirmation::Ack(_)));
        connection.close(200, "done".into()).await.unwrap();
    });
}

#[test]
fn concurrent_runs_stay_apart_and_cancel_stops_only_its_own() {
    let _services = services();
    let slow = |template: &mut Value| set(template, "default_job_message", "work_ms", json!(100));
    let first = project(
        slow,
        json!({ "DEFAULT_NUMBER": 1000 }),
        "targetted_job,name\n",
    );
    let second = project(
        slow,
        json!({ "DEFAULT_NUMBER": 2000 }),
        "targetted_job,name\n",
    );
    let canceled = launch(first.path(), &["--agents", "2", "--jobs", "60"]);
    let kept = launch(second.path(), &["--agents", "2", "--jobs", "60"]);
    canceled.wait_for_results(4, WAIT);
    let cancel = Command::new(env!("CARGO_BIN_EXE_orchestrate"))
        .args([
            "cancel",
            canceled.run_id(),
            "--queue",
            AMQP_URL,
            "--config-store",
            REDIS_URL,
        ])
        .output()
        .unwrap();
    assert!(
        cancel.status.success(),
        "{}",
        String::from_utf8_lossy(&cancel.stderr)
    );
    let (status, stdout, canceled_results) = finish(canceled);
    assert_eq!(status.code(), Some(130), "{stdout}");
    assert_eq!(
        indexes(&canceled_results),
        (0..60).collect(),
        "every job still has a line"
    );
    let done = canceled_results
        .iter()
        .filter(|r| r["status"] == "succeeded")
        .count();
    assert!(done < 60, "cancel stopped nothing");
    assert!(canceled_results.iter().any(|r| r["status"] == "canceled"));
    let (status, stdout, kept_results) = finish(kept);
    assert!(status.success(), "{stdout}");
    assert_eq!(indexes(&kept_results), (0..60).collect());
    assert!(kept_results.iter().all(|r| r["status"] == "succeeded"));
    // Each run's outputs start from its own tune's number: no job crossed over.
    for (results, base) in [(&canceled_results, 1000), (&kept_results, 2000)] {
        for result in results.iter().filter(|r| r["status"] == "succeeded") {
            let start = result["output"]["start"].as_u64().unwrap();
            assert!(
                (base..base + 60).contains(&start),
                "a job of the other run: {result}"
            );
        }
    }
}

#[test]
fn a_detached_launch_returns_at_once_and_attach_follows_its_run_to_the_end() {
    let _services = services();
    let dir = hello_project(30, "targetted_job,name\n");
    let project_dir = dir.path().display().to_string();
    let args = ["launch", "--project", &project_dir, "--agents", "3"];
    let (status, stdout, stderr) =
        orchestrate(&[&args[..], &["--jobs", "90", "--detach"]].concat());
    assert!(status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("detached"), "{stdout}");
    let run_id = stdout
        .strip_prefix("run ")
        .and_then(|rest| rest.split(':').next())
        .unwrap()
        .to_owned();
    let output = dir.path().join("attached.jsonl").display().to_string();
    let (status, stdout, stderr) = orchestrate(&[
        "attach",
        &run_id,
        "--project",
        &project_dir,
        "--output",
        &output,
    ]);
    assert!(status.success(), "{stdout}{stderr}");
    let results: Vec<Value> = std::fs::read_to_string(&output)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(results.len(), 90);
    assert_eq!(indexes(&results), (0..90).collect());
    assert!(results.iter().all(|r| r["status"] == "succeeded"));
    // The agents wrote their output apart from the launcher, which was long gone.
    let log = dir
        .path()
        .join(format!(".armada/runs/{run_id}/agents/agent-0.log"));
    assert!(log.is_file(), "{}", log.display());
    assert_eq!(run_leftovers(&run_id), (String::new(), String::new()));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let agents = Command::new("pgrep")
            .args(["-f", &format!("agent --run-id {run_id}")])
            .output()
            .unwrap();
        if agents.stdout.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "agents outlived their run");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn cancel_removes_the_queues_of_a_run_whose_state_redis_lost() {
    let _services = services();
    let dir = hello_project(300, "targetted_job,name\n");
    let mut run = launch(dir.path(), &["--agents", "2", "--jobs", "40"]);
    run.wait_for_results(2, WAIT);
    let run_id = run.run_id().to_owned();
    for pid in agent_pids(&run) {
        Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .unwrap();
    }
    run.child().kill().unwrap();
    run.child().wait().unwrap();
    // Redis lost the run (a restart without persistence): only its queues are left.
    let keys = Command::new("redis-cli")
        .args(["--scan", "--pattern", &format!("armada:run:{run_id}:*")])
        .output()
        .unwrap();
    for key in String::from_utf8_lossy(&keys.stdout).lines() {
        Command::new("redis-cli")
            .args(["DEL", key])
            .output()
            .unwrap();
    }
    assert_ne!(run_leftovers(&run_id).1, "", "the run's queue is there");
    let (status, stdout, stderr) = orchestrate(&["cancel", &run_id]);
    assert!(status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("not in the config store"), "{stdout}");
    assert_eq!(run_leftovers(&run_id), (String::new(), String::new()));
}
