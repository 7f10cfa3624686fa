//! Input that cannot be trusted (issue 24), through `riskstream replay` with
//! `config/default.toml`, as a new user would try it: a device clock from the future, a
//! transmitter glitch of +-1e308, and one report resent 40 times.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn t0() -> chrono::DateTime<chrono::FixedOffset> {
    chrono::DateTime::parse_from_rfc3339("2026-11-26T06:00:00+08:00").unwrap()
}

fn at(secs: i64) -> String {
    (t0() + chrono::Duration::seconds(secs)).to_rfc3339()
}

/// A small LCG: deterministic noise in [-1, 1).
fn noise(seed: &mut u64) -> f64 {
    *seed = seed
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407);
    ((*seed >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
}

fn sensor(id: &str, kind: &str, ts: &str, value: f64) -> Value {
    json!({"sensor_id": id, "site_id": "SITE-330503-0042", "region": "330503101",
           "kind": kind, "ts": ts, "value": value})
}

/// What `replay` printed: its alerts and its closing counts.
struct Replay {
    alerts: Vec<Value>,
    summary: String,
}

impl Replay {
    /// The count `replay` reported for `what` (`invalid`, `late`, `duplicates`).
    fn count(&self, what: &str) -> u64 {
        let words: Vec<&str> = self.summary.split([' ', ',', ':']).collect();
        let i = words
            .iter()
            .position(|w| *w == what)
            .unwrap_or_else(|| panic!("no `{what}` in {:?}", self.summary));
        words[i - 1].parse().unwrap()
    }

    fn by(&self, detector: &str) -> Vec<&Value> {
        self.alerts
            .iter()
            .filter(|a| a["detector"] == detector)
            .collect()
    }
}

fn replay(dir: &Path, file: &str, lines: &[Value]) -> Replay {
    let path = dir.join(file);
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_riskstream"))
        .args(["replay", "--config"])
        .arg(root().join("config/default.toml"))
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{stderr}");
    let alerts = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v.get("alert_id").is_some())
        .collect();
    let summary = stderr
        .lines()
        .find(|l| l.starts_with("replayed "))
        .unwrap_or_else(|| panic!("no summary in {stderr}"))
        .to_string();
    Replay { alerts, summary }
}

/// 300 gas readings of one sensor, with one reading of another sensor dated 2099 among
/// them (a gateway whose clock reset), then a real leak.
#[test]
fn a_clock_from_the_future_makes_nothing_late_and_raises_no_offline() {
    let dir = tempfile::tempdir().unwrap();
    let mut seed = 7;
    let mut lines = Vec::new();
    for i in 0..330 {
        let leak = i >= 300;
        let v = if leak {
            30.0
        } else {
            2.0 + 0.2 * noise(&mut seed)
        };
        lines.push(sensor("S-330503-0042-GAS1", "gas_lel", &at(i * 30), v));
        if i == 100 {
            lines.push(sensor(
                "S-330503-0042-GAS2",
                "gas_lel",
                "2099-01-01T00:00:00+08:00",
                2.0,
            ));
        }
    }
    let r = replay(dir.path(), "sensor-readings.ndjson", &lines);
    assert_eq!(r.count("late"), 0, "{}", r.summary);
    assert_eq!(
        r.count("invalid"),
        1,
        "the 2099 reading is a dead letter: {}",
        r.summary
    );
    assert!(r.by("offline").is_empty(), "{:?}", r.by("offline"));
    assert!(
        r.by("threshold")
            .iter()
            .any(|a| a["level"] == "red" && a["subject"]["sensor_id"] == "S-330503-0042-GAS1"),
        "the leak after the bad clock is red: {:?}",
        r.alerts
    );
}

/// Pressure readings with a glitch of 1e308 then -1e308: one yellow sensor-fault
/// episode for the township, no orange or red, no cusum episode after it.
#[test]
fn a_transmitter_glitch_is_one_sensor_fault_and_no_hazard() {
    let dir = tempfile::tempdir().unwrap();
    let mut seed = 11;
    let mut lines = Vec::new();
    for i in 0..600 {
        let v = match i {
            300 => 1e308,
            301 => -1e308,
            _ => 0.8 + 0.005 * noise(&mut seed),
        };
        lines.push(sensor("S-330503-0042-PRES1", "pressure", &at(i * 30), v));
    }
    let r = replay(dir.path(), "sensor-readings.ndjson", &lines);
    let faults = r.by("sensor_fault");
    let ids: std::collections::BTreeSet<String> =
        faults.iter().map(|a| a["alert_id"].to_string()).collect();
    assert_eq!(ids.len(), 1, "one episode: {faults:?}");
    assert_eq!(faults[0]["status"], "firing");
    assert_eq!(faults[0]["level"], "yellow");
    assert_eq!(
        faults[0]["route"],
        json!(["330503101"]),
        "the township alone"
    );
    assert!(
        faults.iter().any(|a| a["status"] == "resolved"),
        "good readings end it: {faults:?}"
    );
    assert!(
        r.alerts
            .iter()
            .all(|a| a["level"] == "yellow" || a["level"] == "blue"),
        "no hazard level: {:?}",
        r.alerts
    );
    assert!(r.by("cusum").is_empty(), "{:?}", r.by("cusum"));
    assert_eq!(r.count("invalid"), 0, "{}", r.summary);
}

/// Incident reports: a quiet township for hours, then 40 reports in 10 minutes. The
/// same report resent 40 times raises nothing and is counted as 39 duplicates; 40
/// distinct reports (the control) raise `rate_spike`.
#[test]
fn a_resent_report_counts_once() {
    let dir = tempfile::tempdir().unwrap();
    let report = |id: &str, secs: i64| json!({"id": id, "ts": at(secs), "region": "330502001", "category": "dispute"});
    let run = |distinct: bool| {
        let mut lines = Vec::new();
        for i in 0..24 {
            lines.push(report(&format!("INC-BG-{i}"), i * 900 + 60));
        }
        for k in 0..40 {
            let id = if distinct {
                format!("INC-BURST-{k}")
            } else {
                "INC-BURST-0".to_string()
            };
            lines.push(report(&id, 6 * 3600 + 30 + k * 15));
        }
        for i in 0..8 {
            lines.push(report(
                &format!("INC-AFTER-{i}"),
                6 * 3600 + 900 + i * 900 + 60,
            ));
        }
        replay(dir.path(), "incidents.ndjson", &lines)
    };
    let resent = run(false);
    assert_eq!(resent.count("duplicates"), 39, "{}", resent.summary);
    assert!(
        resent.by("rate_spike").is_empty(),
        "{:?}",
        resent.by("rate_spike")
    );
    let distinct = run(true);
    assert_eq!(distinct.count("duplicates"), 0, "{}", distinct.summary);
    assert!(
        !distinct.by("rate_spike").is_empty(),
        "the control: 40 distinct reports are a spike"
    );
}
