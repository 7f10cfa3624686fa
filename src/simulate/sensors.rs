//! Hazardous-chemical sites and their sensors. Each sensor has its own RNG, interval,
//! baseline, noise size and clock skew, so one sensor's stream does not depend on another's.

use chrono::FixedOffset;
use rand::rngs::StdRng;
use rand::Rng;

use super::{local_clock, normal, rfc, sub_rng, Generator, SimEvent};
use crate::decode::Stream;

/// A sensor kind: name, id code, unit, decimals kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Gas,
    H2s,
    Temperature,
    Pressure,
    Tank,
}

impl Kind {
    pub(super) fn name(self) -> &'static str {
        match self {
            Kind::Gas => "gas_lel",
            Kind::H2s => "h2s_ppm",
            Kind::Temperature => "temperature",
            Kind::Pressure => "pressure",
            Kind::Tank => "tank_level",
        }
    }
    fn code(self) -> &'static str {
        match self {
            Kind::Gas => "GAS",
            Kind::H2s => "H2S",
            Kind::Temperature => "TEMP",
            Kind::Pressure => "PRES",
            Kind::Tank => "TANK",
        }
    }
    pub(super) fn unit(self) -> &'static str {
        match self {
            Kind::Gas => "%LEL",
            Kind::H2s => "ppm",
            Kind::Temperature => "C",
            Kind::Pressure => "MPa",
            Kind::Tank => "%",
        }
    }
    fn scale(self) -> f64 {
        match self {
            Kind::Pressure => 1000.0,
            _ => 100.0,
        }
    }
}

/// An injected change to one sensor's readings, in the sensor's own clock.
#[derive(Debug, Clone, Copy)]
pub(super) enum Effect {
    /// Adds `amount`: rising linearly over `ramp` s (0 = a step), held `hold` s, falling
    /// back over `decay` s.
    Add {
        start: i64,
        ramp: i64,
        hold: i64,
        decay: i64,
        amount: f64,
    },
    /// Repeats the last value read before `start`.
    Stuck { start: i64, end: i64 },
    /// Sends nothing.
    Offline { start: i64, end: i64 },
    /// Readings are held by the site's gateway and all arrive just after `end`, in
    /// event-time order, with their original times: far behind the watermark.
    Late { start: i64, end: i64 },
}

impl Effect {
    pub(super) fn end(&self) -> i64 {
        match *self {
            Effect::Add {
                start,
                ramp,
                hold,
                decay,
                ..
            } => start + ramp + hold + decay,
            Effect::Stuck { end, .. } | Effect::Offline { end, .. } | Effect::Late { end, .. } => {
                end
            }
        }
    }

    fn added(&self, t: i64) -> f64 {
        let Effect::Add {
            start,
            ramp,
            hold,
            decay,
            amount,
        } = *self
        else {
            return 0.0;
        };
        let d = t - start;
        if d < 0 || d >= ramp + hold + decay {
            0.0
        } else if d < ramp {
            amount * d as f64 / ramp as f64
        } else if d < ramp + hold {
            amount
        } else {
            amount * (1.0 - (d - ramp - hold) as f64 / decay.max(1) as f64)
        }
    }
}

pub(super) struct Sensor {
    pub id: String,
    pub site: usize,
    pub kind: Kind,
    pub interval: i64,
    base: f64,
    noise: f64,
    /// Amplitude and period (s) of the slow cycle: daily for temperature, fill/draw for tanks.
    cycle: (f64, f64, f64),
    skew: i64,
    next: i64,
    last: f64,
    missed_prev: bool,
    rng: StdRng,
    pub effects: Vec<Effect>,
    /// Plant realism that is not a hazard (see [`super::realism`]).
    pub real: Realism,
}

/// Whole-run properties of a sensor that real plant data has and the old city lacked.
#[derive(Default)]
pub(super) struct Realism {
    /// Reported values are multiples of this (a coarse ADC or display resolution).
    pub quantum: Option<f64>,
    /// Noise is Student-t with 3 degrees of freedom scaled to the sensor's noise size (the
    /// same standard deviation as the Gaussian sensors, heavier tails), clamped to
    /// ±`TAIL_CLAMP` noise sizes so an outlier is moderate, never hazard-sized; the extra
    /// draws come from this RNG.
    pub heavy_tail: Option<StdRng>,
    /// Hour-of-day cycle on a kind that has none of its own: amplitude and peak hour.
    pub daily: Option<(f64, f64)>,
}

/// Largest heavy-tailed noise draw, in noise sizes.
pub(super) const TAIL_CLAMP: f64 = 8.0;

impl Sensor {
    pub(super) fn noise(&self) -> f64 {
        self.noise
    }

