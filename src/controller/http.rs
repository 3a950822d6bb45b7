//! `/metrics`, `/healthz` and `/readyz` on one small HTTP/1 listener.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use updater::Progress;

use super::metrics::Metrics;

/// What the endpoints report: set by the control loop, read by the server.
pub struct Health {
    pub metrics: Metrics,
    /// Ready once the first round (or the standby state) is reached: the Kubernetes clients
    /// work and the CRD is installed.
    pub ready: AtomicBool,
    /// How long the loop may make no progress before `/healthz` fails.
    progress_deadline: Duration,
    /// When the lease was last answered for (taken, renewed or seen held by another).
    lease_answered: Mutex<Instant>,
    /// When the round under way began; None between rounds.
    round_started: Mutex<Option<Instant>>,
    /// The updater's steps within a round.
    change: watch::Receiver<Progress>,
}

impl Health {
    pub fn new(
        metrics: Metrics,
        progress_deadline: Duration,
        change: watch::Receiver<Progress>,
    ) -> Self {
        Health {
            metrics,
            ready: AtomicBool::new(false),
            progress_deadline,
            lease_answered: Mutex::new(Instant::now()),
            round_started: Mutex::new(None),
            change,
        }
    }

    pub fn lease_answered(&self) {
        *lock(&self.lease_answered) = Instant::now();
    }

    pub fn round_began(&self) {
        *lock(&self.round_started) = Some(Instant::now());
    }

    pub fn round_ended(&self) {
        *lock(&self.round_started) = None;
    }

    /// Why the loop counts as wedged, if it does: no answer for the lease, or a round that
    /// has not moved on (begun, or started an updater step) within the deadline.
    pub fn stalled(&self) -> Option<String> {
        let deadline = self.progress_deadline;
        let lease = lock(&self.lease_answered).elapsed();
        if lease > deadline {
            return Some(format!(
                "no answer about the lease for {} s (deadline {} s)",
                lease.as_secs(),
                deadline.as_secs()
            ));
        }
        let began = (*lock(&self.round_started))?;
        let moved = began.max(self.change.borrow().at()).elapsed();
        (moved > deadline).then(|| {
            format!(
                "a round has made no progress for {} s (deadline {} s)",
                moved.as_secs(),
                deadline.as_secs()
            )
        })
    }
}

/// The guarded value even if a panicking holder poisoned the lock: it is only an instant.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
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
        // Errors end a round and the next one retries; only a loop that stopped moving on
        // needs the restart a failing liveness probe brings.
        "/healthz" => match health.stalled() {
            None => text(StatusCode::OK, "ok\n"),
            Some(reason) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("stalled: {reason}\n"),
            ),
        },
        "/readyz" if health.ready.load(Ordering::Relaxed) => text(StatusCode::OK, "ok\n"),
        "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(body.into()))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEADLINE: Duration = Duration::from_secs(60);

    fn health() -> (Health, watch::Sender<Progress>) {
        let (progress, change) = watch::channel(Progress::Idle {
            since: Instant::now(),
        });
        (Health::new(Metrics::default(), DEADLINE, change), progress)
    }

    fn ago(seconds: u64) -> Instant {
        Instant::now() - Duration::from_secs(seconds)
    }

    #[test]
    fn an_unanswered_lease_past_the_deadline_is_a_stall() {
        let (health, _progress) = health();
        assert_eq!(health.stalled(), None);
        *lock(&health.lease_answered) = ago(61);
        let reason = health.stalled().expect("stalled");
        assert!(
            reason.contains("lease") && reason.contains("deadline 60 s"),
            "{reason}"
        );
        health.lease_answered();
        assert_eq!(health.stalled(), None);
    }

    #[test]
    fn a_round_stalls_only_when_neither_it_nor_the_updater_moved_on() {
        let (health, progress) = health();
        // Between rounds nothing is owed, however long the interval.
        assert_eq!(health.stalled(), None);
        *lock(&health.round_started) = Some(ago(61));
        progress.send_replace(Progress::Idle { since: ago(3600) });
        assert!(health.stalled().is_some_and(|r| r.contains("round")));
        // A long roll whose steps keep starting is progress.
        progress.send_replace(Progress::Changing {
            step_started: ago(30),
        });
        assert_eq!(health.stalled(), None);
        progress.send_replace(Progress::Changing {
            step_started: ago(61),
        });
        assert!(health.stalled().is_some());
        health.round_ended();
        assert_eq!(health.stalled(), None);
    }
}
