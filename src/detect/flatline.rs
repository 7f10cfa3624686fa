//! `flatline` (sensors): a sensor repeats (near) the same value for far longer than it
//! ever does in normal operation: it is stuck, and a stuck gas or H2S sensor is a blind
//! spot at a hazardous site.
//!
//! A run starts at an anchor reading; every later reading that is "the same value" extends
//! the run, any other starts a new one. The same value: within `tolerance` of the anchor
//! (absolute, in the kind's unit; `tolerances` overrides it per kind), or within half the
//! series' own learned resolution. The resolution is a running 10% quantile of the
//! non-zero steps between consecutive readings (tracked in log2, so O(1)): for a quantized
//! series it settles just under one quantum, so sub-quantum noise (a gateway's float
//! rounding) is the same value, but a one-quantum toggle between two levels is movement:
//! a live quantized sensor proves itself alive by toggling, a frozen transmitter repeats
//! exactly, and a two-level series treated as "the same" would form endless runs that
//! hide a real freeze (issue #18).
//!
//! Real series repeat routinely (a flow meter at 32.0 for hours, integer percentages), so
//! the detector learns per key how long its normal runs are: a decaying maximum of the
//! completed, non-stuck runs, in readings and in event time (`NORM_DECAY` per completed
//! run, so one shutdown's long run is forgotten over ~70 runs). A run is stuck when it has
//! lasted longer than `max(max_duration, run_factor x normal run time)` *and* holds at
//! least `max(min_readings, run_factor x normal run readings)` readings. No verdict before
//! the key has seen `min_samples` readings, nor on a run that began during that warm-up
//! (a series constant since its first reading cannot be told from a stuck one). The key
//! signals Anomalous once the run is stuck, refreshes on each later reading of the run
//! (one episode: the policy folds refreshes), and clears once, when the value moves.
//! Out-of-order readings (older than the newest of the key) are ignored. The level is
//! fixed by `level` (default yellow), not by the score. State per key: 56 bytes.
//!
//! Score: the smaller of `from_ratio(duration, time limit)` and `from_ratio(readings,
//! readings limit)`, so it passes 0.5 exactly when both conditions hold. Evidence:
//! `observed` is the stuck (anchor) value, `expected` the tolerance in use (a live sensor
//! moves by more than this), `score` the run's duration in minutes against `threshold`
//! the time limit in minutes, `window` is `max_duration`.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};

use super::sensor_signal;
use super::{
    fmt_duration, score, BuildCtx, Detector, DetectorSpec, Evidence, KeyedState, Signal, SignalKind,
};
use crate::decode::{Event, Stream};
use crate::signal::Level;

pub const NAME: &str = "flatline";

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FlatlineConfig {
    /// Sensor kinds this instance watches; empty = every kind.
    #[serde(default)]
    pub kinds: Vec<String>,
    /// Largest change from the anchor that still counts as the same value (absolute;
    /// default 0: an exact repeat).
    #[serde(default)]
    pub tolerance: f64,
    /// Per-kind overrides of `tolerance` (default none).
    #[serde(default)]
    pub tolerances: BTreeMap<String, f64>,
    /// A run longer than this (event time) is a flatline (default 30m).
    #[serde(default = "default_max_duration", with = "humantime_serde")]
    pub max_duration: Duration,
    /// ... and only with at least this many readings (default 10).
    #[serde(default = "default_min_readings")]
    pub min_readings: u32,
    /// A run is stuck only when it is also this many times longer (in readings and in
    /// time) than the longest normal run the key has shown (default 4).
    #[serde(default = "default_run_factor")]
    pub run_factor: f64,
    /// Readings a key must have seen before any verdict (default 100: 50 minutes of a
    /// 30 s sensor, 8 hours of a 5-minute one).
    #[serde(default = "default_min_samples")]
    pub min_samples: u32,
    /// The alert level of a stuck sensor (default yellow).
    #[serde(default = "default_level")]
    pub level: Level,
    /// Keys idle longer than this are forgotten (default 6h).
    #[serde(default = "default_ttl", with = "humantime_serde")]
    pub ttl: Duration,
}

