//! An in-memory [`Storage`] that loses, tears and fails writes the way a crashing machine does.
//!
//! # Fault model
//! * Every `write` and `zero` is visible to the process at once and *pending* until the file's next
//!   successful `sync`, which makes all of that file's pending writes durable.
//! * A crash ([`FaultPlan::crash_after_ops`]) freezes durability: from that operation on nothing more
//!   becomes durable and every `sync` fails with `EIO`, like a machine that lost power while the process
//!   kept running for a moment.
//! * The image left after a crash ([`FaultStorage::crash_image`]) holds each file's durable bytes plus,
//!   for every pending write in order, either all of it, none of it, or an arbitrary subset of its
//!   512-byte sectors (a torn write). A sector only ever holds bytes the program wrote to it, old or new:
//!   the model does not invent garbage (media corruption is the checksums' job and is tested there).
//! * A file whose creation was not followed by a `sync_dir` of its directory may vanish in the crash.
//!   Directories themselves and file removals are durable at once.
//! * [`FaultPlan::fail_sync_at`] makes one chosen `sync` fail with `EIO` without a crash.
//! * Creations beyond the capacity fail with `ENOSPC`; the capacity can change while running.
//!
//! Everything random comes from the plan's seed, so a seed replays the same faults for the same
//! sequence of operations.

use std::cell::UnsafeCell;
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::{Space, Storage, StorageFile, check_range, clip};
use crate::clock::Clock;
use crate::sync::lock;

/// Unit of a torn write.
const SECTOR_BYTES: u64 = 512;

/// What goes wrong, and when.
#[derive(Clone, Debug, Default)]
pub struct FaultPlan {
    /// Seed of every random choice.
    pub seed: u64,
    /// Crash after this many `write`/`zero`/`sync`/`create`/`sync_dir` calls, counted over all files.
    pub crash_after_ops: Option<u64>,
    /// Fail the `sync` with this 0-based number (counted over all files) with `EIO`.
    pub fail_sync_at: Option<u64>,
    /// Bytes of file space; creating files beyond it fails with `ENOSPC`.
    pub capacity_bytes: u64,
}

/// A fault-injecting, in-memory [`Storage`].
#[derive(Clone, Debug)]
pub struct FaultStorage {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    clock: Arc<dyn Clock>,
    crash_after_ops: Option<u64>,
    /// Number of the sync to fail (`u64::MAX`: none).
    fail_sync_at: AtomicU64,
    seed: u64,
    capacity_bytes: AtomicU64,
    ops: AtomicU64,
    syncs: AtomicU64,
    crashed: AtomicBool,
    tree: Mutex<Tree>,
}

#[derive(Debug, Default)]
struct Tree {
    files: BTreeMap<PathBuf, Arc<FakeFile>>,
    /// Files removed after the crash: still on the "disk" the crash image is taken from.
    removed_after_crash: BTreeMap<PathBuf, Arc<FakeFile>>,
    dirs: BTreeSet<PathBuf>,
}

#[derive(Debug)]
enum Pending {
    Data { offset: u64, bytes: Vec<u8> },
    Zero { offset: u64, len: u64 },
}

#[derive(Debug)]
struct Durability {
    durable: Vec<u8>,
    pending: Vec<Pending>,
    name_durable: bool,
    modified_ms: i64,
}

struct FakeFile {
    storage: std::sync::Weak<Inner>,
    len: u64,
    /// What the process sees: written through raw pointers under the storage contract.
    visible: Box<[UnsafeCell<u8>]>,
    state: Mutex<Durability>,
}

impl std::fmt::Debug for FakeFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeFile").field("len", &self.len).finish_non_exhaustive()
    }
}

// SAFETY: `visible` is only written through `write`/`zero` and only read through `bytes`; the storage
// contract (see `io`) forbids writing a range while it is borrowed, and the store never writes one
// range from two threads at once. All other state is behind a mutex.
unsafe impl Sync for FakeFile {}

fn eio() -> io::Error {
    io::Error::from_raw_os_error(libc::EIO)
}

/// SplitMix64: small, seedable, good enough to pick faults and test workloads.
#[derive(Debug)]
pub struct SeededRng(pub u64);

impl SeededRng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }
}

impl FaultStorage {
    pub fn new(plan: FaultPlan, clock: Arc<dyn Clock>) -> Self {
        Self {
            inner: Arc::new(Inner {
                clock,
                crash_after_ops: plan.crash_after_ops,
                fail_sync_at: AtomicU64::new(plan.fail_sync_at.unwrap_or(u64::MAX)),
                seed: plan.seed,
                capacity_bytes: AtomicU64::new(plan.capacity_bytes),
                ops: AtomicU64::new(0),
                syncs: AtomicU64::new(0),
                crashed: AtomicBool::new(false),
                tree: Mutex::new(Tree::default()),
            }),
        }
    }

