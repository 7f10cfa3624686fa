use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::*;
use crate::alert::{Level, Status};
use crate::clock::ManualClock;

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-26T00:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn alert(id: &str, level: Level, route: &[&str]) -> Alert {
    let mut a: Alert = serde_json::from_value(serde_json::json!({
        "alert_id": id, "status": "firing", "level": "blue", "stream": "sensors",
        "detector": "threshold", "subject": {"sensor_id": "S-1"}, "title": "t",
        "evidence": {"observed": 31.5, "expected": 3.0, "score": 1.0, "threshold": 25.0, "window": "1m"},
        "first_event_ts": "", "detected_at": "", "event_ids": [], "route": route,
    }))
    .unwrap();
    a.level = level;
    a
}

fn state() -> (ConsoleState, ManualClock) {
    state_capped(3)
}

fn state_capped(max_open: usize) -> (ConsoleState, ManualClock) {
    let clock = ManualClock::new(t0());
    let cfg = ConsoleConfig {
        max_open,
        ..ConsoleConfig::default()
    };
    (ConsoleState::new(Arc::new(clock.clone()), &cfg), clock)
}

fn ev(id: &str, action: ActionKind, center: &str) -> ActionEvent {
    ActionEvent {
        alert_id: id.into(),
        incident_id: None,
        action,
        by_center: center.into(),
        note: None,
        outcome: None,
        at: "2026-11-26T00:01:00.000Z".into(),
        to_center: None,
        reason: None,
        members: Vec::new(),
    }
}

const TOWN: &[&str] = &["330503101", "330503", "330500"];

#[test]
fn only_episodes_routed_to_the_center_are_shown() {
    let (s, _) = state();
    s.observe(&mut alert("a", Level::Red, TOWN));
    s.observe(&mut alert("b", Level::Blue, &["330521102"]));
    let ids = |c: &str| -> Vec<String> { s.snapshot(c).into_iter().map(|v| v.alert_id).collect() };
    assert_eq!(ids("330503"), ["a"]);
    assert_eq!(ids("330503101"), ["a"]);
    assert_eq!(ids("330500"), ["a"]);
    assert_eq!(ids("330521102"), ["b"]);
    assert!(ids("330521").is_empty(), "blue stays in its township");
}

#[test]
fn open_first_then_most_severe_then_newest() {
    let (s, clock) = state_capped(10);
    for (id, l) in [
        ("old-red", Level::Red),
        ("yellow", Level::Yellow),
        ("new-red", Level::Red),
        ("closed-red", Level::Red),
    ] {
        s.observe(&mut alert(id, l, TOWN));
        clock.advance(chrono::Duration::seconds(10));
    }
    let mut c = alert("closed-red", Level::Red, TOWN);
    c.status = Status::Resolved;
    s.observe(&mut c);
    let order: Vec<String> = s
        .snapshot("330503")
        .into_iter()
        .map(|v| v.alert_id)
        .collect();
    assert_eq!(order, ["new-red", "old-red", "yellow", "closed-red"]);
    assert_eq!(s.counts(), (3, 1));
}

#[test]
fn closed_episodes_are_kept_24_hours_and_open_ones_are_capped() {
    let (s, clock) = state();
    let mut a = alert("a", Level::Red, TOWN);
    s.observe(&mut a);
    a.status = Status::Resolved;
    s.observe(&mut a);
    clock.advance(chrono::Duration::hours(23));
    s.prune();
    assert_eq!(s.counts(), (0, 1), "closed 23 h ago: still shown");
    clock.advance(chrono::Duration::hours(2));
    s.prune();
    assert_eq!(s.counts(), (0, 0), "closed 25 h ago: dropped");

    for i in 0..5 {
        s.observe(&mut alert(&format!("o{i}"), Level::Blue, TOWN));
        clock.advance(chrono::Duration::seconds(1));
    }
    assert_eq!(s.counts(), (3, 0), "max_open = 3");
    assert!(
        s.get("o0").is_none() && s.get("o4").is_some(),
        "oldest dropped"
    );
}

