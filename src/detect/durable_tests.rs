//! Durable state, end to end over the registry: every detector of `config/default.toml`
//! (all eleven types) plus a few variants, on a simulated city with its injected anomalies.
//! The original set writes its changelog every [`FLUSH`] events; at several flush points a
//! fresh set is restored from the log and must then emit exactly the original's signals
//! (scores, late flags and watermarks included) and write the same changelog.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use super::*;
use crate::decode::Decoder;
use crate::simulate::{generate, Label, SimConfig};

/// Events between two changelog flushes.
const FLUSH: usize = 500;

type Log = HashMap<(Stream, String), Option<Vec<u8>>>;

/// What one event produced: its `Observed` and its signals in a canonical order.
type Step = (Observed, Vec<Signal>);

/// A sorted copy: detectors push the clears of `advance` in hash-map order, which differs
/// between two sets; per detector and key the order is kept (stable sort).
fn canonical(mut sigs: Vec<Signal>) -> Vec<Signal> {
    sigs.sort_by(|a, b| (a.detector, &a.key).cmp(&(b.detector, &b.key)));
    sigs
}

fn flush(set: &mut DetectorSet, log: &mut Log, all: &mut Vec<(Stream, Change)>) -> usize {
    let mut n = 0;
    for s in Stream::ALL {
        let mut out = Vec::new();
        set.changes(s, &mut out);
        n += out.len();
        for c in out {
            log.insert((s, c.key.clone()), c.value.clone());
            all.push((s, c));
        }
    }
    n
}

struct Setup {
    configs: Vec<(Stream, Vec<DetectorConfig>)>,
    lateness: std::time::Duration,
    ctx: BuildCtx,
}

impl Setup {
    fn fresh(&self) -> DetectorSet {
        let mut set = DetectorSet::new(&self.configs, self.lateness, &self.ctx);
        set.track_changes();
        set
    }
}

fn setup() -> Setup {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/default.toml");
    let cfg = crate::config::load(&path).expect("config/default.toml loads");
    let mut configs = cfg.detectors.per_stream();
    let extra = |toml: &str| -> DetectorConfig { toml::from_str(toml).expect("extra detector") };
    for (s, list) in &mut configs {
        match s {
            // Grouped windows on incidents, warm early.
            Stream::Incidents => list.push(extra(
                "type = \"rate_spike\"\ngroup_by = \"category\"\nwarmup_windows = 4\nmax_values = 4",
            )),
            // A frozen, smoothed EWMA chart on every kind.
            Stream::Sensors => list.push(extra(
                "type = \"ewma_z\"\nbaseline = \"frozen\"\nsmoothing = 0.3\ndirection = \"both\"",
            )),
            Stream::Fraud => {}
        }
    }
    // State is restored only in `run`, which checks event times against the wall clock
    // instead of a jump limit (`Pipeline::live`); the replay screen keeps no durable state.
    let mut ctx = BuildCtx::new(cfg.regions.clone());
    ctx.screen.max_jump = None;
    Setup {
        configs,
        lateness: cfg.processing.allowed_lateness,
        ctx,
    }
}

/// A simulated city in arrival order, decoded; every 250th event is followed by a copy
/// 10 minutes older (late: behind the watermark), so late decisions are compared too.
fn events(regions: &Arc<crate::regions::Regions>) -> (Vec<Event>, usize, Vec<Label>) {
    let city = generate(
        &SimConfig {
            hours: 7.0,
            seed: 7,
            start: chrono::DateTime::parse_from_rfc3339("2026-11-26T06:00:00+08:00").unwrap(),
            sites: 8,
        },
        regions,
    );
    let d = Decoder::new(regions.clone());
    let mut evs = Vec::with_capacity(city.events.len() + city.events.len() / 250);
    let mut late = 0;
    for (i, e) in city.events.iter().enumerate() {
        evs.push(d.decode(e.stream, e.json.as_bytes()).unwrap().event);
        if i % 250 == 249 {
            let mut v: serde_json::Value = serde_json::from_str(&e.json).unwrap();
            // 601 s: not a multiple of any sensor's interval, so never a resend of a
            // reading (same sensor and time), which the screen would count once.
            let t = e.ts - chrono::Duration::seconds(601);
            v["ts"] = t.to_rfc3339().into();
            evs.push(d.decode(e.stream, v.to_string().as_bytes()).unwrap().event);
            late += 1;
        }
        if i % 1000 == 999 && e.stream == Stream::Sensors {
            // A glitch: a value outside any range, a second later (`sensor_fault`).
            let mut v: serde_json::Value = serde_json::from_str(&e.json).unwrap();
            v["ts"] = (e.ts + chrono::Duration::seconds(1)).to_rfc3339().into();
            v["value"] = 1e308.into();
            evs.push(d.decode(e.stream, v.to_string().as_bytes()).unwrap().event);
        }
    }
    (evs, late, city.labels)
}

