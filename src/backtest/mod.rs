//! Backtest: replays labelled NDJSON files through the real [`Pipeline`] (the same code
//! path as `run`, with an in-memory sink) and scores the alert episodes against the
//! labelled anomalies, per stream and per detector.
//!
//! Matching rules:
//! - An episode is one `alert_id`; it starts at its first message's `first_event_ts` and
//!   its level is the highest any of its messages showed.
//! - An episode's subject keys are the most specific of its subject fields: `sensor_id`
//!   (and its `site_id`), else `site_id`, else its suspects (`phone:<suspect_phone>`,
//!   `account:<suspect_account>`, `url:<suspect_url>`), else its `region`.
//! - An episode matches a label when the stream agrees, a subject key equals the label's
//!   subject (so a sensor's episode matches a label on its site) or both are region codes
//!   on one branch of the hierarchy (a township surge also explains its county's and the
//!   city's episode; a county-wide rise also explains a township's), and the episode
//!   starts inside `[start, end + grace]`.
//! - An episode matching no hazard label is a false alert; a hazard label no episode
//!   matches is missed. Per detector, recall counts only the labels that list the
//!   detector; precision counts an episode true if it matches any hazard label of its
//!   stream.
//! - Not-a-hazard labels (`hazard: false`: a maintenance shift, a gap, a late upload, a
//!   quantized, heavy-tailed or daily-cycling sensor) are never missed and never in
//!   recall. They match episodes by the same rules; a false episode above blue that
//!   matches one is counted apart (`not_a_hazard_episodes`, per kind in `not_a_hazard`),
//!   so the report says which realism the detectors mistake for a hazard.
//! - Delays are event time from the label's start to the first matching episode's start,
//!   and for labels on one sensor also in readings (that sensor's readings from the
//!   label's start up to the episode's start, inclusive: 1 = caught on the first
//!   anomalous reading). Median and p90 interpolate linearly between ranks.
//!
//! [`recorded`] scores labelled recorded series (SKAB, plain CSV) instead, one fresh
//! pipeline per file.

pub mod incidents;
pub mod recorded;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use chrono::DateTime;
use serde::{Deserialize, Serialize};

use crate::alert::{Alert, Level};
use crate::config::Config;
use crate::decode::Stream;
use crate::pipeline::{Pipeline, PipelineError};
use crate::simulate::Label;
use crate::sink::{CollectSink, LogDeadLetters, Sink};
use crate::source::replay::ReplaySource;
use crate::source::{Envelope, OffsetStore, Source, SourceError};
use crate::telemetry::metrics::Metrics;

/// Default grace after a label's end within which an episode may still start.
pub const DEFAULT_GRACE_SECS: i64 = 600;

#[derive(Debug, thiserror::Error)]
pub enum BacktestError {
    #[error("{0}")]
    Usage(String),
    #[error("{path}: line {line}: {message}")]
    Label {
        path: String,
        line: usize,
        message: String,
    },
    /// A malformed row of a recorded series (`line` counts from 1, the header included).
    #[error("{path}: line {line}: {message}")]
    Row {
        path: String,
        line: usize,
        message: String,
    },
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
}

/// One alert episode, as the matcher sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Episode {
    pub alert_id: String,
    pub stream: Stream,
    pub detector: String,
    /// Subject keys, most specific first (see the module docs).
    pub keys: Vec<String>,
    /// Unix seconds of `first_event_ts`.
    pub start: i64,
    pub level: Level,
}

/// Subject keys of an alert subject, most specific first.
pub fn subject_keys(subject: &serde_json::Map<String, serde_json::Value>) -> Vec<String> {
    let get = |k: &str| subject.get(k).and_then(|v| v.as_str()).map(str::to_string);
    if let Some(s) = get("sensor_id") {
        return [Some(s), get("site_id")].into_iter().flatten().collect();
    }
    if let Some(s) = get("site_id") {
        return vec![s];
    }
    let suspects: Vec<String> = ["phone", "account", "url"]
        .iter()
        .filter_map(|k| get(&format!("suspect_{k}")).map(|v| format!("{k}:{v}")))
        .collect();
    if !suspects.is_empty() {
        return suspects;
    }
    get("region").into_iter().collect()
}

/// Groups alert messages into episodes (first message's start, highest level).
pub fn episodes(alerts: &[Alert]) -> Vec<Episode> {
    let mut by_id: HashMap<&str, usize> = HashMap::new();
    let mut out: Vec<Episode> = Vec::new();
    for a in alerts {
        if let Some(&i) = by_id.get(a.alert_id.as_str()) {
            out[i].level = out[i].level.max(a.level);
            continue;
        }
        let Some(stream) = Stream::parse(&a.stream) else {
            continue;
        };
        let Ok(start) = DateTime::parse_from_rfc3339(&a.first_event_ts) else {
            continue;
        };
        by_id.insert(&a.alert_id, out.len());
        out.push(Episode {
            alert_id: a.alert_id.clone(),
            stream,
            detector: a.detector.clone(),
            keys: subject_keys(&a.subject),
            start: start.timestamp(),
            level: a.level,
        });
    }
    out
}

fn is_region(s: &str) -> bool {
    (s.len() == 6 || s.len() == 9) && s.bytes().all(|b| b.is_ascii_digit())
}

/// `a` is `b` or one of its ancestors: a county (6 digits) over its townships, a city
/// (`xxxx00`) over its counties and townships.
fn region_contains(a: &str, b: &str) -> bool {
    a == b
        || (a.len() == 6 && b.len() == 9 && b.starts_with(a))
        || (a.len() == 6 && a.ends_with("00") && b.len() >= 6 && b[..4] == a[..4])
}

fn subject_matches(key: &str, label: &str) -> bool {
    key == label
        || (is_region(key)
            && is_region(label)
            && (region_contains(key, label) || region_contains(label, key)))
}

/// A label with its times parsed.
#[derive(Debug, Clone)]
struct Window {
    start: i64,
    end: i64,
}

fn window(l: &Label) -> Option<Window> {
    Some(Window {
        start: DateTime::parse_from_rfc3339(&l.start).ok()?.timestamp(),
        end: DateTime::parse_from_rfc3339(&l.end).ok()?.timestamp(),
    })
}

