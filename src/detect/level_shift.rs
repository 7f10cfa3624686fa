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
//!   S     = mean of the last `recent` readings, each clamped to B ± clip·√v (during an
//!           episode: to their own median ± clip·√v)
//!   d     = S - B,   sd_d = 1.2533 × mean of quiet |d| (each capped at 3 sd_d; plain,
//!           then a memory of 1000 readings)
//!   z     = d / max(sd_d, 0.6 · step / √recent, min_std)
//! ```
//!
//! Clamping makes one spike move `S` by at most `clip/recent` baseline deviations (spikes
//! are `robust_z`'s job); during an episode the clamp follows the recent median, so a
//! shift or drift that keeps going shows in full. The floor keeps a quantized series that sat on one value (a
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

/// A shift has settled when, as it lasts, it has grown by less than this many of the
/// statistic's standard deviations since its re-learn clock started.
const SETTLED: f64 = 3.0;
/// √(π/2): a mean absolute deviation to a standard deviation under Gaussian noise.
const MEAN_AD_TO_SIGMA: f64 = 1.2533;
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
    /// Never fire below this many of the statistic's own standard deviations (default 5.5).
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
    5.5
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
    /// EWMA of quiet |d| (capped), and how many were learned (saturating).
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
    /// The next score for the tail, held back one sample.
    tail_held: Option<f32>,
    /// |d| when the open episode's re-learn clock started.
    mark: f32,
}

