//! `site_correlation` (sensors): several sensors of one site are anomalous within a short
//! window. One sensor drifting is a maintenance ticket; gas, H2S and temperature rising
//! together at one plant is an incident, so this detector escalates with the count.
//!
//! It keeps its own cheap per-sensor anomaly test: the reading's deviation from the
//! sensor's EWMA baseline ([`EwmaState`], the `ewma_z` baseline: event-time weights with
//! `half_life`, equal weights while the history is shorter than its memory, scored before
//! folding in, folded in winsorized) beyond `z_threshold`
//! standard deviations in the counted `direction`, after `min_samples` readings. Fault
//! readings are ignored. Per site it keeps a fixed ring of the last 8 distinct anomalous
//! sensors (hash of the sensor id, last anomalous event time): the site fires when at
//! least `min_sensors` distinct sensors were anomalous within `window` — at `level`, and
//! at `escalated_level` from `min_sensors + 1` sensors. Anomalous signals go out at each
//! anomalous reading while the site fires; one `Clear` when the count falls below
//! `min_sensors` (by a reading, or by the watermark in `advance()`).
//!
//! State: per sensor 88 bytes ([`EwmaState`]) under the sensor id; per site 152 bytes
//! ([`SiteRing`]) under the site id. Both evicted after `ttl` idle. Durable state: one
//! changelog entry per key holding either or both (see [`Saved`]).

use std::time::Duration;

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};

use super::ewma::{weight, EwmaState};
use super::{
    fmt_duration, score, BuildCtx, Detector, DetectorSpec, Direction, Evidence, KeyedState, Signal,
    SignalKind,
};
use crate::decode::{Event, Stream};
use crate::regions::{RegionRef, Regions};
use crate::signal::Level;
use crate::state::{codec, StateError};

pub const NAME: &str = "site_correlation";
const RING: usize = 8;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SiteCorrelationConfig {
    /// Sensor kinds taking part; empty = every kind.
    #[serde(default)]
    pub kinds: Vec<String>,
    /// Per-sensor test: a reading is anomalous beyond this many EWMA standard deviations.
    #[serde(default = "default_z")]
    pub z_threshold: f64,
    /// Which way a deviation counts for the per-sensor test.
    #[serde(default = "default_up")]
    pub direction: Direction,
    /// Time for a reading's weight in the per-sensor baseline to halve.
    #[serde(default = "default_half_life", with = "humantime_serde")]
    pub half_life: Duration,
    /// Readings before a sensor's baseline is trusted.
    #[serde(default = "default_min_samples")]
    pub min_samples: u32,
    /// Floor on the per-sensor standard deviation, relative to |mean| (kinds differ in
    /// unit: a fraction works for MPa and °C alike), with an absolute floor of 1e-6.
    #[serde(default = "default_min_rel_std")]
    pub min_rel_std: f64,
    /// Distinct anomalous sensors of one site within `window` that fire (2..=8).
    #[serde(default = "default_min_sensors")]
    pub min_sensors: u32,
    /// How close in time the sensors' anomalies must be.
    #[serde(default = "default_window", with = "humantime_serde")]
    pub window: Duration,
    /// Level at `min_sensors` anomalous sensors.
    #[serde(default = "default_level")]
    pub level: Level,
    /// Level at `min_sensors + 1` or more.
    #[serde(default = "default_escalated")]
    pub escalated_level: Level,
    /// Sensors and sites idle this long are forgotten.
    #[serde(default = "default_ttl", with = "humantime_serde")]
    pub ttl: Duration,
}

fn default_z() -> f64 {
    3.0
}
fn default_up() -> Direction {
    Direction::Up
}
fn default_half_life() -> Duration {
    Duration::from_secs(300)
}
fn default_min_samples() -> u32 {
    20
}
fn default_min_rel_std() -> f64 {
    0.01
}
fn default_min_sensors() -> u32 {
    2
}
fn default_window() -> Duration {
    Duration::from_secs(300)
}
fn default_level() -> Level {
    Level::Orange
}
fn default_escalated() -> Level {
    Level::Red
}
fn default_ttl() -> Duration {
    Duration::from_secs(6 * 3600)
}

