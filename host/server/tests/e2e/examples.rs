//! The deployments in `examples/` work as their READMEs say. `examples/cluster/run.sh` brings up two
//! name servers and two masters with a slave each; a message sent through a master is read back, and
//! once a master is killed its set's messages are read from its slave. `examples/plugins/run.sh`
//! starts a node whose configuration file binds the example plugins, and each binding acts on real
//! traffic. `examples/zones/run.sh` starts a DMZ and an intranet broker with a zone gateway each way;
//! applications cross inward redacted, filings in order, and only classified decisions outward.
//!
//! The scripts run as a user runs them, with the `ferrymq` this build produced (`FERRYMQ`), ports
//! free now (`BASE_PORT`) and a temporary data directory (`DATA_DIR`). The cluster steps use the
//! README's own commands (`ferrymq admin`, `ferrymq bench`); the plugins example's sends carry
//! properties, which `ferrymq bench` does not set, so they go through `ferrymq-client` instead of the
//! official client the README shows (so do the zones example's). The plugins and zones examples need
//! the components built (`cd plugins && cargo build --release --target wasm32-wasip2`;
//! `scripts/test.sh` builds them).

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use ferrymq_client::{Client, ClientOptions, Message, Receive};
use serde_json::Value;

use crate::support::{http_get, run};

/// How long a script may take to report its deployment ready.
const READY_MAX: Duration = Duration::from_secs(120);
/// How long a script may take to stop everything it started.
const STOP_MAX: Duration = Duration::from_secs(90);

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

/// Port windows handed out in this process, so that tests running side by side never share one.
static PORTS_TAKEN: Mutex<Vec<(u16, u16)>> = Mutex::new(Vec::new());