/// Reading times of the sensors labels name: for delays in readings.
#[derive(Debug, Default, Clone)]
pub struct ReadingIndex {
    times: HashMap<String, Vec<i64>>,
}

impl ReadingIndex {
    pub fn push(&mut self, sensor: &str, t: i64) {
        if let Some(v) = self.times.get_mut(sensor) {
            v.push(t);
        }
    }

    /// Tracks these sensors (others are ignored by [`Self::push`]).
    pub fn track(&mut self, sensor: &str) {
        self.times.entry(sensor.to_string()).or_default();
    }

    pub fn tracks(&self, sensor: &str) -> bool {
        self.times.contains_key(sensor)
    }

    fn readings_between(&self, sensor: &str, from: i64, to: i64) -> Option<u32> {
        let v = self.times.get(sensor)?;
        if v.is_empty() {
            return None;
        }
        Some(v.iter().filter(|&&t| t >= from && t <= to).count() as u32)
    }
}

/// Precision, recall, false alerts and delays of one stream, one detector or everything.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// `all`, a stream, or `stream/detector`.
    pub name: String,
    /// False when labels expect this detector but the config does not run it.
    pub configured: bool,
    pub events: u64,
    pub episodes: u64,
    pub true_episodes: u64,
    pub false_episodes: u64,
    pub precision: Option<f64>,
    pub labels: u64,
    pub caught: u64,
    pub recall: Option<f64>,
    pub false_per_10k_events: Option<f64>,
    /// False episodes above blue starting inside a not-a-hazard stretch (part of
    /// `false_episodes`).
    #[serde(default)]
    pub not_a_hazard_episodes: u64,
    pub delay_median_s: Option<f64>,
    pub delay_p90_s: Option<f64>,
    pub delay_median_readings: Option<f64>,
    pub delay_p90_readings: Option<f64>,
    /// Missed labels as `kind subject start`.
    pub missed: Vec<String>,
}

/// How one label fared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelResult {
    #[serde(flatten)]
    pub label: Label,
    /// Detector -> delay (s) of its first matching episode.
    pub caught_by: BTreeMap<String, i64>,
    /// Detector -> delay in readings (sensor labels only).
    pub caught_by_readings: BTreeMap<String, u32>,
    /// Highest level of the matching episodes.
    pub max_level: Option<Level>,
}

/// Recall of the labels of one expected level.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LevelRecall {
    pub level: String,
    pub labels: u64,
    pub caught: u64,
    /// Labels at least one configured detector is expected to catch, and how many were.
    pub coverable: u64,
    pub coverable_caught: u64,
}

/// How the detectors took one kind of not-a-hazard realism.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotAHazard {
    pub kind: String,
    pub labels: u64,
    /// False episodes (any level) starting inside a stretch of this kind.
    pub episodes: u64,
    /// Those above blue: false alarms.
    pub episodes_above_blue: u64,
    /// The same, per detector.
    pub by_detector: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub grace_s: i64,
    pub overall: Stats,
    pub streams: Vec<Stats>,
    pub detectors: Vec<Stats>,
    pub levels: Vec<LevelRecall>,
    pub labels: Vec<LabelResult>,
    /// Episodes that match no hazard label: `alert_id`
    /// (stream:detector:key:first-event-time).
    pub false_alerts: Vec<String>,
    /// Per kind of not-a-hazard label (labels from before the field have none).
    #[serde(default)]
    pub not_a_hazard: Vec<NotAHazard>,
    /// The false alerts (any level) inside a not-a-hazard stretch: `alert_id level kinds`.
    #[serde(default)]
    pub false_in_not_a_hazard: Vec<String>,
    /// The hazards as incidents (filled by [`run`]; absent from reports before them).
    #[serde(default)]
    pub incidents: Option<incidents::IncidentStats>,
    /// ISA-18.2 alarm KPIs of the replay (filled by [`run`]): the city's first, then the
    /// busiest other centers ([`ALARM_KPI_CENTERS`] in all).
    #[serde(default)]
    pub alarm_kpis: Vec<crate::alert::kpi::KpiSummary>,
}

/// How many command centers a report's alarm KPIs list.
pub const ALARM_KPI_CENTERS: usize = 6;

