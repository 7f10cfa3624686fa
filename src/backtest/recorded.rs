//! Backtest on labelled recorded series: SKAB's layout (`--format skab`) or one plain
//! `timestamp,value,label` CSV per sensor (`--format csv`), read straight from the files.
//!
//! Each file is one independent experiment: it is replayed through a fresh [`Pipeline`]
//! (the code path of `run` and `replay`, with an in-memory sink), in time order, the
//! readings of a row in column order, so no state leaks between files whose timestamps
//! are unrelated. A second pass through a fresh [`DetectorSet`] gives each reading's
//! normalized score, exactly as `riskstream score` prints it, for the per-row figures.
//!
//! Matching rules (no grace: the labels of recorded data mark the whole fault):
//! - An anomaly is a contiguous stretch of label-1 rows of one file, from its first to
//!   its last anomalous row's timestamp.
//! - An episode (one `alert_id`, starting at its first message's `first_event_ts`) of any
//!   detector and level catches the anomaly of its own file whose stretch it starts
//!   inside, bounds included; an episode starting inside no stretch is a false episode.
//! - Delay: from the stretch's start to the first episode inside it, in seconds and in
//!   rows (rows from the stretch's start up to the episode's start, inclusive: 1 = on the
//!   first anomalous row; each row is one reading per sensor).
//! - Per row (SKAB's outlier rule): a row is predicted anomalous when the strongest score
//!   of its readings is >= [`SCORE_THRESHOLD`]; the confusion matrix is pooled over every
//!   file's rows of one split (SKAB: first [`SKAB_TRAIN_ROWS`] rows of a labelled file
//!   `train`, the rest `test`, `anomaly-free.csv` `normal`; plain CSV: `all`).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, FixedOffset, NaiveDateTime};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::{episodes, quantile, BacktestError, Episode};
use crate::config::Config;
use crate::decode::Stream;
use crate::detect::DetectorSet;
use crate::pipeline::Pipeline;
use crate::sink::{CollectSink, LogDeadLetters, Sink};
use crate::source::memory::MemorySource;
use crate::source::{Envelope, Origin};
use crate::telemetry::metrics::Metrics;

/// The region every recorded sensor is placed in (a township of the default regions).
pub const REGION: &str = "330503101";
/// SKAB's evaluation lets a detector fit on the first 400 rows of each labelled file.
pub const SKAB_TRAIN_ROWS: usize = 400;
/// A score at or above this means "firing", as `riskstream score` documents.
pub const SCORE_THRESHOLD: f64 = 0.5;
/// SKAB's sub-folders, in the order `to_ndjson.py` converts them.
pub const SKAB_FOLDERS: [&str; 4] = ["anomaly-free", "valve1", "valve2", "other"];
/// SKAB's CSV header -> (kind slug, unit), as `to_ndjson.py` maps them.
const SKAB_COLUMNS: [(&str, &str, &str); 8] = [
    ("Accelerometer1RMS", "accelerometer1_rms", "g"),
    ("Accelerometer2RMS", "accelerometer2_rms", "g"),
    ("Current", "current", "A"),
    ("Pressure", "pressure", "bar"),
    ("Temperature", "temperature", "degC"),
    ("Thermocouple", "thermocouple", "degC"),
    ("Voltage", "voltage", "V"),
    ("Volume Flow RateRMS", "volume_flow_rate_rms", "l/min"),
];

/// Which rows of the pooled confusion matrix a row counts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Test,
    /// A file without labels (SKAB's anomaly-free run): only false alarms can happen.
    Normal,
    /// Plain CSV: every row.
    All,
}

impl Split {
    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "test",
            Split::Normal => "normal",
            Split::All => "all",
        }
    }
}

/// One sensor column of a file.
#[derive(Debug, Clone, PartialEq)]
pub struct Sensor {
    pub id: String,
    pub kind: String,
    pub unit: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub ts: DateTime<FixedOffset>,
    /// One value per sensor, in column order.
    pub values: Vec<f64>,
    pub anomaly: bool,
    pub split: Split,
}

/// One file: one site with its sensors, its rows in time order.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The site id (SKAB: `SKAB-<folder>-<stem>`; CSV: the file stem).
    pub name: String,
    /// What the file is, for per-group figures: SKAB's folder, or the CSV's kind.
    pub group: String,
    pub path: PathBuf,
    pub sensors: Vec<Sensor>,
    pub rows: Vec<Row>,
}

/// One anomaly: rows `first..=last` of a file.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Stretch {
    first: usize,
    last: usize,
    start: i64,
    end: i64,
}

impl Series {
    pub fn readings(&self) -> u64 {
        (self.rows.len() * self.sensors.len()) as u64
    }

    fn stretches(&self) -> Vec<Stretch> {
        let mut out: Vec<Stretch> = Vec::new();
        let mut open: Option<usize> = None;
        for (i, r) in self.rows.iter().enumerate() {
            match (r.anomaly, open) {
                (true, None) => open = Some(i),
                (false, Some(first)) => {
                    out.push(self.stretch(first, i - 1));
                    open = None;
                }
                _ => {}
            }
        }
        if let Some(first) = open {
            out.push(self.stretch(first, self.rows.len() - 1));
        }
        out
    }

    fn stretch(&self, first: usize, last: usize) -> Stretch {
        Stretch {
            first,
            last,
            start: self.rows[first].ts.timestamp(),
            end: self.rows[last].ts.timestamp(),
        }
    }