/// A base port such that every `base + offset` is free on loopback now, in 10000..30000 (below the
/// kernel's ephemeral range, where other tests' port-0 listeners land).
fn free_base(offsets: &[u16]) -> u16 {
    let span = offsets.iter().copied().max().unwrap_or(0) + 1;
    let mut taken = PORTS_TAKEN.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let mut state = u64::from(seed) ^ (u64::from(std::process::id()) << 32);
    for _ in 0..500 {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let base = 10_000 + ((state >> 33) % u64::from(20_000 - span)) as u16;
        if taken.iter().any(|&(from, to)| base < to && from < base + span) {
            continue;
        }
        let all_free = offsets.iter().all(|o| TcpListener::bind(("127.0.0.1", base + o)).is_ok());
        if all_free {
            taken.push((base, base + span));
            return base;
        }
    }
    panic!("no free window of {span} loopback ports in 500 tries");
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// An example's `run.sh`, running in the foreground as a user runs it; its stdout and stderr are
/// gathered line by line. Dropped while still running, it gets SIGTERM (Ctrl-C's twin), which makes
/// it stop everything it started.
struct Script {
    example: &'static str,
    base_port: u16,
    data: tempfile::TempDir,
    child: Child,
    output: Receiver<String>,
    lines: Vec<String>,
}

impl Script {
    fn command(example: &str, base_port: u16, data: &Path, args: &[&str]) -> Command {
        let mut command = Command::new("bash");
        command
            .arg(examples().join(example).join("run.sh"))
            .args(args)
            .env("FERRYMQ", env!("CARGO_BIN_EXE_ferrymq"))
            .env("BASE_PORT", base_port.to_string())
            .env("DATA_DIR", data)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        command
    }

    fn start(example: &'static str, base_port: u16) -> Script {
        let data = tempfile::tempdir().expect("tempdir");
        let mut child = Script::command(example, base_port, data.path(), &[])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start run.sh");
        let (tx, output) = channel();
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        for stream in [Box::new(stdout) as Box<dyn std::io::Read + Send>, Box::new(stderr)] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        Script { example, base_port, data, child, output, lines: Vec::new() }
    }

    /// Runs `run.sh <args>` of the same example, with the same environment, to completion.
    fn run_again(&self, args: &[&str]) -> std::process::Output {
        Script::command(self.example, self.base_port, self.data.path(), args).output().expect("run run.sh again")
    }

    /// Waits for an output line containing `needle` and returns it.
    fn wait_for(&mut self, needle: &str, timeout: Duration) -> String {
        match crate::support::wait_for_line(&self.output, &mut self.lines, needle, timeout) {
            Some(line) => line,
            None => panic!(
                "{}: no line with {needle:?} within {timeout:?}; output so far:\n{}",
                self.example,
                self.transcript()
            ),
        }
    }

    /// The script's output so far and the last lines of every log it keeps (`DATA_DIR/*.log`,
    /// `DATA_DIR/run/*.log`).
    fn transcript(&self) -> String {
        let mut text = self.lines.join("\n");
        let dirs = [self.data.path().to_path_buf(), self.data.path().join("run")];
        for entry in dirs.iter().filter_map(|d| std::fs::read_dir(d).ok()).flatten().flatten() {
            if entry.path().extension().is_some_and(|e| e == "log") {
                let log = std::fs::read_to_string(entry.path()).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                text += &format!("\n--- {} (last lines)\n", entry.path().display());
                text += &tail.into_iter().rev().collect::<Vec<_>>().join("\n");
            }
        }
        text
    }

    fn signal(&self, signal: i32) {
        // SAFETY: kill with the pid of a child this test started and has not yet collected.
        let rc = unsafe { libc::kill(self.child.id() as i32, signal) };
        assert_eq!(rc, 0, "signal run.sh");
    }

    /// Waits for the script to exit and gathers the rest of its output.
    fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for run.sh") {
                while let Ok(line) = self.output.recv_timeout(Duration::from_millis(200)) {
                    self.lines.push(line);
                }
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {timeout:?}:\n{}",
                self.example,
                self.transcript()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.signal(libc::SIGTERM);
            let deadline = Instant::now() + STOP_MAX;
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// A process the cluster script recorded in `run/<name>.pid` ("pid start-time").
struct Recorded {
    name: String,
    pid: i32,
    start_time: String,
}

impl Recorded {
    fn read(data: &Path, name: &str) -> Recorded {
        let file = data.join("run").join(format!("{name}.pid"));
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
        let mut fields = text.split_whitespace();
        let pid = fields.next().and_then(|p| p.parse().ok()).expect("pid in pid file");
        let start_time = fields.next().expect("start time in pid file").to_owned();
        Recorded { name: name.to_owned(), pid, start_time }
    }

    /// Whether that very process still runs (not a later one with the same pid, not a zombie).
    fn alive(&self) -> bool {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)) else { return false };
        let fields: Vec<&str> = stat.rsplit_once(") ").map(|(_, rest)| rest).unwrap_or("").split(' ').collect();
        fields.get(19) == Some(&self.start_time.as_str()) && fields.first() != Some(&"Z")
    }

    fn kill(&self, signal: i32) {
        assert!(self.alive(), "{} runs", self.name);
        // SAFETY: kill with the pid of a process the example script started, checked just above to
        // be that process (same start time).
        let rc = unsafe { libc::kill(self.pid, signal) };
        assert_eq!(rc, 0, "signal {}", self.name);
    }
}

/// Runs `ferrymq <args>`; it must succeed. Returns its stdout.
fn ferrymq(args: &[&str]) -> String {
    let (code, out, err) = run(args);
    assert_eq!(code, 0, "ferrymq {args:?} failed:\n{out}{err}");
    out
}

/// `ferrymq bench … --json` as the README runs it; returns the report.
fn bench(args: &[&str]) -> Value {
    let out = ferrymq(&[&["bench"][..], args, &["--json", "--quiet"]].concat());
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("bench report {out:?}: {e}"))
}

fn get_json(addr: SocketAddr, path: &str) -> Value {
    let (status, body) = http_get(addr, path);
    assert_eq!(status, 200, "GET {path} from {addr}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {body:?}: {e}"))
}

/// Polls `done` every 200 ms until it holds; fails naming `what` after `timeout`.
fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "{what} did not happen within {timeout:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Broker `n` of the cluster example (1 a-master, 2 a-slave, 3 b-master, 4 b-slave): gRPC and admin.
fn broker_ports(base: u16, n: u16) -> (u16, u16) {
    (base + 10 * n, base + 10 * n + 1)
}

