//! A run's lifecycle: publish, launch, follow to the end, clean up.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use armada_core::backend::{DeadLetter, PlannedJobs, Recorded, RunProgress, RunRecord, RunStatus};
use armada_core::wire::{
    AgentConfigRecord, HEARTBEAT_INTERVAL, JobLimits, JobMessage, JobResult, JobStatus,
    WIRE_VERSION, now_ms,
};
use armada_core::{
    AgentExit, AgentIndex, AgentRunner, AgentSpec, ConfigStore, EventSender, JobId, JobQueue, Plan,
    RunId, WhenBlocked,
};
use armada_monitor::model::{Finish, NewRun, RunLabel, RunState};
use armada_monitor::{ClientOptions, ClientStats, MonitorClient, MonitorLink};
use fixedbitset::FixedBitSet;
use futures::Stream;
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::Result;

/// How often the run's counters are read while following it.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(250);
/// How long results gather after a read before the next: agents record results on other
/// threads, and a read per result would wake this one per result.
const RESULTS_GATHER: Duration = Duration::from_millis(10);
/// How long a canceled run gives its agents to finish their current job, by default.
const DEFAULT_GRACE: Duration = Duration::from_secs(10);
/// How many unfinished jobs an ended run records at a time.
const UNFINISHED_CHUNK: usize = 4096;

