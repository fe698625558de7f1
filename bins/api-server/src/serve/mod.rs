//! The HTTP/1.1 server loop: hyper serving the router on each accepted connection, with what a server
//! exposed to the internet needs that `axum::serve` does not give.
//!
//! - A header timeout: a connection whose request headers are not complete within it is closed (hyper
//!   starts the clock when it waits for a request: at the connection's start and after each response on
//!   a keep-alive connection, so it is also the idle timeout of a keep-alive connection).
//! - A cap on open connections ([`registry`]), below the open-file limit ([`file_limit`]): at the cap the
//!   oldest connection with no request in flight is closed to admit the new one.
//! - hyper's own answers to requests it cannot parse carry the API's JSON error body ([`early_errors`]).

pub mod body_deadline;
pub mod early_errors;
pub mod file_limit;
pub mod in_flight;
pub mod registry;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use body_deadline::TimedBody;
use early_errors::EarlyErrors;
use in_flight::CountedBody;
use registry::{Admission, Registry, Slot};

/// The address a request's connection came from (a request extension).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub std::net::SocketAddr);

/// How the server treats connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeLimits {
    /// A request's headers must be complete this long after the server starts waiting for them.
    pub header_timeout: Duration,
    /// A request's body must be complete this long after its headers (else 408).
    pub body_timeout: Duration,
    /// At most this many connections are open at once.
    pub max_connections: usize,
}

impl Default for ServeLimits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            max_connections: 4096,
        }
    }
}

/// Serves `app` on `listener` until `shutdown` resolves; then stops accepting, calls `on_shutdown`, closes
/// idle connections and waits for the requests in flight.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ServeLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_shutdown: impl FnOnce(),
) -> std::io::Result<()> {
    let registry = Registry::new(limits.max_connections);
    let connections = TaskTracker::new();
    let draining = CancellationToken::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    accept_failed(&error).await;
                    continue;
                }
            },
        };
        match registry.admit() {
            Admission::Admitted { slot, evicted } => {
                if evicted > 0 {
                    tracing::debug!(
                        evicted,
                        cap = registry.cap(),
                        "idle connections closed at the cap"
                    );
                }
                crate::metrics::connection_admitted(evicted);
                connections.spawn(connection(
                    stream,
                    PeerAddr(peer),
                    app.clone(),
                    slot,
                    limits,
                    draining.clone(),
                ));
            }
            Admission::Full => {
                crate::metrics::connection_refused();
                tracing::warn!(
                    cap = registry.cap(),
                    "connection refused: every connection is busy"
                );
                drop(stream);
            }
        }
    }
    on_shutdown();
    draining.cancel();
    connections.close();
    connections.wait().await;
    Ok(())
}

/// An accept error: a connection that failed before we took it is skipped; running out of files (or any
/// other error) is waited out briefly so the loop does not spin.
async fn accept_failed(error: &std::io::Error) {
    use std::io::ErrorKind;
    if matches!(
        error.kind(),
        ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset | ErrorKind::ConnectionRefused
    ) {
        return;
    }
    tracing::error!(error = %error, "accept failed");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// One connection, until the client closes it, hyper closes it (a header timeout, an error), the registry
/// evicts it or the server drains it.
async fn connection(
    stream: TcpStream,
    peer: PeerAddr,
    app: Router,
    slot: Slot,
    limits: ServeLimits,
    draining: CancellationToken,
) {
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(error = %error, "TCP_NODELAY not set");
    }
    let slot = Arc::new(slot);
    let counted = slot.clone();
    let service = tower::service_fn(move |req: hyper::Request<Incoming>| {
        let guard = counted.begin_request();
        let app = app.clone();
        let deadline = tokio::time::Instant::now() + limits.body_timeout;
        let (parts, body) = req.into_parts();
        let (body, expired) = TimedBody::new(body, deadline);
        let mut req = hyper::Request::from_parts(parts, Body::new(body));
        req.extensions_mut().insert(expired);
        req.extensions_mut().insert(peer);
        async move {
            let response = app.oneshot(req).await?;
            Ok::<_, std::convert::Infallible>(
                response.map(|body| Body::new(CountedBody::new(body, guard))),
            )
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    // Upgrades: the preview gateway passes WebSockets through.
    let conn = builder
        .serve_connection(
            TokioIo::new(EarlyErrors::new(stream)),
            TowerToHyperService::new(service),
        )
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(error) = result {
                tracing::debug!(error = %error, "connection ended with an error");
            }
            return;
        }
        () = slot.evicted() => return,
        () = draining.cancelled() => conn.as_mut().graceful_shutdown(),
    }
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(error) = result {
                tracing::debug!(error = %error, "connection ended with an error while draining");
            }
        }
        () = slot.evicted() => {}
    }
}
