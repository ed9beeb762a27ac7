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
//! per job. Other services embed the runtime through [`Orchestrator`].
//!
//! This crate is the facade: it re-exports `armada-core` (vocabulary, project loading, traits,
//! backends), `armada-agent` (the agent runtime), `armada-orchestrator` (runs, launchers, CLI)
//! and `armada-monitor` (the monitoring client), and holds no logic of its own.
//!
//! # Features
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
pub use armada_core::backend::{RunProgress, RunStatus};
/// Project files held in memory, for [`ProjectFiles`].
pub use armada_core::project::NamedFile;
pub use armada_core::wire::{JobResult, JobStatus};
pub use armada_core::{
    AgentContext, AgentExit, AgentIndex, AgentInfo, AgentRunner, AgentSpec, BoxError, ConfigStore,
    Diagnostic, Diagnostics, Error, EventSink, Job, JobContext, JobId, JobIndex, JobInfo, JobQueue,
    Outcome, PlainAgent, Plan, ProjectFiles, Reporter, Retry, RunId, RunOverrides, RunSettings,
    Script, ScriptError, Tune,
};
/// Defines the project binary's `main` for a script: `armada::main!(MyScript);`.
pub use armada_macros::main;
/// The Kubernetes launcher, its settings and the stack's manifests (feature `kubernetes`).
#[cfg(feature = "kubernetes")]
pub use armada_orchestrator::kubernetes;
pub use armada_orchestrator::{
    Backends, FollowEvent, Launcher, Orchestrator, RunControl, RunHandle, RunReport, Summary,
};

/// What a project's `lib.rs` usually needs.
pub mod prelude {
    pub use crate::{
        AgentContext, AgentInfo, BoxError, Job, JobContext, JobInfo, Outcome, PlainAgent, Script,
        ScriptError,
    };
}

/// Runs the project binary's command line for `script`, with `project` as the default project
/// folder: what [`main!`] expands to, for binaries that do more in their `main`.
pub fn run<S: Script>(script: S, project: &std::path::Path) -> std::process::ExitCode {
    let runner = std::sync::Arc::new(ScriptAgent::new(script));
    armada_orchestrator::cli::main::<S>(runner, project)
}

/// Glue for [`main!`]; not a public API.
#[doc(hidden)]
pub mod __private {
    /// The project binary's `main`.
    pub fn main<S: crate::Script>(script: S, manifest_dir: &'static str) -> std::process::ExitCode {
        crate::run(script, std::path::Path::new(manifest_dir))
    }
}
