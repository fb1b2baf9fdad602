//! The window: recent keys with the receipt their first send got, keys being stored with the sends
//! that wait for them, expiry by time and eviction by count.
//!
//! A send is *admitted*: a key being stored makes it wait (its waiter is kept and handed back when
//! the first send settles), a key remembered within the window makes it a duplicate, and anything
//! else is fresh — its key is marked as being stored before the caller stores it, so a second send
//! of the key can never pass it. The caller then *settles* the key with what happened.
//!
//! Memory alone answers only while it has seen every send of the window: after a start (or when a
//! replica becomes writable) until one window has passed, and after an eviction by count until the
//! evicted key's window has passed, [`Admission::Fresh`] asks the caller to consult its store.
//!
//! A key is remembered by a 128-bit digest: two SipHash-1-3 hashes under keys drawn at random when
//! the window is made, so no client can choose ids that collide. Two keys share a digest with a
//! probability of about n²/2¹²⁹ for n keys in memory (10⁻²⁷ for a million).
//!
//! Memory per remembered key: an entry (56 bytes) and a map slot (24 bytes and a control byte, the
//! table at most 7/8 full), about 85 bytes; both grow by doubling, so up to twice that just after
//! they grew. Keys being stored are bounded by the sends in flight, which the front end bounds.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher, RandomState};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use ferrymq_proto::sync::lock;

use crate::config::DedupConfig;

/// What makes two sends the same message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Key<'a> {
    /// The topic the producer named.
    pub topic: &'a str,
    pub message_id: &'a str,
    /// Transactional sends match only transactional sends; others only others.
    pub transactional: bool,
}

/// A key as the window remembers it (two 64-bit halves: 8-byte alignment keeps entries small).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Digest {
    high: u64,
    low: u64,
}

impl Hash for Digest {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Already uniformly random: maps need only one half.
        state.write_u64(self.low);
    }
}

/// Where the first send of a key was stored: what its producer was told, and how far a replica
/// must hold the log before a duplicate may be acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Original {
    pub queue_id: u32,
    /// The send was transactional: its answer carries a transaction id.
    pub transaction: bool,
    pub queue_offset: u64,
    pub log_offset: u64,
    pub log_end: u64,
}

/// What to do with an admitted send.
#[derive(Debug)]
pub enum Admission<W> {
    /// No send of the key within the window is known. Store it (after consulting the store if
    /// told to), then [`Window::settle`] the key; until then other sends of it wait.
    Fresh { waiter: W, consult_store: Option<Consult> },
    /// The key was stored within the window: answer with the original, store nothing.
    Duplicate { waiter: W, original: Original },
    /// A send of the key is being stored: the waiter is handed back when it settles.
    Waiting,
}

/// Memory cannot vouch for a fresh key: the store may hold a send of it from within the window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Consult {
    /// Sends stored without this memory's knowledge end here in the log: the store's index must
    /// cover the log up to this offset for its answer to be complete.
    pub indexed_to: u64,
}

/// What became of a send admitted as [`Admission::Fresh`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settlement {
    /// Stored now, at `at_ms`.
    Stored { original: Original, at_ms: i64 },
    /// The store already held the key, stored at `at_ms`: the send was a duplicate after all.
    Found { original: Original, at_ms: i64 },
    /// Not stored (refused, failed, or acknowledged without storing): nothing is remembered.
    Failed,
}

/// Counters for `/metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DedupStats {
    /// Sends answered with an earlier send's receipt.
    pub duplicates: u64,
    /// Keys in memory (expired ones included until they are dropped).
    pub remembered: usize,
    /// Keys being stored.
    pub pending: usize,
    /// Fresh sends whose key memory could not vouch for, so the store was consulted.
    pub store_lookups: u64,
}

/// The hash of a [`Digest`] is its low half.
#[derive(Default)]
struct LowHalf(u64);

