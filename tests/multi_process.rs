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

/// Runs `SMALL_WORLD` on two processes of two workers each, with far more events than they can
/// get through, process 0 writing its changelog to `output_0`, every worker seeing `env`; returns
/// each process's exit status and standard error, failing if either runs for a minute.
fn two_failing_processes(name: &str, output_0: &str, env: &[(&str, &str)]) -> Vec<(bool, String)> {
    let dir = std::env::temp_dir().join(format!("recflow-2proc-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pipeline = dir.join("pipeline.toml");
    std::fs::write(&pipeline, common::SMALL_WORLD).unwrap();
    let ports = free_ports(2);
    let hostfile = dir.join("hosts.txt");
    std::fs::write(&hostfile, format!("127.0.0.1:{}\n127.0.0.1:{}\n", ports[0], ports[1])).unwrap();
    let mut children: Vec<_> = (0..2)
        .map(|p| {
            let output = if p == 0 { output_0.into() } else { dir.join("out-1.jsonl") };
            recflow()
                .arg("run")
                .arg(&pipeline)
                .args(["--max-events", "50000000", "-q", "-w", "2", "-n", "2", "-p", &p.to_string(), "-h"])
                .arg(&hostfile)
                .arg("--output")
                .arg(output)
                .envs(env.iter().copied())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let ends = children
        .iter_mut()
        .map(|child| {
            let status = common::wait_for_exit(child, Duration::from_secs(60));
            let mut stderr = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
            (status.success(), stderr)
        })
        .collect();
    let _ = std::fs::remove_dir_all(&dir);
    ends
}

/// A worker panic in one process of two ends both, each with a non-zero exit and a message: the
/// panicking process with its panic's, the other because its peer is gone.
#[test]
fn a_worker_panic_in_one_process_ends_both() {
    // Worker 2 is the first worker of process 1.
    let ends = two_failing_processes("panic", "/dev/null", &[(recflow::fatal::INJECT_PANIC_WORKER, "2")]);
    for (process, expected) in
        [(1, "worker 2: panicked: injected panic on worker 2"), (0, "connection with process 1: lost")]
    {
        let (success, stderr) = &ends[process];
        assert!(!success, "process {process} must fail: {stderr}");
        assert!(stderr.contains(expected), "process {process} says why ({expected}): {stderr}");
    }
}

/// An output that process 0 cannot write ends both processes, not only process 0.
#[test]
fn an_output_failure_in_one_process_ends_both() {
    let ends = two_failing_processes("full", "/dev/full", &[]);
    for (process, expected) in [(0, "output /dev/full: cannot write"), (1, "connection with process 0: lost")] {
        let (success, stderr) = &ends[process];
        assert!(!success, "process {process} must fail: {stderr}");
        assert!(stderr.contains(expected), "process {process} says why ({expected}): {stderr}");
    }
}
