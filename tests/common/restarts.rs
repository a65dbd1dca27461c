//! Killing a checkpointed run at seeded points and starting it again, shared by the restart
//! tests of file and Kafka inputs.

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// The number of the newest checkpoint committed in `dir` so far (older ones are pruned).
pub fn committed(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir.join("manifests")) else { return 0 };
    let number = |entry: std::io::Result<std::fs::DirEntry>| {
        entry.ok()?.file_name().to_str()?.strip_suffix(".json")?.parse::<usize>().ok()
    };
    entries.filter_map(number).max().unwrap_or(0)
}

/// The cut (dataflow time) of the newest checkpoint committed in `dir`, 0 before the first.
pub fn newest_cut(dir: &Path) -> u64 {
    let newest = dir.join("manifests").join(format!("{:016}.json", committed(dir)));
    let Ok(bytes) = std::fs::read(newest) else { return 0 };
    let manifest: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    manifest["manifest"]["frontier"].as_u64().unwrap_or(0)
}

/// Numbers from a fixed seed: the same kill points on every run of the test.
pub struct Seeded(pub u64);

impl Seeded {
    /// The next number below `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// Waits until `children` (one run's processes) have committed checkpoint `target` in `dir`,
/// then lets them run on for `then` and kills them all with SIGKILL (returns true), unless they
/// finish first (returns false). Fails if any of them fails.
pub fn kill_after(children: &mut [Child], dir: &Path, target: usize, then: Duration) -> bool {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut running = 0;
        for child in children.iter_mut() {
            match child.try_wait().unwrap() {
                Some(status) if !status.success() => {
                    let stderr =
                        child.stderr.take().map(std::io::read_to_string).and_then(Result::ok).unwrap_or_default();
                    panic!("the run failed: {status}\n{stderr}");
                }
                Some(_) => {}
                None => running += 1,
            }
        }
        if running == 0 {
            return false;
        }
        if committed(dir) >= target {
            std::thread::sleep(then);
            if children.iter_mut().any(|child| child.try_wait().unwrap().is_some()) {
                // Finishing: let the others finish too.
                continue;
            }
            for child in children.iter_mut() {
                child.kill().unwrap();
            }
            for child in children.iter_mut() {
                child.wait().unwrap();
            }
            return true;
        }
        assert!(Instant::now() < deadline, "no checkpoint {target} within 2 minutes");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// How [`kill_and_restart_until_done`] chooses its kills.
pub struct Kills {
    /// Seeds the kill points.
    pub seed: u64,
    /// Kill at most this many times, then let the run finish.
    pub at_most: usize,
    /// Whether a run is killed only after a checkpoint whose cut lies past the newest one when
    /// it started: a source slow to deliver its first records (Kafka) would otherwise be killed
    /// after checkpoints taken before it read anything, again and again.
    pub after_progress: bool,
}

/// Runs the processes of `commands` (the same each time: one command per process), killing them
/// all with SIGKILL once they have committed one or two more checkpoints in `dir` (or, with
/// [`Kills::after_progress`], the first past the cut they started from) and run on for 0-150 ms
/// (seeded), and starting them again, until a run finishes; returns the number of kills. What a
/// killed run wrote after its last checkpoint is written again after the restart.
pub fn kill_and_restart_until_done(mut commands: impl FnMut() -> Vec<Command>, dir: &Path, kills: Kills) -> usize {
    let mut seeded = Seeded(kills.seed);
    let mut done = 0;
    loop {
        let mut children: Vec<Child> = commands().iter_mut().map(|command| command.spawn().unwrap()).collect();
        if done == kills.at_most {
            for child in &mut children {
                let status = child.wait().unwrap();
                let stderr = child.stderr.take().map(std::io::read_to_string).and_then(Result::ok).unwrap_or_default();
                assert!(status.success(), "the run failed: {status}\n{stderr}");
            }
            return done;
        }
        // One or two more checkpoints; with `after_progress`, the first past the start's cut.
        let mut more = 1 + seeded.below(2) as usize;
        if kills.after_progress {
            let (before, deadline) = (newest_cut(dir), Instant::now() + Duration::from_secs(120));
            while newest_cut(dir) <= before && children.iter_mut().all(|child| child.try_wait().unwrap().is_none()) {
                assert!(Instant::now() < deadline, "no checkpoint past the cut {before} within 2 minutes");
                std::thread::sleep(Duration::from_millis(5));
            }
            more = 0;
        }
        let target = committed(dir) + more;
        let then = Duration::from_millis(seeded.below(150));
        if !kill_after(&mut children, dir, target, then) {
            return done;
        }
        done += 1;
    }
}

/// The commands of one run of two processes (`-n 2`): `command(process, cluster)` for each, where
/// `cluster` holds the arguments that make it that process of the two, with a host file written
/// into `dir` on new ports every time (a killed run's may not be free again yet).
pub fn two_processes(dir: &Path, mut command: impl FnMut(usize, &[&str]) -> Command) -> Vec<Command> {
    let ports = super::free_ports(2);
    let hostfile = dir.join("hosts.txt");
    std::fs::write(&hostfile, format!("127.0.0.1:{}\n127.0.0.1:{}\n", ports[0], ports[1])).unwrap();
    (0..2)
        .map(|process| {
            let index = process.to_string();
            command(process, &["-n", "2", "-p", &index, "-h", hostfile.to_str().unwrap()])
        })
        .collect()
}
