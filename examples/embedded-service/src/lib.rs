//! Armada as a library inside another service: `POST /runs` launches a run of the [`Greet`]
//! script with its agents as tasks of this process, and streams its progress back to the
//! caller as server-sent events until the run ends.
//!
//! The request body is JSON:
//!
//! ```json
//! { "agents": 2, "greeting": "Hello", "jobs": [{ "name": "Ada" }, { "name": "Grace", "work_ms": 50 }] }
//! ```
//!
//! The answer is a stream of events: `started` (`{"run_id", "jobs"}`), one `job` per job (its
//! [`armada::JobResult`]), `progress` now and then (the run's counters, [`armada::RunProgress`]), and a
//! final `end` ([`RunSummary`]), or `error` if the run could not be followed to its end. A body
//! that does not describe a valid run gets `422` with every problem found, as
//! `{"error", "diagnostics": [{"file", "line"?, "column"?, "field"?, "message"}]}`.
//!
//! Each request's run has backends of its own (in memory), so runs never see each other, and a
//! caller that hangs up stops its run: the stream owns the [`RunTask`], whose drop aborts the
//! run's agents, and nothing the run wrote outlives it.

mod greet;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use armada::{
    Backends, Diagnostic, Diagnostics, Launcher, Orchestrator, OrchestratorError, Plan, RunStatus,
    RunTask, RunUpdate, ScriptAgent,
};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures::Stream;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

pub use greet::{Greet, Greeter, Greeting, MAX_WORK_MS, Visitor};

/// Agents one request may ask for: they are tasks of this process.
pub const MAX_AGENTS: u32 = 16;

/// How diagnostics name the request body.
const BODY: &str = "request body";

/// The service's routes.
pub fn app() -> Router {
    let state = AppState {
        launcher: Launcher::InProcess(Arc::new(ScriptAgent::new(Greet))),
    };
    Router::new().route("/runs", post(launch)).with_state(state)
}

#[derive(Clone)]
struct AppState {
    /// Shared by every run: the script holds no per-run state.
    launcher: Launcher,
}

/// The body of `POST /runs`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    /// Agents of the run, 1 to [`MAX_AGENTS`].
    #[serde(default = "one_agent")]
    pub agents: u32,
    /// The agents' greeting word.
    #[serde(default = "hello")]
    pub greeting: String,
    /// One [`Visitor`] per job. Kept as JSON here: the plan checks each against the script's
    /// payload type and names the bad ones (`jobs[3].name`).
    pub jobs: Vec<Value>,
    /// Attempts per job (default 3).
    #[serde(default)]
    pub max_attempts: Option<u32>,
}

fn one_agent() -> u32 {
    1
}

fn hello() -> String {
    "Hello".to_owned()
}

/// The `end` event: how the run ended.
#[derive(Debug, Serialize)]
pub struct RunSummary {
    /// The run.
    pub run_id: String,
    /// `completed`, `canceled` or `failed`.
    pub status: RunStatus,
    /// Jobs in the run.
    pub jobs: u64,
    /// Jobs that succeeded.
    pub succeeded: u64,
    /// Jobs that failed.
    pub failed: u64,
    /// From launch to the end.
    pub elapsed_ms: u64,
    /// Agents that failed to start or stopped abnormally.
    pub agent_problems: Vec<String>,
}

/// Why a request was refused.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body does not describe a valid run.
    #[error("{0}")]
    Invalid(Diagnostics),
    /// The run could not be launched.
    #[error("cannot launch the run: {0}")]
    Launch(#[from] OrchestratorError),
}

