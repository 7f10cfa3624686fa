//! Late uploads (issue #18 item 5): a site gateway that was offline uploads hours of
//! buffered readings behind the stream's watermark. Its episodes must follow the key's
//! own event time: fire and resolve from the late data as they would have live.
//!
//! The harness drives the pipeline's own detector set and alert policy input by input
//! (`policy_step`, exactly as `run` does, without the async sinks), so each alert is
//! paired with the event time of the input that caused it.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::Pipeline;
use crate::alert::{Alert, Level, Status};
use crate::clock::ManualClock;
use crate::decode::{Event, Stream};
use crate::sink::LogDeadLetters;
use crate::telemetry::metrics::Metrics;

const SITES: usize = 10;
const PERIOD: i64 = 30;
const HOURS: i64 = 6;
/// The gateway of site 0 is offline from here to the end of the live data ...
const SILENT_FROM: i64 = 2 * 3600;
/// ... and site 0's gas sensor steps +25 %LEL for 10 minutes meanwhile.
const STEP_FROM: i64 = 4 * 3600;
const STEP_TO: i64 = STEP_FROM + 600;
const KINDS: [(&str, f64, f64); 3] = [
    ("gas_lel", 2.0, 0.3),
    ("h2s_ppm", 1.0, 0.2),
    ("temperature", 25.0, 0.5),
];
const REGIONS: [&str; 3] = ["330503101", "330521102", "330502001"];

fn t0() -> chrono::DateTime<chrono::FixedOffset> {
    chrono::DateTime::parse_from_rfc3339("2026-11-26T06:00:00+08:00").unwrap()
}

