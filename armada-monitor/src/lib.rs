//! Armada's monitoring: what agents report, where it is stored, and the dashboard that
//! shows it live.
//!
//! - [`MonitorClient`]: the batching client behind every job's reporter; never blocks a
//!   script, retries, counts drops.
//! - [`MonitorLink`]: where a run's monitoring goes, chosen by URL: `sqlite:PATH`,
//!   `postgres://…` or `mssql://…` (a store opened in this process), `http://HOST:PORT` (a monitor service),
//!   `memory://` (nothing kept beyond recent events; for tests and benchmarks).
//! - [`Store`]: runs, jobs, agents, events, outputs and attachments in SQL, with migrations
//!   applied at open; keyset-paged queries.
//! - [`Monitor`]: a store plus the live feed; [`server::app`] serves its REST API, WebSocket and
//!   the dashboard, whose files are compiled in.
//! - [`Control`]: what the dashboard asks of the project's orchestrator (launch, cancel,
//!   retry); implemented by `armada-orchestrator`.
//!
//! Only this crate knows HTTP routes and SQL. The API is described in `docs/monitor-api.md`.
//!
//! # Features
//! - `postgres`: the PostgreSQL store (`postgres://`). SQLite is always compiled in.
//! - `mssql`: the SQL Server store (`mssql://USER:PASSWORD@HOST:PORT/DATABASE`, with
//!   `?trust_server_certificate=true` and `encrypt=false` flags), over tiberius.

mod client;
mod control;
mod error;
mod export;
mod hub;
mod link;
pub mod model;
mod remote;
pub mod server;
mod store;

pub use client::{ClientOptions, ClientStats, MonitorClient};
pub use control::{
    About, Control, Later, LaunchCheck, LaunchDefaults, LaunchInfo, LaunchRequest, Serves,
};
pub use error::{Error, Result};
pub use hub::{Monitor, Notice, RUN_REFRESH};
pub use link::MonitorLink;
pub use remote::{RemoteControl, RemoteMonitor};
pub use store::{DEFAULT_STALL_LIMIT, Ingested, MAX_EVENTS_PER_BATCH, MAX_PAGE, Store, redact};
