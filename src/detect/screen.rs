//! What an event must pass, after decoding and before any detector or watermark sees
//! it: its time is believable and it is not a resend (docs/SECURITY.md).
//!
//! - **A jump ahead** (replay and backtest, where no wall clock can vouch for event
//!   time; `run` checks against the wall clock when decoding instead): an event more
//!   than `max_jump` ahead of the newest time its stream has admitted is held to be a
//!   device with a bad clock, unless a *different* key confirms the jump. A recording's
//!   gap moves every key, so the second key across it confirms; a gateway whose clock
//!   reset moves one, and the other keys' ordinary times refute it. Either way the
//!   watermark never moves on one key's say-so. A stream that has only ever had one key
//!   is that key: its jumps are its gaps.
//! - **Duplicates**: an incident or fraud report whose `id`, or a sensor reading whose
//!   `sensor_id` and `ts`, was admitted within `window` of event time counts once. Two
//!   generations of fingerprints, each at most `window` of event time and `max_ids`
//!   entries, so memory is bounded whatever the input; a reading is compared with its
//!   sensor's last two times, which catches a producer's retry (in order or behind one
//!   newer reading).
//!
//! Neither is durable: after a restart a resend of what came before it counts again.
//! Both are O(1) per event.

use std::time::Duration;

use ahash::RandomState;
use hashbrown::{HashMap, HashSet};

use crate::decode::{Event, Stream};

/// `[input]` as the screen uses it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScreenConfig {
    /// `None` in `run` (the decoder checks against the wall clock there).
    pub max_jump: Option<Duration>,
    pub window: Duration,
    pub max_ids: usize,
}

impl Default for ScreenConfig {
    fn default() -> Self {
        Self {
            max_jump: Some(Duration::from_secs(86_400)),
            window: Duration::from_secs(3600),
            max_ids: 1_000_000,
        }
    }
}

/// Why an event was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Screened {
    /// Seen already within the window: counted once.
    Duplicate,
    /// This far ahead of its stream, unconfirmed: a dead letter (`ts_in_future`).
    Ahead(chrono::Duration),
}

pub struct Screen {
    cfg: ScreenConfig,
    streams: [StreamScreen; 3],
    hasher: RandomState,
}

#[derive(Default)]
struct StreamScreen {
    /// Newest event time admitted (Unix seconds).
    newest: Option<i64>,
    first_key: Option<u64>,
    many_keys: bool,
    /// An unconfirmed jump: its key and time.
    pending: Option<(u64, i64)>,
    seen: Generations,
}

/// Fingerprints of what was admitted: the current generation and the one before.
#[derive(Default)]
struct Generations {
    /// Event time the current generation started at.
    started: Option<i64>,
    ids: [HashSet<u64, RandomState>; 2],
    /// Sensor -> its last two reading times (fingerprints).
    readings: [HashMap<u64, [u64; 2], RandomState>; 2],
}

impl Screen {
    pub fn new(cfg: ScreenConfig) -> Self {
        Self {
            cfg,
            streams: Default::default(),
            hasher: RandomState::new(),
        }
    }

    /// Admits `ev` (remembering it) or says why not.
    pub fn admit(&mut self, ev: &Event) -> Option<Screened> {
        let key = self.hasher.hash_one(ev.key());
        let secs = ev.ts().timestamp();
        let s = &mut self.streams[ev.stream().index()];
        if let Some(max) = self.cfg.max_jump {
            if let Some(ahead) = s.ahead(key, secs, max.as_secs() as i64) {
                return Some(Screened::Ahead(chrono::Duration::seconds(ahead)));
            }
        }
        let duplicate = match ev {
            Event::Sensor(r) => {
                let t = (r.ts.timestamp() as u64)
                    .wrapping_mul(1_000_000_000)
                    .wrapping_add(u64::from(r.ts.timestamp_subsec_nanos()));
                s.seen.reading_seen(key, t)
            }
            _ => s.seen.id_seen(key),
        };
        if duplicate {
            return Some(Screened::Duplicate);
        }
        s.newest = Some(s.newest.map_or(secs, |n| n.max(secs)));
        s.seen
            .roll(secs, self.cfg.window.as_secs() as i64, self.cfg.max_ids);
        None
    }

