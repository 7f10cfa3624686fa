//! The incident state machine: alert messages in, incident messages out.
//!
//! ```text
//!            member opens              last open member resolves
//!   (none) ───────────────► Active ◄──────────────────────────────► Quiet ──► resolved,
//!                            │ ▲      a member opens (joins)          │      forgotten
//!                            └─┘ member opens / changes / resolves    │ `join_gap` passed
//! ```
//!
//! O(1) per alert: a lookup by `alert_id` for a known member, else at most two group-key
//! lookups (the county's open township incidents for a county alert: one per township
//! of the county at most), and one rebuild of the incident's title over its members
//! (capped at `max_members`).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat};
use serde::{Deserialize, Serialize};

use super::group::{group_of, Group, Tier};
use super::title::{evidence_line, merge_route, title, trend};
use super::{Incident, IncidentConfig, Member};
use crate::alert::{Alert, Level, Status};
use crate::clock::Clock;
use crate::decode::Stream;
use crate::regions::Regions;
use crate::state::{Change, StateError};

/// One open incident: its durable changelog record.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    /// The incident as its next message will show it (`seq` is the last published one).
    view: Incident,
    stream: Stream,
    /// Group keys that lead here: the group it opened with, then every group that joined
    /// through the county rule (a county, its other townships).
    keys: Vec<String>,
    /// A township incident's county: that county's alerts may join it.
    county: Option<String>,
    /// The level its last message showed.
    published: Level,
    /// Event time of its last member message (s).
    last_activity: i64,
    /// Since when none of its members is open (s): it resolves `join_gap` later.
    quiet_since: Option<i64>,
}

pub struct IncidentGrouper {
    cfg: IncidentConfig,
    regions: Arc<Regions>,
    clock: Arc<dyn Clock>,
    incidents: HashMap<String, Record>,
    /// Group key -> its open incident.
    by_group: HashMap<String, String>,
    /// County code -> the open township incidents under it, for the county's alerts.
    by_county: HashMap<String, Vec<String>>,
    /// Open member `alert_id` -> its incident.
    by_alert: HashMap<String, String>,
    /// Per stream, (resolve time, incident) of the incidents without open members.
    quiet: [BTreeSet<(i64, String)>; 3],
    /// Per stream, the watermark last seen (s).
    clocks: [Option<i64>; 3],
    /// Incidents a member message changed in the current step, with its event time:
    /// settled together at the step's end (see [`Self::on_alerts`]).
    touched: Vec<(String, i64)>,
    tracking: bool,
    dirty: [Vec<String>; 3],
}

fn secs(ts: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(ts).ok().map(|t| t.timestamp())
}

impl IncidentGrouper {
    pub fn new(cfg: IncidentConfig, regions: Arc<Regions>, clock: Arc<dyn Clock>) -> Self {
        Self {
            cfg,
            regions,
            clock,
            incidents: HashMap::new(),
            by_group: HashMap::new(),
            by_county: HashMap::new(),
            by_alert: HashMap::new(),
            quiet: Default::default(),
            clocks: [None; 3],
            touched: Vec::new(),
            tracking: false,
            dirty: Default::default(),
        }
    }

    /// Open incidents (the `riskstream_open_incidents` gauge).
    pub fn open_count(&self) -> usize {
        self.incidents.len()
    }

    /// Durable state from now on: remember changed incidents for [`Self::changes`].
    pub fn track_changes(&mut self) {
        self.tracking = true;
    }

    fn mark(&mut self, stream: Stream, id: &str) {
        if self.tracking {
            self.dirty[stream.index()].push(id.to_string());
        }
    }

