//! `ferrymq standalone` as an operator sees it: health, metrics, clean stop, crash restart, the data
//! directory lock, and errors at start-up.

use std::time::Duration;

use crate::support::{Node, run};

#[test]
fn standalone_answers_healthz_and_metrics_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = Node::start(dir.path(), &[]);
    let (status, body) = node.get("/healthz");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"status\":\"ok\""), "{body}");
    assert_eq!(node.metric("ferrymq_store_fatal"), 0.0);
    assert_eq!(node.get("/nothing-here").0, 404);

    node.signal(libc::SIGTERM);
    let status = node.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "exit {status:?}; log:\n{}", node.log_lines.join("\n"));
    assert!(node.log_lines.iter().any(|l| l.contains("ferrymq stopped cleanly")));

    let node = Node::start(dir.path(), &[]);
    assert_eq!(node.metric("ferrymq_store_recovery_clean"), 1.0, "a SIGTERM stop is a clean shutdown");
}

#[test]
fn a_killed_node_restarts_and_reports_a_recovery() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = Node::start(dir.path(), &["--flush", "sync"]);
    node.signal(libc::SIGKILL);
    node.wait_exit(Duration::from_secs(10));
    let node = Node::start(dir.path(), &[]);
    assert_eq!(node.metric("ferrymq_store_recovery_clean"), 0.0);
    assert_eq!(node.get("/healthz").0, 200);
}

#[test]
fn a_second_node_on_the_same_data_directory_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = Node::start(dir.path(), &[]);
    let (code, _, stderr) = run(&[
        "standalone",
        "--data-dir",
        dir.path().to_str().expect("utf-8 path"),
        "--admin-listen",
        "127.0.0.1:0",
        "--grpc-listen",
        "127.0.0.1:0",
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("in use by another ferrymq process"), "{stderr}");
    assert_eq!(first.get("/healthz").0, 200, "the first node is unaffected");
}

#[test]
fn a_busy_admin_port_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    let (code, _, stderr) = run(&[
        "standalone",
        "--data-dir",
        dir.path().to_str().expect("utf-8 path"),
        "--admin-listen",
        &addr,
        "--grpc-listen",
        "127.0.0.1:0",
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains(&format!("bind admin HTTP on {addr}")), "{stderr}");
}

#[test]
fn configuration_mistakes_are_reported_with_the_field_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        ("[store]\nsegmnt_bytes = 5\n", "segmnt_bytes"),
        ("[store]\nsegment_bytes = 100\n", "segment_bytes must be between"),
        ("[store]\nflush = \"sometimes\"\n", "sometimes"),
        ("data_dir = 5\n", "data_dir"),
    ];
    for (i, (text, expected)) in cases.iter().enumerate() {
        let file = dir.path().join(format!("bad{i}.toml"));
        std::fs::write(&file, text).expect("write config");
        let (code, _, stderr) = run(&["standalone", "--config", file.to_str().expect("utf-8 path")]);
        assert_eq!(code, 2, "{text}: {stderr}");
        assert!(stderr.contains(expected), "{text}: {stderr}");
        assert!(stderr.contains(file.to_str().expect("path")), "the file is named: {stderr}");
    }
}

/// A file system that cannot hold one log segment: the node refuses to start, naming the directory,
/// the free bytes and `segment_bytes`, rather than starting healthy and failing every send.
#[test]
fn a_disk_too_small_for_one_segment_is_refused_at_start() {
    let mount = tempfile::tempdir().expect("mount point");
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"])
        .arg(mount.path())
        .status()
        .expect("run mount");
    assert!(mounted.success(), "this test needs root to mount a small tmpfs");
    let data = mount.path().join("data");
    let config = mount.path().join("node.toml");
    std::fs::write(&config, "[store]\nsegment_bytes = 67108864\n").expect("write config");
    let (code, _, stderr) = run(&[
        "standalone",
        "--data-dir",
        data.to_str().expect("utf-8 path"),
        "--config",
        config.to_str().expect("utf-8 path"),
        "--admin-listen",
        "127.0.0.1:0",
        "--grpc-listen",
        "127.0.0.1:0",
    ]);
    let _ = std::process::Command::new("umount").arg(mount.path()).status();
    assert_ne!(code, 0, "{stderr}");
    for words in [data.to_str().expect("path"), "segment_bytes = 67108864", "lower segment_bytes"] {
        assert!(stderr.contains(words), "the error names {words:?}: {stderr}");
    }
}
