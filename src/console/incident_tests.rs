//! Incidents on the console: one card per incident, actions on all members, escalation,
//! false-alarm verdicts.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::*;
use crate::alert::{Incident, Level};
use crate::clock::ManualClock;
use crate::regions::Regions;

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-26T00:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

const INC: &str = "sensors:site:SITE-330503-0042:1764115500";
const TOWN_ONLY: &[&str] = &["330503101"];

fn member(n: usize, level: Level, route: &[&str]) -> Alert {
    let mut a: Alert = serde_json::from_value(serde_json::json!({
        "alert_id": format!("sensors:threshold:S-330503-0042-GAS{n}:1764115500"),
        "status": "firing", "level": "blue", "stream": "sensors", "detector": "threshold",
        "subject": {"sensor_id": format!("S-330503-0042-GAS{n}"), "site_id": "SITE-330503-0042", "region": "330503101"},
        "title": "Gas LEL above alarm limit at SITE-330503-0042",
        "evidence": {"observed": 31.5, "expected": 3.0, "score": 1.0, "threshold": 25.0, "window": "1m"},
        "first_event_ts": "", "detected_at": "", "event_ids": [], "route": route,
        "incident_id": INC,
    }))
    .unwrap();
    a.level = level;
    a
}

fn incident(level: Level, route: &[&str], seq: u32) -> Incident {
    let mut i: Incident = serde_json::from_value(serde_json::json!({
        "incident_id": INC, "status": "firing", "level": "blue", "stream": "sensors",
        "subject": {"site_id": "SITE-330503-0042", "region": "330503101"},
        "title": "Gas LEL rising at SITE-330503-0042 (10 sensors, 1 detector)",
        "route": route, "members": [], "first_event_ts": "", "detected_at": "", "seq": seq,
    }))
    .unwrap();
    i.level = level;
    i
}

fn state() -> (ConsoleState, ManualClock) {
    let clock = ManualClock::new(t0());
    let s = ConsoleState::new(Arc::new(clock.clone()), &ConsoleConfig::default());
    (s, clock)
}

fn regions() -> Regions {
    Regions::from_file(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/regions.toml"),
    )
    .unwrap()
}

fn act(action: ActionKind, at: DateTime<Utc>) -> ActionEvent {
    ActionEvent {
        alert_id: String::new(),
        incident_id: Some(INC.into()),
        action,
        by_center: "330503101".into(),
        note: None,
        outcome: None,
        at: at.to_rfc3339(),
        to_center: None,
        reason: None,
        members: Vec::new(),
    }
}

/// A site event on ten sensors: ten episodes, one card.
fn site_event(s: &ConsoleState, route: &[&str]) {
    for n in 1..=10 {
        s.observe(&mut member(n, Level::Red, route));
    }
    s.observe_incident(&mut incident(Level::Red, route, 1));
}

#[test]
fn a_site_event_on_ten_sensors_is_one_card_with_ten_members() {
    let (s, _) = state();
    site_event(&s, &["330503101", "330503", "330500"]);
    let cards = s.incident_snapshot("330503");
    assert_eq!(cards.len(), 1);
    assert_eq!(cards[0].incident_id, INC);
    assert_eq!(cards[0].members.len(), 10);
    assert!(cards[0].open);
    assert_eq!(cards[0].incident.level, Level::Red);
    assert_eq!(
        s.snapshot("330503").len(),
        10,
        "the members' episodes come along"
    );
    assert!(s.incident_snapshot("330521").is_empty());
}

