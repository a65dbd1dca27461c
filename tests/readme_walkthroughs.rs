//! README.md's "The two commands" and "Serving" walkthroughs work as written: the commands are
//! read out of README.md itself (the indented code lines of each section), run, and their output
//! checked against what the README shows, so an edit that breaks a command, or a change of the
//! program that makes the README wrong, fails here.
//!
//! What is substituted: the serving address (`--serve` alone means `127.0.0.1:8080`; the test
//! passes `--serve 127.0.0.1:0` and puts the printed address in place of the README's
//! `http://127.0.0.1:8080`), the working directory (a scratch copy of the demo pipeline with the
//! `[serve]` token the README's posts assume), and `cargo run --release --` (the binary built
//! with the tests, the same program in the debug profile). Long-running commands (the demo, the
//! server, `curl -sN` subscriptions, the subscribe example) are started, watched until they show
//! what the README says, and stopped as a user would with Ctrl-C. The dashboard's screenshot
//! command runs Debian's `chromium` as written (`scripts/test.sh` installs it when missing), writing
//! into the scratch directory.

mod common;

use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use common::serve::Running;
use common::OutputWithin;
use common::{recflow, scratch_dir};
use serde_json::Value;

/// The README's serving address, a placeholder for the one the server picks.
const README_BASE: &str = "http://127.0.0.1:8080";

fn readme() -> String {
    std::fs::read_to_string("README.md").expect("README.md is readable")
}

/// The text of the README section headed `## {title}`, up to the next `## ` heading.
fn section(readme: &str, title: &str) -> String {
    let heading = format!("## {title}\n");
    let start = readme.find(&heading).unwrap_or_else(|| panic!("README.md has no section `{title}`"));
    let body = &readme[start + heading.len()..];
    body[..body.find("\n## ").unwrap_or(body.len())].to_string()
}

/// One command of a code block, with the output the README shows after it (the lines up to the
/// next command or comment) or in a comment on its own line (`cmd     # output`).
#[derive(Debug)]
struct Step {
    command: String,
    output: Vec<String>,
}

impl Step {
    /// The README's output as one text, continuation lines joined.
    fn sample(&self) -> String {
        self.output.iter().map(|l| l.trim()).collect::<Vec<_>>().join("")
    }
}

/// The commands of a section's code blocks (lines indented by four spaces), in order.
fn steps(section: &str) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    let mut lines = section.lines().filter_map(|l| l.strip_prefix("    ")).map(str::trim).filter(|l| !l.is_empty());
    let starts_command = |l: &str| ["curl ", "recflow ", "cargo ", "./", "chromium "].iter().any(|p| l.starts_with(p));
    let mut in_output = false;
    while let Some(line) = lines.next() {
        if line.starts_with('#') {
            in_output = false;
        } else if starts_command(line) {
            let mut command = line.to_string();
            while command.ends_with('\\') {
                command.pop();
                command.push(' ');
                command.push_str(lines.next().expect("a continued line continues"));
            }
            let mut output = Vec::new();
            if let Some((cmd, comment)) = command.split_once(" # ") {
                output.push(comment.trim().to_string());
                command = cmd.trim().to_string();
            }
            steps.push(Step { command, output });
            in_output = true;
        } else {
            assert!(in_output, "README line `{line}` is neither a command, a comment nor a command's output");
            steps.last_mut().unwrap().output.push(line.to_string());
        }
    }
    steps
}

/// A README sample answer as JSON: elisions (`,...]`, `[...]`, `:...,`) become nothing, empty
/// lists and zeros.
fn sample_json(sample: &str) -> Value {
    let text = sample.replace(",...]", "]").replace("[...]", "[]").replace(":...,", ":0,");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("README sample `{sample}` is not JSON: {e}"))
}

