//! `rate_spike` (incidents, fraud): the count of events in a tumbling window is improbably
//! high under a Poisson (or negative-binomial) model of the seasonal baseline, evaluated
//! per township, per county and for the city at once, so that a county-wide rise that no
//! single township shows is caught.
//!
//! Windows are aligned to the epoch and closed by the watermark (never the wall clock),
//! including empty windows, which teach the baseline that quiet is normal.
//!
//! Baseline: `λ = level × season[slot]`, learned online (multiplicative Holt-Winters
//! without trend). `slot` is the hour of the week (weekday × 24 + hour, 168 slots) of the
//! window's start in the city's local time; the offset is taken from the events' own `ts`
//! (`+08:00` in the demo city). At each close the count is first capped at
//! `λ + 3σ + 1` (σ the model's standard deviation at λ) so a surge does not teach itself
//! as normal, then the level learns the deseasonalized count,
//! `level += baseline_weight × (x / season[slot] - level)` (the plain EWMA of counts
//! while every factor is 1), and `season[slot] += seasonal_weight × (x / level - season[slot])`, clamped to
//! [0.05, 20]; the same hour on the other six weekdays moves too, at `daily_share` of that
//! weight, since a slot of the week recurs only weekly and the daily shape must not take
//! weeks to learn. Factors start at 1.0, so until a slot has been seen the model is the plain
//! level; `seasonal_weight = 0` turns seasonality off.
//!
//! At a window close: `p = P(X >= count)` under `Poisson(λ)` or, with
//! `model = "negative_binomial"`, under the negative binomial of mean λ and dispersion
//! `r` (variance `λ + λ²/r`: for clumped reports such as fraud campaigns), both from
//! statrs; fire when `p < alpha` and `count >= min_count`, after `warmup_windows` closes.
//!
//! With `group_by` (`scheme` or `channel` on fraud, `category` on incidents) the counts
//! are kept per value of that field within each region, keys `<region>/<value>`, and the
//! alert's subject is the region plus the value (`{"region":"330500","scheme":"investment"}`):
//! a campaign of one scheme is found against that scheme's own baseline instead of being
//! lost in the total. Cardinality: regions × (distinct values), capped at
//! regions × (`max_values` + 1) since values past `max_values` count as `other` until an
//! idle one is forgotten (values longer than 48 bytes are cut); keys idle past `ttl` go.
//!
//! State per region (or region/value): 752 bytes ([`RegionWindows`]: 80 bytes of windows and level plus the
//! 168 f32 seasonal factors). Regions are bounded by the hierarchy (the demo city: about
//! 70 townships, 5 counties and the city, so ~57 KB per detector instance); unlisted
//! township codes count only for their county and the city.
//!
//! Durable state: each key's [`RegionWindows`], and under the reserved
//! [`DETECTOR_KEY`](super::DETECTOR_KEY) what the detector keeps beside them (the first
//! window, the UTC offset, the tracked `group_by` values with their last-seen times), all
//! of which decide future windows, warm-up and which key a value counts under.

use std::time::Duration;

use chrono::{DateTime, FixedOffset, TimeZone};
use serde::{Deserialize, Serialize};
use statrs::distribution::{DiscreteCDF, NegativeBinomial, Poisson};

use super::{
    fmt_duration, score, BuildCtx, Detector, DetectorSpec, Evidence, KeyedState, Signal, SignalKind,
};
use crate::decode::{Event, Stream};
use crate::regions::{RegionRef, Regions};
use crate::state::{codec, StateError};

pub const NAME: &str = "rate_spike";

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RateSpikeConfig {
    #[serde(default = "default_window", with = "humantime_serde")]
    pub window: Duration,
    /// Significance: fire when P(X >= count) under the baseline is below this.
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    /// Never fire on fewer events than this in a window, however quiet the baseline.
    #[serde(default = "default_min_count")]
    pub min_count: u32,
    /// Window closes needed before a region's baseline is trusted.
    #[serde(default = "default_warmup")]
    pub warmup_windows: u32,
    /// EWMA weight of each closed window in the baseline.
    #[serde(default = "default_beta")]
    pub baseline_weight: f64,
    /// Floor on λ so that a region that has been silent is not alarmed by two events.
    #[serde(default = "default_min_lambda")]
    pub min_lambda: f64,
    /// EWMA weight of each closed window in its hour-of-week seasonal factor; 0 = no
    /// seasonality (a flat baseline).
    #[serde(default = "default_gamma")]
    pub seasonal_weight: f64,
    /// Each window also teaches the same hour on the other weekdays, at this fraction of
    /// `seasonal_weight`: a slot of the week recurs only weekly, so the daily shape is
    /// learned within days while weekday differences still emerge. 0 = pure hour-of-week.
    #[serde(default = "default_daily_share")]
    pub daily_share: f64,
    /// The count model: `poisson` (default) or `negative_binomial`.
    #[serde(default)]
    pub model: CountModel,
    /// Negative binomial dispersion `r` (variance = λ + λ²/r; larger = closer to Poisson).
    #[serde(default = "default_dispersion")]
    pub dispersion: f64,
    /// Count per value of this event field within each region (`scheme` or `channel` on
    /// fraud, `category` on incidents): keys become `<region>/<value>` and the alert's
    /// subject carries the value, so a campaign of one scheme stands out from the total.
    /// None (default) = one count per region.
    #[serde(default)]
    pub group_by: Option<GroupField>,
    /// With `group_by`: distinct values tracked at once; further new values count under
    /// `other` until one is forgotten (idle past `ttl`). Bounds the keys at
    /// regions × (max_values + 1) whatever the producers send.
    #[serde(default = "default_max_values")]
    pub max_values: u32,
    /// Forget a region (or region/value) key idle this long.
    #[serde(default = "default_ttl", with = "humantime_serde")]
    pub ttl: Duration,
}

