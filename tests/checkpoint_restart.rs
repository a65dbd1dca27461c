//! `recflow run --checkpoint DIR` survives kill -9: a run killed at random points (seeded) and
//! started again with the same command each time ends with the same changelog, byte for byte, as
//! a run never disturbed; a damaged newest checkpoint is passed over for the one before (and
//! `recflow checkpoints` shows it damaged); a changed setting that changes results is refused,
//! naming it.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::restarts::{committed, kill_after, kill_and_restart_until_done, two_processes, Kills};
use common::serve::{agent, reply, wait_for, Running};
use common::{recflow, run_ok, scratch_dir, wait_for_exit, SMALL_WORLD};

/// The small world's pipeline and `events` of its generated events in a file, in `dir`.
fn world(dir: &Path, events: u64) -> (PathBuf, PathBuf) {
    let pipeline = dir.join("small.toml");
    std::fs::write(&pipeline, SMALL_WORLD).unwrap();
    let input = dir.join("events.csv");
    let events = events.to_string();
    run_ok(recflow().arg("gen").arg(&pipeline).args(["--events", &events, "--unit", "s", "--output"]).arg(&input));
    (pipeline, input)
}

/// The world of `events` events in a fresh scratch directory, and the changelog of a run of it
/// that nothing disturbs: `(dir, pipeline, input, changelog)`.
fn undisturbed_run(tag: &str, events: u64) -> (PathBuf, PathBuf, PathBuf, PathBuf) {
    let dir = scratch_dir(tag);
    let (pipeline, input) = world(&dir, events);
    let undisturbed = dir.join("undisturbed.jsonl");
    run_ok(&mut run_command(&pipeline, &input, &undisturbed, &[]));
    (dir, pipeline, input, undisturbed)
}

/// `recflow run` of the world's file on two workers into `output`, with `extra` arguments.
fn run_command(pipeline: &Path, input: &Path, output: &Path, extra: &[&str]) -> Command {
    run_on_workers(pipeline, input, output, 2, extra)
}

/// [`run_command`] on `workers` workers (per process).
fn run_on_workers(pipeline: &Path, input: &Path, output: &Path, workers: usize, extra: &[&str]) -> Command {
    let mut command = recflow();
    command.arg("run").arg(pipeline).arg("--input").arg(input).arg("--output").arg(output);
    let null = Path::new("/dev/null");
    command.arg("--dead-letter").arg(if output == null {
        null.to_path_buf()
    } else {
        output.with_extension("dead.jsonl")
    });
    command.args(["-q", "-w", &workers.to_string()]).args(extra);
    command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    command
}