    /// Takes the alert messages of one pipeline step (in publishing order): stamps each
    /// one's `incident_id` and pushes the incident messages they cause to `out`.
    ///
    /// The outcome must not depend on the order of one step's alerts: a watermark step
    /// resolves and escalates episodes in the policy's map order, and closes windows
    /// (a county's and a township's `rate_spike`) in a detector's. So the alerts are
    /// taken by (event time, `alert_id`, `seq`), which decides who founds an incident
    /// and who joins it, and members change first while each changed incident settles
    /// once, in id order, at the end (two members resolving together are one change,
    /// not a level drop and then a quiet incident).
    pub fn on_alerts(&mut self, alerts: &mut [Alert], out: &mut Vec<Incident>) {
        let mut order: Vec<(i64, usize)> = alerts
            .iter()
            .enumerate()
            .map(|(i, a)| (secs(&a.first_event_ts).unwrap_or(i64::MIN), i))
            .collect();
        order.sort_unstable_by(|(ta, ia), (tb, ib)| {
            let (a, b) = (&alerts[*ia], &alerts[*ib]);
            (ta, &a.alert_id, a.seq).cmp(&(tb, &b.alert_id, b.seq))
        });
        for (_, i) in order {
            self.on_alert(&mut alerts[i], out);
        }
        let mut touched = std::mem::take(&mut self.touched);
        // Latest time per incident first, so dedup keeps it.
        touched.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        touched.dedup_by(|a, b| a.0 == b.0);
        for (id, t) in touched {
            self.settle(&id, t, out);
        }
    }

    fn on_alert(&mut self, a: &mut Alert, out: &mut Vec<Incident>) {
        let Some(stream) = Stream::parse(&a.stream) else {
            return;
        };
        let t = self.time_of(stream, a);
        let id = match self.by_alert.get(&a.alert_id) {
            Some(id) => id.clone(),
            None => {
                let g = group_of(a, &self.regions);
                match self.find(stream, &g, t, out) {
                    Some(id) => {
                        self.alias(&id, &g);
                        id
                    }
                    // A resolve of an episode no incident knows (its opening message was
                    // before incidents existed): nothing to open, but it still names
                    // the incident it would have had.
                    None if a.status == Status::Resolved => {
                        a.incident_id = new_id(&g, a, t);
                        return;
                    }
                    None => self.open(stream, g, a, t),
                }
            }
        };
        a.incident_id = id.clone();
        self.add_member(&id, a, t);
        self.touched.push((id, t));
    }

    /// Event time of `stream` reached `w`: incidents quiet for `join_gap` resolve.
    pub fn on_watermark(&mut self, stream: Stream, w: i64, out: &mut Vec<Incident>) {
        self.seed_watermark(stream, w);
        let gap = self.gap();
        let due: Vec<String> = self.quiet[stream.index()]
            .iter()
            .take_while(|(since, _)| w - since >= gap)
            .map(|(_, id)| id.clone())
            .collect();
        for id in due {
            self.resolve(&id, out);
        }
    }

    /// Restore: `stream`'s watermark was restored at `w`.
    pub fn seed_watermark(&mut self, stream: Stream, w: i64) {
        let c = &mut self.clocks[stream.index()];
        *c = Some(c.map_or(w, |c| c.max(w)));
    }

    fn gap(&self) -> i64 {
        self.cfg.join_gap.as_secs() as i64
    }

    /// An alert's event time: its episode's start for an opening, else the stream's
    /// watermark (its later messages carry no event time of their own).
    fn time_of(&self, stream: Stream, a: &Alert) -> i64 {
        let first = secs(&a.first_event_ts).unwrap_or(i64::MIN);
        self.clocks[stream.index()].map_or(first, |c| c.max(first))
    }

    /// The open incident `g`'s alert joins at `t`, if any. A quiet incident past its gap
    /// resolves here (the watermark may not have passed its due time yet).
    fn find(
        &mut self,
        stream: Stream,
        g: &Group,
        t: i64,
        out: &mut Vec<Incident>,
    ) -> Option<String> {
        let mut keys = vec![g.key.clone()];
        if let Some(Tier::Township { county }) = &g.tier {
            keys.push(Group::county_key(stream.as_str(), county));
        }
        for k in keys {
            if let Some(id) = self.by_group.get(&k).cloned() {
                if self.alive(&id, t, out) {
                    return Some(id);
                }
            }
        }
        if g.tier != Some(Tier::County) {
            return None;
        }
        let county = g.subject.get("region")?.as_str()?;
        let candidates = self.by_county.get(county).cloned().unwrap_or_default();
        let mut best: Option<(i64, String)> = None;
        for id in candidates {
            if self.alive(&id, t, out) {
                let last = self.incidents[&id].last_activity;
                if best.as_ref().is_none_or(|(b, bid)| (last, &id) > (*b, bid)) {
                    best = Some((last, id));
                }
            }
        }
        best.map(|(_, id)| id)
    }

