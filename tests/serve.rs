//! Serving (`[serve]`, `--serve`): point queries equal the changelog's last record per key, a
//! subscriber gets a snapshot and then live changes (including those of posted events), the
//! mutating endpoint checks its token and body size, and a client that falls behind is told so
//! and disconnected instead of holding anything back.

mod common;

use std::collections::BTreeMap;
use std::io::BufRead;
use std::process::{Child, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{parse_lines, recflow, scratch_dir};
use serde_json::{json, Value};

/// A `recflow run` with a server, stopped (SIGTERM) when dropped.
struct Running {
    child: Child,
    base: String,
}

impl Running {
    /// Starts `recflow run PIPELINE ARGS` with `env` and waits for the address it serves on.
    fn start(pipeline: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Running {
        let mut child = recflow()
            .envs(env.iter().copied())
            .arg("run")
            .arg(pipeline)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("recflow starts");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("recflow: serving on ") {
                    let _ = tx.send(addr.to_string());
                }
                eprintln!("[recflow] {line}");
            }
        });
        let base = rx.recv_timeout(Duration::from_secs(60)).expect("the server announces its address within 60 s");
        Running { child, base }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends SIGTERM and waits (with a deadline) for a successful exit.
    fn stop(mut self) {
        let pid = self.child.id().to_string();
        assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "recflow exits cleanly on SIGTERM: {status}");
                return;
            }
            assert!(Instant::now() < deadline, "recflow did not stop within 30 s of SIGTERM");
            std::thread::park_timeout(Duration::from_millis(20));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new().timeout_connect(Duration::from_secs(10)).timeout_read(Duration::from_secs(30)).build()
}

/// The status and body of a request's answer, whatever the status.
fn reply(result: Result<ureq::Response, ureq::Error>) -> (u16, String) {
    match result {
        Ok(response) => (response.status(), response.into_string().unwrap_or_default()),
        Err(ureq::Error::Status(code, response)) => (code, response.into_string().unwrap_or_default()),
        Err(e) => panic!("request failed: {e}"),
    }
}

fn get(url: &str) -> (u16, Value) {
    let (status, body) = reply(agent().get(url).call());
    (status, serde_json::from_str(&body).unwrap_or(Value::String(body)))
}

/// Polls `check` until it holds, failing after `secs` seconds with `what`.
fn wait_for(secs: u64, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check() {
        assert!(Instant::now() < deadline, "{what}: not within {secs} s");
        std::thread::park_timeout(Duration::from_millis(50));
    }
}

/// Subscribes to `url`; its Server-Sent Events arrive as (event, data) on the receiver.
fn subscribe(url: &str) -> Receiver<(String, Value)> {
    let response = agent().get(url).call().expect("the subscription opens");
    assert_eq!(response.header("content-type"), Some("text/event-stream"));
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        let mut event = String::new();
        for line in std::io::BufReader::new(response.into_reader()).lines().map_while(Result::ok) {
            if let Some(name) = line.strip_prefix("event: ") {
                event = name.to_string();
            } else if let Some(data) = line.strip_prefix("data: ") {
                let data = serde_json::from_str(data).unwrap_or(Value::Null);
                if tx.send((std::mem::take(&mut event), data)).is_err() {
                    return;
                }
            }
        }
    });
    rx
}

/// Receives events until `done` says so, failing after `secs` seconds; returns them all.
fn receive_until(
    rx: &Receiver<(String, Value)>,
    secs: u64,
    what: &str,
    mut done: impl FnMut(&[(String, Value)]) -> bool,
) -> Vec<(String, Value)> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut seen = Vec::new();
    while !done(&seen) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(event) => seen.push(event),
            Err(_) => panic!("{what}: not within {secs} s; got {} events: {:?}", seen.len(), seen.last()),
        }
    }
    seen
}