impl Hasher for LowHalf {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used (`Digest`'s `Hash`); this keeps any other input correct.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type DigestMap<V> = HashMap<Digest, V, BuildHasherDefault<LowHalf>>;

#[derive(Debug)]
struct Entry {
    digest: Digest,
    at_ms: i64,
    original: Original,
}

// What the module documentation says a remembered key costs.
const _: () = assert!(std::mem::size_of::<Entry>() == 56);
const _: () = assert!(std::mem::size_of::<(Digest, u64)>() == 24);

struct State<W> {
    /// Each remembered key's newest entry, by sequence number.
    seqs: DigestMap<u64>,
    /// Entries in the order they were remembered; `entries[0]` has sequence number `first_seq`.
    entries: VecDeque<Entry>,
    first_seq: u64,
    /// Keys being stored, with the sends waiting for them.
    pending: DigestMap<Vec<W>>,
    /// Until then a key missing from memory may still have been stored within the window...
    blind_until_ms: i64,
    /// ...by a send whose record ends at most here in the log.
    blind_log_end: u64,
}

impl<W> State<W> {
    fn remembered(&self, digest: Digest, now_ms: i64, window_ms: i64) -> Option<Original> {
        let seq = *self.seqs.get(&digest)?;
        let at = usize::try_from(seq.checked_sub(self.first_seq)?).ok()?;
        let entry = self.entries.get(at)?;
        (entry.digest == digest && now_ms < entry.at_ms.saturating_add(window_ms)).then_some(entry.original)
    }

    fn remember(&mut self, digest: Digest, original: Original, at_ms: i64, window_ms: i64, messages_max: usize) {
        let seq = self.first_seq + self.entries.len() as u64;
        self.entries.push_back(Entry { digest, at_ms, original });
        self.seqs.insert(digest, seq);
        while self.entries.len() > messages_max {
            let Some(evicted) = self.pop_front() else { break };
            // Evicted inside its window: until it ends, memory no longer knows every recent key.
            self.blind_until_ms = self.blind_until_ms.max(evicted.at_ms.saturating_add(window_ms));
            self.blind_log_end = self.blind_log_end.max(evicted.original.log_end);
        }
    }

    /// Drops expired entries from the front. Entries are remembered roughly in time order, so an
    /// expired one behind a live one waits a little longer; lookups check the time themselves.
    fn expire(&mut self, now_ms: i64, window_ms: i64) {
        while self.entries.front().is_some_and(|e| e.at_ms.saturating_add(window_ms) <= now_ms) {
            self.pop_front();
        }
    }

    fn pop_front(&mut self) -> Option<Entry> {
        let entry = self.entries.pop_front()?;
        // The key may have been remembered again since (a send after its window): keep that one.
        if self.seqs.get(&entry.digest) == Some(&self.first_seq) {
            self.seqs.remove(&entry.digest);
        }
        self.first_seq += 1;
        Some(entry)
    }
}

/// Recent keys and keys being stored, shared by every sending thread.
pub struct Window<W> {
    window_ms: i64,
    messages_max: usize,
    hashers: [RandomState; 2],
    state: Mutex<State<W>>,
    duplicates: AtomicU64,
    store_lookups: AtomicU64,
}

impl<W> std::fmt::Debug for Window<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Window")
            .field("window_ms", &self.window_ms)
            .field("messages_max", &self.messages_max)
            .finish_non_exhaustive()
    }
}

impl<W> Window<W> {
    /// An empty window that knows nothing stored before `now_ms`, all of it already indexed (see
    /// [`Window::cover_from`]).
    pub fn new(config: &DedupConfig, now_ms: i64) -> Self {
        let window_ms = config.window_ms_i64();
        let state = State {
            seqs: DigestMap::default(),
            entries: VecDeque::new(),
            first_seq: 0,
            pending: DigestMap::default(),
            blind_until_ms: now_ms.saturating_add(window_ms),
            blind_log_end: 0,
        };
        Self {
            window_ms,
            messages_max: config.window_messages.max(1),
            hashers: [RandomState::new(), RandomState::new()],
            state: Mutex::new(state),
            duplicates: AtomicU64::new(0),
            store_lookups: AtomicU64::new(0),
        }
    }

    pub fn digest(&self, key: Key<'_>) -> Digest {
        let [high, low] = &self.hashers;
        Digest { high: high.hash_one(key), low: low.hash_one(key) }
    }

    /// Admits a send of `digest` at `now_ms`; see [`Admission`].
    pub fn admit(&self, digest: Digest, now_ms: i64, waiter: W) -> Admission<W> {
        let mut state = lock(&self.state);
        state.expire(now_ms, self.window_ms);
        if let Some(waiters) = state.pending.get_mut(&digest) {
            waiters.push(waiter);
            return Admission::Waiting;
        }
        if let Some(original) = state.remembered(digest, now_ms, self.window_ms) {
            drop(state);
            self.duplicates.fetch_add(1, Ordering::Relaxed);
            return Admission::Duplicate { waiter, original };
        }
        state.pending.insert(digest, Vec::new());
        let consult_store = (now_ms < state.blind_until_ms).then_some(Consult { indexed_to: state.blind_log_end });
        drop(state);
        if consult_store.is_some() {
            self.store_lookups.fetch_add(1, Ordering::Relaxed);
        }
        Admission::Fresh { waiter, consult_store }
    }

