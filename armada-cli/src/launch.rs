//! `launch`: validate, publish, start the agents, follow the run with a progress display and
//! its dashboard, write the results file and print the summary.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use armada_core::backend::redact_url;
use armada_core::{AgentRunner, Plan, RunId, Script, Tune};
use armada_monitor::model::RunLabel;
use armada_monitor::server::Served;
use armada_monitor::{Later, Monitor, MonitorLink, Store};
use armada_orchestrator::{
    Backends, Claimed, LaunchControl, Launcher, Orchestrator, ResultsFile, RunHandle, run_dir,
};
use tokio_util::sync::CancellationToken;

use crate::args::{AgentsAs, BackendArgs, LaunchArgs, Target};
use crate::commands::print_skipped_rows;
use crate::follow::{cancel_on_ctrl_c, exit_code, follow_on_terminal};
use crate::{Error, Result, load_plan};

/// How often a kept dashboard checks whether a tab is still open on it.
const WATCHERS_POLL: Duration = Duration::from_millis(500);

pub(crate) async fn launch<S: Script>(
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
    let label = RunLabel::new(args.name.as_deref(), &args.tags).map_err(Error::Label)?;
    if args.dry_run {
        return dry_run(&project, &plan);
    }
    let run_id = RunId::new();
    let mut session = Session::open(&args, &project).await?;
    let launcher = match session
        .launcher(&args, &project, &plan, &run_id, runner)
        .await
    {
        Ok(launcher) => launcher,
        Err(error) => {
            // The launch's own error is the one to report, not a failure to close.
            let _ = session.close().await;
            return Err(error);
        }
    };
    // A detached run's results file is written by whoever attaches to it. The file is claimed
    // before publishing and emptied only once the run is launched.
    let output = args
        .output
        .clone()
        .unwrap_or_else(|| run_dir(&project, &run_id).join("results.jsonl"));
    let claimed = (!args.detach)
        .then(|| ResultsFile::claim(&output))
        .transpose()?;
    let handle = match session
        .orchestrator(&args, &project, &run_id, launcher, label)
        .launch_as(&plan, run_id)
        .await
    {
        Ok(handle) => handle,
        Err(error) => {
            if let Some(claimed) = claimed {
                claimed.abandon();
            }
            let _ = session.close().await;
            return Err(error.into());
        }
    };
    let results = claimed.map(Claimed::begin).transpose()?;
    // The dashboard knows its run, and where the run lives on, before anyone is told of it.
    session
        .run_control
        .attach(handle.run_id().as_str(), handle.control());
    let later = session.later(&args, &project, handle.run_id());
    if let Some(later) = &later {
        session.run_control.kept_at(later.clone());
    }
    session.announce(&handle, &plan, &args);
    match results {
        Some(results) => {
            let end = RunEnd {
                output: &output,
                keep_dashboard: args.keep_dashboard,
                later,
            };
            session.follow(handle, results, &plan, end).await
        }
        None => session.detach(handle).await,
    }
}

/// What a launch does once its run has ended: where the results went, whether the dashboard
/// stays up while a tab is open on it, and where the run can be seen later.
struct RunEnd<'a> {
    output: &'a Path,
    keep_dashboard: bool,
    later: Option<Later>,
}

/// What a launch opened before its run is published, and closes once it is done with it.
struct Session {
    /// Taken by the orchestrator when the run is launched.
    backends: Option<Backends>,
    queue: armada_core::JobQueue,
    monitor: MonitorLink,
    /// Where the run's monitoring goes: a store's URL, or a monitor service's.
    monitor_url: String,
    monitor_token: Option<String>,
    /// The dashboard served while the run goes on; it can cancel this run, and only this run.
    dashboard: Option<Served>,
    run_control: Arc<LaunchControl>,
    shared: bool,
    /// The Kubernetes launcher, to delete the Job of a run that did not complete.
    #[cfg(feature = "kubernetes")]
    pods: Option<armada_orchestrator::kubernetes::KubernetesLauncher>,
}