impl Default for SiteCorrelationConfig {
    fn default() -> Self {
        Self {
            kinds: Vec::new(),
            z_threshold: default_z(),
            direction: default_up(),
            half_life: default_half_life(),
            min_samples: default_min_samples(),
            min_rel_std: default_min_rel_std(),
            min_sensors: default_min_sensors(),
            window: default_window(),
            level: default_level(),
            escalated_level: default_escalated(),
            ttl: default_ttl(),
        }
    }
}

impl DetectorSpec for SiteCorrelationConfig {
    const NAME: &'static str = NAME;
    const STREAMS: &'static [Stream] = &[Stream::Sensors];
    type Runtime = SiteCorrelation;

    fn validate(&self, path: &str, problems: &mut Vec<String>) {
        if !(self.z_threshold > 0.0 && self.z_threshold.is_finite()) {
            problems.push(format!("{path}.z_threshold: must be > 0"));
        }
        if self.half_life < Duration::from_secs(1) {
            problems.push(format!("{path}.half_life: must be >= 1s"));
        }
        if self.min_samples < 2 {
            problems.push(format!("{path}.min_samples: must be >= 2"));
        }
        if !(self.min_rel_std > 0.0 && self.min_rel_std.is_finite()) {
            problems.push(format!("{path}.min_rel_std: must be > 0"));
        }
        if !(2..=RING as u32).contains(&self.min_sensors) {
            problems.push(format!("{path}.min_sensors: must be between 2 and {RING}"));
        }
        if self.window.is_zero() {
            problems.push(format!("{path}.window: must be > 0"));
        }
        if self.escalated_level < self.level {
            problems.push(format!("{path}.escalated_level: must not be below level"));
        }
        if self.ttl < self.window {
            problems.push(format!("{path}.ttl: must be >= window"));
        }
    }

    fn build(&self, _stream: Stream, ctx: &BuildCtx) -> SiteCorrelation {
        SiteCorrelation {
            cfg: self.clone(),
            window_secs: self.window.as_secs().max(1) as i64,
            window_label: fmt_duration(self.window),
            regions: ctx.regions.clone(),
            sensors: KeyedState::new(self.ttl),
            sites: KeyedState::new(self.ttl),
            alerting: Default::default(),
        }
    }
}

/// The last distinct anomalous sensors of one site. 152 bytes: 8 × (hash 8 + time 8),
/// region (20), length, cursor, flag (3), padding (1).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct SiteRing {
    sensors: [u64; RING],
    ts: [i64; RING],
    region: RegionRef,
    len: u8,
    next: u8,
    alerting: bool,
}

impl Default for SiteRing {
    fn default() -> Self {
        Self {
            sensors: [0; RING],
            ts: [0; RING],
            region: RegionRef {
                township: None,
                county: None,
                unlisted: false,
            },
            len: 0,
            next: 0,
            alerting: false,
        }
    }
}

impl SiteRing {
    /// Records that `sensor` was anomalous at `t` (refreshes its slot if it has one).
    fn mark(&mut self, sensor: u64, t: i64) {
        let n = self.len as usize;
        if let Some(i) = self.sensors[..n].iter().position(|&s| s == sensor) {
            self.ts[i] = self.ts[i].max(t);
            return;
        }
        let i = self.next as usize;
        self.sensors[i] = sensor;
        self.ts[i] = t;
        self.next = ((i + 1) % RING) as u8;
        self.len = (self.len + 1).min(RING as u8);
    }

    /// Distinct sensors anomalous after `from`.
    fn count_since(&self, from: i64) -> u32 {
        self.ts[..self.len as usize]
            .iter()
            .filter(|&&t| t > from)
            .count() as u32
    }
}

