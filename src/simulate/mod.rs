//! A generated city: the three streams over the demo region hierarchy, with labelled
//! injected anomalies. Deterministic for a seed (and a length and site count). Used by
//! `riskstream simulate`, `./scripts/demo`, the backtest and the tests.
//!
//! Background (nothing in it is meant to alert):
//! - [`sensors`]: a few dozen hazardous-chemical sites, each with gas LEL (one or two),
//!   temperature and pressure sensors, most with H2S and a tank level; each sensor samples
//!   every 10-60 s (its own interval, ±1 s jitter), with Gaussian noise of a stable size,
//!   a daily temperature cycle, slow tank fill/draw cycles, a small constant clock skew
//!   (±3 s), an occasional missing reading (never two in a row) and a network delay of up
//!   to a few seconds (rarely up to 20 s, inside the default 30 s allowed lateness).
//! - [`incidents`]: per township and category, a Poisson process with daily and weekly
//!   seasonality (traffic at rush hours, disputes in the evening, petitions on weekdays).
//! - [`fraud`]: ~30 reports an hour city-wide with a daily rhythm, naming one-off phones,
//!   accounts and URLs, and now and then one of a pool of recurring suspects.
//!
//! Realism that is not a hazard ([`realism`], labelled `hazard: false`): quantized,
//! heavy-tailed and daily-cycling sensors, maintenance level shifts, gaps of 10-20 min and
//! a site's late upload (~2 h of readings arriving at once, behind the watermark).
//!
//! Injected anomalies ([`plan`]): one round of every kind per simulated day (one round for
//! runs under a day), each at a random time after the detectors' warm-up, each listed in
//! `labels.jsonl` with the detectors expected to catch it.
//!
//! Memory bound: events are generated one hour of event time at a time, sorted by arrival
//! (a late upload's readings wait up to ~2 h for theirs) and streamed out ([`Simulation`]
//! is an iterator), so a week of ~2.5 M readings never sits in memory; the anomalies' own
//! extra events are planned up front.

mod fraud;
mod incidents;
mod plan;
mod realism;
mod sensors;

use std::collections::VecDeque;
use std::io::Write;
use std::path::Path;

use chrono::{DateTime, FixedOffset, TimeZone};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::decode::Stream;
use crate::regions::Regions;

/// One generated input message.
#[derive(Debug, Clone)]
pub struct SimEvent {
    /// The event time the message carries (the source's clock, skew included).
    pub ts: DateTime<FixedOffset>,
    /// When the message reaches the topic, in Unix milliseconds: the output order.
    pub arrival_ms: i64,
    pub stream: Stream,
    pub key: String,
    pub json: String,
}

/// One injected anomaly, as `labels.jsonl` lists it.
///
/// `subject` names what an alert must be about to count as catching it: a sensor id
/// (`S-...`), a site id (`SITE-...`), a region code (township, county or city), or a
/// suspect as `phone:...`, `account:...`, `url:...`. See [`crate::backtest`] for matching.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Label {
    pub stream: Stream,
    pub kind: String,
    pub subject: String,
    /// RFC 3339: the first moment the data is anomalous (in the source's clock).
    pub start: String,
    /// RFC 3339: the data is normal again from here.
    pub end: String,
    /// `red` .. `blue` for hazards; `none` for not-a-hazard stretches.
    pub expected_level: String,
    /// False for realism that is not a hazard (a maintenance shift, a gap, a late upload,
    /// a quantized, heavy-tailed or daily-cycling sensor): an alert above blue inside it is
    /// a false alarm, and it is never missed. Labels from before the field are hazards.
    #[serde(default = "hazard_default")]
    pub hazard: bool,
    /// Detector names expected to catch it (including ones not configured by default).
    #[serde(default)]
    pub detectors: Vec<String>,
    /// What was injected, for people.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub note: String,
}

fn hazard_default() -> bool {
    true
}

#[derive(Debug, Clone)]
pub struct SimConfig {
    pub hours: f64,
    pub seed: u64,
    pub start: DateTime<FixedOffset>,
    pub sites: usize,
}

/// The whole run in memory: for small runs and tests. Big runs stream a [`Simulation`].
pub struct City {
    pub events: Vec<SimEvent>,
    pub labels: Vec<Label>,
}

