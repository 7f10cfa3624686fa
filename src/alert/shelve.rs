//! Shelving and out-of-service (ISA-18.2 alarm management, issue #25 item 3): operators
//! silence a monitoring point or a whole site for a while, with a reason and an expiry.
//!
//! [`Shelves`] is the table of shelves in force, shared by the console (which writes
//! shelve/unshelve events to the actions topic and applies them, as every instance's
//! actions consumer does) and the pipeline, which screens each detector signal through
//! [`Shelves::screen`] before the alert policy sees it. So suppression happens where
//! signals become alerts, on every instance alike, and a restart rebuilds the table from
//! the actions topic before the first input.
//!
//! What a shelf does to a signal about its point (subject `sensor_id`) or site (subject
//! `site_id`):
//! - an anomalous signal reaches the policy as a *clear* one (and is counted in
//!   `riskstream_alerts_shelved_total`). A shelved point therefore raises nothing, and an
//!   episode already open when the shelf starts resolves by the policy's ordinary hold
//!   (`resolve_after`), as if its condition had cleared: the alarm leaves the operators'
//!   view (ISA-18.2), its record ends as every episode's does (a `resolved` message to
//!   every sink, its incident resolves), and nothing in the policy's state machine or
//!   changelog has to know about shelving.
//! - Expiry is judged by the signal's **event time**, not the wall clock: a reading taken
//!   before `until` stays silent even when a backlog delivers it later, and one taken
//!   after alarms even when processed late. That is the clock episodes already run on
//!   (watermarks, never the wall clock), and live input is held within
//!   `input.max_future_skew` of the wall clock, so for live data the two agree. A
//!   condition that persists past `until` alarms on its next anomalous signal.
//! - The physical alarm limits of `gas_lel` and `h2s_ppm` (the `threshold` detector on
//!   those kinds) are silenced only by a shelf the city's token made: a county's or
//!   township's shelf on such a point or site leaves them alarming. The console refuses
//!   such shelves up front where it knows the kinds; this rule holds even where it did not.
//!
//! Memory: one entry per shelf operators made (a handful); an entry is forgotten
//! [`KEEP_AFTER`] after its expiry or when unshelved.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::RwLock;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::signal::{Signal, SignalKind};

/// Sensor kinds whose physical alarm limits only the city may shelve.
pub const PHYSICAL_KINDS: &[&str] = &["gas_lel", "h2s_ppm"];

/// The detector that judges physical alarm limits.
const PHYSICAL_DETECTOR: &str = "threshold";

/// How long an expired shelf is kept: a backlog of readings taken before its expiry is
/// still judged by it (event time), and a backlog is not older than a day.
pub const KEEP_AFTER: chrono::Duration = chrono::Duration::hours(24);

/// ISA-18.2's two ways of taking a point out of alarming.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShelfKind {
    /// An operator's temporary silencing of a nuisance alarm.
    Shelved,
    /// Maintenance: the instrument is being worked on.
    OutOfService,
}

impl ShelfKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ShelfKind::Shelved => "shelved",
            ShelfKind::OutOfService => "out_of_service",
        }
    }
}

/// What a shelf covers: one monitoring point (`sensor_id`) or every signal of a site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShelfScope {
    Point,
    Site,
}

impl ShelfScope {
    /// The subject field a signal names this scope's target in.
    pub fn subject_field(self) -> &'static str {
        match self {
            ShelfScope::Point => "sensor_id",
            ShelfScope::Site => "site_id",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ShelfScope::Point => "point",
            ShelfScope::Site => "site",
        }
    }
}

/// One shelf in force, as the actions topic carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shelf {
    pub scope: ShelfScope,
    /// The point's `sensor_id` or the site's `site_id`.
    pub target: String,
    pub kind: ShelfKind,
    pub reason: String,
    /// The command center whose token shelved it.
    pub by_center: String,
    /// Made with the city's token: only such a shelf silences physical gas/H2S limits.
    pub by_city: bool,
    /// When it was made and when it ends (RFC 3339 on the wire).
    pub at: DateTime<Utc>,
    pub until: DateTime<Utc>,
}

impl Shelf {
    /// One shelf per point or site: a new one on the same target replaces it.
    pub fn id(&self) -> String {
        shelf_id(self.scope, &self.target)
    }

