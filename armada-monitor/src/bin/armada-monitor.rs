//! The standalone monitor for deployments: serves the API, the WebSocket feed and the
//! dashboard over a shared store. Launching from the dashboard needs the project's own
//! binary (`orchestrate monitor`); here Launch, Cancel and Retry answer 501.

use std::net::SocketAddr;

use anyhow::Context as _;
use armada_monitor::Monitor;
use armada_monitor::server::Served;
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
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let monitor = Monitor::open(&args.store)
        .await
        .context("cannot open the monitor's store")?;
    let served = Served::start(monitor.clone(), args.listen, args.token)
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
