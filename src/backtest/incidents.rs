//! Incidents against the labels: is each labelled hazard one incident, how late, and
//! how many messages did it cost (issue #23 item 5).
//!
//! An incident matches a hazard label when one of its member episodes (every alert
//! names its incident) matches the label by the episode rules of [`super`]. A hazard is
//! caught when some incident matches it, and *one incident* when exactly one does; an
//! incident matching no hazard label is a false incident. Delay: from the label's start
//! to the start of the incident's first matching member. Messages per hazard: the
//! incident messages of its matching incidents, against its budget, their level changes
//! + 2 (the opening and the resolve).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use super::{label_matches, quantile, Episode};
use crate::alert::{Alert, Incident};
use crate::simulate::Label;

/// How one hazard label fared as incidents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HazardIncidents {
    pub kind: String,
    pub subject: String,
    pub start: String,
    /// The matching incidents' ids.
    pub incidents: Vec<String>,
    pub delay_s: Option<i64>,
    /// Their incident messages, their level changes, and the alert messages of their
    /// members (what operators would have received episode by episode).
    pub messages: u64,
    pub level_changes: u64,
    pub alert_messages: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IncidentStats {
    pub incidents: u64,
    pub messages: u64,
    pub hazards: u64,
    pub caught: u64,
    /// Hazards matched by exactly one incident.
    pub one_incident: u64,
    /// Hazards whose incident messages exceed their level changes + 2.
    pub over_budget: u64,
    pub false_incidents: u64,
    pub false_per_10k_events: Option<f64>,
    pub delay_median_s: Option<f64>,
    pub delay_p90_s: Option<f64>,
    pub messages_per_hazard_max: u64,
    pub messages_per_hazard_mean: Option<f64>,
    pub alert_messages_per_hazard_mean: Option<f64>,
    pub per_hazard: Vec<HazardIncidents>,
}

/// Per incident: its messages and level changes.
#[derive(Default)]
struct Tally {
    messages: u64,
    level_changes: u64,
    last: Option<crate::alert::Level>,
}

/// Label -> incident -> (earliest matching member start, its alert ids).
type ByLabel<'a> = BTreeMap<usize, BTreeMap<&'a str, (i64, Vec<&'a str>)>>;

/// Scores the incident messages of a run (`alerts` and `episodes` of the same run).
pub fn evaluate(
    alerts: &[Alert],
    incidents: &[Incident],
    episodes: &[Episode],
    labels: &[Label],
    events: u64,
    grace_s: i64,
) -> IncidentStats {
    let tally = tally(incidents);
    let mut of_alert: HashMap<&str, &str> = HashMap::new();
    let mut alert_msgs: HashMap<&str, u64> = HashMap::new();
    for a in alerts {
        if !a.incident_id.is_empty() {
            of_alert.entry(&a.alert_id).or_insert(&a.incident_id);
        }
        *alert_msgs.entry(&a.alert_id).or_default() += 1;
    }
    let (mut by_label, true_incidents) = by_label(episodes, labels, grace_s, &of_alert);
    let mut s = IncidentStats {
        incidents: tally.len() as u64,
        messages: incidents.len() as u64,
        false_incidents: tally
            .keys()
            .filter(|i| !true_incidents.contains(*i))
            .count() as u64,
        ..Default::default()
    };
    s.false_per_10k_events = (events > 0).then(|| s.false_incidents as f64 * 1e4 / events as f64);
    let mut delays = Vec::new();
    let mut per_alert_msgs = Vec::new();
    for (l, label) in labels.iter().enumerate().filter(|(_, l)| l.hazard) {
        let found = by_label.remove(&l).unwrap_or_default();
        let h = hazard(label, &found, &tally, &alert_msgs);
        s.hazards += 1;
        if !found.is_empty() {
            s.caught += 1;
            delays.extend(h.delay_s.map(|d| d as f64));
            per_alert_msgs.push((h.messages as f64, h.alert_messages as f64));
        }
        s.one_incident += u64::from(found.len() == 1);
        s.over_budget += u64::from(h.messages > h.level_changes + 2);
        s.messages_per_hazard_max = s.messages_per_hazard_max.max(h.messages);
        s.per_hazard.push(h);
    }
    s.delay_median_s = quantile(&delays, 0.5);
    s.delay_p90_s = quantile(&delays, 0.9);
    let n = per_alert_msgs.len() as f64;
    if n > 0.0 {
        s.messages_per_hazard_mean = Some(per_alert_msgs.iter().map(|p| p.0).sum::<f64>() / n);
        s.alert_messages_per_hazard_mean =
            Some(per_alert_msgs.iter().map(|p| p.1).sum::<f64>() / n);
    }
    s
}

/// Per incident id: its messages and level changes.
fn tally(incidents: &[Incident]) -> BTreeMap<&str, Tally> {
    let mut tally: BTreeMap<&str, Tally> = BTreeMap::new();
    for i in incidents {
        let t = tally.entry(&i.incident_id).or_default();
        t.messages += 1;
        t.level_changes += u64::from(t.last.is_some_and(|l| l != i.level));
        t.last = Some(i.level);
    }
    tally
}

/// The incidents matching each hazard label (through their member episodes), and every
/// incident that matches one.
fn by_label<'a>(
    episodes: &'a [Episode],
    labels: &[Label],
    grace_s: i64,
    of_alert: &HashMap<&'a str, &'a str>,
) -> (ByLabel<'a>, BTreeSet<&'a str>) {
    let matches = label_matches(episodes, labels, grace_s);
    let mut by_label: ByLabel<'a> = BTreeMap::new();
    let mut true_incidents: BTreeSet<&str> = Default::default();
    for (e, m) in episodes.iter().zip(&matches) {
        let Some(&inc) = of_alert.get(e.alert_id.as_str()) else {
            continue;
        };
        for &l in m.iter().filter(|&&l| labels[l].hazard) {
            true_incidents.insert(inc);
            let slot = by_label
                .entry(l)
                .or_default()
                .entry(inc)
                .or_insert((e.start, Vec::new()));
            slot.0 = slot.0.min(e.start);
            slot.1.push(&e.alert_id);
        }
    }
    (by_label, true_incidents)
}