impl Session {
    async fn open(args: &LaunchArgs, project: &Path) -> Result<Self> {
        let mut backends = args.backends.connect().await?;
        let monitor_url = args.monitor.url_for(project);
        let monitor_token = args.monitor.token.clone();
        let run_control = Arc::new(LaunchControl::default());
        backends.monitor = match monitor_url.split_once(':').map(|(scheme, _)| scheme) {
            Some("memory" | "http" | "https") => {
                MonitorLink::connect(&monitor_url, monitor_token.clone()).await?
            }
            _ => MonitorLink::Local(Monitor::new(
                Store::open(&monitor_url).await?,
                Some(run_control.clone()),
            )),
        };
        let dashboard = match &backends.monitor {
            MonitorLink::Local(monitor) if !args.no_dashboard && !args.detach => {
                Some(Served::start(monitor.clone(), args.dashboard, monitor_token.clone()).await?)
            }
            _ => None,
        };
        Ok(Self {
            queue: backends.queue.clone(),
            monitor: backends.monitor.clone(),
            shared: !backends.queue.is_in_process() && !backends.store.is_in_process(),
            backends: Some(backends),
            monitor_url,
            monitor_token,
            dashboard,
            run_control,
            #[cfg(feature = "kubernetes")]
            pods: None,
        })
    }

    /// Where agents in other processes report: the dashboard's API, or straight to the store.
    fn agents_monitor(&self) -> Option<String> {
        match (&self.dashboard, &self.monitor) {
            (Some(served), _) => Some(served.url()),
            (None, MonitorLink::Memory(_)) => None,
            (None, _) => Some(self.monitor_url.clone()),
        }
    }

    async fn launcher(
        &mut self,
        args: &LaunchArgs,
        project: &Path,
        plan: &Plan,
        run_id: &RunId,
        runner: Arc<dyn AgentRunner>,
    ) -> Result<Launcher> {
        if args.target == Target::Kubernetes {
            if !self.shared {
                return Err(Error::KubernetesNeedsSharedBackends);
            }
            return self.kubernetes_launcher(project, plan).await;
        }
        let agents_as = args.agents_as.unwrap_or(AgentsAs::default_for(self.shared));
        if args.detach && agents_as == AgentsAs::Tasks {
            return Err(Error::DetachNeedsSharedBackends);
        }
        let mut launcher = agents_launcher(
            agents_as,
            self.shared,
            runner,
            &args.backends,
            self.agents_monitor(),
            self.monitor_token.clone(),
        )?;
        if let Launcher::Processes(processes) = &mut launcher
            && args.detach
        {
            processes.detached_logs = Some(run_dir(project, run_id).join("agents"));
        }
        Ok(launcher)
    }

    fn orchestrator(
        &mut self,
        args: &LaunchArgs,
        project: &Path,
        run_id: &RunId,
        launcher: Launcher,
        label: RunLabel,
    ) -> Orchestrator {
        let grace = Duration::try_from_secs_f64(args.grace_secs).unwrap_or(Duration::from_secs(10));
        let tune = args.project.tune.as_ref().map_or("local".into(), tune_name);
        let backends = self.backends.take().unwrap_or_else(|| {
            unreachable!("a launch publishes one run, so its backends are taken once")
        });
        Orchestrator::new(backends, launcher)
            .with_label(label)
            .with_grace(grace)
            .with_evidence_dir(run_dir(project, run_id).join("evidence"))
            .with_project(armada_orchestrator::project_name(project), Some(tune))
    }

