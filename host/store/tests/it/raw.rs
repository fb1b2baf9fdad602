//! Replication readiness: a slave appends the master's bytes verbatim and ends up with the same log.

use std::sync::Arc;

use ferrymq_store::clock::SystemClock;
use ferrymq_store::io::FsStorage;
use ferrymq_store::{FlushMode, Store, StoreError};

use crate::support::{message, options, queue_bodies, small_config, wait_dispatched};

fn open(dir: &std::path::Path) -> Store {
    Store::open(options(dir, small_config(FlushMode::Sync), Arc::new(FsStorage), Arc::new(SystemClock))).expect("open")
}

/// Copies the master's log to the slave in chunks of about `chunk` bytes; returns the slave's end.
fn replicate(master: &Store, slave: &Store, from: u64, chunk: usize) -> u64 {
    let mut end = from;
    while end < master.stats().visible {
        let bytes = master.read_raw(end, chunk).expect("read raw");
        assert!(!bytes.is_empty());
        end = slave.append_raw_wait(end, bytes).expect("append raw");
    }
    end
}

#[test]
fn a_slave_appending_the_masters_bytes_gets_an_identical_log_and_queues() {
    let (mdir, sdir) = (tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir"));
    let master = open(mdir.path());
    let slave = open(sdir.path());
    for i in 0..400u32 {
        let body = format!("{i}-").repeat(1 + i as usize % 300).into_bytes();
        master
            .append_wait(message(["a", "b"][i as usize % 2], i % 3, &body, "", &format!("k{i}"), &format!("id{i}")))
            .expect("append");
    }
    let end = replicate(&master, &slave, 0, 8 * 1024);
    assert_eq!(end, master.stats().written);
    wait_dispatched(&slave);
    for topic in ["a", "b"] {
        for q in 0..3 {
            assert_eq!(queue_bodies(&slave, topic, q), queue_bodies(&master, topic, q), "{topic}/{q}");
        }
    }
    assert_eq!(slave.lookup_message_id("id321", 2).len(), 1);
    master.close();
    slave.close();
    let names = |d: &std::path::Path| {
        let mut v: Vec<_> =
            std::fs::read_dir(d.join("commitlog")).expect("ls").map(|e| e.expect("entry").file_name()).collect();
        v.sort();
        v
    };
    assert_eq!(names(mdir.path()), names(sdir.path()));
    for name in names(mdir.path()) {
        let m = std::fs::read(mdir.path().join("commitlog").join(&name)).expect("read");
        let s = std::fs::read(sdir.path().join("commitlog").join(&name)).expect("read");
        assert!(m == s, "segment {name:?} differs");
    }
}

#[test]
fn misplaced_or_damaged_raw_bytes_are_refused_and_change_nothing() {
    let (mdir, sdir) = (tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir"));
    let master = open(mdir.path());
    let slave = open(sdir.path());
    for i in 0..20u32 {
        master.append_wait(message("a", 0, &[i as u8; 500], "", "", "")).expect("append");
    }
    let end = replicate(&master, &slave, 0, 2048);
    let next_bytes = {
        master.append_wait(message("a", 0, b"one more", "", "", "")).expect("append");
        master.read_raw(end, 4096).expect("read raw")
    };
    let wrong = slave.append_raw_wait(end + 1, next_bytes.clone());
    assert!(
        matches!(wrong, Err(StoreError::RawOffsetMismatch { expected, got }) if expected == end && got == end + 1),
        "{wrong:?}"
    );
    let mut damaged = next_bytes.clone();
    let last = damaged.len() - 1;
    damaged[last] ^= 1;
    assert!(matches!(slave.append_raw_wait(end, damaged), Err(StoreError::RawCorrupt { offset, .. }) if offset == end));
    assert_eq!(slave.stats().written, end, "nothing was appended");
    assert_eq!(slave.append_raw_wait(end, next_bytes).expect("the intact bytes apply"), master.stats().written);
}

#[test]
fn a_read_only_store_refuses_its_own_appends_and_takes_raw_bytes() {
    let (mdir, sdir) = (tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir"));
    let master = open(mdir.path());
    let slave = open(sdir.path());
    slave.set_read_only(true);
    assert!(slave.is_read_only());
    master.append_wait(message("a", 0, b"one", "", "k1", "id1")).expect("append");
    let err = slave.append_wait(message("a", 0, b"local", "", "k2", "id2")).expect_err("a replica refuses appends");
    assert!(matches!(err, StoreError::ReadOnly), "{err}");
    assert!(master.wait_visible_past(0, std::time::Duration::from_millis(10)), "the master has a record");
    let end = replicate(&master, &slave, 0, 4096);
    assert_eq!(end, master.stats().written);
    assert!(!slave.wait_visible_past(end, std::time::Duration::from_millis(20)), "nothing past the end");
    slave.set_read_only(false);
    let own = slave.append_wait(message("a", 0, b"after", "", "k3", "id3")).expect("writable again");
    assert_eq!(own.offset, end);
}

#[test]
fn a_log_tail_digest_matches_only_the_same_bytes() {
    let (mdir, sdir) = (tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir"));
    let master = open(mdir.path());
    let slave = open(sdir.path());
    assert_eq!(slave.tail_digest(0, 4096).expect("empty"), None);
    for i in 0..50u32 {
        master.append_wait(message("a", 0, format!("m{i}").as_bytes(), "", "", &format!("id{i}"))).expect("append");
    }
    let end = replicate(&master, &slave, 0, 1024);
    let (start, crc) = slave.tail_digest(end, 4096).expect("digest").expect("not empty");
    assert!(start < end && end - start <= 4096);
    assert_eq!(master.digest(start, end).expect("master digest"), crc, "the same bytes");
    let other = tempfile::tempdir().expect("dir");
    let diverged = open(other.path());
    for i in 0..50u32 {
        diverged.append_wait(message("a", 0, format!("x{i}").as_bytes(), "", "", &format!("id{i}"))).expect("append");
    }
    let theirs = diverged.stats().written;
    assert_eq!(theirs, end, "same sizes, different bytes");
    assert_ne!(diverged.digest(start, end).expect("digest"), crc);
    assert!(master.digest(start, end + 1).is_err(), "past the end");
}

#[test]
fn an_empty_slave_starts_where_a_trimmed_master_log_starts() {
    let (mdir, sdir) = (tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir"));
    let mut config = small_config(FlushMode::Sync);
    config.disk_pressure = ferrymq_store::DiskPressure::DeleteOldest;
    config.disk_usage_max_ratio = 0.000_001;
    config.disk_full_ratio = 1.0;
    let master =
        Store::open(options(mdir.path(), config, Arc::new(FsStorage), Arc::new(SystemClock))).expect("open master");
    for i in 0..600u32 {
        master.append_wait(message("a", i % 2, &[b'x'; 700], "", &format!("k{i}"), &format!("id{i}"))).expect("append");
    }
    wait_dispatched(&master);
    std::thread::sleep(std::time::Duration::from_millis(100)); // a checkpoint covers the old segments
    master.run_retention().expect("retention");
    let start = master.stats().min_offset;
    assert!(start > 0, "retention removed the oldest segments: {:?}", master.stats());
    let slave = open(sdir.path());
    let end = replicate(&master, &slave, start, 8 * 1024);
    assert_eq!(end, master.stats().written);
    wait_dispatched(&slave);
    assert_eq!(slave.stats().min_offset, start);
    for q in 0..2 {
        assert_eq!(queue_bodies(&slave, "a", q), queue_bodies(&master, "a", q), "queue {q}");
        assert_eq!(slave.queue_bounds("a", q), master.queue_bounds("a", q), "queue {q} starts where the master's does");
    }
    assert_eq!(slave.lookup_message_id("id599", 2).len(), 1);
    assert!(slave.stats().fatal.is_none());
}