/// Linear-interpolation quantile of unsorted values.
pub fn quantile(values: &[f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let pos = q * (v.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    Some(v[lo] + (v[hi] - v[lo]) * (pos - lo as f64))
}

fn ratio(a: u64, b: u64) -> Option<f64> {
    (b > 0).then(|| a as f64 / b as f64)
}

/// What [`evaluate`] needs besides episodes and labels.
pub struct EvalInput<'a> {
    pub events: &'a BTreeMap<Stream, u64>,
    /// Detectors the config runs, per stream.
    pub configured: &'a BTreeSet<(Stream, String)>,
    pub readings: Option<&'a ReadingIndex>,
    pub grace_s: i64,
}

/// For each episode, the labels it matches (hazards and not), by the module's rules.
fn label_matches(episodes: &[Episode], labels: &[Label], grace_s: i64) -> Vec<Vec<usize>> {
    let windows: Vec<Option<Window>> = labels.iter().map(window).collect();
    episodes
        .iter()
        .map(|e| {
            labels
                .iter()
                .enumerate()
                .filter(|(i, l)| {
                    let Some(w) = &windows[*i] else { return false };
                    l.stream == e.stream
                        && e.start >= w.start
                        && e.start <= w.end + grace_s
                        && e.keys.iter().any(|k| subject_matches(k, &l.subject))
                })
                .map(|(i, _)| i)
                .collect()
        })
        .collect()
}

/// Matches episodes to labels and computes every statistic: [`Matching`] (which labels
/// each episode explains, how each label fared), then the [`Stats`] per stream and
/// detector, the recall per level and the not-a-hazard tallies.
pub fn evaluate(episodes: &[Episode], labels: &[Label], input: &EvalInput<'_>) -> Report {
    let m = Matching::new(episodes, labels, input);
    let all_eps: Vec<usize> = (0..episodes.len()).collect();
    // Only hazards can be caught or missed.
    let all_labs: Vec<usize> = (0..labels.len()).filter(|&i| labels[i].hazard).collect();
    let total_events = input.events.values().sum();
    let overall = m.stats("all".into(), true, total_events, &all_eps, &all_labs, None);
    let (streams, detectors) = stream_and_detector_stats(episodes, labels, input, &m);
    let levels = level_recall(&m.results, input.configured);
    let false_alerts = episodes
        .iter()
        .zip(&m.hazards)
        .filter(|(_, h)| h.is_empty())
        .map(|(e, _)| e.alert_id.clone())
        .collect();
    let (not_a_hazard, false_in_not_a_hazard) = not_a_hazard_tallies(episodes, labels, &m);
    Report {
        grace_s: input.grace_s,
        overall,
        streams,
        detectors,
        levels,
        labels: m.results,
        false_alerts,
        not_a_hazard,
        false_in_not_a_hazard,
        incidents: None,
        alarm_kpis: Vec::new(),
    }
}

/// Which labels each episode matches, split into hazards and not-a-hazard stretches, and
/// how each label fared (the matching half of [`evaluate`]).
struct Matching {
    /// Per episode, the hazard labels it matches; none makes it a false alert.
    hazards: Vec<Vec<usize>>,
    /// Per episode, the not-a-hazard labels it matches.
    stretches: Vec<Vec<usize>>,
    /// Per episode: false, and inside a not-a-hazard stretch.
    in_stretch: Vec<bool>,
    /// Per episode: `in_stretch` and above blue, a false alarm the realism caused.
    fooled: Vec<bool>,
    /// Per label, in the labels' order.
    results: Vec<LabelResult>,
}

impl Matching {
    fn new(episodes: &[Episode], labels: &[Label], input: &EvalInput<'_>) -> Self {
        let windows: Vec<Option<Window>> = labels.iter().map(window).collect();
        let all_matches = label_matches(episodes, labels, input.grace_s);
        let (hazards, stretches): (Vec<Vec<usize>>, Vec<Vec<usize>>) = all_matches
            .into_iter()
            .map(|m| m.into_iter().partition(|&i| labels[i].hazard))
            .unzip();
        // A false episode inside a not-a-hazard stretch: the realism fooled it. Above blue,
        // it is a false alarm someone is asked to look at.
        let in_stretch: Vec<bool> = (0..episodes.len())
            .map(|i| hazards[i].is_empty() && !stretches[i].is_empty())
            .collect();
        let fooled: Vec<bool> = episodes
            .iter()
            .enumerate()
            .map(|(i, e)| in_stretch[i] && e.level > Level::Blue)
            .collect();
        let mut results: Vec<LabelResult> = labels
            .iter()
            .map(|l| LabelResult {
                label: l.clone(),
                caught_by: BTreeMap::new(),
                caught_by_readings: BTreeMap::new(),
                max_level: None,
            })
            .collect();
        for (k, e) in episodes.iter().enumerate() {
            // A stretch records only the episodes no hazard explains.
            let m = if hazards[k].is_empty() {
                &stretches[k]
            } else {
                &hazards[k]
            };
            for &i in m {
                let w = windows[i].as_ref().expect("matched labels have windows");
                record_catch(&mut results[i], e, w, input.readings);
            }
        }
        Matching {
            hazards,
            stretches,
            in_stretch,
            fooled,
            results,
        }
    }

    /// The statistics of the episodes `eps` against the hazard labels `labs`; per
    /// detector (`detector`), a label counts as caught only by that detector's episodes.
    fn stats(
        &self,
        name: String,
        configured: bool,
        events: u64,
        eps: &[usize],
        labs: &[usize],
        detector: Option<&str>,
    ) -> Stats {
        let true_eps = eps.iter().filter(|&&i| !self.hazards[i].is_empty()).count() as u64;
        let n_eps = eps.len() as u64;
        let fooled_eps = eps.iter().filter(|&&i| self.fooled[i]).count() as u64;
        let mut delays = Vec::new();
        let mut readings = Vec::new();
        let mut missed = Vec::new();
        let mut caught = 0;
        for &i in labs {
            let r = &self.results[i];
            let d = match detector {
                Some(d) => r.caught_by.get(d).copied(),
                None => r.caught_by.values().min().copied(),
            };
            let n = match detector {
                Some(d) => r.caught_by_readings.get(d).copied(),
                None => r.caught_by_readings.values().min().copied(),
            };
            match d {
                Some(d) => {
                    caught += 1;
                    delays.push(d as f64);
                    if let Some(n) = n {
                        readings.push(f64::from(n));
                    }
                }
                None => missed.push(format!(
                    "{} {} {}",
                    r.label.kind, r.label.subject, r.label.start
                )),
            }
        }
        Stats {
            name,
            configured,
            events,
            episodes: n_eps,
            true_episodes: true_eps,
            false_episodes: n_eps - true_eps,
            precision: ratio(true_eps, n_eps),
            labels: labs.len() as u64,
            caught,
            recall: ratio(caught, labs.len() as u64),
            false_per_10k_events: (events > 0)
                .then(|| (n_eps - true_eps) as f64 * 10_000.0 / events as f64),
            not_a_hazard_episodes: fooled_eps,
            delay_median_s: quantile(&delays, 0.5),
            delay_p90_s: quantile(&delays, 0.9),
            delay_median_readings: quantile(&readings, 0.5),
            delay_p90_readings: quantile(&readings, 0.9),
            missed,
        }
    }
}

/// Records that episode `e` matched the label of `r` (window `w`): its detector's
/// earliest delay, in seconds and (for a tracked sensor) readings, and the highest level.
fn record_catch(r: &mut LabelResult, e: &Episode, w: &Window, readings: Option<&ReadingIndex>) {
    let delay = e.start - w.start;
    let best = r.caught_by.entry(e.detector.clone()).or_insert(delay);
    if delay <= *best {
        *best = delay;
        if let Some(n) =
            readings.and_then(|ix| ix.readings_between(&r.label.subject, w.start, e.start))
        {
            r.caught_by_readings.insert(e.detector.clone(), n.max(1));
        }
    }
    r.max_level = Some(r.max_level.map_or(e.level, |l| l.max(e.level)));
}

/// [`Stats`] per stream with any episode, hazard label or event, and per detector of it
/// (configured, alerting or expected by a label).
fn stream_and_detector_stats(
    episodes: &[Episode],
    labels: &[Label],
    input: &EvalInput<'_>,
    m: &Matching,
) -> (Vec<Stats>, Vec<Stats>) {
    let mut streams = Vec::new();
    let mut detectors = Vec::new();
    for s in Stream::ALL {
        let eps: Vec<usize> = (0..episodes.len())
            .filter(|&i| episodes[i].stream == s)
            .collect();
        let labs: Vec<usize> = (0..labels.len())
            .filter(|&i| labels[i].hazard && labels[i].stream == s)
            .collect();
        let events = input.events.get(&s).copied().unwrap_or(0);
        if eps.is_empty() && labs.is_empty() && events == 0 {
            continue;
        }
        streams.push(m.stats(s.to_string(), true, events, &eps, &labs, None));
        let mut names: BTreeSet<&str> = input
            .configured
            .iter()
            .filter(|(st, _)| *st == s)
            .map(|(_, d)| d.as_str())
            .collect();
        names.extend(eps.iter().map(|&i| episodes[i].detector.as_str()));
        names.extend(
            labs.iter()
                .flat_map(|&i| labels[i].detectors.iter().map(String::as_str)),
        );
        for d in names {
            let d_eps: Vec<usize> = eps
                .iter()
                .copied()
                .filter(|&i| episodes[i].detector == d)
                .collect();
            let d_labs: Vec<usize> = labs
                .iter()
                .copied()
                .filter(|&i| labels[i].detectors.iter().any(|x| x == d))
                .collect();
            let configured = input.configured.contains(&(s, d.to_string()));
            detectors.push(m.stats(
                format!("{s}/{d}"),
                configured,
                events,
                &d_eps,
                &d_labs,
                Some(d),
            ));
        }
    }
    (streams, detectors)
}

/// Recall per expected level of the hazard labels, highest level first; `coverable`
/// counts the labels some configured detector is expected to catch.
fn level_recall(
    results: &[LabelResult],
    configured: &BTreeSet<(Stream, String)>,
) -> Vec<LevelRecall> {
    let mut levels = Vec::new();
    for level in Level::ALL.iter().rev() {
        let of: Vec<&LabelResult> = results
            .iter()
            .filter(|r| r.label.hazard && r.label.expected_level == level.as_str())
            .collect();
        if of.is_empty() {
            continue;
        }
        let coverable: Vec<&&LabelResult> = of
            .iter()
            .filter(|r| {
                r.label
                    .detectors
                    .iter()
                    .any(|d| configured.contains(&(r.label.stream, d.clone())))
            })
            .collect();
        levels.push(LevelRecall {
            level: level.as_str().to_string(),
            labels: of.len() as u64,
            caught: of.iter().filter(|r| !r.caught_by.is_empty()).count() as u64,
            coverable: coverable.len() as u64,
            coverable_caught: coverable.iter().filter(|r| !r.caught_by.is_empty()).count() as u64,
        });
    }
    levels
}

/// Per kind of not-a-hazard label, its labels and the false episodes inside its
/// stretches; and those episodes as `alert_id level kinds`.
fn not_a_hazard_tallies(
    episodes: &[Episode],
    labels: &[Label],
    m: &Matching,
) -> (Vec<NotAHazard>, Vec<String>) {
    let mut not_a_hazard: BTreeMap<&str, NotAHazard> = BTreeMap::new();
    for l in labels.iter().filter(|l| !l.hazard) {
        not_a_hazard
            .entry(&l.kind)
            .or_insert_with(|| NotAHazard {
                kind: l.kind.clone(),
                labels: 0,
                episodes: 0,
                episodes_above_blue: 0,
                by_detector: BTreeMap::new(),
            })
            .labels += 1;
    }
    let mut false_in_not_a_hazard = Vec::new();
    for (k, e) in episodes
        .iter()
        .enumerate()
        .filter(|(k, _)| m.in_stretch[*k])
    {
        // An episode inside two stretches (a gap on a heavy-tailed sensor) counts once
        // per kind.
        let kinds: BTreeSet<&str> = m.stretches[k]
            .iter()
            .map(|&i| labels[i].kind.as_str())
            .collect();
        for kind in &kinds {
            let n = not_a_hazard.get_mut(kind).expect("every kind listed");
            n.episodes += 1;
            if m.fooled[k] {
                n.episodes_above_blue += 1;
                *n.by_detector.entry(e.detector.clone()).or_default() += 1;
            }
        }
        false_in_not_a_hazard.push(format!(
            "{} {} {}",
            e.alert_id,
            e.level.as_str(),
            kinds.into_iter().collect::<Vec<_>>().join("+")
        ));
    }
    (not_a_hazard.into_values().collect(), false_in_not_a_hazard)
}

fn fmt_secs(s: Option<f64>) -> String {
    let Some(s) = s else { return "-".into() };
    let s = s.round() as i64;
    if s < 60 {
        format!("{s}s")
    } else if s < 3600 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    }
}

