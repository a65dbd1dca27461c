//! A real Kafka-compatible broker for tests: Tansu 0.6.0 with SQLite storage, started on a free
//! localhost port in a scratch directory and stopped when dropped. `./scripts/test.sh` installs
//! Tansu; set `TANSU` to use another binary.

use std::collections::BTreeMap;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use recflow::spec::kafka_address::KafkaAddress;

use super::scratch_dir;

/// A pipeline reading CSV payloads from Kafka (`--input kafka://...`), with a synthetic world
/// for `recflow gen` whose jitter stays inside the out-of-orderness, so no event is ever behind
/// the watermark and Kafka and file runs give every event the same time.
pub const CSV_PIPELINE: &str = r#"
name = "kafka-e2e"
[source]
kind = "kafka"
format = "csv"
[source.kafka]
payload = "csv"
[source.synth]
users = 1500
items = 2000
categories = 30
clusters = 6
spacing = "200ms"
jitter = "2s"
[time]
tick = "1s"
max_out_of_orderness = "5s"
[recommend]
k = 5
history = 10
short_term = { kind = "sliding", size = "30m" }
[recommend.similarity]
refresh = "60s"
[hot_items]
size = "1h"
slide = "10m"
top_n = 3
[output]
status_interval_secs = 0
"#;

/// A message read back from a topic.
#[derive(Clone, Debug)]
pub struct Received {
    /// The partition it is in.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Its key, as text.
    pub key: Option<String>,
    /// Its payload; `None` for a tombstone.
    pub payload: Option<Vec<u8>>,
    /// Its headers, as text.
    pub headers: BTreeMap<String, String>,
}

/// A running Tansu broker.
pub struct Broker {
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
    binary: PathBuf,
}

fn tansu_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("TANSU") {
        return PathBuf::from(path);
    }
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_default();
    let installed = home.join("bin").join("tansu");
    if installed.exists() {
        return installed;
    }
    PathBuf::from("tansu")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A topic name no other test uses.
