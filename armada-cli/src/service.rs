//! The project's orchestrator as an HTTP service (`orchestrate serve`): launch runs with
//! `POST /runs` (JSON or multipart) or the original system's `POST /bot/start`, read and
//! cancel them, and read the OpenAPI description at `GET /openapi.json`. The routes share
//! the listener with the monitor's API and dashboard, and launch through the same
//! [`ProjectControl`] as the dashboard's Launch page. Reference: `docs/guides/http.md`,
//! `docs/openapi.json`.

use std::sync::Arc;

use armada_monitor::server::{LaunchBody, form_parts, launch_form};
use armada_monitor::{Control, LaunchRequest, Monitor};
use armada_orchestrator::ProjectControl;
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Path, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

/// Largest launch request accepted, in bytes (it carries the CSV files).
pub const MAX_REQUEST_BYTES: usize = 256 * 1024 * 1024;

/// Every route of the service, as `(method, path)`: the OpenAPI description lists exactly
/// these, and a test holds the router to them.
pub const ROUTES: &[(&str, &str)] = &[
    ("post", "/runs"),
    ("get", "/runs/{id}"),
    ("get", "/runs/{id}/plan"),
    ("post", "/runs/{id}/cancel"),
    ("post", "/bot/start"),
    ("get", "/openapi.json"),
];

#[derive(Clone)]
struct ServiceState {
    control: Arc<ProjectControl>,
    monitor: Monitor,
}

/// The service's routes. They sit behind the same bearer-token check as the monitor's API
/// when they are merged into [`armada_monitor::server::app_with`].
pub fn routes(control: Arc<ProjectControl>, monitor: Monitor) -> Router {
    Router::new()
        .route("/runs", post(create_run))
        .route("/runs/{id}", get(get_run))
        .route("/runs/{id}/plan", get(get_plan))
        .route("/runs/{id}/cancel", post(cancel_run))
        .route("/bot/start", post(bot_start))
        .route("/openapi.json", get(|| async { Json(openapi()) }))
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .with_state(ServiceState { control, monitor })
}

/// The service's answer to a failed request: `{"error": …}`, with `diagnostics` when the
/// project has problems (422).
struct Failure(armada_monitor::Error);

impl From<armada_monitor::Error> for Failure {
    fn from(error: armada_monitor::Error) -> Self {
        Self(error)
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        armada_monitor::server::answer(&self.0)
    }
}

fn invalid(message: String) -> Failure {
    Failure(armada_monitor::Error::Invalid(message))
}

async fn create_run(State(state): State<ServiceState>, request: Request) -> Response {
    let is_multipart = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("multipart/form-data"));
    let launch = if is_multipart {
        match Multipart::from_request(request, &()).await {
            Ok(form) => launch_form(form, "the form").await.map_err(Failure),
            Err(rejection) => Err(invalid(format!(
                "the form is malformed: {}",
                rejection.body_text()
            ))),
        }
    } else {
        match Json::<LaunchBody>::from_request(request, &()).await {
            Ok(Json(body)) => body.into_request().map_err(Failure),
            Err(rejection) => Err(invalid(format!(
                "the body is not a run request: {}; send JSON (see /openapi.json) or \
                 multipart/form-data",
                rejection.body_text()
            ))),
        }
    };
    match launch {
        Ok(launch) => start(&state, launch, Vec::new()).await,
        Err(failure) => failure.into_response(),
    }
}

fn json_part(name: &str, text: &str) -> Result<Value, Failure> {
    serde_json::from_str(text)
        .map_err(|error| invalid(format!("the form's `{name}` is not JSON: {error}")))
}

/// Launches and answers 201 with the run's id and links.
async fn start(state: &ServiceState, launch: LaunchRequest, warnings: Vec<String>) -> Response {
    match state.control.launch(launch).await {
        Ok(run_id) => {
            let plan = state.control.plan_of(&run_id);
            let body = json!({
                "run_id": run_id,
                "agents": plan.as_ref().map(|plan| plan.agents()),
                "jobs": plan.as_ref().map(|plan| plan.jobs()),
                "warnings": warnings,
                "links": {
                    "run": format!("/runs/{run_id}"),
                    "plan": format!("/runs/{run_id}/plan"),
                    "dashboard": format!("/#/runs/{run_id}"),
                },
            });
            (StatusCode::CREATED, Json(body)).into_response()
        }
        Err(error) => Failure(error).into_response(),
    }
}

