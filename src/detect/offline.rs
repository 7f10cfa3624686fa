//! `offline` (sensors): a sensor that reported regularly has gone silent for longer than
//! its own rhythm allows. Judged by the sensors stream's watermark in `advance()`, never
//! by the wall clock, so a replay or a stalled consumer does not declare the field dead.
//!
//! Per sensor: the time of its last reading and an EWMA of its inter-arrival interval,
//! learned online (weight `interval_weight`; each interval folded in capped at `factor`
//! times the current estimate, and the gap that ends an outage is not learned at all, so an
//! outage never teaches that silence is normal). After `min_samples` intervals (warm-up)
//! the sensor fires when `watermark - last_ts > max(min_silence, factor × interval)`, at
//! the fixed `level` (a silent gas sensor is a blind spot at a hazardous site), and the
//! signal is refreshed once per further limit of silence so the episode stays open and its
//! evidence current. Any reading, even one with `status = "fault"`, proves the device is
//! transmitting: it ends the outage with one `Clear`.
//!
//! Inhibition of value alerts: `threshold` and `ewma_z` ignore fault readings, and they only
//! run on readings, which end the offline state, so an offline sensor raises no value
//! alert. A value alert that was open when the sensor went silent receives no more
//! signals; the alert policy's `stale_after` resolves it.
//!
//! State per sensor: 48 bytes (see [`SensorClock`]) under the sensor id. Site id and kind
//! are interned (u32 indexes into one table per detector: sites and kinds are physical
//! installations, so the table is bounded by the plant, not by traffic). Sensors silent
//! past `ttl` are forgotten; an offline episode still open then receives no more signals
//! and the policy's `stale_after` resolves it.
//!
//! Durable state: each sensor's clock with its site and kind as names (interned ids mean
//! nothing to another process), and the time of the last scan under the reserved
//! [`DETECTOR_KEY`](super::DETECTOR_KEY), so a restart scans on the same schedule.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};

use super::{
    fmt_duration, kind_label, score, BuildCtx, Detector, DetectorSpec, Evidence, KeyedState,
    Signal, SignalKind,
};
use crate::decode::{Event, Stream};
use crate::regions::{RegionRef, Regions};
use crate::signal::Level;
use crate::state::{codec, StateError};

pub const NAME: &str = "offline";

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OfflineConfig {
    /// Sensor kinds this instance watches; empty = every kind.
    #[serde(default)]
    pub kinds: Vec<String>,
    /// Intervals between readings needed before the sensor's rhythm is trusted.
    #[serde(default = "default_min_samples")]
    pub min_samples: u32,
    /// Never call a sensor offline after less silence than this.
    #[serde(default = "default_min_silence", with = "humantime_serde")]
    pub min_silence: Duration,
    /// Silence longer than `factor` expected intervals is an outage.
    #[serde(default = "default_factor")]
    pub factor: f64,
    /// EWMA weight of each new interval in the expected interval.
    #[serde(default = "default_interval_weight")]
    pub interval_weight: f64,
    /// The alert level of an outage (fixed: bands do not apply).
    #[serde(default = "default_level")]
    pub level: Level,
    /// Sensors silent this long are forgotten (decommissioned); must exceed `min_silence`.
    #[serde(default = "default_ttl", with = "humantime_serde")]
    pub ttl: Duration,
}

fn default_min_samples() -> u32 {
    10
}
fn default_min_silence() -> Duration {
    Duration::from_secs(300)
}
fn default_factor() -> f64 {
    5.0
}
fn default_interval_weight() -> f64 {
    0.1
}
fn default_level() -> Level {
    Level::Orange
}
fn default_ttl() -> Duration {
    Duration::from_secs(24 * 3600)
}

impl Default for OfflineConfig {
    fn default() -> Self {
        Self {
            kinds: Vec::new(),
            min_samples: default_min_samples(),
            min_silence: default_min_silence(),
            factor: default_factor(),
            interval_weight: default_interval_weight(),
            level: default_level(),
            ttl: default_ttl(),
        }
    }
}

impl DetectorSpec for OfflineConfig {
    const NAME: &'static str = NAME;
    const STREAMS: &'static [Stream] = &[Stream::Sensors];
    type Runtime = Offline;

