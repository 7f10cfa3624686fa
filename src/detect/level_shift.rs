//! `level_shift`: the mean of a key's last few readings has moved away from the key's
//! baseline by more than the key's own quiet movement allows.
//!
//! Why a detector of its own: a valve closing moves a flow meter by 1-2 of its noise
//! standard deviations and holds it there for minutes (SKAB's valve anomalies). No single
//! reading is unusual, so `robust_z` and `ewma_z` cannot see it; averaging `recent`
//! readings cuts the noise by up to their square root. CUSUM and the EWMA chart average
//! too, but they scale the averaged value by σ/√n, which holds only for independent
//! readings: real sensors are autocorrelated (a temperature wanders), so the averaged
//! value moves far more than σ/√n and those charts fire on every wander (cusum on every
//! kind raised 87-133 false episodes on SKAB). Here the scale is the *observed* spread of
//! the statistic itself, `d = S - B`, learned while quiet: whatever the autocorrelation,
//! quiet `d` sits inside its own spread. This is the model-free idea of batch-means
//! charts for autocorrelated data (Runger & Willemain, "Batch-means control charts for
//! autocorrelated data", IIE Transactions 28, 1996): chart a statistic against its own
//! empirical variance instead of a variance derived under independence.
//!
//! ```text
//!   B, v  = EWMA mean and variance of the readings that left the recent window
//!           (plain mean first, then a memory of `baseline` readings)
//!   S     = mean of the last `recent` readings, each clamped to B ± clip·√v
//!   d     = S - B,   sd_d² = mean of quiet d² (plain, then a memory of 1000 readings)
//!   z     = d / max(sd_d, 0.6 · step / √recent, min_std)
//! ```
//!
//! Clamping makes one spike move `S` by at most `clip/recent` baseline deviations (spikes
//! are `robust_z`'s job). The floor keeps a quantized series that sat on one value (a
//! spread of zero) from making its next quantum a 100-sigma shift. A shift fires after
//! `confirm` readings in a row beyond the threshold (brief excursions of an averaged
//! autocorrelated value are common, a shift stays), and stays open while |z| is above
//! 0.6 of the threshold. Readings of an open or pending episode teach nothing: the
//! episode is judged against the regime it left and ends when the level returns. A shift
//! that lasts `relearn_after` and `relearn_readings` is the new normal (one episode); the
//! regime it left is remembered, and a later return to it raises nothing.
//!
//! The firing threshold is the key's false-alarm budget over the tail of its own quiet
//! |z| (src/detect/tail.rs), never below `z_threshold` nor above `max_z_threshold`. The
//! level is fixed (`level`, blue by default): a level that moved without crossing a limit
//! is worth a look, not an alarm. State per key: 160 bytes, O(recent) per reading.

use std::time::Duration;

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};

use super::sensor_signal;
use super::transition;
use super::{
    score, tail,
    tail::{EpisodeClock, Motion, Tail},
    BuildCtx, Detector, DetectorSpec, Direction, Evidence, KeyedState, Signal, SignalKind,
};
use crate::decode::{Event, Stream};
use crate::signal::Level;

pub const NAME: &str = "level_shift";

