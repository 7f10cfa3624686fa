//! CI regression check for detection quality: a simulated day (seed 7) through
//! `riskstream simulate` and `riskstream backtest --json` with config/default.toml.
//! Thresholds sit a little under what the default detectors measured when this test was
//! written (see the numbers beside each); raise them as detectors improve, never lower
//! them to make a change pass without saying why.

use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_riskstream"))
}

fn root() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn stats<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["streams"]
        .as_array()
        .unwrap()
        .iter()
        .chain(report["detectors"].as_array().unwrap())
        .chain([&report["overall"]])
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no stats for {name}"))
}

#[test]
fn default_config_catches_the_simulated_day() {
    let dir = tempfile::tempdir().unwrap();
    let st = bin()
        .current_dir(root())
        .args([
            "simulate",
            "--hours",
            "24",
            "--seed",
            "7",
            "--start",
            "2026-11-26T00:00:00+08:00",
            "--out",
        ])
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(st.success());
    let run = |json: bool| {
        let mut c = bin();
        c.args(["backtest", "--config"])
            .arg(root().join("config/default.toml"))
            .arg(dir.path());
        if json {
            c.arg("--json");
        }
        let out = c.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let report: serde_json::Value = serde_json::from_str(&run(true)).unwrap();
    // The table, for whoever reads the CI log.
    println!("{}", run(false));

    // The ISA-18.2 alarm KPIs, the city first. The generated day is a manageable load:
    // no center floods (measured: the city's worst 10 minutes held 5 alarms).
    let kpis = report["alarm_kpis"].as_array().unwrap();
    assert_eq!(kpis[0]["center"], "330500", "{kpis:?}");
    for k in kpis {
        assert!(k["activations"].as_u64().unwrap() > 0, "{k}");
        assert!(
            k["per_10m_max"].as_u64() >= k["per_10m_p50"].as_u64(),
            "{k}"
        );
        assert_eq!(k["floods"], 0, "a flood on the generated day: {k}");
    }
    // Every red-level hazard a configured detector should catch is caught (measured 2/2).
    for l in report["levels"].as_array().unwrap() {
        if l["level"] == "red" {
            assert!(l["coverable"].as_u64().unwrap() >= 2);
            assert_eq!(l["coverable_caught"], l["coverable"], "red missed: {l}");
        }
    }
    // Every detector catches every label it is expected to on this day (all 1.0; cusum is
    // listed on steps it is not meant to win, so it is left out).
    for name in [
        "sensors/threshold",
        "sensors/ewma_z",
        "sensors/rate_of_change",
        "sensors/robust_z",
        "sensors/flatline",
        "sensors/offline",
        "sensors/site_correlation",
        "incidents/rate_spike",
        "fraud/entity_burst",
        "fraud/spread",
        "fraud/rate_spike",
    ] {
        let s = stats(&report, name);
        assert_eq!(s["recall"], 1.0, "{name}: {s}");
    }
    // Every label is caught (measured 13/13).
    assert_eq!(stats(&report, "all")["recall"], 1.0);
    incident_targets(&report);
    // Precision and false alerts. Before the city carried not-a-hazard realism (issue
    // #18 item 7) they measured: precision all 0.97, sensors 0.97, incidents and fraud
    // 1.0; 0.022 false alerts per 10k events (one: ewma_z on H2S noise), with bounds 0.95,
    // 0.94, 0.95, 0.95 and 0.05. On the honest city (quantized, heavy-tailed and
    // daily-cycling sensors, maintenance shifts, gaps, a late upload) the same detectors
    // measure: precision all 0.12, sensors 0.09, incidents and fraud 1.0; 262 false
    // episodes, 5.64 per 10k events, 257 of them inside a not-a-hazard stretch and 111 of
    // those above blue (by kind, an episode in two kinds counted in both: quantized 56,
    // heavy_tail 42, daily_cycle 35, gap 6, late_upload 4, maintenance_shift 2; by
    // detector see docs/DETECTORS.md). With ewma_z under the false-alarm budget and its
    // resolution floor, and robust_z's floor at 6.5 (2026-12-07): precision all 0.16,
    // sensors 0.12; 186 false episodes, 4.01 per 10k events, 65 above blue inside a
    // not-a-hazard stretch. The bounds sit at what was measured; tighten them as the
    // detectors improve.
    for (name, min) in [
        ("all", 0.15),
        ("sensors", 0.11),
        ("incidents", 0.95),
        ("fraud", 0.95),
    ] {
        let p = stats(&report, name)["precision"].as_f64().unwrap();
        assert!(p >= min, "{name}: precision {p} < {min}");
    }
    // Sensor steps are caught within two readings (measured median 1).
    let th = stats(&report, "sensors/threshold");
    assert!(th["delay_median_readings"].as_f64().unwrap() <= 2.0, "{th}");
    // False alerts per 10k events (measured 0.022 before the realism, 5.64 with it, 4.01
    // with the budget on ewma_z).
    let fa = stats(&report, "all")["false_per_10k_events"]
        .as_f64()
        .unwrap();
    assert!(fa <= 4.3, "false alerts per 10k events: {fa}");
    // False alarms (above blue) the realism provokes (measured 111, then 65).
    let nh = stats(&report, "all")["not_a_hazard_episodes"]
        .as_u64()
        .unwrap();
    assert!(
        nh <= 70,
        "episodes above blue in not-a-hazard stretches: {nh}"
    );
    // Outside every not-a-hazard stretch false alerts stay as rare as on the old city
    // (measured 5: the old ewma_z on H2S noise and 4 site_correlation episodes at sites
    // whose sensors carry realism, keyed by the site so no sensor label matches them).
    let in_stretch: Vec<&str> = report["false_in_not_a_hazard"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap().split(' ').next().unwrap())
        .collect();
    let outside = report["false_alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| !in_stretch.contains(&a.as_str().unwrap()))
        .count();
    assert!(
        outside <= 6,
        "false alerts outside not-a-hazard stretches: {outside}"
    );
}

/// Issue #23's incident targets on the same day: every labelled hazard (the site event
/// included, one label for its four sensors) is exactly one incident, and costs at most
/// (its level changes + 2) incident messages. Measured with `join_gap = "30m"`: 13 of
/// 13 one incident each, none over budget, 133 incidents for 221 episodes (120 false,
/// 2.58 per 10k events, against 186 false episodes), 3.7 incident messages per hazard
/// (max 8, the site event) against 7.1 alert messages.
fn incident_targets(report: &serde_json::Value) {
    let inc = &report["incidents"];
    let hazards = stats(report, "all")["labels"].as_u64().unwrap();
    assert_eq!(inc["hazards"].as_u64(), Some(hazards), "{inc}");
    assert!(hazards >= 13, "every kind of hazard is labelled: {hazards}");
    for h in inc["per_hazard"].as_array().unwrap() {
        let n = h["incidents"].as_array().unwrap().len();
        assert_eq!(n, 1, "a hazard must be exactly one incident: {h}");
        let (msgs, changes) = (
            h["messages"].as_u64().unwrap(),
            h["level_changes"].as_u64().unwrap(),
        );
        assert!(
            msgs <= changes + 2,
            "incident messages {msgs} > level changes {changes} + 2: {h}"
        );
    }
    assert_eq!(inc["one_incident"].as_u64(), Some(hazards));
    assert_eq!(inc["over_budget"], 0);
    // Grouping makes fewer, not more, things to look at (measured 2.58 per 10k events,
    // false episodes 4.01).
    let false_incidents = inc["false_per_10k_events"].as_f64().unwrap();
    let false_episodes = stats(report, "all")["false_per_10k_events"]
        .as_f64()
        .unwrap();
    assert!(
        false_incidents <= 2.8 && false_incidents < false_episodes,
        "false incidents per 10k events: {false_incidents} (episodes {false_episodes})"
    );
    let mean = inc["messages_per_hazard_mean"].as_f64().unwrap();
    let alerts = inc["alert_messages_per_hazard_mean"].as_f64().unwrap();
    assert!(
        mean < alerts,
        "incident messages per hazard {mean} vs alert messages {alerts}"
    );
}

#[test]
fn backtest_without_inputs_or_labels_is_bad_usage() {
    let dir = tempfile::tempdir().unwrap();
    let run = || {
        bin()
            .args(["backtest", "--config"])
            .arg(root().join("config/default.toml"))
            .arg(dir.path())
            .output()
            .unwrap()
    };
    let out = run();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no incidents"));
    std::fs::write(dir.path().join("sensor-readings.ndjson"), "").unwrap();
    std::fs::write(
        dir.path().join("labels.jsonl"),
        "{\"stream\":\"sensors\"}\n",
    )
    .unwrap();
    let out = run();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("labels.jsonl: line 1"));
}

// SKAB with config/default.toml, measured 2026-12-08 (issue #18, docs/DETECTORS.md):
// caught 32/34 anomalies, 23 false episodes = 0.61 per 10k readings (of 374448), test-split
// F1 0.790 (FAR 20.54 %, MAR 23.12 %), the anomaly-free file 1.08 % of rows flagged. The
// level_shift detector made the difference: before it (2026-12-07) 18/34, 9 false = 0.24
// per 10k, F1 0.364 with FAR 3.10 %. The test split's normal rows are the minutes just
// before and after each anomaly, which an episode's hold and its return cover; on the
// anomaly-free run the flagged share stays near 1 %. Before the false-alarm budget
// (e270f0d): 14/34, 69 false = 1.84 per 10k, F1 0.558 with FAR 49.18 %. The issue's
// targets are 28/34, <= 1 per 10k and F1 >= 0.78.
const MIN_CAUGHT: u64 = 30;
const MAX_FALSE_PER_10K: f64 = 0.7;
const MIN_F1: f64 = 0.77;
const MAX_TEST_FAR_PERCENT: f64 = 23.0;
const MAX_NORMAL_FAR_PERCENT: f64 = 2.0;

/// The SKAB CSVs: `RISKSTREAM_SKAB_DIR`, else `../shared/data/skab` beside the checkout,
/// else `/work/shared/data/skab`. Missing data fails the test (a silent skip would hide
/// a lost regression check).
fn skab_dir() -> std::path::PathBuf {
    let mut tried = Vec::new();
    let candidates = std::env::var_os("RISKSTREAM_SKAB_DIR")
        .map(std::path::PathBuf::from)
        .into_iter()
        .chain([
            root().join("../shared/data/skab"),
            std::path::PathBuf::from("/work/shared/data/skab"),
        ]);
    for d in candidates {
        if d.join("valve1").is_dir() {
            return d;
        }
        tried.push(d.display().to_string());
    }
    panic!(
        "no SKAB data (a folder with valve1/, valve2/, other/, anomaly-free/); looked in: {}; \
         set RISKSTREAM_SKAB_DIR",
        tried.join(", ")
    );
}

#[test]
fn skab_with_the_default_config() {
    let out = bin()
        .args(["backtest", "--format", "skab"])
        .arg(skab_dir())
        .arg("--config")
        .arg(root().join("config/default.toml"))
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let all = &report["overall"];
    assert_eq!(all["anomalies"], 34, "{all}");
    assert_eq!(report["readings"], 374_448);
    let caught = all["caught"].as_u64().unwrap();
    assert!(caught >= MIN_CAUGHT, "caught {caught}/34 < {MIN_CAUGHT}");
    let fa = all["false_per_10k_readings"].as_f64().unwrap();
    assert!(
        fa <= MAX_FALSE_PER_10K,
        "false episodes per 10k readings {fa} > {MAX_FALSE_PER_10K}"
    );
    let test = report["row_scores"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["split"] == "test")
        .expect("a test split");
    assert_eq!(test["rows"], 23_801);
    let f1 = test["f1"].as_f64().unwrap();
    assert!(f1 >= MIN_F1, "test-split F1 {f1} < {MIN_F1}");
    let far = test["far_pct"].as_f64().unwrap();
    assert!(
        far <= MAX_TEST_FAR_PERCENT,
        "test-split FAR {far} % > {MAX_TEST_FAR_PERCENT} %"
    );
    let normal = report["row_scores"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["split"] == "normal")
        .expect("the anomaly-free run");
    let far = normal["far_pct"].as_f64().unwrap();
    assert!(
        far <= MAX_NORMAL_FAR_PERCENT,
        "anomaly-free FAR {far} % > {MAX_NORMAL_FAR_PERCENT} %"
    );
}

#[test]
fn csv_series_are_scored_and_a_bad_row_is_bad_usage() {
    let dir = tempfile::tempdir().unwrap();
    // 2 h of a quiet 1/min series, then a jump far outside it for 10 minutes (labelled).
    let mut text = String::from("timestamp,value,label\n");
    let t0 = chrono::DateTime::parse_from_rfc3339("2026-11-26T00:00:00Z").unwrap();
    for i in 0..130 {
        let t = (t0 + chrono::Duration::minutes(i)).to_rfc3339();
        let (v, l) = if i >= 120 {
            (500.0, 1)
        } else {
            (10.0 + (i % 3) as f64 * 0.1, 0)
        };
        text += &format!("{t},{v},{l}\n");
    }
    std::fs::write(dir.path().join("pump.csv"), text).unwrap();
    let run = |args: &[&std::ffi::OsStr]| {
        bin()
            .args([
                "backtest", "--format", "csv", "--kind", "pressure", "--config",
            ])
            .arg(root().join("config/default.toml"))
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&[dir.path().as_os_str(), "--json".as_ref()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["files"], 1);
    assert_eq!(report["readings"], 130);
    assert_eq!(report["overall"]["anomalies"], 1);
    assert_eq!(report["groups"][0]["name"], "pressure");
    println!(
        "{}",
        serde_json::to_string_pretty(&report["overall"]).unwrap()
    );

    let bad = dir.path().join("bad.csv");
    std::fs::write(
        &bad,
        "timestamp,value,label\n2026-11-26 00:00:00,1,0\n2026-11-26 00:01:00,one,0\n",
    )
    .unwrap();
    let out = run(&[bad.as_os_str()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.csv: line 3: value"), "{err}");
}
