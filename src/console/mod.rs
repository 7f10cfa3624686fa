//! The operators' web console (issue 8): command centers watch their open episodes live
//! and close the loop (acknowledge, dispatch, close with an outcome).
//!
//! ```text
//!  pipeline.publish_all ──observe(alert)──► ConsoleState ──broadcast──► SSE clients
//!        ▲ alert.actions filled here            ▲ apply(ActionEvent)
//!        │                                      │
//!  POST /api/episodes/{id}/ack ─► actions topic (Kafka, awaited) ─► actions consumer
//! ```
//!
//! [`ConsoleState`] owns, in memory, each episode's latest [`Alert`] and the operators'
//! [`Actions`] on it. Memory is bounded: closed episodes (resolved by the detector or
//! closed by an operator) are dropped `closed_retention` (24 h) of wall time after they
//! closed, open ones are capped at `max_open` (the least recently updated go first), and
//! action records are dropped with their episode or, for episodes never seen, after the
//! same retention. Actions are durable on the actions topic, which every instance reads
//! from the start, so instances agree and a restart loses nothing.

pub mod actions;
pub mod config;
pub mod escalate;
mod incidents;
mod kpi;
pub mod server;
pub mod shelve;
pub mod verdicts;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

pub use config::{AckLimits, ConsoleConfig, TokenConfig};
pub use incidents::{member_key, IncidentTarget, IncidentView, MemberRef, NoiseView, Overdue};

use crate::alert::{Actions, Alert, Status};
use crate::clock::Clock;

/// What an operator did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    Ack,
    Dispatch,
    Close,
    /// Not an operator's: the console's escalation of an incident nobody acknowledged in
    /// time (`to_center` joins its route). Never accepted from HTTP.
    Escalate,
}

impl ActionKind {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ack" => Some(Self::Ack),
            "dispatch" => Some(Self::Dispatch),
            "close" => Some(Self::Close),
            _ => None,
        }
    }
}

/// How an episode ended, in the operator's judgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Handled,
    FalseAlarm,
    Duplicate,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Handled => "handled",
            Outcome::FalseAlarm => "false_alarm",
            Outcome::Duplicate => "duplicate",
        }
    }
}

/// One message of the actions topic: on an episode (key = alert_id) or, when
/// `incident_id` is set, on an incident and all its members (key = incident_id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionEvent {
    /// The episode acted on; empty for an incident action.
    #[serde(default)]
    pub alert_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incident_id: Option<String>,
    pub action: ActionKind,
    /// Code of the command center whose token acted.
    pub by_center: String,
    #[serde(default)]
    pub note: Option<String>,
    #[serde(default)]
    pub outcome: Option<Outcome>,
    /// RFC 3339, UTC.
    pub at: String,
    /// `escalate`: the center that joins the route, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_center: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// An incident action: its members when it was taken, so the verdict (a false alarm
    /// of which detectors and keys) survives replay even before the episodes are seen.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<MemberRef>,
}

impl ActionEvent {
    /// The actions topic's key: the incident or the episode acted on.
    pub fn key(&self) -> &str {
        self.incident_id.as_deref().unwrap_or(&self.alert_id)
    }
}

/// Why an action cannot apply to an episode's current state (HTTP 409 or 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Conflict {
    #[error("the episode is already closed")]
    AlreadyClosed,
    #[error("the episode is already acknowledged")]
    AlreadyAcknowledged,
    #[error("dispatch needs a note naming who was sent")]
    MissingNote,
    #[error("close needs an outcome: handled, false_alarm or duplicate")]
    MissingOutcome,
    #[error("the incident already reached that command center")]
    AlreadyEscalated,
}