fn default_max_duration() -> Duration {
    Duration::from_secs(30 * 60)
}
fn default_min_readings() -> u32 {
    10
}
fn default_run_factor() -> f64 {
    4.0
}
fn default_min_samples() -> u32 {
    100
}
fn default_level() -> Level {
    Level::Yellow
}
fn default_ttl() -> Duration {
    Duration::from_secs(6 * 3600)
}

impl Default for FlatlineConfig {
    fn default() -> Self {
        Self {
            kinds: Vec::new(),
            tolerance: 0.0,
            tolerances: BTreeMap::new(),
            max_duration: default_max_duration(),
            min_readings: default_min_readings(),
            run_factor: default_run_factor(),
            min_samples: default_min_samples(),
            level: default_level(),
            ttl: default_ttl(),
        }
    }
}

fn valid_tolerance(t: f64) -> bool {
    t >= 0.0 && t.is_finite()
}

impl DetectorSpec for FlatlineConfig {
    const NAME: &'static str = NAME;
    const STREAMS: &'static [Stream] = &[Stream::Sensors];
    type Runtime = Flatline;

    fn validate(&self, path: &str, problems: &mut Vec<String>) {
        if !valid_tolerance(self.tolerance) {
            problems.push(format!("{path}.tolerance: must be >= 0"));
        }
        for (kind, t) in &self.tolerances {
            if !valid_tolerance(*t) {
                problems.push(format!("{path}.tolerances.{kind}: must be >= 0"));
            }
        }
        if self.max_duration < Duration::from_secs(1) {
            problems.push(format!("{path}.max_duration: must be >= 1s"));
        }
        if self.min_readings < 2 {
            problems.push(format!("{path}.min_readings: must be >= 2"));
        }
        if !(self.run_factor >= 1.0 && self.run_factor.is_finite()) {
            problems.push(format!("{path}.run_factor: must be >= 1"));
        }
        if self.ttl.is_zero() {
            problems.push(format!("{path}.ttl: must be > 0"));
        }
    }

    fn build(&self, _stream: Stream, _ctx: &BuildCtx) -> Flatline {
        Flatline {
            cfg: self.clone(),
            max_secs: self.max_duration.as_secs().max(1) as i64,
            window: fmt_duration(self.max_duration),
            state: KeyedState::new(self.ttl),
        }
    }
}

/// Each completed normal run: the learned normal run shrinks by this factor before the
/// new run may raise it (a decaying maximum).
const NORM_DECAY: f32 = 0.99;
/// The resolution is this quantile of the non-zero steps ...
const RES_QUANTILE: f32 = 0.1;
/// ... tracked in log2 with this step (a factor 2^0.5 per step below, 2^0.05 above).
const RES_RATE: f32 = 0.5;

/// The current run of one sensor and what the key has learned. 56 bytes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FlatState {
    anchor: f64,
    /// The previous reading: its step to the next teaches the resolution.
    prev: f64,
    /// Event time of the anchor (the run's start) and of the newest reading.
    anchor_t: i64,
    last_t: i64,
    /// Readings in the run, the anchor included; 0 = no reading yet.
    count: u32,
    /// Readings of the key so far (saturating): the warm-up, and whether the run began
    /// after it (`seen - count` readings came before the run).
    seen: u32,
    /// log2 of the resolution, once `res_known`.
    log_res: f32,
    /// The longest normal run, decaying: readings and seconds.
    norm_n: f32,
    norm_secs: f32,
    alerting: bool,
    res_known: bool,
}

/// The 32-byte state before issue #18, read from changelogs written by older versions.
#[derive(Deserialize)]
struct FlatStateV1 {
    anchor: f64,
    anchor_t: i64,
    last_t: i64,
    count: u32,
    alerting: bool,
}

/// The layout of a changelog entry ([`KeyedState`]'s), to tell the versions apart.
#[derive(Deserialize)]
struct Stored<S> {
    _state: S,
    _last_seen: i64,
}

