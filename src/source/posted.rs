//! Events posted over HTTP (`POST /v1/events`), merged into the source of the worker that reads
//! the input. The server validates them with the pipeline's decoder and sends them here through
//! a channel; the ingest operator takes them through [`Posted`] beside its source's own arrivals,
//! so they get event time, lateness and dead letters like any other record.
//!
//! Requests to forget a user (`DELETE /v1/users/{user}`) travel the same channel, so a forget
//! comes after every event posted before it; the ingest operator gives each its dataflow time and
//! answers with that time.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{Arrival, EventSource, Position};
use crate::checkpoint::post_log::{LoggedPost, PostLog};
use crate::event::{DeadLetter, Event, Id, Millis, RejectReason};
use crate::event_time::{beyond_wall_clock, wall_clock_ms};

/// A request to forget every event of a user read so far. The ingest operator answers on `reply`
/// with the dataflow time at which the user's events are retracted.
#[derive(Debug)]
pub struct ForgetRequest {
    /// The user.
    pub user: Id,
    /// Where the retraction time goes.
    pub reply: tokio::sync::oneshot::Sender<Millis>,
    /// Its number in the log of posted records, once taken (with checkpoints).
    pub post: Option<u64>,
}

/// One posted record: a valid event (with whether its `ts` was given), why it is not one, or a
/// request to forget a user.
#[derive(Debug)]
pub enum PostedRecord {
    /// A valid event; `ts_given` is false when `ts` was left out and should be the pipeline's
    /// current event time.
    Event {
        /// The event.
        event: Event,
        /// Whether the poster gave its timestamp.
        ts_given: bool,
    },
    /// A record that did not decode.
    Rejected(DeadLetter),
    /// Forget a user.
    Forget(ForgetRequest),
}

impl PostedRecord {
    /// The record as the log of posted records keeps it.
    fn logged(&self) -> LoggedPost {
        match self {
            PostedRecord::Event { event, ts_given } => LoggedPost::Event { event: event.clone(), ts_given: *ts_given },
            PostedRecord::Rejected(dead) => LoggedPost::Rejected(dead.clone()),
            PostedRecord::Forget(request) => LoggedPost::Forget(request.user.clone()),
        }
    }

    /// A logged record posted again; a request to forget gets an answer nobody waits for.
    fn from_log(post: LoggedPost) -> PostedRecord {
        match post {
            LoggedPost::Event { event, ts_given } => PostedRecord::Event { event, ts_given },
            LoggedPost::Rejected(dead) => PostedRecord::Rejected(dead),
            LoggedPost::Forget(user) => {
                PostedRecord::Forget(ForgetRequest { user, reply: tokio::sync::oneshot::channel().0, post: None })
            }
        }
    }
}

/// The server's end of the channel.
#[derive(Clone, Debug)]
pub struct PostSender {
    sender: Sender<Vec<PostedRecord>>,
    /// Records sent and not yet taken by the source, shared with the receiver.
    queued: Arc<AtomicUsize>,
    /// Set when the receiver is gone (the input has ended).
    closed: Arc<AtomicBool>,
    limit: usize,
    /// With checkpoints: the log every request is written to before it is handed on.
    log: Option<Arc<PostLog>>,
}

/// Why posted records were not taken.
#[derive(Debug, PartialEq, Eq)]
pub enum PostRefused {
    /// The input has ended: nothing reads them any more.
    Ended,
    /// `limit` records wait already (the dataflow is behind): try again later.
    Full {
        /// The most records that may wait.
        limit: usize,
    },
    /// They could not be written to the log of posted records, so they were not taken.
    NotLogged(String),
}