    /// Whether the kind's own background has a daily cycle (temperature).
    pub(super) fn own_daily_cycle(&self) -> bool {
        self.kind == Kind::Temperature
    }

    /// True when no effect touches `[from, to)`.
    pub(super) fn free(&self, from: i64, to: i64) -> bool {
        self.effects.iter().all(|e| {
            let s = match *e {
                Effect::Add { start, .. }
                | Effect::Stuck { start, .. }
                | Effect::Offline { start, .. }
                | Effect::Late { start, .. } => start,
            };
            e.end() <= from || s >= to
        })
    }
}

pub(super) struct Site {
    pub id: String,
    pub region: String,
    pub sensors: Vec<usize>,
}

pub(super) struct Fleet {
    pub sites: Vec<Site>,
    pub sensors: Vec<Sensor>,
    off: FixedOffset,
}

impl Sensor {
    /// A sensor's own parameters, drawn from its own RNG (seeded by its id), which it
    /// keeps for its readings.
    fn new(seed: u64, id: String, site: usize, kind: Kind, start: i64) -> Self {
        let mut rng = sub_rng(seed, &id);
        let (base, noise, cycle) = match kind {
            Kind::Gas => (rng.random_range(1.5..4.0), rng.random_range(0.1..0.3), 0.0),
            Kind::H2s => (
                rng.random_range(0.8..2.0),
                rng.random_range(0.05..0.15),
                0.0,
            ),
            Kind::Temperature => (
                rng.random_range(25.0..55.0),
                rng.random_range(0.2..0.6),
                rng.random_range(2.0..4.0),
            ),
            Kind::Pressure => (
                rng.random_range(0.6..1.2),
                rng.random_range(0.004..0.012),
                0.0,
            ),
            Kind::Tank => (
                rng.random_range(40.0..65.0),
                rng.random_range(0.1..0.3),
                rng.random_range(4.0..10.0),
            ),
        };
        let period = match kind {
            Kind::Tank => rng.random_range(6.0..12.0) * 3600.0,
            _ => 86_400.0,
        };
        let phase = rng.random_range(0.0..std::f64::consts::TAU);
        let interval = [10, 20, 30, 30, 30, 60, 60][rng.random_range(0..7)];
        let skew = rng.random_range(-3..=3);
        let next = start + rng.random_range(0..interval);
        Sensor {
            id,
            site,
            kind,
            interval,
            base,
            noise,
            cycle: (cycle, period, phase),
            skew,
            next,
            last: base,
            missed_prev: false,
            rng,
            effects: Vec::new(),
            real: Realism::default(),
        }
    }

    /// The value at sensor time `ts` with standard noise draw `noise`: base, slow
    /// cycle, noise and effects, clamped to the kind's range, quantized, rounded.
    fn value(&self, ts: i64, off: FixedOffset, noise: f64) -> f64 {
        let (amp, period, phase) = self.cycle;
        let slow = match self.kind {
            // Warmest mid-afternoon.
            Kind::Temperature => {
                let (h, _) = local_clock(ts, off);
                amp * ((h - 8.0) / 24.0 * std::f64::consts::TAU).sin()
            }
            Kind::Tank => amp * (ts as f64 / period * std::f64::consts::TAU + phase).sin(),
            _ => match self.real.daily {
                Some((amp, peak)) => {
                    let (h, _) = local_clock(ts, off);
                    amp * ((h - peak + 6.0) / 24.0 * std::f64::consts::TAU).sin()
                }
                None => 0.0,
            },
        };
        let added: f64 = self.effects.iter().map(|e| e.added(ts)).sum();
        let mut v = self.base + slow + self.noise * noise + added;
        v = match self.kind {
            Kind::Tank => v.clamp(0.0, 100.0),
            Kind::Temperature => v,
            _ => v.max(0.0),
        };
        let v = match self.real.quantum {
            Some(q) => (v / q).round() * q,
            None => v,
        };
        let k = self.kind.scale();
        (v * k).round() / k
    }
}

/// A site's sensor kinds: one gas detector, sometimes a second and an H2S one,
/// temperature and pressure, and usually a tank level.
fn site_kinds(layout: &mut StdRng) -> Vec<Kind> {
    let mut kinds = vec![Kind::Gas];
    if layout.random_bool(0.3) {
        kinds.push(Kind::Gas);
    }
    if layout.random_bool(0.6) {
        kinds.push(Kind::H2s);
    }
    kinds.push(Kind::Temperature);
    kinds.push(Kind::Pressure);
    if layout.random_bool(0.7) {
        kinds.push(Kind::Tank);
    }
    kinds
}

