//! What the dashboard asks of the project's orchestrator: launch a run, cancel one, run
//! failed jobs again. The orchestrator implements [`Control`]; the standalone monitor has
//! none and answers these requests with 501.

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::Result;
use crate::model::RunLabel;

/// What the Launch page offers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LaunchInfo {
    /// The project's name, shown on the Launch page.
    pub project: String,
    /// Tunes to pick from (`local`, `distant`, …).
    pub tunes: Vec<String>,
    /// What a launch uses when the form leaves a field empty.
    pub defaults: LaunchDefaults,
}

/// A launch's defaults, from the project's `run_message`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LaunchDefaults {
    /// Agents: `run_message.agents`.
    pub agents: u32,
    /// Jobs: `run_message.jobs`, or else the rows of `data_job.csv`.
    pub jobs: u64,
    /// The tune used when the form names none (`local`, `distant` or a file's path).
    pub tune: String,
}

/// The run a launch would start, as planned without starting it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchCheck {
    /// Agents it would start.
    pub agents: u32,
    /// Jobs it would run.
    pub jobs: u64,
    /// Rows of `data_agent.csv` beyond its agents, left out.
    pub skipped_agent_rows: u64,
    /// Rows of `data_job.csv` beyond its jobs, left out.
    pub skipped_job_rows: u64,
}

/// A launch asked for from the dashboard.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LaunchRequest {
    /// The tune; the project's default when `None`.
    pub tune: Option<String>,
    /// Agents; `run_message.agents` when `None`.
    pub agents: Option<u32>,
    /// Jobs; `run_message.jobs` when `None`.
    pub jobs: Option<u64>,
    /// Per-agent overrides replacing the project's `data_agent.csv`.
    pub data_agent_csv: Option<String>,
    /// Per-job overrides replacing the project's `data_job.csv`.
    pub data_job_csv: Option<String>,
    /// The run this launch repeats: its tune, counts and CSV files are reused unless given.
    pub relaunch_of: Option<String>,
    /// Tune values given inline, instead of the tune file named by `tune`.
    pub tune_values: Option<serde_json::Value>,
    /// A whole `config_template.json` replacing the project's.
    pub template: Option<Vec<u8>>,
    /// Deep-merged into the template (the project's, or `template`) before planning.
    pub template_overrides: Option<serde_json::Value>,
    /// The run's id, when the caller chose it.
    pub run_id: Option<String>,
    /// The name and tags the run is shown with.
    pub label: RunLabel,
}

/// Who serves the dashboard, so that it can say what outlives what.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct About {
    /// What kind of server this is.
    pub serves: Serves,
    /// The run a launch serves.
    pub run_id: Option<String>,
    /// Where a launch's run can be seen once the launch has ended.
    pub later: Option<Later>,
}

/// What kind of server a dashboard is served by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Serves {
    /// One run's `launch`: it stops when the run ends.
    Launch,
    /// An orchestrator service (`orchestrate serve`), which launches runs and stays.
    Service,
    /// A monitor with no orchestrator: it shows runs and cannot start or stop them.
    Monitor,
}

/// How to see a run once the process that launched it has ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Later {
    /// The command that serves the store the run is kept in; `None` when a monitor service
    /// that is already up keeps it.
    pub command: Option<String>,
    /// The run's page once that command runs.
    pub url: String,
}

/// The project's orchestrator as the dashboard drives it.
pub trait Control: Send + Sync + 'static {
    /// Who serves the dashboard: a long-lived service, unless said otherwise.
    fn about(&self) -> About {
        About {
            serves: Serves::Service,
            run_id: None,
            later: None,
        }
    }

    /// What the Launch page offers.
    fn launch_info(&self) -> BoxFuture<'_, Result<LaunchInfo>>;

    /// Plans and starts a run; returns its id once it is registered with the monitor. A
    /// project with problems is [`Error::Project`](crate::Error::Project) and nothing starts.
    fn launch(&self, request: LaunchRequest) -> BoxFuture<'_, Result<String>>;

    /// Plans a launch without starting it, for a form to check as it is filled in: the run it
    /// would be, or the project's problems as [`launch`](Control::launch) would give them.
    fn check(&self, request: LaunchRequest) -> BoxFuture<'_, Result<LaunchCheck>> {
        let _ = request;
        Box::pin(async { Err(crate::Error::NoOrchestrator("checking a launch")) })
    }

    /// Cancels a running run.
    fn cancel<'a>(&'a self, run_id: &'a str) -> BoxFuture<'a, Result<()>>;

    /// Runs the given jobs of a run again as a new run (same indexes and payloads); returns
    /// the new run's id.
    fn retry<'a>(&'a self, run_id: &'a str, jobs: Vec<u64>) -> BoxFuture<'a, Result<String>>;
}
