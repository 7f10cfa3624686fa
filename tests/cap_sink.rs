//! The `cap` sink through the real binary and the real broker: a gas hazard on the sensors
//! stream becomes OASIS CAP 1.2 documents on a Kafka topic, each parsed by the independent
//! `oasiscap` implementation.

mod common;

use std::time::Duration;

use oasiscap::v1dot2;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;

use common::*;

async fn create_topic(name: &str) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    for r in admin
        .create_topics(
            &[NewTopic::new(name, 1, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(20))),
        )
        .await
        .unwrap()
    {
        r.expect("topic created");
    }
}

fn parse(g: &Got) -> v1dot2::Alert {
    let s = std::str::from_utf8(&g.payload).unwrap();
    s.parse::<v1dot2::Alert>()
        .unwrap_or_else(|e| panic!("not CAP 1.2: {e}\n{s}"))
}

fn param<'a>(d: &'a v1dot2::Alert, name: &str) -> &'a str {
    d.info[0].parameters.get(name).unwrap_or("")
}

/// The target of issue #23: a site event on 10 sensors is one CAP alert with its updates
/// and its cancel, not ten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn site_event_on_ten_sensors_reaches_the_bureau_as_one_cap_incident() {
    let env = TestEnv::new("cap").await;
    let cap_topic = unique("cap-bureau");
    create_topic(&cap_topic).await;
    // A short join_gap so the incident resolves within the test's 20 minutes of readings.
    let cfg = env.config(&format!(
        r#"
[sinks.bureau]
type = "cap"
topic = "{cap_topic}"
sender = "riskstream@city.example"
streams = ["sensors"]

[alerts.incidents]
join_gap = "2m"
"#
    ));
    let mut child = env.spawn(&cfg);
    wait_ready(&env, Duration::from_secs(30)).await;

    // Normal readings, a gas spike above the alarm limit on all ten sensors of the site,
    // then normal again for longer than resolve_after (5 min of event time) + join_gap,
    // so the episodes open and resolve and then the incident resolves.
    let p = producer();
    let sensors: Vec<String> = (1..=10).map(|n| format!("S-330503-0042-GAS{n}")).collect();
    for i in 0..120 {
        for sensor in &sensors {
            let v = if (30..34).contains(&i) {
                31.5
            } else {
                3.0 + (i % 3) as f64 * 0.1
            };
            produce(
                &p,
                &env.sensors,
                Some(sensor.as_bytes()),
                reading(sensor, "gas_lel", i * 10, v).as_bytes(),
            )
            .await;
        }
    }

    let docs = read_until(&cap_topic, Duration::from_secs(60), |got| {
        got.iter()
            .any(|g| String::from_utf8_lossy(&g.payload).contains("<msgType>Cancel</msgType>"))
    })
    .await;
    sigterm(&child);
    let status = wait_exit(&mut child, Duration::from_secs(10)).expect("exits after SIGTERM");
    assert!(status.success(), "{status:?}");
    assert!(!docs.is_empty(), "no CAP document on {cap_topic}");
    println!(
        "first CAP document:\n{}",
        String::from_utf8_lossy(&docs[0].payload)
    );

    // Every document is CAP 1.2, keyed by its incident_id, from the sensors stream only.
    let ds: Vec<v1dot2::Alert> = docs.iter().map(parse).collect();
    for (g, d) in docs.iter().zip(&ds) {
        assert_eq!(
            g.headers.get("content-type").map(String::as_str),
            Some("application/cap+xml")
        );
        assert_eq!(d.sender.as_str(), "riskstream@city.example");
        assert_eq!(d.status, v1dot2::Status::Actual);
        assert_eq!(d.scope, v1dot2::Scope::Public);
        assert_eq!(param(d, "stream"), "sensors");
        assert_eq!(
            g.key.as_deref(),
            Some(param(d, "incident_id").as_bytes()),
            "key = incident_id"
        );
        let sent = d.sent.to_string();
        assert!(sent.ends_with("+08:00") && !sent.contains('.'), "{sent}");
        assert_eq!(d.info[0].categories, vec![v1dot2::Category::CBRNE]);
        assert_eq!(
            d.info[0].areas[0].geocode.get("GB/T 2260"),
            Some("330503101")
        );
    }

    // One incident: the site's. Alert, then Updates (level changes), then one Cancel
    // referencing every earlier document.
    let ids: std::collections::BTreeSet<&str> =
        ds.iter().map(|d| param(d, "incident_id")).collect();
    assert_eq!(ids.len(), 1, "one incident for the site event: {ids:?}");
    let id = *ids.iter().next().unwrap();
    assert!(id.starts_with("sensors:site:SITE-330503-0042:"), "{id}");
    assert_eq!(ds[0].message_type, v1dot2::MessageType::Alert);
    assert!(ds[0].references.is_none());
    for d in &ds[1..ds.len() - 1] {
        assert_eq!(d.message_type, v1dot2::MessageType::Update);
    }
    let last = ds.last().unwrap();
    assert_eq!(last.message_type, v1dot2::MessageType::Cancel);
    assert_eq!(last.info[0].urgency, v1dot2::Urgency::Past);
    assert!(
        ds.len() <= 6,
        "a handful of documents, not one per sensor and detector: {}",
        ds.len()
    );
    for (n, d) in ds.iter().enumerate() {
        assert_eq!(d.identifier.as_str(), format!("{id}:{}", n + 1));
        let refs: Vec<String> = d
            .references
            .as_ref()
            .map(|r| r.iter().map(|r| r.identifier.to_string()).collect())
            .unwrap_or_default();
        let earlier: Vec<String> = ds[..n].iter().map(|d| d.identifier.to_string()).collect();
        assert_eq!(refs, earlier, "document {} references all before it", n + 1);
    }
    // The red alarm is in it, observed by the threshold rule on every sensor.
    let red = ds
        .iter()
        .find(|d| param(d, "level") == "red")
        .expect("a red document");
    let i = &red.info[0];
    assert_eq!(i.severity, v1dot2::Severity::Extreme);
    assert_eq!(i.urgency, v1dot2::Urgency::Immediate);
    assert_eq!(i.certainty, v1dot2::Certainty::Observed);
    assert!(i.event.starts_with("Gas LEL"), "{}", i.event);
    assert!(param(red, "detectors").contains("threshold"));
    let members: usize = param(last, "members").parse().unwrap();
    assert!(
        members >= 10,
        "every sensor's episode is a member: {members}"
    );
}
