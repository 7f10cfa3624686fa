//! Keyed detector state with idle eviction, so memory stays bounded under key churn.
//!
//! Each key holds a fixed-size `S` plus the event time it was last touched. A sweep at
//! most once per `ttl / 4` of event time drops keys idle for longer than `ttl`; the sweep
//! is driven by the watermark, never by the wall clock. Sweeps are aligned to periods of
//! `ttl / 4` since the epoch and judge idleness at the period's start, so what a sweep
//! drops does not depend on when in the period it runs: a set restored from the changelog
//! (which does not hold the sweep clock) evicts exactly what the original does.
//!
//! Durable state (src/state): once `track_changes` is on, every key touched (or evicted)
//! is remembered until `take_dirty`, so a flush writes each changed key once however
//! often it changed; `save`/`restore` encode one key's entry for the changelog.
//!
//! Hashing: keys are short strings, some attacker-controlled (fraud suspects' phones,
//! accounts, URLs), so the hasher must stay keyed per process (HashDoS), but std's SipHash
//! costs more than the probe itself: aHash with a random per-map seed instead. The map is
//! hashbrown's, whose `entry_ref` hashes the key once and allocates it only on insert.
//!
//! Keys are `CompactString`s: ids of up to 24 bytes (sensor, site, phone, account ids)
//! sit inside the map entry. No allocation per key, and comparing a probed key reads the
//! entry already fetched instead of chasing a pointer to the heap (a cache miss per probe
//! at a million keys). Restore inserts millions of keys at once: the allocation was a
//! fifth of its time.

use ahash::RandomState;
use compact_str::CompactString;
use hashbrown::hash_map::EntryRef;
use hashbrown::HashMap;

use chrono::{DateTime, FixedOffset};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::state::{codec, StateError};

#[derive(Debug)]
pub struct KeyedState<S> {
    map: HashMap<CompactString, Entry<S>, RandomState>,
    ttl_secs: i64,
    /// The sweep period (`ttl / 4`, at least 1 s) and the last one swept (`i64::MIN`: none).
    sweep_secs: i64,
    last_sweep: i64,
    tracking: bool,
    /// Keys changed or evicted since the last `take_dirty` (when tracking).
    dirty: Vec<Box<str>>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Entry<S> {
    state: S,
    last_seen: i64,
    #[serde(skip)]
    dirty: bool,
}

impl<S: Default> KeyedState<S> {
    pub fn new(ttl: std::time::Duration) -> Self {
        Self {
            map: HashMap::with_hasher(RandomState::new()),
            ttl_secs: ttl.as_secs().max(1) as i64,
            sweep_secs: (ttl.as_secs() as i64 / 4).max(1),
            last_sweep: i64::MIN,
            tracking: false,
            dirty: Vec::new(),
        }
    }

    /// Room for `additional` more keys without rehashing (restore).
    pub fn reserve(&mut self, additional: usize) {
        self.map.reserve(additional);
    }

    /// Remembers changed keys from now on (durable state only: it costs a flag per touch).
    pub fn track_changes(&mut self) {
        self.tracking = true;
    }

    /// The state of `key`, created empty on first sight; marks it seen at `ts`.
    pub fn touch(&mut self, key: &str, ts: DateTime<FixedOffset>) -> &mut S {
        let t = ts.timestamp();
        // One hash and probe; the key is copied only for a key never seen before.
        let e = match self.map.entry_ref(key) {
            EntryRef::Occupied(o) => o.into_mut(),
            EntryRef::Vacant(v) => v.insert_with_key(
                key.into(),
                Entry {
                    state: S::default(),
                    last_seen: t,
                    dirty: false,
                },
            ),
        };
        e.last_seen = e.last_seen.max(t);
        if self.tracking && !e.dirty {
            e.dirty = true;
            self.dirty.push(key.into());
        }
        &mut e.state
    }