fn fmt_opt(v: Option<f64>, prec: usize) -> String {
    v.map_or("-".into(), |v| format!("{v:.prec$}"))
}

impl Report {
    /// The alarm KPIs' lines of [`Self::table`] (nothing when none were computed).
    fn alarm_kpi_table(&self, o: &mut String) {
        use std::fmt::Write;
        if self.alarm_kpis.is_empty() {
            return;
        }
        let _ = writeln!(
            o,
            "\nalarm KPIs (ISA-18.2: ~1 per 10 min manageable, >10 a flood):\n{:<10} {:>11} {:>8} {:>8} {:>7} {:>9} {:>8}",
            "center", "activations", "p50/10m", "max/10m", "floods", "flood_s", "chatter"
        );
        for k in &self.alarm_kpis {
            let _ = writeln!(
                o,
                "{:<10} {:>11} {:>8} {:>8} {:>7} {:>9} {:>8}",
                k.center,
                k.activations,
                k.per_10m_p50,
                k.per_10m_max,
                k.floods,
                k.flood_seconds,
                k.chatter
            );
        }
    }

    /// The readable table `riskstream backtest` prints.
    pub fn table(&self) -> String {
        let mut o = String::new();
        self.stats_table(&mut o);
        self.level_table(&mut o);
        self.label_table(&mut o);
        self.not_a_hazard_table(&mut o);
        if let Some(i) = &self.incidents {
            o.push_str(&i.table());
        }
        self.alarm_kpi_table(&mut o);
        self.false_alert_table(&mut o);
        o
    }

