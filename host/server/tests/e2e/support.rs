//! Starting and stopping real `ferrymq` processes, and talking HTTP to them.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

pub fn ferrymq() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ferrymq"))
}

/// A running `ferrymq standalone`, killed on drop if still alive.
pub struct Node {
    child: Child,
    pub admin: SocketAddr,
    pub grpc: SocketAddr,
    log: Receiver<String>,
    pub log_lines: Vec<String>,
}

impl Node {
    /// Starts a node on `data_dir` with the admin endpoint on a free loopback port, and waits until
    /// it is ready.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Node {
        Node::start_within(data_dir, extra, Duration::from_secs(30))
    }

    /// [`Node::start`], allowing `within` for each step of the start.
    pub fn start_within(data_dir: &Path, extra: &[&str], within: Duration) -> Node {
        let mut command = ferrymq();
        command
            .arg("standalone")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--admin-listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0"])
            .args(extra);
        Node::launch_within(command, Some("ferrymq standalone ready"), within)
    }

    /// Starts `command` (a `ferrymq` node, possibly wrapped, e.g. in `ip netns exec`) and, when
    /// `ready` is given, waits for its listen addresses and that log line.
    pub fn launch(command: Command, ready: Option<&str>) -> Node {
        Node::launch_within(command, ready, Duration::from_secs(30))
    }

    /// [`Node::launch`], allowing `within` for each step of the start (a node that compiles a
    /// Python plugin at start takes a while on a loaded machine).
    pub fn launch_within(mut command: Command, ready: Option<&str>, within: Duration) -> Node {
        let mut child =
            command.env_remove("RUST_LOG").stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("start ferrymq");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, log) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let unset = SocketAddr::from(([127, 0, 0, 1], 0));
        let mut node = Node { child, admin: unset, grpc: unset, log, log_lines: Vec::new() };
        let address = |line: String| -> SocketAddr {
            let addr = line
                .split("addr=")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .expect("address in log line");
            addr.parse().expect("listen address")
        };
        if let Some(ready) = ready {
            node.grpc = address(node.wait_for_log("gRPC listening", within));
            node.admin = address(node.wait_for_log("admin HTTP listening", within));
            node.wait_for_log(ready, within);
        }
        node
    }

    /// Waits for a log line containing `needle` and returns it.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> String {
        wait_for_line(&self.log, &mut self.log_lines, needle, timeout).unwrap_or_else(|| {
            panic!("no log line with {needle:?} within {timeout:?}; log so far:\n{}", self.log_lines.join("\n"))
        })
    }

    /// Starts a node with settings that keep client tests short (1 s minimum invisible time, 50 ms
    /// broker ticks, transactions checked after 500 ms and every 500 ms, discarded after 4 checks).
    pub fn start_for_clients(data_dir: &Path) -> Node {
        Node::start_for_clients_with(data_dir, "")
    }

    /// As [`Node::start_for_clients`], with more configuration (TOML) appended.
    pub fn start_for_clients_with(data_dir: &Path, extra: &str) -> Node {
        Node::start_for_clients_within(data_dir, extra, Duration::from_secs(30))
    }

    /// [`Node::start_for_clients_with`], allowing `within` for each step of the start.
    pub fn start_for_clients_within(data_dir: &Path, extra: &str, within: Duration) -> Node {
        let config = data_dir.with_extension("toml");
        let settings = format!(
            "[grpc]\ninvisible_ms_min = 1000\n[broker]\ntick_ms = 50\n\
            [broker.transactions]\nfirst_check_ms = 500\ncheck_interval_ms = 500\nchecks_max = 4\n{extra}"
        );
        std::fs::write(&config, settings).expect("write config");
        Node::start_within(data_dir, &["--config", config.to_str().expect("utf-8 path")], within)
    }

    /// Runs `ferrymq admin <args>` against this node and returns its output; the command must succeed.
    pub fn admin(&self, args: &[&str]) -> String {
        let out = ferrymq()
            .arg("admin")
            .args(["--admin-addr", &self.admin.to_string()])
            .args(args)
            .output()
            .expect("run ferrymq admin");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "ferrymq admin {args:?} failed: {}{}",
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    /// Stops the node with SIGTERM and waits for a clean exit.
    pub fn stop(mut self) {
        self.signal(libc::SIGTERM);
        let status = self.wait_exit(Duration::from_secs(20));
        assert!(status.success(), "unclean stop {status:?}:\n{}", self.log_lines.join("\n"));
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        http_get(self.admin, path)
    }

    pub fn metric(&self, name: &str) -> f64 {
        let (status, body) = self.get("/metrics");
        assert_eq!(status, 200);
        body.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("metric {name} missing from:\n{body}"))
    }

    /// Requests served per gRPC method, from `/metrics`.
    pub fn rpc_counts(&self) -> std::collections::BTreeMap<String, u64> {
        let (status, body) = self.get("/metrics");
        assert_eq!(status, 200);
        body.lines()
            .filter_map(|l| l.strip_prefix("ferrymq_grpc_requests_total{rpc=\""))
            .filter_map(|l| l.split_once("\"} "))
            .map(|(rpc, n)| (rpc.to_owned(), n.parse().unwrap_or(0)))
            .collect()
    }

    /// Fails the test unless every RPC in `rpcs` was served at least once.
    pub fn assert_called(&self, rpcs: &[&str]) {
        let counts = self.rpc_counts();
        for rpc in rpcs {
            assert!(counts.get(*rpc).copied().unwrap_or(0) > 0, "{rpc} was never called: {counts:?}");
        }
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill with a PID this test started and still owns.
        let rc = unsafe { libc::kill(self.child.id() as i32, signal) };
        assert_eq!(rc, 0, "signal the node");
    }

    /// Waits for the process to exit and collects the rest of its log.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                while let Ok(line) = self.log.recv_timeout(Duration::from_millis(200)) {
                    self.log_lines.push(line);
                }
                return status;
            }
            assert!(Instant::now() < deadline, "node did not exit within {timeout:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The first line containing `needle`, among the lines `seen` so far or the next ones `lines`
/// brings (each kept in `seen`) within `timeout`.
pub fn wait_for_line(
    lines: &Receiver<String>,
    seen: &mut Vec<String>,
    needle: &str,
    timeout: Duration,
) -> Option<String> {
    if let Some(line) = seen.iter().find(|l| l.contains(needle)) {
        return Some(line.clone());
    }
    let deadline = Instant::now() + timeout;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        let line = lines.recv_timeout(left).ok()?;
        seen.push(line.clone());
        if line.contains(needle) {
            return Some(line);
        }
    }
    None
}

/// A minimal HTTP/1.1 GET: status code and body.
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").expect("send request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read response");
    let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("status line");
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

/// A minimal HTTP/1.1 request with a body: status code and response body.
pub fn http_send(addr: SocketAddr, method: &str, path: &str, content_type: &str, body: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(120))).expect("timeout");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .expect("send request");
    stream.write_all(body).expect("send body");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read response");
    let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("status line");
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

/// Runs `ferrymq` with `args` to completion: exit code, stdout, stderr.
pub fn run(args: &[&str]) -> (i32, String, String) {
    let out = ferrymq().args(args).env_remove("RUST_LOG").output().expect("run ferrymq");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}
