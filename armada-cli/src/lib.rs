//! The project binary's command line (`cargo run --bin orchestrate -- …`).
//!
//! - `launch` (the default): validate, publish, run, show progress, write results, summarize.
//! - `validate`: report every problem of the project; publish nothing.
//! - `plan`: print every merged agent and job message as JSON lines.
//! - `cancel RUN_ID`: cancel a run held in shared backends.
//! - `agent` (hidden): run one agent of a run held in shared backends.
//! - With the `kubernetes` feature: `launch --target kubernetes [--dry-run]`, `status RUN_ID`
//!   and `manifests` (see the `kubernetes` module).
//!
//! Exit codes of `launch`: 0 every job succeeded; 2 the run completed with failed jobs;
//! 3 the run stopped with no agent left; 130 canceled (Ctrl-C); 1 any other error (bad input,
//! unreachable backend), in which case nothing was published.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use armada_core::backend::RunStatus;
use armada_core::{AgentRunner, AgentSpec, Plan, ProjectFiles, RunId, RunOverrides, Script, Tune};
use armada_monitor::server::Served;
use armada_monitor::{ClientOptions, Monitor, MonitorClient, MonitorLink, Store};
use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::progress::Progress;
use crate::results::{Claimed, ResultsFile};
use crate::{
    Backends, Error, FollowEvent, Launcher, Orchestrator, ProcessLauncher, Result, RunControl,
    RunHandle, RunReport, Summary,
};

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Runs this Armada project: N agents take M jobs from one queue.",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    launch: LaunchArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
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
    Serve(MonitorArgs),
    /// Run one agent of a run held in shared backends (used by launchers).
    #[command(hide = true)]
    Agent(AgentArgs),
    /// Show a run's pods on Kubernetes and, with --config-store, its progress.
    #[cfg(feature = "kubernetes")]
    Status(crate::kubernetes::cli::StatusArgs),
    /// Print the Kubernetes objects of the shared stack as YAML (`| kubectl apply -f -`).
    #[cfg(feature = "kubernetes")]
    Manifests(crate::kubernetes::cli::ManifestsArgs),
}

#[derive(Debug, Args)]
struct ProjectArgs {
    /// The project folder (holding config/); defaults to the current folder when it is a
    /// project, else the project this binary was built from.
    #[arg(long, value_name = "DIR")]
    project: Option<PathBuf>,
    /// Which tune file resolves `$env_` placeholders: local, distant, or a path (default:
    /// local; distant with --target kubernetes).
    #[arg(long, value_name = "TUNE")]
    tune: Option<Tune>,
    /// Number of agents (overrides run_message.agents).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    agents: Option<u32>,
    /// Number of jobs (overrides run_message.jobs).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    jobs: Option<u64>,
    /// Attempts per job (overrides run_message.max_attempts).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    max_attempts: Option<u32>,
    /// Time limit of one attempt in seconds (overrides run_message.job_timeout_secs).
    #[arg(long, value_name = "SECS", value_parser = positive_seconds)]
    job_timeout_secs: Option<f64>,
}

#[derive(Debug, Args)]
struct BackendArgs {
    /// Where jobs wait: memory:// (embedded) or amqp://… (feature `rabbitmq`).
    #[arg(
        long,
        env = "ARMADA_AMQP_URL",
        hide_env_values = true,
        default_value = "memory://"
    )]
    queue: String,
    /// Where agent configs and run state live: memory:// (embedded) or redis://… (feature
    /// `redis`).
    #[arg(
        long,
        env = "ARMADA_REDIS_URL",
        hide_env_values = true,
        default_value = "memory://"
    )]
    config_store: String,
    /// How long each process keeps trying while Redis or RabbitMQ is unreachable (a restart,
    /// a failover, a cut network) before the run stops with an error.
    #[arg(
        long,
        env = "ARMADA_OUTAGE_SECS",
        value_name = "SECS",
        default_value_t = 60.0,
        value_parser = positive_seconds
    )]
    outage_secs: f64,
}

impl BackendArgs {
    async fn connect(&self) -> Result<Backends> {
        let mut backends = Backends::connect(&self.config_store, &self.queue, "memory://").await?;
        let limit =
            Duration::try_from_secs_f64(self.outage_secs).unwrap_or(Duration::from_secs(60));
        backends.store = backends.store.with_outage_limit(limit);
        backends.queue = backends.queue.with_outage_limit(limit);
        Ok(backends)
    }