/// An event field `group_by` can count by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupField {
    /// fraud: the scheme (`investment`, `impersonation` ...).
    Scheme,
    /// fraud: the channel (`phone`, `sms`, `app`, `web`).
    Channel,
    /// incidents: the category (`dispute`, `fire` ...).
    Category,
}

impl GroupField {
    fn as_str(self) -> &'static str {
        match self {
            GroupField::Scheme => "scheme",
            GroupField::Channel => "channel",
            GroupField::Category => "category",
        }
    }

    fn stream(self) -> Stream {
        match self {
            GroupField::Scheme | GroupField::Channel => Stream::Fraud,
            GroupField::Category => Stream::Incidents,
        }
    }

    /// The field's value in `ev`, if the event has it.
    fn value(self, ev: &Event) -> Option<&str> {
        match (self, ev) {
            (GroupField::Scheme, Event::Fraud(f)) => Some(&f.scheme),
            (GroupField::Channel, Event::Fraud(f)) => Some(&f.channel),
            (GroupField::Category, Event::Incident(i)) => Some(&i.category),
            _ => None,
        }
    }
}

/// The value under which values past `max_values` are counted.
const OTHER: &str = "other";
/// Values are cut to this many bytes (at a char boundary) in keys and subjects.
const MAX_VALUE_LEN: usize = 48;

/// The distribution of a window's count around its baseline λ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum CountModel {
    #[default]
    Poisson,
    NegativeBinomial,
}

fn default_window() -> Duration {
    Duration::from_secs(900)
}
fn default_alpha() -> f64 {
    1e-4
}
fn default_min_count() -> u32 {
    5
}
fn default_warmup() -> u32 {
    8
}
fn default_beta() -> f64 {
    0.1
}
fn default_min_lambda() -> f64 {
    0.5
}
fn default_gamma() -> f64 {
    0.2
}
fn default_daily_share() -> f64 {
    0.1
}
fn default_dispersion() -> f64 {
    10.0
}
fn default_max_values() -> u32 {
    32
}
fn default_ttl() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}

impl Default for RateSpikeConfig {
    fn default() -> Self {
        Self {
            window: default_window(),
            alpha: default_alpha(),
            min_count: default_min_count(),
            warmup_windows: default_warmup(),
            baseline_weight: default_beta(),
            min_lambda: default_min_lambda(),
            seasonal_weight: default_gamma(),
            daily_share: default_daily_share(),
            model: CountModel::default(),
            dispersion: default_dispersion(),
            group_by: None,
            max_values: default_max_values(),
            ttl: default_ttl(),
        }
    }
}

impl DetectorSpec for RateSpikeConfig {
    const NAME: &'static str = NAME;
    const STREAMS: &'static [Stream] = &[Stream::Incidents, Stream::Fraud];
    type Runtime = RateSpike;

    fn validate(&self, path: &str, problems: &mut Vec<String>) {
        if self.window < Duration::from_secs(60) {
            problems.push(format!("{path}.window: must be >= 1m"));
        }
        if !(self.alpha > 0.0 && self.alpha < 0.5) {
            problems.push(format!("{path}.alpha: must be in (0, 0.5)"));
        }
        if !(self.baseline_weight > 0.0 && self.baseline_weight <= 1.0) {
            problems.push(format!("{path}.baseline_weight: must be in (0, 1]"));
        }
        if !score::positive(self.min_lambda) {
            problems.push(format!("{path}.min_lambda: must be > 0"));
        }
        if !(self.seasonal_weight >= 0.0 && self.seasonal_weight <= 1.0) {
            problems.push(format!("{path}.seasonal_weight: must be in [0, 1]"));
        }
        if !(self.daily_share >= 0.0 && self.daily_share <= 1.0) {
            problems.push(format!("{path}.daily_share: must be in [0, 1]"));
        }
        if !(score::positive(self.dispersion) && self.dispersion.is_finite()) {
            problems.push(format!("{path}.dispersion: must be > 0"));
        }
        if let Some(g) = self.group_by {
            // The path names the stream: `detectors.<stream>[i]`.
            let stream = path
                .strip_prefix("detectors.")
                .and_then(|p| p.split('[').next())
                .and_then(Stream::parse);
            if stream.is_some_and(|s| s != g.stream()) {
                problems.push(format!(
                    "{path}.group_by: \"{}\" is a field of {} events",
                    g.as_str(),
                    g.stream()
                ));
            }
            if !(1..=1000).contains(&self.max_values) {
                problems.push(format!("{path}.max_values: must be in 1..=1000"));
            }
        }
        if self.ttl < self.window {
            problems.push(format!("{path}.ttl: must be >= window"));
        }
    }

    fn build(&self, stream: Stream, ctx: &BuildCtx) -> RateSpike {
        RateSpike {
            cfg: self.clone(),
            stream,
            len: self.window.as_secs() as i64,
            window_label: fmt_duration(self.window),
            regions: ctx.regions.clone(),
            // Regions never churn without bound; grouped keys are bounded by `max_values`.
            state: KeyedState::new(self.ttl),
            values: std::collections::HashMap::new(),
            first_window: None,
            offset_secs: 8 * 3600,
            scalars_dirty: false,
            owner: ctx.owner,
        }
    }
}

const EMPTY: i64 = i64::MIN;

/// Hour-of-week slots: weekday × 24 + hour.
const SLOTS: usize = 168;
const SEASON_MIN: f32 = 0.05;
const SEASON_MAX: f32 = 20.0;