#[test]
fn actions_follow_the_state_machine_and_reach_later_alerts() {
    let (s, _) = state();
    let mut a = alert("a", Level::Red, TOWN);
    s.observe(&mut a);
    assert!(a.actions.is_none());

    let mut rx = s.subscribe();
    s.apply(&ev("a", ActionKind::Ack, "330503")).unwrap();
    let pushed = rx.try_recv().expect("an SSE update");
    let Change::Episode(pushed) = &*pushed else {
        panic!("an episode update: {pushed:?}")
    };
    assert_eq!(
        pushed
            .alert
            .actions
            .as_ref()
            .unwrap()
            .acknowledged_by
            .as_deref(),
        Some("330503")
    );
    assert_eq!(
        s.apply(&ev("a", ActionKind::Ack, "330503")),
        Err(Conflict::AlreadyAcknowledged),
        "replaying the same ack changes nothing"
    );
    assert_eq!(
        s.apply(&ev("a", ActionKind::Dispatch, "330503")),
        Err(Conflict::MissingNote)
    );
    let mut d = ev("a", ActionKind::Dispatch, "330503");
    d.note = Some("fire brigade 3".into());
    s.apply(&d).unwrap();
    assert_eq!(
        s.apply(&ev("a", ActionKind::Close, "330503")),
        Err(Conflict::MissingOutcome)
    );
    let mut c = ev("a", ActionKind::Close, "330503");
    c.outcome = Some(Outcome::Handled);
    s.apply(&c).unwrap();
    assert!(!s.get("a").unwrap().open);
    assert_eq!(s.apply(&d), Err(Conflict::AlreadyClosed));

    // The next alert message of the episode carries the actions.
    a.level = Level::Red;
    s.observe(&mut a);
    let x = a.actions.expect("actions on the next alert");
    assert_eq!(
        x.acknowledged_at.as_deref(),
        Some("2026-11-26T00:01:00.000Z")
    );
    assert_eq!(x.dispatched_to.as_deref(), Some("fire brigade 3"));
    assert_eq!(x.closed_outcome.as_deref(), Some("handled"));
    let j = serde_json::to_value(&s.get("a").unwrap().alert).unwrap();
    assert_eq!(j["actions"]["closed_outcome"], "handled");
}

#[test]
fn actions_seen_before_their_episode_are_applied_when_it_appears() {
    let (s, _) = state();
    let mut c = ev("later", ActionKind::Close, "330500");
    c.outcome = Some(Outcome::FalseAlarm);
    s.apply(&c).unwrap();
    let mut a = alert("later", Level::Orange, TOWN);
    s.observe(&mut a);
    let v = s.get("later").unwrap();
    assert!(!v.open, "closed by an operator before this instance saw it");
    assert_eq!(
        a.actions.unwrap().acknowledged_by.as_deref(),
        Some("330500"),
        "close implies the acknowledgement"
    );
}

#[test]
fn alerts_without_actions_serialize_as_before() {
    let a = alert("a", Level::Red, TOWN);
    let j = serde_json::to_value(&a).unwrap();
    assert!(j.get("actions").is_none());
}

#[test]
fn token_and_center_matrix() {
    let t = Tokens::new(
        &[
            TokenConfig {
                token: "city-token".into(),
                center: "330500".into(),
            },
            TokenConfig {
                token: "county-503".into(),
                center: "330503".into(),
            },
            TokenConfig {
                token: "county-521".into(),
                center: "330521".into(),
            },
            TokenConfig {
                token: "town-503101".into(),
                center: "330503101".into(),
            },
        ],
        "330500",
    );
    let town_only: Vec<String> = vec!["330503101".into()];
    let routed: Vec<String> = TOWN.iter().map(|s| s.to_string()).collect();
    let code = |r: Result<String, Denied>| r.map(|_| 200).unwrap_or_else(|d| d.status());
    assert_eq!(code(t.authorize(None, &routed)), 401);
    assert_eq!(code(t.authorize(Some("nope"), &routed)), 401);
    assert_eq!(t.authorize(None, &routed), Err(Denied::MissingToken));
    assert_eq!(
        t.authorize(Some("nope"), &routed),
        Err(Denied::UnknownToken)
    );
    assert_eq!(code(t.authorize(Some("county-503"), &routed)), 200);
    assert_eq!(code(t.authorize(Some("county-521"), &routed)), 403);
    assert_eq!(code(t.authorize(Some("town-503101"), &routed)), 200);
    // A blue episode stays in its township: the county is not on its route ...
    assert_eq!(code(t.authorize(Some("county-503"), &town_only)), 403);
    // ... but the city's token acts on every episode.
    assert_eq!(
        t.authorize(Some("city-token"), &town_only),
        Ok("330500".to_string())
    );
    // Reading: own center and those below it.
    assert!(t.may_read(Some("county-503"), "330503101").is_ok());
    assert_eq!(
        t.may_read(Some("county-503"), "330521"),
        Err(Denied::OutsideCenter)
    );
    assert!(t.may_read(Some("city-token"), "330521").is_ok());
}