/// Asserts that `actual` has the shape of the README's `sample`: every key of a sample object is
/// in the answer, sample strings and booleans are the answer's, numbers are numbers, and list
/// elements look like the sample's elements (a popular fill-in, `"fallback":true`, like a
/// fill-in of the sample, when it shows one).
fn assert_shape(sample: &Value, actual: &Value, at: &str) {
    match sample {
        Value::Object(keys) => {
            for (key, value) in keys {
                let found = actual.get(key).unwrap_or_else(|| panic!("{at}: no `{key}` in {actual}"));
                assert_shape(value, found, &format!("{at}.{key}"));
            }
        }
        Value::Array(elements) => {
            let list = actual.as_array().unwrap_or_else(|| panic!("{at}: {actual} is not a list"));
            let fallback = |v: &Value| v.get("fallback") == Some(&Value::Bool(true));
            for (i, element) in list.iter().enumerate() {
                if let Some(like) = elements.iter().find(|s| fallback(s) == fallback(element)) {
                    assert_shape(like, element, &format!("{at}[{i}]"));
                }
            }
        }
        Value::Number(_) => assert!(actual.is_number(), "{at}: {actual} is not a number"),
        _ => assert_eq!(actual, sample, "{at}"),
    }
}

/// A long-running command's standard output, line by line.
struct Watched {
    child: Child,
    lines: Receiver<String>,
    /// Every line received so far.
    seen: std::cell::RefCell<Vec<String>>,
}

impl Watched {
    fn spawn(command: &mut Command) -> Watched {
        // A process group of its own, as a terminal gives a command: Ctrl-C reaches every process
        // of it (a shell that did not replace itself with the command, as well as the command).
        use std::os::unix::process::CommandExt;
        let mut child = command.stdout(Stdio::piped()).process_group(0).spawn().expect("the command starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Watched { child, lines, seen: Default::default() }
    }

    /// Receives lines until `done` holds for all received so far (or already holds), failing after
    /// `secs` seconds with `what`; returns every line received.
    fn until(&self, secs: u64, what: &str, done: impl Fn(&[String]) -> bool) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !done(&self.seen.borrow()) {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).unwrap_or_else(|_| {
                let seen = self.seen.borrow();
                panic!("{what}: not within {secs} s; got {} lines, the last {:?}", seen.len(), seen.last())
            });
            self.seen.borrow_mut().push(line);
        }
        self.seen.borrow().clone()
    }

    /// Ctrl-C (to the command's process group), then the exit status (within 30 s).
    fn interrupt(mut self) -> std::process::ExitStatus {
        let group = format!("-{}", self.child.id());
        assert!(Command::new("kill").args(["-INT", "--", &group]).status().unwrap().success());
        common::wait_for_exit(&mut self.child, Duration::from_secs(30))
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.wait();
    }
}

/// Server-Sent Events in `lines`, as (event, data), each data parsed by `parse`.
fn events(lines: &[String], parse: impl Fn(&str) -> Value) -> Vec<(String, Value)> {
    let mut events = Vec::new();
    let mut name = String::new();
    for line in lines {
        if let Some(event) = line.strip_prefix("event: ") {
            name = event.to_string();
        } else if let Some(data) = line.strip_prefix("data: ") {
            events.push((std::mem::take(&mut name), parse(data)));
        }
    }
    events
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("`{text}` is not JSON: {e}"))
}

#[test]
fn the_two_commands_run_the_demo_and_name_the_ci_script() {
    let readme = readme();
    let steps = steps(&section(&readme, "The two commands"));
    let commands: Vec<&str> = steps.iter().map(|s| s.command.as_str()).collect();
    assert_eq!(commands.len(), 2, "the two commands: {commands:?}");

    // The demo, with the binary the tests built in place of `cargo run --release --`: it streams
    // recommendations and hot items on stdout until Ctrl-C, then exits cleanly.
    let args = commands[0].strip_prefix("cargo run --release -- ").expect("the demo runs with cargo run --release");
    let demo = Watched::spawn(recflow().args(args.split_whitespace()).stderr(Stdio::null()));
    let (recs, hot) = (std::cell::Cell::new(false), std::cell::Cell::new(false));
    demo.until(60, "the demo streams recommendations and hot items", |lines| {
        if let Some(line) = lines.last() {
            let kind = json(line)["type"].clone();
            recs.set(recs.get() || kind == "recs");
            hot.set(hot.get() || kind == "hot_items");
        }
        recs.get() && hot.get()
    });
    assert!(demo.interrupt().success(), "the demo exits cleanly on Ctrl-C");

    // The test command is the script CI runs; it is not run from here (it runs this test).
    let script = commands[1];
    let mode = std::fs::metadata(script).unwrap_or_else(|e| panic!("{script}: {e}")).permissions();
    assert!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o111 != 0, "{script} is executable");
    let ci = std::fs::read_to_string(".ci/run").unwrap();
    assert!(ci.lines().any(|l| l.trim() == format!("exec {script}")), ".ci/run runs {script}:\n{ci}");
    let script = std::fs::read_to_string(script).unwrap();
    for step in ["cargo fmt", "cargo clippy --all-targets", "cargo test --all-targets", "cargo test --doc"] {
        assert!(script.contains(step), "the test script runs `{step}`, as the README says");
    }
    // The broker install the README describes is the script's.
    let version = script.lines().find_map(|l| l.strip_prefix("TANSU_VERSION=")).expect("the script pins Tansu");
    let install = format!("cargo install tansu --version {version} --locked --features libsql");
    assert!(readme.contains(&format!("`{install}`")), "the README gives the script's install command: {install}");
    assert!(script.contains(&install.replace(version, "\"$TANSU_VERSION\"")), "{install}");
}

