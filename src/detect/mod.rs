//! Detectors: keyed, event-time, O(1) state per key. One file per detector, one line each
//! in the [`detectors!`] list below registers it (config variant, validation and build).
//!
//! A detector turns events into [`Signal`]s: `Anomalous` whenever an event (or a closed
//! window) is anomalous for its key, and `Clear` once when the key returns to normal. The
//! alert policy turns signals into episodes; detectors never decide what an operator sees.

mod cusum;
mod entity_burst;
mod ewma;
mod flatline;
mod keyed;
mod level_shift;
mod offline;
mod rate_of_change;
mod rate_spike;
mod restore;
mod robust_z;
pub mod score;
pub mod screen;
mod season;
mod sensor_fault;
mod site_correlation;
mod spread;
pub mod tail;
mod threshold;
mod watermark;

use std::sync::Arc;

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};

pub use crate::signal::{is_maintenance, kind_label, Evidence, Level, Signal, SignalKind};
pub use keyed::KeyedState;
pub use screen::{Admission, ScreenConfig, Screened};
pub use watermark::Watermark;

use crate::decode::{Event, Stream};
use crate::regions::Regions;
use crate::state::{codec, Change, StateError};

/// What every detector shares at build time.
#[derive(Debug, Clone)]
pub struct BuildCtx {
    pub regions: Arc<Regions>,
    /// Which routes this detector set owns (scale-out); `All` on a single instance.
    pub owner: Owner,
    /// `[detectors] false_alarms_per_day`: the budget of detectors that keep one, unless
    /// a detector's own table sets it.
    pub false_alarms_per_day: f64,
    /// `[input.ranges]` in force (the decoder judges with the same), for `sensor_fault`'s
    /// evidence.
    pub ranges: Arc<crate::decode::Ranges>,
    /// `[input]`: jumps ahead and duplicates ([`screen`]).
    pub screen: ScreenConfig,
    /// The monitoring points, for detectors that name a sensor without a reading at
    /// hand (`offline`); the others find the point on the reading.
    pub points: Arc<crate::registry::Registry>,
}

impl BuildCtx {
    /// A single instance's context: it owns every key.
    pub fn new(regions: Arc<Regions>) -> Self {
        Self {
            regions,
            owner: Owner::All,
            false_alarms_per_day: tail::DEFAULT_FALSE_ALARMS_PER_DAY,
            ranges: Arc::new(crate::decode::Ranges::defaults()),
            screen: ScreenConfig::default(),
            points: Arc::default(),
        }
    }
}

/// Scale-out (`processing.scale_out`): which routing keys a detector set owns. Every
/// routing key belongs to exactly one partition of the repartition topics
/// ([`partition_of`]); the task of that partition is the only one that keeps state for
/// it, so a key lives on exactly one instance however the partitions are spread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Owner {
    /// One instance owns everything (no repartitioning).
    #[default]
    All,
    /// The task of repartition partition `index` of `of`.
    Partition { index: u32, of: u32 },
}

impl Owner {
    pub fn owns(self, route: &str) -> bool {
        match self {
            Owner::All => true,
            Owner::Partition { index, of } => partition_of(route, of) == index,
        }
    }
}

/// The repartition partition of a routing key: a stable hash (FNV-1a), so every
/// instance and every restart agrees on it.
pub fn partition_of(route: &str, partitions: u32) -> u32 {
    (stable_hash(route) % u64::from(partitions.max(1))) as u32
}

/// An event's natural routing key: the site for a sensor reading (every per-sensor
/// detector then lives with its site's `site_correlation` and `offline`), the report's
/// own id otherwise (detectors of those streams name their keys in [`Detector::routes`]).
pub fn natural_route(ev: &Event) -> &str {
    match ev {
        Event::Sensor(r) => &r.site_id,
        Event::Incident(r) => &r.id,
        Event::Fraud(r) => &r.id,
    }
}

/// The seam for detectors.
pub trait Detector: Send {
    fn name(&self) -> &'static str;

    /// Looks at one event of the detector's stream; pushes signals and returns the event's
    /// normalized anomaly score in [0, 1] (0.5 is the firing threshold). `late` events
    /// are behind the watermark: value detectors still score them, window detectors
    /// skip them (their window has closed).
    fn observe(&mut self, ev: &Event, late: bool, out: &mut Vec<Signal>) -> f64;

