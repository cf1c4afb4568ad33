//! Accepting HTTP connections on bounds no client can stretch: a connection that does not send
//! a complete request head in time (`ROWGUARD_REQUEST_HEAD_TIMEOUT_SECS`, including a
//! keep-alive connection that sits idle that long) is closed, so sockets held open by slow or
//! silent clients are given back. (The request body is bounded where it is read, by the request
//! timeout.)

use std::future::Future;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::ServiceExt;

/// Serves `app` on `listener` until `shutdown` resolves; then the listener closes at once (new
/// connections are refused), idle connections close, and in-flight requests get `grace` to
/// finish. `head_timeout` is the longest wait for a request's head (line and headers), counted
/// from when the connection is ready for one: when it opens, or after its last answer.
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
    head_timeout: Duration,
) -> std::io::Result<()> {
    // HTTP/1.1 only: telling HTTP/2's cleartext preface apart (hyper-util's automatic mode)
    // waits for the client's first bytes with no time limit, so a silent connection would never
    // be closed. Browsers reach HTTP/2 through TLS, which a proxy or load balancer in front
    // terminates.
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(head_timeout);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // A connection reset before it was accepted: the next one may be fine.
                Err(error) if is_connection_error(&error) => continue,
                Err(error) => {
                    // Out of file descriptors (or memory): keep serving the connections already
                    // open, and try again in a moment rather than spin.
                    tracing::warn!(%error, "could not accept a connection");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        () = &mut shutdown => break,
                    }
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone().map_request(
            |request: axum::http::Request<hyper::body::Incoming>| {
                request.map(axum::body::Body::new)
            },
        ));
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            // A client that goes away mid-request, or whose head timed out, ends here.
            let _ = connection.await;
        });
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            grace_secs = grace.as_secs(),
            "in-flight requests did not finish in time; exiting"
        );
    }
    Ok(())
}

/// An accept error that concerns only the connection being accepted.
fn is_connection_error(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}
