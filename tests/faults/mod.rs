//! The fault-test harness: one generated input, a reference run (one instance, no
//! faults) and a faulty run over the same input topics, each with its own consumer group
//! and alerts topic; then the two sets of alert messages are compared.
//!
//! Inputs have one partition per stream: event-time results (watermarks, window closes,
//! resolves) then depend only on each stream's order, which Kafka keeps, so any two
//! correct runs agree exactly whatever their timing. With several partitions the
//! interleaving of fetches moves the watermark differently in every run, faults or not.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::common::{brokers, create_topics, free_addr, unique};

/// The generated city the fault tests replay: 8 h, 8 sites, seed 3 (~48k events, ~120
/// alert messages over all detectors with the default config).
pub const SIM_ARGS: &[&str] = &[
    "--hours",
    "8",
    "--sites",
    "8",
    "--seed",
    "3",
    "--start",
    "2026-11-26T00:00:00+08:00",
];

pub struct Inputs {
    pub incidents: String,
    pub sensors: String,
    pub fraud: String,
    pub dlq: String,
    pub dir: tempfile::TempDir,
}

/// One processing run: its group, alerts and incidents topics and config.
pub struct Run {
    pub group: String,
    pub alerts: String,
    pub incidents: String,
    pub metrics_addr: String,
    pub config: PathBuf,
    /// Scale-out: the run's repartition topics, which must be drained too.
    pub repartition: Vec<String>,
}

impl Inputs {
    pub async fn new(name: &str) -> Self {
        let i = Self {
            incidents: unique(&format!("{name}-inc")),
            sensors: unique(&format!("{name}-sen")),
            fraud: unique(&format!("{name}-fr")),
            dlq: unique(&format!("{name}-dlq")),
            dir: tempfile::tempdir().unwrap(),
        };
        create_topics(&[&i.incidents, &i.sensors, &i.fraud], 1).await;
        create_topics(&[&i.dlq], 3).await;
        i
    }

    pub fn topics(&self) -> [&str; 3] {
        [&self.incidents, &self.sensors, &self.fraud]
    }

    /// A run over these inputs; `processing` is the body of its `[processing]` table.
    pub async fn run(&self, name: &str, processing: &str) -> Run {
        let r = Run {
            group: unique(&format!("{name}-group")),
            alerts: unique(&format!("{name}-alerts")),
            incidents: unique(&format!("{name}-incidents")),
            metrics_addr: free_addr(),
            config: self.dir.path().join(format!("{name}.toml")),
            repartition: Vec::new(),
        };
        let mut r = r;
        if processing.contains("scale_out = true") {
            r.repartition = ["incidents", "sensors", "fraud"]
                .iter()
                .map(|s| format!("riskstream.repartition.{}.{s}", r.group))
                .collect();
        }
        create_topics(&[&r.alerts, &r.incidents], 3).await;
        let regions = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/regions.toml");
        let default = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/default.toml");
        // The default detectors and alert policy, with this run's topics and group.
        let text = std::fs::read_to_string(default).unwrap();
        let detectors = &text[text.find("\n[[detectors.").expect("default detectors")..];
        let detectors = &detectors[..detectors.find("\n[sinks").unwrap_or(detectors.len())];
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
{processing}
[state]
flush_interval = "1s"             # many commits: kills land between them
[metrics]
addr = "{m}"
[regions]
file = "{rg}"
[sinks.alerts]
type = "kafka"
topic = "{a}"
incidents_topic = "{inc}"
{detectors}
"#,
            b = brokers(),
            g = r.group,
            i = self.incidents,
            s = self.sensors,
            f = self.fraud,
            d = self.dlq,
            m = r.metrics_addr,
            rg = regions.display(),
            a = r.alerts,
            inc = r.incidents,
        );
        std::fs::write(&r.config, text).unwrap();
        r
    }

    /// Produces the generated city to the input topics at `rate` events/s (0 = flat out);
    /// returns the producer process.
    pub fn load(&self, run: &Run, rate: u32) -> Guard {
        Guard(
            Command::new(env!("CARGO_BIN_EXE_riskstream"))
                .args(["simulate", "--to-kafka", "--config"])
                .arg(&run.config)
                .args(SIM_ARGS)
                .args(["--rate", &rate.to_string()])
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn simulate"),
        )
    }
}

