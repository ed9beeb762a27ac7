//! The command line of an Armada project binary (`cargo run --bin orchestrate -- …`), and
//! everything only a terminal needs: the live progress display, the end-of-run summary, the
//! HTTP service of `serve`, and the standalone `armada-monitor` binary.
//!
//! The libraries (`armada-core`, `armada-agent`, `armada-orchestrator`, `armada-monitor`)
//! never depend on this crate, so a service that embeds the runtime compiles no clap,
//! indicatif or tracing-subscriber. The facade reaches it through its default `cli` feature,
//! which `armada::main!` needs.
//!
//! - `launch` (the default): validate, publish, run, show progress, write results, summarize.
//! - `validate`: report every problem of the project; publish nothing.
//! - `plan`: print every merged agent and job message as JSON lines.
//! - `cancel RUN_ID`, `attach RUN_ID`, `results RUN_ID`: work on a run held in shared backends.
//! - `serve`: the project's orchestrator over HTTP ([`service`]) with the dashboard.
//! - `agent` (hidden): run one agent of a run held in shared backends.
//! - With the `kubernetes` feature: `launch --target kubernetes [--dry-run]`, `status RUN_ID`
//!   and `manifests`.
//!
//! Exit codes of `launch`: 0 every job succeeded; 2 the run completed with failed jobs;
//! 3 the run stopped with no agent left; 130 canceled (Ctrl-C); 64 a command line that does
//! not parse; 1 any other error (bad input, unreachable backend), in which case nothing was
//! published.
//!
//! # Features
//! - `kubernetes`: the Kubernetes commands and `launch --target kubernetes`.

mod args;
mod commands;
mod error;
mod follow;
#[cfg(feature = "kubernetes")]
mod kubernetes;
mod launch;
mod progress;
mod serve;
pub mod service;
mod summary;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use armada_core::{AgentRunner, Plan, ProjectFiles, RunOverrides, Script, Tune};
use clap::{CommandFactory, FromArgMatches};

use crate::args::{Cli, Command, ProjectArgs};
pub use crate::error::{Error, Result};
pub use crate::summary::Summary;

/// The project binary's `main`: installs a tracing subscriber (this runs in the binary, never
/// in a library), and runs the process's command line for the script `S`.
pub fn main<S: Script>(runner: Arc<dyn AgentRunner>, default_project: &Path) -> ExitCode {
    install_tracing();
    run_blocking::<S>(
        runner,
        default_project,
        std::env::args_os().collect::<Vec<_>>(),
    )
}

/// Runs one command line (`args`, the program's name first) for the script `S` to its end on a
/// runtime of its own, and returns its exit code.
///
/// Works with or without a surrounding tokio runtime: inside one (a `#[tokio::main]`), the
/// command runs on a thread of its own, since a runtime cannot block inside another.
pub fn run_blocking<S: Script>(
    runner: Arc<dyn AgentRunner>,
    default_project: &Path,
    args: impl IntoIterator<Item = impl Into<OsString> + Clone> + Send,
) -> ExitCode {
    let run = || {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(Error::Runtime)
            .map(|runtime| runtime.block_on(execute::<S>(runner, default_project, args)))
    };
    let outcome = if tokio::runtime::Handle::try_current().is_ok() {
        std::thread::scope(|scope| scope.spawn(run).join())
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    } else {
        run()
    };
    outcome.unwrap_or_else(|error| {
        eprintln!("error: {}", armada_core::redact_secrets(&error.to_string()));
        ExitCode::from(1)
    })
}

/// Runs one command line (`args`, the program's name first) for the script `S` on the
/// current runtime, printing what the binary prints, and returns its exit code.
pub async fn execute<S: Script>(
    runner: Arc<dyn AgentRunner>,
    default_project: &Path,
    args: impl IntoIterator<Item = impl Into<OsString> + Clone>,
) -> ExitCode {
    let cli = match parse(args) {
        Ok(cli) => cli,
        Err(error) => return usage_error(&error),
    };
    run_command::<S>(cli, runner, default_project)
        .await
        .unwrap_or_else(|error| {
            eprintln!("error: {}", armada_core::redact_secrets(&error.to_string()));
            ExitCode::from(1)
        })
}

/// Parses a command line, noting where a launch's backend URLs came from.
fn parse(args: impl IntoIterator<Item = impl Into<OsString> + Clone>) -> clap::error::Result<Cli> {
    let matches = Cli::command().try_get_matches_from(args)?;
    let mut cli = Cli::from_arg_matches(&matches)?;
    match (&mut cli.command, matches.subcommand()) {
        (Some(Command::Launch(launch)), Some(("launch", launched))) => {
            launch.backends.origins = args::BackendOrigins::of(launched);
        }
        (None, _) => cli.launch.backends.origins = args::BackendOrigins::of(&matches),
        _ => {}
    }
    Ok(cli)
}

fn install_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // lapin logs a deleted queue, which is how a run's end reaches its agents, as an error,
        // and chromiumoxide warns about every CDP event newer than its protocol; the backends
        // and the browser context report real failures themselves.
        .unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new("warn,lapin=off,chromiumoxide=error")
        });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| RedactingWriter(std::io::stderr()))
        // Colour codes only for a terminal: a log file or a pipe gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

async fn run_command<S: Script>(
    cli: Cli,
    runner: Arc<dyn AgentRunner>,
    default_project: &Path,
) -> Result<ExitCode> {
    match cli.command.unwrap_or(Command::Launch(cli.launch)) {
        Command::Launch(args) => launch::launch::<S>(args, runner, default_project).await,
        Command::Validate(args) => commands::validate::<S>(&args, default_project),
        Command::Plan(args) => commands::plan::<S>(&args, default_project),
        Command::Agent(args) => commands::agent(args, runner).await,
        Command::Serve(args) => serve::serve::<S>(args, runner, default_project).await,
        Command::Cancel(args) => commands::cancel(args).await,
        Command::Attach(args) => commands::attach(args, default_project).await,
        Command::Results(args) => commands::results(args).await,
        #[cfg(feature = "kubernetes")]
        Command::Status(args) => kubernetes::status(&args).await,
        #[cfg(feature = "kubernetes")]
        Command::Manifests(args) => kubernetes::manifests(&args),
    }
}

/// The project a command works on: `--project`, else the current folder when it is a
/// project, else the project the binary was built from.
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

/// Writes `text` to standard output whole, or says why it could not.
fn print_out(text: &[u8]) -> Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    out.write_all(text)
        .and_then(|()| out.flush())
        .map_err(|source| Error::Output {
            what: "standard output".into(),
            source,
        })
}

/// Standard error with every [`Secret`](armada_core::Secret) read in this process hidden: a
/// log line may quote a URL or a config value. Each `write` is one formatted log line.
struct RedactingWriter(std::io::Stderr);

impl std::io::Write for RedactingWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(bytes);
        self.0
            .write_all(armada_core::redact_secrets(&text).as_bytes())?;
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}
