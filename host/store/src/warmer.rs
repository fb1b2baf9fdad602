//! The warmer: brings commit-log pages into memory just ahead of the writer.
//!
//! A fresh segment's pages are reserved on disk but not in memory; the first touch of each page
//! faults, and the kernel allocates and zeroes it. Left to the writer, those faults sit on the append
//! path (about an eighth of the broker's CPU at 100 k msgs/s). The writer asks this thread to prefault
//! the next `warm_ahead_bytes` whenever it has used half of what was warmed; the request channel holds
//! one request and the writer never waits for it, so a slow warmer costs nothing but the faults.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};

use crate::log::Segment;

/// One range of one segment to warm, in log offsets.
pub(crate) struct WarmRequest {
    pub segment: Arc<Segment>,
    pub from: u64,
    pub to: u64,
}

/// The writer's side: how far it has asked for, and the channel to ask on.
pub(crate) struct Warm {
    ahead_bytes: u64,
    warmed_to: u64,
    requests: Option<SyncSender<WarmRequest>>,
}

impl Warm {
    /// A writer-side handle and the receiver its thread serves; `None` when warming is off.
    pub(crate) fn new(ahead_bytes: u64) -> (Warm, Option<Receiver<WarmRequest>>) {
        if ahead_bytes == 0 {
            return (Warm { ahead_bytes, warmed_to: 0, requests: None }, None);
        }
        let (tx, rx) = sync_channel(1);
        (Warm { ahead_bytes, warmed_to: 0, requests: Some(tx) }, Some(rx))
    }

    /// Called by the writer after it wrote up to `pos` in `segment`.
    pub(crate) fn after_write(&mut self, segment: &Arc<Segment>, pos: u64) {
        let Some(requests) = &self.requests else { return };
        if self.warmed_to < pos.max(segment.base) || self.warmed_to > segment.end() {
            // A new segment, or the writer overtook the warmer.
            self.warmed_to = pos.max(segment.base);
        }
        if self.warmed_to - pos >= self.ahead_bytes / 2 {
            return;
        }
        let to = pos.saturating_add(self.ahead_bytes).min(segment.end());
        if to <= self.warmed_to {
            return;
        }
        match requests.try_send(WarmRequest { segment: segment.clone(), from: self.warmed_to, to }) {
            Ok(()) => self.warmed_to = to,
            Err(TrySendError::Full(_)) => {}
            Err(TrySendError::Disconnected(_)) => self.requests = None,
        }
    }
}

/// The warmer thread's loop; ends when the writer drops its handle.
pub(crate) fn run(requests: Receiver<WarmRequest>) {
    while let Ok(WarmRequest { segment, from, to }) = requests.recv() {
        segment.file.prefault(from - segment.base, to - from);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::{FsStorage, Storage};

    const SEGMENT: u64 = 1 << 20;
    const AHEAD: u64 = 256 << 10;

    fn segment(dir: &std::path::Path, base: u64) -> Arc<Segment> {
        let path = dir.join(format!("{base}"));
        let file = FsStorage.create(&path, SEGMENT).expect("create");
        Arc::new(Segment { base, file, path })
    }

    fn next(rx: &Receiver<WarmRequest>) -> Option<(u64, u64)> {
        rx.try_recv().ok().map(|r| (r.from, r.to))
    }

    #[test]
    fn the_writer_asks_for_the_next_range_once_half_the_warm_range_is_used_and_never_past_the_segment() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut warm, rx) = Warm::new(AHEAD);
        let rx = rx.expect("warming is on");
        let first = segment(dir.path(), SEGMENT);
        let base = first.base;

        warm.after_write(&first, base + 100);
        assert_eq!(next(&rx), Some((base + 100, base + 100 + AHEAD)));
        warm.after_write(&first, base + 1_000);
        assert_eq!(next(&rx), None, "less than half of the warm range is used");
        warm.after_write(&first, base + 200_000);
        assert_eq!(next(&rx), Some((base + 100 + AHEAD, base + 200_000 + AHEAD)));
        warm.after_write(&first, first.end() - 10);
        assert_eq!(next(&rx), Some((first.end() - 10, first.end())), "the writer overtook it; never past the end");

        let second = segment(dir.path(), first.end());
        warm.after_write(&second, second.base + 64);
        assert_eq!(next(&rx), Some((second.base + 64, second.base + 64 + AHEAD)), "a new segment starts afresh");
    }

    #[test]
    fn a_busy_warmer_is_asked_again_later_and_warming_changes_no_byte() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut warm, rx) = Warm::new(AHEAD);
        let rx = rx.expect("warming is on");
        let seg = segment(dir.path(), 0);
        seg.file.write(0, b"kept").expect("write");
        warm.after_write(&seg, 4);
        warm.after_write(&seg, 4 + AHEAD / 2 + 1);
        assert_eq!(next(&rx), Some((4, 4 + AHEAD)), "the channel holds one request");
        warm.after_write(&seg, 8 + AHEAD / 2);
        assert_eq!(next(&rx), Some((4 + AHEAD, 8 + AHEAD / 2 + AHEAD)), "the refused range was asked for again");

        let (tx, requests) = sync_channel(1);
        tx.send(WarmRequest { segment: seg.clone(), from: 0, to: SEGMENT }).expect("send");
        drop(tx);
        run(requests);
        // SAFETY: nothing writes this file any more.
        let bytes = unsafe { seg.file.bytes(0, SEGMENT as usize) };
        assert_eq!(&bytes[..4], b"kept");
        assert!(bytes[4..].iter().all(|&b| b == 0));
    }

    #[test]
    fn warming_off_asks_for_nothing() {
        let (mut warm, rx) = Warm::new(0);
        assert!(rx.is_none());
        let dir = tempfile::tempdir().expect("tempdir");
        warm.after_write(&segment(dir.path(), 0), 10);
    }
}
