//! `cusum`: a small sustained shift of the mean accumulates past the decision interval.
//!
//! Two-sided tabular CUSUM (Page 1954; Montgomery, *Introduction to Statistical Quality
//! Control*, §9.1) on standardized values `z = (x - μ0) / σ`:
//! `C+ = max(0, C+ + z - k)`, `C- = max(0, C- - z - k)`, with the reference value `k` and
//! the decision interval `h` in units of σ (defaults 0.5 and 5: tuned to detect a 1 σ
//! shift; the in-control average run length is about 465 readings two-sided, so raise
//! `h` for many sensors sampled often). The target `μ0` and `σ` are learned per key
//! over the first `min_samples` readings (Welford), then frozen; `target_mean` /
//! `target_std` fix them instead. With `relearn_weight > 0` they keep following the data
//! as an EWMA, but only while the key is not alerting, so a shift is not learned away
//! while it is being reported. `σ` is floored at `min_std`.
//!
//! The key is anomalous while a counted side (`direction`) is above `h`: after a signal
//! the sums keep accumulating while the process is out of control, and `Clear` comes once
//! when they are back at or below `h`. Each sum is capped at `4 h` so that a long episode
//! clears within about `3 h / k` readings of the process returning to target. The run
//! lengths `N+` / `N-` (readings since the side was last 0) date the shift, and the shifted
//! mean is estimated as `μ0 ± σ (k + C / N)` (Montgomery eq. 9.3, 9.4).
//!
//! Evidence: `observed` is that estimated current mean, `expected` is `μ0`, `score` is the
//! firing side's `C` (in σ) against `threshold` `h`, `window` is its run length in
//! readings. State per key: 48 bytes.

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

pub const NAME: &str = "cusum";

/// Each sum is capped at this many decision intervals.
const CAP: f64 = 4.0;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CusumConfig {
    /// Sensor kinds this instance watches; empty = every kind.
    #[serde(default)]
    pub kinds: Vec<String>,
    /// Reference value (allowance), in σ: half the shift to detect (default 0.5).
    #[serde(default = "default_k")]
    pub k: f64,
    /// Decision interval, in σ (default 5).
    #[serde(default = "default_h")]
    pub h: f64,
    /// `both` (default): shifts up and down; `up`; `down`.
    #[serde(default)]
    pub direction: Direction,
    /// Readings that learn μ0 and σ before anything is scored (warm-up; default 50).
    #[serde(default = "default_min_samples")]
    pub min_samples: u32,
    /// Fixes μ0 (in the kind's unit) instead of learning it (default: learned).
    #[serde(default)]
    pub target_mean: Option<f64>,
    /// Fixes σ (in the kind's unit) instead of learning it (default: learned).
    #[serde(default)]
    pub target_std: Option<f64>,
    /// Floor on σ, in the kind's unit (default 0.001).
    #[serde(default = "default_min_std")]
    pub min_std: f64,
    /// EWMA weight with which μ0 and σ keep learning while not alerting; 0 = frozen (default).
    #[serde(default)]
    pub relearn_weight: f64,
    /// False episodes per sensor and day: each sensor's decision interval is raised above
    /// `h` as far as the tail of its own sums needs (src/detect/tail.rs). Default:
    /// `[detectors] false_alarms_per_day`.
    #[serde(default)]
    pub false_alarms_per_day: Option<f64>,
    /// The budget never raises the decision interval above this, in σ (default 8 h).
    #[serde(default)]
    pub max_h: Option<f64>,
    /// A shift that has lasted this long of event time ...
    #[serde(default = "default_relearn_after", with = "humantime_serde")]
    pub relearn_after: Duration,
    /// ... and this many readings is the sensor's new normal: μ0 moves to the shifted
    /// mean and the episode ends (default 30m and 30 readings).
    #[serde(default = "default_relearn_readings")]
    pub relearn_readings: u32,
    /// Keys idle longer than this are forgotten (default 6h).
    #[serde(default = "default_ttl", with = "humantime_serde")]
    pub ttl: Duration,
}