/// `POST /bot/start`, the original system's launch: `configtemplate` (the whole template,
/// placeholders resolved, with the run id it injected), `configtune`, `data_agent`,
/// `data_job`; `python_code` and `requirements_txt` are accepted and ignored, since the script
/// is compiled into this binary.
async fn bot_start(State(state): State<ServiceState>, form: Multipart) -> Response {
    let launch = async {
        let mut launch = LaunchRequest::default();
        let mut warnings = Vec::new();
        for (name, text) in form_parts(form, "the form").await.map_err(Failure)? {
            match name.as_str() {
                "configtemplate" => {
                    let mut template = json_part(&name, &text)?;
                    launch.run_id = take_injected(&mut template);
                    launch.template = Some(template.to_string().into_bytes());
                }
                "configtune" if !text.trim().is_empty() => {
                    launch.tune_values = Some(json_part(&name, &text)?);
                    launch.tune = Some("configtune".into());
                }
                "configtune" => {}
                "data_agent" | "data_agent.csv" => launch.data_agent_csv = Some(text),
                "data_job" | "data_job.csv" => launch.data_job_csv = Some(text),
                "python_code" | "requirements_txt" => warnings.push(format!(
                    "`{name}` was ignored: this orchestrator runs the script compiled into it"
                )),
                other => {
                    return Err(invalid(format!(
                        "/bot/start has no part `{other}`; it takes configtemplate, configtune, \
                         data_agent, data_job (python_code and requirements_txt are ignored)"
                    )));
                }
            }
        }
        if launch.template.is_none() {
            return Err(invalid("/bot/start needs a `configtemplate` part".into()));
        }
        Ok((launch, warnings))
    };
    match launch.await {
        Ok((launch, warnings)) => start(&state, launch, warnings).await,
        Err(failure) => failure.into_response(),
    }
}

/// Removes what the original front end injected into a template (`run_id` in each message,
/// `code` in the agent message) and returns the run id it chose.
fn take_injected(template: &mut Value) -> Option<String> {
    let mut run_id = None;
    for section in [
        "run_message",
        "default_agent_message",
        "default_job_message",
    ] {
        if let Some(Value::Object(message)) = template.get_mut(section) {
            if let Some(Value::String(id)) = message.remove("run_id") {
                run_id.get_or_insert(id);
            }
            if section == "default_agent_message" {
                message.remove("code");
            }
        }
    }
    run_id
}

async fn get_run(
    State(state): State<ServiceState>,
    Path(id): Path<String>,
) -> Result<Json<armada_monitor::model::Run>, Failure> {
    Ok(Json(
        state
            .monitor
            .store()
            .run(&id, armada_core::wire::now_ms())
            .await?,
    ))
}

async fn get_plan(State(state): State<ServiceState>, Path(id): Path<String>) -> Response {
    let Some(plan) = state.control.plan_of(&id) else {
        return Failure(armada_monitor::Error::UnknownRun(id)).into_response();
    };
    let mut lines = Vec::new();
    if let Err(error) = plan.write_json_lines(&mut lines) {
        return Failure(armada_monitor::Error::Orchestrator(error.into())).into_response();
    }
    ([(header::CONTENT_TYPE, "application/x-ndjson")], lines).into_response()
}

async fn cancel_run(
    State(state): State<ServiceState>,
    Path(id): Path<String>,
) -> Result<StatusCode, Failure> {
    state.control.cancel(&id).await?;
    Ok(StatusCode::ACCEPTED)
}

