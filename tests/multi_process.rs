//! Two processes on localhost (timely's `-n 2 -p 0|1 -h hostfile`) produce the same changelog as
//! one worker.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{free_ports, recflow};

#[test]
fn two_processes_match_one_worker() {
    let dir = std::env::temp_dir().join(format!("recflow-2proc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pipeline = dir.join("pipeline.toml");
    std::fs::write(&pipeline, common::SMALL_WORLD).unwrap();
    let single = dir.join("single.jsonl");
    let status = recflow()
        .arg("run")
        .arg(&pipeline)
        .args(["--max-events", "3000", "-q", "--output"])
        .arg(&single)
        .status()
        .unwrap();
    assert!(status.success());

    let ports = free_ports(2);
    let hostfile = dir.join("hosts.txt");
    std::fs::write(&hostfile, format!("127.0.0.1:{}\n127.0.0.1:{}\n", ports[0], ports[1])).unwrap();
    let cluster = dir.join("cluster.jsonl");
    let mut children: Vec<_> = (0..2)
        .map(|p| {
            recflow()
                .arg("run")
                .arg(&pipeline)
                .args(["--max-events", "3000", "-q", "-w", "2", "-n", "2", "-p", &p.to_string(), "-h"])
                .arg(&hostfile)
                .arg("--output")
                .arg(if p == 0 { cluster.clone() } else { dir.join("unused.jsonl") })
                .stdout(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in &mut children {
        let status = common::wait_for_exit(child, Duration::from_secs(120));
        assert!(status.success(), "a process failed: {status}");
    }
    let single = std::fs::read_to_string(&single).unwrap();
    let cluster = std::fs::read_to_string(&cluster).unwrap();
    assert!(single.lines().count() > 100, "the run produced results");
    assert!(single.contains("\"hot_items\"") && single.contains("\"recs\""));
    assert_eq!(single, cluster, "the changelogs differ");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A worker panic in one process of two ends both: the panicking process with its panic's
/// message, the other because its peer is gone, each with a non-zero exit and neither waiting
/// for ever.
#[test]
fn a_worker_panic_in_one_process_ends_both() {
    let dir = std::env::temp_dir().join(format!("recflow-2proc-panic-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pipeline = dir.join("pipeline.toml");
    std::fs::write(&pipeline, common::SMALL_WORLD).unwrap();
    let ports = free_ports(2);
    let hostfile = dir.join("hosts.txt");
    std::fs::write(&hostfile, format!("127.0.0.1:{}\n127.0.0.1:{}\n", ports[0], ports[1])).unwrap();
    let mut children: Vec<_> = (0..2)
        .map(|p| {
            recflow()
                .arg("run")
                .arg(&pipeline)
                // Far more events than the run can get through before the panic.
                .args(["--max-events", "50000000", "-q", "-w", "2", "-n", "2", "-p", &p.to_string(), "-h"])
                .arg(&hostfile)
                .arg("--output")
                .arg(dir.join(format!("out-{p}.jsonl")))
                // Worker 2 is the first worker of process 1.
                .env(recflow::fatal::INJECT_PANIC_WORKER, "2")
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (process, child) in children.iter_mut().enumerate() {
        let status = common::wait_for_exit(child, Duration::from_secs(60));
        let mut stderr = String::new();
        std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
        assert!(!status.success(), "process {process} must fail: {stderr}");
        let expected = if process == 1 { "injected panic on worker 2" } else { "communication" };
        assert!(stderr.contains(expected), "process {process} says why ({expected}): {stderr}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
