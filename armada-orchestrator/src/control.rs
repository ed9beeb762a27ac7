//! The project's orchestrator as the dashboard drives it: launch a run from the Launch page,
//! cancel it, run failed jobs again. Runs launched here are followed by tasks this
//! [`ProjectControl`] owns; [`ProjectControl::shutdown`] cancels them and waits.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use armada_core::project::NamedFile;
use armada_core::{Plan, ProjectFiles, RunId, RunOverrides, Tune};
use armada_monitor::model::{Finish, RunLabel, RunState};
use armada_monitor::{
    About, Control, Later, LaunchCheck, LaunchDefaults, LaunchInfo, LaunchRequest, MonitorLink,
    Serves,
};
use futures::future::BoxFuture;
use tokio::task::JoinSet;

use crate::results::ResultsFile;
use crate::{FollowEvent, Orchestrator, RunControl, RunHandle};

/// Builds and validates a plan for the project's script (`Plan::for_script::<S>`).
pub type PlanFor = fn(&ProjectFiles, &RunOverrides) -> armada_core::Result<Plan>;

/// Launches, cancels and repeats the runs of one project on behalf of the dashboard.
pub struct ProjectControl {
    project_dir: PathBuf,
    project: String,
    plan_for: PlanFor,
    orchestrator: OnceLock<Orchestrator>,
    runs: Mutex<HashMap<String, Launched>>,
    followers: tokio::sync::Mutex<JoinSet<()>>,
    limits: Mutex<LaunchLimits>,
    /// Runs launched here that have not ended: each holds one of `limits.running_runs`.
    running: Arc<std::sync::atomic::AtomicUsize>,
}

/// What one request may make this service do: a 40-byte request must not be able to ask for
/// gigabytes of queued jobs, a thousand browsers, or a hundred runs at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaunchLimits {
    /// The most jobs one run may have (a queued job costs about 1 KB in the queue and the
    /// monitor); more is refused with 422.
    pub jobs: u64,
    /// The most agents one run may have (each may be a browser); more is refused with 422.
    pub agents: u32,
    /// The most runs launched here that may go on at once; another is refused with 429 until
    /// one ends.
    pub running_runs: u32,
}

impl Default for LaunchLimits {
    fn default() -> Self {
        Self {
            jobs: DEFAULT_MAX_JOBS,
            agents: DEFAULT_MAX_AGENTS,
            running_runs: DEFAULT_MAX_RUNNING_RUNS,
        }
    }
}

/// [`LaunchLimits::jobs`] unless the service says otherwise.
pub const DEFAULT_MAX_JOBS: u64 = 1_000_000;
/// [`LaunchLimits::agents`] unless the service says otherwise.
pub const DEFAULT_MAX_AGENTS: u32 = 64;
/// [`LaunchLimits::running_runs`] unless the service says otherwise.
pub const DEFAULT_MAX_RUNNING_RUNS: u32 = 8;

/// One of the running runs a service allows, given back when its run ends (or its launch
/// fails).
struct RunningSlot(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for RunningSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// What a launch from here used, so that it can be repeated.
#[derive(Clone)]
struct Launched {
    control: RunControl,
    request: LaunchRequest,
    plan: Arc<Plan>,
}

impl std::fmt::Debug for ProjectControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProjectControl")
            .field("project_dir", &self.project_dir)
            .finish_non_exhaustive()
    }
}

impl ProjectControl {
    /// Control over the project in `project_dir`; runs are planned with `plan_for`.
    pub fn new(project_dir: impl Into<PathBuf>, plan_for: PlanFor) -> Arc<Self> {
        let project_dir = project_dir.into();
        let project = project_name(&project_dir);
        Arc::new(Self {
            project_dir,
            project,
            plan_for,
            orchestrator: OnceLock::new(),
            runs: Mutex::default(),
            followers: tokio::sync::Mutex::new(JoinSet::new()),
            limits: Mutex::new(LaunchLimits::default()),
            running: Arc::default(),
        })
    }

