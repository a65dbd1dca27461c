//! Subscriptions over Server-Sent Events, in the manner of Materialize's SUBSCRIBE: first a
//! `snapshot` event per current value, then a `change` event per change as it happens (each
//! carries its time), and every `serve.progress_interval` a `progress` event saying every change
//! up to `as_of` has been sent, even when nothing changed. Event data are changelog records.
//!
//! Subscribers read from one broadcast ring of change batches holding the last
//! `serve.client_buffer` batches, so a slow client costs no memory of its own and never holds
//! the dataflow back. A client that falls further behind than the ring reaches gets a `lagged`
//! event and is disconnected; it can subscribe again for a fresh snapshot.
//!
//! Each batch is rendered as event text once, for every subscriber: each record's `change`
//! event, and the events of all lists and of all hot-items lists as one piece each, which
//! subscribers to a whole topic send as they are (one write per batch, however many records).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::Response;
use futures_util::stream;
use serde_json::json;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::broadcast::Receiver;

use super::answers::{check_params, ApiError};
use super::{Changes, Shared, Topic};
use crate::event::Id;
use crate::results::ChangeRecord;

/// `GET /v1/subscribe[?users=a,b]`: recommendation lists of these users, or of all users.
pub async fn recs(
    State(shared): State<Arc<Shared>>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    check_params(&params, &["users"])?;
    let users: Option<BTreeSet<Id>> =
        params.get("users").map(|list| list.split(',').filter_map(Id::from_key).collect());
    if users.as_ref().is_some_and(BTreeSet::is_empty) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "users= names no user; list them (users=a,b) or leave it out for all users",
        ));
    }
    open(shared, Topic::Recs(users))
}

/// `GET /v1/subscribe/hot-items`: every hot-items list (each window and category).
pub async fn hot_items(
    State(shared): State<Arc<Shared>>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    check_params(&params, &[])?;
    open(shared, Topic::HotItems)
}

