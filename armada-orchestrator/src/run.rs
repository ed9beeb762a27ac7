//! A run's lifecycle: publish, launch, follow to the end, clean up.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use armada_core::backend::{DeadLetter, RunProgress, RunRecord, RunStatus};
use armada_core::wire::{
    AgentConfigRecord, HEARTBEAT_INTERVAL, JobLimits, JobMessage, JobResult, JobStatus,
    WIRE_VERSION, now_ms,
};
use armada_core::{
    AgentExit, AgentIndex, AgentRunner, AgentSpec, ConfigStore, JobId, JobQueue, Plan, RunId,
};
use armada_monitor::model::{Finish, FinishedJob, JobState, NewJob, NewRun, RunState};
use armada_monitor::{ClientOptions, ClientStats, MonitorClient, MonitorLink};
use futures::Stream;
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::Result;

/// How often the run's counters are read while following it.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(250);
/// How long a canceled run gives its agents to finish their current job, by default.
const DEFAULT_GRACE: Duration = Duration::from_secs(10);

/// The run's backends, chosen by URL.
#[derive(Debug, Clone)]
pub struct Backends {
    /// Agent configs and run state.
    pub store: ConfigStore,
    /// The jobs.
    pub queue: JobQueue,
    /// Where the run is registered and its events go.
    pub monitor: MonitorLink,
}

impl Backends {
    /// Everything in this process: no service to install.
    pub async fn embedded() -> Result<Self> {
        Self::connect("memory://", "memory://", "memory://").await
    }

    /// Connects to the backends at these URLs; `monitor` is `memory://`, a store URL
    /// (`sqlite:PATH`, `postgres://…`) or a monitor service (`http://…`, with `monitor_token`).
    pub async fn connect(store: &str, queue: &str, monitor: &str) -> Result<Self> {
        Ok(Self {
            store: ConfigStore::connect(store).await?,
            queue: JobQueue::connect(queue).await?,
            monitor: MonitorLink::connect(monitor, None).await?,
        })
    }
}

/// Where agents run.
#[derive(Clone)]
pub enum Launcher {
    /// As tasks in this process (the default with embedded backends).
    InProcess(Arc<dyn AgentRunner>),
    /// As local OS processes (the default with shared backends).
    Processes(ProcessLauncher),
    /// Started by someone else, on any host that reaches the backends: one
    /// `orchestrate agent --run-id RUN --index I` per index, with the backends' URLs in the
    /// environment. The run waits for them, and shows `stalled` in the monitor while none is
    /// heard from.
    External,
    /// As the pods of one Kubernetes Indexed Job per run (feature `kubernetes`).
    #[cfg(feature = "kubernetes")]
    Kubernetes(crate::kubernetes::KubernetesLauncher),
}

impl fmt::Debug for Launcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InProcess(_) => f.write_str("Launcher::InProcess"),
            Self::External => f.write_str("Launcher::External"),
            Self::Processes(launcher) => f
                .debug_tuple("Launcher::Processes")
                .field(&launcher.program)
                .finish(),
            #[cfg(feature = "kubernetes")]
            Self::Kubernetes(launcher) => f
                .debug_tuple("Launcher::Kubernetes")
                .field(launcher)
                .finish(),
        }
    }
}

/// Starts each agent as `PROGRAM agent --run-id R --index I`, with the backend URLs in its
/// environment (`ARMADA_QUEUE_URL`, `ARMADA_STORE_URL`, `ARMADA_MONITOR_URL`) rather than on its
/// command line, where every user of the machine could read their passwords.
///
/// An agent process that dies (a job that aborts it, the OOM killer) is started again, up to
/// `restarts` times; its job goes back to the queue and the lost attempt counts, so a job that
/// kills every agent it meets fails after its attempts instead of emptying the run.
#[derive(Clone)]
pub struct ProcessLauncher {
    /// The project binary (usually `std::env::current_exe()`).
    pub program: PathBuf,
    /// The queue URL agents connect to.
    pub queue_url: String,
    /// The config store URL agents connect to.
    pub store_url: String,
    /// The monitor agents report to (`ARMADA_MONITOR_URL`); none keeps events in each agent.
    pub monitor_url: Option<String>,
    /// The monitor's bearer token (`ARMADA_MONITOR_TOKEN`).
    pub monitor_token: Option<String>,
    /// How many times each agent process that dies is started again.
    pub restarts: u32,
    /// When set, agents are detached from the launching process: each leads its own process
    /// group (the terminal's Ctrl-C and hang-up do not reach it), is not killed when its
    /// launcher goes, and writes its output to `agent-<index>.log` in this folder.
    pub detached_logs: Option<PathBuf>,
    /// How long agents ride out an outage of Redis or RabbitMQ (`ARMADA_OUTAGE_SECS`); none
    /// leaves their default.
    pub outage_secs: Option<f64>,
}