/// Restores `records` into a fresh set.
fn restore<'a>(
    setup: &Setup,
    records: impl IntoIterator<Item = (&'a Stream, &'a str, Option<&'a [u8]>)>,
) -> DetectorSet {
    let mut set = setup.fresh();
    for (s, k, v) in records {
        set.restore(*s, k, v)
            .unwrap_or_else(|e| panic!("restoring {s} {k}: {e}"));
    }
    set
}

fn parse(s: &str) -> chrono::DateTime<chrono::FixedOffset> {
    chrono::DateTime::parse_from_rfc3339(s).unwrap()
}

#[test]
fn a_restored_set_emits_exactly_what_the_original_would() {
    let setup = setup();
    let (evs, late_copies, labels) = events(&setup.ctx.regions);
    let n = evs.len();

    // The original run: per-event results, the compacted log and the full log per flush.
    let mut orig = setup.fresh();
    let mut log = Log::new();
    let mut all: Vec<(Stream, Change)> = Vec::new();
    let mut steps: Vec<Step> = Vec::with_capacity(n);
    // At each flush point: (event index, compacted log, full-log length, keys).
    let mut points: Vec<(usize, Log, usize, usize)> = Vec::new();
    let mut records = 0;
    for (i, ev) in evs.iter().enumerate() {
        if i > 0 && i % FLUSH == 0 {
            records += flush(&mut orig, &mut log, &mut all);
            points.push((i, log.clone(), all.len(), orig.keys()));
        }
        let mut out = Vec::new();
        let o = orig.observe(ev, &mut out);
        steps.push((o, canonical(out)));
    }

    // Every detector type must fire (and something must clear) in the run, or the
    // comparison below proves nothing for it.
    let mut fired: BTreeMap<&str, (usize, usize)> =
        DETECTOR_NAMES.iter().map(|d| (*d, (0, 0))).collect();
    for (_, sigs) in &steps {
        for s in sigs {
            let e = fired.get_mut(s.detector).unwrap();
            match s.kind {
                SignalKind::Anomalous { .. } => e.0 += 1,
                SignalKind::Clear => e.1 += 1,
            }
        }
    }
    let late = steps.iter().filter(|(o, _)| o.late).count();
    eprintln!(
        "{n} events ({late} late, {late_copies} late copies injected), {records} changelog \
         records in {} flushes, {} keys in the compacted log; (anomalous, clear) per detector: \
         {fired:?}",
        points.len(),
        log.len()
    );
    for (d, (a, _)) in &fired {
        assert!(*a > 0, "{d} never fired: {fired:?}");
    }
    let screened: Vec<_> = steps
        .iter()
        .enumerate()
        .filter(|(_, (o, _))| o.screened.is_some())
        .map(|(i, (o, _))| (i, o.screened, evs[i].key().to_string(), evs[i].ts()))
        .collect();
    // A late copy of a report is a resend (its id again): counted once, not late.
    assert!(
        screened.iter().all(
            |(_, why, key, _)| *why == Some(crate::detect::Screened::Duplicate)
                && !key.starts_with("S-")
        ),
        "only resent reports are screened: {screened:?}"
    );
    assert!(
        late + screened.len() >= late_copies,
        "late events: {late}; screened {screened:?}"
    );

    // Split points: a quarter of the way in (before most anomalies), then the first flush
    // point past the middle of each injected anomaly (its episode open, windows half
    // full, an outage refreshed a few times), then nine tenths in.
    let mut splits: Vec<usize> = vec![points.len() / 4];
    for l in &labels {
        let (a, b) = (parse(&l.start), parse(&l.end));
        let mid = a + (b - a) / 2;
        let i = evs.partition_point(|e| e.ts() < mid);
        if let Some(p) = points.iter().position(|pt| pt.0 >= i) {
            splits.push(p);
        }
    }
    splits.push(points.len() * 9 / 10);
    splits[1..].sort_unstable();
    splits.dedup();
    for (round, &p) in splits.iter().enumerate() {
        let (at, ref snap, full_len, keys) = points[p];
        // Odd rounds replay the whole uncompacted log in order (older values, then
        // tombstones), as a restart before compaction would; even ones the compacted log.
        let full = round % 2 == 1;
        let mut set = if full {
            restore(
                &setup,
                all[..full_len]
                    .iter()
                    .map(|(s, c)| (s, c.key.as_str(), c.value.as_deref())),
            )
        } else {
            restore(
                &setup,
                snap.iter().map(|((s, k), v)| (s, k.as_str(), v.as_deref())),
            )
        };
        assert_eq!(
            set.keys(),
            keys,
            "split at event {at}: restored keys {} vs original {keys}",
            set.keys()
        );

        // The rest of the run: the same results, and the same changelog at each flush.
        let mut my_log = snap.clone();
        let mut compared: BTreeMap<&str, usize> = BTreeMap::new();
        let mut next_point = p + 1;
        for (i, ev) in evs.iter().enumerate().skip(at) {
            if i > at && i % FLUSH == 0 {
                flush(&mut set, &mut my_log, &mut Vec::new());
                let (pi, ref olog, _, okeys) = points[next_point];
                assert_eq!(pi, i);
                assert_eq!(set.keys(), okeys, "split {at}: keys at event {i}");
                if my_log != *olog {
                    let diff: Vec<_> = olog
                        .iter()
                        .filter(|(k, v)| my_log.get(*k) != Some(*v))
                        .map(|(k, _)| k)
                        .take(5)
                        .collect();
                    panic!("split {at}: changelog differs at event {i}, e.g. {diff:?}");
                }
                next_point += 1;
            }
            let mut out = Vec::new();
            let o = set.observe(ev, &mut out);
            let out = canonical(out);
            let (oo, osigs) = &steps[i];
            assert_eq!(
                (&o, &out),
                (oo, osigs),
                "split at event {at}: event {i} ({ev:?}) differs"
            );
            for s in &out {
                *compared.entry(s.detector).or_default() += 1;
            }
        }
        eprintln!(
            "split at event {at} ({} records, {}): signals compared per detector {compared:?}",
            if full { full_len } else { snap.len() },
            if full { "full log" } else { "compacted" },
        );
        if round == 0 {
            for d in DETECTOR_NAMES {
                assert!(
                    compared.get(d).copied().unwrap_or(0) > 0,
                    "{d}: no signal after the first split at {at}: {compared:?}"
                );
            }
        }
    }
}

