//! Talking to services over HTTP: a monitor service (agents' event batches, a run's
//! registration and end) and a project's orchestrator service (the dashboard's Launch,
//! Cancel and Retry on the standalone monitor, `armada-monitor --orchestrator URL`).

use armada_core::BoxError;
use armada_core::backend::{EventWriter, redact_url};
use armada_core::wire::EventBatch;
use futures::future::BoxFuture;
use serde::Serialize;
use serde_json::Value;

use crate::control::{Control, LaunchInfo, LaunchRequest};
use crate::{Error, Result};

/// A request that got no answer: the service is down, unreachable, or took too long.
#[derive(Debug, thiserror::Error)]
#[error("cannot reach it: {0}")]
struct Unreachable(#[source] reqwest::Error);

/// A base URL, its bearer token, and the mapping of HTTP answers to [`Error`]s.
#[derive(Debug)]
struct Remote {
    base: String,
    token: Option<String>,
    client: reqwest::Client,
}

impl Remote {
    fn new(url: &str, token: Option<String>) -> Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .map_err(|error| Error::Remote {
                url: redact_url(url),
                source: error.into(),
            })?;
        Ok(Self {
            base: url.trim_end_matches('/').to_owned(),
            token,
            client,
        })
    }

    fn failed(&self, error: impl Into<BoxError>) -> Error {
        Error::Remote {
            url: redact_url(&self.base),
            source: error.into(),
        }
    }

    /// Sends a request with a body of `content_type`; the answer's JSON (`null` when empty).
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<Value> {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some((content_type, body)) = body {
            request = request.header("content-type", content_type).body(body);
        }
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request
            .send()
            .await
            .map_err(|error| self.failed(Unreachable(error)))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(body);
        }
        let message = body
            .get("error")
            .and_then(Value::as_str)
            .map_or(text.clone(), str::to_owned);
        Err(match status.as_u16() {
            404 => Error::UnknownRun(message),
            409 => Error::Conflict(message),
            422 => match serde_json::from_value(body["diagnostics"].clone()) {
                Ok(diagnostics) => Error::Project(diagnostics),
                Err(_) => Error::Invalid(message),
            },
            400 | 413 => Error::Invalid(message),
            _ => self.failed(format!("answered {status}: {message}")),
        })
    }

    async fn post_json(&self, path: &str, body: &impl Serialize) -> Result<Value> {
        let body = serde_json::to_vec(body).map_err(|error| self.failed(error))?;
        self.send(
            reqwest::Method::POST,
            path,
            Some(("application/json", body)),
        )
        .await
    }
}

/// A monitor service reached over HTTP: where agents in other processes or pods report.
#[derive(Debug)]
pub struct RemoteMonitor(Remote);

impl RemoteMonitor {
    /// The monitor at `url` (`http://HOST:PORT`), with its bearer token.
    pub fn new(url: &str, token: Option<String>) -> Result<Self> {
        Remote::new(url, token).map(Self)
    }

    /// Posts JSON to one of its routes.
    pub(crate) async fn post_json(&self, path: &str, body: &impl Serialize) -> Result<Value> {
        self.0.post_json(path, body).await
    }
}

impl EventWriter for RemoteMonitor {
    fn write(&self, batch: EventBatch) -> BoxFuture<'_, armada_core::Result<bool>> {
        Box::pin(async move {
            let answer = self.0.post_json("/api/v1/events", &batch).await;
            answer
                .map(|body| body["stored"].as_bool().unwrap_or(true))
                .map_err(|error| armada_core::Error::Backend {
                    service: "the monitor",
                    url: redact_url(&self.0.base),
                    source: error.into(),
                })
        })
    }
}

/// A project's orchestrator service (`orchestrate serve`) driven by the standalone monitor's
/// dashboard: its Launch page, Cancel and Retry are forwarded to the service's own control
/// routes. Both must use the same store for the dashboard to show the runs.
#[derive(Debug)]
pub struct RemoteControl(Remote);

impl RemoteControl {
    /// The service at `url`, with its bearer token.
    pub fn new(url: &str, token: Option<String>) -> Result<Self> {
        Remote::new(url, token).map(Self)
    }
}

/// A `multipart/form-data` body of text parts.
fn form(parts: &[(&str, String)]) -> (String, Vec<u8>) {
    let boundary = format!("armada-{}", uuid::Uuid::new_v4().simple());
    let mut body = Vec::new();
    for (name, value) in parts {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n")
                .as_bytes(),
        );
        body.extend_from_slice(value.as_bytes());
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

impl Control for RemoteControl {
    fn launch_info(&self) -> BoxFuture<'_, Result<LaunchInfo>> {
        Box::pin(async move {
            let info = self
                .0
                .send(reqwest::Method::GET, "/api/v1/launch", None)
                .await?;
            serde_json::from_value(info).map_err(|error| self.0.failed(error))
        })
    }

    fn launch(&self, request: LaunchRequest) -> BoxFuture<'_, Result<String>> {
        Box::pin(async move {
            let mut parts = Vec::new();
            let mut text = |name: &'static str, value: Option<String>| {
                if let Some(value) = value {
                    parts.push((name, value));
                }
            };
            text("tune", request.tune);
            text("agents", request.agents.map(|agents| agents.to_string()));
            text("jobs", request.jobs.map(|jobs| jobs.to_string()));
            text("data_agent.csv", request.data_agent_csv);
            text("data_job.csv", request.data_job_csv);
            text("relaunch_of", request.relaunch_of);
            let (content_type, body) = form(&parts);
            let answer = self
                .0
                .send(
                    reqwest::Method::POST,
                    "/api/v1/launch",
                    Some((&content_type, body)),
                )
                .await?;
            run_id_of(&answer).ok_or_else(|| self.0.failed("answered no run id"))
        })
    }

    fn cancel<'a>(&'a self, run_id: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.0
                .post_json(
                    &format!("/api/v1/runs/{run_id}/cancel"),
                    &serde_json::json!({}),
                )
                .await
                .map(drop)
        })
    }

    fn retry<'a>(&'a self, run_id: &'a str, jobs: Vec<u64>) -> BoxFuture<'a, Result<String>> {
        Box::pin(async move {
            let answer = self
                .0
                .post_json(
                    &format!("/api/v1/runs/{run_id}/retry"),
                    &serde_json::json!({ "jobs": jobs }),
                )
                .await?;
            run_id_of(&answer).ok_or_else(|| self.0.failed("answered no run id"))
        })
    }
}

fn run_id_of(answer: &Value) -> Option<String> {
    answer["run_id"].as_str().map(str::to_owned)
}