    /// The readings as the sensor stream's NDJSON, row by row, each row in column order.
    pub fn envelopes(&self) -> Vec<Envelope> {
        let name = self.path.display().to_string();
        let mut out = Vec::with_capacity(self.rows.len() * self.sensors.len());
        let received = Instant::now();
        for (line, r) in self.rows.iter().enumerate() {
            let ts = r.ts.to_rfc3339();
            for (s, v) in self.sensors.iter().zip(&r.values) {
                let mut m = serde_json::json!({
                    "sensor_id": s.id,
                    "site_id": self.name,
                    "region": REGION,
                    "kind": s.kind,
                    "ts": ts,
                    "value": v,
                });
                if let Some(u) = &s.unit {
                    m["unit"] = u.as_str().into();
                }
                out.push(Envelope {
                    stream: Stream::Sensors,
                    key: Some(s.id.clone().into_bytes()),
                    payload: serde_json::to_vec(&m).expect("a JSON value serializes"),
                    origin: Origin::File {
                        name: name.clone(),
                        // The data row's position (header = line 1), for dead letters.
                        line: line as u64 + 2,
                    },
                    received,
                });
            }
        }
        out
    }
}

fn read(path: &Path) -> Result<String, BacktestError> {
    std::fs::read_to_string(path)
        .map_err(|e| BacktestError::Usage(format!("{}: {e}", path.display())))
}

fn bad(path: &Path, line: usize, message: impl Into<String>) -> BacktestError {
    BacktestError::Row {
        path: path.display().to_string(),
        line,
        message: message.into(),
    }
}

fn number(text: &str, what: &str) -> Result<f64, String> {
    let v: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{what}: `{text}` is not a number"))?;
    if !v.is_finite() {
        return Err(format!("{what}: `{text}` is not finite"));
    }
    Ok(v)
}

/// A label: `0`/`1`, also written `0.0`/`1.0` (SKAB).
fn flag(text: &str, what: &str) -> Result<bool, String> {
    let v = number(text, what)?;
    if v == 0.0 || v == 1.0 {
        Ok(v == 1.0)
    } else {
        Err(format!("{what} must be 0 or 1, got `{text}`"))
    }
}

/// SKAB's files sorted as `to_ndjson.py` does: by stem length, then stem (0, 1, ..., 10).
fn csv_files(dir: &Path) -> Result<Vec<PathBuf>, BacktestError> {
    let rd = std::fs::read_dir(dir)
        .map_err(|e| BacktestError::Usage(format!("{}: {e}", dir.display())))?;
    let mut v: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "csv"))
        .collect();
    let stem = |p: &PathBuf| {
        p.file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    v.sort_by_key(|p| (stem(p).len(), stem(p)));
    Ok(v)
}

/// Every CSV of a SKAB directory (`anomaly-free/`, `valve1/`, `valve2/`, `other/`).
pub fn read_skab_dir(dir: &Path) -> Result<Vec<Series>, BacktestError> {
    if !dir.is_dir() {
        return Err(BacktestError::Usage(format!(
            "{}: not a directory",
            dir.display()
        )));
    }
    let mut files = Vec::new();
    for folder in SKAB_FOLDERS {
        let sub = dir.join(folder);
        if sub.is_dir() {
            files.extend(csv_files(&sub)?.into_iter().map(|p| (folder, p)));
        }
    }
    if files.is_empty() {
        return Err(BacktestError::Usage(format!(
            "{}: no CSV files under {}/",
            dir.display(),
            SKAB_FOLDERS.join("/, ")
        )));
    }
    files
        .par_iter()
        .map(|(folder, p)| read_skab_file(p, folder))
        .collect()
}

/// One SKAB CSV (`;`-separated, `datetime` first, local time read as UTC+03:00).
pub fn read_skab_file(path: &Path, folder: &str) -> Result<Series, BacktestError> {
    let text = read(path)?;
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let site = format!("SKAB-{folder}-{stem}");
    let mut lines = text.lines().enumerate();
    let Some((_, header)) = lines.next() else {
        return Err(bad(path, 1, "empty file"));
    };
    let header: Vec<&str> = header.split(';').collect();
    let (sensors, cols) = skab_header(path, &header, &site)?;
    let mut rows = Vec::new();
    for (i, line) in lines {
        if line.trim().is_empty() {
            continue;
        }
        let row = skab_row(line, &header, &cols, rows.len()).map_err(|m| bad(path, i + 1, m))?;
        rows.push(row);
    }
    Ok(Series {
        name: site,
        group: folder.to_string(),
        path: path.to_path_buf(),
        sensors,
        rows,
    })
}

/// Where a SKAB file's values and labels are, by column index.
struct SkabColumns {
    /// The sensor columns, in the order of the series' sensors.
    values: Vec<usize>,
    anomaly: Option<usize>,
    changepoint: Option<usize>,
}

/// A SKAB header: `datetime`, then sensor columns (named in `SKAB_COLUMNS`) and either
/// both of `anomaly` and `changepoint` or neither (anomaly-free files).
fn skab_header(
    path: &Path,
    header: &[&str],
    site: &str,
) -> Result<(Vec<Sensor>, SkabColumns), BacktestError> {
    if header[0] != "datetime" {
        return Err(bad(path, 1, "the first column must be `datetime`"));
    }
    let mut sensors = Vec::new();
    let mut cols = SkabColumns {
        values: Vec::new(),
        anomaly: None,
        changepoint: None,
    };
    for (i, h) in header.iter().enumerate().skip(1) {
        if let Some((_, kind, unit)) = SKAB_COLUMNS.iter().find(|(c, _, _)| c == h) {
            sensors.push(Sensor {
                id: format!("{site}-{kind}"),
                kind: kind.to_string(),
                unit: Some(unit.to_string()),
            });
            cols.values.push(i);
        } else if *h == "anomaly" {
            cols.anomaly = Some(i);
        } else if *h == "changepoint" {
            cols.changepoint = Some(i);
        } else {
            return Err(bad(path, 1, format!("unexpected column `{h}`")));
        }
    }
    if cols.anomaly.is_some() != cols.changepoint.is_some() {
        return Err(bad(path, 1, "has only one of `anomaly` and `changepoint`"));
    }
    Ok((sensors, cols))
}