    /// Agents as processes of this binary, given these backends and the monitor to report to.
    fn process_launcher(
        &self,
        monitor_url: Option<String>,
        monitor_token: Option<String>,
    ) -> Result<ProcessLauncher> {
        Ok(ProcessLauncher {
            program: std::env::current_exe().map_err(|source| Error::Spawn {
                program: "the current executable".into(),
                source,
            })?,
            queue_url: self.queue.clone(),
            store_url: self.config_store.clone(),
            monitor_url,
            monitor_token,
            restarts: ProcessLauncher::DEFAULT_RESTARTS,
            detached_logs: None,
            outage_secs: Some(self.outage_secs),
        })
    }

    /// For commands that work on a run held elsewhere: in-memory backends exist only inside
    /// the `launch` that created them, so they are refused before anything connects.
    async fn connect_shared(&self) -> Result<Backends> {
        let in_memory = |url: &str| url.starts_with("memory:");
        if in_memory(&self.queue) || in_memory(&self.config_store) {
            return Err(Error::AgentNeedsSharedBackends);
        }
        self.connect().await
    }
}

/// Where monitoring goes.
#[derive(Debug, Args)]
struct MonitorLinkArgs {
    /// Where runs, jobs and events are stored: sqlite:PATH, postgres://… (feature
    /// `postgres`), a monitor service http://HOST:PORT, or memory:// to keep nothing
    /// [default for launch: sqlite:<project>/.armada/monitor.sqlite].
    #[arg(
        long = "monitor",
        env = "ARMADA_MONITOR_URL",
        hide_env_values = true,
        value_name = "URL"
    )]
    url: Option<String>,
    /// The bearer token of the monitor service, and of the dashboard this command serves.
    #[arg(
        long = "monitor-token",
        env = "ARMADA_MONITOR_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    token: Option<String>,
}

impl MonitorLinkArgs {
    fn url_for(&self, project: &Path) -> String {
        self.url.clone().unwrap_or_else(|| {
            format!(
                "sqlite:{}",
                project.join(".armada").join("monitor.sqlite").display()
            )
        })
    }
}

#[derive(Debug, Args)]
struct MonitorArgs {
    #[command(flatten)]
    project: ProjectArgs,
    /// The address to serve on; anything but loopback needs --monitor-token.
    #[arg(long, default_value = "127.0.0.1:8400", value_name = "ADDR")]
    listen: std::net::SocketAddr,
    /// Where runs are stored (sqlite:PATH or postgres://…)
    /// [default: sqlite:<project>/.armada/monitor.sqlite].
    #[arg(
        long,
        env = "ARMADA_MONITOR_STORE",
        hide_env_values = true,
        value_name = "URL"
    )]
    store: Option<String>,
    /// The bearer token the API and dashboard require.
    #[arg(long, env = "ARMADA_MONITOR_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A host name the service is reached by besides its addresses and localhost (a reverse
    /// proxy's); without a token, requests naming other hosts are refused. Repeatable.
    #[arg(long = "allow-host", value_name = "NAME")]
    allow_hosts: Vec<String>,
    /// The most jobs a run launched over HTTP or from the dashboard may have.
    #[arg(long, value_name = "N", default_value_t = crate::control::DEFAULT_MAX_JOBS)]
    max_jobs: u64,
    /// Seconds a running run's agents and followers may be silent before it shows as
    /// stalled (and an agent as gone).
    #[arg(long, value_name = "SECS", default_value_t = armada_monitor::DEFAULT_STALL_LIMIT.as_secs_f64(), value_parser = positive_seconds)]
    stall_secs: f64,
    #[command(flatten)]
    backends: BackendArgs,
    /// Run agents of launched runs as tasks in this process or as separate processes.
    #[arg(long, value_enum)]
    agents_as: Option<AgentsAs>,
}

#[derive(Debug, Args)]
struct LaunchArgs {
    #[command(flatten)]
    project: ProjectArgs,
    #[command(flatten)]
    monitor: MonitorLinkArgs,
    /// Do not serve the dashboard while the run goes on.
    #[arg(long)]
    no_dashboard: bool,
    /// Where the dashboard listens while the run goes on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:0", value_name = "ADDR")]
    dashboard: std::net::SocketAddr,
    /// Where to write one JSON line per job (default: .armada/runs/<run_id>/results.jsonl in
    /// the project).
    #[arg(long, value_name = "FILE")]
    output: Option<PathBuf>,
    #[command(flatten)]
    backends: BackendArgs,
    /// Seconds a canceled run gives agents to finish their current job.
    #[arg(long, value_name = "SECS", default_value_t = 10.0, value_parser = seconds)]
    grace_secs: f64,
    /// Run agents as tasks in this process or as separate processes.
    #[arg(long, value_enum)]
    agents_as: Option<AgentsAs>,
    /// Where agents run: on this machine (see --agents-as), or as the pods of a Kubernetes
    /// Job (feature `kubernetes`).
    #[arg(
        long,
        value_enum,
        default_value = "local",
        conflicts_with = "agents_as"
    )]
    target: Target,
    /// With --target kubernetes: print the Job that would be created, and publish nothing.
    #[arg(long)]
    dry_run: bool,
    /// Publish the run, start its agents apart from this process, print the run id and
    /// return. The run ends by itself; `attach RUN_ID` follows it and writes its results.
    #[arg(long)]
    detach: bool,
}

