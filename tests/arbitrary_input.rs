//! Arbitrary input never panics a worker or the server, and every record is accounted for.
//! Property tests (proptest, a bounded number of cases per run, a new random seed each time; a
//! failure prints the shrunk input): every decoder on arbitrary and almost-valid records, whole
//! runs on arbitrary lines (accepted + rejected + late = read), and the HTTP server on arbitrary
//! requests (each gets an answer, never a server error, and the server stays healthy).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::serve::{get, Running};
use common::{scratch_dir, SMALL_WORLD};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use recflow::decode::Decoder;
use recflow::spec::{Format, Payload, SourceSpec, TimeUnit};
use recflow::{Pipeline, RunOptions};

/// A field of a record: valid values, edge cases and arbitrary text.
fn field() -> impl Strategy<Value = String> + Clone {
    prop_oneof![
        Just("1".to_string()),
        Just("pv".to_string()),
        Just("rate".to_string()),
        Just("1511544070".to_string()),
        Just("1511544070123".to_string()),
        Just("4.5".to_string()),
        Just("1000000.0001".to_string()),
        Just("-1e400".to_string()),
        Just("NaN".to_string()),
        Just("18446744073709551616".to_string()),
        Just("\"quoted, \"\"twice\"\"\"".to_string()),
        Just("\"unterminated".to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|x| x.to_string()),
        "[ -~]{0,12}",
        "\\PC{0,6}",
    ]
}

/// A JSON object with record fields, some of them not JSON at all.
fn json_record() -> impl Strategy<Value = Vec<u8>> {
    let key = prop_oneof![
        Just("user"),
        Just("item"),
        Just("category"),
        Just("action"),
        Just("value"),
        Just("ts"),
        Just("other")
    ];
    let value = prop_oneof![
        field().prop_map(|f| serde_json::to_string(&f).unwrap()),
        field(),
        Just("null".to_string()),
        Just("[1,2]".to_string()),
        Just("{\"a\":1}".to_string()),
    ];
    vec((key, value), 0..8).prop_map(|pairs| {
        let body: Vec<String> = pairs.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
        format!("{{{}}}", body.join(",")).into_bytes()
    })
}

/// Bytes that may or may not be a record of any of the formats.
fn record_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        vec(any::<u8>(), 0..120),
        vec(field(), 0..8).prop_map(|f| f.join(",").into_bytes()),
        vec(field(), 0..8).prop_map(|f| f.join("\t").into_bytes()),
        json_record(),
    ]
}

fn decoders() -> Vec<(&'static str, Decoder)> {
    let with_value = SourceSpec {
        columns: ["user", "item", "category", "action", "value", "ts"].map(String::from).to_vec(),
        ..SourceSpec::default()
    };
    let tsv = SourceSpec { format: Format::Tsv, timestamp_unit: TimeUnit::Millis, ..with_value.clone() };
    let jsonl = SourceSpec { format: Format::Jsonl, ..SourceSpec::default() };
    vec![
        ("csv", Decoder::new(&SourceSpec::default())),
        ("csv with values", Decoder::new(&with_value)),
        ("tsv in ms", Decoder::new(&tsv)),
        ("jsonl", Decoder::new(&jsonl)),
        ("json payload", Decoder::for_payload(&SourceSpec::default(), Payload::Json)),
        ("csv payload", Decoder::for_payload(&with_value, Payload::Csv)),
        ("bincode payload", Decoder::for_payload(&SourceSpec::default(), Payload::Bincode)),
    ]
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() })
}

#[test]
fn every_decoder_accepts_or_rejects_with_a_reason_any_bytes() {
    let decoders = decoders();
    let largest_ms = SourceSpec::default().latest_timestamp() * 1000;
    runner(3000)
        .run(&record_bytes(), |bytes| {
            for (name, decoder) in &decoders {
                match decoder.decode_bytes(&bytes) {
                    Ok(event) => {
                        prop_assert!(event.ts <= largest_ms, "{name}: ts {} beyond the range", event.ts);
                        prop_assert!(
                            event.value.is_none_or(|v| v.unsigned_abs() <= 1_000_000_000),
                            "{name}: value {:?} beyond the bound",
                            event.value
                        );
                    }
                    Err(reason) => prop_assert!(!reason.code().is_empty(), "{name}: a reason without a code"),
                }
            }
            Ok(())
        })
        .unwrap();
}

