//! A false-alarm budget for adaptive detectors: each key's firing threshold is set from the
//! tail of the scores that key's detector has actually produced, so a sensor with heavy
//! tails, quantized values or frequent small steps gets a higher threshold than a sensor
//! with clean Gaussian noise, and both fire about as rarely as the budget allows.
//!
//! Method: peaks over threshold with a generalized Pareto tail, as in SPOT (Siffer,
//! Fouque, Termier, Largouët, "Anomaly Detection in Streams with Extreme Value Theory",
//! KDD 2017). Scores above a fixed level `u` are peaks; their excesses `y = s - u` follow
//! a GPD(ξ, σ) for a high enough `u` (Pickands–Balkema–de Haan). SPOT keeps every peak and
//! refits by maximum likelihood; here the fit is by the method of moments (Hosking &
//! Wallis 1987) from the running mean and mean square of the excesses, so the state is
//! four numbers per key and each reading costs O(1):
//!
//! ```text
//!   m = E[y], v = Var[y]:   ξ = (1 - m²/v) / 2,   σ = m (1 + m²/v) / 2
//!   P(S > s) ≈ (Nt / n) (1 + ξ (s - u) / σ)^(-1/ξ)          (s > u; exp(-(s-u)/σ) at ξ = 0)
//!   threshold at risk q:  z_q = u + σ/ξ ((q n / Nt)^(-ξ) - 1)   (u - σ ln(q n / Nt) at ξ = 0)
//! ```
//!
//! The moments are unbiased only for ξ < 1/2, so ξ is clamped to [-1/2, 1/2): a heavier
//! tail than that is treated as ξ just under 1/2, which still raises the threshold steeply.
//!
//! The model starts from a prior worth `PRIOR_N` scores of Gaussian noise (the tail of
//! |z| for N(0,1) above u), so a new key's threshold is the Gaussian one and the data moves
//! it. Counts are capped at `HORIZON` (older evidence is scaled down), so the model
//! follows a sensor whose behaviour changes over weeks. Scores of readings that fired are
//! kept out (as SPOT does): an anomaly must not teach the model that anomalies are normal.
//!
//! Operators' verdicts (issue #23): an episode an operator closed as `false_alarm` spends
//! its key's budget. The score that fired was normal for that key after all, so for one
//! budget period (`1 / false_alarms_per_day` days from the episode's start, at most
//! [`MAX_HOLD_SECS`]) the key's threshold is held at least [`VERDICT_MARGIN`] times that
//! score (never above the detector's ceiling): the key cannot spend its budget again on
//! the same magnitude, a clearly larger score still fires, and scores under the hold that
//! no longer fire are learned as quiet peaks, so the tail itself learns what the operators
//! called normal. Folding the one score into the tail instead would barely move it: a
//! fresh key's threshold at one false alarm per ten days and a 5-minute interval is 3.6,
//! and a peak of 8 raises it only to 5.2 (below a z floor of 7, so 8 fires again), less
//! for a key with hundreds of peaks. The hold is a maximum, so applying a verdict twice
//! is applying it once: verdicts can be replayed after every restore (see [`Verdict`]).

use serde::{Deserialize, Serialize};

/// Scores (|z|, in standard deviations) above this are peaks. Three sigma: Gaussian noise
/// exceeds it on 0.27% of readings, few enough that the excesses are a tail.
pub const PEAK_LEVEL: f64 = 3.0;
/// The prior's weight, in scores.
const PRIOR_N: f32 = 2000.0;
/// P(|Z| > 3) for Z ~ N(0, 1).
const GAUSS_TAIL: f32 = 0.0027;
/// Mean and mean square of |Z| - 3 given |Z| > 3 (numerical integration of the normal tail).
const GAUSS_M1: f32 = 0.2830;
const GAUSS_M2: f32 = 0.1507;
/// Counts beyond this are scaled down: the model remembers about this many scores.
const HORIZON: f32 = 200_000.0;
/// Largest shape the moment fit may report (its moments exist only below 1/2).
const MAX_SHAPE: f64 = 0.49;
/// A verdict holds the threshold at this multiple of the score judged false: a repeat of
/// the same event (a pump start, a door opened) rarely scores exactly the same.
pub const VERDICT_MARGIN: f64 = 1.2;
/// The longest a verdict holds (a budget of 0.01 per day would otherwise hold 100 days).
pub const MAX_HOLD_SECS: i64 = 30 * 86_400;