impl Fleet {
    pub(super) fn new(
        seed: u64,
        sites: usize,
        townships: &[String],
        off: FixedOffset,
        start: i64,
    ) -> Self {
        let mut layout = sub_rng(seed, "sites");
        let mut fleet = Fleet {
            sites: Vec::new(),
            sensors: Vec::new(),
            off,
        };
        for s in 0..sites {
            let town = townships[layout.random_range(0..townships.len())].clone();
            let county = &town[..6];
            let site_id = format!("SITE-{county}-{s:04}");
            let kinds = site_kinds(&mut layout);
            let mut site = Site {
                id: site_id,
                region: town.clone(),
                sensors: Vec::new(),
            };
            let mut seen: Vec<Kind> = Vec::new();
            for kind in kinds {
                seen.push(kind);
                let n = seen.iter().filter(|k| **k == kind).count();
                let id = format!("S-{county}-{s:04}-{}{n}", kind.code());
                site.sensors.push(fleet.sensors.len());
                fleet.sensors.push(Sensor::new(seed, id, s, kind, start));
            }
            fleet.sites.push(site);
        }
        fleet
    }

    fn reading(&mut self, i: usize, t: i64, out: &mut Vec<SimEvent>) {
        let off = self.off;
        let s = &mut self.sensors[i];
        let site = &self.sites[s.site];
        // Effects are judged in the sensor's clock, so no anomalous reading carries a
        // time before its label's start.
        let ts = t + s.skew;
        // Network delay: usually under 3 s, rarely up to 20 s (allowed lateness is 30 s).
        let delay_ms = if s.rng.random_bool(0.005) {
            s.rng.random_range(5_000..20_000)
        } else {
            s.rng.random_range(150..3_000)
        };
        let missing = !s.missed_prev && s.rng.random_bool(0.003);
        let mut noise = normal(&mut s.rng);
        // The extra draws come from the realism RNG, so the sensor's own sequence (and
        // every hazard's timing) is the same as without the realism.
        if let Some(r) = &mut s.real.heavy_tail {
            let chi2: f64 = (0..3).map(|_| normal(r).powi(2)).sum();
            // t3 has variance 3: divide by √3 so only the tails differ.
            noise = (noise / chi2.sqrt()).clamp(-TAIL_CLAMP, TAIL_CLAMP);
        }
        s.missed_prev = missing;
        if missing
            || s.effects
                .iter()
                .any(|e| matches!(*e, Effect::Offline { start, end } if ts >= start && ts < end))
        {
            return;
        }
        let stuck = s
            .effects
            .iter()
            .any(|e| matches!(*e, Effect::Stuck { start, end } if ts >= start && ts < end));
        let v = if stuck {
            s.last
        } else {
            let v = s.value(ts, off, noise);
            s.last = v;
            v
        };
        let json = format!(
            r#"{{"sensor_id":"{}","site_id":"{}","region":"{}","kind":"{}","ts":"{}","value":{},"unit":"{}","status":"ok"}}"#,
            s.id,
            site.id,
            site.region,
            s.kind.name(),
            rfc(ts, off),
            v,
            s.kind.unit()
        );
        // A held reading arrives with the gateway's backlog, oldest first.
        let arrival_ms = match s.effects.iter().find_map(|e| match *e {
            Effect::Late { start, end } if ts >= start && ts < end => Some((start, end)),
            _ => None,
        }) {
            Some((start, end)) => end * 1000 + 5_000 + (ts - start),
            None => t * 1000 + delay_ms,
        };
        out.push(SimEvent {
            ts: super::at(ts, off),
            arrival_ms,
            stream: Stream::Sensors,
            key: s.id.clone(),
            json,
        });
    }
}

impl Generator for Fleet {
    fn fill(&mut self, _from: i64, to: i64, out: &mut Vec<SimEvent>) {
        for i in 0..self.sensors.len() {
            while self.sensors[i].next < to {
                let t = self.sensors[i].next;
                let s = &mut self.sensors[i];
                s.next += s.interval + s.rng.random_range(-1..=1);
                self.reading(i, t, out);
            }
        }
    }
}

/// Enterprise names for the demo city's sites: a trade name and a line of business.
const TRADE_NAMES: [&str; 16] = [
    "Jiahe",
    "Hengyuan",
    "Xinhua",
    "Dongfang",
    "Tianneng",
    "Lianyi",
    "Ruifeng",
    "Zhongcheng",
    "Huasheng",
    "Yongxing",
    "Taihu",
    "Anji",
    "Changxing",
    "Deqing",
    "Nanxun",
    "Wuxing",
];
const TRADES: [&str; 4] = [
    "Chemical Co., Ltd.",
    "New Materials Co., Ltd.",
    "Petrochemical Co., Ltd.",
    "Fine Chemicals Co., Ltd.",
];