/// A pipeline reading a file of CSV records with ratings.
const FILE_PIPELINE: &str = r#"
[source]
kind = "file"
path = "unused.csv"
columns = ["user", "item", "category", "action", "value", "ts"]
[recommend]
k = 3
history = 4
[recommend.similarity]
refresh = "10s"
[hot_items]
size = "1m"
slide = "30s"
[output]
status_interval_secs = 0
"#;

#[test]
fn a_run_on_arbitrary_lines_accounts_for_every_record() {
    let pipeline = Pipeline::from_toml(FILE_PIPELINE, "test").unwrap();
    let dir = scratch_dir("arbitrary-lines");
    // Lines never hold a line break; some are valid records, so the dataflow has work to do.
    let valid = (1u64..50, 1u64..30, 0u64..600)
        .prop_map(|(user, item, at)| format!("{user},{item},{},rate,4,{}", item % 5, 1_700_000_000 + at).into_bytes());
    let line = prop_oneof![record_bytes(), valid].prop_map(|mut bytes| {
        bytes.retain(|b| *b != b'\n');
        bytes
    });
    runner(24)
        .run(&(vec(line, 1..60), 1usize..3), |(lines, workers)| {
            let input = dir.join("input.csv");
            let mut file = Vec::new();
            for line in &lines {
                file.extend_from_slice(line);
                file.push(b'\n');
            }
            std::fs::write(&input, &file).unwrap();
            let dead = dir.join("dead.jsonl");
            let options = RunOptions {
                input: Some(input),
                output: Some("/dev/null".into()),
                dead_letter: Some(dead.display().to_string()),
                max_events: None,
                status: false,
                stop: None,
                checkpoints: None,
                checkpoint_dir: None,
            };
            let config = if workers == 1 { timely::Config::thread() } else { timely::Config::process(workers) };
            let metrics = recflow::run(pipeline.clone(), options, config).expect("the run succeeds");
            // A line of whitespace only (after a trailing `\r` is dropped) is no record.
            let records = lines
                .iter()
                .filter(|l| !l.strip_suffix(b"\r").unwrap_or(l).iter().all(u8::is_ascii_whitespace))
                .count() as u64;
            prop_assert_eq!(metrics.records_in, records);
            prop_assert_eq!(metrics.accepted + metrics.invalid + metrics.late, metrics.records_in);
            let dead_letters = std::fs::read_to_string(&dead).unwrap().lines().count() as u64;
            prop_assert_eq!(dead_letters, metrics.invalid + metrics.late);
            Ok(())
        })
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A request that is well-formed HTTP/1.1 whatever its parts: the path, query and header values
/// hold only characters allowed there (anything else percent-encoded), the body anything.
fn request() -> impl Strategy<Value = (String, Vec<u8>)> {
    let method = prop_oneof![
        8 => Just("GET"),
        4 => Just("POST"),
        2 => Just("DELETE"),
        1 => Just("PUT"),
        1 => Just("HEAD"),
        1 => Just("OPTIONS"),
    ];
    let segment = prop_oneof![
        Just("v1".to_string()),
        Just("users".to_string()),
        Just("recommendations".to_string()),
        Just("hot-items".to_string()),
        Just("subscribe".to_string()),
        Just("events".to_string()),
        Just("status".to_string()),
        Just("metrics".to_string()),
        Just("healthz".to_string()),
        "[A-Za-z0-9._~-]{0,10}",
        vec(any::<u8>(), 0..8).prop_map(|b| b.iter().map(|x| format!("%{x:02X}")).collect()),
    ];
    let id = prop_oneof![
        "[0-9]{1,4}",
        "[A-Za-z0-9._~-]{1,10}",
        vec(any::<u8>(), 1..6).prop_map(|b| { b.iter().map(|x| format!("%{x:02X}")).collect::<String>() })
    ];
    // Mostly the real routes, so that the handlers see the odd parameters and bodies.
    let route = prop_oneof![
        Just("/v1/status".to_string()),
        Just("/v1/hot-items".to_string()),
        Just("/v1/subscribe".to_string()),
        Just("/v1/subscribe/hot-items".to_string()),
        Just("/v1/events".to_string()),
        Just("/metrics".to_string()),
        Just("/healthz".to_string()),
        Just("/".to_string()),
        id.clone().prop_map(|id| format!("/v1/users/{id}/recommendations")),
        id.prop_map(|id| format!("/v1/users/{id}")),
    ];
    let path = prop_oneof![
        3 => route,
        1 => vec(segment, 0..5).prop_map(|s| format!("/{}", s.join("/"))),
    ];
    let name = prop_oneof![
        Just("k".to_string()),
        Just("explain".to_string()),
        Just("window_end".to_string()),
        Just("users".to_string()),
        Just("wait".to_string()),
        Just("access_token".to_string()),
        "[A-Za-z_]{1,10}",
    ];
    let pair = (name, "[A-Za-z0-9._~-]{0,8}|%[0-9A-F]{2}|%[0-9A-F]|-?[0-9]{1,25}|true|false");
    let query = vec(pair, 0..4).prop_map(|pairs| {
        let joined: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        if joined.is_empty() {
            String::new()
        } else {
            format!("?{}", joined.join("&"))
        }
    });
    let content_type = prop_oneof![
        Just(None),
        Just(Some("application/json")),
        Just(Some("application/x-ndjson")),
        Just(Some("text/plain")),
        Just(Some("application/json; charset=utf-8")),
    ];
    let header = ("X-[A-Za-z-]{1,10}", "[ -~]{0,30}");
    let body = prop_oneof![
        vec(any::<u8>(), 0..300),
        vec(json_record(), 0..5).prop_map(|records| records.join(&b'\n')),
        vec(json_record(), 0..5).prop_map(|records| {
            let mut array = b"[".to_vec();
            array.extend(records.join(&b','));
            array.push(b']');
            array
        }),
    ];
    (method, path, query, content_type, vec(header, 0..3), body).prop_map(
        |(method, path, query, content_type, headers, body)| {
            let mut head = format!("{method} {path}{query} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
            if let Some(kind) = content_type {
                head.push_str(&format!("Content-Type: {kind}\r\n"));
            }
            for (name, value) in headers {
                head.push_str(&format!("{name}: {}\r\n", value.trim()));
            }
            head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
            (head, body)
        },
    )
}

/// The status of the answer to `request` (its head and body) sent to `addr`, read up to the end
/// of the answer's head (a subscription's body never ends).
fn status_of(addr: &str, (head, body): &(String, Vec<u8>)) -> Option<u16> {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    // The server may answer (413, 401, ...) and close before taking the whole body.
    let _ = stream.write_all(body);
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buffer[..n]),
        }
    }
    let text = String::from_utf8_lossy(&answer);
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