impl ProcessLauncher {
    /// How many times an agent process is started again by default.
    pub const DEFAULT_RESTARTS: u32 = 3;

    fn command(
        &self,
        run_id: &RunId,
        index: AgentIndex,
        evidence_dir: Option<&std::path::Path>,
    ) -> std::io::Result<tokio::process::Command> {
        let mut command = tokio::process::Command::new(&self.program);
        if let Some(folder) = evidence_dir {
            command.env("ARMADA_EVIDENCE_DIR", folder);
        }
        if let Some(url) = &self.monitor_url {
            command.env("ARMADA_MONITOR_URL", url);
        }
        if let Some(token) = &self.monitor_token {
            command.env("ARMADA_MONITOR_TOKEN", token);
        }
        if let Some(seconds) = self.outage_secs {
            command.env("ARMADA_OUTAGE_SECS", seconds.to_string());
        }
        command
            .arg("agent")
            .arg("--run-id")
            .arg(run_id.as_str())
            .arg("--index")
            .arg(index.to_string())
            .env("ARMADA_QUEUE_URL", &self.queue_url)
            .env("ARMADA_STORE_URL", &self.store_url)
            .stdin(std::process::Stdio::null());
        match &self.detached_logs {
            Some(folder) => {
                std::fs::create_dir_all(folder)?;
                let log = std::fs::File::create(folder.join(format!("agent-{index}.log")))?;
                command
                    .stdout(log.try_clone()?)
                    .stderr(log)
                    .process_group(0)
                    .kill_on_drop(false);
            }
            // The task owns the child: aborting the task kills the agent.
            None => {
                command.kill_on_drop(true);
            }
        }
        Ok(command)
    }

    fn spawn(
        &self,
        run_id: &RunId,
        index: AgentIndex,
        evidence_dir: Option<&std::path::Path>,
    ) -> std::io::Result<impl Future<Output = armada_core::Result<AgentExit>> + Send + 'static>
    {
        let mut command = self.command(run_id, index, evidence_dir)?;
        let mut child = command.spawn()?;
        let restarts = self.restarts;
        let run = run_id.clone();
        Ok(async move {
            let mut restarted = 0;
            loop {
                let error = match child.wait().await {
                    Ok(status) if status.success() => {
                        return Ok(AgentExit::Finished { attempts: 0 });
                    }
                    Ok(status) => format!("agent {index} exited abnormally ({status})"),
                    Err(error) => format!("agent {index} could not be waited for: {error}"),
                };
                if restarted == restarts {
                    let error = match restarts {
                        0 => error,
                        _ => format!("{error}, after {restarts} restarts"),
                    };
                    return Ok(AgentExit::Died { error });
                }
                restarted += 1;
                tracing::warn!(run = %run, agent = index, "{error}: starting it again ({restarted} of {restarts})");
                child = match command.spawn() {
                    Ok(child) => child,
                    Err(spawn) => {
                        return Ok(AgentExit::Died {
                            error: format!("{error}; starting it again failed: {spawn}"),
                        });
                    }
                };
            }
        })
    }
}

/// Publishes plans and launches their agents. Holds no global state: two orchestrators in one
/// process do not interfere.
#[derive(Debug, Clone)]
pub struct Orchestrator {
    backends: Backends,
    launcher: Launcher,
    grace: Duration,
    evidence_dir: Option<PathBuf>,
    project: String,
    tune: Option<String>,
    relaunch_of: Option<String>,
}

