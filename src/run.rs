//! Running a pipeline on timely workers: build the source, the dataflow and the sinks on every
//! worker, drive it to completion, report status.

use std::collections::{BTreeSet, VecDeque};
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use thiserror::Error;
use timely::worker::Worker;

use crate::checkpoint::forgotten::{ForgetLedger, Forgotten};
use crate::checkpoint::post_log::{LoggedPost, PostLog};
use crate::checkpoint::rescale::Owner;
use crate::checkpoint::worker_state;
use crate::checkpoint::CheckpointStore;
use crate::dataflow::{self, Time};
use crate::decode::Decoder;
use crate::driver::{is_first_process, Driven, WorkerDriver};
use crate::durable;
use crate::event::DeadLetter;
use crate::event_time::{wall_clock_ms, EventClock};
use crate::fatal::{panic_message, watch_connections, Fatal, InjectedPanic};
use crate::metrics::{FirstRecords, Memory, Metrics, Snapshot};
use crate::progress::EndRule;
use crate::rejections::{excess_rejections, RejectionAlarm};
use crate::results::ChangeRecord;
use crate::serve::{Inlets, Posting, ServeError, Server};
use crate::sink::kafka::Continue;
use crate::sink::mailbox::Mailbox;
use crate::sink::{
    self, write_changelog, write_dead_letters, Destination, JsonLines, KafkaDestination, Output, ServeFeed, SinkError,
    Tee,
};
use crate::source::{
    ingest, post_channel, CutSettings, EventSource, FileSource, ForgetsKept, FrozenCut, IngestSettings, Input,
    KafkaResume, KafkaSource, NoSource, PostReceiver, Posted, RestoredReader, ResumePoint, SynthSource, WorkerCut,
};
use crate::spec::kafka_address::{KafkaAddress, SCHEME};
use crate::spec::{Pipeline, SourceKind};

/// How to run a pipeline, beyond its file.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Read events from this file (`-` for standard input) instead of the pipeline's source.
    pub input: Option<PathBuf>,
    /// Write the changelog here instead of `output.path`.
    pub output: Option<String>,
    /// Write dead letters here instead of `output.dead_letter`.
    pub dead_letter: Option<String>,
    /// Stop after this many input records.
    pub max_events: Option<u64>,
    /// Print the status line to standard error.
    pub status: bool,
    /// Raised to end the input early (for example on Ctrl-C): the run then finishes like a
    /// finite input, writing final results and committing offsets.
    pub stop: Option<Arc<AtomicBool>>,
    /// Take checkpoints: every worker's state at consistent cuts, handed to a function.
    pub checkpoints: Option<Checkpoints>,
    /// Take checkpoints into a directory, and restore from the newest there.
    pub checkpoint_dir: Option<CheckpointDir>,
}

/// Checkpoints kept in a directory (`--checkpoint DIR`).
#[derive(Clone, Debug)]
pub struct CheckpointDir {
    /// The directory.
    pub dir: PathBuf,
    /// The wall-clock time from the end of one checkpoint to the start of the next.
    pub interval: Duration,
    /// How many of the newest checkpoints to keep.
    pub keep: usize,
    /// Start over, ignoring the checkpoints there (`--fresh`).
    pub fresh: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            input: None,
            output: None,
            dead_letter: None,
            max_events: None,
            status: true,
            stop: None,
            checkpoints: None,
            checkpoint_dir: None,
        }
    }
}

/// How a run takes checkpoints.
#[derive(Clone)]
pub struct Checkpoints {
    /// The wall-clock time from the end of one checkpoint to the start of the next.
    pub interval: Duration,
    /// Takes each worker's part of each checkpoint, on that worker's thread.
    pub save: Arc<dyn Fn(Result<FrozenCut, bincode::Error>) + Send + Sync>,
    /// Every worker's part of the checkpoint to start from, if any: the run then goes on from
    /// where that checkpoint's run stood, on the same or (file and generator inputs) another
    /// number of workers, and writes only the changes after its cut.
    pub restore: Option<Arc<Vec<WorkerCut>>>,
}

impl std::fmt::Debug for Checkpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoints").field("interval", &self.interval).finish_non_exhaustive()
    }
}