    /// Settles a key admitted as fresh and hands back the sends that waited for it: with
    /// [`Settlement::Stored`] or [`Settlement::Found`] they are duplicates of the original (and
    /// counted so), with [`Settlement::Failed`] they get the first send's outcome.
    pub fn settle(&self, digest: Digest, settlement: Settlement) -> Vec<W> {
        let mut state = lock(&self.state);
        let waiters = state.pending.remove(&digest).unwrap_or_default();
        let duplicates = match settlement {
            Settlement::Stored { original, at_ms } => {
                state.remember(digest, original, at_ms, self.window_ms, self.messages_max);
                waiters.len()
            }
            Settlement::Found { original, at_ms } => {
                state.remember(digest, original, at_ms, self.window_ms, self.messages_max);
                waiters.len() + 1
            }
            Settlement::Failed => 0,
        };
        drop(state);
        self.duplicates.fetch_add(duplicates as u64, Ordering::Relaxed);
        waiters
    }

    /// Says that sends were stored without this window until `now_ms`, up to `log_end` in the log
    /// (a replica becoming writable holds its master's): until one window has passed, fresh keys
    /// consult the store.
    pub fn cover_from(&self, now_ms: i64, log_end: u64) {
        let mut state = lock(&self.state);
        state.blind_until_ms = state.blind_until_ms.max(now_ms.saturating_add(self.window_ms));
        state.blind_log_end = state.blind_log_end.max(log_end);
    }

    pub fn stats(&self) -> DedupStats {
        let state = lock(&self.state);
        DedupStats {
            duplicates: self.duplicates.load(Ordering::Relaxed),
            remembered: state.entries.len(),
            pending: state.pending.len(),
            store_lookups: self.store_lookups.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW_MS: i64 = 1_000;
    const T0: i64 = 1_000_000;

    fn window(messages: usize) -> Window<&'static str> {
        let config = DedupConfig { enabled: true, window_ms: WINDOW_MS as u64, window_messages: messages };
        Window::new(&config, T0 - WINDOW_MS)
    }

    fn key(id: &str) -> Key<'_> {
        Key { topic: "t", message_id: id, transactional: false }
    }

    fn original(queue_offset: u64) -> Original {
        Original { queue_id: 1, transaction: false, queue_offset, log_offset: 10, log_end: 20 }
    }

    /// Admits and stores `id` at `now` if it is fresh; returns what the admission was.
    fn send(w: &Window<&'static str>, id: &str, now: i64) -> String {
        let digest = w.digest(key(id));
        match w.admit(digest, now, "sender") {
            Admission::Fresh { consult_store, .. } => {
                let mut stored = original(now as u64);
                stored.log_end = now as u64;
                w.settle(digest, Settlement::Stored { original: stored, at_ms: now });
                match consult_store {
                    None => "fresh consult=false".into(),
                    Some(Consult { indexed_to: 0 }) => "fresh consult=true".into(),
                    Some(Consult { indexed_to }) => format!("fresh consult=true indexed_to={indexed_to}"),
                }
            }
            Admission::Duplicate { original, .. } => format!("duplicate of {}", original.queue_offset),
            Admission::Waiting => "waiting".into(),
        }
    }

    #[test]
    fn a_key_is_a_duplicate_until_its_window_has_passed_and_fresh_after() {
        let w = window(10);
        assert_eq!(send(&w, "a", T0), "fresh consult=false");
        assert_eq!(send(&w, "a", T0 + WINDOW_MS - 1), format!("duplicate of {T0}"));
        assert_eq!(send(&w, "a", T0 + WINDOW_MS), "fresh consult=false");
        assert_eq!(send(&w, "a", T0 + WINDOW_MS + 1), format!("duplicate of {}", T0 + WINDOW_MS));
        assert_eq!(w.stats().duplicates, 2);
    }

    #[test]
    fn topic_id_and_transactional_all_belong_to_the_key() {
        let w = window(10);
        let keys = [
            key("a"),
            Key { topic: "u", ..key("a") },
            Key { transactional: true, ..key("a") },
            key("b"),
            // Parts do not run into each other.
            Key { topic: "ta", message_id: "", transactional: false },
        ];
        let digests: std::collections::HashSet<Digest> = keys.iter().map(|k| w.digest(*k)).collect();
        assert_eq!(digests.len(), keys.len());
        assert_eq!(w.digest(key("a")), w.digest(key("a")));
    }