    /// Records that `key`'s state changed outside `touch` (window closes, scans).
    pub fn mark_dirty(&mut self, key: &str) {
        if !self.tracking {
            return;
        }
        if let Some(e) = self.map.get_mut(key) {
            if !e.dirty {
                e.dirty = true;
                self.dirty.push(key.into());
            }
        }
    }

    /// Visits every key; `f` returns whether it changed the state (then it is dirty).
    pub fn for_each_mut(&mut self, mut f: impl FnMut(&str, &mut S) -> bool) {
        let tracking = self.tracking;
        for (k, e) in self.map.iter_mut() {
            if f(k, &mut e.state) && tracking && !e.dirty {
                e.dirty = true;
                self.dirty.push(k.as_str().into());
            }
        }
    }

    /// Appends the keys changed or evicted since the last call and forgets them.
    pub fn take_dirty(&mut self, out: &mut Vec<Box<str>>) {
        for k in self.dirty.drain(..) {
            if let Some(e) = self.map.get_mut(&*k) {
                e.dirty = false;
            }
            out.push(k);
        }
    }

    pub fn get(&self, key: &str) -> Option<&S> {
        self.map.get(key).map(|e| &e.state)
    }

    /// Drops keys idle past the TTL; returns how many went.
    pub fn evict_idle(&mut self, watermark: DateTime<FixedOffset>) -> usize {
        let period = watermark.timestamp().div_euclid(self.sweep_secs);
        if period == self.last_sweep {
            return 0;
        }
        self.last_sweep = period;
        let now = period * self.sweep_secs;
        let before = self.map.len();
        let ttl = self.ttl_secs;
        let (tracking, dirty) = (self.tracking, &mut self.dirty);
        self.map.retain(|k, e| {
            let keep = now - e.last_seen <= ttl;
            if !keep && tracking && !e.dirty {
                dirty.push(k.as_str().into()); // absent at the flush: written as a tombstone
            }
            keep
        });
        before - self.map.len()
    }

    /// Applies `f` to the state under `key`, if held, without touching its last-seen
    /// time; a change (`f` returns true) is remembered for the changelog.
    pub fn update(&mut self, key: &str, f: impl FnOnce(&mut S) -> bool) -> Option<bool> {
        let e = self.map.get_mut(key)?;
        let changed = f(&mut e.state);
        if changed && self.tracking && !e.dirty {
            e.dirty = true;
            self.dirty.push(key.into());
        }
        Some(changed)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Drops `key` (a tombstone in the changelog).
    pub fn remove(&mut self, key: &str) {
        self.map.remove(key);
    }

    /// Like `save` with the state first mapped to what the changelog keeps of it (e.g.
    /// interned ids as names, which a fresh process can resolve).
    pub fn save_with<T: Serialize>(&self, key: &str, f: impl FnOnce(&S) -> T) -> Option<Vec<u8>> {
        let e = self.map.get(key)?;
        Some(codec::encode(&Entry {
            state: f(&e.state),
            last_seen: e.last_seen,
            dirty: false,
        }))
    }

    /// Puts back an entry `save_with` produced, mapped back by `f`. `T` may borrow from
    /// `bytes` (names resolved by `f`: no copy per key).
    pub fn restore_with<'a, T: Deserialize<'a>>(
        &mut self,
        key: &str,
        bytes: &'a [u8],
        f: impl FnOnce(T) -> S,
    ) -> Result<(), StateError> {
        let e: Entry<T> = codec::decode_borrowed(key, bytes)?;
        let e = Entry {
            state: f(e.state),
            last_seen: e.last_seen,
            dirty: false,
        };
        self.map.insert(key.into(), e);
        Ok(())
    }
}

impl<S: Default + Serialize + DeserializeOwned> KeyedState<S> {
    /// The changelog encoding of `key`'s entry, if held.
    pub fn save(&self, key: &str) -> Option<Vec<u8>> {
        self.map.get(key).map(codec::encode)
    }