impl FlatState {
    /// A run carried over from an older version: judged at once, as it would have been.
    fn from_v1(o: FlatStateV1, min_samples: u32) -> Self {
        Self {
            anchor: o.anchor,
            prev: o.anchor,
            anchor_t: o.anchor_t,
            last_t: o.last_t,
            count: o.count,
            seen: o.count.saturating_add(min_samples),
            alerting: o.alerting,
            ..Default::default()
        }
    }

    /// Learns from the step `prev -> v` (the resolution).
    fn learn_step(&mut self, v: f64) {
        let d = (v - self.prev).abs();
        self.prev = v;
        if !(d > 0.0 && d.is_finite()) {
            return;
        }
        let x = (d.log2() as f32).clamp(-200.0, 200.0);
        if !self.res_known {
            self.log_res = x;
            self.res_known = true;
        } else if x < self.log_res {
            self.log_res -= RES_RATE * (1.0 - RES_QUANTILE);
        } else {
            self.log_res += RES_RATE * RES_QUANTILE;
        }
    }

    /// The largest change from the anchor that is still the same value.
    fn same_within(&self, tol: f64) -> f64 {
        if self.res_known {
            tol.max(0.5 * f64::from(self.log_res).exp2())
        } else {
            tol
        }
    }

    /// A run ended without having been stuck: it is normal for this key.
    /// `end`: the event time of the run's last reading.
    fn learn_run(&mut self, end: i64) {
        let secs = (end - self.anchor_t).max(0) as f32;
        self.norm_n = (self.norm_n * NORM_DECAY).max(self.count as f32);
        self.norm_secs = (self.norm_secs * NORM_DECAY).max(secs);
    }
}

pub struct Flatline {
    cfg: FlatlineConfig,
    max_secs: i64,
    window: String,
    state: KeyedState<FlatState>,
}

impl Flatline {
    /// The run limits for a key that learned `st`: (seconds, readings).
    fn limits(&self, st: &FlatState) -> (f64, f64) {
        let f = self.cfg.run_factor;
        (
            (self.max_secs as f64).max(f * f64::from(st.norm_secs)),
            f64::from(self.cfg.min_readings).max((f * f64::from(st.norm_n)).ceil()),
        )
    }
}

/// A run's duration as operators write it, to the minute once it is a minute long.
fn fmt_run(secs: i64) -> String {
    let s = secs.max(0) as u64;
    fmt_duration(Duration::from_secs(if s >= 60 { s / 60 * 60 } else { s }))
}