    /// Sets what one launch may ask for, and how many runs may go on at once.
    pub fn set_limits(&self, limits: LaunchLimits) {
        if let Ok(mut current) = self.limits.lock() {
            *current = limits;
        }
    }

    fn limits(&self) -> LaunchLimits {
        self.limits
            .lock()
            .map_or_else(|_| LaunchLimits::default(), |limits| *limits)
    }

    /// Takes one of the running runs allowed, or says why not (429).
    fn reserve_run(&self) -> armada_monitor::Result<RunningSlot> {
        let allowed = usize::try_from(self.limits().running_runs).unwrap_or(usize::MAX);
        self.running
            .fetch_update(
                std::sync::atomic::Ordering::AcqRel,
                std::sync::atomic::Ordering::Acquire,
                |running| (running < allowed).then_some(running + 1),
            )
            .map(|_| RunningSlot(Arc::clone(&self.running)))
            .map_err(|running| {
                armada_monitor::Error::Busy(format!(
                    "{running} runs launched here are going on, the most this service allows: \
                     try again when one ends"
                ))
            })
    }

    /// The project's name, as runs are registered.
    pub fn project(&self) -> &str {
        &self.project
    }

    /// Sets the orchestrator launches go through. Its backends' monitor is the dashboard's own
    /// monitor, which is built with this control: hence a second step.
    pub fn attach(&self, orchestrator: Orchestrator) {
        let _ = self.orchestrator.set(orchestrator);
    }

    /// Cancels every run launched here and waits for them to end.
    pub async fn shutdown(&self) {
        if let Ok(runs) = self.runs.lock() {
            for launched in runs.values() {
                launched.control.cancel();
            }
        }
        let mut followers = self.followers.lock().await;
        while followers.join_next().await.is_some() {}
    }

    /// The plan a run launched here was started with.
    pub fn plan_of(&self, run_id: &str) -> Option<Arc<Plan>> {
        let runs = self.runs.lock().ok()?;
        runs.get(run_id).map(|launched| Arc::clone(&launched.plan))
    }

    fn orchestrator(&self) -> armada_monitor::Result<&Orchestrator> {
        self.orchestrator.get().ok_or_else(|| {
            armada_monitor::Error::Orchestrator("the orchestrator is still starting".into())
        })
    }

