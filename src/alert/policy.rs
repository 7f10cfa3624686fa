//! The episode state machine.
//!
//! ```text
//!            Anomalous                 Clear held `resolve_after`
//!   (none) ─────────────► Open ───────────────────────────────► Cooldown ──► (none)
//!                          │ ▲  level change: one update msg        │ `cooldown` elapsed
//!                          └─┘  open past `escalate_after`: +1 level │
//!                                                                    │ a higher level re-opens at once
//! ```
//!
//! Both holds count readings as well as event time: an episode resolves only once its
//! condition has been clear for `resolve_after` *and* for `resolve_after_readings` events of
//! its key, and its cooldown lasts until `cooldown` *and* `cooldown_readings` events of the
//! key have passed. Time alone is no discipline for a slow series: with 5-minute sampling
//! a 5-minute hold is one reading, and a condition flickering every other reading became
//! an episode per flicker (issue #18). The policy counts a key's events through
//! [`AlertPolicy::on_event`]; an episode whose key is not an event key (a region's
//! windows, `rate_spike`) never sees one counted, and time alone governs it.
//!
//! Every hold runs on the episode's own clock (`Episode::clock`): the stream's watermark
//! for a key that is current, the key's own event time for a key behind the stream (a
//! site gateway uploading hours of buffered readings), so a late backlog's episodes open,
//! escalate, resolve and cool down as they would have live, not all at once against a
//! watermark hours ahead.
//!
//! Memory: one entry per open or cooling episode, plus one index entry per episode key's
//! event key; an episode with no signal at all for `stale_after` resolves, so keys a
//! detector evicted cannot leave episodes open forever, and a cooldown waiting for
//! readings of a key that went silent is forgotten `stale_after` after its time ran out.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, FixedOffset, SecondsFormat};
use serde::{Deserialize, Serialize};

use super::{Alert, IncidentConfig, Level, LevelBands, RoutePolicy, Status};
use crate::clock::Clock;
use crate::decode::{Event, Stream};
use crate::regions::{RegionRef, Regions};
use crate::signal::{Evidence, Signal, SignalKind};
use crate::state::{Change, StateError};

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AlertPolicyConfig {
    /// The condition must stay clear this long before the episode resolves.
    #[serde(with = "humantime_serde")]
    pub resolve_after: Duration,
    /// ... and for at least this many events of the episode's key (the clearing one
    /// included).
    pub resolve_after_readings: u32,
    /// After a resolve, the same key does not re-open at the same or a lower level for this long.
    #[serde(with = "humantime_serde")]
    pub cooldown: Duration,
    /// ... and until this many events of the key have been seen since the resolve.
    pub cooldown_readings: u32,
    /// An episode still open after this long rises one level (and again after each multiple).
    #[serde(with = "humantime_serde")]
    pub escalate_after: Duration,
    /// An episode with no signal at all for this long resolves (its data stopped).
    #[serde(with = "humantime_serde")]
    pub stale_after: Duration,
    /// How many recent event ids an alert lists.
    pub max_event_ids: usize,
    /// Which command centers see each level.
    pub route: RoutePolicy,
    /// Score bands per detector name (`ewma_z`) or `stream.detector` (`fraud.rate_spike`);
    /// `default` covers the rest.
    pub levels: BTreeMap<String, LevelBands>,
    /// How episodes group into incidents (`[alerts.incidents]`).
    pub incidents: IncidentConfig,
}

/// Three clear readings: one or two clear readings in a row are what a condition
/// flickering around its limit shows between its anomalous ones; three tell a condition
/// that has gone. For a 30 s sensor that is 1.5 minutes, so the 5-minute `resolve_after`
/// still governs; for 5-minute sampling it is 15 minutes instead of one reading.
pub const DEFAULT_RESOLVE_AFTER_READINGS: u32 = 3;
/// Twice the resolve hold: a condition that returns within six readings of its resolve
/// is the same condition, not a new episode (10 minutes is 20 readings of a 30 s sensor,
/// so time still governs there).
pub const DEFAULT_COOLDOWN_READINGS: u32 = 6;

impl Default for AlertPolicyConfig {
    fn default() -> Self {
        Self {
            resolve_after: Duration::from_secs(300),
            resolve_after_readings: DEFAULT_RESOLVE_AFTER_READINGS,
            cooldown: Duration::from_secs(600),
            cooldown_readings: DEFAULT_COOLDOWN_READINGS,
            escalate_after: Duration::from_secs(3600),
            stale_after: Duration::from_secs(6 * 3600),
            max_event_ids: 10,
            route: RoutePolicy::default(),
            levels: BTreeMap::from([("default".to_string(), LevelBands::default())]),
            incidents: IncidentConfig::default(),
        }
    }
}

impl AlertPolicyConfig {
    pub fn validate(&self, path: &str, problems: &mut Vec<String>) {
        if self.escalate_after.is_zero() {
            problems.push(format!("{path}.escalate_after: must be > 0"));
        }
        if self.stale_after < self.resolve_after {
            problems.push(format!("{path}.stale_after: must be >= resolve_after"));
        }
        // A key's events are counted one by one; more than this is a typo, not a policy.
        if self.resolve_after_readings > MAX_READINGS {
            problems.push(format!(
                "{path}.resolve_after_readings: must be <= {MAX_READINGS}"
            ));
        }
        if self.cooldown_readings > MAX_READINGS {
            problems.push(format!(
                "{path}.cooldown_readings: must be <= {MAX_READINGS}"
            ));
        }
        if self.max_event_ids == 0 {
            problems.push(format!("{path}.max_event_ids: must be >= 1"));
        }
        self.route.validate(&format!("{path}.route"), problems);
        self.incidents
            .validate(&format!("{path}.incidents"), problems);
        for (k, b) in &self.levels {
            b.validate(&format!("{path}.levels.{k}"), problems);
        }
    }
}

const MAX_READINGS: u32 = 10_000;

