//! The command line's words: every command, flag and environment variable, parsed by clap.

use std::path::{Path, PathBuf};
use std::time::Duration;

use armada_core::Tune;
use armada_orchestrator::{Backends, ProcessLauncher};
use clap::{Args, Parser, Subcommand};

use crate::{Error, Result};

/// Where `serve` listens unless told otherwise: where `launch` says its runs can be seen later.
pub(crate) const DEFAULT_SERVE_ADDR: &str = "127.0.0.1:8400";

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Runs this Armada project: N agents take M jobs from one queue.",
    args_conflicts_with_subcommands = true
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Option<Command>,
    #[command(flatten)]
    pub(crate) launch: LaunchArgs,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Validate the project, start a run, show its progress and write its results (default).
    Launch(LaunchArgs),
    /// Check the project and report every problem; publishes nothing.
    Validate(ProjectArgs),
    /// Print every agent's and job's merged message as JSON lines.
    Plan(ProjectArgs),
    /// Cancel a run held in shared backends: flag it and purge its queue.
    Cancel(CancelArgs),
    /// Follow a run held in shared backends, whether its launcher is alive or not: progress,
    /// summary, and its results file, one line per job. Ends the run if no one else does.
    Attach(AttachArgs),
    /// Write the results of a run held in shared backends that has ended, one JSON line per
    /// job.
    Results(ResultsArgs),
    /// Serve this project's orchestrator over HTTP (POST /runs, /bot/start) with the
    /// dashboard and monitor API; the dashboard's Launch, Cancel and Retry drive it.
    #[command(visible_alias = "monitor")]
    Serve(ServeArgs),
    /// Run one agent of a run held in shared backends (used by launchers).
    #[command(hide = true)]
    Agent(AgentArgs),
    /// Show a run's pods on Kubernetes and, with --config-store, its progress.
    #[cfg(feature = "kubernetes")]
    Status(crate::kubernetes::StatusArgs),
    /// Print the Kubernetes objects of the shared stack as YAML (`| kubectl apply -f -`).
    #[cfg(feature = "kubernetes")]
    Manifests(crate::kubernetes::ManifestsArgs),
}

#[derive(Debug, Args)]
pub(crate) struct ProjectArgs {
    /// The project folder (holding config/); defaults to the current folder when it is a
    /// project, else the project this binary was built from.
    #[arg(long, value_name = "DIR")]
    pub(crate) project: Option<PathBuf>,
    /// Which tune file resolves `$env_` placeholders: local, distant, or a path (default:
    /// local; distant with --target kubernetes).
    #[arg(long, value_name = "TUNE")]
    pub(crate) tune: Option<Tune>,
    /// Number of agents (overrides run_message.agents).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) agents: Option<u32>,
    /// Number of jobs (overrides run_message.jobs).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) jobs: Option<u64>,
    /// Attempts per job (overrides run_message.max_attempts).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) max_attempts: Option<u32>,
    /// Time limit of one attempt in seconds (overrides run_message.job_timeout_secs).
    #[arg(long, value_name = "SECS", value_parser = positive_seconds)]
    pub(crate) job_timeout_secs: Option<f64>,
}

#[derive(Debug, Args)]
pub(crate) struct BackendArgs {
    /// Where jobs wait: memory:// (embedded) or amqp://… (feature `rabbitmq`)
    /// [default: memory://; ARMADA_AMQP_URL is read too].
    #[arg(
        long,
        env = "ARMADA_QUEUE_URL",
        hide_env_values = true,
        value_name = "URL"
    )]
    queue: Option<String>,
    /// Where agent configs and run state live: memory:// (embedded) or redis://… (feature
    /// `redis`) [default: memory://; ARMADA_REDIS_URL is read too].
    #[arg(
        long,
        env = "ARMADA_STORE_URL",
        hide_env_values = true,
        value_name = "URL"
    )]
    config_store: Option<String>,
    /// How long each process keeps trying while Redis or RabbitMQ is unreachable (a restart,
    /// a failover, a cut network) before the run stops with an error.
    #[arg(
        long,
        env = "ARMADA_OUTAGE_SECS",
        value_name = "SECS",
        default_value_t = 60.0,
        value_parser = positive_seconds
    )]
    pub(crate) outage_secs: f64,
    /// Where `queue` and `config_store` came from, filled in after parsing.
    #[arg(skip)]
    pub(crate) origins: BackendOrigins,
}

/// Where each backend URL came from: a flag, a variable, or the default.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct BackendOrigins {
    queue: Option<clap::parser::ValueSource>,
    config_store: Option<clap::parser::ValueSource>,
}

