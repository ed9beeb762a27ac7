//! The monitor's HTTP service: ingest, the REST API, the WebSocket feed and the dashboard
//! (`docs/monitor-api.md` is the reference).

mod assets;
mod launch;
mod ws;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use armada_core::wire::EventBatch;
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::model::{
    EventFilter, Finish, JobCursor, JobFilter, JobSort, JobState, NewRun, PayloadMatch, SortOrder,
};
use crate::{Error, Monitor, Result};

pub use launch::{LaunchBody, form_parts, launch_form};

/// Largest event batch accepted, in bytes (attachments travel in batches).
pub const MAX_BATCH_BYTES: usize = 16 * 1024 * 1024;
/// Largest other JSON body accepted, in bytes (a run's end may list its unfinished jobs).
pub const MAX_JSON_BYTES: usize = 64 * 1024 * 1024;
/// Largest launch form accepted, in bytes (it carries the CSV files).
pub const MAX_LAUNCH_BYTES: usize = 256 * 1024 * 1024;

#[derive(Clone)]
struct AppState {
    monitor: Monitor,
    token: Option<Arc<str>>,
    /// Host names the service answers to besides its addresses and `localhost`.
    hosts: Arc<[String]>,
    /// WebSocket tickets issued and not yet used, with when they expire.
    tickets: Arc<std::sync::Mutex<HashMap<String, Instant>>>,
    /// One permit per open WebSocket, [`MAX_WEBSOCKETS`] in all.
    sockets: Arc<tokio::sync::Semaphore>,
}

/// WebSockets open at once on one service: each holds a task and buffers, and idle ones cost
/// memory without end otherwise. Dashboards open one per tab.
pub const MAX_WEBSOCKETS: usize = 256;

/// How long a WebSocket ticket may wait for its connection.
const TICKET_LIFETIME: Duration = Duration::from_secs(30);

impl AppState {
    /// A new single-use ticket for the WebSocket; forgets expired ones.
    fn issue_ticket(&self) -> String {
        let ticket = uuid::Uuid::new_v4().simple().to_string();
        let now = Instant::now();
        if let Ok(mut tickets) = self.tickets.lock() {
            tickets.retain(|_, expires| *expires > now);
            tickets.insert(ticket.clone(), now + TICKET_LIFETIME);
        }
        ticket
    }

    /// Whether `ticket` was issued and has not expired; it cannot be used again.
    fn take_ticket(&self, ticket: &str) -> bool {
        self.tickets
            .lock()
            .ok()
            .and_then(|mut tickets| tickets.remove(ticket))
            .is_some_and(|expires| expires > Instant::now())
    }
}

/// The monitor's routes over `monitor`. With a `token`, every `/api` request needs it.
pub fn app(monitor: Monitor, token: Option<String>) -> Router {
    app_with(monitor, token, Router::new())
}

/// [`app`] with `extra` routes (the orchestrator service's) merged in, behind the same token.
pub fn app_with(monitor: Monitor, token: Option<String>, extra: Router) -> Router {
    app_with_hosts(monitor, token, Vec::new(), extra)
}