    /// Scale-out: the routing keys of the state this event updates. The event is copied
    /// to the repartition partition of each, and there a detector observes only what its
    /// task owns ([`BuildCtx::owner`]). A detector keyed by something other than the
    /// event's natural route (regions at three levels, suspects) lists its keys here and
    /// skips the keys it does not own in `observe`.
    fn routes(&self, ev: &Event, out: &mut Vec<String>) {
        out.push(natural_route(ev).to_string());
    }

    /// Event time has advanced to `watermark`: close windows, evict idle keys.
    fn advance(&mut self, _watermark: DateTime<FixedOffset>, _out: &mut Vec<Signal>) {}

    /// Keys currently held (for the memory bound and metrics).
    fn keys(&self) -> usize;

    /// Durable state (src/state) from now on: remember which keys change.
    fn track_changes(&mut self);

    /// Appends the keys whose state changed since the last call, including keys dropped
    /// since (their `save` then returns `None`: a tombstone).
    fn take_dirty(&mut self, out: &mut Vec<Box<str>>);

    /// This detector's encoded state under `key`, if it holds any.
    fn save(&self, key: &str) -> Option<Vec<u8>>;

    /// Restore is about to put back up to `additional` keys: size the maps once.
    fn reserve(&mut self, _additional: usize) {}

    /// Puts back what `save` returned for `key` (on start, from the changelog).
    fn restore(&mut self, key: &str, bytes: &[u8]) -> Result<(), StateError>;

    /// Drops whatever is held under `key`: on restore, a later record of the key that
    /// holds nothing of this detector (a changelog is only compacted eventually, so a
    /// replay can meet an older value of a key before its tombstone).
    fn forget(&mut self, key: &str);

    /// An operator judged an episode of this detector a false alarm ([`tail::Verdict`]):
    /// a detector with a false-alarm budget charges it to the key, if it holds the key.
    /// Must be idempotent (verdicts are applied again after every restore). True when the
    /// key's state changed.
    fn verdict(&mut self, _v: &tail::Verdict) -> bool {
        false
    }
}

/// The reserved state key of detector-level state (not per key: `offline`'s scan clock,
/// `rate_spike`'s tracked group values). Empty because the decoder rejects empty ids,
/// codes and suspects, so no event can ever name a state key that collides with it; one
/// record per stream then carries every detector's scalars, like any other key.
pub(crate) const DETECTOR_KEY: &str = "";

/// A 64-bit FNV-1a hash for ids kept in durable state (report ids, sensor ids in rings):
/// stable across processes and Rust versions, unlike `DefaultHasher`, so a restored ring
/// still recognizes the ids it holds.
pub(crate) fn stable_hash(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// [`Detector::verdict`] for a detector whose keyed state holds a `tail` (its budget) and
/// a `motion` (its latest event time): an operator's false-alarm verdict holds the key's
/// threshold for one budget period of `budget` false episodes per day.
macro_rules! budget_verdict {
    ($state:ident, $($budget:ident).+) => {
        fn verdict(&mut self, v: &super::tail::Verdict) -> bool {
            let period = super::tail::budget_period_secs(self.$($budget).+);
            self.$state
                .update(&v.key, |st| st.tail.hold(v, period, st.motion.last_ts()))
                .unwrap_or(false)
        }
    };
}
use budget_verdict;

/// The durable-state methods of a detector whose whole state is one [`KeyedState`] field.
macro_rules! keyed_persistence {
    ($field:ident) => {
        fn track_changes(&mut self) {
            self.$field.track_changes();
        }
        fn take_dirty(&mut self, out: &mut Vec<Box<str>>) {
            self.$field.take_dirty(out);
        }
        fn save(&self, key: &str) -> Option<Vec<u8>> {
            self.$field.save(key)
        }
        fn restore(&mut self, key: &str, bytes: &[u8]) -> Result<(), crate::state::StateError> {
            self.$field.restore(key, bytes)
        }
        fn forget(&mut self, key: &str) {
            self.$field.remove(key);
        }
        fn reserve(&mut self, additional: usize) {
            self.$field.reserve(additional);
        }
    };
}
use keyed_persistence;

/// Implemented by each detector's config struct.
pub trait DetectorSpec {
    const NAME: &'static str;
    /// Streams this detector understands.
    const STREAMS: &'static [Stream];
    type Runtime: Detector + 'static;
    fn validate(&self, path: &str, problems: &mut Vec<String>);
    fn build(&self, stream: Stream, ctx: &BuildCtx) -> Self::Runtime;
}

macro_rules! detectors {
    ($($variant:ident => $module:ident :: $cfg:ident),* $(,)?) => {
        /// One `[[detectors.<stream>]]` table; `type` picks the detector.
        #[derive(Debug, Clone, Deserialize, PartialEq)]
        #[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
        pub enum DetectorConfig { $($variant($module::$cfg)),* }

        /// Every detector name, in registration order.
        pub const DETECTOR_NAMES: &[&str] = &[$(<$module::$cfg as DetectorSpec>::NAME),*];

        impl DetectorConfig {
            pub fn name(&self) -> &'static str {
                match self { $(Self::$variant(_) => <$module::$cfg as DetectorSpec>::NAME),* }
            }
            pub fn streams(&self) -> &'static [Stream] {
                match self { $(Self::$variant(_) => <$module::$cfg as DetectorSpec>::STREAMS),* }
            }
            pub fn validate(&self, path: &str, problems: &mut Vec<String>) {
                match self { $(Self::$variant(c) => c.validate(path, problems)),* }
            }
            pub fn build(&self, stream: Stream, ctx: &BuildCtx) -> Box<dyn Detector> {
                match self { $(Self::$variant(c) => Box::new(c.build(stream, ctx))),* }
            }
        }
    };
}