    /// Tunes the project has: `local`, `distant`, and `config/config_<name>.json` as `<name>`.
    fn tunes(&self) -> Vec<String> {
        let mut tunes = Vec::new();
        if let Ok(entries) = std::fs::read_dir(self.project_dir.join("config")) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if let Some(tune) = name
                    .strip_prefix("config_")
                    .and_then(|rest| rest.strip_suffix(".json"))
                    .filter(|tune| *tune != "template")
                {
                    tunes.push(tune.to_owned());
                }
            }
        }
        tunes.sort_by_key(|tune| (tune != "local", tune != "distant", tune.clone()));
        tunes
    }

    fn tune_file(&self, name: &str) -> armada_monitor::Result<Tune> {
        if !self.tunes().iter().any(|tune| tune == name) {
            return Err(armada_monitor::Error::Invalid(format!(
                "the project has no tune `{name}`: pick one of {}",
                self.tunes().join(", ")
            )));
        }
        Ok(match name {
            "local" => Tune::Local,
            "distant" => Tune::Distant,
            other => Tune::Path(
                self.project_dir
                    .join("config")
                    .join(format!("config_{other}.json")),
            ),
        })
    }

    /// What a relaunch of `run_id` repeats: the request that launched it here, or, for a run
    /// launched elsewhere, its tune and counts as the monitor recorded them.
    async fn earlier(&self, run_id: &str) -> armada_monitor::Result<LaunchRequest> {
        if let Some(launched) = self
            .runs
            .lock()
            .ok()
            .and_then(|runs| runs.get(run_id).cloned())
        {
            return Ok(launched.request);
        }
        let MonitorLink::Local(monitor) = &self.orchestrator()?.backends().monitor else {
            return Err(armada_monitor::Error::UnknownRun(run_id.to_owned()));
        };
        let run = monitor
            .store()
            .run(run_id, armada_core::wire::now_ms())
            .await?;
        Ok(LaunchRequest {
            tune: run.tune,
            agents: Some(run.agents),
            jobs: Some(run.jobs),
            label: RunLabel {
                name: run.name,
                tags: run.tags,
            },
            ..LaunchRequest::default()
        })
    }

    /// Plans a launch; the project's problems come back as diagnostics.
    async fn plan(&self, request: &mut LaunchRequest) -> armada_monitor::Result<Plan> {
        if let Some(run_id) = request.relaunch_of.clone() {
            let earlier = self.earlier(&run_id).await?;
            request.tune = request.tune.take().or(earlier.tune);
            request.agents = request.agents.or(earlier.agents);
            request.jobs = request.jobs.or(earlier.jobs);
            if request.label == RunLabel::default() {
                request.label = earlier.label;
            }
            request.data_agent_csv = request.data_agent_csv.take().or(earlier.data_agent_csv);
            request.data_job_csv = request.data_job_csv.take().or(earlier.data_job_csv);
        }
        let mut files = match &request.tune_values {
            Some(values) => {
                let tune = request.tune.get_or_insert_with(|| "inline".to_owned());
                // The tune file named in the request is not read: its values came inline.
                let mut files =
                    ProjectFiles::read(&self.project_dir, &Tune::Local).map_err(problems)?;
                files.tune = Some(NamedFile::new(
                    format!("tune `{tune}` (uploaded)"),
                    values.to_string(),
                ));
                files
            }
            None => {
                let tune = request
                    .tune
                    .get_or_insert_with(|| "local".to_owned())
                    .clone();
                ProjectFiles::read(&self.project_dir, &self.tune_file(&tune)?).map_err(problems)?
            }
        };
        if let Some(template) = &request.template {
            files.template = NamedFile::new("config_template.json (uploaded)", template.clone());
        }
        if let Some(overrides) = &request.template_overrides {
            merge_into_template(&mut files.template, overrides.clone())?;
        }
        if let Some(csv) = &request.data_agent_csv {
            files.agent_csv = Some(NamedFile::new("data_agent.csv (uploaded)", csv.as_bytes()));
        }
        if let Some(csv) = &request.data_job_csv {
            files.job_csv = Some(NamedFile::new("data_job.csv (uploaded)", csv.as_bytes()));
        }
        let overrides = RunOverrides {
            agents: request.agents,
            jobs: request.jobs,
            ..RunOverrides::default()
        };
        let plan = (self.plan_for)(&files, &overrides).map_err(problems)?;
        within_limits(&plan, self.limits())?;
        Ok(plan)
    }

    /// Publishes `plan` and follows it to its end in a task this control owns, writing its
    /// results where the CLI would.
    async fn start(
        &self,
        plan: &Plan,
        request: LaunchRequest,
        relaunch_of: Option<String>,
    ) -> armada_monitor::Result<String> {
        let orchestrator = self
            .orchestrator()?
            .clone()
            .with_project(self.project.clone(), request.tune.clone())
            .with_relaunch_of(relaunch_of)
            .with_label(request.label.clone());
        let run_id = match &request.run_id {
            Some(id) => RunId::parse(id).map_err(problems)?,
            None => RunId::new(),
        };
        let run_dir = run_dir(&self.project_dir, &run_id);
        let results_path = run_dir.join("results.jsonl");
        if results_path.exists() {
            // Another run had this id: its results are not overwritten.
            return Err(armada_monitor::Error::Conflict(format!(
                "run {run_id} exists already: a new run needs a new id"
            )));
        }
        let slot = self.reserve_run()?;
        let mut results = ResultsFile::create(&results_path).map_err(orchestration)?;
        let handle = orchestrator
            .with_evidence_dir(run_dir.join("evidence"))
            .launch_as(plan, run_id.clone())
            .await
            .map_err(orchestration)?;
        let control = handle.control();
        if let Ok(mut runs) = self.runs.lock() {
            let launched = Launched {
                control,
                request,
                plan: Arc::new(plan.clone()),
            };
            runs.insert(run_id.to_string(), launched);
        }
        self.followers.lock().await.spawn(async move {
            let _slot = slot;
            let report = handle
                .follow(|event: FollowEvent<'_>| {
                    let written = match event {
                        FollowEvent::Result(result) => results.write(result),
                        FollowEvent::Progress(_) => results.flush(),
                    };
                    if let Err(error) = written {
                        tracing::warn!(%error, "cannot write a run's results");
                    }
                })
                .await;
            if let Err(error) = results.finish() {
                tracing::warn!(%error, "cannot write a run's results");
            }
            match report {
                Ok(report) => {
                    tracing::info!(run = %report.run_id, status = ?report.status, "run ended")
                }
                Err(error) => tracing::error!(%error, "a run launched from the dashboard failed"),
            }
        });
        Ok(run_id.to_string())
    }
}