#[derive(Debug, Args)]
struct AttachArgs {
    /// The run to follow.
    run_id: String,
    /// The project folder, where the results file and the monitor store are by default.
    #[arg(long, value_name = "DIR")]
    project: Option<PathBuf>,
    /// Where to write one JSON line per job (default: .armada/runs/<run_id>/results.jsonl in
    /// the project). Lines already there are kept and their jobs not written again.
    #[arg(long, value_name = "FILE")]
    output: Option<PathBuf>,
    #[command(flatten)]
    backends: BackendArgs,
    #[command(flatten)]
    monitor: MonitorLinkArgs,
}

#[derive(Debug, Args)]
struct ResultsArgs {
    /// The run whose results to write.
    run_id: String,
    /// Where to write them (default: standard output).
    #[arg(long, value_name = "FILE")]
    output: Option<PathBuf>,
    #[command(flatten)]
    backends: BackendArgs,
}

/// Where a run's agents run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Target {
    /// On this machine.
    Local,
    /// As the pods of one Kubernetes Indexed Job per run.
    Kubernetes,
}

#[derive(Debug, Args)]
struct CancelArgs {
    /// The run to cancel.
    run_id: String,
    #[command(flatten)]
    backends: BackendArgs,
    /// Where the run's monitoring goes, to record how it ended there.
    #[command(flatten)]
    monitor: MonitorLinkArgs,
    /// Seconds its agents get to finish their current job before it is ended.
    #[arg(long, value_name = "SECS", default_value_t = 10.0, value_parser = seconds)]
    grace_secs: f64,
    /// With kubernetes, the run's Job is deleted too, its pods first.
    #[arg(long, value_enum, default_value = "local")]
    target: Target,
    /// The namespace of the run's Job (run_message.kubernetes.namespace).
    #[cfg(feature = "kubernetes")]
    #[arg(long, env = "ARMADA_NAMESPACE", default_value = "armada")]
    namespace: String,
}

/// Where agents run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum AgentsAs {
    /// Tasks in this process (the default with in-memory backends).
    Tasks,
    /// Local processes, `orchestrate agent …` (the default with Redis and RabbitMQ).
    Processes,
    /// Started by you, on any host that reaches the backends: `orchestrate agent --run-id
    /// RUN --index I` for each index, with ARMADA_AMQP_URL, ARMADA_REDIS_URL and
    /// ARMADA_MONITOR_URL set.
    External,
}

#[derive(Debug, Args)]
struct AgentArgs {
    /// The run to work for.
    #[arg(long)]
    run_id: String,
    /// Where to save the evidence of failed attempts.
    #[arg(long, env = "ARMADA_EVIDENCE_DIR")]
    evidence_dir: Option<PathBuf>,
    /// This agent's index in the run (in a Kubernetes Indexed Job, the completion index).
    #[arg(long, env = "JOB_COMPLETION_INDEX")]
    index: u32,
    #[command(flatten)]
    backends: BackendArgs,
    #[command(flatten)]
    monitor: MonitorLinkArgs,
}

/// The project binary's `main`: parses the command line, installs a tracing subscriber (this
/// runs in the binary, never in a library) and runs the command for the script `S`.
pub fn main<S: Script>(runner: Arc<dyn AgentRunner>, default_project: &Path) -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // lapin logs a deleted queue, which is how a run's end reaches its agents, as an error,
        // and chromiumoxide warns about every CDP event newer than its protocol; the backends
        // and the browser context report real failures themselves.
        .unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new("warn,lapin=off,chromiumoxide=error")
        });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal: a log file or a pipe gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return usage_error(&error),
    };
    let outcome = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)
        .and_then(|runtime| runtime.block_on(run_command::<S>(cli, runner, default_project)));
    match outcome {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(1)
        }
    }
}