/// One SKAB data line; `before` rows precede it (the first `SKAB_TRAIN_ROWS` of a
/// labelled file are its train split). The error is the message for `bad`.
fn skab_row(line: &str, header: &[&str], cols: &SkabColumns, before: usize) -> Result<Row, String> {
    // SKAB states no zone; the rig is in Moscow, which keeps UTC+03:00 all year.
    let moscow = FixedOffset::east_opt(3 * 3600).expect("valid offset");
    let f: Vec<&str> = line.split(';').collect();
    if f.len() != header.len() {
        return Err(format!(
            "{} fields, the header has {}",
            f.len(),
            header.len()
        ));
    }
    let ts = NaiveDateTime::parse_from_str(f[0], "%Y-%m-%d %H:%M:%S")
        .map_err(|e| format!("datetime `{}`: {e}", f[0]))?
        .and_local_timezone(moscow)
        .single()
        .ok_or_else(|| format!("datetime `{}` is ambiguous", f[0]))?;
    let values = cols
        .values
        .iter()
        .map(|&c| number(f[c], header[c]))
        .collect::<Result<Vec<f64>, String>>()?;
    let (anomaly, split) = match cols.anomaly {
        Some(c) => {
            flag(
                f[cols.changepoint.expect("checked with anomaly")],
                "changepoint",
            )?;
            let split = if before < SKAB_TRAIN_ROWS {
                Split::Train
            } else {
                Split::Test
            };
            (flag(f[c], "anomaly")?, split)
        }
        None => (false, Split::Normal),
    };
    Ok(Row {
        ts,
        values,
        anomaly,
        split,
    })
}

/// The CSV files of the arguments: files as given, directories' `*.csv` by name.
pub fn csv_inputs(paths: &[PathBuf]) -> Result<Vec<PathBuf>, BacktestError> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut v = csv_files(p)?;
            v.sort();
            out.extend(v);
        } else {
            out.push(p.clone());
        }
    }
    if out.is_empty() {
        return Err(BacktestError::Usage("no CSV files in the inputs".into()));
    }
    Ok(out)
}

/// `RFC 3339`, or `YYYY-MM-DD HH:MM:SS` taken as UTC.
fn csv_time(text: &str) -> Result<DateTime<FixedOffset>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t);
    }
    NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S")
        .map(|t| t.and_utc().fixed_offset())
        .map_err(|_| format!("timestamp `{text}` is neither RFC 3339 nor `YYYY-MM-DD HH:MM:SS`"))
}

/// One plain CSV series: `timestamp,value,label` with a header; one sensor of `kind`
/// whose sensor and site id are the file stem. Rows are sorted by time (stable).
pub fn read_csv_file(path: &Path, kind: &str) -> Result<Series, BacktestError> {
    let text = read(path)?;
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut lines = text.lines().enumerate();
    match lines.next() {
        Some((_, h)) if h.split(',').count() == 3 => {}
        _ => {
            return Err(bad(
                path,
                1,
                "the header must be three columns: timestamp,value,label",
            ))
        }
    }
    let mut rows = Vec::new();
    for (i, line) in lines {
        if line.trim().is_empty() {
            continue;
        }
        let row = (|| {
            let f: Vec<&str> = line.split(',').map(str::trim).collect();
            let &[ts, value, label] = f.as_slice() else {
                return Err(format!("{} fields, expected 3", f.len()));
            };
            Ok(Row {
                ts: csv_time(ts)?,
                values: vec![number(value, "value")?],
                anomaly: flag(label, "label")?,
                split: Split::All,
            })
        })()
        .map_err(|m| bad(path, i + 1, m))?;
        rows.push(row);
    }
    rows.sort_by_key(|r| r.ts);
    Ok(Series {
        name: stem.clone(),
        group: kind.to_string(),
        path: path.to_path_buf(),
        sensors: vec![Sensor {
            id: stem,
            kind: kind.to_string(),
            unit: None,
        }],
        rows,
    })
}

/// Every CSV series of the arguments.
pub fn read_csv_inputs(paths: &[PathBuf], kind: &str) -> Result<Vec<Series>, BacktestError> {
    csv_inputs(paths)?
        .par_iter()
        .map(|p| read_csv_file(p, kind))
        .collect()
}

/// What one file's run gave: its episodes (with their message counts) and row scores.
#[derive(Debug, Clone)]
pub struct FileRun {
    pub series: Series,
    pub episodes: Vec<Episode>,
    /// Alert messages of each episode, parallel to `episodes`.
    pub messages: Vec<u64>,
    /// The strongest score of each row's readings, parallel to `series.rows`.
    pub scores: Vec<f64>,
}

