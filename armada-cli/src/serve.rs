//! `serve` (or `monitor`): the project's orchestrator over HTTP with the monitor's API and the
//! dashboard, over one store, until Ctrl-C.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use armada_core::{AgentRunner, Plan, Script};
use armada_monitor::server::Served;
use armada_monitor::{Monitor, MonitorLink, Store};
use armada_orchestrator::{LaunchLimits, Orchestrator, ProjectControl};

use crate::args::{AgentsAs, ServeArgs};
use crate::launch::agents_launcher;
use crate::{Result, project_dir};

pub(crate) async fn serve<S: Script>(
    args: ServeArgs,
    runner: Arc<dyn AgentRunner>,
    default_project: &Path,
) -> Result<ExitCode> {
    let project = project_dir(args.project.project.as_deref(), default_project);
    let token = args.monitor.token.clone();
    armada_monitor::server::require_token(args.listen, token.as_deref())?;
    let stall_limit =
        Duration::try_from_secs_f64(args.stall_secs).unwrap_or(armada_monitor::DEFAULT_STALL_LIMIT);
    let store = Store::open(&args.monitor.url_for(&project))
        .await?
        .with_stall_limit(stall_limit);
    let control = ProjectControl::new(&project, Plan::for_script::<S>);
    control.set_limits(LaunchLimits {
        jobs: args.max_jobs,
        agents: args.max_agents,
        running_runs: args.max_running_runs,
    });
    let monitor = Monitor::new(store, Some(control.clone()));
    let app = armada_monitor::server::app_with_hosts(
        monitor.clone(),
        token.clone(),
        args.allow_hosts.clone(),
        crate::service::routes(control.clone(), monitor.clone()),
    );
    let served = Served::start_app(app, args.listen, token.as_deref()).await?;
    let mut backends = args.backends.connect().await?;
    backends.monitor = MonitorLink::Local(monitor.clone());
    let shared = !backends.queue.is_in_process() && !backends.store.is_in_process();
    let launcher = agents_launcher(
        args.agents_as.unwrap_or(AgentsAs::default_for(shared)),
        shared,
        runner,
        &args.backends,
        Some(served.url()),
        token,
    )?;
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