/// A pipeline that cannot start.
#[derive(Debug, Error)]
pub enum RunError {
    /// The input cannot be opened.
    #[error("pipeline {pipeline}: cannot open input {path}: {source}")]
    Input {
        /// The pipeline name.
        pipeline: String,
        /// The input path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// An output cannot be created.
    #[error("pipeline {pipeline}: cannot create output {path}: {source}")]
    Output {
        /// The pipeline name.
        pipeline: String,
        /// The output path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The source cannot be opened (for example, the Kafka topic does not exist).
    #[error("pipeline {pipeline}: cannot open the source: {message}")]
    Source {
        /// The pipeline name.
        pipeline: String,
        /// What went wrong and what to do.
        message: String,
    },
    /// Checkpoints are asked for where they are not supported yet.
    #[error("pipeline {pipeline}: cannot take checkpoints: {message}")]
    Checkpoints {
        /// The pipeline name.
        pipeline: String,
        /// What is not supported and what to do instead.
        message: String,
    },
    /// A checkpoint cannot be restored.
    #[error("pipeline {pipeline}: cannot restore the checkpoint: {message}")]
    Restore {
        /// The pipeline name.
        pipeline: String,
        /// What went wrong and what to do.
        message: String,
    },
    /// A sink cannot be opened.
    #[error("pipeline {pipeline}: {source}")]
    Sink {
        /// The pipeline name.
        pipeline: String,
        /// Why.
        source: SinkError,
    },
    /// The server (`[serve]`, `--serve`) cannot start.
    #[error("pipeline {pipeline}: {source}")]
    Serve {
        /// The pipeline name.
        pipeline: String,
        /// Why.
        source: ServeError,
    },
    /// More of the records were rejected than `output.max_rejected_share` allows (the run
    /// finished and wrote its results).
    #[error("pipeline {pipeline}: {message}")]
    Rejected {
        /// The pipeline name.
        pipeline: String,
        /// The share, the most frequent reason, its likely cause and the fix.
        message: String,
    },
    /// A fault the run could not survive stopped it (an output that cannot be written, an input
    /// that cannot be read): the results after the last one written are missing.
    #[error("pipeline {pipeline}: stopped: {message}")]
    Fatal {
        /// The pipeline name.
        pipeline: String,
        /// What failed and why.
        message: String,
    },
    /// Timely could not start its workers (for example, a cluster address is unreachable).
    #[error("pipeline {pipeline}: cannot start the workers: {message}")]
    Workers {
        /// The pipeline name.
        pipeline: String,
        /// Timely's message.
        message: String,
    },
}

/// Where this run's events come from.
fn input_path(pipeline: &Pipeline, options: &RunOptions) -> Option<PathBuf> {
    match (&options.input, pipeline.source.kind) {
        (Some(path), _) => Some(path.clone()),
        (None, SourceKind::File) => pipeline.source.path.clone(),
        (None, SourceKind::Stdin) => Some(PathBuf::from("-")),
        (None, SourceKind::Synth | SourceKind::Kafka) => None,
    }
}

/// Whether every worker reads its own share of the input (Kafka partitions), rather than worker 0
/// reading all of it.
fn reads_in_parallel(pipeline: &Pipeline, options: &RunOptions) -> bool {
    pipeline.source.kind == SourceKind::Kafka && options.input.is_none()
}

/// Opens what this worker reads, if it reads anything: its own Kafka partitions when every worker
/// reads its share, else (worker 0 only) the file, standard input or generator; at most
/// `--max-events` of it, and on worker 0 the posted records.
fn open_input(
    shared: &WorkerShared,
    worker: usize,
    workers: usize,
    restoring: Option<&WorkerCut>,
) -> Result<Option<Input>, RunError> {
    let (pipeline, options) = (&shared.pipeline, &shared.options);
    let source_error = |message: String| RunError::Source { pipeline: pipeline.name.clone(), message };
    let source: Box<dyn EventSource> = if let Some(count) = shared.input_partitions {
        let spec = &pipeline.source.kafka;
        let metrics = Arc::clone(&shared.metrics);
        let resume = kafka_resume(shared);
        let kafka = KafkaSource::open_at(&pipeline.source, spec, count, worker, workers, metrics, &resume)
            .map_err(|e| source_error(e.to_string()))?;
        Box::new(kafka)
    } else if worker != 0 && shared.options.checkpoints.is_some() {
        // Every worker takes part in checkpoints, reading or not.
        return Ok(Some(Input::new(Box::new(NoSource))));
    } else if worker != 0 {
        return Ok(None);
    } else {
        open_single_source(pipeline, options, &shared.fatal, restoring.and_then(|part| part.source.as_ref()))?
    };
    // Posted events and forget requests go to worker 0, which counts on from its checkpoint.
    let posted = if worker == 0 { shared.posted.lock().unwrap_or_else(|e| e.into_inner()).take() } else { None };
    let before = restoring.map(|part| part.posted).unwrap_or_default();
    let forgotten = if worker == 0 { shared.forgotten.lock().unwrap_or_else(|e| e.into_inner()).take() } else { None };
    Ok(Some(Input {
        source,
        posted: posted.map(|receiver| Posted::new(receiver, pipeline.time.max_future.millis()).resuming(before)),
        max_records: restoring.map_or(options.max_events, |part| part.max_records_left),
        forgotten,
    }))
}

/// Where each Kafka partition resumes: the restored checkpoint's offsets from every worker's part
/// (each worker takes its own partitions), or nothing on a fresh start.
fn kafka_resume(shared: &WorkerShared) -> KafkaResume {
    let mut resume = KafkaResume::default();
    let parts = shared.options.checkpoints.as_ref().and_then(|c| c.restore.as_deref());
    for part in parts.into_iter().flatten() {
        if let Some(ResumePoint::Kafka(point)) = &part.source {
            resume.next_offsets.extend(point.next_offsets.iter().map(|(p, o)| (*p, *o)));
        }
    }
    resume
}

fn open_single_source(
    pipeline: &Pipeline,
    options: &RunOptions,
    fatal: &Fatal,
    resume: Option<&ResumePoint>,
) -> Result<Box<dyn EventSource>, RunError> {
    let cannot_resume = |what: &str| RunError::Restore {
        pipeline: pipeline.name.clone(),
        message: format!("the checkpoint's source position is not {what}'s; restore with the source it was taken with"),
    };
    Ok(match input_path(pipeline, options) {
        Some(path) => {
            let decoder = Decoder::new(&pipeline.source);
            let skip_header = pipeline.source.header && decoder.is_delimited();
            let opened = match resume {
                None => FileSource::open(&path, decoder, skip_header, fatal.clone()),
                Some(ResumePoint::File(at)) => FileSource::open_at(&path, decoder, skip_header, fatal.clone(), *at),
                Some(_) => return Err(cannot_resume("a file")),
            };
            let file = opened.map_err(|source| RunError::Input {
                pipeline: pipeline.name.clone(),
                path: path.display().to_string(),
                source,
            })?;
            Box::new(file)
        }
        None => match resume {
            None => Box::new(SynthSource::new(&pipeline.source.synth)),
            Some(ResumePoint::Synth(at)) => Box::new(SynthSource::resume(&pipeline.source.synth, at)),
            Some(_) => return Err(cannot_resume("the generator")),
        },
    })
}

/// Starts the server of process 0 when the pipeline serves; returns it and, when events can be
/// posted or users forgotten, the receiving end for worker 0's source.
fn start_server(
    pipeline: &Pipeline,
    options: &RunOptions,
    metrics: &Arc<Metrics>,
    post_log: Option<(PostLog, Vec<LoggedPost>)>,
) -> Result<(Option<Server>, Option<PostReceiver>), RunError> {
    let Some(spec) = &pipeline.serve else { return Ok((None, None)) };
    let (mut sender, receiver) = post_channel(spec.max_queued_events);
    if let Some((log, again)) = post_log {
        sender.post_again(again);
        sender = sender.logging_to(Arc::new(log));
    }
    let events = if reads_in_parallel(pipeline, options) {
        Posting::Unsupported(
            "POST /v1/events is not available with a Kafka source: produce the events to the input topic",
        )
    } else {
        Posting::Open(sender.clone())
    };
    let forget = if forgets_users(pipeline) {
        Posting::Open(sender)
    } else {
        Posting::Unsupported("forgetting users is off in this pipeline (serve.forget = false)")
    };
    let receiver = (events.is_open() || forget.is_open()).then_some(receiver);
    let server = Server::start(spec, pipeline, Arc::clone(metrics), Inlets { events, forget })
        .map_err(|source| RunError::Serve { pipeline: pipeline.name.clone(), source })?;
    eprintln!("recflow: serving on http://{}", server.addr());
    Ok((Some(server), receiver))
}

/// The log of posted records in the checkpoint directory, and what of it to post again: the
/// records after those the restored checkpoint had taken (all of them without a checkpoint; none
/// with `--fresh`, which empties it).
fn open_post_log(
    pipeline: &Pipeline,
    dir: &CheckpointDir,
    (store, restored): (&CheckpointStore, Option<&durable::Restored>),
    in_ledger: &BTreeSet<u64>,
) -> Result<(PostLog, Vec<LoggedPost>), RunError> {
    let path = dir.dir.join("posted.log");
    let error = |e: std::io::Error| RunError::Restore {
        pipeline: pipeline.name.clone(),
        message: format!("the log of posted records {}: {e}", path.display()),
    };
    if dir.fresh {
        return Ok((PostLog::open_empty(&path).map_err(error)?, Vec::new()));
    }
    let taken = restored.and_then(|r| r.parts.iter().find(|part| part.worker == 0)).map_or(0, |part| part.posted.taken);
    let taken_by_all = durable::posted_taken_by_all(store).map_err(|e| error(std::io::Error::other(e)))?.min(taken);
    let (log, again) = PostLog::open(&path, taken, taken_by_all).map_err(error)?;
    let again: Vec<LoggedPost> = again
        .into_iter()
        .filter(|(number, post)| !(matches!(post, LoggedPost::Forget(_)) && in_ledger.contains(number)))
        .map(|(_, post)| post)
        .collect();
    if !again.is_empty() {
        let since = restored.map_or("the start".to_string(), |r| format!("checkpoint {}", r.manifest.id));
        eprintln!("recflow: posting again {} records posted after {since}", again.len());
    }
    Ok((log, again))
}

/// The ledger of forgotten users in the checkpoint directory, with the forgets this run takes
/// again: those its restored checkpoint had not taken, or every one when it starts from the
/// beginning (`--fresh`, or no checkpoint yet), which keeps them forgotten. Also returns the
/// numbers, in the log of posted records, of every forget the ledger holds.
fn open_forget_ledger(
    pipeline: &Pipeline,
    dir: &CheckpointDir,
    restored: Option<&durable::Restored>,
) -> Result<(ForgetsKept, Vec<u64>), RunError> {
    let path = dir.dir.join("forgotten.log");
    let (ledger, taken) = ForgetLedger::open(&path).map_err(|e| RunError::Restore {
        pipeline: pipeline.name.clone(),
        message: format!("the ledger of forgotten users {}: {e}", path.display()),
    })?;
    let at_cut = restored.and_then(|r| r.parts.iter().find(|part| part.worker == 0)).map(|part| &part.forgets);
    let again: VecDeque<Forgotten> = match at_cut {
        Some(cut) => cut.again.iter().cloned().chain(taken.iter().skip(cut.recorded as usize).cloned()).collect(),
        None => taken.iter().cloned().collect(),
    };
    if !again.is_empty() {
        eprintln!(
            "recflow: forgetting again {} users forgotten before (the ledger in {})",
            again.len(),
            path.display()
        );
    }
    let posts = taken.iter().filter_map(|forgotten| forgotten.post).collect();
    let kept = ForgetsKept { ledger: Arc::new(ledger), again, recorded: taken.len() as u64 };
    Ok((kept, posts))
}

/// Whether the dataflow keeps what it needs to forget users (`DELETE /v1/users/{user}`). Every
/// worker of every process must agree, since it changes the dataflow's shape.
fn forgets_users(pipeline: &Pipeline) -> bool {
    pipeline.serve.as_ref().is_some_and(|spec| spec.forget)
}

/// What every worker of a process shares.
struct WorkerShared {
    pipeline: Pipeline,
    options: RunOptions,
    /// Where the changelog goes.
    output_path: String,
    /// Where dead letters go.
    dead_letter_path: String,
    /// The Kafka input topic's partitions, when every worker reads its own.
    input_partitions: Option<usize>,
    /// Worker threads of this process.
    local_workers: usize,
    metrics: Arc<Metrics>,
    /// The run's fault, which every worker of the process stops for.
    fatal: Fatal,
    /// The server's feed, when process 0 serves.
    feed: Option<Arc<Mailbox>>,
    /// Posted records, taken by worker 0.
    posted: Mutex<Option<PostReceiver>>,
    /// The ledger of forgotten users, kept by worker 0.
    forgotten: Mutex<Option<ForgetsKept>>,
    injected: InjectedPanic,
    /// Whether file outputs are written on at their end: a restored run continues them.
    append_outputs: bool,
    /// With checkpoints: how Kafka outputs are written exactly once.
    exact_outputs: Option<ExactOutputs>,
    /// The checkpoint being restored, and when the run started restoring it.
    restore_started: Option<(u64, Instant)>,
}

/// What a checkpointed run's Kafka outputs need: the writer that records their offsets at each
/// cut, and where the restored checkpoint (its number) left each topic.
struct ExactOutputs {
    writer: Arc<durable::Writer>,
    restored: Option<(u64, Vec<durable::KafkaOutputAt>)>,
}

/// Runs `pipeline` on the workers `config` describes until its input ends; returns this process's
/// counters. With `[serve]`, process 0 serves the results over HTTP while the run lasts, and
/// for `serve.linger` after a finite input ended.
pub fn run(pipeline: Pipeline, options: RunOptions, config: timely::Config) -> Result<Snapshot, RunError> {
    let started = Instant::now();
    let mut options = options;
    let output_path = options.output.clone().unwrap_or_else(|| pipeline.output.path.clone());
    let dead_letter_path = options.dead_letter.clone().unwrap_or_else(|| pipeline.output.dead_letter.clone());
    let first_process = is_first_process(&config);
    let outputs = [&output_path, &dead_letter_path];
    let checkpoints = match &options.checkpoint_dir {
        Some(dir) => {
            refuse_unsupported_checkpoints(&pipeline, &options, outputs)?;
            Some(open_checkpoints(&pipeline, dir, first_process)?)
        }
        None => None,
    };
    let restored = checkpoints.as_ref().and_then(|(_, restored)| restored.as_ref());
    let restored_kafka_outputs = restored.map(|r| (r.manifest.id, r.meta.kafka_outputs.clone()));
    let restore_started = restored.map(|r| (r.manifest.id, started));
    // One metadata lookup per process: the workers' partitions, and the partitions a missing
    // Kafka output topic is created with (as many as the input topic; 1 for other sources).
    let input_partitions = reads_in_parallel(&pipeline, &options)
        .then(|| KafkaSource::partitions(&pipeline.source.kafka))
        .transpose()
        .map_err(|e| RunError::Source { pipeline: pipeline.name.clone(), message: e.to_string() })?;
    if let Some(restored) = restored {
        // Refused before anything is cut back: a refused restore leaves the outputs alone.
        if let Some(count) = input_partitions {
            check_restored_partitions(&pipeline, restored, count)?;
        }
        check_restorable_on(&pipeline, &restored.parts, total_workers(&config), input_partitions)?;
    }
    if first_process {
        check_paths(&pipeline, &options, outputs, restored.is_none())?;
        if let Some(restored) = restored {
            durable::cut_back_outputs(&restored.meta).map_err(|e| RunError::Restore {
                pipeline: pipeline.name.clone(),
                message: format!("cannot cut the outputs back to the checkpoint: {e}"),
            })?;
        }
    }
    let local_workers = match &config.communication {
        timely::CommunicationConfig::Process(threads) => *threads,
        timely::CommunicationConfig::Cluster { threads, .. } => *threads,
        _ => 1,
    };
    let metrics = Arc::new(Metrics::default());
    let forgotten = match &options.checkpoint_dir {
        Some(dir) if first_process && forgets_users(&pipeline) => Some(open_forget_ledger(&pipeline, dir, restored)?),
        _ => None,
    };
    // Forgets in the ledger are taken again from there, not from the log of posted records.
    let in_ledger: BTreeSet<u64> = forgotten.iter().flat_map(|(_, posts)| posts.iter().copied()).collect();
    let post_log = match (&options.checkpoint_dir, &checkpoints) {
        (Some(dir), Some((store, _))) if first_process && pipeline.serve.is_some() => {
            Some(open_post_log(&pipeline, dir, (store, restored), &in_ledger)?)
        }
        _ => None,
    };
    let (server, posted) =
        if first_process { start_server(&pipeline, &options, &metrics, post_log)? } else { (None, None) };
    let (pipeline_name, judged, stop) = (pipeline.name.clone(), pipeline.clone(), options.stop.clone());
    let linger = pipeline.serve.as_ref().map(|s| s.linger);
    // The server's /healthz reads the same fault from the metrics.
    let fatal = metrics.fatal.clone();
    if matches!(config.communication, timely::CommunicationConfig::Cluster { .. }) {
        fatal.end_process_on_report();
        watch_connections(fatal.clone());
    }
    let append_outputs = restored.is_some();
    let files = outputs.into_iter().filter(|p| is_file_path(p)).cloned().collect();
    let workers = total_workers(&config);
    let writer = match (&options.checkpoint_dir, checkpoints) {
        (Some(dir), Some((store, restored))) => {
            let writer = start_writer(&pipeline, store, (workers, first_process), files, (&fatal, &metrics))?;
            let (save_to, report) = (Arc::clone(&writer), fatal.clone());
            let save = Arc::new(move |cut: Result<FrozenCut, bincode::Error>| match cut {
                Ok(cut) => save_to.save(cut),
                Err(e) => report.report("checkpoint", e),
            });
            let restore = restored.map(|restored| Arc::new(restored.parts));
            options.checkpoints = Some(Checkpoints { interval: dir.interval, save, restore });
            Some(writer)
        }
        _ => None,
    };
    let shared = WorkerShared {
        pipeline,
        options,
        output_path,
        dead_letter_path,
        input_partitions,
        local_workers,
        metrics: Arc::clone(&metrics),
        fatal: fatal.clone(),
        feed: server.as_ref().map(Server::feed),
        posted: Mutex::new(posted),
        forgotten: Mutex::new(forgotten.map(|(kept, _)| kept)),
        injected: InjectedPanic::from_env(),
        append_outputs,
        exact_outputs: writer
            .as_ref()
            .map(|writer| ExactOutputs { writer: Arc::clone(writer), restored: restored_kafka_outputs }),
        restore_started,
    };
    let guards = timely::execute(config, move |worker| run_worker_guarded(worker, &shared))
        .map_err(|message| RunError::Workers { pipeline: pipeline_name.clone(), message })?;
    let results = guards.join();
    if let Some(writer) = writer {
        writer.finish();
    }
    // A worker's own error first: the fault the others stopped for may be that error.
    for result in results {
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(message) => return Err(RunError::Workers { pipeline: pipeline_name.clone(), message }),
        }
    }
    if let Some(message) = fatal.get() {
        return Err(RunError::Fatal { pipeline: pipeline_name, message: message.to_string() });
    }
    if let (Some(server), Some(linger)) = (server, linger) {
        server.linger(linger, stop.as_deref());
    }
    if let Some(limit) = judged.output.max_rejected_share {
        if let Some(message) = excess_rejections(&metrics, limit, &judged) {
            return Err(RunError::Rejected { pipeline: pipeline_name, message });
        }
    }
    Ok(metrics.snapshot())
}

/// Fails before starting workers when the input is missing (only process 0 reads it) or an
/// output file cannot be created.
fn check_paths(
    pipeline: &Pipeline,
    options: &RunOptions,
    outputs: [&String; 2],
    create_outputs: bool,
) -> Result<(), RunError> {
    if let Some(path) = input_path(pipeline, options) {
        if path.as_os_str() != "-" {
            std::fs::File::open(&path).map_err(|source| RunError::Input {
                pipeline: pipeline.name.clone(),
                path: path.display().to_string(),
                source,
            })?;
        }
    }
    for path in outputs.into_iter().filter(|_| create_outputs) {
        if is_file_path(path) {
            std::fs::File::create(path).map_err(|source| RunError::Output {
                pipeline: pipeline.name.clone(),
                path: path.clone(),
                source,
            })?;
        }
    }
    Ok(())
}

/// Whether an output path names a file (not a standard stream or a Kafka topic).
fn is_file_path(path: &str) -> bool {
    !matches!(path, "-" | "stdout" | "stderr") && !path.starts_with(SCHEME)
}

/// How many workers the run has in all its processes.
fn total_workers(config: &timely::Config) -> usize {
    match &config.communication {
        timely::CommunicationConfig::Process(threads) => *threads,
        timely::CommunicationConfig::Cluster { threads, addresses, .. } => threads * addresses.len(),
        _ => 1,
    }
}

/// The checkpoint store in `dir`, and its newest whole checkpoint unless starting fresh; newer
/// damaged ones are reported on standard error. The first process, which commits, removes what
/// a crashed writer left half-written, and with `--fresh` every checkpoint of the runs before:
/// were this run to crash before its first checkpoint, the next start would otherwise restore
/// one of theirs and cut this run's outputs back to their lengths.
fn open_checkpoints(
    pipeline: &Pipeline,
    dir: &CheckpointDir,
    first_process: bool,
) -> Result<(CheckpointStore, Option<durable::Restored>), RunError> {
    let error = |message: String| RunError::Restore { pipeline: pipeline.name.clone(), message };
    let store = CheckpointStore::open(&dir.dir, dir.keep).map_err(|e| error(e.to_string()))?;
    if first_process {
        store.remove_leftovers().map_err(|e| error(e.to_string()))?;
    }
    if dir.fresh {
        if first_process {
            let removed = store.remove_all().map_err(|e| error(e.to_string()))?;
            if removed > 0 {
                eprintln!("recflow: starting over: removed {removed} checkpoints from {}", dir.dir.display());
            }
        }
        return Ok((store, None));
    }
    let restored = durable::newest(&store, pipeline).map_err(|e| error(e.to_string()))?;
    if let Some(restored) = &restored {
        for damage in &restored.damaged {
            eprintln!("recflow: passing over a damaged checkpoint: {damage}");
        }
        eprintln!("recflow: restoring checkpoint {} from {}", restored.manifest.id, dir.dir.display());
    }
    Ok((store, restored))
}

/// Starts this process's checkpoint writer into `store`; numbers continue after the newest
/// checkpoint there.
fn start_writer(
    pipeline: &Pipeline,
    store: CheckpointStore,
    (workers, first_process): (usize, bool),
    file_outputs: Vec<String>,
    (fatal, metrics): (&Fatal, &Arc<Metrics>),
) -> Result<Arc<durable::Writer>, RunError> {
    let first_id =
        store.last_id().map_err(|e| RunError::Restore { pipeline: pipeline.name.clone(), message: e.to_string() })?;
    let meta = durable::CheckpointMeta {
        state_format: durable::STATE_FORMAT,
        pipeline: pipeline.clone(),
        workers,
        outputs: Vec::new(),
        posted_taken: 0,
        kafka_outputs: Vec::new(),
    };
    let settings = durable::WriterSettings {
        store,
        meta,
        first_id,
        commits: first_process,
        file_outputs,
        fatal: fatal.clone(),
        metrics: Arc::clone(metrics),
    };
    Ok(durable::Writer::start(settings))
}

/// Checks the Kafka input topic's `count` partitions against the ones the restored checkpoint
/// read: a partition it read that the topic no longer has (the topic was deleted and created
/// again with fewer) is refused, since its offsets would name other records; partitions added
/// since are read from `[source.kafka] start`, with a warning, since the run that took the
/// checkpoint never read them.
fn check_restored_partitions(pipeline: &Pipeline, restored: &durable::Restored, count: usize) -> Result<(), RunError> {
    let mut read = KafkaResume::default();
    for part in &restored.parts {
        if let Some(ResumePoint::Kafka(point)) = &part.source {
            read.next_offsets.extend(point.next_offsets.iter().map(|(p, o)| (*p, *o)));
        }
    }
    let topic = &pipeline.source.kafka.topic;
    let gone: Vec<String> =
        read.next_offsets.keys().filter(|p| **p < 0 || **p as usize >= count).map(i32::to_string).collect();
    if !gone.is_empty() {
        return Err(RunError::Restore {
            pipeline: pipeline.name.clone(),
            message: format!(
                "checkpoint {} read partitions {} of topic {topic}, which now has {count} partitions; was the topic \
                 created again? Start over with --fresh",
                restored.manifest.id,
                gone.join(", ")
            ),
        });
    }
    let added: Vec<String> =
        (0..count as i32).filter(|p| !read.next_offsets.contains_key(p)).map(|p| p.to_string()).collect();
    if !added.is_empty() {
        let start = format!("{:?}", pipeline.source.kafka.start).to_lowercase();
        eprintln!(
            "recflow: warning: topic {topic} has partitions {} that checkpoint {} did not read (added since?); they are \
             read from [source.kafka] start ({start}), and results from then on can differ from a run never stopped",
            added.join(", "),
            restored.manifest.id
        );
    }
    Ok(())
}

/// Refuses checkpoints where a restore could not give exactly the results of a run that never
/// stopped: a source that cannot resume (standard input), or both outputs to one Kafka topic
/// (their records would interleave differently on every run).
fn refuse_unsupported_checkpoints(
    pipeline: &Pipeline,
    options: &RunOptions,
    outputs: [&String; 2],
) -> Result<(), RunError> {
    let refuse =
        |message: &str| Err(RunError::Checkpoints { pipeline: pipeline.name.clone(), message: message.into() });
    if input_path(pipeline, options).is_some_and(|path| path.as_os_str() == "-") {
        return refuse("standard input cannot resume after a restart; read a file");
    }
    let topic = |path: &String| KafkaAddress::parse(path).ok().map(|address| address.topic);
    if outputs[0].starts_with(SCHEME) && topic(outputs[0]) == topic(outputs[1]) {
        return refuse("the changelog and the dead letters go to one Kafka topic; give each a topic of its own");
    }
    Ok(())
}

/// Runs one worker. A panic on one worker, or an error before its dataflow is built (an output
/// only worker 0 opens), would leave the others waiting for it for ever: it becomes the run's
/// fatal fault as well, which every worker of the process stops for.
fn run_worker_guarded(worker: &mut Worker, shared: &WorkerShared) -> Result<(), RunError> {
    let index = worker.index();
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| run_worker(worker, shared)));
    if let Ok(Err(e)) = &outcome {
        // The run returns this error itself; the others only need to stop.
        shared.fatal.stop(&format!("worker {index}"), e);
    }
    outcome.unwrap_or_else(|payload| {
        shared.fatal.report(&format!("worker {index}"), format!("panicked: {}", panic_message(payload.as_ref())));
        // Timely steps a worker until its dataflows are gone: drop what the panic left.
        for dataflow in worker.installed_dataflows() {
            worker.drop_dataflow(dataflow);
        }
        Ok(())
    })
}

