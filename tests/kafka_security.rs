//! riskstream against the local broker's secured listeners (deploy/kafka/kafka.sh):
//! SASL_PLAINTEXT with mechanism PLAIN on 127.0.0.1:9094, TLS on 127.0.0.1:9095 (server
//! certificate from the throwaway CA in the Kafka cache dir, client certificate optional).
//! Only `[kafka.properties]` and `RISKSTREAM_BROKERS` differ from a plaintext run. The test
//! harness itself creates topics, produces and reads back over PLAINTEXT on 9092.
//!
//! In every case the process's whole stdout and stderr are captured and must not contain
//! the password, though the properties are logged at startup and librdkafka's own
//! `conf` and `security` debug lines are let through.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;

const SASL_USER: &str = "riskstream";
const SASL_PASSWORD: &str = "riskstream-secret";
/// Keystore password of kafka.sh's throwaway client certificate.
const KEYSTORE_PASSWORD: &str = "riskstream-local";

fn sasl_brokers() -> String {
    std::env::var("RISKSTREAM_TEST_SASL_BROKERS").unwrap_or_else(|_| "127.0.0.1:9094".into())
}

fn ssl_brokers() -> String {
    std::env::var("RISKSTREAM_TEST_SSL_BROKERS").unwrap_or_else(|_| "127.0.0.1:9095".into())
}

/// The TLS files kafka.sh made: `RISKSTREAM_KAFKA_HOME/tls`, as kafka.sh resolves it.
fn tls_dir() -> PathBuf {
    let home = std::env::var("RISKSTREAM_KAFKA_HOME").unwrap_or_else(|_| {
        format!(
            "{}/.cache/riskstream/kafka-4.1.1",
            std::env::var("HOME").expect("HOME")
        )
    });
    PathBuf::from(home).join("tls")
}

/// Fails early, with the fix, when the broker runs without the secured listeners or the
/// TLS files `files` (started by an older kafka.sh).
fn require_secure_listeners(files: &[&str]) {
    for addr in [sasl_brokers(), ssl_brokers()] {
        assert!(
            std::net::TcpStream::connect(&addr).is_ok(),
            "no secured listener on {addr}: restart the local broker with \
             `deploy/kafka/kafka.sh stop && deploy/kafka/kafka.sh start`"
        );
    }
    for f in files {
        let p = tls_dir().join(f);
        assert!(
            p.exists(),
            "{} missing: `deploy/kafka/kafka.sh stop && deploy/kafka/kafka.sh start` makes it",
            p.display()
        );
    }
}

/// `[kafka.properties]` as TOML, with librdkafka's conf and security debug lines on.
fn properties(props: &[(&str, &str)]) -> String {
    let mut t = String::from("[kafka.properties]\n\"debug\" = \"conf,security\"\n");
    for (k, v) in props {
        t.push_str(&format!("{k:?} = {v:?}\n"));
    }
    t
}

