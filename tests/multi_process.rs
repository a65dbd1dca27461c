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
