//! `/metrics`, `/healthz` and `/readyz` on one small HTTP/1 listener.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::metrics::Metrics;

/// What the endpoints report: set by the control loop, read by the server.
pub struct Health {
    pub metrics: Metrics,
    /// Ready once the first round (or the standby state) is reached: the Kubernetes clients
    /// work and the CRD is installed.
    pub ready: AtomicBool,
}

impl Health {
    pub fn new(metrics: Metrics) -> Self {
        Health {
            metrics,
            ready: AtomicBool::new(false),
        }
    }
}

/// Serves until the task is dropped.
pub async fn serve(listener: TcpListener, health: Arc<Health>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(connection) => connection,
            Err(error) => {
                tracing::warn!(%error, "accepting an HTTP connection");
                continue;
            }
        };
        let health = health.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let health = health.clone();
                async move { Ok::<_, Infallible>(respond(&request, &health)) }
            });
            if let Err(error) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%error, "HTTP connection ended");
            }
        });
    }
}

fn respond(request: &Request<Incoming>, health: &Health) -> Response<Full<Bytes>> {
    if request.method() != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
    }
    match request.uri().path() {
        "/metrics" => Response::builder()
            .header(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )
            .body(Full::new(Bytes::from(health.metrics.encode())))
            .unwrap_or_default(),
        // Alive as long as this task answers: the loop itself restarts on errors.
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" if health.ready.load(Ordering::Relaxed) => text(StatusCode::OK, "ok\n"),
        "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap_or_default()
}