impl Detector for Flatline {
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
        let tol = *self
            .cfg
            .tolerances
            .get(&r.kind)
            .unwrap_or(&self.cfg.tolerance);
        let (min_samples, level) = (self.cfg.min_samples, self.cfg.level);
        let st = *self.state.touch(&r.sensor_id, r.ts);
        let t = r.ts.timestamp();
        if st.count > 0 && t < st.last_t {
            return 0.0;
        }
        let mut st = st;
        let first = st.count == 0;
        if !first {
            st.learn_step(value);
        } else {
            st.prev = value;
        }
        st.seen = st.seen.saturating_add(1);
        let end = st.last_t;
        st.last_t = t;
        let tol = st.same_within(tol);
        let kind = if first || (value - st.anchor).abs() > tol {
            // The value moved: a new run starts here; the one that ended was normal unless
            // it was stuck (a stuck run must not teach the key that stuck is normal).
            let was = st.alerting;
            if !first && !was {
                st.learn_run(end);
            }
            st.anchor = value;
            st.anchor_t = t;
            st.count = 1;
            st.alerting = false;
            *self.state.touch(&r.sensor_id, r.ts) = st;
            if !was {
                return 0.0;
            }
            SignalKind::Clear
        } else {
            st.count = st.count.saturating_add(1);
            let dur = t - st.anchor_t;
            let (lim_secs, lim_n) = self.limits(&st);
            let s = score::from_ratio(dur as f64, lim_secs)
                .min(score::from_ratio(f64::from(st.count), lim_n));
            let judged = st.seen.saturating_sub(st.count) >= min_samples;
            if !(judged && dur as f64 > lim_secs && f64::from(st.count) >= lim_n) {
                *self.state.touch(&r.sensor_id, r.ts) = st;
                return if judged { s } else { s.min(0.49) };
            }
            st.alerting = true;
            *self.state.touch(&r.sensor_id, r.ts) = st;
            let mins = |secs: f64| (secs / 60.0 * 10.0).round() / 10.0;
            SignalKind::Anomalous {
                score: s,
                level: Some(level),
                title: format!(
                    "{} sensor stuck at {:.2} for {} at {}",
                    super::point_label(r),
                    st.anchor,
                    fmt_run(dur),
                    super::site_label(r)
                ),
                evidence: Evidence {
                    observed: st.anchor,
                    expected: tol,
                    score: mins(dur as f64),
                    threshold: mins(lim_secs),
                    window: self.window.clone(),
                    p_value: None,
                    false_alarms_per_day: None,
                },
            }
        };
        let s = match &kind {
            SignalKind::Anomalous { score, .. } => *score,
            SignalKind::Clear => 0.0,
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

    fn track_changes(&mut self) {
        self.state.track_changes();
    }
    fn take_dirty(&mut self, out: &mut Vec<Box<str>>) {
        self.state.take_dirty(out);
    }
    fn save(&self, key: &str) -> Option<Vec<u8>> {
        self.state.save(key)
    }
    /// Today's layout when it reads back exactly (postcard ignores trailing bytes, so
    /// "exactly" is what tells it from the shorter layout of before); else the 32-byte
    /// layout before issue #18.
    fn restore(&mut self, key: &str, bytes: &[u8]) -> Result<(), crate::state::StateError> {
        match postcard::take_from_bytes::<Stored<FlatState>>(bytes) {
            Ok((_, [])) => self.state.restore(key, bytes),
            _ => {
                let m = self.cfg.min_samples;
                self.state
                    .restore_with(key, bytes, |o: FlatStateV1| FlatState::from_v1(o, m))
            }
        }
    }
    fn forget(&mut self, key: &str) {
        self.state.remove(key);
    }
    fn reserve(&mut self, additional: usize) {
        self.state.reserve(additional);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::SensorStatus;
    use crate::detect::testutil::reading;
    use proptest::prelude::*;

    fn det(cfg: FlatlineConfig) -> Flatline {
        cfg.build(Stream::Sensors, &crate::pipeline::test_ctx())
    }

    /// `n` live readings of `id` every 30 s from `t0` (no two in a row equal), so the key
    /// is past its warm-up with short normal runs. Returns the next free time.
    fn warm(d: &mut Flatline, id: &str, kind: &str, t0: i64, n: i64) -> i64 {
        let mut out = Vec::new();
        for i in 0..n {
            let v = 3.0 + [0.0, 0.13, 0.05, 0.21, 0.38][(i % 5) as usize];
            d.observe(&reading(id, kind, t0 + i * 30, v), false, &mut out);
        }
        assert!(out.is_empty(), "{out:?}");
        t0 + n * 30
    }

    /// Feeds `values` every `period` s from `t0`; returns the signals.
    fn feed(d: &mut Flatline, id: &str, t0: i64, period: i64, values: &[f64]) -> Vec<Signal> {
        let mut out = Vec::new();
        for (i, v) in values.iter().enumerate() {
            d.observe(
                &reading(id, "pressure", t0 + i as i64 * period, *v),
                false,
                &mut out,
            );
        }
        out
    }

    /// Event time of a `reading` at `secs`.
    fn out_ts(secs: i64) -> i64 {
        reading("X", "pressure", secs, 0.0).ts().timestamp()
    }

    fn counts(sigs: &[Signal]) -> (usize, usize) {
        let a = sigs
            .iter()
            .filter(|s| matches!(s.kind, SignalKind::Anomalous { .. }))
            .count();
        (a, sigs.len() - a)
    }

    /// Episodes as the policy would see them: Anomalous after none or a Clear opens one.
    fn episodes(sigs: &[Signal]) -> usize {
        let mut open = false;
        let mut n = 0;
        for s in sigs {
            match s.kind {
                SignalKind::Anomalous { .. } if !open => {
                    open = true;
                    n += 1;
                }
                SignalKind::Clear => open = false,
                _ => {}
            }
        }
        n
    }

    #[test]
    fn quantized_two_level_series_never_fires() {
        // A transmitter with 0.5-unit steps toggling between two levels, with long
        // stretches on one of them (up to 8 readings), for a day at 1-minute readings.
        let mut d = det(FlatlineConfig::default());
        let mut vals = Vec::new();
        for i in 0..1440 {
            let hold = 1 + (i % 8);
            vals.extend(std::iter::repeat_n(
                if i % 2 == 0 { 32.0 } else { 32.5 },
                hold,
            ));
        }
        vals.truncate(1440);
        let out = feed(&mut d, "P", 0, 60, &vals);
        assert!(out.is_empty(), "{out:?}");
        // Sub-quantum noise (float rounding) is the same value, one quantum is not.
        let st = d.state.get("P").unwrap();
        let within = st.same_within(0.0);
        assert!((0.1..0.5).contains(&within), "{within}");
    }

    #[test]
    fn stuck_sensor_fires_once_and_clears_once() {
        let mut d = det(FlatlineConfig::default());
        let t0 = warm(&mut d, "P", "pressure", 0, 150);
        // Stuck at 3.1 for 90 minutes, then moving again.
        let mut vals = vec![3.1; 180];
        vals.extend([3.2, 3.3, 3.25, 3.4]);
        let out = feed(&mut d, "P", t0, 30, &vals);
        assert_eq!(episodes(&out), 1);
        let (_, clears) = counts(&out);
        assert_eq!(clears, 1);
        assert_eq!(out.last().unwrap().kind, SignalKind::Clear);
    }

    #[test]
    fn routinely_constant_series_fires_only_on_a_far_longer_run() {
        // Constant for 20 readings at a time (1-minute readings), then a small move.
        let mut d = det(FlatlineConfig::default());
        let mut vals = Vec::new();
        for i in 0..30 {
            vals.extend(std::iter::repeat_n(10.0 + f64::from(i % 3), 20));
        }
        let out = feed(&mut d, "P", 0, 60, &vals);
        assert!(out.is_empty(), "{out:?}");
        let t = vals.len() as i64 * 60;
        // 70 readings (70 minutes) is past max_duration but under 4 x its normal run.
        let mut d2 = det(FlatlineConfig::default());
        feed(&mut d2, "P", 0, 60, &vals);
        let out = feed(
            &mut d2,
            "P",
            t,
            60,
            &[[7.0; 70].as_slice(), &[8.0]].concat(),
        );
        assert!(out.is_empty(), "{out:?}");
        // 4 x the normal run (20) is 80 readings: a 100-reading run fires, once.
        let out = feed(
            &mut d,
            "P",
            t,
            60,
            &[[9.0; 100].as_slice(), &[8.0]].concat(),
        );
        assert_eq!(episodes(&out), 1);
        let first = out[0].ts.timestamp() - out_ts(t);
        assert!(first >= 79 * 60, "fired {first} s into the run");
        assert_eq!(counts(&out).1, 1);
    }

    #[test]
    fn no_verdict_during_warm_up_nor_on_a_run_from_the_start() {
        let mut d = det(FlatlineConfig::default());
        // Constant from the first reading on, for 5 hours: indistinguishable from a
        // series that is simply constant.
        let out = feed(&mut d, "P", 0, 30, &[4.0; 600]);
        assert!(out.is_empty());
    }

    #[test]
    fn restores_the_state_of_before_issue_18() {
        #[derive(Serialize)]
        struct V1 {
            anchor: f64,
            anchor_t: i64,
            last_t: i64,
            count: u32,
            alerting: bool,
        }
        let old = crate::state::codec::encode(&(
            V1 {
                anchor: 3.1,
                anchor_t: 0,
                last_t: 1800,
                count: 61,
                alerting: false,
            },
            1800i64,
        ));
        let mut d = det(FlatlineConfig::default());
        d.restore("G", &old).unwrap();
        // The run goes on and is judged as before: the next reading past 30 min fires.
        let mut out = Vec::new();
        d.observe(&reading("G", "gas_lel", 1830, 3.1), false, &mut out);
        assert_eq!(counts(&out), (1, 0));
        // Today's layout round-trips.
        let now = d.save("G").unwrap();
        let mut e = det(FlatlineConfig::default());
        e.restore("G", &now).unwrap();
        assert_eq!(e.state.get("G"), d.state.get("G"));
    }

    #[test]
    fn stuck_sensor_fires_after_max_duration_and_clears_once_when_it_moves() {
        let mut d = det(FlatlineConfig::default());
        let t0 = warm(&mut d, "G", "gas_lel", -120 * 30, 120);
        assert_eq!(t0, 0);
        let mut out = Vec::new();
        let mut first = None;
        // 3.1 repeated every 30 s for 40 minutes.
        for i in 0..=80i64 {
            out.clear();
            let s = d.observe(&reading("G", "gas_lel", i * 30, 3.1), false, &mut out);
            assert!((s > 0.5) == (i * 30 > 1800), "{i} {s}");
            if first.is_none() && !out.is_empty() {
                first = Some((i, out[0].kind.clone()));
            }
        }
        let (i, kind) = first.unwrap();
        assert_eq!(i, 61, "first reading more than 30m into the run");
        let SignalKind::Anomalous {
            level,
            title,
            evidence,
            ..
        } = kind
        else {
            panic!()
        };
        assert_eq!(level, Some(Level::Yellow));
        assert_eq!(
            title,
            "Gas LEL sensor stuck at 3.10 for 30m at SITE-330503-0042"
        );
        assert_eq!(evidence.observed, 3.1);
        // Half the learned resolution (the warm-up's smallest steps are 0.05..0.08).
        assert!((0.01..0.05).contains(&evidence.expected), "{evidence:?}");
        assert_eq!((evidence.score, evidence.threshold), (30.5, 30.0));
        assert_eq!(evidence.window, "30m");
        out.clear();
        d.observe(&reading("G", "gas_lel", 2460, 3.2), false, &mut out);
        d.observe(&reading("G", "gas_lel", 2490, 3.3), false, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].kind, SignalKind::Clear);
    }

    #[test]
    fn few_readings_or_noise_or_faults_do_not_fire() {
        let mut d = det(FlatlineConfig {
            tolerances: BTreeMap::from([("pressure".to_string(), 0.001)]),
            min_samples: 0,
            ..Default::default()
        });
        let mut out = Vec::new();
        // Same value but only 5 readings over 2 hours.
        for i in 0..5 {
            d.observe(&reading("G", "gas_lel", i * 1800, 3.0), false, &mut out);
        }
        // Noise larger than the tolerance keeps restarting the run.
        for i in 0..200 {
            let v = 1.0 + [0.0, 0.002, -0.002][(i % 3) as usize];
            d.observe(&reading("P", "pressure", i * 30, v), false, &mut out);
        }
        // Faulted readings are not part of the run, and change nothing.
        for i in 0..100 {
            let Event::Sensor(mut r) = reading("T", "temperature", i * 30, 40.0) else {
                panic!()
            };
            r.status = SensorStatus::Fault;
            assert_eq!(d.observe(&Event::Sensor(r), false, &mut out), 0.0);
        }
        assert!(out.is_empty(), "{out:?}");
        // Within tolerance counts as the same value.
        for i in 0..70 {
            let v = 1.0 + [0.0, 0.0005, -0.0005][(i % 3) as usize];
            d.observe(
                &reading("P", "pressure", 10_000 + i * 30, v),
                false,
                &mut out,
            );
        }
        assert!(!out.is_empty());
        assert_eq!(d.keys(), 2);
    }

    #[test]
    fn out_of_order_readings_are_ignored() {
        let mut d = det(FlatlineConfig {
            min_samples: 0,
            ..Default::default()
        });
        let mut out = Vec::new();
        for i in 0..70 {
            d.observe(
                &reading("G", "gas_lel", 1000 + i * 30, 3.0),
                false,
                &mut out,
            );
        }
        let n = out.len();
        assert!(n > 0);
        // An old reading with another value neither clears nor resets the run.
        assert_eq!(
            d.observe(&reading("G", "gas_lel", 500, 9.0), false, &mut out),
            0.0
        );
        assert_eq!(out.len(), n);
        d.observe(
            &reading("G", "gas_lel", 1000 + 70 * 30, 3.0),
            false,
            &mut out,
        );
        assert!(matches!(
            out.last().unwrap().kind,
            SignalKind::Anomalous { .. }
        ));
    }

    #[test]
    fn validation_names_paths() {
        let c = FlatlineConfig {
            tolerance: -1.0,
            tolerances: BTreeMap::from([("gas_lel".to_string(), f64::NAN)]),
            min_readings: 1,
            run_factor: 0.5,
            ..Default::default()
        };
        let mut p = Vec::new();
        c.validate("detectors.sensors[4]", &mut p);
        assert_eq!(
            p,
            vec![
                "detectors.sensors[4].tolerance: must be >= 0",
                "detectors.sensors[4].tolerances.gas_lel: must be >= 0",
                "detectors.sensors[4].min_readings: must be >= 2",
                "detectors.sensors[4].run_factor: must be >= 1",
            ]
        );
        let mut p = Vec::new();
        FlatlineConfig::default().validate("x", &mut p);
        assert!(p.is_empty(), "{p:?}");
    }

    #[test]
    fn state_is_56_bytes() {
        assert_eq!(std::mem::size_of::<FlatState>(), 56);
    }

    proptest! {
        #[test]
        fn never_nan_and_bounded(xs in proptest::collection::vec(0u8..3, 1..300), gaps in proptest::collection::vec(-60i64..900, 300), tol in 0.0f64..2.0) {
            let mut d = det(FlatlineConfig { tolerance: tol, min_readings: 2, min_samples: 5, max_duration: Duration::from_secs(120), ..Default::default() });
            let mut out = Vec::new();
            let mut t = 0;
            for (x, g) in xs.iter().zip(gaps) {
                t += g;
                let s = d.observe(&reading("P", "pressure", t, f64::from(*x)), false, &mut out);
                prop_assert!(s.is_finite() && (0.0..=1.0).contains(&s));
            }
            // Anomalous and Clear alternate, starting with Anomalous; scores past the threshold.
            let mut alerting = false;
            for sig in &out {
                match &sig.kind {
                    SignalKind::Anomalous { score, .. } => { prop_assert!(*score >= 0.5); alerting = true; }
                    SignalKind::Clear => { prop_assert!(alerting); alerting = false; }
                }
            }
            prop_assert_eq!(d.keys(), 1);
            // The learned state stays finite whatever the steps.
            let st = d.state.get("P").unwrap();
            prop_assert!(st.log_res.is_finite() && st.norm_n.is_finite() && st.norm_secs.is_finite());
            prop_assert!(st.same_within(tol).is_finite());
        }

        #[test]
        fn score_monotone_in_duration(a in 1i64..90, b in 1i64..90) {
            let run = |n: i64| {
                let mut d = det(FlatlineConfig { min_samples: 0, ..Default::default() });
                let mut out = Vec::new();
                let mut s = 0.0;
                for i in 0..=n {
                    s = d.observe(&reading("G", "gas_lel", i * 30, 3.0), false, &mut out);
                }
                s
            };
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            prop_assert!(run(lo) <= run(hi));
        }
    }
}
