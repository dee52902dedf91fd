//! The HTTP server: our own accept loop over hyper's HTTP/1 connections, so that every wait on a client has
//! a bound (header read, body idle, whole request, keep-alive idle), the number of connections has a cap
//! below the descriptor limit, and shutdown drains in-flight requests within a deadline.

mod body;
mod connection;
mod conns;
mod deadline;
mod stall;

use std::future::Future;
use std::io;
use std::time::Duration;

use axum::Router;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::Instant;

pub use body::BodyIdleTimeout;
use conns::{Admission, Registry};

/// How long the server waits on clients, and how many it keeps. `Default` gives the production values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// Time allowed to send a complete request head, counted from accept or from the previous response.
    pub header_timeout: Duration,
    /// Longest gap between two chunks of a request body before the request fails with 408; also how long a
    /// response may wait on a client that reads nothing before the connection is closed.
    pub body_idle_timeout: Duration,
    /// Whole-request deadline of the routes that answer at once (503 past it); streaming routes are exempt.
    pub request_deadline: Duration,
    /// How long an idle keep-alive connection is kept after a response (at most `header_timeout`).
    pub keep_alive_idle: Duration,
    /// Most open connections; `None`: derived from the descriptor limit ([`default_max_connections`]).
    pub max_connections: Option<usize>,
    /// On shutdown, how long in-flight requests (and open streams) get to finish before they are cut.
    pub drain_timeout: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            header_timeout: Duration::from_secs(10),
            body_idle_timeout: Duration::from_secs(30),
            request_deadline: Duration::from_secs(30),
            keep_alive_idle: Duration::from_secs(5),
            max_connections: None,
            drain_timeout: Duration::from_secs(20),
        }
    }
}

impl ServerLimits {
    /// The connection cap in force.
    pub fn max_connections(&self) -> usize {
        self.max_connections.unwrap_or_else(default_max_connections)
    }
}

/// The derived cap never exceeds this: shedding scans the open connections when the cap is reached.
const MAX_DERIVED_CONNECTIONS: usize = 65_536;

/// The connection cap when none is configured: the open-file limit minus headroom for the database pool,
/// Redis, spooled uploads and logs (a quarter of the limit, at least 256), never below half of it, at most
/// 65,536.
pub fn default_max_connections() -> usize {
    let limit = open_file_limit().unwrap_or(1024);
    let headroom = (limit / 4).max(256);
    limit.saturating_sub(headroom).max(limit / 2).clamp(1, MAX_DERIVED_CONNECTIONS)
}

/// The soft `RLIMIT_NOFILE`, read from `/proc/self/limits` (std only; `unsafe` is forbidden here, so no
/// libc call). `None` where that file does not exist.
fn open_file_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    match line.trim_start_matches("Max open files").split_whitespace().next()? {
        "unlimited" => Some(1 << 20),
        soft => soft.parse().ok(),
    }
}

/// Serves `app` on `listener` until `shutdown` resolves; then stops accepting, lets in-flight requests finish
/// for at most `limits.drain_timeout`, and cuts whatever is still open (event streams, slow exports).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let app = app.layer(axum::middleware::from_fn(move |req, next| {
        deadline::enforce(limits.request_deadline, req, next)
    }));
    let registry = Registry::new(limits.max_connections());
    tracing::info!(max_connections = limits.max_connections(), ?limits, "connection limits");
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let mut tasks = JoinSet::new();
    let mut backoff = AcceptBackoff::default();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            Some(_) = tasks.join_next() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    backoff.reset();
                    match registry.admit() {
                        Admission::Serve(registered) => {
                            let _ = stream.set_nodelay(true);
                            let conn = connection::run(stream, app.clone(), limits, registered, stopping.clone());
                            tasks.spawn(conn);
                        }
                        Admission::Full => {
                            tasks.spawn(refuse(stream));
                        }
                    }
                }
                Err(e) => backoff.wait(&e, &registry).await,
            },
        }
    }
    drop(listener);
    drain(tasks, stop, limits.drain_timeout).await;
    Ok(())
}

/// Tells every connection to finish its request and close, then waits at most `timeout` for them.
async fn drain(mut tasks: JoinSet<()>, stop: tokio::sync::watch::Sender<bool>, timeout: Duration) {
    let _ = stop.send(true);
    let open = tasks.len();
    if open > 0 {
        tracing::info!(open, "draining connections");
    }
    let drained = tokio::time::timeout(timeout, async { while tasks.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(
            open = tasks.len(),
            ?timeout,
            "drain deadline reached: closing the remaining connections"
        );
        tasks.shutdown().await;
    }
}

/// Every connection is busy with a request: a short 503 (if the socket takes it at once) and close.
async fn refuse(mut stream: TcpStream) {
    const BODY: &str = r#"{"type":"https://leadscore.dev/problems/unavailable","title":"Too many connections","status":503}"#;
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/problem+json\r\nconnection: close\r\n\
         retry-after: 1\r\ncontent-length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = tokio::time::timeout(Duration::from_millis(100), stream.write_all(response.as_bytes())).await;
}

/// Accept errors must not spin the loop: out of descriptors, shed an idle connection and wait a little longer
/// each time (up to 1 s); other errors (a connection reset before accept) wait briefly.
#[derive(Default)]
struct AcceptBackoff {
    delay: Duration,
    last_warning: Option<Instant>,
}

impl AcceptBackoff {
    fn reset(&mut self) {
        self.delay = Duration::ZERO;
    }

    async fn wait(&mut self, e: &io::Error, registry: &Registry) {
        let out_of_descriptors = matches!(e.raw_os_error(), Some(23 | 24)); // ENFILE, EMFILE
        if out_of_descriptors {
            registry.shed_one();
            self.delay = (self.delay * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
            if self.last_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                self.last_warning = Some(Instant::now());
                tracing::warn!(error = %e, open = registry.len(), "out of file descriptors: lower the connection cap or raise `ulimit -n`");
            }
        } else {
            tracing::debug!(error = %e, "accept failed");
            self.delay = Duration::from_millis(5);
        }
        tokio::time::sleep(self.delay).await;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_descriptor_limit_is_read_and_leaves_headroom() {
        if let Some(limit) = super::open_file_limit() {
            let max = super::default_max_connections();
            assert!(max < limit, "{max} connections under a limit of {limit}");
            assert!(max >= limit / 2);
        }
    }
}
