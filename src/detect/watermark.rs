//! Per-stream event-time watermark, tracked per input partition as Kafka Streams and
//! Flink do: each partition's newest event time, the watermark is the *slowest* active
//! partition's minus the allowed lateness. So a consumer racing ahead on one partition
//! (catch-up after downtime, uneven fetches) does not make the others' events late.
//!
//! A partition that has delivered nothing for `idle_after` of wall-clock time stops
//! holding the watermark back (Flink's "idleness"): a quiet partition of a low-volume
//! stream must not stall window closes and `offline` checks for the whole stream. This
//! is the only use of the wall clock in detection; files in replay are one partition.
//!
//! Events behind the watermark are "late": value detectors still score them, window
//! detectors skip them, and the pipeline counts them in `riskstream_events_late_total`.
//! The watermark only moves forward.

use std::time::{Duration as StdDuration, Instant};

use chrono::{DateTime, Duration, FixedOffset};

#[derive(Debug, Clone)]
struct Part {
    id: i32,
    max_ts: DateTime<FixedOffset>,
    last_seen: Instant,
}

/// What the changelog keeps of a watermark: each partition's newest event time, the
/// watermark and the last second handed to detectors (idleness restarts on restore).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WatermarkState {
    parts: Vec<(i32, DateTime<FixedOffset>)>,
    current: Option<DateTime<FixedOffset>>,
    emitted: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct Watermark {
    lateness: Duration,
    idle_after: StdDuration,
    parts: Vec<Part>,
    current: Option<DateTime<FixedOffset>>,
    /// Last watermark handed to detectors, whole seconds; advances are batched per second.
    emitted: Option<i64>,
}

impl Watermark {
    pub fn new(lateness: Duration) -> Self {
        Self::with_idleness(lateness, StdDuration::from_secs(30))
    }

    pub fn with_idleness(lateness: Duration, idle_after: StdDuration) -> Self {
        Self {
            lateness,
            idle_after,
            parts: Vec::new(),
            current: None,
            emitted: None,
        }
    }

    pub fn snapshot(&self) -> WatermarkState {
        WatermarkState {
            parts: self.parts.iter().map(|p| (p.id, p.max_ts)).collect(),
            current: self.current,
            emitted: self.emitted,
        }
    }

    pub fn restore(&mut self, s: WatermarkState) {
        let now = Instant::now();
        self.parts = s
            .parts
            .into_iter()
            .map(|(id, max_ts)| Part {
                id,
                max_ts,
                last_seen: now,
            })
            .collect();
        self.current = s.current;
        self.emitted = s.emitted;
    }

    pub fn current(&self) -> Option<DateTime<FixedOffset>> {
        self.current
    }

    pub fn is_late(&self, ts: DateTime<FixedOffset>) -> bool {
        self.current.is_some_and(|w| ts < w)
    }

    /// Takes an event time from a single-partition input (files, tests).
    pub fn observe(&mut self, ts: DateTime<FixedOffset>) -> Option<DateTime<FixedOffset>> {
        self.observe_part(ts, -1, Instant::now())
    }

    /// Takes an event time from input partition `part` received at `now`; returns the new
    /// watermark when it moved by a second or more.
    pub fn observe_part(
        &mut self,
        ts: DateTime<FixedOffset>,
        part: i32,
        now: Instant,
    ) -> Option<DateTime<FixedOffset>> {
        match self.parts.iter_mut().find(|p| p.id == part) {
            Some(p) => {
                if ts > p.max_ts {
                    p.max_ts = ts;
                }
                p.last_seen = now;
            }
            None => self.parts.push(Part {
                id: part,
                max_ts: ts,
                last_seen: now,
            }),
        }
        let active = self
            .parts
            .iter()
            .filter(|p| now.saturating_duration_since(p.last_seen) < self.idle_after)
            .map(|p| p.max_ts)
            .min();
        // With every partition idle the freshest one (just seen) decides.
        let slowest = active.or_else(|| self.parts.iter().map(|p| p.max_ts).max())?;
        let w = slowest - self.lateness;
        if self.current.is_none_or(|c| w > c) {
            self.current = Some(w);
        }
        let w = self.current?;
        let secs = w.timestamp();
        if self.emitted.is_none_or(|e| secs > e) {
            self.emitted = Some(secs);
            Some(w)
        } else {
            None
        }
    }

