//! # Armada
//!
//! Takes one web-automation script and runs it at scale: a **run** starts N **agents**, each
//! with its own context (browser, proxy, identity), that pull M **jobs** from one shared queue
//! and report every step to a monitor.
//!
//! A project implements [`Script`] (and, when it needs resources of its own, [`AgentContext`]
//! and [`JobContext`]), describes its runs in `config/`, and gets its binary from
//! [`main!`](crate::main):
//!
//! ```no_run
//! use armada::prelude::*;
//!
//! #[derive(serde::Deserialize)]
//! struct Page { url: String }
//!
//! struct Visit;
//!
//! impl Script for Visit {
//!     type Agent = PlainAgent;
//!     type Job = Job<Page>;
//!     type Output = usize;
//!
//!     async fn run(&self, _agent: &mut PlainAgent, job: &mut Job<Page>) -> Result<usize, ScriptError> {
//!         job.report().info(format!("visiting {}", job.payload.url));
//!         Ok(job.payload.url.len())
//!     }
//! }
//!
//! armada::main!(Visit);
//! ```
//!
//! `cargo run --bin orchestrate` then validates the project, runs it with everything embedded
//! (in-memory queue and config store, agents as tasks), shows progress and writes one JSON line
//! per job.
//!
//! # As a library
//!
//! Other services embed the runtime: build a [`Plan`] (from a project folder, from files held
//! in memory, or from messages made in code), launch it through an [`Orchestrator`] on any
//! [`Backends`] and [`Launcher`], and follow it through a [`RunTask`]. Problems with the input
//! come back as [`Error::Invalid`] with every [`Diagnostic`] as data. There is no global state:
//! orchestrators in one process do not interfere. The guide is `docs/guides/library.md`.
//!
//! ```no_run
//! # use armada::prelude::*;
//! # struct Visit;
//! # impl Script for Visit {
//! #     type Agent = PlainAgent;
//! #     type Job = Job<serde_json::Value>;
//! #     type Output = ();
//! #     async fn run(&self, _: &mut PlainAgent, _: &mut Self::Job) -> Result<(), ScriptError> { Ok(()) }
//! # }
//! use std::sync::Arc;
//! use armada::{Backends, Launcher, Orchestrator, Plan, ProjectFiles, RunOverrides, RunUpdate, ScriptAgent, Tune};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let files = ProjectFiles::read("my-project".as_ref(), &Tune::Local)?;
//! // Or in memory: ProjectFiles::from_template(template).with_job_csv(csv)
//! let plan = Plan::for_script::<Visit>(&files, &RunOverrides::default())?;
//!
//! let launcher = Launcher::InProcess(Arc::new(ScriptAgent::new(Visit)));
//! let orchestrator = Orchestrator::new(Backends::embedded().await?, launcher);
//! let mut run = orchestrator.launch(&plan).await?.spawn();
//! println!("run {} of {} jobs", run.run_id(), run.jobs());
//! while let Some(update) = run.next_update().await {
//!     match update {
//!         RunUpdate::Job(result) => println!("job {}: {:?}", result.index, result.status),
//!         RunUpdate::Progress(progress) => println!("{}/{}", progress.terminal, progress.jobs),
//!         _ => {}
//!     }
//! }
//! let report = run.wait().await?;
//! println!("{:?} in {:?}", report.status, report.elapsed);
//! # Ok(())
//! # }
//! ```
//!
//! This crate is the facade: it re-exports `armada-core` (vocabulary, project loading, traits,
//! backends), `armada-agent` (the agent runtime), `armada-orchestrator` (runs, launchers),
//! `armada-monitor` (the monitoring client, store and dashboard) and `armada-cli` (the command
//! line), and holds no logic of its own.
//!
//! # Features
//! - `testing`: [`testing`], the kit for a project's tests (a dev-dependency feature).
//! - `cli` (default): [`main!`], [`run`], [`service`] and [`Summary`]. A service that embeds
//!   runs turns it off (`default-features = false`) and compiles no clap, indicatif,
//!   tracing-subscriber or anyhow.
//! - `redis`: agent configs and run state in Redis (`--config-store redis://…`).
//! - `rabbitmq`: jobs in RabbitMQ (`--queue amqp://…`).
//! - `browser`: [`browser::BrowserAgent`], a Chromium per agent with its proxy and identity.
//! - `kubernetes`: agents as the pods of one Kubernetes Indexed Job per run
//!   (`launch --target kubernetes`, `status`, `manifests`; `armada::kubernetes`).
//!
//! A backend URL whose feature is missing is an error that names it. SQL monitor stores, the
//! browser agent and Kubernetes will be opt-in features too.