/// One key's tail model and the hold of its operators' verdicts: 24 bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tail {
    /// Scores seen (weighted; the prior counts).
    n: f32,
    /// Of which above [`PEAK_LEVEL`].
    peaks: f32,
    /// Mean and mean square of the excesses over [`PEAK_LEVEL`].
    m1: f32,
    m2: f32,
    /// The threshold's floor set by false-alarm verdicts (0: none) ...
    held: f32,
    /// ... until this minute of event time (minutes since the epoch; 0: none).
    held_until: u32,
}

impl Default for Tail {
    fn default() -> Self {
        Self {
            n: PRIOR_N,
            peaks: PRIOR_N * GAUSS_TAIL,
            m1: GAUSS_M1,
            m2: GAUSS_M2,
            held: 0.0,
            held_until: 0,
        }
    }
}

/// The changelog layout: the four moments as before verdicts existed (so every record
/// written before them restores, and a key without a verdict is written byte for byte
/// as before), or, once a key has a hold, `-n` (a count is never negative, so the sign
/// tells the layouts apart) followed by the moments and the hold.
impl Serialize for Tail {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let held = self.held_until != 0;
        let mut t = s.serialize_tuple(if held { 6 } else { 4 })?;
        t.serialize_element(&if held { -self.n } else { self.n })?;
        t.serialize_element(&self.peaks)?;
        t.serialize_element(&self.m1)?;
        t.serialize_element(&self.m2)?;
        if held {
            t.serialize_element(&self.held)?;
            t.serialize_element(&self.held_until)?;
        }
        t.end()
    }
}

impl<'de> Deserialize<'de> for Tail {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Tail;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a tail: 4 moments, or -n, 3 moments and a hold")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Tail, A::Error> {
                let mut next = |i: usize| -> Result<f32, A::Error> {
                    a.next_element()?
                        .ok_or_else(|| serde::de::Error::invalid_length(i, &self))
                };
                let n: f32 = next(0)?;
                let (peaks, m1, m2) = (next(1)?, next(2)?, next(3)?);
                let mut t = Tail {
                    n: n.abs(),
                    peaks,
                    m1,
                    m2,
                    held: 0.0,
                    held_until: 0,
                };
                if n.is_sign_negative() {
                    t.held = a
                        .next_element()?
                        .ok_or_else(|| serde::de::Error::invalid_length(4, &self))?;
                    t.held_until = a
                        .next_element()?
                        .ok_or_else(|| serde::de::Error::invalid_length(5, &self))?;
                }
                Ok(t)
            }
        }
        // Postcard reads a tuple's elements one by one without a length, so a visitor
        // that stops after four leaves the next field's bytes where they belong.
        d.deserialize_tuple(6, V)
    }
}

/// The fitted tail: what an alert's evidence can show.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fit {
    /// Fraction of scores above the peak level.
    pub rate: f64,
    pub shape: f64,
    pub scale: f64,
}

impl Fit {
    /// P(S > s) under the fitted tail (1 at or below the peak level's rate).
    pub fn tail_probability(&self, s: f64) -> f64 {
        if s.is_nan() || s <= PEAK_LEVEL {
            return self.rate.clamp(f64::MIN_POSITIVE, 1.0);
        }
        let y = (s - PEAK_LEVEL) / self.scale;
        let surv = if self.shape.abs() < 1e-9 {
            (-y).exp()
        } else {
            let base = 1.0 + self.shape * y;
            if base <= 0.0 {
                0.0 // beyond the upper end point of a bounded (ξ < 0) tail
            } else {
                base.powf(-1.0 / self.shape)
            }
        };
        (self.rate * surv).clamp(0.0, 1.0)
    }

    /// The score exceeded with probability `q` (per reading): the threshold that meets a
    /// budget of `q` false exceedances per reading. Never below the peak level.
    pub fn threshold(&self, q: f64) -> f64 {
        if q.is_nan() || q <= 0.0 || q >= self.rate {
            return PEAK_LEVEL;
        }
        let r = q / self.rate; // < 1
        let x = if self.shape.abs() < 1e-9 {
            -self.scale * r.ln()
        } else {
            self.scale / self.shape * (r.powf(-self.shape) - 1.0)
        };
        PEAK_LEVEL + x
    }
}

