//! Accepting HTTP connections on bounds no client can stretch: a connection that does not send
//! a complete request head in time (`ROWGUARD_REQUEST_HEAD_TIMEOUT_SECS`, including a
//! keep-alive connection that sits idle that long) is closed, so sockets held open by slow or
//! silent clients are given back; and no more connections are held open at once than the
//! process's file descriptors allow beside what the gateway needs for itself
//! ([`ConnectionLimit`]). (The request body is bounded where it is read, by the request timeout.)

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;

/// The most connections one listener holds open at once. Past it the listener stops accepting:
/// new connections wait in the kernel's listen queue (or are refused by it) until one closes,
/// instead of taking the descriptors that the database pool, the audit sealer, Redis and the
/// checkpoint files need. Without it, a client opening connections until the process runs out
/// of descriptors turns every request into SERVICE_UNAVAILABLE (the pool cannot reconnect) and
/// stops checkpoints being written.
#[derive(Debug, Clone)]
pub struct ConnectionLimit {
    permits: Arc<Semaphore>,
    max: usize,
}

impl ConnectionLimit {
    pub fn new(max: usize) -> Self {
        let max = max.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            permits: Arc::new(Semaphore::new(max)),
            max,
        }
    }

    pub fn max(&self) -> usize {
        self.max
    }
}

/// Descriptors the gateway keeps for itself beyond its database pool: the sealer's connection,
/// Redis, the identity provider's keys, the trace exporter, both listeners, the metrics
/// listener's own connections, log and checkpoint files, the runtime's own.
const RESERVED_DESCRIPTORS: u64 = 64 + METRICS_CONNECTIONS as u64;

/// Connections the metrics listener holds open at once (a scraper needs one).
pub const METRICS_CONNECTIONS: usize = 16;

/// The client connection limit for this process: `configured`, or what the open-file limit
/// leaves once the gateway's own descriptors are set aside (`pool` database connections and
/// [`RESERVED_DESCRIPTORS`]), whichever is lower. The soft open-file limit is raised to the
/// hard one first, as Go's runtime does: the soft default (1024 on many systems) is a
/// compatibility relic for `select(2)`, which nothing here uses.
pub fn client_connection_limit(configured: Option<u32>, pool: u32) -> ConnectionLimit {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let open_files = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => hard,
            Err(_) => soft,
        },
        Ok((soft, _)) => soft,
        // No limit could be read: take the configured value (or a conventional one) on trust.
        Err(_) => {
            u64::from(configured.unwrap_or(1024)) + RESERVED_DESCRIPTORS + 2 * u64::from(pool)
        }
    };
    let available = left_for_clients(open_files, pool);
    let max = match configured {
        Some(n) if usize::try_from(n).unwrap_or(usize::MAX) <= available => n as usize,
        Some(n) => {
            tracing::warn!(
                configured = n,
                open_file_limit = open_files,
                using = available,
                "ROWGUARD_MAX_CLIENT_CONNECTIONS is more than the open-file limit allows beside the \
                 gateway's own descriptors; raise the limit (e.g. systemd's LimitNOFILE) to use it"
            );
            available
        }
        None => available,
    };
    if available < 64 {
        tracing::warn!(
            open_file_limit = open_files,
            client_connections = max,
            "the open-file limit leaves few client connections; raise it (e.g. systemd's LimitNOFILE)"
        );
    }
    ConnectionLimit::new(max)
}

/// The client connections `open_files` descriptors leave once the gateway's own are set aside
/// (at least one). Each pooled database connection counts twice: it may be replaced while its
/// old socket is still closing.
fn left_for_clients(open_files: u64, pool: u32) -> usize {
    let reserved = RESERVED_DESCRIPTORS + 2 * u64::from(pool);
    usize::try_from(open_files.saturating_sub(reserved))
        .unwrap_or(usize::MAX)
        .max(1)
}

/// How often, at most, reaching the connection limit is logged.
const FULL_WARNING_EVERY: Duration = Duration::from_secs(60);

/// Serves `app` on `listener` until `shutdown` resolves; then the listener closes at once (new
/// connections are refused), idle connections close, and in-flight requests get `grace` to
/// finish. `head_timeout` is the longest wait for a request's head (line and headers), counted
/// from when the connection is ready for one: when it opens, or after its last answer; it is
/// also the longest an answer may wait for the client to read it. At most `limit` connections
/// are open at once.
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
    head_timeout: Duration,
    limit: ConnectionLimit,
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
    let mut warned_full: Option<Instant> = None;
    loop {
        let permit = match limit.permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                if warned_full.is_none_or(|at| at.elapsed() >= FULL_WARNING_EVERY) {
                    warned_full = Some(Instant::now());
                    tracing::warn!(
                        limit = limit.max,
                        "client connection limit reached: new connections wait until one closes"
                    );
                }
                tokio::select! {
                    permit = limit.permits.clone().acquire_owned() => match permit {
                        Ok(permit) => permit,
                        // The semaphore is never closed.
                        Err(_) => break,
                    },
                    () = &mut shutdown => break,
                }
            }
        };
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
        // The head timeout covers a client that does not send; this covers one that does not
        // read: an answer it leaves unread for as long is given up and the connection closed,
        // so it cannot hold its place under the connection limit for ever.
        let mut stream = tokio_io_timeout::TimeoutStream::new(stream);
        stream.set_write_timeout(Some(head_timeout));
        let service = TowerToHyperService::new(app.clone().map_request(
            |request: axum::http::Request<hyper::body::Incoming>| {
                request.map(axum::body::Body::new)
            },
        ));
        let connection =
            graceful.watch(builder.serve_connection(TokioIo::new(Box::pin(stream)), service));
        tokio::spawn(async move {
            // A client that goes away mid-request, or whose head timed out, ends here.
            let _ = connection.await;
            drop(permit);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_get_what_the_gateway_does_not_keep_for_itself() {
        assert_eq!(left_for_clients(1024, 10), 1024 - 80 - 20);
        assert_eq!(left_for_clients(1 << 20, 10), (1 << 20) - 100);
    }

    #[test]
    fn a_tiny_open_file_limit_still_leaves_one_client_connection() {
        assert_eq!(left_for_clients(64, 10), 1);
    }

    #[test]
    fn a_configured_limit_below_what_the_descriptors_allow_is_kept() {
        assert_eq!(client_connection_limit(Some(3), 10).max(), 3);
    }
}