impl PostSender {
    /// Sends a request's records, unless they would make more than the limit wait or the input
    /// has ended.
    pub fn send(&self, records: Vec<PostedRecord>) -> Result<(), PostRefused> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(PostRefused::Ended);
        }
        let count = records.len();
        let before = self.queued.fetch_add(count, Ordering::SeqCst);
        if before > 0 && before + count > self.limit {
            // A refused request leaves nothing behind, however many come.
            self.queued.fetch_sub(count, Ordering::SeqCst);
            return Err(PostRefused::Full { limit: self.limit });
        }
        let sent = match &self.log {
            None => self.sender.send(records).map_err(|_| PostRefused::Ended),
            Some(log) => {
                let logged: Vec<LoggedPost> = records.iter().map(PostedRecord::logged).collect();
                let hand_on = || self.sender.send(records).map_err(|_| PostRefused::Ended);
                log.append(&logged, hand_on).unwrap_or_else(|e| Err(PostRefused::NotLogged(e.to_string())))
            }
        };
        if sent.is_err() {
            self.queued.fetch_sub(count, Ordering::SeqCst);
        }
        sent
    }

    /// With `log`, every request is written to it and synced before it is handed on (and
    /// answered).
    pub fn logging_to(mut self, log: Arc<PostLog>) -> PostSender {
        self.log = Some(log);
        self
    }

    /// Whether what is sent is on disk before [`PostSender::send`] returns.
    pub fn durable(&self) -> bool {
        self.log.is_some()
    }

    /// Hands on records the log already holds (a restored run's posts after its checkpoint),
    /// whatever the limit; requests to forget get no answer.
    pub fn post_again(&self, posts: Vec<LoggedPost>) {
        let records: Vec<PostedRecord> = posts.into_iter().map(PostedRecord::from_log).collect();
        self.queued.fetch_add(records.len(), Ordering::SeqCst);
        if self.sender.send(records).is_err() {
            self.queued.store(0, Ordering::SeqCst);
        }
    }

    /// Records waiting for the source now.
    pub fn waiting(&self) -> usize {
        self.queued.load(Ordering::SeqCst)
    }
}

/// The reading worker's end of the channel.
#[derive(Debug)]
pub struct PostReceiver {
    receiver: Receiver<Vec<PostedRecord>>,
    queued: Arc<AtomicUsize>,
    closed: Arc<AtomicBool>,
}

impl Drop for PostReceiver {
    fn drop(&mut self) {
        self.closed.store(true, Ordering::SeqCst);
    }
}

impl PostReceiver {
    /// The next request's records, if one is waiting.
    fn take(&self) -> Option<Vec<PostedRecord>> {
        let records = self.receiver.try_recv().ok()?;
        self.queued.fetch_sub(records.len(), Ordering::SeqCst);
        Some(records)
    }
}

/// A channel for posted events on which at most `limit` records wait (a single larger request
/// is taken when nothing waits, so the body limit alone bounds it).
pub fn post_channel(limit: usize) -> (PostSender, PostReceiver) {
    let (sender, receiver) = channel();
    let queued = Arc::new(AtomicUsize::new(0));
    let closed = Arc::new(AtomicBool::new(false));
    (
        PostSender { sender, queued: Arc::clone(&queued), closed: Arc::clone(&closed), limit, log: None },
        PostReceiver { receiver, queued, closed },
    )
}

/// The records posted to the reading worker: the ingest operator's control input beside its
/// source. Posted records go to lane 0, at the position of the source's latest record there.
/// When the source ends, what was posted so far is still delivered and the channel closes, so
/// later posts are refused, not lost.
pub struct Posted {
    receiver: Option<PostReceiver>,
    /// The latest event time the source or a post has given: the time of a post without one.
    max_seen: Option<Millis>,
    last: Position,
    /// `time.max_future`: a posted ts further beyond the wall clock is dead-lettered as `future`.
    max_future: Option<Millis>,
    /// How many posted records (and requests) were taken, from the start of the run or its
    /// restored checkpoint: where the log of posted records goes on after a restore.
    taken: u64,
}

/// Where the posted records stood at a checkpoint: how many were taken (a restore posts the
/// logged ones after these again), and the latest event time seen, which a post without `ts`
/// gets (a restored run has seen nothing yet when it takes what it posts again).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PostedPosition {
    /// Records (and requests) taken.
    pub taken: u64,
    /// The latest event time the source or a post had given.
    pub max_seen: Option<Millis>,
}

impl Posted {
    /// The records arriving on `receiver`, whose timestamps may lie at most `max_future` beyond
    /// the wall clock.
    pub fn new(receiver: PostReceiver, max_future: Option<Millis>) -> Posted {
        Posted { receiver: Some(receiver), max_seen: None, last: Position { lane: 0, offset: 0 }, max_future, taken: 0 }
    }

    /// Goes on from where a restored checkpoint's posted records stood.
    pub fn resuming(mut self, at: PostedPosition) -> Posted {
        (self.taken, self.max_seen) = (at.taken, at.max_seen);
        self
    }

    /// Whether the source or a post has given an event time yet.
    pub fn has_seen_an_event(&self) -> bool {
        self.max_seen.is_some()
    }

    /// Where the posted records stand now.
    pub fn position(&self) -> PostedPosition {
        PostedPosition { taken: self.taken, max_seen: self.max_seen }
    }

    /// Notes what the source just delivered: its latest position on lane 0 and its latest event
    /// time.
    pub fn follow(&mut self, arrivals: &[Arrival]) {
        for (at, arrival) in arrivals {
            if at.lane == 0 {
                self.last.offset = self.last.offset.max(at.offset);
            }
            if let Ok(event) = arrival {
                self.max_seen = Some(self.max_seen.map_or(event.ts, |m| m.max(event.ts)));
            }
        }
    }

