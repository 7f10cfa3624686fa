//! The `alertmanager` sink against a real Prometheus Alertmanager (Debian's
//! `prometheus-alertmanager`), started here on a free port with a throw-away storage dir
//! and a null receiver, and killed at the end.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use riskstream::alert::Alert;
use riskstream::sink::{SinkConfig, SinkCtx};
use serde_json::{json, Value};

use common::{free_addr, http_get};

const AM_BIN: &str = "/usr/bin/prometheus-alertmanager";

/// A running Alertmanager; killed on drop.
struct Am {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Drop for Am {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_am() -> Am {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("alertmanager.yml");
    std::fs::write(
        &cfg,
        "route:\n  receiver: \"null\"\n  group_by: [incident_id]\nreceivers:\n  - name: \"null\"\n",
    )
    .unwrap();
    let addr = free_addr();
    let child = Command::new(AM_BIN)
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!(
            "--storage.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address={addr}"))
        .arg("--cluster.listen-address=")
        .arg("--log.level=warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("prometheus-alertmanager installed (apt-get install prometheus-alertmanager)");
    let am = Am {
        child,
        addr,
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if http_get(&am.addr, "/-/ready").is_some_and(|r| r.contains(" 200 ")) {
            return am;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("alertmanager not ready on {}", am.addr);
}

/// GET /api/v2/alerts (the default view: active, silenced, inhibited, unprocessed).
fn am_alerts(am: &Am) -> Vec<Value> {
    let r = http_get(&am.addr, "/api/v2/alerts").expect("alertmanager answers");
    let body = r.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {r}"))
}

/// GET /api/v2/alerts/groups: Alertmanager's aggregation groups (by the route's `group_by`).
fn am_groups(am: &Am) -> Vec<Value> {
    let r = http_get(&am.addr, "/api/v2/alerts/groups").expect("alertmanager answers");
    let body = r.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {r}"))
}

fn ours<'a>(alerts: &'a [Value], alert_id: &str) -> Vec<&'a Value> {
    alerts
        .iter()
        .filter(|a| a["labels"]["alert_id"] == alert_id)
        .collect()
}

fn alert(status: &str, level: &str, alert_id: &str, detected_at: &str) -> Alert {
    serde_json::from_value(json!({
        "alert_id": alert_id, "status": status, "level": level, "stream": "sensors",
        "detector": "threshold",
        "subject": {"sensor_id":"S-330503-0042-GAS1","site_id":"SITE-330503-0042","region":"330503101","kind":"gas_lel"},
        "title": "Gas LEL above alarm limit at SITE-330503-0042",
        "evidence": {"observed":31.5,"expected":10.0,"score":31.5,"threshold":25.0,"window":"instant"},
        "first_event_ts": (chrono::Utc::now() - chrono::Duration::minutes(2)).to_rfc3339(),
        "detected_at": detected_at, "event_ids": ["e1"],
        "route": ["330503101","330503","330500"], "region_name": "Xinshi Town", "seq": 1,
        "incident_id": format!("sensors:site:SITE-330503-0042:{}", std::process::id())
    }))
    .unwrap()
}

/// Polls Alertmanager until `ok` holds for our alerts.
async fn wait_for(
    am: &Am,
    alert_id: &str,
    what: &str,
    ok: impl Fn(&[&Value]) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let all = am_alerts(am);
        let mine = ours(&all, alert_id);
        if ok(&mine) {
            return mine.into_iter().cloned().collect();
        }
        assert!(Instant::now() < deadline, "{what}: {mine:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firing_level_change_and_resolve_in_a_real_alertmanager() {
    let am = start_am();
    let cfg: SinkConfig = toml::from_str(&format!(
        "type = \"alertmanager\"\nurl = \"http://{}\"\ngenerator_url = \"http://riskstream.test/metrics\"",
        am.addr
    ))
    .unwrap();
    let mut problems = Vec::new();
    cfg.validate("sinks.am", &mut problems);
    assert!(problems.is_empty(), "{problems:?}");
    let sink = cfg.build("am", &SinkCtx::default()).unwrap();
    let id = format!(
        "sensors:threshold:S-330503-0042-GAS1:{}",
        std::process::id()
    );
    let now = || chrono::Utc::now().to_rfc3339();

    // Firing (orange): active with the episode's labels.
    let a = alert("firing", "orange", &id, &now());
    sink.send(&a, b"")
        .unwrap()
        .await
        .expect("acked after a 2xx");
    let got = wait_for(&am, &id, "orange active", |m| {
        m.len() == 1 && m[0]["status"]["state"] == "active"
    })
    .await;
    println!(
        "alertmanager GET /api/v2/alerts (firing): {}",
        serde_json::to_string_pretty(&got).unwrap()
    );
    let g = &got[0];
    assert_eq!(
        g["labels"],
        json!({"alertname":"threshold","stream":"sensors","level":"orange","county":"330503",
               "subject":"S-330503-0042-GAS1","alert_id":id,"incident_id":a.incident_id})
    );
    assert_eq!(g["annotations"]["summary"], a.title);
    assert!(g["annotations"]["description"]
        .as_str()
        .unwrap()
        .contains("Observed 31.5"));
    assert_eq!(g["generatorURL"], "http://riskstream.test/metrics");
    let starts = chrono::DateTime::parse_from_rfc3339(g["startsAt"].as_str().unwrap()).unwrap();
    let first = chrono::DateTime::parse_from_rfc3339(&a.first_event_ts).unwrap();
    assert_eq!(
        starts.timestamp(),
        first.timestamp(),
        "startsAt = first_event_ts"
    );

    // A second episode of the same incident: Alertmanager's `group_by: [incident_id]`
    // puts both in one group (one notification per hazard).
    let other = format!("sensors:ewma_z:S-330503-0042-GAS2:{}", std::process::id());
    let mut b = alert("firing", "orange", &other, &now());
    b.detector = "ewma_z".into();
    b.subject
        .insert("sensor_id".into(), "S-330503-0042-GAS2".into());
    sink.send(&b, b"").unwrap().await.unwrap();
    wait_for(&am, &other, "second episode active", |m| m.len() == 1).await;
    let groups = am_groups(&am);
    let ours: Vec<&Value> = groups
        .iter()
        .filter(|g| g["labels"]["incident_id"] == a.incident_id)
        .collect();
    assert_eq!(ours.len(), 1, "one group per incident: {groups:#?}");
    assert_eq!(ours[0]["alerts"].as_array().unwrap().len(), 2);
    let mut b_res = b.clone();
    b_res.status = riskstream::alert::Status::Resolved;
    b_res.detected_at = now();
    sink.send(&b_res, b"").unwrap().await.unwrap();

    // Level change to red: the orange alert ends, a red one is active.
    let mut red = alert("firing", "red", &id, &now());
    red.seq = 2;
    sink.send(&red, b"").unwrap().await.unwrap();
    wait_for(&am, &id, "only red active", |m| {
        m.len() == 1 && m[0]["labels"]["level"] == "red" && m[0]["status"]["state"] == "active"
    })
    .await;

    // Resolve: endsAt = detected_at (now), so it leaves the active list.
    let mut res = alert("resolved", "red", &id, &now());
    res.seq = 3;
    sink.send(&res, b"").unwrap().await.unwrap();
    wait_for(&am, &id, "resolved (gone from the default list)", |m| {
        m.is_empty()
    })
    .await;
    drop(am);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_fails_after_retries_when_alertmanager_is_down() {
    let addr = free_addr(); // nothing listens there
    let cfg: SinkConfig = toml::from_str(&format!(
        "type = \"alertmanager\"\nurl = \"http://{addr}\"\nmax_retries = 2\nbackoff = \"10ms\"\ntimeout = \"1s\""
    ))
    .unwrap();
    let sink = cfg.build("am_down", &SinkCtx::default()).unwrap();
    let a = alert("firing", "red", "x:1", &chrono::Utc::now().to_rfc3339());
    match sink.send(&a, b"").unwrap().await {
        Err(riskstream::sink::SinkError::Delivery {
            sink,
            retryable,
            message,
        }) => {
            assert_eq!(sink, "am_down");
            assert!(retryable);
            assert!(message.contains("3 attempt"), "{message}");
        }
        r => panic!("{r:?}"),
    }
}