async fn run_command<S: Script>(
    cli: Cli,
    runner: Arc<dyn AgentRunner>,
    default_project: &Path,
) -> Result<ExitCode> {
    match cli.command.unwrap_or(Command::Launch(cli.launch)) {
        Command::Launch(args) => launch::<S>(args, runner, default_project).await,
        Command::Validate(args) => {
            let (project, plan) = load_plan::<S>(&args, default_project)?;
            println!(
                "{}: valid, {} agents and {} jobs",
                project.display(),
                plan.agents(),
                plan.jobs()
            );
            print_skipped_rows(&plan);
            Ok(ExitCode::SUCCESS)
        }
        Command::Plan(args) => {
            let (_, plan) = load_plan::<S>(&args, default_project)?;
            let stdout = std::io::stdout();
            let mut out = BufWriter::new(stdout.lock());
            plan.write_json_lines(&mut out)
                .and_then(|()| out.flush())
                .map_err(|source| Error::Results {
                    path: "standard output".into(),
                    source,
                })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Agent(args) => agent(args, runner).await,
        Command::Serve(args) => serve::<S>(args, runner, default_project).await,
        Command::Cancel(args) => cancel(args).await,
        Command::Attach(args) => attach(args, default_project).await,
        Command::Results(args) => results(args).await,
        #[cfg(feature = "kubernetes")]
        Command::Status(args) => crate::kubernetes::cli::status(&args).await,
        #[cfg(feature = "kubernetes")]
        Command::Manifests(args) => crate::kubernetes::cli::manifests(&args),
    }
}

fn project_dir(project: Option<&Path>, default_project: &Path) -> PathBuf {
    match project {
        Some(project) => project.to_path_buf(),
        None if Path::new("config/config_template.json").is_file() => PathBuf::from("."),
        None => default_project.to_path_buf(),
    }
}

fn load_plan<S: Script>(args: &ProjectArgs, default_project: &Path) -> Result<(PathBuf, Plan)> {
    let project = project_dir(args.project.as_deref(), default_project);
    let files = ProjectFiles::read(&project, args.tune.as_ref().unwrap_or(&Tune::Local))?;
    let overrides = RunOverrides {
        agents: args.agents,
        jobs: args.jobs,
        max_attempts: args.max_attempts,
        job_timeout_secs: args.job_timeout_secs,
    };
    let plan = Plan::for_script::<S>(&files, &overrides)?;
    Ok((project, plan))
}

async fn launch<S: Script>(
    mut args: LaunchArgs,
    runner: Arc<dyn AgentRunner>,
    default_project: &Path,
) -> Result<ExitCode> {
    let kubernetes = args.target == Target::Kubernetes;
    if kubernetes && args.project.tune.is_none() {
        args.project.tune = Some(Tune::Distant);
    }
    if args.dry_run && !kubernetes {
        return Err(Error::DryRunNeedsKubernetes);
    }
    let (project, plan) = load_plan::<S>(&args.project, default_project)?;
    if args.dry_run {
        #[cfg(feature = "kubernetes")]
        return crate::kubernetes::cli::dry_run(&project, &plan);
        #[cfg(not(feature = "kubernetes"))]
        return Err(Error::KubernetesNotCompiled);
    }
    let mut backends = args.backends.connect().await?;
    let monitor_url = args.monitor.url_for(&project);
    // The dashboard served during a launch can cancel this run, and only this run.
    let run_control = Arc::new(crate::control::LaunchControl::default());
    backends.monitor = match monitor_url.split_once(':').map(|(scheme, _)| scheme) {
        Some("memory" | "http" | "https") => {
            MonitorLink::connect(&monitor_url, args.monitor.token.clone()).await?
        }
        _ => MonitorLink::Local(Monitor::new(
            Store::open(&monitor_url).await?,
            Some(run_control.clone()),
        )),
    };
    let dashboard = match &backends.monitor {
        MonitorLink::Local(monitor) if !args.no_dashboard && !args.detach => {
            Some(Served::start(monitor.clone(), args.dashboard, args.monitor.token.clone()).await?)
        }
        _ => None,
    };
    // Agents in other processes report to the dashboard's API, or straight to the store.
    let agents_monitor = match (&dashboard, &backends.monitor) {
        (Some(served), _) => Some(served.url()),
        (None, MonitorLink::Memory(_)) => None,
        (None, _) => Some(monitor_url.clone()),
    };
    let run_id = RunId::new();
    let output = args
        .output
        .clone()
        .unwrap_or_else(|| crate::control::run_dir(&project, &run_id).join("results.jsonl"));
    let grace = Duration::try_from_secs_f64(args.grace_secs).unwrap_or(Duration::from_secs(10));
    let shared = !backends.queue.is_in_process() && !backends.store.is_in_process();
    let agents_as = args.agents_as.unwrap_or(if shared {
        AgentsAs::Processes
    } else {
        AgentsAs::Tasks
    });
    let launcher = match agents_as {
        _ if kubernetes && !shared => return Err(Error::KubernetesNeedsSharedBackends),
        #[cfg(feature = "kubernetes")]
        _ if kubernetes => {
            Launcher::Kubernetes(crate::kubernetes::cli::launcher(&project, &plan).await?)
        }
        #[cfg(not(feature = "kubernetes"))]
        _ if kubernetes => return Err(Error::KubernetesNotCompiled),
        AgentsAs::Tasks if args.detach => return Err(Error::DetachNeedsSharedBackends),
        AgentsAs::Tasks => Launcher::InProcess(runner),
        AgentsAs::Processes if !shared => return Err(Error::ProcessesNeedSharedBackends),
        AgentsAs::External if !shared => return Err(Error::ProcessesNeedSharedBackends),
        AgentsAs::External => Launcher::External,
        AgentsAs::Processes => {
            let mut launcher = args
                .backends
                .process_launcher(agents_monitor, args.monitor.token.clone())?;
            if args.detach {
                launcher.detached_logs =
                    Some(crate::control::run_dir(&project, &run_id).join("agents"));
            }
            Launcher::Processes(launcher)
        }
    };
    let run_dir = crate::control::run_dir(&project, &run_id);
    #[cfg(feature = "kubernetes")]
    let pods = match &launcher {
        Launcher::Kubernetes(pods) => Some(pods.clone()),
        _ => None,
    };
    let tune_name = args.project.tune.as_ref().map(tune_name);
    let monitor_link = backends.monitor.clone();
    let queue = backends.queue.clone();
    let orchestrator = Orchestrator::new(backends, launcher)
        .with_grace(grace)
        .with_evidence_dir(run_dir.join("evidence"))
        .with_project(
            crate::control::project_name(&project),
            tune_name.or(Some("local".into())),
        );
    // A detached run's results file is written by whoever attaches to it. The file is claimed
    // before publishing and emptied only once the run is launched.
    let claimed = (!args.detach)
        .then(|| ResultsFile::claim(&output))
        .transpose()?;
    let handle = match orchestrator.launch_as(&plan, run_id).await {
        Ok(handle) => handle,
        Err(error) => {
            if let Some(claimed) = claimed {
                claimed.abandon();
            }
            return Err(error);
        }
    };
    let results = claimed.map(Claimed::begin).transpose()?;
    let run_id_text = handle.run_id().to_string();
    println!(
        "run {}: {} agents, {} jobs",
        handle.run_id(),
        plan.agents(),
        plan.jobs()
    );
    match (&dashboard, &monitor_link) {
        (Some(served), _) => println!("dashboard: {}/#/runs/{}", served.url(), handle.run_id()),
        (None, MonitorLink::Remote(_)) => {
            println!(
                "dashboard: {}/#/runs/{}",
                monitor_url.trim_end_matches('/'),
                handle.run_id()
            );
        }
        _ => {}
    }
    if args.agents_as == Some(AgentsAs::External) {
        println!(
            "agents: start `orchestrate agent --run-id {run_id_text} --index I` for I from 0 to {}, \
             on hosts that reach the backends (ARMADA_AMQP_URL, ARMADA_REDIS_URL, \
             ARMADA_MONITOR_URL)",
            plan.agents().saturating_sub(1)
        );
    }
    // After the run's and the dashboard's lines, which scripts read first.
    print_skipped_rows(&plan);
    let Some(mut results) = results else {
        handle.detach().await;
        queue.close().await;
        if let MonitorLink::Local(monitor) = &monitor_link {
            monitor.close();
        }
        println!(
            "detached: the run ends by itself; `attach {}` follows it and writes its results",
            run_id_text
        );
        return Ok(ExitCode::SUCCESS);
    };
    let control = handle.control();
    run_control.attach(handle.run_id().as_str(), control.clone());
    let signals = CancellationToken::new();
    let signal_task = tokio::spawn(cancel_on_ctrl_c(control.clone(), signals.clone()));

    let (report, summary, write_error) =
        follow_on_terminal(handle, &mut results, plan.jobs(), Some(control)).await;
    signals.cancel();
    let _ = signal_task.await;
    queue.close().await;
    if let MonitorLink::Local(monitor) = &monitor_link {
        monitor.close();
    }
    if let Some(served) = dashboard {
        served.stop().await?;
    }
    let report = report?;
    #[cfg(feature = "kubernetes")]
    if let Some(pods) = pods {
        crate::kubernetes::cli::after_run(&pods, &report.run_id, report.status).await;
    }
    results.finish()?;
    if let Some(error) = write_error {
        return Err(error);
    }
    print!("{}", summary.render(&report, Some(&output)));
    Ok(exit_code(&report, &summary))
}

/// Follows a run to its end with a progress bar, writing each result to the file once.
/// A file that cannot be written cancels the run through `cancel_on_error` (a launch), or
/// stops following it (an attach), and is returned as the third value.
async fn follow_on_terminal(
    handle: RunHandle,
    results: &mut ResultsFile,
    jobs: u64,
    cancel_on_error: Option<RunControl>,
) -> (Result<RunReport>, Summary, Option<Error>) {
    let mut progress = Progress::new(jobs);
    let mut summary = Summary::default();
    let mut retries = 0;
    let mut write_error = None;
    let stop = CancellationToken::new();
    let failed = |error: Error, write_error: &mut Option<Error>| {
        if write_error.is_none() {
            *write_error = Some(error);
            match &cancel_on_error {
                Some(control) => control.cancel(),
                None => stop.cancel(),
            }
        }
    };
    let follow = handle.follow(|event| match event {
        FollowEvent::Result(result) => {
            summary.add(result);
            if let Err(error) = results.write(result) {
                failed(error, &mut write_error);
            }
            progress.update(&summary, retries, false);
        }
        FollowEvent::Progress(counters) => {
            retries = counters.retries;
            progress.update(&summary, retries, false);
            // Keep the file current for anyone following it.
            if let Err(error) = results.flush() {
                failed(error, &mut write_error);
            }
        }
    });
    let report = tokio::select! {
        report = follow => report,
        () = stop.cancelled() => Err(Error::RunTaskStopped),
    };
    progress.finish();
    (report, summary, write_error)
}

/// `launch`'s and `attach`'s exit code for a run that ended.
/// Says which CSV rows a smaller `--agents` or `--jobs` left out.
fn print_skipped_rows(plan: &Plan) {
    for (rows, file, flag, count) in [
        (
            plan.skipped_agent_rows(),
            "data_agent.csv",
            "--agents",
            u64::from(plan.agents()),
        ),
        (
            plan.skipped_job_rows(),
            "data_job.csv",
            "--jobs",
            plan.jobs(),
        ),
    ] {
        if rows > 0 {
            println!(
                "skipped {rows} rows of {file}: they target indexes {count} and above, beyond \
                 {flag} {count}"
            );
        }
    }
}

/// A number of seconds, zero or more.
fn seconds(text: &str) -> std::result::Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs >= 0.0 => Ok(secs),
        _ => Err(format!("`{text}` is not a number of seconds (0 or more)")),
    }
}

