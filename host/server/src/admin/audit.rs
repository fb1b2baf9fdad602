//! The audit log: every admin action and every plugin quarantine, one entry per record of the audit
//! system topic, each carrying the hash of the one before it, so an edited, removed or reordered
//! entry breaks the chain ([`verify`]).

use std::sync::{Arc, Mutex};

use ferrymq_store::Store;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use ferrymq_broker::system_topic::{self, AUDIT_TOPIC};

/// The `prev` of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// Longest principal, action, target or result an entry keeps; longer ones are cut (a refused
/// request's path is the caller's to choose).
pub const FIELD_BYTES_MAX: usize = 256;
/// Entries for refused (unauthenticated) requests per second at most; the rest are counted and
/// the count goes into the next such entry.
pub const REFUSALS_PER_S_MAX: u64 = 10;

/// `text` cut to [`FIELD_BYTES_MAX`] bytes on a character boundary, saying how long it was.
fn bounded(text: &str) -> String {
    if text.len() <= FIELD_BYTES_MAX {
        return text.to_owned();
    }
    let mut end = FIELD_BYTES_MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &text[..end], text.len())
}

/// One audited event.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub struct AuditEntry {
    /// 0, 1, 2, … with no gaps.
    pub seq: u64,
    pub time_ms: i64,
    /// Who: the token's principal, `anonymous` with authentication off, `unauthenticated` for a
    /// refused token, `broker` for quarantines.
    pub principal: String,
    /// What: `POST /v1/plugins/tax/inbox/versions`, `plugin.quarantine`, …
    pub action: String,
    /// On what (a plugin, binding, topic…).
    pub target: String,
    /// SHA-256 of the component involved, if one was.
    pub digest: Option<String>,
    /// The outcome: an HTTP status line, or the failure that quarantined a plugin.
    pub result: String,
    /// The previous entry's hash ([`GENESIS`] for the first).
    pub prev: String,
    /// SHA-256 of this entry with `hash` empty.
    pub hash: String,
}

impl AuditEntry {
    /// The hash this entry should carry.
    pub fn compute_hash(&self) -> String {
        let unhashed = AuditEntry { hash: String::new(), ..self.clone() };
        // Serialising this plain struct cannot fail.
        let bytes = serde_json::to_vec(&unhashed).unwrap_or_default();
        ferrymq_proto::hex::encode(&Sha256::digest(bytes))
    }
}

/// What verifying a run of entries found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub ok: bool,
    pub entries: usize,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// The first entry that breaks the chain, and why (entries after it are not checked).
    pub broken_at: Option<u64>,
    pub reason: Option<String>,
    /// The run does not start at entry 0: what came before it cannot be checked (retention removed
    /// it, or the run is an excerpt).
    pub truncated: bool,
}

/// Checks entries one at a time, oldest first, keeping only the last one seen: a chain of any
/// length is verified in constant memory. The first entry's `prev` is trusted unless it is entry 0,
/// which must start from [`GENESIS`].
#[derive(Debug, Default)]
pub struct Verifier {
    /// Seq and hash of the last entry accepted.
    previous: Option<(u64, String)>,
    entries: usize,
    first_seq: Option<u64>,
    broken: Option<(u64, String)>,
}

impl Verifier {
    /// Checks the next entry; false once the chain is broken (later entries are not looked at).
    pub fn push(&mut self, entry: &AuditEntry) -> bool {
        if self.broken.is_some() {
            return false;
        }
        self.entries += 1;
        self.first_seq.get_or_insert(entry.seq);
        let problem = if entry.compute_hash() != entry.hash {
            Some("its content does not match its hash (edited)".to_owned())
        } else {
            match &self.previous {
                Some((seq, _)) if entry.seq != seq + 1 => {
                    Some(format!("follows entry {seq} (entries missing or reordered)"))
                }
                Some((_, hash)) if entry.prev != *hash => {
                    Some("its prev is not the hash of the entry before it".to_owned())
                }
                None if entry.seq == 0 && entry.prev != GENESIS => {
                    Some("the first entry does not start from the genesis hash".to_owned())
                }
                _ => None,
            }
        };
        match problem {
            Some(reason) => {
                self.broken = Some((entry.seq, format!("entry {}: {reason}", entry.seq)));
                false
            }
            None => {
                self.previous = Some((entry.seq, entry.hash.clone()));
                true
            }
        }
    }

