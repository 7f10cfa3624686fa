use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;

use super::*;
use crate::alert::Alert;
use crate::clock::ManualClock;
use crate::decode::Stream;
use crate::signal::Evidence;

/// Event time 0 of these tests (2026-11-26T08:00:00+08:00).
const T0: i64 = 1_795_651_200;

fn grouper() -> IncidentGrouper {
    let clock = ManualClock::new("2026-11-27T00:00:00Z".parse().unwrap());
    IncidentGrouper::new(
        IncidentConfig::default(),
        Arc::new(crate::regions::demo()),
        Arc::new(clock),
    )
}

fn rfc(secs: i64) -> String {
    chrono::DateTime::from_timestamp(T0 + secs, 0)
        .unwrap()
        .to_rfc3339()
}

/// An episode message: `detector` on `sensor` of `site`, opened at `opened` s.
fn sensor_alert(
    site: &str,
    sensor: &str,
    detector: &str,
    opened: i64,
    level: Level,
    status: Status,
) -> Alert {
    let subject = serde_json::json!({"sensor_id": sensor, "site_id": site,
        "region": "330503101", "kind": "gas_lel"});
    alert(
        "sensors",
        &format!("sensors:{detector}:{sensor}:{}", T0 + opened),
        detector,
        subject,
        opened,
        level,
        status,
    )
}

fn region_alert(code: &str, opened: i64, level: Level, status: Status) -> Alert {
    alert(
        "incidents",
        &format!("incidents:rate_spike:{code}:{}", T0 + opened),
        "rate_spike",
        serde_json::json!({ "region": code }),
        opened,
        level,
        status,
    )
}

fn alert(
    stream: &str,
    id: &str,
    detector: &str,
    subject: serde_json::Value,
    opened: i64,
    level: Level,
    status: Status,
) -> Alert {
    let route = match level {
        Level::Blue => vec!["330503101".to_string()],
        Level::Yellow => vec!["330503101".into(), "330503".into()],
        _ => vec!["330503101".into(), "330503".into(), "330500".into()],
    };
    Alert {
        alert_id: id.into(),
        status,
        level,
        stream: stream.into(),
        detector: detector.into(),
        subject: subject.as_object().unwrap().clone(),
        title: format!("{detector} title"),
        evidence: Evidence {
            observed: 10.0,
            expected: 2.0,
            score: 5.0,
            threshold: 4.0,
            window: "5m".into(),
            p_value: None,
            false_alarms_per_day: None,
        },
        first_event_ts: rfc(opened),
        detected_at: String::new(),
        event_ids: Vec::new(),
        route,
        region_name: String::new(),
        seq: 1,
        incident_id: String::new(),
        actions: None,
    }
}

/// One pipeline step: `alerts` at watermark `w` (s after T0). Returns the stamped
/// alerts and the incident messages.
fn step(g: &mut IncidentGrouper, w: i64, alerts: &[Alert]) -> (Vec<Alert>, Vec<Incident>) {
    let mut alerts = alerts.to_vec();
    let mut out = Vec::new();
    g.seed_watermark(Stream::Sensors, T0 + w);
    g.seed_watermark(Stream::Incidents, T0 + w);
    g.on_alerts(&mut alerts, &mut out);
    g.on_watermark(Stream::Sensors, T0 + w, &mut out);
    g.on_watermark(Stream::Incidents, T0 + w, &mut out);
    (alerts, out)
}

fn with(a: &Alert, level: Level, status: Status) -> Alert {
    Alert {
        level,
        status,
        seq: a.seq + 1,
        ..a.clone()
    }
}

const GAP: i64 = 30 * 60;