/// Counts a subscriber while it is connected.
struct Counted(Arc<Shared>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.subscribers.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A batch of changes as subscribers receive it, rendered once.
pub type Batch = Arc<Rendered>;

/// The event text of a batch of changes.
pub struct Rendered {
    /// Each record with its `change` event.
    records: Vec<(Arc<ChangeRecord>, Bytes)>,
    /// The `change` events of every recommendation list of the batch (users' and the new-user
    /// list), in order.
    all_recs: Bytes,
    /// The `change` events of every hot-items list of the batch, in order.
    all_hot: Bytes,
}

impl Rendered {
    /// Renders the events of `changes`.
    pub fn render(changes: Changes) -> Batch {
        let (mut all_recs, mut all_hot) = (Vec::new(), Vec::new());
        let records = changes
            .into_iter()
            .map(|record| {
                let event = record_event("change", &record);
                match &*record {
                    ChangeRecord::Recs { .. } | ChangeRecord::Popular { .. } => all_recs.extend_from_slice(&event),
                    ChangeRecord::HotItems { .. } => all_hot.extend_from_slice(&event),
                }
                (record, Bytes::from(event))
            })
            .collect();
        Arc::new(Rendered { records, all_recs: all_recs.into(), all_hot: all_hot.into() })
    }
}

/// One subscriber's stream.
struct Client {
    topic: Topic,
    updates: Receiver<Batch>,
    ticker: tokio::time::Interval,
    /// Event text to send, in order.
    pending: VecDeque<Bytes>,
    done: bool,
    shared: Counted,
}

/// Opens a subscription, unless `max_subscribers` are connected already (503).
fn open(shared: Arc<Shared>, topic: Topic) -> Result<Response, ApiError> {
    let limit = shared.settings.max_subscribers;
    if shared.subscribers.fetch_add(1, Ordering::Relaxed) >= limit {
        shared.subscribers.fetch_sub(1, Ordering::Relaxed);
        let message = format!("{limit} subscribers are connected, as many as serve.max_subscribers allows");
        return Err(ApiError::busy(message, SUBSCRIBE_RETRY_AFTER_S));
    }
    // Snapshot and subscription under one lock: the first change received follows the snapshot.
    let (snapshot, as_of, ended, updates) = {
        let state = shared.state();
        (state.snapshot(&topic), state.as_of(), state.ended(), shared.updates.subscribe())
    };
    let mut pending: VecDeque<Bytes> = VecDeque::new();
    let snapshot: Vec<u8> = snapshot.iter().flat_map(|record| record_event("snapshot", record)).collect();
    if !snapshot.is_empty() {
        pending.push_back(snapshot.into());
    }
    if let Some(as_of) = as_of {
        pending.push_back(progress_event(as_of, ended));
    }
    let mut ticker = tokio::time::interval(shared.settings.progress_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.reset();
    let client = Client { topic, updates, ticker, pending, done: false, shared: Counted(shared) };
    let body = Body::from_stream(stream::unfold(client, next));
    Ok(Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(body)
        .unwrap_or_default())
}

/// The `Retry-After` of a subscription refused for lack of room, in seconds.
const SUBSCRIBE_RETRY_AFTER_S: u32 = 5;

/// One Server-Sent Event: `event: KIND`, then `data: DATA` (JSON, which holds no line break).
fn sse_event(kind: &str, data: &str) -> Vec<u8> {
    format!("event: {kind}\ndata: {data}\n\n").into_bytes()
}

fn record_event(kind: &str, record: &ChangeRecord) -> Vec<u8> {
    sse_event(kind, &serde_json::to_string(record).unwrap_or_else(|_| "{}".into()))
}

fn progress_event(as_of: u64, ended: bool) -> Bytes {
    sse_event("progress", &json!({ "as_of": as_of, "input_ended": ended }).to_string()).into()
}

impl Client {
    fn push_batch(&mut self, batch: &Rendered) {
        let events = match &self.topic {
            Topic::Recs(None) => batch.all_recs.clone(),
            Topic::HotItems => batch.all_hot.clone(),
            Topic::Recs(Some(_)) => batch
                .records
                .iter()
                .filter(|(record, _)| self.topic.matches(record))
                .flat_map(|(_, event)| event.iter().copied())
                .collect::<Vec<u8>>()
                .into(),
        };
        if !events.is_empty() {
            self.pending.push_back(events);
        }
    }

    fn lagged(&mut self, missed: u64) {
        let buffer = self.shared.0.settings.client_buffer;
        let message = json!({
            "error": format!("this subscriber fell {missed} update batches behind (serve.client_buffer = {buffer}); subscribe again for a fresh snapshot"),
        });
        self.pending.push_back(sse_event("lagged", &message.to_string()).into());
        self.done = true;
    }
}

async fn next(mut client: Client) -> Option<(Result<Bytes, Infallible>, Client)> {
    loop {
        if let Some(event) = client.pending.pop_front() {
            return Some((Ok(event), client));
        }
        if client.done {
            return None;
        }
        tokio::select! {
            received = client.updates.recv() => match received {
                Ok(batch) => client.push_batch(&batch),
                Err(RecvError::Lagged(missed)) => client.lagged(missed),
                Err(RecvError::Closed) => client.done = true,
            },
            _ = client.ticker.tick() => {
                let (as_of, ended) = {
                    let state = client.shared.0.state();
                    (state.as_of(), state.ended())
                };
                // Changes up to `as_of` were sent to the ring before it moved: pass them on first.
                loop {
                    match client.updates.try_recv() {
                        Ok(batch) => client.push_batch(&batch),
                        Err(TryRecvError::Lagged(missed)) => {
                            client.lagged(missed);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                if let (false, Some(as_of)) = (client.done, as_of) {
                    client.pending.push_back(progress_event(as_of, ended));
                }
            }
        }
    }
}
