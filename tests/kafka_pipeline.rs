//! Whole-pipeline behaviour against the real local Kafka broker (./scripts/test starts it).
//! Each test has its own topics and consumer group.

mod common;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// kcat (Debian's, a Kafka client nobody here wrote) produces the readings and reads the alert.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gas_spike_yields_a_routed_red_alert_via_kcat() {
    let env = TestEnv::new("gas").await;
    let cfg = env.config("");
    let mut child = env.spawn(&cfg);
    wait_ready(&env, Duration::from_secs(30)).await;

    let mut lines = String::new();
    for i in 0..30 {
        lines.push_str(&format!(
            "S-330503-0042-GAS1\t{}\n",
            reading(
                "S-330503-0042-GAS1",
                "gas_lel",
                i * 10,
                3.0 + (i % 3) as f64 * 0.1
            )
        ));
    }
    for i in 30..34 {
        lines.push_str(&format!(
            "S-330503-0042-GAS1\t{}\n",
            reading("S-330503-0042-GAS1", "gas_lel", i * 10, 31.5)
        ));
    }
    let mut kcat = Command::new("kcat")
        .args(["-b", &brokers(), "-P", "-t", &env.sensors, "-K", "\t"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("kcat installed (apt-get install kcat)");
    {
        use std::io::Write;
        kcat.stdin
            .take()
            .unwrap()
            .write_all(lines.as_bytes())
            .unwrap();
    }
    assert!(kcat.wait().unwrap().success());

    // Read the alerts back with kcat too.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut alerts: Vec<serde_json::Value> = Vec::new();
    while std::time::Instant::now() < deadline {
        let out = Command::new("kcat")
            .args([
                "-b",
                &brokers(),
                "-C",
                "-t",
                &env.alerts,
                "-e",
                "-q",
                "-f",
                "%k\t%s\n",
            ])
            .output()
            .unwrap();
        alerts = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let (k, v) = l.split_once('\t')?;
                let j: serde_json::Value = serde_json::from_str(v).ok()?;
                assert_eq!(j["alert_id"].as_str(), Some(k), "key = alert_id");
                Some(j)
            })
            .collect();
        if alerts.iter().any(|a| a["detector"] == "threshold") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    sigterm(&child);
    let status =
        wait_exit(&mut child, Duration::from_secs(10)).expect("exits within 10 s of SIGTERM");
    assert!(status.success(), "{status:?}");

    let a = alerts
        .iter()
        .find(|a| a["detector"] == "threshold")
        .unwrap_or_else(|| panic!("no threshold alert in {alerts:?}"));
    assert_eq!(a["status"], "firing");
    assert_eq!(a["level"], "red");
    assert_eq!(a["stream"], "sensors");
    assert_eq!(a["subject"]["sensor_id"], "S-330503-0042-GAS1");
    assert_eq!(a["subject"]["site_id"], "SITE-330503-0042");
    assert_eq!(
        a["route"],
        serde_json::json!(["330503101", "330503", "330500"])
    );
    assert_eq!(a["evidence"]["observed"], 31.5);
    assert_eq!(a["evidence"]["threshold"], 25.0);
    let first =
        chrono::DateTime::parse_from_rfc3339(a["first_event_ts"].as_str().unwrap()).unwrap();
    assert_eq!(
        a["alert_id"],
        format!("sensors:threshold:S-330503-0042-GAS1:{}", first.timestamp())
    );
    for f in ["title", "detected_at", "event_ids", "evidence"] {
        assert!(!a[f].is_null(), "{f} missing");
    }
    // ewma_z saw the same jump against its 30-reading baseline.
    assert!(
        alerts
            .iter()
            .any(|a| a["detector"] == "ewma_z" && a["status"] == "firing"),
        "{alerts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_invalid_case_is_dead_lettered_with_its_reason() {
    let env = TestEnv::new("dlq").await;
    let cfg = env.config("");
    let mut child = env.spawn(&cfg);
    wait_ready(&env, Duration::from_secs(30)).await;
    let p = producer();

    let good = reading("S-1", "gas_lel", 0, 3.0);
    let with = |field: &str, v: serde_json::Value| {
        let mut j: serde_json::Value = serde_json::from_str(&good).unwrap();
        if v.is_null() {
            j.as_object_mut().unwrap().remove(field);
        } else {
            j[field] = v;
        }
        j.to_string().into_bytes()
    };
    // (payload, text the x-error header must contain)
    let bad: Vec<(Vec<u8>, &str)> = vec![
        (vec![0xff, 0xfe, 0x00], "not UTF-8"),
        (b"{\"sensor_id\": ".to_vec(), "not JSON"),
        (with("value", serde_json::Value::Null), "`value`"),
        (
            with("value", serde_json::json!("NaN")),
            "`value` must be a finite number",
        ),
        (with("ts", serde_json::json!("yesterday")), "`ts`"),
        (with("region", serde_json::json!("999999001")), "`region`"),
        (with("sensor_id", serde_json::Value::Null), "`sensor_id`"),
    ];
    for (i, (payload, _)) in bad.iter().enumerate() {
        produce(
            &p,
            &env.sensors,
            Some(format!("bad-{i}").as_bytes()),
            payload,
        )
        .await;
    }
    for i in 0..5 {
        produce(
            &p,
            &env.sensors,
            Some(b"S-1"),
            reading("S-1", "gas_lel", i * 10, 3.0).as_bytes(),
        )
        .await;
    }
    produce(&p, &env.fraud, Some(b"F"), br#"{"id":"F1","ts":"2026-11-26T08:15:00+08:00","region":"330521102","channel":"phone","scheme":"x"}"#).await;
    produce(
        &p,
        &env.incidents,
        Some(b"I"),
        br#"{"id":"I1","ts":"2026-11-26T08:15:00+08:00","region":"330502001"}"#,
    )
    .await;

    let dead = read_until(&env.dlq, Duration::from_secs(30), |g| {
        g.len() >= bad.len() + 2
    })
    .await;
    assert_eq!(dead.len(), bad.len() + 2, "{dead:?}");
    for (i, (payload, reason)) in bad.iter().enumerate() {
        let key = format!("bad-{i}");
        let d = dead
            .iter()
            .find(|d| d.key.as_deref() == Some(key.as_bytes()))
            .unwrap_or_else(|| panic!("{key} not dead-lettered"));
        assert_eq!(&d.payload, payload, "original bytes kept");
        assert!(
            d.headers["x-error"].contains(reason),
            "{key}: {:?}",
            d.headers
        );
        assert_eq!(d.headers["x-source-topic"], env.sensors);
        assert!(d.headers["x-source-partition"].parse::<i32>().unwrap() >= 0);
        assert!(d.headers["x-source-offset"].parse::<i64>().unwrap() >= 0);
    }
    assert!(dead
        .iter()
        .any(|d| d.headers["x-error"].contains("suspect_phone")));
    assert!(dead
        .iter()
        .any(|d| d.headers["x-error"].contains("`category`")));

    // consumed = valid + invalid, in the metrics.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut m = String::new();
    while std::time::Instant::now() < deadline {
        m = env.metrics();
        if metric_sum(&m, "riskstream_events_consumed_total", &[]) >= 14.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let consumed = metric_sum(&m, "riskstream_events_consumed_total", &[]);
    let invalid = metric_sum(&m, "riskstream_events_invalid_total", &[]);
    assert_eq!(consumed, 14.0, "{m}");
    assert_eq!(invalid, 9.0, "{m}");
    assert_eq!(
        metric_sum(
            &m,
            "riskstream_events_invalid_total",
            &["reason=\"non_finite\""]
        ),
        1.0
    );
    assert_eq!(
        metric_sum(
            &m,
            "riskstream_events_invalid_total",
            &["reason=\"unknown_region\""]
        ),
        1.0
    );
    sigterm(&child);
    assert!(wait_exit(&mut child, Duration::from_secs(10))
        .expect("exits")
        .success());
}

/// Kill -9 in the middle of a stream, restart: every expected alert is on the topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_loses_no_alert() {
    let env = TestEnv::new("kill").await;
    let cfg = env.config("");
    let p = producer();
    // 40 sensors; each has 5 normal readings, 3 over the alarm limit, 5 normal again.
    let mut expected = BTreeSet::new();
    for round in 0..13i64 {
        for s in 0..40 {
            let id = format!("S-330503-{s:04}-GAS1");
            let secs = s * 1000 + round * 10;
            let v = if (5..8).contains(&round) { 40.0 } else { 3.0 };
            if round == 5 {
                let t = chrono::DateTime::parse_from_rfc3339("2026-11-26T08:00:00+08:00").unwrap()
                    + chrono::Duration::seconds(secs);
                expected.insert(format!("sensors:threshold:{id}:{}", t.timestamp()));
            }
            produce(
                &p,
                &env.sensors,
                Some(id.as_bytes()),
                reading(&id, "gas_lel", secs, v).as_bytes(),
            )
            .await;
        }
    }
    let mut child = env.spawn(&cfg);
    // Kill as soon as some (not all) alerts are out.
    let first = read_until(&env.alerts, Duration::from_secs(30), |g| g.len() >= 5).await;
    assert!(!first.is_empty(), "no alert before the kill");
    sigkill(&mut child);
    let mut child = env.spawn(&cfg);
    let got = read_until(&env.alerts, Duration::from_secs(40), |g| {
        let ids: BTreeSet<String> = g
            .iter()
            .map(|x| x.json())
            .filter(|j| j["detector"] == "threshold" && j["status"] == "firing")
            .map(|j| j["alert_id"].as_str().unwrap().to_string())
            .collect();
        expected.is_subset(&ids)
    })
    .await;
    sigterm(&child);
    assert!(wait_exit(&mut child, Duration::from_secs(10))
        .expect("exits")
        .success());
    let ids: BTreeSet<String> = got
        .iter()
        .map(|x| x.json())
        .filter(|j| j["detector"] == "threshold" && j["status"] == "firing")
        .map(|j| j["alert_id"].as_str().unwrap().to_string())
        .collect();
    let missing: Vec<_> = expected.difference(&ids).collect();
    let firing_msgs = got
        .iter()
        .filter(|g| g.json()["detector"] == "threshold" && g.json()["status"] == "firing")
        .count();
    println!(
        "sigkill test: expected {} episodes, found {} (messages {}, duplicates {}), missing {}",
        expected.len(),
        ids.len(),
        firing_msgs,
        firing_msgs.saturating_sub(ids.len()),
        missing.len()
    );
    assert!(missing.is_empty(), "lost alerts: {missing:?}");
}

/// SIGTERM commits: a restart of the same group re-reads nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_commits() {
    let env = TestEnv::new("term").await;
    let cfg = env.config("");
    let p = producer();
    for i in 0..50 {
        produce(
            &p,
            &env.sensors,
            Some(b"S-9"),
            reading("S-9", "gas_lel", i * 10, 3.0).as_bytes(),
        )
        .await;
    }
    let mut child = env.spawn(&cfg);
    wait_ready(&env, Duration::from_secs(30)).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < deadline
        && metric_sum(&env.metrics(), "riskstream_events_consumed_total", &[]) < 50.0
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    sigterm(&child);
    let st = wait_exit(&mut child, Duration::from_secs(10)).expect("exits within 10 s");
    assert!(st.success());
    let mut child = env.spawn(&cfg);
    wait_ready(&env, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let again = metric_sum(&env.metrics(), "riskstream_events_consumed_total", &[]);
    sigterm(&child);
    assert!(wait_exit(&mut child, Duration::from_secs(10))
        .expect("exits")
        .success());
    assert_eq!(again, 0.0, "offsets were committed on SIGTERM");
}

/// /metrics passes `promtool check metrics` (Debian's prometheus package) after real traffic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pass_promtool() {
    let env = TestEnv::new("prom").await;
    let cfg = env.config("");
    let mut child = env.spawn(&cfg);
    wait_ready(&env, Duration::from_secs(30)).await;
    let p = producer();
    for i in 0..30 {
        produce(
            &p,
            &env.sensors,
            Some(b"S-P"),
            reading("S-P", "gas_lel", i * 10, if i > 25 { 30.0 } else { 3.0 }).as_bytes(),
        )
        .await;
    }
    produce(&p, &env.sensors, Some(b"x"), b"garbage").await;
    read_until(&env.alerts, Duration::from_secs(20), |g| !g.is_empty()).await;
    tokio::time::sleep(Duration::from_secs(2)).await; // one statistics interval: lag gauges
    let text = env.metrics();
    let body = text
        .split("\r\n\r\n")
        .nth(1)
        .expect("http body")
        .to_string();
    sigterm(&child);
    assert!(wait_exit(&mut child, Duration::from_secs(10))
        .expect("exits")
        .success());
    for name in [
        "riskstream_events_consumed_total",
        "riskstream_events_invalid_total",
        "riskstream_alerts_total",
        "riskstream_event_to_alert_seconds_bucket",
        "riskstream_consumer_lag{",
    ] {
        assert!(body.contains(name), "{name} missing:\n{body}");
    }
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool installed (apt-get install prometheus)");
    {
        use std::io::Write;
        promtool
            .stdin
            .take()
            .unwrap()
            .write_all(body.as_bytes())
            .unwrap();
    }
    let out = promtool.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!(
        "promtool check metrics: exit {:?}, output: {said:?}",
        out.status.code()
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool: {said}"
    );
}

/// `per_center_topics`: each command center on the route gets the alert on its own topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_fan_out_to_one_topic_per_center_on_the_route() {
    let env = TestEnv::new("fan").await;
    let prefix = format!("{}.center.", unique("fan"));
    let cfg = env.config(&format!(
        "per_center_topics = true\ncenter_topic_prefix = \"{prefix}\"\n"
    ));
    let mut child = env.spawn(&cfg);
    wait_ready(&env, Duration::from_secs(30)).await;
    let p = producer();
    for i in 0..3 {
        produce(
            &p,
            &env.sensors,
            Some(b"S-F"),
            reading("S-F", "gas_lel", i * 10, 3.0).as_bytes(),
        )
        .await;
    }
    // Warning level (yellow): township + county, not the city.
    produce(
        &p,
        &env.sensors,
        Some(b"S-F"),
        reading("S-F", "gas_lel", 30, 12.0).as_bytes(),
    )
    .await;
    let town = read_until(
        &format!("{prefix}330503101"),
        Duration::from_secs(30),
        |g| !g.is_empty(),
    )
    .await;
    let county = read_until(&format!("{prefix}330503"), Duration::from_secs(10), |g| {
        !g.is_empty()
    })
    .await;
    let main = read_until(&env.alerts, Duration::from_secs(10), |g| !g.is_empty()).await;
    sigterm(&child);
    assert!(wait_exit(&mut child, Duration::from_secs(10))
        .expect("exits")
        .success());
    assert_eq!(town.len(), 1, "township topic");
    assert_eq!(county.len(), 1, "county topic");
    assert_eq!(town[0].payload, main[0].payload);
    let a = town[0].json();
    assert_eq!(a["level"], "yellow");
    assert_eq!(a["route"], serde_json::json!(["330503101", "330503"]));
    // The city is not on a yellow alert's route: its topic was never written.
    let city = read_until(&format!("{prefix}330500"), Duration::from_secs(3), |g| {
        !g.is_empty()
    })
    .await;
    assert!(city.is_empty());
}

