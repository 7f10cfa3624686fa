//! Keyed detector state with idle eviction, so memory stays bounded under key churn.
//!
//! Each key holds a fixed-size `S` plus the event time it was last touched. A sweep at
//! most once per `ttl / 4` of event time drops keys idle for longer than `ttl`; the sweep
//! is driven by the watermark, never by the wall clock.
//!
//! Hashing: keys are short strings, some attacker-controlled (fraud suspects' phones,
//! accounts, URLs), so the hasher must stay keyed per process (HashDoS), but std's SipHash
//! costs more than the probe itself: aHash with a random per-map seed instead. The map is
//! hashbrown's, whose `entry_ref` hashes the key once and allocates it only on insert.

use ahash::RandomState;
use hashbrown::hash_map::EntryRef;
use hashbrown::HashMap;

use chrono::{DateTime, FixedOffset};

#[derive(Debug)]
pub struct KeyedState<S> {
    map: HashMap<Box<str>, Entry<S>, RandomState>,
    ttl_secs: i64,
    last_sweep: i64,
}

#[derive(Debug)]
struct Entry<S> {
    state: S,
    last_seen: i64,
}

impl<S: Default> KeyedState<S> {
    pub fn new(ttl: std::time::Duration) -> Self {
        Self {
            map: HashMap::with_hasher(RandomState::new()),
            ttl_secs: ttl.as_secs().max(1) as i64,
            last_sweep: i64::MIN,
        }
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
                },
            ),
        };
        e.last_seen = e.last_seen.max(t);
        &mut e.state
    }

    pub fn get(&self, key: &str) -> Option<&S> {
        self.map.get(key).map(|e| &e.state)
    }

    /// Drops keys idle past the TTL; returns how many went.
    pub fn evict_idle(&mut self, watermark: DateTime<FixedOffset>) -> usize {
        let now = watermark.timestamp();
        if self.last_sweep != i64::MIN && now - self.last_sweep < (self.ttl_secs / 4).max(1) {
            return 0;
        }
        self.last_sweep = now;
        let before = self.map.len();
        let ttl = self.ttl_secs;
        self.map.retain(|_, e| now - e.last_seen <= ttl);
        before - self.map.len()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&str, &mut S)> {
        self.map.iter_mut().map(|(k, e)| (&**k, &mut e.state))
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
}