#[test]
fn one_acknowledgement_acknowledges_every_member_present_and_later() {
    let (s, clock) = state();
    site_event(&s, TOWN_ONLY);
    clock.advance(chrono::Duration::seconds(30));
    let ev = act(ActionKind::Ack, clock.now());
    let t = s.check_incident(INC, &ev).unwrap().unwrap();
    assert!(t.first_ack);
    assert_eq!(t.members.len(), 10);
    assert_eq!(t.opened_at, t0());
    s.apply(&ev).unwrap();
    for v in s.snapshot("330503101") {
        let a = v.alert.actions.expect("member carries the incident's ack");
        assert_eq!(
            a.acknowledged_by.as_deref(),
            Some("330503101"),
            "{}",
            v.alert_id
        );
    }
    assert_eq!(
        s.apply(&ev),
        Err(Conflict::AlreadyAcknowledged),
        "idempotent"
    );
    // A member joining later, and a member's next message, carry it too.
    let mut late = member(11, Level::Orange, TOWN_ONLY);
    s.observe(&mut late);
    assert!(late.actions.unwrap().acknowledged_at.is_some());
    let mut again = member(1, Level::Red, TOWN_ONLY);
    s.observe(&mut again);
    assert!(again.actions.unwrap().acknowledged_at.is_some());

    // Close (handled): the card and every member close.
    let mut close = act(ActionKind::Close, clock.now());
    close.outcome = Some(Outcome::Handled);
    s.apply(&close).unwrap();
    assert!(!s.get_incident(INC).unwrap().open);
    assert!(s.snapshot("330503101").iter().all(|v| !v.open));
}

#[test]
fn incident_actions_replayed_before_the_incident_is_seen_apply_when_it_appears() {
    let (s, clock) = state();
    s.apply(&act(ActionKind::Ack, clock.now())).unwrap();
    let mut a = member(1, Level::Red, TOWN_ONLY);
    s.observe(&mut a);
    assert!(a.actions.unwrap().acknowledged_at.is_some());
    assert!(
        s.unacknowledged().is_empty(),
        "acknowledged: nothing to escalate"
    );
}

#[test]
fn an_unacknowledged_red_incident_climbs_to_the_city_one_limit_at_a_time() {
    let (s, clock) = state();
    let r = regions();
    let limits = AckLimits {
        red: std::time::Duration::from_secs(60),
        ..AckLimits::default()
    };
    // Routed to its township only (a route policy that keeps red local).
    site_event(&s, TOWN_ONLY);
    assert!(!s.incident_visible(INC, "330500"));
    clock.advance(chrono::Duration::seconds(59));
    assert!(escalate::due(clock.now(), &limits, &r, &s.unacknowledged()).is_empty());
    clock.advance(chrono::Duration::seconds(1));
    let due = escalate::due(clock.now(), &limits, &r, &s.unacknowledged());
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].to_center.as_deref(), Some("330503"));
    assert_eq!(
        due[0].reason.as_deref(),
        Some("not acknowledged within 1m (red)")
    );
    s.apply(&due[0]).unwrap();
    assert_eq!(
        s.apply(&due[0]),
        Err(Conflict::AlreadyEscalated),
        "idempotent"
    );
    assert_eq!(
        s.incident_snapshot("330503").len(),
        1,
        "the county sees it now"
    );
    assert_eq!(s.snapshot("330503").len(), 10, "with its members");
    assert!(s.incident_snapshot("330500").is_empty());

    // The limit starts over at the county; then the city.
    clock.advance(chrono::Duration::seconds(30));
    assert!(escalate::due(clock.now(), &limits, &r, &s.unacknowledged()).is_empty());
    clock.advance(chrono::Duration::seconds(30));
    let due = escalate::due(clock.now(), &limits, &r, &s.unacknowledged());
    assert_eq!(due[0].to_center.as_deref(), Some("330500"));
    s.apply(&due[0]).unwrap();
    let city = s.incident_snapshot("330500");
    assert_eq!(
        city.len(),
        1,
        "a red incident nobody acknowledged reaches the city"
    );
    let x = &city[0].incident.escalations;
    assert_eq!(x.len(), 2);
    assert_eq!((x[0].to.as_str(), x[1].to.as_str()), ("330503", "330500"));
    assert_eq!(x[1].level, Level::Red);
    clock.advance(chrono::Duration::hours(1));
    assert!(
        escalate::due(clock.now(), &limits, &r, &s.unacknowledged()).is_empty(),
        "nothing above the city"
    );

    // The incident's next message to the sinks lists the escalations, centers on route.
    let mut next = incident(Level::Orange, TOWN_ONLY, 2);
    s.observe_incident(&mut next);
    assert_eq!(next.route, ["330503101", "330503", "330500"]);
    assert_eq!(next.escalations.len(), 2);
    assert!(next.escalations[0].reason.contains("not acknowledged"));
}

