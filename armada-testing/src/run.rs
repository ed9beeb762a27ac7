//! A script run over jobs given in code, everything in memory.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use armada_agent::ScriptAgent;
use armada_core::backend::{EventSink, RunStatus};
use armada_core::wire::{Event, JobResult, JobStatus};
use armada_core::{Plan, RunSettings, Script};
use armada_monitor::MonitorLink;
use armada_orchestrator::{Backends, FollowEvent, Launcher, Orchestrator};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// A run of a script over jobs given in code, set up with the builder's methods and run with
/// [`TestRun::run`]. By default: one agent with an empty config, one attempt per job, a
/// 30 s time limit, retries after 10 ms.
#[derive(Debug)]
pub struct TestRun<S> {
    script: S,
    settings: RunSettings,
    agents: Vec<Value>,
    jobs: Vec<Value>,
}

impl<S: Script> TestRun<S> {
    /// A run of `script`, with no job yet.
    pub fn new(script: S) -> Self {
        let mut settings = RunSettings::new(1);
        settings.max_attempts = 1;
        settings.job_timeout_secs = 30.0;
        settings.retry_backoff_secs = 0.01;
        settings.retry_backoff_max_secs = 0.05;
        Self {
            script,
            settings,
            agents: vec![Value::Object(Default::default())],
            jobs: Vec::new(),
        }
    }

    /// Adds a job with this payload (anything that serializes to the script's payload type).
    pub fn job(mut self, payload: impl Serialize) -> Self {
        self.jobs.push(to_json(payload, "a job's payload"));
        self
    }

    /// Adds a job per payload.
    pub fn jobs<P: Serialize>(mut self, payloads: impl IntoIterator<Item = P>) -> Self {
        self.jobs.extend(
            payloads
                .into_iter()
                .map(|payload| to_json(payload, "a job's payload")),
        );
        self
    }

    /// `count` agents sharing one config.
    pub fn agents(mut self, count: u32, config: impl Serialize) -> Self {
        self.settings.agents = count;
        self.agents = vec![to_json(config, "the agents' config")];
        self
    }

    /// Attempts per job (1 by default).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.settings.max_attempts = attempts;
        self
    }

    /// The time limit of one attempt.
    pub fn job_timeout(mut self, limit: Duration) -> Self {
        self.settings.job_timeout_secs = limit.as_secs_f64();
        self
    }

    /// Runs the jobs to the end and reports them. A payload or config the script's types
    /// refuse is [`Error::Invalid`](armada_core::Error::Invalid) with every problem, and
    /// nothing runs.
    pub async fn run(self) -> Result<TestReport, armada_orchestrator::Error> {
        let plan = Plan::from_messages::<S>(self.settings, self.agents, self.jobs)?;
        let evidence =
            tempfile::tempdir().map_err(|source| armada_orchestrator::Error::Results {
                path: "a temporary folder for evidence".into(),
                source,
            })?;
        let backends = Backends::embedded().await?;
        let events = match &backends.monitor {
            MonitorLink::Memory(EventSink::Memory(events)) => Some(events.clone()),
            _ => None,
        };
        let launcher = Launcher::InProcess(Arc::new(ScriptAgent::new(self.script)));
        let orchestrator = Orchestrator::new(backends, launcher)
            .with_grace(Duration::from_secs(5))
            .with_evidence_dir(evidence.path());
        let handle = orchestrator.launch(&plan).await?;
        let run_id = handle.run_id().clone();
        let mut jobs = BTreeMap::new();
        let report = handle
            .follow(|event| {
                if let FollowEvent::Result(result) = event {
                    jobs.insert(result.index, TestJob::from(result.clone()));
                }
            })
            .await?;
        let events = events
            .map(|events| events.recent(&run_id))
            .unwrap_or_default();
        Ok(TestReport {
            status: report.status,
            jobs,
            events,
            _evidence: evidence,
        })
    }
}

fn to_json(value: impl Serialize, what: &str) -> Value {
    serde_json::to_value(value).unwrap_or_else(|error| panic!("{what} is not JSON: {error}"))
}

/// How a [`TestRun`] went: every job by index, and the run's events.
#[derive(Debug)]
pub struct TestReport {
    /// How the run ended.
    pub status: RunStatus,
    /// Each job's end, by index.
    pub jobs: BTreeMap<u64, TestJob>,
    /// The run's events as the monitor got them, oldest first (the last 10,000).
    pub events: Vec<Event>,
    /// Where evidence was saved; removed with the report.
    _evidence: tempfile::TempDir,
}

impl TestReport {
    /// Job `index`'s end; panics naming the jobs there are when it has none.
    pub fn job(&self, index: u64) -> &TestJob {
        self.jobs.get(&index).unwrap_or_else(|| {
            panic!(
                "no job {index} in the report; it has {:?}",
                self.jobs.keys().collect::<Vec<_>>()
            )
        })
    }

    /// Every job's output as `T`, by index; a job that did not succeed has `None`.
    pub fn outputs<T: DeserializeOwned>(&self) -> BTreeMap<u64, Option<T>> {
        self.jobs
            .iter()
            .map(|(index, job)| (*index, job.output()))
            .collect()
    }

    /// Whether every job succeeded.
    pub fn all_succeeded(&self) -> bool {
        self.jobs
            .values()
            .all(|job| job.status == JobStatus::Succeeded)
    }

    /// The messages job `index` reported, in order.
    pub fn messages_of(&self, index: u64) -> Vec<&str> {
        self.events
            .iter()
            .filter(|event| event.job.as_ref().is_some_and(|job| job.index == index))
            .filter_map(|event| event.message.as_deref())
            .collect()
    }
}

/// One job's end in a [`TestReport`].
#[derive(Debug, Clone)]
pub struct TestJob {
    /// Where it ended.
    pub status: JobStatus,
    /// Attempts made.
    pub attempts: u32,
    /// Why it did not succeed.
    pub error: Option<String>,
    /// The folder holding its last failed attempt's evidence, while the report lives.
    pub evidence: Option<std::path::PathBuf>,
    output: Option<Value>,
}

impl TestJob {
    /// The script's output as `T`; `None` when the job did not succeed. Panics when the output
    /// is not a `T`, naming both.
    pub fn output<T: DeserializeOwned>(&self) -> Option<T> {
        self.output.clone().map(|output| {
            serde_json::from_value(output.clone()).unwrap_or_else(|error| {
                panic!(
                    "the output {output} is not a {}: {error}",
                    std::any::type_name::<T>()
                )
            })
        })
    }
}

impl From<JobResult> for TestJob {
    fn from(result: JobResult) -> Self {
        Self {
            status: result.status,
            attempts: result.attempts,
            error: result.error,
            evidence: result.evidence.map(Into::into),
            output: result.output,
        }
    }
}
