//! Plant realism that is not a hazard, so the backtest stops flattering the detectors:
//! real sensors are recalibrated, switch pumps, follow the working day, report in coarse
//! steps, have noise with heavy tails, skip readings, and sit behind gateways that go
//! offline and upload their backlog late. Each is labelled with `hazard: false` and
//! `expected_level: "none"`: an alert above blue inside one is a false alarm.
//!
//! | kind | subject | span | what |
//! |---|---|---|---|
//! | quantized | sensor | whole run | values are multiples of 0.5 %LEL / 0.5 ppm / 1 degC / 0.01 MPa |
//! | heavy_tail | sensor | whole run | Student-t noise, 3 dof, same σ, clamped at 8 σ |
//! | daily_cycle | sensor | whole run | hour-of-day cycle: every temperature, some gas and pressure |
//! | maintenance_shift | sensor | 2-6 h | level steps 3-5 σ (recalibration, pump switch-over), then back |
//! | gap | sensor | 10-20 min | no readings |
//! | late_upload | site | ~2 h | gateway offline; its readings arrive at the end, behind the watermark |
//!
//! Determinism without disturbing the hazards: whole-run properties draw from one RNG per
//! sensor (`<sensor>/realism`) and the stretches from their own (`realism`), so the
//! hazards' labels and the sensors' own draws are what they were without realism. The
//! stretches avoid any sensor (or, for a late upload, site) with an effect within an hour.

use chrono::FixedOffset;
use rand::rngs::StdRng;
use rand::Rng;

use super::plan::PlanCtx;
use super::sensors::{Effect, Fleet, Kind, Sensor};
use super::{rfc, sub_rng, Label};
use crate::decode::Stream;

/// Every kind of not-a-hazard label the city carries.
#[cfg(test)]
pub(super) const KINDS: [&str; 6] = [
    "quantized",
    "heavy_tail",
    "daily_cycle",
    "maintenance_shift",
    "gap",
    "late_upload",
];

/// Stretches per simulated day.
const SHIFTS: [Kind; 4] = [Kind::Pressure, Kind::Gas, Kind::Pressure, Kind::H2s];
const GAPS: usize = 6;
const LATE_UPLOADS: usize = 1;

/// Quiet time kept between a realism stretch and any other effect on the same sensor.
const MARGIN: i64 = 3600;

fn not_a_hazard(kind: &str, subject: String, start: String, end: String, note: String) -> Label {
    Label {
        stream: Stream::Sensors,
        kind: kind.to_string(),
        subject,
        start,
        end,
        expected_level: "none".to_string(),
        hazard: false,
        detectors: Vec::new(),
        note,
    }
}

/// Gives sensors their whole-run realism and plans the stretches; returns their labels.
/// Runs after the hazards are planned, so stretches can keep clear of them.
pub(super) fn apply(ctx: &PlanCtx<'_>, fleet: &mut Fleet) -> Vec<Label> {
    let mut labels = Vec::new();
    let (run_start, run_end) = (rfc(ctx.start, ctx.off), rfc(ctx.end, ctx.off));
    for s in &mut fleet.sensors {
        whole_run(ctx.seed, s, &run_start, &run_end, &mut labels);
    }

    let mut rng = sub_rng(ctx.seed, "realism");
    let span = ctx.end - ctx.start;
    let rounds = ((span as f64 / 86_400.0 + 1e-9).floor() as i64).max(1);
    // Like the hazards: after an hour of warm-up, and leaving time to see the aftermath.
    let (warm, tail) = (3600, 15 * 60);
    for round in 0..rounds {
        let r = Round {
            lo: (ctx.start + span * round / rounds).max(ctx.start + warm),
            hi: (ctx.start + span * (round + 1) / rounds).min(ctx.end - tail),
            off: ctx.off,
        };
        for kind in SHIFTS {
            maintenance_shift(&r, kind, &mut rng, fleet, &mut labels);
        }
        for _ in 0..GAPS {
            gap(&r, &mut rng, fleet, &mut labels);
        }
        for _ in 0..LATE_UPLOADS {
            late_upload(&r, &mut rng, fleet, &mut labels);
        }
    }
    labels
}

/// One sensor's whole-run realism (quantized, heavy-tailed, daily cycle), drawn from
/// its own RNG, with a label for each it got.
fn whole_run(seed: u64, s: &mut Sensor, run_start: &str, run_end: &str, labels: &mut Vec<Label>) {
    let mut rng = sub_rng(seed, &format!("{}/realism", s.id));
    let quantum = match s.kind {
        Kind::Gas if rng.random_bool(0.25) => Some(0.5),
        Kind::H2s if rng.random_bool(0.25) => Some(0.5),
        Kind::Temperature if rng.random_bool(0.3) => Some(1.0),
        Kind::Pressure if rng.random_bool(0.2) => Some(0.01),
        _ => None,
    };
    let heavy = s.kind != Kind::Tank && rng.random_bool(0.2);
    let daily = match s.kind {
        Kind::Pressure if rng.random_bool(0.3) => Some((
            rng.random_range(2.0..4.0) * s.noise(),
            rng.random_range(10.0..16.0),
        )),
        Kind::Gas if rng.random_bool(0.2) => Some((
            rng.random_range(2.0..3.0) * s.noise(),
            rng.random_range(9.0..15.0),
        )),
        _ => None,
    };
    let unit = s.kind.unit();
    let whole = |kind: &str, note: String| {
        not_a_hazard(
            kind,
            s.id.clone(),
            run_start.to_string(),
            run_end.to_string(),
            note,
        )
    };
    if let Some(q) = quantum {
        labels.push(whole(
            "quantized",
            format!(
                "{} reports multiples of {q} {unit} (noise {:.3})",
                s.kind.name(),
                s.noise()
            ),
        ));
    }
    if heavy {
        labels.push(whole(
            "heavy_tail",
            format!(
                "{} noise is Student-t (3 dof) with σ {:.3} {unit}, clamped at {} σ",
                s.kind.name(),
                s.noise(),
                super::sensors::TAIL_CLAMP
            ),
        ));
    }
    let daily_note = match (daily, s.own_daily_cycle()) {
        (Some((amp, peak)), _) => Some(format!(
            "{} follows the working day: ±{amp:.3} {unit} ({:.1} σ), peak at {peak:.0}h",
            s.kind.name(),
            amp / s.noise()
        )),
        (None, true) => Some(format!(
            "{} has its daily cycle (warmest mid-afternoon)",
            s.kind.name()
        )),
        _ => None,
    };
    if let Some(note) = daily_note {
        labels.push(whole("daily_cycle", note));
    }
    if let Some(q) = quantum {
        s.real.quantum = Some(q);
    }
    if heavy {
        s.real.heavy_tail = Some(sub_rng(seed, &format!("{}/tail", s.id)));
    }
    if let Some((amp, peak)) = daily {
        s.real.daily = Some((amp, peak));
    }
}

