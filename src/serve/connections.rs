//! The server's connections. Each accepted connection is served over HTTP/1.1 with a bound on
//! how long a request head may take to arrive, counted from when the server starts waiting for
//! one, so a client sending its headers a byte at a time is cut off, and so is a keep-alive
//! connection left idle. At most `max_connections` are served at once; one beyond gets 503 with
//! `Retry-After` and is closed, so idle or slow clients cannot use up the process's file
//! descriptors or memory.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// What bounds the server's connections.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    /// Connections served at once.
    pub max_connections: usize,
    /// How long a client has to send a whole request head once the server waits for one.
    pub header_timeout: Duration,
}

/// Connections open now and refused so far (for `/metrics`).
#[derive(Debug, Default)]
pub struct ConnectionCounts {
    /// Connections being served.
    pub open: AtomicUsize,
    /// Connections answered with 503 beyond the limit.
    pub refused: AtomicU64,
}

/// File descriptors kept for the pipeline itself beside the server's connections (its input,
/// outputs, Kafka clients, the connections between processes).
const DESCRIPTORS_BESIDE_CONNECTIONS: u64 = 256;

/// Raises this process's open-file limit (the soft one, up to the hard one) so that
/// `max_connections` connections fit beside the pipeline's own files, as a user would with
/// `ulimit -n`; says so on stderr when even the hard limit is too low.
pub fn make_room_for(max_connections: usize) {
    let needed = max_connections as u64 + DESCRIPTORS_BESIDE_CONNECTIONS;
    match rlimit::increase_nofile_limit(needed) {
        Ok(now) if now < needed => eprintln!(
            "recflow: serve: the open-file limit is {now}, too low for serve.max_connections = {max_connections} \
             beside the pipeline's own files; raise it (ulimit -n {needed}) or lower serve.max_connections"
        ),
        // Where the limit cannot be read or set, accepting reports any shortage as it happens.
        _ => {}
    }
}

/// How long a refused client gets to send its request and to take the answer.
const REFUSAL_PATIENCE: Duration = Duration::from_secs(1);

/// Accepts connections on `listener` for ever, serving `app` on each within `limits`.
pub async fn serve(listener: TcpListener, app: axum::Router, limits: ConnectionLimits, counts: Arc<ConnectionCounts>) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut reported_accept_error = false;
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, most likely: wait for some connections to close.
                if !reported_accept_error {
                    eprintln!(
                        "recflow: serve: cannot accept a connection: {e} (retrying; raise the open-file \
                         limit or lower serve.max_connections)"
                    );
                    reported_accept_error = true;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        match Arc::clone(&slots).try_acquire_owned() {
            Ok(slot) => {
                let service = TowerToHyperService::new(app.clone());
                let counts = Arc::clone(&counts);
                counts.open.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(async move {
                    let mut http = hyper::server::conn::http1::Builder::new();
                    http.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
                    // A connection ending in an error (a timeout, a client gone) concerns only it.
                    let _ = http.serve_connection(TokioIo::new(stream), service).await;
                    counts.open.fetch_sub(1, Ordering::Relaxed);
                    drop(slot);
                });
            }
            Err(_) => {
                counts.refused.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(refuse(stream, limits.max_connections));
            }
        }
    }
}

/// Answers a connection beyond the limit with 503 and closes it. The request is read first (as
/// far as it comes within a second), since closing a socket with unread data resets it and the
/// client might never see the answer.
async fn refuse(mut stream: TcpStream, limit: usize) {
    let mut request = [0u8; 4096];
    let _ = tokio::time::timeout(REFUSAL_PATIENCE, stream.read(&mut request)).await;
    let body = format!(
        "{{\"error\":\"{limit} connections are open, as many as serve.max_connections allows; retry shortly\"}}"
    );
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(REFUSAL_PATIENCE, async {
        stream.write_all(answer.as_bytes()).await?;
        stream.shutdown().await
    })
    .await;
}
