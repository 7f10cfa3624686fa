//! Alarm-management KPIs (ISA-18.2 / IEC 62682 / EEMUA 191), per command center: alarms
//! per 10 minutes, floods (more than 10 in 10 minutes) and the time spent in them,
//! chattering points (3 or more activations of one point within 60 s), stale alarms
//! (open more than 24 h) and the top-10 bad actors of the last 7 days.
//!
//! An *activation* is an annunciation: an episode's opening message (`firing`, seq 1),
//! which a re-open after a cooldown also is. Level changes and escalations are not new
//! alarms. Each activation counts at every center of its route (what that center's
//! operators were shown). A *point* is what the alarm is about, `stream:key` (a sensor,
//! a site, a suspect, a region), across detectors: three detectors of one sensor firing
//! within a minute are one chattering point.
//!
//! Time is event time, so replay and live give the same figures: an activation counts at
//! its signal's time, a center's clock is the newest activation or watermark it has seen,
//! and an activation behind that clock (a late upload) counts when it was annunciated,
//! at the clock. Streams replayed one file after the other are thus judged against the
//! first file's end; `riskstream backtest` sorts the activations first ([`summarize`]).
//!
//! Memory is bounded: per center 10 minute-buckets and the newest 11 activation times
//! (exactly what decides a flood); per point the last two activation times, only while
//! they are within 60 s (swept each event-time minute); per UTC day a map of at most
//! [`MAX_POINTS_PER_DAY`] points, 7 days kept. A full day map drops its points with the
//! fewest activations (lossy counting: a dropped point loses at most that day's floor,
//! a handful, while a bad actor has hundreds). Stale alarms are counted from the alert
//! policy's open episodes once per event-time minute ([`KpiTracker::stale_due`]).
//! Per activation the work is O(1) (plus an amortized sweep of a full day map).

use std::collections::{HashMap, VecDeque};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use super::{Alert, Status};
use crate::regions::{RegionLevel, Regions};

/// The rolling window of the alarm rate and of floods.
pub const WINDOW_S: i64 = 600;
/// A flood: more than this many activations within [`WINDOW_S`] (ISA-18.2: >10 per
/// operator per 10 minutes).
pub const FLOOD_MORE_THAN: usize = 10;
/// ISA-18.2's "manageable" rate: about one alarm per operator per 10 minutes.
pub const MANAGEABLE_PER_10M: u32 = 1;
/// Chattering: this many activations of one point ...
pub const CHATTER_COUNT: usize = 3;
/// ... within less than this many seconds.
pub const CHATTER_WINDOW_S: i64 = 60;
/// A stale alarm has been open longer than this.
pub const STALE_AFTER_S: i64 = 24 * 3600;
/// Bad actors are ranked over this many UTC days (the current one included).
pub const BAD_ACTOR_DAYS: i64 = 7;
/// How many bad actors a view lists.
pub const TOP: usize = 10;
/// Distinct points kept per day; a day's map beyond it sheds its smallest counts.
pub const MAX_POINTS_PER_DAY: usize = 4096;
/// How many stale alarms are kept for the views (the counts are exact).
const STALE_LISTED: usize = 50;

const MINUTES: usize = (WINDOW_S / 60) as usize;

/// One command center's figures, cumulative since start (counters) or current (gauges).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CenterFigures {
    /// Activations routed to the center.
    pub activations: u64,
    /// Activations in the last 10 event-time minutes (the current, partial minute and the
    /// nine before).
    pub rate_10m: u32,
    /// Whether more than 10 activations fell within the last 600 s.
    pub in_flood: bool,
    /// Floods begun.
    pub floods: u64,
    /// Event-time seconds spent in a flood.
    pub flood_seconds: u64,
    /// Activations that were a point's third (or later) within 60 s.
    pub chatter: u64,
    /// Open alarms routed to the center open longer than 24 h.
    pub stale: u32,
}

#[derive(Debug, Default)]
struct Center {
    /// Activations per event-time minute: slot `m % 10` holds minute `m`'s count.
    minutes: [(i64, u32); MINUTES],
    /// The newest `FLOOD_MORE_THAN + 1` activation times: the window holds more than 10
    /// exactly while the oldest of them is within it.
    recent: VecDeque<i64>,
    /// Event time up to which `flood_seconds` is accumulated.
    clock: i64,
    figures: CenterFigures,
}