impl Orchestrator {
    /// An orchestrator over these backends and launcher.
    pub fn new(backends: Backends, launcher: Launcher) -> Self {
        Self {
            backends,
            launcher,
            grace: DEFAULT_GRACE,
            evidence_dir: None,
            project: "armada".to_owned(),
            tune: None,
            relaunch_of: None,
        }
    }

    /// How runs are named in the monitor: the project and the tune they were planned with.
    pub fn with_project(mut self, project: impl Into<String>, tune: Option<String>) -> Self {
        self.project = project.into();
        self.tune = tune;
        self
    }

    /// Records in the monitor that the next runs repeat `run_id`.
    pub fn with_relaunch_of(mut self, run_id: Option<String>) -> Self {
        self.relaunch_of = run_id;
        self
    }

    /// The backends.
    pub fn backends(&self) -> &Backends {
        &self.backends
    }

    /// How long a canceled run gives its agents to finish their current job.
    pub fn grace(&self) -> Duration {
        self.grace
    }

    /// Where agents save the evidence of failed attempts (screenshots, HTML, console logs);
    /// none is kept by default.
    pub fn with_evidence_dir(mut self, folder: impl Into<PathBuf>) -> Self {
        self.evidence_dir = Some(folder.into());
        self
    }

    /// How long a canceled run waits for agents to finish their current job before abandoning
    /// it (default 10 s).
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Publishes the plan as a new run and launches its agents.
    pub async fn launch(&self, plan: &Plan) -> Result<RunHandle> {
        self.launch_as(plan, RunId::new()).await
    }

    /// Like [`Orchestrator::launch`], with a run id chosen by the caller. Nothing is left
    /// published when this fails.
    pub async fn launch_as(&self, plan: &Plan, run_id: RunId) -> Result<RunHandle> {
        let backends = &self.backends;
        let record = RunRecord {
            v: WIRE_VERSION,
            run_id: run_id.clone(),
            agents: plan.agents(),
            jobs: plan.jobs(),
            created_ms: now_ms(),
        };
        backends.store.create_run(record).await?;
        let job_ids: Vec<JobId> = (0..plan.jobs())
            .map(|index| JobId::of(&run_id, index))
            .collect();
        let published = match self.register(plan, &run_id, &job_ids).await {
            Ok(()) => self.publish(plan, &run_id, &job_ids).await,
            Err(error) => Err(error),
        };
        match published {
            Ok(()) => {}
            Err(error) => {
                // Best effort: the original error is what the user needs to see.
                let _ = backends.queue.delete(&run_id).await;
                let _ = backends.store.remove_run(&run_id).await;
                return Err(error);
            }
        };
        let monitor = MonitorClient::start(
            run_id.clone(),
            backends.monitor.sink(),
            ClientOptions::default(),
        );
        let control = RunControl::default();
        let mut agents = JoinSet::new();
        let mut agent_tasks = HashMap::new();
        #[cfg(feature = "kubernetes")]
        let mut pods = match &self.launcher {
            Launcher::Kubernetes(launcher) => {
                match launcher
                    .start(&run_id, plan.agents(), monitor.sender())
                    .await
                {
                    Ok(pods) => pods,
                    Err(error) => {
                        monitor.close().await;
                        let _ = backends.queue.delete(&run_id).await;
                        let _ = backends.store.remove_run(&run_id).await;
                        return Err(error);
                    }
                }
            }
            _ => Vec::new(),
        }
        .into_iter();
        for index in 0..plan.agents() {
            let task = match &self.launcher {
                Launcher::InProcess(runner) => agents.spawn(runner.run_agent(AgentSpec {
                    run_id: run_id.clone(),
                    index,
                    store: backends.store.clone(),
                    queue: backends.queue.clone(),
                    events: monitor.sender(),
                    shutdown: control.cancel.child_token(),
                    evidence_dir: self.evidence_dir.clone(),
                })),
                Launcher::Processes(launcher) => {
                    match launcher.spawn(&run_id, index, self.evidence_dir.as_deref()) {
                        Ok(agent) => agents.spawn(agent),
                        Err(source) => {
                            agents.shutdown().await;
                            monitor.close().await;
                            let _ = backends.queue.delete(&run_id).await;
                            let _ = backends.store.remove_run(&run_id).await;
                            return Err(crate::Error::Spawn {
                                program: launcher.program.display().to_string(),
                                source,
                            });
                        }
                    }
                }
                #[cfg(feature = "kubernetes")]
                Launcher::Kubernetes(_) => match pods.next() {
                    Some(pod) => agents.spawn(pod),
                    None => break,
                },
                Launcher::External => break,
            };
            agent_tasks.insert(task.id(), index);
        }
        tracing::info!(run = %run_id, agents = plan.agents(), jobs = plan.jobs(), "run launched");
        Ok(RunHandle {
            run_id,
            backends: backends.clone(),
            job_ids,
            agents,
            agent_tasks,
            owns_agents: !matches!(self.launcher, Launcher::External),
            monitor,
            control,
            started: Instant::now(),
            grace: self.grace,
        })
    }