/// Each row's strongest score, as `riskstream score` computes it (a fresh detector set).
pub fn row_scores(cfg: &Config, s: &Series) -> Result<Vec<f64>, BacktestError> {
    let decoder = cfg.decoder();
    // The config's own budget, as the pipeline run of the same file uses.
    let ctx = cfg.build_ctx();
    let mut set = DetectorSet::new(
        &cfg.detectors.per_stream(),
        cfg.processing.allowed_lateness,
        &ctx,
    );
    let mut signals = Vec::new();
    let mut out = vec![0.0f64; s.rows.len()];
    let per_row = s.sensors.len().max(1);
    for (i, env) in s.envelopes().into_iter().enumerate() {
        let d = decoder.decode(env.stream, &env.payload).map_err(|e| {
            bad(
                &s.path,
                i / per_row + 2,
                format!("reading does not decode: {e}"),
            )
        })?;
        let o = set.observe(&d.event, &mut signals);
        signals.clear();
        let r = &mut out[i / per_row];
        *r = r.max(o.score);
    }
    Ok(out)
}

/// Replays one file through a fresh pipeline; the alert messages it published.
pub async fn replay(cfg: &Config, s: &Series) -> Result<Vec<crate::alert::Alert>, BacktestError> {
    let (sink, collected) = CollectSink::new();
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
        .run(MemorySource::new(s.envelopes()), trigger)
        .await?;
    let alerts = std::mem::take(&mut *collected.lock().expect("collect lock"));
    Ok(alerts)
}

/// Runs every file (a fresh pipeline and detector set each) and scores the result.
pub async fn run(
    cfg: &Config,
    format: &str,
    series: Vec<Series>,
) -> Result<RecordedReport, BacktestError> {
    // Row scores need no runtime: all files at once on the rayon pool.
    let scores: Vec<Vec<f64>> = series
        .par_iter()
        .map(|s| row_scores(cfg, s))
        .collect::<Result<_, _>>()?;
    let mut runs = Vec::with_capacity(series.len());
    for (s, scores) in series.into_iter().zip(scores) {
        let alerts = replay(cfg, &s).await?;
        let eps = episodes(&alerts);
        let mut count: HashMap<&str, u64> = HashMap::new();
        for a in &alerts {
            *count.entry(a.alert_id.as_str()).or_default() += 1;
        }
        let messages = eps.iter().map(|e| count[e.alert_id.as_str()]).collect();
        runs.push(FileRun {
            series: s,
            episodes: eps,
            messages,
            scores,
        });
    }
    let configured: Vec<String> = cfg
        .detectors
        .per_stream()
        .into_iter()
        .filter(|(s, _)| *s == Stream::Sensors)
        .flat_map(|(_, list)| list.into_iter().map(|d| d.name().to_string()))
        .collect();
    Ok(evaluate(format, &runs, &configured))
}

/// Anomalies caught, false episodes and delays of everything, one detector or one group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecStats {
    /// `all`, a detector, or a group (SKAB folder / CSV kind).
    pub name: String,
    pub files: u64,
    pub readings: u64,
    pub episodes: u64,
    pub false_episodes: u64,
    pub false_per_10k_readings: Option<f64>,
    pub alert_messages: u64,
    pub anomalies: u64,
    pub caught: u64,
    pub recall: Option<f64>,
    /// All alert messages (true and false episodes) over all anomalies: what operators
    /// are paged per fault.
    pub alert_messages_per_anomaly: Option<f64>,
    pub delay_median_s: Option<f64>,
    pub delay_p90_s: Option<f64>,
    pub delay_median_rows: Option<f64>,
    pub delay_p90_rows: Option<f64>,
    /// Missed anomalies as `file start..end`.
    pub missed: Vec<String>,
}

/// SKAB's per-row outlier figures over one split's pooled rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RowStats {
    pub split: Split,
    pub rows: u64,
    pub tp: u64,
    pub fp: u64,
    pub tn: u64,
    #[serde(rename = "fn")]
    pub fn_: u64,
    /// tp / (tp + (fp + fn) / 2); none without anomalous rows.
    pub f1: Option<f64>,
    /// 100 fp / (fp + tn).
    pub far_pct: Option<f64>,
    /// 100 fn / (fn + tp); none without anomalous rows.
    pub mar_pct: Option<f64>,
}

impl RowStats {
    fn new(split: Split, tp: u64, fp: u64, tn: u64, fn_: u64) -> Self {
        let anomalous = tp + fn_;
        Self {
            split,
            rows: tp + fp + tn + fn_,
            tp,
            fp,
            tn,
            fn_,
            f1: (anomalous > 0).then(|| tp as f64 / (tp as f64 + (fp + fn_) as f64 / 2.0)),
            far_pct: (fp + tn > 0).then(|| 100.0 * fp as f64 / (fp + tn) as f64),
            mar_pct: (anomalous > 0).then(|| 100.0 * fn_ as f64 / anomalous as f64),
        }
    }
}

/// How one anomaly fared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnomalyResult {
    pub file: String,
    pub start: String,
    pub end: String,
    pub rows: u64,
    /// Detector -> delay (s) of its first episode inside the stretch.
    pub caught_by: BTreeMap<String, i64>,
    /// Detector -> delay in rows (1 = on the first anomalous row).
    pub caught_by_rows: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedReport {
    pub format: String,
    pub files: u64,
    pub rows: u64,
    pub readings: u64,
    pub score_threshold: f64,
    pub overall: RecStats,
    pub detectors: Vec<RecStats>,
    pub groups: Vec<RecStats>,
    /// Per split present, in the order train, test, normal, all.
    pub row_scores: Vec<RowStats>,
    pub anomalies: Vec<AnomalyResult>,
    /// Episodes inside no anomaly: `alert_id`.
    pub false_episodes: Vec<String>,
}

