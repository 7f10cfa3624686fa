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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gas_hazard_reaches_the_bureau_as_cap_documents_on_kafka() {
    let env = TestEnv::new("cap").await;
    let cap_topic = unique("cap-bureau");
    create_topic(&cap_topic).await;
    let cfg = env.config(&format!(
        r#"
[sinks.bureau]
type = "cap"
topic = "{cap_topic}"
sender = "riskstream@city.example"
streams = ["sensors"]
"#
    ));
    let mut child = env.spawn(&cfg);
    wait_ready(&env, Duration::from_secs(30)).await;

    // Normal readings, a gas spike above the alarm limit, then normal again for longer
    // than resolve_after (5 min of event time), so the episode opens and resolves.
    let p = producer();
    let sensor = "S-330503-0042-GAS1";
    for i in 0..90 {
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

    let is_threshold = |g: &Got| String::from_utf8_lossy(&g.payload).contains(":threshold:");
    let docs = read_until(&cap_topic, Duration::from_secs(40), |got| {
        got.iter()
            .filter(|g| is_threshold(g))
            .any(|g| String::from_utf8_lossy(&g.payload).contains("<msgType>Cancel</msgType>"))
    })
    .await;
    sigterm(&child);
    let status = wait_exit(&mut child, Duration::from_secs(10)).expect("exits after SIGTERM");
    assert!(status.success(), "{status:?}");
    assert!(!docs.is_empty(), "no CAP document on {cap_topic}");

    // Every document is CAP 1.2, keyed by its alert_id, from the sensors stream only.
    for g in &docs {
        assert_eq!(
            g.headers.get("content-type").map(String::as_str),
            Some("application/cap+xml")
        );
        let d = parse(g);
        assert_eq!(d.sender.as_str(), "riskstream@city.example");
        assert_eq!(d.status, v1dot2::Status::Actual);
        assert_eq!(d.scope, v1dot2::Scope::Public);
        assert_eq!(param(&d, "stream"), "sensors");
        assert_eq!(
            g.key.as_deref(),
            Some(param(&d, "alert_id").as_bytes()),
            "key = alert_id"
        );
        let sent = d.sent.to_string();
        assert!(sent.ends_with("+08:00") && !sent.contains('.'), "{sent}");
        assert_eq!(d.info[0].categories, vec![v1dot2::Category::CBRNE]);
        assert_eq!(
            d.info[0].areas[0].geocode.get("GB/T 2260"),
            Some("330503101")
        );
    }

    // The threshold episode: Alert (red, Observed, Extreme) ... Cancel referencing all.
    let ep: Vec<v1dot2::Alert> = docs.iter().filter(|g| is_threshold(g)).map(parse).collect();
    println!(
        "first threshold CAP document:\n{}",
        String::from_utf8_lossy(&docs.iter().find(|g| is_threshold(g)).unwrap().payload)
    );
    let first = &ep[0];
    assert_eq!(first.message_type, v1dot2::MessageType::Alert);
    assert!(first.references.is_none());
    let i = &first.info[0];
    assert_eq!(i.event, "Gas LEL above alarm limit");
    assert_eq!(i.severity, v1dot2::Severity::Extreme);
    assert_eq!(i.urgency, v1dot2::Urgency::Immediate);
    assert_eq!(i.certainty, v1dot2::Certainty::Observed);
    assert_eq!(
        i.headline.as_deref(),
        Some("Gas LEL above alarm limit at SITE-330503-0042")
    );
    assert_eq!(param(first, "level"), "red");
    assert_eq!(param(first, "detector"), "threshold");
    assert_eq!(param(first, "score"), "31.5");
    assert!(i.description.as_deref().unwrap().contains("Observed 31.5"));
    let last = ep.last().unwrap();
    assert_eq!(
        last.message_type,
        v1dot2::MessageType::Cancel,
        "resolved => Cancel"
    );
    assert_eq!(last.info[0].urgency, v1dot2::Urgency::Past);
    let refs: Vec<String> = last
        .references
        .as_ref()
        .expect("Cancel references the episode")
        .iter()
        .map(|r| r.identifier.to_string())
        .collect();
    let earlier: Vec<String> = ep[..ep.len() - 1]
        .iter()
        .map(|d| d.identifier.to_string())
        .collect();
    assert_eq!(refs, earlier);
    for (n, d) in ep.iter().enumerate() {
        assert_eq!(
            d.identifier.as_str(),
            format!("{}:{}", param(d, "alert_id"), n + 1)
        );
    }
}