#[test]
fn a_run_killed_at_random_points_ends_with_the_undisturbed_changelog() {
    let (dir, pipeline, input, undisturbed) = undisturbed_run("restart", 500_000);
    let output = dir.join("restarted.jsonl");
    let checkpoints = dir.join("checkpoints");
    let args = ["--checkpoint", checkpoints.to_str().unwrap(), "--checkpoint-interval", "20ms"];
    let kills = kill_and_restart_until_done(
        || vec![run_command(&pipeline, &input, &output, &args)],
        &checkpoints,
        Kills { seed: 7, at_most: usize::MAX, after_progress: false },
    );
    let (expected, got) = (std::fs::read(&undisturbed).unwrap(), std::fs::read(&output).unwrap());
    assert!(expected == got, "after {kills} kills: {} bytes written, {} expected", got.len(), expected.len());
    assert!(kills >= 5, "the run ended after {kills} kills: too short to test restarts");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Two processes of two workers each (`-n 2`) with one checkpoint directory, both killed with
/// SIGKILL at random points (seeded) and started again each time, end with the changelog of an
/// undisturbed run on one process: every process writes its workers' parts, process 0 commits
/// and writes the changelog.
#[test]
fn two_processes_killed_at_random_points_end_with_the_undisturbed_changelog() {
    let (dir, pipeline, input, undisturbed) = undisturbed_run("restart-2proc", 500_000);
    let checkpoints = dir.join("checkpoints");
    let outputs = [dir.join("restarted.jsonl"), dir.join("process-1.jsonl")];
    let checkpointing = ["--checkpoint", checkpoints.to_str().unwrap(), "--checkpoint-interval", "20ms"];
    let processes = || {
        two_processes(&dir, |process, cluster| {
            run_command(&pipeline, &input, &outputs[process], &[cluster, &checkpointing[..]].concat())
        })
    };
    let kills = kill_and_restart_until_done(
        processes,
        &checkpoints,
        Kills { seed: 11, at_most: usize::MAX, after_progress: false },
    );
    let (expected, got) = (std::fs::read(&undisturbed).unwrap(), std::fs::read(&outputs[0]).unwrap());
    assert!(expected == got, "after {kills} kills: {} bytes written, {} expected", got.len(), expected.len());
    assert!(kills >= 5, "the run ended after {kills} kills: too short to test restarts");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A checkpoint restores on another number of workers: a run on two workers is killed after a
/// few checkpoints, restored on two processes of two workers each and killed again, restored on
/// three workers and killed again, restored on one worker and killed again, and finished on two. Each restore rebuilds every
/// operator's state from the old workers' (split by key, copies taken once, pending work
/// merged), and the changelog ends equal to an undisturbed run's, byte for byte.
#[test]
fn a_checkpoint_restores_on_two_processes_on_three_workers_on_one_and_on_two() {
    let dir = scratch_dir("restart-rescale");
    let (pipeline, input) = world(&dir, 300_000);
    // Late events that windows take after they fired: every 40th event read about a minute
    // late, with two minutes of allowed lateness.
    std::fs::write(&pipeline, format!("{SMALL_WORLD}\n[time]\nallowed_lateness = \"2m\"\n")).unwrap();
    let mut lines: Vec<String> = std::fs::read_to_string(&input).unwrap().lines().map(String::from).collect();
    for at in (0..lines.len().saturating_sub(600)).step_by(40) {
        let late = lines.remove(at);
        lines.insert(at + 600, late);
    }
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let undisturbed = dir.join("undisturbed.jsonl");
    run_ok(&mut run_command(&pipeline, &input, &undisturbed, &[]));
    let checkpoints = dir.join("checkpoints");
    let outputs = [dir.join("restarted.jsonl"), dir.join("process-1.jsonl")];
    let checkpointing = ["--checkpoint", checkpoints.to_str().unwrap(), "--checkpoint-interval", "20ms"];
    let on = |workers: usize, extra: &[&str], output: &Path| {
        run_on_workers(&pipeline, &input, output, workers, &[extra, &checkpointing[..]].concat())
    };
    // Killed once two more checkpoints are committed: the next run restores one of this run's.
    let run_and_kill = |mut commands: Vec<Command>| {
        let mut children: Vec<_> = commands.iter_mut().map(|command| command.spawn().unwrap()).collect();
        let target = committed(&checkpoints) + 2;
        assert!(kill_after(&mut children, &checkpoints, target, Duration::from_millis(30)), "ended before the kill");
    };
    run_and_kill(vec![on(2, &[], &outputs[0])]);
    run_and_kill(two_processes(&dir, |process, cluster| on(2, cluster, &outputs[process])));
    run_and_kill(vec![on(3, &[], &outputs[0])]);
    run_and_kill(vec![on(1, &[], &outputs[0])]);
    let stderr = run_ok(&mut on(2, &[], &outputs[0]));
    assert!(stderr.contains("restoring checkpoint"), "{stderr}");
    let (expected, got) = (std::fs::read(&undisturbed).unwrap(), std::fs::read(&outputs[0]).unwrap());
    assert!(expected == got, "{} bytes written, {} expected", got.len(), expected.len());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_damaged_newest_checkpoint_is_passed_over_and_a_changed_window_refused() {
    let (dir, pipeline, input, undisturbed) = undisturbed_run("restart-damage", 60_000);
    let output = dir.join("restarted.jsonl");
    let checkpoints = dir.join("checkpoints");
    let args =
        ["--checkpoint", checkpoints.to_str().unwrap(), "--checkpoint-interval", "20ms", "--checkpoint-keep", "3"];
    run_ok(&mut run_command(&pipeline, &input, &output, &args));
    assert!(committed(&checkpoints) >= 2, "two checkpoints to choose from");
    // Damage the newest checkpoint's first data file.
    let mut manifests: Vec<PathBuf> =
        std::fs::read_dir(checkpoints.join("manifests")).unwrap().map(|e| e.unwrap().path()).collect();
    manifests.sort();
    let newest: serde_json::Value = serde_json::from_slice(&std::fs::read(manifests.last().unwrap()).unwrap()).unwrap();
    let first_file = newest["manifest"]["files"][0]["name"].as_str().unwrap();
    let damaged = checkpoints.join("data").join(first_file);
    let mut bytes = std::fs::read(&damaged).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xFF;
    std::fs::write(&damaged, bytes).unwrap();
    // `recflow checkpoints` lists the damaged one with what is wrong, and the whole ones.
    let listing = recflow().arg("checkpoints").arg(&checkpoints).output().unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(listing.lines().next().is_some_and(|first| first.starts_with("damaged:")), "{listing}");
    assert!(listing.contains("2 workers, source at line "), "{listing}");
    let stderr = run_ok(&mut run_command(&pipeline, &input, &output, &args));
    assert!(stderr.contains("passing over a damaged checkpoint"), "{stderr}");
    assert!(std::fs::read(&undisturbed).unwrap() == std::fs::read(&output).unwrap(), "restored from the one before");
    // A changed window size changes results: refused, naming the key.
    let changed = dir.join("changed.toml");
    std::fs::write(&changed, SMALL_WORLD.replace("size = \"2m\"", "size = \"3m\"")).unwrap();
    let refused = run_command(&changed, &input, &output, &args).output().unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && stderr.contains("hot_items.size"), "{stderr}");
    // A changed server address does not.
    let serving = dir.join("serving.toml");
    let serve = "[serve]\naddr = \"127.0.0.1:0\"\nforget = false\nexplain = false\n";
    std::fs::write(&serving, format!("{SMALL_WORLD}\n{serve}")).unwrap();
    let mut child = run_command(&serving, &input, &output, &args).spawn().unwrap();
    assert!(wait_for_exit(&mut child, Duration::from_secs(120)).success());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Also: the checkpoint settings can come from the pipeline's `[checkpoint]` table.
#[test]
fn an_output_that_is_no_regular_file_is_left_alone_on_restore() {
    let dir = scratch_dir("restart-devnull");
    let (_, input) = world(&dir, 60_000);
    let checkpoints = dir.join("checkpoints");
    let pipeline = dir.join("checkpointed.toml");
    let table = format!("[checkpoint]\ndir = {:?}\ninterval = \"20ms\"\n", checkpoints.to_str().unwrap());
    std::fs::write(&pipeline, format!("{SMALL_WORLD}\n{table}")).unwrap();
    let args: [&str; 0] = [];
    let null = Path::new("/dev/null");
    run_ok(&mut run_command(&pipeline, &input, null, &args));
    assert!(committed(&checkpoints) >= 1);
    // The second run restores; /dev/null cannot be cut back, and need not be.
    let stderr = run_ok(&mut run_command(&pipeline, &input, null, &args));
    assert!(stderr.contains("restoring checkpoint") && stderr.contains(" restored in "), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn checkpoints_are_refused_where_a_restart_could_not_continue_exactly() {
    let dir = scratch_dir("restart-refused");
    let (pipeline, input) = world(&dir, 1_000);
    let checkpoints = dir.join("checkpoints");
    let refused = |extra: &[&str], expected: &str| {
        let mut command = recflow();
        command.arg("run").arg(&pipeline).args(["-q", "--checkpoint", checkpoints.to_str().unwrap()]).args(extra);
        let output = command.stdin(Stdio::null()).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success() && stderr.contains(expected), "{extra:?}: {stderr}");
    };
    refused(&["--input", "-"], "standard input cannot resume");
    let file = ["--input", input.to_str().unwrap()];
    let one_topic = ["--output", "kafka://127.0.0.1:1/recs", "--dead-letter", "kafka://127.0.0.1:1/recs"];
    refused(&[&file[..], &one_topic[..]].concat(), "go to one Kafka topic");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The posted records the newest whole checkpoint in `dir` had taken, as `recflow checkpoints`
/// lists them.
fn posted_taken(dir: &Path) -> u64 {
    let output = recflow().arg("checkpoints").arg(dir).output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let newest = text.lines().next().unwrap_or_default();
    newest.split(", ").find_map(|part| part.strip_suffix(" posted records taken")?.parse().ok()).unwrap_or(0)
}

/// Posts `users`' views of item 1 to the run; returns the answer's body.
fn post_views(run: &Running, users: &[u64]) -> serde_json::Value {
    let lines: Vec<String> =
        users.iter().map(|user| format!(r#"{{"user":{user},"item":1,"category":1,"action":"view"}}"#)).collect();
    let (status, body) = reply(
        agent().post(&run.url("/v1/events")).set("Content-Type", "application/x-ndjson").send_string(&lines.join("\n")),
    );
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// Events posted over HTTP while a run takes checkpoints are answered `durable`, and survive
/// kill -9: the restarted run posts again exactly those its checkpoint had not taken.
#[test]
fn posted_events_answered_durable_survive_a_kill() {
    let dir = scratch_dir("restart-posted");
    let pipeline = dir.join("live.toml");
    let world = SMALL_WORLD.replace("clusters = 5", "clusters = 5\nrate = 4000");
    std::fs::write(&pipeline, format!("{world}\n[serve]\naddr = \"127.0.0.1:0\"\n")).unwrap();
    let (output, checkpoints) = (dir.join("out.jsonl"), dir.join("checkpoints"));
    let args = [
        "-q",
        "--max-events",
        "40000",
        "--output",
        output.to_str().unwrap(),
        "--dead-letter",
        "/dev/null",
        "--checkpoint",
        checkpoints.to_str().unwrap(),
        "--checkpoint-interval",
        "200ms",
    ];
    let run = Running::start(&pipeline, &args, &[]);
    // Three users' first events, taken and then in a checkpoint...
    let answer = post_views(&run, &[990001, 990002, 990003]);
    assert_eq!(answer["durable"], true, "{answer}");
    wait_for(60, "a checkpoint holding the first posts", || posted_taken(&checkpoints) >= 3);
    // ...and two more, answered and then killed at once.
    post_views(&run, &[990004, 990005]);
    drop(run);
    let taken = posted_taken(&checkpoints);
    let mut restart = recflow();
    restart.arg("run").arg(&pipeline).args(args).stdin(Stdio::null()).stdout(Stdio::null());
    let stderr = run_ok(&mut restart);
    if taken < 5 {
        let again = format!("posting again {} records posted after checkpoint", 5 - taken);
        assert!(stderr.contains(&again), "{taken} taken: {stderr}");
    } else {
        assert!(!stderr.contains("posting again"), "{stderr}");
    }
    let changelog = std::fs::read_to_string(&output).unwrap();
    for user in 990001..=990005 {
        assert!(changelog.contains(&format!("\"user\":{user},")), "user {user}'s posted event is lost");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--fresh` starts over for good: it removes the checkpoints of the runs before, so a start
/// after it (after a crash before its own first checkpoint, say) cannot restore one of theirs.
#[test]
fn starting_over_removes_the_checkpoints_of_the_runs_before() {
    // Long enough to take checkpoints before its input ends (a checkpoint under way then is
    // abandoned).
    let (dir, pipeline, input, undisturbed) = undisturbed_run("restart-fresh", 300_000);
    let (output, checkpoints) = (dir.join("out.jsonl"), dir.join("checkpoints"));
    let often = ["--checkpoint", checkpoints.to_str().unwrap(), "--checkpoint-interval", "20ms"];
    run_ok(&mut run_command(&pipeline, &input, &output, &often));
    assert!(committed(&checkpoints) > 0, "the first run took checkpoints");
    let never = ["--checkpoint", checkpoints.to_str().unwrap(), "--checkpoint-interval", "1h"];
    let stderr = run_ok(&mut run_command(&pipeline, &input, &output, &[&never[..], &["--fresh"]].concat()));
    assert!(stderr.contains("starting over: removed"), "{stderr}");
    assert_eq!(committed(&checkpoints), 0, "no checkpoint of the run before is left");
    let stderr = run_ok(&mut run_command(&pipeline, &input, &output, &never));
    assert!(!stderr.contains("restoring"), "{stderr}");
    assert!(std::fs::read(&output).unwrap() == std::fs::read(&undisturbed).unwrap());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A user forgotten while a run takes checkpoints stays forgotten when the run starts over
/// (`--fresh`): the ledger of forgotten users takes the forget again at the time it retracted
/// at, so a replay of the same input ends with the same changelog, byte for byte.
#[test]
fn a_forgotten_user_stays_forgotten_when_the_run_starts_over() {
    let world = ForgettingWorld::new("restart-forgotten", "200ms");
    let first = world.dir.join("first.jsonl");
    let run = world.start(&first);
    let user = world.forget_a_user_with_a_list(&run, false);
    run.wait_for_end(60);
    // Starting over replays the input, and the forget with it.
    let again = world.start_over();
    assert!(std::fs::read(&first).unwrap() == again, "the replay's changelog differs: user {user} came back");
    let _ = std::fs::remove_dir_all(&world.dir);
}

/// A user forgotten just before the run is killed stays forgotten in the restored run: the
/// forget was synced to the ledger before its answer, and the restored run takes it again at the
/// time it retracted at (its checkpoint had not taken it, or had it pending), so the changelog
/// it finishes equals, byte for byte, that of a run starting over with the same ledger (which
/// takes every forget again at its time).
#[test]
fn a_user_forgotten_just_before_a_kill_stays_forgotten_in_the_restored_run() {
    let world = ForgettingWorld::new("restart-forgotten-kill", "1s");
    let killed = world.dir.join("killed.jsonl");
    let run = world.start(&killed);
    let user = world.forget_a_user_with_a_list(&run, true);
    // Killed (SIGKILL) at once, most likely before a checkpoint took the forget.
    drop(run);
    let mut restart = recflow();
    restart.arg("run").arg(&world.pipeline).args(world.args(&killed, &[])).stdin(Stdio::null()).stdout(Stdio::null());
    let stderr = run_ok(&mut restart);
    assert!(stderr.contains("restoring checkpoint"), "{stderr}");
    let fresh = world.start_over();
    let restored = std::fs::read(&killed).unwrap();
    assert!(restored == fresh, "the restored run's changelog differs: user {user} came back");
    let _ = std::fs::remove_dir_all(&world.dir);
}

/// A checkpoint of two workers restored on three: the events each worker kept in case their user
/// is forgotten are split among the new workers by user, so a user forgotten after the restore
/// loses every event, whichever old worker kept it, and the changelog equals that of a run
/// starting over with the same ledger.
#[test]
fn a_user_forgotten_after_a_restore_on_more_workers_loses_every_kept_event() {
    let world = ForgettingWorld::new("restart-forgotten-rescaled", "200ms");
    let output = world.dir.join("rescaled.jsonl");
    let run = world.start_on(&output, "2");
    wait_for(60, "two checkpoints", || committed(&world.checkpoints) >= 2);
    drop(run);
    let run = world.start_on(&output, "3");
    let user = world.forget_a_user_with_a_list(&run, false);
    run.wait_for_end(60);
    let fresh = world.start_over();
    let restored = std::fs::read(&output).unwrap();
    assert!(restored == fresh, "the changelog differs from a fresh run's: user {user} kept some events");
    let _ = std::fs::remove_dir_all(&world.dir);
}

/// A live generator world that serves and takes checkpoints, for the tests of forgotten users.
struct ForgettingWorld {
    dir: PathBuf,
    pipeline: PathBuf,
    checkpoints: PathBuf,
    interval: &'static str,
}

impl ForgettingWorld {
    /// In a fresh scratch directory, checkpoints every `interval`.
    fn new(tag: &str, interval: &'static str) -> ForgettingWorld {
        let dir = scratch_dir(tag);
        let pipeline = dir.join("live.toml");
        let world = SMALL_WORLD.replace("clusters = 5", "clusters = 5\nrate = 4000");
        std::fs::write(&pipeline, format!("{world}\n[serve]\naddr = \"127.0.0.1:0\"\n")).unwrap();
        let checkpoints = dir.join("checkpoints");
        ForgettingWorld { dir, pipeline, checkpoints, interval }
    }

    /// The arguments of a run of 20,000 events writing its changelog to `output`.
    fn args(&self, output: &Path, extra: &[&str]) -> Vec<String> {
        let mut args: Vec<String> =
            ["-q", "--max-events", "20000", "--dead-letter", "/dev/null", "--output"].map(String::from).to_vec();
        args.push(output.display().to_string());
        let checkpoints = self.checkpoints.to_str().unwrap();
        args.extend(["--checkpoint", checkpoints, "--checkpoint-interval", self.interval].map(String::from));
        args.extend(extra.iter().map(ToString::to_string));
        args
    }

    /// A served run writing its changelog to `output`.
    fn start(&self, output: &Path) -> Running {
        let args = self.args(output, &[]);
        Running::start(&self.pipeline, &args.iter().map(String::as_str).collect::<Vec<_>>(), &[])
    }

    /// [`ForgettingWorld::start`] on `workers` workers.
    fn start_on(&self, output: &Path, workers: &str) -> Running {
        let args = self.args(output, &["-w", workers]);
        Running::start(&self.pipeline, &args.iter().map(String::as_str).collect::<Vec<_>>(), &[])
    }

    /// Forgets a user who has a list (once a checkpoint is committed, with `after_a_checkpoint`);
    /// returns the user.
    fn forget_a_user_with_a_list(&self, run: &Running, after_a_checkpoint: bool) -> u64 {
        let mut user = None;
        wait_for(60, "a user with a list (and a checkpoint, if asked)", || {
            let has_list =
                |u: &u64| reply(agent().get(&run.url(&format!("/v1/users/{u}/recommendations"))).call()).0 == 200;
            user = (0..50).find(has_list);
            user.is_some() && (!after_a_checkpoint || committed(&self.checkpoints) >= 1)
        });
        let user = user.unwrap();
        let (status, body) = reply(agent().delete(&run.url(&format!("/v1/users/{user}"))).call());
        assert!(status == 200 || status == 202, "{status} {body}");
        user
    }

    /// The changelog of a run starting over (`--fresh`) with the ledger of forgotten users, which
    /// must forget one user again.
    fn start_over(&self) -> Vec<u8> {
        let fresh = self.dir.join("fresh.jsonl");
        let mut over = recflow();
        over.arg("run")
            .arg(&self.pipeline)
            .args(self.args(&fresh, &["--fresh"]))
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        let stderr = run_ok(&mut over);
        assert!(stderr.contains("forgetting again 1 users"), "{stderr}");
        std::fs::read(&fresh).unwrap()
    }
}