    /// Pulls every time past `limit` back to `to` (a restored watermark that a device's
    /// bad clock carried past the wall clock: `limit` is the wall clock plus the allowed
    /// skew, `to` the wall clock); returns whether anything moved.
    pub fn repair(&mut self, limit: DateTime<FixedOffset>, to: DateTime<FixedOffset>) -> bool {
        let mut moved = false;
        for p in &mut self.parts {
            if p.max_ts > limit {
                p.max_ts = to;
                moved = true;
            }
        }
        let w = to - self.lateness;
        if self.current.is_some_and(|c| c > limit - self.lateness) {
            self.current = Some(w);
            moved = true;
        }
        if self.emitted.is_some_and(|e| e > w.timestamp()) && moved {
            self.emitted = Some(w.timestamp());
        }
        moved
    }

    /// End of input: the watermark jumps to the newest event time of any partition.
    pub fn flush(&mut self) -> Option<DateTime<FixedOffset>> {
        let m = self.parts.iter().map(|p| p.max_ts).max()?;
        self.lateness = Duration::zero();
        self.current = Some(self.current.map_or(m, |c| c.max(m)));
        self.emitted = Some(m.timestamp());
        self.current
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::testutil::ts;

    #[test]
    fn moves_forward_only_and_flags_late() {
        let mut w = Watermark::new(Duration::seconds(30));
        assert_eq!(
            w.observe(ts("2026-11-26T00:01:00Z")),
            Some(ts("2026-11-26T00:00:30Z"))
        );
        // An older event inside the lateness is not late and does not move it back.
        assert!(!w.is_late(ts("2026-11-26T00:00:40Z")));
        assert_eq!(w.observe(ts("2026-11-26T00:00:40Z")), None);
        assert!(w.is_late(ts("2026-11-26T00:00:10Z")));
        assert_eq!(w.current(), Some(ts("2026-11-26T00:00:30Z")));
        assert_eq!(w.flush(), Some(ts("2026-11-26T00:01:00Z")));
    }

    #[test]
    fn repair_pulls_a_future_watermark_back() {
        let mut w = Watermark::new(Duration::seconds(30));
        w.observe(ts("2026-11-26T00:00:00Z"));
        w.observe(ts("2099-01-01T00:00:00Z"));
        assert!(w.is_late(ts("2026-11-26T00:00:10Z")));
        assert!(w.repair(ts("2026-11-26T00:05:00Z"), ts("2026-11-26T00:00:00Z")));
        assert_eq!(w.current(), Some(ts("2026-11-25T23:59:30Z")));
        assert!(!w.is_late(ts("2026-11-25T23:59:40Z")));
        // It moves on from there with the next event.
        assert_eq!(
            w.observe(ts("2026-11-26T00:01:00Z")),
            Some(ts("2026-11-26T00:00:30Z"))
        );
        let (limit, now) = (ts("2026-11-26T00:07:00Z"), ts("2026-11-26T00:02:00Z"));
        assert!(!w.repair(limit, now), "nothing past the limit");
    }

    #[test]
    fn the_slowest_active_partition_holds_it_back() {
        let t0 = Instant::now();
        let s = |n: u64| t0 + StdDuration::from_secs(n);
        let mut w = Watermark::with_idleness(Duration::seconds(30), StdDuration::from_secs(10));
        w.observe_part(ts("2026-11-26T00:00:00Z"), 0, s(0));
        // Partition 1 races an hour ahead: partition 0's next events are not late.
        w.observe_part(ts("2026-11-26T01:00:00Z"), 1, s(1));
        assert_eq!(w.current(), Some(ts("2026-11-25T23:59:30Z")));
        w.observe_part(ts("2026-11-26T00:00:05Z"), 0, s(2));
        assert!(!w.is_late(ts("2026-11-26T00:00:01Z")));
        assert_eq!(w.current(), Some(ts("2026-11-25T23:59:35Z")));
        // Partition 0 goes quiet for longer than idle_after: it stops holding it back.
        w.observe_part(ts("2026-11-26T01:00:10Z"), 1, s(13));
        assert_eq!(w.current(), Some(ts("2026-11-26T00:59:40Z")));
        // When it speaks again (behind), its events are late and the watermark stays.
        w.observe_part(ts("2026-11-26T00:00:10Z"), 0, s(14));
        assert_eq!(w.current(), Some(ts("2026-11-26T00:59:40Z")));
    }
}
