//! The registry topic against the real local Kafka: points present before the start are
//! in force for the first reading; a limit changed on the topic, and a tombstone, apply
//! to the next reading without a restart (issue #25).

mod common;

use std::time::{Duration, Instant};

use common::*;

const T1: &str = "S-330503-0042-TEMP1";
const T2: &str = "S-330503-0042-TEMP2";

fn point(id: &str, h: f64, hh: f64) -> String {
    serde_json::json!({"sensor_id": id, "name": "R-2 reactor outlet temperature",
        "site_id": "SITE-330503-0042", "kind": "temperature",
        "limits": {"h": h, "hh": hh}, "site_name": "Jiahe Chemical", "hazard_grade": 2})
    .to_string()
}

/// The threshold alert messages of `sensor` once `done` holds (or 20 s pass).
async fn threshold_alerts(
    env: &TestEnv,
    sensor: &str,
    done: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = read_until(&env.alerts, Duration::from_secs(2), |_| false).await;
        let mine: Vec<serde_json::Value> = got
            .iter()
            .map(Got::json)
            .filter(|a| a["detector"] == "threshold" && a["subject"]["sensor_id"] == sensor)
            .collect();
        if done(&mine) || Instant::now() > deadline {
            return mine;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_change_on_the_topic_without_a_restart() {
    let env = TestEnv::new("registry").await;
    let topic = env.registry.clone();
    create_topics(&[&topic], 1).await;
    let p = producer();
    produce(
        &p,
        &topic,
        Some(T1.as_bytes()),
        point(T1, 150.0, 160.0).as_bytes(),
    )
    .await;
    produce(
        &p,
        &topic,
        Some(T2.as_bytes()),
        point(T2, 150.0, 160.0).as_bytes(),
    )
    .await;
    let cfg = env.config("[state]\nchangelog = false\n");
    let mut child = env.spawn(&cfg);
    wait_ready(&env, Duration::from_secs(60)).await;

    // Read on start: 155 is past the point's h (150), under the kind's alarm (120) it
    // would be orange.
    let send = |id: &'static str, secs: i64, v: f64| {
        let p = p.clone();
        let sensors = env.sensors.clone();
        async move {
            let r = reading(id, "temperature", secs, v);
            produce(&p, &sensors, Some(id.as_bytes()), r.as_bytes()).await;
        }
    };
    send(T1, 0, 155.0).await;
    let got = threshold_alerts(&env, T1, |a| !a.is_empty()).await;
    let first = got.first().unwrap_or_else(|| panic!("no threshold alert"));
    assert_eq!(first["level"], "yellow", "{first}");
    assert_eq!(
        first["title"],
        "R-2 reactor outlet temperature above high limit at Jiahe Chemical"
    );
    assert_eq!(first["subject"]["hazard_grade"], 2);
    assert_eq!(first["evidence"]["threshold"], 150.0);

    // The limit changes on the topic: the next reading (145, under the old h) is judged
    // with the new hh (140), within a second and without a restart.
    produce(
        &p,
        &topic,
        Some(T1.as_bytes()),
        point(T1, 130.0, 140.0).as_bytes(),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    send(T1, 10, 145.0).await;
    let got = threshold_alerts(&env, T1, |a| a.iter().any(|a| a["level"] == "orange")).await;
    let last = got.last().expect("alerts");
    assert_eq!(last["level"], "orange", "{got:?}");
    assert_eq!(last["status"], "firing", "{got:?}");
    assert_eq!(last["evidence"]["threshold"], 140.0, "{got:?}");

    // A bad edit is rejected (counted); T1 keeps its last good version.
    produce(
        &p,
        &topic,
        Some(T1.as_bytes()),
        point(T1, 130.0, 120.0).as_bytes(),
    )
    .await;

    // A tombstone removes T2's point: 125 is then judged with the kind's alarm (120).
    let mut rec: rdkafka::producer::FutureRecord<'_, [u8], [u8]> =
        rdkafka::producer::FutureRecord::to(&topic);
    rec = rec.key(T2.as_bytes());
    p.send(rec, Duration::from_secs(10))
        .await
        .expect("tombstone");
    tokio::time::sleep(Duration::from_secs(1)).await;
    send(T2, 20, 125.0).await;
    let got = threshold_alerts(&env, T2, |a| !a.is_empty()).await;
    let a = got.first().unwrap_or_else(|| panic!("no alert for {T2}"));
    assert_eq!(a["level"], "orange", "{a}");
    assert_eq!(a["evidence"]["threshold"], 120.0, "{a}");
    assert!(a["subject"].get("hazard_grade").is_none(), "{a}");

    let m = env.metrics();
    assert_eq!(metric(&m, "riskstream_registry_points"), 1.0, "{m}");
    for (result, n) in [("upserted", 3.0), ("removed", 1.0), ("rejected", 1.0)] {
        let series = format!("riskstream_registry_records_total{{result=\"{result}\"}}");
        assert_eq!(metric(&m, &series), n, "{series}");
    }

    sigterm(&child);
    let status =
        wait_exit(&mut child, Duration::from_secs(10)).expect("exits within 10 s of SIGTERM");
    assert!(status.success(), "{status:?}");
}