/// Matches each file's episodes to its anomalies and computes every figure: the
/// [`RecMatching`], then the [`RecStats`] overall, per detector and per group, and the
/// per-row scores.
pub fn evaluate(format: &str, runs: &[FileRun], configured: &[String]) -> RecordedReport {
    let m = RecMatching::new(runs);
    let all = |_: usize| true;
    let overall = m.stats(runs, "all".into(), &all, None);
    let detectors = detector_names(runs, configured)
        .into_iter()
        .map(|d| m.stats(runs, d.to_string(), &all, Some(d)))
        .collect();
    let mut groups_seen: Vec<&str> = Vec::new();
    for r in runs {
        if !groups_seen.contains(&r.series.group.as_str()) {
            groups_seen.push(&r.series.group);
        }
    }
    let groups = groups_seen
        .into_iter()
        .map(|g| m.stats(runs, g.to_string(), &|f| runs[f].series.group == g, None))
        .collect();
    let false_episodes = runs
        .iter()
        .zip(&m.inside)
        .flat_map(|(r, ins)| {
            r.episodes
                .iter()
                .zip(ins)
                .filter(|(_, k)| k.is_none())
                .map(|(e, _)| e.alert_id.clone())
        })
        .collect();
    RecordedReport {
        format: format.to_string(),
        files: runs.len() as u64,
        rows: runs.iter().map(|r| r.series.rows.len() as u64).sum(),
        readings: runs.iter().map(|r| r.series.readings()).sum(),
        score_threshold: SCORE_THRESHOLD,
        overall,
        detectors,
        groups,
        row_scores: row_stats(runs),
        anomalies: m.anomalies,
        false_episodes,
    }
}

/// Which anomaly (stretch) each file's episodes start inside, and how each anomaly
/// fared (the matching half of [`evaluate`]).
struct RecMatching {
    /// Per file, per episode: the stretch it starts inside (stretches never overlap).
    inside: Vec<Vec<Option<usize>>>,
    /// Every file's anomalies, file by file.
    anomalies: Vec<AnomalyResult>,
    /// Anomaly i belongs to file `anomaly_file[i]`.
    anomaly_file: Vec<usize>,
}

impl RecMatching {
    fn new(runs: &[FileRun]) -> Self {
        let stretches: Vec<Vec<Stretch>> = runs.iter().map(|r| r.series.stretches()).collect();
        let inside: Vec<Vec<Option<usize>>> = runs
            .iter()
            .zip(&stretches)
            .map(|(r, st)| {
                r.episodes
                    .iter()
                    .map(|e| {
                        st.iter()
                            .position(|s| e.start >= s.start && e.start <= s.end)
                    })
                    .collect()
            })
            .collect();
        let mut anomalies = Vec::new();
        for (fi, (r, st)) in runs.iter().zip(&stretches).enumerate() {
            for (k, s) in st.iter().enumerate() {
                anomalies.push(anomaly_result(r, s, k, &inside[fi]));
            }
        }
        let anomaly_file: Vec<usize> = stretches
            .iter()
            .enumerate()
            .flat_map(|(f, st)| std::iter::repeat_n(f, st.len()))
            .collect();
        RecMatching {
            inside,
            anomalies,
            anomaly_file,
        }
    }

    /// The figures of the files `files` picks, for one detector or (None) all of them.
    fn stats(
        &self,
        runs: &[FileRun],
        name: String,
        files: &dyn Fn(usize) -> bool,
        detector: Option<&str>,
    ) -> RecStats {
        let of_detector = |e: &Episode| detector.is_none_or(|d| e.detector == d);
        let (mut n_files, mut readings, mut eps, mut false_eps, mut messages) = (0, 0, 0, 0, 0);
        for (f, r) in runs.iter().enumerate().filter(|(f, _)| files(*f)) {
            n_files += 1;
            readings += r.series.readings();
            for ((e, m), k) in r.episodes.iter().zip(&r.messages).zip(&self.inside[f]) {
                if of_detector(e) {
                    eps += 1;
                    messages += m;
                    false_eps += u64::from(k.is_none());
                }
            }
        }
        let (mut caught, mut total) = (0u64, 0u64);
        let (mut delays, mut rows, mut missed) = (Vec::new(), Vec::new(), Vec::new());
        for (a, _) in self
            .anomalies
            .iter()
            .zip(&self.anomaly_file)
            .filter(|(_, f)| files(**f))
        {
            total += 1;
            // Everything: the earliest episode of any detector.
            let (d, n) = match detector {
                Some(d) => (
                    a.caught_by.get(d).copied(),
                    a.caught_by_rows.get(d).copied(),
                ),
                None => (
                    a.caught_by.values().min().copied(),
                    a.caught_by_rows.values().min().copied(),
                ),
            };
            match (d, n) {
                (Some(d), Some(n)) => {
                    caught += 1;
                    delays.push(d as f64);
                    rows.push(n as f64);
                }
                _ => missed.push(format!("{} {}..{}", a.file, a.start, a.end)),
            }
        }
        RecStats {
            name,
            files: n_files,
            readings,
            episodes: eps,
            false_episodes: false_eps,
            false_per_10k_readings: (readings > 0)
                .then(|| false_eps as f64 * 10_000.0 / readings as f64),
            alert_messages: messages,
            anomalies: total,
            caught,
            recall: (total > 0).then(|| caught as f64 / total as f64),
            alert_messages_per_anomaly: (total > 0).then(|| messages as f64 / total as f64),
            delay_median_s: quantile(&delays, 0.5),
            delay_p90_s: quantile(&delays, 0.9),
            delay_median_rows: quantile(&rows, 0.5),
            delay_p90_rows: quantile(&rows, 0.9),
            missed,
        }
    }
}