/// Builds the pipeline on one worker and drives it until every result is out, with the status
/// line and the rejection alarm on the workers that report.
fn run_worker(worker: &mut Worker, shared: &WorkerShared) -> Result<(), RunError> {
    let (index, peers) = (worker.index(), worker.peers());
    let pipeline = &shared.pipeline;
    let parallel = reads_in_parallel(pipeline, &shared.options);
    let (restoring, rescaled) = match restored_part(shared, index, peers)? {
        Some(Restoring::Own(part)) => (Some(part), None),
        Some(Restoring::Rescaled { part, all, to }) => (Some(part), Some((all, to))),
        None => (None, None),
    };
    let input = open_input(shared, index, peers, restoring)?;
    let outputs = (index == 0).then(|| open_outputs(shared)).transpose()?;
    let (hopping, unit) = (dataflow::hopping(pipeline), pipeline.source.timestamp_unit.scale());
    let driver = WorkerDriver::new(worker);
    let restore_error = |message: String| RunError::Restore { pipeline: pipeline.name.clone(), message };
    let reader = match (rescaled, shared.input_partitions) {
        (Some((all, _)), Some(_)) => Some(RestoredReader::dealt(all, index, peers)),
        (Some(_), None) if index != 0 => restoring.map(|part| RestoredReader::reading_nothing(&part.reader)),
        _ => restoring.map(|part| RestoredReader::from_bytes(&part.reader)),
    }
    .transpose()
    .map_err(|e| restore_error(format!("worker {index}'s reader state cannot be read: {e}")))?;
    let checkpoints = shared.options.checkpoints.as_ref().map(|options| {
        let save = Arc::clone(&options.save);
        CutSettings {
            interval: options.interval,
            state: match rescaled {
                Some((all, to)) => {
                    worker_state::install_rescaled(all.iter().map(|p| p.operators.clone()).collect(), to)
                }
                None => worker_state::install(restoring.map(|part| part.operators.clone()).unwrap_or_default()),
            },
            save: Box::new(move |cut| save(cut)),
            restore: reader,
        }
    });
    let state = checkpoints.as_ref().map(|c| Rc::clone(&c.state));
    let settings = IngestSettings {
        readers: if parallel || checkpoints.is_some() { peers } else { 1 },
        clock: EventClock::new(&pipeline.time),
        end_rule: EndRule::of(pipeline, hopping),
        metrics: Arc::clone(&shared.metrics),
        end: driver.end.clone(),
        completed: driver.completed.clone(),
        stop: shared.options.stop.clone(),
        checkpoints,
    };
    worker.dataflow::<Time, _, _>(|scope| {
        let ingested = ingest(scope, input, settings);
        let control =
            dataflow::Control { forgets: forgets_users(pipeline).then_some(ingested.forgets), restored: None };
        let results = dataflow::build(ingested.events, control, pipeline, &driver.end);
        let (changelog_out, dead_letter_out) = outputs.unzip();
        let (end, metrics) = (driver.end.clone(), Arc::clone(&shared.metrics));
        write_changelog(results, changelog_out, hopping, unit, end, metrics, &driver.completed);
        write_dead_letters(ingested.dead_letters, dead_letter_out, &driver.completed);
    });
    let problems = state.map(|state| state.borrow().problems()).unwrap_or_default();
    if !problems.is_empty() {
        worker_state::uninstall();
        return Err(restore_error(problems.join("; ")));
    }
    if let (0, Some((id, started))) = (index, shared.restore_started) {
        // Every operator of this worker has its state back; the others' take about as long.
        eprintln!("recflow: checkpoint {id} restored in {:.2} s", started.elapsed().as_secs_f64());
    }
    let interval = Duration::from_secs(pipeline.output.status_interval_secs);
    // Each process reports its own partitions when they are read in parallel.
    let reports = if parallel { index % shared.local_workers == 0 } else { index == 0 };
    let mut status = Status::new(shared.options.status && reports && !interval.is_zero(), interval, unit);
    let mut alarm = AlarmWatch::new(reports, pipeline);
    let (end, metrics) = (driver.end.clone(), &shared.metrics);
    let driven = driver.until_complete(
        worker,
        || shared.fatal.get().is_some(),
        || {
            shared.injected.strike(index);
            alarm.check(metrics, end.get().is_some());
            status.maybe_print(metrics, alarm.raised());
        },
    );
    worker_state::uninstall();
    if driven == Driven::Complete {
        alarm.check(metrics, true);
        status.finish(metrics, alarm.raised());
    }
    Ok(())
}