#[test]
fn the_server_answers_arbitrary_requests_without_a_server_error() {
    let dir = scratch_dir("arbitrary-requests");
    let pipeline = dir.join("pipeline.toml");
    let world = SMALL_WORLD.replace("clusters = 5", "clusters = 5\nrate = 2000");
    std::fs::write(&pipeline, format!("{world}\n[serve]\naddr = \"127.0.0.1:0\"\nmax_body_bytes = 2048\n")).unwrap();
    let run = Running::start(&pipeline, &["-q", "--output", "/dev/null"], &[]);
    let addr = run.url("").trim_start_matches("http://").to_string();
    runner(1000)
        .run(&request(), |request| {
            let status = status_of(&addr, &request);
            prop_assert!(
                status.is_some_and(|s| s < 500 || s == 503),
                "answer {status:?} to {:?} with a body of {} bytes",
                request.0,
                request.1.len()
            );
            Ok(())
        })
        .unwrap();
    // Garbage that is not HTTP at all: the server drops it and goes on.
    runner(100)
        .run(&vec(any::<u8>(), 0..400), |bytes| {
            let mut stream = TcpStream::connect(&addr).unwrap();
            stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            let _ = stream.write_all(&bytes);
            let _ = stream.shutdown(std::net::Shutdown::Write);
            let mut answer = Vec::new();
            let _ = stream.read_to_end(&mut answer);
            Ok(())
        })
        .unwrap();
    let (status, health) = get(&run.url("/healthz"));
    assert_eq!(status, 200, "the server is healthy after arbitrary requests: {health}");
    run.stop();
    let _ = std::fs::remove_dir_all(&dir);
}