/// Refuses a plan with more jobs or agents than the service launches in one run (422).
fn within_limits(plan: &Plan, limits: LaunchLimits) -> armada_monitor::Result<()> {
    let mut diagnostics = armada_core::Diagnostics::default();
    for (asked, allowed, what, field) in [
        (plan.jobs(), limits.jobs, "jobs", "run_message.jobs"),
        (
            u64::from(plan.agents()),
            u64::from(limits.agents),
            "agents",
            "run_message.agents",
        ),
    ] {
        if asked > allowed {
            diagnostics.push(
                armada_core::Diagnostic::file(
                    "the launch request",
                    format!(
                        "{asked} {what} is more than this service launches in one run \
                         ({allowed}): ask for fewer, or have the service allow more"
                    ),
                )
                .at_field(field),
            );
        }
    }
    if diagnostics.is_empty() {
        Ok(())
    } else {
        Err(armada_monitor::Error::Project(diagnostics))
    }
}

/// The project's name as the monitor shows it: its folder's name.
pub fn project_name(project: &Path) -> String {
    std::fs::canonicalize(project)
        .ok()
        .and_then(|dir| Some(dir.file_name()?.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "armada".to_owned())
}

/// Deep-merges `overrides` into the template; a template that is not a JSON object is left to
/// the planner, which reports it with its position.
fn merge_into_template(
    template: &mut NamedFile,
    overrides: serde_json::Value,
) -> armada_monitor::Result<()> {
    if !overrides.is_object() {
        return Err(armada_monitor::Error::Invalid(
            "template overrides must be a JSON object, such as {\"run_message\": {\"agents\": 2}}"
                .into(),
        ));
    }
    if let Ok(mut merged) = serde_json::from_slice::<serde_json::Value>(&template.contents) {
        armada_core::project::deep_merge(&mut merged, overrides);
        template.contents = merged.to_string().into_bytes();
        template.name = format!("{} with overrides", template.name);
    }
    Ok(())
}

/// The folder of `run_id`'s results and evidence in the project, wherever it was launched.
pub fn run_dir(project: &Path, run_id: &RunId) -> PathBuf {
    project.join(".armada").join("runs").join(run_id.as_str())
}

fn problems(error: armada_core::Error) -> armada_monitor::Error {
    match error {
        armada_core::Error::Invalid(diagnostics) => armada_monitor::Error::Project(diagnostics),
        error @ armada_core::Error::RunExists(_) => {
            armada_monitor::Error::Conflict(error.to_string())
        }
        other => armada_monitor::Error::Orchestrator(other.into()),
    }
}

fn orchestration(error: crate::Error) -> armada_monitor::Error {
    match error {
        crate::Error::Core(error) => problems(error),
        // The monitor's own refusals (a run id that exists) keep their meaning.
        crate::Error::Monitor(error) => error,
        other => armada_monitor::Error::Orchestrator(other.into()),
    }
}

impl ProjectControl {
    /// Cancels a run that this service's config store does not hold (another store, or one
    /// that lost it): when the monitor has heard from none of its processes past the stall
    /// limit, nothing of it is left to stop, and it ends in the monitor as canceled.
    async fn end_unreachable(&self, run_id: &str) -> armada_monitor::Result<()> {
        let unreachable = || {
            armada_monitor::Error::Conflict(format!(
                "run {run_id} is not in this service's config store and is still heard from: \
                 cancel it with the store it runs on"
            ))
        };
        let MonitorLink::Local(monitor) = &self.orchestrator()?.backends().monitor else {
            return Err(unreachable());
        };
        let run = monitor
            .store()
            .run(run_id, armada_core::wire::now_ms())
            .await?;
        if run.status != RunState::Stalled {
            return Err(unreachable());
        }
        let canceled = Finish {
            status: RunState::Canceled,
            jobs: Vec::new(),
        };
        monitor.finish_run(run_id, &canceled).await.map(drop)
    }
}

impl ProjectControl {
    /// Gives the monitor the end of a run that ended in the config store, if it shows it open.
    async fn record_end(&self, run_id: &str) {
        let Ok(orchestrator) = self.orchestrator() else {
            return;
        };
        let backends = orchestrator.backends();
        let (Ok(run), MonitorLink::Local(monitor)) = (RunId::parse(run_id), &backends.monitor)
        else {
            return;
        };
        let Ok(Some(finished)) = backends.store.finished(&run).await else {
            return;
        };
        let status = match finished.status {
            armada_core::backend::RunStatus::Completed => RunState::Completed,
            armada_core::backend::RunStatus::Canceled => RunState::Canceled,
            _ => RunState::Stopped,
        };
        let end = Finish {
            status,
            jobs: Vec::new(),
        };
        if let Err(error) = monitor.finish_run(run_id, &end).await {
            tracing::warn!(run = run_id, %error, "cannot record the run's end in the monitor");
        }
    }
}

impl Control for ProjectControl {
    fn launch_info(&self) -> BoxFuture<'_, armada_monitor::Result<LaunchInfo>> {
        Box::pin(async move {
            let mut request = LaunchRequest::default();
            let (agents, jobs) = match self.plan(&mut request).await {
                Ok(plan) => (plan.agents(), plan.jobs()),
                Err(_) => (1, 1),
            };
            Ok(LaunchInfo {
                project: self.project.clone(),
                tunes: self.tunes(),
                defaults: LaunchDefaults {
                    agents,
                    jobs,
                    tune: "local".to_owned(),
                },
            })
        })
    }

    fn launch(&self, mut request: LaunchRequest) -> BoxFuture<'_, armada_monitor::Result<String>> {
        Box::pin(async move {
            let plan = self.plan(&mut request).await?;
            let relaunch_of = request.relaunch_of.clone();
            self.start(&plan, request, relaunch_of).await
        })
    }

    fn check(
        &self,
        mut request: LaunchRequest,
    ) -> BoxFuture<'_, armada_monitor::Result<LaunchCheck>> {
        Box::pin(async move {
            let plan = self.plan(&mut request).await?;
            Ok(LaunchCheck {
                agents: plan.agents(),
                jobs: plan.jobs(),
                skipped_agent_rows: plan.skipped_agent_rows(),
                skipped_job_rows: plan.skipped_job_rows(),
            })
        })
    }

    fn cancel<'a>(&'a self, run_id: &'a str) -> BoxFuture<'a, armada_monitor::Result<()>> {
        Box::pin(async move {
            // The monitor knows every run of this service, ended or not.
            if let MonitorLink::Local(monitor) = &self.orchestrator()?.backends().monitor {
                let run = monitor
                    .store()
                    .run(run_id, armada_core::wire::now_ms())
                    .await?;
                if !run.status.is_open() {
                    return Err(armada_monitor::Error::Conflict(format!(
                        "run {run_id} already ended: {}",
                        run.status.as_str()
                    )));
                }
            }
            let launched = self
                .runs
                .lock()
                .ok()
                .and_then(|runs| runs.get(run_id).cloned());
            if let Some(launched) = launched {
                launched.control.cancel();
                return Ok(());
            }
            // Launched elsewhere (its launcher may be gone): through the store's cancel flag,
            // followed here to its end so that the monitor records it.
            let orchestrator = self.orchestrator()?;
            let run = RunId::parse(run_id).map_err(problems)?;
            let handle = match RunHandle::cancel_stored(
                orchestrator.backends().clone(),
                run,
                orchestrator.grace(),
            )
            .await
            {
                Ok(handle) => handle,
                Err(crate::Error::Core(armada_core::Error::RunNotFound(_))) => {
                    return self.end_unreachable(run_id).await;
                }
                Err(error @ crate::Error::RunEnded { .. }) => {
                    // The monitor may have missed the end (its process died in between): it
                    // gets it now, and the cancel is refused with how the run ended.
                    self.record_end(run_id).await;
                    return Err(armada_monitor::Error::Conflict(error.to_string()));
                }
                Err(other) => return Err(orchestration(other)),
            };
            self.followers.lock().await.spawn(async move {
                if let Err(error) = handle.follow(|_| {}).await {
                    tracing::warn!(%error, "cannot end the canceled run");
                }
            });
            Ok(())
        })
    }

    fn retry<'a>(
        &'a self,
        run_id: &'a str,
        jobs: Vec<u64>,
    ) -> BoxFuture<'a, armada_monitor::Result<String>> {
        Box::pin(async move {
            let mut request = LaunchRequest {
                relaunch_of: Some(run_id.to_owned()),
                ..LaunchRequest::default()
            };
            let plan = self.plan(&mut request).await?;
            let selected = plan.select_jobs(&jobs);
            request.jobs = Some(selected.jobs());
            self.start(&selected, request, Some(run_id.to_owned()))
                .await
        })
    }
}

