//! Messages consumer groups lost to retention. When the store deletes a segment it reports what each
//! queue lost; every subscriber with committed progress on such a queue lost the entries it had not
//! consumed. Counted per group and cause, and logged once per deleted segment and group.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use ferrymq_proto::sync::lock;
use ferrymq_store::{QueueRemoval, Removal, RemovalHook};

use crate::offsets::Offsets;

/// Messages lost per (group, cause) since the broker started.
#[derive(Debug, Default)]
pub struct Losses {
    counts: Mutex<BTreeMap<(String, &'static str), u64>>,
}

impl Losses {
    /// A store hook that counts every removal against the committed progress in `offsets`.
    pub fn hook(self: &Arc<Self>, offsets: Arc<Offsets>) -> RemovalHook {
        let losses = self.clone();
        Arc::new(move |removal: &Removal| losses.record(removal, &offsets))
    }

    /// Counts what `removal` took from every subscriber with committed progress on its queues.
    pub fn record(&self, removal: &Removal, offsets: &Offsets) {
        let removed: HashMap<(&str, u32), &QueueRemoval> =
            removal.queues.iter().map(|q| ((q.topic.as_str(), q.queue_id), q)).collect();
        let mut lost: BTreeMap<String, u64> = BTreeMap::new();
        for (key, committed) in offsets.all() {
            let Some(queue) = removed.get(&(key.topic.as_str(), key.queue_id)) else { continue };
            let unread = queue.to.saturating_sub(committed.max(queue.from));
            if unread > 0 {
                *lost.entry(group_of(&key.subscriber).to_owned()).or_default() += unread;
            }
        }
        let cause = removal.cause.name();
        for (group, messages) in lost {
            tracing::warn!(
                %group, messages, cause, log_from = removal.log_from, log_to = removal.log_to,
                "retention deleted messages this consumer group had not consumed"
            );
            *lock(&self.counts).entry((group, cause)).or_default() += messages;
        }
    }

    /// Messages lost so far: (group, cause, count), by group.
    pub fn snapshot(&self) -> Vec<(String, &'static str, u64)> {
        lock(&self.counts).iter().map(|((group, cause), n)| (group.clone(), *cause, *n)).collect()
    }
}

/// The group of a subscriber: each client of a broadcast group subscribes as `group@client`.
fn group_of(subscriber: &str) -> &str {
    subscriber.split_once('@').map_or(subscriber, |(group, _)| group)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offsets::OffsetKey;
    use ferrymq_store::RemovalCause;

    #[test]
    fn each_group_loses_what_it_had_not_consumed_of_the_removed_range() {
        let dir = tempfile::tempdir().expect("tempdir");
        let offsets = Offsets::open(dir.path()).expect("offsets");
        let key = |subscriber: &str, queue_id| OffsetKey { subscriber: subscriber.into(), topic: "t".into(), queue_id };
        offsets.set(key("behind", 0), 10); // lost 10..40
        offsets.set(key("caught-up", 0), 50); // lost nothing
        offsets.set(key("wide@client-1", 1), 0); // a broadcast client: lost 0..5
        offsets.set(key("wide@client-2", 1), 5); // lost nothing
        let removal = Removal {
            log_from: 0,
            log_to: 4096,
            cause: RemovalCause::DiskPressure,
            queues: vec![
                QueueRemoval { topic: "t".into(), queue_id: 0, from: 0, to: 40 },
                QueueRemoval { topic: "t".into(), queue_id: 1, from: 0, to: 5 },
                QueueRemoval { topic: "other".into(), queue_id: 0, from: 0, to: 99 },
            ],
        };
        let losses = Losses::default();
        losses.record(&removal, &offsets);
        losses.record(&Removal { cause: RemovalCause::Age, ..removal }, &offsets);
        assert_eq!(
            losses.snapshot(),
            vec![
                ("behind".into(), "age", 30),
                ("behind".into(), "disk_pressure", 30),
                ("wide".into(), "age", 5),
                ("wide".into(), "disk_pressure", 5),
            ]
        );
    }
}
