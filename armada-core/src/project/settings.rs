use serde::{Deserialize, Serialize};

/// `run_message`: how a run is shaped. Consumed by the orchestrator, not forwarded to scripts.
/// Unknown keys are errors, so a typo cannot pass silently.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSettings {
    /// How many agents run in parallel.
    pub agents: u32,
    /// How many jobs; when absent, the number of rows in `data_job.csv`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jobs: Option<u64>,
    /// Attempts per job before it is failed and dead-lettered (the first run counts as one).
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Time limit of one attempt (job context start plus script), in seconds.
    #[serde(default = "default_job_timeout_secs")]
    pub job_timeout_secs: f64,
    /// Delay before the first retry, in seconds; doubled at each further attempt.
    #[serde(default = "default_retry_backoff_secs")]
    pub retry_backoff_secs: f64,
    /// Upper bound of the retry delay, in seconds.
    #[serde(default = "default_retry_backoff_max_secs")]
    pub retry_backoff_max_secs: f64,
    /// Container image of the agents (used by the Kubernetes launcher).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Resource requests and limits of each agent (used by the Kubernetes launcher).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<serde_json::Value>,
    /// How agents run as pods: image, namespace, resources, scheduling, environment (used and
    /// checked by the Kubernetes launcher of `armada-orchestrator`, which gives it its type).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<serde_json::Value>,
}

/// Agents one run may have: each is a browser, a process or a pod.
pub const MAX_AGENTS: u32 = 10_000;
/// Jobs one run may have.
pub const MAX_JOBS: u64 = 100_000_000;

fn default_max_attempts() -> u32 {
    3
}
fn default_job_timeout_secs() -> f64 {
    300.0
}
fn default_retry_backoff_secs() -> f64 {
    1.0
}
fn default_retry_backoff_max_secs() -> f64 {
    60.0
}

impl RunSettings {
    /// Settings for `agents` agents with every other value at its default (3 attempts, 300 s
    /// per attempt, backoff from 1 s up to 60 s) and the job count taken from the plan's jobs.
    /// Change fields with struct update syntax: `RunSettings { max_attempts: 5, ..RunSettings::new(4) }`.
    pub fn new(agents: u32) -> Self {
        Self {
            agents,
            jobs: None,
            max_attempts: default_max_attempts(),
            job_timeout_secs: default_job_timeout_secs(),
            retry_backoff_secs: default_retry_backoff_secs(),
            retry_backoff_max_secs: default_retry_backoff_max_secs(),
            image: None,
            resources: None,
            kubernetes: None,
        }
    }

    /// Problems with values that parse but make no sense, as `(field, message)`.
    pub(crate) fn check(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        if self.agents == 0 {
            problems.push(("agents", "must be at least 1".to_owned()));
        }
        if self.agents > MAX_AGENTS {
            problems.push((
                "agents",
                format!(
                    "{} is more than the {MAX_AGENTS} agents a run may have",
                    self.agents
                ),
            ));
        }
        if let Some(jobs) = self.jobs.filter(|&jobs| jobs > MAX_JOBS) {
            problems.push((
                "jobs",
                format!("{jobs} is more than the {MAX_JOBS} jobs a run may have; split the work into several runs"),
            ));
        }
        if self.max_attempts == 0 {
            problems.push(("max_attempts", "must be at least 1".to_owned()));
        }
        for (field, value) in [
            ("job_timeout_secs", self.job_timeout_secs),
            ("retry_backoff_secs", self.retry_backoff_secs),
            ("retry_backoff_max_secs", self.retry_backoff_max_secs),
        ] {
            let positive = field != "job_timeout_secs" || value > 0.0;
            if !value.is_finite() || value < 0.0 || !positive || value > 1e9 {
                problems.push((field, format!("{value} is not a usable number of seconds")));
            }
        }
        problems
    }
}

/// Values given on the command line or through the library that take precedence over
/// `run_message`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunOverrides {
    /// Replaces `run_message.agents`.
    pub agents: Option<u32>,
    /// Replaces `run_message.jobs`.
    pub jobs: Option<u64>,
    /// Replaces `run_message.max_attempts`.
    pub max_attempts: Option<u32>,
    /// Replaces `run_message.job_timeout_secs`.
    pub job_timeout_secs: Option<f64>,
}

impl RunOverrides {
    pub(crate) fn apply(&self, run_message: &mut serde_json::Map<String, serde_json::Value>) {
        use serde_json::Value;
        if let Some(agents) = self.agents {
            run_message.insert("agents".into(), Value::from(agents));
        }
        if let Some(jobs) = self.jobs {
            run_message.insert("jobs".into(), Value::from(jobs));
        }
        if let Some(max_attempts) = self.max_attempts {
            run_message.insert("max_attempts".into(), Value::from(max_attempts));
        }
        if let Some(timeout) = self.job_timeout_secs {
            run_message.insert("job_timeout_secs".into(), Value::from(timeout));
        }
    }
}
