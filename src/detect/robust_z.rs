//! `robust_z`: the deviation from a rolling median exceeds `z_threshold` scaled MADs.
//!
//! Over the last `window` readings of a key (at most 64): `z = (x - median) / (1.4826 MAD)`,
//! where `MAD = median |x_i - median|` is floored at `min_mad` and 1.4826 makes it
//! estimate σ for Gaussian noise. Median and MAD resist up to half the window being
//! outliers, so a spike neither hides itself nor the next one, unlike a mean and a
//! standard deviation. A reading is scored against the window *before* it is added. For
//! an even count the median is the mean of the two middle values.
//!
//! State per key is fixed-size: a ring buffer of 64 `f32` (readings keep about 7
//! significant digits, ample for sensors) plus head, length and the alerting flag:
//! 260 bytes. Each reading copies the window to a stack array and finds median and MAD
//! with `select_nth_unstable`: O(window) time, no allocation. No alert before the window
//! holds `min_samples` readings (or is full, if smaller): the warm-up.
//!
//! Evidence: `observed` is the reading, `expected` the rolling median, `score` the robust
//! z against `threshold`, `window` the window length in readings.

use std::time::Duration;

use chrono::{DateTime, FixedOffset, Timelike};
use serde::{Deserialize, Serialize};

use super::sensor_signal;
use super::transition;
use super::{
    score,
    season::Season,
    tail,
    tail::{EpisodeClock, Motion, Tail},
    BuildCtx, Detector, DetectorSpec, Direction, Evidence, KeyedState, Signal, SignalKind,
};
use crate::decode::{Event, Stream};

pub const NAME: &str = "robust_z";

/// Largest window: the ring buffer's fixed capacity.
pub const MAX_WINDOW: usize = 64;

/// 1 / Φ⁻¹(3/4): scales a MAD to a standard deviation under Gaussian noise.
const MAD_TO_SIGMA: f64 = 1.4826;
/// √(π/2): scales a mean absolute deviation to a standard deviation under Gaussian noise.
const MEAN_AD_TO_SIGMA: f64 = 1.2533;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RobustZConfig {
    /// Sensor kinds this instance watches; empty = every kind.
    #[serde(default)]
    pub kinds: Vec<String>,
    /// Readings in the rolling window (3..=64; default 60).
    #[serde(default = "default_window")]
    pub window: usize,
    /// Fire when the robust z (in the counted direction) exceeds this (default 5).
    #[serde(default = "default_z")]
    pub z_threshold: f64,
    /// `both` (default), `up` or `down`.
    #[serde(default)]
    pub direction: Direction,
    /// Readings in the window before anything is scored (default 20).
    #[serde(default = "default_min_samples")]
    pub min_samples: usize,
    /// Floor on the MAD, in the kind's unit: a flat window must not make any change a
    /// 100-MAD event (default 0.005).
    #[serde(default = "default_min_mad")]
    pub min_mad: f64,
    /// False episodes this detector may raise per sensor and day: each sensor's threshold
    /// is raised above `z_threshold` as far as the tail of its own scores needs
    /// (src/detect/tail.rs). Default: `[detectors] false_alarms_per_day`.
    #[serde(default)]
    pub false_alarms_per_day: Option<f64>,
    /// The budget never raises the threshold above this many robust standard deviations
    /// (default 30): a sensor noisy enough to need more still alarms on a gross change.
    #[serde(default = "default_max_z")]
    pub max_z_threshold: f64,
    /// A shift that has lasted this long of event time ...
    #[serde(default = "default_relearn_after", with = "humantime_serde")]
    pub relearn_after: Duration,
    /// ... and this many readings is the sensor's new normal: the episode ends and the
    /// window re-learns (default 30m and 30 readings).
    #[serde(default = "default_relearn_readings")]
    pub relearn_readings: u32,
    /// Learn an hour-of-day correction of the median per sensor (src/detect/season.rs):
    /// for series with a daily schedule (a pump on from 08:00). Off by default: on the
    /// generated city over 72 h it raised 22 false episodes on cycles that are not daily
    /// (tank fill/draw), which an hour-of-day offset learns as bias.
    #[serde(default)]
    pub daily_rhythm: bool,
    /// Keys idle longer than this are forgotten (default 6h).
    #[serde(default = "default_ttl", with = "humantime_serde")]
    pub ttl: Duration,
}