impl Tail {
    /// Learns one score (`s >= 0`, e.g. |z|). Non-finite scores are ignored.
    pub fn learn(&mut self, s: f64) {
        if !s.is_finite() {
            return;
        }
        if self.n >= HORIZON {
            // Forget a tenth of everything at once (the ratios are kept): O(1), and the
            // model's memory stays about HORIZON scores long.
            self.n *= 0.9;
            self.peaks *= 0.9;
        }
        self.n += 1.0;
        if s > PEAK_LEVEL {
            // Excesses are clamped so one absurd score cannot swamp the moments.
            let y = (s - PEAK_LEVEL).min(1e3) as f32;
            self.peaks += 1.0;
            let w = 1.0 / self.peaks;
            self.m1 += w * (y - self.m1);
            self.m2 += w * (y * y - self.m2);
        }
    }

    /// The method-of-moments GPD fit of the excesses.
    pub fn fit(&self) -> Fit {
        let m = f64::from(self.m1).max(1e-6);
        let v = (f64::from(self.m2) - m * m).max(1e-12);
        let r = m * m / v;
        let shape = (0.5 * (1.0 - r)).clamp(-0.5, MAX_SHAPE);
        // σ from the clamped shape keeps the fitted mean excess: E[y] = σ / (1 - ξ).
        let scale = (m * (1.0 - shape)).max(1e-6);
        Fit {
            rate: f64::from(self.peaks / self.n),
            shape,
            scale,
        }
    }

    /// Scores learned, the prior included.
    pub fn count(&self) -> f64 {
        f64::from(self.n)
    }

    /// The key's threshold at `t` (event time, seconds): the fitted tail's score at risk
    /// `q` per reading, clamped to the detector's floor `lo` and ceiling `hi`, raised to
    /// a standing verdict's hold (never above `hi`).
    pub fn budgeted(&self, fit: &Fit, q: f64, lo: f64, hi: f64, t: i64) -> f64 {
        fit.threshold(q).clamp(lo, hi).max(self.held(t).min(hi))
    }

    /// The floor a verdict holds at `t` (0 when none holds).
    pub fn held(&self, t: i64) -> f64 {
        if t < i64::from(self.held_until) * 60 {
            f64::from(self.held)
        } else {
            0.0
        }
    }

    /// Applies an operator's false-alarm verdict: the threshold is held at
    /// [`VERDICT_MARGIN`] × its score until `period_s` after the episode opened. `now` is
    /// the key's latest event time: a verdict whose hold has already lapsed changes
    /// nothing, and a lapsed hold is replaced, not raised. Holds that overlap keep the
    /// higher floor and the later end, so the result does not depend on how often a
    /// verdict is applied. Returns whether the state changed.
    pub fn hold(&mut self, v: &Verdict, period_s: i64, now: i64) -> bool {
        if !v.score.is_finite() {
            return false;
        }
        let level = (v.score.abs() * VERDICT_MARGIN).min(f64::from(f32::MAX)) as f32;
        let end = v.opened.saturating_add(period_s.clamp(0, MAX_HOLD_SECS));
        // Whole minutes, rounded up, so a hold never ends before its period.
        let until = u32::try_from(end.max(0).div_euclid(60) + 1).unwrap_or(u32::MAX);
        if level <= 0.0 || i64::from(until) * 60 <= now {
            return false;
        }
        let before = (self.held, self.held_until);
        if self.held(now) == 0.0 {
            (self.held, self.held_until) = (level, until);
        } else {
            self.held = self.held.max(level);
            self.held_until = self.held_until.max(until);
        }
        before != (self.held, self.held_until)
    }
}

/// An operator's verdict that an episode was a false alarm, as the detectors take it: the
/// console learns it from the actions topic and the pipeline hands it to every detector
/// set, which applies it to the keys it holds (src/pipeline, "verdicts").
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub stream: crate::decode::Stream,
    pub detector: String,
    /// The detector's state key (a sensor id).
    pub key: String,
    /// When the episode opened (event time, seconds): its budget period starts there.
    pub opened: i64,
    /// The highest score of the episode the console saw, in the detector's own unit (its
    /// evidence's `score`, compared with `threshold`).
    pub score: f64,
}