    /// The run's first lines, which scripts read: its id and counts, where to watch it, and
    /// what a smaller `--agents` or `--jobs` left out.
    fn announce(&self, handle: &RunHandle, plan: &Plan, args: &LaunchArgs) {
        let run_id = handle.run_id();
        println!(
            "run {run_id}: {} agents, {} jobs",
            plan.agents(),
            plan.jobs()
        );
        match (&self.dashboard, &self.monitor) {
            (Some(served), _) => println!("dashboard: {}/#/runs/{run_id}", served.url()),
            (None, MonitorLink::Remote(_)) => println!(
                "dashboard: {}/#/runs/{run_id}",
                self.monitor_url.trim_end_matches('/')
            ),
            _ => {}
        }
        println!("backends: {}", self.describe_backends(args));
        if args.agents_as == Some(AgentsAs::External) {
            println!(
                "agents: start `orchestrate agent --run-id {run_id} --index I` for I from 0 to \
                 {}, on hosts that reach the backends (ARMADA_QUEUE_URL, ARMADA_STORE_URL, \
                 ARMADA_MONITOR_URL)",
                plan.agents().saturating_sub(1)
            );
        }
        print_skipped_rows(plan);
    }

    /// Where the run can be seen once this launch has ended: in the store that keeps it, served
    /// by `serve` at its default address, or in the monitor service it was reported to.
    fn later(&self, args: &LaunchArgs, project: &Path, run_id: &RunId) -> Option<Later> {
        match &self.monitor {
            MonitorLink::Local(_) => {
                // Both absolute, so that the command runs as printed from any folder: a
                // binary started by `cargo run` is on no `PATH`.
                let program = std::env::current_exe()
                    .map_or_else(|_| "orchestrate".to_owned(), |path| shell_word(&path));
                let project =
                    shell_word(&std::fs::canonicalize(project).unwrap_or_else(|_| project.into()));
                let mut command = format!("{program} serve --project {project}");
                if args.monitor.url.is_some() {
                    command.push_str(&format!(" --monitor {}", redact_url(&self.monitor_url)));
                }
                Some(Later {
                    command: Some(command),
                    url: format!("http://{}/#/runs/{run_id}", crate::args::DEFAULT_SERVE_ADDR),
                })
            }
            MonitorLink::Remote(_) => Some(Later {
                command: None,
                url: format!("{}/#/runs/{run_id}", self.monitor_url.trim_end_matches('/')),
            }),
            _ => None,
        }
    }

    /// The backends, where their URLs came from, and where agents run and why.
    fn describe_backends(&self, args: &LaunchArgs) -> String {
        let agents = match (args.target, args.agents_as) {
            (Target::Kubernetes, _) => "agents as Kubernetes pods (--target)".to_owned(),
            (_, Some(agents_as)) => {
                let name = clap::ValueEnum::to_possible_value(&agents_as)
                    .map(|value| value.get_name().to_owned())
                    .unwrap_or_default();
                format!("agents as {name} (--agents-as)")
            }
            (_, None) if self.shared => {
                "agents as processes (the default with shared backends)".to_owned()
            }
            (_, None) => "agents as tasks (the default with in-memory backends)".to_owned(),
        };
        format!("{}; {agents}", args.backends.describe())
    }

    #[cfg(feature = "kubernetes")]
    async fn kubernetes_launcher(&mut self, project: &Path, plan: &Plan) -> Result<Launcher> {
        let pods = crate::kubernetes::launcher(project, plan).await?;
        self.pods = Some(pods.clone());
        Ok(Launcher::Kubernetes(pods))
    }

    #[cfg(not(feature = "kubernetes"))]
    async fn kubernetes_launcher(&mut self, _: &Path, _: &Plan) -> Result<Launcher> {
        Err(Error::KubernetesNotCompiled)
    }

    /// Leaves a detached run to its agents.
    async fn detach(self, handle: RunHandle) -> Result<ExitCode> {
        let run_id = handle.run_id().clone();
        handle.detach().await;
        self.close().await?;
        println!(
            "detached: the run ends by itself; `attach {run_id}` follows it and writes its \
             results"
        );
        Ok(ExitCode::SUCCESS)
    }