    /// Puts back an entry `save` produced.
    pub fn restore(&mut self, key: &str, bytes: &[u8]) -> Result<(), StateError> {
        let e: Entry<S> = codec::decode(key, bytes)?;
        self.map.insert(key.into(), e);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::testutil::ts;

    #[test]
    fn idle_keys_are_evicted_by_event_time() {
        let mut k: KeyedState<u32> = KeyedState::new(std::time::Duration::from_secs(3600));
        *k.touch("a", ts("2026-11-26T00:00:00Z")) += 1;
        *k.touch("b", ts("2026-11-26T00:50:00Z")) += 1;
        assert_eq!(k.evict_idle(ts("2026-11-26T00:59:00Z")), 0);
        assert_eq!(k.evict_idle(ts("2026-11-26T01:30:00Z")), 1);
        assert!(k.get("a").is_none());
        assert_eq!(k.get("b"), Some(&1));
    }

    #[test]
    fn churn_stays_bounded() {
        let mut k: KeyedState<[u8; 16]> = KeyedState::new(std::time::Duration::from_secs(60));
        let t0 = ts("2026-11-26T00:00:00Z");
        for i in 0..100_000i64 {
            let t = t0 + chrono::Duration::seconds(i);
            k.touch(&format!("suspect-{i}"), t);
            k.evict_idle(t);
        }
        // At most ttl + ttl/4 seconds of one-key-per-second churn remain.
        assert!(k.len() <= 76, "{}", k.len());
    }

    #[test]
    fn tracked_changes_and_evictions_come_out_once_and_round_trip() {
        let mut k: KeyedState<(u32, f64)> = KeyedState::new(std::time::Duration::from_secs(60));
        k.track_changes();
        let t0 = ts("2026-11-26T00:00:00Z");
        k.touch("a", t0).0 += 1;
        k.touch("a", t0).1 = 0.1 + 0.2;
        k.touch("b", t0).0 = 7;
        let mut d = Vec::new();
        k.take_dirty(&mut d);
        d.sort();
        assert_eq!(d, vec!["a".into(), "b".into()]);
        d.clear();
        k.take_dirty(&mut d);
        assert!(d.is_empty(), "a flush forgets what it wrote");

        let mut back: KeyedState<(u32, f64)> = KeyedState::new(std::time::Duration::from_secs(60));
        back.restore("a", &k.save("a").unwrap()).unwrap();
        assert_eq!(back.get("a"), Some(&(1, 0.1 + 0.2)));
        assert!(k.save("zz").is_none());

        // "b" idles out: it comes back as a dirty key that is no longer held.
        k.touch("a", t0 + chrono::Duration::seconds(100));
        k.take_dirty(&mut Vec::new());
        k.evict_idle(t0 + chrono::Duration::seconds(100));
        k.take_dirty(&mut d);
        assert_eq!(d, vec![Box::<str>::from("b")]);
        assert!(k.save("b").is_none());
    }

    #[test]
    fn a_restored_copy_evicts_what_the_original_does() {
        // The sweep clock is not in the changelog: a restored copy sweeps at its first
        // chance, the original may have swept moments before. Both must drop the same keys.
        let t0 = ts("2026-11-26T00:00:00Z");
        let at = |s: i64| t0 + chrono::Duration::seconds(s);
        let mut a: KeyedState<u32> = KeyedState::new(std::time::Duration::from_secs(3600));
        *a.touch("x", at(100)) = 1;
        *a.touch("y", at(1000)) = 2;
        assert_eq!(a.evict_idle(at(3650)), 0);
        let mut b: KeyedState<u32> = KeyedState::new(std::time::Duration::from_secs(3600));
        for k in ["x", "y"] {
            b.restore(k, &a.save(k).unwrap()).unwrap();
        }
        for s in [3750, 3800, 4550, 4700, 5500] {
            assert_eq!(a.evict_idle(at(s)), b.evict_idle(at(s)), "at {s}");
            assert_eq!((a.get("x"), a.get("y")), (b.get("x"), b.get("y")), "at {s}");
        }
        assert!(a.is_empty());
    }
}