/// [`app_with`] for a service reached by names (`hosts`, a reverse proxy's or a DNS name)
/// besides its IP addresses and `localhost`. Without a token, requests naming any other host
/// are refused, which is what stops a DNS-rebinding page.
pub fn app_with_hosts(
    monitor: Monitor,
    token: Option<String>,
    hosts: Vec<String>,
    extra: Router,
) -> Router {
    let state = AppState {
        monitor,
        token: token.map(Into::into),
        hosts: hosts.into(),
        tickets: Arc::default(),
        sockets: Arc::new(tokio::sync::Semaphore::new(MAX_WEBSOCKETS)),
    };
    let api = Router::new()
        .route(
            "/events",
            post(ingest).layer(DefaultBodyLimit::max(MAX_BATCH_BYTES)),
        )
        .route("/runs", get(list_runs).post(register_run))
        .route("/runs/{id}", get(get_run).delete(delete_run))
        .route("/runs/{id}/finish", post(finish_run))
        .route("/runs/{id}/jobs", get(list_jobs))
        .route("/runs/{id}/jobs/{index}", get(get_job))
        .route("/runs/{id}/jobs/{index}/events", get(job_events))
        .route("/runs/{id}/events", get(run_events))
        .route("/runs/{id}/agents", get(agents))
        .route("/runs/{id}/failures", get(failures))
        .route("/runs/{id}/timeline", get(timeline))
        .route("/runs/{id}/outputs", get(outputs))
        .route("/runs/{id}/attachments/{seq}", get(attachment))
        .route("/runs/{id}/cancel", post(cancel))
        .route("/runs/{id}/retry", post(retry))
        .route("/compare", get(compare))
        .route("/about", get(about))
        .route(
            "/launch",
            get(launch_info)
                .post(launch)
                .layer(DefaultBodyLimit::max(MAX_LAUNCH_BYTES)),
        )
        .route(
            "/launch/check",
            post(check_launch).layer(DefaultBodyLimit::max(MAX_LAUNCH_BYTES)),
        )
        .route("/ws", get(ws::subscribe))
        .route("/ws/ticket", post(ws_ticket))
        .layer(DefaultBodyLimit::max(MAX_JSON_BYTES))
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .fallback(|| async { ApiError(Error::Invalid("no such API route".into())).not_found() });
    let extra = extra.layer(middleware::from_fn_with_state(state.clone(), authorize));
    Router::new()
        .nest("/api/v1", api)
        .merge(assets::routes())
        .with_state(state.clone())
        .merge(extra)
        .layer(middleware::from_fn_with_state(state, guard_browsers))
}

/// Serves `app` on `listener` until `shutdown` is cancelled. Refuses to listen beyond
/// loopback without a token.
pub async fn serve(
    monitor: Monitor,
    listener: TcpListener,
    token: Option<String>,
    shutdown: CancellationToken,
) -> Result<()> {
    let addr = listener.local_addr().map_err(|source| Error::Listen {
        addr: "the listener".into(),
        source,
    })?;
    require_token(addr, token.as_deref())?;
    serve_app(listener, app(monitor, token), shutdown).await
}

async fn serve_app(listener: TcpListener, app: Router, shutdown: CancellationToken) -> Result<()> {
    let addr = listener.local_addr().map_err(|source| Error::Listen {
        addr: "the listener".into(),
        source,
    })?;
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .map_err(|source| Error::Listen {
            addr: addr.to_string(),
            source,
        })
}

/// A token is required on any address but loopback.
pub fn require_token(addr: SocketAddr, token: Option<&str>) -> Result<()> {
    if !addr.ip().is_loopback() && token.is_none_or(str::is_empty) {
        return Err(Error::TokenRequired(addr.to_string()));
    }
    Ok(())
}

async fn authorize(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(expected) = &state.token else {
        return next.run(request).await;
    };
    let bearer = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    match bearer {
        Some(given) if constant_time_eq(given.as_bytes(), expected.as_bytes()) => {
            return next.run(request).await;
        }
        Some(_) => {
            return error_response(
                StatusCode::UNAUTHORIZED,
                "the bearer token is wrong: use the token the monitor was started with",
            );
        }
        None => {}
    }
    // Browsers cannot set headers on a WebSocket: the feed takes a single-use ticket in its
    // query instead, so that the long-lived token never sits in a URL (logs, history).
    if request.uri().path().ends_with("/ws")
        && let Some(ticket) = query_value(request.uri(), "ticket")
    {
        if state.take_ticket(&ticket) {
            return next.run(request).await;
        }
        return error_response(
            StatusCode::UNAUTHORIZED,
            "the WebSocket ticket is unknown, used or expired: ask POST /api/v1/ws/ticket for \
             another",
        );
    }
    error_response(
        StatusCode::UNAUTHORIZED,
        "this monitor needs a bearer token: send `Authorization: Bearer TOKEN` (a browser's \
         WebSocket sends `?ticket=` from POST /api/v1/ws/ticket instead)",
    )
}

/// The percent-decoded value of `name` in `uri`'s query.
fn query_value(uri: &axum::http::Uri, name: &str) -> Option<String> {
    let Query(pairs) = Query::<Vec<(String, String)>>::try_from_uri(uri).ok()?;
    pairs
        .into_iter()
        .find_map(|(key, value)| (key == name).then_some(value))
}