/// Scale-out: the simulated city split over [`TASKS`] tasks as the repartition topics
/// split it (each event copied to the partition of each routing key, observed there by
/// the detectors owning one). Every state key must live in exactly one task, every key
/// a single instance keeps must live in some task (grouped keys aside, see below), and
/// the per-event `threshold`
/// verdicts (no windows, no watermark) must be the single instance's exactly.
#[test]
fn scale_out_tasks_keep_each_key_exactly_once() {
    const TASKS: u32 = 4;
    let s = setup();
    let (evs, _, _) = events(&s.ctx.regions);
    let mut single = s.fresh();
    let mut tasks: Vec<DetectorSet> = (0..TASKS)
        .map(|index| {
            let ctx = BuildCtx {
                owner: Owner::Partition { index, of: TASKS },
                ..s.ctx.clone()
            };
            let mut t = DetectorSet::new(&s.configs, s.lateness, &ctx);
            t.track_changes();
            t
        })
        .collect();
    let mut router = s.fresh();
    let mut parts = Vec::new();
    let (mut one, mut many) = (Vec::new(), Vec::new());
    let mut copies = 0;
    for ev in &evs {
        single.observe(ev, &mut one);
        router.partitions(ev, TASKS, &mut parts);
        copies += parts.len();
        for &p in &parts {
            tasks[p as usize].observe(ev, &mut many);
        }
    }
    let threshold = |v: &[Signal]| {
        let mut v: Vec<String> = v
            .iter()
            .filter(|s| s.detector == "threshold")
            .map(|s| format!("{} {} {:?}", s.key, s.ts, s.kind))
            .collect();
        v.sort();
        v
    };
    let expected = threshold(&one);
    assert!(!expected.is_empty(), "the city should trip thresholds");
    assert_eq!(threshold(&many), expected);

    // Every key any detector wrote (live or evicted since), per set.
    let written = |set: &mut DetectorSet| {
        let mut keys = std::collections::BTreeSet::new();
        for st in Stream::ALL {
            let mut out = Vec::new();
            set.changes(st, &mut out);
            keys.extend(
                out.into_iter()
                    .map(|c| (st, c.key))
                    .filter(|(_, k)| k.starts_with("k:") && k != "k:"),
            );
        }
        keys
    };
    let all = written(&mut single);
    let mut owner: BTreeMap<(Stream, String), u32> = BTreeMap::new();
    for (p, t) in tasks.iter_mut().enumerate() {
        let keys = written(t);
        assert!(
            !keys.is_empty(),
            "task {p} holds nothing: routing is lopsided"
        );
        for k in keys {
            if let Some(other) = owner.insert(k.clone(), p as u32) {
                panic!("{k:?} lives in tasks {other} and {p}");
            }
        }
    }
    // Grouped keys (`<region>/<value>`) aside: which values `group_by` tracks by name
    // (the first `max_values`, the rest are `other`) is decided per task in scale-out.
    for k in all.iter().filter(|(_, k)| !k.contains('/')) {
        assert!(owner.contains_key(k), "{k:?} lives in no task");
    }
    // Sensor readings go once (by site); incidents and fraud fan out per region level
    // and suspect, but never to more partitions than there are.
    assert!(copies >= evs.len() && copies <= evs.len() * TASKS as usize);
}