    /// The statistics: per stream, its detectors under it, then everything.
    fn stats_table(&self, o: &mut String) {
        use std::fmt::Write;
        let _ = writeln!(
            o,
            "{:<36} {:>8} {:>5} {:>4} {:>4} {:>4} {:>6} {:>6} {:>6} {:>7} {:>7} {:>7} {:>6} {:>6}",
            "stream/detector",
            "events",
            "eps",
            "TP",
            "FP",
            "NH",
            "prec",
            "labels",
            "recall",
            "FA/10k",
            "d p50",
            "d p90",
            "rd p50",
            "rd p90"
        );
        for s in &self.streams {
            stats_row(o, s);
            for d in self
                .detectors
                .iter()
                .filter(|d| d.name.split('/').next() == Some(s.name.as_str()))
            {
                stats_row(o, d);
            }
        }
        stats_row(o, &self.overall);
        let _ = writeln!(
            o,
            "(NH: false episodes above blue that start in a not-a-hazard stretch; part of FP)"
        );
    }

    /// Recall per expected level.
    fn level_table(&self, o: &mut String) {
        use std::fmt::Write;
        let _ = writeln!(
            o,
            "\nrecall by expected level (coverable = a configured detector is expected to catch it):"
        );
        for l in &self.levels {
            let _ = writeln!(
                o,
                "  {:<7} {}/{} caught, coverable {}/{}",
                l.level, l.caught, l.labels, l.coverable_caught, l.coverable
            );
        }
    }

    /// How each hazard label fared: its highest level and who caught it how fast.
    fn label_table(&self, o: &mut String) {
        use std::fmt::Write;
        let _ = writeln!(
            o,
            "\nper label (grace {}):",
            fmt_secs(Some(self.grace_s as f64))
        );
        for r in self.labels.iter().filter(|r| r.label.hazard) {
            let by = if r.caught_by.is_empty() {
                format!("MISSED (expected: {})", r.label.detectors.join(", "))
            } else {
                r.caught_by
                    .iter()
                    .map(|(d, s)| match r.caught_by_readings.get(d) {
                        Some(n) => format!("{d} +{} ({n} rd)", fmt_secs(Some(*s as f64))),
                        None => format!("{d} +{}", fmt_secs(Some(*s as f64))),
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let _ = writeln!(
                o,
                "  {:<9} {:<15} {:<34} {} {:<6} -> {} {}",
                r.label.stream.as_str(),
                r.label.kind,
                r.label.subject,
                &r.label.start,
                r.label.expected_level,
                r.max_level.map_or("", |l| l.as_str()),
                by
            );
        }
    }

    /// The not-a-hazard realism per kind (nothing when the labels have none).
    fn not_a_hazard_table(&self, o: &mut String) {
        use std::fmt::Write;
        if !self.not_a_hazard.is_empty() {
            let _ = writeln!(
                o,
                "\nnot-a-hazard realism (an episode above blue inside is a false alarm):"
            );
            for n in &self.not_a_hazard {
                let by: Vec<String> = n
                    .by_detector
                    .iter()
                    .map(|(d, c)| format!("{d} {c}"))
                    .collect();
                let _ = writeln!(
                    o,
                    "  {:<17} {:>3} labels, {:>3} false episodes, {:>3} above blue{}",
                    n.kind,
                    n.labels,
                    n.episodes,
                    n.episodes_above_blue,
                    if by.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", by.join(", "))
                    }
                );
            }
        }
    }

    /// The false alerts, each with the realism it started in, if any.
    fn false_alert_table(&self, o: &mut String) {
        use std::fmt::Write;
        let _ = writeln!(o, "\nfalse alerts ({}):", self.false_alerts.len());
        for a in &self.false_alerts {
            // The realism an above-blue false alert started in, if any.
            let inside = self
                .false_in_not_a_hazard
                .iter()
                .find_map(|f| f.strip_prefix(a.as_str()).filter(|r| r.starts_with(' ')));
            match inside {
                Some(rest) => {
                    let _ = writeln!(o, "  {a}  [not a hazard:{rest}]");
                }
                None => {
                    let _ = writeln!(o, "  {a}");
                }
            }
        }
    }
}

/// One row of [`Report::table`]'s statistics.
fn stats_row(o: &mut String, s: &Stats) {
    use std::fmt::Write;
    let name = if s.configured {
        s.name.clone()
    } else {
        format!("{} (not run)", s.name)
    };
    let _ = writeln!(
        o,
        "{:<36} {:>8} {:>5} {:>4} {:>4} {:>4} {:>6} {:>6} {:>6} {:>7} {:>7} {:>7} {:>6} {:>6}",
        name,
        s.events,
        s.episodes,
        s.true_episodes,
        s.false_episodes,
        s.not_a_hazard_episodes,
        fmt_opt(s.precision, 2),
        format!("{}/{}", s.caught, s.labels),
        fmt_opt(s.recall, 2),
        fmt_opt(s.false_per_10k_events, 3),
        fmt_secs(s.delay_median_s),
        fmt_secs(s.delay_p90_s),
        fmt_opt(s.delay_median_readings, 1),
        fmt_opt(s.delay_p90_readings, 1),
    );
}

/// Reads `labels.jsonl` (blank lines skipped).
pub fn read_labels(path: &std::path::Path) -> Result<Vec<Label>, BacktestError> {
    let name = path.display().to_string();
    let text =
        std::fs::read_to_string(path).map_err(|e| BacktestError::Usage(format!("{name}: {e}")))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let l: Label = serde_json::from_str(line).map_err(|e| BacktestError::Label {
            path: name.clone(),
            line: i + 1,
            message: e.to_string(),
        })?;
        if window(&l).is_none() {
            return Err(BacktestError::Label {
                path: name.clone(),
                line: i + 1,
                message: "start and end must be RFC 3339 times".into(),
            });
        }
        out.push(l);
    }
    Ok(out)
}

/// The monitoring points of a `simulate --out` directory (`points.ndjson`), when it has
/// them, added to `cfg`'s registry (the config's own file first, the run's points over
/// it); returns how many. A bad line is a usage error naming its line and field.
pub fn load_points(cfg: &Config, dir: &std::path::Path) -> Result<usize, BacktestError> {
    let path = dir.join(crate::simulate::POINTS_FILE);
    if !path.exists() {
        return Ok(0);
    }
    let points = crate::registry::load_file(&path)
        .map_err(|e| BacktestError::Usage(e.problems.join("\n")))?;
    let n = points.len();
    cfg.points.extend(points);
    Ok(n)
}

/// The NDJSON inputs of a directory whose names tell their stream, sorted by name.
pub fn inputs_in(dir: &std::path::Path) -> Result<Vec<PathBuf>, BacktestError> {
    let rd = std::fs::read_dir(dir)
        .map_err(|e| BacktestError::Usage(format!("{}: {e}", dir.display())))?;
    let mut v: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|x| x == "ndjson")
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .and_then(Stream::from_file_name)
                    .is_some()
        })
        .collect();
    v.sort();
    if v.is_empty() {
        return Err(BacktestError::Usage(format!(
            "{}: no incidents*.ndjson, sensor*.ndjson or fraud*.ndjson files",
            dir.display()
        )));
    }
    Ok(v)
}

