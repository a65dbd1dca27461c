//! `recflow bench --serve`: point-query throughput and latency against a running pipeline's
//! server while events flow, the time from a posted event to a subscriber seeing its change, and
//! the time to forget a user until every result is consistent again.
//!
//! The pipeline runs in this process on its synthetic source with the server on a free
//! localhost port. Clients are plain HTTP/1.1 over keep-alive TCP connections, one thread each,
//! so the figures include the network stack but no client library. Optionally, many
//! subscriptions stay open during the query load, all read by one thread, as open dashboards
//! and apps would be.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use thiserror::Error;

use super::BenchArgs;
use crate::cli::stats::{p50_p99, peak_memory_mib};
use crate::cli::timely_config;
use crate::run::{run, RunError, RunOptions};
use crate::spec::{Pipeline, ServeSpec, SourceKind};

/// What to measure.
#[derive(Clone, Debug)]
pub struct ServeBench {
    /// Query threads, one keep-alive connection each.
    pub clients: usize,
    /// How long the query load lasts.
    pub duration: Duration,
    /// Posted events whose way to a subscriber is timed.
    pub posts: usize,
    /// Users forgotten, each timed until the forgetting is complete.
    pub forgets: usize,
    /// Subscriptions held open during the query load.
    pub subscribers: usize,
}

/// The figures.
#[derive(Clone, Debug, Default)]
pub struct ServeFigures {
    /// Point queries answered.
    pub queries: u64,
    /// Of which with a list (200); the others were users without one yet (404).
    pub found: u64,
    /// Queries per second.
    pub queries_per_second: f64,
    /// Query latency percentiles in ms: p50, p99.
    pub query_ms: (f64, f64),
    /// Post-to-subscriber latency percentiles in ms: p50, p99.
    pub post_to_subscriber_ms: (f64, f64),
    /// Forget-to-complete percentiles in ms: p50, p99.
    pub forget_ms: (f64, f64),
    /// Of the subscriptions held open, those still open when the query load ended.
    pub subscribers_attached: usize,
}

/// A serving benchmark that failed.
#[derive(Debug, Error)]
pub enum ServeBenchError {
    /// The pipeline failed.
    #[error(transparent)]
    Run(#[from] RunError),
    /// Talking to the server failed.
    #[error("serving benchmark: {0}")]
    Http(#[from] std::io::Error),
    /// The pipeline is not one this benchmark can drive.
    #[error("serving benchmark: {0}")]
    Setup(String),
}

/// One keep-alive HTTP/1.1 connection.
struct Connection {
    reader: BufReader<TcpStream>,
}

impl Connection {
    fn open(addr: SocketAddr) -> std::io::Result<Connection> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(Connection { reader: BufReader::new(stream) })
    }

    /// Sends a request and reads the status and body of the response.
    fn request(&mut self, method: &str, path: &str, body: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let stream = self.reader.get_mut();
        stream.write_all(head.as_bytes())?;
        stream.write_all(body)?;
        let status = read_head(&mut self.reader)?;
        let mut body = vec![0; status.1];
        self.reader.read_exact(&mut body)?;
        Ok((status.0, body))
    }
}

/// Reads a response's status line and headers; returns the status and the content length.
fn read_head(reader: &mut impl BufRead) -> std::io::Result<(u16, usize)> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status = line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| bad("no status line"))?;
    let mut length = 0;
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Err(bad("the connection closed in the headers"));
        }
        let header = line.trim_end();
        if header.is_empty() {
            return Ok((status, length));
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().map_err(|_| bad("bad content-length"))?;
            }
        }
    }
}

/// Subscriptions held open, alternately to every list and to hot items, and read by one thread
/// that takes whatever arrived on each in turn.
pub struct HeldSubscriptions {
    stop: Arc<AtomicBool>,
    reader: std::thread::JoinHandle<usize>,
}

