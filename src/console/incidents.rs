//! Incidents on the console (issue #23): one card per incident, its episodes folded under
//! it; operators act on the incident and the action covers every member, present and
//! joining later; escalations and false-alarm verdicts.
//!
//! An incident's card is made from its first member's alert (the pipeline publishes the
//! alerts of a step before the incident message they cause) and then kept current by its
//! incident messages. Its actions and escalations live by incident id, like episodes'
//! actions: durable on the actions topic (key = incident_id), replayed on start, and
//! applied before the incident is seen again. A member's effective actions are its own
//! where it has them, else its incident's.
//!
//! Memory: one entry per incident held (closed ones go after `closed_retention`, as
//! episodes do); one record per acted-on incident; false-alarm verdicts of 7 days (at
//! most [`MAX_VERDICTS`]).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{parse_ts, ts, ActionEvent, ActionKind, Conflict, ConsoleState, Inner, Outcome};
use crate::alert::{Actions, Alert, Escalation, Incident, Level, Status};

/// How far back the noise view looks.
pub const NOISE_DAYS: i64 = 7;
/// Verdicts kept at most: a week of a noisy city's false alarms with room to spare.
pub const MAX_VERDICTS: usize = 100_000;

pub(super) struct IncEntry {
    /// The latest incident message (or, before the first, what its first member said),
    /// without `members`: the console holds the members' own episodes.
    incident: Incident,
    /// Member alert ids in joining order.
    members: Vec<String>,
    opened_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    closed_at: Option<DateTime<Utc>>,
}

#[derive(Default)]
pub(super) struct IncRecord {
    pub(super) actions: Actions,
    escalations: Vec<Escalation>,
    touched: Option<DateTime<Utc>>,
}

/// One false-alarm verdict: a member of an incident closed as `false_alarm`.
pub(super) struct Verdict {
    at: DateTime<Utc>,
    detector: String,
    key: String,
}

/// A member as an action recorded it: enough to count the verdict per detector and key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberRef {
    pub alert_id: String,
    pub detector: String,
    /// The sensor, suspect (`phone:...`), site or region the episode is about.
    pub key: String,
    /// The highest score the console saw in the episode (|evidence.score|): what a
    /// false-alarm verdict charges to the key's budget. Absent in actions written
    /// before verdicts reached the budgets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
}

/// One incident as the console shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IncidentView {
    pub incident_id: String,
    /// Not resolved and not closed by an operator.
    pub open: bool,
    /// When the console first saw the incident: the start of time-to-acknowledge and of
    /// the escalation clock.
    pub opened_at: String,
    pub updated_at: String,
    pub closed_at: Option<String>,
    /// Its route with the escalations' centers.
    pub route: Vec<String>,
    /// Member alert ids in joining order (their episodes come as `episode` events).
    pub members: Vec<String>,
    pub actions: Option<Actions>,
    /// The latest incident message, `members` left out, `escalations` filled in.
    pub incident: Incident,
}

/// An open incident nobody acknowledged: what the escalator judges.
#[derive(Debug, Clone, PartialEq)]
pub struct Overdue {
    pub incident_id: String,
    pub level: Level,
    pub route: Vec<String>,
    /// Since when it has waited at its current reach: opened, or last escalated.
    pub since: DateTime<Utc>,
}

/// The noisiest detectors and keys by confirmed false alarms.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NoiseView {
    pub days: i64,
    pub detectors: Vec<NoiseRow>,
    pub keys: Vec<NoiseRow>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NoiseRow {
    /// A detector, or a key (`S-330503-0042-GAS1`, `phone:+86...`).
    pub name: String,
    /// For a key: its detectors that were judged false, sorted.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub detectors: Vec<String>,
    pub false_alarms: u64,
}

/// What [`ConsoleState::check_incident`] found, for the handler's checks and metrics.
#[derive(Debug, Clone)]
pub struct IncidentTarget {
    pub route: Vec<String>,
    pub level: Level,
    pub opened_at: DateTime<Utc>,
    pub first_ack: bool,
    pub members: Vec<MemberRef>,
}

/// A member's actions: its own where it has them (per-episode API), else its incident's.
pub(super) fn merge_actions(own: Option<Actions>, incident: Option<Actions>) -> Option<Actions> {
    match (own, incident) {
        (None, i) => i,
        (Some(o), None) => Some(o),
        (Some(o), Some(i)) => Some(Actions {
            acknowledged_at: o.acknowledged_at.or(i.acknowledged_at),
            acknowledged_by: o.acknowledged_by.or(i.acknowledged_by),
            dispatched_to: o.dispatched_to.or(i.dispatched_to),
            dispatched_at: o.dispatched_at.or(i.dispatched_at),
            dispatched_by: o.dispatched_by.or(i.dispatched_by),
            closed_outcome: o.closed_outcome.or(i.closed_outcome),
            closed_at: o.closed_at.or(i.closed_at),
            closed_by: o.closed_by.or(i.closed_by),
        }),
    }
}