    /// Registers the run with the monitor, every job queued, before any job can report.
    async fn register(&self, plan: &Plan, run_id: &RunId, job_ids: &[JobId]) -> Result<()> {
        let run = NewRun {
            id: run_id.to_string(),
            project: self.project.clone(),
            agents: plan.agents(),
            jobs: job_ids
                .iter()
                .zip(0..)
                .map(|(id, index)| NewJob {
                    index,
                    id: id.to_string(),
                })
                .collect(),
            tune: self.tune.clone(),
            relaunch_of: self.relaunch_of.clone(),
            settings: serde_json::to_value(plan.settings()).unwrap_or_default(),
        };
        Ok(self.backends.monitor.register_run(&run).await?)
    }

    async fn publish(&self, plan: &Plan, run_id: &RunId, job_ids: &[JobId]) -> Result<()> {
        let limits = JobLimits::from_settings(plan.settings(), plan.jobs());
        let configs = (0..plan.agents())
            .map(|index| AgentConfigRecord {
                v: WIRE_VERSION,
                run_id: run_id.clone(),
                index,
                agents: plan.agents(),
                limits,
                config: plan.agent_message(index).clone(),
            })
            .collect();
        self.backends
            .store
            .put_agent_configs(run_id, configs)
            .await?;
        // Indexes, not borrowed ids, go through the closure: its future must be `Send` for
        // any lifetime, which a closure taking `&JobId` cannot promise.
        let messages = (0..plan.jobs()).map(move |index| JobMessage {
            v: WIRE_VERSION,
            run_id: run_id.clone(),
            job_id: job_ids[index as usize],
            index,
            attempt: 1,
            identity_retries: 0,
            payload: Arc::clone(plan.job_payload(index)),
        });
        self.backends.queue.publish(run_id, messages).await?;
        Ok(())
    }
}

/// Cancels a run from anywhere (a signal handler, an HTTP request).
#[derive(Debug, Clone, Default)]
pub struct RunControl {
    cancel: CancellationToken,
    abort: CancellationToken,
}

impl RunControl {
    /// Cancels the run: no new job starts; agents finish their current job within the grace
    /// period, then are stopped. Jobs not finished are recorded as canceled.
    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    /// Cancels the run and stops its agents now, without a grace period.
    pub fn abort(&self) {
        self.cancel.cancel();
        self.abort.cancel();
    }

    /// Whether the run was canceled.
    pub fn is_canceled(&self) -> bool {
        self.cancel.is_cancelled()
    }
}

/// What [`RunHandle::follow`] reports while a run goes on.
#[derive(Debug)]
pub enum FollowEvent<'a> {
    /// A job reached its terminal state; each job is reported exactly once.
    Result(&'a JobResult),
    /// The run's counters, a few times a second.
    Progress(&'a RunProgress),
}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// The run.
    pub run_id: RunId,
    /// Completed, canceled, or failed (no agent left).
    pub status: RunStatus,
    /// Final counters.
    pub progress: RunProgress,
    /// From launch to the end.
    pub elapsed: Duration,
    /// Agents that failed to start or stopped abnormally, with why.
    pub agent_problems: Vec<String>,
    /// Messages that left the queue for good: jobs that failed, and messages that could not be
    /// decoded, with their reasons.
    pub dead_letters: Vec<DeadLetter>,
    /// What the monitoring client delivered.
    pub events: ClientStats,
}