/// A number of seconds above zero.
fn positive_seconds(text: &str) -> std::result::Result<f64, String> {
    match seconds(text) {
        Ok(secs) if secs > 0.0 => Ok(secs),
        _ => Err(format!("`{text}` is not a number of seconds above 0")),
    }
}

/// Prints clap's message; `--help` and `--version` exit 0, a usage error 64 (EX_USAGE),
/// which no run outcome uses (2 means some jobs failed).
fn usage_error(error: &clap::Error) -> ExitCode {
    let _ = error.print();
    if error.use_stderr() {
        ExitCode::from(USAGE_ERROR)
    } else {
        ExitCode::SUCCESS
    }
}

/// The exit code of a command line that does not parse (`sysexits.h`'s `EX_USAGE`).
const USAGE_ERROR: u8 = 64;

fn exit_code(report: &RunReport, summary: &Summary) -> ExitCode {
    match report.status {
        RunStatus::Canceled => ExitCode::from(130),
        RunStatus::Failed => ExitCode::from(3),
        _ if summary.total() != summary.succeeded() => ExitCode::from(2),
        _ => ExitCode::SUCCESS,
    }
}

fn tune_name(tune: &Tune) -> String {
    match tune {
        Tune::Local => "local".to_owned(),
        Tune::Distant => "distant".to_owned(),
        Tune::Path(path) => path.display().to_string(),
    }
}

