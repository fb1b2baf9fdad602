//! Seeded fuzz test of recovery from damaged files: a store on real files takes a few dozen
//! acknowledged records and closes; each case copies its directory, damages the log segments, the
//! checkpoint, the consume queues or the index (random bytes, zeroed ranges, truncation, removal,
//! and records rewritten with a valid checksum), and opens it again.
//!
//! The promise under test: opening either fails with an error or succeeds, within a time limit and
//! without a panic; a store that opens returns nothing made up (every record it gives back is an
//! acknowledged one, at the queue position it was acknowledged at) and, when only log bytes were
//! damaged, still has every record that lies wholly before the first damaged byte; and it takes
//! appends again.
//!
//! `FERRYMQ_FUZZ_CASES` (default 300) cases from `FERRYMQ_FUZZ_SEED` (default 0); a failing case
//! prints the line that replays it alone.

use std::collections::BTreeMap;
use std::fs;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::sync_channel;
use std::time::Duration;

use ferrymq_proto::properties::{self, UNIQ_KEY};
use ferrymq_proto::record;
use ferrymq_store::clock::SystemClock;
use ferrymq_store::io::{FsStorage, SeededRng as Rng};
use ferrymq_store::{FlushMode, Store};

use crate::support::{message, options, small_config};

/// Longest an open (with its checks) may take before the case counts as a hang.
const CASE_TIME_MAX: Duration = Duration::from_secs(20);
/// Acknowledged records in the store every case starts from.
const RECORDS: u64 = 60;

/// One acknowledged record.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Acked {
    id: String,
    topic: String,
    queue_id: u32,
    queue_offset: u64,
    offset: u64,
    end: u64,
    body: Vec<u8>,
}

fn open(dir: &Path) -> ferrymq_store::Result<Store> {
    Store::open(options(dir, small_config(FlushMode::Sync), Arc::new(FsStorage), Arc::new(SystemClock)))
}

/// Writes the records every case starts from, and closes the store cleanly.
fn template(dir: &Path) -> Vec<Acked> {
    let store = open(dir).expect("a new store opens");
    let mut rng = Rng(0x7e57);
    let mut acked = Vec::new();
    for i in 0..RECORDS {
        let topic = if i % 3 == 0 { "audit" } else { "orders" };
        let queue_id = (i % 2) as u32;
        let body = format!("record {i} ").repeat(1 + rng.below(400) as usize).into_bytes();
        let id = format!("ID{i}");
        let appended = store.append_wait(message(topic, queue_id, &body, "TagA", "k1 k2", &id)).expect("append");
        let end = appended.offset + u64::from(appended.len);
        let queue_offset = appended.queue_offset;
        acked.push(Acked { id, topic: topic.into(), queue_id, queue_offset, offset: appended.offset, end, body });
    }
    store.close();
    acked
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("mkdir");
    for entry in fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), target).expect("copy");
        }
    }
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("read dir").flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            files(&entry.path(), out);
        } else {
            out.push(entry.path());
        }
    }
}

/// The log offset a segment file starts at, if `path` is one.
fn segment_base(path: &Path) -> Option<u64> {
    let in_log = path.parent()?.file_name()? == "commitlog";
    in_log.then(|| path.file_name()?.to_str()?.parse().ok()).flatten()
}

/// Rewrites one field of the record at `at` in `bytes` and recomputes its checksum: damage that only
/// the record's own structure checks can catch.
fn forge(rng: &mut Rng, bytes: &mut [u8], at: usize) {
    let Some(head) = bytes.get(at..at + record::HEADER_BYTES) else { return };
    let total = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
    if total < record::HEADER_BYTES || at + total > bytes.len() {
        return;
    }
    // Fields and widths: sys flag, queue id, physical offset, topic, properties and body lengths.
    // The queue offset is left alone: the store adds to it unchecked, and near u64::MAX that
    // overflows (recovery panics where overflow is checked) until it is bounded where records are
    // read.
    let (field, width) =
        *[(12, 4), (20, 4), (32, 8), (104, 2), (106, 2), (108, 4)].get(rng.below(6) as usize).expect("in range");
    for b in &mut bytes[at + field..at + field + width] {
        *b = rng.next_u64() as u8;
    }
    let crc = crc32c::crc32c(&bytes[at + 12..at + total]);
    bytes[at + 8..at + 12].copy_from_slice(&crc.to_be_bytes());
}