/// What one worker restores.
enum Restoring<'a> {
    /// Its own part: the checkpoint was taken on as many workers.
    Own(&'a WorkerCut),
    /// A checkpoint taken on another number of workers: the part whose source and reader this
    /// worker takes over, every old worker's part (to rebuild each operator's state from), and
    /// where this worker stands.
    Rescaled { part: &'a WorkerCut, all: &'a [WorkerCut], to: Owner },
}

/// Refuses a checkpoint (its `parts`) that a run on `workers` workers cannot restore: a part
/// missing, or, on another number of workers than it was taken on, a Kafka source whose
/// partitions changed since (they are dealt to the new workers by number) or a run limited by
/// `--max-events` (which counts per worker).
fn check_restorable_on(
    pipeline: &Pipeline,
    parts: &[WorkerCut],
    workers: usize,
    input_partitions: Option<usize>,
) -> Result<(), RunError> {
    let taken_on = parts.iter().map(|part| part.worker + 1).max().unwrap_or(0);
    let refused = |why: &str| RunError::Restore {
        pipeline: pipeline.name.clone(),
        message: format!(
            "it was taken on {taken_on} workers and this run has {workers}; {why}: restore it on {taken_on} workers, \
             or start over with --fresh"
        ),
    };
    let needed = if taken_on == workers { taken_on } else { 1 };
    if (0..needed).any(|old| !parts.iter().any(|part| part.worker == old)) {
        return Err(refused("a part is missing"));
    }
    let kafka = parts.iter().any(|part| matches!(part.source, Some(ResumePoint::Kafka(_))));
    if kafka && taken_on != workers {
        let read: usize = parts.iter().filter_map(|part| part.source.as_ref()).map(ResumePoint::lanes).sum();
        if input_partitions != Some(read) {
            return Err(refused("the topic's partitions changed since, so they cannot be dealt out anew"));
        }
        if parts.iter().any(|part| part.max_records_left.is_some()) {
            return Err(refused("--max-events counts per worker"));
        }
    }
    Ok(())
}