    fn validate(&self, path: &str, problems: &mut Vec<String>) {
        if !(1..=u32::from(u16::MAX)).contains(&self.min_samples) {
            problems.push(format!("{path}.min_samples: must be between 1 and 65535"));
        }
        if self.min_silence < Duration::from_secs(1) {
            problems.push(format!("{path}.min_silence: must be >= 1s"));
        }
        if !(self.factor >= 1.0 && self.factor.is_finite()) {
            problems.push(format!("{path}.factor: must be >= 1"));
        }
        if !(self.interval_weight > 0.0 && self.interval_weight <= 1.0) {
            problems.push(format!("{path}.interval_weight: must be in (0, 1]"));
        }
        if self.ttl <= self.min_silence {
            problems.push(format!("{path}.ttl: must be > min_silence"));
        }
    }

    fn build(&self, _stream: Stream, ctx: &BuildCtx) -> Offline {
        Offline {
            cfg: self.clone(),
            min_silence: self.min_silence.as_secs() as i64,
            // Look for new outages at most every min_silence / 30 of event time (10 s for
            // the default 5 m): a scan is O(sensors), the watermark moves every second.
            scan_every: (self.min_silence.as_secs() as i64 / 30).max(1),
            last_scan: i64::MIN,
            scan_dirty: false,
            regions: ctx.regions.clone(),
            points: ctx.points.clone(),
            names: Interner::default(),
            state: KeyedState::new(self.ttl),
        }
    }
}

/// Interned strings (site ids, kinds): bounded by the plant, not by traffic.
#[derive(Debug, Default)]
pub(crate) struct Interner {
    /// Two lookups per reading and per restored sensor: aHash (keyed, like the detector
    /// maps) rather than SipHash, and ids inline in the entry (no pointer to chase).
    ids: hashbrown::HashMap<compact_str::CompactString, u32, ahash::RandomState>,
    names: Vec<Box<str>>,
}

impl Interner {
    pub(crate) fn intern(&mut self, s: &str) -> u32 {
        if let Some(&i) = self.ids.get(s) {
            return i;
        }
        let i = self.names.len() as u32;
        self.names.push(s.into());
        self.ids.insert(s.into(), i);
        i
    }

    pub(crate) fn name(&self, i: u32) -> &str {
        self.names.get(i as usize).map_or("", |s| s)
    }
}

/// One sensor's rhythm. 48 bytes: last reading (8), expected interval (4), interned site
/// and kind (4 + 4), region (20), interval count (2), refreshes sent (2), flag (1), padding.
#[derive(Debug, Clone, Copy)]
pub struct SensorClock {
    last_ts: i64,
    /// EWMA of the inter-arrival interval, seconds.
    interval: f32,
    site: u32,
    kind: u32,
    region: RegionRef,
    /// Intervals folded in (saturating): the warm-up counter.
    samples: u16,
    /// Anomalous signals sent in the current outage.
    refreshes: u16,
    alerting: bool,
}

impl Default for SensorClock {
    fn default() -> Self {
        Self {
            last_ts: i64::MIN,
            interval: 0.0,
            site: 0,
            kind: 0,
            region: RegionRef {
                township: None,
                county: None,
                unlisted: false,
            },
            samples: 0,
            refreshes: 0,
            alerting: false,
        }
    }
}

/// What the changelog keeps of a [`SensorClock`]: the same, with names for the ids.
#[derive(Serialize, Deserialize)]
struct SavedClock<'a> {
    last_ts: i64,
    interval: f32,
    #[serde(borrow)]
    site: Cow<'a, str>,
    #[serde(borrow)]
    kind: Cow<'a, str>,
    region: RegionRef,
    samples: u16,
    refreshes: u16,
    alerting: bool,
}

pub struct Offline {
    cfg: OfflineConfig,
    min_silence: i64,
    scan_every: i64,
    last_scan: i64,
    /// `last_scan` moved since the last `take_dirty`.
    scan_dirty: bool,
    regions: Arc<Regions>,
    /// Looked up only when a sensor is found offline (its name and site's in the alert).
    points: Arc<crate::registry::Registry>,
    names: Interner,
    state: KeyedState<SensorClock>,
}