impl HeldSubscriptions {
    /// Opens `count` subscriptions on the server at `addr`.
    pub fn open(addr: SocketAddr, count: usize) -> std::io::Result<HeldSubscriptions> {
        let mut streams = Vec::with_capacity(count);
        for n in 0..count {
            let mut stream = TcpStream::connect(addr)?;
            let path = if n % 2 == 0 { "/v1/subscribe" } else { "/v1/subscribe/hot-items" };
            stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes())?;
            stream.set_nonblocking(true)?;
            streams.push(stream);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let reader = std::thread::spawn(move || {
            let mut open = vec![true; streams.len()];
            let mut buffer = vec![0u8; 1 << 16];
            while !stopped.load(Ordering::Relaxed) {
                for (stream, open) in streams.iter_mut().zip(open.iter_mut()).filter(|(_, open)| **open) {
                    loop {
                        match stream.read(&mut buffer) {
                            Ok(0) => *open = false,
                            Ok(_) => continue,
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                            Err(_) => *open = false,
                        }
                        break;
                    }
                }
                // As a client woken by its events would, about as often as they come.
                std::thread::sleep(Duration::from_millis(20));
            }
            open.iter().filter(|open| **open).count()
        });
        Ok(HeldSubscriptions { stop, reader })
    }

    /// Closes them all; how many were still open.
    pub fn close(self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.reader.join().unwrap_or(0)
    }
}

