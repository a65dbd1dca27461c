//! Running `recflow run` with a server from a test, and talking to it: requests, polling with
//! deadlines, Server-Sent Events.

use std::io::BufRead;
use std::process::{Child, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::recflow;

/// A `recflow run` with a server, stopped (SIGTERM) when dropped.
pub struct Running {
    child: Child,
    base: String,
    stdin: Option<std::process::ChildStdin>,
}

impl Running {
    /// Starts `recflow run PIPELINE ARGS` with `env` and waits for the address it serves on.
    pub fn start(pipeline: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Running {
        Running::spawn(pipeline, args, env, Stdio::null())
    }

    /// Like [`Running::start`], with standard input a pipe the test writes to ([`Running::stdin`]).
    pub fn start_reading_stdin(pipeline: &std::path::Path, args: &[&str]) -> Running {
        Running::spawn(pipeline, args, &[], Stdio::piped())
    }

    /// Starts `command`, a `recflow run` with a server (perhaps wrapped, as long as it `exec`s
    /// recflow), and waits for the address it serves on.
    pub fn start_command(command: std::process::Command) -> Running {
        Running::launch(command, Stdio::null())
    }

    fn spawn(pipeline: &std::path::Path, args: &[&str], env: &[(&str, &str)], stdin: Stdio) -> Running {
        let mut command = recflow();
        command.envs(env.iter().copied()).arg("run").arg(pipeline).args(args);
        Running::launch(command, stdin)
    }

    fn launch(mut command: std::process::Command, stdin: Stdio) -> Running {
        let mut child =
            command.stdin(stdin).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("recflow starts");
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
        let stdin = child.stdin.take();
        Running { child, base, stdin }
    }

    /// The run's standard input, when started with [`Running::start_reading_stdin`]; drop it
    /// (take it) to end the input.
    pub fn stdin(&mut self) -> &mut Option<std::process::ChildStdin> {
        &mut self.stdin
    }

    /// The full URL of `path` on the run's server.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Waits (with a deadline of `secs` seconds) for the run to end by itself, successfully.
    pub fn wait_for_end(mut self, secs: u64) {
        self.exits_successfully_within(secs, "by itself");
    }

    /// Sends SIGTERM and waits (with a deadline) for a successful exit.
    pub fn stop(mut self) {
        let pid = self.child.id().to_string();
        assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        self.exits_successfully_within(30, "on SIGTERM");
    }

    fn exits_successfully_within(&mut self, secs: u64, how: &str) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "recflow exits cleanly {how}: {status}");
                return;
            }
            assert!(Instant::now() < deadline, "recflow did not exit within {secs} s {how}");
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

pub fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new().timeout_connect(Duration::from_secs(10)).timeout_read(Duration::from_secs(30)).build()
}

/// The status and body of a request's answer, whatever the status.
pub fn reply(result: Result<ureq::Response, ureq::Error>) -> (u16, String) {
    match result {
        Ok(response) => (response.status(), response.into_string().unwrap_or_default()),
        Err(ureq::Error::Status(code, response)) => (code, response.into_string().unwrap_or_default()),
        Err(e) => panic!("request failed: {e}"),
    }
}

pub fn get(url: &str) -> (u16, Value) {
    let (status, body) = reply(agent().get(url).call());
    (status, serde_json::from_str(&body).unwrap_or(Value::String(body)))
}

/// The value of the unlabelled metric `name` in the run's `/metrics`, if it is there.
pub fn metric(run: &Running, name: &str) -> Option<u64> {
    let (_, metrics) = reply(agent().get(&run.url("/metrics")).call());
    metrics.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Polls `check` until it holds, failing after `secs` seconds with `what`.
pub fn wait_for(secs: u64, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check() {
        assert!(Instant::now() < deadline, "{what}: not within {secs} s");
        std::thread::park_timeout(Duration::from_millis(50));
    }
}

/// Subscribes to `url`; its Server-Sent Events arrive as (event, data) on the receiver.
pub fn subscribe(url: &str) -> Receiver<(String, Value)> {
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
pub fn receive_until(
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
