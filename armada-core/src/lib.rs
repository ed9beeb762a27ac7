//! Armada's vocabulary, shared by every other crate.
//!
//! This crate owns:
//! - the ids of runs, jobs and agents ([`RunId`], [`JobId`], [`AgentIndex`], [`JobIndex`]);
//! - the project model and its loading: `config_template.json`, `$env_` substitution from a tune
//!   file, `data_agent.csv` / `data_job.csv` deep-merged into the defaults, and typed validation
//!   with every problem collected into [`Diagnostics`] ([`project`]);
//! - the traits a user implements: [`AgentContext`], [`JobContext`], [`Script`], with the
//!   ready-made [`PlainAgent`] and [`Job`] contexts ([`script`]);
//! - the versioned wire types that cross a process boundary ([`wire`]);
//! - [`Secret`], a config value shown as `***` everywhere but to the agent, and
//!   [`redact_secrets`], which every output applies ([`secret`]);
//! - the backend seams [`ConfigStore`], [`JobQueue`] and [`EventSink`], chosen by URL, with their
//!   in-memory implementations ([`backend`]).
//!
//! With default features it does no network I/O and depends on no other armada crate.
//!
//! # Features
//! - `redis`: the Redis [`ConfigStore`] (`redis://`, `rediss://`).
//! - `rabbitmq`: the RabbitMQ [`JobQueue`] (`amqp://`, `amqps://`).
//!
//! A URL whose backend is not compiled in is an error that names the feature to enable. With
//! default features this crate does no network I/O.

pub mod backend;
mod error;
mod ids;
pub mod project;
pub mod report;
pub mod script;
pub mod secret;
pub mod wire;

pub use backend::{ConfigStore, EventSink, JobQueue};
pub use error::{Error, Result};
pub use ids::{AgentIndex, JobId, JobIndex, RunId};
pub use project::{Diagnostic, Diagnostics, Plan, ProjectFiles, RunOverrides, RunSettings, Tune};
pub use report::{EventSender, Reporter};
pub use script::{
    AgentContext, AgentExit, AgentInfo, AgentRunner, AgentSpec, BoxError, Job, JobContext, JobInfo,
    Outcome, OwnedJob, PlainAgent, Retry, Script, ScriptError, ScriptFn, WhenBlocked, scratch_dir,
    script_fn,
};
pub use secret::{Secret, redact_secrets, redact_secrets_in};