/// What the tap saw while the pipeline read the inputs.
#[derive(Default)]
struct Seen {
    events: BTreeMap<Stream, u64>,
    readings: ReadingIndex,
}

/// A source that passes everything through and notes per-stream counts and the reading
/// times of labelled sensors.
struct Tap<S> {
    inner: S,
    seen: Arc<Mutex<Seen>>,
}

#[derive(Deserialize)]
struct Probe<'a> {
    #[serde(borrow)]
    sensor_id: Option<&'a str>,
    #[serde(borrow)]
    ts: Option<&'a str>,
}

impl<S: Source> Source for Tap<S> {
    async fn next(&mut self) -> Result<Option<Envelope>, SourceError> {
        let env = self.inner.next().await?;
        if let Some(e) = &env {
            let mut seen = self.seen.lock().expect("tap lock");
            *seen.events.entry(e.stream).or_default() += 1;
            if e.stream == Stream::Sensors {
                if let Ok(Probe {
                    sensor_id: Some(id),
                    ts: Some(ts),
                }) = serde_json::from_slice::<Probe<'_>>(&e.payload)
                {
                    if seen.readings.tracks(id) {
                        if let Ok(t) = DateTime::parse_from_rfc3339(ts) {
                            seen.readings.push(id, t.timestamp());
                        }
                    }
                }
            }
        }
        Ok(env)
    }

    fn offset_store(&self) -> Arc<dyn OffsetStore> {
        self.inner.offset_store()
    }

    fn finish(&mut self) -> Result<(), SourceError> {
        self.inner.finish()
    }
}

/// The city's alarm KPIs, then the busiest other centers'.
fn alarm_kpis(alerts: &[crate::alert::Alert], city: &str) -> Vec<crate::alert::kpi::KpiSummary> {
    let all = crate::alert::kpi::summarize(alerts);
    let (mut out, rest): (Vec<_>, Vec<_>) = all.into_iter().partition(|k| k.center == city);
    out.extend(rest.into_iter().take(ALARM_KPI_CENTERS - out.len()));
    out
}