#[test]
fn a_finite_run_serves_the_last_changelog_record_of_every_key() {
    let dir = scratch_dir("serve-finite");
    let pipeline = dir.join("pipeline.toml");
    std::fs::write(
        &pipeline,
        format!("{}\n[serve]\naddr = \"127.0.0.1:0\"\nlinger = \"forever\"\n", common::SMALL_WORLD),
    )
    .unwrap();
    let changelog = dir.join("changelog.jsonl");
    let run = Running::start(&pipeline, &["--max-events", "3000", "-q", "--output", changelog.to_str().unwrap()], &[]);
    wait_for(120, "the input ends", || get(&run.url("/healthz")).1["input_ended"] == true);

    let records = parse_lines(&std::fs::read_to_string(&changelog).unwrap());
    let mut last_recs: BTreeMap<String, &Value> = BTreeMap::new();
    for record in records.iter().filter(|r| r["type"] == "recs") {
        last_recs.insert(record["user"].to_string(), record);
    }
    assert!(last_recs.len() > 50, "the run produced lists for many users");
    let as_of = get(&run.url("/healthz")).1["as_of"].as_u64().expect("as_of is known at the end");
    for (user, record) in &last_recs {
        let (status, answer) = get(&run.url(&format!("/v1/users/{user}/recommendations")));
        if record["items"].as_array().unwrap().is_empty() {
            assert_eq!(status, 404, "user {user} has no list any more: {answer}");
            continue;
        }
        assert_eq!(status, 200, "user {user}: {answer}");
        assert_eq!(answer["items"], record["items"], "user {user}: the point query equals the last changelog record");
        assert_eq!(answer["time"], record["time"]);
        assert_eq!(answer["as_of"], as_of);
        assert!(answer["time"].as_u64().unwrap() <= as_of);
    }
    let (user, record) = last_recs.iter().find(|(_, r)| r["items"].as_array().unwrap().len() >= 3).unwrap();
    let (status, top2) = get(&run.url(&format!("/v1/users/{user}/recommendations?k=2")));
    assert_eq!(status, 200);
    assert_eq!(top2["items"].as_array().unwrap()[..], record["items"].as_array().unwrap()[..2]);
    assert_eq!(get(&run.url("/v1/users/nobody-at-all/recommendations")).0, 404);
    assert_eq!(get(&run.url(&format!("/v1/users/{user}/recommendations?k=0"))).0, 400);
    assert_eq!(get(&run.url(&format!("/v1/users/{user}/recommendations?explain=true"))).0, 400);

    let hot = common::final_hot_items(&records);
    let latest = hot.keys().map(|(end, _)| *end).filter(|end| !hot[&(*end, String::new())].is_empty()).max().unwrap();
    let (status, answer) = get(&run.url("/v1/hot-items"));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["window_end"], latest);
    for ((end, _), list) in hot.iter().filter(|(_, list)| !list.is_empty()) {
        let (status, answer) = get(&run.url(&format!("/v1/hot-items?window_end={end}")));
        assert_eq!(status, 200, "window {end}: {answer}");
        let served: Vec<(Value, i64)> = answer["lists"][0]["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["item"].clone(), e["count"].as_i64().unwrap()))
            .collect();
        assert_eq!(&served, list, "window {end}");
    }
    assert_eq!(get(&run.url("/v1/hot-items?window_end=12345")).0, 404);

    let (status, metrics) = reply(agent().get(&run.url("/metrics")).call());
    assert_eq!(status, 200);
    assert!(metrics.contains("recflow_events_in_total 3000"), "{metrics}");
    assert!(metrics.contains("recflow_kafka_delivery_retries_total 0"), "{metrics}");
    assert!(
        metrics.contains(&format!(
            "recflow_served_users {}",
            last_recs.values().filter(|r| !r["items"].as_array().unwrap().is_empty()).count()
        )),
        "{metrics}"
    );
    // The input has ended: nothing would read a posted event.
    let (status, body) =
        reply(agent().post(&run.url("/v1/events")).send_string(r#"{"user":1,"item":2,"action":"view"}"#));
    assert_eq!(status, 409, "{body}");
    run.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_subscriber_sees_a_snapshot_then_changes_including_posted_events() {
    let dir = scratch_dir("serve-live");
    let pipeline = dir.join("pipeline.toml");
    std::fs::write(
        &pipeline,
        format!(
            "{}\n[serve]\naddr = \"127.0.0.1:0\"\ntoken_env = \"RECFLOW_TEST_TOKEN\"\nmax_body_bytes = 2048\nprogress_interval = \"200ms\"\n",
            common::SMALL_WORLD.replace("clusters = 5", "clusters = 5\nrate = 2000")
        ),
    )
    .unwrap();
    let run = Running::start(&pipeline, &["-q", "--output", "/dev/null"], &[("RECFLOW_TEST_TOKEN", "s3cret")]);
    assert_eq!(get(&run.url("/healthz")).0, 200);

    // Everyone's lists: the snapshot comes first, then progress and changes.
    let all = subscribe(&run.url("/v1/subscribe"));
    let events = receive_until(&all, 60, "a change after the snapshot", |seen| seen.iter().any(|(e, _)| e == "change"));
    let first_other = events.iter().position(|(e, _)| e != "snapshot").unwrap();
    assert!(events[first_other..].iter().all(|(e, _)| e != "snapshot"), "snapshot events come first");
    let progress = receive_until(&all, 30, "a progress event", |seen| seen.iter().any(|(e, _)| e == "progress"));
    let as_of = progress.iter().find(|(e, _)| e == "progress").unwrap().1["as_of"].as_u64().unwrap();
    assert!(as_of > 0);
    let (_, metrics) = reply(agent().get(&run.url("/metrics")).call());
    assert!(metrics.contains("recflow_subscribers 1"), "{metrics}");
    drop(all);

    // The mutating endpoint: token, body size, validation.
    let post = || agent().post(&run.url("/v1/events"));
    let event = r#"{"user":"posted-user","item":7,"action":"view"}"#;
    assert_eq!(reply(post().send_string(event)).0, 401, "no token");
    assert_eq!(reply(post().set("Authorization", "Bearer wrong").send_string(event)).0, 401, "a wrong token");
    let authorised = || post().set("Authorization", "Bearer s3cret");
    let (status, body) = reply(authorised().send_string(&format!("{event}\n").repeat(100)));
    assert_eq!(status, 413, "a body over max_body_bytes: {body}");
    let (status, body) = reply(
        authorised()
            .send_string("{\"user\":1,\"item\":2,\"action\":\"view\"}\n{oops\n{\"user\":1,\"action\":\"view\"}\n"),
    );
    assert_eq!(status, 400, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["accepted"], 1, "the good line still counts: {body}");
    assert_eq!(body["rejected"][0]["line"], 2);
    assert_eq!(body["rejected"][0]["reason"], "malformed");
    assert_eq!(body["rejected"][1]["line"], 3);
    assert_eq!(body["rejected"][1]["reason"], "missing_field");

    // A posted event (without ts: it gets the current event time) reaches a subscriber.
    let mine = subscribe(&run.url("/v1/subscribe?users=posted-user"));
    receive_until(&mine, 30, "the first progress event", |seen| seen.iter().any(|(e, _)| e == "progress"));
    let (status, body) = reply(authorised().send_string(event));
    assert_eq!(status, 200, "{body}");
    let events = receive_until(&mine, 60, "the posted user's list", |seen| seen.iter().any(|(e, _)| e == "change"));
    let (_, change) = events.iter().find(|(e, _)| e == "change").unwrap();
    assert_eq!(change["user"], "posted-user");
    assert!(!change["items"].as_array().unwrap().is_empty());
    assert!(events.iter().all(|(e, d)| e != "change" || d["user"] == "posted-user"), "only the user asked for");
    wait_for(30, "the point query shows the posted user's list", || {
        get(&run.url("/v1/users/posted-user/recommendations")).0 == 200
    });
    drop(mine);
    run.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_subscriber_that_falls_behind_is_told_and_disconnected() {
    use recflow::serve::{Feed, Posting, Server};
    use recflow::sink::changelog::{ChangeRecord, ScoredItem};

    let pipeline = recflow::Pipeline::from_toml(common::SMALL_WORLD, "world.toml").unwrap();
    let spec = recflow::spec::ServeSpec { addr: "127.0.0.1:0".into(), client_buffer: 4, ..Default::default() };
    let metrics = Arc::new(recflow::metrics::Metrics::default());
    let server = Server::start(&spec, &pipeline, metrics, Posting::Unsupported("not in this test")).unwrap();
    let base = format!("http://{}", server.addr());
    let response = agent().get(&format!("{base}/v1/subscribe")).call().unwrap();
    wait_for(10, "the subscriber is counted", || server.subscribers() == 1);
    // Far more than the socket buffers and the ring hold, while the client reads nothing.
    let items: Vec<ScoredItem> =
        (0..4_000).map(|i| ScoredItem { item: recflow::Id::Num(i), score: 1.5, fallback: false }).collect();
    let feed = server.feed();
    for time in 0..300 {
        let record = ChangeRecord::Recs { user: recflow::Id::Num(time), time: time as u64, items: items.clone() };
        feed.send(Feed::Changes(vec![record])).unwrap();
    }
    let mut events = Vec::new();
    for line in std::io::BufReader::new(response.into_reader()).lines().map_while(Result::ok) {
        if let Some(event) = line.strip_prefix("event: ") {
            events.push(event.to_string());
        }
    }
    assert_eq!(events.last().map(String::as_str), Some("lagged"), "the stream ends with `lagged`");
    assert!(events.len() < 300, "changes were skipped, not buffered: {}", events.len());
    wait_for(10, "the subscriber is gone", || server.subscribers() == 0);
    assert_eq!(json!(server.subscribers()), json!(0));
}

#[test]
fn two_processes_serve_the_answers_of_a_single_process_run() {
    let dir = scratch_dir("serve-2proc");
    let pipeline = dir.join("pipeline.toml");
    std::fs::write(
        &pipeline,
        format!("{}\n[serve]\naddr = \"127.0.0.1:0\"\nlinger = \"forever\"\n", common::SMALL_WORLD),
    )
    .unwrap();
    let single = dir.join("single.jsonl");
    let mut alone = recflow();
    alone.arg("run").arg(&pipeline).args(["--max-events", "3000", "-q", "--serve-linger", "0s", "--output"]);
    common::run_ok(alone.arg(&single));

    let ports = common::free_ports(2);
    let hostfile = dir.join("hosts.txt");
    std::fs::write(&hostfile, format!("127.0.0.1:{}\n127.0.0.1:{}\n", ports[0], ports[1])).unwrap();
    let cluster = |p: usize| {
        let output = dir.join(format!("cluster-{p}.jsonl"));
        let hosts = hostfile.to_str().unwrap().to_string();
        let output = output.to_str().unwrap().to_string();
        let p = p.to_string();
        vec!["--max-events", "3000", "-q", "-w", "2", "-n", "2", "-h"]
            .into_iter()
            .map(String::from)
            .chain([hosts, "-p".into(), p, "--output".into(), output])
            .collect::<Vec<String>>()
    };
    let mut second = recflow()
        .arg("run")
        .arg(&pipeline)
        .args(cluster(1))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("process 1 starts");
    let first_args = cluster(0);
    let run = Running::start(&pipeline, &first_args.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    wait_for(120, "the two-process input ends", || get(&run.url("/healthz")).1["input_ended"] == true);
    wait_for(30, "process 1 exits", || second.try_wait().unwrap().is_some_and(|status| status.success()));

    let records = parse_lines(&std::fs::read_to_string(&single).unwrap());
    let mut last: BTreeMap<String, &Value> = BTreeMap::new();
    for record in records.iter().filter(|r| r["type"] == "recs") {
        last.insert(record["user"].to_string(), record);
    }
    assert!(last.len() > 50);
    for (user, record) in &last {
        let (status, answer) = get(&run.url(&format!("/v1/users/{user}/recommendations")));
        if record["items"].as_array().unwrap().is_empty() {
            assert_eq!(status, 404, "user {user}");
        } else {
            assert_eq!(answer["items"], record["items"], "user {user}: two processes answer as one");
        }
    }
    run.stop();
    let _ = std::fs::remove_dir_all(&dir);
}