detectors! {
    Threshold => threshold::ThresholdConfig,
    EwmaZ => ewma::EwmaZConfig,
    RateSpike => rate_spike::RateSpikeConfig,
    EntityBurst => entity_burst::EntityBurstConfig,
    Offline => offline::OfflineConfig,
    SiteCorrelation => site_correlation::SiteCorrelationConfig,
    Spread => spread::SpreadConfig,
    RateOfChange => rate_of_change::RateOfChangeConfig,
    Cusum => cusum::CusumConfig,
    RobustZ => robust_z::RobustZConfig,
    LevelShift => level_shift::LevelShiftConfig,
    Flatline => flatline::FlatlineConfig,
    SensorFault => sensor_fault::SensorFaultConfig,
}

/// The detectors of all streams plus one watermark per stream.
pub struct DetectorSet {
    by_stream: [Vec<Box<dyn Detector>>; 3],
    /// Before any detector or watermark: jumps ahead and duplicates.
    screen: screen::Screen,
    watermarks: [Watermark; 3],
    /// Changelog bookkeeping: on once `track_changes` is called.
    tracking: bool,
    watermark_dirty: [bool; 3],
    /// Scale-out: the routing keys this set keeps state for.
    owner: Owner,
    routes: Vec<String>,
    /// Restore: records announced per stream, until the first batch sizes the maps.
    to_reserve: [usize; 3],
    /// Each detector's time on the last parallel batch, in `observe_batch`'s job order.
    job_costs: Vec<u64>,
    /// Operators' verdicts applied so far: the sequence number of the last one taken
    /// (0 for a fresh or restored set, which then takes every verdict still kept).
    pub verdicts_seen: u64,
}

/// One changelog value of detector state: each detector holding the key, by its
/// position in the stream's list and its name (a changed config skips what no longer fits).
type KeyRecord<'a> = Vec<(u16, std::borrow::Cow<'a, str>, Vec<u8>)>;

/// One input of [`DetectorSet::observe_batch`].
#[derive(Debug, Clone, Copy)]
pub struct BatchItem<'a> {
    pub event: &'a Event,
    /// Its input partition (the watermark follows the slowest active one).
    pub partition: i32,
    pub received: std::time::Instant,
}

/// One detector's pass over a batch: its signals tagged (item, phase: 0 observe, 1
/// advance), and its score per item it observed.
type DetectorRun = (Vec<(u32, u8, Signal)>, Vec<(u32, f64)>);

/// Batches at least this large run their detectors in parallel. The pipeline gathers
/// at most 1024 inputs, and that many only when inputs wait (a backlog): then both cores
/// work on the detectors. A smaller batch means the pipeline keeps up; it stays on one
/// thread, because waking the pool's workers (which then spin a while looking for more
/// work) takes CPU from librdkafka and the broker and adds to each alert's latency.
pub const PAR_BATCH: usize = 1024;