/// `POST /api/v1/ws/ticket`: a single-use ticket that opens one WebSocket within 30 s.
async fn ws_ticket(State(state): State<AppState>) -> Response {
    Json(json!({
        "ticket": state.issue_ticket(),
        "expires_in_secs": TICKET_LIFETIME.as_secs(),
    }))
    .into_response()
}

/// Refuses what a page of another site could make a visitor's browser send to a service on
/// their machine: requests from pages of other origins (a form or `fetch` launching or
/// canceling runs, a WebSocket reading them), bodies of the types a cross-site form can send
/// without asking, and, on a service without a token, a `Host` that is not its address (a
/// DNS-rebinding page, which the browser treats as same-origin). Clients that are not browsers
/// send no `Origin` and pass.
async fn guard_browsers(State(state): State<AppState>, request: Request, next: Next) -> Response {
    match refusal(&request, &state) {
        Some((status, message)) => error_response(status, &message),
        None => next.run(request).await,
    }
}

fn refusal(request: &Request, state: &AppState) -> Option<(StatusCode, String)> {
    let headers = request.headers();
    let host = headers
        .get(header::HOST)
        .and_then(|value| value.to_str().ok());
    if state.token.is_none()
        && let Some(host) = host
        && !answers_to(host, &state.hosts)
    {
        return Some((
            StatusCode::FORBIDDEN,
            format!(
                "this service answers to its IP address and `localhost`, not `{host}`: a name \
                 in front of it must be allowed when the service starts"
            ),
        ));
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or_default();
        let own = host.is_some_and(|host| {
            ["http://", "https://"].iter().any(|scheme| {
                origin
                    .strip_prefix(scheme)
                    .is_some_and(|rest| rest.eq_ignore_ascii_case(host))
            })
        });
        if !own {
            return Some((
                StatusCode::FORBIDDEN,
                format!(
                    "requests from pages of `{origin}` are refused: only this service's own pages may call it"
                ),
            ));
        }
    }
    let changes_state = !matches!(request.method().as_str(), "GET" | "HEAD" | "OPTIONS");
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let form_type = ["text/plain", "application/x-www-form-urlencoded"]
        .iter()
        .any(|kind| content_type.starts_with(kind));
    if changes_state && form_type {
        return Some((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("a `{content_type}` body is refused: send JSON or multipart/form-data"),
        ));
    }
    None
}

/// Whether `host` (a `Host` header: name or address, and maybe a port) names this service on
/// a machine without a token: an IP address, `localhost`, or a name allowed at start.
fn answers_to(host: &str, allowed: &[String]) -> bool {
    let name = match host.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.parse::<std::net::IpAddr>().is_ok()
        || name.eq_ignore_ascii_case("localhost")
        || allowed
            .iter()
            .any(|allowed| allowed.eq_ignore_ascii_case(name))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0, |diff, (x, y)| diff | (x ^ y)) == 0
}

fn error_response(status: StatusCode, message: &str) -> Response {
    let message = armada_core::redact_secrets(message);
    (status, Json(json!({ "error": message }))).into_response()
}

/// An error as the API answers it.
struct ApiError(Error);

impl ApiError {
    fn not_found(self) -> Response {
        error_response(StatusCode::NOT_FOUND, &self.0.to_string())
    }
}

impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        Self(error)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        answer(&self.0)
    }
}

/// How an error answers over HTTP, on the monitor's routes and the service's merged with
/// them: its status, and `{"error": …}` (with the project's diagnostics for a 422). An
/// internal error (a store that failed) answers with an id that its log line carries, never
/// its text, which may name hosts, users or paths.
pub fn answer(error: &Error) -> Response {
    let status = match error {
        Error::UnknownRun(_) | Error::UnknownJob { .. } | Error::UnknownAttachment { .. } => {
            StatusCode::NOT_FOUND
        }
        Error::Invalid(_) | Error::Orchestrator(_) => StatusCode::BAD_REQUEST,
        Error::Conflict(_) => StatusCode::CONFLICT,
        Error::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        Error::NoOrchestrator(_) => StatusCode::NOT_IMPLEMENTED,
        Error::Busy(_) => StatusCode::TOO_MANY_REQUESTS,
        Error::Project(diagnostics) => {
            let mut body = json!({ "error": error.to_string(), "diagnostics": diagnostics });
            armada_core::redact_secrets_in(&mut body);
            return (StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response();
        }
        _ => {
            let id = uuid::Uuid::new_v4().simple().to_string();
            tracing::error!(%error, id, "a request failed");
            return error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("internal error {id}: the server's log says what failed under this id"),
            );
        }
    };
    error_response(status, &error.to_string())
}