    /// Follows the run to its end on the terminal, with Ctrl-C to cancel it.
    async fn follow(
        self,
        handle: RunHandle,
        mut results: ResultsFile,
        plan: &Plan,
        end: RunEnd<'_>,
    ) -> Result<ExitCode> {
        let control = handle.control();
        let signals = CancellationToken::new();
        let signal_task = tokio::spawn(cancel_on_ctrl_c(control.clone(), signals.clone()));
        #[cfg(feature = "kubernetes")]
        let pods = self.pods.clone();
        let (report, summary, write_error) =
            follow_on_terminal(handle, &mut results, plan.jobs(), Some(control)).await;
        signals.cancel();
        let _ = signal_task.await;
        let ended = async {
            let report = report?;
            #[cfg(feature = "kubernetes")]
            if let Some(pods) = pods {
                crate::kubernetes::after_run(&pods, &report.run_id, report.status).await;
            }
            results.finish()?;
            if let Some(error) = write_error {
                return Err(error.into());
            }
            print!("{}", summary.render(&report, Some(end.output)));
            match &end.later {
                Some(Later {
                    command: Some(command),
                    url,
                }) => println!("see this run later: `{command}`, then {url}"),
                Some(Later { command: None, url }) => println!("see this run later at {url}"),
                None => {}
            }
            Ok(exit_code(&report, &summary))
        }
        .await;
        // The summary is out before the dashboard is kept: the run is over either way.
        if end.keep_dashboard && ended.is_ok() {
            self.keep_dashboard_while_watched().await;
        }
        self.close().await?;
        ended
    }

    /// Serves the dashboard after the run until no tab is open on it, or Ctrl-C.
    async fn keep_dashboard_while_watched(&self) {
        let (Some(served), MonitorLink::Local(monitor)) = (&self.dashboard, &self.monitor) else {
            return;
        };
        if monitor.watchers() == 0 {
            return;
        }
        eprintln!(
            "the run has ended; its dashboard at {} stays up while a tab is open on it \
             (Ctrl-C to stop it now)",
            served.url()
        );
        let closed = async {
            while monitor.watchers() > 0 {
                tokio::time::sleep(WATCHERS_POLL).await;
            }
        };
        tokio::select! {
            () = closed => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }

    async fn close(self) -> Result<()> {
        self.queue.close().await;
        if let MonitorLink::Local(monitor) = &self.monitor {
            monitor.close();
        }
        if let Some(served) = self.dashboard {
            served.stop().await?;
        }
        Ok(())
    }
}

impl AgentsAs {
    /// Tasks with in-memory backends, processes with shared ones.
    pub(crate) fn default_for(shared: bool) -> Self {
        if shared { Self::Processes } else { Self::Tasks }
    }
}

/// The launcher of agents on this machine (or started by the user), as `launch` and `serve`
/// choose it.
pub(crate) fn agents_launcher(
    agents_as: AgentsAs,
    shared: bool,
    runner: Arc<dyn AgentRunner>,
    backends: &BackendArgs,
    monitor_url: Option<String>,
    monitor_token: Option<String>,
) -> Result<Launcher> {
    Ok(match agents_as {
        AgentsAs::Tasks => Launcher::InProcess(runner),
        AgentsAs::Processes | AgentsAs::External if !shared => {
            return Err(Error::ProcessesNeedSharedBackends);
        }
        AgentsAs::External => Launcher::External,
        AgentsAs::Processes => {
            Launcher::Processes(backends.process_launcher(monitor_url, monitor_token)?)
        }
    })
}

#[cfg(feature = "kubernetes")]
fn dry_run(project: &Path, plan: &Plan) -> Result<ExitCode> {
    crate::kubernetes::dry_run(project, plan)
}

#[cfg(not(feature = "kubernetes"))]
fn dry_run(_: &Path, _: &Plan) -> Result<ExitCode> {
    Err(Error::KubernetesNotCompiled)
}

fn tune_name(tune: &Tune) -> String {
    match tune {
        Tune::Local => "local".to_owned(),
        Tune::Distant => "distant".to_owned(),
        Tune::Path(path) => path.display().to_string(),
    }
}

/// A path as one word of a shell command: quoted when it holds a space.
fn shell_word(path: &Path) -> String {
    let path = path.display().to_string();
    if path.contains(char::is_whitespace) {
        format!("'{path}'")
    } else {
        path
    }
}