    /// Does this shelf silence `sig` (at the signal's event time)?
    fn covers(&self, sig: &Signal) -> bool {
        if sig.ts.with_timezone(&Utc) >= self.until {
            return false;
        }
        let named = sig
            .subject
            .get(self.scope.subject_field())
            .and_then(|v| v.as_str());
        if named != Some(self.target.as_str()) {
            return false;
        }
        self.by_city || !is_physical(sig)
    }
}

/// `point:S-1` or `site:SITE-1`: the shelf's key on the actions topic and in the API.
pub fn shelf_id(scope: ShelfScope, target: &str) -> String {
    format!("{}:{target}", scope.as_str())
}

/// A physical alarm limit of a gas or H2S point: the threshold detector on those kinds.
pub fn is_physical(sig: &Signal) -> bool {
    sig.detector == PHYSICAL_DETECTOR
        && sig
            .subject
            .get("kind")
            .and_then(|v| v.as_str())
            .is_some_and(|k| PHYSICAL_KINDS.contains(&k))
}

/// The shelves in force, by shelf id. Read once per signal batch by the pipeline; the
/// lock is skipped altogether while the table is empty (the usual case).
#[derive(Debug, Default)]
pub struct Shelves {
    by_id: RwLock<HashMap<String, Shelf>>,
    len: AtomicUsize,
}