impl Fleet {
    /// The city's monitoring points (SPEC "Monitoring points"): a name per sensor, its
    /// site's enterprise name and hazard grade, limits of its own and, for temperature
    /// and pressure, its instrument's measuring range. Gas, H2S and tank points have no
    /// range: a head pegged past its span (a leak above 100 %LEL, an overfilled tank) is
    /// a hazard, and outside a point's range a reading is only a `sensor_fault`; their
    /// kinds' wide built-in ranges still catch glitches. Gas and H2S keep the regulatory
    /// limits of their kind (hh red); temperature, pressure and tank limits sit above
    /// the sensor's own operating level, far enough that nothing but a hazard reaches
    /// them (the background, realism and the injected anomalies below the kind's
    /// limits stay below these too); about a third of the pressure points and half of
    /// the tanks also have low-side limits. From an RNG of its own: the readings are
    /// the same with or without it.
    pub(super) fn points(&self, seed: u64) -> Vec<crate::registry::Point> {
        use crate::alert::Level;
        use crate::registry::{LimitLevels, Point};
        let mut rng = super::sub_rng(seed, "registry");
        let sites: Vec<(String, u8)> = self
            .sites
            .iter()
            .map(|_| {
                let name = format!(
                    "Huzhou {} {}",
                    TRADE_NAMES[rng.random_range(0..TRADE_NAMES.len())],
                    TRADES[rng.random_range(0..TRADES.len())]
                );
                (name, rng.random_range(1..=4))
            })
            .collect();
        self.sensors
            .iter()
            .map(|s| {
                let site = &self.sites[s.site];
                let n = s.id.rsplit('-').next().unwrap_or("1");
                let mut p = Point::new(s.id.clone());
                p.site_id = Some(site.id.clone());
                p.kind = Some(s.kind.name().into());
                p.unit = Some(s.kind.unit().into());
                let (name, range, limits, deadband) = point_shape(s, n, &mut rng);
                p.name = Some(name);
                p.range = range;
                p.limits = limits;
                p.deadband = Some(deadband);
                if matches!(s.kind, Kind::Gas | Kind::H2s) {
                    p.levels = LimitLevels {
                        hh: Some(Level::Red),
                        ..LimitLevels::default()
                    };
                }
                p.site_name = Some(sites[s.site].0.clone());
                p.hazard_grade = Some(sites[s.site].1);
                p
            })
            .collect()
    }
}

/// A point's name, measuring range, limits and deadband, by its sensor's kind (see
/// [`Fleet::points`]); `n` numbers detectors of one kind at a site.
fn point_shape(
    s: &Sensor,
    n: &str,
    rng: &mut StdRng,
) -> (String, Option<[f64; 2]>, crate::registry::Limits, f64) {
    use crate::registry::Limits;
    let round = |v: f64, k: f64| (v * k).round() / k;
    match s.kind {
        Kind::Gas => (
            format!("Combustible gas detector {n}"),
            None,
            Limits {
                h: Some(10.0),
                hh: Some(25.0),
                ..Limits::default()
            },
            1.0,
        ),
        Kind::H2s => (
            format!("H2S detector {n}"),
            None,
            Limits {
                h: Some(10.0),
                hh: Some(20.0),
                ..Limits::default()
            },
            1.0,
        ),
        Kind::Temperature => {
            let h = (s.base + 30.0).round();
            (
                format!("Reactor R-{} outlet temperature", s.site + 1),
                Some([-50.0, 300.0]),
                Limits {
                    h: Some(h),
                    hh: Some(h + 10.0),
                    ..Limits::default()
                },
                2.0,
            )
        }
        Kind::Pressure => {
            let h = round(s.base + 0.4, 100.0);
            let low = rng.random_bool(0.35);
            let l = round(s.base - 0.35, 100.0);
            (
                format!("Header pressure PT-{}", s.site + 1),
                Some([-0.1, 4.0]),
                Limits {
                    h: Some(h),
                    hh: Some(round(h + 0.2, 100.0)),
                    l: low.then_some(l),
                    ll: low.then_some(round(l - 0.15, 100.0)),
                },
                0.02,
            )
        }
        Kind::Tank => {
            let low = rng.random_bool(0.5);
            (
                format!("Storage tank T-{} level", s.site + 1),
                None,
                Limits {
                    h: Some(85.0),
                    hh: Some(95.0),
                    l: low.then_some(10.0),
                    ll: low.then_some(5.0),
                },
                1.0,
            )
        }
    }
}