/// This worker's part of the checkpoint the run restores, if it restores one (the run has
/// checked that it can: [`check_restorable_on`]).
///
/// On another number of workers, each operator's state is rebuilt from every old worker's
/// ([`worker_state::install_rescaled`]). A file or the generator is read by worker 0 alone, so
/// new worker 0 takes old worker 0's reader and source position, and every other new worker
/// starts a reader that reads nothing at old worker 0's capability
/// ([`RestoredReader::reading_nothing`]). Kafka partitions are dealt to the new workers, each
/// with its lane ([`RestoredReader::dealt`]).
fn restored_part(shared: &WorkerShared, worker: usize, workers: usize) -> Result<Option<Restoring<'_>>, RunError> {
    let Some(parts) = shared.options.checkpoints.as_ref().and_then(|c| c.restore.as_deref()) else { return Ok(None) };
    let taken_on = parts.iter().map(|part| part.worker + 1).max().unwrap_or(0);
    let part_of = |old: usize| {
        parts.iter().find(|part| part.worker == old).ok_or_else(|| RunError::Restore {
            pipeline: shared.pipeline.name.clone(),
            message: format!("part {old} of the checkpoint is missing; start over with --fresh"),
        })
    };
    if taken_on == workers {
        return Ok(Some(Restoring::Own(part_of(worker)?)));
    }
    let part = part_of(0)?;
    Ok(Some(Restoring::Rescaled { part, all: parts, to: Owner { worker, workers, cut: part.cut } }))
}