/// What observing one event produced.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Observed {
    /// Strongest normalized score across the stream's detectors.
    pub score: f64,
    /// The event was behind its stream's watermark.
    pub late: bool,
    /// The stream's watermark moved (by a second or more) to this.
    pub watermark: Option<DateTime<FixedOffset>>,
    /// Not admitted: no detector and no watermark saw it.
    pub screened: Option<Screened>,
}

impl DetectorSet {
    pub fn new(
        configs: &[(Stream, Vec<DetectorConfig>)],
        allowed_lateness: std::time::Duration,
        ctx: &BuildCtx,
    ) -> Self {
        let mut by_stream: [Vec<Box<dyn Detector>>; 3] = Default::default();
        for (stream, list) in configs {
            // Config validation caps this: restore tracks a stream's detectors in a u64.
            assert!(list.len() <= 64, "at most 64 detectors per stream");
            for c in list {
                by_stream[stream.index()].push(c.build(*stream, ctx));
            }
        }
        let lateness =
            chrono::Duration::from_std(allowed_lateness).unwrap_or(chrono::Duration::zero());
        Self::with(by_stream, lateness, ctx.owner, ctx.screen)
    }

    /// A set with no detectors, holding the place of one that is away (a backlog batch
    /// on the detector pool takes the pipeline's set with it). Allocates nothing.
    pub fn stand_in() -> Self {
        Self::with(
            Default::default(),
            chrono::Duration::zero(),
            Owner::All,
            ScreenConfig::default(),
        )
    }

    fn with(
        by_stream: [Vec<Box<dyn Detector>>; 3],
        lateness: chrono::Duration,
        owner: Owner,
        screen: ScreenConfig,
    ) -> Self {
        Self {
            by_stream,
            screen: screen::Screen::new(screen),
            watermarks: [
                Watermark::new(lateness),
                Watermark::new(lateness),
                Watermark::new(lateness),
            ],
            tracking: false,
            watermark_dirty: [false; 3],
            owner,
            routes: Vec::new(),
            to_reserve: [0; 3],
            job_costs: Vec::new(),
            verdicts_seen: 0,
        }
    }

    /// Hands an operator's false-alarm verdict to the detectors it names; returns how
    /// many changed a key's state (each is dirty for the changelog).
    pub fn verdict(&mut self, v: &tail::Verdict) -> usize {
        self.by_stream[v.stream.index()]
            .iter_mut()
            .filter(|d| d.name() == v.detector)
            .map(|d| usize::from(d.verdict(v)))
            .sum()
    }

    /// Scale-out: the repartition partitions (of `of`) that `ev` must be copied to, one
    /// per distinct partition of its detectors' routing keys, ascending.
    pub fn partitions(&mut self, ev: &Event, of: u32, out: &mut Vec<u32>) {
        out.clear();
        self.routes.clear();
        for d in &self.by_stream[ev.stream().index()] {
            d.routes(ev, &mut self.routes);
        }
        out.extend(self.routes.iter().map(|r| partition_of(r, of)));
        out.sort_unstable();
        out.dedup();
    }

    /// Whether detector `d` has state to keep for `ev` here: always on a single
    /// instance; with scale-out, when the task owns one of its routing keys.
    fn owns(owner: Owner, routes: &mut Vec<String>, d: &dyn Detector, ev: &Event) -> bool {
        if owner == Owner::All {
            return true;
        }
        routes.clear();
        d.routes(ev, routes);
        routes.iter().any(|r| owner.owns(r))
    }

    /// Durable state from now on: detectors remember changed keys for [`Self::changes`].
    pub fn track_changes(&mut self) {
        self.tracking = true;
        for d in self.by_stream.iter_mut().flatten() {
            d.track_changes();
        }
    }