#[test]
fn opens_with_its_first_member_and_names_it() {
    let mut g = grouper();
    let a = sensor_alert(
        "SITE-1",
        "S-G",
        "threshold",
        0,
        Level::Yellow,
        Status::Firing,
    );
    let (alerts, msgs) = step(&mut g, 0, &[a]);
    let id = format!("sensors:site:SITE-1:{T0}");
    assert_eq!(alerts[0].incident_id, id);
    assert_eq!(msgs.len(), 1);
    let i = &msgs[0];
    assert_eq!(
        (i.incident_id.as_str(), i.status, i.level, i.seq),
        (id.as_str(), Status::Firing, Level::Yellow, 1)
    );
    assert_eq!(i.subject["site_id"], "SITE-1");
    assert_eq!(i.members.len(), 1);
    assert_eq!(i.members[0].alert_id, alerts[0].alert_id);
    assert_eq!(
        i.members[0].evidence,
        "observed 10 vs expected 2 (score 5, threshold 4, 5m)"
    );
    assert_eq!(i.title, "Gas LEL rising at SITE-1 (1 sensor, 1 detector)");
    assert_eq!(i.first_event_ts, rfc(0));
}

/// A registered site's incident is named after it and carries its hazard grade.
#[test]
fn a_registered_site_is_named_and_graded() {
    let mut g = grouper();
    let a = alert(
        "sensors",
        "sensors:threshold:S-G:1",
        "threshold",
        serde_json::json!({"sensor_id":"S-G","site_id":"SITE-1","region":"330503101","kind":"gas_lel",
            "name":"GD-1","site_name":"Jiahe Chemical","hazard_grade":1}),
        0,
        Level::Yellow,
        Status::Firing,
    );
    let (_, msgs) = step(&mut g, 0, &[a]);
    let i = &msgs[0];
    assert_eq!(
        i.title,
        "Gas LEL rising at Jiahe Chemical (1 sensor, 1 detector)"
    );
    assert_eq!(i.subject["site_id"], "SITE-1");
    assert_eq!(i.subject["hazard_grade"], 1);
    assert!(
        i.subject.get("name").is_none(),
        "the point's name is a member's, not the site's"
    );
}

#[test]
fn members_at_the_same_level_ride_along_and_a_higher_one_raises_it() {
    let mut g = grouper();
    let a = sensor_alert(
        "SITE-1",
        "S-G",
        "threshold",
        0,
        Level::Yellow,
        Status::Firing,
    );
    let b = sensor_alert("SITE-1", "S-H", "ewma_z", 60, Level::Yellow, Status::Firing);
    let c = sensor_alert("SITE-1", "S-T", "cusum", 120, Level::Red, Status::Firing);
    step(&mut g, 0, std::slice::from_ref(&a));
    let (bb, msgs) = step(&mut g, 60, std::slice::from_ref(&b));
    assert!(msgs.is_empty(), "same level: no message");
    assert_eq!(bb[0].incident_id, format!("sensors:site:SITE-1:{T0}"));
    let (_, msgs) = step(&mut g, 120, &[c]);
    assert_eq!(msgs.len(), 1);
    let i = &msgs[0];
    assert_eq!((i.level, i.seq), (Level::Red, 2));
    assert_eq!(
        i.members.len(),
        3,
        "the silent join shows in the next message"
    );
    assert_eq!(i.route, ["330503101", "330503", "330500"]);
    // Another site is another incident.
    let d = sensor_alert(
        "SITE-2",
        "S-X",
        "threshold",
        130,
        Level::Red,
        Status::Firing,
    );
    let (dd, msgs) = step(&mut g, 130, &[d]);
    assert_eq!(msgs.len(), 1);
    assert_ne!(dd[0].incident_id, i.incident_id);
    assert_eq!(g.open_count(), 2);
}

#[test]
fn level_is_the_highest_open_member_and_resolve_waits_for_the_gap() {
    let mut g = grouper();
    let a = sensor_alert("SITE-1", "S-G", "threshold", 0, Level::Red, Status::Firing);
    let b = sensor_alert("SITE-1", "S-H", "ewma_z", 10, Level::Yellow, Status::Firing);
    step(&mut g, 0, std::slice::from_ref(&a));
    step(&mut g, 10, std::slice::from_ref(&b));
    // The red member resolves: the incident falls to yellow.
    let (_, msgs) = step(&mut g, 600, &[with(&a, Level::Red, Status::Resolved)]);
    assert_eq!(
        msgs.iter().map(|i| (i.level, i.status)).collect::<Vec<_>>(),
        [(Level::Yellow, Status::Firing)]
    );
    // The last member resolves: nothing yet ...
    let (_, msgs) = step(&mut g, 900, &[with(&b, Level::Yellow, Status::Resolved)]);
    assert!(msgs.is_empty());
    let (_, msgs) = step(&mut g, 900 + GAP - 1, &[]);
    assert!(msgs.is_empty(), "quiet, but within the gap");
    // ... the incident resolves once the gap has passed, listing both members resolved.
    let (_, msgs) = step(&mut g, 900 + GAP, &[]);
    assert_eq!(msgs.len(), 1);
    let i = &msgs[0];
    assert_eq!(
        (i.status, i.level, i.seq),
        (Status::Resolved, Level::Yellow, 3)
    );
    assert!(i.members.iter().all(|m| m.status == Status::Resolved));
    assert_eq!(g.open_count(), 0);
    assert_eq!(g.index_sizes(), [0; 4], "a resolved incident is forgotten");
}

