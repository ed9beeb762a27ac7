//! The embedded service: `cargo run -p embedded-service`, then
//! `curl -N localhost:8500/runs -H 'content-type: application/json' -d '{"agents": 2, "jobs": [{"name": "Ada"}]}'`.
//! Listens on `EMBEDDED_SERVICE_ADDR` (default `127.0.0.1:8500`).

use anyhow::Context;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let addr =
        std::env::var("EMBEDDED_SERVICE_ADDR").unwrap_or_else(|_| "127.0.0.1:8500".to_owned());
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    tracing::info!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, embedded_service::app())
        .with_graceful_shutdown(async {
            // An error here means no Ctrl-C handler: the process then runs until killed.
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        })
        .await
        .context("the server stopped")
}
