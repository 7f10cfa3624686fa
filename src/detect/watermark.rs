//! Per-stream event-time watermark: the largest event time seen minus the allowed lateness.
//!
//! Events behind the watermark are "late": value detectors still score them, window
//! detectors skip them, and the pipeline counts them in `riskstream_events_late_total`.
//! The watermark only moves forward, so replay and live runs close windows identically.

use chrono::{DateTime, Duration, FixedOffset};

#[derive(Debug, Clone)]
pub struct Watermark {
    lateness: Duration,
    max_ts: Option<DateTime<FixedOffset>>,
    /// Last watermark handed to detectors, whole seconds; advances are batched per second.
    emitted: Option<i64>,
}

impl Watermark {
    pub fn new(lateness: Duration) -> Self {
        Self {
            lateness,
            max_ts: None,
            emitted: None,
        }
    }

    pub fn current(&self) -> Option<DateTime<FixedOffset>> {
        self.max_ts.map(|t| t - self.lateness)
    }

    pub fn is_late(&self, ts: DateTime<FixedOffset>) -> bool {
        self.current().is_some_and(|w| ts < w)
    }

    /// Takes an event time; returns the new watermark when it moved by a second or more.
    pub fn observe(&mut self, ts: DateTime<FixedOffset>) -> Option<DateTime<FixedOffset>> {
        if self.max_ts.is_none_or(|m| ts > m) {
            self.max_ts = Some(ts);
        }
        let w = self.current()?;
        let secs = w.timestamp();
        if self.emitted.is_none_or(|e| secs > e) {
            self.emitted = Some(secs);
            Some(w)
        } else {
            None
        }
    }

    /// End of input: the watermark jumps to the newest event time.
    pub fn flush(&mut self) -> Option<DateTime<FixedOffset>> {
        let m = self.max_ts?;
        self.lateness = Duration::zero();
        self.emitted = Some(m.timestamp());
        Some(m)
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
}
