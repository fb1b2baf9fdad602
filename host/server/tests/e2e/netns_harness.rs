//! The harness of the cluster tests (`netns_cluster`): a cluster of real `ferrymq` processes, each
//! on its own host (a network namespace), with the clients and the load that drive it and the
//! checks that compare what the brokers stored.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferrymq_client::{Client, ClientOptions, Message, Receive};
use serde_json::Value;

use crate::netns::{Host, Lab};
use crate::support::{Node, http_get};

const BIN: &str = env!("CARGO_BIN_EXE_ferrymq");
pub const TOPIC: &str = "orders";
/// How long consumption may stop when a master dies.
pub const FAILOVER_MAX: Duration = Duration::from_secs(15);

/// Held by each cluster test from `ClusterLab::ready` on: one cluster at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Settings that keep failover quick in a test: heartbeats every 300 ms, a master missing for 1.2 s
/// is down, registrations expire after 2.5 s (the name server's --broker-ttl-ms). `trim` makes
/// retention delete every segment it may, five times a second: every closed segment counts as
/// expired (disk pressure would stop at the audit records the topic's creation left).
pub fn config(segment_bytes: u64, trim: bool) -> String {
    let usage =
        if trim { "retention_hours = 0\nretention_check_interval_ms = 200" } else { "disk_usage_max_ratio = 0.99" };
    format!(
        "[store]\nsegment_bytes = {segment_bytes}\nrecord_bytes_max = 262144\n{usage}\ndisk_full_ratio = 0.995\n\
         [grpc]\ninvisible_ms_min = 1000\n\
         [broker]\ntick_ms = 50\noffsets_persist_ms = 200\n\
         [cluster]\nheartbeat_ms = 300\nmaster_down_ms = 1200\nmetadata_sync_ms = 300\nsync_timeout_ms = 2000\n"
    )
}

pub struct Broker {
    pub host: Host,
    set: String,
    id: u64,
    pub dir: PathBuf,
    pub config: PathBuf,
    namesrv: String,
    replication: &'static str,
    pub node: Option<Node>,
}

impl Broker {
    pub fn start(&mut self) {
        let ip = self.host.ip;
        let mut command = self.host.command(BIN);
        command
            .arg("broker")
            .arg("--config")
            .arg(&self.config)
            .arg("--data-dir")
            .arg(&self.dir)
            .args(["--grpc-listen", &format!("{ip}:8081"), "--admin-listen", &format!("{ip}:8082")])
            .args(["--ha-listen", &format!("{ip}:8083"), "--broker-set", &self.set])
            .args(["--broker-id", &self.id.to_string(), "--namesrv", &self.namesrv])
            .args(["--replication", self.replication])
            // The lab's admin APIs listen on namespace addresses without tokens.
            .arg("--insecure-admin");
        self.node = Some(Node::launch(command, Some("ferrymq broker ready")));
    }

    pub fn node(&mut self) -> &mut Node {
        self.node.as_mut().expect("broker running")
    }

    pub fn kill9(&mut self) {
        let mut node = self.node.take().expect("broker running");
        node.signal(libc::SIGKILL);
        node.wait_exit(Duration::from_secs(10));
    }

    pub fn stop(&mut self) {
        if let Some(node) = self.node.take() {
            node.stop();
        }
    }

    pub fn grpc(&self) -> String {
        format!("{}:8081", self.host.ip)
    }

    pub fn admin(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from((self.host.ip, 8082))
    }