    /// The changelog records of `stream` since the last call: one per changed state key
    /// (every detector's state under it, or a tombstone when none holds it any more),
    /// and the watermark when it moved.
    pub fn changes(&mut self, stream: Stream, out: &mut Vec<Change>) {
        let i = stream.index();
        let dets = &mut self.by_stream[i];
        let mut keys = Vec::new();
        for d in dets.iter_mut() {
            d.take_dirty(&mut keys);
        }
        let mut seen =
            hashbrown::HashSet::with_capacity_and_hasher(keys.len(), ahash::RandomState::new());
        for k in keys {
            if !seen.insert(k.clone()) {
                continue;
            }
            let rec: KeyRecord = dets
                .iter()
                .enumerate()
                .filter_map(|(n, d)| Some((n as u16, d.name().into(), d.save(&k)?)))
                .collect();
            out.push(Change {
                key: format!("k:{k}"),
                value: (!rec.is_empty()).then(|| codec::encode(&rec)),
            });
        }
        if std::mem::take(&mut self.watermark_dirty[i]) {
            out.push(Change {
                key: "w".into(),
                value: Some(codec::encode(&self.watermarks[i].snapshot())),
            });
        }
    }

    /// Restore will read about `records` records of `stream` (the total so far: a later
    /// call replaces it). The maps are sized on the first batch, by each detector's share.
    pub fn reserve(&mut self, stream: Stream, records: usize) {
        self.to_reserve[stream.index()] = records;
    }

    /// Feeds one event to its stream's detectors, then lets event time advance.
    /// For single-partition inputs (files, tests, `score`).
    pub fn observe(&mut self, ev: &Event, out: &mut Vec<Signal>) -> Observed {
        self.observe_from(ev, -1, std::time::Instant::now(), out)
    }

    /// Like [`DetectorSet::observe`] for an event from input partition `partition`
    /// received at `received`: the watermark follows the slowest active partition.
    pub fn observe_from(
        &mut self,
        ev: &Event,
        partition: i32,
        received: std::time::Instant,
        out: &mut Vec<Signal>,
    ) -> Observed {
        let admission = match self.screen.admit(ev) {
            Ok(a) => a,
            Err(why) => {
                return Observed {
                    screened: Some(why),
                    ..Observed::default()
                }
            }
        };
        let i = ev.stream().index();
        let wm = &mut self.watermarks[i];
        let late = wm.is_late(ev.ts());
        let mut score: f64 = 0.0;
        for d in &mut self.by_stream[i] {
            if Self::owns(self.owner, &mut self.routes, d.as_ref(), ev) {
                score = score.max(d.observe(ev, late, out));
            }
        }
        let watermark = if admission == Admission::Counts {
            self.watermark_dirty[i] |= self.tracking;
            wm.observe_part(ev.ts(), partition, received)
        } else {
            None
        };
        if let Some(w) = watermark {
            for d in &mut self.by_stream[i] {
                d.advance(w, out);
            }
        }
        Observed {
            score,
            late,
            watermark,
            screened: None,
        }
    }