/// A launched run. Owns its agents: dropping the handle aborts them.
#[derive(Debug)]
pub struct RunHandle {
    run_id: RunId,
    backends: Backends,
    job_ids: Vec<JobId>,
    agents: JoinSet<armada_core::Result<AgentExit>>,
    agent_tasks: HashMap<tokio::task::Id, AgentIndex>,
    /// Whether this handle started the run's agents and sees them end (not when it attached
    /// to the run, or its agents are started by someone else).
    owns_agents: bool,
    monitor: MonitorClient,
    control: RunControl,
    started: Instant,
    grace: Duration,
}

enum End {
    Completed,
    Canceled,
    NoAgentLeft,
}

impl RunHandle {
    /// Follows a run held in these backends that another process launched (or is gone): its
    /// results are read from the store from the first one, and whoever sees its end first ends
    /// it (see [`RunHandle::follow`]). Its agents are not this handle's: canceling it cancels
    /// the run in the store, where they see it.
    pub async fn attach(backends: Backends, run_id: RunId) -> Result<Self> {
        let record = backends.store.run_record(&run_id).await?;
        let monitor = MonitorClient::start(
            run_id.clone(),
            backends.monitor.sink(),
            ClientOptions::default(),
        );
        Ok(Self {
            job_ids: (0..record.jobs)
                .map(|index| JobId::of(&run_id, index))
                .collect(),
            run_id,
            backends,
            agents: JoinSet::new(),
            agent_tasks: HashMap::new(),
            owns_agents: false,
            monitor,
            control: RunControl::default(),
            started: Instant::now(),
            // A run canceled elsewhere is ended here no sooner than its canceler would: jobs
            // still running get to record their results.
            grace: DEFAULT_GRACE,
        })
    }

    /// Cancels a run held in these backends, whoever launched it and whether its launcher is
    /// alive or not: flags it canceled in the store (agents start no new job) and deletes its
    /// queue. Following the returned handle ends the run after `grace`: jobs that did not
    /// finish are recorded as canceled, and the store and the monitor get its final state. A
    /// run that ended is refused with how it ended.
    pub async fn cancel_stored(backends: Backends, run_id: RunId, grace: Duration) -> Result<Self> {
        let status = backends.store.progress(&run_id).await?.status;
        if status != RunStatus::Running {
            return Err(crate::Error::RunEnded {
                run: run_id,
                status: status.as_str(),
            });
        }
        backends
            .store
            .set_status(&run_id, RunStatus::Canceled)
            .await?;
        backends.queue.delete(&run_id).await?;
        let mut handle = Self::attach(backends, run_id).await?;
        handle.grace = grace;
        Ok(handle)
    }

    /// The run's id.
    pub fn run_id(&self) -> &RunId {
        &self.run_id
    }

    /// Jobs in the run.
    pub fn jobs(&self) -> u64 {
        self.job_ids.len() as u64
    }

    /// A handle to cancel the run.
    pub fn control(&self) -> RunControl {
        self.control.clone()
    }

    /// Lets the run go on without this process: stops watching its agents and returns. Only
    /// agents that do not depend on this process keep running (detached processes, pods); the
    /// agent that records the last result ends the run, and [`RunHandle::attach`] follows it.
    pub async fn detach(self) {
        self.monitor.close().await;
        // Dropping the set stops the tasks waiting on the agents, not detached agents.
        drop(self.agents);
    }

