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
//! Memory: one entry per open or cooling episode; an episode with no signal at all for
//! `stale_after` resolves, so keys a detector evicted cannot leave episodes open forever.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, FixedOffset, SecondsFormat};
use serde::{Deserialize, Serialize};

use super::{Alert, Level, LevelBands, RoutePolicy, Status};
use crate::clock::Clock;
use crate::decode::Stream;
use crate::detect::{Signal, SignalKind};
use crate::regions::{RegionRef, Regions};
use crate::state::{Change, StateError};

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AlertPolicyConfig {
    /// The condition must stay clear this long before the episode resolves.
    #[serde(with = "humantime_serde")]
    pub resolve_after: Duration,
    /// After a resolve, the same key does not re-open at the same or a lower level for this long.
    #[serde(with = "humantime_serde")]
    pub cooldown: Duration,
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
}

impl Default for AlertPolicyConfig {
    fn default() -> Self {
        Self {
            resolve_after: Duration::from_secs(300),
            cooldown: Duration::from_secs(600),
            escalate_after: Duration::from_secs(3600),
            stale_after: Duration::from_secs(6 * 3600),
            max_event_ids: 10,
            route: RoutePolicy::default(),
            levels: BTreeMap::from([("default".to_string(), LevelBands::default())]),
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
        if self.max_event_ids == 0 {
            problems.push(format!("{path}.max_event_ids: must be >= 1"));
        }
        self.route.validate(&format!("{path}.route"), problems);
        for (k, b) in &self.levels {
            b.validate(&format!("{path}.levels.{k}"), problems);
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum Phase {
    Open {
        clear_since: Option<i64>,
        escalations: u32,
        /// Since when the detector has asked for a lower level than the episode shows.
        lower_since: Option<i64>,
    },
    Cooldown {
        until: i64,
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
}

pub struct AlertPolicy {
    cfg: AlertPolicyConfig,
    regions: Arc<Regions>,
    clock: Arc<dyn Clock>,
    episodes: HashMap<String, Episode>,
    /// Episodes in the Open phase, kept on every transition: the gauge reads it per event.
    open: usize,
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
            open: 0,
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
        let is_open = |e: &Episode| matches!(e.phase, Phase::Open { .. });
        self.open -= old.as_ref().is_some_and(is_open) as usize;
        self.open += self.episodes.get(k).is_some_and(is_open) as usize;
        Ok(())
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

    /// Takes one detector signal; returns the message to publish, if any.
    pub fn on_signal(&mut self, sig: Signal) -> Option<Alert> {
        let ekey = format!("{}:{}:{}", sig.stream.as_str(), sig.detector, sig.key);
        let t = sig.ts.timestamp();
        let (score, level_hint, title, evidence) = match sig.kind {
            SignalKind::Clear => {
                if let Some(Episode {
                    phase: Phase::Open { clear_since, .. },
                    last_signal,
                    ..
                }) = self.episodes.get_mut(&ekey)
                {
                    clear_since.get_or_insert(t);
                    *last_signal = (*last_signal).max(t);
                    self.mark(sig.stream, &ekey);
                }
                return None;
            }
            SignalKind::Anomalous {
                score,
                level,
                title,
                evidence,
            } => (score, level, title, evidence),
        };
        let level = level_hint.or_else(|| self.bands(sig.stream, sig.detector).level(score))?;
        self.mark(sig.stream, &ekey);
        let max_ids = self.cfg.max_event_ids;
        let now = self.now();
        match self.episodes.get_mut(&ekey) {
            Some(ep) if matches!(ep.phase, Phase::Open { .. }) => {
                let hold = self.cfg.resolve_after.as_secs() as i64;
                let Phase::Open {
                    clear_since,
                    escalations,
                    lower_since,
                } = &mut ep.phase
                else {
                    unreachable!()
                };
                *clear_since = None;
                ep.last_signal = ep.last_signal.max(t);
                if let Some(id) = sig.event_id {
                    push_capped(&mut ep.last.event_ids, id, max_ids);
                }
                ep.detector_level = level;
                let mut effective = level;
                for _ in 0..*escalations {
                    effective = effective.raised();
                }
                // Up at once; down only once the lower level has held for the hold time,
                // so an operator never sees a hazard "improve" while it is still rising
                // against a baseline that is catching up.
                let lower = effective < ep.last.level;
                if lower {
                    let since = *lower_since.get_or_insert(t);
                    if t - since < hold {
                        ep.last.evidence = evidence;
                        return None;
                    }
                }
                *lower_since = None;
                if effective == ep.last.level {
                    // Same level: refresh what the next message will show, publish nothing.
                    ep.last.evidence = evidence;
                    return None;
                }
                ep.last.level = effective;
                ep.last.evidence = evidence;
                ep.last.title = title;
                ep.last.route = self.cfg.route.route(effective, ep.region, &self.regions);
                ep.last.detected_at = now;
                ep.last.seq += 1;
                Some(ep.last.clone())
            }
            Some(Episode {
                phase: Phase::Cooldown { until },
                last,
                ..
            }) if t < *until && level <= last.level => None,
            _ => {
                let region = sig.region;
                let alert = Alert {
                    alert_id: format!("{ekey}:{t}"),
                    status: Status::Firing,
                    level,
                    stream: sig.stream.as_str().to_string(),
                    detector: sig.detector.to_string(),
                    subject: sig.subject,
                    title,
                    evidence,
                    first_event_ts: rfc3339(sig.ts),
                    detected_at: now,
                    event_ids: sig.event_id.into_iter().collect(),
                    route: self.cfg.route.route(level, region, &self.regions),
                    region_name: self.regions.display_name(region),
                    seq: 1,
                    actions: None,
                };
                self.open += 1;
                self.episodes.insert(
                    ekey,
                    Episode {
                        phase: Phase::Open {
                            clear_since: None,
                            escalations: 0,
                            lower_since: None,
                        },
                        last: alert.clone(),
                        region,
                        stream: sig.stream,
                        opened: t,
                        last_signal: t,
                        detector_level: level,
                    },
                );
                Some(alert)
            }
        }
    }

    /// Event time of `stream` reached `wm`: resolve, escalate, forget cooled episodes.
    pub fn on_watermark(
        &mut self,
        stream: Stream,
        wm: DateTime<FixedOffset>,
        out: &mut Vec<Alert>,
    ) {
        let w = wm.timestamp();
        let hold = self.cfg.resolve_after.as_secs() as i64;
        let stale = self.cfg.stale_after.as_secs() as i64;
        let esc = self.cfg.escalate_after.as_secs() as i64;
        let cool = self.cfg.cooldown.as_secs() as i64;
        let mut now = None;
        let mut forget = Vec::new();
        let mut changed = Vec::new();
        for (k, ep) in self.episodes.iter_mut().filter(|(_, e)| e.stream == stream) {
            let before = (ep.last.seq, escalation_count(&ep.phase));
            match &mut ep.phase {
                Phase::Cooldown { until } => {
                    if w >= *until {
                        forget.push(k.clone());
                    }
                }
                Phase::Open {
                    clear_since,
                    escalations,
                    ..
                } => {
                    let cleared = clear_since.is_some_and(|c| w - c >= hold);
                    if cleared || w - ep.last_signal >= stale {
                        ep.last.status = Status::Resolved;
                        ep.last.detected_at = now
                            .get_or_insert_with(|| {
                                self.clock
                                    .now()
                                    .to_rfc3339_opts(SecondsFormat::Millis, true)
                            })
                            .clone();
                        ep.last.seq += 1;
                        out.push(ep.last.clone());
                        ep.phase = Phase::Cooldown { until: w + cool };
                        self.open -= 1;
                    } else if clear_since.is_none()
                        && ep.last.level < Level::Red
                        && w - ep.opened >= esc * (i64::from(*escalations) + 1)
                    {
                        *escalations += 1;
                        let mut lvl = ep.detector_level;
                        for _ in 0..*escalations {
                            lvl = lvl.raised();
                        }
                        if lvl > ep.last.level {
                            ep.last.level = lvl;
                            ep.last.route = self.cfg.route.route(lvl, ep.region, &self.regions);
                            ep.last.detected_at = now
                                .get_or_insert_with(|| {
                                    self.clock
                                        .now()
                                        .to_rfc3339_opts(SecondsFormat::Millis, true)
                                })
                                .clone();
                            ep.last.seq += 1;
                            out.push(ep.last.clone());
                        }
                    }
                }
            }
            // An escalation step can move without a message (the level was already higher).
            if self.tracking && before != (ep.last.seq, escalation_count(&ep.phase)) {
                changed.push(k.clone());
            }
        }
        for k in forget {
            self.episodes.remove(&k);
            self.mark(stream, &k);
        }
        for k in changed {
            self.mark(stream, &k);
        }
    }
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
    use crate::detect::Evidence;

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

    #[test]
    fn detected_at_comes_from_the_injected_clock() {
        let (mut p, c) = policy();
        c.set(ts("2030-01-01T00:00:00Z").with_timezone(&chrono::Utc));
        let a = p.on_signal(sig(0, bad(Level::Blue))).unwrap();
        assert_eq!(a.detected_at, "2030-01-01T00:00:00.000Z");
    }
}