/// Spawns riskstream on `brokers` with `props`, produces a gas spike and returns the alerts
/// read back (a firing threshold alert expected) and everything riskstream printed.
async fn gas_spike_through(
    name: &str,
    brokers: &str,
    props: &[(&str, &str)],
) -> (Vec<serde_json::Value>, String) {
    let files: Vec<&str> = props
        .iter()
        .filter(|(k, _)| k.ends_with(".location"))
        .filter_map(|(_, v)| std::path::Path::new(v).file_name()?.to_str())
        .collect();
    require_secure_listeners(&files);
    let env = TestEnv::new(name).await;
    let cfg = env.config(&properties(props));
    let proc = env.spawn_captured(
        &cfg,
        &[
            ("RISKSTREAM_BROKERS", brokers),
            ("RUST_LOG", "info,librdkafka=debug"),
        ],
        &["--log-format", "json"],
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready(&env) {
        if Instant::now() > deadline {
            let (_, text) = proc.stop(Duration::from_secs(10));
            panic!("riskstream not ready over {brokers} within 30 s:\n{text}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let p = producer();
    let sensor = "S-330503-0042-GAS1";
    for i in 0..34 {
        let v = if i < 30 {
            3.0 + (i % 3) as f64 * 0.1
        } else {
            31.5
        };
        produce(
            &p,
            &env.sensors,
            Some(sensor.as_bytes()),
            reading(sensor, "gas_lel", i * 10, v).as_bytes(),
        )
        .await;
    }
    let alerts = read_until(&env.alerts, Duration::from_secs(30), |g| {
        g.iter()
            .any(|m| m.json()["detector"] == "threshold" && m.json()["status"] == "firing")
    })
    .await;
    let (status, text) = proc.stop(Duration::from_secs(15));
    assert!(
        status.is_some_and(|s| s.success()),
        "clean exit on SIGTERM ({status:?}):\n{text}"
    );
    (alerts.iter().map(Got::json).collect(), text)
}

fn ready(env: &TestEnv) -> bool {
    http_get(&env.metrics_addr, "/readyz").is_some_and(|r| is_200(&r))
}

/// The server answers our HTTP/1.0 request as HTTP/1.0.
fn is_200(response: &str) -> bool {
    response.starts_with("HTTP/1.1 200") || response.starts_with("HTTP/1.0 200")
}

fn assert_red_gas_alert(alerts: &[serde_json::Value], text: &str) {
    let a = alerts
        .iter()
        .find(|a| a["detector"] == "threshold" && a["status"] == "firing")
        .unwrap_or_else(|| {
            panic!("no firing threshold alert in {alerts:?}\nriskstream said:\n{text}")
        });
    assert_eq!(a["level"], "red");
    assert_eq!(a["subject"]["sensor_id"], "S-330503-0042-GAS1");
    assert_eq!(a["evidence"]["observed"], 31.5);
}

/// The startup line lists the brokers and the properties (redacted) riskstream used.
fn assert_subscribed(text: &str, brokers: &str, protocol: &str) {
    let line = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|j| j["message"] == "subscribed")
        .unwrap_or_else(|| panic!("no `subscribed` log line in:\n{text}"));
    assert_eq!(line["brokers"], brokers, "{line}");
    let props = line["properties"].as_str().unwrap_or_default();
    assert!(
        props.contains(&format!("security.protocol={protocol}")),
        "{line}"
    );
}

fn assert_never_printed(text: &str, secret: &str) {
    if let Some(at) = text.find(secret) {
        let line = text[..at].rsplit('\n').next().unwrap_or_default();
        panic!("`{secret}` printed by riskstream, in the line starting: {line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_plain_login_yields_alerts_and_never_prints_the_password() {
    let brokers = sasl_brokers();
    let (alerts, text) = gas_spike_through(
        "sasl",
        &brokers,
        &[
            ("security.protocol", "SASL_PLAINTEXT"),
            ("sasl.mechanisms", "PLAIN"),
            ("sasl.username", SASL_USER),
            ("sasl.password", SASL_PASSWORD),
        ],
    )
    .await;
    assert_red_gas_alert(&alerts, &text);
    assert_subscribed(&text, &brokers, "SASL_PLAINTEXT");
    assert!(text.contains("sasl.password=<redacted>"), "{text}");
    // librdkafka's own configuration dump went through our logs too (it redacts as well).
    assert!(text.contains("Client configuration"), "{text}");
    assert_never_printed(&text, SASL_PASSWORD);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_the_local_ca_yields_alerts() {
    let brokers = ssl_brokers();
    let ca = tls_dir().join("ca.pem");
    let (alerts, text) = gas_spike_through(
        "tls",
        &brokers,
        &[
            ("security.protocol", "SSL"),
            ("ssl.ca.location", ca.to_str().unwrap()),
        ],
    )
    .await;
    assert_red_gas_alert(&alerts, &text);
    assert_subscribed(&text, &brokers, "SSL");
}

/// mTLS: the client certificate from a PKCS#12 keystore, whose password must not leak.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_with_a_client_keystore_yields_alerts_and_never_prints_its_password() {
    let brokers = ssl_brokers();
    let (ca, keystore) = (tls_dir().join("ca.pem"), tls_dir().join("client.p12"));
    let (alerts, text) = gas_spike_through(
        "mtls",
        &brokers,
        &[
            ("security.protocol", "SSL"),
            ("ssl.ca.location", ca.to_str().unwrap()),
            ("ssl.keystore.location", keystore.to_str().unwrap()),
            ("ssl.keystore.password", KEYSTORE_PASSWORD),
        ],
    )
    .await;
    assert_red_gas_alert(&alerts, &text);
    assert_subscribed(&text, &brokers, "SSL");
    assert!(text.contains("ssl.keystore.password=<redacted>"), "{text}");
    assert_never_printed(&text, KEYSTORE_PASSWORD);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_sasl_password_logs_an_authentication_error_and_never_gets_ready() {
    require_secure_listeners(&[]);
    const WRONG: &str = "not-the-riskstream-password";
    let env = TestEnv::new("saslbad").await;
    let cfg = env.config(&properties(&[
        ("security.protocol", "SASL_PLAINTEXT"),
        ("sasl.mechanisms", "PLAIN"),
        ("sasl.username", SASL_USER),
        ("sasl.password", WRONG),
    ]));
    let brokers = sasl_brokers();
    let proc = env.spawn_captured(
        &cfg,
        &[
            ("RISKSTREAM_BROKERS", brokers.as_str()),
            ("RUST_LOG", "info,librdkafka=debug"),
        ],
        &[],
    );
    // Watch /readyz until the authentication error has been logged, and 5 s beyond.
    let start = Instant::now();
    let mut failed_at: Option<Instant> = None;
    let mut ready_seen = false;
    let mut not_ready_seen = false;
    while start.elapsed() < Duration::from_secs(30)
        && failed_at.is_none_or(|t| t.elapsed() < Duration::from_secs(5))
    {
        if let Some(r) = http_get(&env.metrics_addr, "/readyz") {
            not_ready_seen |= r.lines().next().is_some_and(|l| l.contains(" 503 "));
            ready_seen |= is_200(&r);
        }
        if failed_at.is_none() && proc.text().contains("SASL authentication error") {
            failed_at = Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, text) = proc.stop(Duration::from_secs(15));
    assert!(
        failed_at.is_some(),
        "no SASL authentication error logged within 30 s:\n{text}"
    );
    assert!(
        text.contains("Invalid username or password"),
        "the broker's reason reaches the log:\n{text}"
    );
    assert!(not_ready_seen, "/readyz never answered 503:\n{text}");
    assert!(
        !ready_seen,
        "/readyz said 200 with a wrong password:\n{text}"
    );
    assert!(text.contains("sasl.password=<redacted>"), "{text}");
    assert_never_printed(&text, WRONG);
}

/// A keystore that cannot be opened stops riskstream at start (exit 1) with librdkafka's
/// reason, and the wrong password is not in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_keystore_password_stops_riskstream_without_printing_it() {
    require_secure_listeners(&["ca.pem", "client.p12"]);
    const WRONG: &str = "not-the-keystore-password";
    let env = TestEnv::new("mtlsbad").await;
    let (ca, keystore) = (tls_dir().join("ca.pem"), tls_dir().join("client.p12"));
    let cfg = env.config(&properties(&[
        ("security.protocol", "SSL"),
        ("ssl.ca.location", ca.to_str().unwrap()),
        ("ssl.keystore.location", keystore.to_str().unwrap()),
        ("ssl.keystore.password", WRONG),
    ]));
    let mut proc = env.spawn_captured(&cfg, &[("RISKSTREAM_BROKERS", &ssl_brokers())], &[]);
    let status = wait_exit(&mut proc.child, Duration::from_secs(20));
    let (_, text) = proc.stop(Duration::from_secs(5));
    assert_eq!(status.and_then(|s| s.code()), Some(1), "{text}");
    assert!(text.contains("ssl.keystore.location"), "{text}");
    assert_never_printed(&text, WRONG);
}