#[test]
fn a_member_within_the_gap_joins_and_one_after_it_opens_a_new_incident() {
    let mut g = grouper();
    let a = sensor_alert(
        "SITE-1",
        "S-G",
        "threshold",
        0,
        Level::Yellow,
        Status::Firing,
    );
    let (aa, _) = step(&mut g, 0, std::slice::from_ref(&a));
    step(&mut g, 300, &[with(&a, Level::Yellow, Status::Resolved)]);
    // Re-fires 20 minutes after its resolve: the same incident, no message.
    let b = sensor_alert(
        "SITE-1",
        "S-G",
        "threshold",
        1500,
        Level::Yellow,
        Status::Firing,
    );
    let (bb, msgs) = step(&mut g, 1500, std::slice::from_ref(&b));
    assert!(msgs.is_empty());
    assert_eq!(bb[0].incident_id, aa[0].incident_id);
    step(&mut g, 1800, &[with(&b, Level::Yellow, Status::Resolved)]);
    // Re-fires after the gap, before any watermark resolved the old one: the old one
    // resolves, a new one opens.
    let c = sensor_alert(
        "SITE-1",
        "S-G",
        "threshold",
        1800 + GAP,
        Level::Yellow,
        Status::Firing,
    );
    let (cc, msgs) = step(&mut g, 1800 + GAP, &[c]);
    assert_eq!(
        msgs.iter()
            .map(|i| (i.incident_id.clone(), i.status))
            .collect::<Vec<_>>(),
        [
            (aa[0].incident_id.clone(), Status::Resolved),
            (cc[0].incident_id.clone(), Status::Firing)
        ]
    );
    assert_ne!(cc[0].incident_id, aa[0].incident_id);
}

#[test]
fn a_hazard_costs_its_level_changes_plus_two_messages() {
    // Six detectors on four sensors open, move and resolve at one site; the incident's
    // level goes yellow -> red -> orange: two changes, so at most four messages.
    let mut g = grouper();
    let mut msgs = Vec::new();
    let mut open = Vec::new();
    for (k, (sensor, det, lvl)) in [
        ("S-G", "threshold", Level::Yellow),
        ("S-G", "ewma_z", Level::Yellow),
        ("S-H", "ewma_z", Level::Red),
        ("S-T", "robust_z", Level::Orange),
        ("S-P", "cusum", Level::Yellow),
        ("S-P", "robust_z", Level::Blue),
    ]
    .into_iter()
    .enumerate()
    {
        let a = sensor_alert("SITE-1", sensor, det, k as i64 * 30, lvl, Status::Firing);
        msgs.extend(step(&mut g, k as i64 * 30, std::slice::from_ref(&a)).1);
        open.push(a);
    }
    // A member changes level below the top: rides along.
    let up = with(&open[4], Level::Orange, Status::Firing);
    msgs.extend(step(&mut g, 400, std::slice::from_ref(&up)).1);
    open[4] = up;
    // The red one resolves (level falls to orange), then the rest, together.
    msgs.extend(step(&mut g, 600, &[with(&open[2], Level::Red, Status::Resolved)]).1);
    let rest: Vec<Alert> = [0, 1, 3, 4, 5]
        .iter()
        .map(|&k| with(&open[k], open[k].level, Status::Resolved))
        .collect();
    msgs.extend(step(&mut g, 900, &rest).1);
    msgs.extend(step(&mut g, 900 + GAP, &[]).1);
    let levels: Vec<(Level, Status)> = msgs.iter().map(|i| (i.level, i.status)).collect();
    assert_eq!(
        levels,
        [
            (Level::Yellow, Status::Firing),
            (Level::Red, Status::Firing),
            (Level::Orange, Status::Firing),
            (Level::Orange, Status::Resolved)
        ]
    );
    let last = msgs.last().unwrap();
    assert_eq!(last.members.len(), 6);
    assert_eq!(
        last.title, "Gas LEL rising at SITE-1 (4 sensors, 4 detectors)",
        "every member here is a gas_lel alert in this harness"
    );
}