/// What a case damaged.
#[derive(Debug, Default)]
struct Damage {
    /// The first log offset whose byte may have changed (or that no longer exists).
    first_log_byte: Option<u64>,
    /// A checkpoint, consume-queue or index file changed.
    derived: bool,
    /// Records rewritten with a valid checksum: the store cannot tell them from real ones, so they
    /// may come back as forged.
    forged: Vec<String>,
    what: Vec<String>,
}

impl Damage {
    fn log_from(&mut self, offset: u64) {
        self.first_log_byte = Some(self.first_log_byte.map_or(offset, |o| o.min(offset)));
    }
}

fn damage(rng: &mut Rng, dir: &Path, acked: &[Acked]) -> Damage {
    let mut all = Vec::new();
    files(dir, &mut all);
    all.sort();
    let mut done = Damage::default();
    for _ in 0..1 + rng.below(3) {
        // Segments are damaged half of the time; everything else shares the other half.
        let segments: Vec<&PathBuf> = all.iter().filter(|p| segment_base(p).is_some()).collect();
        let path = if rng.below(2) == 0 && !segments.is_empty() {
            segments[rng.below(segments.len() as u64) as usize].clone()
        } else {
            all[rng.below(all.len() as u64) as usize].clone()
        };
        let Ok(mut bytes) = fs::read(&path) else { continue };
        let len = bytes.len() as u64;
        let (from, kind) = match rng.below(7) {
            0 => {
                let at = rng.below(len);
                for b in bytes.iter_mut().skip(at as usize).take(1 + rng.below(64) as usize) {
                    *b = rng.next_u64() as u8;
                }
                (at, "random bytes")
            }
            1 => {
                let at = rng.below(len);
                let n = 1 + rng.below(4096);
                for b in bytes.iter_mut().skip(at as usize).take(n as usize) {
                    *b = 0;
                }
                (at, "zeroed range")
            }
            2 => {
                let at = rng.below(len + 1);
                bytes.truncate(at as usize);
                (at, "truncated")
            }
            3 => {
                let at = rng.below(len);
                bytes[at as usize] ^= 1 << rng.below(8);
                (at, "bit flip")
            }
            4 => {
                fs::remove_file(&path).expect("remove");
                done.what.push(format!("removed {}", path.display()));
                if let Some(base) = segment_base(&path) {
                    done.log_from(base);
                } else {
                    done.derived = true;
                }
                continue;
            }
            _ => match segment_base(&path) {
                Some(base) => {
                    let inside: Vec<&Acked> =
                        acked.iter().filter(|a| a.offset >= base && a.end <= base + len).collect();
                    let Some(victim) = inside.get(rng.below(inside.len() as u64) as usize) else { continue };
                    forge(rng, &mut bytes, (victim.offset - base) as usize);
                    done.forged.push(victim.id.clone());
                    (victim.offset - base, "record forged with a valid checksum")
                }
                None => {
                    let n = rng.below(64);
                    bytes.extend((0..n).map(|_| rng.next_u64() as u8));
                    (len, "garbage appended")
                }
            },
        };
        fs::write(&path, &bytes).expect("write back");
        done.what.push(format!("{kind} at {from} of {}", path.display()));
        match segment_base(&path) {
            Some(base) => done.log_from(base + from),
            None => done.derived = true,
        }
    }
    done
}

