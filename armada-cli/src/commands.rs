//! The commands besides `launch` and `serve`: `validate`, `plan`, and those that work on a
//! run held in shared backends (`agent`, `cancel`, `attach`, `results`).

use std::io::{BufWriter, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use armada_core::{AgentExit, AgentRunner, AgentSpec, Plan, RunId, Script, WhenBlocked};
use armada_monitor::{ClientOptions, MonitorClient, MonitorLink};
use armada_orchestrator::{ResultsFile, RunHandle};
use tokio_util::sync::CancellationToken;

use crate::args::{AgentArgs, AttachArgs, CancelArgs, ProjectArgs, ResultsArgs, Target};
use crate::follow::{exit_code, follow_on_terminal};
use crate::{Error, Result, load_plan, project_dir};

/// `validate`: the plan's counts, or every problem of the project.
pub(crate) fn validate<S: Script>(args: &ProjectArgs, default_project: &Path) -> Result<ExitCode> {
    let (project, plan) = load_plan::<S>(args, default_project)?;
    println!(
        "{}: valid, {} agents and {} jobs",
        project.display(),
        plan.agents(),
        plan.jobs()
    );
    print_skipped_rows(&plan);
    Ok(ExitCode::SUCCESS)
}

/// `plan`: every merged agent and job message, as JSON lines.
pub(crate) fn plan<S: Script>(args: &ProjectArgs, default_project: &Path) -> Result<ExitCode> {
    let (_, plan) = load_plan::<S>(args, default_project)?;
    let mut lines = Vec::new();
    plan.write_json_lines(&mut lines)
        .map_err(|source| Error::Output {
            what: "standard output".into(),
            source,
        })?;
    crate::print_out(&lines)?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn agent(args: AgentArgs, runner: Arc<dyn AgentRunner>) -> Result<ExitCode> {
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
        // Only the process's end frees a thread a script holds; its launcher starts another.
        when_blocked: WhenBlocked::Exit,
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
        AgentExit::Finished { .. } => Ok(ExitCode::SUCCESS),
        AgentExit::Blocked { error } => {
            eprintln!("{}", armada_core::redact_secrets(&error));
            Ok(ExitCode::from(AgentExit::BLOCKED_EXIT_CODE))
        }
        AgentExit::StartFailed { error } | AgentExit::Died { error } => {
            eprintln!("error: {}", armada_core::redact_secrets(&error));
            Ok(ExitCode::from(1))
        }
        other => {
            eprintln!("error: the agent ended as {other:?}");
            Ok(ExitCode::from(1))
        }
    }
}

pub(crate) async fn cancel(args: CancelArgs) -> Result<ExitCode> {
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
        Err(armada_orchestrator::Error::Core(armada_core::Error::RunNotFound(_))) => {
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
            return Err(error.into());
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
        crate::kubernetes::cancel(&run_id, &args.namespace).await?;
        #[cfg(not(feature = "kubernetes"))]
        return Err(Error::KubernetesNotCompiled);
    }
    Ok(ExitCode::SUCCESS)
}

/// `attach`: follows a run from the store to its end, as `launch` would have, and ends it if
/// no one else does. Ctrl-C stops following; the run goes on.
pub(crate) async fn attach(args: AttachArgs, default_project: &Path) -> Result<ExitCode> {
    let run_id = RunId::parse(&args.run_id)?;
    let project = project_dir(args.project.as_deref(), default_project);
    let mut backends = args.backends.connect_shared().await?;
    backends.monitor =
        MonitorLink::connect(&args.monitor.url_for(&project), args.monitor.token.clone()).await?;
    let output = args
        .output
        .unwrap_or_else(|| armada_orchestrator::run_dir(&project, &run_id).join("results.jsonl"));
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
        return Err(error.into());
    }
    let report = report?;
    print!("{}", summary.render(&report, Some(&output)));
    Ok(exit_code(&report, &summary))
}

/// `results`: a run's results as JSON lines, once it ended.
pub(crate) async fn results(args: ResultsArgs) -> Result<ExitCode> {
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
            let file = std::fs::File::create(path).map_err(|source| Error::Output {
                what: path.display().to_string(),
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
            .map_err(|source| Error::Output {
                what: path.clone(),
                source,
            })?;
    }
    out.flush()
        .map_err(|source| Error::Output { what: path, source })?;
    Ok(ExitCode::SUCCESS)
}

/// Says which CSV rows a smaller `--agents` or `--jobs` left out.
pub(crate) fn print_skipped_rows(plan: &Plan) {
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