impl BackendOrigins {
    /// Reads them from the matches of the command whose arguments hold `BackendArgs`.
    pub(crate) fn of(matches: &clap::ArgMatches) -> Self {
        let source = |id: &str| {
            matches
                .try_get_raw(id)
                .ok()
                .and_then(|_| matches.value_source(id))
        };
        Self {
            queue: source("queue"),
            config_store: source("config_store"),
        }
    }
}

impl BackendArgs {
    /// Which backends the command uses and where each URL came from, passwords hidden: `queue
    /// amqp://guest:***@host (ARMADA_AMQP_URL), config store memory:// (default)`.
    pub(crate) fn describe(&self) -> String {
        let origin = |source, flag: &str, variable: &str, former: &str| match source {
            Some(clap::parser::ValueSource::CommandLine) => flag.to_owned(),
            Some(clap::parser::ValueSource::EnvVariable) => variable.to_owned(),
            _ if std::env::var_os(former).is_some() => former.to_owned(),
            _ => "default".to_owned(),
        };
        format!(
            "queue {} ({}), config store {} ({})",
            armada_core::backend::redact_url(&self.queue_url()),
            origin(
                self.origins.queue,
                "--queue",
                "ARMADA_QUEUE_URL",
                "ARMADA_AMQP_URL"
            ),
            armada_core::backend::redact_url(&self.store_url()),
            origin(
                self.origins.config_store,
                "--config-store",
                "ARMADA_STORE_URL",
                "ARMADA_REDIS_URL"
            ),
        )
    }

    /// The queue's URL: `--queue`, else `ARMADA_QUEUE_URL`, else the name it had before.
    pub(crate) fn queue_url(&self) -> String {
        chosen(self.queue.as_ref(), "ARMADA_AMQP_URL")
    }

    /// The config store's URL: `--config-store`, else `ARMADA_STORE_URL`, else the name it
    /// had before.
    pub(crate) fn store_url(&self) -> String {
        chosen(self.config_store.as_ref(), "ARMADA_REDIS_URL")
    }

    pub(crate) async fn connect(&self) -> Result<Backends> {
        let mut backends =
            Backends::connect(&self.store_url(), &self.queue_url(), "memory://").await?;
        let limit =
            Duration::try_from_secs_f64(self.outage_secs).unwrap_or(Duration::from_secs(60));
        backends.store = backends.store.with_outage_limit(limit);
        backends.queue = backends.queue.with_outage_limit(limit);
        Ok(backends)
    }

    /// Agents as processes of this binary, given these backends and the monitor to report to.
    pub(crate) fn process_launcher(
        &self,
        monitor_url: Option<String>,
        monitor_token: Option<String>,
    ) -> Result<ProcessLauncher> {
        Ok(ProcessLauncher {
            program: std::env::current_exe().map_err(|source| {
                armada_orchestrator::Error::Spawn {
                    program: "the current executable".into(),
                    source,
                }
            })?,
            queue_url: self.queue_url(),
            store_url: self.store_url(),
            monitor_url,
            monitor_token,
            restarts: ProcessLauncher::DEFAULT_RESTARTS,
            detached_logs: None,
            outage_secs: Some(self.outage_secs),
        })
    }

    /// For commands that work on a run held elsewhere: in-memory backends exist only inside
    /// the `launch` that created them, so they are refused before anything connects.
    pub(crate) async fn connect_shared(&self) -> Result<Backends> {
        let in_memory = |url: &str| url.starts_with("memory:");
        if in_memory(&self.queue_url()) || in_memory(&self.store_url()) {
            return Err(Error::AgentNeedsSharedBackends);
        }
        self.connect().await
    }
}

/// A backend's URL as given, else as a variable of its former name holds it, else in memory.
fn chosen(given: Option<&String>, legacy_variable: &str) -> String {
    given
        .cloned()
        .or_else(|| std::env::var(legacy_variable).ok())
        .unwrap_or_else(|| "memory://".to_owned())
}

/// Where monitoring goes.
#[derive(Debug, Args)]
pub(crate) struct MonitorLinkArgs {
    /// Where runs, jobs and events are stored: sqlite:PATH, postgres://… (feature
    /// `postgres`), a monitor service http://HOST:PORT (not for serve), or memory:// to keep
    /// nothing [default: sqlite:<project>/.armada/monitor.sqlite].
    #[arg(
        long = "monitor",
        visible_alias = "store",
        env = "ARMADA_MONITOR_URL",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub(crate) url: Option<String>,
    /// The bearer token of the monitor service, and of the dashboard this command serves.
    #[arg(
        long = "monitor-token",
        visible_alias = "token",
        env = "ARMADA_MONITOR_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub(crate) token: Option<String>,
}