fn default_window() -> usize {
    60
}
fn default_z() -> f64 {
    5.0
}
fn default_min_samples() -> usize {
    20
}
fn default_min_mad() -> f64 {
    0.005
}
fn default_max_z() -> f64 {
    30.0
}
fn default_relearn_after() -> Duration {
    Duration::from_secs(30 * 60)
}
fn default_relearn_readings() -> u32 {
    30
}
fn default_ttl() -> Duration {
    Duration::from_secs(6 * 3600)
}

impl Default for RobustZConfig {
    fn default() -> Self {
        Self {
            kinds: Vec::new(),
            window: default_window(),
            z_threshold: default_z(),
            direction: Direction::Both,
            min_samples: default_min_samples(),
            min_mad: default_min_mad(),
            false_alarms_per_day: None,
            max_z_threshold: default_max_z(),
            relearn_after: default_relearn_after(),
            relearn_readings: default_relearn_readings(),
            daily_rhythm: false,
            ttl: default_ttl(),
        }
    }
}

impl DetectorSpec for RobustZConfig {
    const NAME: &'static str = NAME;
    const STREAMS: &'static [Stream] = &[Stream::Sensors];
    type Runtime = RobustZ;

    fn validate(&self, path: &str, problems: &mut Vec<String>) {
        if !(3..=MAX_WINDOW).contains(&self.window) {
            problems.push(format!("{path}.window: must be in 3..={MAX_WINDOW}"));
        }
        if !(score::positive(self.z_threshold) && self.z_threshold.is_finite()) {
            problems.push(format!("{path}.z_threshold: must be > 0"));
        }
        if self.min_samples < 3 {
            problems.push(format!("{path}.min_samples: must be >= 3"));
        }
        if !(score::positive(self.min_mad) && self.min_mad.is_finite()) {
            problems.push(format!("{path}.min_mad: must be > 0"));
        }
        if let Some(b) = self.false_alarms_per_day {
            tail::validate_budget(b, &format!("{path}.false_alarms_per_day"), problems);
        }
        if !(self.max_z_threshold.is_finite() && self.max_z_threshold >= self.z_threshold) {
            problems.push(format!("{path}.max_z_threshold: must be >= z_threshold"));
        }
        if self.relearn_readings == 0 {
            problems.push(format!("{path}.relearn_readings: must be > 0"));
        }
        if self.ttl.is_zero() {
            problems.push(format!("{path}.ttl: must be > 0"));
        }
    }

    fn build(&self, _stream: Stream, ctx: &BuildCtx) -> RobustZ {
        let cap = self.window.clamp(1, MAX_WINDOW);
        RobustZ {
            cfg: self.clone(),
            cap,
            warm: self.min_samples.min(cap),
            window: format!("{cap} readings"),
            budget: self
                .false_alarms_per_day
                .unwrap_or(ctx.false_alarms_per_day),
            state: KeyedState::new(self.ttl),
        }
    }
}

/// The last readings of one series (a ring buffer) and what the detector has learned
/// about the series: its tail, its resolution, its reporting interval, and the regime it
/// left at its last re-learn, and its daily rhythm. 440 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RobustState {
    #[serde(with = "crate::state::codec::array")]
    buf: [f32; MAX_WINDOW],
    /// Next slot to write.
    head: u8,
    /// Readings held (<= the window).
    len: u8,
    alerting: bool,
    /// `prev_median` and `prev_scale` hold a regime left at a re-learn.
    has_prev: bool,
    /// The tail of this series' scores: its threshold (the false-alarm budget).
    tail: Tail,
    prev_median: f32,
    prev_scale: f32,
    motion: Motion,
    episode: EpisodeClock,
    /// What the rolling median misses at each hour of the day (a daily rhythm).
    season: Season,
}

impl Default for RobustState {
    fn default() -> Self {
        Self {
            buf: [0.0; MAX_WINDOW],
            head: 0,
            len: 0,
            alerting: false,
            has_prev: false,
            tail: Tail::default(),
            prev_median: 0.0,
            prev_scale: 0.0,
            motion: Motion::default(),
            episode: EpisodeClock::default(),
            season: Season::default(),
        }
    }
}

