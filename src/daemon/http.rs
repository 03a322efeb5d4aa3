//! `/healthz` and `/metrics` on `[daemon] listen`.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::task::JoinHandle;

use super::Daemon;

/// Binds now (so a taken port stops the daemon at start-up) and serves until `stop` turns true.
pub(super) async fn serve(
    addr: SocketAddr,
    daemon: Arc<Daemon>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("daemon.listen: cannot listen on {addr}"))?;
    let bound = listener.local_addr().unwrap_or(addr);
    tracing::info!(listen = %bound, "serving /healthz and /metrics");
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(daemon);
    Ok(tokio::spawn(async move {
        let shutdown = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(error = %e, "the health and metrics server stopped");
        }
    }))
}

async fn healthz(State(daemon): State<Arc<Daemon>>) -> Response {
    let (healthy, sources) = daemon.metrics.health(chrono::Utc::now());
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let unhealthy: Vec<_> = sources.iter().filter(|s| !s.healthy).collect();
    let body = serde_json::json!({
        "status": if healthy { "ok" } else { "unhealthy" },
        "reason": (!healthy).then(|| format!(
            "{} source(s) without a successful run within their window: {}",
            unhealthy.len(),
            unhealthy.iter().map(|s| s.source.as_str()).collect::<Vec<_>>().join(", ")
        )),
        "sources": sources,
    });
    (status, axum::Json(body)).into_response()
}

async fn metrics(State(daemon): State<Arc<Daemon>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        daemon.metrics.render(),
    )
        .into_response()
}