    /// Like [`DetectorSet::observe_from`] for each of `items` in turn, with the same
    /// results (the same `Observed` per item and the same signals in the same order), but
    /// each detector runs through the whole batch on its own, in parallel with the others
    /// when the batch is large enough: a detector's state is its own, and what it sees
    /// (its events, their late flags, the watermark moves between them) does not depend
    /// on the other detectors. The watermarks are computed first, in item order.
    pub fn observe_batch(&mut self, items: &[BatchItem<'_>]) -> Vec<(Observed, Vec<Signal>)> {
        // 1. Late flags and watermark moves, exactly as observe_from would meet them.
        let mut plan: Vec<Observed> = Vec::with_capacity(items.len());
        for it in items {
            let admission = match self.screen.admit(it.event) {
                Ok(a) => a,
                Err(why) => {
                    plan.push(Observed {
                        screened: Some(why),
                        ..Observed::default()
                    });
                    continue;
                }
            };
            let i = it.event.stream().index();
            let wm = &mut self.watermarks[i];
            let late = wm.is_late(it.event.ts());
            let watermark = if admission == Admission::Counts {
                self.watermark_dirty[i] |= self.tracking;
                wm.observe_part(it.event.ts(), it.partition, it.received)
            } else {
                None
            };
            plan.push(Observed {
                score: 0.0,
                late,
                watermark,
                screened: None,
            });
        }
        // 2. Every detector over its stream's items: (item, phase, signal) and scores.
        let owner = self.owner;
        let plan_ref = &plan;
        let run = |(s, det): (usize, &mut Box<dyn Detector>)| {
            let mut routes = Vec::new();
            let mut sigs: Vec<(u32, u8, Signal)> = Vec::new();
            let mut scores: Vec<(u32, f64)> = Vec::new();
            let mut buf = Vec::new();
            for (n, it) in items.iter().enumerate() {
                if it.event.stream().index() != s {
                    continue;
                }
                let p = &plan_ref[n];
                if p.screened.is_some() {
                    continue;
                }
                if Self::owns(owner, &mut routes, det.as_ref(), it.event) {
                    let score = det.observe(it.event, p.late, &mut buf);
                    scores.push((n as u32, score));
                    sigs.extend(buf.drain(..).map(|x| (n as u32, 0, x)));
                }
                if let Some(w) = p.watermark {
                    det.advance(w, &mut buf);
                    sigs.extend(buf.drain(..).map(|x| (n as u32, 1, x)));
                }
            }
            (sigs, scores)
        };
        let jobs: Vec<(usize, &mut Box<dyn Detector>)> = self
            .by_stream
            .iter_mut()
            .enumerate()
            .flat_map(|(s, v)| v.iter_mut().map(move |d| (s, d)))
            .collect();
        let done: Vec<DetectorRun> = if items.len() >= PAR_BATCH {
            use rayon::prelude::*;
            // One detector per task, the costliest of the last batch first: costs differ
            // up to 30x (robust_z vs threshold), and a costly detector started last keeps
            // one core busy while the other idles (longest-processing-time-first).
            let costs = &mut self.job_costs;
            costs.resize(jobs.len(), 0);
            let mut order: Vec<_> = jobs.into_iter().enumerate().collect();
            order.sort_by_key(|(g, _)| std::cmp::Reverse(costs[*g]));
            let mut timed: Vec<(usize, u64, DetectorRun)> = order
                .into_par_iter()
                .with_max_len(1)
                .map(|(g, job)| {
                    let t = std::time::Instant::now();
                    let r = run(job);
                    (g, t.elapsed().as_nanos() as u64, r)
                })
                .collect();
            timed.sort_unstable_by_key(|(g, _, _)| *g);
            timed
                .into_iter()
                .map(|(g, ns, r)| {
                    costs[g] = ns;
                    r
                })
                .collect()
        } else {
            jobs.into_iter().map(run).collect()
        };
        // 3. Merge: per item, observe signals before advance signals, each phase in
        // detector order (the jobs are in detector order; the sort is stable).
        let mut all: Vec<(u32, u8, Signal)> = Vec::new();
        for (sigs, scores) in done {
            for (n, sc) in scores {
                let o = &mut plan[n as usize];
                o.score = o.score.max(sc);
            }
            all.extend(sigs);
        }
        all.sort_by_key(|(n, phase, _)| (*n, *phase));
        let mut out: Vec<(Observed, Vec<Signal>)> =
            plan.into_iter().map(|o| (o, Vec::new())).collect();
        for (n, _, sig) in all {
            out[n as usize].1.push(sig);
        }
        out
    }

    /// Live input after a restore: a watermark past `limit` (the wall clock plus the
    /// allowed skew) was carried there by a clock from the future before the wall-clock
    /// check existed; it is pulled back to `now`. Returns each repaired stream's watermark.
    pub fn repair_watermarks(
        &mut self,
        limit: DateTime<FixedOffset>,
        now: DateTime<FixedOffset>,
    ) -> Vec<(Stream, Option<DateTime<FixedOffset>>)> {
        let mut repaired = Vec::new();
        for s in Stream::ALL {
            let i = s.index();
            if self.watermarks[i].repair(limit, now) {
                self.watermark_dirty[i] |= self.tracking;
                repaired.push((s, self.watermarks[i].current()));
            }
        }
        repaired
    }

    /// The current watermark of a stream, if it has seen an event.
    pub fn watermark(&self, s: Stream) -> Option<DateTime<FixedOffset>> {
        self.watermarks[s.index()].current()
    }

    /// End of a finite input: event time jumps to the last event seen (no more lateness
    /// to wait for), so windows that the data covers close.
    pub fn flush(&mut self, out: &mut Vec<Signal>) -> Vec<(Stream, DateTime<FixedOffset>)> {
        let mut moved = Vec::new();
        for s in Stream::ALL {
            let i = s.index();
            if let Some(w) = self.watermarks[i].flush() {
                for d in &mut self.by_stream[i] {
                    d.advance(w, out);
                }
                moved.push((s, w));
            }
        }
        moved
    }

    pub fn keys(&self) -> usize {
        self.by_stream.iter().flatten().map(|d| d.keys()).sum()
    }

    pub fn detectors(&self, s: Stream) -> impl Iterator<Item = &str> {
        self.by_stream[s.index()].iter().map(|d| d.name())
    }
}

/// Formats a duration the way operators write it: `90s`, `5m`, `2h`.
pub fn fmt_duration(d: std::time::Duration) -> String {
    let s = d.as_secs();
    if s == 0 {
        format!("{}ms", d.as_millis())
    } else if s % 3600 == 0 {
        format!("{}h", s / 3600)
    } else if s % 60 == 0 {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

/// Which way a deviation counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Only rises (gas, H2S: a falling reading is good news).
    Up,
    /// Only falls.
    Down,
    #[default]
    Both,
}

impl Direction {
    /// Signed deviation -> the part that counts (>= 0).
    pub fn counted(self, dev: f64) -> f64 {
        match self {
            Direction::Up => dev.max(0.0),
            Direction::Down => (-dev).max(0.0),
            Direction::Both => dev.abs(),
        }
    }
}

/// The one rule every per-key detector follows: `Anomalous` (built by `anomalous`) on
/// every firing observation, one `Clear` when the key stops firing, nothing otherwise.
/// `alerting` is the key's flag, kept in its state.
pub(crate) fn transition(
    firing: bool,
    alerting: &mut bool,
    anomalous: impl FnOnce() -> SignalKind,
) -> Option<SignalKind> {
    if firing {
        *alerting = true;
        Some(anomalous())
    } else if std::mem::take(alerting) {
        Some(SignalKind::Clear)
    } else {
        None
    }
}

/// `x` limited to [`crate::decode::MAX_MAGNITUDE`]. The decoder already marks a reading
/// beyond it as a fault; this keeps a detector's arithmetic finite for any finite input
/// however it is fed (squared, summed or stored as `f32`, 1e30 stays finite).
pub(crate) fn bounded(x: f64) -> f64 {
    x.clamp(-crate::decode::MAX_MAGNITUDE, crate::decode::MAX_MAGNITUDE)
}

/// The signal a per-sensor value detector emits for reading `r` (key: the sensor id).
pub(crate) fn sensor_signal(
    detector: &'static str,
    r: &crate::decode::SensorReading,
    event_id: String,
    kind: SignalKind,
) -> Signal {
    Signal {
        stream: Stream::Sensors,
        detector,
        key: r.sensor_id.clone(),
        subject: sensor_subject(r),
        region: r.region,
        ts: r.ts,
        event_id: Some(event_id),
        kind,
    }
}

pub(crate) fn sensor_subject(
    r: &crate::decode::SensorReading,
) -> serde_json::Map<String, serde_json::Value> {
    let mut m = serde_json::Map::new();
    m.insert("sensor_id".into(), r.sensor_id.clone().into());
    m.insert("site_id".into(), r.site_id.clone().into());
    m.insert("region".into(), r.region_code.clone().into());
    m.insert("kind".into(), r.kind.clone().into());
    if let Some(p) = &r.point {
        point_subject(p, &mut m);
    }
    m
}

/// What a subject says of a registered point: its name, its site's name and hazard grade.
pub(crate) fn point_subject(
    p: &crate::registry::Point,
    m: &mut serde_json::Map<String, serde_json::Value>,
) {
    if let Some(name) = &p.name {
        m.insert("name".into(), name.clone().into());
    }
    if let Some(site) = &p.site_name {
        m.insert("site_name".into(), site.clone().into());
    }
    if let Some(g) = p.hazard_grade {
        m.insert("hazard_grade".into(), g.into());
    }
}

/// What a title calls reading `r`'s sensor: its point's name, else its kind's label.
pub(crate) fn point_label(r: &crate::decode::SensorReading) -> std::borrow::Cow<'_, str> {
    match r.point.as_ref().and_then(|p| p.name.as_deref()) {
        Some(name) => std::borrow::Cow::Borrowed(name),
        None => std::borrow::Cow::Owned(kind_label(&r.kind)),
    }
}

/// What a title calls reading `r`'s site: its point's site name, else the site id.
pub(crate) fn site_label(r: &crate::decode::SensorReading) -> &str {
    r.point
        .as_ref()
        .and_then(|p| p.site_name.as_deref())
        .unwrap_or(&r.site_id)
}

#[cfg(test)]
mod durable_tests;
#[cfg(test)]
mod hostile_tests;

#[cfg(test)]
pub(crate) mod testutil {
    use crate::decode::{test_decoder, Event, Stream};

