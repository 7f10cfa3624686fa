//! `threshold` (sensors): a value crosses its point's alarm limits, or its kind's.
//!
//! Per kind (config): `warning` and `alarm` limits, a `direction` (`up`: above is bad;
//! `down`: below is bad) and a `hysteresis` band: a sensor leaves a state only when its
//! value is back past the limit by more than the band, so a reading jittering on a limit
//! does not flap. A registered point (src/registry) with limits of its own is judged on
//! both sides instead: `h`/`hh` above, `l`/`ll` below, its `levels`, its `deadband` as
//! the band; the reading carries its point, so a limit changed in the registry applies
//! to the next reading. No warm-up: a limit is a limit. State per key: 1 byte (the
//! current band) inside the keyed map.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{point_label, sensor_signal, site_label};
use super::{
    BuildCtx, Detector, DetectorSpec, Direction, Evidence, KeyedState, Signal, SignalKind,
};
use crate::decode::{Event, Stream};
use crate::registry::Point;
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
            kinds: self
                .limits
                .iter()
                .map(|(k, l)| (k.clone(), Judge::of_kind(l)))
                .collect(),
            state: KeyedState::new(self.ttl),
        }
    }
}

/// A key's state. `Warning`/`Alarm` are the high side (`h`/`hh`, or a kind's limits);
/// the low side came later and sits after them, so state saved before it still decodes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum Band {
    #[default]
    Normal,
    Warning,
    Alarm,
    LowWarning,
    LowAlarm,
}

/// The limits one reading is judged with, a kind's or a point's, in one shape: the high
/// side (`h`, `hh`) and the low side (`l`, `ll`), each limit with its level, and the
/// band a value must recede past a limit before its state drops. `Copy`, built per
/// reading from the point the reading carries: no allocation, no lookup.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Judge {
    hh: Option<(f64, Level)>,
    h: Option<(f64, Level)>,
    l: Option<(f64, Level)>,
    ll: Option<(f64, Level)>,
    band: f64,
    /// A point's limits: titles say `high`/`high-high`/`low`/`low-low`, not
    /// `warning`/`alarm`.
    point: bool,
}

impl Judge {
    fn of_kind(l: &Limit) -> Self {
        let first = Some((l.warning, l.warning_level));
        let second = Some((l.alarm, l.alarm_level));
        let (h, hh, lo, ll) = match l.direction {
            Direction::Down => (None, None, first, second),
            _ => (first, second, None, None),
        };
        Self {
            hh,
            h,
            l: lo,
            ll,
            band: l.hysteresis,
            point: false,
        }
    }

    /// A registered point: its own limits when it has any (they replace the kind's,
    /// both sides), else the kind's; its deadband either way.
    fn of_point(p: &Point, kind: Option<&Judge>) -> Option<Self> {
        if p.limits.is_empty() {
            return kind.map(|k| Judge {
                band: p.deadband.unwrap_or(k.band),
                ..*k
            });
        }
        let (lim, lv) = (&p.limits, &p.levels);
        let with = |v: Option<f64>, level: Option<Level>, default: Level| {
            v.map(|v| (v, level.unwrap_or(default)))
        };
        Some(Self {
            hh: with(lim.hh, lv.hh, Level::Orange),
            h: with(lim.h, lv.h, Level::Yellow),
            l: with(lim.l, lv.l, Level::Yellow),
            ll: with(lim.ll, lv.ll, Level::Orange),
            band: p.deadband.or(kind.map(|k| k.band)).unwrap_or(0.0),
            point: true,
        })
    }

    /// Where `v` lies, given the key's band before it. Staying in a band needs only the
    /// limit less the deadband; entering one needs the limit itself.
    fn band_of(&self, v: f64, prev: Band) -> Band {
        let slack = |holds: bool| if holds { self.band } else { 0.0 };
        let above =
            |lim: Option<(f64, Level)>, holds| lim.is_some_and(|(x, _)| v >= x - slack(holds));
        let below =
            |lim: Option<(f64, Level)>, holds| lim.is_some_and(|(x, _)| v <= x + slack(holds));
        if above(self.hh, prev == Band::Alarm) {
            Band::Alarm
        } else if above(self.h, matches!(prev, Band::Warning | Band::Alarm)) {
            Band::Warning
        } else if below(self.ll, prev == Band::LowAlarm) {
            Band::LowAlarm
        } else if below(self.l, matches!(prev, Band::LowWarning | Band::LowAlarm)) {
            Band::LowWarning
        } else {
            Band::Normal
        }
    }

