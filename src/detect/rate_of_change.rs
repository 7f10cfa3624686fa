//! `rate_of_change` (sensors): the rise per minute of a sensor's readings exceeds the
//! configured limit of its kind.
//!
//! The slope is taken in event time between the current reading and a reference reading at
//! least `min_span` older, so one noisy pair of readings a second apart cannot fire. Two
//! slots hold the reference (`anchor`) and the next candidate (`pending`): once the
//! candidate is `min_span` old it becomes the reference and the current reading the next
//! candidate, so the slope always spans between `min_span` and about `2 min_span` plus
//! one sampling interval. Out-of-order readings (event time not after the newest reading
//! of the key) are not used for the slope and leave the state unchanged. Before a
//! reference exists (the first `min_span` of a sensor) nothing is scored: that is the
//! warm-up. `direction` picks which way counts (`up` by default: a falling gas reading is
//! good news). State per key: 48 bytes.
//!
//! Evidence: `observed` is the slope in the kind's unit per minute (signed), `expected` is
//! 0 (a steady process does not move), `score` is the counted slope and `threshold` the
//! limit, `window` is `min_span`.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};

use super::sensor_signal;
use super::transition;
use super::{
    fmt_duration, score, BuildCtx, Detector, DetectorSpec, Direction, Evidence, KeyedState, Signal,
    SignalKind,
};
use crate::decode::{Event, Stream};

pub const NAME: &str = "rate_of_change";

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RateOfChangeConfig {
    /// Sensor kinds this instance watches; empty = every kind with a limit.
    #[serde(default)]
    pub kinds: Vec<String>,
    /// Largest allowed change per minute, per kind, in the kind's unit per minute;
    /// readings of kinds without a limit are ignored. Default: gas_lel 5, h2s_ppm 5,
    /// temperature 10, pressure 0.2, tank_level 5.
    #[serde(default = "default_limits")]
    pub max_rise_per_min: BTreeMap<String, f64>,
    /// `up` (default): rises count; `down`: falls; `both`.
    #[serde(default = "default_up")]
    pub direction: Direction,
    /// Shortest event-time span a slope is taken over (default 30s).
    #[serde(default = "default_min_span", with = "humantime_serde")]
    pub min_span: Duration,
    /// Keys idle longer than this are forgotten (default 6h).
    #[serde(default = "default_ttl", with = "humantime_serde")]
    pub ttl: Duration,
}

/// Defaults for the kinds the demo city's sites carry, per minute.
pub fn default_limits() -> BTreeMap<String, f64> {
    BTreeMap::from([
        ("gas_lel".into(), 5.0),      // %LEL/min
        ("h2s_ppm".into(), 5.0),      // ppm/min
        ("temperature".into(), 10.0), // degrees C/min
        ("pressure".into(), 0.2),     // MPa/min
        ("tank_level".into(), 5.0),   // percent/min
    ])
}
fn default_up() -> Direction {
    Direction::Up
}
fn default_min_span() -> Duration {
    Duration::from_secs(30)
}
fn default_ttl() -> Duration {
    Duration::from_secs(6 * 3600)
}

impl Default for RateOfChangeConfig {
    fn default() -> Self {
        Self {
            kinds: Vec::new(),
            max_rise_per_min: default_limits(),
            direction: default_up(),
            min_span: default_min_span(),
            ttl: default_ttl(),
        }
    }
}

impl DetectorSpec for RateOfChangeConfig {
    const NAME: &'static str = NAME;
    const STREAMS: &'static [Stream] = &[Stream::Sensors];
    type Runtime = RateOfChange;

    fn validate(&self, path: &str, problems: &mut Vec<String>) {
        for (kind, l) in &self.max_rise_per_min {
            if !(score::positive(*l) && l.is_finite()) {
                problems.push(format!("{path}.max_rise_per_min.{kind}: must be > 0"));
            }
        }
        for kind in &self.kinds {
            if !self.max_rise_per_min.contains_key(kind) {
                problems.push(format!(
                    "{path}.kinds: `{kind}` has no max_rise_per_min entry"
                ));
            }
        }
        if self.min_span < Duration::from_secs(1) {
            problems.push(format!("{path}.min_span: must be >= 1s"));
        }
        if self.ttl.is_zero() {
            problems.push(format!("{path}.ttl: must be > 0"));
        }
    }

    fn build(&self, _stream: Stream, _ctx: &BuildCtx) -> RateOfChange {
        RateOfChange {
            cfg: self.clone(),
            window: fmt_duration(self.min_span),
            span_secs: self.min_span.as_secs().max(1) as i64,
            state: KeyedState::new(self.ttl),
        }
    }
}

/// The two reference slots of one sensor. 48 bytes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RocState {
    anchor_v: f64,
    anchor_t: i64,
    pend_v: f64,
    pend_t: i64,
    /// Event time of the newest reading used.
    last_t: i64,
    has_anchor: bool,
    has_pend: bool,
    alerting: bool,
}

