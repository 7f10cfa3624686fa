//! What an event must pass, after decoding and before any detector or watermark sees
//! it: its time is believable and it is not a resend (docs/SECURITY.md).
//!
//! - **A jump ahead** (replay and backtest, where no wall clock can vouch for event
//!   time; `run` checks against the wall clock when decoding instead): an event more
//!   than `hold` ahead of the newest time its stream has counted does not move the
//!   watermark until a *different* key confirms the jump; more than `max_jump` ahead and
//!   unconfirmed, it is refused (a dead letter). A recording's gap moves every key, so
//!   the second key across it confirms; a gateway whose clock reset moves one, and the
//!   other keys' ordinary times refute it. Either way the watermark never moves on one
//!   key's say-so. A stream that has only ever had one key is that key: its jumps are
//!   its gaps.
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
use hashbrown::hash_map::Entry;
use hashbrown::{HashMap, HashSet};

use crate::decode::{Event, Stream};

/// `[input]` as the screen uses it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScreenConfig {
    /// `None` in `run` (the decoder checks against the wall clock there).
    pub max_jump: Option<Duration>,
    /// A jump past this waits for another key before it moves the watermark.
    pub hold: Duration,
    pub window: Duration,
    pub max_ids: usize,
}

impl Default for ScreenConfig {
    fn default() -> Self {
        Self {
            max_jump: Some(Duration::from_secs(86_400)),
            hold: Duration::from_secs(300),
            window: Duration::from_secs(3600),
            max_ids: 1_000_000,
        }
    }
}

/// What an admitted event may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Everything: the detectors see it and its time counts for the watermark.
    Counts,
    /// The detectors see it, but its time (a jump ahead no other key has confirmed yet)
    /// does not move the watermark.
    Held,
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
    ids: [HashSet<u64, Prehashed>; 2],
    /// Sensor -> its last two reading times (fingerprints).
    readings: [HashMap<u64, [u64; 2], Prehashed>; 2],
}

/// The keys are already keyed hashes (`Screen::hasher`, random per process): hashing
/// them again would only cost time.
#[derive(Default, Clone, Copy)]
struct Prehashed;

impl std::hash::BuildHasher for Prehashed {
    type Hasher = Fingerprint;
    fn build_hasher(&self) -> Fingerprint {
        Fingerprint(0)
    }
}

struct Fingerprint(u64);

impl std::hash::Hasher for Fingerprint {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are hashed here; fold anything else in so it still works.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, x: u64) {
        self.0 = x;
    }
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
    pub fn admit(&mut self, ev: &Event) -> Result<Admission, Screened> {
        let key = self.hasher.hash_one(ev.key());
        let secs = ev.ts().timestamp();
        let s = &mut self.streams[ev.stream().index()];
        let admission = match self.cfg.max_jump {
            Some(max) => s
                .ahead(
                    key,
                    secs,
                    self.cfg.hold.as_secs() as i64,
                    max.as_secs() as i64,
                )
                .map_err(|ahead| Screened::Ahead(chrono::Duration::seconds(ahead)))?,
            None => Admission::Counts,
        };
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
            return Err(Screened::Duplicate);
        }
        if admission == Admission::Counts {
            s.newest = Some(s.newest.map_or(secs, |n| n.max(secs)));
            s.seen
                .roll(secs, self.cfg.window.as_secs() as i64, self.cfg.max_ids);
        }
        Ok(admission)
    }

    /// The stream `s` has admitted events (for tests and logs).
    pub fn newest(&self, s: Stream) -> Option<i64> {
        self.streams[s.index()].newest
    }
}

