//! Restoring a [`DetectorSet`] from its changelog, a batch of records at a time.
//!
//! Restore is a bulk load (millions of records on start), bound by building hash-map
//! entries: decoding each detector's part, inserting it, faulting in the pages of the
//! maps. Each detector owns its maps, so once a batch's records are split into per-
//! detector lists, the detectors are restored on all cores at once, each still seeing its
//! keys in log order. Records are decoded (outer level) on the calling thread, borrowing
//! every part from the record.

use std::sync::Mutex;

use serde::de::{DeserializeSeed, SeqAccess, Visitor};

use super::{Detector, DetectorSet};
use crate::decode::Stream;
use crate::state::{codec, StateError};

/// Below this many records a batch is restored on the calling thread: threads cost more.
const PARALLEL_MIN: usize = 256;

/// A batch this large tells each detector's share of the records (sizing its maps).
const SAMPLE_MIN: usize = 1024;

/// One detector's part of a record: the record's position in the batch, the state key,
/// and its state (`None`: the record does not name this detector, which forgets the key).
type Op<'a> = (u32, &'a str, Option<&'a [u8]>);

/// One record's parts: detector position, detector name, its bytes.
type Part<'a> = (u16, &'a str, &'a [u8]);

/// One detector's share of a batch.
struct Task<'d, 'a> {
    detector: &'d mut Box<dyn Detector>,
    ops: Vec<Op<'a>>,
    /// Estimated work, to start the largest first.
    cost: usize,
}

impl DetectorSet {
    /// Puts back one changelog record of `stream` (its key without the `k:` prefix, or
    /// `w`). A record that cannot be put back is an error, and its key starts fresh.
    pub fn restore(
        &mut self,
        stream: Stream,
        key: &str,
        value: Option<&[u8]>,
    ) -> Result<(), StateError> {
        let mut failed = Vec::new();
        self.restore_batch(stream, [(0, key, value)], &mut failed);
        failed.pop().map_or(Ok(()), |(_, e)| Err(e))
    }