/// The key an episode is about, for the noise view: sensor, else suspect, else site, else
/// region.
pub fn member_key(a: &Alert) -> String {
    let s = |k: &str| {
        a.subject
            .get(k)
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    s("sensor_id")
        .or_else(|| {
            a.subject.iter().find_map(|(k, v)| {
                let kind = k.strip_prefix("suspect_")?;
                Some(format!("{kind}:{}", v.as_str()?))
            })
        })
        .or_else(|| s("site_id"))
        .or_else(|| s("region"))
        .unwrap_or_else(|| a.alert_id.clone())
}

/// Makes `alert` a member of its incident's card (creating the card from it if this is
/// the incident's first member seen). Returns the card when it changed.
pub(super) fn join(g: &mut Inner, alert: &Alert, now: DateTime<Utc>) -> Option<IncidentView> {
    if alert.incident_id.is_empty() {
        return None;
    }
    let e = g
        .incidents
        .entry(alert.incident_id.clone())
        .or_insert_with(|| IncEntry {
            incident: Incident {
                incident_id: alert.incident_id.clone(),
                status: Status::Firing,
                level: alert.level,
                stream: alert.stream.clone(),
                subject: alert.subject.clone(),
                region_name: alert.region_name.clone(),
                title: alert.title.clone(),
                route: Vec::new(),
                members: Vec::new(),
                dropped_members: 0,
                first_event_ts: alert.first_event_ts.clone(),
                detected_at: alert.detected_at.clone(),
                seq: 0,
                escalations: Vec::new(),
            },
            members: Vec::new(),
            opened_at: now,
            updated_at: now,
            closed_at: None,
        });
    let mut changed = false;
    if !e.members.contains(&alert.alert_id) {
        e.members.push(alert.alert_id.clone());
        changed = true;
    }
    for r in &alert.route {
        if !e.incident.route.contains(r) {
            e.incident.route.push(r.clone());
            changed = true;
        }
    }
    // Until its first message, the card's level is its strongest member's.
    if e.incident.seq == 0 && alert.status == Status::Firing && alert.level > e.incident.level {
        e.incident.level = alert.level;
        changed = true;
    }
    if !changed {
        return None;
    }
    e.updated_at = now;
    let id = alert.incident_id.clone();
    Some(view(g, &id))
}

/// Whether `center` sees incident `id` (its route or an escalation reached it).
pub(super) fn visible(g: &Inner, id: &str, center: &str) -> bool {
    if id.is_empty() {
        return false;
    }
    let on_route = g
        .incidents
        .get(id)
        .is_some_and(|e| e.incident.route.iter().any(|r| r == center));
    on_route
        || g.incident_actions
            .get(id)
            .is_some_and(|r| r.escalations.iter().any(|x| x.to == center))
}

fn view(g: &Inner, id: &str) -> IncidentView {
    let e = &g.incidents[id];
    let rec = g.incident_actions.get(id);
    let mut incident = e.incident.clone();
    incident.members.clear();
    if let Some(r) = rec {
        escalate_message(&mut incident, &r.escalations);
    }
    IncidentView {
        incident_id: id.to_string(),
        open: e.closed_at.is_none(),
        opened_at: ts(e.opened_at),
        updated_at: ts(e.updated_at),
        closed_at: e.closed_at.map(ts),
        route: incident.route.clone(),
        members: e.members.clone(),
        actions: rec
            .map(|r| r.actions.clone())
            .filter(|a| *a != Actions::default()),
        incident,
    }
}

/// Puts the escalations into an incident message: they are listed, and their centers
/// join its route.
fn escalate_message(i: &mut Incident, escalations: &[Escalation]) {
    for x in escalations {
        if !i.route.contains(&x.to) {
            i.route.push(x.to.clone());
        }
    }
    i.escalations = escalations.to_vec();
}

/// Drops closed incidents past retention, records of incidents gone and not touched
/// since, and verdicts older than the noise view looks.
pub(super) fn prune(g: &mut Inner, now: DateTime<Utc>, cutoff: DateTime<Utc>) {
    g.incidents
        .retain(|_, e| e.closed_at.is_none_or(|c| c > cutoff));
    let Inner {
        incidents,
        incident_actions,
        noise,
        ..
    } = g;
    incident_actions
        .retain(|k, r| incidents.contains_key(k) || r.touched.is_some_and(|t| t > cutoff));
    let oldest = now - chrono::Duration::days(NOISE_DAYS);
    while noise.front().is_some_and(|v| v.at < oldest) || noise.len() > MAX_VERDICTS {
        noise.pop_front();
    }
}

impl ConsoleState {
    /// Takes one incident message on its way to the sinks: fills in the console's
    /// escalations (their centers join its route, so every sink hears who was added and
    /// why) and keeps it as the card's latest state.
    pub fn observe_incident(&self, i: &mut Incident) {
        let now = self.now();
        let view = {
            let mut g = self.lock();
            if let Some(r) = g.incident_actions.get(&i.incident_id) {
                escalate_message(i, &r.escalations);
            }
            let closed_by_operator = g
                .incident_actions
                .get(&i.incident_id)
                .and_then(|r| r.actions.closed_at.as_deref())
                .and_then(parse_ts);
            let e = g
                .incidents
                .entry(i.incident_id.clone())
                .or_insert_with(|| IncEntry {
                    incident: i.clone(),
                    members: Vec::new(),
                    opened_at: now,
                    updated_at: now,
                    closed_at: None,
                });
            for m in &i.members {
                if !e.members.contains(&m.alert_id) {
                    e.members.push(m.alert_id.clone());
                }
            }
            e.incident = i.clone();
            e.incident.members.clear();
            e.updated_at = now;
            if e.closed_at.is_none() {
                e.closed_at =
                    closed_by_operator.or_else(|| (i.status == Status::Resolved).then_some(now));
            }
            view(&g, &i.incident_id)
        };
        self.publish_incident(view);
    }

    /// Incidents routed to (or escalated to) `center`: open first, red first, newest.
    pub fn incident_snapshot(&self, center: &str) -> Vec<IncidentView> {
        let g = self.lock();
        let mut v: Vec<IncidentView> = g
            .incidents
            .keys()
            .filter(|id| visible(&g, id, center))
            .map(|id| view(&g, id))
            .collect();
        v.sort_by(|a, b| {
            b.open
                .cmp(&a.open)
                .then(b.incident.level.cmp(&a.incident.level))
                .then(b.opened_at.cmp(&a.opened_at))
                .then(a.incident_id.cmp(&b.incident_id))
        });
        v
    }

    pub fn get_incident(&self, id: &str) -> Option<IncidentView> {
        let g = self.lock();
        g.incidents.contains_key(id).then(|| view(&g, id))
    }

    /// Whether `center` sees incident `id`.
    pub fn incident_visible(&self, id: &str, center: &str) -> bool {
        visible(&self.lock(), id, center)
    }

    /// Can `ev` apply to incident `id` now? The handler asks before producing.
    pub fn check_incident(
        &self,
        id: &str,
        ev: &ActionEvent,
    ) -> Result<Option<IncidentTarget>, Conflict> {
        let g = self.lock();
        let Some(e) = g.incidents.get(id) else {
            return Ok(None);
        };
        let cur = g
            .incident_actions
            .get(id)
            .map(|r| r.actions.clone())
            .unwrap_or_default();
        super::transition(&cur, ev)?;
        let members = e
            .members
            .iter()
            .filter_map(|m| g.episodes.get(m))
            .map(|ep| ep.member())
            .collect();
        Ok(Some(IncidentTarget {
            route: view(&g, id).route,
            level: e.incident.level,
            opened_at: e.opened_at,
            first_ack: cur.acknowledged_at.is_none(),
            members,
        }))
    }

    /// Records one incident action or escalation (idempotent, as [`Self::apply`]) and
    /// carries it to every member held.
    pub(super) fn apply_incident(&self, ev: &ActionEvent) -> Result<(), Conflict> {
        let now = self.now();
        let id = ev.incident_id.clone().unwrap_or_default();
        let changed = {
            let mut g = self.lock();
            let level = g.incidents.get(&id).map(|e| e.incident.level);
            let rec = g.incident_actions.entry(id.clone()).or_default();
            let next = super::transition(&rec.actions, ev)?;
            if ev.action == ActionKind::Escalate {
                let to = ev.to_center.clone().unwrap_or_default();
                if to.is_empty() || rec.escalations.iter().any(|x| x.to == to) {
                    return Err(Conflict::AlreadyEscalated);
                }
                rec.escalations.push(Escalation {
                    to,
                    level: level.unwrap_or(Level::Blue),
                    reason: ev.reason.clone().unwrap_or_default(),
                    at: ev.at.clone(),
                });
            }
            rec.actions = next;
            rec.touched = Some(now);
            if let (ActionKind::Close, Some(Outcome::FalseAlarm)) = (ev.action, ev.outcome) {
                let at = parse_ts(&ev.at).unwrap_or(now);
                for m in &ev.members {
                    g.noise.push_back(Verdict {
                        at,
                        detector: m.detector.clone(),
                        key: m.key.clone(),
                    });
                }
            }
            self.carry_to_members(&mut g, &id, ev, now)
        };
        self.keep_verdicts(ev, now);
        for c in changed {
            match c {
                super::Change::Episode(v) => self.publish(v),
                super::Change::Incident(v) => self.publish_incident(v),
            }
        }
        Ok(())
    }

    /// The incident's card and its members' episodes after an incident action.
    fn carry_to_members(
        &self,
        g: &mut Inner,
        id: &str,
        ev: &ActionEvent,
        now: DateTime<Utc>,
    ) -> Vec<super::Change> {
        let Some(e) = g.incidents.get_mut(id) else {
            return Vec::new();
        };
        e.updated_at = now;
        let closed = (ev.action == ActionKind::Close).then(|| parse_ts(&ev.at).unwrap_or(now));
        if e.closed_at.is_none() {
            e.closed_at = closed;
        }
        let members = e.members.clone();
        let of_incident = g.incident_actions.get(id).map(|r| r.actions.clone());
        let mut out = Vec::new();
        for m in &members {
            let own = g.actions.get(m).map(|(a, _)| a.clone());
            let Some(ep) = g.episodes.get_mut(m) else {
                continue;
            };
            ep.alert.actions = merge_actions(own, of_incident.clone());
            ep.updated_at = now;
            if ep.closed_at.is_none() {
                ep.closed_at = closed;
            }
            out.push(super::Change::Episode(ep.view()));
        }
        out.push(super::Change::Incident(view(g, id)));
        out
    }

    /// Open incidents nobody acknowledged, with since when they wait at their reach.
    pub fn unacknowledged(&self) -> Vec<Overdue> {
        let g = self.lock();
        g.incidents
            .iter()
            .filter(|(_, e)| e.closed_at.is_none())
            .filter_map(|(id, e)| {
                let rec = g.incident_actions.get(id);
                if rec.is_some_and(|r| r.actions.acknowledged_at.is_some()) {
                    return None;
                }
                let last = rec
                    .and_then(|r| r.escalations.last())
                    .and_then(|x| parse_ts(&x.at));
                Some(Overdue {
                    incident_id: id.clone(),
                    level: e.incident.level,
                    route: view(&g, id).route,
                    since: last.map_or(e.opened_at, |l| l.max(e.opened_at)),
                })
            })
            .collect()
    }

    /// The noisiest detectors and keys by false alarms of the last [`NOISE_DAYS`] days,
    /// at most `top` of each.
    pub fn noise(&self, top: usize) -> NoiseView {
        let oldest = self.now() - chrono::Duration::days(NOISE_DAYS);
        let g = self.lock();
        let mut by_detector: HashMap<&str, u64> = HashMap::new();
        let mut by_key: HashMap<&str, (u64, std::collections::BTreeSet<&str>)> = HashMap::new();
        for v in g.noise.iter().filter(|v| v.at >= oldest) {
            *by_detector.entry(&v.detector).or_default() += 1;
            let k = by_key.entry(&v.key).or_default();
            k.0 += 1;
            k.1.insert(&v.detector);
        }
        let rank = |mut rows: Vec<NoiseRow>| {
            rows.sort_by(|a, b| {
                b.false_alarms
                    .cmp(&a.false_alarms)
                    .then(a.name.cmp(&b.name))
            });
            rows.truncate(top);
            rows
        };
        NoiseView {
            days: NOISE_DAYS,
            detectors: rank(
                by_detector
                    .into_iter()
                    .map(|(d, n)| NoiseRow {
                        name: d.to_string(),
                        detectors: Vec::new(),
                        false_alarms: n,
                    })
                    .collect(),
            ),
            keys: rank(
                by_key
                    .into_iter()
                    .map(|(k, (n, ds))| NoiseRow {
                        name: k.to_string(),
                        detectors: ds.into_iter().map(str::to_string).collect(),
                        false_alarms: n,
                    })
                    .collect(),
            ),
        }
    }
}
