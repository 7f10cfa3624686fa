//! An hour-of-day correction for a trailing baseline, learned per key, never configured.
//!
//! A rolling median (or any trailing baseline) lags a daily rhythm: a pump switched on at
//! 08:00 every day, a shift change, the afternoon heat. Each day the reading at 08:00 sits
//! above the median of the hours before it by about the same amount, and a detector
//! judging it against the median alone fires every morning. `Season` learns, for each hour
//! of the day (in the reading's own UTC offset), how far readings of that hour usually sit
//! from the trailing baseline, and the detector subtracts it.
//!
//! Each hour's offset is an EWMA whose weight makes it span about two days of that hour
//! whatever the reporting interval (`w = interval / 2 h`), so a sensor read every 30 s and
//! one read every 5 minutes learn equally fast. It starts at zero and is applied once the
//! key has a day of history: a series with no rhythm learns offsets near zero (the mean of
//! its noise), so nothing needs switching on or off. Readings judged anomalous are not
//! learned. 104 bytes per key; O(1) per reading.

use serde::{Deserialize, Serialize};

/// Seconds of history before the offsets are applied: each hour has been seen once.
const APPLY_AFTER_SECS: i64 = 86_400;
/// Each hour's EWMA spans about this many days of that hour.
const SPAN_DAYS: f64 = 2.0;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Season {
    #[serde(with = "crate::state::codec::array")]
    offset: [f32; 24],
    /// Event time of the key's first reading (`i64::MIN`: none yet).
    since: i64,
}

impl Default for Season {
    fn default() -> Self {
        Self {
            offset: [0.0; 24],
            since: i64::MIN,
        }
    }
}

impl Season {
    /// What readings of `hour` (0..24) usually add to the trailing baseline; 0 until the
    /// key has a day of history at `t`.
    pub fn offset(&self, hour: u32, t: i64) -> f64 {
        if self.since == i64::MIN || t.saturating_sub(self.since) < APPLY_AFTER_SECS {
            return 0.0;
        }
        f64::from(self.offset[hour as usize % 24])
    }

    /// Learns that a reading of `hour` at `t` sat `residual` from the trailing baseline,
    /// for a key that reports every `interval_s` seconds.
    pub fn learn(&mut self, hour: u32, t: i64, residual: f64, interval_s: f64) {
        if self.since == i64::MIN {
            self.since = t;
        }
        if !residual.is_finite() {
            return;
        }
        let w = (interval_s / (SPAN_DAYS * 3600.0)).clamp(1e-4, 0.5);
        let o = &mut self.offset[hour as usize % 24];
        // In f64, then back into f32's range: a glitch of 1e308 must not make it infinite.
        let next = f64::from(*o) + w * (residual - f64::from(*o));
        *o = next.clamp(f64::from(f32::MIN), f64::from(f32::MAX)) as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applies_after_a_day_and_converges_to_the_hour_s_offset() {
        let mut s = Season::default();
        // Every 5 minutes for 10 days; hours 8..18 sit 4.0 above the baseline.
        let mut t = 0i64;
        for _ in 0..(10 * 288) {
            let hour = ((t / 3600) % 24) as u32;
            assert!(t >= 86_400 || s.offset(hour, t) == 0.0);
            let r = if (8..18).contains(&hour) { 4.0 } else { 0.0 };
            s.learn(hour, t, r, 300.0);
            t += 300;
        }
        // w = 300 s / (SPAN_DAYS h) per reading, 12 readings an hour, 10 days of them.
        let w = 300.0 / (SPAN_DAYS * 3600.0);
        let expect = 4.0 * (1.0 - (1.0 - w).powi(120));
        assert!((s.offset(9, t) - expect).abs() < 1e-3, "{}", s.offset(9, t));
        assert_eq!(s.offset(3, t), 0.0);
    }

    #[test]
    fn stays_finite_on_extremes() {
        let mut s = Season::default();
        for (i, r) in [1e308, -1e308, f64::NAN, f64::INFINITY, 5e-324]
            .iter()
            .enumerate()
        {
            s.learn(1, i as i64, *r, 30.0);
        }
        assert!(s.offset.iter().all(|o| o.is_finite()));
    }
}