/// A form field's text, read whole: not valid UTF-8 is an error naming the field and the
/// first bad byte (a lossy read would launch a run on U+FFFD where the CLI refuses the file).
pub async fn field_text(
    field: axum::extract::multipart::Field<'_>,
    what: &str,
) -> std::result::Result<String, Error> {
    let bytes = field
        .bytes()
        .await
        .map_err(|error| form_error(&error, what))?;
    String::from_utf8(bytes.to_vec()).map_err(|error| {
        Error::Invalid(format!(
            "{what} is not UTF-8 text (byte {} is not): save it as UTF-8",
            error.utf8_error().valid_up_to() + 1
        ))
    })
}

/// A multipart form that could not be read: too large (413) or malformed (400).
pub fn form_error(error: &axum::extract::multipart::MultipartError, what: &str) -> Error {
    if error.status() == StatusCode::PAYLOAD_TOO_LARGE {
        Error::TooLarge(format!(
            "{what} is larger than this route accepts ({} MB)",
            MAX_LAUNCH_BYTES / (1024 * 1024)
        ))
    } else {
        Error::Invalid(format!("{what} cannot be read: {error}"))
    }
}

type ApiResult<T> = std::result::Result<T, ApiError>;

/// A JSON body whose rejections answer in the API's error format.
struct Body<T>(T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> std::result::Result<Self, Response> {
        match Json::<T>::from_request(request, state).await {
            Ok(Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(error_response(rejection.status(), &rejection.body_text())),
        }
    }
}

/// Query parameters whose rejections answer in the API's error format.
struct Params<T>(T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequestParts<S>
    for Params<T>
{
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> std::result::Result<Self, Response> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(value)) => Ok(Self(value)),
            Err(rejection) => Err(error_response(rejection.status(), &rejection.body_text())),
        }
    }
}

#[derive(Debug, Deserialize)]
struct PageQuery {
    limit: Option<u32>,
    after: Option<String>,
}

fn limit(limit: Option<u32>) -> u32 {
    limit.unwrap_or(50)
}

fn numeric_cursor(after: Option<&str>) -> Result<Option<u64>> {
    after
        .map(|after| {
            after.parse().map_err(|_| {
                Error::Invalid(format!(
                    "`after={after}` is not a cursor this list gave: pass the `next` value back"
                ))
            })
        })
        .transpose()
}

async fn ingest(
    State(state): State<AppState>,
    Body(batch): Body<EventBatch>,
) -> ApiResult<Json<serde_json::Value>> {
    let stored = state.monitor.ingest(&batch).await?;
    Ok(Json(json!({ "stored": stored })))
}

async fn register_run(
    State(state): State<AppState>,
    Body(run): Body<NewRun>,
) -> ApiResult<StatusCode> {
    state.monitor.register_run(&run).await?;
    Ok(StatusCode::CREATED)
}

async fn finish_run(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Body(finish): Body<Finish>,
) -> ApiResult<Json<crate::model::Run>> {
    Ok(Json(state.monitor.finish_run(&id, &finish).await?))
}

async fn list_runs(
    State(state): State<AppState>,
    Params(page): Params<PageQuery>,
) -> ApiResult<Json<serde_json::Value>> {
    let (runs, next) = state
        .monitor
        .store()
        .runs(page.after.as_deref(), limit(page.limit))
        .await?;
    Ok(Json(json!({ "runs": runs, "next": next })))
}

