//! The dashboard at `/`, in a real browser: headless Chromium (Debian's `chromium`, which
//! `scripts/test.sh` installs when missing) loads the page from a running demo pipeline, and the
//! test reads the page's DOM over the DevTools protocol until live values have arrived: events/s
//! above zero, the charts drawn, the latest hot-items window (the one `/v1/hot-items` serves) and a
//! looked-up user's explained list (the one `/v1/users/{user}/recommendations` serves). The demo
//! runs with a bearer token configured: the page only reads, so it must work regardless. Fed from
//! Kafka (a Tansu broker the test starts), the page shows every partition's consumer lag.
//!
//! Chromium is driven over `--remote-debugging-pipe` (JSON messages ending in NUL on file
//! descriptors 3 and 4, mapped to the child's pipes by `sh`), so no WebSocket client is needed.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use common::kafka::Broker;
use common::serve::{get, Running};
use common::{recflow, run_ok, scratch_dir};
use serde_json::{json, Value};

/// How long any one condition may take to hold.
const DEADLINE: Duration = Duration::from_secs(60);

/// The Chromium to run: `$CHROMIUM`, else the first of Debian's and others' names on `PATH`.
fn chromium() -> PathBuf {
    if let Some(path) = std::env::var_os("CHROMIUM") {
        return PathBuf::from(path);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        if let Some(found) = std::env::split_paths(&path).map(|dir| dir.join(name)).find(|p| p.is_file()) {
            return found;
        }
    }
    panic!(
        "tests/dashboard.rs needs Chromium and found none on PATH (chromium, chromium-browser, google-chrome): \
         scripts/test.sh installs Debian's package (apt-get install -y chromium), or set CHROMIUM=/path/to/it"
    );
}

/// The flags every headless Chromium of the tests gets: no sandbox (CI runs as root), and nothing
/// that reaches for the network by itself (it stalls on a closed network).
pub const HEADLESS: [&str; 9] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
];

/// A headless Chromium driven over the DevTools protocol; killed when dropped.
struct Browser {
    child: Child,
    commands: ChildStdin,
    replies: Receiver<Value>,
    next_id: u64,
    profile: PathBuf,
}

