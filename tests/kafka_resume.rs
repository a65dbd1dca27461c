//! A Kafka source resumes where a checkpoint left it: reading some records, taking the source's
//! resume point and opening a new source at it reads exactly the records a source reading straight
//! through reads after them, with the same partitions, offsets and dead letters; also when another
//! number of workers reads the topic after the resume than before it.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::kafka::{unique_topic, Broker};
use common::scratch_dir;
use recflow::cli::produce::{produce, ProduceFormat, ProduceOptions};
use recflow::event::DeadLetter;
use recflow::metrics::Metrics;
use recflow::source::{EventSource, KafkaResume, KafkaSource, Poll, ResumePoint};
use recflow::spec::kafka_address::KafkaAddress;
use recflow::spec::{Format, SourceSpec, StartFrom};
use recflow::Event;

const PARTITIONS: usize = 3;

/// Produces `count` JSON events numbered from `from`, with a malformed record after the third.
fn produce_events(broker: &Broker, topic: &str, from: u64, count: u64) {
    let dir = scratch_dir("resume-input");
    let file = dir.join("events.jsonl");
    let mut lines: Vec<String> = (from..from + count)
        .map(|i| format!(r#"{{"user":{},"item":{},"action":"view","ts":{}}}"#, i % 13, i % 7, 1_700_000_000 + i))
        .collect();
    lines.insert(3.min(lines.len()), "not an event".into());
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let layout = SourceSpec { format: Format::Jsonl, ..SourceSpec::default() };
    let options = ProduceOptions {
        to: KafkaAddress::parse(&broker.address(topic)).unwrap(),
        partitions: PARTITIONS,
        rate: None,
        format: ProduceFormat::Raw,
        progress: false,
    };
    assert_eq!(produce(&file, &layout, &options).unwrap().delivered, count + 1);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A bounded JSON source on `topic`, starting at `start` where no resume point says otherwise.
fn source_spec(broker: &Broker, topic: &str, start: StartFrom) -> SourceSpec {
    let mut source = SourceSpec { format: Format::Jsonl, ..SourceSpec::default() };
    source.read_topic(broker.brokers(), topic.to_string());
    source.kafka.group = unique_topic("group");
    source.kafka.start = start;
    source.kafka.bounded = true;
    source
}

fn open(source: &SourceSpec, worker: usize, workers: usize, resume: &KafkaResume) -> KafkaSource {
    KafkaSource::open_at(source, &source.kafka, PARTITIONS, worker, workers, Arc::new(Metrics::default()), resume)
        .expect("the source opens")
}

/// What a record became: an event, or the dead letter for it.
type Decoded = Result<Event, DeadLetter>;

/// A record as read, whichever worker read it: its partition and offset, and what it became.
type Record = (i32, i64, Decoded);

/// Reads up to `at_most` records from `source`, fewer only when it is done.
fn take(source: &mut KafkaSource, at_most: usize) -> Vec<Record> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut arrivals = Vec::new();
    while arrivals.len() < at_most {
        match source.poll(at_most - arrivals.len(), &mut arrivals) {
            Poll::Done => break,
            Poll::Ready => {}
            Poll::Idle => std::thread::sleep(Duration::from_millis(5)),
        }
        assert!(Instant::now() < deadline, "only {} of {at_most} records arrived within 60 s", arrivals.len());
    }
    arrivals
        .into_iter()
        .map(|(at, record)| {
            let origin = source.origin(at);
            let (partition, offset) = origin.rsplit_once('/').unwrap().1.split_once(':').unwrap();
            (partition.parse().unwrap(), offset.parse().unwrap(), record)
        })
        .collect()
}

fn take_all(source: &mut KafkaSource) -> Vec<Record> {
    take(source, usize::MAX)
}

/// The source's resume point, as a checkpoint would store and load it.
fn stored_resume_point(source: &KafkaSource) -> KafkaResume {
    let Some(ResumePoint::Kafka(point)) = source.resume_point() else { panic!("a Kafka source can resume") };
    serde_json::from_str(&serde_json::to_string(&point).unwrap()).unwrap()
}

/// Each partition's records in the order read.
fn by_partition(records: Vec<Record>) -> BTreeMap<i32, Vec<(i64, Decoded)>> {
    let mut partitions: BTreeMap<i32, Vec<_>> = BTreeMap::new();
    for (partition, offset, record) in records {
        partitions.entry(partition).or_default().push((offset, record));
    }
    partitions
}

#[test]
fn a_resumed_source_reads_on_as_if_never_stopped_on_any_number_of_workers() {
    let broker = Broker::start();
    let topic = broker.create_topic("resume", PARTITIONS);
    produce_events(&broker, &topic, 0, 90);
    let spec = source_spec(&broker, &topic, StartFrom::Earliest);
    let straight = take_all(&mut open(&spec, 0, 1, &KafkaResume::default()));
    assert_eq!(straight.len(), 91);
    assert_eq!(straight.iter().filter(|(_, _, record)| record.is_err()).count(), 1, "the malformed record");
    let straight = by_partition(straight);
    assert_eq!(straight.len(), PARTITIONS, "every partition holds records");

    for split in [0, 1, 40, 90, 91] {
        let mut first = open(&spec, 0, 1, &KafkaResume::default());
        let mut records = take(&mut first, split);
        assert_eq!(records.len(), split);
        let point = stored_resume_point(&first);
        assert_eq!(point.next_offsets.len(), PARTITIONS, "every partition read is named: {point:?}");
        drop(first);
        records.extend(take_all(&mut open(&spec, 0, 1, &point)));
        assert_eq!(by_partition(records), straight, "resumed after {split} records");
    }

    // Two workers read some records each; one worker reads on from their joined points.
    let (mut even, mut odd) = (open(&spec, 0, 2, &KafkaResume::default()), open(&spec, 1, 2, &KafkaResume::default()));
    let mut records = take(&mut even, 25);
    records.extend(take(&mut odd, 10));
    let mut point = stored_resume_point(&even);
    point.next_offsets.extend(stored_resume_point(&odd).next_offsets);
    drop((even, odd));
    records.extend(take_all(&mut open(&spec, 0, 1, &point)));
    assert_eq!(by_partition(records), straight, "read by two workers, resumed on one");

    // And one worker's point resumed on two.
    let mut one = open(&spec, 0, 1, &KafkaResume::default());
    let mut records = take(&mut one, 30);
    let point = stored_resume_point(&one);
    drop(one);
    records.extend(take_all(&mut open(&spec, 0, 2, &point)));
    records.extend(take_all(&mut open(&spec, 1, 2, &point)));
    assert_eq!(by_partition(records), straight, "read by one worker, resumed on two");
}

#[test]
fn partitions_start_at_their_resume_offsets_or_as_configured() {
    let broker = Broker::start();
    let topic = broker.create_topic("resume-start", PARTITIONS);
    produce_events(&broker, &topic, 0, 60);

    // Reading from the end, a source that read nothing still names each partition's end: events
    // produced after the resume point are read on resume, wherever the end is by then.
    let latest = source_spec(&broker, &topic, StartFrom::Latest);
    let mut first = open(&latest, 0, 1, &KafkaResume::default());
    assert!(take_all(&mut first).is_empty());
    let point = stored_resume_point(&first);
    let ends: BTreeMap<i32, i64> = (0..PARTITIONS as i32).map(|p| (p, broker.high_watermark(&topic, p))).collect();
    assert_eq!(point.next_offsets, ends);
    drop(first);
    produce_events(&broker, &topic, 1_000, 45);
    let after_the_point =
        by_partition(take_all(&mut open(&source_spec(&broker, &topic, StartFrom::Earliest), 0, 1, &point)));
    let resumed = by_partition(take_all(&mut open(&latest, 0, 1, &point)));
    assert_eq!(resumed.values().map(Vec::len).sum::<usize>(), 46, "the events produced after the point");
    assert_eq!(resumed, after_the_point);

    // A partition the point does not name starts as configured: here at its beginning.
    let earliest = source_spec(&broker, &topic, StartFrom::Earliest);
    let only_partition_0 = KafkaResume { next_offsets: BTreeMap::from([(0, ends[&0])]) };
    let records = by_partition(take_all(&mut open(&earliest, 0, 1, &only_partition_0)));
    let straight = by_partition(take_all(&mut open(&earliest, 0, 1, &KafkaResume::default())));
    let partition_0 = |records: &BTreeMap<i32, Vec<_>>| records.get(&0).map_or(Vec::new(), Vec::clone);
    assert_eq!(partition_0(&records), partition_0(&straight)[ends[&0] as usize..], "partition 0 from the point");
    for partition in 1..PARTITIONS as i32 {
        assert_eq!(records.get(&partition), straight.get(&partition), "partition {partition} from its beginning");
    }

    // A point naming a partition the topic does not have is not this topic's.
    let foreign = KafkaResume { next_offsets: BTreeMap::from([(PARTITIONS as i32, 5)]) };
    let Err(error) =
        KafkaSource::open_at(&earliest, &earliest.kafka, PARTITIONS, 0, 1, Arc::new(Metrics::default()), &foreign)
    else {
        panic!("a point naming partition {PARTITIONS} of a {PARTITIONS}-partition topic is refused")
    };
    assert!(error.to_string().contains("names partition 3"), "{error}");
}