    #[test]
    fn sends_of_a_key_being_stored_wait_and_become_duplicates_when_it_is_stored() {
        let w = window(10);
        let digest = w.digest(key("a"));
        assert!(matches!(w.admit(digest, T0, "first"), Admission::Fresh { .. }));
        assert!(matches!(w.admit(digest, T0, "second"), Admission::Waiting));
        assert!(matches!(w.admit(digest, T0 + 5 * WINDOW_MS, "third"), Admission::Waiting), "pending never expires");
        let waiters = w.settle(digest, Settlement::Stored { original: original(7), at_ms: T0 });
        assert_eq!(waiters, ["second", "third"]);
        assert_eq!(w.stats(), DedupStats { duplicates: 2, remembered: 1, pending: 0, store_lookups: 0 });
    }

    #[test]
    fn a_failed_first_send_hands_back_its_waiters_and_leaves_nothing_behind() {
        let w = window(10);
        let digest = w.digest(key("a"));
        assert!(matches!(w.admit(digest, T0, "first"), Admission::Fresh { .. }));
        assert!(matches!(w.admit(digest, T0, "second"), Admission::Waiting));
        assert_eq!(w.settle(digest, Settlement::Failed), ["second"]);
        assert_eq!(send(&w, "a", T0 + 1), "fresh consult=false");
        assert_eq!(w.stats().duplicates, 0);
    }

    #[test]
    fn a_key_found_in_the_store_counts_its_sender_and_waiters_and_is_remembered() {
        let w = window(10);
        let digest = w.digest(key("a"));
        assert!(matches!(w.admit(digest, T0, "first"), Admission::Fresh { .. }));
        assert!(matches!(w.admit(digest, T0, "second"), Admission::Waiting));
        let waiters = w.settle(digest, Settlement::Found { original: original(3), at_ms: T0 - WINDOW_MS / 2 });
        assert_eq!(waiters, ["second"]);
        assert_eq!(w.stats().duplicates, 2);
        // Remembered with the store time: it expires half a window from now.
        assert_eq!(send(&w, "a", T0 + WINDOW_MS / 2 - 1), "duplicate of 3");
        assert_eq!(send(&w, "a", T0 + WINDOW_MS / 2), "fresh consult=false");
    }

    #[test]
    fn memory_vouches_for_fresh_keys_only_once_a_window_has_passed_since_it_began() {
        let config = DedupConfig { enabled: true, window_ms: WINDOW_MS as u64, window_messages: 10 };
        let w: Window<&str> = Window::new(&config, T0);
        assert_eq!(send(&w, "a", T0 + WINDOW_MS - 1), "fresh consult=true");
        assert_eq!(send(&w, "b", T0 + WINDOW_MS), "fresh consult=false");
        w.cover_from(T0 + 2 * WINDOW_MS, 77);
        assert_eq!(send(&w, "c", T0 + 3 * WINDOW_MS - 1), "fresh consult=true indexed_to=77");
        assert_eq!(send(&w, "d", T0 + 3 * WINDOW_MS), "fresh consult=false");
        assert_eq!(w.stats().store_lookups, 2);
    }

    #[test]
    fn the_count_bounds_memory_and_an_eviction_inside_the_window_sends_fresh_keys_to_the_store() {
        let w = window(2);
        assert_eq!(send(&w, "a", T0), "fresh consult=false");
        assert_eq!(send(&w, "b", T0 + 10), "fresh consult=false");
        assert_eq!(send(&w, "c", T0 + 20), "fresh consult=false");
        assert_eq!(w.stats().remembered, 2, "a was evicted");
        // Memory forgot a: only the store can tell, until a's window has passed, once its index
        // covers a's record.
        assert_eq!(send(&w, "a", T0 + 30), format!("fresh consult=true indexed_to={T0}"));
        assert_eq!(send(&w, "x", T0 + WINDOW_MS - 1), format!("fresh consult=true indexed_to={}", T0 + 10));
        assert_eq!(send(&w, "y", T0 + WINDOW_MS + 30), "fresh consult=false");
    }

    #[test]
    fn expired_keys_leave_memory_as_time_passes() {
        let w = window(10);
        for (i, id) in ["a", "b", "c"].iter().enumerate() {
            send(&w, id, T0 + i as i64);
        }
        assert_eq!(w.stats().remembered, 3);
        assert_eq!(send(&w, "d", T0 + WINDOW_MS + 1), "fresh consult=false");
        assert_eq!(w.stats().remembered, 2, "a and b expired, c and d remain");
    }

    #[test]
    fn a_key_remembered_again_survives_the_eviction_of_its_older_entry() {
        let w = window(10);
        send(&w, "a", T0);
        send(&w, "b", T0 + WINDOW_MS - 1);
        // a again after its window: a new entry behind b; the old one leaves at the next admission.
        assert_eq!(send(&w, "a", T0 + WINDOW_MS), "fresh consult=false");
        assert_eq!(send(&w, "a", T0 + WINDOW_MS + 1), format!("duplicate of {}", T0 + WINDOW_MS));
    }
}
