//! `ewma_z`: the value deviates from its exponentially weighted mean by more than `k`
//! exponentially weighted standard deviations.
//!
//! Event time, irregular sampling: each reading gets weight `a = 1 - 2^(-dt/half_life)`
//! (dt clamped to [1 s, 4 half-lives]), so a sensor sampling every 10 s and one every
//! 60 s forget at the same rate per minute. Mean and variance use the incremental form
//! (Finch 2009): `d = x - m; m += a d; v = (1 - a)(v + a d²)`. The reading is scored
//! against the baseline *before* it is folded in, and folded in winsorized to
//! `m ± k σ`, so one spike neither hides itself nor poisons the baseline for long.
//! No alert before `min_samples` readings (warm-up). State per key: 32 bytes.

use std::time::Duration;

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};

use super::sensor_signal;
use super::transition;
use super::{
    fmt_duration, score, tail,
    tail::{Motion, Tail},
    BuildCtx, Detector, DetectorSpec, Direction, Evidence, KeyedState, Signal, SignalKind,
};
use crate::decode::{Event, Stream};

pub const NAME: &str = "ewma_z";

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EwmaZConfig {
    /// Sensor kinds this instance watches; empty = every kind.
    #[serde(default)]
    pub kinds: Vec<String>,
    /// Time for a reading's weight to halve.
    #[serde(default = "default_half_life", with = "humantime_serde")]
    pub half_life: Duration,
    /// Fire when |z| (in the counted direction) exceeds this.
    #[serde(default = "default_k")]
    pub z_threshold: f64,
    #[serde(default = "default_up")]
    pub direction: Direction,
    /// Readings needed before the baseline is trusted.
    #[serde(default = "default_min_samples")]
    pub min_samples: u32,
    /// Floor on σ, in the kind's unit: a perfectly flat series must not make any noise a 100σ event.
    #[serde(default = "default_min_std")]
    pub min_std: f64,
    /// False episodes per sensor and day: each sensor's threshold is raised above
    /// `z_threshold` as far as the tail of its own z needs (src/detect/tail.rs). Default:
    /// `[detectors] false_alarms_per_day`.
    #[serde(default)]
    pub false_alarms_per_day: Option<f64>,
    /// The budget never raises the threshold above this (default 3 × z_threshold): a
    /// heavy-tailed gas sensor still alarms on a rise of three times the usual margin.
    #[serde(default)]
    pub max_z_threshold: Option<f64>,
    #[serde(default = "default_ttl", with = "humantime_serde")]
    pub ttl: Duration,
    /// `adaptive` (default): the baseline keeps learning with `half_life`. `frozen`: it is
    /// learned from the first `min_samples` readings and then fixed, a Shewhart/EWMA
    /// control chart against an in-control reference period; a sustained shift then
    /// stays visible for as long as it lasts instead of being learned away.
    #[serde(default)]
    pub baseline: Baseline,
    /// λ of an EWMA control chart (Roberts 1959) on the readings themselves: 1.0 (default)
    /// scores each reading; smaller values score the smoothed level against σ·√(λ/(2-λ)),
    /// which catches small sustained shifts that single readings hide in noise.
    #[serde(default = "default_smoothing")]
    pub smoothing: f64,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Baseline {
    #[default]
    Adaptive,
    Frozen,
}

fn default_smoothing() -> f64 {
    1.0
}

fn default_half_life() -> Duration {
    Duration::from_secs(600)
}
/// 5 σ: on Gaussian noise sampled every 30 s, 4 σ still gave about one false episode per
/// 100 sensor-hours in the simulator; 5 σ gave none, and a gas leak still fires on its
/// first or second reading.
fn default_k() -> f64 {
    5.0
}
fn default_up() -> Direction {
    Direction::Up
}
fn default_min_samples() -> u32 {
    20
}
fn default_min_std() -> f64 {
    0.05
}
fn default_ttl() -> Duration {
    Duration::from_secs(6 * 3600)
}

impl Default for EwmaZConfig {
    fn default() -> Self {
        Self {
            kinds: Vec::new(),
            half_life: default_half_life(),
            z_threshold: default_k(),
            direction: default_up(),
            min_samples: default_min_samples(),
            min_std: default_min_std(),
            false_alarms_per_day: None,
            max_z_threshold: None,
            ttl: default_ttl(),
            baseline: Baseline::Adaptive,
            smoothing: default_smoothing(),
        }
    }
}

impl DetectorSpec for EwmaZConfig {
    const NAME: &'static str = NAME;
    const STREAMS: &'static [Stream] = &[Stream::Sensors];
    type Runtime = EwmaZ;

    fn validate(&self, path: &str, problems: &mut Vec<String>) {
        if !(self.z_threshold > 0.0 && self.z_threshold.is_finite()) {
            problems.push(format!("{path}.z_threshold: must be > 0"));
        }
        if let Some(b) = self.false_alarms_per_day {
            tail::validate_budget(b, &format!("{path}.false_alarms_per_day"), problems);
        }
        if matches!(self.max_z_threshold, Some(m) if !(m.is_finite() && m >= self.z_threshold)) {
            problems.push(format!("{path}.max_z_threshold: must be >= z_threshold"));
        }
        if self.half_life < Duration::from_secs(1) {
            problems.push(format!("{path}.half_life: must be >= 1s"));
        }
        if !(self.min_std > 0.0 && self.min_std.is_finite()) {
            problems.push(format!("{path}.min_std: must be > 0"));
        }
        if !(self.smoothing > 0.0 && self.smoothing <= 1.0) {
            problems.push(format!("{path}.smoothing: must be in (0, 1]"));
        }
        if self.min_samples < 2 {
            problems.push(format!("{path}.min_samples: must be >= 2"));
        }
        if self.ttl.is_zero() {
            problems.push(format!("{path}.ttl: must be > 0"));
        }
    }

    fn build(&self, _stream: Stream, ctx: &BuildCtx) -> EwmaZ {
        EwmaZ {
            cfg: self.clone(),
            budget: self
                .false_alarms_per_day
                .unwrap_or(ctx.false_alarms_per_day),
            max_z: self.max_z_threshold.unwrap_or(3.0 * self.z_threshold),
            window: fmt_duration(self.half_life),
            state: KeyedState::new(self.ttl),
        }
    }
}

/// The baseline of one series. 40 bytes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EwmaState {
    pub mean: f64,
    pub var: f64,
    /// The smoothed reading of the EWMA chart (equals the last reading when λ = 1).
    pub level: f64,
    pub last_ts: i64,
    pub n: u32,
    pub alerting: bool,
    /// The tail of this sensor's quiet z: its threshold under the budget.
    pub tail: Tail,
    /// Its reporting interval and resolution.
    pub motion: Motion,
}

