//! Shared helpers for the integration tests: a real broker (started by ./scripts/test),
//! random topic and group names per test, and the real `riskstream` binary.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};

pub fn brokers() -> String {
    std::env::var("RISKSTREAM_TEST_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

pub fn unique(prefix: &str) -> String {
    use rand::Rng;
    format!(
        "{prefix}-{}-{:08x}",
        std::process::id(),
        rand::rng().random::<u32>()
    )
}

/// Creates fresh topics (replication 1); panics naming the broker when it is down.
pub async fn create_topics(names: &[&str], partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .expect("admin client");
    let topics: Vec<NewTopic> = names
        .iter()
        .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1)))
        .collect();
    let res = admin
        .create_topics(
            &topics,
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(20))),
        )
        .await
        .expect("broker reachable: is Kafka running? (./deploy/kafka/kafka.sh start)");
    for r in res {
        r.expect("topic created");
    }
}

/// The topics and group of one test.
pub struct TestEnv {
    pub incidents: String,
    pub sensors: String,
    pub fraud: String,
    pub alerts: String,
    pub dlq: String,
    /// The registry topic (riskstream creates it): each test its own, so points one
    /// test (or a demo on the same broker) registers never judge another's readings.
    pub registry: String,
    pub group: String,
    pub dir: tempfile::TempDir,
    pub metrics_addr: String,
}

impl TestEnv {
    pub async fn new(name: &str) -> Self {
        let env = Self {
            incidents: unique(&format!("{name}-inc")),
            sensors: unique(&format!("{name}-sen")),
            fraud: unique(&format!("{name}-fr")),
            alerts: unique(&format!("{name}-alerts")),
            dlq: unique(&format!("{name}-dlq")),
            registry: unique(&format!("{name}-registry")),
            group: unique(&format!("{name}-group")),
            dir: tempfile::tempdir().unwrap(),
            metrics_addr: free_addr(),
        };
        create_topics(
            &[
                &env.incidents,
                &env.sensors,
                &env.fraud,
                &env.alerts,
                &env.dlq,
            ],
            3,
        )
        .await;
        env
    }

    /// Writes a config for this test's topics; `extra` is appended (more TOML).
    pub fn config(&self, extra: &str) -> PathBuf {
        let regions = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/regions.toml");
        let text = format!(
            r#"
[kafka]
brokers = "{b}"
group_id = "{g}"
[topics]
incidents = "{i}"
sensors = "{s}"
fraud = "{f}"
dead_letter = "{d}"
[processing]
drain_timeout = "5s"
[metrics]
addr = "{m}"
[regions]
file = "{r}"
[registry]
topic = "{reg}"
[sinks.alerts]
type = "kafka"
topic = "{a}"
incidents_topic = "{a}.incidents"
{extra}
"#,
            b = brokers(),
            g = self.group,
            i = self.incidents,
            s = self.sensors,
            f = self.fraud,
            d = self.dlq,
            m = self.metrics_addr,
            r = regions.display(),
            a = self.alerts,
            reg = self.registry,
        );
        let p = self.dir.path().join("riskstream.toml");
        std::fs::write(&p, text).unwrap();
        p
    }

    pub fn spawn(&self, config: &PathBuf) -> Child {
        Command::new(env!("CARGO_BIN_EXE_riskstream"))
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn riskstream")
    }

    /// Like [`TestEnv::spawn`], with extra environment variables and extra arguments
    /// (e.g. `--log-format json`) and stdout and stderr captured, not shown.
    pub fn spawn_captured(&self, config: &Path, env: &[(&str, &str)], args: &[&str]) -> Captured {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_riskstream"));
        cmd.args(args)
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn riskstream");
        let text = Arc::new(Mutex::new(String::new()));
        let readers = vec![
            read_into(child.stdout.take().unwrap(), text.clone()),
            read_into(child.stderr.take().unwrap(), text.clone()),
        ];
        Captured {
            child,
            text,
            readers,
        }
    }

    pub fn metrics(&self) -> String {
        http_get(&self.metrics_addr, "/metrics").unwrap_or_default()
    }
}

/// A child process whose stdout and stderr (interleaved by line) are kept in memory.
pub struct Captured {
    pub child: Child,
    text: Arc<Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Captured {
    /// Everything printed so far.
    pub fn text(&self) -> String {
        self.text.lock().unwrap().clone()
    }

    /// Stops the child (SIGTERM, then SIGKILL after `grace`) and returns everything it
    /// printed, to its last line, with its exit status (None when it had to be killed).
    pub fn stop(mut self, grace: Duration) -> (Option<std::process::ExitStatus>, String) {
        let status = match self.child.try_wait() {
            Ok(Some(exited)) => Some(exited),
            _ => {
                sigterm(&self.child);
                let status = wait_exit(&mut self.child, grace);
                if status.is_none() {
                    sigkill(&mut self.child);
                }
                status
            }
        };
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        (status, self.text())
    }
}

fn read_into(
    from: impl std::io::Read + Send + 'static,
    to: Arc<Mutex<String>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        use std::io::BufRead;
        let mut r = std::io::BufReader::new(from);
        let mut line = Vec::new();
        while r.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
            to.lock().unwrap().push_str(&String::from_utf8_lossy(&line));
            line.clear();
        }
    })
}