/// The OpenAPI 3.1 description of the service, built from [`ROUTES`]' handlers' shapes.
pub fn openapi() -> Value {
    let error = json!({ "$ref": "#/components/schemas/Error" });
    let responses = |ok: (&str, &str, Value)| {
        json!({
            ok.0: { "description": ok.1, "content": { "application/json": { "schema": ok.2 } } },
            "400": { "description": "A malformed request", "content": { "application/json": { "schema": error } } },
            "401": { "description": "A missing or wrong bearer token", "content": { "application/json": { "schema": error } } },
            "404": { "description": "No such run", "content": { "application/json": { "schema": error } } },
            "422": { "description": "The project has problems; nothing was published", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Problems" } } } },
        })
    };
    let run_id =
        json!([{ "name": "id", "in": "path", "required": true, "schema": { "type": "string" } }]);
    let launched = json!({ "$ref": "#/components/schemas/Launched" });
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Armada orchestrator service",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Launch, follow and cancel runs of this project. Served by `orchestrate serve` next to the monitor's API (/api/v1, docs/monitor-api.md) and dashboard (/).",
        },
        "security": [{ "bearer": [] }],
        "paths": {
            "/runs": { "post": {
                "summary": "Plan and launch a run",
                "requestBody": { "required": true, "content": {
                    "application/json": { "schema": { "$ref": "#/components/schemas/RunRequest" } },
                    "multipart/form-data": { "schema": { "$ref": "#/components/schemas/RunForm" } },
                } },
                "responses": responses(("201", "The run was launched", launched.clone())),
            } },
            "/runs/{id}": { "get": {
                "summary": "A run's status, counts and pace",
                "parameters": run_id,
                "responses": responses(("200", "The run", json!({ "$ref": "#/components/schemas/Run" }))),
            } },
            "/runs/{id}/plan": { "get": {
                "summary": "The merged agent and job messages of a run launched by this service, as JSON lines",
                "parameters": run_id,
                "responses": { "200": { "description": "One JSON object per line: agents first, then jobs", "content": { "application/x-ndjson": { "schema": { "type": "string" } } } },
                               "404": { "description": "No such run launched here", "content": { "application/json": { "schema": error } } } },
            } },
            "/runs/{id}/cancel": { "post": {
                "summary": "Cancel a run of this service's config store, whoever launched it",
                "parameters": run_id,
                "responses": { "202": { "description": "Canceling: agents finish their current job" },
                               "404": { "description": "No such run", "content": { "application/json": { "schema": error } } },
                               "409": { "description": "The run ended, or is not in this service's config store", "content": { "application/json": { "schema": error } } } },
            } },
            "/bot/start": { "post": {
                "summary": "Launch as the original system's orchestrator did",
                "requestBody": { "required": true, "content": {
                    "multipart/form-data": { "schema": { "$ref": "#/components/schemas/BotStartForm" } },
                } },
                "responses": responses(("201", "The run was launched", launched)),
            } },
            "/openapi.json": { "get": {
                "summary": "This description",
                "responses": { "200": { "description": "OpenAPI 3.1", "content": { "application/json": { "schema": { "type": "object" } } } } },
            } },
        },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer", "description": "Required when the service was started with a token (always beyond loopback)." } },
            "schemas": {
                "Error": { "type": "object", "required": ["error"], "properties": { "error": { "type": "string", "description": "What went wrong and what to do" } } },
                "Diagnostic": { "type": "object", "required": ["file", "message"], "properties": {
                    "file": { "type": "string" }, "line": { "type": ["integer", "null"] }, "column": { "type": ["integer", "null"] },
                    "field": { "type": ["string", "null"] }, "message": { "type": "string" } } },
                "Problems": { "type": "object", "required": ["error", "diagnostics"], "properties": {
                    "error": { "type": "string" }, "diagnostics": { "type": "array", "items": { "$ref": "#/components/schemas/Diagnostic" } } } },
                "RunRequest": { "type": "object", "additionalProperties": false, "properties": {
                    "overrides": { "type": "object", "description": "Deep-merged into config_template.json" },
                    "tune": { "oneOf": [{ "type": "string" }, { "type": "object" }], "description": "A tune's name or its values" },
                    "data_agent_csv": { "type": "string" }, "data_job_csv": { "type": "string" },
                    "agents": { "type": "integer", "minimum": 1 }, "jobs": { "type": "integer", "minimum": 0 },
                    "target": { "type": "string", "enum": ["local"] } } },
                "RunForm": { "type": "object", "properties": {
                    "overrides": { "type": "string", "description": "JSON object" }, "tune": { "type": "string", "description": "A name, or JSON values" },
                    "data_agent.csv": { "type": "string", "format": "binary" }, "data_job.csv": { "type": "string", "format": "binary" },
                    "agents": { "type": "integer" }, "jobs": { "type": "integer" }, "target": { "type": "string" } } },
                "BotStartForm": { "type": "object", "required": ["configtemplate"], "properties": {
                    "configtemplate": { "type": "string", "format": "binary" }, "configtune": { "type": "string", "format": "binary" },
                    "data_agent": { "type": "string", "format": "binary" }, "data_job": { "type": "string", "format": "binary" },
                    "python_code": { "type": "string", "description": "Ignored" }, "requirements_txt": { "type": "string", "format": "binary", "description": "Ignored" } } },
                "Launched": { "type": "object", "required": ["run_id", "links"], "properties": {
                    "run_id": { "type": "string" }, "agents": { "type": "integer" }, "jobs": { "type": "integer" },
                    "warnings": { "type": "array", "items": { "type": "string" } },
                    "links": { "type": "object", "properties": { "run": { "type": "string" }, "plan": { "type": "string" }, "dashboard": { "type": "string" } } } } },
                "Run": { "type": "object", "description": "As the monitor's GET /api/v1/runs/{id} (docs/monitor-api.md)", "required": ["id", "status", "jobs", "counts"], "properties": {
                    "id": { "type": "string" }, "project": { "type": "string" },
                    "status": { "type": "string", "enum": ["running", "completed", "canceled", "stopped", "stalled"] },
                    "agents": { "type": "integer" }, "jobs": { "type": "integer" },
                    "counts": { "type": "object", "additionalProperties": { "type": "integer" } },
                    "created_ms": { "type": "integer" }, "finished_ms": { "type": ["integer", "null"] },
                    "eta_ms": { "type": ["integer", "null"] }, "throughput_per_min": { "type": "number" } } },
            },
        },
    })
}