/// Opens worker 0's outputs: the changelog (teed into the server's feed when serving) and the
/// dead letters.
fn open_outputs(shared: &WorkerShared) -> Result<(Output<ChangeRecord>, Output<DeadLetter>), RunError> {
    let out = open_sink(shared, &shared.output_path)?;
    let changelog = Output {
        name: format!("output {}", shared.output_path),
        destination: match &shared.feed {
            Some(feed) => Box::new(Tee::new(out, Box::new(ServeFeed::new(Arc::clone(feed))))),
            None => out,
        },
        fatal: shared.fatal.clone(),
    };
    let dead_letters = Output {
        name: format!("dead-letter output {}", shared.dead_letter_path),
        destination: open_sink(shared, &shared.dead_letter_path)?,
        fatal: shared.fatal.clone(),
    };
    Ok((changelog, dead_letters))
}

/// Opens the file, standard stream or Kafka topic at `path` for records of type `R`.
fn open_sink<R>(shared: &WorkerShared, path: &str) -> Result<Box<dyn Destination<R>>, RunError>
where
    JsonLines: Destination<R>,
    KafkaDestination: Destination<R>,
{
    let (pipeline, partitions) = (&shared.pipeline, shared.input_partitions.unwrap_or(1));
    let sink_error = |source| RunError::Sink { pipeline: pipeline.name.clone(), source };
    if let (Some(exact), true) = (&shared.exact_outputs, path.starts_with(SCHEME)) {
        let address = KafkaAddress::parse(path)
            .map_err(|message| sink_error(SinkError::Open { destination: path.to_string(), message }))?;
        let restored =
            exact.restored.as_ref().map(|(id, outputs)| (*id, outputs.iter().find(|o| o.topic == address.topic)));
        if let Some((id, None)) = restored {
            eprintln!(
                "recflow: warning: checkpoint {id} did not write to {path}; it receives the results from the cut on"
            );
        }
        let resume = Continue {
            from: restored.and_then(|(_, at)| at).map(|at| &at.next_offsets),
            checkpoint: restored.map_or(0, |(id, _)| id),
        };
        let options = &pipeline.output.kafka_options;
        let (destination, offsets) =
            KafkaDestination::open_exactly(&address, options, partitions, Arc::clone(&shared.metrics), resume)
                .map_err(sink_error)?;
        exact.writer.follow_kafka_output(&address.topic, offsets);
        return Ok(Box::new(destination));
    }
    sink::open_continuing(path, &pipeline.output.kafka_options, partitions, &shared.metrics, shared.append_outputs)
        .map_err(sink_error)
}

