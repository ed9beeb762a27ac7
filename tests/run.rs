//! Whole embedded runs through the facade: retries, time-outs, panics, agents that cannot
//! start, cancel, and isolation of concurrent runs; the library API: runs followed by a
//! `RunTask`, plans from messages made in code, diagnostics as data.

#![allow(clippy::unwrap_used)] // Test helpers: a panic is the failure report.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use armada::prelude::*;
use armada::testing::TestRun;
use armada::{
    Backends, FollowEvent, JobResult, JobStatus, Launcher, Orchestrator, Plan, ProjectFiles,
    RunOverrides, RunReport, RunStatus, RunTask, RunUpdate, ScriptAgent,
};
use serde_json::{Value, json};

fn plan<S: Script>(run_message: Value, default_job_message: Value) -> Plan {
    let template = json!({
        "run_message": run_message,
        "default_agent_message": {},
        "default_job_message": default_job_message,
    });
    let files = ProjectFiles::from_template(template.to_string());
    Plan::for_script::<S>(&files, &RunOverrides::default()).expect("a valid plan")
}

async fn run<S: Script>(script: S, plan: &Plan) -> (RunReport, BTreeMap<u64, JobResult>) {
    let backends = Backends::embedded().await.unwrap();
    let launcher = Launcher::InProcess(Arc::new(ScriptAgent::new(script)));
    let orchestrator = Orchestrator::new(backends, launcher).with_grace(Duration::from_secs(5));
    let handle = orchestrator.launch(plan).await.unwrap();
    follow(handle, |_| {}).await
}

async fn follow(
    handle: armada::RunHandle,
    mut on_result: impl FnMut(&JobResult),
) -> (RunReport, BTreeMap<u64, JobResult>) {
    let mut results = BTreeMap::new();
    let report = handle
        .follow(|event| {
            if let FollowEvent::Result(result) = event {
                on_result(result);
                let previous = results.insert(result.index, result.clone());
                assert!(previous.is_none(), "job {} reported twice", result.index);
            }
        })
        .await
        .unwrap();
    (report, results)
}

#[derive(Clone, Copy, Debug)]
enum Behavior {
    Panic,
    /// Retryable failure on the first n attempts.
    FailAttempts(u32),
    Fail,
    /// Sleeps this long on the first attempt.
    SlowFirstAttempt(Duration),
    /// Sleeps this long on every attempt.
    Slow(Duration),
}

#[derive(Default)]
struct Scripted {
    behaviors: HashMap<u64, Behavior>,
    default: Option<Behavior>,
}

impl Script for Scripted {
    type Agent = PlainAgent;
    type Job = Job<Value>;
    type Output = u64;

    async fn run(&self, _: &mut PlainAgent, job: &mut Job<Value>) -> Result<u64, ScriptError> {
        let (index, attempt) = (job.info.index, job.info.attempt);
        match self.behaviors.get(&index).copied().or(self.default) {
            Some(Behavior::Panic) => panic!("job {index} panics on purpose"),
            Some(Behavior::FailAttempts(n)) if attempt <= n => {
                return Err(ScriptError::retry(format!("attempt {attempt} fails")));
            }
            Some(Behavior::Fail) => return Err(ScriptError::fail("cannot be done")),
            Some(Behavior::SlowFirstAttempt(time)) if attempt == 1 => {
                tokio::time::sleep(time).await
            }
            Some(Behavior::Slow(time)) => tokio::time::sleep(time).await,
            _ => {}
        }
        Ok(index)
    }
}