fn default_k() -> f64 {
    0.5
}
fn default_h() -> f64 {
    5.0
}
fn default_min_samples() -> u32 {
    50
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

impl Default for CusumConfig {
    fn default() -> Self {
        Self {
            kinds: Vec::new(),
            k: default_k(),
            h: default_h(),
            direction: Direction::Both,
            min_samples: default_min_samples(),
            target_mean: None,
            target_std: None,
            min_std: default_min_std(),
            relearn_weight: 0.0,
            false_alarms_per_day: None,
            max_h: None,
            relearn_after: default_relearn_after(),
            relearn_readings: default_relearn_readings(),
            ttl: default_ttl(),
        }
    }
}

impl CusumConfig {
    fn needs_warm_up(&self) -> bool {
        self.target_mean.is_none() || self.target_std.is_none()
    }
}

impl DetectorSpec for CusumConfig {
    const NAME: &'static str = NAME;
    const STREAMS: &'static [Stream] = &[Stream::Sensors];
    type Runtime = Cusum;

    fn validate(&self, path: &str, problems: &mut Vec<String>) {
        if !(self.k >= 0.0 && self.k.is_finite()) {
            problems.push(format!("{path}.k: must be >= 0"));
        }
        if !(score::positive(self.h) && self.h.is_finite()) {
            problems.push(format!("{path}.h: must be > 0"));
        }
        if self.needs_warm_up() && self.min_samples < 2 {
            problems.push(format!("{path}.min_samples: must be >= 2"));
        }
        if matches!(self.target_mean, Some(m) if !m.is_finite()) {
            problems.push(format!("{path}.target_mean: must be a finite number"));
        }
        if matches!(self.target_std, Some(s) if !(score::positive(s) && s.is_finite())) {
            problems.push(format!("{path}.target_std: must be > 0"));
        }
        if !(score::positive(self.min_std) && self.min_std.is_finite()) {
            problems.push(format!("{path}.min_std: must be > 0"));
        }
        if !(self.relearn_weight >= 0.0 && self.relearn_weight < 1.0) {
            problems.push(format!("{path}.relearn_weight: must be in [0, 1)"));
        }
        if let Some(b) = self.false_alarms_per_day {
            tail::validate_budget(b, &format!("{path}.false_alarms_per_day"), problems);
        }
        if matches!(self.max_h, Some(m) if !(m.is_finite() && m >= self.h)) {
            problems.push(format!("{path}.max_h: must be >= h"));
        }
        if self.relearn_readings == 0 {
            problems.push(format!("{path}.relearn_readings: must be > 0"));
        }
        if self.ttl.is_zero() {
            problems.push(format!("{path}.ttl: must be > 0"));
        }
    }

    fn build(&self, _stream: Stream, ctx: &BuildCtx) -> Cusum {
        Cusum {
            cfg: self.clone(),
            budget: self
                .false_alarms_per_day
                .unwrap_or(ctx.false_alarms_per_day),
            max_h: self.max_h.unwrap_or(8.0 * self.h),
            warm_n: if self.needs_warm_up() {
                self.min_samples
            } else {
                0
            },
            state: KeyedState::new(self.ttl),
        }
    }
}

/// The sums and the target of one series, and what the budget learns of it. 128 bytes (the tail with a verdict's hold).
#[derive(Debug, Default, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CusumState {
    /// Welford mean during warm-up, then μ0.
    mean: f64,
    /// Welford sum of squared deviations (M2) during warm-up, then σ².
    var: f64,
    /// C+ and C-, in σ.
    cp: f64,
    cm: f64,
    /// Readings seen (saturating).
    n: u32,
    /// Readings since C+ / C- was last 0 (saturating).
    np: u16,
    nm: u16,
    alerting: bool,
    tail: Tail,
    motion: Motion,
    episode: EpisodeClock,
    /// The target left at the last re-learn: a return to it is no new shift.
    prev_mean: Option<f64>,
}

impl CusumState {
    /// Folds a standardized value into both sums.
    pub fn step(&mut self, z: f64, k: f64, h: f64) {
        let cap = CAP * h;
        self.cp = (self.cp + z - k).clamp(0.0, cap);
        self.cm = (self.cm - z - k).clamp(0.0, cap);
        self.np = if self.cp > 0.0 {
            self.np.saturating_add(1)
        } else {
            0
        };
        self.nm = if self.cm > 0.0 {
            self.nm.saturating_add(1)
        } else {
            0
        };
    }
}