/// The run's backends, chosen by URL.
#[derive(Debug, Clone)]
pub struct Backends {
    /// Agent configs and run state.
    pub store: ConfigStore,
    /// The run's job queue (in-process or RabbitMQ), which agents consume.
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

/// Where agents run: tasks in this process, local processes, processes started by someone
/// else, or the pods of a Kubernetes Job.
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
                    // Its script held a thread too long; it settled that job and ended, the
                    // only way to free the thread. Replacing it is not a crash.
                    Ok(status) if status.code() == Some(AgentExit::BLOCKED_EXIT_CODE.into()) => {
                        tracing::warn!(run = %run, agent = index, "agent {index} ended to free a thread its script held: starting it again");
                        None
                    }
                    Ok(status) => Some(format!("agent {index} exited abnormally ({status})")),
                    Err(error) => Some(format!("agent {index} could not be waited for: {error}")),
                };
                if let Some(error) = &error {
                    if restarted == restarts {
                        let error = match restarts {
                            0 => error.clone(),
                            _ => format!("{error}, after {restarts} restarts"),
                        };
                        return Ok(AgentExit::Died { error });
                    }
                    restarted += 1;
                    tracing::warn!(run = %run, agent = index, "{error}: starting it again ({restarted} of {restarts})");
                }
                child = match command.spawn() {
                    Ok(child) => child,
                    Err(spawn) => {
                        let why = error.unwrap_or_else(|| format!("agent {index} ended"));
                        return Ok(AgentExit::Died {
                            error: format!("{why}; starting it again failed: {spawn}"),
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
    label: RunLabel,
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
            label: RunLabel::default(),
        }
    }

    /// The name and tags the monitor shows the next runs with.
    pub fn with_label(mut self, label: RunLabel) -> Self {
        self.label = label;
        self
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

    /// The backends runs are published to and followed on.
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
        let record = RunRecord {
            v: WIRE_VERSION,
            run_id: run_id.clone(),
            agents: plan.agents(),
            jobs: plan.jobs(),
            created_ms: now_ms(),
        };
        self.backends.store.create_run(record).await?;
        let published = async {
            self.register(plan, &run_id).await?;
            self.publish(plan, &run_id).await
        }
        .await;
        if let Err(error) = published {
            return Err(self.roll_back(&run_id, None, error).await);
        }
        let monitor = MonitorClient::start(
            run_id.clone(),
            self.backends.monitor.sink(),
            ClientOptions::default(),
        );
        let control = RunControl::default();
        let mut agents = JoinSet::new();
        let agent_tasks = match self
            .start_agents(plan, &run_id, &monitor, &control, &mut agents)
            .await
        {
            Ok(agent_tasks) => agent_tasks,
            Err(error) => {
                let started = Started { monitor, agents };
                return Err(self.roll_back(&run_id, Some(started), error).await);
            }
        };
        tracing::info!(run = %run_id, agents = plan.agents(), jobs = plan.jobs(), "run launched");
        Ok(RunHandle {
            run_id,
            backends: self.backends.clone(),
            jobs: plan.jobs(),
            agents,
            agent_tasks,
            owns_agents: !matches!(self.launcher, Launcher::External),
            monitor,
            control,
            started: Instant::now(),
            grace: self.grace,
        })
    }

    /// Starts the run's agents into `agents`, returning which task runs which agent. Agents
    /// started before a failure are left in `agents`, for the caller to stop.
    async fn start_agents(
        &self,
        plan: &Plan,
        run_id: &RunId,
        monitor: &MonitorClient,
        control: &RunControl,
        agents: &mut JoinSet<armada_core::Result<AgentExit>>,
    ) -> Result<HashMap<tokio::task::Id, AgentIndex>> {
        let mut agent_tasks = HashMap::new();
        #[cfg(feature = "kubernetes")]
        let mut pods = match &self.launcher {
            Launcher::Kubernetes(launcher) => {
                launcher
                    .start(run_id, plan.agents(), monitor.sender())
                    .await?
            }
            _ => Vec::new(),
        }
        .into_iter();
        for index in 0..plan.agents() {
            let task = match &self.launcher {
                Launcher::InProcess(runner) => agents.spawn(runner.run_agent(AgentSpec {
                    run_id: run_id.clone(),
                    index,
                    store: self.backends.store.clone(),
                    queue: self.backends.queue.clone(),
                    events: monitor.sender(),
                    shutdown: control.cancel.child_token(),
                    evidence_dir: self.evidence_dir.clone(),
                    when_blocked: WhenBlocked::StartAnother,
                })),
                Launcher::Processes(launcher) => {
                    let agent = launcher
                        .spawn(run_id, index, self.evidence_dir.as_deref())
                        .map_err(|source| crate::Error::Spawn {
                            program: launcher.program.display().to_string(),
                            source,
                        })?;
                    agents.spawn(agent)
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
        Ok(agent_tasks)
    }

    /// Undoes a launch that failed at some step, so that nothing is left published: stops
    /// what it had started, then deletes the run's queue and its record. Returns the step's
    /// error.
    async fn roll_back(
        &self,
        run_id: &RunId,
        started: Option<Started>,
        error: crate::Error,
    ) -> crate::Error {
        if let Some(started) = started {
            started.stop().await;
        }
        // Best effort: the original error is what the user needs to see.
        let _ = self.backends.queue.delete(run_id).await;
        let _ = self.backends.store.remove_run(run_id).await;
        error
    }

    /// Registers the run with the monitor, every job queued, before any job can report.
    async fn register(&self, plan: &Plan, run_id: &RunId) -> Result<()> {
        let run = NewRun {
            id: run_id.to_string(),
            project: self.project.clone(),
            agents: plan.agents(),
            jobs: plan.jobs(),
            tune: self.tune.clone(),
            relaunch_of: self.relaunch_of.clone(),
            settings: serde_json::to_value(plan.settings()).unwrap_or_default(),
            name: self.label.name.clone(),
            tags: self.label.tags.clone(),
        };
        Ok(self.backends.monitor.register_run(&run).await?)
    }

    async fn publish(&self, plan: &Plan, run_id: &RunId) -> Result<()> {
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
        // Each job is built when a queue needs it: a plan is a template and its CSV rows, so a
        // run of many jobs costs no memory per job until they are taken.
        let (planned, run) = (Arc::new(plan.clone()), run_id.clone());
        let jobs = PlannedJobs::new(plan.jobs(), move |index| JobMessage {
            v: WIRE_VERSION,
            run_id: run.clone(),
            job_id: JobId::of(&run, index),
            index,
            attempt: 1,
            identity_retries: 0,
            payload: Arc::clone(planned.job_payload(index)),
        });
        self.backends.queue.publish(run_id, jobs).await?;
        Ok(())
    }
}

/// What a launch had started when one of its later steps failed.
struct Started {
    monitor: MonitorClient,
    agents: JoinSet<armada_core::Result<AgentExit>>,
}

impl Started {
    async fn stop(mut self) {
        self.agents.shutdown().await;
        self.monitor.close().await;
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

/// How a run ended: its status, counters, duration and what went wrong; returned once it is
/// over.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// The run this report is about.
    pub run_id: RunId,
    /// Completed, canceled, or failed (no agent left).
    pub status: RunStatus,
    /// The run's counters as last read from the store, when it ended.
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
    jobs: u64,
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
    /// the run in the store, where they see it. In an in-process store, the handle that
    /// launched a run is its results' only reader and lets go of those it took: another
    /// handle attached there reads the results not taken yet.
    pub async fn attach(backends: Backends, run_id: RunId) -> Result<Self> {
        let record = backends.store.run_record(&run_id).await?;
        let monitor = MonitorClient::start(
            run_id.clone(),
            backends.monitor.sink(),
            ClientOptions::default(),
        );
        Ok(Self {
            jobs: record.jobs,
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

    /// The run's id, which names its queue, its store keys and its records in the monitor.
    pub fn run_id(&self) -> &RunId {
        &self.run_id
    }

    /// Jobs in the run: those published, or those its record counts when attached.
    pub fn jobs(&self) -> u64 {
        self.jobs
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
    pub async fn follow(self, on_event: impl FnMut(FollowEvent<'_>)) -> Result<RunReport> {
        let mut follower = Follower::new(self, on_event);
        let end = follower.follow_to_end().await?;
        follower.end_run(end).await
    }
}

/// One [`RunHandle::follow`] under way.
struct Follower<F> {
    run: RunHandle,
    on_event: F,
    tally: Tally,
    /// Results read from the store so far: the next read starts after them.
    cursor: u64,
    /// Results an in-process store was told it may let go ([`Follower::release_taken`]).
    released: u64,
    agent_problems: Vec<String>,
    /// Set once the run is canceled: when its agents' grace period ends.
    grace_deadline: Option<tokio::time::Instant>,
    next_progress: Instant,
    heartbeats: EventSender,
    next_heartbeat: Instant,
    /// When results are read next ([`RESULTS_GATHER`] after the last read that found some).
    next_read: tokio::time::Instant,
}

impl<F: FnMut(FollowEvent<'_>)> Follower<F> {
    fn new(run: RunHandle, on_event: F) -> Self {
        Self {
            tally: Tally {
                reported: FixedBitSet::with_capacity(
                    usize::try_from(run.jobs).unwrap_or(usize::MAX),
                ),
                terminal: 0,
            },
            cursor: 0,
            released: 0,
            agent_problems: Vec::new(),
            grace_deadline: None,
            next_progress: Instant::now() + PROGRESS_INTERVAL,
            heartbeats: run.monitor.sender(),
            next_heartbeat: Instant::now(),
            next_read: tokio::time::Instant::now(),
            run,
            on_event,
        }
    }

    async fn follow_to_end(&mut self) -> Result<End> {
        loop {
            if let Some(end) = self.noticed_end().await? {
                return Ok(end);
            }
            if let Some(end) = self.wait_for_news().await? {
                return Ok(end);
            }
            self.release_taken().await?;
            self.send_heartbeat();
            if let Some(end) = self.read_progress().await? {
                return Ok(end);
            }
        }
    }

    fn all_reported(&self) -> bool {
        self.tally.terminal >= self.run.jobs()
    }

    async fn noticed_end(&mut self) -> Result<Option<End>> {
        if self.all_reported() {
            return Ok(Some(End::Completed));
        }
        if self.run.control.abort.is_cancelled() {
            return Ok(Some(End::Canceled));
        }
        if !self.run.owns_agents || !self.run.agents.is_empty() {
            return Ok(None);
        }
        // Agents stop once every job is recorded, possibly before this loop has read the last
        // results: read them before concluding that no agent was left.
        self.read_results(Duration::ZERO).await?;
        if self.all_reported() {
            return Ok(Some(End::Completed));
        }
        // Agents also stop when the run was canceled from elsewhere; ask the store.
        let canceled = self.run.control.is_canceled()
            || self.stored_progress().await?.status == RunStatus::Canceled;
        Ok(Some(if canceled {
            End::Canceled
        } else {
            End::NoAgentLeft
        }))
    }

    /// Waits for new results no longer than [`PROGRESS_INTERVAL`], and less when something else
    /// happens first, so that heartbeats and progress are never late.
    async fn wait_for_news(&mut self) -> Result<Option<End>> {
        let (store, run_id, cursor) = (&self.run.backends.store, &self.run.run_id, self.cursor);
        let next_read = self.next_read;
        let read_results = async move {
            tokio::time::sleep_until(next_read).await;
            store.results_after(run_id, cursor, PROGRESS_INTERVAL).await
        };
        tokio::select! {
            () = self.run.control.cancel.cancelled(), if self.grace_deadline.is_none() => {
                self.start_grace().await?;
            }
            () = self.run.control.abort.cancelled() => {}
            () = sleep_until(self.grace_deadline), if self.grace_deadline.is_some() => {
                return Ok(Some(End::Canceled));
            }
            Some(joined) = self.run.agents.join_next_with_id() => self.agent_ended(joined),
            results = read_results => self.report_results(&results?),
        }
        Ok(None)
    }

    async fn start_grace(&mut self) -> Result<()> {
        let run_id = &self.run.run_id;
        tracing::warn!(run = %run_id, "canceling the run");
        let backends = &self.run.backends;
        backends
            .store
            .set_status(run_id, RunStatus::Canceled)
            .await?;
        backends.queue.delete(run_id).await?;
        self.grace_deadline = Some(tokio::time::Instant::now() + self.run.grace);
        Ok(())
    }

    fn agent_ended(
        &mut self,
        joined: Result<(tokio::task::Id, armada_core::Result<AgentExit>), tokio::task::JoinError>,
    ) {
        let problem = agent_problem(joined, &self.run.agent_tasks);
        self.agent_problems.extend(problem);
    }

    async fn read_results(&mut self, wait: Duration) -> Result<()> {
        let results = self
            .run
            .backends
            .store
            .results_after(&self.run.run_id, self.cursor, wait)
            .await?;
        self.report_results(&results);
        Ok(())
    }

    fn report_results(&mut self, results: &[JobResult]) {
        if !results.is_empty() {
            self.next_read = tokio::time::Instant::now() + RESULTS_GATHER;
        }
        self.cursor += results.len() as u64;
        for result in results {
            self.tally.report(result, &mut self.on_event);
        }
    }

    /// Lets an in-process store drop the results reported so far: this follower is their
    /// only reader, and a run of many jobs must not keep them all in memory.
    async fn release_taken(&mut self) -> Result<()> {
        let store = &self.run.backends.store;
        if self.released < self.cursor && store.is_in_process() {
            store.release_results(&self.run.run_id, self.cursor).await?;
            self.released = self.cursor;
        }
        Ok(())
    }

    fn send_heartbeat(&mut self) {
        if Instant::now() >= self.next_heartbeat {
            // The monitor tells a run that someone follows from one nobody does.
            self.next_heartbeat = Instant::now() + HEARTBEAT_INTERVAL;
            self.heartbeats.follower_heartbeat();
        }
    }

    async fn stored_progress(&self) -> Result<RunProgress> {
        Ok(self.run.backends.store.progress(&self.run.run_id).await?)
    }

    async fn read_progress(&mut self) -> Result<Option<End>> {
        if Instant::now() < self.next_progress {
            return Ok(None);
        }
        self.next_progress = Instant::now() + PROGRESS_INTERVAL;
        let progress = self.stored_progress().await?;
        if progress.status == RunStatus::Canceled && !self.run.control.is_canceled() {
            // Canceled from elsewhere (`cancel RUN_ID`, another service).
            self.run.control.cancel();
        }
        (self.on_event)(FollowEvent::Progress(&progress));
        if !self.run.owns_agents && progress.status == RunStatus::Failed {
            // Its launcher saw no agent left; nothing will record the rest.
            return Ok(Some(End::NoAgentLeft));
        }
        Ok(None)
    }

    async fn end_run(mut self, end: End) -> Result<RunReport> {
        let status = match end {
            End::Completed => RunStatus::Completed,
            End::Canceled => RunStatus::Canceled,
            End::NoAgentLeft => RunStatus::Failed,
        };
        let backends = &self.run.backends;
        // Deleting the queue ends every agent's consumer: they stop their contexts and exit.
        // The agent that recorded a completed run's last result may have ended it already;
        // then its record stands.
        let finished = armada_core::backend::finish_run(
            &backends.store,
            &backends.queue,
            &self.run.run_id,
            status,
        )
        .await?
        .finished;
        let status = finished.status;
        self.stop_agents().await;
        self.read_results(Duration::ZERO).await?;
        self.record_unfinished(status).await?;
        let progress = self.stored_progress().await?;
        (self.on_event)(FollowEvent::Progress(&progress));
        let Self {
            run,
            agent_problems,
            ..
        } = self;
        let events = run.monitor.close().await;
        mark_finished_in_monitor(&run.backends.monitor, &run.run_id, status).await;
        remove_leftovers(&run.backends.store, &run.run_id).await?;
        tracing::info!(run = %run.run_id, ?status, "run ended");
        Ok(RunReport {
            run_id: run.run_id,
            status,
            progress,
            elapsed: run.started.elapsed(),
            agent_problems,
            dead_letters: finished.dead_letters,
            events,
        })
    }

    async fn stop_agents(&mut self) {
        let wait = if self.run.control.abort.is_cancelled() {
            Duration::ZERO
        } else {
            self.run.grace
        };
        let stopped = tokio::time::timeout(wait, async {
            while let Some(joined) = self.run.agents.join_next_with_id().await {
                self.agent_ended(joined);
            }
        })
        .await;
        if stopped.is_err() {
            tracing::warn!(run = %self.run.run_id, agents = self.run.agents.len(), "stopping agents that did not finish in time");
            self.run.agents.shutdown().await;
        }
    }

    /// Records a result for each job that never reported one, as the run's end left it. The
    /// monitor needs no list of them: it gives every job that did not end the state the
    /// run's end implies.
    async fn record_unfinished(&mut self, status: RunStatus) -> Result<()> {
        let (job_status, error) = match status {
            RunStatus::Canceled => (
                JobStatus::Canceled,
                "the run was canceled before this job finished".to_owned(),
            ),
            _ => (
                JobStatus::Abandoned,
                format!(
                    "no agent was left to run this job ({})",
                    self.agent_problems.join("; ")
                ),
            ),
        };
        // In chunks, so that a canceled run of many jobs never lists them all at once.
        let mut from = 0;
        loop {
            let chunk = self.tally.unreported(from, UNFINISHED_CHUNK);
            let Some(&last) = chunk.last() else {
                return Ok(());
            };
            from = last + 1;
            for index in chunk {
                let result = JobResult {
                    v: WIRE_VERSION,
                    index,
                    id: JobId::of(&self.run.run_id, index),
                    status: job_status,
                    attempts: 0,
                    agent: None,
                    duration_ms: 0.0,
                    output: None,
                    error: Some(error.clone()),
                    evidence: None,
                };
                let recorded = self
                    .run
                    .backends
                    .store
                    .record_result(&self.run.run_id, result.clone())
                    .await?;
                // A job recorded meanwhile keeps its own result, read with the rest.
                if recorded != Recorded::Before {
                    self.tally.report(&result, &mut self.on_event);
                }
            }
        }
    }
}

async fn mark_finished_in_monitor(monitor: &MonitorLink, run_id: &RunId, status: RunStatus) {
    let finish = Finish {
        status: match status {
            RunStatus::Completed => RunState::Completed,
            RunStatus::Canceled => RunState::Canceled,
            _ => RunState::Stopped,
        },
        jobs: Vec::new(),
    };
    if let Err(error) = monitor.finish_run(run_id.as_str(), &finish).await {
        // The run itself is over and its results are written; only the dashboard lags.
        tracing::warn!(run = %run_id, %error, "cannot mark the run finished in the monitor");
    }
}

/// Removes what an ended run leaves behind that nobody will read.
async fn remove_leftovers(store: &ConfigStore, run_id: &RunId) -> Result<()> {
    // A shared store keeps the finished record for `attach` and `results` until it expires;
    // nothing outside this process can read an in-process one.
    if store.is_in_process() {
        store.remove_run(run_id).await?;
    }
    // Agents remove their own scratch files; this catches those of agents that were killed.
    let scratch = armada_core::scratch_dir(run_id);
    if let Err(error) = std::fs::remove_dir_all(&scratch)
        && error.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(folder = %scratch.display(), %error, "cannot remove the run's scratch folder");
    }
    Ok(())
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
    /// The run's id, which names its queue, its store keys and its records in the monitor.
    pub fn run_id(&self) -> &RunId {
        &self.run_id
    }

    /// Jobs in the run, as the handle the task follows counts them.
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
    /// A bit per job: a run of a hundred million jobs costs 12.5 MB here.
    reported: FixedBitSet,
    terminal: u64,
}

impl Tally {
    fn report(&mut self, result: &JobResult, on_event: &mut impl FnMut(FollowEvent<'_>)) {
        let index = usize::try_from(result.index).unwrap_or(usize::MAX);
        if index < self.reported.len() && !self.reported.put(index) {
            self.terminal += 1;
            on_event(FollowEvent::Result(result));
        }
    }

    /// Up to `limit` jobs from index `from` on that reported no result, in index order.
    fn unreported(&self, from: u64, limit: usize) -> Vec<u64> {
        let from = usize::try_from(from).unwrap_or(usize::MAX);
        (from..self.reported.len())
            .filter(|&index| !self.reported.contains(index))
            .take(limit)
            .map(|index| index as u64)
            .collect()
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
        Ok((
            _,
            Ok(
                AgentExit::StartFailed { error }
                | AgentExit::Died { error }
                | AgentExit::Blocked { error },
            ),
        )) => error,
        Ok((_, Ok(exit))) => format!("agent ended as {exit:?}"),
        Ok((id, Err(error))) => format!("{} stopped: {error}", name(id)),
        Err(error) if error.is_cancelled() => return None,
        Err(error) => format!("{} crashed: {error}", name(error.id())),
    };
    tracing::error!("{problem}");
    Some(problem)
}
