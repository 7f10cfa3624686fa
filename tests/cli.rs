//! The CLI without a broker: check-config, replay, score, simulate.

use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_riskstream"))
}

fn root() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn check_config_lists_every_problem_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.toml");
    std::fs::write(
        &p,
        format!(
            "[regions]\nfile = \"{}\"\n[processing]\nmax_in_flight = 0\n[[detectors.sensors]]\ntype = \"ewma_z\"\nz_threshold = 0.0\n[[detectors.sensors]]\ntype = \"threshold\"\n[[detectors.sensors]]\ntype = \"ewma_z\"\nmin_std = -1.0\n[sinks.x]\ntype = \"pager\"\n",
            root().join("config/regions.toml").display()
        ),
    )
    .unwrap();
    let out = bin().args(["check-config"]).arg(&p).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for want in [
        "processing.max_in_flight: must be >= 1",
        "detectors.sensors[0].z_threshold: must be > 0",
        "detectors.sensors[2].min_std: must be > 0",
        "sinks.x",
    ] {
        assert!(err.contains(want), "missing {want}:\n{err}");
    }
    let ok = bin()
        .args(["check-config"])
        .arg(root().join("config/default.toml"))
        .output()
        .unwrap();
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
}

/// check-config lists the librdkafka properties but never a secret's value: not when the
/// config is valid, not in a problem about it, not in a TOML syntax error quoting its line.
#[test]
fn check_config_never_prints_secret_values() {
    let dir = tempfile::tempdir().unwrap();
    let regions = root().join("config/regions.toml");
    let secrets = [
        ("sasl.password", "pw-sasl-1"),
        ("ssl.key.password", "pw-key-2"),
        ("ssl.keystore.password", "pw-keystore-3"),
        ("sasl.oauthbearer.client.secret", "pw-oauth-4"),
        ("sasl.oauthbearer.config", "principal=x pw-oauthcfg-5"),
    ];
    let mut props = String::from(
        "\"security.protocol\" = \"SASL_SSL\"\n\"sasl.mechanisms\" = \"SCRAM-SHA-512\"\n\"sasl.username\" = \"riskstream\"\n",
    );
    for (k, v) in secrets {
        props.push_str(&format!("{k:?} = {v:?}\n"));
    }
    let check = |name: &str, text: String| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        let out = bin().args(["check-config"]).arg(&p).output().unwrap();
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        for (_, v) in secrets {
            assert!(!all.contains(v), "{name}: `{v}` printed:\n{all}");
        }
        (out.status.code(), all)
    };
    let base = format!("[regions]\nfile = {:?}\n", regions.display().to_string());

    let (code, all) = check("ok.toml", format!("{base}[kafka.properties]\n{props}"));
    assert_eq!(code, Some(0), "{all}");
    for want in [
        "security.protocol=SASL_SSL",
        "sasl.username=riskstream",
        "sasl.password=<redacted>",
        "sasl.oauthbearer.client.secret=<redacted>",
    ] {
        assert!(all.contains(want), "missing {want}:\n{all}");
    }

    // A problem elsewhere: the file is still reported, the secrets still not printed.
    let (code, all) = check(
        "bad.toml",
        format!("{base}[processing]\nmax_in_flight = 0\n[kafka.properties]\n{props}"),
    );
    assert_eq!(code, Some(2), "{all}");
    assert!(all.contains("max_in_flight"), "{all}");

    // A secret of the wrong type: serde would quote the value.
    let (code, all) = check(
        "typed.toml",
        format!("{base}[kafka.properties]\n\"sasl.password\" = [\"pw-sasl-1\"]\n"),
    );
    assert_eq!(code, Some(2), "{all}");
    assert!(all.contains("kafka.properties.sasl.password"), "{all}");

    // A TOML syntax error on the secret's line: the parser quotes the line.
    let (code, all) = check(
        "syntax.toml",
        format!("{base}[kafka.properties]\n\"sasl.password\" = \"pw-sasl-1\n"),
    );
    assert_eq!(code, Some(2), "{all}");
    assert!(all.contains("not valid TOML"), "{all}");
}