/// Largest `recent`: the ring's fixed capacity.
pub const MAX_RECENT: usize = 16;
/// Baseline readings needed before `d` means anything.
const MIN_BASELINE: usize = 8;
/// Quiet `d` values needed before the spread `sd_d` is trusted.
const MIN_SPREAD: u32 = 30;
/// EWMA weight of each quiet `d²` once a thousand are learned: `d` is an average, so
/// neighbouring values are nearly the same and a short memory would estimate its spread
/// from a handful of independent values (a spread 15 % low fires at 4.6 instead of 4).
const SPREAD_WEIGHT: f64 = 0.001;
/// An open episode stays open while |z| exceeds this fraction of the threshold: the
/// averaged level moves slowly, and without the band it would cross the threshold
/// back and forth at the edges of a shift.
const HOLD: f64 = 0.6;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LevelShiftConfig {
    /// Sensor kinds this instance watches; empty = every kind.
    #[serde(default)]
    pub kinds: Vec<String>,
    /// Readings averaged into the recent level (2..=16; default 8).
    #[serde(default = "default_recent")]
    pub recent: usize,
    /// Memory of the baseline, in readings: an EWMA of the readings before the recent
    /// ones (8..=100000; default 200).
    #[serde(default = "default_baseline")]
    pub baseline: usize,
    /// Never fire below this many of the statistic's own standard deviations (default 6).
    #[serde(default = "default_z")]
    pub z_threshold: f64,
    /// The budget never raises the threshold above this (default 20).
    #[serde(default = "default_max_z")]
    pub max_z_threshold: f64,
    /// `both` (default), `up` or `down`.
    #[serde(default)]
    pub direction: Direction,
    /// Readings of the key before any verdict (default 120).
    #[serde(default = "default_min_samples")]
    pub min_samples: u32,
    /// Recent readings are clamped to the baseline ± this many of its standard
    /// deviations before averaging (default 4): one spike cannot fake a shift.
    #[serde(default = "default_clip")]
    pub clip: f64,
    /// Floor on the statistic's standard deviation, in the kind's unit (default 0.001).
    #[serde(default = "default_min_std")]
    pub min_std: f64,
    /// False episodes per sensor and day (src/detect/tail.rs). Default:
    /// `[detectors] false_alarms_per_day`.
    #[serde(default)]
    pub false_alarms_per_day: Option<f64>,
    /// A shift that has lasted this long of event time ...
    #[serde(default = "default_relearn_after", with = "humantime_serde")]
    pub relearn_after: Duration,
    /// ... and this many readings is the sensor's new normal (default 30m and 30).
    #[serde(default = "default_relearn_readings")]
    pub relearn_readings: u32,
    /// Keys idle longer than this are forgotten (default 6h).
    #[serde(default = "default_ttl", with = "humantime_serde")]
    pub ttl: Duration,
    /// Readings in a row beyond the threshold before it fires (default 3).
    #[serde(default = "default_confirm")]
    pub confirm: u32,
    /// The alert level (default blue): a level that moved without crossing any limit is
    /// worth a look, not an alarm; limits, fast rises and several sensors of one site
    /// together are what the other detectors raise to yellow and above.
    #[serde(default = "default_level")]
    pub level: Level,
}
fn default_confirm() -> u32 {
    3
}
fn default_level() -> Level {
    Level::Blue
}

fn default_recent() -> usize {
    8
}
fn default_baseline() -> usize {
    200
}
fn default_z() -> f64 {
    4.0
}
fn default_max_z() -> f64 {
    20.0
}
fn default_min_samples() -> u32 {
    120
}
fn default_clip() -> f64 {
    4.0
}
fn default_min_std() -> f64 {
    0.001
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

impl Default for LevelShiftConfig {
    fn default() -> Self {
        Self {
            kinds: Vec::new(),
            recent: default_recent(),
            baseline: default_baseline(),
            z_threshold: default_z(),
            max_z_threshold: default_max_z(),
            direction: Direction::Both,
            min_samples: default_min_samples(),
            clip: default_clip(),
            min_std: default_min_std(),
            false_alarms_per_day: None,
            relearn_after: default_relearn_after(),
            relearn_readings: default_relearn_readings(),
            ttl: default_ttl(),
            confirm: default_confirm(),
            level: default_level(),
        }
    }
}

impl DetectorSpec for LevelShiftConfig {
    const NAME: &'static str = NAME;
    const STREAMS: &'static [Stream] = &[Stream::Sensors];
    type Runtime = LevelShift;

    fn validate(&self, path: &str, problems: &mut Vec<String>) {
        if !(2..=MAX_RECENT).contains(&self.recent) {
            problems.push(format!("{path}.recent: must be in 2..={MAX_RECENT}"));
        }
        if !(MIN_BASELINE..=100_000).contains(&self.baseline) {
            problems.push(format!(
                "{path}.baseline: must be in {MIN_BASELINE}..=100000"
            ));
        }
        if !(score::positive(self.z_threshold) && self.z_threshold.is_finite()) {
            problems.push(format!("{path}.z_threshold: must be > 0"));
        }
        if !(self.max_z_threshold.is_finite() && self.max_z_threshold >= self.z_threshold) {
            problems.push(format!("{path}.max_z_threshold: must be >= z_threshold"));
        }
        if !(self.clip.is_finite() && self.clip >= 1.0) {
            problems.push(format!("{path}.clip: must be >= 1"));
        }
        if !(score::positive(self.min_std) && self.min_std.is_finite()) {
            problems.push(format!("{path}.min_std: must be > 0"));
        }
        if let Some(b) = self.false_alarms_per_day {
            tail::validate_budget(b, &format!("{path}.false_alarms_per_day"), problems);
        }
        if self.relearn_readings == 0 {
            problems.push(format!("{path}.relearn_readings: must be > 0"));
        }
        if self.ttl.is_zero() {
            problems.push(format!("{path}.ttl: must be > 0"));
        }
    }

    fn build(&self, _stream: Stream, ctx: &BuildCtx) -> LevelShift {
        let recent = self.recent.clamp(2, MAX_RECENT);
        let baseline = self.baseline.max(MIN_BASELINE);
        LevelShift {
            p: Params {
                cfg: self.clone(),
                recent,
                baseline,
                window: format!("mean of {recent} readings vs the {baseline} before"),
                budget: self
                    .false_alarms_per_day
                    .unwrap_or(ctx.false_alarms_per_day),
            },
            state: KeyedState::new(self.ttl),
        }
    }
}

/// A fixed-capacity ring of readings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Ring<const N: usize> {
    #[serde(with = "crate::state::codec::array")]
    buf: [f32; N],
    head: u8,
    len: u8,
}