pub use armada_agent::ScriptAgent;
/// The ready-made Chromium agent context (feature `browser`).
#[cfg(feature = "browser")]
pub use armada_agent::browser;
/// The project binary's command line (feature `cli`): [`cli::execute`] runs one command
/// line on the current runtime.
#[cfg(feature = "cli")]
pub use armada_cli as cli;
/// The end-of-run summary the command line prints (feature `cli`).
#[cfg(feature = "cli")]
pub use armada_cli::Summary;
/// The project's orchestrator as an HTTP service (`orchestrate serve`): its routes and OpenAPI
/// (feature `cli`).
#[cfg(feature = "cli")]
pub use armada_cli::service;
pub use armada_core::backend::{RunProgress, RunStatus};
/// Project files held in memory, for [`ProjectFiles`].
pub use armada_core::project::NamedFile;
pub use armada_core::wire::{JobResult, JobStatus};
pub use armada_core::{
    AgentContext, AgentExit, AgentIndex, AgentInfo, AgentRunner, AgentSpec, BoxError, ConfigStore,
    Diagnostic, Diagnostics, Error, EventSink, Job, JobContext, JobId, JobIndex, JobInfo, JobQueue,
    Outcome, OwnedJob, PlainAgent, Plan, ProjectFiles, Reporter, Retry, RunId, RunOverrides,
    RunSettings, Script, ScriptError, ScriptFn, Secret, Tune, WhenBlocked, redact_secrets,
    script_fn,
};
/// Defines the project binary's `main` for a script: `armada::main!(MyScript);` (feature
/// `cli`).
#[cfg(feature = "cli")]
pub use armada_macros::main;
/// Monitoring: the client, the SQL store, the HTTP backend and dashboard
/// (`armada::monitor::server::app` to embed them).
pub use armada_monitor as monitor;
/// What can stop a launch or a run ([`Orchestrator::launch`], [`RunTask::wait`]); bad input is
/// its `Core(Error::Invalid(..))`.
pub use armada_orchestrator::Error as OrchestratorError;
/// The Kubernetes launcher, its settings and the stack's manifests (feature `kubernetes`).
#[cfg(feature = "kubernetes")]
pub use armada_orchestrator::kubernetes;
pub use armada_orchestrator::{
    Backends, FollowEvent, Launcher, Orchestrator, ProjectControl, ResultsFile, RunControl,
    RunHandle, RunReport, RunTask, RunUpdate,
};
/// The testing kit (feature `testing`): [`testing::TestRun`] runs a script over jobs given in
/// code; [`testing::binary`] starts a project's binary on a copy of its config.
#[cfg(feature = "testing")]
pub use armada_testing as testing;

/// What a project's `lib.rs` usually needs.
pub mod prelude {
    pub use crate::{
        AgentContext, AgentInfo, BoxError, Job, JobContext, JobInfo, Outcome, PlainAgent, Script,
        ScriptError, script_fn,
    };
}

/// Runs the project binary's command line for `script`, with `project` as the default project
/// folder: what [`main!`] expands to, for binaries that do more in their `main` (feature
/// `cli`). It works inside a tokio runtime too, such as under `#[tokio::main]`.
#[cfg(feature = "cli")]
pub fn run<S: Script>(script: S, project: &std::path::Path) -> std::process::ExitCode {
    let runner = std::sync::Arc::new(ScriptAgent::new(script));
    armada_cli::main::<S>(runner, project)
}

/// Glue for [`main!`]; not a public API.
#[cfg(feature = "cli")]
#[doc(hidden)]
pub mod __private {
    /// The project binary's `main`.
    pub fn main<S: crate::Script>(script: S, manifest_dir: &'static str) -> std::process::ExitCode {
        crate::run(script, std::path::Path::new(manifest_dir))
    }
}