impl MonitorLinkArgs {
    pub(crate) fn url_for(&self, project: &Path) -> String {
        // ARMADA_MONITOR_STORE is the name `serve` read before it took --monitor.
        let legacy = || std::env::var("ARMADA_MONITOR_STORE").ok();
        self.url.clone().or_else(legacy).unwrap_or_else(|| {
            format!(
                "sqlite:{}",
                project.join(".armada").join("monitor.sqlite").display()
            )
        })
    }
}

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    #[command(flatten)]
    pub(crate) project: ProjectArgs,
    /// The address to serve on; anything but loopback needs --monitor-token.
    #[arg(long, default_value = DEFAULT_SERVE_ADDR, value_name = "ADDR")]
    pub(crate) listen: std::net::SocketAddr,
    /// Where runs are stored, and the token the API and dashboard require.
    #[command(flatten)]
    pub(crate) monitor: MonitorLinkArgs,
    /// A host name the service is reached by besides its addresses and localhost (a reverse
    /// proxy's); without a token, requests naming other hosts are refused. Repeatable.
    #[arg(long = "allow-host", value_name = "NAME")]
    pub(crate) allow_hosts: Vec<String>,
    /// The most jobs a run launched over HTTP or from the dashboard may have.
    #[arg(long, value_name = "N", default_value_t = armada_orchestrator::DEFAULT_MAX_JOBS)]
    pub(crate) max_jobs: u64,
    /// The most agents a run launched over HTTP or from the dashboard may have.
    #[arg(long, value_name = "N", default_value_t = armada_orchestrator::DEFAULT_MAX_AGENTS)]
    pub(crate) max_agents: u32,
    /// The most runs launched over HTTP or from the dashboard that may go on at once; another
    /// is answered 429 until one ends.
    #[arg(long, value_name = "N", default_value_t = armada_orchestrator::DEFAULT_MAX_RUNNING_RUNS, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) max_running_runs: u32,
    /// Seconds a running run's agents and followers may be silent before it shows as
    /// stalled (and an agent as gone).
    #[arg(long, value_name = "SECS", default_value_t = armada_monitor::DEFAULT_STALL_LIMIT.as_secs_f64(), value_parser = positive_seconds)]
    pub(crate) stall_secs: f64,
    #[command(flatten)]
    pub(crate) backends: BackendArgs,
    /// Run agents of launched runs as tasks in this process or as separate processes.
    #[arg(long, value_enum)]
    pub(crate) agents_as: Option<AgentsAs>,
}

#[derive(Debug, Args)]
pub(crate) struct LaunchArgs {
    #[command(flatten)]
    pub(crate) project: ProjectArgs,
    #[command(flatten)]
    pub(crate) monitor: MonitorLinkArgs,
    /// Do not serve the dashboard while the run goes on.
    #[arg(long)]
    pub(crate) no_dashboard: bool,
    /// What to call the run in the dashboard and the runs list.
    #[arg(long, value_name = "NAME", value_parser = run_name)]
    pub(crate) name: Option<String>,
    /// A word to group and find the run by (repeatable).
    #[arg(long = "tag", value_name = "TAG", value_parser = run_tag)]
    pub(crate) tags: Vec<String>,
    /// Once the run has ended, keep serving the dashboard while a tab is open on it.
    #[arg(long, conflicts_with = "no_dashboard")]
    pub(crate) keep_dashboard: bool,
    /// Where the dashboard listens while the run goes on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:0", value_name = "ADDR")]
    pub(crate) dashboard: std::net::SocketAddr,
    /// Where to write one JSON line per job (default: .armada/runs/<run_id>/results.jsonl in
    /// the project).
    #[arg(long, value_name = "FILE")]
    pub(crate) output: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) backends: BackendArgs,
    /// Seconds a canceled run gives agents to finish their current job.
    #[arg(long, value_name = "SECS", default_value_t = 10.0, value_parser = seconds)]
    pub(crate) grace_secs: f64,
    /// Run agents as tasks in this process or as separate processes.
    #[arg(long, value_enum)]
    pub(crate) agents_as: Option<AgentsAs>,
    /// Where agents run: on this machine (see --agents-as), or as the pods of a Kubernetes
    /// Job (feature `kubernetes`).
    #[arg(
        long,
        value_enum,
        default_value = "local",
        conflicts_with = "agents_as"
    )]
    pub(crate) target: Target,
    /// With --target kubernetes: print the Job that would be created, and publish nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Publish the run, start its agents apart from this process, print the run id and
    /// return. The run ends by itself; `attach RUN_ID` follows it and writes its results.
    #[arg(long)]
    pub(crate) detach: bool,
}