    /// Whether incident `id` still takes members at `t`; resolves it when its gap is over.
    fn alive(&mut self, id: &str, t: i64, out: &mut Vec<Incident>) -> bool {
        let Some(r) = self.incidents.get(id) else {
            return false;
        };
        if r.quiet_since.is_some_and(|q| t - q >= self.gap()) {
            self.resolve(id, out);
            return false;
        }
        true
    }

    /// Group `g` leads to incident `id` from now on.
    fn alias(&mut self, id: &str, g: &Group) {
        if self.by_group.contains_key(&g.key) {
            return;
        }
        self.by_group.insert(g.key.clone(), id.to_string());
        if let Some(r) = self.incidents.get_mut(id) {
            r.keys.push(g.key.clone());
        }
    }

    /// Opens a new incident for `a`, which becomes its first member.
    fn open(&mut self, stream: Stream, g: Group, a: &Alert, t: i64) -> String {
        let id = new_id(&g, a, t);
        let county = match &g.tier {
            Some(Tier::Township { county }) => Some(county.clone()),
            _ => None,
        };
        let rec = Record {
            view: Incident {
                incident_id: id.clone(),
                status: Status::Firing,
                level: a.level,
                stream: a.stream.clone(),
                subject: g.subject,
                region_name: a.region_name.clone(),
                title: String::new(),
                route: Vec::new(),
                members: Vec::new(),
                dropped_members: 0,
                first_event_ts: a.first_event_ts.clone(),
                detected_at: String::new(),
                seq: 0,
                escalations: Vec::new(),
            },
            stream,
            keys: vec![g.key],
            county,
            published: a.level,
            last_activity: t,
            quiet_since: None,
        };
        self.index(&id, &rec);
        self.incidents.insert(id.clone(), rec);
        id
    }

    /// Puts `a`'s latest state into its incident's member list.
    fn add_member(&mut self, id: &str, a: &Alert, t: i64) {
        let max = self.cfg.max_members;
        let city = self.regions.city_code().to_string();
        let Some(r) = self.incidents.get_mut(id) else {
            return;
        };
        r.last_activity = r.last_activity.max(t);
        merge_route(&mut r.view.route, &a.route, &city);
        let score = a.evidence.score.abs();
        match r.view.members.iter_mut().find(|m| m.alert_id == a.alert_id) {
            Some(m) => {
                m.level = a.level;
                m.status = a.status;
                m.title = a.title.clone();
                if score >= m.score {
                    m.score = score;
                    m.evidence = evidence_line(&a.evidence);
                    m.trend = trend(a).or(m.trend.take());
                }
            }
            None => r.view.members.push(member(a)),
        }
        if a.status == Status::Firing {
            self.by_alert.insert(a.alert_id.clone(), id.to_string());
        } else {
            self.by_alert.remove(&a.alert_id);
        }
        cap_members(&mut r.view, max);
    }

    /// Level, quiet time, title after a member message at `t`; publishes when the level
    /// moved or the incident is new.
    fn settle(&mut self, id: &str, t: i64, out: &mut Vec<Incident>) {
        let Some(r) = self.incidents.get_mut(id) else {
            return;
        };
        let open = r
            .view
            .members
            .iter()
            .filter(|m| m.status == Status::Firing)
            .map(|m| m.level)
            .max();
        let q = &mut self.quiet[r.stream.index()];
        match open {
            Some(level) => {
                r.view.level = level;
                if let Some(since) = r.quiet_since.take() {
                    q.remove(&(since, id.to_string()));
                }
            }
            None if r.quiet_since.is_none() => {
                r.quiet_since = Some(t);
                q.insert((t, id.to_string()));
            }
            None => {}
        }
        let subject = &r.view.subject;
        let site = ["site_name", "site_id"]
            .into_iter()
            .find_map(|k| subject.get(k).and_then(|v| v.as_str()));
        r.view.title = title(&r.view.stream, site, &r.view.members);
        if r.view.seq == 0 || r.view.level != r.published {
            r.published = r.view.level;
            r.view.seq += 1;
            r.view.detected_at = self
                .clock
                .now()
                .to_rfc3339_opts(SecondsFormat::Millis, true);
            out.push(r.view.clone());
        }
        let stream = r.stream;
        self.mark(stream, id);
    }

    /// Resolves and forgets incident `id`.
    fn resolve(&mut self, id: &str, out: &mut Vec<Incident>) {
        let Some(mut r) = self.incidents.remove(id) else {
            return;
        };
        self.unindex(id, &r);
        r.view.status = Status::Resolved;
        r.view.seq += 1;
        r.view.detected_at = self
            .clock
            .now()
            .to_rfc3339_opts(SecondsFormat::Millis, true);
        out.push(r.view);
        self.mark(r.stream, id);
    }