/// The action state machine: `(none) -ack-> acknowledged -dispatch*-> ... -close-> closed`.
/// Dispatch and close acknowledge an unacknowledged episode too (someone clearly saw it);
/// a closed episode takes no more actions; dispatch may be repeated (the latest wins).
pub fn transition(a: &Actions, ev: &ActionEvent) -> Result<Actions, Conflict> {
    if a.closed_outcome.is_some() {
        return Err(Conflict::AlreadyClosed);
    }
    let mut n = a.clone();
    let ack = |n: &mut Actions| {
        if n.acknowledged_at.is_none() {
            n.acknowledged_at = Some(ev.at.clone());
            n.acknowledged_by = Some(ev.by_center.clone());
        }
    };
    match ev.action {
        ActionKind::Ack => {
            if a.acknowledged_at.is_some() {
                return Err(Conflict::AlreadyAcknowledged);
            }
            ack(&mut n);
        }
        // Acknowledging in time is what keeps an incident where it is.
        ActionKind::Escalate if a.acknowledged_at.is_some() => {
            return Err(Conflict::AlreadyAcknowledged)
        }
        ActionKind::Escalate => {}
        ActionKind::Dispatch => {
            let note = ev.note.as_deref().map(str::trim).unwrap_or_default();
            if note.is_empty() {
                return Err(Conflict::MissingNote);
            }
            ack(&mut n);
            n.dispatched_to = Some(note.to_string());
            n.dispatched_at = Some(ev.at.clone());
            n.dispatched_by = Some(ev.by_center.clone());
        }
        ActionKind::Close => {
            let Some(o) = ev.outcome else {
                return Err(Conflict::MissingOutcome);
            };
            ack(&mut n);
            n.closed_outcome = Some(o.as_str().to_string());
            n.closed_at = Some(ev.at.clone());
            n.closed_by = Some(ev.by_center.clone());
        }
    }
    Ok(n)
}

/// Why a write was refused (401 for the first two, 403 for the last).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    MissingToken,
    UnknownToken,
    OutsideCenter,
}

impl Denied {
    pub fn as_str(self) -> &'static str {
        match self {
            Denied::MissingToken => "missing_token",
            Denied::UnknownToken => "unknown_token",
            Denied::OutsideCenter => "outside_center",
        }
    }

    pub fn status(self) -> u16 {
        match self {
            Denied::MissingToken | Denied::UnknownToken => 401,
            Denied::OutsideCenter => 403,
        }
    }
}

/// Tokens -> their command center; the city's token may act on every episode.
#[derive(Clone, Default)]
pub struct Tokens {
    by_token: HashMap<String, String>,
    city: String,
}

impl Tokens {
    pub fn new(list: &[TokenConfig], city: &str) -> Self {
        Self {
            by_token: list
                .iter()
                .map(|t| (t.token.clone(), t.center.clone()))
                .collect(),
            city: city.to_string(),
        }
    }

    /// The center a token acts for.
    pub fn center(&self, token: Option<&str>) -> Result<&str, Denied> {
        let t = token.ok_or(Denied::MissingToken)?;
        self.by_token
            .get(t)
            .map(String::as_str)
            .ok_or(Denied::UnknownToken)
    }

    /// May `token` act on an episode with this route? Returns the acting center.
    pub fn authorize(&self, token: Option<&str>, route: &[String]) -> Result<String, Denied> {
        let c = self.center(token)?;
        if c == self.city || route.iter().any(|r| r == c) {
            Ok(c.to_string())
        } else {
            Err(Denied::OutsideCenter)
        }
    }

    /// May `token` read center `center`'s view? Its own center and those below it.
    pub fn may_read(&self, token: Option<&str>, center: &str) -> Result<(), Denied> {
        let c = self.center(token)?;
        if c == self.city || center.starts_with(c) {
            Ok(())
        } else {
            Err(Denied::OutsideCenter)
        }
    }
}

/// One episode as the console shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EpisodeView {
    pub alert_id: String,
    /// Firing and not closed by an operator.
    pub open: bool,
    /// When the console first saw the episode (wall time, RFC 3339): the age shown and the
    /// start of time-to-acknowledge.
    pub opened_at: String,
    pub updated_at: String,
    pub closed_at: Option<String>,
    /// The latest alert message, with `actions` filled in.
    pub alert: Alert,
}