fn assert_every_job_once(results: &BTreeMap<u64, JobResult>, jobs: u64) {
    assert_eq!(
        results.keys().copied().collect::<Vec<_>>(),
        (0..jobs).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_panic_fails_its_job_and_nothing_else() {
    let script = Scripted {
        behaviors: HashMap::from([(5, Behavior::Panic)]),
        ..Scripted::default()
    };
    let plan = plan::<Scripted>(json!({ "agents": 3, "jobs": 20 }), json!({}));
    let (report, results) = run(script, &plan).await;
    assert_eq!(report.status, RunStatus::Completed);
    assert_every_job_once(&results, 20);
    let panicked = &results[&5];
    assert_eq!(panicked.status, JobStatus::Failed);
    assert_eq!(panicked.attempts, 1);
    let error = panicked.error.as_deref().unwrap();
    assert!(
        error.contains("panicked") && error.contains("job 5 panics on purpose"),
        "{error}"
    );
    for (index, result) in &results {
        if *index != 5 {
            assert_eq!(result.status, JobStatus::Succeeded, "job {index}");
            assert_eq!(result.output, Some(json!(index)));
        }
    }
    assert_eq!((report.progress.succeeded, report.progress.failed), (19, 1));
}

#[tokio::test]
async fn failed_attempts_retry_until_success_or_the_attempt_limit() {
    let script = Scripted {
        behaviors: HashMap::from([
            (1, Behavior::FailAttempts(2)),
            (2, Behavior::FailAttempts(u32::MAX)),
            (3, Behavior::Fail),
        ]),
        ..Scripted::default()
    };
    let run_message = json!({
        "agents": 2, "jobs": 6, "max_attempts": 3,
        "retry_backoff_secs": 0.01, "retry_backoff_max_secs": 0.05
    });
    let (report, results) = run(script, &plan::<Scripted>(run_message, json!({}))).await;
    assert_every_job_once(&results, 6);
    assert_eq!(
        (results[&1].status, results[&1].attempts),
        (JobStatus::Succeeded, 3)
    );
    assert_eq!(
        (results[&2].status, results[&2].attempts),
        (JobStatus::Failed, 3)
    );
    assert_eq!(
        results[&2].error.as_deref(),
        Some("attempt 3 fails (after 3 attempts)")
    );
    assert_eq!(
        (results[&3].status, results[&3].attempts),
        (JobStatus::Failed, 1)
    );
    assert_eq!(results[&3].error.as_deref(), Some("cannot be done"));
    assert_eq!(report.progress.retries, 4);
    assert_eq!(report.status, RunStatus::Completed);
}

/// The smallest script: an async closure of the job, typed, reporting and retried like any,
/// run through the testing kit with its payloads given in code.
#[tokio::test]
async fn a_script_can_be_an_async_closure() {
    #[derive(serde::Deserialize, serde::Serialize)]
    struct Page {
        factor: u64,
    }
    let script = armada::script_fn(|job: Job<Page>| async move {
        job.report().info(format!("attempt {}", job.info.attempt));
        if job.info.index.is_multiple_of(2) && job.info.attempt == 1 {
            return Err(ScriptError::retry(std::io::Error::other(
                "first attempts of even jobs fail",
            )));
        }
        Ok::<_, ScriptError>(job.info.index * job.payload.factor)
    });
    let report = TestRun::new(script)
        .agents(2, json!({}))
        .max_attempts(2)
        .jobs((0..6).map(|_| Page { factor: 10 }))
        .run()
        .await
        .unwrap();
    assert!(report.all_succeeded(), "{report:?}");
    let outputs = report.outputs::<u64>();
    assert_eq!(
        outputs.into_iter().collect::<Vec<_>>(),
        (0..6)
            .map(|index| (index, Some(index * 10)))
            .collect::<Vec<_>>()
    );
    assert_eq!(report.job(2).attempts, 2);
    assert_eq!(report.job(3).attempts, 1);
    assert_eq!(
        report.messages_of(2),
        ["attempt 1", "first attempts of even jobs fail", "attempt 2"]
    );
}

/// Payloads the script's type refuses come back from the testing kit as diagnostics, and
/// nothing runs.
#[tokio::test]
async fn the_testing_kit_checks_payloads_like_a_project() {
    let script =
        armada::script_fn(|job: Job<u64>| async move { Ok::<_, ScriptError>(job.payload) });
    let error = TestRun::new(script)
        .job(1)
        .job("two")
        .run()
        .await
        .unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains("jobs[1]") && text.contains("expected u64"),
        "{text}"
    );
}

#[tokio::test]
async fn an_attempt_over_the_time_limit_is_retried() {
    let script = Scripted {
        behaviors: HashMap::from([(0, Behavior::SlowFirstAttempt(Duration::from_secs(30)))]),
        ..Scripted::default()
    };
    let run_message = json!({
        "agents": 1, "jobs": 2, "job_timeout_secs": 0.3, "retry_backoff_secs": 0.0
    });
    let (_, results) = run(script, &plan::<Scripted>(run_message, json!({}))).await;
    assert_eq!(
        (results[&0].status, results[&0].attempts),
        (JobStatus::Succeeded, 2)
    );
    assert_eq!(
        (results[&1].status, results[&1].attempts),
        (JobStatus::Succeeded, 1)
    );
}

/// An agent context that cannot start on the agents listed in its config.
struct Picky;

impl AgentContext for Picky {
    type Config = Value;

    async fn start(agent: AgentInfo, config: Value) -> Result<Self, BoxError> {
        let broken = config["broken"].as_array().cloned().unwrap_or_default();
        if broken.contains(&json!(agent.index)) {
            return Err(format!("no browser for agent {}", agent.index).into());
        }
        Ok(Self)
    }
}

struct OnPicky;

impl Script for OnPicky {
    type Agent = Picky;
    type Job = Job<Value>;
    type Output = ();

    async fn run(&self, _: &mut Picky, _: &mut Self::Job) -> Result<(), ScriptError> {
        tokio::time::sleep(Duration::from_millis(2)).await;
        Ok(())
    }
}

fn picky_plan(agents: u32, jobs: u64, broken: &[u32]) -> Plan {
    let template = json!({
        "run_message": { "agents": agents, "jobs": jobs },
        "default_agent_message": { "broken": broken },
    });
    let files = ProjectFiles::from_template(template.to_string());
    Plan::for_script::<OnPicky>(&files, &RunOverrides::default()).unwrap()
}

#[tokio::test]
async fn an_agent_that_cannot_start_leaves_its_jobs_to_the_others() {
    let (report, results) = run(OnPicky, &picky_plan(3, 30, &[0])).await;
    assert_eq!(report.status, RunStatus::Completed);
    assert_every_job_once(&results, 30);
    assert!(results.values().all(|r| r.status == JobStatus::Succeeded));
    assert!(results.values().all(|r| r.agent != Some(0)));
    assert_eq!(
        report.agent_problems.len(),
        1,
        "{:?}",
        report.agent_problems
    );
    assert!(report.agent_problems[0].contains("no browser for agent 0"));
}

#[tokio::test]
async fn a_run_without_any_agent_able_to_start_fails_and_abandons_its_jobs() {
    let (report, results) = run(OnPicky, &picky_plan(2, 10, &[0, 1])).await;
    assert_eq!(report.status, RunStatus::Failed);
    assert_every_job_once(&results, 10);
    for result in results.values() {
        assert_eq!((result.status, result.attempts), (JobStatus::Abandoned, 0));
        assert!(
            result
                .error
                .as_deref()
                .unwrap()
                .contains("no browser for agent 1")
        );
    }
    assert_eq!(report.agent_problems.len(), 2);
}

#[tokio::test]
async fn cancel_stops_the_run_and_still_reports_every_job() {
    let script = Scripted {
        default: Some(Behavior::Slow(Duration::from_millis(20))),
        ..Scripted::default()
    };
    let plan = plan::<Scripted>(json!({ "agents": 2, "jobs": 200 }), json!({}));
    let backends = Backends::embedded().await.unwrap();
    let launcher = Launcher::InProcess(Arc::new(ScriptAgent::new(script)));
    let handle = Orchestrator::new(backends, launcher)
        .launch(&plan)
        .await
        .unwrap();
    let control = handle.control();
    let mut seen = 0;
    let (report, results) = follow(handle, |_| {
        seen += 1;
        if seen == 10 {
            control.cancel();
        }
    })
    .await;
    assert_eq!(report.status, RunStatus::Canceled);
    assert_every_job_once(&results, 200);
    let succeeded = results
        .values()
        .filter(|r| r.status == JobStatus::Succeeded)
        .count();
    let canceled = results
        .values()
        .filter(|r| r.status == JobStatus::Canceled)
        .count();
    // The two jobs in flight at cancel time finish; nothing new starts.
    assert!((10..=14).contains(&succeeded), "{succeeded} succeeded");
    assert_eq!(succeeded + canceled, 200);
}

struct Echo;

impl Script for Echo {
    type Agent = PlainAgent;
    type Job = Job<Value>;
    type Output = Value;

    async fn run(&self, _: &mut PlainAgent, job: &mut Job<Value>) -> Result<Value, ScriptError> {
        tokio::time::sleep(Duration::from_millis(1)).await;
        Ok(job.payload["tag"].clone())
    }
}

#[tokio::test]
async fn concurrent_runs_on_one_orchestrator_and_on_two_stay_apart() {
    let shared = Orchestrator::new(
        Backends::embedded().await.unwrap(),
        Launcher::InProcess(Arc::new(ScriptAgent::new(Echo))),
    );
    let other = Orchestrator::new(
        Backends::embedded().await.unwrap(),
        Launcher::InProcess(Arc::new(ScriptAgent::new(Echo))),
    );
    let plans: Vec<Plan> = ["a", "b", "c"]
        .iter()
        .map(|tag| plan::<Echo>(json!({ "agents": 3, "jobs": 60 }), json!({ "tag": tag })))
        .collect();
    let (a, b, c) = tokio::join!(
        async { follow(shared.launch(&plans[0]).await.unwrap(), |_| {}).await },
        async { follow(shared.launch(&plans[1]).await.unwrap(), |_| {}).await },
        async { follow(other.launch(&plans[2]).await.unwrap(), |_| {}).await },
    );
    for ((report, results), tag) in [(a, "a"), (b, "b"), (c, "c")] {
        assert_eq!(report.status, RunStatus::Completed);
        assert_every_job_once(&results, 60);
        assert!(
            results.values().all(|r| r.output == Some(json!(tag))),
            "run {tag}"
        );
    }
}

/// Counts identity rotations and writes the error as evidence.
struct Tracked {
    rotations: u32,
}

static ROTATIONS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl AgentContext for Tracked {
    type Config = Value;

    async fn start(_: AgentInfo, _: Value) -> Result<Self, BoxError> {
        Ok(Self { rotations: 0 })
    }

    async fn rotate_identity(&mut self) -> Result<(), BoxError> {
        self.rotations += 1;
        ROTATIONS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }

    async fn save_evidence(&mut self, folder: &std::path::Path, error: &str) -> bool {
        std::fs::write(folder.join("error.txt"), error).is_ok()
    }
}

struct OnTracked;

impl Script for OnTracked {
    type Agent = Tracked;
    type Job = Job<Value>;
    type Output = u32;

    async fn run(&self, agent: &mut Tracked, job: &mut Self::Job) -> Result<u32, ScriptError> {
        match job.info.index {
            // The proxy fails twice, then the rotated identity works.
            0 if agent.rotations < 2 => Err(ScriptError::identity("proxy refused the connection")),
            1 => Err(ScriptError::fail("the page says no")),
            _ => Ok(agent.rotations),
        }
    }
}

#[tokio::test]
async fn a_proxy_failure_rotates_the_identity_without_costing_an_attempt() {
    let evidence = tempfile::tempdir().unwrap();
    let template = json!({ "run_message": { "agents": 1, "jobs": 3, "max_attempts": 1 } });
    let files = ProjectFiles::from_template(template.to_string());
    let plan = Plan::for_script::<OnTracked>(&files, &RunOverrides::default()).unwrap();
    let orchestrator = Orchestrator::new(
        Backends::embedded().await.unwrap(),
        Launcher::InProcess(Arc::new(ScriptAgent::new(OnTracked))),
    )
    .with_evidence_dir(evidence.path());
    let (report, results) = follow(orchestrator.launch(&plan).await.unwrap(), |_| {}).await;
    assert_eq!(report.status, RunStatus::Completed);
    // max_attempts is 1, yet job 0 succeeds: identity retries are not attempts.
    assert_eq!(
        (results[&0].status, results[&0].attempts),
        (JobStatus::Succeeded, 1)
    );
    assert_eq!(results[&0].output, Some(json!(2)));
    assert_eq!(ROTATIONS.load(std::sync::atomic::Ordering::SeqCst), 2);
    // The failed job's evidence is saved and linked from its result.
    let folder = results[&1]
        .evidence
        .as_deref()
        .expect("evidence of the failed job");
    let saved = std::fs::read_to_string(std::path::Path::new(folder).join("error.txt")).unwrap();
    assert_eq!(saved, "the page says no");
    assert!(folder.ends_with("job-1-attempt-1"), "{folder}");
    // Job 0's failed attempts saved evidence too; the succeeded result does not point to it.
    assert_eq!(results[&0].evidence, None);
    assert_eq!(results[&2].evidence, None);
}

/// An agent config and a job payload made in code, for [`Plan::for_script_from`].
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Worker {
    name: String,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Item {
    run: String,
    n: u64,
}

/// Returns which run and which agent ran the job.
struct Tagged;

impl Script for Tagged {
    type Agent = PlainAgent<Worker>;
    type Job = Job<Item>;
    type Output = Value;

    async fn run(
        &self,
        agent: &mut Self::Agent,
        job: &mut Self::Job,
    ) -> Result<Value, ScriptError> {
        tokio::time::sleep(Duration::from_millis(1)).await;
        Ok(json!({ "run": job.payload.run, "agent": agent.config.name, "n": job.payload.n }))
    }
}

fn tagged_plan(run: &str, agents: u32, jobs: u64) -> Plan {
    let workers = vec![Worker {
        name: format!("{run}-worker"),
    }];
    let items = (0..jobs)
        .map(|n| Item {
            run: run.to_owned(),
            n,
        })
        .collect();
    Plan::for_script_from::<Tagged>(armada::RunSettings::new(agents), workers, items).unwrap()
}

/// Reads every update of a spawned run to its end, then its report.
async fn read_to_the_end(mut task: RunTask) -> (RunReport, BTreeMap<u64, JobResult>) {
    use futures::StreamExt;
    let updates: Vec<RunUpdate> = task.updates().collect().await;
    let mut results = BTreeMap::new();
    for update in &updates {
        if let RunUpdate::Job(result) = update {
            let previous = results.insert(result.index, result.clone());
            assert!(previous.is_none(), "job {} reported twice", result.index);
        }
    }
    // The last update is the run's final counters.
    match updates.last() {
        Some(RunUpdate::Progress(progress)) => assert_eq!(progress.terminal, task.jobs()),
        other => panic!("the last update should be the final progress, got {other:?}"),
    }
    assert!(task.next_update().await.is_none());
    (task.wait().await.unwrap(), results)
}

#[tokio::test]
async fn spawned_runs_on_one_orchestrator_and_on_two_stream_only_their_own_jobs() {
    let orchestrator = || async {
        Orchestrator::new(
            Backends::embedded().await.unwrap(),
            Launcher::InProcess(Arc::new(ScriptAgent::new(Tagged))),
        )
    };
    let (shared, other) = (orchestrator().await, orchestrator().await);
    let runs = [("a", &shared, 40), ("b", &shared, 50), ("c", &other, 60)];
    let mut tasks = Vec::new();
    for (tag, orchestrator, jobs) in runs {
        let task = orchestrator
            .launch(&tagged_plan(tag, 3, jobs))
            .await
            .unwrap()
            .spawn();
        assert_eq!(task.jobs(), jobs);
        tasks.push(task);
    }
    let ids: Vec<String> = tasks.iter().map(|task| task.run_id().to_string()).collect();
    let ended = futures::future::join_all(tasks.into_iter().map(read_to_the_end)).await;
    for (((report, results), (tag, _, jobs)), id) in ended.into_iter().zip(runs).zip(ids) {
        assert_eq!(report.run_id.to_string(), id);
        assert_eq!(report.status, RunStatus::Completed, "run {tag}");
        assert_eq!(report.progress.succeeded, jobs);
        assert_every_job_once(&results, jobs);
        for (index, result) in &results {
            let expected = json!({ "run": tag, "agent": format!("{tag}-worker"), "n": index });
            assert_eq!(result.output.as_ref(), Some(&expected), "run {tag}");
        }
    }
}

#[tokio::test]
async fn cancel_on_a_run_task_ends_the_run_and_still_reports_every_job() {
    let script = Scripted {
        default: Some(Behavior::Slow(Duration::from_millis(20))),
        ..Scripted::default()
    };
    let plan = plan::<Scripted>(json!({ "agents": 2, "jobs": 200 }), json!({}));
    let orchestrator = Orchestrator::new(
        Backends::embedded().await.unwrap(),
        Launcher::InProcess(Arc::new(ScriptAgent::new(script))),
    );
    let mut task = orchestrator.launch(&plan).await.unwrap().spawn();
    let mut results = BTreeMap::new();
    while let Some(update) = task.next_update().await {
        if let RunUpdate::Job(result) = update {
            let previous = results.insert(result.index, result);
            assert!(previous.is_none(), "a job was reported twice");
            if results.len() == 10 {
                task.cancel();
            }
        }
    }
    let report = task.wait().await.unwrap();
    assert_eq!(report.status, RunStatus::Canceled);
    assert_every_job_once(&results, 200);
    let canceled = results
        .values()
        .filter(|result| result.status == JobStatus::Canceled)
        .count();
    assert!(canceled >= 180, "{canceled} canceled");
    assert_eq!(report.progress.terminal, 200);
}

#[tokio::test]
async fn an_invalid_in_memory_project_gives_its_diagnostics_as_data() {
    let template = json!({
        "run_message": { "agents": 2, "jobs": 3 },
        "default_agent_message": { "name": "$env_NAME" },
        "default_job_message": { "run": "r", "n": 1 },
    });
    let files = ProjectFiles::from_template(template.to_string())
        .with_tune(armada::NamedFile::new("tune.json", r#"{ "NAME": "w" }"#))
        .with_agent_csv("targetted_agent,name\n1,x\n")
        .with_job_csv("targetted_job,n\n0,7\n2,seven\n");
    let Err(armada::Error::Invalid(diagnostics)) =
        Plan::for_script::<Tagged>(&files, &RunOverrides::default())
    else {
        panic!("the plan should be invalid");
    };
    let found: Vec<_> = diagnostics
        .iter()
        .map(|d| (d.file.as_str(), d.line, d.field.as_deref()))
        .collect();
    assert_eq!(found, [("data_job.csv", Some(3), Some("n"))]);
    assert!(diagnostics.iter().all(|d| d.message.contains("job 2")));

    // Messages made in code are checked the same way, every problem at once.
    let items = vec![json!({ "run": "r", "n": 1 }); 3]
        .into_iter()
        .chain([json!({ "run": "r", "n": "three" })])
        .collect();
    let settings = armada::RunSettings {
        jobs: Some(3),
        ..armada::RunSettings::new(2)
    };
    let Err(armada::Error::Invalid(diagnostics)) =
        Plan::from_messages::<Tagged>(settings, vec![json!({ "label": "no name" })], items)
    else {
        panic!("the plan should be invalid");
    };
    let fields: Vec<_> = diagnostics
        .iter()
        .map(|d| (d.file.as_str(), d.field.as_deref().unwrap_or_default()))
        .collect();
    assert_eq!(
        fields,
        [
            ("(in code)", "jobs"),
            ("(in code)", "agents[0]"),
            ("(in code)", "jobs[3].n")
        ],
        "{diagnostics}"
    );
    // As data: the same diagnostics serialize for an HTTP answer.
    let json = serde_json::to_value(&diagnostics).unwrap();
    assert_eq!(json[2]["field"], "jobs[3].n");
}

/// The command line runs on the caller's runtime (`armada::cli::execute`), and on a runtime
/// of its own from inside another (`armada::cli::run_blocking`, what `armada::run` and
/// `main!` call) instead of panicking.
#[tokio::test]
async fn the_command_line_runs_inside_a_tokio_runtime() {
    let project = tempfile::tempdir().unwrap();
    std::fs::create_dir(project.path().join("config")).unwrap();
    let template = json!({
        "run_message": { "agents": 2, "jobs": 3 },
        "default_agent_message": {},
        "default_job_message": {},
    });
    std::fs::write(
        project.path().join("config/config_template.json"),
        template.to_string(),
    )
    .unwrap();
    let runner = || Arc::new(ScriptAgent::new(Scripted::default()));
    let path = project.path().to_str().unwrap();
    let launch = ["orchestrate", "launch", "--project", path, "--no-dashboard"];
    let code = armada::cli::execute::<Scripted>(runner(), project.path(), launch).await;
    assert_eq!(code, std::process::ExitCode::SUCCESS);
    let lines = std::fs::read_dir(project.path().join(".armada/runs"))
        .unwrap()
        .map(|run| run.unwrap().path().join("results.jsonl"))
        .map(|file| std::fs::read_to_string(file).unwrap().lines().count())
        .collect::<Vec<_>>();
    assert_eq!(lines, [3], "one run, one line per job");

    let validate = ["orchestrate", "validate", "--project", path];
    let code = armada::cli::run_blocking::<Scripted>(runner(), project.path(), validate);
    assert_eq!(code, std::process::ExitCode::SUCCESS);
}