impl Browser {
    fn launch() -> Browser {
        let profile = scratch_dir("chromium-profile");
        let mut child = Command::new("sh")
            .arg("-c")
            // Chromium reads commands from fd 3 and writes replies to fd 4.
            .arg(r#"exec "$0" "$@" 3<&0 4>&1 </dev/null >/dev/null"#)
            .arg(chromium())
            .args(HEADLESS)
            .arg("--remote-debugging-pipe")
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("--window-size=1280,1400")
            .arg("about:blank")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("sh starts Chromium");
        let commands = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, replies) = channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut message = Vec::new();
            while reader.read_until(0, &mut message).is_ok_and(|n| n > 0) {
                message.pop_if(|b| *b == 0);
                if let Ok(value) = serde_json::from_slice::<Value>(&message) {
                    if tx.send(value).is_err() {
                        return;
                    }
                }
                message.clear();
            }
        });
        Browser { child, commands, replies, next_id: 1, profile }
    }

    /// Sends a DevTools command (to a page's session, if given) and waits for its result.
    fn call(&mut self, method: &str, params: Value, session: Option<&str>) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        let mut bytes = serde_json::to_vec(&message).unwrap();
        bytes.push(0);
        self.commands.write_all(&bytes).and_then(|()| self.commands.flush()).expect("Chromium takes commands");
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let reply = self.replies.recv_timeout(left).unwrap_or_else(|_| {
                panic!("Chromium did not answer {method} within {} s (did it start?)", DEADLINE.as_secs())
            });
            if reply["id"] == id {
                assert!(reply.get("error").is_none(), "{method} failed: {reply}");
                return reply["result"].clone();
            }
        }
    }

    /// Opens `url` in a new tab; the session to talk to it.
    fn open(&mut self, url: &str) -> String {
        let target = self.call("Target.createTarget", json!({ "url": url }), None);
        let attached =
            self.call("Target.attachToTarget", json!({ "targetId": target["targetId"], "flatten": true }), None);
        attached["sessionId"].as_str().expect("a session id").to_string()
    }

    /// The value of a JavaScript expression in the page.
    fn eval(&mut self, session: &str, expression: &str) -> Value {
        let result =
            self.call("Runtime.evaluate", json!({ "expression": expression, "returnByValue": true }), Some(session));
        assert!(result.get("exceptionDetails").is_none(), "`{expression}` threw: {result}");
        result["result"]["value"].clone()
    }

    /// Evaluates `expression` until `holds` says its value will do, failing after [`DEADLINE`]
    /// with `what` and the last value; returns that value.
    fn eval_until(&mut self, session: &str, what: &str, expression: &str, holds: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let value = self.eval(session, expression);
            if holds(&value) {
                return value;
            }
            assert!(Instant::now() < deadline, "{what}: not within {} s; the page shows {value}", DEADLINE.as_secs());
            std::thread::park_timeout(Duration::from_millis(200));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// The demo pipeline with a bearer token required for posts, written under `dir`.
/// The demo's read token: the page is opened with it in its fragment.
const READER: &str = "R3ADER";

fn demo_with_token(dir: &Path) -> PathBuf {
    let demo = std::fs::read_to_string("pipelines/demo.toml").expect("pipelines/demo.toml");
    let path = dir.join("demo.toml");
    std::fs::write(&path, format!("{demo}\n[serve]\ntoken = \"SECRET\"\nread_token = \"{READER}\"\n")).unwrap();
    path
}

/// The item ids of the rows of the table body `id`, as the page shows them.
fn rows(id: &str) -> String {
    format!("[...document.querySelectorAll('#{id} tr[data-item]')].map(r => r.dataset.item)")
}

fn ids(list: &Value) -> Vec<String> {
    list.as_array().unwrap().iter().map(|i| i["item"].to_string()).collect()
}

#[test]
fn the_dashboard_shows_live_figures_hot_items_and_a_users_list_in_chromium() {
    let dir = scratch_dir("dashboard");
    let run = Running::start(&demo_with_token(&dir), &["--serve", "127.0.0.1:0", "--output", "/dev/null", "-q"], &[]);
    let mut browser = Browser::launch();
    let page = browser.open(&run.url(&format!("/#user=5&token={READER}")));
    browser.eval_until(&page, "the dashboard loads", "document.readyState + ' ' + document.title", |v| {
        v == "complete recflow dashboard"
    });

    let rate = browser.eval_until(
        &page,
        "events/s above zero",
        "document.getElementById('events-per-s').dataset.value",
        |v| v.as_str().and_then(|s| s.parse::<f64>().ok()).is_some_and(|rate| rate > 0.0),
    );
    eprintln!("the page shows {rate} events/s");
    for id in ["records-read", "accepted", "memory", "uptime"] {
        let shown = browser.eval(&page, &format!("Number(document.getElementById('{id}').dataset.value)"));
        assert!(shown.as_f64().is_some_and(|v| v > 0.0), "#{id} shows a live figure: {shown}");
    }
    browser.eval_until(
        &page,
        "the throughput chart drawn",
        "Number(document.getElementById('chart-throughput').dataset.points)",
        |v| v.as_u64().is_some_and(|n| n > 0),
    );

    // The latest window the page shows is one the server serves, with the same items.
    let shown = browser.eval_until(
        &page,
        "a hot-items row",
        &format!("({{end: document.getElementById('hot-items').dataset.windowEnd, items: {}}})", rows("hot-items")),
        |v| v["items"].as_array().is_some_and(|items| !items.is_empty()),
    );
    let end = shown["end"].as_str().unwrap();
    let (status, window) = get(&run.url(&format!("/v1/hot-items?window_end={end}&access_token={READER}")));
    assert_eq!(status, 200, "the window the page shows is served: {window}");
    let served: Vec<String> = window["lists"].as_array().unwrap().iter().flat_map(|l| ids(&l["items"])).collect();
    assert_eq!(shown["items"].as_array().unwrap().iter().map(|i| i.as_str().unwrap()).collect::<Vec<_>>(), served);

    // User 5's list, with its explanations, is the one the server serves (it may change between
    // the two reads: wait until they agree).
    let deadline = Instant::now() + DEADLINE;
    loop {
        let shown = browser.eval(&page, &rows("user-list"));
        let (status, served) = get(&run.url(&format!("/v1/users/5/recommendations?access_token={READER}")));
        let agree = status == 200
            && !ids(&served["items"]).is_empty()
            && shown.as_array().is_some_and(|shown| {
                shown.iter().map(|i| i.as_str().unwrap().to_string()).collect::<Vec<_>>() == ids(&served["items"])
            });
        if agree {
            break;
        }
        assert!(Instant::now() < deadline, "user 5's list on the page: {shown}; served: {served}");
        std::thread::park_timeout(Duration::from_millis(200));
    }
    let explained = browser.eval(&page, "document.querySelectorAll('#user-list [data-because]').length");
    let listed = browser.eval(&page, "document.querySelectorAll('#user-list tr[data-item]').length");
    assert_eq!(explained, listed, "every item of the user's list says why it is there");

    run.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_dashboard_of_a_kafka_fed_pipeline_shows_consumer_lag_per_partition() {
    let broker = Broker::start();
    let topic = broker.create_topic("dashboard", 2);
    let dir = scratch_dir("dashboard-kafka");
    let events = dir.join("events.csv");
    let pipeline = Path::new("pipelines/ecommerce.toml");
    run_ok(
        recflow().args(["gen", "pipelines/ecommerce.toml", "--events", "3000", "--unit", "s", "--output"]).arg(&events),
    );
    run_ok(recflow().args(["produce", "--input"]).arg(&events).args([
        "--to",
        &broker.address(&topic),
        "--pipeline",
        "pipelines/ecommerce.toml",
    ]));
    let input = broker.address(&topic);
    let run =
        Running::start(pipeline, &["--input", &input, "--serve", "127.0.0.1:0", "--output", "/dev/null", "-q"], &[]);
    let mut browser = Browser::launch();
    let page = browser.open(&run.url("/"));
    browser.eval_until(&page, "the dashboard loads", "document.readyState + ' ' + document.title", |v| {
        v == "complete recflow dashboard"
    });
    browser.eval_until(
        &page,
        "every record read",
        "Number(document.getElementById('records-read').dataset.value)",
        |v| v.as_u64() == Some(3000),
    );
    // Everything read is still in flight (the horizons outlast the events), so nothing is
    // committed and each partition lags by all it holds; `tests/kafka_offsets.rs` checks the
    // figures against the broker while a run commits.
    let lag = browser.eval_until(
        &page,
        "the consumer lag of both partitions",
        "[...document.querySelectorAll('#kafka-lag tr[data-partition]')].map(r => r.cells[1].textContent.replace(/,/g, ''))",
        |v| {
            v.as_array().is_some_and(|rows| {
                rows.len() == 2 && rows.iter().filter_map(|r| r.as_str()?.parse::<u64>().ok()).sum::<u64>() == 3000
            })
        },
    );
    eprintln!("the page shows consumer lag {lag}");
    let (_, status) = get(&run.url("/v1/status"));
    let partitions: Vec<&String> = status["kafka"]["consumer_lag"].as_object().expect("Kafka figures").keys().collect();
    assert_eq!(partitions, ["0", "1"], "{status}");
    run.stop();
    let _ = std::fs::remove_dir_all(&dir);
}