    pub fn cluster(&self) -> Value {
        let (status, body) = http_get(self.admin(), "/v1/cluster");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).expect("cluster JSON")
    }

    pub fn admin_cli(&self, args: &[&str]) -> String {
        let out = crate::support::ferrymq()
            .args(["admin", "--admin-addr", &self.admin().to_string()])
            .args(args)
            .output()
            .expect("run ferrymq admin");
        assert!(out.status.success(), "admin {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Whether this broker's store holds the message with business key `key`.
    pub fn holds_key(&self, key: &str) -> bool {
        let (status, body) = http_get(self.admin(), &format!("/v1/messages?topic={TOPIC}&key={key}"));
        status == 200 && serde_json::from_str::<Value>(&body).is_ok_and(|v| v.as_array().is_some_and(|a| !a.is_empty()))
    }
}

/// A name server and broker sets on their own hosts.
pub struct ClusterLab {
    pub brokers: Vec<Broker>,
    namesrvs: Vec<Option<Node>>,
    namesrv_addrs: Vec<String>,
    _dir: tempfile::TempDir,
    // Dropped last: the processes above are gone by then.
    _lab: Lab,
}

impl ClusterLab {
    /// `namesrvs` name servers and `sets` broker sets named a, b, …, each with a master and a slave
    /// (not started when `start_slaves` is false).
    fn new(
        namesrvs: usize,
        sets: usize,
        replication: &'static str,
        segment_bytes: u64,
        start_slaves: bool,
    ) -> ClusterLab {
        let mut lab = Lab::new();
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut nodes, mut namesrv_addrs) = (Vec::new(), Vec::new());
        for n in 0..namesrvs {
            let ns_host = lab.host(&format!("ns{n}"));
            let addr = format!("{}:9876", ns_host.ip);
            let mut command = ns_host.command(BIN);
            command.args(["namesrv", "--listen", &addr, "--broker-ttl-ms", "2500"]);
            let mut namesrv = Node::launch(command, None);
            namesrv.wait_for_log("ferrymq name server ready", Duration::from_secs(20));
            nodes.push(Some(namesrv));
            namesrv_addrs.push(addr);
        }
        let namesrv_addr = namesrv_addrs.join(",");
        let config_path = dir.path().join("broker.toml");
        std::fs::write(&config_path, config(segment_bytes, false)).expect("write config");
        let mut brokers = Vec::new();
        for set in ["a", "b", "c"].iter().take(sets) {
            for id in 0..2u64 {
                let host = lab.host(&format!("{set}{id}"));
                brokers.push(Broker {
                    host,
                    set: (*set).to_owned(),
                    id,
                    dir: dir.path().join(format!("{set}{id}")),
                    config: config_path.clone(),
                    namesrv: namesrv_addr.clone(),
                    replication,
                    node: None,
                });
            }
        }
        let mut cluster = ClusterLab { brokers, namesrvs: nodes, namesrv_addrs, _dir: dir, _lab: lab };
        for b in cluster.brokers.iter_mut().filter(|b| b.id == 0 || start_slaves) {
            b.start();
        }
        cluster
    }

    /// Takes the tests' serial lock, starts a cluster as [`ClusterLab::new`] does, waits until it
    /// settles, and creates the topic with `queues` queues on every master.
    pub fn ready(
        namesrvs: usize,
        sets: usize,
        replication: &'static str,
        segment_bytes: u64,
        start_slaves: bool,
        queues: u32,
    ) -> (std::sync::MutexGuard<'static, ()>, ClusterLab) {
        let serial = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut cluster = ClusterLab::new(namesrvs, sets, replication, segment_bytes, start_slaves);
        cluster.wait_settled(Duration::from_secs(20));
        cluster.create_topic(queues);
        (serial, cluster)
    }

    pub fn broker(&mut self, set: &str, id: u64) -> &mut Broker {
        self.brokers.iter_mut().find(|b| b.set == set && b.id == id).expect("broker")
    }

    /// A name server still running.
    pub fn namesrv_addr(&self) -> String {
        let live = self.namesrvs.iter().position(Option::is_some).expect("a name server runs");
        self.namesrv_addrs[live].clone()
    }

    /// Kills a name server the hard way.
    pub fn kill_namesrv(&mut self, n: usize) {
        let mut node = self.namesrvs[n].take().expect("running");
        node.signal(libc::SIGKILL);
        node.wait_exit(Duration::from_secs(10));
    }

    /// A name server's view: (set, id) → registration.
    fn view(&self) -> BTreeMap<(String, u64), Value> {
        let (status, body) = http_get(self.namesrv_addr().parse().expect("addr"), "/v1/cluster");
        assert_eq!(status, 200, "{body}");
        let view: Value = serde_json::from_str(&body).expect("view JSON");
        view["brokers"]
            .as_array()
            .expect("brokers")
            .iter()
            .map(|b| {
                (
                    (b["broker_set"].as_str().unwrap_or_default().to_owned(), b["broker_id"].as_u64().unwrap_or(0)),
                    b.clone(),
                )
            })
            .collect()
    }

    /// Waits until every running broker is registered and every running slave follows its master.
    pub fn wait_settled(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let view = self.view();
            let settled = self.brokers.iter().filter(|b| b.node.is_some()).all(|b| {
                view.get(&(b.set.clone(), b.id))
                    .is_some_and(|r| b.id == 0 || r["master_reachable"].as_bool() == Some(true))
            });
            if settled {
                return;
            }
            assert!(Instant::now() < deadline, "the cluster did not settle within {timeout:?}: {view:#?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn create_topic(&mut self, queues: u32) {
        let masters: Vec<usize> = (0..self.brokers.len()).filter(|&i| self.brokers[i].id == 0).collect();
        for i in masters {
            self.brokers[i].admin_cli(&["topic", "create", TOPIC, "--queues", &queues.to_string()]);
        }
        // Slaves copy it; routes name it once every master registered it.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self
            .view()
            .values()
            .all(|r| r["topics"].as_array().is_some_and(|t| t.iter().any(|t| t["name"] == TOPIC)))
        {
            assert!(Instant::now() < deadline, "the topic did not reach every broker");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for ClusterLab {
    fn drop(&mut self) {
        for b in &mut self.brokers {
            drop(b.node.take());
        }
        self.namesrvs.clear();
    }
}

pub fn options() -> ClientOptions {
    ClientOptions {
        connect_timeout: Duration::from_secs(1),
        request_timeout: Duration::from_secs(3),
        ..ClientOptions::default()
    }
}

/// Connections by address, made on first use and dropped after a failure.
#[derive(Default, Clone)]
struct Pool(Arc<tokio::sync::Mutex<BTreeMap<String, Client>>>);

impl Pool {
    async fn get(&self, addr: &str) -> Option<Client> {
        if let Some(c) = self.0.lock().await.get(addr) {
            return Some(c.clone());
        }
        let client = Client::connect(addr, options()).await.ok()?;
        self.0.lock().await.insert(addr.to_owned(), client.clone());
        Some(client)
    }

    async fn forget(&self, addr: &str) {
        self.0.lock().await.remove(addr);
    }
}

/// Where each broker set is served now: set → (gRPC address, writable).
pub type Routes = BTreeMap<String, (String, bool)>;

pub fn routes_of(queues: &[ferrymq_client::pb::MessageQueue]) -> Routes {
    let mut routes = Routes::new();
    for q in queues {
        let Some(broker) = &q.broker else { continue };
        let Some(addr) = broker.endpoints.as_ref().and_then(|e| e.addresses.first()) else { continue };
        let writable = q.permission == ferrymq_client::pb::Permission::ReadWrite as i32;
        routes.insert(broker.name.clone(), (format!("{}:{}", addr.host, addr.port), writable));
    }
    routes
}

/// What the load saw.
#[derive(Default)]
pub struct Ledger {
    /// Message key → broker set, for every acknowledged send; and the keys per set in order.
    pub acked: BTreeMap<String, String>,
    pub acked_by_set: BTreeMap<String, Vec<String>>,
    received: HashSet<String>,
    pub send_failures: u64,
}

/// A producer and a consumer that follow the cluster's routes, as a client configured with one
/// broker address would: that address is only the first seed.
pub struct Load {
    pub ledger: Arc<Mutex<Ledger>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

async fn refresh(pool: &Pool, seeds: &Mutex<Vec<String>>, group: Option<&str>) -> Option<Routes> {
    let candidates = seeds.lock().expect("seeds").clone();
    for seed in candidates {
        let Some(client) = pool.get(&seed).await else { continue };
        let answer = match group {
            None => client.route(TOPIC).await,
            Some(group) => client.assignment(group, TOPIC).await,
        };
        match answer {
            Ok(queues) => {
                let routes = routes_of(&queues);
                let mut seeds = seeds.lock().expect("seeds");
                for (addr, _) in routes.values() {
                    if !seeds.contains(addr) {
                        seeds.push(addr.clone());
                    }
                }
                return Some(routes);
            }
            Err(_) => pool.forget(&seed).await,
        }
    }
    None
}

impl Load {
    pub fn start(runtime: &tokio::runtime::Runtime, seed: String) -> Load {
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let seeds = Arc::new(Mutex::new(vec![seed]));
        let pool = Pool::default();
        let mut tasks = Vec::new();
        // Producer: batches of 8 round-robin over the writable sets, about 400 messages a second.
        {
            let (ledger, stop, seeds, pool) = (ledger.clone(), stop.clone(), seeds.clone(), pool.clone());
            tasks.push(runtime.spawn(async move {
                let (mut seq, mut rr) = (0u64, 0usize);
                let mut routes = Routes::new();
                let mut refreshed = Instant::now() - Duration::from_secs(10);
                while !stop.load(Ordering::Acquire) {
                    if refreshed.elapsed() > Duration::from_millis(500) || routes.is_empty() {
                        routes = refresh(&pool, &seeds, None).await.unwrap_or_default();
                        refreshed = Instant::now();
                    }
                    let writable: Vec<(String, String)> =
                        routes.iter().filter(|(_, (_, w))| *w).map(|(s, (a, _))| (s.clone(), a.clone())).collect();
                    if writable.is_empty() {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                    let (set, addr) = writable[rr % writable.len()].clone();
                    rr += 1;
                    let keys: Vec<String> = (0..8).map(|i| format!("k{}", seq + i)).collect();
                    seq += 8;
                    let batch = keys
                        .iter()
                        .map(|k| Message { keys: vec![k.clone()], ..Message::new(TOPIC, k.clone().into_bytes()) })
                        .collect();
                    let sent = match pool.get(&addr).await {
                        Some(client) => client.send(batch).await.is_ok(),
                        None => false,
                    };
                    {
                        let mut ledger = ledger.lock().expect("ledger");
                        if sent {
                            for k in keys {
                                ledger.acked.insert(k.clone(), set.clone());
                                ledger.acked_by_set.entry(set.clone()).or_default().push(k);
                            }
                        } else {
                            ledger.send_failures += 1;
                        }
                    }
                    if !sent {
                        routes.remove(&set);
                        pool.forget(&addr).await;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }));
        }
        // Consumer of group `main`: one receive loop per set, each following the set's assignment.
        let assignments = Arc::new(Mutex::new(Routes::new()));
        {
            let (stop, seeds, pool, assignments) = (stop.clone(), seeds.clone(), pool.clone(), assignments.clone());
            tasks.push(runtime.spawn(async move {
                while !stop.load(Ordering::Acquire) {
                    if let Some(routes) = refresh(&pool, &seeds, Some("main")).await {
                        *assignments.lock().expect("assignments") = routes;
                    }
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            }));
        }
        for set in ["a", "b", "c"] {
            let (ledger, stop, pool, assignments) = (ledger.clone(), stop.clone(), pool.clone(), assignments.clone());
            tasks.push(runtime.spawn(async move {
                while !stop.load(Ordering::Acquire) {
                    let target = assignments.lock().expect("assignments").get(set).map(|(a, _)| a.clone());
                    let Some(addr) = target else {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    };
                    let Some(client) = pool.get(&addr).await else {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    };
                    let ask = Receive {
                        group: "main",
                        topic: TOPIC,
                        tag_expression: "*",
                        batch: 32,
                        invisible: Duration::from_secs(10),
                        long_polling: Duration::from_millis(800),
                    };
                    match client.receive(&ask).await {
                        Ok(got) if !got.is_empty() => {
                            {
                                let mut ledger = ledger.lock().expect("ledger");
                                for m in &got {
                                    ledger.received.insert(String::from_utf8_lossy(&m.body).into_owned());
                                }
                            }
                            // An ack refused (a handle from before a failover) means a redelivery.
                            let _ = client.ack("main", TOPIC, &got).await;
                        }
                        Ok(_) => {}
                        Err(_) => {
                            pool.forget(&addr).await;
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
            }));
        }
        Load { ledger, stop, tasks }
    }

    pub fn stop_producing(&self, runtime: &tokio::runtime::Runtime) {
        self.tasks[0].abort();
        runtime.block_on(async { tokio::time::sleep(Duration::from_millis(100)).await });
    }

    pub fn missing(&self) -> Vec<(String, String)> {
        let ledger = self.ledger.lock().expect("ledger");
        ledger
            .acked
            .iter()
            .filter(|(k, _)| !ledger.received.contains(*k))
            .map(|(k, s)| (k.clone(), s.clone()))
            .collect()
    }

    pub fn stop(self, runtime: &tokio::runtime::Runtime) {
        self.stop.store(true, Ordering::Release);
        for task in self.tasks {
            task.abort();
        }
        runtime.block_on(async { tokio::time::sleep(Duration::from_millis(100)).await });
    }
}

/// Receives from `set` with group `probe` through the cluster's assignment, at whatever broker the
/// assignment names, until a message arrives from `expect_addr`; returns how long it took.
pub fn probe_consumption(
    runtime: &tokio::runtime::Runtime,
    seeds: &[String],
    set: &str,
    expect_addr: &str,
    from: Instant,
) -> Option<Duration> {
    let seeds = Mutex::new(seeds.to_vec());
    runtime.block_on(async {
        let pool = Pool::default();
        while from.elapsed() < FAILOVER_MAX {
            let Some(routes) = refresh(&pool, &seeds, Some("probe")).await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let Some((addr, _)) = routes.get(set).filter(|(a, _)| a == expect_addr) else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let Some(client) = pool.get(addr).await else { continue };
            let ask = Receive {
                group: "probe",
                topic: TOPIC,
                tag_expression: "*",
                batch: 8,
                invisible: Duration::from_secs(10),
                long_polling: Duration::from_millis(500),
            };
            if let Ok(got) = client.receive(&ask).await
                && !got.is_empty()
            {
                let took = from.elapsed();
                let _ = client.ack("probe", TOPIC, &got).await;
                return Some(took);
            }
        }
        None
    })
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

/// Sends `n` messages to `addr` with keys from `first`.
pub fn produce(runtime: &tokio::runtime::Runtime, addr: &str, first: u64, n: u64) {
    runtime.block_on(async {
        let client = Client::connect(addr, options()).await.expect("connect");
        for chunk in (first..first + n).collect::<Vec<_>>().chunks(16) {
            let batch = chunk
                .iter()
                .map(|i| Message {
                    keys: vec![format!("k{i}")],
                    ..Message::new(TOPIC, format!("k{i}-").repeat(100).into_bytes())
                })
                .collect();
            client.send(batch).await.expect("send");
        }
    });
}

fn log_end(cluster: &ClusterLab, set: &str, id: u64) -> Option<u64> {
    cluster.view().get(&(set.to_owned(), id)).and_then(|r| r["log_end"].as_u64())
}

pub fn wait_caught_up(cluster: &ClusterLab, timeout: Duration) -> u64 {
    let deadline = Instant::now() + timeout;
    loop {
        let (m, s) = (log_end(cluster, "a", 0), log_end(cluster, "a", 1));
        if let (Some(m), Some(s)) = (m, s)
            && m == s
            && m > 0
        {
            return m;
        }
        assert!(Instant::now() < deadline, "the slave did not catch up: master {m:?}, slave {s:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every commit-log segment of `a` equals `b`'s, byte for byte.
pub fn assert_identical_logs(a: &Path, b: &Path) {
    let names = |d: &Path| {
        let mut v: Vec<_> = std::fs::read_dir(d.join("commitlog"))
            .expect("list segments")
            .map(|e| e.expect("entry").file_name())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(a), names(b), "the same segments");
    assert!(!names(a).is_empty());
    for name in names(a) {
        let x = std::fs::read(a.join("commitlog").join(&name)).expect("read");
        let y = std::fs::read(b.join("commitlog").join(&name)).expect("read");
        assert!(x == y, "segment {name:?} differs");
    }
}