/// A child process killed when dropped, so a failing test leaves nothing running.
pub struct Guard(pub Child);

impl std::ops::Deref for Guard {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Guard {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

impl Run {
    pub fn spawn(&self, instance: &str) -> Guard {
        Guard(self.command(instance).spawn().expect("spawn riskstream"))
    }

    /// `riskstream run` of this run's config as instance `instance`.
    fn command(&self, instance: &str) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_riskstream"));
        c.args(["run", "--config"])
            .arg(&self.config)
            .env(
                "RUST_LOG",
                std::env::var("RISKSTREAM_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .env("RISKSTREAM_INSTANCE_ID", instance)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        c
    }

    /// A run of its own instance `instance`, with its own metrics address (several
    /// instances of one run share the group); returns the process and that address.
    pub fn spawn_instance(&self, instance: &str) -> (Guard, String) {
        let addr = free_addr();
        let child = self
            .command(instance)
            .env("RISKSTREAM_METRICS_ADDR", &addr)
            .spawn()
            .expect("spawn riskstream");
        (Guard(child), addr)
    }

    /// Waits until the group has committed every input offset, and with scale-out every
    /// repartition record too.
    pub fn wait_committed(&self, inputs: &Inputs, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.all_committed(inputs) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        false
    }

    /// Whether the group has committed every input offset (and repartition record) now.
    pub fn all_committed(&self, inputs: &Inputs) -> bool {
        let ends = end_offsets(&inputs.topics());
        let done = committed(&self.group, &inputs.topics());
        !ends.is_empty()
            && ends.iter().all(|(tp, e)| done.get(tp) == Some(e))
            && self.repartition_drained()
    }

    /// Every repartition partition committed to its end. Its records are written in
    /// transactions, so a partition ends with a commit marker one past the last record:
    /// the committed offset of a drained partition is its end or one before.
    fn repartition_drained(&self) -> bool {
        if self.repartition.is_empty() {
            return true;
        }
        let topics: Vec<&str> = self.repartition.iter().map(String::as_str).collect();
        let ends = end_offsets(&topics);
        let done = committed(&self.group, &topics);
        ends.iter().all(|(tp, e)| {
            *e == 0
                || done
                    .get(tp)
                    .is_some_and(|c| *c >= e - 1 && !has_records(&tp.0, tp.1, *c, *e))
        })
    }

    /// Every alert message on this run's alerts topic: (alert_id, status, level), as
    /// committed (read_committed) and in order.
    pub fn alerts(&self) -> Vec<(String, String, String)> {
        read_all(&self.alerts)
            .into_iter()
            .map(|v: serde_json::Value| {
                (
                    v["alert_id"].as_str().unwrap().to_string(),
                    v["status"].as_str().unwrap().to_string(),
                    v["level"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }
}

impl Run {
    /// Every incident message on this run's incidents topic: (incident_id, status,
    /// `level#seq`), as committed and in order. The seq makes each message distinct, so
    /// [`compare`] finds a message lost, repeated or different (an incident split in two
    /// shows as lost ids and unexpected ones).
    pub fn incident_messages(&self) -> Vec<(String, String, String)> {
        read_all(&self.incidents)
            .into_iter()
            .map(|v: serde_json::Value| {
                (
                    v["incident_id"].as_str().unwrap().to_string(),
                    v["status"].as_str().unwrap().to_string(),
                    format!("{}#{}", v["level"].as_str().unwrap(), v["seq"]),
                )
            })
            .collect()
    }
}

fn consumer(group: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap()
}

pub fn end_offsets(topics: &[&str]) -> HashMap<(String, i32), i64> {
    let c = consumer(&unique("ends"));
    let mut out = HashMap::new();
    for t in topics {
        let md = c.fetch_metadata(Some(t), Duration::from_secs(10)).unwrap();
        for p in md.topics()[0].partitions() {
            let (_, hi) = c
                .fetch_watermarks(t, p.id(), Duration::from_secs(10))
                .unwrap();
            out.insert((t.to_string(), p.id()), hi);
        }
    }
    out
}

pub fn committed(group: &str, topics: &[&str]) -> HashMap<(String, i32), i64> {
    let c = consumer(group);
    let mut tpl = TopicPartitionList::new();
    for ((t, p), _) in end_offsets(topics) {
        tpl.add_partition(&t, p);
    }
    let Ok(got) = c.committed_offsets(tpl, Duration::from_secs(10)) else {
        return HashMap::new();
    };
    got.elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some(((e.topic().to_string(), e.partition()), o)),
            _ => None,
        })
        .collect()
}

/// Whether a committed reader finds a record in `[from, end)` of one partition (the
/// last offset before the end may be a transaction marker or a record).
fn has_records(topic: &str, partition: i32, from: i64, end: i64) -> bool {
    if from >= end {
        return false;
    }
    let c = consumer(&unique("probe"));
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(from))
        .unwrap();
    c.assign(&tpl).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match c.poll(Duration::from_millis(200)) {
            Some(Ok(_)) => return true,
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => return false,
            _ => {}
        }
    }
    true
}

/// Reads a topic to its end (committed records only), every partition.
pub fn read_all(topic: &str) -> Vec<serde_json::Value> {
    let c = consumer(&unique("reader"));
    let ends = end_offsets(&[topic]);
    let mut tpl = TopicPartitionList::new();
    let mut pending = Vec::new();
    for ((t, p), hi) in &ends {
        if *hi > 0 {
            tpl.add_partition_offset(t, *p, Offset::Beginning).unwrap();
            pending.push(*p);
        }
    }
    if pending.is_empty() {
        return Vec::new();
    }
    c.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !pending.is_empty() && Instant::now() < deadline {
        match c.poll(Duration::from_millis(500)) {
            None => {}
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => pending.retain(|x| *x != p),
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            Some(Ok(m)) => out.push(serde_json::from_slice(m.payload().unwrap()).unwrap()),
        }
    }
    assert!(pending.is_empty(), "{topic} not read to its end");
    out
}

/// What a faulty run is measured by against the reference.
#[derive(Debug)]
pub struct Comparison {
    pub reference: usize,
    pub faulty: usize,
    /// Reference messages the faulty run never produced.
    pub lost: Vec<(String, String, String)>,
    /// Faulty messages beyond the reference's count of the same message.
    pub duplicated: usize,
    /// Faulty messages that the reference does not have at all.
    pub unexpected: Vec<(String, String, String)>,
}

pub fn compare(
    reference: &[(String, String, String)],
    faulty: &[(String, String, String)],
) -> Comparison {
    let count = |v: &[(String, String, String)]| {
        let mut m: BTreeMap<(String, String, String), usize> = BTreeMap::new();
        for a in v {
            *m.entry(a.clone()).or_default() += 1;
        }
        m
    };
    let (r, f) = (count(reference), count(faulty));
    let mut lost = Vec::new();
    let mut duplicated = 0;
    let mut unexpected = Vec::new();
    for (k, n) in &r {
        let got = f.get(k).copied().unwrap_or(0);
        if got < *n {
            lost.push(k.clone());
        }
        duplicated += got.saturating_sub(*n);
    }
    for (k, n) in &f {
        if !r.contains_key(k) {
            unexpected.push(k.clone());
            duplicated += n - 1;
        }
    }
    Comparison {
        reference: reference.len(),
        faulty: faulty.len(),
        lost,
        duplicated,
        unexpected,
    }
}

/// Runs the reference: one instance, no faults, over the fully loaded input; its
/// alert messages.
pub async fn reference(inputs: &Inputs, processing: &str) -> Vec<(String, String, String)> {
    reference_run(inputs, processing).await.alerts()
}

/// The same, the finished run (for its incidents too).
pub async fn reference_run(inputs: &Inputs, processing: &str) -> Run {
    let r = inputs.run("reference", processing).await;
    let mut child = r.spawn("reference-0");
    assert!(
        r.wait_committed(inputs, Duration::from_secs(120)),
        "reference run did not catch up"
    );
    crate::common::sigterm(&child);
    let status = crate::common::wait_exit(&mut child, Duration::from_secs(20));
    assert!(
        status.is_some_and(|s| s.success()),
        "reference run exit: {status:?}"
    );
    r
}