impl Shelves {
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Shelf>> {
        self.by_id.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Shelf>> {
        self.by_id.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds or replaces a shelf; forgets shelves expired more than [`KEEP_AFTER`] before `now`.
    pub fn put(&self, s: Shelf, now: DateTime<Utc>) {
        let mut m = self.write();
        m.retain(|_, o| o.until + KEEP_AFTER > now);
        // A long-expired shelf replayed from the actions topic has nothing left to judge.
        if s.until + KEEP_AFTER > now {
            m.insert(s.id(), s);
        }
        self.len.store(m.len(), Ordering::Release);
    }

    /// Ends a shelf before its time; the removed shelf, if it was there.
    pub fn remove(&self, id: &str) -> Option<Shelf> {
        let mut m = self.write();
        let r = m.remove(id);
        self.len.store(m.len(), Ordering::Release);
        r
    }

    pub fn get(&self, id: &str) -> Option<Shelf> {
        self.read().get(id).cloned()
    }

    /// Shelves not expired at wall time `now`, soonest expiry first (what the console shows).
    pub fn active(&self, now: DateTime<Utc>) -> Vec<Shelf> {
        let mut v: Vec<Shelf> = self
            .read()
            .values()
            .filter(|s| s.until > now)
            .cloned()
            .collect();
        v.sort_by(|a, b| a.until.cmp(&b.until).then(a.target.cmp(&b.target)));
        v
    }

    /// Is `sig` silenced, and by which kind of shelf? A point's own shelf wins over its
    /// site's (its kind is the more specific statement).
    pub fn holds(&self, sig: &Signal) -> Option<ShelfKind> {
        if self.len.load(Ordering::Acquire) == 0 {
            return None;
        }
        let m = self.read();
        [ShelfScope::Point, ShelfScope::Site]
            .into_iter()
            .filter_map(|scope| {
                let target = sig.subject.get(scope.subject_field())?.as_str()?;
                m.get(&shelf_id(scope, target))
            })
            .find(|s| s.covers(sig))
            .map(|s| s.kind)
    }

    /// The signal the policy should see: an anomalous signal of a shelved point becomes
    /// a clear one (see the module header); the kind of shelf that silenced it, if any.
    pub fn screen(&self, mut sig: Signal) -> (Signal, Option<ShelfKind>) {
        if !matches!(sig.kind, SignalKind::Anomalous { .. }) {
            return (sig, None);
        }
        let held = self.holds(&sig);
        if held.is_some() {
            sig.kind = SignalKind::Clear;
        }
        (sig, held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::Stream;
    use crate::signal::Evidence;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn sig(detector: &'static str, sensor: &str, kind: &str, ts: &str) -> Signal {
        let subject = serde_json::json!({"sensor_id": sensor, "site_id": "SITE-1", "kind": kind});
        Signal {
            stream: Stream::Sensors,
            detector,
            key: sensor.into(),
            subject: subject.as_object().unwrap().clone(),
            region: crate::regions::RegionRef {
                township: None,
                county: None,
                unlisted: false,
            },
            ts: DateTime::parse_from_rfc3339(ts).unwrap(),
            event_id: None,
            kind: SignalKind::Anomalous {
                score: 0.9,
                level: None,
                title: "t".into(),
                evidence: Evidence::default(),
            },
        }
    }

    fn shelf(scope: ShelfScope, target: &str, by_city: bool) -> Shelf {
        Shelf {
            scope,
            target: target.into(),
            kind: ShelfKind::Shelved,
            reason: "nuisance".into(),
            by_center: if by_city { "330500" } else { "330503" }.into(),
            by_city,
            at: t("2026-11-26T00:00:00Z"),
            until: t("2026-11-26T08:00:00Z"),
        }
    }

    const DURING: &str = "2026-11-26T07:59:59Z";
    const AFTER: &str = "2026-11-26T08:00:00Z";

    #[test]
    fn a_shelved_point_is_silent_until_its_expiry_by_event_time() {
        let s = Shelves::new();
        s.put(shelf(ShelfScope::Point, "S-1", false), t(DURING));
        let (out, held) = s.screen(sig("ewma_z", "S-1", "temperature", DURING));
        assert_eq!(held, Some(ShelfKind::Shelved));
        assert_eq!(
            out.kind,
            SignalKind::Clear,
            "the policy sees the condition clear"
        );
        let (out, held) = s.screen(sig("ewma_z", "S-1", "temperature", AFTER));
        assert_eq!(held, None, "alarms again from `until` on");
        assert!(matches!(out.kind, SignalKind::Anomalous { .. }));
        assert_eq!(s.holds(&sig("ewma_z", "S-2", "temperature", DURING)), None);
    }

    #[test]
    fn a_site_shelf_covers_its_points_and_a_point_shelf_wins() {
        let s = Shelves::new();
        s.put(shelf(ShelfScope::Site, "SITE-1", true), t(DURING));
        let mut p = shelf(ShelfScope::Point, "S-1", true);
        p.kind = ShelfKind::OutOfService;
        s.put(p, t(DURING));
        assert_eq!(
            s.holds(&sig("cusum", "S-1", "pressure", DURING)),
            Some(ShelfKind::OutOfService)
        );
        assert_eq!(
            s.holds(&sig("cusum", "S-9", "pressure", DURING)),
            Some(ShelfKind::Shelved)
        );
        s.remove("site:SITE-1");
        assert_eq!(s.holds(&sig("cusum", "S-9", "pressure", DURING)), None);
    }

    #[test]
    fn physical_gas_and_h2s_limits_need_the_citys_shelf() {
        let s = Shelves::new();
        s.put(shelf(ShelfScope::Site, "SITE-1", false), t(DURING));
        for kind in PHYSICAL_KINDS {
            assert_eq!(s.holds(&sig("threshold", "S-1", kind, DURING)), None);
            // Their statistical detectors are not physical limits.
            assert!(s.holds(&sig("ewma_z", "S-1", kind, DURING)).is_some());
        }
        assert!(s
            .holds(&sig("threshold", "S-1", "pressure", DURING))
            .is_some());
        s.put(shelf(ShelfScope::Site, "SITE-1", true), t(DURING));
        assert!(s
            .holds(&sig("threshold", "S-1", "gas_lel", DURING))
            .is_some());
    }

    #[test]
    fn clear_signals_pass_and_expired_shelves_are_forgotten_a_day_later() {
        let s = Shelves::new();
        s.put(shelf(ShelfScope::Point, "S-1", true), t(DURING));
        let mut c = sig("ewma_z", "S-1", "temperature", DURING);
        c.kind = SignalKind::Clear;
        assert_eq!(s.screen(c).1, None);
        assert_eq!(s.active(t(DURING)).len(), 1);
        assert!(s.active(t(AFTER)).is_empty(), "not shown once expired");
        let mut later = shelf(ShelfScope::Point, "S-2", true);
        later.until = t("2026-11-27T09:00:00Z");
        s.put(later, t("2026-11-27T08:00:01Z"));
        assert!(s.get("point:S-1").is_none());
        assert!(s.get("point:S-2").is_some());
        s.put(
            shelf(ShelfScope::Point, "S-3", true),
            t("2026-11-27T08:00:01Z"),
        );
        assert!(
            s.get("point:S-3").is_none(),
            "replayed long after its expiry"
        );
    }
}