#[test]
fn the_order_of_one_steps_resolves_does_not_matter() {
    let run = |reverse: bool| {
        let mut g = grouper();
        let a = sensor_alert("SITE-1", "S-G", "threshold", 0, Level::Red, Status::Firing);
        let b = sensor_alert("SITE-1", "S-H", "ewma_z", 0, Level::Yellow, Status::Firing);
        step(&mut g, 0, &[a.clone(), b.clone()]);
        let mut both = vec![
            with(&a, Level::Red, Status::Resolved),
            with(&b, Level::Yellow, Status::Resolved),
        ];
        if reverse {
            both.reverse();
        }
        let mut msgs = step(&mut g, 600, &both).1;
        msgs.extend(step(&mut g, 600 + GAP, &[]).1);
        msgs.into_iter()
            .map(|i| (i.level, i.status, i.seq, i.route))
            .collect::<Vec<_>>()
    };
    assert_eq!(run(false), run(true));
    assert_eq!(
        run(false).len(),
        1,
        "only the resolve: no level drop between"
    );
}

#[test]
fn a_county_alert_joins_its_townships_incident_and_others_follow() {
    let mut g = grouper();
    let t1 = region_alert("330503101", 0, Level::Blue, Status::Firing);
    let county = region_alert("330503", 900, Level::Yellow, Status::Firing);
    let t2 = region_alert("330503102", 1800, Level::Blue, Status::Firing);
    let other = region_alert("330502001", 1800, Level::Blue, Status::Firing);
    let city = region_alert("330500", 1800, Level::Blue, Status::Firing);
    let (a, _) = step(&mut g, 0, &[t1]);
    let (b, msgs) = step(&mut g, 900, &[county]);
    assert_eq!(b[0].incident_id, a[0].incident_id, "the county joins");
    assert_eq!(msgs[0].level, Level::Yellow);
    let (c, _) = step(&mut g, 1800, &[t2, other, city]);
    assert_eq!(
        c[0].incident_id, a[0].incident_id,
        "a township of the county joins too"
    );
    assert_ne!(
        c[1].incident_id, a[0].incident_id,
        "another county's township"
    );
    assert_ne!(c[2].incident_id, a[0].incident_id, "the city is its own");
    assert_eq!(a[0].incident_id, format!("incidents:region:330503101:{T0}"));
    // A county alert with no township incident open opens the county's own.
    let mut g = grouper();
    let (d, _) = step(
        &mut g,
        0,
        &[region_alert("330503", 0, Level::Blue, Status::Firing)],
    );
    let (e, _) = step(
        &mut g,
        60,
        &[region_alert("330503101", 60, Level::Blue, Status::Firing)],
    );
    assert_eq!(d[0].incident_id, format!("incidents:region:330503:{T0}"));
    assert_eq!(e[0].incident_id, d[0].incident_id);
}

