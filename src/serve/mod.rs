//! The HTTP and Server-Sent Events server inside `recflow run` (`[serve]` or `--serve ADDR`).
//!
//! It runs in process 0, where worker 0's changelog sink gathers the results of all workers of
//! all processes, on a thread of its own with a small tokio runtime. The sink feeds it through
//! [`crate::sink::ServeFeed`] and its [`Mailbox`] whose posts never wait, and where a
//! key's records replace each other until the server takes them, so neither the server nor a
//! slow client can stall the dataflow or make the feed grow without bound. Subscribers share a bounded broadcast ring
//! of change batches; one that falls more than `client_buffer` batches behind is told so and
//! disconnected. Posted events go the other way, to the reading worker's ingest operator
//! ([`crate::source::Posted`]).
//!
//! Routes ([`routes`]): `GET /v1/users/{user}/recommendations`, `GET /v1/hot-items`,
//! `GET /v1/subscribe` and `GET /v1/subscribe/hot-items` ([`subscribe`]), `POST /v1/events`,
//! `DELETE /v1/users/{user}`, `GET /metrics`, `GET /healthz`, `GET /v1/status` (the
//! [`crate::status`] document) and `GET /`, the live dashboard ([`dashboard`]).

mod answers;
pub mod connections;
pub mod dashboard;
pub mod routes;
pub mod state;
pub mod subscribe;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use thiserror::Error;
use tokio::sync::{broadcast, oneshot};

use crate::decode::Decoder;
use crate::metrics::Metrics;
use crate::sink::mailbox::{Feed, Mailbox};
use crate::source::PostSender;
use crate::spec::{Linger, Payload, Pipeline, ServeSpec, SourceKind};
use crate::status::{History, Output, Status, Subject};

pub use self::state::{Changes, Served, Topic};
pub use self::subscribe::Batch;

/// A server that cannot start.
#[derive(Debug, Error)]
pub enum ServeError {
    /// The address cannot be bound.
    #[error("serve.addr {addr}: cannot listen: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The bearer token cannot be read.
    #[error("{0}")]
    Token(String),
    /// The runtime or its thread cannot start.
    #[error("cannot start the server: {0}")]
    Start(std::io::Error),
}

/// Where posted events or forget requests go.
#[derive(Clone, Debug)]
pub enum Posting {
    /// Into the source of worker 0.
    Open(PostSender),
    /// Not in this run; the reason says why, or what to do instead.
    Unsupported(&'static str),
}

impl Posting {
    /// Whether requests go anywhere.
    pub fn is_open(&self) -> bool {
        matches!(self, Posting::Open(_))
    }
}

/// Where the mutating endpoints send what they are given.
#[derive(Clone, Debug)]
pub struct Inlets {
    /// `POST /v1/events`.
    pub events: Posting,
    /// `DELETE /v1/users/{user}`.
    pub forget: Posting,
}

impl Inlets {
    /// Neither endpoint is available, for `why`.
    pub fn closed(why: &'static str) -> Inlets {
        Inlets { events: Posting::Unsupported(why), forget: Posting::Unsupported(why) }
    }
}

/// Settings the handlers need, resolved from [`ServeSpec`].
#[derive(Clone, Debug)]
pub struct Settings {
    /// The bearer token for mutating endpoints.
    pub token: Option<String>,
    /// The bearer token for reading endpoints.
    pub read_token: Option<String>,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Interval between progress events.
    pub progress_interval: Duration,
    /// Ring size of the subscribers' broadcast channel.
    pub client_buffer: usize,
    /// Subscribers connected at once, at most.
    pub max_subscribers: usize,
    /// On a loopback address, the host names requests may carry in `Host`; `None` otherwise.
    pub local_hosts: Option<Vec<String>>,
}

/// What every handler shares.
pub struct Shared {
    state: Mutex<Served>,
    updates: broadcast::Sender<Batch>,
    subscribers: AtomicUsize,
    /// Woken whenever the output frontier moves (or the input ends).
    progressed: tokio::sync::Notify,
    /// Forget requests taken.
    forgets: std::sync::atomic::AtomicU64,
    /// HTTP connections open and refused.
    connections: Arc<connections::ConnectionCounts>,
    metrics: Arc<Metrics>,
    settings: Settings,
    inlets: Inlets,
    /// Whether lists carry explanations (`serve.explain`, with recommendations).
    explain: bool,
    /// The similarity refresh cadence: a forget is complete once the similarity has taken it in.
    refresh: Option<crate::event::Millis>,
    decoder: Decoder,
    ts_field: String,
    min_timestamp: u64,
    /// What `/v1/status` is the status of.
    subject: Subject,
    /// One sample of the counters per [`History::INTERVAL`], for `/v1/status`.
    history: Mutex<History>,
}

impl Shared {
    /// The served state; a handler that panicked while holding it does not poison the others.
    fn state(&self) -> MutexGuard<'_, Served> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies a feed message and passes its changes on to subscribers, under the state's lock
    /// so that a subscriber's snapshot and its changes neither overlap nor leave a gap.
    fn apply(&self, feed: Feed) {
        let progress = matches!(feed, Feed::Progress(_));
        let mut state = self.state();
        if let Some(changes) = state.apply(feed) {
            // Rendered once for every subscriber, and only when there is one.
            if self.updates.receiver_count() > 0 {
                let _ = self.updates.send(subscribe::Rendered::render(changes));
            }
        }
        drop(state);
        if progress {
            self.progressed.notify_waiters();
        }
    }