    /// Appends the records posted since the last call to `out`, rejected by `source` as
    /// `future` when stamped too far beyond the wall clock, and the requests to forget a user to
    /// `forgets`; returns how many records and requests there were.
    pub fn take(
        &mut self,
        source: &dyn EventSource,
        out: &mut Vec<Arrival>,
        forgets: &mut Vec<ForgetRequest>,
    ) -> usize {
        let Some(receiver) = &self.receiver else { return 0 };
        let mut count = 0;
        while let Some(records) = receiver.take() {
            for record in records {
                count += 1;
                let number = self.taken;
                self.taken += 1;
                let arrival = match record {
                    PostedRecord::Event { event, ts_given }
                        if ts_given && beyond_wall_clock(event.ts, self.max_future) =>
                    {
                        let raw = serde_json::to_vec(&event).unwrap_or_default();
                        Err(source.reject(self.last, RejectReason::Future, raw))
                    }
                    PostedRecord::Event { mut event, ts_given } => {
                        if !ts_given {
                            event.ts = self.max_seen.unwrap_or_else(wall_clock_ms);
                        }
                        self.max_seen = Some(self.max_seen.map_or(event.ts, |m| m.max(event.ts)));
                        Ok(event)
                    }
                    PostedRecord::Rejected(dead) => Err(dead),
                    PostedRecord::Forget(request) => {
                        forgets.push(ForgetRequest { post: Some(number), ..request });
                        continue;
                    }
                };
                out.push((self.last, arrival));
            }
        }
        count
    }

    /// The input has ended: dropping the receiver makes every later send fail.
    pub fn close(&mut self) {
        self.receiver = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Action;
    use crate::source::Poll;

    /// A replayed input that has nothing (yet): not read live.
    struct Quiet;

    impl EventSource for Quiet {
        fn poll(&mut self, _max: usize, _out: &mut Vec<Arrival>) -> Poll {
            Poll::Idle
        }

        fn name(&self) -> String {
            "file:quiet.csv".into()
        }
    }

    fn posted(ts: Millis) -> PostedRecord {
        let event = Event { user: Id::Num(1), item: Id::Num(2), category: None, action: Action::View, value: None, ts };
        PostedRecord::Event { event, ts_given: true }
    }

    /// At most the limit of posted records wait; a request that would pass it is refused as
    /// full (not as ended), and room comes back as the source takes what waits.
    #[test]
    fn the_posted_queue_is_bounded() {
        let (sender, mut receiver) = post_channel(3);
        let now = wall_clock_ms();
        assert_eq!(sender.send(vec![posted(now), posted(now)]), Ok(()));
        for _ in 0..1000 {
            assert_eq!(sender.send(vec![posted(now), posted(now)]), Err(PostRefused::Full { limit: 3 }));
        }
        assert_eq!(sender.waiting(), 2);
        assert_eq!(sender.send(vec![posted(now)]), Ok(()));
        assert_eq!(receiver.take().map(|records| records.len()), Some(2));
        assert_eq!(receiver.take().map(|records| records.len()), Some(1), "refused requests left nothing queued");
        assert_eq!(sender.send(vec![posted(now), posted(now)]), Ok(()));
        drop(receiver_ends(&mut receiver));
        assert_eq!(sender.send(vec![posted(now)]), Err(PostRefused::Ended));
    }

    /// Drops the receiving end, as the source does when its input ends.
    fn receiver_ends(receiver: &mut PostReceiver) -> PostReceiver {
        std::mem::replace(receiver, post_channel(1).1)
    }

    /// Posted events are read live even beside a replayed file: three stamped ten days from now
    /// are refused as `future` (in a replay they would confirm one another), one of now is not.
    #[test]
    fn posted_events_beyond_the_wall_clock_are_future() {
        let (sender, receiver) = post_channel(100);
        let mut posted_input = Posted::new(receiver, Some(3_600_000));
        let ahead = wall_clock_ms() + 10 * 86_400_000;
        sender.send(vec![posted(ahead), posted(ahead + 1), posted(ahead + 2), posted(wall_clock_ms())]).unwrap();
        let (mut out, mut forgets) = (Vec::new(), Vec::new());
        assert_eq!(posted_input.take(&Quiet, &mut out, &mut forgets), 4);
        let fates: Vec<Option<&str>> =
            out.iter().map(|(_, arrival)| arrival.as_ref().err().map(|d| d.reason.code())).collect();
        assert_eq!(fates, [Some("future"), Some("future"), Some("future"), None]);
    }
}
