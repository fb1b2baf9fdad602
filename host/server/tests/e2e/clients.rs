//! Running the official RocketMQ clients through their drivers in `tests/clients/` (installed by
//! `scripts/test.sh`), and reading the JSON events they print.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// An official client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Client {
    Python,
    Node,
    Rust,
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

impl Client {
    /// The driver's command, run inside network namespace `ns` when given.
    fn command_in(self, ns: Option<&str>) -> Command {
        let clients = repo().join("tests/clients");
        let (program, script): (PathBuf, Option<PathBuf>) = match self {
            Client::Python => (clients.join("python/.venv/bin/python"), Some(clients.join("python/driver.py"))),
            Client::Node => (PathBuf::from("node"), Some(clients.join("node/driver.js"))),
            Client::Rust => (clients.join("rust/target/debug/driver"), None),
        };
        let installed = match self {
            Client::Node => clients.join("node/node_modules/rocketmq-client-nodejs").exists(),
            _ => program.exists(),
        };
        assert!(installed, "the official {self:?} client is not installed: run ./scripts/test.sh, which installs it");
        let mut command = match ns {
            Some(ns) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", ns]).arg(program);
                command
            }
            None => Command::new(program),
        };
        command.args(script);
        // The clients write their own logs under $HOME; keep them out of the user's home.
        command.env("HOME", std::env::temp_dir().join("ferrymq-client-home"));
        command
    }

    /// Runs the driver with `args` against `endpoint` and returns its events. Fails the test if it
    /// does not finish within `limit`.
    pub fn run(self, endpoint: std::net::SocketAddr, args: &[&str], limit: Duration) -> Events {
        self.spawn(endpoint, args).wait(limit)
    }

    /// Sends `count` messages to `topic` (`extra`: produce options); the run must succeed.
    pub fn produce(self, endpoint: std::net::SocketAddr, topic: &str, count: usize, extra: &[&str]) -> Events {
        let count = count.to_string();
        let mut args = vec!["produce", "--topic", topic, "--count", &count];
        args.extend_from_slice(extra);
        self.run(endpoint, &args, crate::compat_limit()).ok()
    }

    /// Receives with a SimpleConsumer until `expect` messages or `timeout_s`; the run must succeed.
    pub fn simple(
        self,
        endpoint: std::net::SocketAddr,
        group: &str,
        topic: &str,
        expect: usize,
        timeout_s: u32,
        extra: &[&str],
    ) -> Events {
        let (expect, timeout) = (expect.to_string(), timeout_s.to_string());
        let mut args = vec!["simple", "--group", group, "--topic", topic, "--expect", &expect, "--timeout-s", &timeout];
        args.extend_from_slice(extra);
        self.run(endpoint, &args, crate::compat_limit()).ok()
    }

    /// Starts the driver in the background.
    pub fn spawn(self, endpoint: std::net::SocketAddr, args: &[&str]) -> Running {
        self.spawn_in(None, endpoint, args)
    }

    /// Starts the driver in the background, inside network namespace `ns` when given.
    pub fn spawn_in(self, ns: Option<&str>, endpoint: std::net::SocketAddr, args: &[&str]) -> Running {
        let mut child = self
            .command_in(ns)
            .arg(endpoint.to_string())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start the {self:?} driver: {e}"));
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running { client: self, child, lines, seen: Vec::new(), args: args.iter().map(|a| (*a).to_owned()).collect() }
    }
}

/// A driver running in the background.
pub struct Running {
    client: Client,
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
    args: Vec<String>,
}

impl Running {
    /// Waits until the driver has printed `n` events (of any kind), or `limit` passes.
    pub fn wait_events(&mut self, n: usize, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.seen.len() < n {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else { return };
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => return,
            }
        }
    }

    /// Waits until the driver has printed `n` events of `kind`, or `limit` passes.
    pub fn wait_kind(&mut self, kind: &str, n: usize, limit: Duration) {
        let deadline = Instant::now() + limit;
        let count = |seen: &[String]| {
            seen.iter().filter_map(|l| serde_json::from_str::<Value>(l).ok()).filter(|e| e["event"] == kind).count()
        };
        while count(&self.seen) < n {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else { return };
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => return,
            }
        }
    }

    /// Waits for the driver to finish; fails the test if it takes longer than `limit`.
    pub fn wait(mut self, limit: Duration) -> Events {
        let deadline = Instant::now() + limit;
        while self.child.try_wait().expect("wait").is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                let events = self.collect();
                panic!(
                    "{:?} driver {:?} did not finish within {limit:?}; output so far: {:?}",
                    self.client, self.args, events.events
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.collect()
    }

    /// Kills the driver (SIGKILL) and returns what it printed until then.
    pub fn kill(mut self) -> Events {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.collect()
    }

    fn collect(&mut self) -> Events {
        let mut stderr = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut stderr);
        }
        // The reader thread ends when the process's stdout closes.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(line);
        }
        let events: Vec<Value> = self.seen.iter().filter_map(|l| serde_json::from_str(l).ok()).collect();
        Events { client: self.client, events, stderr }
    }
}

/// What a driver run printed.
#[derive(Debug)]
pub struct Events {
    pub client: Client,
    pub events: Vec<Value>,
    pub stderr: String,
}

impl Events {
    pub fn of(&self, kind: &str) -> Vec<&Value> {
        self.events.iter().filter(|e| e["event"] == kind).collect()
    }

    /// Fails the test unless the run ended with `done`.
    pub fn ok(self) -> Self {
        assert!(
            self.of("done").len() == 1,
            "{:?} driver did not finish cleanly: {:?}\n{}",
            self.client,
            self.events,
            self.stderr
        );
        self
    }

    /// Ids of the messages sent.
    pub fn sent(&self) -> Vec<String> {
        self.of("sent").iter().map(|e| e["id"].as_str().unwrap_or_default().to_owned()).collect()
    }

    /// The error texts of refused sends, by message index.
    pub fn errors(&self) -> BTreeMap<u64, String> {
        self.of("error")
            .iter()
            .map(|e| (e["index"].as_u64().unwrap_or(0), e["error"].as_str().unwrap_or_default().to_owned()))
            .collect()
    }

    /// Bodies of received messages, in arrival order.
    pub fn bodies(&self) -> Vec<String> {
        self.of("received").iter().map(|e| e["body"].as_str().unwrap_or_default().to_owned()).collect()
    }

    pub fn sorted_bodies(&self) -> Vec<String> {
        let mut bodies = self.bodies();
        bodies.sort();
        bodies
    }
}

/// `prefix0..prefixN` sorted as strings, the way `sorted_bodies` returns them.
pub fn names(prefix: &str, n: usize) -> Vec<String> {
    let mut v: Vec<String> = (0..n).map(|i| format!("{prefix}{i}")).collect();
    v.sort();
    v
}