/// The `readings` fields are `serde(default)`: a record written before they existed
/// restores as "no reading counted yet", which only ever holds an episode longer.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum Phase {
    Open {
        clear_since: Option<i64>,
        /// Events of the key since `clear_since` (the clearing one included), counted up
        /// to `resolve_after_readings` only.
        #[serde(default)]
        clear_readings: u32,
        escalations: u32,
        /// Since when the detector has asked for a lower level than the episode shows.
        lower_since: Option<i64>,
    },
    Cooldown {
        until: i64,
        /// Events of the key since the resolve, counted up to `cooldown_readings` only.
        #[serde(default)]
        readings: u32,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Episode {
    phase: Phase,
    /// The episode's last message, the template for the next one.
    last: Alert,
    region: RegionRef,
    stream: Stream,
    opened: i64,
    last_signal: i64,
    /// The level the detector itself asked for, before escalation.
    detector_level: Level,
    /// An event of the episode's key has been counted: the readings holds apply. False
    /// for keys that are not event keys (a region of `rate_spike`), where they could
    /// never be met.
    #[serde(default)]
    counted: bool,
    /// The newest event time of the episode's key that [`AlertPolicy::on_event`] saw
    /// (None: none yet). Kept up to date in memory only: a record restored with an older
    /// one is corrected by the key's next event, before the clock is read again.
    #[serde(default)]
    key_ts: Option<i64>,
    /// How far that event was behind its stream's watermark when it arrived (s, >= 0):
    /// the episode's clock is the watermark minus this ([`Episode::clock`]). 0 for a key
    /// that is current; a gateway uploading hours of buffered readings makes it hours.
    #[serde(default)]
    behind: i64,
}

/// What an anomalous signal brings to its episode, its level already from the bands.
struct Raise {
    ts: DateTime<FixedOffset>,
    level: Level,
    title: String,
    evidence: Evidence,
    event_id: Option<String>,
    /// Wall time of the decision, the message's `detected_at`.
    detected_at: String,
}

impl Episode {
    /// One event of the episode's key at event time `t` (stream watermark `w`): the key's
    /// own time, and the readings the holds count (up to `need_clear` and `need_cool`).
    /// True when the episode's record changed.
    fn note_reading(&mut self, t: i64, w: Option<i64>, need_clear: u32, need_cool: u32) -> bool {
        let mut changed = !self.counted;
        self.counted = true;
        // The key's own time. Without a watermark yet (just restored) there is nothing
        // to be behind: the record's clock stands until the stream moves.
        if let Some(w) = w {
            if self.key_ts.is_none_or(|k| t > k) {
                self.key_ts = Some(t);
                let behind = (w - t).max(0);
                // Written when it changes, which a current key's never does: no
                // record per event.
                changed |= behind != self.behind;
                self.behind = behind;
            }
        }
        // Counted only up to what the holds need: the changelog then gets at most that
        // many records per episode, not one per event.
        match &mut self.phase {
            Phase::Open {
                clear_since: Some(_),
                clear_readings,
                ..
            } if *clear_readings < need_clear => {
                *clear_readings += 1;
                changed = true;
            }
            Phase::Cooldown { readings, .. } if *readings < need_cool => {
                *readings += 1;
                changed = true;
            }
            _ => {}
        }
        changed
    }

    /// An anomalous signal for this open episode: the hold to resolve ends, and the
    /// level (with its escalations) goes up at once but down only once the lower level
    /// has held `resolve_after`. Returns the update message when the level changed.
    fn raise(&mut self, r: Raise, cfg: &AlertPolicyConfig, regions: &Regions) -> Option<Alert> {
        let hold = cfg.resolve_after.as_secs() as i64;
        let t = r.ts.timestamp();
        let Phase::Open {
            clear_since,
            clear_readings,
            escalations,
            lower_since,
        } = &mut self.phase
        else {
            unreachable!()
        };
        *clear_since = None;
        *clear_readings = 0;
        self.last_signal = self.last_signal.max(t);
        if let Some(id) = r.event_id {
            push_capped(&mut self.last.event_ids, id, cfg.max_event_ids);
        }
        self.detector_level = r.level;
        let mut effective = r.level;
        for _ in 0..*escalations {
            effective = effective.raised();
        }
        // Up at once; down only once the lower level has held for the hold time,
        // so an operator never sees a hazard "improve" while it is still rising
        // against a baseline that is catching up.
        let lower = effective < self.last.level;
        if lower {
            let since = *lower_since.get_or_insert(t);
            if t - since < hold {
                self.last.evidence = r.evidence;
                return None;
            }
        }
        *lower_since = None;
        if effective == self.last.level {
            // Same level: refresh what the next message will show, publish nothing.
            self.last.evidence = r.evidence;
            return None;
        }
        self.last.level = effective;
        self.last.evidence = r.evidence;
        self.last.title = r.title;
        self.last.route = cfg
            .route
            .route_of(&self.last.detector, effective, self.region, regions);
        self.last.detected_at = r.detected_at;
        self.last.seq += 1;
        Some(self.last.clone())
    }

    /// The episode's event time at stream watermark `w`. A key behind the stream (a late
    /// upload) is judged by its own time: its episodes open, escalate, resolve and cool
    /// down as they would have live, not at once because the stream is hours ahead.
    /// Between its events the clock still moves with the watermark, so a key that stops
    /// entirely goes stale `stale_after` later like any other.
    fn clock(&self, w: i64) -> i64 {
        w - self.behind
    }
}

/// What one look at an episode at its clock ([`tick`]) did.
#[derive(Default)]
struct Ticked {
    /// Its durable record changed.
    changed: bool,
    /// It resolved (left the Open phase).
    resolved: bool,
    /// Its cooldown is over: forget it.
    forget: bool,
}

/// Resolves, escalates or ends the cooldown of `ep` at its clock `c`; messages to `out`.
/// `now` is the lazily taken wall-clock stamp shared by one pass.
fn tick(
    ep: &mut Episode,
    c: i64,
    cfg: &AlertPolicyConfig,
    regions: &Regions,
    clock: &dyn Clock,
    now: &mut Option<String>,
    out: &mut Vec<Alert>,
) -> Ticked {
    let hold = cfg.resolve_after.as_secs() as i64;
    let stale = cfg.stale_after.as_secs() as i64;
    let esc = cfg.escalate_after.as_secs() as i64;
    let cool = cfg.cooldown.as_secs() as i64;
    let mut stamp = || {
        now.get_or_insert_with(|| clock.now().to_rfc3339_opts(SecondsFormat::Millis, true))
            .clone()
    };
    let before = (ep.last.seq, escalation_count(&ep.phase));
    let mut r = Ticked::default();
    match &mut ep.phase {
        Phase::Cooldown { until, readings } => {
            let read = !ep.counted || *readings >= cfg.cooldown_readings;
            // A key that went silent cannot bring its readings: forgotten anyway
            // `stale_after` later, so the cooldown cannot hold memory forever.
            if c >= *until && (read || c - *until >= stale) {
                r.forget = true;
            }
        }
        Phase::Open {
            clear_since,
            clear_readings,
            escalations,
            ..
        } => {
            let cleared = clear_since.is_some_and(|s| c - s >= hold)
                && (!ep.counted || *clear_readings >= cfg.resolve_after_readings);
            if cleared || c - ep.last_signal >= stale {
                ep.last.status = Status::Resolved;
                ep.last.detected_at = stamp();
                ep.last.seq += 1;
                out.push(ep.last.clone());
                ep.phase = Phase::Cooldown {
                    until: c + cool,
                    readings: 0,
                };
                r.resolved = true;
            } else if clear_since.is_none()
                && ep.last.level < Level::Red
                && !crate::signal::is_maintenance(&ep.last.detector)
                && c - ep.opened >= esc * (i64::from(*escalations) + 1)
            {
                *escalations += 1;
                let mut lvl = ep.detector_level;
                for _ in 0..*escalations {
                    lvl = lvl.raised();
                }
                if lvl > ep.last.level {
                    ep.last.level = lvl;
                    ep.last.route = cfg.route.route(lvl, ep.region, regions);
                    ep.last.detected_at = stamp();
                    ep.last.seq += 1;
                    out.push(ep.last.clone());
                }
            }
        }
    }
    // An escalation step can move without a message (the level was already higher).
    r.changed = before != (ep.last.seq, escalation_count(&ep.phase));
    r
}

pub struct AlertPolicy {
    cfg: AlertPolicyConfig,
    regions: Arc<Regions>,
    clock: Arc<dyn Clock>,
    episodes: HashMap<String, Episode>,
    /// Event key (`stream:key`, see [`event_key`]) -> the keys of its episodes, so that
    /// [`Self::on_event`] finds them with one lookup; exactly the keys of `episodes`.
    by_event_key: HashMap<String, Vec<String>>,
    /// Scratch for building event keys without allocating per event.
    key_buf: String,
    /// Episodes in the Open phase, kept on every transition: the gauge reads it per event.
    open: usize,
    /// Each stream's watermark as last given to [`Self::on_watermark`] (None: not yet
    /// since start or restore), for placing an event's key behind or at the stream.
    watermarks: [Option<i64>; 3],
    /// Durable state: episode keys changed since the last `changes`, per stream.
    tracking: bool,
    dirty: [Vec<String>; 3],
}

fn rfc3339(t: DateTime<FixedOffset>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

impl AlertPolicy {
    pub fn new(cfg: AlertPolicyConfig, regions: Arc<Regions>, clock: Arc<dyn Clock>) -> Self {
        Self {
            cfg,
            regions,
            clock,
            episodes: HashMap::new(),
            by_event_key: HashMap::new(),
            key_buf: String::new(),
            open: 0,
            watermarks: [None; 3],
            tracking: false,
            dirty: Default::default(),
        }
    }

    /// Durable state from now on: remember changed episodes for [`Self::changes`].
    pub fn track_changes(&mut self) {
        self.tracking = true;
    }

    fn mark(&mut self, stream: Stream, key: &str) {
        if self.tracking {
            self.dirty[stream.index()].push(key.to_string());
        }
    }

    /// The changelog records (`e:<episode key>`) of `stream`'s episodes changed since the
    /// last call; a forgotten episode is a tombstone.
    pub fn changes(&mut self, stream: Stream, out: &mut Vec<Change>) {
        let mut keys = std::mem::take(&mut self.dirty[stream.index()]);
        keys.sort_unstable();
        keys.dedup();
        for k in keys {
            // JSON, not postcard: an alert's subject and evidence are self-describing
            // (maps, skipped empty fields), which postcard cannot read back.
            let value = self
                .episodes
                .get(&k)
                .map(|e| serde_json::to_vec(e).expect("episodes serialize"));
            out.push(Change {
                key: format!("e:{k}"),
                value,
            });
        }
    }

    /// Puts back one `e:` record from the changelog.
    pub fn restore(&mut self, key: &str, value: Option<&[u8]>) -> Result<(), StateError> {
        let Some(k) = key.strip_prefix("e:") else {
            return Err(StateError::corrupt(key, "not an episode record"));
        };
        let old = match value {
            Some(v) => self.episodes.insert(
                k.to_string(),
                serde_json::from_slice::<Episode>(v).map_err(|e| StateError::corrupt(key, e))?,
            ),
            None => self.episodes.remove(k),
        };
        match (old.is_some(), self.episodes.contains_key(k)) {
            (false, true) => self.index_add(k),
            (true, false) => self.index_remove(k),
            _ => {}
        }
        let is_open = |e: &Episode| matches!(e.phase, Phase::Open { .. });
        self.open -= old.as_ref().is_some_and(is_open) as usize;
        self.open += self.episodes.get(k).is_some_and(is_open) as usize;
        Ok(())
    }

    fn index_add(&mut self, ekey: &str) {
        self.by_event_key
            .entry(event_key(ekey))
            .or_default()
            .push(ekey.to_string());
    }

    fn index_remove(&mut self, ekey: &str) {
        let ek = event_key(ekey);
        if let Some(v) = self.by_event_key.get_mut(&ek) {
            v.retain(|x| x != ekey);
            if v.is_empty() {
                self.by_event_key.remove(&ek);
            }
        }
    }

    /// One event of `stream` was observed (after its signals went to [`Self::on_signal`]):
    /// it is one more reading of every episode of its keys (a sensor reading: its sensor
    /// and its site; a fraud report: each suspect it names), and it moves their clocks to
    /// its event time. An event behind the stream's watermark (a late upload) also judges
    /// those episodes at once, at their key's time, since the watermark does not move for
    /// it: their messages go to `out`. O(1) per event: a lookup per key, and nothing at
    /// all while no episode is open or cooling.
    pub fn on_event(&mut self, ev: &Event, out: &mut Vec<Alert>) {
        if self.by_event_key.is_empty() {
            return;
        }
        let stream = ev.stream();
        let t = ev.ts().timestamp();
        match ev {
            Event::Sensor(r) => {
                self.count_reading(stream, "", &r.sensor_id, t, out);
                self.count_reading(stream, "", &r.site_id, t, out);
            }
            Event::Fraud(f) => {
                for (kind, value) in f.suspects() {
                    self.count_reading(stream, kind, value, t, out);
                }
            }
            // Incident detectors key regions, whose events are windows: time governs.
            Event::Incident(_) => {}
        }
    }

    /// Counts one reading at event time `t` for the episodes of event key
    /// `stream:[kind:]key`.
    fn count_reading(
        &mut self,
        stream: Stream,
        kind: &str,
        key: &str,
        t: i64,
        out: &mut Vec<Alert>,
    ) {
        self.key_buf.clear();
        self.key_buf.push_str(stream.as_str());
        self.key_buf.push(':');
        if !kind.is_empty() {
            self.key_buf.push_str(kind);
            self.key_buf.push(':');
        }
        self.key_buf.push_str(key);
        let Some(ekeys) = self.by_event_key.get(self.key_buf.as_str()) else {
            return;
        };
        let (need_clear, need_cool) = (self.cfg.resolve_after_readings, self.cfg.cooldown_readings);
        let w = self.watermarks[stream.index()];
        let mut now = None;
        let mut forget = Vec::new();
        for ekey in ekeys {
            let Some(ep) = self.episodes.get_mut(ekey) else {
                continue;
            };
            let mut changed = ep.note_reading(t, w, need_clear, need_cool);
            // A late event: the watermark will not move for it, so its key's episodes are
            // judged here, at the key's time. A current key's wait for the watermark.
            if let Some(w) = w.filter(|&w| t < w) {
                let r = tick(
                    ep,
                    ep.clock(w),
                    &self.cfg,
                    &self.regions,
                    self.clock.as_ref(),
                    &mut now,
                    out,
                );
                changed |= r.changed;
                self.open -= r.resolved as usize;
                if r.forget {
                    forget.push(ekey.clone());
                }
            }
            if changed && self.tracking {
                self.dirty[stream.index()].push(ekey.clone());
            }
        }
        for k in forget {
            self.episodes.remove(&k);
            self.index_remove(&k);
            self.mark(stream, &k);
        }
    }

    fn bands(&self, stream: Stream, detector: &str) -> LevelBands {
        let specific = format!("{}.{detector}", stream.as_str());
        self.cfg
            .levels
            .get(&specific)
            .or_else(|| self.cfg.levels.get(detector))
            .or_else(|| self.cfg.levels.get("default"))
            .copied()
            .unwrap_or_default()
    }

    fn now(&self) -> String {
        self.clock
            .now()
            .to_rfc3339_opts(SecondsFormat::Millis, true)
    }

    /// Episodes currently open (the `riskstream_open_episodes` gauge).
    pub fn open_count(&self) -> usize {
        debug_assert_eq!(
            self.open,
            self.episodes
                .values()
                .filter(|e| matches!(e.phase, Phase::Open { .. }))
                .count()
        );
        self.open
    }

    /// The open episodes open longer than `age` seconds by their own clock (the KPIs'
    /// stale alarms, [`super::kpi`]), appended to `out`. Walks every episode: called once
    /// per event-time minute, not per event. A stream with no watermark yet has none.
    pub fn open_longer_than(&self, age: i64, out: &mut Vec<super::kpi::StaleAlarm>) {
        for ep in self.episodes.values() {
            let (Phase::Open { .. }, Some(w)) = (&ep.phase, self.watermarks[ep.stream.index()])
            else {
                continue;
            };
            let open_s = ep.clock(w) - ep.opened;
            if open_s > age {
                out.push(super::kpi::StaleAlarm {
                    alert_id: ep.last.alert_id.clone(),
                    title: ep.last.title.clone(),
                    level: ep.last.level,
                    route: ep.last.route.clone(),
                    first_event_ts: ep.last.first_event_ts.clone(),
                    open_s,
                });
            }
        }
    }

    /// Takes one detector signal; returns the message to publish, if any. A clear
    /// starts its episode's hold; an anomaly raises its open episode
    /// ([`Episode::raise`]), is held back by its cooldown, or opens a new episode.
    pub fn on_signal(&mut self, sig: Signal) -> Option<Alert> {
        let Signal {
            stream,
            detector,
            key,
            subject,
            region,
            ts,
            event_id,
            kind,
        } = sig;
        let ekey = format!("{}:{}:{}", stream.as_str(), detector, key);
        let t = ts.timestamp();
        let (score, level_hint, title, evidence) = match kind {
            SignalKind::Clear => {
                self.on_clear(stream, &ekey, t);
                return None;
            }
            SignalKind::Anomalous {
                score,
                level,
                title,
                evidence,
            } => (score, level, title, evidence),
        };
        let level = level_hint.or_else(|| self.bands(stream, detector).level(score))?;
        self.mark(stream, &ekey);
        let raise = Raise {
            ts,
            level,
            title,
            evidence,
            event_id,
            detected_at: self.now(),
        };
        match self.episodes.get_mut(&ekey) {
            Some(ep) if matches!(ep.phase, Phase::Open { .. }) => {
                ep.raise(raise, &self.cfg, &self.regions)
            }
            // Cooling until both the time and the readings have passed; a key whose events
            // are not counted (`counted` false) is held by time alone.
            Some(Episode {
                phase: Phase::Cooldown { until, readings },
                last,
                counted,
                ..
            }) if (t < *until || (*counted && *readings < self.cfg.cooldown_readings))
                && level <= last.level =>
            {
                None
            }
            _ => Some(self.open_episode(ekey, stream, detector, subject, region, raise)),
        }
    }

    /// A clear signal: an open episode's hold to resolve starts (if it had not).
    fn on_clear(&mut self, stream: Stream, ekey: &str, t: i64) {
        if let Some(Episode {
            phase:
                Phase::Open {
                    clear_since,
                    clear_readings,
                    ..
                },
            last_signal,
            ..
        }) = self.episodes.get_mut(ekey)
        {
            if clear_since.is_none() {
                *clear_since = Some(t);
                *clear_readings = 0;
            }
            *last_signal = (*last_signal).max(t);
            self.mark(stream, ekey);
        }
    }

    /// A new episode, or a re-open replacing a cooling one of the same key; returns its
    /// first message.
    fn open_episode(
        &mut self,
        ekey: String,
        stream: Stream,
        detector: &'static str,
        subject: serde_json::Map<String, serde_json::Value>,
        region: RegionRef,
        r: Raise,
    ) -> Alert {
        let t = r.ts.timestamp();
        let alert = Alert {
            alert_id: format!("{ekey}:{t}"),
            status: Status::Firing,
            level: r.level,
            stream: stream.as_str().to_string(),
            detector: detector.to_string(),
            subject,
            title: r.title,
            evidence: r.evidence,
            first_event_ts: rfc3339(r.ts),
            detected_at: r.detected_at,
            event_ids: r.event_id.into_iter().collect(),
            route: self
                .cfg
                .route
                .route_of(detector, r.level, region, &self.regions),
            region_name: self.regions.display_name(region),
            seq: 1,
            incident_id: String::new(),
            actions: None,
        };
        self.open += 1;
        // A re-open replaces a cooling episode of the same key: indexed already.
        let fresh = !self.episodes.contains_key(&ekey);
        if fresh {
            self.index_add(&ekey);
        }
        self.episodes.insert(
            ekey,
            Episode {
                phase: Phase::Open {
                    clear_since: None,
                    clear_readings: 0,
                    escalations: 0,
                    lower_since: None,
                },
                last: alert.clone(),
                region,
                stream,
                opened: t,
                last_signal: t,
                detector_level: r.level,
                counted: false,
                // Until the key's next event says otherwise, its time is the
                // signal's: behind the stream by as much as the signal is.
                key_ts: None,
                behind: self.watermarks[stream.index()].map_or(0, |w| (w - t).max(0)),
            },
        );
        alert
    }

    /// Restore: `stream`'s watermark was restored at `wm`. Only noted (see
    /// [`Self::on_event`]); the episodes were judged at it before the restart.
    pub fn seed_watermark(&mut self, stream: Stream, wm: DateTime<FixedOffset>) {
        let slot = &mut self.watermarks[stream.index()];
        *slot = Some(slot.map_or(wm.timestamp(), |s| s.max(wm.timestamp())));
    }

    /// The stream's watermark was repaired back to `wm` (it had come from a bad clock).
    pub fn cap_watermark(&mut self, stream: Stream, wm: DateTime<FixedOffset>) {
        let slot = &mut self.watermarks[stream.index()];
        *slot = slot.map(|s| s.min(wm.timestamp()));
    }

    /// Event time of `stream` reached `wm`: resolve, escalate, forget cooled episodes,
    /// each episode at its own clock ([`Episode::clock`]).
    pub fn on_watermark(
        &mut self,
        stream: Stream,
        wm: DateTime<FixedOffset>,
        out: &mut Vec<Alert>,
    ) {
        let w = wm.timestamp();
        self.seed_watermark(stream, wm);
        let mut now = None;
        let mut forget = Vec::new();
        let mut changed = Vec::new();
        for (k, ep) in self.episodes.iter_mut().filter(|(_, e)| e.stream == stream) {
            let r = tick(
                ep,
                ep.clock(w),
                &self.cfg,
                &self.regions,
                self.clock.as_ref(),
                &mut now,
                out,
            );
            self.open -= r.resolved as usize;
            if r.forget {
                forget.push(k.clone());
            }
            if self.tracking && r.changed {
                changed.push(k.clone());
            }
        }
        for k in forget {
            self.episodes.remove(&k);
            self.index_remove(&k);
            self.mark(stream, &k);
        }
        for k in changed {
            self.mark(stream, &k);
        }
    }
}

/// The event key of episode key `stream:detector:key`: `stream:key` (a key may hold ':').
fn event_key(ekey: &str) -> String {
    let mut parts = ekey.splitn(3, ':');
    let (stream, _detector, key) = (
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
    );
    format!("{stream}:{key}")
}

fn escalation_count(p: &Phase) -> u32 {
    match p {
        Phase::Open { escalations, .. } => *escalations,
        Phase::Cooldown { .. } => u32::MAX,
    }
}

fn push_capped(ids: &mut Vec<String>, id: String, cap: usize) {
    if ids.last() == Some(&id) {
        return;
    }
    if ids.len() >= cap {
        ids.remove(0);
    }
    ids.push(id);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::detect::testutil::ts;
    use crate::signal::Evidence;

    impl AlertPolicy {
        /// `on_event` for a reading of `sensor` at `secs` on the clock of [`sig`] and
        /// [`wm`], not behind the watermark: it publishes nothing.
        fn current_event(&mut self, sensor: &str, secs: i64) {
            let mut out = Vec::new();
            let ev = reading_at(sensor, secs);
            self.on_event(&ev, &mut out);
            assert!(out.is_empty(), "a current event publishes nothing: {out:?}");
        }
    }

    fn policy() -> (AlertPolicy, ManualClock) {
        let clock = ManualClock::new(ts("2026-11-26T00:00:00Z").with_timezone(&chrono::Utc));
        let cfg = AlertPolicyConfig::default();
        (
            AlertPolicy::new(
                cfg,
                Arc::new(crate::regions::demo()),
                Arc::new(clock.clone()),
            ),
            clock,
        )
    }

    fn sig(secs: i64, kind: SignalKind) -> Signal {
        let r = crate::regions::demo();
        Signal {
            stream: Stream::Sensors,
            detector: "threshold",
            key: "S1".into(),
            subject: serde_json::Map::new(),
            region: r.resolve("330503101").unwrap(),
            ts: ts("2026-11-26T08:00:00+08:00") + chrono::Duration::seconds(secs),
            event_id: Some(format!("e{secs}")),
            kind,
        }
    }

    fn bad(level: Level) -> SignalKind {
        SignalKind::Anomalous {
            score: 0.8,
            level: Some(level),
            title: "t".into(),
            evidence: Evidence::default(),
        }
    }

    /// A gas reading of `sensor` at `secs` on the clock of [`sig`] and [`wm`].
    fn reading_at(sensor: &str, secs: i64) -> Event {
        crate::detect::testutil::reading(sensor, "gas_lel", 8 * 3600 + secs, 1.0)
    }

    fn wm(secs: i64) -> DateTime<FixedOffset> {
        ts("2026-11-26T08:00:00+08:00") + chrono::Duration::seconds(secs)
    }

    /// Applies `p`'s changes to a compacted log (latest value per key wins).
    fn compact(p: &mut AlertPolicy, log: &mut BTreeMap<String, Option<Vec<u8>>>) {
        let mut out = Vec::new();
        p.changes(Stream::Sensors, &mut out);
        for c in out {
            log.insert(c.key, c.value);
        }
    }

    #[test]
    fn a_restored_policy_continues_every_episode_exactly() {
        // Steps: signals and watermarks that open, raise, escalate, clear, resolve, cool
        // down and re-open; the policy is restored from the log after every step and
        // must go on with exactly the original's messages.
        let steps: Vec<(i64, Option<SignalKind>)> = vec![
            (0, Some(bad(Level::Yellow))),
            (20, Some(bad(Level::Red))),
            (40, Some(bad(Level::Orange))),
            (400, None),
            (1000, None),
            (1010, Some(SignalKind::Clear)),
            (1400, None),
            (1500, Some(bad(Level::Yellow))),
            (2000, Some(bad(Level::Red))),
            (2500, None),
        ];
        for split in 0..steps.len() {
            let (mut a, _ca) = policy();
            a.track_changes();
            let mut log = BTreeMap::new();
            let step = |p: &mut AlertPolicy, (t, s): &(i64, Option<SignalKind>)| {
                let mut out = Vec::new();
                match s {
                    Some(k) => out.extend(p.on_signal(sig(*t, k.clone()))),
                    None => p.on_watermark(Stream::Sensors, wm(*t), &mut out),
                }
                out.into_iter()
                    .map(|a| (a.alert_id, a.status, a.level, a.seq, a.route))
                    .collect::<Vec<_>>()
            };
            for st in &steps[..split] {
                step(&mut a, st);
                compact(&mut a, &mut log);
            }
            let (mut b, _cb) = policy();
            b.track_changes();
            for (k, v) in &log {
                b.restore(k, v.as_deref()).unwrap();
            }
            assert_eq!(b.open_count(), a.open_count(), "split {split}");
            let mut n = 0;
            for st in &steps[split..] {
                let (x, y) = (step(&mut a, st), step(&mut b, st));
                assert_eq!(x, y, "split {split}, step at {}s", st.0);
                n += x.len();
            }
            assert!(split > 6 || n > 0, "split {split} compared nothing");
        }
    }

    #[test]
    fn one_episode_from_open_to_resolve() {
        let (mut p, _c) = policy();
        let a = p.on_signal(sig(0, bad(Level::Yellow))).unwrap();
        assert_eq!(a.status, Status::Firing);
        assert_eq!(
            a.alert_id,
            format!("sensors:threshold:S1:{}", wm(0).timestamp())
        );
        assert_eq!(a.route, vec!["330503101", "330503"]);
        // Same level again: nothing new.
        assert!(p.on_signal(sig(10, bad(Level::Yellow))).is_none());
        // Level up: one update, same id, wider route.
        let u = p.on_signal(sig(20, bad(Level::Red))).unwrap();
        assert_eq!(
            (u.alert_id.as_str(), u.level, u.seq),
            (a.alert_id.as_str(), Level::Red, 2)
        );
        assert_eq!(u.route.len(), 3);
        assert!(p.on_signal(sig(30, SignalKind::Clear)).is_none());
        let mut out = Vec::new();
        p.on_watermark(Stream::Sensors, wm(30 + 299), &mut out);
        assert!(out.is_empty(), "hold time not yet over");
        p.on_watermark(Stream::Sensors, wm(30 + 300), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].status, Status::Resolved);
        assert_eq!(out[0].alert_id, a.alert_id);
        assert_eq!(p.open_count(), 0);
    }

    #[test]
    fn flapping_is_one_episode_and_cooldown_blocks_noise() {
        let (mut p, _c) = policy();
        let mut msgs = 0;
        for i in 0..10 {
            msgs += p.on_signal(sig(i * 60, bad(Level::Yellow))).is_some() as usize;
            p.on_signal(sig(i * 60 + 30, SignalKind::Clear));
            let mut out = Vec::new();
            p.on_watermark(Stream::Sensors, wm(i * 60 + 59), &mut out);
            msgs += out.len();
        }
        assert_eq!(
            msgs, 1,
            "ten flaps inside the hold time are one open message"
        );
        let mut out = Vec::new();
        p.on_watermark(Stream::Sensors, wm(570 + 300), &mut out);
        assert_eq!(out.len(), 1);
        // Cooldown: same level re-opens nothing, a higher one does.
        assert!(p.on_signal(sig(900, bad(Level::Yellow))).is_none());
        let r = p.on_signal(sig(910, bad(Level::Red))).unwrap();
        assert_eq!(r.seq, 1);
        assert_ne!(r.alert_id, out[0].alert_id);
    }

    #[test]
    fn level_falls_only_after_holding_lower() {
        let (mut p, _c) = policy();
        p.on_signal(sig(0, bad(Level::Red))).unwrap();
        assert!(p.on_signal(sig(60, bad(Level::Yellow))).is_none());
        assert!(p.on_signal(sig(200, bad(Level::Yellow))).is_none());
        // Back up meanwhile resets the clock.
        assert!(p.on_signal(sig(250, bad(Level::Red))).is_none());
        assert!(p.on_signal(sig(300, bad(Level::Yellow))).is_none());
        assert!(p.on_signal(sig(599, bad(Level::Yellow))).is_none());
        let down = p.on_signal(sig(600, bad(Level::Yellow))).unwrap();
        assert_eq!((down.level, down.seq), (Level::Yellow, 2));
    }

    #[test]
    fn long_episode_escalates_one_level() {
        let (mut p, _c) = policy();
        p.on_signal(sig(0, bad(Level::Blue))).unwrap();
        let mut out = Vec::new();
        p.on_watermark(Stream::Sensors, wm(3599), &mut out);
        assert!(out.is_empty());
        p.on_watermark(Stream::Sensors, wm(3600), &mut out);
        assert_eq!(out[0].level, Level::Yellow);
        // The detector repeating blue does not undo the escalation.
        assert!(p.on_signal(sig(3700, bad(Level::Blue))).is_none());
    }

    /// Drives `p` through one sensor's readings, `period` seconds apart for `n` readings
    /// (each up to `jitter` s late, as a real sampler drifts), the condition on where
    /// `on(i)`; the watermark follows event time every 60 s as the other sensors of the
    /// stream would move it. Returns (opens, resolves).
    fn drive(
        p: &mut AlertPolicy,
        period: i64,
        jitter: i64,
        n: i64,
        on: impl Fn(i64) -> bool,
    ) -> (usize, usize) {
        let (mut opens, mut resolves) = (0, 0);
        let mut out = Vec::new();
        let mut next_wm = 60;
        for i in 0..n {
            let t = i * period + (i * 7) % (jitter + 1);
            while next_wm < t {
                p.on_watermark(Stream::Sensors, wm(next_wm), &mut out);
                next_wm += 60;
            }
            let kind = if on(i) {
                bad(Level::Yellow)
            } else {
                SignalKind::Clear
            };
            out.extend(p.on_signal(sig(t, kind)));
            p.current_event("S1", t);
            p.on_watermark(Stream::Sensors, wm(t), &mut out);
            for a in out.drain(..) {
                match (a.status, a.seq) {
                    (Status::Firing, 1) => opens += 1,
                    (Status::Resolved, _) => resolves += 1,
                    _ => {}
                }
            }
        }
        (opens, resolves)
    }

    fn policy_with(f: impl FnOnce(&mut AlertPolicyConfig)) -> AlertPolicy {
        let mut cfg = AlertPolicyConfig::default();
        f(&mut cfg);
        let clock = ManualClock::new(ts("2026-11-26T00:00:00Z").with_timezone(&chrono::Utc));
        AlertPolicy::new(cfg, Arc::new(crate::regions::demo()), Arc::new(clock))
    }

    #[test]
    fn five_minute_readings_flickering_for_an_hour_are_one_episode() {
        // On, off, on, off ... every 5 minutes for an hour, then clear for an hour.
        let flicker = |i: i64| i < 12 && i % 2 == 0;
        // Time alone (the holds of before issue #18): an episode per few flickers.
        let mut old = policy_with(|c| {
            c.resolve_after_readings = 0;
            c.cooldown_readings = 0;
        });
        let (opens, _) = drive(&mut old, 300, 20, 24, flicker);
        assert!(opens > 1, "time alone: {opens} episodes");
        // Readings too: one clear reading between two anomalous ones never resolves.
        let (mut p, _c) = policy();
        assert_eq!(drive(&mut p, 300, 20, 24, flicker), (1, 1));
        assert_eq!(p.open_count(), 0);
    }

    #[test]
    fn resolve_waits_for_the_readings_and_cooldown_for_both() {
        let (mut p, _c) = policy();
        // Open at 0, clear from 300 on, 5-minute readings.
        let mut out = Vec::new();
        fn read(
            p: &mut AlertPolicy,
            out: &mut Vec<Alert>,
            i: i64,
            kind: Option<SignalKind>,
        ) -> Option<Alert> {
            let t = i * 300;
            let r = kind.and_then(|k| p.on_signal(sig(t, k)));
            p.current_event("S1", t);
            p.on_watermark(Stream::Sensors, wm(t), out);
            r
        }
        assert!(read(&mut p, &mut out, 0, Some(bad(Level::Yellow))).is_some());
        read(&mut p, &mut out, 1, Some(SignalKind::Clear));
        read(&mut p, &mut out, 2, None);
        // 10 minutes clear, but two clear readings: still open.
        assert!(out.is_empty());
        read(&mut p, &mut out, 3, None);
        assert_eq!(out.len(), 1, "third clear reading resolves");
        assert_eq!(out[0].status, Status::Resolved);
        // Cooldown: 10 minutes have passed after two readings, but six are needed.
        read(&mut p, &mut out, 4, None);
        read(&mut p, &mut out, 5, None);
        assert!(read(&mut p, &mut out, 6, Some(bad(Level::Yellow))).is_none());
        for i in 7..=9 {
            read(&mut p, &mut out, i, None);
        }
        // Six readings since the resolve: the cooldown is over and forgotten.
        assert!(read(&mut p, &mut out, 10, Some(bad(Level::Yellow))).is_some());
    }

    #[test]
    fn with_one_second_readings_time_governs() {
        let (mut p, _c) = policy();
        let (opens, resolves) = drive(&mut p, 1, 0, 1200, |i| i < 10);
        assert_eq!((opens, resolves), (1, 1));
        // Resolved at the first watermark 300 s after the clear at 10 s, not 3 readings
        // after it.
        let (mut p, _c) = policy();
        let (_, early) = drive(&mut p, 1, 0, 309, |i| i < 10);
        assert_eq!(early, 0);
        let (_, r) = drive(&mut p, 1, 0, 311, |i| i < 10);
        assert_eq!(r, 1);
    }

    #[test]
    fn keys_without_counted_events_are_held_by_time_alone() {
        // A region key (rate_spike) never sees an event of its own: time decides.
        let (mut p, _c) = policy();
        p.on_signal(sig(0, bad(Level::Yellow))).unwrap();
        p.current_event("OTHER", 0);
        p.on_signal(sig(30, SignalKind::Clear));
        let mut out = Vec::new();
        p.on_watermark(Stream::Sensors, wm(330), &mut out);
        assert_eq!(out.len(), 1);
        p.on_watermark(Stream::Sensors, wm(330 + 600), &mut out);
        assert!(p.episodes.is_empty() && p.by_event_key.is_empty());
    }

    #[test]
    fn a_silent_key_does_not_hold_its_cooldown_forever() {
        let (mut p, _c) = policy();
        p.on_signal(sig(0, bad(Level::Yellow))).unwrap();
        p.current_event("S1", 0);
        let mut out = Vec::new();
        // No signal at all: stale after 6 h, then cooling without readings.
        p.on_watermark(Stream::Sensors, wm(6 * 3600), &mut out);
        assert_eq!(out.len(), 1);
        p.on_watermark(Stream::Sensors, wm(6 * 3600 + 600), &mut out);
        assert_eq!(p.episodes.len(), 1, "time passed, readings not");
        p.on_watermark(Stream::Sensors, wm(12 * 3600 + 600), &mut out);
        assert!(p.episodes.is_empty() && p.by_event_key.is_empty());
    }

    #[test]
    fn a_restored_policy_continues_its_reading_counts_exactly() {
        // 5-minute readings: open, clear, resolve by readings, cool down by readings,
        // re-open; restored from the log after every step.
        #[derive(Clone)]
        enum Step {
            Sig(i64, SignalKind),
            Ev(i64),
            Wm(i64),
        }
        let mut steps = vec![Step::Sig(0, bad(Level::Yellow)), Step::Ev(0), Step::Wm(0)];
        for i in 1..=12 {
            let t = i * 300;
            if i == 1 {
                steps.push(Step::Sig(t, SignalKind::Clear));
            }
            if i == 11 {
                steps.push(Step::Sig(t, bad(Level::Yellow)));
            }
            steps.extend([Step::Ev(t), Step::Wm(t)]);
        }
        let run = |p: &mut AlertPolicy, st: &Step| {
            let mut out = Vec::new();
            match st {
                Step::Sig(t, k) => out.extend(p.on_signal(sig(*t, k.clone()))),
                Step::Ev(t) => p.current_event("S1", *t),
                Step::Wm(t) => p.on_watermark(Stream::Sensors, wm(*t), &mut out),
            }
            out.into_iter()
                .map(|a| (a.alert_id, a.status, a.seq))
                .collect::<Vec<_>>()
        };
        let mut whole = Vec::new();
        let (mut a, _c) = policy();
        for st in &steps {
            whole.extend(run(&mut a, st));
        }
        // Open, resolved after 3 clear readings, re-opened after 6 more.
        assert_eq!(whole.len(), 3, "{whole:?}");
        for split in 0..steps.len() {
            let (mut a, _ca) = policy();
            a.track_changes();
            let mut log = BTreeMap::new();
            let mut got = Vec::new();
            for st in &steps[..split] {
                got.extend(run(&mut a, st));
                compact(&mut a, &mut log);
            }
            let (mut b, _cb) = policy();
            for (k, v) in &log {
                b.restore(k, v.as_deref()).unwrap();
            }
            for st in &steps[split..] {
                got.extend(run(&mut b, st));
            }
            assert_eq!(got, whole, "split {split}");
        }
    }

    #[test]
    fn records_without_reading_counts_restore() {
        // An episode record written before the readings holds existed.
        let (mut p, _c) = policy();
        p.track_changes();
        p.on_signal(sig(0, bad(Level::Yellow))).unwrap();
        let mut log = BTreeMap::new();
        compact(&mut p, &mut log);
        let (k, v) = log.into_iter().next().unwrap();
        let mut j: serde_json::Value = serde_json::from_slice(&v.unwrap()).unwrap();
        // ... and before episodes kept their key's time (late uploads).
        for f in ["counted", "key_ts", "behind"] {
            j.as_object_mut().unwrap().remove(f);
        }
        j["phase"]["Open"]
            .as_object_mut()
            .unwrap()
            .remove("clear_readings");
        let (mut q, _c) = policy();
        q.restore(&k, Some(&serde_json::to_vec(&j).unwrap()))
            .unwrap();
        assert_eq!(q.open_count(), 1);
        assert_eq!(q.by_event_key.len(), 1);
        q.restore(&k, None).unwrap();
        assert!(q.by_event_key.is_empty());
    }

    #[test]
    fn a_late_key_is_judged_by_its_own_time() {
        // The stream is 4 h ahead when S1's buffered readings arrive, one per 30 s of its
        // own time, while the other sensors move the watermark on by a second per reading.
        let (mut p, _c) = policy();
        let mut out = Vec::new();
        let mut w = 4 * 3600;
        p.on_watermark(Stream::Sensors, wm(w), &mut out);
        let mut seen = Vec::new();
        for i in 0..120 {
            let t = i * 30;
            // Anomalous for 10 minutes from 600 s on, then clear.
            let kind = match t {
                600..1200 => Some(bad(Level::Yellow)),
                1200 => Some(SignalKind::Clear),
                _ => None,
            };
            out.extend(kind.and_then(|k| p.on_signal(sig(t, k))));
            p.on_event(&reading_at("S1", t), &mut out);
            w += 1;
            p.on_watermark(Stream::Sensors, wm(w), &mut out);
            seen.extend(out.drain(..).map(|a| (t, a.status, a.level)));
        }
        // Opened at the step, not escalated (the stream being hours past the opening is
        // no hour of the key's own), resolved 5 minutes of its time after the clear.
        assert_eq!(
            seen,
            [
                (600, Status::Firing, Level::Yellow),
                (1500, Status::Resolved, Level::Yellow)
            ]
        );
        // Cooled down by its own time too: a new condition after `cooldown` re-opens.
        assert!(p.on_signal(sig(3600, bad(Level::Yellow))).is_some());
        p.on_event(&reading_at("S1", 3600), &mut out);
        // Then the key stops entirely: the watermark resolves it `stale_after` after its
        // last signal, counted on the key's clock, which now moves with the watermark.
        let stale = 6 * 3600;
        // (Escalating meanwhile, an hour of the key's clock after it opened.)
        p.on_watermark(Stream::Sensors, wm(w + 3599), &mut out);
        assert!(out.is_empty());
        p.on_watermark(Stream::Sensors, wm(w + 3600), &mut out);
        assert_eq!(
            out.drain(..).map(|a| a.level).collect::<Vec<_>>(),
            [Level::Orange]
        );
        p.on_watermark(Stream::Sensors, wm(w + stale - 1), &mut out);
        assert!(out.iter().all(|a| a.status == Status::Firing));
        out.clear();
        p.on_watermark(Stream::Sensors, wm(w + stale), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].status, Status::Resolved);
        assert_eq!(p.open_count(), 0);
    }

    #[test]
    fn detected_at_comes_from_the_injected_clock() {
        let (mut p, c) = policy();
        c.set(ts("2030-01-01T00:00:00Z").with_timezone(&chrono::Utc));
        let a = p.on_signal(sig(0, bad(Level::Blue))).unwrap();
        assert_eq!(a.detected_at, "2030-01-01T00:00:00.000Z");
    }

    #[test]
    fn an_episode_is_stale_one_second_past_24_hours() {
        let (mut p, _c) = policy();
        let mut out = Vec::new();
        // Signals every 5 h keep it open (stale_after is 6 h without any signal).
        for h in [0, 5, 10, 15, 20] {
            out.extend(p.on_signal(sig(h * 3600, bad(Level::Yellow))));
            p.on_watermark(Stream::Sensors, wm(h * 3600), &mut out);
        }
        let day = super::super::kpi::STALE_AFTER_S;
        let mut stale = Vec::new();
        p.on_watermark(Stream::Sensors, wm(day), &mut out);
        p.open_longer_than(day, &mut stale);
        assert!(stale.is_empty(), "open exactly 24 h is not stale yet");
        p.on_watermark(Stream::Sensors, wm(day + 1), &mut out);
        p.open_longer_than(day, &mut stale);
        assert_eq!(stale.len(), 1);
        assert_eq!(stale[0].open_s, day + 1);
        assert_eq!(
            stale[0].alert_id,
            format!("sensors:threshold:S1:{}", wm(0).timestamp())
        );
    }
}