impl City {
    /// The messages as a source hands them over, in arrival order (in-process runs of
    /// the pipeline: tests and benches). Origins are lines of a file named `city`.
    pub fn envelopes(&self) -> Vec<crate::source::Envelope> {
        let now = std::time::Instant::now();
        self.events
            .iter()
            .enumerate()
            .map(|(i, e)| crate::source::Envelope {
                stream: e.stream,
                key: Some(e.key.as_bytes().to_vec()),
                payload: e.json.as_bytes().to_vec(),
                origin: crate::source::Origin::File {
                    name: "city".into(),
                    line: i as u64,
                },
                received: now,
            })
            .collect()
    }
}

/// Standard normal by Box-Muller (no extra dependency for one distribution).
pub(crate) fn normal(rng: &mut impl Rng) -> f64 {
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// Exponential gap with the given rate per second.
pub(crate) fn exp_gap(rng: &mut impl Rng, rate_per_s: f64) -> f64 {
    -rng.random_range(f64::EPSILON..1.0f64).ln() / rate_per_s
}

/// An RNG for one named part of the run, independent of every other part's draws.
pub(crate) fn sub_rng(seed: u64, part: &str) -> StdRng {
    // FNV-1a: stable across Rust versions, unlike `DefaultHasher`.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for b in part.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    StdRng::seed_from_u64(h)
}

/// Seconds since the epoch -> RFC 3339 in the run's offset.
pub(crate) fn rfc(secs: i64, off: FixedOffset) -> String {
    at(secs, off).to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
}

pub(crate) fn at(secs: i64, off: FixedOffset) -> DateTime<FixedOffset> {
    off.timestamp_opt(secs, 0).single().expect("in range")
}

/// Local hour of day (fractional) and weekday (0 = Monday) of a time in the run's offset.
pub(crate) fn local_clock(secs: i64, off: FixedOffset) -> (f64, u32) {
    let local = secs + i64::from(off.local_minus_utc());
    let day_secs = local.rem_euclid(86_400);
    // 1970-01-01 was a Thursday (3 with Monday = 0).
    let weekday = ((local.div_euclid(86_400) + 3).rem_euclid(7)) as u32;
    (day_secs as f64 / 3600.0, weekday)
}

/// One stream's generator: appends the events whose true time is in `[from, to)`.
trait Generator {
    fn fill(&mut self, from: i64, to: i64, out: &mut Vec<SimEvent>);
}

/// Event time generated per step. Messages arriving after their chunk wait in `carry`
/// (a late upload holds up to ~2 h), so memory stays a few chunks of events.
const CHUNK_SECS: i64 = 3600;

/// The run as a stream of events in arrival order, one hour generated at a time.
pub struct Simulation {
    labels: Vec<Label>,
    /// The city's monitoring points (`points.ndjson`, the registry topic).
    points: Vec<crate::registry::Point>,
    generators: Vec<Box<dyn Generator + Send>>,
    start: i64,
    end: i64,
    next_chunk: i64,
    /// Generated but arriving after the current chunk.
    carry: Vec<SimEvent>,
    ready: VecDeque<SimEvent>,
    offset: FixedOffset,
}

impl Simulation {
    pub fn new(cfg: &SimConfig, regions: &Regions) -> Self {
        let off = *cfg.start.offset();
        let start = cfg.start.timestamp();
        let end = start + (cfg.hours * 3600.0).round() as i64;
        let townships: Vec<String> = regions.township_codes().map(str::to_string).collect();
        let counties: Vec<String> = regions.county_codes().map(str::to_string).collect();
        let mut fleet = sensors::Fleet::new(cfg.seed, cfg.sites.max(1), &townships, off, start);
        let ctx = plan::PlanCtx {
            seed: cfg.seed,
            start,
            end,
            off,
            townships: &townships,
            counties: &counties,
            city: regions.city_code(),
        };
        let points = fleet.points(cfg.seed);
        let mut plan = plan::plan(&ctx, &mut fleet);
        plan.labels.extend(realism::apply(&ctx, &mut fleet));
        let generators: Vec<Box<dyn Generator + Send>> = vec![
            Box::new(fleet),
            Box::new(incidents::Incidents::new(
                cfg.seed,
                &townships,
                off,
                start,
                plan.incidents,
            )),
            Box::new(fraud::Fraud::new(
                cfg.seed, &townships, off, start, plan.fraud,
            )),
        ];
        Self {
            labels: plan.labels,
            points,
            generators,
            start,
            end,
            next_chunk: start,
            carry: Vec::new(),
            ready: VecDeque::new(),
            offset: off,
        }
    }

    pub fn labels(&self) -> &[Label] {
        &self.labels
    }

    /// Share of event time generated so far, in [0, 1].
    pub fn points(&self) -> &[crate::registry::Point] {
        &self.points
    }

    pub fn progress(&self) -> f64 {
        ((self.next_chunk - self.start) as f64 / (self.end - self.start).max(1) as f64).min(1.0)
    }

    /// The event time generated so far.
    pub fn generated_until(&self) -> DateTime<FixedOffset> {
        at(self.next_chunk.min(self.end), self.offset)
    }

    fn step(&mut self) {
        let from = self.next_chunk;
        let to = (from + CHUNK_SECS).min(self.end);
        for g in &mut self.generators {
            g.fill(from, to, &mut self.carry);
        }
        self.next_chunk = to;
        // Stable: equal arrival times keep generation order, so output is deterministic.
        self.carry.sort_by_key(|e| e.arrival_ms);
        let last = to >= self.end;
        let cut = if last {
            self.carry.len()
        } else {
            self.carry.partition_point(|e| e.arrival_ms < to * 1000)
        };
        self.ready.extend(self.carry.drain(..cut));
    }
}

impl Iterator for Simulation {
    type Item = SimEvent;

    fn next(&mut self) -> Option<SimEvent> {
        loop {
            if let Some(e) = self.ready.pop_front() {
                return Some(e);
            }
            if self.next_chunk >= self.end {
                return None;
            }
            self.step();
        }
    }
}

/// The whole run in memory (small runs and tests).
pub fn generate(cfg: &SimConfig, regions: &Regions) -> City {
    let sim = Simulation::new(cfg, regions);
    let labels = sim.labels().to_vec();
    City {
        events: sim.collect(),
        labels,
    }
}

/// Streams a run to `incidents.ndjson`, `sensor-readings.ndjson`, `fraud-reports.ndjson`
/// (each in arrival order) and `labels.jsonl`; returns the number of events written.
/// The registry file `write_files` adds to a run's directory; `backtest` loads it.
pub const POINTS_FILE: &str = "points.ndjson";

pub fn write_files(sim: Simulation, dir: &Path) -> std::io::Result<u64> {
    std::fs::create_dir_all(dir)?;
    let open = |n: &str| {
        std::fs::File::create(dir.join(n)).map(|f| std::io::BufWriter::with_capacity(1 << 16, f))
    };
    let mut pts = open(POINTS_FILE)?;
    for p in sim.points() {
        writeln!(
            pts,
            "{}",
            serde_json::to_string(p).expect("points serialize")
        )?;
    }
    pts.flush()?;
    let mut l = open("labels.jsonl")?;
    for x in sim.labels() {
        writeln!(l, "{}", serde_json::to_string(x).expect("labels serialize"))?;
    }
    let mut inc = open("incidents.ndjson")?;
    let mut sen = open("sensor-readings.ndjson")?;
    let mut fr = open("fraud-reports.ndjson")?;
    let mut n = 0;
    for e in sim {
        let w = match e.stream {
            Stream::Incidents => &mut inc,
            Stream::Sensors => &mut sen,
            Stream::Fraud => &mut fr,
        };
        writeln!(w, "{}", e.json)?;
        n += 1;
    }
    for mut w in [inc, sen, fr, l] {
        w.flush()?;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(seed: u64, hours: f64) -> SimConfig {
        SimConfig {
            hours,
            seed,
            start: DateTime::parse_from_rfc3339("2026-11-26T08:00:00+08:00").unwrap(),
            sites: 8,
        }
    }

    #[test]
    fn deterministic_for_a_seed_and_decodable() {
        let r = crate::regions::demo();
        let a = generate(&cfg(1, 6.0), &r);
        let b = generate(&cfg(1, 6.0), &r);
        let c = generate(&cfg(2, 6.0), &r);
        assert_eq!(a.events.len(), b.events.len());
        assert!(a
            .events
            .iter()
            .zip(&b.events)
            .all(|(x, y)| x.json == y.json));
        assert_eq!(a.labels, b.labels);
        assert!(a
            .events
            .iter()
            .zip(&c.events)
            .any(|(x, y)| x.json != y.json));
        let d = crate::decode::Decoder::new(std::sync::Arc::new(r));
        for e in &a.events {
            d.decode(e.stream, e.json.as_bytes())
                .unwrap_or_else(|err| panic!("{err}: {}", e.json));
        }
        assert!(a
            .events
            .windows(2)
            .all(|w| w[0].arrival_ms <= w[1].arrival_ms));
    }

    /// Every sensor of the city is a registered point with a name, its site's name and
    /// hazard grade, a range and valid limits; some pressure points are judged low-side
    /// too; the points are the same for a seed.
    #[test]
    fn every_sensor_is_a_valid_point() {
        let r = crate::regions::demo();
        let sim = Simulation::new(&cfg(3, 2.0), &r);
        let ids: std::collections::BTreeSet<String> = generate(&cfg(3, 2.0), &r)
            .events
            .iter()
            .filter(|e| e.stream == Stream::Sensors)
            .map(|e| e.key.clone())
            .collect();
        let points = sim.points();
        let registered: std::collections::BTreeSet<String> =
            points.iter().map(|p| p.sensor_id.clone()).collect();
        assert_eq!(registered, ids);
        for p in points {
            assert!(p.problems().is_empty(), "{p:?}: {:?}", p.problems());
            assert!(p.name.is_some() && p.site_name.is_some(), "{p:?}");
            let ranged = matches!(p.kind.as_deref(), Some("temperature" | "pressure"));
            assert_eq!(p.range.is_some(), ranged, "{p:?}");
            assert!(
                p.hazard_grade.is_some_and(|g| (1..=4).contains(&g)),
                "{p:?}"
            );
            assert!(p.limits.h.is_some() && p.limits.hh.is_some(), "{p:?}");
        }
        let low = |kind: &str| {
            points
                .iter()
                .filter(|p| p.kind.as_deref() == Some(kind) && p.limits.l.is_some())
                .count()
        };
        assert!(low("pressure") > 0, "some pressure points have low limits");
        assert_eq!(low("gas_lel"), 0);
        assert_eq!(Simulation::new(&cfg(3, 2.0), &r).points(), points);
    }

    #[test]
    fn out_of_order_only_within_the_allowed_lateness() {
        let r = crate::regions::demo();
        let a = generate(&cfg(4, 3.0), &r);
        // A late upload's readings are far behind on purpose (the next test).
        let held: Vec<String> = a
            .labels
            .iter()
            .filter(|l| l.kind == "late_upload")
            .map(|l| format!(r#""site_id":"{}""#, l.subject))
            .collect();
        for s in Stream::ALL {
            let mut newest = i64::MIN / 2;
            let mut behind = 0;
            for e in a
                .events
                .iter()
                .filter(|e| e.stream == s && !held.iter().any(|h| e.json.contains(h)))
            {
                let t = e.ts.timestamp();
                assert!(newest - t < 30, "{s}: {}s behind", newest - t);
                behind += usize::from(t < newest);
                newest = newest.max(t);
            }
            if s == Stream::Sensors {
                assert!(behind > 0, "sensor readings arrive a little out of order");
            }
        }
    }

    #[test]
    fn a_day_has_one_round_of_every_kind_with_detectors() {
        let r = crate::regions::demo();
        let sim = Simulation::new(&cfg(7, 24.0), &r);
        let kinds: std::collections::BTreeSet<&str> =
            sim.labels().iter().map(|l| l.kind.as_str()).collect();
        for k in plan::KINDS.iter().chain(&realism::KINDS) {
            assert!(kinds.contains(k), "missing {k}");
        }
        let hazards = |s: &Simulation| s.labels().iter().filter(|l| l.hazard).count();
        assert!(sim
            .labels()
            .iter()
            .all(|l| l.hazard != l.detectors.is_empty()));
        assert!(sim
            .labels()
            .iter()
            .all(|l| l.hazard == (l.expected_level != "none")));
        assert_eq!(hazards(&sim), plan::KINDS.len());
        let week = Simulation::new(&cfg(7, 168.0), &r);
        assert_eq!(hazards(&week), 7 * hazards(&sim));
        // Stretches repeat per day; whole-run properties are one label per sensor.
        let stretches = |s: &Simulation| {
            s.labels()
                .iter()
                .filter(|l| ["maintenance_shift", "gap", "late_upload"].contains(&l.kind.as_str()))
                .count()
        };
        assert!(stretches(&week) > 6 * stretches(&sim));
    }

    #[test]
    fn realism_leaves_the_hazards_where_they_were() {
        // The hazards' labels are drawn before, and apart from, the realism: the same
        // hazard times and values as a city without it (pinned from the commit before).
        let r = crate::regions::demo();
        let sim = Simulation::new(&cfg(7, 24.0), &r);
        let gas = sim
            .labels()
            .iter()
            .find(|l| l.kind == "gas_step")
            .expect("a gas step");
        assert_eq!(
            (gas.subject.as_str(), gas.start.as_str(), gas.note.as_str()),
            (
                "S-330521-0005-GAS1",
                "2026-11-26T10:29:36+08:00",
                "gas LEL steps up 27 %LEL for 12 min"
            )
        );
    }

    #[test]
    fn a_quantized_sensor_reports_multiples_of_its_resolution() {
        let r = crate::regions::demo();
        let a = generate(&cfg(7, 6.0), &r);
        let mut checked = 0;
        for l in a.labels.iter().filter(|l| l.kind == "quantized") {
            let q: f64 = l
                .note
                .split("multiples of ")
                .nth(1)
                .and_then(|x| x.split(' ').next())
                .and_then(|x| x.parse().ok())
                .unwrap_or_else(|| panic!("resolution in {}", l.note));
            let key = format!(r#""sensor_id":"{}""#, l.subject);
            let values: Vec<f64> = a
                .events
                .iter()
                .filter(|e| e.json.contains(&key))
                .map(|e| {
                    let v: serde_json::Value = serde_json::from_str(&e.json).unwrap();
                    v["value"].as_f64().unwrap()
                })
                .collect();
            assert!(values.len() > 100, "{}", l.subject);
            for v in &values {
                assert!(
                    ((v / q).round() * q - v).abs() < 1e-9,
                    "{}: {v} by {q}",
                    l.subject
                );
            }
            let distinct: std::collections::BTreeSet<i64> =
                values.iter().map(|v| (v / q).round() as i64).collect();
            assert!(distinct.len() * 5 < values.len(), "values repeat");
            checked += 1;
        }
        assert!(checked >= 3, "{checked} quantized sensors");
    }

    #[test]
    fn a_late_upload_arrives_after_later_readings_with_its_own_times() {
        let r = crate::regions::demo();
        let a = generate(&cfg(7, 24.0), &r);
        let l = a
            .labels
            .iter()
            .find(|l| l.kind == "late_upload")
            .expect("a late upload");
        let (from, to) = (
            DateTime::parse_from_rfc3339(&l.start).unwrap().timestamp(),
            DateTime::parse_from_rfc3339(&l.end).unwrap().timestamp(),
        );
        let site = format!(r#""site_id":"{}""#, l.subject);
        let sensors: Vec<(usize, &SimEvent)> = a
            .events
            .iter()
            .enumerate()
            .filter(|(_, e)| e.stream == Stream::Sensors)
            .collect();
        let held: Vec<(usize, i64)> = sensors
            .iter()
            .filter(|(_, e)| e.json.contains(&site))
            .map(|(i, e)| (*i, e.ts.timestamp()))
            .filter(|(_, t)| *t >= from && *t < to)
            .collect();
        assert!(held.len() > 100, "{} held readings", held.len());
        // The first held reading (from the outage's start) comes in the file after
        // other sites' readings from near its end.
        let (first_pos, first_t) = held[0];
        assert!(first_t < from + 120);
        let later_before = sensors
            .iter()
            .filter(|(i, e)| *i < first_pos && e.ts.timestamp() > to - 60)
            .count();
        assert!(later_before > 20, "{later_before}");
        // In their own order, all together.
        assert!(held.windows(2).all(|w| w[0].1 <= w[1].1));
        assert!(held.windows(2).all(|w| w[1].0 - w[0].0 < 50));
    }

    #[test]
    fn sensors_sample_at_their_own_interval_with_rare_gaps() {
        let r = crate::regions::demo();
        let a = generate(&cfg(5, 2.0), &r);
        let mut by: std::collections::HashMap<&str, Vec<i64>> = Default::default();
        for e in a.events.iter().filter(|e| e.stream == Stream::Sensors) {
            by.entry(&e.key).or_default().push(e.ts.timestamp());
        }
        assert!(by.len() >= 8 * 3);
        for ts in by.values_mut() {
            ts.sort();
            let gaps: Vec<i64> = ts.windows(2).map(|w| w[1] - w[0]).collect();
            let mut g = gaps.clone();
            g.sort();
            let median = g[g.len() / 2];
            assert!((9..=61).contains(&median), "median gap {median}");
        }
    }
}