/// How the `k`th stretch `s` of file run `r` fared: each detector's first episode
/// inside it (`inside`: the stretch each of the file's episodes starts in).
fn anomaly_result(r: &FileRun, s: &Stretch, k: usize, inside: &[Option<usize>]) -> AnomalyResult {
    let mut a = AnomalyResult {
        file: r.series.name.clone(),
        start: r.series.rows[s.first].ts.to_rfc3339(),
        end: r.series.rows[s.last].ts.to_rfc3339(),
        rows: (s.last - s.first + 1) as u64,
        caught_by: BTreeMap::new(),
        caught_by_rows: BTreeMap::new(),
    };
    for (e, m) in r.episodes.iter().zip(inside) {
        if *m != Some(k) {
            continue;
        }
        let delay = e.start - s.start;
        if a.caught_by.get(&e.detector).is_none_or(|&d| delay < d) {
            a.caught_by.insert(e.detector.clone(), delay);
            let n = r.series.rows[s.first..=s.last]
                .iter()
                .filter(|row| row.ts.timestamp() <= e.start)
                .count()
                .max(1) as u64;
            a.caught_by_rows.insert(e.detector.clone(), n);
        }
    }
    a
}

/// The configured detectors, then any other that alerted, each once, in that order.
fn detector_names<'a>(runs: &'a [FileRun], configured: &'a [String]) -> Vec<&'a str> {
    let mut names: Vec<&str> = configured.iter().map(String::as_str).collect();
    for r in runs {
        names.extend(r.episodes.iter().map(|e| e.detector.as_str()));
    }
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| seen.insert(*n));
    names
}

/// SKAB's per-row figures per split: a row is flagged when its score reaches
/// [`SCORE_THRESHOLD`].
fn row_stats(runs: &[FileRun]) -> Vec<RowStats> {
    let mut counts: BTreeMap<Split, [u64; 4]> = BTreeMap::new();
    for r in runs {
        for (row, &score) in r.series.rows.iter().zip(&r.scores) {
            let c = counts.entry(row.split).or_default();
            let i = match (score >= SCORE_THRESHOLD, row.anomaly) {
                (true, true) => 0,
                (true, false) => 1,
                (false, false) => 2,
                (false, true) => 3,
            };
            c[i] += 1;
        }
    }
    counts
        .into_iter()
        .map(|(split, [tp, fp, tn, fn_])| RowStats::new(split, tp, fp, tn, fn_))
        .collect()
}

impl RecordedReport {
    /// The readable table `riskstream backtest --format skab|csv` prints.
    pub fn table(&self) -> String {
        use std::fmt::Write;
        let mut o = String::new();
        let _ = writeln!(
            o,
            "{} backtest: {} files, {} rows, {} readings (fresh pipeline per file; an anomaly \
             is caught by an episode starting inside it, no grace)\n",
            self.format, self.files, self.rows, self.readings
        );
        self.stats_tables(&mut o);
        self.row_score_table(&mut o);
        self.anomaly_table(&mut o);
        o
    }

    /// Per detector with the overall line, then per file group.
    fn stats_tables(&self, o: &mut String) {
        use std::fmt::Write;
        stats_head(o, "detector");
        for s in &self.detectors {
            stats_row(o, s);
        }
        stats_row(o, &self.overall);
        let _ = writeln!(o);
        stats_head(o, "file group");
        for s in &self.groups {
            stats_row(o, s);
        }
    }

    /// SKAB's per-row figures per split.
    fn row_score_table(&self, o: &mut String) {
        use super::fmt_opt;
        use std::fmt::Write;
        let _ = writeln!(
            o,
            "\nper row (predicted anomalous when a reading scores >= {}; pooled over files):",
            self.score_threshold
        );
        let _ = writeln!(
            o,
            "  {:<7} {:>7} {:>6} {:>6} {:>7} {:>6} {:>6} {:>7} {:>7}",
            "split", "rows", "TP", "FP", "TN", "FN", "F1", "FAR %", "MAR %"
        );
        for r in &self.row_scores {
            let _ = writeln!(
                o,
                "  {:<7} {:>7} {:>6} {:>6} {:>7} {:>6} {:>6} {:>7} {:>7}",
                r.split.as_str(),
                r.rows,
                r.tp,
                r.fp,
                r.tn,
                r.fn_,
                fmt_opt(r.f1, 3),
                fmt_opt(r.far_pct, 2),
                fmt_opt(r.mar_pct, 2),
            );
        }
    }