    fn index(&mut self, id: &str, r: &Record) {
        for k in &r.keys {
            self.by_group
                .entry(k.clone())
                .or_insert_with(|| id.to_string());
        }
        if let Some(c) = &r.county {
            self.by_county
                .entry(c.clone())
                .or_default()
                .push(id.to_string());
        }
        for m in r.view.members.iter().filter(|m| m.status == Status::Firing) {
            self.by_alert.insert(m.alert_id.clone(), id.to_string());
        }
        if let Some(since) = r.quiet_since {
            self.quiet[r.stream.index()].insert((since, id.to_string()));
        }
    }

    fn unindex(&mut self, id: &str, r: &Record) {
        for k in &r.keys {
            if self.by_group.get(k).is_some_and(|v| v == id) {
                self.by_group.remove(k);
            }
        }
        if let Some(c) = &r.county {
            if let Some(v) = self.by_county.get_mut(c) {
                v.retain(|x| x != id);
                if v.is_empty() {
                    self.by_county.remove(c);
                }
            }
        }
        for m in &r.view.members {
            if self.by_alert.get(&m.alert_id).is_some_and(|v| v == id) {
                self.by_alert.remove(&m.alert_id);
            }
        }
        if let Some(since) = r.quiet_since {
            self.quiet[r.stream.index()].remove(&(since, id.to_string()));
        }
    }

    /// The changelog records (`i:<incident_id>`) of `stream`'s incidents changed since
    /// the last call; a resolved incident is a tombstone.
    pub fn changes(&mut self, stream: Stream, out: &mut Vec<Change>) {
        let mut ids = std::mem::take(&mut self.dirty[stream.index()]);
        ids.sort_unstable();
        ids.dedup();
        for id in ids {
            // JSON like episodes: members' subjects are self-describing.
            let value = self
                .incidents
                .get(&id)
                .map(|r| serde_json::to_vec(r).expect("incidents serialize"));
            out.push(Change {
                key: format!("i:{id}"),
                value,
            });
        }
    }

    /// Puts back one `i:` record from the changelog (a compacted log may still hold
    /// several values of one key: the last one wins).
    pub fn restore(&mut self, key: &str, value: Option<&[u8]>) -> Result<(), StateError> {
        let Some(id) = key.strip_prefix("i:") else {
            return Err(StateError::corrupt(key, "not an incident record"));
        };
        let new = value
            .map(serde_json::from_slice::<Record>)
            .transpose()
            .map_err(|e| StateError::corrupt(key, e))?;
        if let Some(old) = self.incidents.remove(id) {
            self.unindex(id, &old);
        }
        if let Some(r) = new {
            self.index(id, &r);
            self.incidents.insert(id.to_string(), r);
        }
        Ok(())
    }
}

#[cfg(test)]
impl IncidentGrouper {
    /// Entries in the group, county, member and quiet indexes.
    pub(super) fn index_sizes(&self) -> [usize; 4] {
        [
            self.by_group.len(),
            self.by_county.len(),
            self.by_alert.len(),
            self.quiet.iter().map(|q| q.len()).sum(),
        ]
    }
}

/// `<group key>:<first event time, epoch s>`.
fn new_id(g: &Group, a: &Alert, t: i64) -> String {
    format!("{}:{}", g.key, secs(&a.first_event_ts).unwrap_or(t))
}

fn member(a: &Alert) -> Member {
    let field = |k: &str| {
        a.subject
            .get(k)
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    Member {
        alert_id: a.alert_id.clone(),
        detector: a.detector.clone(),
        level: a.level,
        status: a.status,
        title: a.title.clone(),
        evidence: evidence_line(&a.evidence),
        score: a.evidence.score.abs(),
        sensor_id: field("sensor_id"),
        kind: field("kind"),
        trend: trend(a),
    }
}

/// Drops the oldest resolved members beyond `max` (open ones always stay).
fn cap_members(view: &mut Incident, max: usize) {
    while view.members.len() > max {
        let Some(i) = view
            .members
            .iter()
            .position(|m| m.status == Status::Resolved)
        else {
            return;
        };
        view.members.remove(i);
        view.dropped_members += 1;
    }
}