/// `observe_batch` (detectors in parallel over a batch) against `observe_from` one event
/// at a time, over the simulated city with its late copies, in batches of varied sizes
/// (both below and above the parallel threshold): the same `Observed` and signals for
/// every event, and the same changelog at the end.
#[test]
fn batched_observation_equals_one_event_at_a_time() {
    let s = setup();
    let (evs, _, _) = events(&s.ctx.regions);
    let mut one = s.fresh();
    let mut batched = s.fresh();
    let t0 = std::time::Instant::now();
    let sizes = [1usize, 7, 64, 300, 1024, 63, 1500, 256];
    let (mut i, mut k) = (0, 0);
    let mut seen = 0;
    while i < evs.len() {
        let n = sizes[k % sizes.len()].min(evs.len() - i);
        k += 1;
        let items: Vec<BatchItem> = evs[i..i + n]
            .iter()
            .enumerate()
            .map(|(j, e)| BatchItem {
                event: e,
                partition: ((i + j) % 3) as i32,
                received: t0,
            })
            .collect();
        let got = batched.observe_batch(&items);
        assert_eq!(got.len(), n);
        for (it, (obs, sigs)) in items.iter().zip(got) {
            let mut want = Vec::new();
            let o = one.observe_from(it.event, it.partition, it.received, &mut want);
            assert_eq!(obs, o, "event {seen}");
            assert_eq!(canonical(sigs), canonical(want), "event {seen}");
            seen += 1;
        }
        i += n;
    }
    let (mut a, mut b) = (Log::new(), Log::new());
    flush(&mut one, &mut a, &mut Vec::new());
    flush(&mut batched, &mut b, &mut Vec::new());
    assert_eq!(a, b);
}
