//! Where a run's monitoring goes, chosen by URL in one place.

use std::sync::Arc;

use armada_core::EventSink;
use armada_core::backend::{EventWriter, redact_url};
use armada_core::wire::EventBatch;
use futures::future::BoxFuture;
use serde::Serialize;

use crate::model::{Finish, NewRun};
use crate::{Error, Monitor, Result};

/// Where a run's events, registration and end go.
#[derive(Debug, Clone)]
pub enum MonitorLink {
    /// Nothing stored beyond the last events of each run (`memory://`): tests and benchmarks.
    Memory(EventSink),
    /// A store opened in this process (`sqlite:PATH`, `postgres://…`, `mssql://…`).
    Local(Monitor),
    /// A monitor service reached over HTTP (`http://HOST:PORT`).
    Remote(Arc<RemoteMonitor>),
}

impl MonitorLink {
    /// Opens the link for `url`; `token` is the bearer token of a remote monitor.
    pub async fn connect(url: &str, token: Option<String>) -> Result<Self> {
        match url.split_once(':').map(|(scheme, _)| scheme) {
            Some("memory") => Ok(Self::Memory(
                EventSink::connect(url)
                    .await
                    .map_err(|error| Error::Invalid(error.to_string()))?,
            )),
            Some("http") => Ok(Self::Remote(Arc::new(RemoteMonitor::new(url, token)?))),
            Some("https") => Err(Error::UnsupportedUrl {
                url: redact_url(url),
                supported: "http:// (put TLS in front of the monitor, e.g. in the ingress, and \
                            reach it over http inside the cluster), sqlite:PATH, postgres://…, \
                            mssql://…, memory://",
            }),
            _ => Ok(Self::Local(Monitor::open(url).await?)),
        }
    }

    /// The sink agents of this process write events to.
    pub fn sink(&self) -> EventSink {
        match self {
            Self::Memory(sink) => sink.clone(),
            Self::Local(monitor) => EventSink::Writer(Arc::new(monitor.clone())),
            Self::Remote(remote) => EventSink::Writer(remote.clone()),
        }
    }

    /// Registers a run with all its jobs queued.
    pub async fn register_run(&self, run: &NewRun) -> Result<()> {
        match self {
            Self::Memory(_) => Ok(()),
            Self::Local(monitor) => monitor.register_run(run).await,
            Self::Remote(remote) => remote.post("/api/v1/runs", run).await,
        }
    }

    /// Marks a run ended.
    pub async fn finish_run(&self, run_id: &str, finish: &Finish) -> Result<()> {
        match self {
            Self::Memory(_) => Ok(()),
            Self::Local(monitor) => monitor.finish_run(run_id, finish).await.map(drop),
            Self::Remote(remote) => {
                remote
                    .post(&format!("/api/v1/runs/{run_id}/finish"), finish)
                    .await
            }
        }
    }
}

/// A monitor service reached over HTTP.
#[derive(Debug)]
pub struct RemoteMonitor {
    base: String,
    token: Option<String>,
    client: reqwest::Client,
}

impl RemoteMonitor {
    fn new(url: &str, token: Option<String>) -> Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .map_err(|error| Error::Remote {
                url: redact_url(url),
                message: error.to_string(),
            })?;
        Ok(Self {
            base: url.trim_end_matches('/').to_owned(),
            token,
            client,
        })
    }

    async fn post(&self, path: &str, body: &impl Serialize) -> Result<()> {
        let failed = |message: String| Error::Remote {
            url: redact_url(&self.base),
            message,
        };
        let body = serde_json::to_vec(body).map_err(|error| failed(error.to_string()))?;
        let mut request = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request
            .send()
            .await
            .map_err(|error| failed(format!("cannot reach it: {error}")))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let text = response.text().await.unwrap_or_default();
        let message = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|body| body.get("error")?.as_str().map(str::to_owned))
            .unwrap_or(text);
        Err(match status.as_u16() {
            404 => Error::UnknownRun(message),
            400 | 413 | 422 => Error::Invalid(message),
            _ => failed(format!("answered {status}: {message}")),
        })
    }
}

impl EventWriter for RemoteMonitor {
    fn write(&self, batch: EventBatch) -> BoxFuture<'_, armada_core::Result<bool>> {
        Box::pin(async move {
            self.post("/api/v1/events", &batch)
                .await
                .map(|()| true)
                .map_err(|error| armada_core::Error::Backend {
                    service: "the monitor",
                    url: redact_url(&self.base),
                    message: error.to_string(),
                })
        })
    }
}