/// Window counts and seasonal baseline of one region. 752 bytes: open windows (32), last
/// close (8), level (8), closes (4), flag (1), region (20), 168 × f32 factors (672),
/// padding.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct RegionWindows {
    open: [(i64, u32); 2],
    last_closed: i64,
    /// The level: the deseasonalized expected count per window.
    baseline: f64,
    closes: u32,
    alerting: bool,
    region: Option<RegionRef>,
    #[serde(with = "crate::state::codec::array")]
    season: [f32; SLOTS],
}

impl Default for RegionWindows {
    fn default() -> Self {
        Self {
            open: [(EMPTY, 0); 2],
            last_closed: EMPTY,
            baseline: 0.0,
            closes: 0,
            alerting: false,
            region: None,
            season: [1.0; SLOTS],
        }
    }
}

/// P(X >= k) for X ~ Poisson(lambda).
pub fn poisson_tail(k: u32, lambda: f64) -> f64 {
    if k == 0 {
        return 1.0;
    }
    match Poisson::new(lambda) {
        Ok(p) => p.sf(u64::from(k) - 1).clamp(0.0, 1.0),
        Err(_) => 1.0,
    }
}

/// P(X >= k) for X negative binomial with mean `mean` and dispersion `r`
/// (variance `mean + mean²/r`). statrs counts failures before the r-th success with
/// success probability p, so mean = r(1-p)/p, i.e. p = r / (r + mean).
pub fn nb_tail(k: u32, mean: f64, r: f64) -> f64 {
    if k == 0 {
        return 1.0;
    }
    let p = r / (r + mean.max(0.0));
    match NegativeBinomial::new(r, p) {
        Ok(d) => {
            let s = d.sf(u64::from(k) - 1);
            if s.is_nan() {
                1.0
            } else {
                s.clamp(0.0, 1.0)
            }
        }
        Err(_) => 1.0,
    }
}

/// The hour-of-week slot (Monday 00h = 0) of epoch second `t` at UTC offset `offset`.
pub fn week_slot(t: i64, offset_secs: i32) -> usize {
    let local = t + i64::from(offset_secs);
    let day = local.div_euclid(86_400);
    // 1970-01-01 was a Thursday (weekday 3 counting from Monday = 0).
    let weekday = (day + 3).rem_euclid(7);
    let hour = local.rem_euclid(86_400) / 3600;
    (weekday * 24 + hour) as usize
}

pub struct RateSpike {
    cfg: RateSpikeConfig,
    stream: Stream,
    len: i64,
    window_label: String,
    regions: std::sync::Arc<Regions>,
    state: KeyedState<RegionWindows>,
    /// With `group_by`: the values tracked and the event time each was last seen.
    values: std::collections::HashMap<String, i64>,
    /// The first window this detector saw: a region first seen later has had empty
    /// windows since then, which count towards its baseline and warm-up.
    first_window: Option<i64>,
    /// The city's UTC offset, from the events' own timestamps (for the seasonal slot).
    offset_secs: i32,
    /// `values`, `first_window` or `offset_secs` changed since the last `take_dirty`.
    scalars_dirty: bool,
    /// Scale-out: the region keys this task counts (the others are another task's).
    owner: super::Owner,
}

/// What the changelog keeps under [`DETECTOR_KEY`](super::DETECTOR_KEY): `first_window`,
/// `offset_secs`, `values`.
type Scalars = (Option<i64>, i32, Vec<(String, i64)>);

impl RateSpike {
    /// P(X >= count) under the configured model at baseline `lambda`.
    fn tail(&self, count: u32, lambda: f64) -> f64 {
        match self.cfg.model {
            CountModel::Poisson => poisson_tail(count, lambda),
            CountModel::NegativeBinomial => nb_tail(count, lambda, self.cfg.dispersion),
        }
    }

    /// The model's standard deviation at `lambda`.
    fn sd(&self, lambda: f64) -> f64 {
        match self.cfg.model {
            CountModel::Poisson => lambda.sqrt(),
            CountModel::NegativeBinomial => (lambda + lambda * lambda / self.cfg.dispersion).sqrt(),
        }
    }

    /// The expected count of the window starting at `start` (floored at `min_lambda`).
    fn expected(&self, st: &RegionWindows, start: i64) -> f64 {
        let season = if self.cfg.seasonal_weight > 0.0 {
            f64::from(st.season[week_slot(start, self.offset_secs)])
        } else {
            1.0
        };
        (st.baseline * season).max(self.cfg.min_lambda)
    }

    /// The group value `v` is counted under: itself (cut to [`MAX_VALUE_LEN`] bytes) while
    /// fewer than `max_values` values are tracked, else [`OTHER`].
    fn track_value(&mut self, v: &str, t: i64) -> String {
        let mut end = v.len().min(MAX_VALUE_LEN);
        while !v.is_char_boundary(end) {
            end -= 1;
        }
        let v = &v[..end];
        if let Some(last) = self.values.get_mut(v) {
            if t > *last {
                *last = t;
                self.scalars_dirty = true;
            }
            return v.to_string();
        }
        if self.values.len() < self.cfg.max_values as usize {
            self.values.insert(v.to_string(), t);
            self.scalars_dirty = true;
            return v.to_string();
        }
        OTHER.to_string()
    }

