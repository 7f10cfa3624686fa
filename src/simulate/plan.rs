//! The injected anomalies: one round of every kind per simulated day, each at a random
//! time after its detectors' warm-up, with the label that says who should catch it.
//!
//! | kind | subject | level | expected detectors |
//! |---|---|---|---|
//! | gas_leak_ramp | sensor | red | threshold, ewma_z, rate_of_change, cusum, robust_z |
//! | gas_step | sensor | red | threshold, ewma_z, rate_of_change, cusum, robust_z |
//! | gas_small_step | sensor | yellow | ewma_z, cusum, robust_z |
//! | h2s_step | sensor | yellow | threshold, ewma_z, rate_of_change, cusum, robust_z |
//! | pressure_drift | sensor | yellow | cusum |
//! | sensor_stuck | sensor | yellow | flatline |
//! | sensor_offline | sensor | yellow | offline |
//! | site_event | site | orange | site_correlation, threshold, ewma_z |
//! | incident_surge | township | orange | rate_spike |
//! | county_rise | county | yellow | rate_spike |
//! | fraud_burst | phone:... | yellow | entity_burst |
//! | account_spread | account:... | orange | spread, entity_burst |
//! | scheme_spike | city | yellow | rate_spike (on fraud) |

use chrono::FixedOffset;
use rand::seq::SliceRandom;
use rand::Rng;

use super::sensors::{Effect, Fleet, Kind};
use super::{exp_gap, fraud, incidents, rfc, sub_rng, Label};
use crate::decode::Stream;

/// Every kind a round injects, in order.
pub(super) const KINDS: [&str; 13] = [
    "gas_leak_ramp",
    "gas_step",
    "gas_small_step",
    "h2s_step",
    "pressure_drift",
    "sensor_stuck",
    "sensor_offline",
    "site_event",
    "incident_surge",
    "county_rise",
    "fraud_burst",
    "account_spread",
    "scheme_spike",
];

const STEP_DETECTORS: [&str; 5] = ["threshold", "ewma_z", "rate_of_change", "cusum", "robust_z"];

pub(super) struct PlanCtx<'a> {
    pub seed: u64,
    pub start: i64,
    pub end: i64,
    pub off: FixedOffset,
    pub townships: &'a [String],
    pub counties: &'a [String],
    pub city: &'a str,
}

pub(super) struct Plan {
    pub labels: Vec<Label>,
    pub incidents: Vec<incidents::Extra>,
    pub fraud: Vec<fraud::Extra>,
}