pub fn unique_topic(tag: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{tag}-{}-{}-{nanos}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

impl Broker {
    /// Starts a broker and waits until it accepts connections.
    pub fn start() -> Broker {
        let mut broker = Broker { dir: scratch_dir("tansu"), port: free_port(), child: None, binary: tansu_binary() };
        broker.spawn();
        broker
    }

    fn spawn(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("broker.log")).unwrap();
        // Tansu resolves a sqlite:// path against its working directory.
        let child = Command::new(&self.binary)
            .current_dir(&self.dir)
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "sqlite://tansu.db"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start Tansu ({}): {e}. Install it with ./scripts/test.sh or \
                     `cargo install tansu --version 0.6.0 --locked --features libsql`, or set TANSU",
                    self.binary.display()
                )
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                let log = std::fs::read_to_string(self.dir.join("broker.log")).unwrap_or_default();
                panic!("Tansu exited at start ({status}): {log}");
            }
            assert!(Instant::now() < deadline, "Tansu did not accept connections within 30 s");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `kafka://127.0.0.1:PORT/TOPIC`.
    pub fn address(&self, topic: &str) -> String {
        format!("kafka://{}/{topic}", self.brokers())
    }

    /// Creates a topic with a unique name and `partitions` partitions; returns its name.
    pub fn create_topic(&self, tag: &str, partitions: usize) -> String {
        let topic = unique_topic(tag);
        self.topic_command(&["create", &topic, "--partitions", &partitions.to_string()]);
        topic
    }

    /// Deletes `topic` and creates it again, empty, with `partitions` partitions.
    pub fn create_topic_again(&self, topic: &str, partitions: usize) {
        self.topic_command(&["delete", topic]);
        self.topic_command(&["create", topic, "--partitions", &partitions.to_string()]);
    }

    /// `tansu topic` with `args`, against this broker.
    fn topic_command(&self, args: &[&str]) {
        let status = Command::new(&self.binary)
            .arg("topic")
            .args(args)
            .args(["--broker", &format!("tcp://127.0.0.1:{}", self.port)])
            .status()
            .unwrap();
        assert!(status.success(), "tansu topic {args:?} failed: {status}");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("the broker runs").id().to_string();
        let status = Command::new("kill").args([signal, &pid]).status().unwrap();
        assert!(status.success(), "kill {signal} failed");
    }

    /// Freezes the broker (SIGSTOP): connections stay open but nothing is answered.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Thaws a paused broker (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    /// Kills the broker and starts it again on the same port and storage.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Kills the broker for good (until [`Broker::restart`]).
    pub fn stop(&mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn consumer(&self) -> BaseConsumer {
        ClientConfig::new()
            .set("bootstrap.servers", self.brokers())
            .set("group.id", unique_topic("reader"))
            .set("enable.auto.commit", "false")
            .set("log_level", "3")
            .create()
            .unwrap()
    }

    /// The number of messages `topic` has ever received: the sum of its partitions' end offsets.
    pub fn end_offsets(&self, topic: &str) -> i64 {
        self.try_end_offsets(topic).unwrap()
    }

    /// [`Broker::end_offsets`], or the error of a broker that did not answer (a busy machine can
    /// make one request fail).
    pub fn try_end_offsets(&self, topic: &str) -> Result<i64, rdkafka::error::KafkaError> {
        let consumer = self.consumer();
        let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(30))?;
        let mut sum = 0;
        for p in 0..metadata.topics()[0].partitions().len() as i32 {
            sum += consumer.fetch_watermarks(topic, p, Duration::from_secs(30))?.1;
        }
        Ok(sum)
    }

    /// Waits until `topic` holds at least one message while `run` goes on: the run is
    /// mid-stream. A request the broker does not answer is asked again.
    pub fn wait_for_output(&self, topic: &str, run: &mut std::process::Child) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            match self.try_end_offsets(topic) {
                Ok(written) if written > 0 => return,
                Ok(_) => {}
                Err(e) => eprintln!("asking the broker for {topic}'s offsets failed ({e}); asking again"),
            }
            assert!(run.try_wait().unwrap().is_none(), "the run ended before writing anything");
            assert!(Instant::now() < deadline, "no output within 120 s; broker log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The end offset of one partition.
    pub fn high_watermark(&self, topic: &str, partition: i32) -> i64 {
        self.consumer().fetch_watermarks(topic, partition, Duration::from_secs(30)).unwrap().1
    }

    /// The offset `group` has committed on each of `topic`'s first `partitions` partitions, if any.
    pub fn committed(&self, topic: &str, partitions: i32, group: &str) -> Vec<Option<i64>> {
        let consumer: BaseConsumer =
            ClientConfig::new().set("bootstrap.servers", self.brokers()).set("group.id", group).create().unwrap();
        let mut list = TopicPartitionList::new();
        for partition in 0..partitions {
            list.add_partition(topic, partition);
        }
        let offsets = consumer.committed_offsets(list, Duration::from_secs(30)).unwrap();
        offsets
            .elements()
            .iter()
            .map(|e| match e.offset() {
                Offset::Offset(n) => Some(n),
                _ => None,
            })
            .collect()
    }

    /// Every message of `topic` up to its current end, in partition and offset order.
    pub fn read_topic(&self, topic: &str) -> Vec<Received> {
        let address = KafkaAddress { brokers: self.brokers(), topic: topic.to_string() };
        let mut received: Vec<Received> = recflow::kafka::read_to_end(&address)
            .unwrap_or_else(|e| panic!("reading {topic}: {e}"))
            .into_iter()
            .map(|message| Received {
                partition: message.partition(),
                offset: message.offset(),
                key: message.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                payload: message.payload().map(<[u8]>::to_vec),
                headers: message
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| {
                                (h.key.to_string(), String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned())
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            })
            .collect();
        received.sort_by_key(|m| (m.partition, m.offset));
        received
    }

    /// The broker's log so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("broker.log")).unwrap_or_default()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            // A paused broker must be thawed to die cleanly.
            let _ = Command::new("kill").args(["-CONT", &child.id().to_string()]).status();
        }
        self.kill();
        if std::thread::panicking() {
            eprintln!("the broker's log and storage are kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The last value of every key on a results topic, keyed like [`super::final_by_key`]; a
/// tombstone leaves an empty list.
pub fn final_from_topic(messages: &[Received]) -> BTreeMap<String, serde_json::Value> {
    let mut last = BTreeMap::new();
    for message in messages {
        match &message.payload {
            Some(payload) => {
                let record: serde_json::Value = serde_json::from_slice(payload).expect("results are JSON");
                last.insert(super::result_key(&record), record["items"].clone());
            }
            None => {
                let user = message.key.clone().expect("tombstones have a key");
                last.insert(format!("recs/{user}"), serde_json::Value::Array(Vec::new()));
            }
        }
    }
    last
}