/// Readings of 30 sensors (10 sites x 3 kinds) every 30 s for `hours`, in event time
/// order, each with `true` when it is site 0's during its gateway's outage (from
/// `SILENT_FROM` to 6 h).
fn city(hours: i64) -> Vec<(Event, bool)> {
    let dec = crate::decode::test_decoder();
    // A small LCG: deterministic noise, so the baselines have a spread to learn.
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut noise = move || {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((seed >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
    };
    let mut out = Vec::new();
    for step in 0..hours * 3600 / PERIOD {
        for site in 0..SITES {
            for (k, (kind, base, spread)) in KINDS.iter().enumerate() {
                // Sensors of a site sample a few seconds apart.
                let secs = step * PERIOD + (site * 3 + k) as i64 % PERIOD;
                let mut value = base + spread * noise();
                let sensor = format!("S{site:02}-{kind}");
                if site == 0 && *kind == "gas_lel" && (STEP_FROM..STEP_TO).contains(&secs) {
                    value += 25.0;
                }
                let ts = t0() + chrono::Duration::seconds(secs);
                let v = serde_json::json!({"sensor_id": sensor,
                    "site_id": format!("SITE-330503-{site:04}"),
                    "region": REGIONS[site % REGIONS.len()], "kind": kind,
                    "ts": ts.to_rfc3339(), "value": (value * 1000.0).round() / 1000.0});
                let ev = dec
                    .decode(Stream::Sensors, v.to_string().as_bytes())
                    .unwrap()
                    .event;
                out.push((ev, site == 0 && (SILENT_FROM..HOURS * 3600).contains(&secs)));
            }
        }
    }
    out
}

/// One alert and the event time (seconds after `t0`) of the input that caused it.
struct Seen {
    at: i64,
    alert: Alert,
}

/// Runs `events` through a pipeline with the default config, one input at a time, then
/// the end-of-input flush; returns each alert with its cause's event time.
fn run(events: &[&Event]) -> Vec<Seen> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/default.toml");
    let cfg = crate::config::load(&root).expect("default config");
    let clock = ManualClock::new("2026-11-27T00:00:00Z".parse().unwrap());
    let mut p = Pipeline::new(
        &cfg,
        Vec::new(),
        Arc::new(LogDeadLetters),
        Arc::new(Metrics::new()),
        Arc::new(clock),
    );
    let mut seen = Vec::new();
    let base = t0().timestamp();
    for ev in events {
        let obs = p.detectors.observe(ev, &mut p.signals);
        let moved: Vec<_> = obs
            .watermark
            .map(|w| (ev.stream(), w))
            .into_iter()
            .collect();
        p.policy_step(Some(ev), &moved);
        let at = ev.ts().timestamp() - base;
        seen.extend(p.alerts.drain(..).map(|alert| Seen { at, alert }));
    }
    let moved = p.detectors.flush(&mut p.signals);
    p.policy_step(None, &moved);
    let at = moved
        .iter()
        .map(|(_, w)| w.timestamp() - base)
        .max()
        .unwrap_or(0);
    seen.extend(p.alerts.drain(..).map(|alert| Seen { at, alert }));
    seen
}

/// Per episode of `sensor`: detector, levels in order, first and resolve event times.
#[derive(Debug, Clone, PartialEq)]
struct Episode {
    detector: String,
    levels: Vec<Level>,
    first: i64,
    resolved: Option<i64>,
}

fn episodes(seen: &[Seen], sensor: &str) -> Vec<Episode> {
    let mut by_id: BTreeMap<&str, Episode> = BTreeMap::new();
    let mut order = Vec::new();
    for s in seen {
        let a = &s.alert;
        if a.subject.get("sensor_id").and_then(|v| v.as_str()) != Some(sensor) {
            continue;
        }
        let e = by_id.entry(&a.alert_id).or_insert_with(|| {
            order.push(a.alert_id.as_str());
            Episode {
                detector: a.detector.clone(),
                levels: Vec::new(),
                first: s.at,
                resolved: None,
            }
        });
        match a.status {
            Status::Firing => e.levels.push(a.level),
            Status::Resolved => e.resolved = Some(s.at),
        }
    }
    order.into_iter().map(|id| by_id[id].clone()).collect()
}

/// Alerts of everything but site 0's sensors, as (id, status, level).
fn others(seen: &[Seen]) -> Vec<(String, Status, Level)> {
    seen.iter()
        .filter(|s| {
            s.alert
                .subject
                .get("sensor_id")
                .and_then(|v| v.as_str())
                .is_none_or(|id| !id.starts_with("S00-"))
        })
        .map(|s| (s.alert.alert_id.clone(), s.alert.status, s.alert.level))
        .collect()
}

#[test]
fn a_late_backlog_fires_and_resolves_as_it_would_have_live() {
    let all = city(HOURS);
    let live: Vec<&Event> = all.iter().map(|(e, _)| e).collect();
    // The gateway's buffer arrives after every live reading, in its own time order:
    // 4 hours behind the watermark at first.
    let late: Vec<&Event> = all
        .iter()
        .filter(|(_, b)| !b)
        .chain(all.iter().filter(|(_, b)| *b))
        .map(|(e, _)| e)
        .collect();
    assert_as_live(&run(&live), &run(&late));
}

/// The late run's alerts against the live run's: site 0's gas step raised the same
/// episodes at the same levels, resolved from the late data; its outage is one offline
/// episode per sensor; everything else the same.
fn assert_as_live(live_seen: &[Seen], late_seen: &[Seen]) {
    let gas = "S00-gas_lel";
    let live_eps = episodes(live_seen, gas);
    let (offline, late_eps): (Vec<_>, Vec<_>) = episodes(late_seen, gas)
        .into_iter()
        .partition(|e| e.detector == "offline");

    // The step raises the same episodes at the same levels as live (threshold red) ...
    let shape = |v: &[Episode]| {
        v.iter()
            .map(|e| (e.detector.clone(), e.levels.clone(), e.first))
            .collect::<Vec<_>>()
    };
    assert!(!live_eps.is_empty());
    assert_eq!(shape(&late_eps), shape(&live_eps), "late {late_eps:#?}");
    let threshold = late_eps.iter().find(|e| e.detector == "threshold").unwrap();
    assert_eq!(
        (threshold.first, threshold.levels.as_slice()),
        (STEP_FROM, &[Level::Red][..])
    );
    // ... and each resolves from the late data itself: `resolve_after` (5 min) of the
    // key's own time after its condition cleared, as live, where the watermark trails
    // the events by `allowed_lateness` (30 s) and resolves that much later. Before the
    // fix they resolved only at the end of input (6 h), or `stale_after` later live.
    for (l, v) in late_eps.iter().zip(&live_eps) {
        let (lr, vr) = (l.resolved.unwrap(), v.resolved.unwrap());
        assert!(
            (vr - 30..=vr).contains(&lr),
            "{}: resolved at {lr} late, {vr} live",
            l.detector
        );
    }
    assert!((STEP_TO + 300..=STEP_TO + 330).contains(&threshold.resolved.unwrap()));

    // The gateway's outage is real in stream time: each of its sensors went offline once
    // (orange, escalated to red after an hour silent, as live would) and its backlog
    // resolved that episode 5 minutes into the buffered readings; nothing re-opened.
    for sensor in ["S00-gas_lel", "S00-h2s_ppm", "S00-temperature"] {
        assert!(episodes(live_seen, sensor)
            .iter()
            .all(|e| e.detector != "offline"));
        let off: Vec<_> = episodes(late_seen, sensor)
            .into_iter()
            .filter(|e| e.detector == "offline")
            .collect();
        assert_eq!(off.len(), 1, "{sensor}: {off:#?}");
        let e = &off[0];
        assert!((SILENT_FROM..SILENT_FROM + 600).contains(&e.first), "{e:?}");
        assert_eq!(e.levels, [Level::Orange, Level::Red]);
        let r = e.resolved.unwrap();
        assert!((SILENT_FROM + 300..SILENT_FROM + 330).contains(&r), "{e:?}");
    }
    assert_eq!(offline.len(), 1);
    for sensor in ["S00-h2s_ppm", "S00-temperature"] {
        assert_eq!(episodes(late_seen, sensor).len(), 1, "{sensor}");
    }
    // The other 27 sensors see exactly what they saw live.
    assert_eq!(others(late_seen), others(live_seen));
}

#[test]
fn an_upload_among_live_readings_is_judged_the_same() {
    // The gateway reconnects at 6 h and uploads its 4 hours within the next 5 minutes,
    // among the live readings of every site (its own included), which move the watermark.
    let all = city(HOURS + 1);
    let live: Vec<&Event> = all.iter().map(|(e, _)| e).collect();
    let reconnect = t0() + chrono::Duration::seconds(HOURS * 3600);
    let upload =
        |e: &Event| e.ts() >= reconnect && e.ts() < reconnect + chrono::Duration::seconds(300);
    let site0 = |e: &Event| matches!(e, Event::Sensor(r) if r.site_id.ends_with("-0000"));
    // First in, first out: the gateway's readings of those minutes follow its buffer.
    let backlog: Vec<&Event> = all
        .iter()
        .filter(|(e, b)| *b || (upload(e) && site0(e)))
        .map(|(e, _)| e)
        .collect();
    let during: Vec<&Event> = all
        .iter()
        .filter(|(e, b)| !b && upload(e) && !site0(e))
        .map(|(e, _)| e)
        .collect();
    let per = backlog.len().div_ceil(during.len());
    let mut late: Vec<&Event> = all
        .iter()
        .filter(|(e, b)| !b && e.ts() < reconnect)
        .map(|(e, _)| e)
        .collect();
    let mut rest = backlog.chunks(per);
    for e in &during {
        late.push(e);
        late.extend(rest.next().unwrap_or_default());
    }
    late.extend(
        all.iter()
            .filter(|(e, _)| e.ts() >= reconnect + chrono::Duration::seconds(300))
            .map(|(e, _)| e),
    );
    assert_eq!(late.len(), live.len());
    // The watermark moves during the upload: the offline detector's scans meet the
    // gateway's sensors with hours-old readings, which must not read as silence again.
    assert_as_live(&run(&live), &run(&late));
}
