//! Clusters of real processes, each broker and the name server on its own host (a network
//! namespace): kill -9 of masters under load, a partitioned slave catching up, a slave started on
//! an empty disk converging to the master's bytes.
//!
//! The cluster tests run one at a time (`SERIAL`): each runs five to seven processes under load.
//! `scripts/test.sh` runs them after every other test, on their own, so that they do not starve the
//! timing of tests running beside them.
//! `FERRYMQ_CLUSTER_KILLS=N` sets how many masters each kill test kills (default 20).

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
const TOPIC: &str = "orders";
/// How long consumption may stop when a master dies.
const FAILOVER_MAX: Duration = Duration::from_secs(15);

static SERIAL: Mutex<()> = Mutex::new(());

fn kills() -> usize {
    std::env::var("FERRYMQ_CLUSTER_KILLS").ok().and_then(|v| v.parse().ok()).unwrap_or(20)
}

/// Settings that keep failover quick in a test: heartbeats every 300 ms, a master missing for 1.2 s
/// is down, registrations expire after 2.5 s (the name server's --broker-ttl-ms). `trim` makes
/// retention delete every segment it may, five times a second.
fn config(segment_bytes: u64, trim: bool) -> String {
    let usage = if trim {
        "disk_usage_max_ratio = 0.01\nretention_check_interval_ms = 200"
    } else {
        "disk_usage_max_ratio = 0.99"
    };
    format!(
        "[store]\nsegment_bytes = {segment_bytes}\nrecord_bytes_max = 262144\n{usage}\ndisk_full_ratio = 0.995\n\
         [grpc]\ninvisible_ms_min = 1000\n\
         [broker]\ntick_ms = 50\noffsets_persist_ms = 200\n\
         [cluster]\nheartbeat_ms = 300\nmaster_down_ms = 1200\nmetadata_sync_ms = 300\nsync_timeout_ms = 2000\n"
    )
}

struct Broker {
    host: Host,
    set: String,
    id: u64,
    dir: PathBuf,
    config: PathBuf,
    namesrv: String,
    replication: &'static str,
    node: Option<Node>,
}

impl Broker {
    fn start(&mut self) {
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
            .args(["--replication", self.replication]);
        self.node = Some(Node::launch(command, Some("ferrymq broker ready")));
    }

    fn node(&mut self) -> &mut Node {
        self.node.as_mut().expect("broker running")
    }

    fn kill9(&mut self) {
        let mut node = self.node.take().expect("broker running");
        node.signal(libc::SIGKILL);
        node.wait_exit(Duration::from_secs(10));
    }

    fn stop(&mut self) {
        if let Some(node) = self.node.take() {
            node.stop();
        }
    }

    fn grpc(&self) -> String {
        format!("{}:8081", self.host.ip)
    }

    fn admin(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from((self.host.ip, 8082))
    }

