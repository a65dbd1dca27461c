//! recflow: real-time recommendations as one incremental timely/differential dataflow.
//!
//! Events flow one way: [`source`] (file, stdin, synthetic) → [`decode`] (CSV/TSV/JSON lines into
//! validated [`event::Event`]s) → [`event_time`] (watermark, lateness, dataflow time) →
//! [`dataflow`] (preferences, similarity, top-k, hot items) → [`sink`] (JSON-lines or Kafka
//! changelog, dead letters, and the feed of [`serve`]: HTTP point queries and Server-Sent Events
//! subscriptions). [`run`](mod@run) wires them together on timely workers, each driven by
//! [`driver`]; [`spec`] is the pipeline file, which [`pipeline_file`] reads from disk. [`kafka`]
//! is the Kafka client layer the source and sinks share.
//! [`metrics`] counts what happens, and [`status`] turns the counts into `GET /v1/status`.
//! [`eval`] replays a file through the same dataflow test-then-learn and measures its lists.
//! [`cli`] holds the `recflow` subcommands, which use all of this and which nothing here uses.
//! [`checkpoint`] is so far the store checkpoints will be kept in.

pub mod checkpoint;
pub mod cli;
pub mod dataflow;
pub mod decode;
pub mod driver;
pub mod durable;
pub mod eval;
pub mod event;
pub mod event_time;
pub mod fatal;
pub mod kafka;
pub mod metrics;
pub mod pipeline_file;
pub mod progress;
pub mod rejections;
pub mod results;
pub mod run;
pub mod schedule;
pub mod serve;
pub mod sink;
pub mod source;
pub mod spec;
pub mod status;
pub mod window;

pub use event::{Action, Event, Id};
pub use run::{run, RunOptions};
pub use spec::Pipeline;