/// Watches the first records read and warns once on standard error when one reason rejected
/// nearly all of them.
struct AlarmWatch<'a> {
    pipeline: &'a Pipeline,
    /// `None` while the first records are not all judged, then the alarm, if any.
    verdict: Option<Option<RejectionAlarm>>,
}

impl<'a> AlarmWatch<'a> {
    /// A watch for a worker that reports (`enabled`); other workers' watches stay quiet.
    fn new(enabled: bool, pipeline: &'a Pipeline) -> AlarmWatch<'a> {
        AlarmWatch { pipeline, verdict: (!enabled).then_some(None) }
    }

    /// Judges the first records once they are known (all of them, when the input has ended),
    /// printing the alarm if there is one.
    fn check(&mut self, metrics: &Metrics, input_ended: bool) {
        if self.verdict.is_some() {
            return;
        }
        let (judged, _) = metrics.first_records.counts();
        if judged < FirstRecords::SIZE && !input_ended {
            return;
        }
        let alarm = RejectionAlarm::first_records(&metrics.first_records, input_ended, self.pipeline);
        if let Some(alarm) = &alarm {
            eprintln!("recflow: warning: {alarm}");
        }
        self.verdict = Some(alarm);
    }

    fn raised(&self) -> Option<&RejectionAlarm> {
        self.verdict.as_ref().and_then(Option::as_ref)
    }
}

/// The one-line status on standard error.
struct Status {
    enabled: bool,
    interval: Duration,
    unit: u64,
    started: Instant,
    last: Instant,
    last_records: u64,
}

impl Status {
    fn new(enabled: bool, interval: Duration, unit: u64) -> Status {
        let now = Instant::now();
        Status { enabled, interval, unit, started: now, last: now, last_records: 0 }
    }

