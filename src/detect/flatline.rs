//! `flatline` (sensors): a sensor repeats (near) the same value for longer than allowed:
//! it is stuck, and a stuck gas or H2S sensor is a blind spot at a hazardous site.
//!
//! A run starts at an anchor reading; every later reading within `tolerance` of the anchor
//! (absolute, in the kind's unit; `tolerances` overrides it per kind) extends the run, any
//! other starts a new one. The key is anomalous while the run has lasted longer than
//! `max_duration` of event time *and* holds at least `min_readings` readings (so two
//! readings a day apart are not a flatline); it clears once, when the value moves. Real
//! sensors carry noise: the default tolerance 0 catches a sensor repeating its value
//! exactly, the common failure of a frozen transmitter. Out-of-order readings (older than
//! the newest of the key) are ignored. The level is fixed by `level` (default yellow),
//! not by the score. State per key: 32 bytes.
//!
//! Score: the smaller of `from_ratio(duration, max_duration)` and
//! `from_ratio(readings, min_readings)`, so it passes 0.5 exactly when both conditions
//! hold. Evidence: `observed` is the stuck (anchor) value, `expected` the tolerance (a
//! live sensor moves by more than this), `score` the run's duration in minutes against
//! `threshold` `max_duration` in minutes, `window` is `max_duration`.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};

use super::sensor_signal;
use super::{
    fmt_duration, kind_label, score, BuildCtx, Detector, DetectorSpec, Evidence, KeyedState,
    Signal, SignalKind,
};
use crate::alert::Level;
use crate::decode::{Event, SensorStatus, Stream};

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

/// The current run of one sensor. 32 bytes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FlatState {
    anchor: f64,
    /// Event time of the anchor (the run's start) and of the newest reading.
    anchor_t: i64,
    last_t: i64,
    /// Readings in the run, the anchor included; 0 = no reading yet.
    count: u32,
    alerting: bool,
}

pub struct Flatline {
    cfg: FlatlineConfig,
    max_secs: i64,
    window: String,
    state: KeyedState<FlatState>,
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
        if r.status == SensorStatus::Fault {
            return 0.0;
        }
        let tol = *self
            .cfg
            .tolerances
            .get(&r.kind)
            .unwrap_or(&self.cfg.tolerance);
        let st = self.state.touch(&r.sensor_id, r.ts);
        let t = r.ts.timestamp();
        if st.count > 0 && t < st.last_t {
            return 0.0;
        }
        st.last_t = t;
        let kind = if st.count == 0 || (r.value - st.anchor).abs() > tol {
            // The value moved: a new run starts here.
            let was = st.alerting;
            *st = FlatState {
                anchor: r.value,
                anchor_t: t,
                last_t: t,
                count: 1,
                alerting: false,
            };
            if !was {
                return 0.0;
            }
            SignalKind::Clear
        } else {
            st.count = st.count.saturating_add(1);
            let dur = t - st.anchor_t;
            let s = score::from_ratio(dur as f64, self.max_secs as f64).min(score::from_ratio(
                f64::from(st.count),
                f64::from(self.cfg.min_readings),
            ));
            if !(dur > self.max_secs && st.count >= self.cfg.min_readings) {
                return s;
            }
            st.alerting = true;
            let mins = |secs: i64| (secs as f64 / 60.0 * 10.0).round() / 10.0;
            SignalKind::Anomalous {
                score: s,
                level: Some(self.cfg.level),
                title: format!(
                    "{} sensor stuck at {:.2} for {} at {}",
                    kind_label(&r.kind),
                    st.anchor,
                    fmt_run(dur),
                    r.site_id
                ),
                evidence: Evidence {
                    observed: st.anchor,
                    expected: tol,
                    score: mins(dur),
                    threshold: mins(self.max_secs),
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

    super::keyed_persistence!(state);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::testutil::reading;
    use proptest::prelude::*;

    fn det(cfg: FlatlineConfig) -> Flatline {
        cfg.build(Stream::Sensors, &crate::pipeline::test_ctx())
    }

    #[test]
    fn stuck_sensor_fires_after_max_duration_and_clears_once_when_it_moves() {
        let mut d = det(FlatlineConfig::default());
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
        assert_eq!(evidence.expected, 0.0);
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
        let mut d = det(FlatlineConfig::default());
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
            ]
        );
        let mut p = Vec::new();
        FlatlineConfig::default().validate("x", &mut p);
        assert!(p.is_empty(), "{p:?}");
    }

    #[test]
    fn state_is_32_bytes() {
        assert_eq!(std::mem::size_of::<FlatState>(), 32);
    }

    proptest! {
        #[test]
        fn never_nan_and_bounded(xs in proptest::collection::vec(0u8..3, 1..300), gaps in proptest::collection::vec(-60i64..900, 300), tol in 0.0f64..2.0) {
            let mut d = det(FlatlineConfig { tolerance: tol, min_readings: 2, max_duration: Duration::from_secs(120), ..Default::default() });
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
        }

        #[test]
        fn score_monotone_in_duration(a in 1i64..90, b in 1i64..90) {
            let run = |n: i64| {
                let mut d = det(FlatlineConfig::default());
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