    fn cluster(&self) -> Value {
        let (status, body) = http_get(self.admin(), "/v1/cluster");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).expect("cluster JSON")
    }

    fn admin_cli(&self, args: &[&str]) -> String {
        let out = crate::support::ferrymq()
            .args(["admin", "--admin-addr", &self.admin().to_string()])
            .args(args)
            .output()
            .expect("run ferrymq admin");
        assert!(out.status.success(), "admin {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Whether this broker's store holds the message with business key `key`.
    fn holds_key(&self, key: &str) -> bool {
        let (status, body) = http_get(self.admin(), &format!("/v1/messages?topic={TOPIC}&key={key}"));
        status == 200 && serde_json::from_str::<Value>(&body).is_ok_and(|v| v.as_array().is_some_and(|a| !a.is_empty()))
    }
}

/// A name server and broker sets on their own hosts.
struct ClusterLab {
    brokers: Vec<Broker>,
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
    fn ready(
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

    fn broker(&mut self, set: &str, id: u64) -> &mut Broker {
        self.brokers.iter_mut().find(|b| b.set == set && b.id == id).expect("broker")
    }

    /// A name server still running.
    fn namesrv_addr(&self) -> String {
        let live = self.namesrvs.iter().position(Option::is_some).expect("a name server runs");
        self.namesrv_addrs[live].clone()
    }

    /// Kills a name server the hard way.
    fn kill_namesrv(&mut self, n: usize) {
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
    fn wait_settled(&self, timeout: Duration) {
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

fn options() -> ClientOptions {
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
type Routes = BTreeMap<String, (String, bool)>;

fn routes_of(queues: &[ferrymq_client::pb::MessageQueue]) -> Routes {
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
struct Ledger {
    /// Message key → broker set, for every acknowledged send; and the keys per set in order.
    acked: BTreeMap<String, String>,
    acked_by_set: BTreeMap<String, Vec<String>>,
    received: HashSet<String>,
    send_failures: u64,
}

/// A producer and a consumer that follow the cluster's routes, as a client configured with one
/// broker address would: that address is only the first seed.
struct Load {
    ledger: Arc<Mutex<Ledger>>,
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
    fn start(runtime: &tokio::runtime::Runtime, seed: String) -> Load {
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

    fn stop_producing(&self, runtime: &tokio::runtime::Runtime) {
        self.tasks[0].abort();
        runtime.block_on(async { tokio::time::sleep(Duration::from_millis(100)).await });
    }

    fn missing(&self) -> Vec<(String, String)> {
        let ledger = self.ledger.lock().expect("ledger");
        ledger
            .acked
            .iter()
            .filter(|(k, _)| !ledger.received.contains(*k))
            .map(|(k, s)| (k.clone(), s.clone()))
            .collect()
    }

    fn stop(self, runtime: &tokio::runtime::Runtime) {
        self.stop.store(true, Ordering::Release);
        for task in self.tasks {
            task.abort();
        }
        runtime.block_on(async { tokio::time::sleep(Duration::from_millis(100)).await });
    }
}

/// Receives from `set` with group `probe` through the cluster's assignment, at whatever broker the
/// assignment names, until a message arrives from `expect_addr`; returns how long it took.
fn probe_consumption(
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

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

/// Kills a master `kills()` times (alternating between the two sets) under continuous load. After
/// each kill: the last messages its producer was told were stored must be on the slave (sync) or
/// be missing no more than the slave's lag allowed (async); a consumer must get the set's messages
/// from the slave within 15 s. At the end every acknowledged message must have been consumed.
fn kill_masters(replication: &'static str) {
    let (_serial, mut cluster) = ClusterLab::ready(2, 2, replication, 4 << 20, true, 4);
    // A client configured with one broker address: the route it gets there names both sets.
    let seed = cluster.broker("a", 0).grpc();
    let runtime = runtime();
    // Brokers refresh their view every heartbeat: the topic reaches every route within a few.
    let first = runtime.block_on(async {
        let client = Client::connect(&seed, options()).await.expect("connect to one broker");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let routes = routes_of(&client.route(TOPIC).await.expect("route"));
            if routes.len() == 2 || Instant::now() > deadline {
                return routes;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    assert_eq!(first.keys().cloned().collect::<Vec<_>>(), ["a", "b"], "one broker's route spans every set: {first:?}");
    let load = Load::start(&runtime, seed);
    let mut report = Vec::new();
    let (mut lag_total, mut recent_missing_total) = (0u64, 0usize);
    for i in 0..kills() {
        let set = ["a", "b"][i % 2];
        if i == kills() / 2 {
            // Brokers register with every name server: losing one changes nothing.
            cluster.kill_namesrv(0);
            report.push(format!("kill {i:>3}: name server 0 killed first"));
            eprintln!("{}", report.last().expect("line"));
        }
        std::thread::sleep(Duration::from_millis(800));
        let lag = cluster.broker(set, 0).cluster()["this"]["slaves"][0]["lag_bytes"]
            .as_u64()
            .expect("the slave is connected before the kill");
        cluster.broker(set, 0).kill9();
        let killed = Instant::now();
        let recent: Vec<String> = {
            let ledger = load.ledger.lock().expect("ledger");
            let keys = ledger.acked_by_set.get(set).cloned().unwrap_or_default();
            keys[keys.len().saturating_sub(40)..].to_vec()
        };
        // Acknowledged before the kill → on the slave (its index may need a moment).
        let slave_addr = cluster.broker(set, 1).grpc();
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut missing: Vec<&String> = recent.iter().collect();
        while !missing.is_empty() && Instant::now() < deadline {
            let slave = cluster.broker(set, 1);
            missing.retain(|k| !slave.holds_key(k));
            if !missing.is_empty() {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let recent_missing = missing.len();
        let seeds: Vec<String> = cluster.brokers.iter().filter(|b| b.node.is_some()).map(Broker::grpc).collect();
        let failover = probe_consumption(&runtime, &seeds, set, &slave_addr, killed);
        report.push(format!(
            "kill {i:>3}: master {set}0, slave lag before the kill {lag} B, last {} acked on the slave: {} missing, consumption from the slave after {}",
            recent.len(),
            recent_missing,
            failover.map_or("NEVER".into(), |d| format!("{} ms", d.as_millis()))
        ));
        eprintln!("{}", report.last().expect("line"));
        if replication == "sync" {
            assert_eq!(
                recent_missing,
                0,
                "sync replication lost acknowledged messages: {missing:?}\n{}",
                report.join("\n")
            );
        }
        lag_total += lag;
        recent_missing_total += recent_missing;
        assert!(failover.is_some(), "no consumption from the slave within {FAILOVER_MAX:?}\n{}", report.join("\n"));
        let master = cluster.broker(set, 0);
        master.start();
        master.node().wait_for_log("slave connected", Duration::from_secs(15));
        cluster.wait_settled(Duration::from_secs(15));
    }
    load.stop_producing(&runtime);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !load.missing().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let missing = load.missing();
    let (acked, failures) = {
        let ledger = load.ledger.lock().expect("ledger");
        (ledger.acked.len(), ledger.send_failures)
    };
    eprintln!(
        "{replication}: {} kills, {acked} messages acknowledged ({failures} failed sends retried elsewhere), {} never consumed; slave lag at the kills {lag_total} B in all, {recent_missing_total} recent messages missing on a slave at a kill",
        kills(),
        missing.len()
    );
    load.stop(&runtime);
    if replication == "sync" {
        assert!(missing.is_empty(), "acknowledged messages lost: {:?}", &missing[..missing.len().min(20)]);
    } else {
        // A lost message takes at least this many log bytes (a record with an 8-byte key and body).
        let record_min = 100u64;
        assert!(
            missing.len() as u64 * record_min <= lag_total,
            "async replication lost {} messages, more than the {lag_total} B of lag at the kills: {:?}",
            missing.len(),
            &missing[..missing.len().min(20)]
        );
    }
    assert!(acked > 1000, "the load ran: {acked} acknowledged");
}

#[test]
fn sync_replication_loses_no_acknowledged_message_when_masters_are_killed() {
    kill_masters("sync");
}

#[test]
fn async_replication_loses_at_most_the_lag_when_masters_are_killed() {
    kill_masters("async");
}

/// Sends `n` messages to `addr` with keys from `first`.
fn produce(runtime: &tokio::runtime::Runtime, addr: &str, first: u64, n: u64) {
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

fn wait_caught_up(cluster: &ClusterLab, timeout: Duration) -> u64 {
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
fn assert_identical_logs(a: &Path, b: &Path) {
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

#[test]
fn a_partitioned_slave_catches_up_after_the_partition_heals() {
    let (_serial, mut cluster) = ClusterLab::ready(1, 1, "async", 1 << 20, true, 2);
    let runtime = runtime();
    let master_addr = cluster.broker("a", 0).grpc();
    produce(&runtime, &master_addr, 0, 300);
    wait_caught_up(&cluster, Duration::from_secs(10));

    let master_ip = cluster.broker("a", 0).host.ip;
    cluster.broker("a", 1).host.partition_from(master_ip);
    produce(&runtime, &master_addr, 300, 1500);
    // The slave notices, and the cluster view shows how far behind it is.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let rows = cluster.broker("a", 0).cluster()["brokers"].clone();
        let slave = rows.as_array().and_then(|r| r.iter().find(|b| b["role"] == "slave")).cloned().unwrap_or_default();
        if slave["master_reachable"] == false && slave["lag_bytes"].as_u64().is_some_and(|l| l > 0) {
            assert!(slave["lag_seconds"].as_f64().is_some_and(|s| s > 0.0), "lag in seconds: {slave}");
            break;
        }
        assert!(Instant::now() < deadline, "the partition never showed as lag: {rows}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // `ferrymq admin cluster` prints the same from the name server.
    let (code, table, err) = crate::support::run(&["admin", "cluster", "--namesrv", &cluster.namesrv_addr()]);
    assert_eq!(code, 0, "{err}");
    assert!(table.contains("LAG_BYTES") && table.contains("slave") && table.contains("false"), "{table}");

    let slave = cluster.broker("a", 1).node();
    assert_eq!(slave.metric("ferrymq_cluster_slave"), 1.0);
    assert_eq!(slave.metric("ferrymq_replication_master_reachable"), 0.0);
    assert!(slave.metric("ferrymq_replication_lag_seconds") > 0.0, "cut off: lag in seconds grows");
    cluster.broker("a", 1).host.heal();
    let end = wait_caught_up(&cluster, Duration::from_secs(20));
    let deadline = Instant::now() + Duration::from_secs(10);
    while cluster.broker("a", 1).node().metric("ferrymq_replication_master_reachable") != 1.0
        || cluster.broker("a", 0).node().metric("ferrymq_replication_lag_bytes") != 0.0
    {
        assert!(Instant::now() < deadline, "metrics never showed the slave caught up");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(cluster.broker("a", 1).holds_key("k1799"), "the last message reached the slave");
    cluster.broker("a", 0).stop();
    cluster.broker("a", 1).stop();
    let (m, s) = (cluster.broker("a", 0).dir.clone(), cluster.broker("a", 1).dir.clone());
    assert_identical_logs(&m, &s);
    assert!(end > 1 << 20, "the log spans segments ({end} bytes)");
}

#[test]
fn a_slave_started_on_an_empty_disk_converges_to_identical_segments() {
    let (_serial, mut cluster) = ClusterLab::ready(1, 1, "async", 1 << 20, false, 3);
    let runtime = runtime();
    let master_addr = cluster.broker("a", 0).grpc();
    // Retention trims the master first, so its log no longer starts at 0: the slave starts at the
    // master's oldest byte.
    let config_path = cluster.broker("a", 0).config.clone();
    std::fs::write(&config_path, config(1 << 20, true)).expect("write config");
    cluster.broker("a", 0).stop();
    cluster.broker("a", 0).start();
    produce(&runtime, &master_addr, 0, 4000);
    let deadline = Instant::now() + Duration::from_secs(20);
    while cluster.broker("a", 0).node().metric("ferrymq_store_min_offset_bytes") == 0.0 {
        assert!(Instant::now() < deadline, "retention never trimmed the master");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::fs::write(&config_path, config(1 << 20, false)).expect("write config");
    cluster.broker("a", 0).stop();
    cluster.broker("a", 0).start();
    produce(&runtime, &master_addr, 4000, 3000);
    // A filter bound on the master: its records travel in the log, and the slave binds it too.
    let plugin =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../plugins/target/wasm32-wasip2/release/body_contains.wasm");
    assert!(plugin.exists(), "{} is missing: ./scripts/test.sh builds the plugins", plugin.display());
    let master_admin = cluster.broker("a", 0).admin().to_string();
    for args in [
        vec!["push", plugin.to_str().expect("utf-8"), "--name", "audit/contains"],
        vec!["bind", "audit-filter", "--kind", "filter", "--topic", TOPIC, "--group", "audit"],
    ] {
        let mut args: Vec<&str> = args;
        if args[0] == "bind" {
            args.extend(["--plugin", "audit/contains", "--plugin-version", "1"]);
        }
        let (code, out, err) =
            crate::support::run(&[&["plugin", "--admin-addr", &master_admin][..], &args[..]].concat());
        assert_eq!(code, 0, "plugin {args:?}: {out}{err}");
    }
    cluster.broker("a", 1).start();
    let end = wait_caught_up(&cluster, Duration::from_secs(30));
    assert!(end > 2 << 20, "several segments, so fillers were replicated too ({end} bytes)");
    // The slave rebuilt its queues and index from the bytes, and copied the topic.
    assert!(cluster.broker("a", 1).holds_key("k6999"));
    assert!(!cluster.broker("a", 1).holds_key("k0"), "retention removed it before the slave started");
    let topics = cluster.broker("a", 1).admin_cli(&["topic", "list"]);
    assert!(topics.contains(TOPIC), "{topics}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, bindings) = http_get(cluster.broker("a", 1).admin(), "/v1/bindings");
        if status == 200 && bindings.contains("audit-filter") {
            break;
        }
        assert!(Instant::now() < deadline, "the slave never bound the master's filter: {bindings}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // A slave's metadata is its master's: changing it there is refused with a reason.
    let slave_admin = cluster.broker("a", 1).admin().to_string();
    let (code, _, err) = crate::support::run(&["admin", "--admin-addr", &slave_admin, "topic", "create", "other"]);
    assert!(code != 0 && err.contains("slave"), "{err}");
    cluster.broker("a", 0).stop();
    cluster.broker("a", 1).stop();
    let (m, s) = (cluster.broker("a", 0).dir.clone(), cluster.broker("a", 1).dir.clone());
    assert_identical_logs(&m, &s);
}

#[test]
fn a_sync_master_without_its_slave_says_so_instead_of_acknowledging() {
    let (_serial, mut cluster) = ClusterLab::ready(1, 1, "sync", 4 << 20, true, 2);
    let runtime = runtime();
    let master_addr = cluster.broker("a", 0).grpc();
    produce(&runtime, &master_addr, 0, 50);
    let send = |key: &str| {
        runtime.block_on(async {
            let client = Client::connect(&master_addr, options()).await.expect("connect");
            client.send(vec![Message { keys: vec![key.into()], ..Message::new(TOPIC, key.as_bytes().to_vec()) }]).await
        })
    };
    // The slave stops answering: the master waits sync_timeout_ms, then says the copy is missing.
    let master_ip = cluster.broker("a", 0).host.ip;
    cluster.broker("a", 1).host.partition_from(master_ip);
    let started = Instant::now();
    let err = send("during-partition").expect_err("a sync send without a slave copy is not acknowledged").to_string();
    assert!(err.contains("SLAVE_PERSISTENCE_TIMEOUT"), "{err}");
    assert!(started.elapsed() >= Duration::from_millis(1900), "it waited for the slave first");
    // Once the master drops the silent slave, sends fail at once with HA_NOT_AVAILABLE.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let err = send("no-slave").expect_err("still no slave").to_string();
        if err.contains("HA_NOT_AVAILABLE") {
            break;
        }
        assert!(err.contains("SLAVE_PERSISTENCE_TIMEOUT"), "{err}");
        assert!(Instant::now() < deadline, "the master never noticed its slave was gone");
    }
    let master = cluster.broker("a", 0).node();
    assert!(master.metric("ferrymq_replication_sync_failures_total{reason=\"timeout\"}") >= 1.0);
    assert!(master.metric("ferrymq_replication_sync_failures_total{reason=\"no_slave\"}") >= 1.0);
    assert_eq!(master.metric("ferrymq_replication_slaves_connected"), 0.0);
    cluster.broker("a", 1).host.heal();
    let deadline = Instant::now() + Duration::from_secs(15);
    while send("after-heal").is_err() {
        assert!(Instant::now() < deadline, "sends never recovered after the partition healed");
        std::thread::sleep(Duration::from_millis(200));
    }
    // What the master stored but could not confirm is on both once the slave is back.
    wait_caught_up(&cluster, Duration::from_secs(10));
    assert!(cluster.broker("a", 1).holds_key("during-partition"));
    assert!(cluster.broker("a", 1).holds_key("after-heal"));
}

#[test]
fn official_clients_configured_with_one_broker_send_to_and_receive_from_every_master() {
    use crate::clients::{Client as Official, names};
    let (_serial, mut cluster) = ClusterLab::ready(1, 2, "async", 4 << 20, false, 2);
    let seed = cluster.broker("a", 0).grpc();
    let runtime = runtime();
    runtime.block_on(async {
        let client = Client::connect(&seed, options()).await.expect("connect");
        let deadline = Instant::now() + Duration::from_secs(5);
        while routes_of(&client.route(TOPIC).await.expect("route")).len() < 2 {
            assert!(Instant::now() < deadline, "the route never named both sets");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let seed: std::net::SocketAddr = seed.parse().expect("address");
    for (i, official) in [Official::Python, Official::Node, Official::Rust].into_iter().enumerate() {
        let sends = |cluster: &mut ClusterLab, set: &str| {
            cluster.broker(set, 0).node().rpc_counts().get("SendMessage").copied().unwrap_or(0)
        };
        let before = (sends(&mut cluster, "a"), sends(&mut cluster, "b"));
        let prefix = format!("{official:?}-");
        official.produce(seed, TOPIC, 24, &["--prefix", &prefix]);
        let after = (sends(&mut cluster, "a"), sends(&mut cluster, "b"));
        assert!(after.0 > before.0 && after.1 > before.1, "{official:?} sent to both masters: {before:?} → {after:?}");
        let group = format!("everyone{i}");
        let got = official.simple(seed, &group, TOPIC, 24 * (i + 1), 40, &[]);
        let mine: Vec<String> = got.sorted_bodies().into_iter().filter(|b| b.starts_with(&prefix)).collect();
        assert_eq!(mine, names(&prefix, 24), "{official:?} received every message from both masters");
    }
}