    /// The stream `s` has admitted events (for tests and logs).
    pub fn newest(&self, s: Stream) -> Option<i64> {
        self.streams[s.index()].newest
    }
}

impl StreamScreen {
    /// How far ahead `secs` is, if it is an unconfirmed jump of more than `max`.
    fn ahead(&mut self, key: u64, secs: i64, max: i64) -> Option<i64> {
        match self.first_key {
            None => self.first_key = Some(key),
            Some(k) if k != key => self.many_keys = true,
            Some(_) => {}
        }
        let newest = self.newest?;
        let ahead = secs - newest;
        if ahead <= max {
            // An ordinary time from any key: the stream is still here, not over there.
            self.pending = None;
            return None;
        }
        if !self.many_keys {
            return None;
        }
        match self.pending {
            Some((k, t)) if k != key && (secs - t).abs() <= max => {
                self.pending = None;
                None
            }
            _ => {
                self.pending = Some((key, secs));
                Some(ahead)
            }
        }
    }
}

impl Generations {
    /// Whether report `id` was admitted; remembers it if not.
    fn id_seen(&mut self, id: u64) -> bool {
        if self.ids[1].contains(&id) {
            return true;
        }
        !self.ids[0].insert(id)
    }

    /// Whether sensor `key` had a reading at `t` among its last two; remembers it if not.
    fn reading_seen(&mut self, key: u64, t: u64) -> bool {
        let last = self.readings[0]
            .get(&key)
            .or_else(|| self.readings[1].get(&key))
            .copied();
        if last.is_some_and(|l| l.contains(&t)) {
            return true;
        }
        let before = last.map_or(t, |l| l[0]);
        self.readings[0].insert(key, [t, before]);
        false
    }