impl Verdict {
    /// The verdict on episode `alert_id` (`stream:detector:key:opened`, as the alert
    /// policy names episodes) whose highest score was `score`.
    pub fn of_episode(alert_id: &str, score: f64) -> Option<Self> {
        let (stream, rest) = alert_id.split_once(':')?;
        let (detector, rest) = rest.split_once(':')?;
        let (key, opened) = rest.rsplit_once(':')?;
        Some(Self {
            stream: crate::decode::Stream::parse(stream)?,
            detector: detector.to_string(),
            key: key.to_string(),
            opened: opened.parse().ok()?,
            score: Some(score).filter(|s| s.is_finite())?,
        })
    }
}

/// One budget period: the time in which a key may raise one false alarm under a budget of
/// `per_day` false episodes per day (capped at [`MAX_HOLD_SECS`]).
pub fn budget_period_secs(per_day: f64) -> i64 {
    if per_day > 0.0 {
        (86_400.0 / per_day).min(MAX_HOLD_SECS as f64) as i64
    } else {
        MAX_HOLD_SECS
    }
}

/// What a budgeted detector learns of a series' motion, besides its scores: the
/// seconds between readings (a budget per day becomes one per reading) and the size of
/// its non-zero steps, its own resolution (a floor on its scale: a window of identical
/// readings of a quantized sensor must not make its next one-quantum step a 100-sigma
/// event). 20 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Motion {
    last_ts: i64,
    last_value: f32,
    /// EWMA of the seconds between in-order readings (0: none yet).
    interval: f32,
    /// EWMA of |x_t - x_{t-1}| over the non-zero steps (0: none yet).
    step: f32,
    /// Non-zero steps learned (saturating): the first ones are averaged plainly.
    steps: u16,
}

impl Default for Motion {
    fn default() -> Self {
        Self {
            last_ts: i64::MIN,
            last_value: 0.0,
            interval: 0.0,
            step: 0.0,
            steps: 0,
        }
    }
}

impl Motion {
    /// Learns from the reading `x` at `t` (seconds). Steps are learned only when
    /// `learn_step` (not from readings the detector judged anomalous); a late reading
    /// teaches neither.
    pub fn learn(&mut self, x: f64, t: i64, learn_step: bool) {
        let x = x.clamp(f64::from(f32::MIN), f64::from(f32::MAX)) as f32;
        if self.last_ts != i64::MIN && t > self.last_ts {
            let dt = (t - self.last_ts) as f32;
            self.interval = if self.interval > 0.0 {
                self.interval + 0.05 * (dt - self.interval)
            } else {
                dt
            };
            let d = (x - self.last_value).abs();
            if learn_step && d > 0.0 && d.is_finite() {
                // A plain mean of the first 50 steps, then an EWMA: one early spike (a
                // warm-up outlier) fades instead of setting the scale. Once a few steps
                // are known, one step counts at most four typical ones.
                self.steps = self.steps.saturating_add(1);
                let d = if self.steps > 4 {
                    d.min(4.0 * self.step)
                } else {
                    d
                };
                let w = (1.0 / f32::from(self.steps)).max(0.02);
                self.step += w * (d - self.step);
            }
        }
        if t >= self.last_ts {
            self.last_ts = t;
            self.last_value = x;
        }
    }

    /// The latest in-order reading's time (`i64::MIN` before the first).
    pub fn last_ts(&self) -> i64 {
        self.last_ts
    }

    /// Seconds between readings (60 until two have been seen).
    pub fn interval(&self) -> f64 {
        if self.interval > 0.0 {
            f64::from(self.interval)
        } else {
            60.0
        }
    }

    /// The typical non-zero step.
    pub fn step(&self) -> f64 {
        f64::from(self.step)
    }
}

/// How long the current episode of a key has lasted: a sustained shift becomes the key's
/// new normal once it has lasted both `relearn_after` of event time and
/// `relearn_readings` readings. 12 bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct EpisodeClock {
    start: i64,
    readings: u32,
}

