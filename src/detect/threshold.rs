//! `threshold` (sensors): a value crosses the configured warning / alarm limits of its kind.
//!
//! Per kind: `warning` and `alarm` limits, a `direction` (`up`: above is bad; `down`:
//! below is bad) and a `hysteresis` band: a sensor leaves a state only when its value is
//! back past the limit by more than the band, so a reading jittering on a limit does not
//! flap. No warm-up: a limit is a limit. State per key: 1 byte (the current band) inside
//! the keyed map.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::sensor_signal;
use super::{
    kind_label, BuildCtx, Detector, DetectorSpec, Direction, Evidence, KeyedState, Signal,
    SignalKind,
};
use crate::decode::{Event, Stream};
use crate::signal::Level;

pub const NAME: &str = "threshold";

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Limit {
    pub warning: f64,
    pub alarm: f64,
    /// `up` (default): values above the limits are hazardous; `down`: below.
    #[serde(default = "default_up")]
    pub direction: Direction,
    /// Band (in the kind's unit) a value must recede past a limit before the state drops.
    #[serde(default)]
    pub hysteresis: f64,
    #[serde(default = "default_warning_level")]
    pub warning_level: Level,
    #[serde(default = "default_alarm_level")]
    pub alarm_level: Level,
}

fn default_up() -> Direction {
    Direction::Up
}
fn default_warning_level() -> Level {
    Level::Yellow
}
fn default_alarm_level() -> Level {
    Level::Orange
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ThresholdConfig {
    /// Limits per sensor kind; readings of other kinds are ignored by this detector.
    #[serde(default = "default_limits")]
    pub limits: BTreeMap<String, Limit>,
    /// Keys idle longer than this are forgotten.
    #[serde(default = "default_ttl", with = "humantime_serde")]
    pub ttl: Duration,
}

fn default_ttl() -> Duration {
    Duration::from_secs(6 * 3600)
}

fn lim(w: f64, a: f64, h: f64, dir: Direction, al: Level) -> Limit {
    Limit {
        warning: w,
        alarm: a,
        direction: dir,
        hysteresis: h,
        warning_level: Level::Yellow,
        alarm_level: al,
    }
}

/// Defaults for the kinds the demo city's sites carry (GB/T 50493 style gas limits).
pub fn default_limits() -> BTreeMap<String, Limit> {
    BTreeMap::from([
        (
            "gas_lel".into(),
            lim(10.0, 25.0, 1.0, Direction::Up, Level::Red),
        ),
        (
            "h2s_ppm".into(),
            lim(10.0, 20.0, 1.0, Direction::Up, Level::Red),
        ),
        (
            "temperature".into(),
            lim(80.0, 120.0, 2.0, Direction::Up, Level::Orange),
        ),
        (
            "pressure".into(),
            lim(1.6, 2.0, 0.05, Direction::Up, Level::Orange),
        ),
        (
            "tank_level".into(),
            lim(85.0, 95.0, 1.0, Direction::Up, Level::Orange),
        ),
    ])
}

impl Default for ThresholdConfig {
    fn default() -> Self {
        Self {
            limits: default_limits(),
            ttl: default_ttl(),
        }
    }
}

impl DetectorSpec for ThresholdConfig {
    const NAME: &'static str = NAME;
    const STREAMS: &'static [Stream] = &[Stream::Sensors];
    type Runtime = Threshold;

    fn validate(&self, path: &str, problems: &mut Vec<String>) {
        for (kind, l) in &self.limits {
            let p = format!("{path}.limits.{kind}");
            if !l.warning.is_finite() || !l.alarm.is_finite() {
                problems.push(format!("{p}: warning and alarm must be finite numbers"));
            }
            match l.direction {
                Direction::Up if l.alarm <= l.warning => problems.push(format!(
                    "{p}.alarm: must be > warning ({}) when direction = \"up\"",
                    l.warning
                )),
                Direction::Down if l.alarm >= l.warning => problems.push(format!(
                    "{p}.alarm: must be < warning ({}) when direction = \"down\"",
                    l.warning
                )),
                Direction::Both => {
                    problems.push(format!("{p}.direction: must be \"up\" or \"down\""))
                }
                _ => {}
            }
            if l.hysteresis.is_nan() || l.hysteresis < 0.0 {
                problems.push(format!("{p}.hysteresis: must be >= 0"));
            }
            if l.alarm_level < l.warning_level {
                problems.push(format!("{p}.alarm_level: must not be below warning_level"));
            }
        }
        if self.ttl.is_zero() {
            problems.push(format!("{path}.ttl: must be > 0"));
        }
    }

    fn build(&self, _stream: Stream, _ctx: &BuildCtx) -> Threshold {
        Threshold {
            limits: self.limits.clone(),
            state: KeyedState::new(self.ttl),
        }
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
enum Band {
    #[default]
    Normal,
    Warning,
    Alarm,
}

pub struct Threshold {
    limits: BTreeMap<String, Limit>,
    state: KeyedState<Band>,
}

/// Maps a value to [0,1]: 0.5 at the warning limit, 0.75 at the alarm, -> 1 beyond.
fn normalized(l: &Limit, v: f64) -> f64 {
    // Work in "badness" units where larger is worse.
    let (x, w, a) = match l.direction {
        Direction::Down => (-v, -l.warning, -l.alarm),
        _ => (v, l.warning, l.alarm),
    };
    if x < w {
        // Below warning: a gentle ramp relative to the warning limit's scale.
        let scale = (a - w).max(f64::EPSILON) * 4.0;
        (0.5 * (1.0 - (w - x) / scale)).clamp(0.0, 0.5).min(0.4999)
    } else if x < a {
        0.5 + 0.25 * (x - w) / (a - w)
    } else {
        let over = (x - a) / (a - w).max(f64::EPSILON);
        0.75 + 0.25 * (over / (1.0 + over))
    }
}

impl Detector for Threshold {
    fn name(&self) -> &'static str {
        NAME
    }

    fn observe(&mut self, ev: &Event, _late: bool, out: &mut Vec<Signal>) -> f64 {
        let Event::Sensor(r) = ev else { return 0.0 };
        let Some(l) = self.limits.get(&r.kind) else {
            return 0.0;
        };
        if r.status.is_fault() {
            return 0.0;
        }
        let bad = |limit: f64, slack: f64| match l.direction {
            Direction::Down => r.value <= limit + slack,
            _ => r.value >= limit - slack,
        };
        let prev = *self.state.touch(&r.sensor_id, r.ts);
        // Hysteresis: staying in a band needs only limit -/+ hysteresis; entering needs the limit.
        let h = l.hysteresis;
        let next = if bad(l.alarm, if prev == Band::Alarm { h } else { 0.0 }) {
            Band::Alarm
        } else if bad(l.warning, if prev >= Band::Warning { h } else { 0.0 }) {
            Band::Warning
        } else {
            Band::Normal
        };
        *self.state.touch(&r.sensor_id, r.ts) = next;
        let s = normalized(l, r.value);
        let kind = match next {
            Band::Normal if prev == Band::Normal => return s,
            Band::Normal => SignalKind::Clear,
            band => {
                let (limit, level, word) = if band == Band::Alarm {
                    (l.alarm, l.alarm_level, "alarm")
                } else {
                    (l.warning, l.warning_level, "warning")
                };
                let rel = if l.direction == Direction::Down {
                    "below"
                } else {
                    "above"
                };
                SignalKind::Anomalous {
                    score: s.max(0.5),
                    level: Some(level),
                    title: format!(
                        "{} {rel} {word} limit at {}",
                        kind_label(&r.kind),
                        r.site_id
                    ),
                    evidence: Evidence {
                        observed: r.value,
                        expected: l.warning,
                        score: r.value,
                        threshold: limit,
                        window: "instant".into(),
                        p_value: None,
                        false_alarms_per_day: None,
                    },
                }
            }
        };
        out.push(sensor_signal(NAME, r, ev.id(), kind));
        s
    }

    fn advance(
        &mut self,
        watermark: chrono::DateTime<chrono::FixedOffset>,
        _out: &mut Vec<Signal>,
    ) {
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
    use crate::detect::testutil::reading;

    fn run(values: &[f64]) -> Vec<Option<Level>> {
        let mut d = ThresholdConfig::default().build(Stream::Sensors, &crate::pipeline::test_ctx());
        let mut out = Vec::new();
        values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                out.clear();
                d.observe(
                    &reading("G1", "gas_lel", i as i64 * 10, *v),
                    false,
                    &mut out,
                );
                match out.first().map(|s| &s.kind) {
                    Some(SignalKind::Anomalous { level, .. }) => *level,
                    Some(SignalKind::Clear) | None => None,
                }
            })
            .collect()
    }

    #[test]
    fn warning_then_alarm_with_configured_levels() {
        let got = run(&[3.0, 12.0, 30.0, 3.0]);
        assert_eq!(got, vec![None, Some(Level::Yellow), Some(Level::Red), None]);
    }

    #[test]
    fn hysteresis_holds_the_band() {
        let mut d = ThresholdConfig::default().build(Stream::Sensors, &crate::pipeline::test_ctx());
        let mut out = Vec::new();
        d.observe(&reading("G1", "gas_lel", 0, 10.5), false, &mut out);
        assert_eq!(out.len(), 1);
        out.clear();
        // 9.5 is inside the 1.0 band below the warning limit: still warning, not clear.
        d.observe(&reading("G1", "gas_lel", 10, 9.5), false, &mut out);
        assert!(matches!(out[0].kind, SignalKind::Anomalous { .. }));
        out.clear();
        d.observe(&reading("G1", "gas_lel", 20, 8.9), false, &mut out);
        assert_eq!(out[0].kind, SignalKind::Clear);
        out.clear();
        // Re-entering needs the limit itself.
        d.observe(&reading("G1", "gas_lel", 30, 9.6), false, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn normalized_score_anchors_and_monotone() {
        let l = &default_limits()["gas_lel"];
        assert!((normalized(l, 10.0) - 0.5).abs() < 1e-12);
        assert!((normalized(l, 25.0) - 0.75).abs() < 1e-12);
        let mut prev = -1.0;
        for i in 0..200 {
            let s = normalized(l, i as f64 * 0.5 - 20.0);
            assert!((0.0..=1.0).contains(&s) && s >= prev, "{i} {s}");
            prev = s;
        }
    }

    #[test]
    fn unknown_kinds_and_faults_are_ignored() {
        let mut d = ThresholdConfig::default().build(Stream::Sensors, &crate::pipeline::test_ctx());
        let mut out = Vec::new();
        d.observe(&reading("X", "humidity", 0, 1e6), false, &mut out);
        let Event::Sensor(mut r) = reading("G", "gas_lel", 0, 99.0) else {
            panic!()
        };
        r.status = SensorStatus::Fault;
        d.observe(&Event::Sensor(r), false, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn validation_names_paths() {
        let mut c = ThresholdConfig::default();
        c.limits.get_mut("gas_lel").unwrap().alarm = 5.0;
        let mut p = Vec::new();
        c.validate("detectors.sensors[0]", &mut p);
        assert_eq!(p.len(), 1);
        assert!(
            p[0].starts_with("detectors.sensors[0].limits.gas_lel.alarm"),
            "{p:?}"
        );
    }
}