impl RobustState {
    /// Appends `x` to a window of `cap` (<= 64) readings, dropping the oldest when full.
    pub fn push(&mut self, x: f64, cap: usize) {
        // Clamped so a huge reading stays finite in f32 (decoded values are finite).
        self.buf[self.head as usize] = x.clamp(f64::from(f32::MIN), f64::from(f32::MAX)) as f32;
        self.head = ((self.head as usize + 1) % cap) as u8;
        self.len = (self.len as usize + 1).min(cap) as u8;
    }

    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Empties the window (a re-learn): the series' tail and motion stay.
    fn clear_window(&mut self) {
        self.head = 0;
        self.len = 0;
    }

    /// Median and the robust scale of the window, as a standard deviation: `1.4826 MAD`,
    /// or, when more than half the window equals the median (MAD = 0: a quantized sensor
    /// flipping between two adjacent levels), `1.2533 × mean |x - median|`, the usual
    /// fallback for the modified z-score (Iglewicz & Hoaglin). Without it such a sensor
    /// would make every step of one quantum a many-MAD event.
    pub fn median_scale(&self) -> (f64, f64) {
        let (med, mad) = self.median_mad();
        if mad > 0.0 {
            return (med, MAD_TO_SIGMA * mad);
        }
        let n = self.len as usize;
        let mean_ad = self.buf[..n]
            .iter()
            .map(|x| (f64::from(*x) - med).abs())
            .sum::<f64>()
            / n.max(1) as f64;
        (med, MEAN_AD_TO_SIGMA * mean_ad)
    }

    /// Median and MAD of the window (not empty), in O(len) without allocating.
    pub fn median_mad(&self) -> (f64, f64) {
        let n = self.len as usize;
        let mut a = [0.0f64; MAX_WINDOW];
        for (d, s) in a[..n].iter_mut().zip(&self.buf[..n]) {
            *d = f64::from(*s);
        }
        let med = median_in_place(&mut a[..n]);
        for v in &mut a[..n] {
            *v = (*v - med).abs();
        }
        (med, median_in_place(&mut a[..n]))
    }
}

/// The median of a non-empty slice (mean of the middle two for an even length); reorders it.
pub fn median_in_place(a: &mut [f64]) -> f64 {
    let n = a.len();
    let m = n / 2;
    let (lo, mid, _) = a.select_nth_unstable_by(m, f64::total_cmp);
    let mid = *mid;
    if n % 2 == 1 {
        mid
    } else {
        let below = lo.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (below + mid) / 2.0
    }
}

pub struct RobustZ {
    cfg: RobustZConfig,
    /// Window length, clamped to the ring's capacity.
    cap: usize,
    /// Readings needed before scoring.
    warm: usize,
    window: String,
    /// False episodes per sensor and day.
    budget: f64,
    state: KeyedState<RobustState>,
}

/// What one reading is judged against.
struct Judged {
    z: f64,
    expected: f64,
    /// The window's median (what the season learns against).
    median: f64,
    threshold: f64,
    /// The key's fitted tail: the evidence's tail probability, computed only on firing.
    fit: tail::Fit,
}

/// The reading's robust z and the threshold this series has earned. While an episode
/// is open the window holds only the readings before it (firing readings are not
/// pushed), so the episode is judged against the regime it left and ends when the
/// value returns to it; a reading that fits the regime left at the last re-learn is
/// judged against that regime (a return to the old normal is not a new anomaly).
fn judge(cfg: &RobustZConfig, budget: f64, st: &RobustState, x: f64, hour: (u32, i64)) -> Judged {
    let (med, window_scale) = st.median_scale();
    let floor = (MAD_TO_SIGMA * cfg.min_mad).max(tail::STEP_FLOOR * st.motion.step());
    // The median plus what it usually misses at this hour of the day.
    let expected_now = med + st.season.offset(hour.0, hour.1);
    let mut z = (x - expected_now) / window_scale.max(floor);
    let mut expected = expected_now;
    if st.has_prev {
        let zp = (x - f64::from(st.prev_median)) / f64::from(st.prev_scale).max(floor);
        if zp.abs() < z.abs() {
            z = zp;
            expected = f64::from(st.prev_median);
        }
    }
    let fit = st.tail.fit();
    let q = tail::risk_per_reading(budget, st.motion.interval());
    let threshold = st
        .tail
        .budgeted(&fit, q, cfg.z_threshold, cfg.max_z_threshold, hour.1);
    Judged {
        z,
        expected,
        median: med,
        threshold,
        fit,
    }
}