impl EwmaState {
    /// Folds `x` in with weight `a` (0 < a <= 1).
    pub fn update(&mut self, x: f64, a: f64) {
        if self.n == 0 {
            self.mean = x;
            self.var = 0.0;
        } else {
            let d = x - self.mean;
            self.mean += a * d;
            self.var = (1.0 - a) * (self.var + a * d * d);
        }
        self.n = self.n.saturating_add(1);
    }

    /// The weight of the next value: the time-based weight, but never less than
    /// 1/(n+1). Early on that makes mean and variance the plain sample mean and
    /// (population) variance; a pure EWMA started from one value would underestimate the
    /// variance for several half-lives and fire on noise.
    pub fn next_weight(&self, time_weight: f64) -> f64 {
        time_weight.max(1.0 / (f64::from(self.n) + 1.0))
    }
}

/// Weight of a reading `dt` seconds after the previous one.
pub fn weight(dt_secs: f64, half_life_secs: f64) -> f64 {
    let dt = dt_secs.clamp(1.0, 4.0 * half_life_secs);
    1.0 - (-dt * std::f64::consts::LN_2 / half_life_secs).exp()
}

pub struct EwmaZ {
    cfg: EwmaZConfig,
    /// False episodes per sensor and day, and the highest threshold it may set.
    budget: f64,
    max_z: f64,
    window: String,
    state: KeyedState<EwmaState>,
}

