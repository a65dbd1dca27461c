//! Subscriptions over Server-Sent Events, in the manner of Materialize's SUBSCRIBE: first a
//! `snapshot` event per current value, then a `change` event per change as it happens (each
//! carries its time), and every `serve.progress_interval` a `progress` event saying every change
//! up to `as_of` has been sent, even when nothing changed. Event data are changelog records.
//!
//! Subscribers read from one broadcast ring of change batches holding the last
//! `serve.client_buffer` batches, so a slow client costs no memory of its own and never holds
//! the dataflow back. A client that falls further behind than the ring reaches gets a `lagged`
//! event and is disconnected; it can subscribe again for a fresh snapshot.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, Sse};
use futures_util::stream::{self, Stream};
use serde_json::json;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::broadcast::Receiver;

use super::routes::{check_params, ApiError};
use super::{Batch, Shared, Topic};
use crate::event::Id;
use crate::sink::changelog::ChangeRecord;

/// `GET /v1/subscribe[?users=a,b]`: recommendation lists of these users, or of all users.
pub async fn recs(
    State(shared): State<Arc<Shared>>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
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
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
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

/// One subscriber's stream.
struct Client {
    topic: Topic,
    updates: Receiver<Batch>,
    ticker: tokio::time::Interval,
    pending: VecDeque<Event>,
    done: bool,
    shared: Counted,
}

/// Opens a subscription, unless `max_subscribers` are connected already (503).
fn open(shared: Arc<Shared>, topic: Topic) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
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
    let mut pending: VecDeque<Event> = snapshot.iter().map(|record| record_event("snapshot", record)).collect();
    if let Some(as_of) = as_of {
        pending.push_back(progress_event(as_of, ended));
    }
    let mut ticker = tokio::time::interval(shared.settings.progress_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.reset();
    let client = Client { topic, updates, ticker, pending, done: false, shared: Counted(shared) };
    Ok(Sse::new(stream::unfold(client, next)))
}

/// The `Retry-After` of a subscription refused for lack of room, in seconds.
const SUBSCRIBE_RETRY_AFTER_S: u32 = 5;

fn record_event(kind: &str, record: &ChangeRecord) -> Event {
    Event::default().event(kind).json_data(record).unwrap_or_else(|_| Event::default().event(kind).data("{}"))
}

fn progress_event(as_of: u64, ended: bool) -> Event {
    Event::default().event("progress").data(json!({ "as_of": as_of, "input_ended": ended }).to_string())
}

impl Client {
    fn push_batch(&mut self, batch: &Batch) {
        for record in batch.iter().filter(|r| self.topic.matches(r)) {
            self.pending.push_back(record_event("change", record));
        }
    }

    fn lagged(&mut self, missed: u64) {
        let buffer = self.shared.0.settings.client_buffer;
        let message = json!({
            "error": format!("this subscriber fell {missed} update batches behind (serve.client_buffer = {buffer}); subscribe again for a fresh snapshot"),
        });
        self.pending.push_back(Event::default().event("lagged").data(message.to_string()));
        self.done = true;
    }
}

async fn next(mut client: Client) -> Option<(Result<Event, Infallible>, Client)> {
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