impl Detector for RobustZ {
    fn name(&self) -> &'static str {
        NAME
    }

    fn observe(&mut self, ev: &Event, _late: bool, out: &mut Vec<Signal>) -> f64 {
        let Event::Sensor(r) = ev else { return 0.0 };
        if !self.cfg.kinds.is_empty() && !self.cfg.kinds.contains(&r.kind) {
            return 0.0;
        }
        if r.status.is_fault() {
            return 0.0;
        }
        // Extremes saturate: no baseline arithmetic overflows (docs/SECURITY.md).
        let value = super::bounded(r.value);
        let t = r.ts.timestamp();
        let budget = self.budget;
        let st = self.state.touch(&r.sensor_id, r.ts);
        if st.len() < self.warm {
            st.motion.learn(value, t, true);
            st.push(value, self.cap);
            return 0.0;
        }
        let hour = (r.ts.hour(), t);
        let j = judge(&self.cfg, budget, st, value, hour);
        let counted = self.cfg.direction.counted(j.z);
        let mut firing = counted > j.threshold;
        st.motion.learn(value, t, !firing);
        // The daily rhythm learns from every reading, firing ones too: a step that comes
        // every morning fires until the morning hours have learned it (a few days), while
        // one hazard moves its hour's offset by a few percent of its size.
        if self.cfg.daily_rhythm {
            st.season
                .learn(hour.0, t, value - j.median, st.motion.interval());
        }
        if firing {
            let relearn_after = self.cfg.relearn_after.as_secs() as i64;
            if st
                .episode
                .tick(t, !st.alerting, relearn_after, self.cfg.relearn_readings)
            {
                // The shift has lasted: it is the new normal. Remember the regime it left
                // (a return to it is no anomaly), end the episode, learn the new one.
                let (med, scale) = st.median_scale();
                st.prev_median = med as f32;
                st.prev_scale = scale as f32;
                st.has_prev = true;
                st.clear_window();
                st.push(value, self.cap);
                firing = false;
            }
        } else {
            // Only readings judged normal teach the tail and the window (as SPOT keeps
            // alarms out of its peaks): an episode is judged against what came before it.
            st.tail.learn(counted);
            st.push(value, self.cap);
        }
        let s = score::from_ratio(counted, j.threshold);
        let Some(kind) = transition(firing, &mut st.alerting, || {
            let dir = if j.z >= 0.0 { "above" } else { "below" };
            SignalKind::Anomalous {
                score: s,
                level: None,
                title: format!(
                    "{} far {dir} its recent median at {}",
                    super::point_label(r),
                    super::site_label(r)
                ),
                evidence: Evidence {
                    observed: r.value,
                    expected: j.expected,
                    score: (j.z * 100.0).round() / 100.0,
                    threshold: (j.threshold * 100.0).round() / 100.0,
                    window: self.window.clone(),
                    p_value: Some(j.fit.tail_probability(counted)),
                    false_alarms_per_day: Some(budget),
                },
            }
        }) else {
            return s;
        };
        out.push(sensor_signal(NAME, r, ev.id(), kind));
        s
    }

    fn advance(&mut self, watermark: DateTime<FixedOffset>, _out: &mut Vec<Signal>) {
        self.state.evict_idle(watermark);
    }

    fn keys(&self) -> usize {
        self.state.len()
    }

    super::budget_verdict!(state, budget);

    super::keyed_persistence!(state);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::SensorStatus;
    use crate::detect::testutil::{raw_reading, reading};
    use proptest::prelude::*;

    fn det(cfg: RobustZConfig) -> RobustZ {
        cfg.build(Stream::Sensors, &crate::pipeline::test_ctx())
    }

    /// Median by sorting a copy, the textbook way.
    fn naive_median(xs: &[f64]) -> f64 {
        let mut v = xs.to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        }
    }

    #[test]
    fn quantized_two_level_sensor_is_not_an_outlier() {
        // 11 readings of 3.0 and 10 of 3.1: MAD = 0; the mean-AD fallback keeps a step of
        // one quantum at z ~ 1.7, not 13 (as a min_mad floor of 0.005 would make it).
        let mut d = RobustZConfig {
            z_threshold: 5.0,
            ..Default::default()
        }
        .build(Stream::Sensors, &crate::pipeline::test_ctx());
        let mut out = Vec::new();
        let mut worst: f64 = 0.0;
        for i in 0..61 {
            let v = 3.0 + (i % 2) as f64 * 0.1;
            worst = worst.max(d.observe(&reading("Q", "gas_lel", i * 10, v), false, &mut out));
        }
        assert!(out.is_empty(), "{out:?}");
        assert!(worst < 0.2, "worst score {worst}");
        let (med, scale) = {
            let mut s = RobustState::default();
            for i in 0..21 {
                s.push(if i < 11 { 3.0 } else { 3.1 }, 64);
            }
            s.median_scale()
        };
        assert_eq!(med, 3.0);
        assert!((scale - 1.2533 * 0.1 * 10.0 / 21.0).abs() < 1e-6, "{scale}");
    }

    #[test]
    fn quantized_series_with_rare_quantum_steps_stays_quiet() {
        // A flow meter reading 32.0 nine times in ten and 31.0 or 33.0 otherwise (SKAB's
        // flow rate): before the resolution floor a window of 32.0s made every 33.0 a
        // 50-sigma event.
        let mut d = det(RobustZConfig::default());
        let mut out = Vec::new();
        for i in 0..2000i64 {
            let v = match (i * 7919) % 20 {
                0 => 33.0,
                1 => 31.0,
                _ => 32.0,
            };
            d.observe(&reading("F", "flow", i, v), false, &mut out);
        }
        assert!(out.is_empty(), "{out:?}");
        // A real drop of 5 l/min still fires.
        let s = d.observe(&reading("F", "flow", 2000, 27.0), false, &mut out);
        assert!(s > 0.5 && out.len() == 1, "{s} {out:?}");
    }

    /// 1 Hz readings around `level` with a small deterministic wiggle.
    fn feed(d: &mut RobustZ, from: i64, n: i64, level: f64, out: &mut Vec<Signal>) {
        for i in from..from + n {
            let v = level + [0.0, 0.1, -0.1, 0.05, -0.05][(i % 5) as usize];
            d.observe(&reading("V", "pressure", i, v), false, out);
        }
    }

    #[test]
    fn a_shift_shorter_than_relearn_is_one_episode_that_ends_on_return() {
        let mut d = det(RobustZConfig::default());
        let mut out = Vec::new();
        feed(&mut d, 0, 600, 5.0, &mut out);
        assert!(out.is_empty(), "{out:?}");
        // Seven minutes 3 units down (a valve closed), then back.
        feed(&mut d, 600, 420, 2.0, &mut out);
        feed(&mut d, 1020, 600, 5.0, &mut out);
        let opens = out
            .iter()
            .filter(|s| matches!(s.kind, SignalKind::Anomalous { .. }))
            .count();
        let clears: Vec<_> = out.iter().filter(|s| s.kind == SignalKind::Clear).collect();
        // Anomalous on every shifted reading (the policy folds them into one episode),
        // one Clear, at the first reading back: no second episode on the way out.
        assert_eq!(opens, 420);
        assert_eq!(clears.len(), 1);
        assert_eq!(clears[0].ts.timestamp() - out[0].ts.timestamp(), 420);
    }

    #[test]
    fn a_lasting_shift_is_relearned_and_the_return_raises_nothing() {
        let mut d = det(RobustZConfig::default());
        let mut out = Vec::new();
        feed(&mut d, 0, 600, 5.0, &mut out);
        // Two hours at a new level: one episode, ended by the re-learn at 30 minutes.
        feed(&mut d, 600, 7200, 2.0, &mut out);
        let clears = out.iter().filter(|s| s.kind == SignalKind::Clear).count();
        assert_eq!(clears, 1, "{:?}", out.last());
        assert_eq!(out.last().unwrap().kind, SignalKind::Clear);
        let first = out[0].ts.timestamp();
        assert_eq!(out.last().unwrap().ts.timestamp() - first, 1800);
        // Back to the old level: the regime it left, not a new anomaly.
        out.clear();
        feed(&mut d, 7800, 600, 5.0, &mut out);
        assert!(out.is_empty(), "{:?}", out.first());
    }

    /// Days (of 8) on which a 5-minute series whose level rises by 5.0 from 08:00 to
    /// 18:00 every day (a pump on a schedule; noise ±0.4, a step of ~12σ) opens an episode.
    fn days_alarmed_by_a_daily_step() -> Vec<i64> {
        let mut d = det(RobustZConfig {
            daily_rhythm: true,
            ..Default::default()
        });
        let mut out = Vec::new();
        let mut days = Vec::new();
        for i in 0..(8 * 288) {
            let t = i * 300;
            let hour = (t / 3600) % 24;
            let v = 5.0
                + if (8..18).contains(&hour) { 5.0 } else { 0.0 }
                + [0.0, 0.4, -0.4, 0.2, -0.2][(i % 5) as usize];
            out.clear();
            d.observe(&reading("D", "pressure", t, v), false, &mut out);
            let opened = d.state.get("D").is_some_and(|s| s.alerting)
                && out
                    .iter()
                    .any(|s| matches!(s.kind, SignalKind::Anomalous { .. }));
            if opened && days.last() != Some(&(t / 86_400)) {
                days.push(t / 86_400);
            }
        }
        days
    }

    #[test]
    fn a_daily_rhythm_is_learned_by_hour_of_day() {
        // `reading` times are offsets from a fixed UTC+8 instant; only whole days matter.
        let days = days_alarmed_by_a_daily_step();
        assert!(days.contains(&0), "the first morning is news: {days:?}");
        assert!(
            days.iter().all(|&d| d < 4),
            "still alarming every morning: {days:?}"
        );
    }

    #[test]
    fn median_mad_small_cases() {
        let mut s = RobustState::default();
        for x in [1.0, 2.0, 3.0, 4.0, 100.0] {
            s.push(x, 5);
        }
        // median 3, deviations 2,1,0,1,97 -> MAD 1.
        assert_eq!(s.median_mad(), (3.0, 1.0));
        s.push(5.0, 5); // drops 1.0: 2,3,4,100,5 -> median 4, deviations 2,1,0,96,1 -> 1
        assert_eq!(s.median_mad(), (4.0, 1.0));
        let mut s = RobustState::default();
        for x in [1.0, 2.0, 3.0, 10.0] {
            s.push(x, 64);
        }
        // median 2.5, deviations 1.5, 0.5, 0.5, 7.5 -> MAD 1.0
        assert_eq!(s.median_mad(), (2.5, 1.0));
    }

    #[test]
    fn warm_up_then_spike_fires_and_clears_once() {
        let mut d = det(RobustZConfig::default());
        let mut out = Vec::new();
        // A spike during warm-up raises nothing.
        d.observe(&reading("G", "gas_lel", 0, 30.0), false, &mut out);
        for i in 1..80 {
            let v = 3.0 + [0.0, 0.2, -0.2, 0.1, -0.1][(i % 5) as usize];
            d.observe(&reading("G", "gas_lel", i * 30, v), false, &mut out);
        }
        assert!(out.is_empty(), "{out:?}");
        let s = d.observe(&reading("G", "gas_lel", 2400, 9.0), false, &mut out);
        assert!(s > 0.5, "{s}");
        let SignalKind::Anomalous {
            evidence, title, ..
        } = &out[0].kind
        else {
            panic!()
        };
        assert_eq!(evidence.observed, 9.0);
        assert!((evidence.expected - 3.0).abs() < 1e-6);
        assert!(evidence.score > 5.0 && evidence.threshold == 5.0);
        assert_eq!(evidence.window, "60 readings");
        assert!(
            title.starts_with("Gas LEL far above its recent median at SITE-"),
            "{title}"
        );
        // The spike did not poison the window: the next normal reading clears.
        d.observe(&reading("G", "gas_lel", 2430, 3.1), false, &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].kind, SignalKind::Clear);
    }

    #[test]
    fn flat_window_uses_min_mad_and_faults_kinds_are_ignored() {
        let mut d = det(RobustZConfig {
            kinds: vec!["pressure".into()],
            ..Default::default()
        });
        let mut out = Vec::new();
        for i in 0..30 {
            d.observe(&reading("P", "pressure", i * 30, 1.0), false, &mut out);
            d.observe(
                &reading("G", "gas_lel", i * 30, i as f64 * 100.0),
                false,
                &mut out,
            );
        }
        // 0.02 MPa off a flat window = 0.02 / (1.4826 * 0.005) = 2.7 < 5: finite and quiet.
        let s = d.observe(&reading("P", "pressure", 900, 1.02), false, &mut out);
        assert!(s > 0.0 && s < 0.5, "{s}");
        let Event::Sensor(mut r) = reading("P", "pressure", 930, 99.0) else {
            panic!()
        };
        r.status = SensorStatus::Fault;
        assert_eq!(d.observe(&Event::Sensor(r), false, &mut out), 0.0);
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(d.keys(), 1);
    }

    #[test]
    fn validation_names_paths() {
        let c = RobustZConfig {
            window: 65,
            z_threshold: 0.0,
            min_mad: f64::NAN,
            ..Default::default()
        };
        let mut p = Vec::new();
        c.validate("detectors.sensors[2]", &mut p);
        assert_eq!(
            p,
            vec![
                "detectors.sensors[2].window: must be in 3..=64",
                "detectors.sensors[2].z_threshold: must be > 0",
                "detectors.sensors[2].min_mad: must be > 0",
            ]
        );
        let mut p = Vec::new();
        RobustZConfig::default().validate("x", &mut p);
        assert!(p.is_empty(), "{p:?}");
    }

    #[test]
    fn state_is_440_bytes() {
        assert_eq!(std::mem::size_of::<RobustState>(), 440);
    }

    proptest! {
        #[test]
        fn rolling_median_mad_match_naive_sort(
            xs in proptest::collection::vec(-1e4f64..1e4, 1..200),
            cap in 3usize..=MAX_WINDOW,
        ) {
            let mut s = RobustState::default();
            for (i, x) in xs.iter().enumerate() {
                s.push(*x, cap);
                // The window the naive way: the last `cap` readings, as stored (f32).
                let lo = (i + 1).saturating_sub(cap);
                let win: Vec<f64> = xs[lo..=i].iter().map(|x| f64::from(*x as f32)).collect();
                prop_assert_eq!(s.len(), win.len());
                let med = naive_median(&win);
                let devs: Vec<f64> = win.iter().map(|x| (x - med).abs()).collect();
                let mad = naive_median(&devs);
                prop_assert_eq!(s.median_mad(), (med, mad));
            }
        }

        #[test]
        fn never_nan_and_bounded(xs in proptest::collection::vec(-1e6f64..1e6, 1..300), cap in 3usize..=64) {
            let mut d = det(RobustZConfig { window: cap, min_samples: 3, ..Default::default() });
            let mut out = Vec::new();
            for (i, x) in xs.iter().enumerate() {
                let s = d.observe(&raw_reading("P", "pressure", i as i64 * 30, *x), false, &mut out);
                prop_assert!(s.is_finite() && (0.0..=1.0).contains(&s));
            }
            for sig in &out {
                if let SignalKind::Anomalous { score, evidence, .. } = &sig.kind {
                    prop_assert!(*score >= 0.5 && evidence.score.is_finite());
                }
            }
            prop_assert_eq!(d.keys(), 1);
        }

        #[test]
        fn score_monotone_in_deviation(dev1 in 0.0f64..100.0, dev2 in 0.0f64..100.0) {
            let mk = || {
                let mut d = det(RobustZConfig::default());
                let mut out = Vec::new();
                for i in 0..60 {
                    d.observe(&reading("G", "gas_lel", i * 30, 3.0 + (i % 3) as f64 * 0.2), false, &mut out);
                }
                d
            };
            let (lo, hi) = if dev1 <= dev2 { (dev1, dev2) } else { (dev2, dev1) };
            let mut out = Vec::new();
            let s1 = mk().observe(&reading("G", "gas_lel", 1800, 3.2 + lo), false, &mut out);
            let s2 = mk().observe(&reading("G", "gas_lel", 1800, 3.2 + hi), false, &mut out);
            prop_assert!(s1 <= s2);
        }
    }
}