/// The dashboard's control during `orchestrate launch`: it can cancel the run being launched;
/// launching others needs `orchestrate serve`.
#[derive(Debug, Default)]
pub struct LaunchControl {
    run: OnceLock<(String, RunControl)>,
    later: OnceLock<Later>,
}

impl LaunchControl {
    /// The run this launch follows.
    pub fn attach(&self, run_id: &str, control: RunControl) {
        let _ = self.run.set((run_id.to_owned(), control));
    }

    /// Where the run can be seen once this launch has ended, for its dashboard to say.
    pub fn kept_at(&self, later: Later) {
        let _ = self.later.set(later);
    }
}

impl Control for LaunchControl {
    fn about(&self) -> About {
        About {
            serves: Serves::Launch,
            run_id: self.run.get().map(|(run_id, _)| run_id.clone()),
            later: self.later.get().cloned(),
        }
    }

    fn launch_info(&self) -> BoxFuture<'_, armada_monitor::Result<LaunchInfo>> {
        Box::pin(async { Err(armada_monitor::Error::NoOrchestrator("launching a run")) })
    }

    fn launch(&self, _: LaunchRequest) -> BoxFuture<'_, armada_monitor::Result<String>> {
        Box::pin(async { Err(armada_monitor::Error::NoOrchestrator("launching a run")) })
    }

    fn cancel<'a>(&'a self, run_id: &'a str) -> BoxFuture<'a, armada_monitor::Result<()>> {
        Box::pin(async move {
            match self.run.get() {
                Some((launched, control)) if launched == run_id => {
                    control.cancel();
                    Ok(())
                }
                _ => Err(armada_monitor::Error::Conflict(format!(
                    "run {run_id} is not the one this launch follows: cancel it where it was \
                     launched, or through its backends when they are shared"
                ))),
            }
        })
    }

    fn retry<'a>(
        &'a self,
        _: &'a str,
        _: Vec<u64>,
    ) -> BoxFuture<'a, armada_monitor::Result<String>> {
        Box::pin(async { Err(armada_monitor::Error::NoOrchestrator("running jobs again")) })
    }
}