    /// Puts back a batch of changelog records of `stream`, in log order: `(position,
    /// key, value)`, the position being the caller's, reported back in `failed` with the
    /// error of each record that could not be put back (corrupt, or from an incompatible
    /// version). Such a record's key starts fresh in every detector, unless a later record
    /// of the batch puts it back.
    pub fn restore_batch<'a>(
        &mut self,
        stream: Stream,
        records: impl IntoIterator<Item = (usize, &'a str, Option<&'a [u8]>)>,
        failed: &mut Vec<(usize, StateError)>,
    ) {
        let i = stream.index();
        let names: Vec<&'static str> = self.by_stream[i].iter().map(|d| d.name()).collect();
        let mut ops: Vec<Vec<Op<'a>>> = vec![Vec::new(); names.len()];
        let mut costs = vec![0usize; names.len()];
        let mut named_parts = vec![0usize; names.len()];
        // Per record in `ops`: the caller's position and the state key.
        let mut slots: Vec<(usize, &'a str)> = Vec::new();
        let mut parts: Vec<Part<'a>> = Vec::new();
        // Records whose parts do not decode: no detector takes any of them.
        let mut unreadable: Vec<(u32, StateError)> = Vec::new();
        for (pos, key, value) in records {
            if key == "w" {
                if let Some(v) = value {
                    match codec::decode(key, v) {
                        Ok(w) => self.watermarks[i].restore(w),
                        Err(e) => failed.push((pos, e)),
                    }
                }
                continue;
            }
            let Some(k) = key.strip_prefix("k:") else {
                failed.push((pos, StateError::corrupt(key, "unknown record kind")));
                continue;
            };
            let slot = slots.len() as u32;
            slots.push((pos, k));
            parts.clear();
            if let Some(v) = value {
                if let Err(e) = decode_parts(key, v, &mut parts) {
                    unreadable.push((slot, e));
                    continue;
                }
            }
            // The record is the key's whole state: a detector it does not name holds
            // nothing (an older record of the key may have given it some), and a
            // tombstone names none.
            let mut named: u64 = 0; // detectors per stream are few (checked in `new`)
            for &(idx, name, bytes) in &parts {
                let idx = usize::from(idx);
                if names.get(idx) == Some(&name) {
                    ops[idx].push((slot, k, Some(bytes)));
                    costs[idx] += 64 + bytes.len();
                    named_parts[idx] += 1;
                    named |= 1 << idx;
                } else {
                    // The config changed since: that detector starts fresh for this key.
                    tracing::debug!(key, idx, %name, "state for a detector no longer configured");
                }
            }
            for (n, o) in ops.iter_mut().enumerate() {
                if named & (1 << n) == 0 {
                    o.push((slot, k, None));
                    costs[n] += 16;
                }
            }
        }
        let announced = self.to_reserve[i];
        if announced > 0 && (slots.len() >= SAMPLE_MIN || slots.len() >= announced) {
            self.to_reserve[i] = 0;
            for (d, named) in self.by_stream[i].iter_mut().zip(&named_parts) {
                // Each detector holds its share of the keys (some sensor kinds, sites
                // only): sized for all records, a map holding a fifth of them faulted in
                // five times the pages it needs. A low estimate only costs a rehash.
                let share = *named as f64 / slots.len() as f64;
                d.reserve(((announced as f64 * share * 1.1) as usize).min(announced));
            }
        }
        let mut tasks: Vec<Task<'_, 'a>> = self.by_stream[i]
            .iter_mut()
            .zip(ops)
            .zip(costs)
            .filter(|((_, ops), _)| !ops.is_empty())
            .map(|((detector, ops), cost)| Task {
                detector,
                ops,
                cost,
            })
            .collect();
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(tasks.len());
        let mut errors = unreadable;
        errors.extend(if threads <= 1 || slots.len() < PARALLEL_MIN {
            tasks.into_iter().flat_map(run).collect()
        } else {
            // Largest last: workers pop the largest left, so the batch ends evenly.
            tasks.sort_by_key(|t| t.cost);
            let queue = Mutex::new(tasks);
            let next = || queue.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let work = || {
                let mut errors = Vec::new();
                while let Some(t) = next() {
                    errors.extend(run(t));
                }
                errors
            };
            std::thread::scope(|s| {
                let helpers: Vec<_> = (1..threads).map(|_| s.spawn(work)).collect();
                let mut errors = work();
                for h in helpers {
                    errors.extend(h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
                }
                errors
            })
        });
        if errors.is_empty() {
            return;
        }
        // Rare: a record or a part that does not decode. One error per record, in log
        // order; the key's older state would be stale next to what the other detectors
        // hold, so the key starts fresh (docs/STATE.md).
        errors.sort_by_key(|(slot, _)| *slot);
        errors.dedup_by_key(|(slot, _)| *slot);
        let mut last = std::collections::HashMap::new();
        for (n, (_, k)) in slots.iter().enumerate() {
            last.insert(*k, n as u32);
        }
        for (slot, e) in errors {
            let (pos, k) = slots[slot as usize];
            if last.get(k) == Some(&slot) {
                for d in &mut self.by_stream[i] {
                    d.forget(k);
                }
            }
            failed.push((pos, e));
        }
    }
}

/// Applies one detector's share of a batch, in log order; the failed records' positions.
fn run(t: Task<'_, '_>) -> Vec<(u32, StateError)> {
    let mut errors = Vec::new();
    for (slot, k, v) in t.ops {
        match v {
            Some(b) => {
                if let Err(e) = t.detector.restore(k, b) {
                    errors.push((slot, e));
                }
            }
            None => t.detector.forget(k),
        }
    }
    errors
}

/// Decodes a record's parts into `out` (reused across records: no allocation each).
fn decode_parts<'a>(key: &str, bytes: &'a [u8], out: &mut Vec<Part<'a>>) -> Result<(), StateError> {
    struct Parts<'o, 'a>(&'o mut Vec<Part<'a>>);

    impl<'a> DeserializeSeed<'a> for Parts<'_, 'a> {
        type Value = ();
        fn deserialize<D: serde::Deserializer<'a>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_seq(self)
        }
    }

    impl<'a> Visitor<'a> for Parts<'_, 'a> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a sequence of detector states")
        }
        fn visit_seq<A: SeqAccess<'a>>(self, mut seq: A) -> Result<(), A::Error> {
            while let Some(p) = seq.next_element::<Part<'a>>()? {
                self.0.push(p);
            }
            Ok(())
        }
    }

    let mut de = postcard::Deserializer::from_bytes(bytes);
    Parts(out)
        .deserialize(&mut de)
        .map_err(|e| StateError::corrupt(key, e))
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use super::*;
    use crate::detect::testutil::reading;
    use crate::state::{codec, Change};

    /// The default config's sensor detectors, tracking changes.
    fn sensors() -> DetectorSet {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/default.toml");
        let cfg = crate::config::load(&path).expect("config/default.toml loads");
        let list = vec![(Stream::Sensors, cfg.detectors.sensors.clone())];
        let ctx = crate::detect::BuildCtx::new(Arc::new(crate::regions::demo()));
        let mut set = DetectorSet::new(&list, cfg.processing.allowed_lateness, &ctx);
        set.track_changes();
        set
    }

    /// A changelog of `n` sensors (five kinds), written twice: every key has an older
    /// record, then its latest.
    fn changelog(n: usize) -> (DetectorSet, Vec<Change>) {
        let mut set = sensors();
        let kinds = [
            "gas_lel",
            "h2s_ppm",
            "temperature",
            "pressure",
            "tank_level",
        ];
        let mut log = Vec::new();
        let mut out = Vec::new();
        for round in 0..2i64 {
            for i in 0..n {
                let ev = reading(&format!("S-{i}"), kinds[i % 5], round * 60, 1.0 + i as f64);
                set.observe(&ev, &mut out);
            }
            set.changes(Stream::Sensors, &mut log);
        }
        (set, log)
    }

    /// Every detector's saved state of every key `keys` names, for comparing sets.
    fn states(set: &DetectorSet, keys: &[String]) -> Vec<Option<Vec<u8>>> {
        let dets = &set.by_stream[Stream::Sensors.index()];
        keys.iter()
            .flat_map(|k| dets.iter().map(move |d| d.save(k)))
            .collect()
    }

    fn keys(log: &[Change]) -> Vec<String> {
        let mut keys: Vec<String> = log
            .iter()
            .filter_map(|c| c.key.strip_prefix("k:").map(String::from))
            .collect();
        keys.sort();
        keys.dedup();
        keys
    }

    fn batch(log: &[Change]) -> Vec<(usize, &str, Option<&[u8]>)> {
        log.iter()
            .enumerate()
            .map(|(n, c)| (n, c.key.as_str(), c.value.as_deref()))
            .collect()
    }

    #[test]
    fn a_batch_restores_what_records_one_by_one_do() {
        let (orig, log) = changelog(400);
        assert!(
            log.len() > PARALLEL_MIN,
            "the batch takes the parallel path"
        );
        let mut one = sensors();
        for c in &log {
            one.restore(Stream::Sensors, &c.key, c.value.as_deref())
                .unwrap();
        }
        let mut all = sensors();
        all.reserve(Stream::Sensors, log.len());
        let mut failed = Vec::new();
        all.restore_batch(Stream::Sensors, batch(&log), &mut failed);
        assert!(failed.is_empty());
        let keys = keys(&log);
        assert_eq!(states(&all, &keys), states(&one, &keys));
        assert_eq!(states(&all, &keys), states(&orig, &keys));
        assert_eq!(all.keys(), orig.keys());
    }

    /// `rec` with its last detector part cut to one byte (that detector cannot read it).
    fn corrupt(rec: &[u8]) -> Vec<u8> {
        let mut parts: Vec<(u16, String, Vec<u8>)> = codec::decode("k", rec).unwrap();
        parts.last_mut().unwrap().2.truncate(1);
        codec::encode(&parts)
    }

    #[test]
    fn a_record_that_cannot_be_put_back_leaves_its_key_fresh_unless_a_later_one_does() {
        let (_, mut log) = changelog(300);
        let last = |log: &[Change], key: &str| log.iter().rposition(|c| c.key == key).unwrap();
        // S-1: its latest record is corrupt; S-2: a corrupt record, then its latest again.
        let s1 = last(&log, "k:S-1");
        log[s1].value = Some(corrupt(log[s1].value.as_ref().unwrap()));
        let s2 = last(&log, "k:S-2");
        let good = log[s2].clone();
        log[s2].value = Some(corrupt(good.value.as_ref().unwrap()));
        log.push(good);
        // Not a record of any kind, and an undecodable one.
        log.push(Change {
            key: "x:what".into(),
            value: None,
        });
        log.push(Change {
            key: "k:S-3".into(),
            value: Some(vec![0xff; 3]),
        });
        let mut set = sensors();
        let mut failed = Vec::new();
        set.restore_batch(Stream::Sensors, batch(&log), &mut failed);
        let mut at: Vec<usize> = failed.iter().map(|(n, _)| *n).collect();
        at.sort_unstable();
        assert_eq!(at, vec![s1, s2, log.len() - 2, log.len() - 1]);
        let dets = &set.by_stream[Stream::Sensors.index()];
        assert!(
            dets.iter().all(|d| d.save("S-1").is_none()),
            "S-1 starts fresh"
        );
        assert!(
            dets.iter().any(|d| d.save("S-2").is_some()),
            "S-2 comes back"
        );
        assert!(
            dets.iter().all(|d| d.save("S-3").is_none()),
            "S-3 starts fresh"
        );
    }
}
