//! Armada's orchestrator: the control plane of a run.
//!
//! This crate owns what happens between a validated [`Plan`](armada_core::Plan) and the end of
//! a run: publishing it (run record, agent configs, one message per job), launching the agents
//! ([`Launcher`]), following the run until every job is terminal (known from the plan's count,
//! never from an empty queue), cancelling it, and cleaning up its queue and keys; the results
//! file its followers write ([`ResultsFile`]); and the project as the dashboard and the HTTP
//! service drive it ([`ProjectControl`]). The command line lives in `armada-cli`: nothing
//! here parses arguments or draws on a terminal.
//!
//! It does not know the script's types at run time: agents are started through the
//! [`AgentRunner`](armada_core::AgentRunner) seam, which `armada-agent` implements.
//!
//! # Features
//! - `kubernetes`: the Kubernetes launcher ([`kubernetes`], [`Launcher::Kubernetes`]): agents
//!   as one Indexed Job per run, `launch --target kubernetes`, `status`, `manifests`.

mod control;
mod error;
#[cfg(feature = "kubernetes")]
pub mod kubernetes;
mod results;
mod run;

pub use control::{
    DEFAULT_MAX_AGENTS, DEFAULT_MAX_JOBS, DEFAULT_MAX_RUNNING_RUNS, LaunchControl, LaunchLimits,
    PlanFor, ProjectControl, project_name, run_dir,
};
pub use error::{Error, Result};
pub use results::{Claimed, ResultsFile};
pub use run::{
    Backends, FollowEvent, Launcher, Orchestrator, ProcessLauncher, RunControl, RunHandle,
    RunReport, RunTask, RunUpdate,
};