impl StreamScreen {
    /// Whether `secs` of `key` counts, is held (an unconfirmed jump of more than `hold`)
    /// or, as `Err(how far ahead)`, refused (an unconfirmed jump of more than `max`).
    fn ahead(&mut self, key: u64, secs: i64, hold: i64, max: i64) -> Result<Admission, i64> {
        match self.first_key {
            None => self.first_key = Some(key),
            Some(k) if k != key => self.many_keys = true,
            Some(_) => {}
        }
        let Some(newest) = self.newest else {
            return Ok(Admission::Counts);
        };
        let ahead = secs - newest;
        if ahead <= hold {
            // An ordinary time from any key: the stream is still here, not over there.
            self.pending = None;
            return Ok(Admission::Counts);
        }
        if !self.many_keys {
            return Ok(Admission::Counts);
        }
        match self.pending {
            Some((k, t)) if k != key && (secs - t).abs() <= max => {
                self.pending = None;
                Ok(Admission::Counts)
            }
            _ => {
                self.pending = Some((key, secs));
                if ahead > max {
                    Err(ahead)
                } else {
                    Ok(Admission::Held)
                }
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
        let [current, previous] = &mut self.readings;
        match current.entry(key) {
            Entry::Occupied(mut e) => {
                let last = e.get_mut();
                if last.contains(&t) {
                    return true;
                }
                *last = [t, last[0]];
            }
            Entry::Vacant(v) => {
                let before = previous.get(&key).copied();
                if before.is_some_and(|l| l.contains(&t)) {
                    return true;
                }
                v.insert([t, before.map_or(t, |l| l[0])]);
            }
        }
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
            assert_eq!(
                s.admit(&reading("G1", "gas_lel", i * 10, 2.0)),
                Ok(Admission::Counts)
            );
        }
        let future = reading("G2", "gas_lel", 73 * 365 * DAY, 2.0);
        assert!(matches!(s.admit(&future), Err(Screened::Ahead(_))));
        assert_eq!(
            s.admit(&reading("G1", "gas_lel", 100, 2.0)),
            Ok(Admission::Counts)
        );
        // Refuted by G1: G3 at the same bad time is a new, unconfirmed claim.
        let g3 = reading("G3", "gas_lel", 73 * 365 * DAY, 2.0);
        assert!(matches!(s.admit(&g3), Err(Screened::Ahead(_))));
        assert_eq!(
            s.newest(Stream::Sensors),
            Some(reading("G1", "gas_lel", 100, 0.0).ts().timestamp())
        );
    }

    #[test]
    fn a_gap_every_key_crosses_is_confirmed_by_the_second_key() {
        let mut s = Screen::new(ScreenConfig::default());
        for i in 0..5 {
            assert_eq!(
                s.admit(&reading("A", "gas_lel", i * 10, 2.0)),
                Ok(Admission::Counts)
            );
            assert_eq!(
                s.admit(&reading("B", "gas_lel", i * 10, 2.0)),
                Ok(Admission::Counts)
            );
        }
        let later = 3 * DAY;
        assert!(matches!(
            s.admit(&reading("A", "gas_lel", later, 2.0)),
            Err(Screened::Ahead(_))
        ));
        assert_eq!(
            s.admit(&reading("B", "gas_lel", later + 10, 2.0)),
            Ok(Admission::Counts)
        );
        assert_eq!(
            s.admit(&reading("A", "gas_lel", later + 20, 2.0)),
            Ok(Admission::Counts)
        );
    }

    #[test]
    fn a_single_key_stream_jumps_freely() {
        let mut s = Screen::new(ScreenConfig::default());
        assert_eq!(
            s.admit(&reading("A", "gas_lel", 0, 2.0)),
            Ok(Admission::Counts)
        );
        assert_eq!(
            s.admit(&reading("A", "gas_lel", 30 * DAY, 2.0)),
            Ok(Admission::Counts)
        );
    }

    #[test]
    fn without_a_jump_limit_nothing_is_ahead() {
        let mut s = Screen::new(ScreenConfig {
            max_jump: None,
            ..Default::default()
        });
        assert_eq!(
            s.admit(&reading("A", "gas_lel", 0, 2.0)),
            Ok(Admission::Counts)
        );
        assert_eq!(
            s.admit(&reading("B", "gas_lel", 365 * DAY, 2.0)),
            Ok(Admission::Counts)
        );
    }

    #[test]
    fn resent_reports_and_readings_count_once() {
        let mut s = Screen::new(ScreenConfig::default());
        let at = "2026-11-26T08:15:00+08:00";
        assert_eq!(s.admit(&report("INC-1", at)), Ok(Admission::Counts));
        for _ in 0..40 {
            assert_eq!(s.admit(&report("INC-1", at)), Err(Screened::Duplicate));
        }
        assert_eq!(s.admit(&report("INC-2", at)), Ok(Admission::Counts));
        // Readings: the same sensor and time again, also behind one newer reading.
        assert_eq!(
            s.admit(&reading("A", "gas_lel", 0, 2.0)),
            Ok(Admission::Counts)
        );
        assert_eq!(
            s.admit(&reading("A", "gas_lel", 0, 2.0)),
            Err(Screened::Duplicate)
        );
        assert_eq!(
            s.admit(&reading("A", "gas_lel", 10, 2.1)),
            Ok(Admission::Counts)
        );
        assert_eq!(
            s.admit(&reading("A", "gas_lel", 0, 2.0)),
            Err(Screened::Duplicate)
        );
        assert_eq!(
            s.admit(&reading("B", "gas_lel", 0, 2.0)),
            Ok(Admission::Counts),
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
            assert_eq!(
                s.admit(&report(&format!("INC-{i}"), at)),
                Ok(Admission::Counts)
            );
        }
        let g = &s.streams[Stream::Incidents.index()].seen;
        assert!(g.ids[0].len() + g.ids[1].len() <= 200);
        // The last generation is still remembered.
        assert_eq!(s.admit(&report("INC-9999", at)), Err(Screened::Duplicate));
    }

    #[test]
    fn the_window_is_event_time() {
        let mut s = Screen::new(ScreenConfig::default());
        let at = |m: i64| {
            (crate::detect::testutil::ts("2026-11-26T08:00:00+08:00")
                + chrono::Duration::minutes(m))
            .to_rfc3339()
        };
        assert_eq!(s.admit(&report("INC-1", &at(0))), Ok(Admission::Counts));
        assert_eq!(s.admit(&report("INC-1", &at(1))), Err(Screened::Duplicate));
        for m in 1..=32 {
            let id = format!("INC-X{m}");
            assert_eq!(s.admit(&report(&id, &at(m * 4))), Ok(Admission::Counts));
        }
        // Two windows later both generations have turned over.
        assert_eq!(s.admit(&report("INC-1", &at(129))), Ok(Admission::Counts));
    }

    #[test]
    fn a_short_jump_is_held_until_another_key_confirms_it() {
        let mut s = Screen::new(ScreenConfig::default());
        for i in 0..5 {
            assert_eq!(
                s.admit(&reading("A", "gas_lel", i * 10, 2.0)),
                Ok(Admission::Counts)
            );
            assert_eq!(
                s.admit(&reading("B", "gas_lel", i * 10, 2.0)),
                Ok(Admission::Counts)
            );
        }
        let newest = s.newest(Stream::Sensors);
        // B's clock runs 2 h ahead: seen, but its time is not the stream's ...
        assert_eq!(
            s.admit(&reading("B", "gas_lel", 7200, 2.0)),
            Ok(Admission::Held)
        );
        assert_eq!(s.newest(Stream::Sensors), newest);
        // ... and A's ordinary time refutes it.
        assert_eq!(
            s.admit(&reading("A", "gas_lel", 60, 2.0)),
            Ok(Admission::Counts)
        );
        assert_eq!(
            s.admit(&reading("B", "gas_lel", 7210, 2.0)),
            Ok(Admission::Held)
        );
        // A gap both cross: the second key confirms it.
        assert_eq!(
            s.admit(&reading("A", "gas_lel", 7220, 2.0)),
            Ok(Admission::Counts)
        );
        assert_eq!(
            s.admit(&reading("B", "gas_lel", 7230, 2.0)),
            Ok(Admission::Counts)
        );
    }
}
