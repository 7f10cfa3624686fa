//! Shelving against the real local Kafka and the real binary (issue #25 item 3): a
//! shelved point raises nothing for its shelving time and alarms again after it; a
//! restart in between keeps the shelving (replayed from the actions topic); a county's
//! token may not shelve a gas point (403), the city's may.

mod common;

use std::time::{Duration, Instant};

use chrono::{SecondsFormat, Utc};
use common::*;

const TANK: &str = "S-330503-0042-TANK1";
const GAS: &str = "S-330503-0042-GAS1";
const CITY: &str = "test-city-330500";
const COUNTY: &str = "test-county-330503";

/// A reading taken now (event time = wall time, as live input is).
fn now_reading(sensor: &str, kind: &str, value: f64) -> String {
    serde_json::json!({"sensor_id": sensor, "site_id": "SITE-330503-0042", "region": "330503101",
        "kind": kind, "ts": Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true), "value": value})
    .to_string()
}

/// A minimal HTTP/1.0 request with a bearer token and a JSON body: (status, body).
fn http(addr: &str, method: &str, path: &str, token: &str, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("console reachable");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).unwrap();
    let status = buf[9..12].parse().unwrap();
    let body = buf.split("\r\n\r\n").nth(1).unwrap_or_default().to_string();
    (status, body)
}

/// Threshold alert messages of `sensor` on the alerts topic so far.
async fn threshold_of(env: &TestEnv, sensor: &str) -> Vec<serde_json::Value> {
    read_until(&env.alerts, Duration::from_secs(2), |_| false)
        .await
        .iter()
        .map(Got::json)
        .filter(|a| a["detector"] == "threshold" && a["subject"]["sensor_id"] == sensor)
        .collect()
}

/// Produces a tank reading above its alarm limit every 500 ms until the running instance
/// counts a silenced signal (so it has judged them) or `timeout` passes.
async fn until_silenced(env: &TestEnv, timeout: Duration) -> f64 {
    let p = producer();
    let deadline = Instant::now() + timeout;
    loop {
        produce(
            &p,
            &env.sensors,
            Some(TANK.as_bytes()),
            now_reading(TANK, "tank_level", 99.0).as_bytes(),
        )
        .await;
        let n = metric_sum(&env.metrics(), "riskstream_alerts_shelved_total", &[]);
        if n > 0.0 || Instant::now() > deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shelved_point_stays_silent_across_a_restart_and_alarms_after_expiry() {
    let env = TestEnv::new("shelve").await;
    let console = free_addr();
    let cfg = env.config(&format!(
        r#"
[console]
enabled = true
addr = "{console}"
actions_topic = "{actions}"
max_shelve = "1h"
[[console.tokens]]
token = "{CITY}"
center = "330500"
[[console.tokens]]
token = "{COUNTY}"
center = "330503"
"#,
        actions = unique("shelve-actions"),
    ));
    let mut rs = env.spawn(&cfg);
    wait_ready(&env, Duration::from_secs(60)).await;
    let p = producer();
    // A gas alarm shows the county the gas point; it still may not shelve it.
    produce(
        &p,
        &env.sensors,
        Some(GAS.as_bytes()),
        now_reading(GAS, "gas_lel", 40.0).as_bytes(),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while threshold_of(&env, GAS).await.is_empty() && Instant::now() < deadline {}
    let gas = format!(r#"{{"point_id":"{GAS}","reason":"calibration","until":"30m"}}"#);
    let (status, body) = http(&console, "POST", "/api/shelve", COUNTY, &gas);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("city's token"), "{body}");
    let (status, body) = http(
        &console,
        "POST",
        "/api/shelve",
        COUNTY,
        r#"{"point_id":"X","until":"1h"}"#,
    );
    assert_eq!(status, 400, "a reason is required: {body}");
    // The city shelves the tank point for 45 s.
    let until = Utc::now() + chrono::Duration::seconds(45);
    let tank = format!(
        r#"{{"point_id":"{TANK}","kind":"out_of_service","reason":"level gauge swap","until":"{}"}}"#,
        until.to_rfc3339()
    );
    let (status, body) = http(&console, "POST", "/api/shelve", CITY, &tank);
    assert_eq!(status, 202, "{body}");
    let listed = http_get(&console, "/api/shelves").unwrap_or_default();
    assert!(
        listed.contains(TANK) && listed.contains("level gauge swap"),
        "{listed}"
    );
    assert!(until_silenced(&env, Duration::from_secs(20)).await > 0.0);
    // Restart while shelved: the shelf comes back from the actions topic.
    sigterm(&rs);
    assert!(wait_exit(&mut rs, Duration::from_secs(20)).is_some_and(|s| s.success()));
    let mut rs = env.spawn(&cfg);
    wait_ready(&env, Duration::from_secs(60)).await;
    assert!(
        Utc::now() < until,
        "the restart took too long for this test"
    );
    assert!(until_silenced(&env, Duration::from_secs(20)).await > 0.0);
    assert!(
        threshold_of(&env, TANK).await.is_empty(),
        "nothing raised while shelved"
    );
    // After the expiry the persisting condition alarms again.
    let wait = (until - Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(wait + Duration::from_secs(1)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut fired = Vec::new();
    while fired.is_empty() && Instant::now() < deadline {
        produce(
            &p,
            &env.sensors,
            Some(TANK.as_bytes()),
            now_reading(TANK, "tank_level", 99.0).as_bytes(),
        )
        .await;
        fired = threshold_of(&env, TANK).await;
    }
    assert_eq!(
        fired.first().map(|a| a["status"].clone()),
        Some("firing".into()),
        "{fired:?}"
    );
    let listed = http_get(&console, "/api/shelves").unwrap_or_default();
    assert!(
        !listed.contains(TANK),
        "gone from the console at expiry: {listed}"
    );
    sigterm(&rs);
    wait_exit(&mut rs, Duration::from_secs(20));
    if rs.try_wait().ok().flatten().is_none() {
        sigkill(&mut rs);
    }
}
