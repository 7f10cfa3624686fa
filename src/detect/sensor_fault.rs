//! `sensor_fault` (sensors): a reading that is not a measurement. The device reports
//! `status = "fault"`, or its value lies outside its kind's measuring range
//! (`[input.ranges]`, decoded as [`SensorStatus::OutOfRange`]).
//!
//! Such readings never reach a baseline: every value detector skips a faulty reading. This
//! detector is what they leave behind: one maintenance episode per faulty stretch, at a
//! fixed low level, which the alert policy routes to the site's township alone and never
//! escalates (`alert::policy`): a glitching transmitter is work for the site's
//! maintenance, not a hazard for the city. The first good reading clears it.
//!
//! State: only keys in fault are held (a flag inside the keyed map), so a city of healthy
//! sensors costs nothing here.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::{sensor_signal, BuildCtx, Detector, DetectorSpec, Evidence, KeyedState, SignalKind};
use crate::decode::{Event, Ranges, SensorStatus, Stream};
use crate::signal::Level;

pub const NAME: &str = "sensor_fault";

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SensorFaultConfig {
    /// The episode's level: `blue` or `yellow` (a fault is never a hazard level).
    pub level: Level,
    /// A sensor in fault that falls silent this long is forgotten.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
}

impl Default for SensorFaultConfig {
    fn default() -> Self {
        Self {
            level: Level::Yellow,
            ttl: Duration::from_secs(6 * 3600),
        }
    }
}

impl DetectorSpec for SensorFaultConfig {
    const NAME: &'static str = NAME;
    const STREAMS: &'static [Stream] = &[Stream::Sensors];
    type Runtime = SensorFault;

    fn validate(&self, path: &str, problems: &mut Vec<String>) {
        if self.level > Level::Yellow {
            problems.push(format!(
                "{path}.level: must be \"blue\" or \"yellow\" (a sensor fault is maintenance, never a hazard level)"
            ));
        }
        if self.ttl.is_zero() {
            problems.push(format!("{path}.ttl: must be > 0"));
        }
    }

    fn build(&self, _stream: Stream, ctx: &BuildCtx) -> SensorFault {
        SensorFault {
            level: self.level,
            ranges: ctx.ranges.clone(),
            state: KeyedState::new(self.ttl),
        }
    }
}

pub struct SensorFault {
    level: Level,
    ranges: Arc<Ranges>,
    /// Keys in fault: `true` while their episode is firing.
    state: KeyedState<bool>,
}

impl SensorFault {
    fn anomalous(&self, r: &crate::decode::SensorReading) -> SignalKind {
        let label = super::point_label(r);
        let site = super::site_label(r);
        // The decoder judged with the point's range when it has one, else the kind's.
        let range = r
            .point
            .as_ref()
            .and_then(|p| p.range)
            .or_else(|| self.ranges.get(&r.kind));
        let (title, expected, threshold) = match (r.status, range) {
            (SensorStatus::OutOfRange, Some([lo, hi])) => (
                format!(
                    "{label} sensor fault at {site}: reading {} outside its range [{lo}, {hi}]",
                    r.value
                ),
                (lo + hi) / 2.0,
                if r.value > hi { hi } else { lo },
            ),
            _ => (
                format!("{label} sensor reports a fault at {site}"),
                0.0,
                0.0,
            ),
        };
        SignalKind::Anomalous {
            score: 0.5,
            level: Some(self.level),
            title,
            evidence: Evidence {
                observed: r.value,
                expected,
                score: 1.0,
                threshold,
                window: "instant".into(),
                p_value: None,
                false_alarms_per_day: None,
            },
        }
    }
}

impl Detector for SensorFault {
    fn name(&self) -> &'static str {
        NAME
    }

    fn observe(&mut self, ev: &Event, _late: bool, out: &mut Vec<super::Signal>) -> f64 {
        let Event::Sensor(r) = ev else { return 0.0 };
        if r.status.is_fault() {
            *self.state.touch(&r.sensor_id, r.ts) = true;
            let kind = self.anomalous(r);
            out.push(sensor_signal(NAME, r, ev.id(), kind));
            // The score is the hazard score: a fault says nothing about the hazard.
            return 0.0;
        }
        if self.state.get(&r.sensor_id).is_some() {
            self.state.remove(&r.sensor_id);
            out.push(sensor_signal(NAME, r, ev.id(), SignalKind::Clear));
        }
        0.0
    }

    fn advance(
        &mut self,
        watermark: chrono::DateTime<chrono::FixedOffset>,
        _out: &mut Vec<super::Signal>,
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
    use crate::detect::testutil::reading;

    fn levels(d: &mut SensorFault, evs: &[Event]) -> Vec<Option<Option<Level>>> {
        evs.iter()
            .map(|ev| {
                let mut out = Vec::new();
                d.observe(ev, false, &mut out);
                assert!(out.len() <= 1);
                out.first().map(|s| match &s.kind {
                    SignalKind::Anomalous { level, .. } => *level,
                    SignalKind::Clear => None,
                })
            })
            .collect()
    }

    #[test]
    fn out_of_range_and_reported_faults_fire_yellow_and_the_next_good_reading_clears() {
        let mut d =
            SensorFaultConfig::default().build(Stream::Sensors, &crate::pipeline::test_ctx());
        let Event::Sensor(mut faulty) = reading("P1", "pressure", 30, 0.8) else {
            panic!()
        };
        faulty.status = SensorStatus::Fault;
        let evs = [
            reading("P1", "pressure", 0, 0.8),
            reading("P1", "pressure", 10, 1e308),
            reading("P1", "pressure", 20, -1e308),
            Event::Sensor(faulty),
            reading("P1", "pressure", 40, 0.81),
            reading("P1", "pressure", 50, 0.82),
        ];
        let y = Some(Some(Level::Yellow));
        assert_eq!(
            levels(&mut d, &evs),
            vec![None, y, y, y, Some(None), None],
            "one firing stretch, one clear, nothing for good readings"
        );
        assert_eq!(d.keys(), 0, "healthy sensors hold no state");
    }

    #[test]
    fn the_title_names_the_range() {
        let mut d =
            SensorFaultConfig::default().build(Stream::Sensors, &crate::pipeline::test_ctx());
        let mut out = Vec::new();
        d.observe(&reading("P1", "pressure", 0, 1e308), false, &mut out);
        let SignalKind::Anomalous {
            title, evidence, ..
        } = &out[0].kind
        else {
            panic!()
        };
        assert!(
            title.contains("outside its range [-200000, 1000000000]"),
            "{title}"
        );
        assert_eq!(evidence.threshold, 1e9);
    }

    #[test]
    fn its_episodes_are_maintenance() {
        assert!(crate::signal::is_maintenance(NAME));
        assert!(!crate::signal::is_maintenance(
            super::super::threshold::NAME
        ));
    }

    #[test]
    fn a_hazard_level_is_refused() {
        let c = SensorFaultConfig {
            level: Level::Orange,
            ..Default::default()
        };
        let mut p = Vec::new();
        c.validate("detectors.sensors[3]", &mut p);
        assert_eq!(p.len(), 1);
        assert!(p[0].starts_with("detectors.sensors[3].level"), "{p:?}");
    }
}