async fn get_run(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<crate::model::Run>> {
    let run = state
        .monitor
        .store()
        .run(&id, armada_core::wire::now_ms())
        .await?;
    Ok(Json(run))
}

async fn delete_run(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    state.monitor.delete_run(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
struct JobsQuery {
    status: Option<String>,
    agent: Option<u32>,
    attempt: Option<u32>,
    error: Option<String>,
    input: Option<String>,
    output: Option<String>,
    sort: Option<String>,
    order: Option<String>,
    limit: Option<u32>,
    after: Option<String>,
    cursor: Option<String>,
}

impl JobsQuery {
    fn filter(&self) -> Result<JobFilter> {
        let states = self
            .status
            .iter()
            .flat_map(|status| status.split(','))
            .filter(|status| !status.is_empty())
            .map(|status| {
                JobState::parse(status).ok_or_else(|| {
                    let known: Vec<_> = JobState::ALL.iter().map(|state| state.as_str()).collect();
                    Error::Invalid(format!(
                        "`status={status}` is not a job status; use one of: {}",
                        known.join(", ")
                    ))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(JobFilter {
            states,
            agent: self.agent,
            attempts: self.attempt,
            error: self.error.clone(),
            input: payload_match("input", self.input.as_deref())?,
            output: payload_match("output", self.output.as_deref())?,
        })
    }

    /// The column asked for (`None`: the index) and the order.
    fn order(&self) -> Result<(Option<JobSort>, SortOrder)> {
        let sort = match self.sort.as_deref() {
            None | Some("index") => None,
            Some(sort) => Some(JobSort::parse(sort).ok_or_else(|| {
                let known: Vec<_> = JobSort::ALL.iter().map(|sort| sort.as_str()).collect();
                Error::Invalid(format!(
                    "`sort={sort}` is not a column jobs are sorted by; use one of: index, {}",
                    known.join(", ")
                ))
            })?),
        };
        let order = match self.order.as_deref() {
            None => SortOrder::Asc,
            Some(order) => SortOrder::parse(order).ok_or_else(|| {
                Error::Invalid(format!("`order={order}` is not an order; use asc or desc"))
            })?,
        };
        Ok((sort, order))
    }
}

/// A payload search `KEY:VALUE` given as `param`.
fn payload_match(param: &str, text: Option<&str>) -> Result<Option<PayloadMatch>> {
    text.map(|text| {
        PayloadMatch::parse(text).map_err(|why| {
            Error::Invalid(format!(
                "`{param}={text}` is not a search: {why}; use {param}=KEY:VALUE, KEY made of \
                 letters, digits, `_` and `-`"
            ))
        })
    })
    .transpose()
}

async fn list_jobs(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Params(query): Params<JobsQuery>,
) -> ApiResult<Json<serde_json::Value>> {
    let filter = query.filter()?;
    let store = state.monitor.store();
    let limit = limit(query.limit);
    let (sort, order) = query.order()?;
    let Some(sort) = sort else {
        if query.cursor.is_some() {
            return Err(Error::Invalid(
                "`cursor` continues a list sorted by another column; sorted by index, pass \
                 back `next` as `after`"
                    .into(),
            )
            .into());
        }
        let after = numeric_cursor(query.after.as_deref())?;
        let page = store
            .jobs_by_index(&id, &filter, order, after, limit)
            .await?;
        let next = page.next.map(|next| next.to_string());
        return Ok(Json(json!({ "jobs": page.items, "next": next })));
    };
    if query.after.is_some() {
        return Err(Error::Invalid(format!(
            "`after` pages the list by index; sorted by {}, pass back `cursor`",
            sort.as_str()
        ))
        .into());
    }
    let cursor = query
        .cursor
        .as_deref()
        .map(|text| {
            JobCursor::parse(text, sort).ok_or_else(|| {
                Error::Invalid(format!(
                    "`cursor={text}` is not a cursor of a list sorted by {}: pass back the \
                     `cursor` value the list gave",
                    sort.as_str()
                ))
            })
        })
        .transpose()?;
    let page = store
        .sorted_jobs(&id, &filter, sort, order, cursor, limit)
        .await?;
    let cursor = page.next.map(|next| next.to_string());
    Ok(Json(json!({ "jobs": page.items, "cursor": cursor })))
}

async fn get_job(
    State(state): State<AppState>,
    Path((id, index)): Path<(String, u64)>,
) -> ApiResult<Json<serde_json::Value>> {
    let (job, attachments) = state.monitor.store().job(&id, index).await?;
    Ok(Json(json!({ "job": job, "attachments": attachments })))
}

#[derive(Debug, Deserialize)]
struct EventsQuery {
    kind: Option<armada_core::wire::EventKind>,
    agent: Option<u32>,
    latest: Option<u32>,
    limit: Option<u32>,
    after: Option<String>,
}

async fn events(
    state: &AppState,
    id: &str,
    filter: EventFilter,
    query: EventsQuery,
) -> ApiResult<Json<serde_json::Value>> {
    let store = state.monitor.store();
    if let Some(latest) = query.latest {
        let events = store.latest_events(id, &filter, latest).await?;
        return Ok(Json(json!({ "events": events, "next": null })));
    }
    let after = numeric_cursor(query.after.as_deref())?;
    let page = store.events(id, &filter, after, limit(query.limit)).await?;
    Ok(Json(
        json!({ "events": page.items, "next": page.next.map(|next| next.to_string()) }),
    ))
}

async fn run_events(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Params(query): Params<EventsQuery>,
) -> ApiResult<Json<serde_json::Value>> {
    let filter = EventFilter {
        kind: query.kind,
        agent: query.agent,
        job: None,
    };
    events(&state, &id, filter, query).await
}

async fn job_events(
    State(state): State<AppState>,
    Path((id, index)): Path<(String, u64)>,
    Params(query): Params<EventsQuery>,
) -> ApiResult<Json<serde_json::Value>> {
    let filter = EventFilter {
        kind: query.kind,
        agent: query.agent,
        job: Some(index),
    };
    events(&state, &id, filter, query).await
}

async fn agents(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let agents = state.monitor.store().agents(&id).await?;
    Ok(Json(json!({ "agents": agents })))
}

async fn about(State(state): State<AppState>) -> Json<crate::control::About> {
    Json(state.monitor.about())
}

/// `GET /runs/{id}/timeline`'s query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TimelineQuery {
    /// The narrowest bucket wanted, to chart two runs alike.
    bucket_ms: Option<u64>,
}

async fn timeline(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Params(query): Params<TimelineQuery>,
) -> ApiResult<Json<crate::model::Timeline>> {
    let timeline = state
        .monitor
        .store()
        .timeline(&id, armada_core::wire::now_ms(), query.bucket_ms)
        .await?;
    Ok(Json(timeline))
}

async fn failures(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Params(page): Params<PageQuery>,
) -> ApiResult<Json<serde_json::Value>> {
    let failures = state
        .monitor
        .store()
        .failures(&id, limit(page.limit))
        .await?;
    Ok(Json(json!({ "failures": failures })))
}

#[derive(Debug, Deserialize)]
struct OutputsQuery {
    format: Option<String>,
    limit: Option<u32>,
    after: Option<String>,
}

async fn outputs(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Params(query): Params<OutputsQuery>,
) -> ApiResult<Response> {
    let format = query.format.as_deref().unwrap_or("json");
    if format == "json" {
        let after = numeric_cursor(query.after.as_deref())?;
        let page = state
            .monitor
            .store()
            .outputs(&id, after, limit(query.limit))
            .await?;
        let body = json!({ "outputs": page.items, "next": page.next.map(|next| next.to_string()) });
        return Ok(Json(body).into_response());
    }
    let (content_type, extension) = match format {
        "jsonl" => ("application/x-ndjson", "jsonl"),
        "csv" => ("text/csv; charset=utf-8", "csv"),
        other => {
            return Err(Error::Invalid(format!(
                "`format={other}` is not an export format; use json, jsonl or csv"
            ))
            .into());
        }
    };
    let body =
        crate::export::outputs(state.monitor.clone(), id.clone(), extension == "csv").await?;
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    let disposition = format!("attachment; filename=\"outputs-{id}.{extension}\"");
    if let Ok(value) = HeaderValue::from_str(&disposition) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    Ok((
        headers,
        axum::body::Body::from_stream(body.map(Ok::<_, std::io::Error>)),
    )
        .into_response())
}

async fn attachment(
    State(state): State<AppState>,
    Path((id, seq)): Path<(String, u64)>,
) -> ApiResult<Response> {
    let (content_type, bytes) = state.monitor.store().attachment(&id, seq).await?;
    let content_type = HeaderValue::from_str(&content_type)
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    let headers = [
        (header::CONTENT_TYPE, content_type),
        // An attachment is the page a script saw: never let it run as the dashboard's origin.
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("sandbox"),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
    ];
    Ok((headers, bytes).into_response())
}

#[derive(Debug, Deserialize)]
struct CompareQuery {
    a: String,
    b: String,
}

async fn compare(
    State(state): State<AppState>,
    Params(query): Params<CompareQuery>,
) -> ApiResult<Json<serde_json::Value>> {
    let store = state.monitor.store();
    let (a, b) = tokio::try_join!(store.stats(&query.a), store.stats(&query.b))?;
    Ok(Json(json!({ "a": a, "b": b })))
}

fn control(state: &AppState, what: &'static str) -> Result<Arc<dyn crate::Control>> {
    state
        .monitor
        .control()
        .cloned()
        .ok_or(Error::NoOrchestrator(what))
}

async fn cancel(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    let run = state
        .monitor
        .store()
        .run(&id, armada_core::wire::now_ms())
        .await?;
    if !run.status.is_open() {
        return Err(Error::Conflict(format!(
            "run {id} is {}; only a running or stalled run can be canceled",
            run.status.as_str()
        ))
        .into());
    }
    control(&state, "cancelling a run")?.cancel(&id).await?;
    Ok(StatusCode::ACCEPTED)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetryBody {
    #[serde(default)]
    jobs: Vec<u64>,
    #[serde(default)]
    failed: bool,
}

async fn retry(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Body(body): Body<RetryBody>,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    let control = control(&state, "running jobs again")?;
    let store = state.monitor.store();
    let mut jobs = body.jobs;
    if body.failed {
        let filter = JobFilter {
            states: vec![JobState::Failed, JobState::Abandoned],
            ..JobFilter::default()
        };
        let mut after = None;
        loop {
            let page = store
                .jobs(&id, &filter, after, crate::store::MAX_PAGE)
                .await?;
            jobs.extend(page.items.iter().map(|job| job.index));
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
    } else {
        store.run(&id, armada_core::wire::now_ms()).await?;
    }
    jobs.sort_unstable();
    jobs.dedup();
    if jobs.is_empty() {
        return Err(Error::Conflict(format!("run {id} has no such jobs to run again")).into());
    }
    let count = jobs.len();
    let run_id = control.retry(&id, jobs).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "run_id": run_id, "jobs": count })),
    ))
}

async fn launch_info(State(state): State<AppState>) -> ApiResult<Json<crate::LaunchInfo>> {
    Ok(Json(
        control(&state, "launching a run")?.launch_info().await?,
    ))
}

async fn launch(
    State(state): State<AppState>,
    form: Multipart,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    let control = control(&state, "launching a run")?;
    let request = launch_form(form, "the launch form").await?;
    let run_id = control.launch(request).await?;
    Ok((StatusCode::CREATED, Json(json!({ "run_id": run_id }))))
}

async fn check_launch(
    State(state): State<AppState>,
    form: Multipart,
) -> ApiResult<Json<crate::control::LaunchCheck>> {
    let control = control(&state, "checking a launch")?;
    let request = launch_form(form, "the launch form").await?;
    Ok(Json(control.check(request).await?))
}

/// A monitor served in the background; owns its server task.
#[derive(Debug)]
pub struct Served {
    addr: SocketAddr,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<()>>,
}

impl Served {
    /// Binds `addr` (port 0 picks a free one) and serves `monitor` on it until
    /// [`Served::stop`]. Refuses to listen beyond loopback without a token.
    pub async fn start(monitor: Monitor, addr: SocketAddr, token: Option<String>) -> Result<Self> {
        let app = app(monitor, token.clone());
        Self::start_app(app, addr, token.as_deref()).await
    }

    /// Like [`Served::start`] for a router built with [`app_with`]; `token` is the one it was
    /// built with, checked against the address.
    pub async fn start_app(app: Router, addr: SocketAddr, token: Option<&str>) -> Result<Self> {
        require_token(addr, token)?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Listen {
                addr: addr.to_string(),
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| Error::Listen {
            addr: addr.to_string(),
            source,
        })?;
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(serve_app(listener, app, shutdown.clone()));
        Ok(Self {
            addr,
            shutdown,
            task,
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its base URL, `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops taking connections and waits for open requests to end.
    pub async fn stop(self) -> Result<()> {
        self.shutdown.cancel();
        // Open WebSockets end with their monitor (`Monitor::close`); do not wait on them here.
        match tokio::time::timeout(std::time::Duration::from_secs(5), self.task).await {
            Ok(Ok(result)) => result,
            Ok(Err(error)) => {
                tracing::warn!(%error, "the monitor's server task failed");
                Ok(())
            }
            Err(_) => Ok(()),
        }
    }
}
