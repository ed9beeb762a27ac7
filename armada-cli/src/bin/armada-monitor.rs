//! The standalone monitor for deployments: serves the API, the WebSocket feed and the
//! dashboard over a shared store. The dashboard's Launch, Cancel and Retry go to the project's
//! orchestrator service when `--orchestrator` names it (`orchestrate serve` on the same
//! store), and answer 501 otherwise.

use std::net::SocketAddr;

use anyhow::Context as _;
use std::sync::Arc;

use armada_monitor::server::Served;
use armada_monitor::{Control, Monitor, RemoteControl, Store};
use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Serves Armada's monitor API and dashboard over a shared store."
)]
struct Args {
    /// The address to serve on; anything but loopback needs --token.
    #[arg(long, env = "ARMADA_MONITOR_LISTEN", default_value = "127.0.0.1:8400")]
    listen: SocketAddr,
    /// The store: sqlite:PATH, postgres://… (feature `postgres`) or
    /// mssql://USER:PASSWORD@HOST:PORT/DATABASE (feature `mssql`).
    #[arg(long, env = "ARMADA_MONITOR_STORE", hide_env_values = true)]
    store: String,
    /// The bearer token required by the API and the dashboard.
    #[arg(long, env = "ARMADA_MONITOR_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A host name the monitor is reached by besides its addresses and localhost (a reverse
    /// proxy's); without a token, requests naming other hosts are refused. Repeatable.
    #[arg(long = "allow-host", value_name = "NAME")]
    allow_hosts: Vec<String>,
    /// The project's orchestrator service (`orchestrate serve`), for Launch, Cancel and Retry.
    #[arg(long, env = "ARMADA_ORCHESTRATOR_URL", value_name = "URL")]
    orchestrator: Option<String>,
    /// The orchestrator service's bearer token.
    #[arg(long, env = "ARMADA_ORCHESTRATOR_TOKEN", hide_env_values = true)]
    orchestrator_token: Option<String>,
    /// Seconds a running run's agents and followers may be silent before it shows as
    /// stalled (and an agent as gone).
    #[arg(long, env = "ARMADA_STALL_SECS", value_name = "SECS", default_value_t = armada_monitor::DEFAULT_STALL_LIMIT.as_secs_f64())]
    stall_secs: f64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    let stall_limit = std::time::Duration::try_from_secs_f64(args.stall_secs)
        .context("--stall-secs is not a duration")?;
    let store = Store::open(&args.store)
        .await
        .context("cannot open the monitor's store")?
        .with_stall_limit(stall_limit);
    let control = match &args.orchestrator {
        Some(url) => Some(Arc::new(
            RemoteControl::new(url, args.orchestrator_token.clone())
                .context("cannot reach the orchestrator service")?,
        ) as Arc<dyn Control>),
        None => None,
    };
    let monitor = Monitor::new(store, control);
    let app = armada_monitor::server::app_with_hosts(
        monitor.clone(),
        args.token.clone(),
        args.allow_hosts,
        axum::Router::new(),
    );
    let served = Served::start_app(app, args.listen, args.token.as_deref())
        .await
        .context("cannot serve the monitor")?;
    tracing::info!(url = %served.url(), store = %monitor.store().url(), "monitor serving");
    let shutdown = async {
        #[cfg(unix)]
        {
            let mut terminate =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            tokio::select! {
                result = tokio::signal::ctrl_c() => result,
                _ = terminate.recv() => Ok(()),
            }
        }
        #[cfg(not(unix))]
        tokio::signal::ctrl_c().await
    };
    shutdown.await.context("cannot wait for a stop signal")?;
    monitor.close();
    served.stop().await?;
    Ok(())
}