    /// The `/v1/status` document now.
    fn status(&self) -> Status {
        let output = {
            let state = self.state();
            Output {
                as_of: state.as_of(),
                input_ended: state.ended(),
                served_users: state.users(),
                served_hot_windows: state.hot_windows(),
                subscribers: self.subscribers.load(Ordering::Relaxed),
            }
        };
        let history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        Status::gather(&self.subject, &self.metrics, &history, output)
    }

    /// Samples the counters into the history every [`History::INTERVAL`], for as long as the
    /// server runs.
    async fn sample_history(&self) {
        let mut ticker = tokio::time::interval(History::INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let mut history = self.history.lock().unwrap_or_else(|e| e.into_inner());
            history.record(&self.metrics, Instant::now(), std::time::SystemTime::now());
        }
    }
}

/// A running server.
pub struct Server {
    addr: SocketAddr,
    mailbox: Arc<Mailbox>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    shared: Arc<Shared>,
}

impl Shared {
    /// What the server's tasks share for `pipeline`, served under `spec` with `settings`.
    fn new(spec: &ServeSpec, pipeline: &Pipeline, metrics: Arc<Metrics>, inlets: Inlets, settings: Settings) -> Shared {
        let (updates, _) = broadcast::channel(spec.client_buffer.max(1));
        Shared {
            state: Mutex::new(Served::new(pipeline.source.timestamp_unit.scale(), spec.hot_windows)),
            updates,
            subscribers: AtomicUsize::new(0),
            progressed: tokio::sync::Notify::new(),
            forgets: std::sync::atomic::AtomicU64::new(0),
            connections: Arc::default(),
            metrics,
            settings,
            inlets,
            refresh: pipeline.recommend.as_ref().map(|r| r.similarity.refresh.millis()),
            explain: pipeline.explains() && pipeline.recommend.is_some(),
            decoder: Decoder::for_payload(&pipeline.source, Payload::Json),
            ts_field: pipeline.source.fields.ts.clone(),
            min_timestamp: pipeline.source.min_timestamp,
            subject: Subject {
                pipeline: pipeline.name.clone(),
                unit: pipeline.source.timestamp_unit.scale(),
                kafka: pipeline.source.kind == SourceKind::Kafka,
                started: Instant::now(),
            },
            history: Mutex::new(History::default()),
        }
    }
}

/// The `Host` names a server bound to a loopback `addr` answers to (`None` when it is bound to
/// another address: then any host is accepted).
fn local_host_names(addr: SocketAddr) -> Option<Vec<String>> {
    addr.ip().is_loopback().then(|| {
        let bound = match addr.ip() {
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
            ip => ip.to_string(),
        };
        let mut names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "[::1]".into()];
        if !names.contains(&bound) {
            names.push(bound);
        }
        names
    })
}