#[derive(Debug, Args)]
pub(crate) struct AttachArgs {
    /// The run to follow.
    pub(crate) run_id: String,
    /// The project folder, where the results file and the monitor store are by default.
    #[arg(long, value_name = "DIR")]
    pub(crate) project: Option<PathBuf>,
    /// Where to write one JSON line per job (default: .armada/runs/<run_id>/results.jsonl in
    /// the project). Lines already there are kept and their jobs not written again.
    #[arg(long, value_name = "FILE")]
    pub(crate) output: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) backends: BackendArgs,
    #[command(flatten)]
    pub(crate) monitor: MonitorLinkArgs,
}

#[derive(Debug, Args)]
pub(crate) struct ResultsArgs {
    /// The run whose results to write.
    pub(crate) run_id: String,
    /// Where to write them (default: standard output).
    #[arg(long, value_name = "FILE")]
    pub(crate) output: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) backends: BackendArgs,
}

/// Where a run's agents run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Target {
    /// On this machine.
    Local,
    /// As the pods of one Kubernetes Indexed Job per run.
    Kubernetes,
}

#[derive(Debug, Args)]
pub(crate) struct CancelArgs {
    /// The run to cancel.
    pub(crate) run_id: String,
    #[command(flatten)]
    pub(crate) backends: BackendArgs,
    /// Where the run's monitoring goes, to record how it ended there.
    #[command(flatten)]
    pub(crate) monitor: MonitorLinkArgs,
    /// Seconds its agents get to finish their current job before it is ended.
    #[arg(long, value_name = "SECS", default_value_t = 10.0, value_parser = seconds)]
    pub(crate) grace_secs: f64,
    /// With kubernetes, the run's Job is deleted too, its pods first.
    #[arg(long, value_enum, default_value = "local")]
    pub(crate) target: Target,
    /// The namespace of the run's Job (run_message.kubernetes.namespace).
    #[cfg(feature = "kubernetes")]
    #[arg(long, env = "ARMADA_NAMESPACE", default_value = "armada")]
    pub(crate) namespace: String,
}

/// Where agents run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum AgentsAs {
    /// Tasks in this process (the default with in-memory backends).
    Tasks,
    /// Local processes, `orchestrate agent …` (the default with Redis and RabbitMQ).
    Processes,
    /// Started by you, on any host that reaches the backends: `orchestrate agent --run-id
    /// RUN --index I` for each index, with ARMADA_QUEUE_URL, ARMADA_STORE_URL and
    /// ARMADA_MONITOR_URL set.
    External,
}

#[derive(Debug, Args)]
pub(crate) struct AgentArgs {
    /// The run to work for.
    #[arg(long)]
    pub(crate) run_id: String,
    /// Where to save the evidence of failed attempts.
    #[arg(long, env = "ARMADA_EVIDENCE_DIR")]
    pub(crate) evidence_dir: Option<PathBuf>,
    /// This agent's index in the run (in a Kubernetes Indexed Job, the completion index).
    #[arg(long, env = "JOB_COMPLETION_INDEX")]
    pub(crate) index: u32,
    #[command(flatten)]
    pub(crate) backends: BackendArgs,
    #[command(flatten)]
    pub(crate) monitor: MonitorLinkArgs,
}

/// A number of seconds, zero or more.
pub(crate) fn seconds(text: &str) -> std::result::Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs >= 0.0 => Ok(secs),
        _ => Err(format!("`{text}` is not a number of seconds (0 or more)")),
    }
}

/// A number of seconds above zero.
fn run_name(text: &str) -> std::result::Result<String, String> {
    let label = armada_monitor::model::RunLabel::new(Some(text), &[])?;
    label
        .name
        .ok_or_else(|| "a run's name is not blank".to_owned())
}

fn run_tag(text: &str) -> std::result::Result<String, String> {
    armada_monitor::model::RunLabel::new(None, &[text.to_owned()]).map(|_| text.trim().to_owned())
}

pub(crate) fn positive_seconds(text: &str) -> std::result::Result<f64, String> {
    match seconds(text) {
        Ok(secs) if secs > 0.0 => Ok(secs),
        _ => Err(format!("`{text}` is not a number of seconds above 0")),
    }
}