    pub fn ts(s: &str) -> chrono::DateTime<chrono::FixedOffset> {
        chrono::DateTime::parse_from_rfc3339(s).unwrap()
    }

    /// One detector's changelog, compacted: latest value per key, `None` a tombstone.
    pub type Log = std::collections::HashMap<String, Option<Vec<u8>>>;

    /// Writes `d`'s changes since the last call into `log`; returns how many.
    pub fn flush(d: &mut dyn super::Detector, log: &mut Log) -> usize {
        let mut keys = Vec::new();
        d.take_dirty(&mut keys);
        keys.sort();
        keys.dedup();
        for k in &keys {
            log.insert(k.to_string(), d.save(k));
        }
        keys.len()
    }

    /// `d` (fresh) tracking changes, with every record of `log` put back.
    pub fn restored<D: super::Detector>(mut d: D, log: &Log) -> D {
        d.track_changes();
        for (k, v) in log {
            match v {
                Some(b) => d.restore(k, b).unwrap(),
                None => d.forget(k),
            }
        }
        d
    }

    /// Feeds `evs` the way `DetectorSet` does (late flags from `wm`, advance on each
    /// move); returns each event's score and signals, the signals in a canonical order.
    pub fn drive(
        d: &mut dyn super::Detector,
        wm: &mut super::Watermark,
        evs: &[Event],
    ) -> Vec<(f64, Vec<super::Signal>)> {
        evs.iter()
            .map(|ev| {
                let mut out = Vec::new();
                let s = d.observe(ev, wm.is_late(ev.ts()), &mut out);
                if let Some(w) = wm.observe(ev.ts()) {
                    d.advance(w, &mut out);
                }
                out.sort_by(|a, b| a.key.cmp(&b.key));
                (s, out)
            })
            .collect()
    }