/// `serve` (or `monitor`): serves the orchestrator service, the monitor's API and the
/// dashboard over a store until Ctrl-C, launching runs of this project when asked.
async fn serve<S: Script>(
    args: MonitorArgs,
    runner: Arc<dyn AgentRunner>,
    default_project: &Path,
) -> Result<ExitCode> {
    let project = project_dir(args.project.project.as_deref(), default_project);
    let store_url = args.store.clone().unwrap_or_else(|| {
        format!(
            "sqlite:{}",
            project.join(".armada").join("monitor.sqlite").display()
        )
    });
    armada_monitor::server::require_token(args.listen, args.token.as_deref())?;
    let stall_limit =
        Duration::try_from_secs_f64(args.stall_secs).unwrap_or(armada_monitor::DEFAULT_STALL_LIMIT);
    let store = Store::open(&store_url).await?.with_stall_limit(stall_limit);
    let control = crate::ProjectControl::new(&project, Plan::for_script::<S>);
    control.limit_jobs(args.max_jobs);
    let monitor = Monitor::new(store, Some(control.clone()));
    let app = armada_monitor::server::app_with_hosts(
        monitor.clone(),
        args.token.clone(),
        args.allow_hosts.clone(),
        crate::service::routes(control.clone(), monitor.clone()),
    );
    let served = Served::start_app(app, args.listen, args.token.as_deref()).await?;
    let mut backends = args.backends.connect().await?;
    backends.monitor = MonitorLink::Local(monitor.clone());
    let shared = !backends.queue.is_in_process() && !backends.store.is_in_process();
    let launcher = match args.agents_as.unwrap_or(if shared {
        AgentsAs::Processes
    } else {
        AgentsAs::Tasks
    }) {
        AgentsAs::Tasks => Launcher::InProcess(runner),
        AgentsAs::Processes | AgentsAs::External if !shared => {
            return Err(Error::ProcessesNeedSharedBackends);
        }
        AgentsAs::External => Launcher::External,
        AgentsAs::Processes => Launcher::Processes(
            args.backends
                .process_launcher(Some(served.url()), args.token.clone())?,
        ),
    };
    let queue = backends.queue.clone();
    control.attach(Orchestrator::new(backends, launcher));
    println!(
        "dashboard and service for {}: {}/ (runs stored in {}); Ctrl-C stops",
        control.project(),
        served.url(),
        monitor.store().url()
    );
    let _ = tokio::signal::ctrl_c().await;
    eprintln!("stopping: runs launched from the dashboard are canceled");
    control.shutdown().await;
    queue.close().await;
    monitor.close();
    served.stop().await?;
    Ok(ExitCode::SUCCESS)
}