    /// Follows the run to its end, reporting every job's result exactly once, then stops the
    /// agents, deletes the run's queues and leaves its finished record in the store (removed
    /// at once from an in-process store, which no other process can read).
    pub async fn follow(self, mut on_event: impl FnMut(FollowEvent<'_>)) -> Result<RunReport> {
        let Self {
            run_id,
            backends,
            job_ids,
            mut agents,
            agent_tasks,
            owns_agents,
            monitor,
            control,
            started,
            grace,
        } = self;
        let store = &backends.store;
        let jobs = job_ids.len() as u64;
        let mut tally = Tally {
            reported: vec![false; job_ids.len()],
            terminal: 0,
        };
        let mut cursor = 0u64;
        let mut agent_problems = Vec::new();
        let mut grace_deadline: Option<tokio::time::Instant> = None;
        let mut next_progress = Instant::now() + PROGRESS_INTERVAL;
        let heartbeats = monitor.sender();
        let mut next_heartbeat = Instant::now();

        let end = loop {
            if tally.terminal >= jobs {
                break End::Completed;
            }
            if control.abort.is_cancelled() {
                break End::Canceled;
            }
            if owns_agents && agents.is_empty() {
                // Agents stop once every job is recorded, possibly before this loop has read
                // the last results: read them before concluding that no agent was left.
                let results = store.results_after(&run_id, cursor, Duration::ZERO).await?;
                cursor += results.len() as u64;
                for result in &results {
                    tally.report(result, &mut on_event);
                }
                if tally.terminal >= jobs {
                    break End::Completed;
                }
                // Agents also stop when the run was canceled from elsewhere; ask the store.
                let canceled = control.is_canceled()
                    || store.progress(&run_id).await?.status == RunStatus::Canceled;
                break if canceled {
                    End::Canceled
                } else {
                    End::NoAgentLeft
                };
            }
            tokio::select! {
                () = control.cancel.cancelled(), if grace_deadline.is_none() => {
                    tracing::warn!(run = %run_id, "canceling the run");
                    store.set_status(&run_id, RunStatus::Canceled).await?;
                    backends.queue.delete(&run_id).await?;
                    grace_deadline = Some(tokio::time::Instant::now() + grace);
                }
                () = control.abort.cancelled() => {}
                () = sleep_until(grace_deadline), if grace_deadline.is_some() => break End::Canceled,
                Some(joined) = agents.join_next_with_id() => {
                    agent_problems.extend(agent_problem(joined, &agent_tasks));
                }
                results = store.results_after(&run_id, cursor, PROGRESS_INTERVAL) => {
                    let results = results?;
                    cursor += results.len() as u64;
                    for result in &results {
                        tally.report(result, &mut on_event);
                    }
                }
            }
            if Instant::now() >= next_heartbeat {
                // The monitor tells a run that someone follows from one nobody does.
                next_heartbeat = Instant::now() + HEARTBEAT_INTERVAL;
                heartbeats.follower_heartbeat();
            }
            if Instant::now() >= next_progress {
                next_progress = Instant::now() + PROGRESS_INTERVAL;
                let progress = store.progress(&run_id).await?;
                if progress.status == RunStatus::Canceled && !control.is_canceled() {
                    // Canceled from elsewhere (`cancel RUN_ID`, another service).
                    control.cancel();
                }
                on_event(FollowEvent::Progress(&progress));
                if !owns_agents && progress.status == RunStatus::Failed {
                    // Its launcher saw no agent left; nothing will record the rest.
                    break End::NoAgentLeft;
                }
            }
        };

        let status = match end {
            End::Completed => RunStatus::Completed,
            End::Canceled => RunStatus::Canceled,
            End::NoAgentLeft => RunStatus::Failed,
        };
        // Deleting the queue ends every agent's consumer: they stop their contexts and exit.
        // The agent that recorded a completed run's last result may have ended it already;
        // then its record stands.
        let finished = armada_core::backend::finish_run(store, &backends.queue, &run_id, status)
            .await?
            .finished;
        let status = finished.status;
        let wait = if control.abort.is_cancelled() {
            Duration::ZERO
        } else {
            grace
        };
        let stopped = tokio::time::timeout(wait, async {
            while let Some(joined) = agents.join_next_with_id().await {
                agent_problems.extend(agent_problem(joined, &agent_tasks));
            }
        })
        .await;
        if stopped.is_err() {
            tracing::warn!(run = %run_id, agents = agents.len(), "stopping agents that did not finish in time");
            agents.shutdown().await;
        }
        for result in store.results_after(&run_id, cursor, Duration::ZERO).await? {
            tally.report(&result, &mut on_event);
        }
        let (missing_status, missing_error) = match status {
            RunStatus::Canceled => (
                JobStatus::Canceled,
                "the run was canceled before this job finished".to_owned(),
            ),
            _ => (
                JobStatus::Abandoned,
                format!(
                    "no agent was left to run this job ({})",
                    agent_problems.join("; ")
                ),
            ),
        };
        let missing: Vec<u64> = (0..jobs)
            .filter(|&index| !tally.reported[index as usize])
            .collect();
        for &index in &missing {
            let result = JobResult {
                v: WIRE_VERSION,
                index,
                id: job_ids[index as usize],
                status: missing_status,
                attempts: 0,
                agent: None,
                duration_ms: 0.0,
                output: None,
                error: Some(missing_error.clone()),
                evidence: None,
            };
            store.record_result(&run_id, result.clone()).await?;
            tally.report(&result, &mut on_event);
        }
        let progress = store.progress(&run_id).await?;
        on_event(FollowEvent::Progress(&progress));
        let events = monitor.close().await;
        let finish = Finish {
            status: match status {
                RunStatus::Completed => RunState::Completed,
                RunStatus::Canceled => RunState::Canceled,
                _ => RunState::Stopped,
            },
            jobs: missing
                .iter()
                .map(|&index| FinishedJob {
                    index,
                    status: match missing_status {
                        JobStatus::Canceled => JobState::Canceled,
                        _ => JobState::Abandoned,
                    },
                })
                .collect(),
        };
        if let Err(error) = backends.monitor.finish_run(run_id.as_str(), &finish).await {
            // The run itself is over and its results are written; only the dashboard lags.
            tracing::warn!(run = %run_id, %error, "cannot mark the run finished in the monitor");
        }
        // A shared store keeps the finished record for `attach` and `results` until it
        // expires; nothing outside this process can read an in-process one.
        if store.is_in_process() {
            store.remove_run(&run_id).await?;
        }
        // Agents remove their own scratch files; this catches those of agents that were killed.
        let scratch = armada_core::scratch_dir(&run_id);
        if let Err(error) = std::fs::remove_dir_all(&scratch)
            && error.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(folder = %scratch.display(), %error, "cannot remove the run's scratch folder");
        }
        tracing::info!(run = %run_id, ?status, "run ended");
        Ok(RunReport {
            run_id,
            status,
            progress,
            elapsed: started.elapsed(),
            agent_problems,
            dead_letters: finished.dead_letters,
            events,
        })
    }
}