impl Center {
    fn new(clock: i64) -> Self {
        Self {
            clock,
            ..Default::default()
        }
    }

    fn in_flood(&self, t: i64) -> bool {
        self.recent.len() > FLOOD_MORE_THAN
            && self.recent.front().is_some_and(|&o| t - o < WINDOW_S)
    }

    /// Moves the clock to `t`, adding the flood seconds up to then. The flood in progress
    /// ends when its oldest activation of the 11 leaves the window, unless a newer one
    /// comes first (which `activate` handles after advancing).
    fn advance(&mut self, t: i64) {
        if t <= self.clock {
            return;
        }
        if self.in_flood(self.clock) {
            let end = self.recent.front().map_or(t, |&o| o + WINDOW_S);
            self.figures.flood_seconds += (t.min(end) - self.clock) as u64;
        }
        self.clock = t;
        self.figures.in_flood = self.in_flood(t);
        self.figures.rate_10m = self.rate(t);
    }

    fn rate(&self, t: i64) -> u32 {
        let m = t.div_euclid(60);
        self.minutes
            .iter()
            .filter(|(min, _)| *min > m - MINUTES as i64 && *min <= m)
            .map(|(_, n)| n)
            .sum()
    }

    /// One activation at `t`, or at the clock if `t` is behind it. Returns whether a
    /// flood began.
    fn activate(&mut self, t: i64) -> bool {
        let t = t.max(self.clock);
        self.advance(t);
        let m = t.div_euclid(60);
        let slot = &mut self.minutes[m.rem_euclid(MINUTES as i64) as usize];
        if slot.0 != m {
            *slot = (m, 0);
        }
        slot.1 += 1;
        let was = self.in_flood(t);
        self.recent.push_back(t);
        if self.recent.len() > FLOOD_MORE_THAN + 1 {
            self.recent.pop_front();
        }
        let (now, rate) = (self.in_flood(t), self.rate(t));
        let f = &mut self.figures;
        f.activations += 1;
        f.in_flood = now;
        f.floods += u64::from(now && !was);
        f.rate_10m = rate;
        now && !was
    }
}

/// One point's activations on one UTC day.
#[derive(Debug, Clone, Default)]
struct PointDay {
    activations: u32,
    chatter: u32,
    /// The lowest center of its latest route (township, or county): where it is.
    home: String,
    detector: String,
}

#[derive(Debug, Default)]
struct Day {
    day: i64,
    points: HashMap<String, PointDay>,
    /// Counts at or below this were shed from a full map (0: nothing shed).
    shed_below: u32,
}

impl Day {
    /// Makes room for one more point: sheds the smallest counts, raising the floor
    /// until something goes (each point can be shed once, so this is amortized O(1)).
    fn make_room(&mut self) {
        while self.points.len() >= MAX_POINTS_PER_DAY {
            self.shed_below += 1;
            let floor = self.shed_below;
            self.points.retain(|_, p| p.activations > floor);
        }
    }
}

/// A stale alarm, as the views list it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StaleAlarm {
    pub alert_id: String,
    pub title: String,
    pub level: super::Level,
    pub route: Vec<String>,
    pub first_event_ts: String,
    /// Seconds open, by the episode's event-time clock.
    pub open_s: i64,
}

/// One bad actor (or chattering point) row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PointRow {
    /// `stream:key`, e.g. `sensors:S-330503-0042-GAS1`.
    pub point: String,
    pub home: String,
    /// The detector of its latest activation.
    pub detector: String,
    pub activations: u64,
    pub chatter: u64,
}

/// What `/api/kpi?center=CODE` shows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KpiView {
    pub center: String,
    /// The center's event-time clock (RFC 3339), or None before its first activation.
    pub as_of: Option<String>,
    #[serde(flatten)]
    pub figures: CenterFigures,
    /// The ISA-18.2 reference values the figures are read against.
    pub reference: Reference,
    pub bad_actors: Vec<PointRow>,
    pub chattering: Vec<PointRow>,
    pub stale_alarms: Vec<StaleAlarm>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reference {
    pub manageable_per_10m: u32,
    pub flood_more_than_per_10m: usize,
    pub chatter: String,
    pub stale_after_h: i64,
    pub bad_actor_days: i64,
}