    pub fn finish(self) -> Verdict {
        let (broken_at, mut reason) = self.broken.map_or((None, None), |(seq, reason)| (Some(seq), Some(reason)));
        let truncated = self.first_seq.is_some_and(|seq| seq > 0);
        if truncated && reason.is_none() {
            reason =
                self.first_seq.map(|seq| format!("entries 0 to {} are gone; the chain is checked from {seq}", seq - 1));
        }
        Verdict {
            ok: broken_at.is_none() && !truncated,
            truncated,
            entries: self.entries,
            first_seq: self.first_seq,
            last_seq: broken_at.or(self.previous.map(|(seq, _)| seq)),
            broken_at,
            reason,
        }
    }
}

/// Checks that `entries` (consecutive, oldest first) form an intact chain.
pub fn verify(entries: &[AuditEntry]) -> Verdict {
    let mut verifier = Verifier::default();
    for entry in entries {
        if !verifier.push(entry) {
            break;
        }
    }
    verifier.finish()
}

/// Appends entries to the audit topic, one at a time, each chained to the last.
#[derive(Debug)]
pub struct AuditLog {
    store: Arc<Store>,
    /// (next seq, hash of the last entry).
    tip: Mutex<(u64, String)>,
    refusals: Mutex<Refusals>,
}

/// Refused requests recorded in the current second, and those only counted since the last entry.
#[derive(Debug, Default)]
struct Refusals {
    window: Option<std::time::Instant>,
    in_window: u64,
    suppressed: u64,
}

impl AuditLog {
    /// Opens the log, continuing the chain from its last entry.
    pub fn open(store: Arc<Store>) -> Self {
        let end = system_topic::end(&store, AUDIT_TOPIC);
        let mut tip = (0, GENESIS.to_owned());
        if end > 0 {
            system_topic::scan(&store, AUDIT_TOPIC, end - 1, |_, stored| {
                match stored.decode().ok().and_then(|r| serde_json::from_slice::<AuditEntry>(r.body).ok()) {
                    Some(last) => tip = (last.seq + 1, last.hash),
                    None => tracing::error!("the last audit entry is unreadable; the chain restarts after it"),
                }
            });
        }
        Self { store, tip: Mutex::new(tip), refusals: Mutex::new(Refusals::default()) }
    }

    /// Whether an entry could be stored now: an admin change that could not be audited is refused
    /// before it is made.
    pub fn writable(&self) -> bool {
        self.store.accepts_appends()
    }

    /// Records a refused request, at most [`REFUSALS_PER_S_MAX`] a second: beyond that they are only
    /// counted, and the next entry says how many were.
    pub fn record_refusal(&self, action: &str, target: &str, result: &str) {
        let folded = {
            let mut refusals = ferrymq_proto::sync::lock(&self.refusals);
            let now = std::time::Instant::now();
            if refusals.window.is_none_or(|start| now.duration_since(start) >= std::time::Duration::from_secs(1)) {
                refusals.window = Some(now);
                refusals.in_window = 0;
            }
            if refusals.in_window >= REFUSALS_PER_S_MAX {
                refusals.suppressed += 1;
                ferrymq_proto::limit::Limit::AuditRefusals.reached();
                return;
            }
            refusals.in_window += 1;
            std::mem::take(&mut refusals.suppressed)
        };
        let result = match folded {
            0 => result.to_owned(),
            n => format!("{result} (and {n} more refused requests not recorded one by one)"),
        };
        self.record("unauthenticated", action, target, None, &result);
    }

    /// Records one event; a failure to store it is logged (the action it records has happened).
    pub fn record(&self, principal: &str, action: &str, target: &str, digest: Option<String>, result: &str) {
        let mut tip = ferrymq_proto::sync::lock(&self.tip);
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let mut entry = AuditEntry {
            seq: tip.0,
            time_ms: now_ms,
            principal: bounded(principal),
            action: bounded(action),
            target: bounded(target),
            digest,
            result: bounded(result),
            prev: tip.1.clone(),
            hash: String::new(),
        };
        entry.hash = entry.compute_hash();
        let body = serde_json::to_vec(&entry).unwrap_or_default();
        match system_topic::append(&self.store, AUDIT_TOPIC, now_ms, body) {
            Ok(_) => *tip = (entry.seq + 1, entry.hash),
            Err(err) => tracing::error!(%err, principal = %entry.principal, action = %entry.action,
                target = %entry.target, result = %entry.result, "audit entry not stored"),
        }
    }