impl RunHandle {
    /// Follows the run in a task of its own and returns at once: read its updates from the
    /// [`RunTask`], then [`RunTask::wait`] for the report. Dropping the `RunTask` aborts the
    /// task, and with it the run's agents (as dropping the handle would).
    pub fn spawn(self) -> RunTask {
        let run_id = self.run_id.clone();
        let jobs = self.jobs();
        let control = self.control();
        // Unbounded, because a job's result must never be dropped, and the channel cannot grow
        // past the run's job count: each job is reported exactly once.
        let (results_tx, results) = mpsc::unbounded_channel();
        // Progress is a snapshot: a reader that falls behind only needs the latest one.
        let (progress_tx, progress) = watch::channel(None);
        let task = tokio::spawn(self.follow(move |event| match event {
            // A send fails only once the `RunTask` stopped listening (`wait`): nothing to do.
            FollowEvent::Result(result) => drop(results_tx.send(result.clone())),
            FollowEvent::Progress(snapshot) => drop(progress_tx.send_replace(Some(*snapshot))),
        }));
        RunTask {
            run_id,
            jobs,
            control,
            results,
            progress,
            progress_open: true,
            task: AbortOnDrop(task),
        }
    }
}

/// What a [`RunTask`] reports while its run goes on.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum RunUpdate {
    /// A job reached its terminal state; each job is reported exactly once, and none is ever
    /// dropped.
    Job(JobResult),
    /// The run's counters. A reader that falls behind gets the latest ones only; the last
    /// update of a run is always its final counters.
    Progress(RunProgress),
}