/// Issue 24: one reading dated 2099 (a gateway whose clock reset) on a single-partition
/// topic, the only active partition. It is dead-lettered as `ts_in_future`; the
/// watermark stays with the wall clock, nothing after it is late, no `offline` fires,
/// and the leak after it is red.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reading_from_2099_is_dead_lettered_and_moves_no_watermark() {
    let mut env = TestEnv::new("future").await;
    env.sensors = unique("future-sen1");
    create_topics(&[&env.sensors], 1).await;
    let cfg = env.config("");
    let mut child = env.spawn(&cfg);
    wait_ready(&env, Duration::from_secs(30)).await;
    let p = producer();
    let start = chrono::Utc::now() - chrono::Duration::minutes(20);
    let at = |i: i64| {
        (start + chrono::Duration::seconds(i * 30))
            .fixed_offset()
            .to_rfc3339()
    };
    let gas = |i: i64, v: f64| {
        serde_json::json!({"sensor_id": "S-330503-0042-GAS1", "site_id": "SITE-330503-0042",
            "region": "330503101", "kind": "gas_lel", "ts": at(i), "value": v})
        .to_string()
    };
    for i in 0..20 {
        produce(
            &p,
            &env.sensors,
            Some(b"GAS1"),
            gas(i, 2.0 + 0.1 * (i % 3) as f64).as_bytes(),
        )
        .await;
    }
    let future =
        serde_json::json!({"sensor_id": "S-330503-0042-GAS2", "site_id": "SITE-330503-0042",
        "region": "330503101", "kind": "gas_lel", "ts": "2099-01-01T00:00:00+08:00", "value": 2.0})
        .to_string();
    produce(&p, &env.sensors, Some(b"GAS2"), future.as_bytes()).await;
    for i in 20..36 {
        let v = if i >= 32 {
            30.0
        } else {
            2.0 + 0.1 * (i % 3) as f64
        };
        produce(&p, &env.sensors, Some(b"GAS1"), gas(i, v).as_bytes()).await;
    }

    let dead = read_until(&env.dlq, Duration::from_secs(30), |g| !g.is_empty()).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].payload, future.as_bytes(), "original bytes kept");
    assert!(
        dead[0].headers["x-error"].contains("ahead of the wall clock"),
        "{:?}",
        dead[0].headers
    );
    let alerts = read_until(&env.alerts, Duration::from_secs(30), |g| {
        g.iter()
            .any(|a| a.json()["detector"] == "threshold" && a.json()["level"] == "red")
    })
    .await;
    assert!(
        alerts
            .iter()
            .any(|a| a.json()["detector"] == "threshold" && a.json()["level"] == "red"),
        "the leak after the bad clock is red: {alerts:?}"
    );
    let m = env.metrics();
    assert_eq!(
        metric_sum(
            &m,
            "riskstream_events_invalid_total",
            &["reason=\"ts_in_future\""]
        ),
        1.0,
        "{m}"
    );
    assert_eq!(
        metric_sum(&m, "riskstream_events_late_total", &[]),
        0.0,
        "{m}"
    );
    let wm = metric_sum(&m, "riskstream_watermark_seconds", &["stream=\"sensors\""]);
    let now = chrono::Utc::now().timestamp() as f64;
    assert!(wm > 0.0 && wm <= now + 300.0, "watermark {wm} vs now {now}");
    sigterm(&child);
    assert!(wait_exit(&mut child, Duration::from_secs(10))
        .expect("exits")
        .success());
    let all = read_until(&env.alerts, Duration::from_secs(5), |_| false).await;
    assert!(
        all.iter().all(|a| a.json()["detector"] != "offline"),
        "no offline for the healthy sensor: {all:?}"
    );
}
