//! Clusters of real processes, each broker and the name server on its own host (a network
//! namespace): kill -9 of masters under load, a partitioned slave catching up, a slave started on
//! an empty disk converging to the master's bytes.
//!
//! The cluster tests run one at a time (`ClusterLab::ready` takes the harness's lock): each runs
//! five to seven processes under load. The harness (clusters, load, checks) is `netns_harness`.
//! `scripts/test.sh` runs them after every other test, on their own, so that they do not starve the
//! timing of tests running beside them.
//! `FERRYMQ_CLUSTER_KILLS=N` sets how many masters each kill test kills (default 20).

use std::time::{Duration, Instant};

use ferrymq_client::{Client, Message};

use crate::netns_harness::{
    Broker, ClusterLab, FAILOVER_MAX, Load, TOPIC, assert_identical_logs, config, options, probe_consumption, produce,
    routes_of, runtime, wait_caught_up,
};
use crate::support::http_get;

fn kills() -> usize {
    std::env::var("FERRYMQ_CLUSTER_KILLS").ok().and_then(|v| v.parse().ok()).unwrap_or(20)
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
    let plugin = ferrymq_test_components::component("body_contains");
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
    // The view's log ends come from heartbeats: the slave's index may still be a moment behind.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cluster.broker("a", 1).holds_key("k6999") {
        assert!(Instant::now() < deadline, "the slave never indexed the last message");
        std::thread::sleep(Duration::from_millis(100));
    }
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