#[test]
fn acknowledging_in_time_keeps_it_at_the_township() {
    let (s, clock) = state();
    let r = regions();
    site_event(&s, TOWN_ONLY);
    clock.advance(chrono::Duration::seconds(200));
    s.apply(&act(ActionKind::Ack, clock.now())).unwrap();
    clock.advance(chrono::Duration::hours(5));
    assert!(escalate::due(clock.now(), &AckLimits::default(), &r, &s.unacknowledged()).is_empty());
    assert!(s.incident_snapshot("330503").is_empty());
}

#[test]
fn next_up_climbs_township_county_city() {
    let r = regions();
    let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        next_up_code(&r, &v(&["330503101"])).as_deref(),
        Some("330503")
    );
    assert_eq!(
        next_up_code(&r, &v(&["330503101", "330503"])).as_deref(),
        Some("330500")
    );
    assert_eq!(
        next_up_code(&r, &v(&["330503101", "330503", "330500"])),
        None
    );
    // An unlisted township under a known county climbs to that county.
    assert_eq!(
        next_up_code(&r, &v(&["330503999"])).as_deref(),
        Some("330503")
    );
}

fn next_up_code(r: &Regions, route: &[String]) -> Option<String> {
    escalate::next_up(r, route).map(|(c, _)| c)
}

#[test]
fn false_alarm_verdicts_rank_the_noisiest_detectors_and_keys_for_seven_days() {
    let (s, clock) = state();
    site_event(&s, TOWN_ONLY);
    let mut close = act(ActionKind::Close, clock.now());
    close.outcome = Some(Outcome::FalseAlarm);
    close.members = s.check_incident(INC, &close).unwrap().unwrap().members;
    assert_eq!(close.members.len(), 10);
    assert_eq!(close.members[0].key, "S-330503-0042-GAS1");
    s.apply(&close).unwrap();
    // A second verdict on one key, replayed from the topic (no episode held).
    let mut other = act(ActionKind::Close, clock.now());
    other.incident_id = Some("sensors:site:SITE-330503-0042:1764119100".into());
    other.outcome = Some(Outcome::FalseAlarm);
    other.members = vec![MemberRef {
        alert_id: "x".into(),
        detector: "ewma_z".into(),
        key: "S-330503-0042-GAS1".into(),
        score: None,
    }];
    s.apply(&other).unwrap();
    let n = s.noise(3);
    assert_eq!(n.detectors[0].name, "threshold");
    assert_eq!(n.detectors[0].false_alarms, 10);
    assert_eq!(n.detectors[1].name, "ewma_z");
    assert_eq!(n.keys.len(), 3, "top 3");
    assert_eq!(n.keys[0].name, "S-330503-0042-GAS1");
    assert_eq!(n.keys[0].false_alarms, 2);
    assert_eq!(n.keys[0].detectors, ["ewma_z", "threshold"]);
    // A handled close is no verdict; a week later the false alarms age out.
    clock.advance(chrono::Duration::days(7) + chrono::Duration::seconds(1));
    s.prune();
    let n = s.noise(3);
    assert!(n.detectors.is_empty() && n.keys.is_empty(), "{n:?}");
}

#[test]
fn escalate_events_round_trip_and_are_keyed_by_incident() {
    let mut e = act(ActionKind::Escalate, t0());
    e.to_center = Some("330503".into());
    e.reason = Some("not acknowledged within 5m (red)".into());
    let j = serde_json::to_value(&e).unwrap();
    assert_eq!(j["action"], "escalate");
    assert_eq!(j["incident_id"], INC);
    assert!(j.get("members").is_none());
    assert_eq!(serde_json::from_value::<ActionEvent>(j).unwrap(), e);
    assert_eq!(e.key(), INC);
    assert_eq!(
        ActionKind::parse("escalate"),
        None,
        "not an operator's action"
    );
    // Episode actions written before incidents existed still read.
    let old: ActionEvent = serde_json::from_str(
        r#"{"alert_id":"a","action":"ack","by_center":"330503","at":"2026-11-26T00:01:00Z"}"#,
    )
    .unwrap();
    assert_eq!(old.key(), "a");
}