pub fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// A minimal HTTP/1.0 GET, enough for /metrics and /readyz.
pub fn http_get(addr: &str, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    Some(buf)
}

/// Value of one exact series in a /metrics text, 0 when absent.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|r| r.trim().parse().ok()))
        .unwrap_or(0.0)
}

/// Sum of every series of a metric name whose labels contain all `must` fragments.
pub fn metric_sum(text: &str, name: &str, must: &[&str]) -> f64 {
    text.lines()
        .filter(|l| {
            l.starts_with(name)
                && (l.as_bytes().get(name.len()) == Some(&b'{')
                    || l.as_bytes().get(name.len()) == Some(&b' '))
        })
        .filter(|l| must.iter().all(|m| l.contains(m)))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

pub fn producer() -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("enable.idempotence", "true")
        .create()
        .unwrap()
}

pub async fn produce(p: &FutureProducer, topic: &str, key: Option<&[u8]>, payload: &[u8]) {
    let mut r: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).payload(payload);
    if let Some(k) = key {
        r = r.key(k);
    }
    p.send(r, Duration::from_secs(10)).await.expect("produce");
}

/// A message read back, with its headers.
#[derive(Debug, Clone)]
pub struct Got {
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub headers: HashMap<String, String>,
}

impl Got {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload).expect("json payload")
    }
}

/// Reads `topic` from the start until `done` says so or `timeout` passes.
pub async fn read_until(
    topic: &str,
    timeout: Duration,
    mut done: impl FnMut(&[Got]) -> bool,
) -> Vec<Got> {
    let c: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", unique("reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    c.subscribe(&[topic]).unwrap();
    let deadline = Instant::now() + timeout;
    let mut got = Vec::new();
    while Instant::now() < deadline && !done(&got) {
        match tokio::time::timeout(Duration::from_millis(500), c.recv()).await {
            Ok(Ok(m)) => {
                let mut headers = HashMap::new();
                if let Some(h) = m.headers() {
                    for x in h.iter() {
                        headers.insert(
                            x.key.to_string(),
                            String::from_utf8_lossy(x.value.unwrap_or_default()).to_string(),
                        );
                    }
                }
                got.push(Got {
                    key: m.key().map(<[u8]>::to_vec),
                    payload: m.payload().unwrap_or_default().to_vec(),
                    headers,
                });
            }
            // A topic nobody wrote to yet does not exist; keep waiting until the deadline.
            Ok(Err(rdkafka::error::KafkaError::MessageConsumption(
                rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition,
            ))) => tokio::time::sleep(Duration::from_millis(200)).await,
            Ok(Err(e)) => panic!("consume {topic}: {e}"),
            Err(_) => {}
        }
    }
    got
}

/// A sensor reading as JSON, `secs` after 2026-11-26T08:00:00+08:00.
pub fn reading(sensor: &str, kind: &str, secs: i64, value: f64) -> String {
    let t = chrono::DateTime::parse_from_rfc3339("2026-11-26T08:00:00+08:00").unwrap()
        + chrono::Duration::seconds(secs);
    serde_json::json!({"sensor_id": sensor, "site_id": "SITE-330503-0042", "region": "330503101",
        "kind": kind, "ts": t.to_rfc3339(), "value": value, "unit": "%LEL"})
    .to_string()
}

pub fn wait_exit(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

pub fn sigterm(child: &Child) {
    unsafe_kill(child.id(), "-TERM");
}

pub fn sigkill(child: &mut Child) {
    unsafe_kill(child.id(), "-KILL");
    let _ = child.wait();
}

fn unsafe_kill(pid: u32, sig: &str) {
    // `kill` from procps: no libc dependency just for signals.
    let _ = Command::new("kill").arg(sig).arg(pid.to_string()).status();
}

/// Waits until /readyz answers 200.
pub async fn wait_ready(env: &TestEnv, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if http_get(&env.metrics_addr, "/readyz")
            .is_some_and(|r| r.starts_with("HTTP/1.1 200") || r.starts_with("HTTP/1.0 200"))
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("riskstream not ready within {timeout:?}");
}