fn reference() -> Reference {
    Reference {
        manageable_per_10m: MANAGEABLE_PER_10M,
        flood_more_than_per_10m: FLOOD_MORE_THAN,
        chatter: format!("{CHATTER_COUNT} activations of one point within {CHATTER_WINDOW_S} s"),
        stale_after_h: STALE_AFTER_S / 3600,
        bad_actor_days: BAD_ACTOR_DAYS,
    }
}

/// The KPI state of one instance; see the module docs.
#[derive(Debug, Default)]
pub struct KpiTracker {
    centers: HashMap<String, Center>,
    /// Point -> its last (up to) `CHATTER_COUNT - 1` activation times, oldest first.
    recent_by_point: HashMap<String, VecDeque<i64>>,
    days: VecDeque<Day>,
    stale: Vec<StaleAlarm>,
    /// The newest event time seen (activations and watermarks).
    clock: i64,
    /// The event-time minute of the last sweep / stale count.
    swept_minute: Option<i64>,
    /// Centers whose figures changed since [`Self::take_changed`].
    changed: Vec<String>,
}

/// `stream:key` of an alert id `stream:detector:key:t` (a key may hold ':').
fn point_of(alert_id: &str) -> Option<(String, &str)> {
    let ekey = alert_id.rsplit_once(':')?.0;
    let mut parts = ekey.splitn(3, ':');
    let (stream, detector, key) = (parts.next()?, parts.next()?, parts.next()?);
    Some((format!("{stream}:{key}"), detector))
}

/// An activation: the opening message of an episode.
pub fn is_activation(a: &Alert) -> bool {
    a.status == Status::Firing && a.seq == 1
}

