//! Shelving in the pipeline (issue #25 item 3): a shelved point raises nothing for its
//! shelving time, an episode open when the shelf starts resolves, and the point alarms
//! again after the expiry while its condition persists. Drives `policy_step` input by
//! input as `run` does (as `incident_tests` does), with the default config.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};

use super::Pipeline;
use crate::alert::shelve::{Shelf, ShelfKind, ShelfScope, Shelves};
use crate::alert::Status;
use crate::clock::ManualClock;
use crate::config::Config;
use crate::decode::{Event, Stream};
use crate::sink::LogDeadLetters;
use crate::telemetry::metrics::Metrics;

const T0: &str = "2026-11-26T00:00:00Z";

fn t0() -> DateTime<Utc> {
    T0.parse().unwrap()
}

fn config() -> Config {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/default.toml");
    crate::config::load(&root).expect("default config")
}

fn reading(cfg: &Config, sensor: &str, kind: &str, secs: i64, value: f64) -> Event {
    let ts = t0() + Duration::seconds(secs);
    let json = serde_json::json!({"sensor_id": sensor, "site_id": "SITE-330503-0042",
        "region": "330503101", "kind": kind, "ts": ts.to_rfc3339(), "value": value});
    crate::decode::Decoder::new(cfg.regions.clone())
        .decode(Stream::Sensors, json.to_string().as_bytes())
        .expect("valid reading")
        .event
}

/// (seconds after T0, status, detector) of every alert about `sensor`.
type Seen = Vec<(i64, Status, String)>;

/// Feeds one reading of each sensor every 30 s from `from` to `to`; `value(sensor, secs)`.
fn feed(
    p: &mut Pipeline,
    cfg: &Config,
    sensors: &[(&str, &str)],
    (from, to): (i64, i64),
    value: impl Fn(&str, i64) -> f64,
    seen: &mut Seen,
) {
    for secs in (from..to).step_by(30) {
        for (id, kind) in sensors {
            let ev = reading(cfg, id, kind, secs, value(id, secs));
            let obs = p.detectors.observe(&ev, &mut p.signals);
            let moved: Vec<_> = obs
                .watermark
                .map(|w| (Stream::Sensors, w))
                .into_iter()
                .collect();
            p.policy_step(Some(&ev), &moved);
            for a in p.alerts.drain(..) {
                seen.push((
                    secs,
                    a.status,
                    format!("{}:{}", a.detector, a.subject["sensor_id"]),
                ));
            }
            p.incident_msgs.clear();
        }
    }
}

fn shelf(scope: ShelfScope, target: &str, by_city: bool, until: i64) -> Shelf {
    Shelf {
        scope,
        target: target.into(),
        kind: ShelfKind::Shelved,
        reason: "level gauge recalibration".into(),
        by_center: if by_city { "330500" } else { "330503" }.into(),
        by_city,
        at: t0(),
        until: t0() + Duration::seconds(until),
    }
}

fn firing(seen: &Seen, what: &str, within: std::ops::Range<i64>) -> usize {
    seen.iter()
        .filter(|(s, st, d)| within.contains(s) && *st == Status::Firing && d == what)
        .count()
}

#[test]
fn a_shelved_point_raises_nothing_then_alarms_again_after_its_expiry() {
    let cfg = config();
    let metrics = Arc::new(Metrics::new());
    let shelves = Arc::new(Shelves::new());
    let clock = ManualClock::new(t0());
    let mut p = Pipeline::new(
        &cfg,
        Vec::new(),
        Arc::new(LogDeadLetters),
        metrics.clone(),
        Arc::new(clock),
    )
    .with_shelves(shelves.clone());
    let tank = [("S-330503-0042-TANK1", "tank_level")];
    // Normal for 10 minutes, then above the alarm limit for good.
    let value = |_: &str, s: i64| if s < 600 { 50.0 } else { 99.0 };
    let mut seen = Seen::new();
    feed(&mut p, &cfg, &tank, (0, 900), value, &mut seen);
    let what = "threshold:\"S-330503-0042-TANK1\"";
    assert_eq!(
        firing(&seen, what, 600..900),
        1,
        "alarms before the shelf: {seen:?}"
    );
    // Shelved at 15 min until 75 min (event time).
    shelves.put(
        shelf(ShelfScope::Point, "S-330503-0042-TANK1", false, 4500),
        t0(),
    );
    seen.clear();
    feed(&mut p, &cfg, &tank, (900, 4500), value, &mut seen);
    let resolved = seen
        .iter()
        .filter(|(_, st, d)| *st == Status::Resolved && d == what)
        .count();
    assert_eq!(resolved, 1, "the open episode resolves: {seen:?}");
    assert!(
        seen.iter().all(|(_, st, _)| *st == Status::Resolved),
        "nothing fires while shelved: {seen:?}"
    );
    let silenced = metrics.render();
    assert!(
        silenced.contains(
            r#"riskstream_alerts_shelved_total{detector="threshold",kind="shelved",stream="sensors"}"#
        ),
        "{silenced}"
    );
    seen.clear();
    feed(&mut p, &cfg, &tank, (4500, 4800), value, &mut seen);
    assert_eq!(
        firing(&seen, what, 4500..4530),
        1,
        "alarms again at its first reading after the expiry: {seen:?}"
    );
}

#[test]
fn a_countys_shelf_leaves_gas_and_h2s_physical_limits_alarming() {
    let cfg = config();
    let shelves = Arc::new(Shelves::new());
    let clock = ManualClock::new(t0());
    let mut p = Pipeline::new(
        &cfg,
        Vec::new(),
        Arc::new(LogDeadLetters),
        Arc::new(Metrics::new()),
        Arc::new(clock),
    )
    .with_shelves(shelves.clone());
    shelves.put(
        shelf(ShelfScope::Site, "SITE-330503-0042", false, 7200),
        t0(),
    );
    let sensors = [
        ("S-330503-0042-GAS1", "gas_lel"),
        ("S-330503-0042-H2S1", "h2s_ppm"),
        ("S-330503-0042-TANK1", "tank_level"),
    ];
    let value = |id: &str, s: i64| match (id.ends_with("TANK1"), s < 600) {
        (_, true) => 1.0,
        (true, false) => 99.0,
        (false, false) => 40.0,
    };
    let mut seen = Seen::new();
    feed(&mut p, &cfg, &sensors, (0, 1200), value, &mut seen);
    assert_eq!(
        firing(&seen, "threshold:\"S-330503-0042-GAS1\"", 600..1200),
        1,
        "{seen:?}"
    );
    assert_eq!(
        firing(&seen, "threshold:\"S-330503-0042-H2S1\"", 600..1200),
        1,
        "{seen:?}"
    );
    assert_eq!(
        firing(&seen, "threshold:\"S-330503-0042-TANK1\"", 0..1200),
        0,
        "{seen:?}"
    );
    // The city's shelf silences them too.
    let mut p2 = Pipeline::new(
        &cfg,
        Vec::new(),
        Arc::new(LogDeadLetters),
        Arc::new(Metrics::new()),
        Arc::new(ManualClock::new(t0())),
    )
    .with_shelves(shelves.clone());
    shelves.put(
        shelf(ShelfScope::Site, "SITE-330503-0042", true, 7200),
        t0(),
    );
    seen.clear();
    feed(&mut p2, &cfg, &sensors, (0, 1200), value, &mut seen);
    assert!(seen.is_empty(), "{seen:?}");
}