impl Detector for EwmaZ {
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
        let st = self.state.touch(&r.sensor_id, r.ts);
        let t = r.ts.timestamp();
        let warm = st.n >= self.cfg.min_samples;
        // σ floored at the sensor's resolution: a quantized H2S sensor (0.5 ppm steps on
        // 0.1 ppm noise) must not make each step a many-sigma rise.
        let sd = st
            .var
            .sqrt()
            .max(self.cfg.min_std)
            .max(tail::STEP_FLOOR * st.motion.step());
        let fit = st.tail.fit();
        let q = tail::risk_per_reading(self.budget, st.motion.interval());
        let k = st
            .tail
            .budgeted(&fit, q, self.cfg.z_threshold, self.max_z, t);
        let lambda = self.cfg.smoothing;
        st.level = if st.n == 0 {
            value
        } else {
            lambda * value + (1.0 - lambda) * st.level
        };
        // σ of the smoothed level in steady state: σ √(λ / (2 - λ)).
        let z = (st.level - st.mean) / (sd * (lambda / (2.0 - lambda)).sqrt());
        let counted = self.cfg.direction.counted(z);
        let s = if warm {
            score::from_ratio(counted, k)
        } else {
            0.0
        };
        let expected = st.mean;
        // Fold in, winsorized so a spike shifts the baseline by at most k σ.
        let a = if st.n == 0 {
            1.0
        } else {
            st.next_weight(weight(
                (t - st.last_ts) as f64,
                self.cfg.half_life.as_secs_f64(),
            ))
        };
        let x = if warm {
            value.clamp(st.mean - k * sd, st.mean + k * sd)
        } else {
            value
        };
        if !(warm && self.cfg.baseline == Baseline::Frozen) {
            st.update(x, a);
        }
        st.last_ts = st.last_ts.max(t);
        let firing = warm && counted > k;
        st.motion.learn(value, t, !firing && !st.alerting);
        if warm && !firing && !st.alerting {
            // Only quiet readings teach the tail (as SPOT keeps alarms out of its peaks).
            st.tail.learn(counted);
        }
        let budget = self.budget;
        let Some(kind) = transition(firing, &mut st.alerting, || {
            let dir = if z >= 0.0 { "rising" } else { "falling" };
            SignalKind::Anomalous {
                score: s,
                level: None,
                title: format!(
                    "{} {dir} fast at {}",
                    super::point_label(r),
                    super::site_label(r)
                ),
                evidence: Evidence {
                    observed: r.value,
                    expected,
                    score: (z * 100.0).round() / 100.0,
                    threshold: (k * 100.0).round() / 100.0,
                    window: self.window.clone(),
                    p_value: Some(fit.tail_probability(counted)),
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
    use crate::detect::testutil::{raw_reading, reading};
    use proptest::prelude::*;

    /// Naive recomputation: with constant weight a, the EWMA mean is
    /// sum_i w_i x_i / sum_i w_i over the whole history with w_i = a (1-a)^(n-1-i) for
    /// i >= 1 and w_0 = (1-a)^(n-1) (the first value seeds the mean), and the variance is
    /// the same weights applied to (x_i - m_{i-1})² scaled by (1-a), recomputed by brute force.
    fn naive(xs: &[f64], a: f64) -> (f64, f64) {
        let n = xs.len();
        let mut m = 0.0;
        for (i, x) in xs.iter().enumerate() {
            let w = if i == 0 {
                (1.0 - a).powi(n as i32 - 1)
            } else {
                a * (1.0 - a).powi((n - 1 - i) as i32)
            };
            m += w * x;
        }
        // Variance: brute force of the defining recursion's closed form
        // v_n = sum_{i>=1} (1-a)^(n-i) a d_i², d_i = x_i - m_{i-1}, with m_{i-1} recomputed naively.
        let mut v = 0.0;
        for i in 1..n {
            let prev = &xs[..i];
            let mut mp = 0.0;
            for (j, x) in prev.iter().enumerate() {
                let w = if j == 0 {
                    (1.0 - a).powi(i as i32 - 1)
                } else {
                    a * (1.0 - a).powi((i - 1 - j) as i32)
                };
                mp += w * x;
            }
            let d = xs[i] - mp;
            v += (1.0 - a).powi((n - i) as i32) * a * d * d;
        }
        (m, v)
    }

    #[test]
    fn matches_naive_recomputation() {
        let xs: Vec<f64> = (0..200)
            .map(|i| 3.0 + ((i * 7919) % 13) as f64 * 0.1 - 0.6)
            .collect();
        let a = 0.1;
        let mut s = EwmaState::default();
        for x in &xs {
            s.update(*x, a);
        }
        let (m, v) = naive(&xs, a);
        assert!((s.mean - m).abs() < 1e-9, "{} vs {m}", s.mean);
        assert!((s.var - v).abs() < 1e-9, "{} vs {v}", s.var);
    }

    #[test]
    fn weight_follows_half_life() {
        assert!((weight(300.0, 300.0) - 0.5).abs() < 1e-12);
        assert!(
            (weight(0.0, 300.0) - weight(1.0, 300.0)).abs() < 1e-15,
            "dt clamps at 1 s"
        );
    }

    #[test]
    fn warm_up_gate_then_spike_fires_up_only() {
        let mut d = EwmaZConfig::default().build(Stream::Sensors, &crate::pipeline::test_ctx());
        let mut out = Vec::new();
        // A big value during warm-up raises nothing.
        d.observe(&reading("G0", "gas_lel", 0, 3.0), false, &mut out);
        d.observe(&reading("G0", "gas_lel", 10, 30.0), false, &mut out);
        assert!(out.is_empty());
        for i in 0..60 {
            d.observe(
                &reading("G", "gas_lel", i * 10, 3.0 + (i % 3) as f64 * 0.1),
                false,
                &mut out,
            );
        }
        assert!(out.is_empty(), "{out:?}");
        // A drop is not a gas hazard with direction = up.
        d.observe(&reading("G", "gas_lel", 600, 0.0), false, &mut out);
        assert!(out.is_empty());
        let sc = d.observe(&reading("G", "gas_lel", 610, 9.0), false, &mut out);
        assert!(sc > 0.5);
        let SignalKind::Anomalous { evidence, .. } = &out[0].kind else {
            panic!()
        };
        assert!(evidence.score > 4.0 && evidence.observed == 9.0);
        assert!((evidence.expected - 3.0).abs() < 0.5);
    }

    #[test]
    fn state_is_88_bytes() {
        assert_eq!(std::mem::size_of::<EwmaState>(), 88);
    }

    #[test]
    fn warm_start_equals_sample_mean_and_variance() {
        // With weight max(a, 1/(n+1)) the first values are averaged equally: compare with
        // the textbook two-pass sample mean and population variance.
        let xs = [3.1, 2.9, 3.4, 3.0, 2.7, 3.3, 3.2, 2.8, 3.05, 3.15];
        let mut s = EwmaState::default();
        for x in xs {
            let a = if s.n == 0 { 1.0 } else { s.next_weight(0.01) };
            s.update(x, a);
        }
        let n = xs.len() as f64;
        let m = xs.iter().sum::<f64>() / n;
        let v = xs.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / n;
        assert!(
            (s.mean - m).abs() < 1e-12 && (s.var - v).abs() < 1e-12,
            "{s:?} vs {m} {v}"
        );
    }

    proptest! {
        #[test]
        fn never_nan_and_bounded(xs in proptest::collection::vec(-1e6f64..1e6, 1..300), gaps in proptest::collection::vec(0i64..4000, 300)) {
            let mut d = EwmaZConfig { min_samples: 2, direction: Direction::Both, ..Default::default() }.build(Stream::Sensors, &crate::pipeline::test_ctx());
            let mut out = Vec::new();
            let mut t = 0;
            for (x, g) in xs.iter().zip(gaps) {
                t += g;
                let s = d.observe(&raw_reading("P", "pressure", t, *x), false, &mut out);
                prop_assert!(s.is_finite() && (0.0..=1.0).contains(&s));
            }
            prop_assert_eq!(d.keys(), 1);
        }

        #[test]
        fn score_monotone_in_deviation(dev1 in 0.0f64..100.0, dev2 in 0.0f64..100.0) {
            let mk = || {
                let mut d = EwmaZConfig::default().build(Stream::Sensors, &crate::pipeline::test_ctx());
                let mut out = Vec::new();
                for i in 0..50 {
                    d.observe(&reading("G", "gas_lel", i * 10, 3.0 + (i % 2) as f64 * 0.2), false, &mut out);
                }
                d
            };
            let (lo, hi) = if dev1 <= dev2 { (dev1, dev2) } else { (dev2, dev1) };
            let mut out = Vec::new();
            let s1 = mk().observe(&reading("G", "gas_lel", 500, 3.1 + lo), false, &mut out);
            let s2 = mk().observe(&reading("G", "gas_lel", 500, 3.1 + hi), false, &mut out);
            prop_assert!(s1 <= s2);
        }
    }
}
