//! Serving (`[serve]`, `--serve`): point queries equal the changelog's last record per key, a
//! subscriber gets a snapshot and then live changes (including those of posted events), the
//! mutating endpoint checks its token and body size, and a client that falls behind is told so
//! and disconnected instead of holding anything back.

mod common;

use std::collections::BTreeMap;
use std::io::BufRead;
use std::process::Stdio;
use std::sync::Arc;

use common::serve::{agent, get, metric, receive_until, reply, subscribe, wait_for, Running};
use common::{parse_lines, recflow, scratch_dir};
use serde_json::{json, Value};

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
    let popular = records.iter().rfind(|r| r["type"] == "popular").expect("a list for users without one");
    assert!(!popular["items"].as_array().unwrap().is_empty());
    let as_of = get(&run.url("/healthz")).1["as_of"].as_u64().expect("as_of is known at the end");
    // A user without a list of their own gets the popular items: the last `popular` record.
    let gets_popular_items = |user: &str| {
        let (status, answer) = get(&run.url(&format!("/v1/users/{user}/recommendations")));
        assert_eq!(status, 200, "user {user}: {answer}");
        assert_eq!(answer["popular"], true, "user {user}: {answer}");
        assert_eq!((&answer["items"], &answer["time"]), (&popular["items"], &popular["time"]), "user {user}");
        assert_eq!(answer["as_of"], as_of);
    };
    let mut emptied = 0;
    for (user, record) in &last_recs {
        let (status, answer) = get(&run.url(&format!("/v1/users/{user}/recommendations")));
        if record["items"].as_array().unwrap().is_empty() {
            gets_popular_items(user);
            emptied += 1;
            continue;
        }
        assert!(answer.get("popular").is_none(), "user {user} has a list of their own: {answer}");
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
    gets_popular_items("nobody-at-all");
    let (_, top2) = get(&run.url("/v1/users/nobody-at-all/recommendations?k=2&explain=true"));
    assert_eq!(top2["items"].as_array().unwrap().len(), 2, "{top2}");
    assert!(top2["items"].as_array().unwrap().iter().all(|item| item["because"] == "popular fallback"), "{top2}");
    println!("{emptied} users whose list emptied get the popular items");
    assert_eq!(get(&run.url(&format!("/v1/users/{user}/recommendations?k=0"))).0, 400);
    assert_eq!(get(&run.url(&format!("/v1/users/{user}/recommendations?explain=maybe"))).0, 400);

    // Explanations: each scored item's score is the sum of what the preferred items leading to it
    // contribute; fill-ins say they are popular.
    let mut explained_items = 0;
    for user in last_recs.keys().take(40) {
        let (plain_status, plain) = get(&run.url(&format!("/v1/users/{user}/recommendations")));
        let (status, explained) = get(&run.url(&format!("/v1/users/{user}/recommendations?explain=true")));
        assert_eq!(status, plain_status, "user {user}: {explained}");
        if status != 200 {
            continue;
        }
        let items = explained["items"].as_array().unwrap();
        assert_eq!(items.len(), plain["items"].as_array().unwrap().len());
        for (item, plain) in items.iter().zip(plain["items"].as_array().unwrap()) {
            assert_eq!((&item["item"], &item["score"]), (&plain["item"], &plain["score"]), "user {user}");
            if item.get("fallback") == Some(&Value::Bool(true)) {
                assert_eq!(item["because"], "popular fallback", "user {user}: {item}");
                continue;
            }
            let because = item["because"].as_array().unwrap_or_else(|| panic!("user {user}: {item}"));
            assert!(!because.is_empty(), "user {user}: a scored item has a reason: {item}");
            let total: f64 = because.iter().map(|why| why["contribution"].as_f64().unwrap()).sum();
            let score = item["score"].as_f64().unwrap();
            assert!((total - score).abs() < 1e-5, "user {user}: contributions {total} add up to the score {score}");
            for why in because {
                let preference = why["short_term"].as_f64().unwrap() + why["long_term"].as_f64().unwrap();
                let similarity = why["similarity"].as_f64().unwrap();
                assert!(preference > 0.0 && similarity > 0.0 && similarity <= 1.0 + 1e-9, "user {user}: {why}");
            }
            explained_items += 1;
        }
    }
    assert!(explained_items > 20, "enough scored items were explained: {explained_items}");

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
    // Every result of the finite input is written: nothing is left in flight.
    assert!(metrics.contains("recflow_events_in_flight 0\n"), "{metrics}");
    assert!(metrics.contains("recflow_kafka_delivery_retries_total 0"), "{metrics}");
    assert!(
        metrics.contains(&format!(
            "recflow_served_users {}",
            last_recs.values().filter(|r| !r["items"].as_array().unwrap().is_empty()).count()
        )),
        "{metrics}"
    );
    // The input has ended: nothing would read a posted event.
    let (status, body) = reply(
        agent()
            .post(&run.url("/v1/events"))
            .set("Content-Type", "application/json")
            .send_string(r#"{"user":1,"item":2,"action":"view"}"#),
    );
    assert_eq!(status, 409, "{body}");
    run.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A pipeline file in `dir`: the small world generated live at 2,000 events/s, served on a free
/// loopback port with the further `[serve]` keys `serve`.
fn live_world(dir: &std::path::Path, serve: &str) -> std::path::PathBuf {
    let pipeline = dir.join("pipeline.toml");
    let world = common::SMALL_WORLD.replace("clusters = 5", "clusters = 5\nrate = 2000");
    std::fs::write(&pipeline, format!("{world}\n[serve]\naddr = \"127.0.0.1:0\"\n{serve}\n")).unwrap();
    pipeline
}

#[test]
fn a_subscriber_sees_a_snapshot_then_changes_including_posted_events() {
    let dir = scratch_dir("serve-live");
    let pipeline =
        live_world(&dir, "token_env = \"RECFLOW_TEST_TOKEN\"\nmax_body_bytes = 2048\nprogress_interval = \"200ms\"");
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
    let post = || agent().post(&run.url("/v1/events")).set("Content-Type", "application/json");
    let event = r#"{"user":"posted-user","item":7,"action":"view"}"#;
    assert_eq!(reply(post().send_string(event)).0, 401, "no token");
    assert_eq!(reply(post().set("Authorization", "Bearer wrong").send_string(event)).0, 401, "a wrong token");
    let forget = agent().delete(&run.url("/v1/users/posted-user"));
    assert_eq!(reply(forget.call()).0, 401, "forgetting needs the token too");
    let (status, body) =
        reply(agent().delete(&run.url("/v1/users/posted-user?wait=1h")).set("Authorization", "Bearer s3cret").call());
    assert_eq!(status, 400, "a wait over 5 minutes: {body}");
    let authorised = || post().set("Authorization", "Bearer s3cret");
    // A body a web page could send to any address without asking (text/plain) is refused, with
    // the token or without; so is a request naming another host (DNS rebinding).
    let plain = agent().post(&run.url("/v1/events")).set("Authorization", "Bearer s3cret");
    let (status, body) = reply(plain.set("Content-Type", "text/plain").send_string(event));
    assert_eq!(status, 415, "{body}");
    let ndjson = authorised().set("Content-Type", "application/x-ndjson; charset=utf-8");
    assert_eq!(reply(ndjson.send_string(r#"{"user":1,"item":2,"action":"view"}"#)).0, 200, "JSON lines");
    let (status, body) = reply(agent().get(&run.url("/healthz")).set("Host", "attacker.example:80").call());
    assert_eq!(status, 403, "{body}");
    let port = run.url("").rsplit(':').next().unwrap().trim_end_matches('/').to_string();
    let (status, _) = reply(agent().get(&run.url("/healthz")).set("Host", &format!("localhost:{port}")).call());
    assert_eq!(status, 200, "localhost is this server");
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

    // The text id "42" is not the number 42: each has its own list, asked for as "42" (quoted) and 42.
    let (status, body) = reply(authorised().send_string(r#"{"user":"42","item":7,"action":"view"}"#));
    assert_eq!(status, 200, "{body}");
    let text_user = run.url("/v1/users/%2242%22/recommendations");
    wait_for(30, "the text user \"42\" has a list", || get(&text_user).0 == 200);
    assert_eq!(get(&text_user).1["user"], "42");
    wait_for(30, "the number 42 has a list", || get(&run.url("/v1/users/42/recommendations")).0 == 200);
    assert_eq!(get(&run.url("/v1/users/42/recommendations")).1["user"], 42);

    // Posted events stamped ten days from now cannot have happened, even three in a row (which
    // would confirm one another as a jump in a replay): they are `future` dead letters, and the
    // stream's own events are not late after them.
    let now_s = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let poison: String = (0..3)
        .map(|n| {
            format!("{{\"user\":\"posted-user\",\"item\":8,\"action\":\"view\",\"ts\":{}}}\n", now_s + 864_000 + n)
        })
        .collect();
    assert_eq!(reply(authorised().send_string(&poison)).0, 200);
    let status = || get(&run.url("/v1/status")).1;
    wait_for(30, "the poison is dead-lettered as future", || status()["rejected"]["future"] == 3);
    let late = status()["late"].as_u64().unwrap();
    let read = status()["records_read"].as_u64().unwrap();
    wait_for(30, "more events are read", || status()["records_read"].as_u64().unwrap() > read + 1000);
    assert_eq!(status()["late"].as_u64().unwrap(), late, "no event is late after the poison");
    run.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_subscriber_that_falls_behind_is_told_and_disconnected() {
    use recflow::results::{ChangeRecord, ScoredItem};
    use recflow::serve::{Inlets, Server};

    let pipeline = recflow::Pipeline::from_toml(common::SMALL_WORLD, "world.toml").unwrap();
    let spec = recflow::spec::ServeSpec { addr: "127.0.0.1:0".into(), client_buffer: 4, ..Default::default() };
    let metrics = Arc::new(recflow::metrics::Metrics::default());
    let server = Server::start(&spec, &pipeline, metrics, Inlets::closed("not in this test")).unwrap();
    let base = format!("http://{}", server.addr());
    let response = agent().get(&format!("{base}/v1/subscribe")).call().unwrap();
    wait_for(10, "the subscriber is counted", || server.subscribers() == 1);
    // Far more than the socket buffers and the ring hold, while the client reads nothing.
    let items: Vec<ScoredItem> = (0..4_000)
        .map(|i| ScoredItem { item: recflow::Id::Num(i), score: 1.5, fallback: false, because: Vec::new() })
        .collect();
    let feed = server.feed();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    for time in 0..300 {
        let record = ChangeRecord::Recs { user: recflow::Id::Num(time), time: time as u64, items: items.clone() };
        feed.post_changes(vec![record]);
        // One batch each: the server takes every post before the next.
        while feed.waiting() > 0 {
            assert!(std::time::Instant::now() < deadline, "the server takes what is posted");
            std::thread::park_timeout(std::time::Duration::from_millis(1));
        }
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
            assert_eq!((status, &answer["popular"]), (200, &Value::Bool(true)), "user {user}: {answer}");
        } else {
            assert_eq!(answer["items"], record["items"], "user {user}: two processes answer as one");
        }
    }
    run.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Subscribers beyond `max_subscribers` get 503 with `Retry-After`, point queries go on, and a
/// freed place can be taken again.
#[test]
fn subscribers_beyond_the_limit_are_told_to_come_back() {
    let dir = scratch_dir("serve-cap");
    let pipeline = live_world(&dir, "max_subscribers = 2\nprogress_interval = \"100ms\"");
    let run = Running::start(&pipeline, &["-q", "--output", "/dev/null"], &[]);
    let first = subscribe(&run.url("/v1/subscribe"));
    let second = subscribe(&run.url("/v1/subscribe/hot-items"));
    match agent().get(&run.url("/v1/subscribe")).call() {
        Err(ureq::Error::Status(503, response)) => {
            assert_eq!(response.header("retry-after"), Some("5"));
            let body = response.into_string().unwrap();
            assert!(body.contains("serve.max_subscribers"), "{body}");
        }
        other => panic!("a third subscriber must get 503: {:?}", other.map(|r| r.status())),
    }
    assert_eq!(get(&run.url("/healthz")).0, 200, "point queries go on");
    receive_until(&first, 30, "progress on a subscription at the limit", |seen| {
        seen.iter().any(|(e, _)| e == "progress")
    });
    drop(second);
    wait_for(30, "the freed place is taken again", || match agent().get(&run.url("/v1/subscribe")).call() {
        Ok(response) => response.status() == 200,
        Err(_) => false,
    });
    drop(first);
    run.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Opens a connection that starts a request and never finishes its headers.
fn slow_client(addr: &str) -> std::net::TcpStream {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ").unwrap();
    stream
}

/// Whether the server closed `stream` (end of stream or reset) within `secs`.
fn closed_by_server(stream: &mut std::net::TcpStream, secs: u64) -> bool {
    use std::io::Read;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(secs))).unwrap();
    let mut buffer = [0u8; 1024];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

#[test]
fn slow_and_idle_clients_are_cut_off_and_connections_beyond_the_cap_are_refused() {
    let dir = scratch_dir("serve-slow");
    let pipeline = live_world(&dir, "max_subscribers = 5\nmax_connections = 150\nheader_timeout = \"2s\"");
    let run = Running::start(&pipeline, &["-q", "--output", "/dev/null"], &[]);
    let addr = run.url("").trim_start_matches("http://").to_string();

    // A hundred clients sending their headers too slowly do not stop point queries or results.
    let mut slow: Vec<std::net::TcpStream> = (0..100).map(|_| slow_client(&addr)).collect();
    assert_eq!(get(&run.url("/healthz")).0, 200, "point queries go on beside slow clients");
    let updates = subscribe(&run.url("/v1/subscribe"));
    receive_until(&updates, 30, "changes beside slow clients", |seen| seen.iter().any(|(e, _)| e == "change"));
    drop(updates);

    // Filling every connection: the next one gets 503 and is told when to come back.
    slow.extend((0..50).map(|_| slow_client(&addr)));
    let refused = wait_until_refused(&run);
    assert_eq!(refused.header("retry-after"), Some("1"));
    let body = refused.into_string().unwrap();
    assert!(body.contains("serve.max_connections"), "{body}");

    // Every slow client is cut off once its headers are overdue, and the places are free again.
    for stream in &mut slow {
        assert!(closed_by_server(stream, 30), "a client that never finished its headers is closed");
    }
    wait_for(30, "connections are served again", || get(&run.url("/healthz")).0 == 200);

    // An idle keep-alive connection is closed too.
    let mut idle = std::net::TcpStream::connect(&addr).unwrap();
    std::io::Write::write_all(&mut idle, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    assert!(closed_by_server(&mut idle, 30), "an idle keep-alive connection is closed");
    let (_, metrics) = reply(agent().get(&run.url("/metrics")).call());
    assert!(!metrics.contains("recflow_http_connections_refused_total 0\n"), "{metrics}");
    run.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

/// The 503 a request gets while every connection is taken (waiting for the server to have
/// accepted the connections that fill it).
fn wait_until_refused(run: &Running) -> ureq::Response {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match ureq::AgentBuilder::new().build().get(&run.url("/healthz")).call() {
            Err(ureq::Error::Status(503, response)) => return response,
            other => {
                let status = other.map(|r| r.status());
                assert!(std::time::Instant::now() < deadline, "no 503 at the connection cap: {status:?}");
                std::thread::park_timeout(std::time::Duration::from_millis(50));
            }
        }
    }
}

#[test]
fn a_read_token_guards_every_read_but_health_and_the_page() {
    let dir = scratch_dir("serve-read-token");
    let pipeline = live_world(&dir, "read_token_env = \"RECFLOW_TEST_READ\"\ntoken = \"wr1te\"");
    let run = Running::start(&pipeline, &["-q", "--output", "/dev/null"], &[("RECFLOW_TEST_READ", "r3ad")]);
    assert_eq!(get(&run.url("/healthz")).0, 200, "health needs no token");
    assert_eq!(reply(agent().get(&run.url("/")).call()).0, 200, "the dashboard page itself holds no data");
    let reads = [
        "/metrics",
        "/v1/status",
        "/v1/hot-items",
        "/v1/users/1/recommendations?explain=true",
        "/v1/subscribe",
        "/v1/subscribe/hot-items",
    ];
    for path in reads {
        assert_eq!(reply(agent().get(&run.url(path)).call()).0, 401, "{path} without a token");
        let wrong = agent().get(&run.url(path)).set("Authorization", "Bearer r3ad-not").call();
        assert_eq!(reply(wrong).0, 401, "{path} with a wrong token");
        let separator = if path.contains('?') { '&' } else { '?' };
        let wrong = agent().get(&run.url(&format!("{path}{separator}access_token=wrong"))).call();
        assert_eq!(reply(wrong).0, 401, "{path} with a wrong access_token");
    }
    // The read token as a header or as `access_token` (taken out before the route checks its
    // parameters), and the write token, all read.
    let (status, body) = reply(agent().get(&run.url("/v1/status")).set("Authorization", "Bearer r3ad").call());
    assert_eq!(status, 200, "{body}");
    let (status, body) = reply(agent().get(&run.url("/v1/status?access_token=r3ad")).call());
    assert_eq!(status, 200, "{body}");
    let (status, body) = reply(agent().get(&run.url("/metrics")).set("Authorization", "Bearer wr1te").call());
    assert_eq!(status, 200, "{body}");
    let (status, body) = reply(agent().get(&run.url("/v1/status?access_token=r3ad&verbose=1")).call());
    assert_eq!(status, 400, "other parameters are still checked: {body}");
    let updates = subscribe(&run.url("/v1/subscribe?access_token=r3ad"));
    receive_until(&updates, 60, "changes with the read token", |seen| seen.iter().any(|(e, _)| e == "change"));
    drop(updates);
    run.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_thousand_subscribers_and_a_hundred_slow_clients_do_not_stop_queries_or_results() {
    let dir = scratch_dir("serve-thousand");
    let pipeline = live_world(&dir, "max_subscribers = 1100\nmax_connections = 1300\nprogress_interval = \"500ms\"");
    let run = Running::start(&pipeline, &["-q", "--output", "/dev/null"], &[]);
    let addr = run.url("").trim_start_matches("http://").to_string();
    let subscribers = recflow::cli::bench::serve::HeldSubscriptions::open(addr.parse().unwrap(), 1000).unwrap();
    wait_for(60, "a thousand subscribers", || metric(&run, "recflow_subscribers") == Some(1000));
    let slow: Vec<std::net::TcpStream> = (0..100).map(|_| slow_client(&addr)).collect();

    // Point queries answer, and results go on: the output frontier moves.
    let as_of = |run: &Running| get(&run.url("/v1/status")).1["as_of"].as_u64().unwrap_or(0);
    let before = as_of(&run);
    for _ in 0..50 {
        assert_eq!(get(&run.url("/healthz")).0, 200);
        assert!(matches!(get(&run.url("/v1/hot-items")).0, 200 | 404));
    }
    wait_for(60, "results advance beside a thousand subscribers", || as_of(&run) > before);
    assert_eq!(metric(&run, "recflow_subscribers"), Some(1000), "every subscriber that reads stays attached");
    assert_eq!(subscribers.close(), 1000, "the server closed none of them");
    drop(slow);
    run.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_post_flood_while_the_dataflow_is_behind_gets_503_and_waits_in_bounded_memory() {
    let dir = scratch_dir("serve-flood");
    let pipeline = dir.join("pipeline.toml");
    // The generator as fast as it goes: the reading worker keeps pausing for the dataflow.
    std::fs::write(
        &pipeline,
        format!("{}\n[serve]\naddr = \"127.0.0.1:0\"\nmax_queued_events = 200\n", common::SMALL_WORLD),
    )
    .unwrap();
    let run = Running::start(&pipeline, &["-q", "--output", "/dev/null"], &[]);
    let url = run.url("/v1/events");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let posters: Vec<_> = (0..8)
        .map(|poster| {
            let (url, stop) = (url.clone(), Arc::clone(&stop));
            std::thread::spawn(move || {
                let body: String = (0..100)
                    .map(|i| format!("{{\"user\":\"flood-{poster}\",\"item\":{i},\"action\":\"view\"}}\n"))
                    .collect();
                let (mut taken, mut refused) = (0u64, 0u64);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let answer = agent().post(&url).set("Content-Type", "application/x-ndjson").send_string(&body);
                    match answer {
                        Ok(response) if response.status() == 200 => taken += 1,
                        Err(ureq::Error::Status(503, response)) => {
                            assert_eq!(response.header("retry-after"), Some("1"));
                            refused += 1;
                        }
                        other => panic!("a post gets 200 or 503: {:?}", other.map(|r| r.status())),
                    }
                }
                (taken, refused)
            })
        })
        .collect();
    // While the flood goes on, what waits stays within the limit (plus what eight requests of 100
    // can hold for an instant before they are refused).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut most = 0;
    while std::time::Instant::now() < deadline {
        most = most.max(metric(&run, "recflow_posted_events_waiting").expect("the gauge of posted events waiting"));
        std::thread::park_timeout(std::time::Duration::from_millis(20));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut taken, mut refused) = (0, 0);
    for poster in posters {
        let (t, r) = poster.join().unwrap();
        taken += t;
        refused += r;
    }
    eprintln!("{taken} posts taken, {refused} refused with 503; at most {most} events waited");
    assert!(refused > 0, "a flood beyond what waits is refused");
    assert!(taken > 0, "posts are taken as the pipeline catches up");
    assert!(most <= 200 + 8 * 100, "at most {most} posted events waited");
    assert_eq!(get(&run.url("/healthz")).0, 200);
    run.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_server_raises_a_low_open_file_limit_for_its_connections() {
    let dir = scratch_dir("serve-nofile");
    let pipeline = live_world(&dir, "max_subscribers = 100\nmax_connections = 1000");
    // As on a machine whose default soft limit is low: 300 descriptors, the hard limit higher.
    let mut command = std::process::Command::new("bash");
    command
        .arg("-c")
        .arg("ulimit -Sn 300 && exec \"$0\" run \"$1\" -q --output /dev/null")
        .arg(env!("CARGO_BIN_EXE_recflow"))
        .arg(&pipeline);
    let run = Running::start_command(command);
    let addr = run.url("").trim_start_matches("http://").to_string();
    let slow: Vec<std::net::TcpStream> = (0..400).map(|_| slow_client(&addr)).collect();
    wait_for(30, "400 connections served at once under a soft limit of 300", || {
        metric(&run, "recflow_http_connections").unwrap_or(0) > 400
    });
    drop(slow);
    run.stop();
    let _ = std::fs::remove_dir_all(&dir);
}