    /// A gas reading of sensor `id` at `secs` after 2026-11-26T00:00:00+08:00.
    pub fn reading(id: &str, kind: &str, secs: i64, value: f64) -> Event {
        let t = ts("2026-11-26T00:00:00+08:00") + chrono::Duration::seconds(secs);
        let v = serde_json::json!({"sensor_id":id,"site_id":"SITE-330503-0042","region":"330503101",
            "kind":kind,"ts":t.to_rfc3339(),"value":value});
        test_decoder()
            .decode(Stream::Sensors, v.to_string().as_bytes())
            .unwrap()
            .event
    }

    /// [`reading`] with `value` taken as it is, whatever its kind's measuring range (for
    /// tests of a detector's arithmetic on any finite input).
    pub fn raw_reading(id: &str, kind: &str, secs: i64, value: f64) -> Event {
        let Event::Sensor(mut r) = reading(id, kind, secs, 0.0) else {
            unreachable!()
        };
        r.value = value;
        Event::Sensor(r)
    }

    pub fn incident(id: &str, region: &str, secs: i64) -> Event {
        let t = ts("2026-11-26T00:00:00+08:00") + chrono::Duration::seconds(secs);
        let v =
            serde_json::json!({"id":id,"ts":t.to_rfc3339(),"region":region,"category":"dispute"});
        test_decoder()
            .decode(Stream::Incidents, v.to_string().as_bytes())
            .unwrap()
            .event
    }

    pub fn fraud(id: &str, phone: &str, region: &str, secs: i64) -> Event {
        let t = ts("2026-11-26T00:00:00+08:00") + chrono::Duration::seconds(secs);
        let v = serde_json::json!({"id":id,"ts":t.to_rfc3339(),"region":region,"channel":"phone",
            "scheme":"impersonation","suspect_phone":phone});
        test_decoder()
            .decode(Stream::Fraud, v.to_string().as_bytes())
            .unwrap()
            .event
    }
}