/// First Ctrl-C cancels the run gracefully; a second one stops it now.
async fn cancel_on_ctrl_c(control: RunControl, done: CancellationToken) {
    for press in 0.. {
        tokio::select! {
            () = done.cancelled() => return,
            signal = tokio::signal::ctrl_c() => {
                if signal.is_err() {
                    return;
                }
            }
        }
        if press == 0 {
            eprintln!(
                "\ncanceling: agents finish their current job; press Ctrl-C again to stop now"
            );
            control.cancel();
        } else {
            control.abort();
            return;
        }
    }
}

async fn agent(args: AgentArgs, runner: Arc<dyn AgentRunner>) -> Result<ExitCode> {
    let run_id = RunId::parse(&args.run_id)?;
    let mut backends = args.backends.connect_shared().await?;
    if let Some(url) = &args.monitor.url {
        backends.monitor = MonitorLink::connect(url, args.monitor.token.clone()).await?;
    }
    let monitor = MonitorClient::start(
        run_id.clone(),
        backends.monitor.sink(),
        ClientOptions::default(),
    );
    let shutdown = CancellationToken::new();
    let queue = backends.queue.clone();
    let spec = AgentSpec {
        evidence_dir: args.evidence_dir.clone(),
        run_id,
        index: args.index,
        store: backends.store,
        queue: backends.queue,
        events: monitor.sender(),
        shutdown: shutdown.clone(),
    };
    // Ctrl-C stops taking jobs; the current job ends and the context stops before exit.
    let run = runner.run_agent(spec);
    tokio::pin!(run);
    let exit = tokio::select! {
        exit = &mut run => exit,
        _ = tokio::signal::ctrl_c() => {
            shutdown.cancel();
            run.await
        }
    };
    monitor.close().await;
    queue.close().await;
    match exit? {
        armada_core::AgentExit::Finished { .. } => Ok(ExitCode::SUCCESS),
        armada_core::AgentExit::StartFailed { error } | armada_core::AgentExit::Died { error } => {
            eprintln!("error: {error}");
            Ok(ExitCode::from(1))
        }
    }
}