    /// The limit of `band`, its level and the word a title uses for it.
    fn limit_of(&self, band: Band) -> Option<(f64, Level, &'static str)> {
        let (lim, word) = match (band, self.point) {
            (Band::Normal, _) => return None,
            (Band::Warning, false) | (Band::LowWarning, false) => (
                if band == Band::Warning {
                    self.h
                } else {
                    self.l
                },
                "warning",
            ),
            (Band::Alarm, false) | (Band::LowAlarm, false) => (
                if band == Band::Alarm {
                    self.hh
                } else {
                    self.ll
                },
                "alarm",
            ),
            (Band::Warning, true) => (self.h, "high"),
            (Band::Alarm, true) => (self.hh, "high-high"),
            (Band::LowWarning, true) => (self.l, "low"),
            (Band::LowAlarm, true) => (self.ll, "low-low"),
        };
        lim.map(|(x, level)| (x, level, word))
    }

    /// The normalized score of `v`: the worse of the two sides.
    fn score(&self, v: f64) -> f64 {
        let neg = |l: Option<(f64, Level)>| l.map(|(x, _)| -x);
        side_score(v, self.h.map(|x| x.0), self.hh.map(|x| x.0)).max(side_score(
            -v,
            neg(self.l),
            neg(self.ll),
        ))
    }
}

/// One side's score, in "badness" units where larger is worse: 0.5 at its first limit,
/// 0.75 at its second. A side with one limit scores as if the other were a quarter of
/// the limit's size (at least 1) away.
fn side_score(x: f64, first: Option<f64>, second: Option<f64>) -> f64 {
    let span = |m: f64| m.abs().max(1.0) * 0.25;
    match (first, second) {
        (Some(w), Some(a)) => normalized(w, a, x),
        (Some(w), None) => normalized(w, w + span(w), x),
        (None, Some(a)) => normalized(a - span(a), a, x),
        (None, None) => 0.0,
    }
}

pub struct Threshold {
    kinds: BTreeMap<String, Judge>,
    state: KeyedState<Band>,
}