    /// Changes the capacity, e.g. to free space after a disk-full test.
    pub fn set_capacity_bytes(&self, bytes: u64) {
        self.inner.capacity_bytes.store(bytes, Ordering::SeqCst);
    }

    /// Makes the next `sync` (of any file) fail with `EIO`.
    pub fn fail_next_sync(&self) {
        self.inner.fail_sync_at.store(self.inner.syncs.load(Ordering::SeqCst), Ordering::SeqCst);
    }

    /// Whether the planned crash has happened.
    pub fn crashed(&self) -> bool {
        self.inner.crashed.load(Ordering::SeqCst)
    }

    /// Operations counted so far.
    pub fn ops(&self) -> u64 {
        self.inner.ops.load(Ordering::SeqCst)
    }

    /// Crashes now, if the plan has not already.
    pub fn crash_now(&self) {
        self.inner.crashed.store(true, Ordering::SeqCst);
    }

    /// The disk as a restarted machine would find it: a new storage with no faults planned, holding
    /// durable data plus a seeded choice of pending writes (whole, torn or lost).
    pub fn crash_image(&self, seed: u64) -> FaultStorage {
        self.crash_now();
        let mut rng = SeededRng(seed ^ self.inner.seed.rotate_left(17));
        let image = FaultStorage::new(
            FaultPlan {
                seed,
                capacity_bytes: self.inner.capacity_bytes.load(Ordering::SeqCst),
                ..FaultPlan::default()
            },
            self.inner.clock.clone(),
        );
        let tree = lock(&self.inner.tree);
        let mut new_tree = lock(&image.inner.tree);
        new_tree.dirs = tree.dirs.clone();
        for (path, file) in tree.files.iter().chain(tree.removed_after_crash.iter()) {
            let state = lock(&file.state);
            if !state.name_durable && rng.below(2) == 0 {
                continue;
            }
            let mut bytes = state.durable.clone();
            for pending in &state.pending {
                apply_some(&mut bytes, pending, &mut rng);
            }
            let copy = FakeFile::new(&image.inner, file.len, &bytes, state.modified_ms);
            new_tree.files.insert(path.clone(), Arc::new(copy));
        }
        drop(new_tree);
        image
    }

    /// Counts one operation and reports whether durability is frozen from it on.
    fn tick(&self) -> bool {
        self.inner.tick()
    }
}

impl Inner {
    fn tick(&self) -> bool {
        let n = self.ops.fetch_add(1, Ordering::SeqCst);
        if self.crash_after_ops.is_some_and(|at| n >= at) {
            self.crashed.store(true, Ordering::SeqCst);
        }
        self.crashed.load(Ordering::SeqCst)
    }
}

/// Applies all, none, or some sectors of one pending write.
fn apply_some(bytes: &mut [u8], pending: &Pending, rng: &mut SeededRng) {
    let (offset, len) = match pending {
        Pending::Data { offset, bytes } => (*offset, bytes.len() as u64),
        Pending::Zero { offset, len } => (*offset, *len),
    };
    let choice = rng.below(3);
    if choice == 0 {
        return; // lost
    }
    let torn = choice == 2;
    let mut at = offset;
    while at < offset + len {
        let sector_end = ((at / SECTOR_BYTES) + 1) * SECTOR_BYTES;
        let end = sector_end.min(offset + len);
        if !torn || rng.below(2) == 0 {
            let dst = &mut bytes[at as usize..end as usize];
            match pending {
                Pending::Data { bytes: src, .. } => {
                    dst.copy_from_slice(&src[(at - offset) as usize..(end - offset) as usize]);
                }
                Pending::Zero { .. } => dst.fill(0),
            }
        }
        at = end;
    }
}

impl FakeFile {
    fn new(storage: &Arc<Inner>, len: u64, contents: &[u8], modified_ms: i64) -> Self {
        let visible: Box<[UnsafeCell<u8>]> = contents.iter().map(|&b| UnsafeCell::new(b)).collect();
        Self {
            storage: Arc::downgrade(storage),
            len,
            visible,
            state: Mutex::new(Durability {
                durable: contents.to_vec(),
                pending: Vec::new(),
                name_durable: true,
                modified_ms,
            }),
        }
    }

    fn base(&self) -> *mut u8 {
        UnsafeCell::raw_get(self.visible.as_ptr())
    }

    /// Counts an operation; `true` when durability is frozen.
    fn tick(&self) -> bool {
        self.storage.upgrade().is_none_or(|s| s.tick())
    }