/// The Serving walkthrough: its server, and its commands with the served address in place of the
/// README's.
struct Serving {
    dir: PathBuf,
    base: String,
    /// Stopped when dropped.
    _server: Running,
}

impl Serving {
    fn start(command: &str, token: &str) -> Serving {
        let dir = scratch_dir("readme-serving");
        std::fs::create_dir_all(dir.join("pipelines")).unwrap();
        let demo = std::fs::read_to_string("pipelines/demo.toml").unwrap();
        std::fs::write(dir.join("pipelines/demo.toml"), format!("{demo}\n[serve]\n{token}\n")).unwrap();
        let words: Vec<&str> = command.split_whitespace().collect();
        assert_eq!(words[..2], ["recflow", "run"], "{command}");
        // `--serve` alone would listen on the README's fixed port.
        let args: Vec<&str> =
            words[3..].iter().flat_map(|&w| if w == "--serve" { vec![w, "127.0.0.1:0"] } else { vec![w] }).collect();
        let server = Running::start(&dir.join(words[2]), &args, &[]);
        let base = server.url("");
        Serving { dir, base, _server: server }
    }

    /// A README command line with the served address in place of the README's.
    fn shell(&self, command: &str) -> Command {
        assert!(command.contains(README_BASE), "`{command}` talks to the README's address");
        let mut shell = Command::new("bash");
        shell.arg("-c").arg(command.replace(README_BASE, &self.base)).current_dir(&self.dir);
        shell
    }

    /// Runs a README command to completion; its standard output.
    fn run(&self, command: &str) -> String {
        let output = self.shell(command).output_within();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "`{command}` failed: {}\n{stderr}", output.status);
        String::from_utf8(output.stdout).unwrap()
    }

    /// Runs a README command until its answer is JSON with `key` (a list not there yet is a 404
    /// error object, or the popular items a user without a list gets), failing after `secs`
    /// seconds.
    fn run_until(&self, command: &str, key: &str, secs: u64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let output = self.run(command);
            let answer: Value =
                serde_json::from_str(&output).unwrap_or_else(|e| panic!("`{command}` answered {output}: {e}"));
            if answer.get(key).is_some() && answer.get("popular").is_none() {
                return answer;
            }
            assert!(Instant::now() < deadline, "`{command}` answered {answer} for {secs} s");
            std::thread::park_timeout(Duration::from_millis(100));
        }
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The path and query a README command asks for.
fn query(command: &str) -> String {
    let url = command.split_whitespace().find(|w| w.contains(README_BASE));
    let url = url.unwrap_or_else(|| panic!("no URL in `{command}`")).trim_matches('\'');
    url.trim_start_matches(README_BASE).to_string()
}