#[test]
fn the_cluster_example_runs_two_masters_with_slaves_and_reads_a_killed_masters_set_from_its_slave() {
    let offsets: Vec<u16> = [0, 1].into_iter().chain((1..=4).flat_map(|n| [10 * n, 10 * n + 1, 10 * n + 2])).collect();
    let base = free_base(&offsets);
    let mut script = Script::start("cluster", base);
    script.wait_for("cluster ready", READY_MAX);
    let namesrv = format!("127.0.0.1:{base}");
    let [(a0_grpc, a0_admin), (a1_grpc, a1_admin), (b0_grpc, b0_admin), _] =
        [1, 2, 3, 4].map(|n| broker_ports(base, n));

    // What the README says to look at: every broker, by set and role.
    let table = ferrymq(&["admin", "cluster", "--namesrv", &namesrv]);
    let mut rows: Vec<(String, String, String)> = table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let cells: Vec<&str> = l.split_whitespace().collect();
            Some((cells.first()?.to_string(), cells.get(1)?.to_string(), cells.get(2)?.to_string()))
        })
        .collect();
    rows.sort();
    let expected = [("a", "0", "master"), ("a", "1", "slave"), ("b", "0", "master"), ("b", "1", "slave")]
        .map(|(s, i, r)| (s.to_owned(), i.to_owned(), r.to_owned()));
    assert_eq!(rows, expected, "ferrymq admin cluster:\n{table}");
    for port in [base, base + 1] {
        let view = get_json(loopback(port), "/v1/cluster");
        let brokers = view["brokers"].as_array().expect("brokers");
        let count = |role: &str| brokers.iter().filter(|b| b["role"] == role).count();
        assert_eq!((count("master"), count("slave")), (2, 2), "name server {port}: {view:#}");
    }

    // The README's topic and consumer group, on each master; the slaves copy them.
    for admin in [a0_admin, b0_admin] {
        let admin = format!("127.0.0.1:{admin}");
        ferrymq(&["admin", "--admin-addr", &admin, "topic", "create", "orders", "--queues", "4"]);
        ferrymq(&["admin", "--admin-addr", &admin, "group", "create", "orders-app"]);
    }
    wait_until("every broker holding topic orders", Duration::from_secs(30), || {
        let view = get_json(loopback(base), "/v1/cluster");
        view["brokers"].as_array().is_some_and(|brokers| {
            brokers.len() == 4
                && brokers
                    .iter()
                    .all(|b| b["topics"].as_array().is_some_and(|t| t.iter().any(|t| t["name"] == "orders")))
        })
    });

    // Sent through master b and read back through it.
    let b0 = format!("127.0.0.1:{b0_grpc}");
    let workload = ["--topic", "orders", "--producers", "1", "--consumers", "1", "--batch", "10", "--duration", "60s"];
    let sent = bench(&[&["produce", "--addr", &b0, "--count", "100"][..], &workload].concat());
    assert_eq!((sent["sent"].as_u64(), sent["errors"].as_u64()), (Some(100), Some(0)), "{sent:#}");
    let got = bench(&[&["consume", "--addr", &b0, "--group", "orders-app", "--count", "100"][..], &workload].concat());
    assert_eq!(got["received"].as_u64(), Some(100), "read back through master b: {got:#}");

    // Sent through master a (sync replication: acknowledged once its slave holds it too).
    let a0 = format!("127.0.0.1:{a0_grpc}");
    let sent = bench(&[&["produce", "--addr", &a0, "--count", "200"][..], &workload].concat());
    assert_eq!((sent["sent"].as_u64(), sent["errors"].as_u64()), (Some(200), Some(0)), "{sent:#}");

    // The README's failover: kill -9 master a (by its pid file), and read set a from its slave.
    let a_master = Recorded::read(script.data.path(), "a-master");
    a_master.kill(libc::SIGKILL);
    script.wait_for(&format!("a-master (pid {}) exited", a_master.pid), Duration::from_secs(15));
    wait_until("a's slave serving reads", Duration::from_secs(30), || {
        get_json(loopback(a1_admin), "/v1/cluster")["this"]["serving_reads"] == true
    });
    let a1 = format!("127.0.0.1:{a1_grpc}");
    let got = bench(&[&["consume", "--addr", &a1, "--group", "orders-app", "--count", "200"][..], &workload].concat());
    assert_eq!(got["received"].as_u64(), Some(200), "set a read from its slave: {got:#}");

    // `run.sh stop` from another shell stops the rest; the foreground script then ends by itself.
    let running: Vec<Recorded> = ["a-slave", "b-master", "b-slave", "namesrv-1", "namesrv-2"]
        .into_iter()
        .map(|name| Recorded::read(script.data.path(), name))
        .collect();
    assert!(running.iter().all(Recorded::alive), "every other process still runs");
    let stop = script.run_again(&["stop"]);
    assert!(stop.status.success(), "run.sh stop: {}", String::from_utf8_lossy(&stop.stderr));
    let status = script.wait_exit(STOP_MAX);
    assert!(status.success(), "run.sh ended with {status:?}:\n{}", script.transcript());
    script.wait_for("every process has exited", Duration::from_secs(1));
    let left: Vec<&str> = running.iter().filter(|p| p.alive()).map(|p| p.name.as_str()).collect();
    assert!(left.is_empty(), "still running after run.sh stop: {left:?}");
    for name in ["a-slave", "b-master", "b-slave"] {
        let log = std::fs::read_to_string(script.data.path().join("run").join(format!("{name}.log"))).expect("log");
        assert!(log.contains("ferrymq stopped cleanly"), "{name} stopped cleanly:\n{log}");
    }
}