    /// How each anomaly fared, then the false episodes.
    fn anomaly_table(&self, o: &mut String) {
        use super::fmt_secs;
        use std::fmt::Write;
        let _ = writeln!(o, "\nper anomaly:");
        for a in &self.anomalies {
            let by = if a.caught_by.is_empty() {
                "MISSED".to_string()
            } else {
                a.caught_by
                    .iter()
                    .map(|(d, s)| {
                        let n = a.caught_by_rows.get(d).copied().unwrap_or(0);
                        format!("{d} +{} ({n} rw)", fmt_secs(Some(*s as f64)))
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let _ = writeln!(o, "  {:<20} {} {:>5} rows -> {by}", a.file, a.start, a.rows);
        }
        let _ = writeln!(o, "\nfalse episodes ({}):", self.false_episodes.len());
        for a in &self.false_episodes {
            let _ = writeln!(o, "  {a}");
        }
    }
}

/// The header of a [`RecordedReport::table`] statistics block; `what` names its rows.
fn stats_head(o: &mut String, what: &str) {
    use std::fmt::Write;
    let _ = writeln!(
        o,
        "{:<22} {:>9} {:>5} {:>5} {:>7} {:>5} {:>7} {:>7} {:>7} {:>7} {:>6} {:>6}",
        what,
        "readings",
        "eps",
        "false",
        "FA/10k",
        "msgs",
        "caught",
        "msg/an",
        "d p50",
        "d p90",
        "rw p50",
        "rw p90"
    );
}

/// One line of a [`RecordedReport::table`] statistics block.
fn stats_row(o: &mut String, s: &RecStats) {
    use super::{fmt_opt, fmt_secs};
    use std::fmt::Write;
    let _ = writeln!(
        o,
        "{:<22} {:>9} {:>5} {:>5} {:>7} {:>5} {:>7} {:>7} {:>7} {:>7} {:>6} {:>6}",
        s.name,
        s.readings,
        s.episodes,
        s.false_episodes,
        fmt_opt(s.false_per_10k_readings, 2),
        s.alert_messages,
        format!("{}/{}", s.caught, s.anomalies),
        fmt_opt(s.alert_messages_per_anomaly, 1),
        fmt_secs(s.delay_median_s),
        fmt_secs(s.delay_p90_s),
        fmt_opt(s.delay_median_rows, 0),
        fmt_opt(s.delay_p90_rows, 0),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::Level;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    /// A 1 Hz series from `2020-01-01 00:00:00` UTC with these labels.
    fn csv(labels: &[u8]) -> String {
        let mut s = "timestamp,value,label\n".to_string();
        for (i, l) in labels.iter().enumerate() {
            s += &format!("2020-01-01 00:00:{i:02},{}.5,{l}\n", i);
        }
        s
    }

    const T0: i64 = 1_577_836_800; // 2020-01-01T00:00:00Z

    fn ep(det: &str, file: &str, at: i64) -> Episode {
        Episode {
            alert_id: format!("sensors:{det}:{file}:{at}"),
            stream: Stream::Sensors,
            detector: det.into(),
            keys: vec![file.into()],
            start: T0 + at,
            level: Level::Yellow,
        }
    }

    #[test]
    fn plain_csv_parses_sorts_and_names_errors_by_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "pump-a.csv",
            "timestamp,value,label\n2020-01-01T00:00:01+03:00,2,1\n\n2020-01-01 00:00:00,1.5,0\n",
        );
        let s = read_csv_file(&p, "pressure").unwrap();
        assert_eq!((s.name.as_str(), s.group.as_str()), ("pump-a", "pressure"));
        assert_eq!(s.sensors[0].id, "pump-a");
        // +03:00 at 00:00:01 is before 00:00:00 UTC: sorted first.
        assert_eq!(s.rows[0].values, vec![2.0]);
        assert!(s.rows[0].anomaly);
        assert_eq!(s.rows[1].ts.to_rfc3339(), "2020-01-01T00:00:00+00:00");
        assert_eq!(s.readings(), 2);

        for (text, line, what) in [
            (
                "timestamp,value,label\n2020-01-01 00:00:00,x,0\n",
                2,
                "value",
            ),
            (
                "timestamp,value,label\n2020-01-01 00:00:00,1,0\n2020-01-01,1,0\n",
                3,
                "timestamp",
            ),
            (
                "timestamp,value,label\n2020-01-01 00:00:00,1,2\n",
                2,
                "label must be 0 or 1",
            ),
            (
                "timestamp,value,label\n2020-01-01 00:00:00,1\n",
                2,
                "2 fields",
            ),
        ] {
            let p = write(dir.path(), "bad.csv", text);
            let e = read_csv_file(&p, "generic").unwrap_err().to_string();
            assert!(e.contains(&format!("bad.csv: line {line}: ")), "{e}");
            assert!(e.contains(what), "{e}");
        }
    }

    #[test]
    fn skab_files_map_columns_labels_and_splits() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("valve1")).unwrap();
        std::fs::create_dir(dir.path().join("anomaly-free")).unwrap();
        let mut text = "datetime;Pressure;Current;anomaly;changepoint\r\n".to_string();
        for i in 0..402 {
            let a = if i >= 400 { "1.0" } else { "0.0" };
            text += &format!(
                "2020-03-09 10:{:02}:{:02};0.5;{i};{a};0.0\r\n",
                14 + i / 60,
                i % 60
            );
        }
        write(&dir.path().join("valve1"), "10.csv", &text);
        write(&dir.path().join("valve1"), "2.csv", &text);
        write(
            &dir.path().join("anomaly-free"),
            "anomaly-free.csv",
            "datetime;Voltage\n2020-02-08 13:30:47;238.8\n",
        );
        let all = read_skab_dir(dir.path()).unwrap();
        let names: Vec<&str> = all.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "SKAB-anomaly-free-anomaly-free",
                "SKAB-valve1-2",
                "SKAB-valve1-10"
            ]
        );
        let v = &all[1];
        assert_eq!(v.sensors[0].id, "SKAB-valve1-2-pressure");
        assert_eq!(v.sensors[1].kind, "current");
        assert_eq!(v.readings(), 804);
        assert_eq!(v.rows[0].ts.to_rfc3339(), "2020-03-09T10:14:00+03:00");
        assert_eq!(v.rows[399].split, Split::Train);
        assert_eq!(
            (v.rows[400].split, v.rows[400].anomaly),
            (Split::Test, true)
        );
        assert_eq!(all[0].rows[0].split, Split::Normal);
        assert!(!all[0].rows[0].anomaly);
        let env = &v.envelopes()[3];
        let j: serde_json::Value = serde_json::from_slice(&env.payload).unwrap();
        assert_eq!(j["sensor_id"], "SKAB-valve1-2-current");
        assert_eq!(j["site_id"], "SKAB-valve1-2");
        assert_eq!(j["region"], REGION);
        assert_eq!(j["value"], 1.0);
        assert_eq!(j["unit"], "A");

        write(
            &dir.path().join("valve1"),
            "2.csv",
            "datetime;Pressure;anomaly;changepoint\n2020-03-09 10:14:33;0.5;0.0;0.0\n2020-03-09 10:14:34;nan;0.0;0.0\n",
        );
        let e = read_skab_dir(dir.path()).unwrap_err().to_string();
        assert!(e.contains("2.csv: line 3: Pressure"), "{e}");
    }

    /// Three files, worked by hand:
    /// - a: rows 0-9, anomaly rows 3-5 (t 3..5) and 8-9 (t 8..9). threshold at t4 (inside
    ///   the first: delay 1 s, 2 rows), robust_z at t7 (false), robust_z at t9 (inside the
    ///   second: delay 1 s, 2 rows) with 3 messages.
    /// - b: rows 0-4, anomaly rows 1-2 (t 1..2); threshold at t3 (just after: false, no
    ///   grace) -> missed.
    /// - c: rows 0-4, no anomaly; robust_z at t0 (false).
    #[test]
    fn anomalies_false_episodes_delays_and_row_scores_are_exact() {
        let dir = tempfile::tempdir().unwrap();
        let a = read_csv_file(
            &write(dir.path(), "a.csv", &csv(&[0, 0, 0, 1, 1, 1, 0, 0, 1, 1])),
            "generic",
        )
        .unwrap();
        let b = read_csv_file(
            &write(dir.path(), "b.csv", &csv(&[0, 1, 1, 0, 0])),
            "generic",
        )
        .unwrap();
        let c = read_csv_file(
            &write(dir.path(), "c.csv", &csv(&[0, 0, 0, 0, 0])),
            "generic",
        )
        .unwrap();
        let runs = vec![
            FileRun {
                series: a,
                episodes: vec![
                    ep("threshold", "a", 4),
                    ep("robust_z", "a", 7),
                    ep("robust_z", "a", 9),
                ],
                messages: vec![2, 1, 3],
                // TP rows 4,5,9; FP rows 6,7; FN rows 3,8; TN rows 0,1,2.
                scores: vec![0.0, 0.1, 0.49, 0.2, 0.5, 0.9, 0.6, 0.7, 0.3, 1.0],
            },
            FileRun {
                series: b,
                episodes: vec![ep("threshold", "b", 3)],
                messages: vec![1],
                // TP 1; FN 2; FP 3; TN 0,4.
                scores: vec![0.0, 0.8, 0.0, 0.8, 0.0],
            },
            FileRun {
                series: c,
                episodes: vec![ep("robust_z", "c", 0)],
                messages: vec![1],
                // FP 0; TN 1-4.
                scores: vec![0.5, 0.0, 0.0, 0.0, 0.0],
            },
        ];
        let r = evaluate("csv", &runs, &["threshold".into(), "cusum".into()]);
        assert_eq!((r.files, r.rows, r.readings), (3, 20, 20));
        let o = &r.overall;
        assert_eq!((o.anomalies, o.caught), (3, 2));
        assert_eq!((o.episodes, o.false_episodes), (5, 3));
        assert_eq!(o.false_per_10k_readings, Some(1500.0));
        assert_eq!(o.alert_messages, 8);
        assert_eq!(o.alert_messages_per_anomaly, Some(8.0 / 3.0));
        assert_eq!(
            (o.delay_median_s, o.delay_median_rows),
            (Some(1.0), Some(2.0))
        );
        assert_eq!(
            o.missed,
            vec!["b 2020-01-01T00:00:01+00:00..2020-01-01T00:00:02+00:00"]
        );

        let get = |n: &str| r.detectors.iter().find(|s| s.name == n).unwrap();
        let th = get("threshold");
        assert_eq!((th.episodes, th.false_episodes, th.caught), (2, 1, 1));
        assert_eq!(th.alert_messages, 3);
        let rz = get("robust_z");
        assert_eq!((rz.episodes, rz.false_episodes, rz.caught), (3, 2, 1));
        assert_eq!(rz.delay_median_s, Some(1.0));
        // Configured but silent: listed with nothing caught.
        let cu = get("cusum");
        assert_eq!((cu.episodes, cu.caught, cu.anomalies), (0, 0, 3));
        assert_eq!(r.groups.len(), 1);
        assert_eq!(r.groups[0].name, "generic");
        assert_eq!(r.anomalies[0].caught_by["threshold"], 1);
        assert_eq!(r.anomalies[0].caught_by_rows["threshold"], 2);
        assert_eq!(r.false_episodes.len(), 3);

        // Pooled: TP 4, FP 4, TN 9, FN 3 -> F1 4/(4+3.5), FAR 4/13, MAR 3/7.
        assert_eq!(r.row_scores.len(), 1);
        let rs = &r.row_scores[0];
        assert_eq!((rs.tp, rs.fp, rs.tn, rs.fn_, rs.rows), (4, 4, 9, 3, 20));
        assert_eq!(rs.f1, Some(4.0 / 7.5));
        assert_eq!(rs.far_pct, Some(400.0 / 13.0));
        assert_eq!(rs.mar_pct, Some(300.0 / 7.0));
        assert!(r.table().contains("MISSED"));
    }

    #[test]
    fn a_normal_split_has_only_a_false_alarm_rate() {
        let r = RowStats::new(Split::Normal, 0, 2, 8, 0);
        assert_eq!((r.f1, r.far_pct, r.mar_pct), (None, Some(20.0), None));
    }
}