async fn cancel(args: CancelArgs) -> Result<ExitCode> {
    let run_id = RunId::parse(&args.run_id)?;
    let mut backends = args.backends.connect_shared().await?;
    if let Some(url) = &args.monitor.url {
        backends.monitor = MonitorLink::connect(url, args.monitor.token.clone()).await?;
    }
    let queue = backends.queue.clone();
    let grace = Duration::try_from_secs_f64(args.grace_secs).unwrap_or(Duration::from_secs(10));
    let handle = match RunHandle::cancel_stored(backends, run_id.clone(), grace).await {
        Ok(handle) => handle,
        // Its state is gone (Redis lost it, or it expired): what it left in the queue goes too.
        Err(Error::Core(armada_core::Error::RunNotFound(_))) => {
            let deleted = queue.delete(&run_id).await;
            queue.close().await;
            deleted?;
            println!(
                "run {run_id} is not in the config store (it expired, was lost, or never \
                 existed); its queues, if any, were deleted"
            );
            return Ok(ExitCode::SUCCESS);
        }
        Err(error) => {
            queue.close().await;
            return Err(error);
        }
    };
    println!(
        "run {run_id} canceled: its agents stop after their current job (waiting up to {}s)",
        grace.as_secs_f64()
    );
    let report = handle.follow(|_| {}).await;
    queue.close().await;
    let report = report?;
    println!(
        "run {run_id} ended {}: {} of {} jobs done",
        report.status.as_str(),
        report.progress.succeeded + report.progress.failed,
        report.progress.jobs
    );

    if args.target == Target::Kubernetes {
        #[cfg(feature = "kubernetes")]
        crate::kubernetes::cli::cancel(&run_id, &args.namespace).await?;
        #[cfg(not(feature = "kubernetes"))]
        return Err(Error::KubernetesNotCompiled);
    }
    Ok(ExitCode::SUCCESS)
}

/// `attach`: follows a run from the store to its end, as `launch` would have, and ends it if
/// no one else does. Ctrl-C stops following; the run goes on.
async fn attach(args: AttachArgs, default_project: &Path) -> Result<ExitCode> {
    let run_id = RunId::parse(&args.run_id)?;
    let project = project_dir(args.project.as_deref(), default_project);
    let mut backends = args.backends.connect_shared().await?;
    backends.monitor =
        MonitorLink::connect(&args.monitor.url_for(&project), args.monitor.token.clone()).await?;
    let output = args
        .output
        .unwrap_or_else(|| crate::control::run_dir(&project, &run_id).join("results.jsonl"));
    let mut results = ResultsFile::resume(&output, &run_id)?;
    let queue = backends.queue.clone();
    let monitor_link = backends.monitor.clone();
    let handle = RunHandle::attach(backends, run_id).await?;
    let jobs = handle.jobs();
    println!("run {}: attached, {jobs} jobs", handle.run_id());
    let followed = tokio::select! {
        followed = follow_on_terminal(handle, &mut results, jobs, None) => Some(followed),
        _ = tokio::signal::ctrl_c() => None,
    };
    queue.close().await;
    if let MonitorLink::Local(monitor) = &monitor_link {
        monitor.close();
    }
    results.finish()?;
    let Some((report, summary, write_error)) = followed else {
        eprintln!("\nstopped following: the run goes on");
        return Ok(ExitCode::from(130));
    };
    if let Some(error) = write_error {
        return Err(error);
    }
    let report = report?;
    print!("{}", summary.render(&report, Some(&output)));
    Ok(exit_code(&report, &summary))
}

/// `results`: a run's results as JSON lines, once it ended.
async fn results(args: ResultsArgs) -> Result<ExitCode> {
    let run_id = RunId::parse(&args.run_id)?;
    let backends = args.backends.connect_shared().await?;
    backends.queue.close().await;
    let store = &backends.store;
    let progress = store.progress(&run_id).await?;
    // Ended, and every job has its line (a canceled run's unfinished jobs are recorded
    // last, by whoever ended it).
    if store.finished(&run_id).await?.is_none() || progress.terminal < progress.jobs {
        return Err(Error::RunNotEnded {
            run: run_id,
            terminal: progress.terminal,
            jobs: progress.jobs,
        });
    }
    let all = store.results_after(&run_id, 0, Duration::ZERO).await?;
    let (path, mut out): (String, Box<dyn Write>) = match &args.output {
        Some(path) => {
            let file = std::fs::File::create(path).map_err(|source| Error::Results {
                path: path.display().to_string(),
                source,
            })?;
            (path.display().to_string(), Box::new(BufWriter::new(file)))
        }
        None => (
            "standard output".to_owned(),
            Box::new(BufWriter::new(std::io::stdout().lock())),
        ),
    };
    let mut seen = std::collections::HashSet::new();
    for result in all.iter().filter(|result| seen.insert(result.index)) {
        serde_json::to_writer(&mut out, result)
            .map_err(std::io::Error::from)
            .and_then(|()| out.write_all(b"\n"))
            .map_err(|source| Error::Results {
                path: path.clone(),
                source,
            })?;
    }
    out.flush()
        .map_err(|source| Error::Results { path, source })?;
    Ok(ExitCode::SUCCESS)
}