#[test]
fn simulate_then_replay_finds_the_injected_hazards() {
    let dir = tempfile::tempdir().unwrap();
    let st = bin()
        .current_dir(root())
        .args([
            "simulate",
            "--hours",
            "4",
            "--seed",
            "3",
            "--sites",
            "10",
            "--start",
            "2026-11-26T00:00:00+08:00",
            "--out",
        ])
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(st.success());
    let out = bin()
        .args(["replay", "--config"])
        .arg(root().join("config/default.toml"))
        .arg(dir.path().join("sensor-readings.ndjson"))
        .arg(dir.path().join("incidents.ndjson"))
        .arg(dir.path().join("fraud-reports.ndjson"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Alert lines lead with `alert_id`, incident lines with `incident_id`.
    let (alerts, incidents): (Vec<serde_json::Value>, Vec<serde_json::Value>) =
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .partition(|v| v.get("alert_id").is_some());
    assert!(!incidents.is_empty(), "replay prints incident messages");
    // Every alert names an incident replay printed; a resolved incident lists every
    // alert that names it (a member that joined without moving the level shows from the
    // incident's next message on, so an incident still open may not list it yet).
    for a in &alerts {
        let id = a["incident_id"].as_str().expect("alerts carry incident_id");
        let of: Vec<&serde_json::Value> = incidents
            .iter()
            .filter(|i| i["incident_id"] == id)
            .collect();
        assert!(
            !of.is_empty(),
            "{} names {id}, never printed",
            a["alert_id"]
        );
        if let Some(done) = of.iter().find(|i| i["status"] == "resolved") {
            assert!(
                done["members"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|m| m["alert_id"] == a["alert_id"]),
                "{} is not a member of resolved {id}",
                a["alert_id"]
            );
        }
    }
    let labels: Vec<serde_json::Value> = std::fs::read_to_string(dir.path().join("labels.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let leak = labels
        .iter()
        .find(|l| l["kind"] == "gas_leak_ramp")
        .unwrap();
    assert!(
        alerts.iter().any(|a| a["detector"] == "threshold"
            && a["level"] == "red"
            && a["subject"]["sensor_id"] == leak["subject"]),
        "gas leak not alerted red"
    );
    let surge = labels
        .iter()
        .find(|l| l["kind"] == "incident_surge")
        .unwrap();
    assert!(
        alerts
            .iter()
            .any(|a| a["detector"] == "rate_spike" && a["subject"]["region"] == surge["subject"]),
        "incident surge not alerted"
    );
    assert!(
        alerts.iter().any(|a| a["detector"] == "entity_burst"
            && a["subject"]["suspect_phone"] == "+8613800000000"),
        "fraud burst not alerted"
    );
    // Every episode that opened in the replay resolved or is still open at the end: ids are stable.
    for a in alerts.iter().filter(|a| a["status"] == "resolved") {
        assert!(alerts
            .iter()
            .any(|b| b["alert_id"] == a["alert_id"] && b["status"] == "firing"));
    }
}

#[test]
fn score_prints_one_line_per_event_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("sensor-x.ndjson");
    let mut text = String::new();
    for i in 0..40 {
        let v = if i == 39 {
            50.0
        } else {
            3.0 + (i % 2) as f64 * 0.1
        };
        text.push_str(&format!(
            "{{\"sensor_id\":\"S1\",\"site_id\":\"X\",\"region\":\"330502001\",\"kind\":\"gas_lel\",\"ts\":\"2026-11-26T08:{:02}:{:02}+08:00\",\"value\":{v}}}\n",
            i / 6,
            (i % 6) * 10
        ));
    }
    text.push_str("not json\n");
    std::fs::write(&f, text).unwrap();
    let out = bin()
        .args(["score", "--config"])
        .arg(root().join("config/default.toml"))
        .arg(&f)
        .output()
        .unwrap();
    assert!(out.status.success());
    let s = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = s.lines().collect();
    assert_eq!(lines[0], "ts,key,score");
    assert_eq!(
        lines.len(),
        41,
        "header + 40 events; the invalid line is skipped"
    );
    let last: f64 = lines[40].rsplit(',').next().unwrap().parse().unwrap();
    let calm: f64 = lines[30].rsplit(',').next().unwrap().parse().unwrap();
    assert!(last > 0.9 && calm < 0.5, "last {last}, calm {calm}");
}

/// A point file with bad lines: check-config lists each (file, line, field) and exits 2;
/// fixed, it counts the points.
#[test]
fn check_config_lists_every_bad_point_line() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "[regions]\nfile = \"{}\"\n[registry]\nfile = \"points.ndjson\"\n",
            root().join("config/regions.toml").display()
        ),
    )
    .unwrap();
    let points = dir.path().join("points.ndjson");
    std::fs::write(
        &points,
        concat!(
            r#"{"sensor_id":"S-1","limits":{"h":150.0,"hh":160.0}}"#,
            "\n",
            r#"{"sensor_id":"S-2","limits":{"l":0.2,"ll":0.3}}"#,
            "\n",
            r#"{"sensor_id":"S-3","levels":{"hh":"purple"}}"#,
            "\n"
        ),
    )
    .unwrap();
    let out = bin().args(["check-config"]).arg(&cfg).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for want in [
        "points.ndjson:2: limits.ll: must be < l (0.2)",
        "points.ndjson:3: levels.hh: unknown variant `purple`",
    ] {
        assert!(err.contains(want), "missing {want}:\n{err}");
    }
    assert!(!err.contains("points.ndjson:1:"), "{err}");
    std::fs::write(
        &points,
        r#"{"sensor_id":"S-1","limits":{"h":150.0,"hh":160.0}}"#,
    )
    .unwrap();
    let ok = bin().args(["check-config"]).arg(&cfg).output().unwrap();
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(
        String::from_utf8_lossy(&ok.stdout).contains("1 monitoring points"),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
}
