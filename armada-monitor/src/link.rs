//! Where a run's monitoring goes, chosen by URL in one place.

use std::sync::Arc;

use armada_core::EventSink;
use armada_core::backend::redact_url;

use crate::model::{Finish, NewRun};
use crate::remote::RemoteMonitor;
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
            Self::Remote(remote) => remote.post_json("/api/v1/runs", run).await.map(drop),
        }
    }

    /// Marks a run ended, with its final state and that of its unfinished jobs; does nothing
    /// with `memory://`.
    pub async fn finish_run(&self, run_id: &str, finish: &Finish) -> Result<()> {
        match self {
            Self::Memory(_) => Ok(()),
            Self::Local(monitor) => monitor.finish_run(run_id, finish).await.map(drop),
            Self::Remote(remote) => remote
                .post_json(&format!("/api/v1/runs/{run_id}/finish"), finish)
                .await
                .map(drop),
        }
    }
}