/// The stretch of event time one round's stretches may use.
struct Round {
    lo: i64,
    hi: i64,
    off: FixedOffset,
}

impl Round {
    /// A random start for a stretch of `dur` in the round, or None if it cannot fit.
    fn when(&self, rng: &mut StdRng, dur: i64) -> Option<i64> {
        (self.hi - dur > self.lo).then(|| rng.random_range(self.lo..=self.hi - dur))
    }
}

/// maintenance_shift: a sensor of `kind` with nothing else near steps 3-5 σ for 2-6 h.
fn maintenance_shift(
    r: &Round,
    kind: Kind,
    rng: &mut StdRng,
    fleet: &mut Fleet,
    labels: &mut Vec<Label>,
) {
    let dur = rng.random_range(2 * 3600..=6 * 3600);
    let Some(t0) = r.when(rng, dur) else {
        return;
    };
    let of_kind: Vec<usize> = (0..fleet.sensors.len())
        .filter(|&i| fleet.sensors[i].kind == kind)
        .filter(|&i| fleet.sensors[i].free(t0 - MARGIN, t0 + dur + MARGIN))
        .collect();
    if of_kind.is_empty() {
        return;
    }
    let i = of_kind[rng.random_range(0..of_kind.len())];
    let sigmas = rng.random_range(3.0..5.0) * if rng.random_bool(0.5) { 1.0 } else { -1.0 };
    let s = &mut fleet.sensors[i];
    let amount = sigmas * s.noise();
    s.effects.push(Effect::Add {
        start: t0,
        ramp: 0,
        hold: dur,
        decay: 0,
        amount,
    });
    let why = match kind {
        Kind::Pressure => "pump switch-over",
        _ => "recalibration",
    };
    labels.push(not_a_hazard(
        "maintenance_shift",
        s.id.clone(),
        rfc(t0, r.off),
        rfc(t0 + dur, r.off),
        format!(
            "{} steps {amount:+.3} {} ({sigmas:+.1} σ) for {:.1} h ({why}), then back",
            kind.name(),
            kind.unit(),
            dur as f64 / 3600.0
        ),
    ));
}

/// gap: a random sensor, if nothing else is near, skips 10-20 min of readings.
fn gap(r: &Round, rng: &mut StdRng, fleet: &mut Fleet, labels: &mut Vec<Label>) {
    let dur = rng.random_range(10 * 60..=20 * 60);
    let Some(t0) = r.when(rng, dur) else {
        return;
    };
    let i = rng.random_range(0..fleet.sensors.len());
    let s = &mut fleet.sensors[i];
    if !s.free(t0 - MARGIN, t0 + dur + MARGIN) {
        return;
    }
    s.effects.push(Effect::Offline {
        start: t0,
        end: t0 + dur,
    });
    labels.push(not_a_hazard(
        "gap",
        s.id.clone(),
        rfc(t0, r.off),
        rfc(t0 + dur, r.off),
        format!(
            "{} ({} s interval) skips {} min of readings",
            s.kind.name(),
            s.interval,
            dur / 60
        ),
    ));
}

/// late_upload: a site with nothing else near goes offline ~2 h, then uploads it all.
fn late_upload(r: &Round, rng: &mut StdRng, fleet: &mut Fleet, labels: &mut Vec<Label>) {
    let dur = rng.random_range(110 * 60..=130 * 60);
    let Some(t0) = r.when(rng, dur) else {
        return;
    };
    let free: Vec<usize> = (0..fleet.sites.len())
        .filter(|&site| {
            fleet.sites[site]
                .sensors
                .iter()
                .all(|&i| fleet.sensors[i].free(t0 - MARGIN, t0 + dur + MARGIN))
        })
        .collect();
    if free.is_empty() {
        return;
    }
    let site = free[rng.random_range(0..free.len())];
    for k in 0..fleet.sites[site].sensors.len() {
        let i = fleet.sites[site].sensors[k];
        fleet.sensors[i].effects.push(Effect::Late {
            start: t0,
            end: t0 + dur,
        });
    }
    labels.push(not_a_hazard(
        "late_upload",
        fleet.sites[site].id.clone(),
        rfc(t0, r.off),
        rfc(t0 + dur, r.off),
        format!(
            "gateway offline {} min: the site's {} sensors' readings all arrive at its end, in order, behind the watermark",
            dur / 60,
            fleet.sites[site].sensors.len()
        ),
    ));
}