impl ShiftState {
    /// Folds a reading that left the recent window into the baseline: a plain mean and
    /// variance at first, then an EWMA with a memory of `memory` readings. Once the
    /// baseline is formed the reading is clamped to its mean ± `max_dev`: a spike of 500
    /// would otherwise move a 200-reading baseline by 2.5 and fake a shift the other way.
    fn learn_base(&mut self, x: f64, memory: usize, max_dev: f64) {
        let x = if (self.base_n as usize) < MIN_BASELINE {
            x
        } else {
            x.clamp(self.mean - max_dev, self.mean + max_dev)
        };
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

/// The median of at most `MAX_RECENT` readings (the mean of the middle two for an even
/// count), without allocating.
fn median_of(xs: &[f32]) -> f64 {
    let mut a = [0.0f64; MAX_RECENT];
    let n = xs.len().min(MAX_RECENT);
    for (d, x) in a[..n].iter_mut().zip(xs) {
        *d = f64::from(*x);
    }
    if n == 0 {
        return 0.0;
    }
    super::robust_z::median_in_place(&mut a[..n])
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
    /// The baseline's standard deviation (floored): what clamps readings.
    base_sd: f64,
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
        // Spikes are clamped: before an episode around the baseline, so one spike among
        // `recent` readings moves the level by at most `clip / recent` baseline
        // deviations; during one around the recent readings' own median (a Hampel
        // filter), which a shift or a drift moves along, so the level shows how far it
        // went and a drift still growing is not taken for a settled shift.
        let mid = if st.alerting {
            median_of(st.recent.values())
        } else {
            med
        };
        let (mut lo, mut hi) = (mid - self.cfg.clip * scale, mid + self.cfg.clip * scale);
        if st.has_prev {
            // The way back to the regime left at a re-learn is no spike: let it show.
            let prev = f64::from(st.prev_base);
            lo = lo.min(prev - self.cfg.clip * scale);
            hi = hi.max(prev + self.cfg.clip * scale);
        }
        let recent = st.recent.values();
        let level = recent
            .iter()
            .map(|x| f64::from(*x).clamp(lo, hi))
            .sum::<f64>()
            / recent.len().max(1) as f64;
        // The statistic's spread, floored at what independent noise at the series'
        // resolution would give (a flat quantized series learns a spread of zero).
        let floor = (tail::STEP_FLOOR * step / (self.recent as f64).sqrt()).max(self.cfg.min_std);
        let sd = (MEAN_AD_TO_SIGMA * st.spread).max(floor);
        let d = level - med;
        let mut j = Judged {
            z: d / sd,
            d,
            level,
            expected: med,
            sd,
            base_sd: scale,
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
                st.learn_base(old, p.baseline, f64::INFINITY);
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
        // After a re-learn, the averaged level passes through the values between the new
        // baseline and the regime it left on its way back (`recent` readings of a ramp):
        // that is a return under way, unless it stops there.
        let returning = st.has_prev
            && (j.level - st.mean) * (j.level - f64::from(st.prev_base)) < 0.0
            && usize::from(st.pending) < 2 * p.recent;
        let suspect =
            beyond && !st.alerting && (u32::from(st.pending) < p.cfg.confirm || returning);
        let mut firing = beyond && !suspect;
        if beyond {
            st.tail_held = None;
        }
        st.motion.learn(value, t, !firing);
        if firing {
            let relearn_after = p.cfg.relearn_after.as_secs() as i64;
            // The new level must have settled before it is learned: a shift still
            // growing when it has lasted (a drift, a leak getting worse) is not the new
            // normal; its clock restarts from where it stands, so a drift stays one
            // open episode instead of being learned every half hour and raised again.
            if !st.alerting {
                st.mark = j.d.abs() as f32;
            }
            let mut lasted =
                st.episode
                    .tick(t, !st.alerting, relearn_after, p.cfg.relearn_readings);
            if lasted && j.d.abs() - f64::from(st.mark) > SETTLED * j.sd {
                st.mark = j.d.abs() as f32;
                st.episode
                    .tick(t, true, relearn_after, p.cfg.relearn_readings);
                lasted = false;
            }
            if lasted {
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
            // The spread is a mean absolute deviation, each |d| capped at 3 sd: the onset of
            // a shift (quiet readings whose d grows towards the threshold) must not teach
            // the spread that shifts are normal, as a mean square would (+80 % in 40
            // readings on SKAB's flow meter, which then never fired).
            let w = (1.0 / (f64::from(st.spread_n) + 1.0)).max(SPREAD_WEIGHT);
            let cap = if st.spread_n >= MIN_SPREAD {
                3.0 * j.sd
            } else {
                f64::INFINITY
            };
            st.spread += w * (j.d.abs().min(cap) - st.spread);
            st.spread_n = st.spread_n.saturating_add(1);
            // The tail learns one reading in `recent` (neighbouring values of an average
            // are nearly equal: one slow excursion learned reading by reading would count
            // as dozens of independent peaks), and each a sample late, kept only if no
            // alarm followed it: the onset of a shift is not quiet, even though it was
            // below the threshold when it was read. One such onset learned lifted a
            // fresh key's threshold from 4.8 to 9 and hid the shift it began.
            if warm && st.n % p.recent as u32 == 0 {
                if let Some(held) = st.tail_held {
                    st.tail.learn(f64::from(held));
                }
                st.tail_held = Some(counted.min(p.cfg.z_threshold) as f32);
            }
            if let Some(old) = left {
                st.learn_base(old, p.baseline, p.cfg.clip * j.base_sd);
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

    super::budget_verdict!(state, p.budget);

    super::keyed_persistence!(state);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::testutil::reading;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use statrs::distribution::{ContinuousCDF, Normal};

    fn det(cfg: LevelShiftConfig) -> LevelShift {
        cfg.build(Stream::Sensors, &crate::pipeline::test_ctx())
    }

    /// Standard normal draws by inverse CDF (the test's only randomness is uniform).
    fn gauss(rng: &mut StdRng) -> f64 {
        let n = Normal::new(0.0, 1.0).unwrap();
        n.inverse_cdf(rng.random_range(1e-12..1.0))
    }

    fn opens(out: &[Signal]) -> Vec<&Signal> {
        out.iter()
            .filter(|s| matches!(s.kind, SignalKind::Anomalous { .. }))
            .collect()
    }

    /// Feeds 1 Hz readings `f(i)` for i in `from..to` of sensor "L".
    fn feed(d: &mut LevelShift, from: i64, to: i64, f: impl Fn(i64) -> f64) -> Vec<Signal> {
        let mut out = Vec::new();
        for i in from..to {
            d.observe(&reading("L", "pressure", i, f(i)), false, &mut out);
        }
        out
    }

    #[test]
    fn the_ring_returns_what_falls_out() {
        let mut r = Ring::<4>::default();
        assert_eq!(r.push(1.0, 3), None);
        assert_eq!(r.push(2.0, 3), None);
        assert_eq!(r.push(3.0, 3), None);
        assert_eq!(r.push(4.0, 3), Some(1.0));
        assert_eq!(r.push(5.0, 3), Some(2.0));
        let mut v = r.values().to_vec();
        v.sort_by(f32::total_cmp);
        assert_eq!(v, vec![3.0, 4.0, 5.0]);
    }

    #[test]
    fn the_baseline_is_the_plain_mean_and_variance_until_its_memory_fills() {
        // Naive recomputation over the same values: population mean and variance.
        let xs = [3.0, 5.0, 4.0, 8.0, 10.0, 6.0];
        let mut st = ShiftState::default();
        for x in xs {
            st.learn_base(x, 200, f64::INFINITY);
        }
        let m = xs.iter().sum::<f64>() / 6.0;
        let v = xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / 6.0;
        assert!((st.mean - m).abs() < 1e-12, "{} vs {m}", st.mean);
        assert!((st.var - v).abs() < 1e-12, "{} vs {v}", st.var);
        // With a memory of 2 the third value already gets weight 1/2 (not 1/3):
        // mean 4, then 4 + (4 - 4)/2 = 4; var: 1 -> (1/2)(1 + (1/2) 0) = 0.5.
        let mut st = ShiftState::default();
        for x in [3.0, 5.0, 4.0] {
            st.learn_base(x, 2, f64::INFINITY);
        }
        assert!((st.mean - 4.0).abs() < 1e-12 && (st.var - 0.5).abs() < 1e-12);
    }

    #[test]
    fn a_three_sigma_shift_fires_after_confirming_and_clears_on_return() {
        let mut rng = StdRng::seed_from_u64(7);
        let noise: Vec<f64> = (0..4000).map(|_| gauss(&mut rng)).collect();
        let mut d = det(LevelShiftConfig::default());
        let quiet = feed(&mut d, 0, 2000, |i| 10.0 + noise[i as usize]);
        assert!(quiet.is_empty(), "{:?}", quiet.first());
        // Down by three noise σ for 300 readings: no single reading is far out (robust_z
        // needs 6.5), but the mean of eight is 3 / (σ/√8 · √(1 + 8/200)) ≈ 8.3 of its
        // own spread away, past the floor of 5.5.
        let out = feed(&mut d, 2000, 2300, |i| 7.0 + noise[i as usize]);
        let o = opens(&out);
        assert!(!o.is_empty(), "a 3σ shift held for 300 readings must fire");
        let start = reading("L", "pressure", 2000, 0.0).ts().timestamp();
        let after = o[0].ts.timestamp() - start;
        assert!(after < 30, "fired {after}s into the shift");
        let SignalKind::Anomalous {
            level, evidence, ..
        } = &o[0].kind
        else {
            unreachable!()
        };
        assert_eq!(*level, Some(Level::Blue));
        assert!(evidence.score < -evidence.threshold, "{evidence:?}");
        assert!((evidence.expected - 10.0).abs() < 0.3, "{evidence:?}");
        // Anomalous on each reading of the shift (the policy folds them into one
        // episode) and no Clear while it lasts.
        assert!(!out.iter().any(|s| s.kind == SignalKind::Clear));
        let back = feed(&mut d, 2300, 2600, |i| 10.0 + noise[i as usize]);
        let clears: Vec<usize> = (0..back.len())
            .filter(|&i| back[i].kind == SignalKind::Clear)
            .collect();
        assert_eq!(clears.len(), 1, "one Clear on the way back");
        assert!(
            opens(&back[clears[0]..]).is_empty(),
            "the return is not a new episode"
        );
    }

    #[test]
    fn autocorrelated_noise_with_no_shift_stays_quiet() {
        // AR(1) with φ = 0.95: the mean of 8 readings has a standard deviation of about
        // 0.9 σ_x instead of σ_x/√8 = 0.35 σ_x (an EWMA chart assuming independence, as
        // Roberts' does, sees 2.5 times more spread than it expects and fires often).
        // The learned spread of d absorbs that.
        let mut rng = StdRng::seed_from_u64(11);
        let mut x = 0.0;
        let series: Vec<f64> = (0..50_000)
            .map(|_| {
                x = 0.95 * x + (1.0f64 - 0.95 * 0.95).sqrt() * gauss(&mut rng);
                50.0 + x
            })
            .collect();
        let mut d = det(LevelShiftConfig::default());
        let out = feed(&mut d, 0, 50_000, |i| series[i as usize]);
        assert!(out.len() <= 2, "{} signals: {:?}", out.len(), out.first());
        // The independent computation of what naive scaling would see: the spread of
        // 8-reading means over the series, against σ_x/√8.
        let means: Vec<f64> = series
            .windows(8)
            .map(|w| w.iter().sum::<f64>() / 8.0)
            .collect();
        let mu = means.iter().sum::<f64>() / means.len() as f64;
        let sd = (means.iter().map(|m| (m - mu).powi(2)).sum::<f64>() / means.len() as f64).sqrt();
        assert!(sd > 2.0 / 8f64.sqrt(), "the series is autocorrelated: {sd}");
    }

    #[test]
    fn one_spike_is_not_a_shift() {
        let mut rng = StdRng::seed_from_u64(3);
        let noise: Vec<f64> = (0..3000).map(|_| gauss(&mut rng)).collect();
        let mut d = det(LevelShiftConfig::default());
        let out = feed(&mut d, 0, 3000, |i| {
            10.0 + noise[i as usize] + if i == 2000 { 500.0 } else { 0.0 }
        });
        assert!(out.is_empty(), "{:?}", out.first());
    }

    #[test]
    fn a_quantized_flow_meter_fires_on_a_drop_of_two_quanta_not_on_its_toggles() {
        // SKAB's flow meter: 32.0 most of the time, 31.0 or 33.0 now and then; a valve
        // closing takes it to 30-31 for minutes.
        let toggle = |i: i64| match (i * 7919) % 20 {
            0 => 33.0,
            1 => 31.0,
            _ => 32.0,
        };
        let mut d = det(LevelShiftConfig::default());
        let quiet = feed(&mut d, 0, 3000, toggle);
        assert!(quiet.is_empty(), "{:?}", quiet.first());
        let out = feed(&mut d, 3000, 3300, |i| if i % 2 == 0 { 30.0 } else { 31.0 });
        assert!(!opens(&out).is_empty());
    }

    #[test]
    fn a_lasting_shift_is_one_episode_and_the_return_raises_nothing() {
        let mut rng = StdRng::seed_from_u64(5);
        let noise: Vec<f64> = (0..12_000).map(|_| 0.1 * gauss(&mut rng)).collect();
        let mut d = det(LevelShiftConfig::default());
        assert!(feed(&mut d, 0, 2000, |i| 5.0 + noise[i as usize]).is_empty());
        // Two hours at a new level (30 minutes of it make it the new normal).
        let out = feed(&mut d, 2000, 9200, |i| 4.0 + noise[i as usize]);
        let clears = out.iter().filter(|s| s.kind == SignalKind::Clear).count();
        assert_eq!(clears, 1, "one episode, ended by the re-learn");
        let first = out[0].ts.timestamp();
        let last = out.last().unwrap();
        assert_eq!(last.kind, SignalKind::Clear);
        // Thirty minutes after the level settled (a restart of the clock or two while
        // it does).
        assert!(last.ts.timestamp() - first >= 1800);
        // Back to the regime it left: no anomaly.
        let back = feed(&mut d, 9200, 10_000, |i| 5.0 + noise[i as usize]);
        assert!(opens(&back).is_empty(), "{:?}", back.first());
    }

    #[test]
    fn nothing_before_the_warm_up() {
        let mut d = det(LevelShiftConfig {
            min_samples: 500,
            ..Default::default()
        });
        let out = feed(&mut d, 0, 400, |i| if i < 200 { 1.0 } else { 100.0 });
        assert!(out.is_empty());
    }

    #[test]
    fn bad_config_names_each_field() {
        let cfg = LevelShiftConfig {
            recent: 1,
            baseline: 2,
            z_threshold: 0.0,
            clip: 0.5,
            relearn_readings: 0,
            ..Default::default()
        };
        let mut p = Vec::new();
        cfg.validate("detectors.sensors[9]", &mut p);
        for f in [
            "recent",
            "baseline",
            "z_threshold",
            "clip",
            "relearn_readings",
        ] {
            assert!(
                p.iter()
                    .any(|m| m.starts_with(&format!("detectors.sensors[9].{f}:"))),
                "{f}: {p:?}"
            );
        }
    }

    #[test]
    fn a_drift_stays_one_open_episode_instead_of_being_relearned() {
        // A pressure that drops by 1 (ten noise σ) and goes on falling by 0.002 per
        // second for two hours: past 30 minutes the level is still moving, so it is not
        // learned as the new normal; the episode stays open until the drift stops and
        // settles. (A drift that starts slowly is learned as the series' wander: cusum
        // and the limits are for those.)
        let mut rng = StdRng::seed_from_u64(9);
        let noise: Vec<f64> = (0..15_000).map(|_| 0.1 * gauss(&mut rng)).collect();
        let mut d = det(LevelShiftConfig::default());
        assert!(feed(&mut d, 0, 2000, |i| 5.0 + noise[i as usize]).is_empty());
        let out = feed(&mut d, 2000, 9200, |i| {
            4.0 - 0.002 * (i - 2000) as f64 + noise[i as usize]
        });
        assert!(!opens(&out).is_empty(), "the drift fires");
        assert!(
            !out.iter().any(|s| s.kind == SignalKind::Clear),
            "no re-learn while the level keeps moving"
        );
        // Settled at the new level: after relearn_after of calm the episode ends once.
        let calm = feed(&mut d, 9200, 12_000, |i| -10.4 + noise[i as usize]);
        assert_eq!(
            calm.iter().filter(|s| s.kind == SignalKind::Clear).count(),
            1
        );
        assert_eq!(calm.last().unwrap().kind, SignalKind::Clear);
    }
}