/// Replays `inputs` through the real pipeline with `cfg` and scores against `labels`.
pub async fn run(
    cfg: &Config,
    inputs: &[PathBuf],
    labels: &[Label],
    grace_s: i64,
) -> Result<(Report, Vec<Episode>), BacktestError> {
    let source = ReplaySource::new(inputs, None)?;
    let seen = Arc::new(Mutex::new(Seen::default()));
    {
        let mut s = seen.lock().expect("tap lock");
        for l in labels
            .iter()
            .filter(|l| l.stream == Stream::Sensors && l.hazard)
        {
            s.readings.track(&l.subject);
        }
    }
    let (sink, collected) = CollectSink::new();
    let collected_incidents = sink.incidents();
    let sinks: Vec<Arc<dyn Sink>> = vec![sink];
    let pipeline = Pipeline::new(
        cfg,
        sinks,
        Arc::new(LogDeadLetters),
        Arc::new(Metrics::new()),
        Arc::new(crate::clock::SystemClock),
    );
    let (trigger, _keep) = crate::shutdown::channel();
    pipeline
        .run(
            Tap {
                inner: source,
                seen: seen.clone(),
            },
            trigger,
        )
        .await?;
    let alerts = std::mem::take(&mut *collected.lock().expect("collect lock"));
    let eps = episodes(&alerts);
    let seen = std::mem::take(&mut *seen.lock().expect("tap lock"));
    let configured: BTreeSet<(Stream, String)> = cfg
        .detectors
        .per_stream()
        .iter()
        .flat_map(|(s, list)| list.iter().map(move |d| (*s, d.name().to_string())))
        .collect();
    let mut report = evaluate(
        &eps,
        labels,
        &EvalInput {
            events: &seen.events,
            configured: &configured,
            readings: Some(&seen.readings),
            grace_s,
        },
    );
    let incident_msgs = std::mem::take(&mut *collected_incidents.lock().expect("collect lock"));
    report.alarm_kpis = alarm_kpis(&alerts, cfg.regions.city_code());
    report.incidents = Some(incidents::evaluate(
        &alerts,
        &incident_msgs,
        &eps,
        labels,
        seen.events.values().sum(),
        grace_s,
    ));
    Ok((report, eps))
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: &str = "2026-11-26T08:00:00+08:00";

    fn t(min: i64) -> i64 {
        DateTime::parse_from_rfc3339(T0).unwrap().timestamp() + min * 60
    }

    fn rfc(ts: i64) -> String {
        let cst = chrono::FixedOffset::east_opt(8 * 3600).unwrap();
        DateTime::from_timestamp(ts, 0)
            .unwrap()
            .with_timezone(&cst)
            .to_rfc3339()
    }

    fn label(stream: Stream, kind: &str, subject: &str, from: i64, to: i64, det: &[&str]) -> Label {
        Label {
            stream,
            kind: kind.into(),
            subject: subject.into(),
            start: rfc(t(from)),
            end: rfc(t(to)),
            expected_level: "red".into(),
            hazard: true,
            detectors: det.iter().map(|s| s.to_string()).collect(),
            note: String::new(),
        }
    }

    fn ep(stream: Stream, det: &str, keys: &[&str], start_s: i64) -> Episode {
        Episode {
            alert_id: format!("{det}:{}:{start_s}", keys[0]),
            stream,
            detector: det.into(),
            keys: keys.iter().map(|s| s.to_string()).collect(),
            start: start_s,
            level: Level::Red,
        }
    }

    fn configured(list: &[(Stream, &str)]) -> BTreeSet<(Stream, String)> {
        list.iter().map(|(s, d)| (*s, d.to_string())).collect()
    }

    #[test]
    fn subject_keys_prefer_the_most_specific_field() {
        let m = |v: serde_json::Value| v.as_object().unwrap().clone();
        assert_eq!(
            subject_keys(&m(
                serde_json::json!({"sensor_id":"S1","site_id":"X","region":"330502001"})
            )),
            vec!["S1", "X"]
        );
        assert_eq!(
            subject_keys(&m(
                serde_json::json!({"suspect_phone":"+86","region":"330502001"})
            )),
            vec!["phone:+86"]
        );
        assert_eq!(
            subject_keys(&m(serde_json::json!({"region":"330502"}))),
            vec!["330502"]
        );
        // A rate_spike grouped by scheme: its subject is the region plus the scheme; it
        // reduces to the region, so a city-level scheme spike label matches it.
        let grouped = subject_keys(&m(
            serde_json::json!({"region":"330500","scheme":"investment"}),
        ));
        assert_eq!(grouped, vec!["330500"]);
        assert!(subject_matches(&grouped[0], "330500"));
        assert!(subject_matches("330522", "330500"));
        assert!(subject_matches("330502", "330502001"));
        assert!(subject_matches("330502001", "330502"));
        assert!(subject_matches("330500", "330523104"));
        assert!(!subject_matches("330503", "330502001"));
        assert!(!subject_matches("330502001", "330502002"));
    }

    #[test]
    fn precision_recall_false_rate_and_delays_are_exact() {
        let labels = vec![
            label(
                Stream::Sensors,
                "gas_step",
                "S1",
                10,
                20,
                &["threshold", "ewma_z"],
            ),
            label(
                Stream::Sensors,
                "gas_leak_ramp",
                "S2",
                100,
                120,
                &["threshold"],
            ),
            label(
                Stream::Sensors,
                "sensor_stuck",
                "S3",
                200,
                290,
                &["flatline"],
            ),
            label(
                Stream::Incidents,
                "incident_surge",
                "330502001",
                30,
                60,
                &["rate_spike"],
            ),
        ];
        let episodes = vec![
            // S1 caught by threshold after 60 s and ewma_z after 120 s.
            ep(Stream::Sensors, "threshold", &["S1", "SITE-A"], t(10) + 60),
            ep(Stream::Sensors, "ewma_z", &["S1", "SITE-A"], t(10) + 120),
            // S2 caught by threshold inside the grace (label ends at 120, episode at 125).
            ep(Stream::Sensors, "threshold", &["S2", "SITE-B"], t(125)),
            // A false alert: right sensor, far too late.
            ep(Stream::Sensors, "threshold", &["S1", "SITE-A"], t(500)),
            // Before the label starts: false.
            ep(Stream::Sensors, "ewma_z", &["S2", "SITE-B"], t(99)),
            // County episode during the township surge: true (same branch).
            ep(Stream::Incidents, "rate_spike", &["330502"], t(45)),
            // Another county: false.
            ep(Stream::Incidents, "rate_spike", &["330503"], t(45)),
        ];
        let mut readings = ReadingIndex::default();
        readings.track("S1");
        for k in 0..10 {
            readings.push("S1", t(10) + 30 * k); // 30 s interval from the label start
        }
        let events = BTreeMap::from([(Stream::Sensors, 20_000), (Stream::Incidents, 1_000)]);
        let conf = configured(&[
            (Stream::Sensors, "threshold"),
            (Stream::Sensors, "ewma_z"),
            (Stream::Incidents, "rate_spike"),
        ]);
        let r = evaluate(
            &episodes,
            &labels,
            &EvalInput {
                events: &events,
                configured: &conf,
                readings: Some(&readings),
                grace_s: DEFAULT_GRACE_SECS,
            },
        );
        let get = |n: &str| {
            r.streams
                .iter()
                .chain(&r.detectors)
                .chain([&r.overall])
                .find(|s| s.name == n)
                .unwrap_or_else(|| panic!("{n}"))
                .clone()
        };
        let s = get("sensors");
        assert_eq!((s.episodes, s.true_episodes, s.false_episodes), (5, 3, 2));
        assert_eq!(s.precision, Some(0.6));
        assert_eq!((s.labels, s.caught), (3, 2));
        assert_eq!(s.recall, Some(2.0 / 3.0));
        assert_eq!(s.false_per_10k_events, Some(1.0));
        // Stream delay: min per label = 60 s (S1) and 1500 s (S2): median 780, p90 1356.
        assert_eq!(s.delay_median_s, Some(780.0));
        assert_eq!(s.delay_p90_s, Some(1356.0));
        assert_eq!(s.missed, vec![format!("sensor_stuck S3 {}", rfc(t(200)))]);

        let th = get("sensors/threshold");
        assert_eq!((th.episodes, th.true_episodes), (3, 2));
        assert_eq!((th.labels, th.caught, th.recall), (2, 2, Some(1.0)));
        assert_eq!(th.false_per_10k_events, Some(0.5));
        // S1 at 60 s: readings at 0 s, 30 s, 60 s -> 3.
        assert_eq!(th.delay_median_readings, Some(3.0));

        let ew = get("sensors/ewma_z");
        assert_eq!(
            (ew.episodes, ew.true_episodes, ew.precision),
            (2, 1, Some(0.5))
        );
        assert_eq!((ew.labels, ew.caught), (1, 1));
        assert_eq!(ew.delay_median_s, Some(120.0));
        assert_eq!(ew.delay_median_readings, Some(5.0));

        let fl = get("sensors/flatline");
        assert!(!fl.configured);
        assert_eq!(
            (fl.episodes, fl.labels, fl.caught, fl.recall),
            (0, 1, 0, Some(0.0))
        );
        assert_eq!(fl.precision, None);

        let inc = get("incidents/rate_spike");
        assert_eq!((inc.episodes, inc.true_episodes, inc.caught), (2, 1, 1));
        assert_eq!(inc.delay_median_s, Some(900.0));
        assert_eq!(inc.false_per_10k_events, Some(10.0));

        let all = get("all");
        assert_eq!((all.episodes, all.true_episodes), (7, 4));
        assert_eq!((all.labels, all.caught), (4, 3));

        let red = r.levels.iter().find(|l| l.level == "red").unwrap();
        assert_eq!(
            (red.labels, red.caught, red.coverable, red.coverable_caught),
            (4, 3, 3, 3)
        );
        assert!(r.table().contains("sensors/flatline (not run)"));
        assert_eq!(r.false_alerts.len(), 3);
    }

    #[test]
    fn a_site_label_is_caught_by_any_of_its_sensors_and_suspects_match_by_kind() {
        let labels = vec![
            label(
                Stream::Sensors,
                "site_event",
                "SITE-A",
                0,
                20,
                &["site_correlation"],
            ),
            label(
                Stream::Fraud,
                "fraud_burst",
                "phone:+861",
                0,
                40,
                &["entity_burst"],
            ),
            label(
                Stream::Fraud,
                "scheme_spike",
                "330500",
                0,
                30,
                &["rate_spike"],
            ),
        ];
        let episodes = vec![
            ep(Stream::Sensors, "threshold", &["S9", "SITE-A"], t(5)),
            ep(Stream::Fraud, "entity_burst", &["phone:+861"], t(20)),
            // An account burst in the city during the scheme spike is not the spike.
            ep(Stream::Fraud, "entity_burst", &["account:62"], t(20)),
        ];
        let events = BTreeMap::new();
        let conf = configured(&[]);
        let r = evaluate(
            &episodes,
            &labels,
            &EvalInput {
                events: &events,
                configured: &conf,
                readings: None,
                grace_s: 0,
            },
        );
        let caught: Vec<bool> = r.labels.iter().map(|l| !l.caught_by.is_empty()).collect();
        assert_eq!(caught, vec![true, true, false]);
        assert_eq!(r.overall.true_episodes, 2);
        assert_eq!(r.labels[0].caught_by["threshold"], 300);
    }

    #[test]
    fn an_alert_above_blue_in_a_not_a_hazard_stretch_is_false_and_never_missed() {
        let shift = Label {
            hazard: false,
            expected_level: "none".into(),
            ..label(Stream::Sensors, "maintenance_shift", "S1", 0, 240, &[])
        };
        let labels = vec![
            shift,
            label(Stream::Sensors, "gas_step", "S2", 60, 72, &["threshold"]),
            // A hazard inside the stretch on the same sensor: its episode is true.
            label(Stream::Sensors, "gas_step", "S1", 100, 112, &["threshold"]),
        ];
        let yellow = |mut e: Episode| {
            e.level = Level::Yellow;
            e
        };
        let blue = |mut e: Episode| {
            e.level = Level::Blue;
            e
        };
        let episodes = vec![
            // Inside the shift, above blue: a false alarm, counted apart.
            yellow(ep(Stream::Sensors, "cusum", &["S1", "SITE-A"], t(5))),
            // Inside the grace after its end, red: also.
            ep(Stream::Sensors, "ewma_z", &["S1", "SITE-A"], t(245)),
            // Blue inside it: false, but not a false alarm of the realism.
            blue(ep(Stream::Sensors, "ewma_z", &["S1", "SITE-A"], t(30))),
            // The hazard inside the stretch: true.
            ep(Stream::Sensors, "threshold", &["S1", "SITE-A"], t(101)),
            // Another sensor during the shift: false, not in a stretch.
            ep(Stream::Sensors, "cusum", &["S3", "SITE-A"], t(5)),
        ];
        let events = BTreeMap::from([(Stream::Sensors, 10_000)]);
        let conf = configured(&[(Stream::Sensors, "threshold"), (Stream::Sensors, "cusum")]);
        let r = evaluate(
            &episodes,
            &labels,
            &EvalInput {
                events: &events,
                configured: &conf,
                readings: None,
                grace_s: DEFAULT_GRACE_SECS,
            },
        );
        let s = &r.overall;
        assert_eq!((s.episodes, s.true_episodes, s.false_episodes), (5, 1, 4));
        assert_eq!(s.not_a_hazard_episodes, 2);
        // Only the two hazards count in recall; the stretch is never missed.
        assert_eq!((s.labels, s.caught), (2, 1));
        assert_eq!(s.missed, vec![format!("gas_step S2 {}", rfc(t(60)))]);
        let cusum = r
            .detectors
            .iter()
            .find(|d| d.name == "sensors/cusum")
            .unwrap();
        assert_eq!((cusum.false_episodes, cusum.not_a_hazard_episodes), (2, 1));
        assert_eq!(
            r.not_a_hazard,
            vec![NotAHazard {
                kind: "maintenance_shift".into(),
                labels: 1,
                episodes: 3,
                episodes_above_blue: 2,
                by_detector: BTreeMap::from([("cusum".into(), 1), ("ewma_z".into(), 1)]),
            }]
        );
        assert_eq!(r.false_in_not_a_hazard.len(), 3);
        assert!(r.levels.iter().all(|l| l.labels == 2));
        let table = r.table();
        assert!(table.contains("maintenance_shift   1 labels,   3 false episodes,   2 above blue"));
        assert!(!table.contains("MISSED (expected: )"));
        // Labels written before the field are hazards.
        let old: Label = serde_json::from_str(
            r#"{"stream":"sensors","kind":"gas_step","subject":"S1","start":"2026-11-26T08:00:00+08:00","end":"2026-11-26T08:10:00+08:00","expected_level":"red"}"#,
        )
        .unwrap();
        assert!(old.hazard);
    }

    #[test]
    fn quantiles_interpolate() {
        assert_eq!(quantile(&[], 0.5), None);
        assert_eq!(quantile(&[5.0], 0.9), Some(5.0));
        assert_eq!(quantile(&[1.0, 2.0, 3.0, 4.0], 0.5), Some(2.5));
        assert_eq!(quantile(&[10.0, 0.0], 0.9), Some(9.0));
    }
}
