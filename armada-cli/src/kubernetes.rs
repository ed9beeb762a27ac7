//! The Kubernetes side of the command line: `launch --target kubernetes [--dry-run]`,
//! `cancel --target kubernetes`, `status` and `manifests`.

use std::path::Path;
use std::process::ExitCode;

use armada_core::backend::RunStatus;
use armada_core::{ConfigStore, Plan, RunId};
use clap::Args;

use armada_orchestrator::kubernetes::{
    DEFAULT_NAMESPACE, KubernetesLauncher, KubernetesSettings, StackOptions, agent_job, connect,
    delete_job, list_agent_pods, stack, to_yaml,
};
use armada_orchestrator::project_name;

use crate::Result;

/// `manifests`: the stack's objects.
#[derive(Debug, Args)]
pub(crate) struct ManifestsArgs {
    /// The namespace of the stack and of the runs.
    #[arg(long, default_value = DEFAULT_NAMESPACE)]
    namespace: String,
    /// An image holding the `armada-monitor` binary.
    #[arg(long, value_name = "IMAGE", default_value = "armada-monitor:latest")]
    monitor_image: String,
}

/// `status RUN_ID`: a run's pods and progress.
#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    /// The run.
    run_id: String,
    /// The namespace of the run's Job (run_message.kubernetes.namespace).
    #[arg(long, env = "ARMADA_NAMESPACE", default_value = DEFAULT_NAMESPACE)]
    namespace: String,
    /// The config store holding the run's progress (redis://…); without it, only the pods are
    /// shown.
    #[arg(long, env = "ARMADA_STORE_URL", hide_env_values = true)]
    config_store: Option<String>,
}

/// `launch --target kubernetes --dry-run`: prints the Job a launch would create, with a fresh
/// run id; contacts nothing and publishes nothing.
pub(crate) fn dry_run(project: &Path, plan: &Plan) -> Result<ExitCode> {
    let settings = KubernetesSettings::from_run_settings(plan.settings())?;
    let job = agent_job(
        &RunId::new(),
        &project_name(project),
        plan.agents(),
        &settings,
    )?;
    print(&to_yaml(&[job])?)?;
    Ok(ExitCode::SUCCESS)
}

/// The launcher of `launch --target kubernetes`: the settings are checked before the cluster
/// is contacted, and both before anything is published.
pub(crate) async fn launcher(project: &Path, plan: &Plan) -> Result<KubernetesLauncher> {
    let settings = KubernetesSettings::from_run_settings(plan.settings())?;
    let client = connect().await?;
    Ok(KubernetesLauncher::new(
        client,
        settings,
        project_name(project),
    ))
}

/// After a launch: a canceled or failed run's Job is deleted with its pods; a completed run's
/// pods have exited and its Job goes after its time to live.
pub(crate) async fn after_run(launcher: &KubernetesLauncher, run_id: &RunId, status: RunStatus) {
    if status == RunStatus::Completed {
        return;
    }
    match launcher.delete_job(run_id).await {
        Ok(true) => eprintln!("deleted the run's Kubernetes Job and its pods"),
        Ok(false) => {}
        Err(error) => eprintln!("warning: {error}"),
    }
}

/// `cancel RUN_ID --target kubernetes`, once the run is flagged: deletes its Job.
pub(crate) async fn cancel(run_id: &RunId, namespace: &str) -> Result<()> {
    let client = connect().await?;
    if delete_job(&client, namespace, run_id).await? {
        println!("deleted the run's Job in namespace {namespace} (its pods first)");
    } else {
        println!("the run has no Job in namespace {namespace}");
    }
    Ok(())
}

/// `manifests`.
pub(crate) fn manifests(args: &ManifestsArgs) -> Result<ExitCode> {
    let objects = stack(&StackOptions {
        namespace: args.namespace.clone(),
        monitor_image: args.monitor_image.clone(),
    })?;
    print(&to_yaml(&objects)?)?;
    Ok(ExitCode::SUCCESS)
}

/// `status RUN_ID`.
pub(crate) async fn status(args: &StatusArgs) -> Result<ExitCode> {
    let run_id = RunId::parse(&args.run_id)?;
    if let Some(url) = &args.config_store {
        let store = ConfigStore::connect(url).await?;
        let progress = store.progress(&run_id).await?;
        println!(
            "run {run_id}: {}, {}/{} jobs done ({} succeeded, {} failed), {} retries",
            progress.status.as_str(),
            progress.terminal,
            progress.jobs,
            progress.succeeded,
            progress.failed,
            progress.retries
        );
    }
    let client = connect().await?;
    let pods = list_agent_pods(&client, &args.namespace, &run_id).await?;
    if pods.is_empty() {
        println!(
            "no pod of run {run_id} in namespace {}: the Job is gone, or never existed",
            args.namespace
        );
        return Ok(ExitCode::SUCCESS);
    }
    let mut text = format!(
        "{:<6} {:<10} {:<48} {:<20} DETAIL\n",
        "AGENT", "STAGE", "POD", "NODE"
    );
    for pod in &pods {
        let index = pod
            .index
            .map_or_else(|| "?".to_owned(), |index| index.to_string());
        let mut detail = pod.detail.clone().unwrap_or_default();
        if pod.disrupted {
            detail.push_str(" (evicted or preempted, not counted)");
        }
        text.push_str(&format!(
            "{index:<6} {:<10} {:<48} {:<20} {}\n",
            pod.stage.to_string(),
            pod.name,
            pod.node.as_deref().unwrap_or("-"),
            detail.trim()
        ));
    }
    print(&text)?;
    Ok(ExitCode::SUCCESS)
}

fn print(text: &str) -> Result<()> {
    crate::print_out(text.as_bytes())
}