/// Warm-up before the first round may use a kind, and how long it lasts (s).
fn timing(kind: &str) -> (i64, i64) {
    match kind {
        "gas_leak_ramp" => (2700, 20 * 60),
        "gas_step" | "gas_small_step" => (2700, 12 * 60),
        "h2s_step" => (2700, 10 * 60),
        "pressure_drift" => (3600, 3 * 3600 + 20 * 60),
        "sensor_stuck" => (2700, 90 * 60),
        "sensor_offline" => (2700, 60 * 60),
        "site_event" => (2700, 23 * 60),
        // rate_spike needs 8 closed 15-minute windows and a settled baseline.
        "incident_surge" => (9000, 30 * 60),
        "county_rise" => (10_800, 2 * 3600),
        "fraud_burst" => (1200, 40 * 60),
        "account_spread" => (1200, 50 * 60),
        "scheme_spike" => (9000, 30 * 60),
        _ => unreachable!("unknown kind {kind}"),
    }
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// Every round's anomalies: per simulated day, each kind in [`KINDS`] order at a random
/// time after its warm-up. The random draws happen in a fixed order (the sites'
/// shuffle, the rising county, then each kind's start and its own draws), so a seed
/// always plans the same city.
pub(super) fn plan(ctx: &PlanCtx<'_>, fleet: &mut Fleet) -> Plan {
    let mut rng = sub_rng(ctx.seed, "plan");
    let mut p = Plan {
        labels: Vec::new(),
        incidents: Vec::new(),
        fraud: Vec::new(),
    };
    let span = ctx.end - ctx.start;
    let rounds = ((span as f64 / 86_400.0 + 1e-9).floor() as i64).max(1);
    // Leave time after an anomaly for its detection inside the run.
    let tail = 15 * 60;
    for round in 0..rounds {
        let lo = ctx.start + span * round / rounds;
        let hi = ctx.start + span * (round + 1) / rounds;
        let mut sites = SiteOrder::new(fleet.sites.len(), &mut rng);
        let county_of_rise = ctx.counties[rng.random_range(0..ctx.counties.len())].clone();
        for kind in KINDS {
            let (warm, dur) = timing(kind);
            let first = (ctx.start + warm).max(lo);
            let last = hi.min(ctx.end - tail) - dur;
            if last < first {
                continue;
            }
            let t0 = rng.random_range(first..=last);
            let s = Slot {
                kind,
                t0,
                dur,
                round,
                off: ctx.off,
            };
            match kind {
                "gas_leak_ramp" | "gas_step" | "gas_small_step" | "h2s_step" | "pressure_drift" => {
                    sensor_step(&s, &mut sites, fleet, &mut rng, &mut p)
                }
                "sensor_stuck" | "sensor_offline" => {
                    sensor_fault(&s, &mut sites, fleet, &mut rng, &mut p)
                }
                "site_event" => site_event(&s, &mut sites, fleet, &mut p),
                "incident_surge" => incident_surge(&s, ctx, &county_of_rise, &mut rng, &mut p),
                "county_rise" => county_rise(&s, ctx, &county_of_rise, &mut rng, &mut p),
                "fraud_burst" => fraud_burst(&s, ctx, &mut rng, &mut p),
                "account_spread" => account_spread(&s, ctx, &mut rng, &mut p),
                "scheme_spike" => scheme_spike(&s, ctx, &mut rng, &mut p),
                _ => unreachable!(),
            }
        }
    }
    p
}

/// One anomaly to inject: its kind, start, duration and round.
struct Slot {
    kind: &'static str,
    t0: i64,
    dur: i64,
    round: i64,
    off: FixedOffset,
}

impl Slot {
    /// The hazard label of this anomaly, from its start to `end`.
    fn label(
        &self,
        stream: Stream,
        subject: String,
        end: i64,
        level: &str,
        det: &[&str],
        note: String,
    ) -> Label {
        Label {
            stream,
            kind: self.kind.to_string(),
            subject,
            start: rfc(self.t0, self.off),
            end: rfc(end, self.off),
            expected_level: level.to_string(),
            hazard: true,
            detectors: strs(det),
            note,
        }
    }
}

/// A round's sites in a shuffled order, handed out one by one.
struct SiteOrder {
    sites: Vec<usize>,
    at: usize,
}

impl SiteOrder {
    fn new(n: usize, rng: &mut impl Rng) -> Self {
        let mut sites: Vec<usize> = (0..n).collect();
        sites.shuffle(rng);
        SiteOrder { sites, at: 0 }
    }

    /// The next site that fits `pred`: distinct sites per round while there are enough;
    /// then any that fits.
    fn next(&mut self, pred: &dyn Fn(usize) -> bool) -> Option<usize> {
        for k in 0..self.sites.len() {
            let s = self.sites[(self.at + k) % self.sites.len()];
            if pred(s) {
                self.at += k + 1;
                return Some(s);
            }
        }
        None
    }
}

fn sensor_of(fleet: &Fleet, site: usize, k: Kind) -> Option<usize> {
    fleet.sites[site]
        .sensors
        .iter()
        .copied()
        .find(|&i| fleet.sensors[i].kind == k)
}

/// gas_leak_ramp, gas_step, gas_small_step, h2s_step, pressure_drift: a value added to
/// one sensor of the right kind.
fn sensor_step(
    s: &Slot,
    sites: &mut SiteOrder,
    fleet: &mut Fleet,
    rng: &mut impl Rng,
    p: &mut Plan,
) {
    let k = match s.kind {
        "h2s_step" => Kind::H2s,
        "pressure_drift" => Kind::Pressure,
        _ => Kind::Gas,
    };
    let Some(site) = sites.next(&|x| sensor_of(fleet, x, k).is_some()) else {
        return;
    };
    let i = sensor_of(fleet, site, k).expect("checked");
    let (ramp, hold, decay, amount, level, det, what) = step_shape(s.kind, rng);
    let e = Effect::Add {
        start: s.t0,
        ramp,
        hold,
        decay,
        amount,
    };
    fleet.sensors[i].effects.push(e);
    let id = fleet.sensors[i].id.clone();
    p.labels
        .push(s.label(Stream::Sensors, id, e.end(), level, det, what));
}

/// A step kind's shape: ramp, hold and decay (s), amount, level, detectors, note.
fn step_shape(
    kind: &str,
    rng: &mut impl Rng,
) -> (
    i64,
    i64,
    i64,
    f64,
    &'static str,
    &'static [&'static str],
    String,
) {
    match kind {
        "gas_leak_ramp" => {
            let a = rng.random_range(30.0..38.0);
            (
                300,
                600,
                300,
                a,
                "red",
                &STEP_DETECTORS,
                format!("gas LEL ramps up {a:.0} %LEL over 5 min, holds 10 min"),
            )
        }
        "gas_step" => {
            let a = rng.random_range(25.0..32.0);
            (
                0,
                12 * 60,
                0,
                a,
                "red",
                &STEP_DETECTORS,
                format!("gas LEL steps up {a:.0} %LEL for 12 min"),
            )
        }
        "gas_small_step" => (
            0,
            12 * 60,
            0,
            3.0,
            "yellow",
            &["ewma_z", "cusum", "robust_z"],
            "gas LEL steps up 3 %LEL for 12 min (under the warning limit)".to_string(),
        ),
        "h2s_step" => (
            0,
            10 * 60,
            0,
            13.0,
            "yellow",
            &STEP_DETECTORS,
            "H2S steps up 13 ppm for 10 min (past the warning limit)".to_string(),
        ),
        _ => (
            2 * 3600,
            3600,
            20 * 60,
            0.15,
            "yellow",
            &["cusum"],
            "pressure drifts up 0.15 MPa over 2 h (under the warning limit), holds 1 h".to_string(),
        ),
    }
}