fn component(name: &str) -> PathBuf {
    examples().join("../plugins/target/wasm32-wasip2/release").join(format!("{name}.wasm"))
}

/// Receives from `topic` as `group` (acknowledging each batch) until `expect` messages came, then
/// once more to see that nothing else does; at most `timeout` and `expect + 16` receives in all.
async fn receive_all(
    client: &Client,
    group: &str,
    topic: &str,
    expect: usize,
    timeout: Duration,
) -> Vec<ferrymq_client::Received> {
    let deadline = Instant::now() + timeout;
    let mut got = Vec::new();
    // Each receive takes a message or a long poll; a few more than `expect` bound the loop.
    for _ in 0..expect + 16 {
        let enough = got.len() >= expect;
        let ask = Receive {
            group,
            topic,
            tag_expression: "*",
            batch: 32,
            invisible: Duration::from_secs(30),
            long_polling: if enough { Duration::from_secs(1) } else { Duration::from_secs(2) },
        };
        let batch = client.receive(&ask).await.expect("receive");
        if !batch.is_empty() {
            client.ack(group, topic, &batch).await.expect("ack");
        }
        let empty = batch.is_empty();
        got.extend(batch);
        if (enough && empty) || Instant::now() >= deadline {
            break;
        }
    }
    got
}

fn bodies(received: &[ferrymq_client::Received]) -> Vec<String> {
    let mut bodies: Vec<String> = received.iter().map(|m| String::from_utf8_lossy(&m.body).into_owned()).collect();
    bodies.sort();
    bodies
}

fn with_property(topic: &str, body: &str, property: Option<(&str, &str)>) -> Message {
    Message {
        properties: property.map(|(k, v)| vec![(k.to_owned(), v.to_owned())]).unwrap_or_default(),
        ..Message::new(topic, body.as_bytes().to_vec())
    }
}