struct Entry {
    alert: Alert,
    opened_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    closed_at: Option<DateTime<Utc>>,
    /// The highest |evidence.score| of the episode's messages: what a false-alarm verdict
    /// charges to the key's budget.
    peak: f64,
}

impl Entry {
    fn open(&self) -> bool {
        self.closed_at.is_none()
    }

    /// The episode as a verdict on it records it.
    fn member(&self) -> MemberRef {
        MemberRef {
            alert_id: self.alert.alert_id.clone(),
            detector: self.alert.detector.clone(),
            key: member_key(&self.alert),
            score: Some(self.peak),
        }
    }

    fn view(&self) -> EpisodeView {
        EpisodeView {
            alert_id: self.alert.alert_id.clone(),
            open: self.open(),
            opened_at: ts(self.opened_at),
            updated_at: ts(self.updated_at),
            closed_at: self.closed_at.map(ts),
            alert: self.alert.clone(),
        }
    }
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn parse_ts(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// One change the SSE clients hear about.
#[derive(Debug, Clone)]
pub enum Change {
    Episode(EpisodeView),
    Incident(IncidentView),
}

#[derive(Default)]
struct Inner {
    episodes: HashMap<String, Entry>,
    /// Incidents by id: the cards operators act on (`incidents.rs`).
    incidents: HashMap<String, incidents::IncEntry>,
    /// Actions and escalations by incident id, also of incidents not seen (yet).
    incident_actions: HashMap<String, incidents::IncRecord>,
    /// False-alarm verdicts of the last 7 days, oldest first (the noise view).
    noise: std::collections::VecDeque<incidents::Verdict>,
    /// Actions by alert id, also of episodes not seen (yet): the topic is read from the
    /// start, possibly before the pipeline re-creates the episode. Value: (actions, last touched).
    actions: HashMap<String, (Actions, DateTime<Utc>)>,
    last_prune: Option<DateTime<Utc>>,
}

/// The console's shared state: episodes, actions, and a broadcast of every change.
pub struct ConsoleState {
    clock: Arc<dyn Clock>,
    retention: chrono::Duration,
    max_open: usize,
    inner: Mutex<Inner>,
    updates: broadcast::Sender<Arc<Change>>,
    /// Shelved and out-of-service points and sites, shared with the pipeline.
    shelves: Arc<crate::alert::shelve::Shelves>,
    /// The pipeline's alarm KPIs, once a pipeline is attached (`/api/kpi`, kpi.rs).
    kpi: std::sync::OnceLock<kpi::SharedKpi>,
    /// False-alarm verdicts for the detectors' budgets (`verdicts.rs`).
    verdicts: verdicts::VerdictLog,
}

/// What [`ConsoleState::check`] found: the facts the HTTP handler needs before producing.
#[derive(Debug, Clone)]
pub struct Target {
    pub route: Vec<String>,
    pub level: crate::alert::Level,
    pub detector: String,
    pub opened_at: DateTime<Utc>,
    /// Whether the action will be the episode's first acknowledgement.
    pub first_ack: bool,
    /// The episode as a close records it (`ActionEvent::members`).
    pub member: MemberRef,
}

impl ConsoleState {
    pub fn new(clock: Arc<dyn Clock>, cfg: &ConsoleConfig) -> Self {
        // Slow SSE clients that fall this far behind get a fresh snapshot instead.
        let (updates, _) = broadcast::channel(1024);
        Self {
            clock,
            retention: chrono::Duration::from_std(cfg.closed_retention)
                .unwrap_or(chrono::Duration::hours(24)),
            max_open: cfg.max_open,
            inner: Mutex::new(Inner::default()),
            updates,
            shelves: Arc::default(),
            kpi: Default::default(),
            verdicts: verdicts::VerdictLog::default(),
        }
    }

    /// The false-alarm verdicts the pipeline charges to the detectors' budgets.
    pub fn verdicts(&self) -> &verdicts::VerdictLog {
        &self.verdicts
    }

    /// A close as `false_alarm` is a verdict on each member episode (with its peak
    /// score) for the budget of its detector and key. Called once per applied action.
    fn keep_verdicts(&self, ev: &ActionEvent, now: DateTime<Utc>) {
        if ev.action != ActionKind::Close || ev.outcome != Some(Outcome::FalseAlarm) {
            return;
        }
        let at = parse_ts(&ev.at).unwrap_or(now);
        for m in &ev.members {
            let v = m
                .score
                .and_then(|s| crate::detect::tail::Verdict::of_episode(&m.alert_id, s));
            if let Some(v) = v {
                self.verdicts.push(v, at, now);
            }
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// The shelves table: the pipeline screens signals through it (`with_shelves`).
    pub fn shelves(&self) -> Arc<crate::alert::shelve::Shelves> {
        self.shelves.clone()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
        self.updates.subscribe()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("console state lock")
    }

    fn publish(&self, v: EpisodeView) {
        // No receiver is fine: nobody is watching.
        let _ = self.updates.send(Arc::new(Change::Episode(v)));
    }

    fn publish_incident(&self, v: IncidentView) {
        let _ = self.updates.send(Arc::new(Change::Incident(v)));
    }

    /// Takes one alert message on its way to the sinks: fills in `alert.actions` from the
    /// recorded actions and keeps the alert as the episode's latest state.
    pub fn observe(&self, alert: &mut Alert) {
        let now = self.now();
        let (view, incident) = {
            let mut g = self.lock();
            let own = g.actions.get(&alert.alert_id).map(|(a, _)| a.clone());
            let of_incident = g
                .incident_actions
                .get(&alert.incident_id)
                .map(|r| r.actions.clone());
            alert.actions = incidents::merge_actions(own, of_incident);
            let incident = incidents::join(&mut g, alert, now);
            let e = g
                .episodes
                .entry(alert.alert_id.clone())
                .or_insert_with(|| Entry {
                    alert: alert.clone(),
                    opened_at: now,
                    updated_at: now,
                    closed_at: None,
                    peak: 0.0,
                });
            e.alert = alert.clone();
            e.updated_at = now;
            e.peak = e.peak.max(alert.evidence.score.abs());
            let operator_closed = alert
                .actions
                .as_ref()
                .and_then(|a| a.closed_at.as_deref())
                .and_then(parse_ts);
            if e.closed_at.is_none() {
                if let Some(t) = operator_closed {
                    e.closed_at = Some(t);
                } else if alert.status == Status::Resolved {
                    e.closed_at = Some(now);
                }
            }
            let v = e.view();
            self.prune_locked(&mut g, now, false);
            (v, incident)
        };
        self.publish(view);
        if let Some(i) = incident {
            self.publish_incident(i);
        }
    }

    /// Can `kind` apply to episode `alert_id` now? The handler asks before producing.
    pub fn check(&self, alert_id: &str, ev: &ActionEvent) -> Result<Option<Target>, Conflict> {
        let g = self.lock();
        let Some(e) = g.episodes.get(alert_id) else {
            return Ok(None);
        };
        let cur = g
            .actions
            .get(alert_id)
            .map(|(a, _)| a.clone())
            .unwrap_or_default();
        transition(&cur, ev)?;
        Ok(Some(Target {
            route: e.alert.route.clone(),
            level: e.alert.level,
            detector: e.alert.detector.clone(),
            opened_at: e.opened_at,
            first_ack: cur.acknowledged_at.is_none(),
            member: e.member(),
        }))
    }

    /// Records one action (from the HTTP handler after the broker acknowledged it, or from
    /// the actions topic). Idempotent: an action that no longer applies is refused and
    /// changes nothing, so the same event seen twice counts once.
    pub fn apply(&self, ev: &ActionEvent) -> Result<(), Conflict> {
        if ev.incident_id.is_some() {
            return self.apply_incident(ev);
        }
        let now = self.now();
        let view = {
            let mut g = self.lock();
            let cur = g
                .actions
                .get(&ev.alert_id)
                .map(|(a, _)| a.clone())
                .unwrap_or_default();
            let next = transition(&cur, ev)?;
            let closed = next.closed_at.as_deref().and_then(parse_ts);
            g.actions.insert(ev.alert_id.clone(), (next.clone(), now));
            let v = g.episodes.get_mut(&ev.alert_id).map(|e| {
                e.alert.actions = Some(next);
                e.updated_at = now;
                if e.closed_at.is_none() && ev.action == ActionKind::Close {
                    e.closed_at = closed.or(Some(now));
                }
                e.view()
            });
            self.prune_locked(&mut g, now, false);
            v
        };
        self.keep_verdicts(ev, now);
        if let Some(v) = view {
            self.publish(v);
        }
        Ok(())
    }

    /// Episodes routed to `center`: open ones first, then by level (red first), then newest.
    pub fn snapshot(&self, center: &str) -> Vec<EpisodeView> {
        let now = self.now();
        let mut g = self.lock();
        self.prune_locked(&mut g, now, false);
        let mut v: Vec<&Entry> = g
            .episodes
            .values()
            .filter(|e| {
                e.alert.route.iter().any(|r| r == center)
                    || incidents::visible(&g, &e.alert.incident_id, center)
            })
            .collect();
        v.sort_by(|a, b| {
            b.open()
                .cmp(&a.open())
                .then(b.alert.level.cmp(&a.alert.level))
                .then(b.opened_at.cmp(&a.opened_at))
                .then(a.alert.alert_id.cmp(&b.alert.alert_id))
        });
        v.into_iter().map(Entry::view).collect()
    }

    pub fn get(&self, alert_id: &str) -> Option<EpisodeView> {
        self.lock().episodes.get(alert_id).map(Entry::view)
    }

    /// (open, closed) episodes held.
    pub fn counts(&self) -> (usize, usize) {
        let g = self.lock();
        let open = g.episodes.values().filter(|e| e.open()).count();
        (open, g.episodes.len() - open)
    }

    /// Drops closed episodes past retention and the oldest open ones past the cap. Runs
    /// at most every 10 s of wall time unless forced (each run is O(episodes)).
    fn prune_locked(&self, g: &mut Inner, now: DateTime<Utc>, force: bool) {
        let over_cap = g.episodes.len() > self.max_open;
        if !force
            && !over_cap
            && g.last_prune
                .is_some_and(|t| now - t < chrono::Duration::seconds(10))
        {
            return;
        }
        g.last_prune = Some(now);
        let cutoff = now - self.retention;
        g.episodes
            .retain(|_, e| e.closed_at.is_none_or(|c| c > cutoff));
        let open = g.episodes.values().filter(|e| e.open()).count();
        if open > self.max_open {
            let mut ages: Vec<(DateTime<Utc>, String)> = g
                .episodes
                .iter()
                .filter(|(_, e)| e.open())
                .map(|(k, e)| (e.updated_at, k.clone()))
                .collect();
            ages.sort();
            let drop = open - self.max_open;
            tracing::warn!(
                dropped = drop,
                max_open = self.max_open,
                "console holds too many open episodes; dropping the least recently updated"
            );
            for (_, k) in ages.into_iter().take(drop) {
                g.episodes.remove(&k);
            }
        }
        incidents::prune(g, now, cutoff);
        let Inner {
            episodes, actions, ..
        } = g;
        actions.retain(|k, (_, touched)| episodes.contains_key(k) || *touched > cutoff);
    }

    /// Forces a retention sweep now (tests, and a periodic tick).
    pub fn prune(&self) {
        let now = self.now();
        let mut g = self.lock();
        self.prune_locked(&mut g, now, true);
    }
}

#[cfg(test)]
mod incident_tests;
#[cfg(test)]
mod tests;