/// This detector's changelog entry under one key. Sensor ids and site ids share the
/// stream's key space and nothing stops a site being named like a sensor, so the entry
/// carries each map's own encoding of the key, either or both. Written with `Vec<u8>`
/// parts, read back as slices of the record (postcard encodes both alike): no copy.
#[derive(Serialize, Deserialize)]
struct Saved<B> {
    sensor: Option<B>,
    site: Option<B>,
}

pub struct SiteCorrelation {
    cfg: SiteCorrelationConfig,
    window_secs: i64,
    window_label: String,
    regions: std::sync::Arc<Regions>,
    sensors: KeyedState<EwmaState>,
    sites: KeyedState<SiteRing>,
    /// Sites whose ring is `alerting`: `advance` looks at these only, not at every site
    /// on every watermark second (the walk was 5.6% of the profile).
    alerting: hashbrown::HashSet<Box<str>, ahash::RandomState>,
}

impl SiteCorrelation {
    fn subject(&self, site: &str, region: RegionRef) -> serde_json::Map<String, serde_json::Value> {
        let code = self
            .regions
            .township_code(region)
            .or_else(|| self.regions.county_code(region))
            .unwrap_or_else(|| self.regions.city_code());
        let mut m = serde_json::Map::new();
        m.insert("site_id".into(), site.into());
        m.insert("region".into(), code.into());
        m
    }

    /// The per-sensor test: (counted z, anomalous), baseline updated.
    fn sensor_test(&mut self, sensor: &str, value: f64, ts: DateTime<FixedOffset>) -> (f64, bool) {
        let k = self.cfg.z_threshold;
        let st = self.sensors.touch(sensor, ts);
        let t = ts.timestamp();
        let warm = st.n >= self.cfg.min_samples;
        let sd = st
            .var
            .sqrt()
            .max(self.cfg.min_rel_std * st.mean.abs())
            .max(1e-6);
        let z = (value - st.mean) / sd;
        let counted = self.cfg.direction.counted(z);
        // Until the EWMA's own memory is longer than the history, weigh readings equally
        // (a = 1/(n+1): the plain running mean and variance), so a young baseline's
        // variance is not biased towards 0 by a long half-life.
        let a = if st.n == 0 {
            1.0
        } else {
            weight((t - st.last_ts) as f64, self.cfg.half_life.as_secs_f64())
                .max(1.0 / (f64::from(st.n) + 1.0))
        };
        let x = if warm {
            value.clamp(st.mean - k * sd, st.mean + k * sd)
        } else {
            value
        };
        st.update(x, a);
        st.last_ts = st.last_ts.max(t);
        (counted, warm && counted > k)
    }
}