impl Server {
    /// Binds `spec.addr` and starts serving `pipeline`'s results on a thread of its own;
    /// `inlets` says where `POST /v1/events` and `DELETE /v1/users/{user}` send their requests.
    pub fn start(
        spec: &ServeSpec,
        pipeline: &Pipeline,
        metrics: Arc<Metrics>,
        inlets: Inlets,
    ) -> Result<Server, ServeError> {
        let (token, read_token) = (spec.resolve_token(), spec.resolve_read_token());
        let (token, read_token) = (token.map_err(ServeError::Token)?, read_token.map_err(ServeError::Token)?);
        connections::make_room_for(spec.max_connections);
        let listener = std::net::TcpListener::bind(&spec.addr)
            .map_err(|source| ServeError::Bind { addr: spec.addr.clone(), source })?;
        let addr = listener.local_addr().map_err(ServeError::Start)?;
        listener.set_nonblocking(true).map_err(ServeError::Start)?;
        let settings = Settings {
            token,
            read_token,
            max_body_bytes: spec.max_body_bytes,
            progress_interval: Duration::from_millis(spec.progress_interval.millis().max(1)),
            client_buffer: spec.client_buffer,
            max_subscribers: spec.max_subscribers,
            local_hosts: local_host_names(addr),
        };
        let shared = Arc::new(Shared::new(spec, pipeline, metrics, inlets, settings));
        let mailbox = Arc::new(Mailbox::new(spec.hot_windows));
        let feed = Arc::clone(&mailbox);
        let (shutdown, shutdown_rx) = oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("recflow-serve")
            .enable_all()
            .build()
            .map_err(ServeError::Start)?;
        let app = routes::router(Arc::clone(&shared));
        let limits = connections::ConnectionLimits {
            max_connections: spec.max_connections,
            header_timeout: Duration::from_millis(spec.header_timeout.millis()),
        };
        let counts = Arc::clone(&shared.connections);
        let applier = Arc::clone(&shared);
        let sampler = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("recflow-serve".into())
            .spawn(move || {
                runtime.block_on(async move {
                    tokio::spawn(async move { sampler.sample_history().await });
                    tokio::spawn(async move {
                        loop {
                            for message in feed.take().await {
                                applier.apply(message);
                            }
                        }
                    });
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(listener) => listener,
                        Err(e) => {
                            eprintln!("recflow: serve: {e}");
                            return;
                        }
                    };
                    tokio::select! {
                        _ = connections::serve(listener, app, limits, counts) => {}
                        _ = shutdown_rx => {}
                    }
                });
                // Open subscriptions never end by themselves; cut them.
                runtime.shutdown_timeout(Duration::from_millis(100));
            })
            .map_err(ServeError::Start)?;
        Ok(Server { addr, mailbox, shutdown: Some(shutdown), thread: Some(thread), shared })
    }

    /// The address it listens on (with the port chosen, when `:0` was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where the changelog sink's [`crate::sink::ServeFeed`] posts.
    pub fn feed(&self) -> Arc<Mailbox> {
        Arc::clone(&self.mailbox)
    }

    /// Marks the results final: the run has ended (the dataflow is dropped once everything is
    /// out, so the sink's frontier never reports the end itself).
    pub fn finish(&self) {
        self.mailbox.post_progress(None);
    }

    /// Marks the results final, keeps serving them for `linger`, or until `stop` is raised
    /// (Ctrl-C or SIGTERM), then stops.
    pub fn linger(self, linger: Linger, stop: Option<&AtomicBool>) {
        self.finish();
        let started = Instant::now();
        let stopped = || stop.is_some_and(|s| s.load(Ordering::Relaxed));
        let expired = || match linger {
            Linger::For(span) => started.elapsed() >= Duration::from_millis(span.millis()),
            Linger::Forever => false,
        };
        while !stopped() && !expired() {
            std::thread::park_timeout(Duration::from_millis(50));
        }
        drop(self);
    }

    /// Subscribers connected now.
    pub fn subscribers(&self) -> usize {
        self.shared.subscribers.load(Ordering::Relaxed)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