/// A run followed by a task of its own ([`RunHandle::spawn`]). Owns the task: dropping the
/// `RunTask` aborts it and the run's agents.
#[derive(Debug)]
pub struct RunTask {
    run_id: RunId,
    jobs: u64,
    control: RunControl,
    results: mpsc::UnboundedReceiver<JobResult>,
    progress: watch::Receiver<Option<RunProgress>>,
    /// Until the follow task dropped its progress sender and the last snapshot was read.
    progress_open: bool,
    task: AbortOnDrop<Result<RunReport>>,
}

impl RunTask {
    /// The run's id.
    pub fn run_id(&self) -> &RunId {
        &self.run_id
    }

    /// Jobs in the run.
    pub fn jobs(&self) -> u64 {
        self.jobs
    }

    /// A handle to cancel the run from elsewhere.
    pub fn control(&self) -> RunControl {
        self.control.clone()
    }

    /// Cancels the run: no new job starts, agents finish their current job within the grace
    /// period, and jobs not finished are reported as canceled. Updates go on to the end.
    pub fn cancel(&self) {
        self.control.cancel();
    }

    /// The next update; `None` once the run ended and every update was delivered.
    pub async fn next_update(&mut self) -> Option<RunUpdate> {
        loop {
            // Results first: counters read after a result are never delivered before it.
            tokio::select! {
                biased;
                Some(result) = self.results.recv() => return Some(RunUpdate::Job(result)),
                changed = self.progress.changed(), if self.progress_open => match changed {
                    Ok(()) => {
                        if let Some(progress) = *self.progress.borrow_and_update() {
                            return Some(RunUpdate::Progress(progress));
                        }
                    }
                    Err(_) => self.progress_open = false,
                },
                else => return None,
            }
        }
    }

    /// The updates as a stream, ending with the run.
    pub fn updates(&mut self) -> impl Stream<Item = RunUpdate> + '_ {
        futures::stream::unfold(self, |task| async move {
            let update = task.next_update().await?;
            Some((update, task))
        })
    }

    /// Waits for the run to end, leaving the updates not read yet, and reports how it ended.
    pub async fn wait(self) -> Result<RunReport> {
        let Self { mut task, .. } = self;
        match (&mut task.0).await {
            Ok(report) => report,
            // A panic in the follow task is a bug; let it surface where the run is awaited.
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            Err(_) => Err(crate::Error::RunTaskStopped),
        }
    }
}

/// Aborts its task when dropped, so the task cannot outlive its owner.
#[derive(Debug)]
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Which jobs were reported, so each is reported once.
struct Tally {
    reported: Vec<bool>,
    terminal: u64,
}

impl Tally {
    fn report(&mut self, result: &JobResult, on_event: &mut impl FnMut(FollowEvent<'_>)) {
        let index = usize::try_from(result.index).unwrap_or(usize::MAX);
        if let Some(seen @ false) = self.reported.get_mut(index) {
            *seen = true;
            self.terminal += 1;
            on_event(FollowEvent::Result(result));
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Describes an agent that did not end cleanly.
fn agent_problem(
    joined: Result<(tokio::task::Id, armada_core::Result<AgentExit>), tokio::task::JoinError>,
    agent_tasks: &HashMap<tokio::task::Id, AgentIndex>,
) -> Option<String> {
    let name = |id| {
        agent_tasks
            .get(&id)
            .map_or_else(|| "an agent".to_owned(), |index| format!("agent {index}"))
    };
    let problem = match joined {
        Ok((_, Ok(AgentExit::Finished { .. }))) => return None,
        Ok((_, Ok(AgentExit::StartFailed { error } | AgentExit::Died { error }))) => error,
        Ok((id, Err(error))) => format!("{} stopped: {error}", name(id)),
        Err(error) if error.is_cancelled() => return None,
        Err(error) => format!("{} crashed: {error}", name(error.id())),
    };
    tracing::error!("{problem}");
    Some(problem)
}