impl Detector for SiteCorrelation {
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
        let (_z, anomalous) = self.sensor_test(&r.sensor_id, value, r.ts);
        let t = r.ts.timestamp();
        let min = self.cfg.min_sensors;
        let ring = self.sites.touch(&r.site_id, r.ts);
        ring.region = r.region;
        if anomalous {
            ring.mark(super::stable_hash(&r.sensor_id), t);
        }
        let n = ring.count_since(t - self.window_secs);
        let firing = n >= min;
        let kind = if firing && anomalous {
            if !ring.alerting {
                self.alerting.insert(r.site_id.as_str().into());
            }
            ring.alerting = true;
            let level = if n > min {
                self.cfg.escalated_level
            } else {
                self.cfg.level
            };
            SignalKind::Anomalous {
                score: score::from_ratio(f64::from(n), f64::from(min)),
                level: Some(level),
                title: format!("{n} sensors anomalous together at {}", super::site_label(r)),
                evidence: Evidence {
                    observed: f64::from(n),
                    expected: 0.0,
                    score: f64::from(n),
                    threshold: f64::from(min),
                    window: self.window_label.clone(),
                    p_value: None,
                    false_alarms_per_day: None,
                },
            }
        } else if !firing && ring.alerting {
            ring.alerting = false;
            self.alerting.remove(r.site_id.as_str());
            SignalKind::Clear
        } else {
            return if anomalous {
                score::from_ratio(f64::from(n), f64::from(min))
            } else {
                0.0
            };
        };
        out.push(Signal {
            stream: Stream::Sensors,
            detector: NAME,
            key: r.site_id.clone(),
            subject: self.subject(&r.site_id, r.region),
            region: r.region,
            ts: r.ts,
            event_id: Some(ev.id()),
            kind,
        });
        if anomalous {
            score::from_ratio(f64::from(n), f64::from(min))
        } else {
            0.0
        }
    }

    fn advance(&mut self, watermark: DateTime<FixedOffset>, out: &mut Vec<Signal>) {
        // A site whose anomalies aged out of the window clears even if its sensors go quiet.
        let from = watermark.timestamp() - self.window_secs;
        let min = self.cfg.min_sensors;
        let mut cleared = Vec::new();
        let sites = &mut self.sites;
        self.alerting.retain(|site| {
            let mut still = false;
            sites.update(site, |ring| {
                if !(ring.alerting && ring.count_since(from) < min) {
                    still = ring.alerting;
                    return false;
                }
                ring.alerting = false;
                cleared.push((site.to_string(), ring.region));
                true
            });
            // Evicted meanwhile (no update), or just cleared: no longer alerting.
            still
        });
        for (site, region) in cleared {
            out.push(Signal {
                stream: Stream::Sensors,
                detector: NAME,
                subject: self.subject(&site, region),
                key: site,
                region,
                ts: watermark,
                event_id: None,
                kind: SignalKind::Clear,
            });
        }
        self.sensors.evict_idle(watermark);
        self.sites.evict_idle(watermark);
    }

    fn keys(&self) -> usize {
        self.sensors.len() + self.sites.len()
    }

    fn track_changes(&mut self) {
        self.sensors.track_changes();
        self.sites.track_changes();
    }

    fn take_dirty(&mut self, out: &mut Vec<Box<str>>) {
        // A key in both maps comes out twice; the set writes it once.
        self.sensors.take_dirty(out);
        self.sites.take_dirty(out);
    }

    fn save(&self, key: &str) -> Option<Vec<u8>> {
        let saved = Saved {
            sensor: self.sensors.save(key),
            site: self.sites.save(key),
        };
        (saved.sensor.is_some() || saved.site.is_some()).then(|| codec::encode(&saved))
    }

    fn restore(&mut self, key: &str, bytes: &[u8]) -> Result<(), StateError> {
        let saved: Saved<&[u8]> = codec::decode_borrowed(key, bytes)?;
        match saved.sensor {
            Some(b) => self.sensors.restore(key, b)?,
            None => self.sensors.remove(key),
        }
        match saved.site {
            Some(b) => self.sites.restore(key, b)?,
            None => self.sites.remove(key),
        }
        if self.sites.get(key).is_some_and(|r| r.alerting) {
            self.alerting.insert(key.into());
        } else {
            self.alerting.remove(key);
        }
        Ok(())
    }

    fn reserve(&mut self, additional: usize) {
        // A record is a sensor's or a site's; sensors are the many.
        self.sensors.reserve(additional);
    }

    fn forget(&mut self, key: &str) {
        self.sensors.remove(key);
        self.sites.remove(key);
        self.alerting.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::SensorStatus;
    use crate::detect::testutil::{reading, ts};
    use proptest::prelude::*;

    fn warm(d: &mut SiteCorrelation, out: &mut Vec<Signal>) {
        for i in 0..40 {
            let w = (i % 3) as f64 * 0.1;
            d.observe(&reading("GAS", "gas_lel", i * 30, 3.0 + w), false, out);
            d.observe(&reading("H2S", "h2s_ppm", i * 30, 1.5 + w), false, out);
            d.observe(&reading("TMP", "temperature", i * 30, 45.0 + w), false, out);
        }
    }

    fn levels(out: &[Signal]) -> Vec<Option<Level>> {
        out.iter()
            .map(|s| match &s.kind {
                SignalKind::Anomalous { level, .. } => *level,
                SignalKind::Clear => None,
            })
            .collect()
    }

    #[test]
    fn one_sensor_alone_is_quiet_two_fire_three_escalate_then_clear() {
        let mut d =
            SiteCorrelationConfig::default().build(Stream::Sensors, &crate::pipeline::test_ctx());
        let mut out = Vec::new();
        warm(&mut d, &mut out);
        assert!(out.is_empty(), "{out:?}");
        // Gas alone jumps: one sensor is not a site event.
        let s = d.observe(&reading("GAS", "gas_lel", 1200, 9.0), false, &mut out);
        assert!(out.is_empty() && s > 0.0 && s < 0.5, "{s} {out:?}");
        // H2S follows 2 minutes later: two sensors -> orange.
        let s = d.observe(&reading("H2S", "h2s_ppm", 1320, 8.0), false, &mut out);
        assert!((s - 0.5).abs() < 1e-12);
        assert_eq!(levels(&out), vec![Some(Level::Orange)]);
        assert_eq!(out[0].key, "SITE-330503-0042");
        assert_eq!(out[0].subject["region"], "330503101");
        // Temperature too: three -> red.
        d.observe(&reading("TMP", "temperature", 1330, 70.0), false, &mut out);
        assert_eq!(levels(&out)[1], Some(Level::Red));
        let SignalKind::Anomalous {
            title, evidence, ..
        } = &out[1].kind
        else {
            panic!()
        };
        assert_eq!(title, "3 sensors anomalous together at SITE-330503-0042");
        assert_eq!((evidence.observed, evidence.threshold), (3.0, 2.0));
        // The window passes with nothing new: one Clear from the watermark.
        out.clear();
        d.advance(ts("2026-11-26T00:26:00+08:00"), &mut out);
        assert!(out.is_empty(), "two anomalies still within 5 m");
        d.advance(ts("2026-11-26T00:27:00+08:00"), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].kind, SignalKind::Clear);
        d.advance(ts("2026-11-26T00:28:00+08:00"), &mut out);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn anomalies_further_apart_than_the_window_do_not_correlate() {
        let mut d =
            SiteCorrelationConfig::default().build(Stream::Sensors, &crate::pipeline::test_ctx());
        let mut out = Vec::new();
        warm(&mut d, &mut out);
        d.observe(&reading("GAS", "gas_lel", 1200, 9.0), false, &mut out);
        d.observe(&reading("H2S", "h2s_ppm", 1200 + 301, 8.0), false, &mut out);
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn faults_and_warm_up_are_ignored() {
        let mut d =
            SiteCorrelationConfig::default().build(Stream::Sensors, &crate::pipeline::test_ctx());
        let mut out = Vec::new();
        // Cold sensors: big jumps mean nothing yet.
        d.observe(&reading("A", "gas_lel", 0, 1.0), false, &mut out);
        d.observe(&reading("B", "gas_lel", 0, 1.0), false, &mut out);
        d.observe(&reading("A", "gas_lel", 10, 50.0), false, &mut out);
        d.observe(&reading("B", "gas_lel", 10, 50.0), false, &mut out);
        assert!(out.is_empty());
        warm(&mut d, &mut out);
        for id in ["GAS", "H2S", "TMP"] {
            let Event::Sensor(mut r) = reading(id, "gas_lel", 1200, 500.0) else {
                panic!()
            };
            r.status = SensorStatus::Fault;
            d.observe(&Event::Sensor(r), false, &mut out);
        }
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn validation_names_paths() {
        let c = SiteCorrelationConfig {
            min_sensors: 1,
            escalated_level: Level::Yellow,
            ..Default::default()
        };
        let mut p = Vec::new();
        c.validate("detectors.sensors[3]", &mut p);
        assert_eq!(
            p,
            vec![
                "detectors.sensors[3].min_sensors: must be between 2 and 8",
                "detectors.sensors[3].escalated_level: must not be below level"
            ]
        );
    }

    #[test]
    fn state_sizes() {
        assert_eq!(std::mem::size_of::<SiteRing>(), 152);
        // The per-sensor baseline is ewma_z's state, budget fields included (unused here).
        assert_eq!(std::mem::size_of::<EwmaState>(), 88);
    }

    proptest! {
        #[test]
        fn scores_bounded_never_nan(xs in proptest::collection::vec((0usize..4, -1e6f64..1e6), 1..300)) {
            let mut d = SiteCorrelationConfig { min_samples: 2, direction: Direction::Both, ..Default::default() }
                .build(Stream::Sensors, &crate::pipeline::test_ctx());
            let mut out = Vec::new();
            for (i, (s, x)) in xs.iter().enumerate() {
                let id = format!("S{s}");
                let sc = d.observe(&reading(&id, "pressure", i as i64 * 10, *x), false, &mut out);
                prop_assert!(sc.is_finite() && (0.0..=1.0).contains(&sc));
            }
            for s in &out {
                if let SignalKind::Anomalous { score, .. } = &s.kind {
                    prop_assert!((0.5..=1.0).contains(score));
                }
            }
        }
    }

    #[test]
    fn both_maps_round_trip_even_under_one_key_and_a_watermark_clear_sticks() {
        use crate::detect::testutil::{flush, restored, Log};
        let build = || {
            SiteCorrelationConfig::default().build(Stream::Sensors, &crate::pipeline::test_ctx())
        };
        let mut d = build();
        d.track_changes();
        let mut log = Log::new();
        let mut out = Vec::new();
        warm(&mut d, &mut out);
        // A sensor named like its site: one state key held in both maps.
        const SITE: &str = "SITE-330503-0042";
        for i in 0..40 {
            d.observe(
                &reading(SITE, "pressure", i * 30, 1.0 + (i % 2) as f64 * 0.01),
                false,
                &mut out,
            );
        }
        assert!(out.is_empty(), "{out:?}");
        d.observe(&reading("GAS", "gas_lel", 1200, 9.0), false, &mut out);
        d.observe(&reading("H2S", "h2s_ppm", 1320, 8.0), false, &mut out);
        assert_eq!(out.len(), 1, "{out:?}");
        flush(&mut d, &mut log);
        assert!(d.sensors.get(SITE).is_some() && d.sites.get(SITE).is_some());
        // The watermark clears the site; only `advance` touched it.
        out.clear();
        d.advance(ts("2026-11-26T00:28:00+08:00"), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].kind, SignalKind::Clear);
        assert_eq!(flush(&mut d, &mut log), 1, "the clear changed the site");

        let mut r = restored(build(), &log);
        assert_eq!(Detector::keys(&r), Detector::keys(&d));
        let (mut a, mut b) = (Vec::new(), Vec::new());
        d.advance(ts("2026-11-26T00:29:00+08:00"), &mut a);
        r.advance(ts("2026-11-26T00:29:00+08:00"), &mut b);
        assert!(a.is_empty() && b.is_empty(), "no second clear: {b:?}");
        // Baselines and rings carry over: the same readings, the same signals and scores.
        for (id, kind, t, v) in [
            (SITE, "pressure", 1800, 1.5),
            ("GAS", "gas_lel", 1810, 9.5),
            ("TMP", "temperature", 1820, 70.0),
            (SITE, "pressure", 1830, 1.005),
        ] {
            let ev = reading(id, kind, t, v);
            let (sa, sb) = (d.observe(&ev, false, &mut a), r.observe(&ev, false, &mut b));
            assert_eq!(sa.to_bits(), sb.to_bits(), "{id} at {t}");
        }
        assert!(a.len() >= 2, "{a:?}");
        assert_eq!(a, b);
    }
}