    /// The region keys an event counts for: township (if listed), county, city.
    fn keys(&self, r: RegionRef) -> [(Option<String>, RegionRef, &'static str); 3] {
        let t = self.regions.township_code(r).map(str::to_string);
        let c = self.regions.county_code(r).map(str::to_string);
        let county_ref = RegionRef {
            township: None,
            county: r.county,
            unlisted: false,
        };
        let city_ref = RegionRef {
            township: None,
            county: None,
            unlisted: false,
        };
        [
            (t, r, "township"),
            (c, county_ref, "county"),
            (Some(self.regions.city_code().to_string()), city_ref, "city"),
        ]
    }

    fn close(
        &self,
        key: &str,
        st: &mut RegionWindows,
        start: i64,
        count: u32,
        out: &mut Vec<Signal>,
    ) {
        let lambda = self.expected(st, start);
        let warm = st.closes >= self.cfg.warmup_windows;
        let p = self.tail(count, lambda);
        let firing = warm && count >= self.cfg.min_count && p < self.cfg.alpha;
        // Fold in, capped, so a surge is not learned as normal.
        let cap = lambda + 3.0 * self.sd(lambda) + 1.0;
        let x = f64::from(count).min(cap);
        let slot = week_slot(start, self.offset_secs);
        if st.closes == 0 {
            st.baseline = x;
        } else {
            // The level learns the deseasonalized count.
            let season = if self.cfg.seasonal_weight > 0.0 {
                f64::from(st.season[slot])
            } else {
                1.0
            };
            st.baseline += self.cfg.baseline_weight * (x / season - st.baseline);
            if self.cfg.seasonal_weight > 0.0 && st.baseline > 1e-9 {
                let ratio = x / st.baseline;
                let hour = slot % 24;
                for other in (hour..SLOTS).step_by(24) {
                    let w = if other == slot {
                        self.cfg.seasonal_weight
                    } else {
                        self.cfg.seasonal_weight * self.cfg.daily_share
                    };
                    let s = f64::from(st.season[other]);
                    let s = s + w * (ratio - s);
                    st.season[other] = (s as f32).clamp(SEASON_MIN, SEASON_MAX);
                }
            }
        }
        st.closes = st.closes.saturating_add(1);
        st.last_closed = start;
        let end = FixedOffset::east_opt(0)
            .expect("utc")
            .timestamp_opt(start + self.len, 0)
            .single()
            .expect("valid window end");
        let Some(region) = st.region else { return };
        // A grouped key is `<region>/<value>`; region codes hold no '/'.
        let (region_code, value) = match key.split_once('/') {
            Some((r, v)) if self.cfg.group_by.is_some() => (r, Some(v)),
            _ => (key, None),
        };
        let kind = if firing {
            st.alerting = true;
            let place = match (self.cfg.group_by, value) {
                (Some(g), Some(v)) => {
                    format!(
                        "({} {v}) in {}",
                        g.as_str(),
                        self.regions.display_name(region)
                    )
                }
                _ => format!("in {}", self.regions.display_name(region)),
            };
            SignalKind::Anomalous {
                score: score::from_p_value(p, self.cfg.alpha),
                level: None,
                title: format!(
                    "{} surge {place}: {count} in {} (expected {lambda:.1})",
                    noun(self.stream),
                    self.window_label
                ),
                evidence: Evidence {
                    observed: f64::from(count),
                    expected: (lambda * 100.0).round() / 100.0,
                    score: -p.max(f64::MIN_POSITIVE).log10(),
                    threshold: -self.cfg.alpha.log10(),
                    window: self.window_label.clone(),
                    p_value: Some(p),
                    false_alarms_per_day: None,
                },
            }
        } else if st.alerting {
            st.alerting = false;
            SignalKind::Clear
        } else {
            return;
        };
        let mut subject = serde_json::Map::new();
        subject.insert("region".into(), region_code.into());
        if let (Some(g), Some(v)) = (self.cfg.group_by, value) {
            subject.insert(g.as_str().into(), v.into());
        }
        out.push(Signal {
            stream: self.stream,
            detector: NAME,
            key: key.to_string(),
            subject,
            region,
            ts: end,
            event_id: None,
            kind,
        });
    }

    /// Closes every window of `key` that ends at or before `wm` (empty ones included).
    /// Closes every window of `st` (the state of `key`) that ends at or before `wm`.
    fn close_until(&self, key: &str, st: &mut RegionWindows, wm: i64, out: &mut Vec<Signal>) {
        // Catch-up is capped: after a long gap only the last week of windows is replayed.
        let max_catch_up = (7 * 24 * 3600 / self.len).max(1);
        loop {
            let next_open = st
                .open
                .iter()
                .filter(|(s, _)| *s != EMPTY)
                .map(|(s, _)| *s)
                .min();
            let next_empty = if st.last_closed == EMPTY {
                None
            } else {
                Some(st.last_closed + self.len)
            };
            let start = match (next_open, next_empty) {
                (Some(o), Some(e)) => o.min(e),
                (Some(o), None) => o,
                (None, Some(e)) => e,
                (None, None) => break,
            };
            if start + self.len > wm {
                break;
            }
            if st.last_closed != EMPTY && (start - st.last_closed) / self.len > max_catch_up {
                st.last_closed = start - self.len;
            }
            let mut count = 0;
            for slot in &mut st.open {
                if slot.0 == start {
                    count = slot.1;
                    *slot = (EMPTY, 0);
                }
            }
            self.close(key, st, start, count, out);
        }
    }
}

fn noun(s: Stream) -> &'static str {
    match s {
        Stream::Fraud => "Fraud-report",
        _ => "Incident",
    }
}