impl From<armada::Error> for ApiError {
    fn from(error: armada::Error) -> Self {
        match error {
            armada::Error::Invalid(diagnostics) => Self::Invalid(diagnostics),
            other => Self::Launch(other.into()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            Self::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Launch(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let body = match &self {
            Self::Invalid(diagnostics) => json!({
                "error": format!("the run has {} problem(s); nothing was launched", diagnostics.len()),
                "diagnostics": diagnostics,
            }),
            Self::Launch(error) => json!({ "error": error.to_string() }),
        };
        (status, axum::Json(body)).into_response()
    }
}

async fn launch(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let plan = plan(&body)?;
    // Backends of its own for each run: whatever a run leaves when its caller hangs up goes
    // with them.
    let backends = Backends::connect("memory://", "memory://", "memory://").await?;
    let task = Orchestrator::new(backends, state.launcher.clone())
        .with_project("embedded-service", None)
        .with_grace(Duration::from_secs(5))
        .launch(&plan)
        .await?
        .spawn();
    tracing::info!(run = %task.run_id(), jobs = task.jobs(), "run launched for a request");
    Ok(Sse::new(events(task)).keep_alive(KeepAlive::default()))
}

/// The plan a request body asks for, or every problem with it.
fn plan(body: &[u8]) -> Result<Plan, ApiError> {
    let request: RunRequest = serde_json::from_slice(body).map_err(|error| {
        let mut diagnostic = Diagnostic::file(BODY, error.to_string());
        if error.line() > 0 {
            diagnostic = diagnostic
                .at_line(error.line() as u64)
                .at_column(error.column() as u64);
        }
        ApiError::Invalid(diagnostic.into())
    })?;
    if request.agents > MAX_AGENTS {
        let problem = format!("at most {MAX_AGENTS} agents per run here");
        return Err(ApiError::Invalid(
            Diagnostic::file(BODY, problem).at_field("agents").into(),
        ));
    }
    let settings = armada::RunSettings {
        max_attempts: request.max_attempts.unwrap_or(3),
        job_timeout_secs: 30.0,
        retry_backoff_secs: 0.1,
        ..armada::RunSettings::new(request.agents)
    };
    // One config shared by every agent, as `Greeter` spells it.
    let greeter = json!({ "greeting": request.greeting });
    Ok(Plan::from_messages::<Greet>(
        settings,
        vec![greeter],
        request.jobs,
    )?)
}

/// Where the event stream stands.
enum Stage {
    Launched(RunTask),
    Running(RunTask),
    Ended,
}

/// The run's updates as server-sent events, ending with its summary.
fn events(task: RunTask) -> impl Stream<Item = Result<Event, Infallible>> {
    futures::stream::unfold(Stage::Launched(task), |stage| async move {
        let (event, next) = match stage {
            Stage::Launched(task) => {
                let started = json!({ "run_id": task.run_id().to_string(), "jobs": task.jobs() });
                (event("started", &started), Stage::Running(task))
            }
            Stage::Running(mut task) => match next_update(&mut task).await {
                Some(event) => (event, Stage::Running(task)),
                None => (end(task).await, Stage::Ended),
            },
            Stage::Ended => return None,
        };
        Some((Ok(event), next))
    })
}

/// The next update as an event; `None` once every update was delivered.
async fn next_update(task: &mut RunTask) -> Option<Event> {
    loop {
        match task.next_update().await? {
            RunUpdate::Job(result) => return Some(event("job", &result)),
            RunUpdate::Progress(progress) => return Some(event("progress", &progress)),
            // Kinds of update added later are not part of this service's stream.
            _ => {}
        }
    }
}

async fn end(task: RunTask) -> Event {
    match task.wait().await {
        Ok(report) => event(
            "end",
            &RunSummary {
                run_id: report.run_id.to_string(),
                status: report.status,
                jobs: report.progress.jobs,
                succeeded: report.progress.succeeded,
                failed: report.progress.failed,
                elapsed_ms: u64::try_from(report.elapsed.as_millis()).unwrap_or(u64::MAX),
                agent_problems: report.agent_problems,
            },
        ),
        Err(error) => event("error", &json!({ "error": error.to_string() })),
    }
}

fn event(name: &str, data: &impl Serialize) -> Event {
    Event::default()
        .event(name)
        .json_data(data)
        .unwrap_or_else(|error| {
            Event::default()
                .event("error")
                .data(format!("cannot write the {name} event: {error}"))
        })
}