/// Waits until the server answers `/healthz`.
fn wait_until_serving(
    addr: SocketAddr,
    run: &std::thread::JoinHandle<Result<(), RunError>>,
) -> Result<(), ServeBenchError> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(mut connection) = Connection::open(addr) {
            if connection.request("GET", "/healthz", b"").is_ok_and(|(status, _)| status == 200) {
                return Ok(());
            }
        }
        if run.is_finished() || Instant::now() > deadline {
            return Err(ServeBenchError::Setup("the server did not come up".into()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Times posted events until a subscriber sees their change: each posts one `buy` for a user of
/// its own and waits for that user's first `change` event on a subscription opened before.
fn post_to_subscriber(addr: SocketAddr, posts: usize) -> Result<Vec<f64>, ServeBenchError> {
    let mut samples = Vec::new();
    let nonce = std::process::id();
    for n in 0..posts {
        let user = format!("bench-{nonce}-{n}");
        let mut subscription = BufReader::new(TcpStream::connect(addr)?);
        subscription.get_mut().set_read_timeout(Some(Duration::from_secs(30)))?;
        let request = format!("GET /v1/subscribe?users={user} HTTP/1.1\r\nHost: localhost\r\n\r\n");
        subscription.get_mut().write_all(request.as_bytes())?;
        read_head(&mut subscription)?;
        // The first progress event means the (empty) snapshot is complete.
        let mut line = String::new();
        while !line.starts_with("event: progress") {
            line.clear();
            if subscription.read_line(&mut line)? == 0 {
                return Err(ServeBenchError::Setup("the subscription closed".into()));
            }
        }
        let body = format!(r#"{{"user":"{user}","item":1,"action":"buy"}}"#);
        let posted = Instant::now();
        let (status, answer) = Connection::open(addr)?.request("POST", "/v1/events", body.as_bytes())?;
        if status != 200 {
            return Err(ServeBenchError::Setup(format!(
                "POST answered {status}: {}",
                String::from_utf8_lossy(&answer)
            )));
        }
        loop {
            line.clear();
            if subscription.read_line(&mut line)? == 0 {
                return Err(ServeBenchError::Setup("the subscription closed".into()));
            }
            if line.starts_with("event: change") {
                samples.push(posted.elapsed().as_secs_f64() * 1000.0);
                break;
            }
        }
    }
    Ok(samples)
}

/// Times forgetting users until the forgetting is complete: each forgets a user with a list
/// (`DELETE /v1/users/{user}?wait=60s`) and takes the time until the 200 answer.
fn forget_until_complete(addr: SocketAddr, users: u64, forgets: usize) -> Result<Vec<f64>, ServeBenchError> {
    let mut samples = Vec::new();
    let mut connection = Connection::open(addr)?;
    let mut candidate = 0;
    while samples.len() < forgets {
        // Spread over the users; take the next one that has a list.
        candidate = (candidate + 7919) % users.max(1);
        let (status, _) = connection.request("GET", &format!("/v1/users/{candidate}/recommendations"), b"")?;
        if status != 200 {
            continue;
        }
        let asked = Instant::now();
        let (status, answer) = connection.request("DELETE", &format!("/v1/users/{candidate}?wait=60s"), b"")?;
        if status != 200 {
            return Err(ServeBenchError::Setup(format!(
                "DELETE answered {status}: {}",
                String::from_utf8_lossy(&answer)
            )));
        }
        samples.push(asked.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(samples)
}

/// Runs `pipeline` (its synthetic source, unbounded) with a server and measures it.
pub fn bench_serve(
    pipeline: &Pipeline,
    bench: &ServeBench,
    config: timely::Config,
) -> Result<ServeFigures, ServeBenchError> {
    if pipeline.source.kind != SourceKind::Synth || pipeline.recommend.is_none() {
        return Err(ServeBenchError::Setup("use a pipeline with a synthetic source and [recommend]".into()));
    }
    let addr = TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let mut pipeline = pipeline.clone();
    pipeline.serve = Some(ServeSpec { addr: addr.to_string(), ..pipeline.serve.clone().unwrap_or_default() });
    let users = pipeline.source.synth.users;
    let stop = Arc::new(AtomicBool::new(false));
    let options = RunOptions {
        output: Some("/dev/null".into()),
        dead_letter: Some("/dev/null".into()),
        status: false,
        stop: Some(Arc::clone(&stop)),
        ..RunOptions::default()
    };
    let running = std::thread::spawn(move || run(pipeline, options, config).map(|_| ()));
    let measured = (|| {
        wait_until_serving(addr, &running)?;
        let held = HeldSubscriptions::open(addr, bench.subscribers)?;
        // Let lists appear before querying them.
        std::thread::sleep(Duration::from_secs(2));
        let until = Instant::now() + bench.duration;
        let clients: Vec<_> = (0..bench.clients.max(1))
            .map(|client| {
                std::thread::spawn(move || -> std::io::Result<(Vec<f64>, u64)> {
                    let mut connection = Connection::open(addr)?;
                    let (mut latencies, mut found) = (Vec::new(), 0);
                    let mut state = 0x2545_F491_4F6C_DD1Du64 ^ client as u64;
                    while Instant::now() < until {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        let path = format!("/v1/users/{}/recommendations", state % users);
                        let asked = Instant::now();
                        let (status, _) = connection.request("GET", &path, b"")?;
                        latencies.push(asked.elapsed().as_secs_f64() * 1000.0);
                        found += u64::from(status == 200);
                    }
                    Ok((latencies, found))
                })
            })
            .collect();
        let started = Instant::now();
        let (mut latencies, mut found) = (Vec::new(), 0);
        for client in clients {
            let (mut l, f) = client.join().map_err(|_| ServeBenchError::Setup("a client panicked".into()))??;
            latencies.append(&mut l);
            found += f;
        }
        let seconds = started.elapsed().as_secs_f64();
        let subscribers_attached = held.close();
        let posts = post_to_subscriber(addr, bench.posts)?;
        let forgets = forget_until_complete(addr, users, bench.forgets)?;
        Ok(ServeFigures {
            queries: latencies.len() as u64,
            found,
            queries_per_second: latencies.len() as f64 / seconds,
            query_ms: p50_p99(latencies),
            post_to_subscriber_ms: p50_p99(posts),
            forget_ms: p50_p99(forgets),
            subscribers_attached,
        })
    })();
    stop.store(true, Ordering::Relaxed);
    running.join().map_err(|_| ServeBenchError::Setup("the pipeline panicked".into()))??;
    measured
}

/// Measures serving with the load `args` describe and prints the figures.
pub fn main(pipeline: &Pipeline, args: &BenchArgs) -> anyhow::Result<()> {
    let bench = ServeBench {
        clients: args.clients,
        duration: std::time::Duration::from_secs(args.seconds),
        posts: args.posts,
        forgets: args.forgets,
        subscribers: args.subscribers,
    };
    let figures = bench_serve(pipeline, &bench, timely_config(&args.workers)?)?;
    println!(
        "{} point queries in {}s from {} connections = {:.0} queries/s ({} with a list); \
         latency p50 {:.2} ms, p99 {:.2} ms",
        figures.queries,
        args.seconds,
        args.clients,
        figures.queries_per_second,
        figures.found,
        figures.query_ms.0,
        figures.query_ms.1
    );
    if args.subscribers > 0 {
        println!(
            "{} subscriptions held open during the queries; {} still open at the end",
            args.subscribers, figures.subscribers_attached
        );
    }
    println!(
        "posted event to subscriber: p50 {:.1} ms, p99 {:.1} ms over {} posts",
        figures.post_to_subscriber_ms.0, figures.post_to_subscriber_ms.1, args.posts,
    );
    println!(
        "forget a user until complete: p50 {:.1} ms, p99 {:.1} ms over {} users; peak memory {} MiB",
        figures.forget_ms.0,
        figures.forget_ms.1,
        args.forgets,
        peak_memory_mib()
    );
    Ok(())
}