impl Detector for RateSpike {
    fn name(&self) -> &'static str {
        NAME
    }

    fn observe(&mut self, ev: &Event, late: bool, out: &mut Vec<Signal>) -> f64 {
        if late {
            return 0.0;
        }
        let t = ev.ts().timestamp();
        let offset = ev.ts().offset().local_minus_utc();
        if offset != self.offset_secs {
            self.offset_secs = offset;
            self.scalars_dirty = true;
        }
        let start = t.div_euclid(self.len) * self.len;
        let group = match self.cfg.group_by {
            Some(g) => match g.value(ev) {
                Some(v) => Some(self.track_value(v, t)),
                None => return 0.0,
            },
            None => None,
        };
        let first = match self.first_window {
            Some(f) => f,
            None => {
                self.scalars_dirty = true;
                *self.first_window.insert(start)
            }
        };
        let mut best: f64 = 0.0;
        for (key, region, _level) in self.keys(ev.region()) {
            let Some(key) = key else { continue };
            if !self.owner.owns(&key) {
                continue;
            }
            let key = match &group {
                Some(v) => format!("{key}/{v}"),
                None => key,
            };
            let st = self.state.touch(&key, ev.ts());
            if st.region.is_none() && st.last_closed == EMPTY && start > first {
                // New region: the windows since the detector started held no events here.
                st.last_closed = start - self.len;
                st.closes = ((start - first) / self.len) as u32;
                st.baseline = 0.0;
            }
            st.region = Some(region);
            if st.last_closed != EMPTY && start <= st.last_closed {
                continue; // its window already closed
            }
            let slot = match st.open.iter().position(|s| s.0 == start) {
                Some(i) => i,
                None => match st.open.iter().position(|s| s.0 == EMPTY) {
                    Some(i) => {
                        st.open[i] = (start, 0);
                        i
                    }
                    None => {
                        // Both slots busy with older windows: close the oldest now.
                        let oldest = st.open.iter().map(|s| s.0).min().unwrap_or(start);
                        let mut copy = *st;
                        self.close_until(&key, &mut copy, oldest + self.len, out);
                        let st = self.state.touch(&key, ev.ts());
                        *st = copy;
                        let i = st.open.iter().position(|s| s.0 == EMPTY).unwrap_or(0);
                        st.open[i] = (start, 0);
                        i
                    }
                },
            };
            let st = self.state.touch(&key, ev.ts());
            st.open[slot].1 += 1;
            if st.closes >= self.cfg.warmup_windows {
                let (n, st) = (st.open[slot].1, *st);
                let p = self.tail(n, self.expected(&st, start));
                best = best.max(score::from_p_value(p, self.cfg.alpha));
            }
        }
        best
    }

    /// Routed by region key (township, county, city), not by `<region>/<value>`: the
    /// tracked values of `group_by` are per task, and a region's groups stay together.
    fn routes(&self, ev: &Event, out: &mut Vec<String>) {
        out.extend(self.keys(ev.region()).into_iter().filter_map(|(k, _, _)| k));
    }

    fn advance(&mut self, watermark: DateTime<FixedOffset>, out: &mut Vec<Signal>) {
        let wm = watermark.timestamp();
        // One pass over the regions: the map is moved out while `close_until` borrows
        // the detector's settings (no key copies, no lookups per region).
        let mut state = std::mem::replace(&mut self.state, KeyedState::new(Duration::from_secs(1)));
        state.for_each_mut(|k, st| {
            // Every close moves `last_closed`; a catch-up cap moves it too.
            let before = (st.last_closed, st.open);
            self.close_until(k, st, wm, out);
            before != (st.last_closed, st.open)
        });
        self.state = state;
        self.state.evict_idle(watermark);
        let ttl = self.cfg.ttl.as_secs() as i64;
        let n = self.values.len();
        self.values.retain(|_, last| wm - *last <= ttl);
        self.scalars_dirty |= self.values.len() != n;
    }

    fn keys(&self) -> usize {
        self.state.len()
    }

    fn track_changes(&mut self) {
        self.state.track_changes();
    }

    fn take_dirty(&mut self, out: &mut Vec<Box<str>>) {
        self.state.take_dirty(out);
        if std::mem::take(&mut self.scalars_dirty) {
            out.push(super::DETECTOR_KEY.into());
        }
    }

    fn save(&self, key: &str) -> Option<Vec<u8>> {
        if key == super::DETECTOR_KEY {
            // Sorted: the same state always encodes to the same bytes.
            let mut values: Vec<(&String, &i64)> = self.values.iter().collect();
            values.sort_unstable();
            return Some(codec::encode(&(
                self.first_window,
                self.offset_secs,
                values,
            )));
        }
        self.state.save(key)
    }

    fn restore(&mut self, key: &str, bytes: &[u8]) -> Result<(), StateError> {
        if key == super::DETECTOR_KEY {
            let (first, offset, values) = codec::decode::<Scalars>(key, bytes)?;
            (self.first_window, self.offset_secs) = (first, offset);
            self.values = values.into_iter().collect();
            return Ok(());
        }
        self.state.restore(key, bytes)
    }

    fn forget(&mut self, key: &str) {
        if key == super::DETECTOR_KEY {
            self.first_window = None;
            self.values.clear();
        } else {
            self.state.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::testutil::incident;
    use statrs::distribution::Discrete;

    #[test]
    fn tail_matches_summed_pmf() {
        for &(k, l) in &[(0u32, 2.0), (1, 2.0), (5, 0.5), (12, 3.0), (30, 10.0)] {
            let pmf = Poisson::new(l).unwrap();
            let direct: f64 = 1.0 - (0..k).map(|i| pmf.pmf(u64::from(i))).sum::<f64>();
            assert!((poisson_tail(k, l) - direct).abs() < 1e-9, "k={k} l={l}");
        }
        // Hand-worked: P(X>=3 | λ=1) = 1 - e^-1 (1 + 1 + 1/2) = 0.0803013971
        assert!((poisson_tail(3, 1.0) - 0.080_301_397_1).abs() < 1e-9);
    }

    #[test]
    fn nb_tail_matches_summed_pmf() {
        use statrs::distribution::NegativeBinomial;
        for &(k, mean, r) in &[
            (0u32, 2.0, 10.0),
            (1, 2.0, 10.0),
            (5, 0.5, 1.0),
            (12, 3.0, 2.5),
            (30, 10.0, 10.0),
            (40, 10.0, 1000.0),
        ] {
            let d = NegativeBinomial::new(r, r / (r + mean)).unwrap();
            // The parametrisation gives the mean and variance we asked for.
            use statrs::statistics::DiscreteDistribution;
            assert!((d.mean().unwrap() - mean).abs() < 1e-9);
            assert!((d.variance().unwrap() - (mean + mean * mean / r)).abs() < 1e-9);
            let direct: f64 = 1.0 - (0..k).map(|i| d.pmf(u64::from(i))).sum::<f64>();
            assert!(
                (nb_tail(k, mean, r) - direct).abs() < 1e-9,
                "k={k} mean={mean} r={r}"
            );
        }
        // Over-dispersion fattens the tail; a huge r is Poisson.
        assert!(nb_tail(15, 5.0, 2.0) > 100.0 * poisson_tail(15, 5.0));
        assert!((nb_tail(15, 5.0, 1e9) - poisson_tail(15, 5.0)).abs() < 1e-6);
    }

    #[test]
    fn validation_and_nb_config_parse() {
        let c: RateSpikeConfig =
            toml::from_str("model = \"negative_binomial\"\ndispersion = 2.5").unwrap();
        assert_eq!((c.model, c.dispersion), (CountModel::NegativeBinomial, 2.5));
        let c = RateSpikeConfig {
            seasonal_weight: 1.5,
            dispersion: 0.0,
            ..Default::default()
        };
        let mut p = Vec::new();
        c.validate("detectors.fraud[2]", &mut p);
        assert_eq!(
            p,
            vec![
                "detectors.fraud[2].seasonal_weight: must be in [0, 1]",
                "detectors.fraud[2].dispersion: must be > 0"
            ]
        );
    }

    #[test]
    fn week_slot_uses_local_time() {
        // 2026-11-26 is a Thursday; 08:15 at +08:00 is 00:15 UTC.
        let t = crate::detect::testutil::ts("2026-11-26T08:15:00+08:00").timestamp();
        assert_eq!(week_slot(t, 8 * 3600), 3 * 24 + 8);
        assert_eq!(week_slot(t, 0), 3 * 24);
        // Monday 00:xx local is slot 0, Sunday 23:xx is 167.
        let mon = crate::detect::testutil::ts("2026-11-23T00:30:00+08:00").timestamp();
        assert_eq!(week_slot(mon, 8 * 3600), 0);
        assert_eq!(week_slot(mon - 3600, 8 * 3600), 167);
    }

    #[test]
    fn state_is_752_bytes() {
        assert_eq!(std::mem::size_of::<RegionWindows>(), 752);
    }

    #[test]
    fn daily_rhythm_is_learned_peak_quiet_night_fires() {
        // 14 days of a township busy 9-18 h (10 per 15-minute window) and quiet at night
        // (1 per window), then a 15th day with 10 in the 03:00 window.
        let run = |seasonal_weight: f64| {
            let mut d = RateSpikeConfig {
                seasonal_weight,
                ..Default::default()
            }
            .build(Stream::Incidents, &crate::pipeline::test_ctx());
            let mut out = Vec::new();
            let mut plan: Vec<(usize, &str)> = Vec::new();
            for w in 0..(15 * 96) {
                let hour = (w % 96) / 4;
                let n = if (9..18).contains(&hour) { 10 } else { 1 };
                let n = if w == 14 * 96 + 12 { 10 } else { n }; // day 15, 03:00
                plan.push((n, "330502001"));
            }
            feed(&mut d, &plan, &mut out);
            let day15 = crate::detect::testutil::ts("2026-12-10T00:00:00+08:00");
            out.retain(|s| {
                s.key == "330502001"
                    && matches!(s.kind, SignalKind::Anomalous { .. })
                    && s.ts > day15
            });
            out
        };
        let fired = run(0.2);
        assert_eq!(fired.len(), 1, "only the 03:00 window: {fired:#?}");
        assert_eq!(
            fired[0].ts,
            crate::detect::testutil::ts("2026-12-10T03:15:00+08:00")
        );
        // Without seasonality the morning rise itself is a "surge" every day.
        let flat = run(0.0);
        assert!(flat.len() > 1, "{flat:#?}");
    }

    fn feed(d: &mut RateSpike, per_window: &[(usize, &str)], out: &mut Vec<Signal>) {
        // One window = 15 min; spread each window's events over it, in time order.
        let mut ws = crate::detect::Watermark::new(chrono::Duration::seconds(60));
        for (w, (n, region)) in per_window.iter().enumerate() {
            for i in 0..*n {
                let secs = w as i64 * 900 + (i as i64 * 800 / (*n as i64).max(1));
                let ev = incident(&format!("I{w}-{i}"), region, secs);
                let late = ws.is_late(ev.ts());
                d.observe(&ev, late, out);
                if let Some(wm) = ws.observe(ev.ts()) {
                    d.advance(wm, out);
                }
            }
            // A heartbeat event elsewhere keeps event time moving through quiet windows.
            let hb = incident(&format!("H{w}"), "330523001", w as i64 * 900 + 899);
            d.observe(&hb, false, out);
            if let Some(wm) = ws.observe(hb.ts()) {
                d.advance(wm, out);
            }
        }
        if let Some(wm) = ws.flush() {
            d.advance(wm + chrono::Duration::seconds(900), out);
        }
    }

    fn fraud_of(id: &str, scheme: &str, region: &str, secs: i64) -> Event {
        let t = crate::detect::testutil::ts("2026-11-26T00:00:00+08:00")
            + chrono::Duration::seconds(secs);
        let v = serde_json::json!({"id":id,"ts":t.to_rfc3339(),"region":region,"channel":"app",
            "scheme":scheme,"suspect_url":format!("https://x{id}.cn/")});
        crate::decode::test_decoder()
            .decode(Stream::Fraud, v.to_string().as_bytes())
            .unwrap()
            .event
    }

    #[test]
    fn group_by_scheme_catches_a_campaign_lost_in_the_total() {
        // Six schemes, 3 reports each per 15-minute window spread over the city (18 in
        // all); then one window with 12 extra `investment` reports: 30 against 18 is
        // within the over-dispersed total, 15 against 3 is not.
        let schemes = [
            "impersonation",
            "investment",
            "refund",
            "loan",
            "part_time_job",
            "romance",
        ];
        let run = |group_by: Option<GroupField>| {
            let mut d = RateSpikeConfig {
                group_by,
                model: CountModel::NegativeBinomial,
                dispersion: 10.0,
                min_count: 10,
                ..Default::default()
            }
            .build(Stream::Fraud, &crate::pipeline::test_ctx());
            let mut out = Vec::new();
            let mut ws = crate::detect::Watermark::new(chrono::Duration::seconds(60));
            let mut n = 0;
            for w in 0..30i64 {
                let mut evs = Vec::new();
                for (k, s) in schemes.iter().enumerate() {
                    let extra = if w == 25 && *s == "investment" { 12 } else { 0 };
                    for i in 0..(3 + extra) {
                        let town = format!("3305{:02}{:03}", [2, 3, 21, 22, 23][(i + k) % 5], 1);
                        evs.push((w * 900 + (i as i64 * 40 + k as i64 * 7) % 890, *s, town));
                    }
                }
                evs.sort_by_key(|e| e.0);
                for (t, s, town) in evs {
                    n += 1;
                    let ev = fraud_of(&format!("F{n}"), s, &town, t);
                    let late = ws.is_late(ev.ts());
                    d.observe(&ev, late, &mut out);
                    if let Some(wm) = ws.observe(ev.ts()) {
                        d.advance(wm, &mut out);
                    }
                }
            }
            if let Some(wm) = ws.flush() {
                d.advance(wm + chrono::Duration::seconds(900), &mut out);
            }
            (out, Detector::keys(&d))
        };
        let (total, _) = run(None);
        assert!(
            !total
                .iter()
                .any(|s| matches!(s.kind, SignalKind::Anomalous { .. })),
            "{total:#?}"
        );
        let (grouped, keys) = run(Some(GroupField::Scheme));
        let fired: Vec<_> = grouped
            .iter()
            .filter(|s| matches!(s.kind, SignalKind::Anomalous { .. }))
            .collect();
        assert_eq!(
            fired.iter().map(|s| s.key.as_str()).collect::<Vec<_>>(),
            vec!["330500/investment"]
        );
        // The subject names the region (as the backtest and routing expect) and the scheme.
        assert_eq!(fired[0].subject["region"], "330500");
        assert_eq!(fired[0].subject["scheme"], "investment");
        let SignalKind::Anomalous { title, .. } = &fired[0].kind else {
            panic!()
        };
        assert!(title.contains("(scheme investment)"), "{title}");
        // At most 6 schemes x (city + 5 counties + 5 townships).
        assert!(keys > 6 && keys <= 6 * 11, "{keys}");
    }

    #[test]
    fn group_values_are_bounded() {
        let mut d = RateSpikeConfig {
            group_by: Some(GroupField::Scheme),
            max_values: 2,
            ..Default::default()
        }
        .build(Stream::Fraud, &crate::pipeline::test_ctx());
        let mut out = Vec::new();
        for (i, s) in ["a", "b", "c", "d", &"x".repeat(100)].iter().enumerate() {
            d.observe(
                &fraud_of(&format!("F{i}"), s, "330502001", 10),
                false,
                &mut out,
            );
        }
        // a, b and "other", each for the township, county and city.
        assert_eq!(Detector::keys(&d), 9);
        assert_eq!(d.track_value(&"y".repeat(100), 20), "other");
        // Idle values are forgotten (with their keys), making room for new ones.
        let later = crate::detect::testutil::ts("2026-12-10T00:00:00+08:00");
        d.advance(later, &mut out);
        assert_eq!(Detector::keys(&d), 0);
        assert_eq!(d.track_value(&"é".repeat(40), 20), "é".repeat(24));
    }

    #[test]
    fn group_by_must_fit_the_stream() {
        let c = RateSpikeConfig {
            group_by: Some(GroupField::Scheme),
            max_values: 0,
            ..Default::default()
        };
        let mut p = Vec::new();
        c.validate("detectors.incidents[0]", &mut p);
        assert_eq!(
            p,
            vec![
                "detectors.incidents[0].group_by: \"scheme\" is a field of fraud events",
                "detectors.incidents[0].max_values: must be in 1..=1000"
            ]
        );
        let mut p = Vec::new();
        let c: RateSpikeConfig = toml::from_str("group_by = \"category\"").unwrap();
        c.validate("detectors.incidents[0]", &mut p);
        assert!(p.is_empty(), "{p:?}");
    }

    #[test]
    fn township_surge_fires_after_warm_up_and_clears() {
        let mut d =
            RateSpikeConfig::default().build(Stream::Incidents, &crate::pipeline::test_ctx());
        let mut out = Vec::new();
        let mut plan: Vec<(usize, &str)> = (0..20).map(|i| (1 + i % 2, "330502001")).collect();
        plan.push((15, "330502001"));
        plan.push((1, "330502001"));
        feed(&mut d, &plan, &mut out);
        let fired: Vec<_> = out
            .iter()
            .filter(|s| matches!(s.kind, SignalKind::Anomalous { .. }))
            .map(|s| s.key.as_str())
            .collect();
        assert!(fired.contains(&"330502001"), "{fired:?}");
        assert!(out
            .iter()
            .any(|s| s.key == "330502001" && s.kind == SignalKind::Clear));
        let SignalKind::Anomalous { evidence, .. } =
            &out.iter().find(|s| s.key == "330502001").unwrap().kind
        else {
            panic!()
        };
        assert_eq!(evidence.observed, 15.0);
        assert!(evidence.p_value.unwrap() < 1e-4);
    }

    #[test]
    fn county_wide_rise_no_township_shows() {
        let mut d = RateSpikeConfig {
            min_count: 5,
            ..Default::default()
        }
        .build(Stream::Incidents, &crate::pipeline::test_ctx());
        let mut out = Vec::new();
        // Baseline: ~1 event per window spread over 11 townships of 330502.
        let towns: Vec<String> = (1..=11).map(|i| format!("330502{i:03}")).collect();
        let mut ws = crate::detect::Watermark::new(chrono::Duration::seconds(60));
        let mut push = |d: &mut RateSpike, ev: Event, out: &mut Vec<Signal>| {
            let late = ws.is_late(ev.ts());
            d.observe(&ev, late, out);
            if let Some(wm) = ws.observe(ev.ts()) {
                d.advance(wm, out);
            }
        };
        for w in 0..30i64 {
            let n = if w == 25 { 22 } else { 1 };
            for i in 0..n {
                let t = &towns[(w as usize + i) % towns.len()];
                push(
                    &mut d,
                    incident(&format!("I{w}-{i}"), t, w * 900 + i as i64 * 30),
                    &mut out,
                );
            }
            push(
                &mut d,
                incident(&format!("H{w}"), "330523001", w * 900 + 899),
                &mut out,
            );
        }
        let fired: std::collections::BTreeSet<_> = out
            .iter()
            .filter(|s| matches!(s.kind, SignalKind::Anomalous { .. }))
            .map(|s| s.key.clone())
            .collect();
        assert!(fired.contains("330502"), "{fired:?}");
        assert!(
            !fired.iter().any(|k| k.len() == 9),
            "no township alone: {fired:?}"
        );
    }

    #[test]
    fn restore_keeps_windows_seasons_first_window_and_group_values() {
        use crate::detect::testutil::{drive, flush, restored, Log};
        let build = || {
            RateSpikeConfig {
                group_by: Some(GroupField::Scheme),
                max_values: 2,
                // 5: a region first seen 3 windows after the split is warm only if the
                // detector's first window (before the split) was restored.
                warmup_windows: 5,
                min_count: 4,
                ..Default::default()
            }
            .build(Stream::Fraud, &crate::pipeline::test_ctx())
        };
        // Values a and b take the two places, c counts as "other"; 1-2 reports a window.
        let mut evs = Vec::new();
        for w in 0..10i64 {
            for (k, s) in ["a", "b", "c"].iter().enumerate() {
                for i in 0..(1 + (w + k as i64) % 2) {
                    let t = w * 900 + 100 + k as i64 * 200 + i * 50;
                    evs.push(fraud_of(&format!("F{w}-{k}-{i}"), s, "330502001", t));
                }
            }
        }
        // Then: a spike of a, a new value d (still "other"), and a township first seen
        // now (its warm-up credits the windows since the detector's first).
        for i in 0..12i64 {
            let t = 10 * 900 + 30 + i * 20;
            evs.push(fraud_of(&format!("S{i}"), "a", "330502001", t));
            evs.push(fraud_of(&format!("D{i}"), "d", "330503101", t + 5));
        }
        for w in 11..14i64 {
            evs.push(fraud_of(&format!("E{w}"), "b", "330502001", w * 900 + 10));
        }
        evs.sort_by_key(|e| e.ts());

        // The split: mid-window, two open windows' counts and a warm baseline in state.
        let cut = evs[0].ts() + chrono::Duration::seconds(7 * 900 + 450);
        let split = evs.partition_point(|e| e.ts() < cut);
        let mut d = build();
        d.track_changes();
        let mut wm = crate::detect::Watermark::new(chrono::Duration::seconds(60));
        let before = drive(&mut d, &mut wm, &evs[..split]);
        assert!(before.iter().all(|(_, s)| s.is_empty()), "{before:?}");
        let mut log = Log::new();
        flush(&mut d, &mut log);
        assert!(log.contains_key(crate::detect::DETECTOR_KEY));
        let mut r = restored(build(), &log);
        assert_eq!(Detector::keys(&r), Detector::keys(&d));
        let after = drive(&mut d, &mut wm.clone(), &evs[split..]);
        let again = drive(&mut r, &mut wm, &evs[split..]);
        let fired: Vec<&str> = after
            .iter()
            .flat_map(|(_, s)| s)
            .filter(|s| matches!(s.kind, SignalKind::Anomalous { .. }))
            .map(|s| s.key.as_str())
            .collect();
        assert!(fired.contains(&"330502001/a"), "{fired:?}");
        assert!(
            !fired.iter().any(|k| k.ends_with("/d")),
            "d counts as other: {fired:?}"
        );
        assert!(fired.contains(&"330503101/other"), "{fired:?}");
        for (i, (x, y)) in after.iter().zip(&again).enumerate() {
            assert_eq!(
                x.0.to_bits(),
                y.0.to_bits(),
                "score of event {i} after the split"
            );
            assert_eq!(x.1, y.1, "signals of event {i} after the split");
        }
        assert_eq!(Detector::keys(&r), Detector::keys(&d));
    }
}