impl<const N: usize> Default for Ring<N> {
    fn default() -> Self {
        Self {
            buf: [0.0; N],
            head: 0,
            len: 0,
        }
    }
}

impl<const N: usize> Ring<N> {
    /// Appends `x` to a ring of `cap` (<= N) readings; returns the oldest when it was full.
    fn push(&mut self, x: f64, cap: usize) -> Option<f64> {
        let slot = self.head as usize;
        let full = self.len as usize >= cap;
        let out = full.then(|| f64::from(self.buf[slot]));
        self.buf[slot] = x.clamp(f64::from(f32::MIN), f64::from(f32::MAX)) as f32;
        self.head = ((slot + 1) % cap) as u8;
        self.len = (self.len as usize + 1).min(cap) as u8;
        out
    }

    fn len(&self) -> usize {
        self.len as usize
    }

    fn values(&self) -> &[f32] {
        &self.buf[..self.len as usize]
    }
}

/// One series: its recent readings, the baseline before them, the learned spread of
/// the statistic, and what the budget needs. 380 bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ShiftState {
    recent: Ring<MAX_RECENT>,
    /// EWMA mean and variance of the readings that left the recent window, and their count.
    mean: f64,
    var: f64,
    base_n: u32,
    /// Readings seen (saturating).
    n: u32,
    /// EWMA of quiet d², and how many were learned (saturating).
    spread: f64,
    spread_n: u32,
    alerting: bool,
    /// `prev_base`, `prev_sd`: the regime left at the last re-learn.
    has_prev: bool,
    prev_base: f32,
    prev_sd: f32,
    tail: Tail,
    motion: Motion,
    episode: EpisodeClock,
    /// Readings in a row beyond the threshold, not yet firing.
    pending: u16,
}

impl ShiftState {
    /// Folds a reading that left the recent window into the baseline: a plain mean and
    /// variance at first, then an EWMA with a memory of `memory` readings.
    fn learn_base(&mut self, x: f64, memory: usize) {
        let w = (1.0 / (f64::from(self.base_n) + 1.0)).max(1.0 / memory as f64);
        if self.base_n == 0 {
            self.mean = x;
            self.var = 0.0;
        } else {
            let d = x - self.mean;
            self.mean += w * d;
            self.var = (1.0 - w) * (self.var + w * d * d);
        }
        self.base_n = self.base_n.saturating_add(1);
    }
}

/// What one reading is judged against.
struct Judged {
    /// The statistic in its own standard deviations, and `d` itself.
    z: f64,
    d: f64,
    /// The recent level and the level it is compared with.
    level: f64,
    expected: f64,
    sd: f64,
}

pub struct LevelShift {
    p: Params,
    state: KeyedState<ShiftState>,
}

/// What judging needs besides the state (a field apart, so both can be borrowed).
struct Params {
    cfg: LevelShiftConfig,
    recent: usize,
    baseline: usize,
    window: String,
    budget: f64,
}

impl Params {
    /// The recent level against the baseline (and against the regime left at the last
    /// re-learn, when that is closer: a return to the old normal is no anomaly).
    fn judge(&self, st: &ShiftState) -> Judged {
        let (med, scale) = (st.mean, st.var.sqrt());
        let step = st.motion.step();
        // A quantized series' baseline can be one value throughout (variance 0):
        // its scale is then about half a quantum, not zero.
        let scale = scale.max(tail::STEP_FLOOR * step).max(self.cfg.min_std);
        let (lo, hi) = (med - self.cfg.clip * scale, med + self.cfg.clip * scale);
        let recent = st.recent.values();
        let level = recent
            .iter()
            .map(|x| f64::from(*x).clamp(lo, hi))
            .sum::<f64>()
            / recent.len().max(1) as f64;
        // The statistic's spread, floored at what independent noise at the series'
        // resolution would give (a flat quantized series learns a spread of zero).
        let floor = (tail::STEP_FLOOR * step / (self.recent as f64).sqrt()).max(self.cfg.min_std);
        let sd = st.spread.sqrt().max(floor);
        let d = level - med;
        let mut j = Judged {
            z: d / sd,
            d,
            level,
            expected: med,
            sd,
        };
        if st.has_prev {
            let dp = level - f64::from(st.prev_base);
            let zp = dp / f64::from(st.prev_sd).max(floor);
            if zp.abs() < j.z.abs() {
                j.z = zp;
                j.expected = f64::from(st.prev_base);
            }
        }
        j
    }