    /// Starts a new generation once the current one spans `window` seconds of event time
    /// or holds `max` entries; the oldest is dropped.
    fn roll(&mut self, now: i64, window: i64, max: usize) {
        let started = *self.started.get_or_insert(now);
        let full = self.ids[0].len() >= max || self.readings[0].len() >= max;
        if now - started >= window || full {
            self.ids.swap(0, 1);
            self.ids[0].clear();
            self.readings.swap(0, 1);
            self.readings[0].clear();
            self.started = Some(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{test_decoder, Stream};
    use crate::detect::testutil::reading;

    fn report(id: &str, at: &str) -> Event {
        let v = serde_json::json!({"id":id,"ts":at,"region":"330502001","category":"dispute"});
        test_decoder()
            .decode(Stream::Incidents, v.to_string().as_bytes())
            .unwrap()
            .event
    }

    const DAY: i64 = 86_400;

    #[test]
    fn one_key_far_ahead_is_refused_and_the_stream_goes_on() {
        let mut s = Screen::new(ScreenConfig::default());
        for i in 0..10 {
            assert_eq!(s.admit(&reading("G1", "gas_lel", i * 10, 2.0)), None);
        }
        let future = reading("G2", "gas_lel", 73 * 365 * DAY, 2.0);
        assert!(matches!(s.admit(&future), Some(Screened::Ahead(_))));
        assert_eq!(s.admit(&reading("G1", "gas_lel", 100, 2.0)), None);
        // Refuted by G1: G3 at the same bad time is a new, unconfirmed claim.
        let g3 = reading("G3", "gas_lel", 73 * 365 * DAY, 2.0);
        assert!(matches!(s.admit(&g3), Some(Screened::Ahead(_))));
        assert_eq!(
            s.newest(Stream::Sensors),
            Some(reading("G1", "gas_lel", 100, 0.0).ts().timestamp())
        );
    }

    #[test]
    fn a_gap_every_key_crosses_is_confirmed_by_the_second_key() {
        let mut s = Screen::new(ScreenConfig::default());
        for i in 0..5 {
            assert_eq!(s.admit(&reading("A", "gas_lel", i * 10, 2.0)), None);
            assert_eq!(s.admit(&reading("B", "gas_lel", i * 10, 2.0)), None);
        }
        let later = 3 * DAY;
        assert!(matches!(
            s.admit(&reading("A", "gas_lel", later, 2.0)),
            Some(Screened::Ahead(_))
        ));
        assert_eq!(s.admit(&reading("B", "gas_lel", later + 10, 2.0)), None);
        assert_eq!(s.admit(&reading("A", "gas_lel", later + 20, 2.0)), None);
    }

    #[test]
    fn a_single_key_stream_jumps_freely() {
        let mut s = Screen::new(ScreenConfig::default());
        assert_eq!(s.admit(&reading("A", "gas_lel", 0, 2.0)), None);
        assert_eq!(s.admit(&reading("A", "gas_lel", 30 * DAY, 2.0)), None);
    }

    #[test]
    fn without_a_jump_limit_nothing_is_ahead() {
        let mut s = Screen::new(ScreenConfig {
            max_jump: None,
            ..Default::default()
        });
        assert_eq!(s.admit(&reading("A", "gas_lel", 0, 2.0)), None);
        assert_eq!(s.admit(&reading("B", "gas_lel", 365 * DAY, 2.0)), None);
    }

    #[test]
    fn resent_reports_and_readings_count_once() {
        let mut s = Screen::new(ScreenConfig::default());
        let at = "2026-11-26T08:15:00+08:00";
        assert_eq!(s.admit(&report("INC-1", at)), None);
        for _ in 0..40 {
            assert_eq!(s.admit(&report("INC-1", at)), Some(Screened::Duplicate));
        }
        assert_eq!(s.admit(&report("INC-2", at)), None);
        // Readings: the same sensor and time again, also behind one newer reading.
        assert_eq!(s.admit(&reading("A", "gas_lel", 0, 2.0)), None);
        assert_eq!(
            s.admit(&reading("A", "gas_lel", 0, 2.0)),
            Some(Screened::Duplicate)
        );
        assert_eq!(s.admit(&reading("A", "gas_lel", 10, 2.1)), None);
        assert_eq!(
            s.admit(&reading("A", "gas_lel", 0, 2.0)),
            Some(Screened::Duplicate)
        );
        assert_eq!(
            s.admit(&reading("B", "gas_lel", 0, 2.0)),
            None,
            "another sensor"
        );
    }

    #[test]
    fn memory_is_bounded_by_two_generations() {
        let mut s = Screen::new(ScreenConfig {
            max_ids: 100,
            ..Default::default()
        });
        let at = "2026-11-26T08:15:00+08:00";
        for i in 0..10_000 {
            assert_eq!(s.admit(&report(&format!("INC-{i}"), at)), None);
        }
        let g = &s.streams[Stream::Incidents.index()].seen;
        assert!(g.ids[0].len() + g.ids[1].len() <= 200);
        // The last generation is still remembered.
        assert_eq!(s.admit(&report("INC-9999", at)), Some(Screened::Duplicate));
    }

    #[test]
    fn the_window_is_event_time() {
        let mut s = Screen::new(ScreenConfig::default());
        assert_eq!(s.admit(&report("INC-1", "2026-11-26T08:00:00+08:00")), None);
        // Two windows later both generations have turned over.
        assert_eq!(s.admit(&report("INC-2", "2026-11-26T09:30:00+08:00")), None);
        assert_eq!(s.admit(&report("INC-3", "2026-11-26T11:00:00+08:00")), None);
        assert_eq!(s.admit(&report("INC-1", "2026-11-26T11:00:01+08:00")), None);
    }
}