#[test]
fn the_plugins_example_binds_its_plugins_from_the_configuration_file_and_each_acts_on_traffic() {
    for name in ["enterprise_inbox", "redact_id_numbers", "route_by_region"] {
        let path = component(name);
        assert!(
            path.exists(),
            "{} is missing: cd plugins && cargo build --release --target wasm32-wasip2",
            path.display()
        );
    }
    let base = free_base(&[0, 1]);
    let mut script = Script::start("plugins", base);
    script.wait_for("node ready", READY_MAX);

    let bindings = get_json(loopback(base + 1), "/v1/bindings");
    let mut listed: Vec<(String, String, String)> = bindings
        .as_array()
        .expect("bindings")
        .iter()
        .map(|b| {
            let text = |field: &str| b[field].as_str().unwrap_or_default().to_owned();
            (text("name"), text("kind"), text("source"))
        })
        .collect();
    listed.sort();
    let expected = [("applications-by-region", "route"), ("inbox-e1", "filter"), ("redact-requests", "route")]
        .map(|(name, kind)| (name.to_owned(), kind.to_owned(), "config".to_owned()));
    assert_eq!(listed, expected, "{bindings:#}");

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let options = ClientOptions { request_timeout: Duration::from_secs(5), ..ClientOptions::default() };
        let client = Client::connect(&format!("127.0.0.1:{base}"), options).await.expect("connect");
        let send = |message: Message| {
            let client = client.clone();
            async move { client.send(vec![message]).await.expect("send") }
        };

        // The filter: group inbox-e1 gets E1's and E3's messages only; any other group gets all.
        for (body, enterprise) in [("e1-0", "E1"), ("e1-1", "E1"), ("e2-0", "E2"), ("e2-1", "E2"), ("e3-0", "E3")] {
            send(with_property("inbox", body, Some(("enterpriseId", enterprise)))).await;
        }
        send(with_property("inbox", "unaddressed", None)).await;
        let inbox = receive_all(&client, "inbox-e1", "inbox", 3, Duration::from_secs(30)).await;
        assert_eq!(bodies(&inbox), ["e1-0", "e1-1", "e3-0"], "the filtered group gets E1 and E3 only");
        let audit = receive_all(&client, "auditors", "inbox", 6, Duration::from_secs(30)).await;
        assert_eq!(bodies(&audit).len(), 6, "a group without the filter gets every message");

        // The redacting route: numbers masked before the message is stored.
        send(with_property("requests", "applicant 11010119900307451X mobile 13812345678", None)).await;
        send(with_property("requests", "nothing personal", None)).await;
        let requests = receive_all(&client, "clerks", "requests", 2, Duration::from_secs(30)).await;
        assert_eq!(bodies(&requests), ["applicant 110*************1X mobile 138******78", "nothing personal"]);
        let redacted = requests.iter().find(|m| m.body.contains(&b'*')).expect("the redacted message");
        assert!(redacted.properties.contains(&("redacted".to_owned(), "true".to_owned())), "{redacted:?}");

        // The region route: a message with a region is stored in its region's topic.
        send(with_property("applications", "from the north", Some(("region", "north")))).await;
        send(with_property("applications", "from nowhere", None)).await;
        let north = receive_all(&client, "desk", "applications-north", 1, Duration::from_secs(30)).await;
        assert_eq!(bodies(&north), ["from the north"]);
        let unrouted = receive_all(&client, "desk", "applications", 1, Duration::from_secs(30)).await;
        assert_eq!(bodies(&unrouted), ["from nowhere"]);
    });

    // Ctrl-C: the script stops the node, which exits cleanly.
    script.signal(libc::SIGINT);
    let status = script.wait_exit(STOP_MAX);
    assert!(status.success(), "run.sh ended with {status:?}:\n{}", script.transcript());
    script.wait_for("exited with status 0", Duration::from_secs(1));
    let log = std::fs::read_to_string(script.data.path().join("ferrymq.log")).expect("node log");
    assert!(log.contains("ferrymq stopped cleanly"), "{log}");
}

/// The property a zone gateway adds to every message that crosses: the zone it came from.
const SOURCE_ZONE: &str = "ferrymq-source-zone";
/// …and when its own zone's broker stored it.
const SOURCE_STORE_MS: &str = "ferrymq-source-store-ms";

fn property<'a>(message: &'a ferrymq_client::Received, name: &str) -> Option<&'a str> {
    message.properties.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// A forward of a gateway's `GET /v1/gateway`, by topic.
fn forward_of(view: &Value, topic: &str) -> Value {
    view["forwards"]
        .as_array()
        .and_then(|forwards| forwards.iter().find(|f| f["topic"] == topic))
        .cloned()
        .unwrap_or_else(|| panic!("no forward of {topic}: {view:#}"))
}