#[test]
fn state_stays_bounded() {
    let mut g = grouper();
    // 200 sites, each one incident that opens and resolves.
    for k in 0..200 {
        let a = sensor_alert(
            &format!("SITE-{k}"),
            "S",
            "threshold",
            k * 60,
            Level::Yellow,
            Status::Firing,
        );
        step(&mut g, k * 60, std::slice::from_ref(&a));
        step(
            &mut g,
            k * 60 + 30,
            &[with(&a, Level::Yellow, Status::Resolved)],
        );
    }
    step(&mut g, 200 * 60 + GAP, &[]);
    assert_eq!(g.open_count(), 0);
    assert_eq!(g.index_sizes(), [0; 4]);
    // One long incident with many short members keeps at most max_members.
    let mut g = grouper();
    let keep = step(
        &mut g,
        0,
        &[sensor_alert(
            "SITE-1",
            "S-0",
            "threshold",
            0,
            Level::Red,
            Status::Firing,
        )],
    )
    .0;
    for k in 1..=100 {
        let a = sensor_alert(
            "SITE-1",
            &format!("S-{k}"),
            "ewma_z",
            k * 60,
            Level::Blue,
            Status::Firing,
        );
        step(&mut g, k * 60, std::slice::from_ref(&a));
        step(
            &mut g,
            k * 60 + 30,
            &[with(&a, Level::Blue, Status::Resolved)],
        );
    }
    let (_, msgs) = step(
        &mut g,
        7000,
        &[with(&keep[0], Level::Red, Status::Resolved)],
    );
    assert!(msgs.is_empty());
    let (_, msgs) = step(&mut g, 7000 + GAP, &[]);
    let i = &msgs[0];
    assert_eq!(i.members.len(), DEFAULT_MAX_MEMBERS);
    assert_eq!(i.dropped_members as usize, 101 - DEFAULT_MAX_MEMBERS);
    assert_eq!(
        i.members[0].alert_id, keep[0].alert_id,
        "the open one was kept"
    );
}

/// Applies `g`'s changes to a compacted log (latest value per key wins).
fn compact(g: &mut IncidentGrouper, log: &mut BTreeMap<String, Option<Vec<u8>>>) {
    let mut out = Vec::new();
    for s in Stream::ALL {
        g.changes(s, &mut out);
    }
    for c in out {
        log.insert(c.key, c.value);
    }
}

#[test]
fn a_restored_grouper_continues_every_incident_exactly() {
    let a = sensor_alert(
        "SITE-1",
        "S-G",
        "threshold",
        0,
        Level::Yellow,
        Status::Firing,
    );
    let b = sensor_alert("SITE-1", "S-H", "ewma_z", 60, Level::Red, Status::Firing);
    let t1 = region_alert("330503101", 0, Level::Blue, Status::Firing);
    let county = region_alert("330503", 300, Level::Yellow, Status::Firing);
    let c = sensor_alert(
        "SITE-1",
        "S-G",
        "threshold",
        2800,
        Level::Orange,
        Status::Firing,
    );
    let steps: Vec<(i64, Vec<Alert>)> = vec![
        (0, vec![a.clone(), t1.clone()]),
        (60, vec![b.clone()]),
        (300, vec![county.clone()]),
        (600, vec![with(&b, Level::Red, Status::Resolved)]),
        (900, vec![with(&a, Level::Yellow, Status::Resolved)]),
        (1200, vec![with(&t1, Level::Blue, Status::Resolved)]),
        (1500, vec![with(&county, Level::Yellow, Status::Resolved)]),
        (2800, vec![c.clone()]),
        (3400, vec![with(&c, Level::Orange, Status::Resolved)]),
        (3400 + GAP, vec![]),
        (9000, vec![]),
    ];
    let run = |g: &mut IncidentGrouper, (w, alerts): &(i64, Vec<Alert>)| {
        let (stamped, msgs) = step(g, *w, alerts);
        (
            stamped
                .into_iter()
                .map(|a| a.incident_id)
                .collect::<Vec<_>>(),
            msgs,
        )
    };
    let mut whole = grouper();
    let expected: Vec<_> = steps.iter().map(|s| run(&mut whole, s)).collect();
    let opened: usize = expected
        .iter()
        .flat_map(|(_, m)| m)
        .filter(|i| i.seq == 1)
        .count();
    assert_eq!(
        opened, 3,
        "two site incidents (the gap split them) and one region"
    );
    for split in 0..steps.len() {
        let mut first = grouper();
        first.track_changes();
        let mut log = BTreeMap::new();
        let mut got = Vec::new();
        for s in &steps[..split] {
            got.push(run(&mut first, s));
            compact(&mut first, &mut log);
        }
        let mut second = grouper();
        for (k, v) in &log {
            second.restore(k, v.as_deref()).unwrap();
        }
        assert_eq!(second.open_count(), first.open_count(), "split {split}");
        for s in &steps[split..] {
            got.push(run(&mut second, s));
        }
        assert_eq!(got, expected, "split {split}");
    }
}