    fn now_ms(&self) -> i64 {
        self.storage.upgrade().map_or(0, |s| s.clock.now_ms())
    }
}

impl StorageFile for FakeFile {
    fn len(&self) -> u64 {
        self.len
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        check_range(offset, data.len() as u64, self.len)?;
        let frozen = self.tick();
        // SAFETY: in bounds (checked above); the storage contract says nobody borrows this range now.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.base().add(offset as usize), data.len()) };
        let now = self.now_ms();
        let mut state = lock(&self.state);
        state.modified_ms = now;
        if !frozen {
            state.pending.push(Pending::Data { offset, bytes: data.to_vec() });
        }
        Ok(())
    }

    fn zero(&self, offset: u64, len: u64) -> io::Result<()> {
        check_range(offset, len, self.len)?;
        let frozen = self.tick();
        // SAFETY: as in `write`.
        unsafe { std::ptr::write_bytes(self.base().add(offset as usize), 0, len as usize) };
        if !frozen {
            lock(&self.state).pending.push(Pending::Zero { offset, len });
        }
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        let frozen = self.tick();
        let Some(storage) = self.storage.upgrade() else { return Err(eio()) };
        let n = storage.syncs.fetch_add(1, Ordering::SeqCst);
        if frozen || storage.fail_sync_at.load(Ordering::SeqCst) == n {
            return Err(eio());
        }
        let mut state = lock(&self.state);
        let pending = std::mem::take(&mut state.pending);
        for write in pending {
            match write {
                Pending::Data { offset, bytes } => {
                    state.durable[offset as usize..offset as usize + bytes.len()].copy_from_slice(&bytes);
                }
                Pending::Zero { offset, len } => {
                    state.durable[offset as usize..(offset + len) as usize].fill(0);
                }
            }
        }
        Ok(())
    }

    unsafe fn bytes(&self, offset: u64, len: usize) -> &[u8] {
        let (start, len) = clip(offset, len, self.len);
        // SAFETY: clipped to the buffer; the caller guarantees no write to the range while borrowed.
        unsafe { std::slice::from_raw_parts(self.base().add(start), len) }
    }
}

impl Storage for FaultStorage {
    fn create(&self, path: &Path, len: u64) -> io::Result<Arc<dyn StorageFile>> {
        self.tick();
        let mut tree = lock(&self.inner.tree);
        if tree.files.contains_key(path) {
            return Err(io::Error::from(io::ErrorKind::AlreadyExists));
        }
        if let Some(parent) = path.parent()
            && !parent.as_os_str().is_empty()
            && !tree.dirs.contains(parent)
        {
            return Err(io::Error::from(io::ErrorKind::NotFound));
        }
        let used: u64 = tree.files.values().map(|f| f.len).sum();
        if used.saturating_add(len) > self.inner.capacity_bytes.load(Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        let len_usize = usize::try_from(len).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
        let file = Arc::new(FakeFile::new(&self.inner, len, &vec![0; len_usize], self.inner.clock.now_ms()));
        lock(&file.state).name_durable = false;
        tree.files.insert(path.to_path_buf(), file.clone());
        Ok(file)
    }

    fn open(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        let tree = lock(&self.inner.tree);
        match tree.files.get(path) {
            Some(file) => Ok(file.clone()),
            None => Err(io::Error::from(io::ErrorKind::NotFound)),
        }
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let tree = lock(&self.inner.tree);
        let children = tree.files.keys().chain(tree.dirs.iter());
        let mut names: Vec<String> = children
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name()?.to_str().map(str::to_owned))
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut tree = lock(&self.inner.tree);
        for ancestor in dir.ancestors() {
            if !ancestor.as_os_str().is_empty() {
                tree.dirs.insert(ancestor.to_path_buf());
            }
        }
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let frozen = self.tick();
        let mut tree = lock(&self.inner.tree);
        let Some(file) = tree.files.remove(path) else {
            return Err(io::Error::from(io::ErrorKind::NotFound));
        };
        if frozen {
            tree.removed_after_crash.insert(path.to_path_buf(), file);
        }
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        if self.tick() {
            return Err(eio());
        }
        let tree = lock(&self.inner.tree);
        for (path, file) in &tree.files {
            if path.parent() == Some(dir) {
                lock(&file.state).name_durable = true;
            }
        }
        Ok(())
    }

    fn space(&self, _dir: &Path) -> io::Result<Space> {
        let tree = lock(&self.inner.tree);
        let used: u64 = tree.files.values().map(|f| f.len).sum();
        let total = self.inner.capacity_bytes.load(Ordering::SeqCst);
        Ok(Space { total_bytes: total, available_bytes: total.saturating_sub(used) })
    }