/// sensor_stuck, sensor_offline: one random sensor of the next site.
fn sensor_fault(
    s: &Slot,
    sites: &mut SiteOrder,
    fleet: &mut Fleet,
    rng: &mut impl Rng,
    p: &mut Plan,
) {
    let Some(site) = sites.next(&|_| true) else {
        return;
    };
    let list = &fleet.sites[site].sensors;
    let i = list[rng.random_range(0..list.len())];
    let t0 = s.t0;
    let end = t0 + s.dur;
    let (e, det, what) = if s.kind == "sensor_stuck" {
        (
            Effect::Stuck { start: t0, end },
            "flatline",
            "repeats its last value for 90 min",
        )
    } else {
        (
            Effect::Offline { start: t0, end },
            "offline",
            "sends nothing for 60 min",
        )
    };
    fleet.sensors[i].effects.push(e);
    let sensor = &fleet.sensors[i];
    let note = format!(
        "{} ({} s interval) {what}",
        sensor.kind.name(),
        sensor.interval
    );
    p.labels.push(s.label(
        Stream::Sensors,
        sensor.id.clone(),
        end,
        "yellow",
        &[det],
        note,
    ));
}

/// site_event: gas, H2S, temperature and pressure of one site rising together.
fn site_event(s: &Slot, sites: &mut SiteOrder, fleet: &mut Fleet, p: &mut Plan) {
    let Some(site) = sites.next(&|_| true) else {
        return;
    };
    let t0 = s.t0;
    let mut end = t0;
    let mut gas_done = false;
    for &i in &fleet.sites[site].sensors {
        let (delay, ramp, amount) = match fleet.sensors[i].kind {
            Kind::Gas if !gas_done => (0, 180, 13.0),
            Kind::H2s => (60, 180, 11.0),
            Kind::Temperature => (120, 300, 20.0),
            Kind::Pressure => (120, 300, 0.25),
            _ => continue,
        };
        gas_done |= fleet.sensors[i].kind == Kind::Gas;
        let e = Effect::Add {
            start: t0 + delay,
            ramp,
            hold: 900,
            decay: 300,
            amount,
        };
        end = end.max(e.end());
        fleet.sensors[i].effects.push(e);
    }
    let id = fleet.sites[site].id.clone();
    p.labels.push(
        s.label(
            Stream::Sensors,
            id,
            end,
            "orange",
            &["site_correlation", "threshold", "ewma_z"],
            "gas +13 %LEL, H2S +11 ppm, temperature +20 C, pressure +0.25 MPa together at one site"
                .into(),
        ),
    );
}

/// incident_surge: extra disputes in one township outside the rising county.
fn incident_surge(
    s: &Slot,
    ctx: &PlanCtx<'_>,
    county_of_rise: &str,
    rng: &mut impl Rng,
    p: &mut Plan,
) {
    let town = loop {
        let t = &ctx.townships[rng.random_range(0..ctx.townships.len())];
        if !t.starts_with(county_of_rise) || ctx.counties.len() == 1 {
            break t.clone();
        }
    };
    let n = 22;
    for _ in 0..n {
        p.incidents.push(incidents::Extra {
            t: s.t0 + rng.random_range(0..s.dur),
            township: town.clone(),
            category: 0,
        });
    }
    p.labels.push(s.label(
        Stream::Incidents,
        town,
        s.t0 + s.dur,
        "orange",
        &["rate_spike"],
        format!("{n} extra disputes in 30 min in one township"),
    ));
}

