//! Events produced to a 4-partition Kafka topic on a real broker (Tansu), read back with 2 workers
//! and with 2 processes × 1 worker, end with the same value for every key as the file-input run
//! on the same events; results go out through a Kafka topic and are read back from it. The
//! two-process run also serves, and process 0's metrics show both processes' reading workers.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::kafka::{final_from_topic, Broker, CSV_PIPELINE};
use common::serve::{agent, get, reply, wait_for, Running};
use common::{final_by_key, free_ports, parse_lines, recflow, run_ok, scratch_dir, wait_for_exit};

#[test]
fn kafka_input_and_output_end_where_the_file_run_ends() {
    let broker = Broker::start();
    let dir = scratch_dir("kafka-e2e");
    let pipeline = dir.join("pipeline.toml");
    std::fs::write(&pipeline, CSV_PIPELINE).unwrap();
    let events = dir.join("events.csv");
    run_ok(recflow().arg("gen").arg(&pipeline).args(["--events", "100000", "--unit", "s", "--output"]).arg(&events));

    let input = broker.create_topic("events", 4);
    let stderr = run_ok(
        recflow()
            .args(["produce", "--partitions", "4", "-q", "--format", "raw", "--to", &broker.address(&input), "--input"])
            .arg(&events),
    );
    assert!(stderr.contains("100000 messages delivered"), "{stderr}");

    let file_changelog = dir.join("file.jsonl");
    run_ok(
        recflow().arg("run").arg(&pipeline).arg("--input").arg(&events).arg("-q").arg("--output").arg(&file_changelog),
    );
    let expected = final_by_key(&parse_lines(&std::fs::read_to_string(&file_changelog).unwrap()));
    assert!(expected.len() > 1000, "the file run produced results for many keys");

    // Two workers in one process.
    let two_workers = broker.create_topic("recs-2w", 1);
    let dead = dir.join("dead-2w.jsonl");
    run_ok(
        recflow()
            .arg("run")
            .arg(&pipeline)
            .args(["--input", &broker.address(&input), "--bounded", "-w", "2", "-q"])
            .args(["--output", &broker.address(&two_workers), "--dead-letter"])
            .arg(&dead),
    );
    assert_eq!(std::fs::read_to_string(&dead).unwrap(), "", "no record was rejected or late");
    let got = final_from_topic(&broker.read_topic(&two_workers));
    assert_eq!(got.len(), expected.len(), "the same keys");
    assert!(got == expected, "final values differ from the file run with 2 workers");

    // Two processes with one worker each; process 0 writes the results and serves them, and its
    // metrics show how far the reading workers of both processes got.
    let two_processes = broker.create_topic("recs-2p", 1);
    let ports = free_ports(2);
    let hostfile = dir.join("hosts.txt");
    std::fs::write(&hostfile, format!("127.0.0.1:{}\n127.0.0.1:{}\n", ports[0], ports[1])).unwrap();
    let args = |process: usize| -> Vec<String> {
        let mut args: Vec<String> =
            ["--input", &broker.address(&input), "--bounded", "-q", "-n", "2"].into_iter().map(String::from).collect();
        args.extend(["-p".into(), process.to_string(), "-h".into(), hostfile.display().to_string()]);
        args.extend(["--output".into(), broker.address(&two_processes)]);
        args.extend(["--serve", "127.0.0.1:0", "--serve-linger", "forever"].map(String::from));
        args
    };
    let mut second = recflow().arg("run").arg(&pipeline).args(args(1)).stdout(Stdio::null()).spawn().unwrap();
    let first_args = args(0);
    let first = Running::start(&pipeline, &first_args.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    let status = wait_for_exit(&mut second, Duration::from_secs(300));
    assert!(status.success(), "process 1 failed: {status}");
    wait_for(300, "process 0 ends its input", || get(&first.url("/healthz")).1["input_ended"] == true);
    let (_, metrics) = reply(agent().get(&first.url("/metrics")).call());
    let read: Vec<u64> = (0..2)
        .map(|worker| {
            let name = format!("recflow_worker_records_read_total{{worker=\"{worker}\"}} ");
            let line = metrics.lines().find(|l| l.starts_with(&name)).unwrap_or_else(|| panic!("{name}in {metrics}"));
            line[name.len()..].parse::<f64>().unwrap() as u64
        })
        .collect();
    assert!(read.iter().all(|r| *r > 0), "both processes' workers read partitions: {read:?}");
    assert_eq!(read.iter().sum::<u64>(), 100_000, "process 0 knows what process 1 read: {read:?}");
    first.stop();
    let got = final_from_topic(&broker.read_topic(&two_processes));
    assert!(got == expected, "final values differ from the file run with 2 processes");
    let _ = std::fs::remove_dir_all(&dir);
}