    fn modified_ms(&self, path: &Path) -> io::Result<i64> {
        let tree = lock(&self.inner.tree);
        match tree.files.get(path) {
            Some(file) => Ok(lock(&file.state).modified_ms),
            None => Err(io::Error::from(io::ErrorKind::NotFound)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn storage(plan: FaultPlan) -> FaultStorage {
        let storage = FaultStorage::new(FaultPlan { capacity_bytes: 1 << 20, ..plan }, Arc::new(ManualClock::new(0)));
        storage.create_dir_all(Path::new("d")).expect("dir");
        storage
    }

    fn read_all(storage: &FaultStorage, path: &str) -> Vec<u8> {
        let file = storage.open(Path::new(path)).expect("file survives");
        // SAFETY: nothing writes to the image's file while this test reads it.
        unsafe { file.bytes(0, file.len() as usize) }.to_vec()
    }

    #[test]
    fn synced_writes_survive_every_crash_image() {
        let s = storage(FaultPlan::default());
        let f = s.create(Path::new("d/a"), 4096).expect("create");
        s.sync_dir(Path::new("d")).expect("sync dir");
        f.write(0, &[7; 1000]).expect("write");
        f.sync().expect("sync");
        f.write(1000, &[9; 1000]).expect("write");
        for seed in 0..32 {
            let bytes = read_all(&s.crash_image(seed), "d/a");
            assert_eq!(&bytes[..1000], &[7; 1000][..], "seed {seed}");
            // The unsynced write is whole, torn at sector boundaries, or absent: never invented bytes.
            assert!(bytes[1000..2000].iter().all(|&b| b == 0 || b == 9), "seed {seed}");
        }
    }

    #[test]
    fn crash_images_include_lost_torn_and_whole_unsynced_writes() {
        let s = storage(FaultPlan::default());
        let f = s.create(Path::new("d/a"), 8192).expect("create");
        s.sync_dir(Path::new("d")).expect("sync dir");
        f.write(0, &[1; 4096]).expect("write");
        let mut seen = BTreeSet::new();
        for seed in 0..64 {
            let bytes = read_all(&s.crash_image(seed), "d/a");
            let kept = bytes[..4096].iter().filter(|&&b| b == 1).count();
            seen.insert(match kept {
                0 => "lost",
                4096 => "whole",
                _ => "torn",
            });
        }
        assert_eq!(seen.len(), 3, "got only {seen:?}");
    }

    #[test]
    fn after_the_planned_crash_syncs_fail_and_nothing_more_is_durable() {
        let s = storage(FaultPlan { crash_after_ops: Some(3), ..FaultPlan::default() });
        let f = s.create(Path::new("d/a"), 4096).expect("create"); // op 0
        s.sync_dir(Path::new("d")).expect("sync dir"); // op 1
        f.write(0, b"durable").expect("write"); // op 2
        f.write(100, b"lost").expect("write"); // op 3: crashed
        assert_eq!(f.sync().expect_err("sync after crash").raw_os_error(), Some(libc::EIO));
        for seed in 0..16 {
            let bytes = read_all(&s.crash_image(seed), "d/a");
            assert!(bytes[..7] == *b"durable" || bytes[..7] == [0; 7]);
            assert_eq!(&bytes[100..104], &[0; 4], "write after the crash became durable (seed {seed})");
        }
    }

    #[test]
    fn planned_sync_failure_and_capacity_are_reported() {
        let s = storage(FaultPlan { fail_sync_at: Some(1), ..FaultPlan::default() });
        let f = s.create(Path::new("d/a"), 1024).expect("create");
        f.sync().expect("sync 0");
        assert_eq!(f.sync().expect_err("sync 1").raw_os_error(), Some(libc::EIO));
        f.sync().expect("sync 2");
        let full = s.create(Path::new("d/b"), 1 << 20).expect_err("over capacity");
        assert_eq!(full.raw_os_error(), Some(libc::ENOSPC));
        s.set_capacity_bytes(4 << 20);
        s.create(Path::new("d/b"), 1 << 20).expect("space returned");
    }

    #[test]
    fn files_whose_directory_was_never_synced_may_vanish() {
        let s = storage(FaultPlan::default());
        s.create(Path::new("d/a"), 512).expect("create");
        let survivals = (0..32).filter(|&seed| s.crash_image(seed).open(Path::new("d/a")).is_ok()).count();
        assert!(survivals > 0 && survivals < 32, "survived {survivals} of 32 crashes");
    }

    #[test]
    fn out_of_range_writes_are_errors() {
        let s = storage(FaultPlan::default());
        let f = s.create(Path::new("d/a"), 16).expect("create");
        assert!(f.write(10, &[0; 7]).is_err());
        assert!(f.zero(u64::MAX, 2).is_err());
    }
}