#[test]
fn the_zones_example_carries_applications_redacted_and_filings_in_order_inward_and_only_classified_decisions_outward() {
    for name in ["redact_id_numbers", "deny_unclassified"] {
        let path = component(name);
        assert!(
            path.exists(),
            "{} is missing: cd plugins && cargo build --release --target wasm32-wasip2",
            path.display()
        );
    }
    // DMZ broker gRPC and admin, the inward and outward gateways' admin, intranet broker gRPC and
    // admin: BASE_PORT +0, +1, +2, +3, +10, +11 (the README's table).
    let base = free_base(&[0, 1, 2, 3, 10, 11]);
    let started = Instant::now();
    let mut script = Script::start("zones", base);
    script.wait_for("zones ready", READY_MAX);
    eprintln!("zones ready after {:?}", started.elapsed());
    let (dmz_grpc, dmz_admin) = (format!("127.0.0.1:{base}"), format!("127.0.0.1:{}", base + 1));
    let (inward_admin, outward_admin) = (loopback(base + 2), loopback(base + 3));
    let (intranet_grpc, intranet_admin) = (format!("127.0.0.1:{}", base + 10), format!("127.0.0.1:{}", base + 11));
    let processes: Vec<Recorded> = ["dmz", "intranet", "inward", "outward"]
        .into_iter()
        .map(|name| Recorded::read(script.data.path(), name))
        .collect();
    let down: Vec<&str> = processes.iter().filter(|p| !p.alive()).map(|p| p.name.as_str()).collect();
    assert!(down.is_empty(), "not running once ready: {down:?}\n{}", script.transcript());

    // What run.sh set up: the topics on both brokers, the inward gateway's FIFO group on the DMZ's,
    // and each gateway's forwards with their policies.
    for admin in [&dmz_admin, &intranet_admin] {
        let table = ferrymq(&["admin", "--admin-addr", admin, "topic", "list"]);
        let mut topics: Vec<(&str, &str)> = table
            .lines()
            .skip(1)
            .filter_map(|l| {
                let mut cells = l.split_whitespace();
                Some((cells.next()?, cells.next()?))
            })
            .collect();
        topics.sort();
        assert_eq!(
            topics,
            [("applications", "normal"), ("decisions", "normal"), ("filings", "fifo")],
            "{admin}:\n{table}"
        );
    }
    let groups = ferrymq(&["admin", "--admin-addr", &dmz_admin, "group", "list"]);
    assert!(
        groups.lines().any(|l| l.split_whitespace().take(2).eq(["inward-filings", "true"])),
        "inward-filings is a FIFO group on the DMZ broker:\n{groups}"
    );
    let inward = get_json(inward_admin, "/v1/gateway");
    assert_eq!(inward["name"], "inward", "{inward:#}");
    assert_eq!(inward["source"], dmz_grpc.as_str());
    assert_eq!(inward["target"], intranet_grpc.as_str());
    assert!(forward_of(&inward, "applications")["policy"]["digest"].is_string(), "{inward:#}");
    assert!(forward_of(&inward, "filings")["policy"].is_null(), "{inward:#}");
    assert_eq!(forward_of(&inward, "filings")["group"], "inward-filings");
    let outward = get_json(outward_admin, "/v1/gateway");
    assert_eq!(outward["name"], "outward", "{outward:#}");
    assert_eq!(outward["source"], intranet_grpc.as_str());
    assert_eq!(outward["target"], dmz_grpc.as_str());
    assert!(forward_of(&outward, "decisions")["policy"]["digest"].is_string(), "{outward:#}");

    let decision_log = script.data.path().join("outward/decisions.jsonl");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let options = ClientOptions { request_timeout: Duration::from_secs(5), ..ClientOptions::default() };
        let dmz = Client::connect(&dmz_grpc, options.clone()).await.expect("connect to the DMZ broker");
        let intranet = Client::connect(&intranet_grpc, options).await.expect("connect to the intranet broker");

        // Inward: an application with an identity number and one without, and filings of two
        // enterprises, interleaved.
        let mut application = with_property("applications", "applicant 11010119900307451X mobile 13812345678", None);
        application.keys = vec!["app-1".to_owned()];
        let application_id = dmz.send(vec![application]).await.expect("send an application").remove(0).message_id;
        dmz.send(vec![with_property("applications", "nothing personal", None)]).await.expect("send an application");
        for i in 0..5 {
            for enterprise in ["E1", "E2"] {
                let mut filing = Message::new("filings", format!("{enterprise}:{i}").into_bytes());
                filing.message_group = Some(enterprise.to_owned());
                dmz.send(vec![filing]).await.expect("send a filing");
            }
        }
        // Outward: a classified decision and an unclassified one.
        let classified = with_property("decisions", "approved: app-1", Some(("classification", "public")));
        let classified_id = intranet.send(vec![classified]).await.expect("send a decision").remove(0).message_id;
        let unclassified = with_property("decisions", "internal note on app-1", None);
        let unclassified_id = intranet.send(vec![unclassified]).await.expect("send a decision").remove(0).message_id;

        let applications = receive_all(&intranet, "clerks", "applications", 2, Duration::from_secs(20)).await;
        assert_eq!(bodies(&applications), ["applicant 110*************1X mobile 138******78", "nothing personal"]);
        let redacted = applications.iter().find(|m| m.body.contains(&b'*')).expect("the redacted application");
        assert_eq!(redacted.message_id, application_id, "it crossed under its own id");
        assert_eq!(redacted.keys, ["app-1"]);
        assert_eq!(property(redacted, "redacted"), Some("true"), "{redacted:?}");
        for m in &applications {
            assert_eq!(property(m, SOURCE_ZONE), Some("dmz"), "{m:?}");
            assert!(property(m, SOURCE_STORE_MS).is_some_and(|v| v.parse::<i64>().is_ok()), "{m:?}");
        }

        // Filings, read as the README says: through a FIFO group, each enterprise's in order.
        ferrymq(&["admin", "--admin-addr", &intranet_admin, "group", "create", "clerks-filings", "--fifo"]);
        let filings = receive_all(&intranet, "clerks-filings", "filings", 10, Duration::from_secs(20)).await;
        let mut next = std::collections::BTreeMap::new();
        for m in &filings {
            let text = String::from_utf8_lossy(&m.body).into_owned();
            let (enterprise, i) = text.split_once(':').expect("enterprise:i");
            assert_eq!(m.message_group.as_deref(), Some(enterprise), "{m:?}");
            assert_eq!(property(m, SOURCE_ZONE), Some("dmz"), "{m:?}");
            let expected = next.entry(enterprise.to_owned()).or_insert(0);
            assert_eq!(
                i.parse::<i32>().expect("number"),
                *expected,
                "{enterprise}'s filings out of order: {:?}",
                bodies(&filings)
            );
            *expected += 1;
        }
        assert_eq!(
            next.into_iter().collect::<Vec<_>>(),
            [("E1".to_owned(), 5), ("E2".to_owned(), 5)],
            "every filing crossed once"
        );

        // Outward: the unclassified decision is refused into the decision log; only the classified
        // one reaches the DMZ.
        wait_until("the unclassified decision in the outward gateway's decision log", Duration::from_secs(20), || {
            std::fs::read_to_string(&decision_log).is_ok_and(|log| log.contains(&unclassified_id))
        });
        let decisions = receive_all(&dmz, "enterprises", "decisions", 1, Duration::from_secs(20)).await;
        assert_eq!(bodies(&decisions), ["approved: app-1"]);
        assert_eq!(decisions[0].message_id, classified_id);
        assert_eq!(property(&decisions[0], "classification"), Some("public"));
        assert_eq!(property(&decisions[0], SOURCE_ZONE), Some("intranet"));
    });
    let log = std::fs::read_to_string(&decision_log).expect("decision log");
    let entries: Vec<Value> = log.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    assert_eq!(entries.len(), 1, "{log}");
    assert_eq!(entries[0]["decision"], "rejected", "{log}");
    assert_eq!(entries[0]["topic"], "decisions", "{log}");

    // The gateways count what they did (the counters follow the target's acknowledgement).
    wait_until("the gateways' counters", Duration::from_secs(10), || {
        let (inward, outward) = (get_json(inward_admin, "/v1/gateway"), get_json(outward_admin, "/v1/gateway"));
        let (applications, filings) = (forward_of(&inward, "applications"), forward_of(&inward, "filings"));
        let decisions = forward_of(&outward, "decisions");
        applications["forwarded"] == 2
            && applications["redacted"] == 1
            && filings["forwarded"] == 10
            && decisions["forwarded"] == 1
            && decisions["rejected"] == 1
    });

    // SIGTERM (Ctrl-C's twin): the script stops the gateways, then the brokers, each cleanly.
    script.signal(libc::SIGTERM);
    let status = script.wait_exit(STOP_MAX);
    assert!(status.success(), "run.sh ended with {status:?}:\n{}", script.transcript());
    for p in &processes {
        assert!(!p.alive(), "{} still runs after run.sh ended", p.name);
        script.wait_for(&format!("{} (pid {}) exited with status 0", p.name, p.pid), Duration::from_secs(1));
    }
    for (name, stopped) in [
        ("dmz", "ferrymq stopped cleanly"),
        ("intranet", "ferrymq stopped cleanly"),
        ("inward", "gateway stopped"),
        ("outward", "gateway stopped"),
    ] {
        let log = std::fs::read_to_string(script.data.path().join("run").join(format!("{name}.log"))).expect("log");
        assert!(log.contains(stopped), "{name} stopped cleanly:\n{log}");
    }
    eprintln!("the zones example took {:?}", started.elapsed());
}