impl RocState {
    /// Takes the reading `(x, t)`; returns the slope per minute against a reference at
    /// least `span` seconds older, if there is one. Out-of-order readings return `None`
    /// and change nothing.
    pub fn update(&mut self, x: f64, t: i64, span: i64) -> Option<f64> {
        if (self.has_pend || self.has_anchor) && t <= self.last_t {
            return None;
        }
        self.last_t = t;
        if self.has_pend && t - self.pend_t >= span {
            self.anchor_v = self.pend_v;
            self.anchor_t = self.pend_t;
            self.has_anchor = true;
            self.has_pend = false;
        }
        let slope = if self.has_anchor && t - self.anchor_t >= span {
            Some((x - self.anchor_v) * 60.0 / (t - self.anchor_t) as f64)
        } else {
            None
        };
        if !self.has_pend {
            self.pend_v = x;
            self.pend_t = t;
            self.has_pend = true;
        }
        slope
    }
}

pub struct RateOfChange {
    cfg: RateOfChangeConfig,
    window: String,
    span_secs: i64,
    state: KeyedState<RocState>,
}

impl Detector for RateOfChange {
    fn name(&self) -> &'static str {
        NAME
    }

    fn observe(&mut self, ev: &Event, _late: bool, out: &mut Vec<Signal>) -> f64 {
        let Event::Sensor(r) = ev else { return 0.0 };
        if !self.cfg.kinds.is_empty() && !self.cfg.kinds.contains(&r.kind) {
            return 0.0;
        }
        let Some(&limit) = self.cfg.max_rise_per_min.get(&r.kind) else {
            return 0.0;
        };
        if r.status.is_fault() {
            return 0.0;
        }
        // Extremes saturate: no baseline arithmetic overflows (docs/SECURITY.md).
        let value = super::bounded(r.value);
        let st = self.state.touch(&r.sensor_id, r.ts);
        let Some(rate) = st.update(value, r.ts.timestamp(), self.span_secs) else {
            return 0.0;
        };
        let counted = self.cfg.direction.counted(rate);
        let s = score::from_ratio(counted, limit);
        let Some(kind) = transition(counted > limit, &mut st.alerting, || {
            let dir = if rate >= 0.0 { "rising" } else { "falling" };
            let unit = r
                .unit
                .as_deref()
                .map(|u| format!(" {u}"))
                .unwrap_or_default();
            SignalKind::Anomalous {
                score: s,
                level: None,
                title: format!(
                    "{} {dir} {:.1}{unit}/min at {}",
                    super::point_label(r),
                    rate.abs(),
                    super::site_label(r)
                ),
                evidence: Evidence {
                    observed: (rate * 1000.0).round() / 1000.0,
                    expected: 0.0,
                    score: (counted * 1000.0).round() / 1000.0,
                    threshold: limit,
                    window: self.window.clone(),
                    p_value: None,
                    false_alarms_per_day: None,
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

    super::keyed_persistence!(state);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::SensorStatus;
    use crate::detect::testutil::{raw_reading, reading};
    use proptest::prelude::*;

    fn det(cfg: RateOfChangeConfig) -> RateOfChange {
        cfg.build(Stream::Sensors, &crate::pipeline::test_ctx())
    }

    #[test]
    fn slope_spans_at_least_min_span() {
        let mut s = RocState::default();
        assert_eq!(s.update(3.0, 0, 30), None, "no reference yet");
        assert_eq!(s.update(3.0, 25, 30), None, "candidate only 25 s old");
        // 50 s after the first reading: +1.0 over 50 s = 1.2 per minute.
        let r = s.update(4.0, 50, 30).unwrap();
        assert!((r - 1.2).abs() < 1e-12, "{r}");
        // A reading 1 s later still measures against the reading at 0 s.
        let r = s.update(4.5, 51, 30).unwrap();
        assert!((r - 1.5 * 60.0 / 51.0).abs() < 1e-12, "{r}");
        // At 80 s the candidate from 50 s becomes the reference.
        let r = s.update(5.0, 80, 30).unwrap();
        assert!((r - 2.0).abs() < 1e-12, "{r}");
    }

    #[test]
    fn out_of_order_readings_change_nothing() {
        let mut s = RocState::default();
        s.update(3.0, 100, 30);
        s.update(3.0, 130, 30);
        let before = s;
        assert_eq!(s.update(50.0, 120, 30), None);
        assert_eq!(s.update(50.0, 130, 30), None, "same second: dt = 0");
        assert_eq!(s, before);
    }

    #[test]
    fn noisy_pair_one_second_apart_cannot_fire() {
        let mut d = det(RateOfChangeConfig::default());
        let mut out = Vec::new();
        for i in 0..20 {
            d.observe(&reading("G", "gas_lel", i * 30, 3.0), false, &mut out);
        }
        // +1.5 %LEL in 1 s would be 90 %LEL/min between the pair; over the span it is 3/min.
        let s = d.observe(&reading("G", "gas_lel", 571, 4.5), false, &mut out);
        assert!(out.is_empty(), "{out:?}");
        assert!(s < 0.5 && s > 0.0, "{s}");
    }

    #[test]
    fn leak_ramp_fires_then_clears_once() {
        let mut d = det(RateOfChangeConfig::default());
        let mut out = Vec::new();
        let mut kinds = Vec::new();
        // Flat, then a 8 %LEL/min ramp for 4 minutes, then flat at the new level.
        for i in 0..60i64 {
            let t = i * 30;
            let v = 3.0 + 4.0 * ((i - 20).clamp(0, 8) as f64);
            out.clear();
            d.observe(&reading("G", "gas_lel", t, v), false, &mut out);
            kinds.extend(out.drain(..).map(|s| (i, s)));
        }
        let first = kinds.first().expect("fired");
        let SignalKind::Anomalous {
            evidence, title, ..
        } = &first.1.kind
        else {
            panic!("{kinds:?}")
        };
        assert!(first.0 <= 22, "{}", first.0);
        assert_eq!(evidence.threshold, 5.0);
        assert!((evidence.observed - 8.0).abs() < 1e-9, "{evidence:?}");
        assert_eq!(evidence.window, "30s");
        assert!(
            title.starts_with("Gas LEL rising 8.0/min at SITE-"),
            "{title}"
        );
        let clears: Vec<_> = kinds
            .iter()
            .filter(|(_, s)| s.kind == SignalKind::Clear)
            .collect();
        assert_eq!(clears.len(), 1, "{kinds:?}");
        assert_eq!(kinds.last().unwrap().1.kind, SignalKind::Clear);
    }

    #[test]
    fn direction_up_ignores_falls_and_kinds_filter_and_faults() {
        let mut d = det(RateOfChangeConfig {
            kinds: vec!["gas_lel".into()],
            ..Default::default()
        });
        let mut out = Vec::new();
        d.observe(&reading("G", "gas_lel", 0, 30.0), false, &mut out);
        d.observe(&reading("G", "gas_lel", 60, 0.0), false, &mut out);
        d.observe(&reading("T", "temperature", 0, 0.0), false, &mut out);
        d.observe(&reading("T", "temperature", 60, 500.0), false, &mut out);
        d.observe(&reading("X", "humidity", 0, 0.0), false, &mut out);
        d.observe(&reading("X", "humidity", 60, 500.0), false, &mut out);
        let Event::Sensor(mut r) = reading("G", "gas_lel", 120, 99.0) else {
            panic!()
        };
        r.status = SensorStatus::Fault;
        assert_eq!(d.observe(&Event::Sensor(r), false, &mut out), 0.0);
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(d.keys(), 1);
    }

    #[test]
    fn validation_names_paths() {
        let mut c = RateOfChangeConfig {
            kinds: vec!["humidity".into()],
            ..Default::default()
        };
        c.max_rise_per_min.insert("pressure".into(), 0.0);
        let mut p = Vec::new();
        c.validate("detectors.sensors[2]", &mut p);
        assert_eq!(
            p,
            vec![
                "detectors.sensors[2].max_rise_per_min.pressure: must be > 0",
                "detectors.sensors[2].kinds: `humidity` has no max_rise_per_min entry",
            ]
        );
        let mut p = Vec::new();
        RateOfChangeConfig::default().validate("x", &mut p);
        assert!(p.is_empty(), "{p:?}");
    }

    #[test]
    fn state_is_48_bytes() {
        assert_eq!(std::mem::size_of::<RocState>(), 48);
    }

    proptest! {
        #[test]
        fn never_nan_and_bounded(xs in proptest::collection::vec(-1e6f64..1e6, 1..300), gaps in proptest::collection::vec(-60i64..600, 300)) {
            let mut d = det(RateOfChangeConfig { direction: Direction::Both, ..Default::default() });
            let mut out = Vec::new();
            let mut t = 0;
            for (x, g) in xs.iter().zip(gaps) {
                t += g;
                let s = d.observe(&raw_reading("P", "pressure", t, *x), false, &mut out);
                prop_assert!(s.is_finite() && (0.0..=1.0).contains(&s));
            }
            for sig in &out {
                if let SignalKind::Anomalous { score, evidence, .. } = &sig.kind {
                    prop_assert!(*score >= 0.5 && evidence.observed.is_finite());
                }
            }
            prop_assert_eq!(d.keys(), 1);
        }

        #[test]
        fn score_monotone_in_rise(a in 0.0f64..100.0, b in 0.0f64..100.0) {
            let run = |rise: f64| {
                let mut d = det(RateOfChangeConfig::default());
                let mut out = Vec::new();
                d.observe(&reading("G", "gas_lel", 0, 3.0), false, &mut out);
                d.observe(&reading("G", "gas_lel", 30, 3.0), false, &mut out);
                d.observe(&reading("G", "gas_lel", 60, 3.0 + rise), false, &mut out)
            };
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            prop_assert!(run(lo) <= run(hi));
        }
    }
}