/// county_rise: more incidents of every category over all of one county's townships.
fn county_rise(
    s: &Slot,
    ctx: &PlanCtx<'_>,
    county_of_rise: &str,
    rng: &mut impl Rng,
    p: &mut Plan,
) {
    let towns: Vec<&String> = ctx
        .townships
        .iter()
        .filter(|t| t.starts_with(county_of_rise))
        .collect();
    let per_h = 40.0;
    let mut t = s.t0;
    loop {
        t += exp_gap(rng, per_h / 3600.0).ceil() as i64;
        if t >= s.t0 + s.dur {
            break;
        }
        p.incidents.push(incidents::Extra {
            t,
            township: towns[rng.random_range(0..towns.len())].clone(),
            category: rng.random_range(0..incidents::CATEGORIES.len()),
        });
    }
    p.labels.push(s.label(
        Stream::Incidents,
        county_of_rise.to_string(),
        s.t0 + s.dur,
        "yellow",
        &["rate_spike"],
        format!(
            "+{per_h:.0} incidents/h for 2 h spread over the county's {} townships",
            towns.len()
        ),
    ));
}

/// fraud_burst: reports naming one phone (one per round).
fn fraud_burst(s: &Slot, ctx: &PlanCtx<'_>, rng: &mut impl Rng, p: &mut Plan) {
    let phone = if s.round == 0 {
        "+8613800000000".to_string()
    } else {
        format!("+86138000000{:02}", s.round % 100)
    };
    let n = 10;
    for k in 0..n {
        p.fraud.push(fraud::Extra {
            t: s.t0 + k * s.dur / n + rng.random_range(0..60),
            township: ctx.townships[rng.random_range(0..ctx.townships.len())].clone(),
            channel: "phone",
            scheme: "impersonation",
            phone: Some(phone.clone()),
            account: None,
        });
    }
    p.labels.push(s.label(
        Stream::Fraud,
        format!("phone:{phone}"),
        s.t0 + s.dur,
        "yellow",
        &["entity_burst"],
        format!("{n} reports name one phone within 40 min"),
    ));
}

/// account_spread: reports from up to four counties naming one account.
fn account_spread(s: &Slot, ctx: &PlanCtx<'_>, rng: &mut impl Rng, p: &mut Plan) {
    let acct = fraud::account(rng);
    let mut counties = ctx.counties.to_vec();
    counties.shuffle(rng);
    counties.truncate(4);
    let n = 6;
    for k in 0..n {
        let c = &counties[k as usize % counties.len()];
        let towns: Vec<&String> = ctx
            .townships
            .iter()
            .filter(|t| t.starts_with(c.as_str()))
            .collect();
        p.fraud.push(fraud::Extra {
            t: s.t0 + k * s.dur / n + rng.random_range(0..60),
            township: towns[rng.random_range(0..towns.len())].clone(),
            channel: "app",
            scheme: "part_time_job",
            phone: None,
            account: Some(acct.clone()),
        });
    }
    p.labels.push(s.label(
        Stream::Fraud,
        format!("account:{acct}"),
        s.t0 + s.dur,
        "orange",
        &["spread", "entity_burst"],
        format!(
            "{n} reports from {} counties name one account within 50 min",
            counties.len()
        ),
    ));
}

/// scheme_spike: extra investment-scheme reports city-wide, each naming fresh suspects.
fn scheme_spike(s: &Slot, ctx: &PlanCtx<'_>, rng: &mut impl Rng, p: &mut Plan) {
    let n = 40;
    for _ in 0..n {
        p.fraud.push(fraud::Extra {
            t: s.t0 + rng.random_range(0..s.dur),
            township: ctx.townships[rng.random_range(0..ctx.townships.len())].clone(),
            channel: ["app", "web"][rng.random_range(0..2)],
            scheme: "investment",
            phone: None,
            account: None,
        });
    }
    p.labels.push(s.label(
        Stream::Fraud,
        ctx.city.to_string(),
        s.t0 + s.dur,
        "yellow",
        &["rate_spike"],
        format!(
            "{n} extra investment-scheme reports city-wide in 30 min, each naming fresh suspects"
        ),
    ));
}