impl KpiTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts `a` if it is an activation ([`is_activation`]), at its first event's time.
    pub fn observe(&mut self, a: &Alert) {
        if !is_activation(a) {
            return;
        }
        let Ok(t) = DateTime::parse_from_rfc3339(&a.first_event_ts) else {
            return;
        };
        let Some((point, detector)) = point_of(&a.alert_id) else {
            return;
        };
        self.activate(t.timestamp(), point, detector, &a.route);
    }

    /// One activation of `point` at event time `t`, shown to `route`'s centers.
    pub fn activate(&mut self, t: i64, point: String, detector: &str, route: &[String]) {
        self.clock = self.clock.max(t);
        let chatter = self.chatter(&point, t);
        for c in route {
            let center = self
                .centers
                .entry(c.clone())
                .or_insert_with(|| Center::new(t));
            center.activate(t);
            center.figures.chatter += u64::from(chatter);
            self.changed.push(c.clone());
        }
        let home = route.first().cloned().unwrap_or_default();
        if let Some(day) = self.day_mut(t) {
            if !day.points.contains_key(&point) {
                day.make_room();
            }
            let p = day.points.entry(point).or_default();
            p.activations += 1;
            p.chatter += u32::from(chatter);
            p.home = home;
            detector.clone_into(&mut p.detector);
        }
    }

    /// Notes `point`'s activation at `t`; whether it is its third within 60 s.
    fn chatter(&mut self, point: &str, t: i64) -> bool {
        let times = match self.recent_by_point.get_mut(point) {
            Some(v) => v,
            None => self.recent_by_point.entry(point.to_string()).or_default(),
        };
        let chatter = times.len() == CHATTER_COUNT - 1
            && times.front().is_some_and(|&o| t - o < CHATTER_WINDOW_S);
        times.push_back(t);
        if times.len() > CHATTER_COUNT - 1 {
            times.pop_front();
        }
        chatter
    }

    /// The map of `t`'s UTC day, creating it (and dropping days older than the window);
    /// None for a day already out of the window.
    fn day_mut(&mut self, t: i64) -> Option<&mut Day> {
        let d = t.div_euclid(86_400);
        if self.days.back().is_none_or(|b| b.day < d) {
            self.days.push_back(Day {
                day: d,
                ..Default::default()
            });
        }
        let newest = self.days.back().map_or(d, |b| b.day);
        while self
            .days
            .front()
            .is_some_and(|f| f.day <= newest - BAD_ACTOR_DAYS)
        {
            self.days.pop_front();
        }
        if d <= newest - BAD_ACTOR_DAYS {
            return None;
        }
        match self.days.iter().position(|x| x.day >= d) {
            Some(i) if self.days[i].day == d => Some(&mut self.days[i]),
            Some(i) => {
                self.days.insert(
                    i,
                    Day {
                        day: d,
                        ..Default::default()
                    },
                );
                Some(&mut self.days[i])
            }
            None => None,
        }
    }

    /// Event time reached `t` (a stream's watermark): every center's clock moves, so
    /// floods end and the 10-minute rates fall without a new activation. O(centers),
    /// called once per watermark step.
    pub fn advance(&mut self, t: i64) {
        self.clock = self.clock.max(t);
        for (code, c) in &mut self.centers {
            let before = (
                c.figures.rate_10m,
                c.figures.in_flood,
                c.figures.flood_seconds,
            );
            c.advance(t);
            if before
                != (
                    c.figures.rate_10m,
                    c.figures.in_flood,
                    c.figures.flood_seconds,
                )
            {
                self.changed.push(code.clone());
            }
        }
    }

    /// The event time to count stale alarms at, once per event-time minute (None: not
    /// due). Also sweeps the chatter times that can no longer make a point chatter.
    pub fn stale_due(&mut self) -> Option<i64> {
        let m = self.clock.div_euclid(60);
        if self.swept_minute == Some(m) || self.clock == 0 {
            return None;
        }
        self.swept_minute = Some(m);
        let oldest = self.clock - CHATTER_WINDOW_S;
        self.recent_by_point
            .retain(|_, v| v.back().is_some_and(|&t| t > oldest));
        Some(self.clock)
    }

    /// The open alarms now older than [`STALE_AFTER_S`] (from the alert policy): sets
    /// each center's stale count.
    pub fn set_stale(&mut self, stale: Vec<StaleAlarm>) {
        let mut counts: HashMap<&str, u32> = HashMap::new();
        for s in &stale {
            for c in &s.route {
                *counts.entry(c.as_str()).or_default() += 1;
            }
        }
        for (code, c) in &mut self.centers {
            let n = counts.get(code.as_str()).copied().unwrap_or(0);
            if c.figures.stale != n {
                c.figures.stale = n;
                self.changed.push(code.clone());
            }
        }
        for (code, n) in counts {
            if !self.centers.contains_key(code) {
                let mut c = Center::new(self.clock);
                c.figures.stale = n;
                self.centers.insert(code.to_string(), c);
                self.changed.push(code.to_string());
            }
        }
        let mut stale = stale;
        stale.sort_by(|a, b| b.open_s.cmp(&a.open_s).then(a.alert_id.cmp(&b.alert_id)));
        stale.truncate(STALE_LISTED);
        self.stale = stale;
    }

    /// The centers whose figures changed since the last call, with their figures.
    pub fn take_changed(&mut self) -> Vec<(String, CenterFigures)> {
        let mut codes = std::mem::take(&mut self.changed);
        codes.sort_unstable();
        codes.dedup();
        codes
            .into_iter()
            .filter_map(|c| {
                let f = self.centers.get(&c)?.figures.clone();
                Some((c, f))
            })
            .collect()
    }

    pub fn figures(&self, center: &str) -> CenterFigures {
        self.centers
            .get(center)
            .map(|c| c.figures.clone())
            .unwrap_or_default()
    }

    /// The points at or under `center` (by their home) over the last 7 days, summed.
    fn points_under(&self, center: &str, regions: &Regions) -> Vec<PointRow> {
        let mut by: HashMap<&str, PointRow> = HashMap::new();
        for day in &self.days {
            for (k, p) in &day.points {
                if !within(&p.home, center, regions) {
                    continue;
                }
                let row = by.entry(k.as_str()).or_insert_with(|| PointRow {
                    point: k.clone(),
                    home: p.home.clone(),
                    detector: p.detector.clone(),
                    activations: 0,
                    chatter: 0,
                });
                row.activations += u64::from(p.activations);
                row.chatter += u64::from(p.chatter);
                if day.day == self.days.back().map_or(day.day, |b| b.day) {
                    row.detector.clone_from(&p.detector);
                }
            }
        }
        by.into_values().collect()
    }

    /// The KPI page of `center`.
    pub fn view(&self, center: &str, regions: &Regions) -> KpiView {
        let rows = self.points_under(center, regions);
        let rank = |mut v: Vec<PointRow>, key: fn(&PointRow) -> u64| {
            v.retain(|r| key(r) > 0);
            v.sort_by(|a, b| key(b).cmp(&key(a)).then(a.point.cmp(&b.point)));
            v.truncate(TOP);
            v
        };
        let c = self.centers.get(center);
        KpiView {
            center: center.to_string(),
            as_of: c.and_then(|c| rfc3339(c.clock)),
            figures: self.figures(center),
            reference: reference(),
            bad_actors: rank(rows.clone(), |r| r.activations),
            chattering: rank(rows, |r| r.chatter),
            stale_alarms: self
                .stale
                .iter()
                .filter(|s| s.route.iter().any(|r| r == center))
                .take(TOP * 2)
                .cloned()
                .collect(),
        }
    }
}