#[test]
fn the_serving_walkthrough_works_as_written() {
    let readme = readme();
    let text = section(&readme, "Serving");
    let steps = steps(&text);
    assert!(text.contains("(`recflow: serving on http://127.0.0.1:8080`)"), "the README shows the address line");
    // The posts assume a token: `token = "SECRET"` in `[serve]`.
    let token = text.split("the posts assume `").nth(1).and_then(|t| t.split('`').next()).expect("the assumed token");
    let secret = token.split('"').nth(1).expect("a quoted token");

    let (first, rest) = steps.split_first().unwrap();
    let serving = Serving::start(&first.command, token);
    let mut subscriptions: Vec<(String, Watched, &Step)> = Vec::new();
    let mut checked = 1;
    for step in rest {
        let command = step.command.as_str();
        let path = query(command);
        if command.starts_with("curl -sN ") {
            // A subscription streams until Ctrl-C: started here, read as the walkthrough goes on.
            subscriptions.push((path, Watched::spawn(&mut serving.shell(command)), step));
        } else if command.contains("-X POST") {
            let output = serving.run(command);
            let sample = sample_json(&step.sample());
            assert_eq!(
                serde_json::from_str::<Value>(&output).unwrap(),
                sample,
                "`{command}` answers as the README says"
            );
            if command.contains(&format!("Bearer {secret}")) {
                // The posted user's list reaches a subscriber following them.
                let (_, watched, _) = subscriptions
                    .iter()
                    .find(|(path, ..)| path.contains("users=") && path.contains("alice"))
                    .expect("a subscription following the posted user comes first");
                watched.until(60, "the posted user's change", |lines| {
                    events(lines, json).iter().any(|(name, data)| name == "change" && data["user"] == "alice")
                });
            }
        } else if command.contains("-X DELETE") {
            let answer = json(&serving.run(command));
            assert_shape(&sample_json(&step.sample()), &answer, command);
            assert!(answer["complete_at"].as_u64() <= answer["as_of"].as_u64(), "complete: {answer}");
        } else if path == "/metrics" {
            let output = serving.run(command);
            assert_eq!(step.sample(), "Prometheus text");
            let bullet = text.split("- **Metrics**").nth(1).unwrap().split("\n- ").next().unwrap();
            for name in bullet.split('`').filter(|w| w.starts_with("recflow_")) {
                let name = name.split('{').next().unwrap();
                assert!(output.contains(&format!("# TYPE {name} ")), "/metrics has {name}, as the README says");
            }
            let events_in = output.lines().find_map(|l| l.strip_prefix("recflow_events_in_total ")).unwrap();
            assert!(events_in.parse::<f64>().unwrap() > 0.0, "events were read: {output}");
        } else if path == "/healthz" {
            // The subscriptions were stopped with Ctrl-C by now; the server notices the next time
            // it writes to them.
            for (path, watched, sample) in subscriptions.drain(..) {
                check_subscription(&path, &watched, sample);
                watched.interrupt();
            }
            let deadline = Instant::now() + Duration::from_secs(20);
            let sample = sample_json(&step.sample());
            loop {
                let answer = json(&serving.run(command));
                if answer["subscribers"] == sample["subscribers"] || Instant::now() > deadline {
                    assert_shape(&sample, &answer, command);
                    assert_eq!(answer["subscribers"], sample["subscribers"], "the subscriptions are closed");
                    assert_eq!(answer.as_object().unwrap().len(), sample.as_object().unwrap().len(), "{answer}");
                    break;
                }
                std::thread::park_timeout(Duration::from_millis(100));
            }
        } else if path == "/v1/status" {
            let answer = json(&serving.run(command));
            assert_shape(&sample_json(&step.sample()), &answer, command);
            assert!(
                answer["records_read"].as_u64() > Some(0) && answer["events_per_s"].as_f64() > Some(0.0),
                "{answer}"
            );
            // The post's event from before the stream is the one dead letter (the demo's own
            // events are never late: their jitter is within its out-of-orderness), counted and
            // sampled as late.
            assert_eq!(answer["late"], 1, "the posted event from before the stream is late: {answer}");
            let rejected: u64 = answer["rejected"].as_object().unwrap().values().map(|n| n.as_u64().unwrap()).sum();
            assert_eq!(rejected, 0, "{answer}");
            let samples = answer["dead_letters"].as_array().unwrap();
            assert!(
                samples.len() == 1
                    && samples[0]["reason"] == "late"
                    && samples[0]["raw"].as_str().unwrap().contains("\"item\":18"),
                "the late post is sampled: {answer}"
            );
        } else if command.starts_with("chromium ") {
            // The dashboard's screenshot, into the scratch directory's docs/.
            std::fs::create_dir_all(serving.dir.join("docs")).unwrap();
            serving.run(command);
            let shot = command.split("--screenshot=").nth(1).unwrap().split_whitespace().next().unwrap();
            let png =
                std::fs::read(serving.dir.join(shot)).unwrap_or_else(|e| panic!("`{command}` wrote no {shot}: {e}"));
            assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "{shot} is a screenshot");
        } else if path.starts_with("/v1/users/5/recommendations") {
            // The demo takes a moment to give user 5 a list; until then the answer is a 404, then
            // the popular items.
            let answer = serving.run_until(command, "items", 60);
            let k: usize = path.split("k=").nth(1).unwrap().split('&').next().unwrap().parse().unwrap();
            let items = answer["items"].as_array().unwrap();
            assert!(!items.is_empty() && items.len() <= k, "at most k={k} items: {answer}");
            assert_eq!(answer["user"], 5);
            assert!(answer["time"].as_u64() <= answer["as_of"].as_u64(), "{answer}");
            if !step.output.is_empty() {
                assert_shape(&sample_json(&step.sample()), &answer, command);
            }
            if path.contains("explain=true") {
                for item in items {
                    if item.get("fallback") == Some(&Value::Bool(true)) {
                        assert_eq!(item["because"], "popular fallback", "a fill-in says so: {item}");
                        continue;
                    }
                    let because = item["because"].as_array().unwrap();
                    let total: f64 = because.iter().map(|b| b["contribution"].as_f64().unwrap()).sum();
                    assert!((total - item["score"].as_f64().unwrap()).abs() < 1e-5, "contributions add up: {item}");
                }
            }
        } else if path.starts_with("/v1/hot-items") {
            // Until the first window closes (or the one asked for), the answer is a 404.
            let answer = serving.run_until(command, "lists", 60);
            let lists = answer["lists"].as_array().unwrap();
            assert!(!lists.is_empty() && lists.iter().all(|l| l["items"].as_array().is_some_and(|i| i.len() == 3)));
            assert_eq!(answer["window_end"].as_u64().unwrap() - answer["window_start"].as_u64().unwrap(), 3600);
            if let Some(end) = path.split("window_end=").nth(1) {
                assert_eq!(answer["window_end"].to_string(), end, "the window asked for");
            }
            if !step.output.is_empty() {
                // A closed window of the seeded demo is the same on every run: the README's.
                let mut sample = sample_json(&step.sample());
                let mut answer = answer.clone();
                sample.as_object_mut().unwrap().remove("as_of");
                answer.as_object_mut().unwrap().remove("as_of");
                assert_eq!(answer, sample, "`{command}` answers as the README shows");
            }
        } else {
            panic!("the walkthrough's `{command}` is not checked here");
        }
        checked += 1;
    }
    assert!(subscriptions.is_empty(), "every subscription was checked");
    assert_eq!(checked, steps.len());

    // The subscribe example, named after the walkthrough.
    let example =
        text.split('`').find(|w| w.starts_with("cargo run --example subscribe")).expect("the subscribe example");
    let (user, k) = match example.split_whitespace().rev().take(2).collect::<Vec<_>>()[..] {
        [k, user] => (user.to_string(), k.parse::<usize>().unwrap()),
        _ => unreachable!(),
    };
    let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cargo
        .args(example.trim_start_matches("cargo ").replace(README_BASE, &serving.base).split_whitespace())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stderr(Stdio::null());
    let watched = Watched::spawn(&mut cargo);
    // Compiling the example can take a while on a busy machine.
    let lines = watched.until(300, "the example prints the user's list", |lines| lines.len() >= 2);
    assert_eq!(lines[0], format!("following user {user} at {}/v1/subscribe?users={user}", serving.base));
    let list = lines[1].split_once(" snapshot: ").unwrap_or_else(|| panic!("the list: {}", lines[1])).1;
    assert!((1..=k).contains(&list.split(", ").count()), "at most {k} items: {list}");
    watched.interrupt();
}

/// A subscription's events are the README's: a snapshot first, then every kind of event the
/// README shows (snapshot, progress, change), each shaped like the README's sample of its kind.
fn check_subscription(path: &str, watched: &Watched, step: &Step) {
    let samples = events(&step.output, sample_json);
    let lines = watched.until(30, "the subscription's events", |lines| {
        let seen = events(lines, json);
        seen.iter().any(|(name, _)| name == "progress") && samples.iter().all(|(n, _)| seen.iter().any(|(s, _)| s == n))
    });
    let events = events(&lines, json);
    assert_eq!(events[0].0, "snapshot", "{path}: a snapshot first: {events:?}");
    for (name, data) in &events {
        if let Some((_, sample)) = samples.iter().find(|(n, _)| n == name) {
            assert_shape(sample, data, &format!("{path} {name}"));
        }
    }
}