    /// Up to `limit` entries from `from_seq` on (entries removed by retention are skipped).
    pub fn read(&self, from_seq: u64, limit: usize) -> Vec<AuditEntry> {
        let mut out = Vec::new();
        // One entry per record, appended in seq order from 0: an entry's seq is its queue offset.
        system_topic::scan_at_most(&self.store, AUDIT_TOPIC, from_seq, limit as u64, |_, stored| {
            if let Some(entry) = stored.decode().ok().and_then(|r| serde_json::from_slice::<AuditEntry>(r.body).ok()) {
                out.push(entry);
            }
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: u64) -> Vec<AuditEntry> {
        let mut prev = GENESIS.to_owned();
        (0..n)
            .map(|seq| {
                let mut e = AuditEntry {
                    seq,
                    time_ms: 1_700_000_000_000 + seq as i64,
                    principal: "ops".into(),
                    action: "PUT /v1/bindings/b".into(),
                    target: "b".into(),
                    digest: None,
                    result: "200 OK".into(),
                    prev: prev.clone(),
                    hash: String::new(),
                };
                e.hash = e.compute_hash();
                prev = e.hash.clone();
                e
            })
            .collect()
    }

    #[test]
    fn an_intact_chain_verifies_and_any_edit_breaks_it() {
        let entries = chain(5);
        assert!(verify(&entries).ok);
        let mut edited = entries.clone();
        edited[2].principal = "someone-else".into();
        let verdict = verify(&edited);
        assert_eq!((verdict.ok, verdict.broken_at), (false, Some(2)));
        // Re-hashing the edited entry moves the break to the next one.
        edited[2].hash = edited[2].compute_hash();
        assert_eq!(verify(&edited).broken_at, Some(3));
        let mut missing = entries.clone();
        missing.remove(1);
        assert_eq!(verify(&missing).broken_at, Some(2));
        let tail = verify(&entries[2..]);
        assert!(tail.broken_at.is_none(), "a tail trimmed by retention is not broken…");
        assert!(tail.truncated && !tail.ok, "…but it is not the whole chain either: {tail:?}");
    }

    fn log() -> (tempfile::TempDir, AuditLog) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut options = ferrymq_store::StoreOptions::new(dir.path());
        options.config.segment_bytes = 8 << 20;
        options.config.index_entries_max = 1024;
        options.config.index_slots = 64;
        let store = Arc::new(Store::open(options).expect("store"));
        (dir, AuditLog::open(store))
    }

    #[test]
    fn refused_requests_are_recorded_bounded_in_size_and_in_number() {
        let (_dir, log) = log();
        let path = format!("POST /v1/{}", "a".repeat(60_000));
        let settled = |log: &AuditLog| {
            let written = log.store.stats().written;
            assert!(log.store.wait_dispatched(written, std::time::Duration::from_secs(10)));
        };
        for _ in 0..100 {
            log.record_refusal(&path, &path, "401 Unauthorized");
        }
        settled(&log);
        let entries = log.read(0, 1000);
        assert_eq!(entries.len() as u64, REFUSALS_PER_S_MAX, "the rest of the second is only counted");
        assert!(entries.iter().all(|e| e.action.len() < FIELD_BYTES_MAX + 32), "{}", entries[0].action.len());
        assert!(entries[0].action.ends_with("(60009 bytes)"), "{}", &entries[0].action[FIELD_BYTES_MAX - 8..]);
        std::thread::sleep(std::time::Duration::from_millis(1_100));
        log.record_refusal("POST /v1/topics", "topics", "401 Unauthorized");
        settled(&log);
        let last = log.read(REFUSALS_PER_S_MAX, 10);
        assert!(last[0].result.contains("and 90 more refused requests"), "{}", last[0].result);
        assert!(verify(&log.read(0, 1000)).ok);
    }
}