impl EpisodeClock {
    /// Counts a firing reading at `t`; `opened` when it opens the episode. True once the
    /// episode has lasted long enough to be re-learned.
    pub fn tick(&mut self, t: i64, opened: bool, after_secs: i64, after_readings: u32) -> bool {
        if opened {
            self.start = t;
            self.readings = 0;
        }
        self.readings = self.readings.saturating_add(1);
        t.saturating_sub(self.start) >= after_secs && self.readings >= after_readings
    }
}

/// A learned scale is floored at this fraction of the series' typical step: for Gaussian
/// noise of σ the mean step is 1.13σ, so the floor (0.68σ) stays below the noise; for a
/// quantized series it is about half a quantum.
pub const STEP_FLOOR: f64 = 0.6;

/// The default budget: one false episode per key and detector every ten days.
pub const DEFAULT_FALSE_ALARMS_PER_DAY: f64 = 0.1;

/// Config check of a budget (false episodes per key and day).
pub fn validate_budget(b: f64, path: &str, problems: &mut Vec<String>) {
    if !(b > 0.0 && b <= 100.0) {
        problems.push(format!(
            "{path}: must be in (0, 100] false episodes per key and day"
        ));
    }
}

/// A false-alarm budget per key and day, turned into a risk per reading for a key that
/// reports every `interval_s` seconds.
pub fn risk_per_reading(per_day: f64, interval_s: f64) -> f64 {
    (per_day * interval_s.max(1e-3) / 86_400.0).clamp(1e-12, 0.5)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use statrs::distribution::{ContinuousCDF, Exp, Normal, Pareto};

    fn learned(dist: &impl ContinuousCDF<f64, f64>, n: usize, seed: u64) -> Tail {
        // Inverse-CDF sampling: the test's only randomness is the uniform draw.
        let mut rng = StdRng::seed_from_u64(seed);
        let mut t = Tail::default();
        for _ in 0..n {
            let u: f64 = rng.random_range(1e-12..1.0);
            t.learn(dist.inverse_cdf(u));
        }
        t
    }

    #[test]
    fn prior_is_the_gaussian_tail() {
        // The prior's constants against statrs: P(|Z| > 3) and the moments of the excess.
        let n = Normal::new(0.0, 1.0).unwrap();
        let p = 2.0 * (1.0 - n.cdf(3.0));
        assert!((p - f64::from(GAUSS_TAIL)).abs() < 1e-4, "{p}");
        // E[|Z| - 3 | |Z| > 3] and E[(|Z| - 3)^2 | ...] by the trapezoid rule.
        let (mut m0, mut m1, mut m2) = (0.0, 0.0, 0.0);
        let h = 1e-4;
        let mut x = 3.0;
        while x < 12.0 {
            let d = (-(x * x) / 2.0f64).exp();
            m0 += d;
            m1 += d * (x - 3.0);
            m2 += d * (x - 3.0) * (x - 3.0);
            x += h;
        }
        assert!((m1 / m0 - f64::from(GAUSS_M1)).abs() < 2e-3, "{}", m1 / m0);
        assert!((m2 / m0 - f64::from(GAUSS_M2)).abs() < 2e-3, "{}", m2 / m0);
        // A fresh key's threshold at one false alarm per million readings is the Gaussian
        // two-sided quantile (4.89) within the moment fit's error.
        let z = Tail::default().fit().threshold(1e-6);
        assert!((4.5..5.3).contains(&z), "{z}");
    }

    #[test]
    fn exponential_scores_give_the_exponential_quantile() {
        // Exp(1): P(S > s) = e^-s, so the threshold at risk q is -ln q (13.8 at 1e-6).
        let t = learned(&Exp::new(1.0).unwrap(), 200_000, 1);
        let f = t.fit();
        assert!(f.shape.abs() < 0.06, "{f:?}");
        assert!((f.rate - (-3.0f64).exp()).abs() < 0.005, "{f:?}");
        let z = f.threshold(1e-6);
        assert!((z - 1e6f64.ln()).abs() < 1.0, "{z}");
        let p = f.tail_probability(10.0);
        assert!((p / (-10.0f64).exp() - 1.0).abs() < 0.3, "{p}");
    }

    #[test]
    fn pareto_scores_raise_the_threshold_far_above_gaussian() {
        // Pareto(scale 1, shape 4): P(S > s) = s^-4 (ξ = 1/4); at q = 1e-6, s = 31.6.
        let d = Pareto::new(1.0, 4.0).unwrap();
        let t = learned(&d, 200_000, 2);
        let f = t.fit();
        assert!((f.shape - 0.25).abs() < 0.1, "{f:?}");
        let z = f.threshold(1e-6);
        assert!((z / 31.6 - 1.0).abs() < 0.35, "{z}");
        // The same key under the Gaussian prior would have fired at ~5.
        assert!(z > 3.0 * Tail::default().fit().threshold(1e-6));
    }

    #[test]
    fn threshold_and_tail_probability_are_inverse() {
        let t = learned(&Pareto::new(1.0, 3.0).unwrap(), 50_000, 3);
        let f = t.fit();
        for q in [1e-3, 1e-5, 1e-7] {
            let z = f.threshold(q);
            assert!(
                (f.tail_probability(z) / q - 1.0).abs() < 1e-6,
                "q {q} z {z}"
            );
        }
        // Below the peaks' own rate the threshold is the peak level itself.
        assert_eq!(f.threshold(0.9), PEAK_LEVEL);
    }

    #[test]
    fn memory_is_bounded_and_state_stays_finite() {
        let mut t = Tail::default();
        for i in 0..1_000_000u32 {
            t.learn(if i % 2 == 0 { 1e308 } else { f64::MIN_POSITIVE });
            t.learn(f64::NAN);
        }
        assert!(t.count() <= f64::from(HORIZON) + 1.0);
        let f = t.fit();
        assert!(f.rate.is_finite() && f.shape.is_finite() && f.scale.is_finite());
        assert!(f.threshold(1e-6).is_finite());
    }

    #[test]
    fn risk_per_reading_scales_with_the_interval() {
        // One false alarm per 10 days: per 5-minute reading 1/2880, per second 1/864000.
        assert!((risk_per_reading(0.1, 300.0) - 0.1 / 288.0).abs() < 1e-12);
        assert!((risk_per_reading(0.1, 1.0) - 0.1 / 86_400.0).abs() < 1e-15);
    }

    const T0: i64 = 1_764_115_200; // 2026-11-26T00:00:00Z
    const DAY: i64 = 86_400;

    fn verdict(score: f64, opened: i64) -> Verdict {
        Verdict {
            stream: crate::decode::Stream::Sensors,
            detector: "robust_z".into(),
            key: "S1".into(),
            opened,
            score,
        }
    }

    #[test]
    fn a_verdict_holds_the_threshold_above_the_false_score_for_one_budget_period() {
        // A fresh key reporting every 5 minutes under 0.1 false alarms a day: its tail's
        // threshold (~3.6) is under robust_z's floor of 7, so T = 7.
        let mut t = Tail::default();
        let q = risk_per_reading(0.1, 300.0);
        let f = t.fit();
        assert_eq!(t.budgeted(&f, q, 7.0, 30.0, T0), 7.0);
        // Operators judge an episode that opened at T0 with score 10 a false alarm: the
        // threshold becomes 1.2 x 10 = 12 for 1 / 0.1 = 10 days.
        let period = budget_period_secs(0.1);
        assert_eq!(period, 10 * DAY);
        assert!(t.hold(&verdict(10.0, T0), period, T0 + 600));
        assert_eq!(t.budgeted(&f, q, 7.0, 30.0, T0 + 3600), 12.0);
        assert_eq!(t.budgeted(&f, q, 7.0, 30.0, T0 + 10 * DAY - 1), 12.0);
        // The hold ends on the minute after its period: the key has its budget back.
        assert_eq!(t.budgeted(&f, q, 7.0, 30.0, T0 + 10 * DAY + 60), 7.0);
        // The same verdict again (a replay after a restore) changes nothing.
        let held = t;
        assert!(!t.hold(&verdict(10.0, T0), period, T0 + 7200));
        assert_eq!(t, held);
        // Never above the detector's ceiling: 1.2 x 28 = 33.6 is held as 30.
        let mut c = Tail::default();
        c.hold(&verdict(28.0, T0), period, T0);
        assert_eq!(c.budgeted(&f, q, 7.0, 30.0, T0 + 60), 30.0);
        // A physical-limit-like budget of 100 a day holds 864 s (14.4 minutes), rounded
        // up to the minute.
        let mut m = Tail::default();
        m.hold(&verdict(10.0, T0), budget_period_secs(100.0), T0);
        assert_eq!(m.held(T0 + 864), 12.0);
        assert_eq!(m.held(T0 + 900), 0.0);
    }

    #[test]
    fn overlapping_verdicts_keep_the_higher_floor_and_the_later_end_in_any_order() {
        let period = budget_period_secs(0.1);
        let (a, b) = (verdict(10.0, T0), verdict(8.0, T0 + DAY));
        let mut ab = Tail::default();
        assert!(ab.hold(&a, period, T0));
        assert!(ab.hold(&b, period, T0 + DAY), "the end moves to day 11");
        let mut ba = Tail::default();
        ba.hold(&b, period, T0 + DAY);
        ba.hold(&a, period, T0 + DAY);
        assert_eq!(ab, ba);
        assert_eq!(ab.held(T0 + 10 * DAY + 3600), 12.0, "12 held to day 11");
        assert_eq!(ab.held(T0 + 11 * DAY + 60), 0.0);
        // A verdict whose period has passed at the key's time does nothing; one after a
        // lapsed hold replaces it (9.6, not the old 12).
        let mut late = ab;
        assert!(!late.hold(&a, period, T0 + 12 * DAY));
        assert!(late.hold(&verdict(8.0, T0 + 12 * DAY), period, T0 + 12 * DAY));
        assert!((late.held(T0 + 12 * DAY + 60) - 9.6).abs() < 1e-5);
        // A score that is not finite is no verdict.
        assert!(!Tail::default().hold(&verdict(f64::NAN, T0), period, T0));
    }

    /// A detector state's shape: the tail between two other fields.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Holder {
        before: u8,
        tail: Tail,
        after: u16,
    }

    #[test]
    fn a_tail_without_a_hold_keeps_the_layout_of_before_verdicts() {
        // What a record written before verdicts holds: the four moments in field order.
        #[derive(Serialize)]
        struct Before {
            before: u8,
            tail: (f32, f32, f32, f32),
            after: u16,
        }
        let t = learned(&Exp::new(1.0).unwrap(), 5_000, 4);
        let old = postcard::to_stdvec(&Before {
            before: 7,
            tail: (t.n, t.peaks, t.m1, t.m2),
            after: 513,
        })
        .unwrap();
        let h = Holder {
            before: 7,
            tail: t,
            after: 513,
        };
        assert_eq!(postcard::to_stdvec(&h).unwrap(), old, "written as before");
        assert_eq!(postcard::from_bytes::<Holder>(&old).unwrap(), h);
        // With a hold: 4 + 4 + 1..5 bytes more, and the field after it still in place.
        let mut held = h;
        held.tail.hold(&verdict(10.0, T0), 10 * DAY, T0);
        let bytes = postcard::to_stdvec(&held).unwrap();
        assert!(bytes.len() > old.len() + 4);
        assert_eq!(postcard::from_bytes::<Holder>(&bytes).unwrap(), held);
    }

    #[test]
    fn a_verdict_names_its_episode() {
        let v = Verdict::of_episode("sensors:cusum:S-330503-0042-PRES1:1764116100", 11.5);
        assert_eq!(
            v,
            Some(Verdict {
                stream: crate::decode::Stream::Sensors,
                detector: "cusum".into(),
                key: "S-330503-0042-PRES1".into(),
                opened: 1_764_116_100,
                score: 11.5,
            })
        );
        assert_eq!(Verdict::of_episode("sensors:cusum:1764116100", 1.0), None);
        assert_eq!(Verdict::of_episode("x:cusum:S1:1764116100", 1.0), None);
        assert_eq!(Verdict::of_episode("sensors:cusum:S1:1", f64::NAN), None);
    }

    /// One budgeted detector fed a noisy series with spikes, and a twin fed the same
    /// without the verdict: what the verdict changes is the only difference.
    mod in_detectors {
        use crate::decode::{Event, Stream};
        use crate::detect::tail::Verdict;
        use crate::detect::testutil::raw_reading;
        use crate::detect::{Detector, DetectorConfig, Evidence, SignalKind};

        const EVERY: i64 = 60;

        fn build(toml: &str) -> Box<dyn Detector> {
            let c: DetectorConfig = toml::from_str(toml).unwrap();
            c.build(Stream::Sensors, &crate::pipeline::test_ctx())
        }

        /// Readings `from..to` (in steps) around 50 with uniform noise of ±1, and a
        /// spike of `spike` at step `at`.
        fn series(from: i64, to: i64, at: i64, spike: f64) -> Vec<Event> {
            (from..to)
                .map(|i| {
                    // A small LCG keyed by the step: the same noise in every run.
                    let u = (i as u64)
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1_442_695_040_888_963_407);
                    let noise = ((u >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0;
                    let v = 50.0 + noise + if i == at { spike } else { 0.0 };
                    raw_reading("S1", "pressure", i * EVERY, v)
                })
                .collect()
        }

        /// The evidence of each episode `d` opens over `evs`: its first anomalous signal
        /// (a detector signals every anomalous reading, and `Clear` once after them).
        fn opened(d: &mut dyn Detector, evs: &[Event]) -> Vec<Evidence> {
            let mut out = Vec::new();
            for ev in evs {
                d.observe(ev, false, &mut out);
            }
            let mut open = false;
            let mut firsts = Vec::new();
            for s in out {
                match s.kind {
                    SignalKind::Anomalous { evidence, .. } => {
                        if !open {
                            firsts.push(evidence);
                        }
                        open = true;
                    }
                    SignalKind::Clear => open = false,
                }
            }
            firsts
        }

        /// Fires on a spike of `spike`, takes a verdict on its score s, then: the same
        /// spike fires only in the twin (unless 1.2 s passes the ceiling `max`: then in
        /// both), and one of 4 x `spike` fires against the held threshold, min(1.2 s, max).
        fn check(toml: &str, spike: f64, max: f64) {
            let (mut d, mut twin) = (build(toml), build(toml));
            let first = series(0, 200, 150, spike);
            let e = opened(d.as_mut(), &first);
            assert_eq!(e, opened(twin.as_mut(), &first), "{toml}");
            // One run, or for cusum a few: its sum lingers around h after a spike.
            assert!(!e.is_empty(), "{toml}: the spike fires");
            let (s, t) = (e[0].score, e[0].threshold);
            let name = d.name();
            let at = first[150].ts().timestamp();
            let v = Verdict::of_episode(&format!("sensors:{name}:S1:{at}"), s).unwrap();
            assert!(d.verdict(&v), "{name}: the key is held");
            assert!(!d.verdict(&v), "{name}: a second time changes nothing");
            let other = Verdict {
                key: "S2".into(),
                ..v.clone()
            };
            assert!(!d.verdict(&other), "{name}: a key not held is ignored");
            let again = series(200, 400, 350, spike);
            let e2 = opened(twin.as_mut(), &again);
            assert!(!e2.is_empty(), "{name}: without the verdict it fires again");
            let e2d = opened(d.as_mut(), &again);
            if 1.2 * s.abs() < max {
                assert!(e2d.is_empty(), "{name}: held above it: {e2d:?}");
            } else {
                // Held at the ceiling, which the spike passes: it still fires.
                assert!(!e2d.is_empty(), "{name}: {s} is above the ceiling {max}");
                assert_eq!(e2d[0].threshold, max, "{name}");
            }
            let larger = series(400, 600, 550, 4.0 * spike);
            let e3 = opened(d.as_mut(), &larger);
            assert!(!e3.is_empty(), "{name}: a much larger one still fires");
            let held = (1.2 * s.abs()).min(max);
            assert!(held > t, "{name}: {held} > {t}");
            assert!(
                (e3[0].threshold - held).abs() < 0.01,
                "{name}: {e3:?} vs {held}"
            );
        }

        #[test]
        fn a_verdict_raises_the_threshold_of_robust_z_ewma_z_and_cusum() {
            check("type = \"robust_z\"\nz_threshold = 7.0", 7.0, 30.0);
            check("type = \"ewma_z\"\nz_threshold = 5.0", 6.0, 15.0);
            // A score of 17 is held at the ceiling of 15 (3 x z_threshold).
            check("type = \"ewma_z\"\nz_threshold = 5.0", 9.0, 15.0);
            check("type = \"cusum\"\nh = 5.0", 5.0, 40.0);
        }
    }

    #[test]
    fn state_is_24_bytes() {
        assert_eq!(std::mem::size_of::<Tail>(), 24);
    }
}