/// Maps a value to [0,1]: 0.5 at the warning limit `w`, 0.75 at the alarm `a`, -> 1
/// beyond (larger `x` is worse).
fn normalized(w: f64, a: f64, x: f64) -> f64 {
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
        let kind = self.kinds.get(&r.kind);
        let judge = match &r.point {
            Some(p) => Judge::of_point(p, kind),
            None => kind.copied(),
        };
        let Some(j) = judge else {
            return 0.0;
        };
        if r.status.is_fault() {
            return 0.0;
        }
        let prev = *self.state.touch(&r.sensor_id, r.ts);
        let next = j.band_of(r.value, prev);
        *self.state.touch(&r.sensor_id, r.ts) = next;
        let s = j.score(r.value);
        let kind = match j.limit_of(next) {
            None if prev == Band::Normal => return s,
            None => SignalKind::Clear,
            Some((limit, level, word)) => {
                let (rel, expected) = match next {
                    Band::LowWarning | Band::LowAlarm => ("below", j.l.map_or(limit, |x| x.0)),
                    _ => ("above", j.h.map_or(limit, |x| x.0)),
                };
                SignalKind::Anomalous {
                    score: s.max(0.5),
                    level: Some(level),
                    title: format!("{} {rel} {word} limit at {}", point_label(r), site_label(r)),
                    evidence: Evidence {
                        observed: r.value,
                        expected,
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
    use std::sync::Arc;

    use super::*;
    use crate::decode::SensorStatus;
    use crate::detect::testutil::reading;
    use crate::registry::Registry;

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
        let l = Judge::of_kind(&default_limits()["gas_lel"]);
        assert!((l.score(10.0) - 0.5).abs() < 1e-12);
        assert!((l.score(25.0) - 0.75).abs() < 1e-12);
        let mut prev = -1.0;
        for i in 0..200 {
            let s = l.score(i as f64 * 0.5 - 20.0);
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

    /// Readings of registered points, decoded through a decoder that shares `reg`.
    fn point_reading(reg: &Arc<Registry>, id: &str, kind: &str, secs: i64, v: f64) -> Event {
        let t = crate::detect::testutil::ts("2026-11-26T00:00:00+08:00")
            + chrono::Duration::seconds(secs);
        let j = serde_json::json!({"sensor_id":id,"site_id":"SITE-330503-0042","region":"330503101",
            "kind":kind,"ts":t.to_rfc3339(),"value":v});
        crate::decode::test_decoder()
            .with_points(reg.clone())
            .decode(Stream::Sensors, j.to_string().as_bytes())
            .unwrap()
            .event
    }

    /// The level each reading raises (`None`: no signal or a clear), and the titles.
    fn levels(
        d: &mut Threshold,
        reg: &Arc<Registry>,
        id: &str,
        kind: &str,
        values: &[f64],
    ) -> (Vec<Option<Level>>, Vec<String>) {
        let mut titles = Vec::new();
        let mut out = Vec::new();
        let lv = values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                out.clear();
                d.observe(
                    &point_reading(reg, id, kind, i as i64 * 10, *v),
                    false,
                    &mut out,
                );
                match out.first().map(|s| &s.kind) {
                    Some(SignalKind::Anomalous { level, title, .. }) => {
                        titles.push(title.clone());
                        *level
                    }
                    _ => None,
                }
            })
            .collect();
        (lv, titles)
    }

    fn point(json: serde_json::Value) -> Point {
        Point::parse(json.to_string().as_bytes()).unwrap()
    }

    fn fresh() -> Threshold {
        ThresholdConfig::default().build(Stream::Sensors, &crate::pipeline::test_ctx())
    }

    /// Issue #25's target: a 120 degC point with h 150 / hh 160 (the kind's alarm limit
    /// is 120) raises nothing at 120, yellow at 155, orange at 165, named in the title.
    #[test]
    fn a_point_with_its_own_high_limits() {
        let reg = Arc::new(Registry::with_points([point(serde_json::json!({
            "sensor_id":"S-T1","name":"R-2 reactor outlet temperature","kind":"temperature",
            "limits":{"h":150.0,"hh":160.0},"deadband":2.0,"site_name":"Huzhou Jiahe Chemical",
            "hazard_grade":2}))]));
        let (lv, titles) = levels(
            &mut fresh(),
            &reg,
            "S-T1",
            "temperature",
            &[120.0, 155.0, 165.0],
        );
        assert_eq!(lv, vec![None, Some(Level::Yellow), Some(Level::Orange)]);
        assert_eq!(
            titles[1],
            "R-2 reactor outlet temperature above high-high limit at Huzhou Jiahe Chemical"
        );
        // The same reading of an unregistered sensor: the kind's alarm limit (120) holds.
        let (lv, _) = levels(&mut fresh(), &reg, "S-T2", "temperature", &[120.0]);
        assert_eq!(lv, vec![Some(Level::Orange)]);
    }

    /// Issue #25's target: a pressure point with l 0.2 / ll 0.1 raises yellow at 0.15 and
    /// orange at 0.05; back at 1.0 it clears.
    #[test]
    fn a_point_with_low_limits() {
        let reg = Arc::new(Registry::with_points([point(serde_json::json!({
            "sensor_id":"S-P1","kind":"pressure","limits":{"l":0.2,"ll":0.1},"deadband":0.01}))]));
        let mut d = fresh();
        let (lv, titles) = levels(&mut d, &reg, "S-P1", "pressure", &[1.0, 0.15, 0.05]);
        assert_eq!(lv, vec![None, Some(Level::Yellow), Some(Level::Orange)]);
        assert_eq!(
            titles[1],
            "Pressure below low-low limit at SITE-330503-0042"
        );
        let mut out = Vec::new();
        d.observe(
            &point_reading(&reg, "S-P1", "pressure", 40, 1.0),
            false,
            &mut out,
        );
        assert_eq!(out[0].kind, SignalKind::Clear);
        // Its own limits replace the kind's: 1.8 is past the kind's 1.6 warning limit.
        out.clear();
        d.observe(
            &point_reading(&reg, "S-P1", "pressure", 50, 1.8),
            false,
            &mut out,
        );
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn the_points_deadband_holds_and_levels_override() {
        let reg = Arc::new(Registry::with_points([point(serde_json::json!({
            "sensor_id":"S-G1","limits":{"h":10.0,"hh":20.0},"levels":{"h":"yellow","hh":"red"},
            "deadband":3.0}))]));
        // 8 is inside the 3.0 band below h: held; 6.5 is past it: clear.
        let (lv, _) = levels(
            &mut fresh(),
            &reg,
            "S-G1",
            "gas_lel",
            &[11.0, 8.0, 21.0, 18.0, 6.5],
        );
        assert_eq!(
            lv,
            vec![
                Some(Level::Yellow),
                Some(Level::Yellow),
                Some(Level::Red),
                Some(Level::Red),
                None
            ]
        );
        // A point without limits keeps its kind's limits, with its own deadband.
        let reg = Arc::new(Registry::with_points([point(serde_json::json!({
            "sensor_id":"S-G2","deadband":3.0}))]));
        let (lv, _) = levels(
            &mut fresh(),
            &reg,
            "S-G2",
            "gas_lel",
            &[12.0, 7.5, 6.9, 26.0],
        );
        assert_eq!(
            lv,
            vec![
                Some(Level::Yellow),
                Some(Level::Yellow),
                None,
                Some(Level::Red)
            ]
        );
    }

    /// The registry is shared: a limit changed between two readings judges the second.
    #[test]
    fn a_limit_change_applies_to_the_next_reading() {
        let reg = Arc::new(Registry::with_points([point(serde_json::json!({
            "sensor_id":"S-T1","limits":{"h":150.0,"hh":160.0}}))]));
        let mut d = fresh();
        let (lv, _) = levels(&mut d, &reg, "S-T1", "temperature", &[140.0]);
        assert_eq!(lv, vec![None]);
        reg.upsert(point(
            serde_json::json!({"sensor_id":"S-T1","limits":{"h":130.0,"hh":160.0}}),
        ));
        let mut out = Vec::new();
        d.observe(
            &point_reading(&reg, "S-T1", "temperature", 10, 140.0),
            false,
            &mut out,
        );
        assert!(
            matches!(
                &out[0].kind,
                SignalKind::Anomalous {
                    level: Some(Level::Yellow),
                    ..
                }
            ),
            "{out:?}"
        );
        assert!(!out[0].subject.contains_key("hazard_grade"));
        reg.remove("S-T1");
        out.clear();
        // Removed: the kind's limits (alarm 120) judge it again.
        d.observe(
            &point_reading(&reg, "S-T1", "temperature", 20, 140.0),
            false,
            &mut out,
        );
        assert!(
            matches!(
                &out[0].kind,
                SignalKind::Anomalous {
                    level: Some(Level::Orange),
                    ..
                }
            ),
            "{out:?}"
        );
    }

    #[test]
    fn the_subject_names_the_point_and_its_hazard_grade() {
        let reg = Arc::new(Registry::with_points([point(serde_json::json!({
            "sensor_id":"S-T1","name":"R-2 outlet","site_name":"Jiahe Chemical","hazard_grade":1,
            "limits":{"h":150.0}}))]));
        let mut out = Vec::new();
        fresh().observe(
            &point_reading(&reg, "S-T1", "temperature", 0, 151.0),
            false,
            &mut out,
        );
        let s = &out[0].subject;
        assert_eq!(s["name"], "R-2 outlet");
        assert_eq!(s["site_name"], "Jiahe Chemical");
        assert_eq!(s["hazard_grade"], 1);
        assert_eq!(s["sensor_id"], "S-T1");
    }
}