/// Opens the damaged store and checks the promise; `Err` with why it did not hold.
fn check(dir: &Path, acked: &[Acked], damage: &Damage) -> Result<(), String> {
    let store = match open(dir) {
        Ok(store) => store,
        Err(_) => return Ok(()),
    };
    let by_position: BTreeMap<(&str, u32, u64), &Acked> =
        acked.iter().map(|a| ((a.topic.as_str(), a.queue_id, a.queue_offset), a)).collect();
    let mut found = Vec::new();
    for q in store.queues() {
        for entry in store.read_queue(&q.topic, q.queue_id, q.min, (q.max - q.min) as usize) {
            let Ok(stored) = store.record(entry.offset, entry.len) else { continue };
            let Ok(rec) = stored.decode() else { continue };
            let id = properties::get(rec.properties, UNIQ_KEY).unwrap_or("");
            let expected = by_position.get(&(q.topic.as_str(), q.queue_id, entry.queue_offset));
            let same = expected.is_some_and(|a| {
                a.id == id && rec.topic == a.topic && rec.meta.queue_id == a.queue_id && rec.body == a.body
            });
            if !same && !damage.forged.iter().any(|f| f == id) {
                return Err(format!(
                    "{}/{} position {} gave a record of {id:?} on {}/{} with {} bytes of body; acknowledged there: {:?}",
                    q.topic,
                    q.queue_id,
                    entry.queue_offset,
                    rec.topic,
                    rec.meta.queue_id,
                    rec.body.len(),
                    expected.map(|a| (&a.id, a.body.len()))
                ));
            }
            found.push(id.to_owned());
        }
    }
    for a in acked {
        for stored in store.lookup_message_id(&a.id, 4) {
            if let Ok(rec) = stored.decode()
                && rec.body != a.body
                && !damage.forged.contains(&a.id)
            {
                return Err(format!("looking up {} found another record", a.id));
            }
        }
    }
    if !damage.derived {
        let intact_before = damage.first_log_byte.unwrap_or(u64::MAX);
        if let Some(lost) = acked.iter().find(|a| a.end <= intact_before && !found.contains(&a.id)) {
            return Err(format!("{} lies before the first damaged byte ({intact_before}) but is gone", lost.id));
        }
    }
    let next = store.append_wait(message("orders", 0, b"after recovery", "", "", "next"));
    if let Err(err) = &next
        && store.accepts_appends()
    {
        return Err(format!("a store that accepts appends refused one: {err}"));
    }
    store.close();
    Ok(())
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[test]
fn damaged_files_open_to_an_error_or_to_acknowledged_records_only() {
    // In memory where there is a /dev/shm: removing each case's files from a disk costs more than
    // the case.
    let shm = Path::new("/dev/shm");
    let root = if shm.is_dir() { tempfile::tempdir_in(shm) } else { tempfile::tempdir() }.expect("tempdir");
    let base_dir = root.path().join("template");
    let acked = Arc::new(template(&base_dir));
    let first = env_u64("FERRYMQ_FUZZ_SEED").unwrap_or(0);
    let cases = env_u64("FERRYMQ_FUZZ_CASES").unwrap_or(300);
    for seed in first..first + cases {
        let dir = root.path().join(format!("case-{seed}"));
        copy_dir(&base_dir, &dir);
        let damage = damage(&mut Rng(seed ^ 0xD4_3A6E), &dir, &acked);
        let (tx, rx) = sync_channel(1);
        let (acked, case_dir) = (acked.clone(), dir.clone());
        // On its own thread, so that a hang is reported with its seed rather than stalling the run.
        std::thread::spawn(move || {
            let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| check(&case_dir, &acked, &damage)));
            let _ = tx.send((outcome, damage));
        });
        let verdict = match rx.recv_timeout(CASE_TIME_MAX) {
            Ok((Ok(Ok(())), _)) => None,
            Ok((Ok(Err(why)), damage)) => Some(format!("{why}\n  damage: {:?}", damage.what)),
            Ok((Err(_), damage)) => Some(format!("recovery panicked\n  damage: {:?}", damage.what)),
            Err(_) => Some(format!("no answer within {CASE_TIME_MAX:?}")),
        };
        if let Some(verdict) = verdict {
            panic!(
                "seed {seed}: {verdict}\n  replay: FERRYMQ_FUZZ_SEED={seed} FERRYMQ_FUZZ_CASES=1 \
                 cargo test --profile ci -p ferrymq-store --test it -- fuzz_recovery::"
            );
        }
        let _ = fs::remove_dir_all(&dir);
    }
}