pub struct Cusum {
    cfg: CusumConfig,
    /// Readings of warm-up: `min_samples`, or 0 when both targets are fixed.
    warm_n: u32,
    /// False episodes per sensor and day, and the highest decision interval it may set.
    budget: f64,
    max_h: f64,
    state: KeyedState<CusumState>,
}

impl Detector for Cusum {
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
        let cfg = &self.cfg;
        let t = r.ts.timestamp();
        let st = self.state.touch(&r.sensor_id, r.ts);
        let x = value;
        if st.n < self.warm_n {
            st.motion.learn(x, t, true);
            // Welford; at the last warm-up reading M2 becomes the sample variance.
            st.n += 1;
            let d = x - st.mean;
            st.mean += d / st.n as f64;
            st.var += d * (x - st.mean);
            if st.n == self.warm_n {
                st.var /= (st.n - 1).max(1) as f64;
            }
            return 0.0;
        }
        st.n = st.n.saturating_add(1);
        let mu = cfg.target_mean.unwrap_or(st.mean);
        let sd = cfg.target_std.unwrap_or(st.var.sqrt()).max(cfg.min_std);
        let z = (x - mu) / sd;
        let fit = st.tail.fit();
        let q = tail::risk_per_reading(self.budget, st.motion.interval());
        let k = cfg.k;
        let h = st.tail.budgeted(&fit, q, cfg.h, self.max_h, t);
        st.step(z, k, h);
        // The counted side: the larger one for `both`.
        let up = match cfg.direction {
            Direction::Up => true,
            Direction::Down => false,
            Direction::Both => st.cp >= st.cm,
        };
        let (c, run) = if up { (st.cp, st.np) } else { (st.cm, st.nm) };
        let s = score::from_ratio(c, h);
        let mut firing = c > h;
        st.motion.learn(x, t, !firing && !st.alerting);
        let shift = sd * (k + c / f64::from(run.max(1)));
        let est = if up { mu + shift } else { mu - shift };
        if firing
            && st
                .prev_mean
                .is_some_and(|p| (est - p).abs() < 3.0 * sd && (x - p).abs() < 6.0 * sd)
        {
            // The series went back to the regime it left at the last re-learn: that
            // target is restored and nothing fires. The reading itself must be near
            // that regime too: the run's estimate comes from capped sums, so a glitch
            // far off in either direction could otherwise pass for a return.
            st.mean = st.prev_mean.take().unwrap_or(mu);
            st.cp = 0.0;
            st.cm = 0.0;
            st.np = 0;
            st.nm = 0;
            firing = false;
        } else if firing {
            let relearn_after = cfg.relearn_after.as_secs() as i64;
            if cfg.target_mean.is_none()
                && st
                    .episode
                    .tick(t, !st.alerting, relearn_after, cfg.relearn_readings)
            {
                // The shift has lasted: the episode ends and the target is learned anew
                // from the next `min_samples` readings (the run's mean estimate is
                // biased by the cap on the sums, so it is not taken as the target).
                st.prev_mean = Some(mu);
                st.n = 0;
                st.mean = 0.0;
                st.var = 0.0;
                st.cp = 0.0;
                st.cm = 0.0;
                st.np = 0;
                st.nm = 0;
                firing = false;
            }
        } else if !st.alerting {
            // Only quiet readings teach the tail (as SPOT keeps alarms out of its peaks).
            st.tail.learn(c);
            // The target follows slow change (a daily cycle) only while both sums are
            // low: a shift that is accumulating is not learned away.
            if cfg.relearn_weight > 0.0 && st.cp.max(st.cm) < 0.5 * h {
                let w = cfg.relearn_weight;
                let d = x - st.mean;
                st.mean += w * d;
                st.var = (1.0 - w) * (st.var + w * d * d);
            }
        }
        let budget = self.budget;
        let Some(kind) = transition(firing, &mut st.alerting, || {
            let word = if up { "up" } else { "down" };
            SignalKind::Anomalous {
                score: s,
                level: None,
                title: format!(
                    "{} drifting {word} at {}",
                    super::point_label(r),
                    super::site_label(r)
                ),
                evidence: Evidence {
                    observed: est,
                    expected: mu,
                    score: (c * 100.0).round() / 100.0,
                    threshold: (h * 100.0).round() / 100.0,
                    window: format!("{run} readings"),
                    p_value: Some(fit.tail_probability(c)),
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

    fn det(cfg: CusumConfig) -> Cusum {
        cfg.build(Stream::Sensors, &crate::pipeline::test_ctx())
    }

    /// Deterministic noise: mean 0, sd ~0.32.
    fn noise(i: i64) -> f64 {
        ((i * 7919) % 11) as f64 / 10.0 - 0.5
    }

    /// `n` pressure readings every 30 s from `t` on, at `level` ± 0.01 noise.
    fn feed(d: &mut Cusum, t: &mut i64, n: i64, level: f64, out: &mut Vec<Signal>) {
        for i in 0..n {
            *t += 30;
            d.observe(
                &reading("P", "pressure", *t, level + 0.01 * noise(i)),
                false,
                out,
            );
        }
    }

    /// Montgomery, Introduction to Statistical Quality Control, Table 9.1: the first 20
    /// observations from N(10, 1), the last 10 from N(11, 1).
    const TABLE_9_1: [f64; 30] = [
        9.45, 7.99, 9.29, 11.66, 12.16, 10.18, 8.04, 11.46, 9.20, 10.34, 9.03, 11.47, 10.51, 9.40,
        10.08, 9.37, 10.62, 10.31, 8.52, 10.84, 10.90, 9.33, 12.29, 11.50, 10.60, 11.08, 10.38,
        11.62, 11.31, 10.52,
    ];

    /// Page's definition without the recursion: C+_n = max(0, max_j sum_{i=j..n} (z_i - k)),
    /// C-_n = max(0, max_j sum_{i=j..n} (-z_i - k)).
    fn naive(zs: &[f64], k: f64) -> (f64, f64) {
        let (mut cp, mut cm) = (0.0f64, 0.0f64);
        for j in 0..zs.len() {
            cp = cp.max(zs[j..].iter().map(|z| z - k).sum());
            cm = cm.max(zs[j..].iter().map(|z| -z - k).sum());
        }
        (cp, cm)
    }

    #[test]
    fn montgomery_example_9_1() {
        let mut d = det(CusumConfig {
            target_mean: Some(10.0),
            target_std: Some(1.0),
            ..Default::default()
        });
        let mut out = Vec::new();
        let mut first_signal = None;
        for (i, x) in TABLE_9_1.iter().enumerate() {
            let n = i + 1;
            out.clear();
            let s = d.observe(
                &reading("P", "pressure", n as i64 * 60, *x),
                false,
                &mut out,
            );
            let st = *d.state.get("P").unwrap();
            let zs: Vec<f64> = TABLE_9_1[..n].iter().map(|x| x - 10.0).collect();
            let (cp, cm) = naive(&zs, 0.5);
            assert!((st.cp - cp).abs() < 1e-9, "C+_{n}: {} vs {cp}", st.cp);
            assert!((st.cm - cm).abs() < 1e-9, "C-_{n}: {} vs {cm}", st.cm);
            assert!((s - score::from_ratio(st.cp.max(st.cm), 5.0)).abs() < 1e-12);
            if first_signal.is_none() && !out.is_empty() {
                first_signal = Some((n, out[0].kind.clone(), st));
            }
        }
        // A few printed entries of Montgomery's Table 9.2, to two decimals.
        let (n, kind, st) = first_signal.expect("signals");
        assert_eq!(n, 29, "C+ first exceeds H = 5 at observation 29");
        assert!((st.cp - 5.28).abs() < 0.01, "C+_29 = {}", st.cp);
        assert_eq!(st.np, 7, "N+ = 7: last in control at period 22");
        let SignalKind::Anomalous {
            score: sc,
            evidence,
            title,
            level,
        } = kind
        else {
            panic!()
        };
        assert!(sc > 0.5 && level.is_none());
        assert!((evidence.score - 5.28).abs() < 0.01);
        assert_eq!(evidence.threshold, 5.0);
        assert_eq!(evidence.expected, 10.0);
        assert_eq!(evidence.window, "7 readings");
        // μ̂ = μ0 + K + C+/N+ = 10 + 0.5 + 5.28/7 = 11.25.
        assert!((evidence.observed - 11.25).abs() < 0.01, "{evidence:?}");
        assert!(
            title.starts_with("Pressure drifting up at SITE-"),
            "{title}"
        );
    }

    #[test]
    fn montgomery_columns_spot_values() {
        // Selected C+ / C- entries of Table 9.2.
        let mut s = CusumState::default();
        let mut cols = Vec::new();
        for x in TABLE_9_1 {
            s.step(x - 10.0, 0.5, 5.0);
            cols.push((s.cp, s.cm));
        }
        for (n, cp, cm) in [
            (2, 0.0, 1.56),
            (3, 0.0, 1.77),
            (5, 2.82, 0.0),
            (7, 0.04, 1.46),
            (26, 3.47, 0.0),
            (28, 4.47, 0.0),
            (30, 5.30, 0.0),
        ] {
            let (a, b) = cols[n - 1];
            assert!(
                (a - cp).abs() < 0.005 && (b - cm).abs() < 0.005,
                "{n}: {a} {b}"
            );
        }
    }

    #[test]
    fn warm_up_learns_target_then_detects_small_shift_and_clears() {
        let mut d = det(CusumConfig::default());
        let mut out = Vec::new();
        let mut t = 0;
        feed(&mut d, &mut t, 200, 1.0, &mut out);
        assert!(out.is_empty(), "{out:?}");
        let st = *d.state.get("P").unwrap();
        assert!(
            (st.mean - 1.0).abs() < 0.002 && st.var.sqrt() > 0.002,
            "{st:?}"
        );
        // A shift of about one σ (0.003 MPa) upward: each reading alone is unremarkable.
        // 50 readings (25 min): shorter than relearn_after, so one episode that clears
        // when the shift ends.
        let mut fired_at = None;
        for i in 0..50 {
            t += 30;
            out.clear();
            d.observe(
                &reading("P", "pressure", t, 1.003 + 0.01 * noise(i)),
                false,
                &mut out,
            );
            if fired_at.is_none() && !out.is_empty() {
                fired_at = Some(i);
            }
        }
        assert!(fired_at.is_some_and(|i| i < 40), "{fired_at:?}");
        out.clear();
        feed(&mut d, &mut t, 200, 1.0, &mut out);
        assert_eq!(out.last().unwrap().kind, SignalKind::Clear);
        assert_eq!(
            out.iter().filter(|s| s.kind == SignalKind::Clear).count(),
            1
        );
    }

    #[test]
    fn direction_down_ignores_up_shift_and_faults_are_ignored() {
        let mut d = det(CusumConfig {
            direction: Direction::Down,
            target_mean: Some(0.0),
            target_std: Some(1.0),
            ..Default::default()
        });
        let mut out = Vec::new();
        for i in 0..50 {
            d.observe(&raw_reading("P", "pressure", i * 30, 3.0), false, &mut out);
        }
        assert!(out.is_empty());
        let Event::Sensor(mut r) = raw_reading("P", "pressure", 3000, -1e6) else {
            panic!()
        };
        r.status = SensorStatus::Fault;
        assert_eq!(d.observe(&Event::Sensor(r), false, &mut out), 0.0);
        for i in 0..10 {
            d.observe(
                &raw_reading("P", "pressure", 4000 + i * 30, -3.0),
                false,
                &mut out,
            );
        }
        assert!(out
            .iter()
            .all(|s| matches!(&s.kind, SignalKind::Anomalous { title, .. } if title.contains("drifting down"))));
        assert!(!out.is_empty());
    }

    #[test]
    fn a_sustained_shift_is_one_episode_then_the_new_normal() {
        let mut d = det(CusumConfig::default());
        let mut out = Vec::new();
        let mut t = 0;
        feed(&mut d, &mut t, 200, 1.0, &mut out);
        assert!(out.is_empty(), "{out:?}");
        // A step of ~6σ held for 4 hours: one episode; after relearn_after (30 min, 30
        // readings) it clears and the new level raises nothing more.
        feed(&mut d, &mut t, 480, 1.02, &mut out);
        let opened = out
            .iter()
            .filter(|s| matches!(s.kind, SignalKind::Anomalous { .. }))
            .count();
        assert!(opened >= 1, "{out:?}");
        let clears: Vec<_> = out.iter().filter(|s| s.kind == SignalKind::Clear).collect();
        assert_eq!(clears.len(), 1, "{out:?}");
        assert_eq!(out.last().unwrap().kind, SignalKind::Clear);
        let lasted = clears[0].ts.timestamp() - out[0].ts.timestamp();
        assert!((1800..1800 + 30 * 30).contains(&lasted), "{lasted}");
        // Back to the old level after the re-learn: a return, not a new episode.
        out.clear();
        feed(&mut d, &mut t, 200, 1.0, &mut out);
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn relearn_follows_only_while_quiet() {
        let mut d = det(CusumConfig {
            min_samples: 5,
            relearn_weight: 0.1,
            ..Default::default()
        });
        let mut out = Vec::new();
        for i in 0..5 {
            d.observe(
                &reading("T", "temperature", i * 30, 40.0 + (i % 2) as f64),
                false,
                &mut out,
            );
        }
        let m0 = d.state.get("T").unwrap().mean;
        // A big jump fires at once: the target must not move while alerting.
        d.observe(&reading("T", "temperature", 300, 60.0), false, &mut out);
        assert!(!out.is_empty());
        assert_eq!(d.state.get("T").unwrap().mean, m0);
    }

    #[test]
    fn validation_names_paths() {
        let c = CusumConfig {
            h: 0.0,
            k: -1.0,
            target_std: Some(0.0),
            relearn_weight: 1.0,
            ..Default::default()
        };
        let mut p = Vec::new();
        c.validate("detectors.sensors[3]", &mut p);
        assert_eq!(
            p,
            vec![
                "detectors.sensors[3].k: must be >= 0",
                "detectors.sensors[3].h: must be > 0",
                "detectors.sensors[3].target_std: must be > 0",
                "detectors.sensors[3].relearn_weight: must be in [0, 1)",
            ]
        );
        let mut p = Vec::new();
        CusumConfig::default().validate("x", &mut p);
        assert!(p.is_empty(), "{p:?}");
    }

    #[test]
    fn state_is_128_bytes() {
        assert_eq!(std::mem::size_of::<CusumState>(), 128);
    }

    proptest! {
        #[test]
        fn never_nan_and_bounded(xs in proptest::collection::vec(-1e6f64..1e6, 1..300), w in 0.0f64..0.5) {
            let mut d = det(CusumConfig { min_samples: 2, relearn_weight: w, ..Default::default() });
            let mut out = Vec::new();
            for (i, x) in xs.iter().enumerate() {
                let s = d.observe(&raw_reading("P", "pressure", i as i64 * 30, *x), false, &mut out);
                prop_assert!(s.is_finite() && (0.0..=1.0).contains(&s));
                let st = d.state.get("P").unwrap();
                // The budget may raise h up to max_h (8 h by default): the cap follows it.
                prop_assert!(st.cp >= 0.0 && st.cm >= 0.0 && st.cp <= CAP * 40.0 && st.cm <= CAP * 40.0);
                prop_assert!(st.mean.is_finite() && st.var.is_finite());
            }
            for sig in &out {
                if let SignalKind::Anomalous { score, evidence, .. } = &sig.kind {
                    prop_assert!(*score >= 0.5 && evidence.observed.is_finite());
                }
            }
            prop_assert_eq!(d.keys(), 1);
        }

        #[test]
        fn recursion_matches_page_definition(zs in proptest::collection::vec(-4.0f64..4.0, 1..80)) {
            // Below the cap (4 h = 1e9 here) the recursion equals the naive maximum.
            let mut s = CusumState::default();
            for z in &zs {
                s.step(*z, 0.5, 2.5e8);
            }
            let (cp, cm) = naive(&zs, 0.5);
            prop_assert!((s.cp - cp).abs() < 1e-9 && (s.cm - cm).abs() < 1e-9);
        }

        #[test]
        fn score_monotone_in_shift(a in 0.0f64..20.0, b in 0.0f64..20.0) {
            // A generous budget keeps h at its floor: otherwise each run's threshold is
            // learned from its own (different) sums, and the scores compare two detectors.
            let run = |shift: f64| {
                let mut d = det(CusumConfig {
                    target_mean: Some(0.0),
                    target_std: Some(1.0),
                    false_alarms_per_day: Some(100.0),
                    ..Default::default()
                });
                let mut out = Vec::new();
                let mut s = 0.0;
                for i in 0..5 {
                    s = d.observe(&reading("P", "pressure", i * 30, shift), false, &mut out);
                }
                s
            };
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            prop_assert!(run(lo) <= run(hi));
        }
    }
}