impl Offline {
    /// The silence (seconds) past which this sensor counts as offline.
    fn limit(&self, st: &SensorClock) -> f64 {
        (self.min_silence as f64).max(self.cfg.factor * f64::from(st.interval))
    }

    fn subject(
        &self,
        sensor: &str,
        st: &SensorClock,
        point: Option<&crate::registry::Point>,
    ) -> serde_json::Map<String, serde_json::Value> {
        let region = self
            .regions
            .township_code(st.region)
            .or_else(|| self.regions.county_code(st.region))
            .unwrap_or_else(|| self.regions.city_code());
        let mut m = serde_json::Map::new();
        m.insert("sensor_id".into(), sensor.into());
        m.insert("site_id".into(), self.names.name(st.site).into());
        m.insert("region".into(), region.into());
        m.insert("kind".into(), self.names.name(st.kind).into());
        if let Some(p) = point {
            super::point_subject(p, &mut m);
        }
        m
    }
}

impl Detector for Offline {
    fn name(&self) -> &'static str {
        NAME
    }

    fn observe(&mut self, ev: &Event, late: bool, out: &mut Vec<Signal>) -> f64 {
        let Event::Sensor(r) = ev else { return 0.0 };
        if !self.cfg.kinds.is_empty() && !self.cfg.kinds.contains(&r.kind) {
            return 0.0;
        }
        let t = r.ts.timestamp();
        // A late reading (a gateway uploading hours of buffered readings) proves the
        // device transmits now, not at its event time: alive as of the last scan. Else
        // every scan during the upload would find it hours silent again, one offline
        // episode per scan.
        let alive_at = if late { self.last_scan } else { i64::MIN };
        let (w, factor) = (self.cfg.interval_weight, self.cfg.factor);
        let st = self.state.touch(&r.sensor_id, r.ts);
        // A sensor's site and kind rarely change: compare with the names held before
        // paying two hash lookups to intern them again.
        let new = st.last_ts == i64::MIN;
        if new || self.names.name(st.site) != r.site_id {
            st.site = self.names.intern(&r.site_id);
        }
        if new || self.names.name(st.kind) != r.kind {
            st.kind = self.names.intern(&r.kind);
        }
        st.region = r.region;
        let was_alerting = st.alerting;
        if st.last_ts != i64::MIN && t > st.last_ts {
            let dt = (t - st.last_ts) as f64;
            // The gap that ends an outage is not the sensor's rhythm: not learned.
            if !was_alerting {
                if st.samples == 0 {
                    st.interval = dt as f32;
                } else {
                    let cur = f64::from(st.interval);
                    let x = dt.min(factor * cur);
                    st.interval = (cur + w * (x - cur)) as f32;
                }
                st.samples = st.samples.saturating_add(1);
            }
        }
        // The next interval is measured from the stamp (at most a scan period short),
        // and the rest of the upload, older than it, teaches no rhythm at all.
        st.last_ts = st.last_ts.max(t).max(alive_at);
        if !was_alerting {
            return 0.0;
        }
        st.alerting = false;
        st.refreshes = 0;
        let st = *st;
        out.push(Signal {
            stream: Stream::Sensors,
            detector: NAME,
            key: r.sensor_id.clone(),
            subject: self.subject(&r.sensor_id, &st, r.point.as_deref()),
            region: r.region,
            ts: r.ts,
            event_id: Some(ev.id()),
            kind: SignalKind::Clear,
        });
        0.0
    }

    fn advance(&mut self, watermark: DateTime<FixedOffset>, out: &mut Vec<Signal>) {
        let wm = watermark.timestamp();
        if self.last_scan == i64::MIN || wm - self.last_scan >= self.scan_every {
            self.last_scan = wm;
            self.scan_dirty = true;
            let min_samples = self.cfg.min_samples;
            let mut fired: Vec<(String, SensorClock, f64, f64)> = Vec::new();
            let (min_silence, factor) = (self.min_silence as f64, self.cfg.factor);
            self.state.for_each_mut(|key, st| {
                if u32::from(st.samples) < min_samples || st.last_ts == i64::MIN {
                    return false;
                }
                let silence = (wm - st.last_ts) as f64;
                let limit = min_silence.max(factor * f64::from(st.interval));
                // First signal past one limit, then one more per further limit of silence.
                if silence <= limit * (f64::from(st.refreshes) + 1.0) {
                    return false;
                }
                st.alerting = true;
                st.refreshes = st.refreshes.saturating_add(1);
                fired.push((key.to_string(), *st, silence, limit));
                true
            });
            for (key, st, silence, limit) in fired {
                debug_assert!((limit - self.limit(&st)).abs() < 1e-9);
                let expected = f64::from(st.interval);
                let point = self.points.get(&key);
                let p = point.as_deref();
                let title = format!(
                    "{} sensor {key} offline at {}: silent {} (reports every {})",
                    p.and_then(|p| p.name.clone())
                        .unwrap_or_else(|| kind_label(self.names.name(st.kind))),
                    p.and_then(|p| p.site_name.as_deref())
                        .unwrap_or_else(|| self.names.name(st.site)),
                    fmt_duration(Duration::from_secs(silence as u64)),
                    fmt_duration(Duration::from_secs(expected.round().max(1.0) as u64)),
                );
                out.push(Signal {
                    stream: Stream::Sensors,
                    detector: NAME,
                    subject: self.subject(&key, &st, p),
                    key,
                    region: st.region,
                    ts: watermark,
                    event_id: None,
                    kind: SignalKind::Anomalous {
                        score: score::from_ratio(silence, limit).max(0.5),
                        level: Some(self.cfg.level),
                        title,
                        evidence: Evidence {
                            observed: silence,
                            expected: (expected * 10.0).round() / 10.0,
                            score: silence,
                            threshold: limit,
                            window: fmt_duration(Duration::from_secs(limit.round() as u64)),
                            p_value: None,
                            false_alarms_per_day: None,
                        },
                    },
                });
            }
        }
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
        if std::mem::take(&mut self.scan_dirty) {
            out.push(super::DETECTOR_KEY.into());
        }
    }

    fn save(&self, key: &str) -> Option<Vec<u8>> {
        if key == super::DETECTOR_KEY {
            return Some(codec::encode(&self.last_scan));
        }
        self.state.save_with(key, |st| SavedClock {
            last_ts: st.last_ts,
            interval: st.interval,
            site: Cow::Borrowed(self.names.name(st.site)),
            kind: Cow::Borrowed(self.names.name(st.kind)),
            region: st.region,
            samples: st.samples,
            refreshes: st.refreshes,
            alerting: st.alerting,
        })
    }

    fn restore(&mut self, key: &str, bytes: &[u8]) -> Result<(), StateError> {
        if key == super::DETECTOR_KEY {
            self.last_scan = codec::decode(key, bytes)?;
            return Ok(());
        }
        let names = &mut self.names;
        self.state
            .restore_with(key, bytes, |c: SavedClock<'_>| SensorClock {
                last_ts: c.last_ts,
                interval: c.interval,
                site: names.intern(&c.site),
                kind: names.intern(&c.kind),
                region: c.region,
                samples: c.samples,
                refreshes: c.refreshes,
                alerting: c.alerting,
            })
    }

    fn reserve(&mut self, additional: usize) {
        self.state.reserve(additional);
    }

    fn forget(&mut self, key: &str) {
        if key == super::DETECTOR_KEY {
            self.last_scan = i64::MIN;
        } else {
            self.state.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::SensorStatus;
    use crate::detect::testutil::reading;
    use crate::detect::{ewma::EwmaZConfig, threshold::ThresholdConfig, Watermark};
    use proptest::prelude::*;

    fn fault(mut ev: Event) -> Event {
        if let Event::Sensor(r) = &mut ev {
            r.status = SensorStatus::Fault;
        }
        ev
    }

    /// Feeds events through a per-stream watermark the way `DetectorSet` does.
    struct Rig {
        dets: Vec<Box<dyn Detector>>,
        wm: Watermark,
        out: Vec<Signal>,
    }

    impl Rig {
        fn push(&mut self, ev: Event) {
            let late = self.wm.is_late(ev.ts());
            for d in &mut self.dets {
                d.observe(&ev, late, &mut self.out);
            }
            if let Some(w) = self.wm.observe(ev.ts()) {
                for d in &mut self.dets {
                    d.advance(w, &mut self.out);
                }
            }
        }
    }

    #[test]
    fn an_upload_of_buffered_readings_ends_the_outage_once() {
        let ctx = crate::pipeline::test_ctx();
        let mut rig = Rig {
            dets: vec![Box::new(
                OfflineConfig::default().build(Stream::Sensors, &ctx),
            )],
            wm: Watermark::new(chrono::Duration::seconds(30)),
            out: Vec::new(),
        };
        // A and B every 30 s for an hour; then A's gateway is cut off for an hour.
        for i in 0..240 {
            for id in ["A", "B"] {
                if id == "B" || i < 120 {
                    rig.push(reading(id, "gas_lel", i * 30, 3.0 + (i % 3) as f64 * 0.1));
                }
            }
        }
        let fired = rig.out.drain(..).filter(|s| s.key == "A").count();
        assert!(fired >= 1, "A went offline");
        // It uploads its hour, one buffered reading per live one of B: hours-old event
        // times, while B keeps the watermark (and the scans) moving.
        for i in 120..240 {
            rig.push(reading("A", "gas_lel", i * 30, 3.0));
            rig.push(reading("B", "gas_lel", (i + 120) * 30, 3.0));
        }
        let kinds: Vec<_> = rig.out.iter().map(|s| (s.key.as_str(), &s.kind)).collect();
        assert_eq!(kinds, [("A", &SignalKind::Clear)], "one clear, no refire");
    }

    #[test]
    fn silent_sensor_fires_while_others_report_and_fault_raises_no_value_alert() {
        let ctx = crate::pipeline::test_ctx();
        let mut rig = Rig {
            dets: vec![
                Box::new(OfflineConfig::default().build(Stream::Sensors, &ctx)),
                Box::new(ThresholdConfig::default().build(Stream::Sensors, &ctx)),
                Box::new(EwmaZConfig::default().build(Stream::Sensors, &ctx)),
            ],
            wm: Watermark::new(chrono::Duration::seconds(30)),
            out: Vec::new(),
        };
        // Three sensors every 30 s for an hour: quiet.
        for i in 0..120 {
            for id in ["A", "B", "C"] {
                let v = 3.0 + (i % 3) as f64 * 0.1;
                rig.push(reading(id, "gas_lel", i * 30, v));
            }
        }
        assert!(rig.out.is_empty(), "{:?}", rig.out);
        // A's device faults and reports a huge value: no value alert from threshold or ewma_z.
        rig.push(fault(reading("A", "gas_lel", 3600, 99.0)));
        assert!(
            rig.out.is_empty(),
            "fault readings are inhibited: {:?}",
            rig.out
        );
        // Then A falls silent while B and C keep the watermark moving.
        for i in 121..160 {
            for id in ["B", "C"] {
                rig.push(reading(id, "gas_lel", i * 30, 3.0));
            }
        }
        let offline: Vec<_> = rig.out.iter().filter(|s| s.detector == NAME).collect();
        assert!(!offline.is_empty(), "A went offline");
        assert!(offline.iter().all(|s| s.key == "A"), "{offline:?}");
        let SignalKind::Anomalous {
            level, evidence, ..
        } = &offline[0].kind
        else {
            panic!("{:?}", offline[0]);
        };
        assert_eq!(*level, Some(Level::Orange));
        // Limit = max(5 m, 5 × 30 s) = 300 s; the scan runs every 10 s of watermark.
        assert_eq!(evidence.threshold, 300.0);
        assert!((evidence.expected - 30.0).abs() < 0.5, "{evidence:?}");
        assert!(evidence.observed > 300.0 && evidence.observed <= 330.0);
        assert_eq!(offline[0].subject["site_id"], "SITE-330503-0042");
        assert!(
            rig.out.iter().all(|s| s.detector == NAME),
            "no value alert while A is silent: {:?}",
            rig.out
        );
        // A reports again: one Clear.
        rig.out.clear();
        rig.push(reading("A", "gas_lel", 160 * 30, 3.0));
        assert_eq!(rig.out.len(), 1, "{:?}", rig.out);
        assert_eq!(rig.out[0].kind, SignalKind::Clear);
    }

    #[test]
    fn warm_up_and_long_silence_refreshes() {
        let mut d = OfflineConfig::default().build(Stream::Sensors, &crate::pipeline::test_ctx());
        let mut out = Vec::new();
        // Only 5 intervals learned: not yet trusted, silence is not an outage.
        for i in 0..6 {
            d.observe(&reading("N", "h2s_ppm", i * 60, 1.0), false, &mut out);
        }
        let t0 = crate::detect::testutil::ts("2026-11-26T00:00:00+08:00");
        d.advance(t0 + chrono::Duration::hours(2), &mut out);
        assert!(out.is_empty());
        // A warm sensor at 60 s: limit max(300, 300) = 300 s.
        for i in 0..11 {
            d.observe(
                &reading("W", "h2s_ppm", 7200 + i * 60, 1.0),
                false,
                &mut out,
            );
        }
        let last = t0 + chrono::Duration::seconds(7200 + 600);
        d.advance(last + chrono::Duration::seconds(299), &mut out);
        assert!(out.is_empty());
        d.advance(last + chrono::Duration::seconds(311), &mut out);
        assert_eq!(out.len(), 1);
        // No new signal until another limit of silence has passed.
        d.advance(last + chrono::Duration::seconds(400), &mut out);
        assert_eq!(out.len(), 1);
        d.advance(last + chrono::Duration::seconds(611), &mut out);
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(|s| s.key == "W"));
    }

    /// A registered sensor's outage names the point and its site (the registry is
    /// consulted when it fires: no reading is at hand).
    #[test]
    fn an_offline_point_is_named() {
        let mut p = crate::registry::Point::new("W");
        p.name = Some("H2S detector HD-3".into());
        p.site_name = Some("Jiahe Chemical".into());
        p.hazard_grade = Some(1);
        let ctx = BuildCtx {
            points: Arc::new(crate::registry::Registry::with_points([p])),
            ..crate::pipeline::test_ctx()
        };
        let mut d = OfflineConfig::default().build(Stream::Sensors, &ctx);
        let mut out = Vec::new();
        for i in 0..11 {
            d.observe(&reading("W", "h2s_ppm", i * 60, 1.0), false, &mut out);
        }
        let t0 = crate::detect::testutil::ts("2026-11-26T00:00:00+08:00");
        d.advance(t0 + chrono::Duration::seconds(600 + 311), &mut out);
        let Some(SignalKind::Anomalous { title, .. }) = out.first().map(|s| &s.kind) else {
            panic!("{out:?}")
        };
        assert!(
            title.starts_with("H2S detector HD-3 sensor W offline at Jiahe Chemical:"),
            "{title}"
        );
        assert_eq!(out[0].subject["hazard_grade"], 1);
    }

    #[test]
    fn outage_gap_is_not_learned() {
        let mut d = OfflineConfig::default().build(Stream::Sensors, &crate::pipeline::test_ctx());
        let mut out = Vec::new();
        for i in 0..20 {
            d.observe(&reading("G", "gas_lel", i * 30, 3.0), false, &mut out);
        }
        let t0 = crate::detect::testutil::ts("2026-11-26T00:00:00+08:00");
        d.advance(t0 + chrono::Duration::seconds(570 + 3600), &mut out);
        d.observe(&reading("G", "gas_lel", 570 + 3600, 3.0), false, &mut out);
        let st = d.state.get("G").unwrap();
        assert!((st.interval - 30.0).abs() < 0.5, "{}", st.interval);
        assert!(!st.alerting);
        assert_eq!(out.last().unwrap().kind, SignalKind::Clear);
    }

    #[test]
    fn validation_names_paths() {
        let c = OfflineConfig {
            factor: 0.5,
            ttl: Duration::from_secs(60),
            ..Default::default()
        };
        let mut p = Vec::new();
        c.validate("detectors.sensors[2]", &mut p);
        assert_eq!(
            p,
            vec![
                "detectors.sensors[2].factor: must be >= 1",
                "detectors.sensors[2].ttl: must be > min_silence"
            ]
        );
    }

    #[test]
    fn state_is_48_bytes() {
        assert_eq!(std::mem::size_of::<SensorClock>(), 48);
    }

    proptest! {
        #[test]
        fn scores_bounded_never_nan(gaps in proptest::collection::vec(0i64..2000, 1..200)) {
            let mut d = OfflineConfig { min_samples: 2, ..Default::default() }
                .build(Stream::Sensors, &crate::pipeline::test_ctx());
            let mut out = Vec::new();
            let t0 = crate::detect::testutil::ts("2026-11-26T00:00:00+08:00");
            let mut t = 0;
            for g in gaps {
                t += g;
                let s = d.observe(&reading("P", "pressure", t, 1.0), false, &mut out);
                prop_assert_eq!(s, 0.0);
                d.advance(t0 + chrono::Duration::seconds(t + g), &mut out);
            }
            for s in &out {
                if let SignalKind::Anomalous { score, evidence, .. } = &s.kind {
                    prop_assert!(score.is_finite() && (0.5..=1.0).contains(score));
                    prop_assert!(evidence.expected.is_finite() && evidence.observed > evidence.threshold);
                }
            }
        }
    }

    #[test]
    fn restore_keeps_names_not_interned_ids_and_the_scan_clock() {
        use crate::detect::testutil::{flush, restored, ts, Log};
        let build =
            || OfflineConfig::default().build(Stream::Sensors, &crate::pipeline::test_ctx());
        let at = |id: &str, site: &str, kind: &str, secs: i64| {
            let mut ev = reading(id, kind, secs, 1.0);
            if let Event::Sensor(r) = &mut ev {
                r.site_id = site.into();
            }
            ev
        };
        let mut d = build();
        d.track_changes();
        let mut out = Vec::new();
        for i in 0..20 {
            d.observe(&at("A", "SITE-A", "gas_lel", i * 10), false, &mut out);
            d.observe(&at("B", "SITE-B", "h2s_ppm", i * 10), false, &mut out);
        }
        let t0 = ts("2026-11-26T00:00:00+08:00");
        let wm = |secs: i64| t0 + chrono::Duration::seconds(secs);
        // A scan at 485 s: 295 s of silence, not yet past the 300 s limit.
        d.advance(wm(485), &mut out);
        assert!(out.is_empty(), "{out:?}");
        let mut log = Log::new();
        flush(&mut d, &mut log);
        assert!(
            log.contains_key(crate::detect::DETECTOR_KEY),
            "the scan clock is saved"
        );

        // A fresh process whose interner already gave ids 0 and 1 to other names.
        let mut fresh = build();
        fresh.observe(&at("Z", "SITE-Z", "pressure", 0), false, &mut out);
        fresh.forget("Z");
        let mut r = restored(fresh, &log);
        assert_eq!(Detector::keys(&r), 2);
        // 492 s: past the limit, but the next scan is due at 495 s, in both.
        let (mut a, mut b) = (Vec::new(), Vec::new());
        d.advance(wm(492), &mut a);
        r.advance(wm(492), &mut b);
        assert!(a.is_empty() && b.is_empty(), "scanned early: {b:?}");
        d.advance(wm(495), &mut a);
        r.advance(wm(495), &mut b);
        a.sort_by(|x, y| x.key.cmp(&y.key));
        b.sort_by(|x, y| x.key.cmp(&y.key));
        assert_eq!(a.len(), 2, "{a:?}");
        assert_eq!(a, b);
        assert_eq!(b[0].subject["site_id"], "SITE-A");
        assert_eq!(b[1].subject["kind"], "h2s_ppm");
        // The outage's refresh count carries over too (scan changes are flushed).
        flush(&mut d, &mut log);
        let mut r2 = restored(build(), &log);
        a.clear();
        b.clear();
        d.advance(wm(700), &mut a);
        r2.advance(wm(700), &mut b);
        assert!(a.is_empty() && b.is_empty(), "refreshed too early: {b:?}");
        d.advance(wm(800), &mut a);
        r2.advance(wm(800), &mut b);
        a.sort_by(|x, y| x.key.cmp(&y.key));
        b.sort_by(|x, y| x.key.cmp(&y.key));
        assert_eq!(a.len(), 2);
        assert_eq!(a, b);
    }
}
