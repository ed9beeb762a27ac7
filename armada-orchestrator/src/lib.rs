//! Armada's orchestrator: the control plane of a run.
//!
//! This crate owns what happens between a validated [`Plan`](armada_core::Plan) and the end of
//! a run: publishing it (run record, agent configs, one message per job), launching the agents
//! ([`Launcher`]), following the run until every job is terminal (known from the plan's count,
//! never from an empty queue), cancelling it, and cleaning up its queue and keys. It also owns
//! the project binary's command line ([`cli`]): `launch`, `validate`, `plan` and the hidden
//! `agent` subcommand, the live progress display, the results file and the summary.
//!
//! It does not know the script's types at run time: agents are started through the
//! [`AgentRunner`](armada_core::AgentRunner) seam, which `armada-agent` implements.
//!
//! # Features
//! - `kubernetes`: the Kubernetes launcher ([`kubernetes`], [`Launcher::Kubernetes`]): agents
//!   as one Indexed Job per run, `launch --target kubernetes`, `status`, `manifests`.

pub mod cli;
mod control;
mod error;
#[cfg(feature = "kubernetes")]
pub mod kubernetes;
mod progress;
mod results;
mod run;
pub mod service;
mod summary;

pub use control::{PlanFor, ProjectControl};
pub use error::{Error, Result};
pub use run::{
    Backends, FollowEvent, Launcher, Orchestrator, ProcessLauncher, RunControl, RunHandle,
    RunReport, RunTask, RunUpdate,
};
pub use summary::Summary;