#[test]
fn a_bad_record_is_an_error_not_a_panic() {
    let mut g = grouper();
    assert!(g.restore("i:x", Some(b"{not json")).is_err());
    assert!(g.restore("e:x", None).is_err());
    assert_eq!(g.open_count(), 0);
}

/// One episode of a random hazard: site, open time, levels it moves through, resolve.
#[derive(Debug, Clone)]
struct Ep {
    site: u8,
    sensor: u8,
    open: i64,
    levels: Vec<u8>,
    resolve_after: i64,
}

fn ep() -> impl Strategy<Value = Ep> {
    (
        0u8..3,
        0u8..4,
        0i64..(6 * 3600),
        proptest::collection::vec(0u8..4, 1..4),
        30i64..4000,
    )
        .prop_map(|(site, sensor, open, levels, resolve_after)| Ep {
            site,
            sensor,
            open,
            levels,
            resolve_after,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever the episodes, every member is in its incident's last message with its
    /// last status, every alert's incident_id is that incident's, and once everything
    /// has resolved and the gap passed nothing is left.
    #[test]
    fn incidents_never_lose_a_member(eps in proptest::collection::vec(ep(), 1..25)) {
        // Every message of every episode at its event time, in time order.
        let mut timeline: Vec<(i64, Alert)> = Vec::new();
        for (k, e) in eps.iter().enumerate() {
            let lvl = |i: u8| Level::ALL[i as usize];
            let mut a = sensor_alert(
                &format!("SITE-{}", e.site),
                &format!("S-{}-{}", e.site, e.sensor),
                &format!("d{k}"),
                e.open,
                lvl(e.levels[0]),
                Status::Firing,
            );
            timeline.push((e.open, a.clone()));
            for (j, &l) in e.levels.iter().enumerate().skip(1) {
                a = with(&a, lvl(l), Status::Firing);
                timeline.push((e.open + j as i64 * 10, a.clone()));
            }
            let done = e.open + e.resolve_after.max(e.levels.len() as i64 * 10);
            timeline.push((done, with(&a, a.level, Status::Resolved)));
        }
        timeline.sort_by_key(|(t, _)| *t);
        let mut g = grouper();
        let mut last: BTreeMap<String, Incident> = BTreeMap::new();
        let mut of_alert: BTreeMap<String, (String, Status)> = BTreeMap::new();
        let mut feed = |g: &mut IncidentGrouper, t: i64, alerts: &[Alert]| {
            let (stamped, msgs) = step(g, t, alerts);
            for a in stamped {
                prop_assert!(!a.incident_id.is_empty());
                of_alert.insert(a.alert_id.clone(), (a.incident_id.clone(), a.status));
            }
            for i in msgs {
                last.insert(i.incident_id.clone(), i);
            }
            Ok(())
        };
        for (t, a) in &timeline {
            feed(&mut g, *t, std::slice::from_ref(a))?;
        }
        feed(&mut g, 7 * 3600 + 2 * GAP, &[])?;
        prop_assert_eq!(g.open_count(), 0);
        prop_assert_eq!(g.index_sizes(), [0; 4]);
        for (alert_id, (incident, status)) in &of_alert {
            let i = last.get(incident);
            prop_assert!(i.is_some(), "{} names {} which never published", alert_id, incident);
            let i = i.unwrap();
            prop_assert_eq!(i.status, Status::Resolved);
            let m = i.members.iter().find(|m| &m.alert_id == alert_id);
            prop_assert!(m.is_some(), "{} lost from {}", alert_id, incident);
            prop_assert_eq!(m.unwrap().status, *status);
            // A member belongs to its own site's incident.
            let site = alert_id.split(':').nth(2).unwrap().split('-').nth(1).unwrap();
            let prefix = format!("sensors:site:SITE-{site}:");
            prop_assert!(incident.starts_with(&prefix), "{} in {}", alert_id, incident);
        }
    }
}