    /// The key's threshold at `t`: its budget over its tail, within the floor and
    /// ceiling, raised by an operator's standing false-alarm verdict.
    fn threshold(&self, st: &ShiftState, t: i64) -> (f64, tail::Fit) {
        let fit = st.tail.fit();
        let q = tail::risk_per_reading(self.budget, st.motion.interval());
        let lo = self.cfg.z_threshold;
        let t = st.tail.budgeted(&fit, q, lo, self.cfg.max_z_threshold, t);
        (t, fit)
    }
}

impl Detector for LevelShift {
    fn name(&self) -> &'static str {
        NAME
    }

    fn observe(&mut self, ev: &Event, _late: bool, out: &mut Vec<Signal>) -> f64 {
        let Event::Sensor(r) = ev else { return 0.0 };
        let p = &self.p;
        if !p.cfg.kinds.is_empty() && !p.cfg.kinds.contains(&r.kind) {
            return 0.0;
        }
        if r.status.is_fault() {
            return 0.0;
        }
        // Extremes saturate: no arithmetic below overflows (docs/SECURITY.md).
        let value = super::bounded(r.value);
        let t = r.ts.timestamp();
        let st = self.state.touch(&r.sensor_id, r.ts);
        st.n = st.n.saturating_add(1);
        let left = st.recent.push(value, p.recent);
        if (st.base_n as usize) < MIN_BASELINE || st.recent.len() < p.recent {
            st.motion.learn(value, t, true);
            if let Some(old) = left {
                st.learn_base(old, p.baseline);
            }
            return 0.0;
        }
        let j = p.judge(st);
        let (threshold, fit) = p.threshold(st, t);
        let warm = st.n >= p.cfg.min_samples && st.spread_n >= MIN_SPREAD;
        let counted = p.cfg.direction.counted(j.z);
        let bar = if st.alerting {
            HOLD * threshold
        } else {
            threshold
        };
        let beyond = warm && counted > bar;
        // A shift must hold `confirm` readings in a row before it fires: autocorrelated
        // noise makes brief excursions of the averaged level, a shift stays.
        st.pending = if beyond && !st.alerting {
            st.pending.saturating_add(1)
        } else {
            0
        };
        let suspect = beyond && !st.alerting && u32::from(st.pending) < p.cfg.confirm;
        let mut firing = beyond && !suspect;
        st.motion.learn(value, t, !firing);
        if firing {
            let relearn_after = p.cfg.relearn_after.as_secs() as i64;
            if st
                .episode
                .tick(t, !st.alerting, relearn_after, p.cfg.relearn_readings)
            {
                // The shift has lasted: it is the new normal. Remember the regime it
                // left, end the episode, and learn the new level from here on.
                st.prev_base = j.expected as f32;
                st.prev_sd = j.sd as f32;
                st.has_prev = true;
                st.base_n = 0;
                firing = false;
            }
        } else if !st.alerting && !suspect {
            // Only quiet readings teach the spread, the tail and the baseline: an episode
            // is judged against what came before it.
            let w = (1.0 / (f64::from(st.spread_n) + 1.0)).max(SPREAD_WEIGHT);
            st.spread += w * (j.d * j.d - st.spread);
            st.spread_n = st.spread_n.saturating_add(1);
            if warm {
                st.tail.learn(counted);
            }
            if let Some(old) = left {
                st.learn_base(old, p.baseline);
            }
        }
        let s = if warm {
            score::from_ratio(counted, bar)
        } else {
            0.0
        };
        let Some(kind) = transition(firing, &mut st.alerting, || {
            let dir = if j.z >= 0.0 { "up" } else { "down" };
            SignalKind::Anomalous {
                score: s,
                level: Some(p.cfg.level),
                title: format!(
                    "{} level shifted {dir} at {}",
                    super::point_label(r),
                    super::site_label(r)
                ),
                evidence: Evidence {
                    observed: (j.level * 1e4).round() / 1e4,
                    expected: j.expected,
                    score: (j.z * 100.0).round() / 100.0,
                    threshold: (threshold * 100.0).round() / 100.0,
                    window: p.window.clone(),
                    p_value: Some(fit.tail_probability(counted)),
                    false_alarms_per_day: Some(p.budget),
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

    fn verdict(&mut self, v: &tail::Verdict) -> bool {
        let period = tail::budget_period_secs(self.p.budget);
        self.state
            .update(&v.key, |st| st.tail.hold(v, period, st.motion.last_ts()))
            .unwrap_or(false)
    }

    super::keyed_persistence!(state);
}