    fn maybe_print(&mut self, metrics: &Metrics, alarm: Option<&RejectionAlarm>) {
        if !self.enabled || self.last.elapsed() < self.interval {
            return;
        }
        let snapshot = metrics.snapshot();
        let rate = (snapshot.records_in - self.last_records) as f64 / self.last.elapsed().as_secs_f64();
        self.last = Instant::now();
        self.last_records = snapshot.records_in;
        let lag = metrics.consumer_lag();
        let lag = if lag.is_empty() {
            String::new()
        } else {
            let parts: Vec<String> = lag.iter().map(|(p, l)| format!("p{p}={l}")).collect();
            format!(", consumer lag {}", parts.join(" "))
        };
        let checkpoint = metrics.last_checkpoint().map_or_else(String::new, |c| {
            let age = wall_clock_ms().saturating_sub(c.completed_ms) as f64 / 1e3;
            let pause = metrics.last_checkpoint_pause().filter(|p| p.id == c.id).map_or_else(String::new, |p| {
                format!(
                    ", reading paused {:.2}s, {:.2}s of it taking the state",
                    p.paused_us as f64 / 1e6,
                    p.taking_us as f64 / 1e6
                )
            });
            format!(
                ", checkpoint {} {age:.0}s ago ({:.0} MB, written in {:.1}s{pause})",
                c.id,
                c.bytes as f64 / 1e6,
                c.write_ms as f64 / 1e3
            )
        });
        eprintln!(
            "recflow: {} records ({:.0}/s), watermark {}, late {}, rejected {}, {} in flight, {} output records, memory {} MiB{lag}{checkpoint}{}",
            snapshot.records_in,
            rate,
            snapshot.watermark / self.unit,
            snapshot.late,
            snapshot.invalid,
            snapshot.in_flight,
            metrics.output_records.load(Ordering::Relaxed),
            Memory::now().resident_bytes.map_or_else(|| "?".to_string(), |b| (b >> 20).to_string()),
            warning(alarm),
        );
    }

    fn finish(&self, metrics: &Metrics, alarm: Option<&RejectionAlarm>) {
        if !self.enabled {
            return;
        }
        let snapshot = metrics.snapshot();
        let secs = self.started.elapsed().as_secs_f64();
        eprintln!(
            "recflow: done: {} records in {:.2}s ({:.0}/s): {} accepted, {} late, {} rejected; {} output records{}",
            snapshot.records_in,
            secs,
            snapshot.records_in as f64 / secs.max(1e-9),
            snapshot.accepted,
            snapshot.late,
            snapshot.invalid,
            snapshot.output_records,
            warning(alarm),
        );
    }
}

/// The status line's note of a raised alarm.
fn warning(alarm: Option<&RejectionAlarm>) -> String {
    alarm.map_or_else(String::new, |alarm| format!("; WARNING: {}", alarm.short()))
}