fn rfc3339(t: i64) -> Option<String> {
    DateTime::<Utc>::from_timestamp(t, 0).map(|d| d.to_rfc3339_opts(SecondsFormat::Secs, true))
}

/// Whether a point at home center `home` lies at or under `center`.
fn within(home: &str, center: &str, regions: &Regions) -> bool {
    match regions.tier(center) {
        Some(RegionLevel::City) => true,
        Some(RegionLevel::County) => {
            home == center
                || regions
                    .resolve(home)
                    .and_then(|r| regions.county_code(r))
                    .is_some_and(|c| c == center)
        }
        _ => home == center,
    }
}

/// One center's figures over a whole replay ([`summarize`]).
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct KpiSummary {
    pub center: String,
    pub activations: u64,
    /// Tumbling 10-minute windows from the first activation to the last (empty ones count).
    pub windows: usize,
    pub per_10m_p50: u32,
    pub per_10m_max: u32,
    pub floods: u64,
    pub flood_seconds: u64,
    pub chatter: u64,
}

/// The KPIs of a finished replay's alerts, per center, busiest first (by the worst 10
/// minutes, then by activations). The activations are taken in event-time order, so
/// streams replayed file by file are judged as if they had run together.
pub fn summarize(alerts: &[Alert]) -> Vec<KpiSummary> {
    let mut acts: Vec<(i64, &Alert)> = alerts
        .iter()
        .filter(|a| is_activation(a))
        .filter_map(|a| {
            Some((
                DateTime::parse_from_rfc3339(&a.first_event_ts)
                    .ok()?
                    .timestamp(),
                a,
            ))
        })
        .collect();
    acts.sort_by_key(|(t, _)| *t);
    let Some(&(first, _)) = acts.first() else {
        return Vec::new();
    };
    let last = acts.last().map_or(first, |(t, _)| *t);
    let windows = ((last - first) / WINDOW_S + 1) as usize;
    let mut tracker = KpiTracker::new();
    let mut per_window: HashMap<&str, Vec<u32>> = HashMap::new();
    for (t, a) in &acts {
        tracker.observe(a);
        for c in &a.route {
            let w = per_window
                .entry(c.as_str())
                .or_insert_with(|| vec![0; windows]);
            w[((t - first) / WINDOW_S) as usize] += 1;
        }
    }
    // Past the last activation: every flood runs to its end.
    tracker.advance(last + WINDOW_S);
    let mut out: Vec<KpiSummary> = per_window
        .into_iter()
        .map(|(c, mut w)| {
            w.sort_unstable();
            let f = tracker.figures(c);
            KpiSummary {
                center: c.to_string(),
                activations: f.activations,
                windows,
                per_10m_p50: w[w.len() / 2],
                per_10m_max: w.last().copied().unwrap_or(0),
                floods: f.floods,
                flood_seconds: f.flood_seconds,
                chatter: f.chatter,
            }
        })
        .collect();
    out.sort_by(|a, b| {
        (b.per_10m_max, b.activations, &a.center).cmp(&(a.per_10m_max, a.activations, &b.center))
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(c: &[&str]) -> Vec<String> {
        c.iter().map(|s| s.to_string()).collect()
    }

    fn fire(k: &mut KpiTracker, t: i64, point: &str) {
        k.activate(
            t,
            point.to_string(),
            "threshold",
            &route(&["330503101", "330503", "330500"]),
        );
    }

    #[test]
    fn eleven_in_ten_minutes_is_a_flood_for_the_seconds_worked_by_hand() {
        let mut k = KpiTracker::new();
        // 11 activations 50 s apart, from 1000 to 1500: the 11th makes 11 within 600 s.
        for i in 0..11 {
            fire(&mut k, 1000 + 50 * i, &format!("sensors:S{i}"));
        }
        let f = k.figures("330500");
        assert!(f.in_flood);
        assert_eq!((f.floods, f.flood_seconds, f.rate_10m), (1, 0, 11));
        // The flood lasts until the first (t=1000) leaves the window: 1600, 100 s in all.
        k.advance(1599);
        assert_eq!(k.figures("330500").flood_seconds, 99);
        assert!(k.figures("330500").in_flood);
        k.advance(5000);
        let f = k.figures("330500");
        assert!(!f.in_flood);
        assert_eq!((f.floods, f.flood_seconds), (1, 100));
        assert_eq!(f.rate_10m, 0, "nothing in the last 10 minutes at t=5000");
        assert_eq!(f.activations, 11);
    }

    #[test]
    fn eleven_spread_over_exactly_600_s_is_no_flood() {
        let mut k = KpiTracker::new();
        for i in 0..11 {
            fire(&mut k, 60 * i, &format!("sensors:S{i}"));
        }
        k.advance(10_000);
        let f = k.figures("330503");
        assert_eq!((f.floods, f.flood_seconds, f.in_flood), (0, 0, false));
    }

    #[test]
    fn a_flood_extends_while_activations_keep_coming() {
        let mut k = KpiTracker::new();
        // 11 at t=0 (one flood begins), then one more at 300: the 11 newest now start at
        // t=0 (2nd), so the flood ends at 600; one at 650 has only 2 in its window.
        for i in 0..11 {
            fire(&mut k, 0, &format!("sensors:S{i}"));
        }
        fire(&mut k, 300, "sensors:S11");
        fire(&mut k, 650, "sensors:S12");
        k.advance(2000);
        let f = k.figures("330500");
        assert_eq!((f.floods, f.flood_seconds), (1, 600));
        // A second burst later is a second flood.
        for i in 0..11 {
            fire(&mut k, 3000 + i, &format!("sensors:T{i}"));
        }
        k.advance(4000);
        let f = k.figures("330500");
        assert_eq!((f.floods, f.flood_seconds), (2, 600 + 600 - 10));
    }

    #[test]
    fn three_activations_in_59_s_chatter_in_61_s_not() {
        let mut k = KpiTracker::new();
        fire(&mut k, 100, "sensors:A");
        fire(&mut k, 130, "sensors:A");
        fire(&mut k, 159, "sensors:A");
        assert_eq!(k.figures("330503101").chatter, 1);
        fire(&mut k, 1000, "sensors:B");
        fire(&mut k, 1030, "sensors:B");
        fire(&mut k, 1061, "sensors:B");
        assert_eq!(
            k.figures("330503101").chatter,
            1,
            "61 s is not within a minute"
        );
        // A fourth of A soon after is one more chattering activation.
        fire(&mut k, 170, "sensors:A");
        assert_eq!(k.figures("330503101").chatter, 2);
        let regions = crate::regions::demo();
        let v = k.view("330500", &regions);
        assert_eq!(v.chattering.len(), 1);
        assert_eq!(
            (v.chattering[0].point.as_str(), v.chattering[0].chatter),
            ("sensors:A", 2)
        );
    }

    #[test]
    fn chatter_times_are_swept_after_a_minute() {
        let mut k = KpiTracker::new();
        fire(&mut k, 100, "sensors:A");
        fire(&mut k, 130, "sensors:A");
        k.advance(200);
        assert!(k.stale_due().is_some());
        assert!(k.recent_by_point.is_empty());
        assert!(k.stale_due().is_none(), "once per event-time minute");
    }

    #[test]
    fn bad_actors_rank_seven_days_under_the_center() {
        let regions = crate::regions::demo();
        let mut k = KpiTracker::new();
        let day = 86_400;
        // A: 5 activations 8 days ago (out of the window) and 2 today; B: 3 over the week;
        // C in another county: 4.
        for i in 0..5 {
            fire(&mut k, 20 * day + i * 3600, "sensors:A");
        }
        for i in 0..3 {
            fire(&mut k, 24 * day + i * 3600, "sensors:B");
        }
        for i in 0..2 {
            fire(&mut k, 28 * day + i * 3600, "sensors:A");
        }
        for i in 0..4 {
            k.activate(
                28 * day + i * 3600,
                "fraud:phone:1".into(),
                "entity_burst",
                &route(&["330521102", "330521"]),
            );
        }
        let v = k.view("330503", &regions);
        let got: Vec<_> = v
            .bad_actors
            .iter()
            .map(|r| (r.point.as_str(), r.activations))
            .collect();
        assert_eq!(got, [("sensors:B", 3), ("sensors:A", 2)]);
        let v = k.view("330500", &regions);
        let got: Vec<_> = v
            .bad_actors
            .iter()
            .map(|r| (r.point.as_str(), r.activations))
            .collect();
        assert_eq!(
            got,
            [("fraud:phone:1", 4), ("sensors:B", 3), ("sensors:A", 2)]
        );
        assert_eq!(v.bad_actors[0].home, "330521102");
    }

    #[test]
    fn a_full_day_sheds_its_smallest_counts() {
        let mut k = KpiTracker::new();
        fire(&mut k, 10, "sensors:BIG");
        fire(&mut k, 11, "sensors:BIG");
        for i in 0..MAX_POINTS_PER_DAY {
            fire(&mut k, 100 + i as i64, &format!("sensors:P{i}"));
        }
        let d = k.days.back().unwrap();
        assert!(d.points.len() < MAX_POINTS_PER_DAY);
        assert_eq!(d.points["sensors:BIG"].activations, 2);
        assert_eq!(d.shed_below, 1);
    }

    #[test]
    fn stale_counts_per_center() {
        let mut k = KpiTracker::new();
        fire(&mut k, 100, "sensors:A");
        let s = |id: &str, r: &[&str]| StaleAlarm {
            alert_id: id.into(),
            title: "t".into(),
            level: crate::alert::Level::Red,
            route: route(r),
            first_event_ts: String::new(),
            open_s: STALE_AFTER_S + 1,
        };
        k.set_stale(vec![s("a", &["330503101", "330503"]), s("b", &["330521"])]);
        let _ = k.take_changed();
        assert_eq!(k.figures("330503").stale, 1);
        assert_eq!(k.figures("330500").stale, 0);
        assert_eq!(k.figures("330521").stale, 1);
        k.set_stale(Vec::new());
        let changed: Vec<_> = k.take_changed().into_iter().map(|(c, _)| c).collect();
        assert_eq!(changed, ["330503", "330503101", "330521"]);
        assert_eq!(k.figures("330521").stale, 0);
    }

    #[test]
    fn a_late_activation_counts_when_annunciated() {
        let mut k = KpiTracker::new();
        fire(&mut k, 5000, "sensors:A");
        fire(&mut k, 100, "sensors:B");
        assert_eq!(k.figures("330500").rate_10m, 2);
    }

    #[test]
    fn summary_of_a_replay() {
        let mk = |t: i64, id: &str, seq: u32| Alert {
            alert_id: format!("sensors:threshold:{id}:{t}"),
            status: Status::Firing,
            level: crate::alert::Level::Red,
            stream: "sensors".into(),
            detector: "threshold".into(),
            subject: Default::default(),
            title: String::new(),
            evidence: Default::default(),
            first_event_ts: rfc3339(t).unwrap(),
            detected_at: String::new(),
            event_ids: Vec::new(),
            route: route(&["330503101", "330500"]),
            region_name: String::new(),
            seq,
            incident_id: String::new(),
            actions: None,
        };
        // Windows from 1_000_000: [0,600) holds 3, [600,1200) 0, [1200,1800) 1; a level
        // change (seq 2) is no activation.
        let alerts = vec![
            mk(1_000_000 + 1300, "C", 1),
            mk(1_000_000, "A", 1),
            mk(1_000_000 + 10, "A", 2),
            mk(1_000_000 + 20, "B", 1),
            mk(1_000_000 + 30, "B", 1),
        ];
        let s = summarize(&alerts);
        assert_eq!(s.len(), 2);
        let city = s.iter().find(|x| x.center == "330500").unwrap();
        assert_eq!(
            (
                city.activations,
                city.windows,
                city.per_10m_p50,
                city.per_10m_max
            ),
            (4, 3, 1, 3)
        );
        assert_eq!((city.floods, city.chatter), (0, 0));
    }
}