/// How one hazard label fared: its matching incidents (`found`), their delay and what
/// they and their members cost in messages.
fn hazard(
    label: &Label,
    found: &BTreeMap<&str, (i64, Vec<&str>)>,
    tally: &BTreeMap<&str, Tally>,
    alert_msgs: &HashMap<&str, u64>,
) -> HazardIncidents {
    let start = chrono::DateTime::parse_from_rfc3339(&label.start)
        .map(|t| t.timestamp())
        .unwrap_or(0);
    let mut h = HazardIncidents {
        kind: label.kind.clone(),
        subject: label.subject.clone(),
        start: label.start.clone(),
        incidents: found.keys().map(|i| i.to_string()).collect(),
        delay_s: found.values().map(|(t, _)| t - start).min(),
        messages: 0,
        level_changes: 0,
        alert_messages: 0,
    };
    for (inc, (_, members)) in found {
        let t = &tally[inc];
        h.messages += t.messages;
        h.level_changes += t.level_changes;
        let mut ids = members.clone();
        ids.sort_unstable();
        ids.dedup();
        h.alert_messages += ids.iter().map(|a| alert_msgs[a]).sum::<u64>();
    }
    h
}

impl IncidentStats {
    /// The lines `riskstream backtest` prints under its table.
    pub fn table(&self) -> String {
        use std::fmt::Write;
        let f = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.1}"));
        let mut o = String::new();
        let _ = writeln!(
            o,
            "\nincidents: {} ({} messages); hazards {}: caught {}, one incident each {}, \
             over message budget {}; false incidents {} ({} per 10k events); delay p50 {} s, \
             p90 {} s; messages per hazard mean {} (max {}), alert messages per hazard mean {}",
            self.incidents,
            self.messages,
            self.hazards,
            self.caught,
            self.one_incident,
            self.over_budget,
            self.false_incidents,
            self.false_per_10k_events
                .map_or("-".into(), |v| format!("{v:.3}")),
            f(self.delay_median_s),
            f(self.delay_p90_s),
            f(self.messages_per_hazard_mean),
            self.messages_per_hazard_max,
            f(self.alert_messages_per_hazard_mean),
        );
        for h in &self.per_hazard {
            let _ = writeln!(
                o,
                "  {:<15} {:<34} {} -> {} incident(s), {} msgs (level changes {}), {} alert msgs{}",
                h.kind,
                h.subject,
                h.start,
                h.incidents.len(),
                h.messages,
                h.level_changes,
                h.alert_messages,
                h.delay_s.map_or(String::new(), |d| format!(", +{d}s")),
            );
        }
        o
    }
}
