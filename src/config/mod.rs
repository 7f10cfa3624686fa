//! Typed configuration, validated at load.
//!
//! Precedence, lowest first: built-in defaults < the TOML file < environment variables
//! (`RISKSTREAM_BROKERS`, `RISKSTREAM_METRICS_ADDR`). Unknown keys are errors. [`load`]
//! reports every problem it finds, each with its path
//! (`detectors.sensors[2].z_threshold: must be > 0`), not just the first. Secret values
//! (`sasl.password` and the like, see [`redact`]) never appear in a problem or a `Debug`.

pub mod redact;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::alert::AlertPolicyConfig;
use crate::console::ConsoleConfig;
use crate::decode::Stream;
use crate::detect::{BuildCtx, DetectorConfig};
use crate::regions::{Regions, RegionsFile};
use crate::sink::SinkConfig;

/// `[kafka]`. `Debug` prints the properties with secret values redacted.
#[derive(Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// bootstrap.servers
    pub brokers: String,
    pub group_id: String,
    /// Where a new consumer group starts: `earliest` or `latest`.
    pub auto_offset_reset: String,
    /// librdkafka properties passed through as they are (security.protocol, sasl.*, ssl.*).
    pub properties: BTreeMap<String, String>,
}

impl std::fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaConfig")
            .field("brokers", &self.brokers)
            .field("group_id", &self.group_id)
            .field("auto_offset_reset", &self.auto_offset_reset)
            .field("properties", &redact::Properties(&self.properties))
            .finish()
    }
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            group_id: "riskstream".into(),
            auto_offset_reset: "earliest".into(),
            properties: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TopicsConfig {
    pub incidents: String,
    pub sensors: String,
    pub fraud: String,
    pub dead_letter: String,
}

impl Default for TopicsConfig {
    fn default() -> Self {
        Self {
            incidents: "incidents".into(),
            sensors: "sensor-readings".into(),
            fraud: "fraud-reports".into(),
            dead_letter: "riskstream.dlq".into(),
        }
    }
}

impl TopicsConfig {
    pub fn input(&self, s: Stream) -> &str {
        match s {
            Stream::Incidents => &self.incidents,
            Stream::Sensors => &self.sensors,
            Stream::Fraud => &self.fraud,
        }
    }

    pub fn stream_of(&self, topic: &str) -> Option<Stream> {
        Stream::ALL.into_iter().find(|s| self.input(*s) == topic)
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Guarantee {
    /// Offsets committed after the outputs are acknowledged; a crash may repeat alerts.
    #[default]
    AtLeastOnce,
    /// Kafka transactions: alerts, dead letters, state and offsets commit together.
    ExactlyOnce,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ProcessingConfig {
    pub guarantee: Guarantee,
    /// How far behind the newest event time an event may arrive and still count in windows.
    #[serde(with = "humantime_serde")]
    pub allowed_lateness: Duration,
    /// Inputs whose outputs await acknowledgement, at most (backpressure beyond).
    pub max_in_flight: usize,
    /// Longest wait for in-flight work on shutdown before giving up (offsets not committed).
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// Exactly-once: how long one transaction collects inputs before it commits (the
    /// latency floor of an alert; Kafka Streams uses 100 ms too).
    #[serde(with = "humantime_serde")]
    pub commit_interval: Duration,
    /// Exactly-once: most inputs in one transaction.
    pub max_batch: usize,
    /// This instance's stable name: the transactional id (`<group>-<instance_id>`, which
    /// fences a zombie of the same instance) and the static group membership, so a
    /// restarted instance takes its partitions back at once. Default: the host name
    /// (env `RISKSTREAM_INSTANCE_ID` overrides).
    pub instance_id: String,
    /// Several instances share the consumer group: events are re-keyed through
    /// `riskstream.repartition.<group>.<stream>` so each state key (site, region,
    /// suspect) lives on exactly one instance, and state moves with its partition. Runs
    /// in Kafka transactions whatever `guarantee` says (docs/STATE.md, "Scale-out").
    pub scale_out: bool,
}

impl ProcessingConfig {
    /// True when the pipeline runs in Kafka transactions.
    pub fn transactional(&self) -> bool {
        self.guarantee == Guarantee::ExactlyOnce || self.scale_out
    }

    /// The repartition topic of `stream` for consumer group `group` (scale-out); it has
    /// `state.partitions` partitions, one task each, aligned with the changelog's.
    pub fn repartition_topic(group: &str, stream: Stream) -> String {
        format!("riskstream.repartition.{group}.{}", stream.as_str())
    }
}

/// `[input]`: what riskstream believes of its input (docs/SECURITY.md): how far ahead
/// an event time may be, which values are measurements, what counts as a resend.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct InputConfig {
    /// `run`: an event time further ahead of the wall clock than this is dead-lettered
    /// (`ts_in_future`); device clocks drift by seconds, not minutes. `replay` and
    /// `backtest`: an event further ahead than this of its stream moves the watermark
    /// only once another key confirms the jump.
    #[serde(with = "humantime_serde")]
    pub max_future_skew: Duration,
    /// `replay` and `backtest` (no wall clock to trust): an event further ahead than
    /// this of its stream's newest time is dead-lettered unless another key confirms the
    /// jump (a recording's gap moves every key; a device's bad clock moves one).
    #[serde(with = "humantime_serde")]
    pub max_event_jump: Duration,
    /// Incident and fraud reports with an `id` seen within this much event time, and
    /// sensor readings with a `sensor_id` and `ts` seen within it, count once.
    #[serde(with = "humantime_serde")]
    pub dedup_window: Duration,
    /// Most report ids remembered per stream and window (bounded memory; a full window
    /// starts the next one early).
    pub dedup_max_ids: usize,
    /// Measuring range per sensor kind, `kind = [low, high]`, added to (or replacing)
    /// the built-in ones; a reading outside is a `sensor_fault`, never a hazard.
    pub ranges: BTreeMap<String, [f64; 2]>,
}

impl Default for InputConfig {
    fn default() -> Self {
        Self {
            max_future_skew: Duration::from_secs(300),
            max_event_jump: Duration::from_secs(86_400),
            dedup_window: Duration::from_secs(3600),
            dedup_max_ids: 1_000_000,
            ranges: BTreeMap::new(),
        }
    }
}

impl InputConfig {
    pub fn validate(&self, path: &str, problems: &mut Vec<String>) {
        for (name, d) in [
            ("max_future_skew", self.max_future_skew),
            ("max_event_jump", self.max_event_jump),
            ("dedup_window", self.dedup_window),
        ] {
            if d.is_zero() {
                problems.push(format!("{path}.{name}: must be > 0"));
            }
        }
        if self.dedup_max_ids == 0 {
            problems.push(format!("{path}.dedup_max_ids: must be >= 1"));
        }
        crate::decode::validate_ranges(&self.ranges, &format!("{path}.ranges"), problems);
    }

    /// What the detector set screens events with (replay and backtest: a jump limit).
    pub fn screen(&self) -> crate::detect::ScreenConfig {
        crate::detect::ScreenConfig {
            max_jump: Some(self.max_event_jump),
            hold: self.max_future_skew,
            window: self.dedup_window,
            max_ids: self.dedup_max_ids,
        }
    }

    /// The measuring ranges in force (built-in, then configured).
    pub fn ranges(&self) -> crate::decode::Ranges {
        crate::decode::Ranges::new(&self.ranges)
    }
}

/// `[state]`: durable detector state and alert episodes in compacted changelog topics.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StateConfig {
    /// Write state to the changelog and restore it on start. Exactly-once requires it.
    pub changelog: bool,
    /// Topics are `<topic_prefix><group_id>.<stream>`, so two groups never share state.
    pub topic_prefix: String,
    /// Partitions of a changelog topic riskstream creates (compacted, replication as the
    /// broker's default).
    pub partitions: i32,
    /// At-least-once: how often changed keys and the offsets they cover are committed
    /// (each key at most once per interval). Longer: fewer writes (a busy key changes on
    /// every event), more inputs replayed after a crash. Kafka Streams' default is 30 s.
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
}

impl Default for StateConfig {
    fn default() -> Self {
        Self {
            changelog: true,
            topic_prefix: "riskstream.state.".into(),
            partitions: 6,
            flush_interval: Duration::from_secs(30),
        }
    }
}

impl StateConfig {
    /// The changelog topic of `stream` for consumer group `group`.
    pub fn topic(&self, group: &str, stream: Stream) -> String {
        format!("{}{group}.{}", self.topic_prefix, stream.as_str())
    }
}

fn default_instance_id() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "riskstream".into())
}

impl Default for ProcessingConfig {
    fn default() -> Self {
        Self {
            guarantee: Guarantee::AtLeastOnce,
            allowed_lateness: Duration::from_secs(30),
            max_in_flight: 20_000,
            drain_timeout: Duration::from_secs(8),
            commit_interval: Duration::from_millis(100),
            max_batch: 10_000,
            instance_id: default_instance_id(),
            scale_out: false,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Address of /metrics, /healthz, /readyz. Loopback by default.
    pub addr: String,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            addr: "127.0.0.1:9464".into(),
        }
    }
}

/// `[registry]`: the monitoring points (SPEC "Monitoring points"): a point file read at
/// load, and the compacted topic `run` reads on start and follows while running.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryConfig {
    /// NDJSON, one point per line, relative to the config file; none by default.
    pub file: Option<PathBuf>,
    /// The compacted topic of points (key `sensor_id`; a tombstone removes the point).
    pub topic: String,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            file: None,
            topic: "sensor-registry".into(),
        }
    }
}

/// `[regions]`: either `file = "regions.toml"` (relative to the config file) or the
/// hierarchy inline (`[regions.city]`, `[[regions.county]]`).
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct RegionsConfig {
    pub file: Option<PathBuf>,
    #[serde(flatten)]
    pub inline: Option<RegionsFile>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DetectorsConfig {
    pub incidents: Vec<DetectorConfig>,
    pub sensors: Vec<DetectorConfig>,
    pub fraud: Vec<DetectorConfig>,
    /// False episodes per key and day that a detector with a budget may raise (each
    /// detector's own `false_alarms_per_day` overrides it).
    pub false_alarms_per_day: f64,
}

impl Default for DetectorsConfig {
    fn default() -> Self {
        use crate::detect::DetectorConfig as D;
        Self {
            incidents: vec![D::RateSpike(Default::default())],
            sensors: vec![
                D::Threshold(Default::default()),
                D::EwmaZ(Default::default()),
            ],
            fraud: vec![D::EntityBurst(Default::default())],
            false_alarms_per_day: crate::detect::tail::DEFAULT_FALSE_ALARMS_PER_DAY,
        }
    }
}

impl DetectorsConfig {
    pub fn per_stream(&self) -> Vec<(Stream, Vec<DetectorConfig>)> {
        vec![
            (Stream::Incidents, self.incidents.clone()),
            (Stream::Sensors, self.sensors.clone()),
            (Stream::Fraud, self.fraud.clone()),
        ]
    }
}

/// The whole configuration, after env overrides and validation.
#[derive(Debug, Clone)]
pub struct Config {
    pub kafka: KafkaConfig,
    pub topics: TopicsConfig,
    pub processing: ProcessingConfig,
    pub input: InputConfig,
    pub state: StateConfig,
    pub metrics: MetricsConfig,
    pub regions: Arc<Regions>,
    pub registry: RegistryConfig,
    /// The points in force: the file's at load, then the topic's (`run`). Shared by
    /// every clone of the config, so an update reaches every decoder built from it.
    pub points: Arc<crate::registry::Registry>,
    pub detectors: DetectorsConfig,
    pub alerts: AlertPolicyConfig,
    pub sinks: BTreeMap<String, SinkConfig>,
    pub console: ConsoleConfig,
}

impl Config {
    /// What every detector of this config is built with (a single instance's owner):
    /// the one place that turns config into a [`BuildCtx`], so `run`, `replay`, `score`
    /// and `backtest` judge with the same budget.
    /// The decoder of this config (its regions and measuring ranges; no wall-clock check,
    /// which `run` adds: [`crate::pipeline::Pipeline::live`]).
    pub fn decoder(&self) -> crate::decode::Decoder {
        crate::decode::Decoder::new(self.regions.clone())
            .with_ranges(self.input.ranges())
            .with_points(self.points.clone())
    }

    pub fn build_ctx(&self) -> BuildCtx {
        BuildCtx {
            false_alarms_per_day: self.detectors.false_alarms_per_day,
            ranges: Arc::new(self.input.ranges()),
            screen: self.input.screen(),
            points: self.points.clone(),
            ..BuildCtx::new(self.regions.clone())
        }
    }
}

/// Every problem found in a config, one per line, each with its path.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{}", .problems.join("\n"))]
pub struct ConfigError {
    pub problems: Vec<String>,
}

const SECTIONS: &[&str] = &[
    "kafka",
    "topics",
    "processing",
    "input",
    "state",
    "metrics",
    "regions",
    "registry",
    "detectors",
    "alerts",
    "sinks",
    "console",
];

/// Deserializes one value, recording a failure under `path` and returning the default.
fn section<T: DeserializeOwned + Default>(
    v: Option<&toml::Value>,
    path: &str,
    problems: &mut Vec<String>,
) -> T {
    let Some(v) = v else { return T::default() };
    match serde_path_to_error::deserialize::<_, T>(v.clone()) {
        Ok(t) => t,
        Err(e) => {
            let inner = e.path().to_string();
            let at = if inner.is_empty() || inner == "." {
                path.to_string()
            } else {
                format!("{path}.{inner}")
            };
            let mut message = e.into_inner().to_string();
            if redact::is_secret_path(&at) {
                // serde quotes the offending value: not for a password.
                message = redact::quoted(&message);
            }
            problems.push(format!("{at}: {message}"));
            T::default()
        }
    }
}

/// A kafka sink must not publish incident messages to an input topic: the incidents
/// stream's default topic is `incidents`, and its messages would come back as invalid
/// incident reports. Nor may two kafka sinks publish them to one topic: each would
/// write every message (sinks that split alerts by level keep `incidents_topic` on one
/// of them only).
fn incident_topics_apart(
    sinks: &BTreeMap<String, SinkConfig>,
    topics: &TopicsConfig,
    problems: &mut Vec<String>,
) {
    let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
    for (name, s) in sinks {
        let SinkConfig::Kafka(k) = s else { continue };
        let topic = k.incidents_topic.trim();
        if topic.is_empty() {
            continue;
        }
        if let Some(first) = seen.insert(topic, name) {
            problems.push(format!(
                "sinks.{name}.incidents_topic: `{topic}` is also sinks.{first}'s; \
                 set incidents_topic = \"\" on all but one"
            ));
        }
        if let Some(stream) = topics.stream_of(topic) {
            problems.push(format!(
                "sinks.{name}.incidents_topic: `{}` is the {stream} input topic; \
                 incident messages need a topic of their own",
                k.incidents_topic
            ));
        }
    }
}

/// The points of `[registry] file`, every bad line a problem (`registry.file: ...`).
fn load_points(
    registry: &RegistryConfig,
    base: &Path,
    problems: &mut Vec<String>,
) -> Arc<crate::registry::Registry> {
    if registry.topic.trim().is_empty() {
        problems.push("registry.topic: must not be empty".into());
    }
    let Some(file) = &registry.file else {
        return Arc::default();
    };
    match crate::registry::load_file(&base.join(file)) {
        Ok(points) => Arc::new(crate::registry::Registry::with_points(points)),
        Err(e) => {
            problems.extend(
                e.problems
                    .into_iter()
                    .map(|p| format!("registry.file: {p}")),
            );
            Arc::default()
        }
    }
}

/// Loads and validates a config file, applying environment overrides.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        problems: vec![format!("{}: cannot read: {e}", path.display())],
    })?;
    let env: Vec<(String, String)> = [
        "RISKSTREAM_BROKERS",
        "RISKSTREAM_METRICS_ADDR",
        "RISKSTREAM_INSTANCE_ID",
    ]
    .iter()
    .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
    .collect();
    from_str(&text, path.parent().unwrap_or(Path::new(".")), &env)
}

/// Parses a config text; `base` resolves relative paths, `env` holds the overrides.
///
/// Problems are listed in the order of the steps below (each section parsed, then the
/// checks across sections), which is the order `check-config` prints them in.
pub fn from_str(text: &str, base: &Path, env: &[(String, String)]) -> Result<Config, ConfigError> {
    let mut problems = Vec::new();
    let table: toml::Table = toml::from_str(text).map_err(|e| ConfigError {
        // The error quotes the source line, which may hold a password.
        problems: vec![redact::toml_error(&format!(
            "config is not valid TOML: {e}"
        ))],
    })?;
    unknown_sections(&table, &mut problems);
    let mut kafka: KafkaConfig = section(table.get("kafka"), "kafka", &mut problems);
    let topics: TopicsConfig = section(table.get("topics"), "topics", &mut problems);
    let mut processing: ProcessingConfig =
        section(table.get("processing"), "processing", &mut problems);
    let input: InputConfig = section(table.get("input"), "input", &mut problems);
    let state: StateConfig = section(table.get("state"), "state", &mut problems);
    let mut metrics: MetricsConfig = section(table.get("metrics"), "metrics", &mut problems);
    let regions_cfg: RegionsConfig = section(table.get("regions"), "regions", &mut problems);
    let registry: RegistryConfig = section(table.get("registry"), "registry", &mut problems);
    let points = load_points(&registry, base, &mut problems);
    let alerts: AlertPolicyConfig = section(table.get("alerts"), "alerts", &mut problems);
    let console: ConsoleConfig = section(table.get("console"), "console", &mut problems);
    let detectors = detectors_section(table.get("detectors"), &mut problems);
    let sinks = sinks_section(table.get("sinks"), &mut problems);
    incident_topics_apart(&sinks, &topics, &mut problems);

    apply_env(env, &mut kafka, &mut metrics, &mut processing);
    check_kafka(&kafka, &mut problems);
    check_topics(&topics, &mut problems);
    if processing.max_in_flight == 0 {
        problems.push("processing.max_in_flight: must be >= 1".into());
    }
    for (s, list) in detectors.per_stream() {
        if list.len() > 64 {
            problems.push(format!(
                "detectors.{}: at most 64 detectors per stream (found {})",
                s.as_str(),
                list.len()
            ));
        }
    }
    input.validate("input", &mut problems);
    check_processing(&processing, &kafka, &state, &mut problems);
    check_state(&state, &mut problems);
    if metrics.addr.parse::<std::net::SocketAddr>().is_err() {
        problems.push(format!(
            "metrics.addr: `{}` is not an address like 127.0.0.1:9464",
            metrics.addr
        ));
    }
    alerts.validate("alerts", &mut problems);
    check_rate_spike_windows(&detectors, &processing, &mut problems);
    let regions = regions_section(&regions_cfg, base, &mut problems);
    console.validate("console", regions.as_deref(), &mut problems);

    match regions {
        Some(regions) if problems.is_empty() => Ok(Config {
            kafka,
            topics,
            processing,
            input,
            state,
            metrics,
            regions,
            registry,
            points,
            detectors,
            alerts,
            sinks,
            console,
        }),
        _ => Err(ConfigError { problems }),
    }
}

/// The environment overrides, which beat the file (see the module docs).
fn apply_env(
    env: &[(String, String)],
    kafka: &mut KafkaConfig,
    metrics: &mut MetricsConfig,
    processing: &mut ProcessingConfig,
) {
    for (k, v) in env {
        match k.as_str() {
            "RISKSTREAM_BROKERS" => kafka.brokers = v.clone(),
            "RISKSTREAM_METRICS_ADDR" => metrics.addr = v.clone(),
            _ => {}
        }
    }
    if let Some((_, v)) = env.iter().find(|(k, _)| k == "RISKSTREAM_INSTANCE_ID") {
        processing.instance_id = v.clone();
    }
}

fn unknown_sections(table: &toml::Table, problems: &mut Vec<String>) {
    for k in table.keys() {
        if !SECTIONS.contains(&k.as_str()) {
            problems.push(format!(
                "{k}: unknown section (expected one of {})",
                SECTIONS.join(", ")
            ));
        }
    }
}

/// `[detectors]`: the budget and each stream's list, each list element on its own, so
/// every bad one is reported.
fn detectors_section(d: Option<&toml::Value>, problems: &mut Vec<String>) -> DetectorsConfig {
    let mut detectors = DetectorsConfig::default();
    let Some(d) = d else { return detectors };
    let Some(t) = d.as_table() else {
        problems.push("detectors: must be a table of per-stream lists".into());
        return detectors;
    };
    for (k, v) in t {
        if k == "false_alarms_per_day" {
            match v.as_float().or_else(|| v.as_integer().map(|i| i as f64)) {
                Some(b) => {
                    crate::detect::tail::validate_budget(
                        b,
                        "detectors.false_alarms_per_day",
                        problems,
                    );
                    detectors.false_alarms_per_day = b;
                }
                None => problems.push("detectors.false_alarms_per_day: must be a number".into()),
            }
        } else if Stream::parse(k).is_none() {
            problems.push(format!(
                "detectors.{k}: unknown stream (expected incidents, sensors, fraud, or false_alarms_per_day)"
            ));
        }
    }
    for s in Stream::ALL {
        let Some(v) = t.get(s.as_str()) else { continue };
        let Some(arr) = v.as_array() else {
            problems.push(format!(
                "detectors.{s}: must be a list ([[detectors.{s}]] tables)"
            ));
            continue;
        };
        let list = detector_list(s, arr, problems);
        match s {
            Stream::Incidents => detectors.incidents = list,
            Stream::Sensors => detectors.sensors = list,
            Stream::Fraud => detectors.fraud = list,
        }
    }
    detectors
}

/// One stream's `[[detectors.STREAM]]` tables; a bad one is a problem and left out.
fn detector_list(
    s: Stream,
    arr: &[toml::Value],
    problems: &mut Vec<String>,
) -> Vec<DetectorConfig> {
    let mut list = Vec::new();
    for (i, item) in arr.iter().enumerate() {
        let path = format!("detectors.{s}[{i}]");
        match serde_path_to_error::deserialize::<_, DetectorConfig>(item.clone()) {
            Ok(c) => {
                if !c.streams().contains(&s) {
                    problems.push(format!(
                        "{path}.type: `{}` does not work on the {s} stream",
                        c.name()
                    ));
                }
                c.validate(&path, problems);
                list.push(c);
            }
            Err(e) => {
                let inner = e.path().to_string();
                let at = if inner.is_empty() || inner == "." {
                    path
                } else {
                    format!("{path}.{inner}")
                };
                problems.push(format!("{at}: {}", e.into_inner()));
            }
        }
    }
    list
}

/// `[sinks.NAME]` tables; without a `[sinks]` section, one default kafka sink `alerts`.
fn sinks_section(
    v: Option<&toml::Value>,
    problems: &mut Vec<String>,
) -> BTreeMap<String, SinkConfig> {
    let mut sinks = BTreeMap::new();
    let Some(v) = v else {
        sinks.insert("alerts".to_string(), SinkConfig::default());
        return sinks;
    };
    let Some(t) = v.as_table() else {
        problems.push("sinks: must be a table of [sinks.NAME] tables".into());
        return sinks;
    };
    for (name, item) in t {
        let path = format!("sinks.{name}");
        let c: Option<SinkConfig> = {
            let mut p = Vec::new();
            let c = section::<Option<SinkConfig>>(Some(item), &path, &mut p);
            problems.extend(p);
            c
        };
        if let Some(c) = c {
            c.validate(&path, problems);
            sinks.insert(name.clone(), c);
        }
    }
    sinks
}

fn check_kafka(kafka: &KafkaConfig, problems: &mut Vec<String>) {
    if kafka.brokers.trim().is_empty() {
        problems.push("kafka.brokers: must not be empty".into());
    }
    if kafka.group_id.trim().is_empty() {
        problems.push("kafka.group_id: must not be empty".into());
    }
    if !["earliest", "latest"].contains(&kafka.auto_offset_reset.as_str()) {
        problems.push("kafka.auto_offset_reset: must be \"earliest\" or \"latest\"".into());
    }
    for k in kafka.properties.keys() {
        if ["enable.auto.offset.store", "group.id", "bootstrap.servers"].contains(&k.as_str()) {
            problems.push(format!(
                "kafka.properties.\"{k}\": set by riskstream itself; use the typed key instead"
            ));
        }
    }
}

fn check_topics(topics: &TopicsConfig, problems: &mut Vec<String>) {
    for s in Stream::ALL {
        if topics.input(s).trim().is_empty() {
            problems.push(format!(
                "topics.{}: must not be empty",
                match s {
                    Stream::Incidents => "incidents",
                    Stream::Sensors => "sensors",
                    Stream::Fraud => "fraud",
                }
            ));
        }
    }
}

/// `[processing]` (after the instance id's override) and what scale-out and
/// exactly-once require of `[kafka]` and `[state]`.
fn check_processing(
    processing: &ProcessingConfig,
    kafka: &KafkaConfig,
    state: &StateConfig,
    problems: &mut Vec<String>,
) {
    if processing.max_batch == 0 {
        problems.push("processing.max_batch: must be >= 1".into());
    }
    if processing.commit_interval.is_zero() {
        problems.push("processing.commit_interval: must be > 0".into());
    }
    if processing.instance_id.trim().is_empty() {
        problems.push("processing.instance_id: must not be empty".into());
    }
    if processing.scale_out
        && kafka
            .properties
            .get("partition.assignment.strategy")
            .is_some_and(|v| v.contains("cooperative"))
    {
        // A rebalance drops every task and rewinds to the committed offsets, which an
        // incremental (cooperative) assignment would not reset for kept partitions.
        problems.push(
            "kafka.properties.\"partition.assignment.strategy\": cooperative assignment \
             is not supported with processing.scale_out (use range or roundrobin)"
                .into(),
        );
    }
    if processing.scale_out && !state.changelog {
        problems.push(
            "state.changelog: must be true with processing.scale_out = true \
             (state moves between instances through the changelog)"
                .into(),
        );
    }
    if processing.guarantee == Guarantee::ExactlyOnce && !state.changelog {
        problems.push(
            "state.changelog: must be true with processing.guarantee = \"exactly_once\" \
             (state must roll back with an aborted transaction)"
                .into(),
        );
    }
}

fn check_state(state: &StateConfig, problems: &mut Vec<String>) {
    if state.topic_prefix.trim().is_empty() {
        problems.push("state.topic_prefix: must not be empty".into());
    }
    if state.partitions < 1 {
        problems.push("state.partitions: must be >= 1".into());
    }
    if state.flush_interval.is_zero() {
        problems.push("state.flush_interval: must be > 0".into());
    }
}

/// Every rate_spike window (incidents and fraud) at least `processing.allowed_lateness`.
fn check_rate_spike_windows(
    detectors: &DetectorsConfig,
    processing: &ProcessingConfig,
    problems: &mut Vec<String>,
) {
    for (i, d) in detectors
        .incidents
        .iter()
        .chain(&detectors.fraud)
        .enumerate()
    {
        if let DetectorConfig::RateSpike(r) = d {
            if r.window < processing.allowed_lateness {
                problems.push(format!(
                    "detectors: rate_spike window ({:?}) must be >= processing.allowed_lateness (entry {i})",
                    r.window
                ));
            }
        }
    }
}

/// `[regions]`: a file (default `regions.toml` beside the config) or the hierarchy
/// inline; `None` when neither loads (a problem says why).
fn regions_section(
    regions_cfg: &RegionsConfig,
    base: &Path,
    problems: &mut Vec<String>,
) -> Option<Arc<Regions>> {
    let regions = match (&regions_cfg.file, &regions_cfg.inline) {
        (Some(_), Some(_)) => {
            problems.push("regions: give either `file` or the hierarchy inline, not both".into());
            None
        }
        (Some(f), None) => Some(Regions::from_file(&base.join(f))),
        (None, Some(inline)) => Some(Regions::new(inline.clone())),
        (None, None) => Some(Regions::from_file(&base.join("regions.toml"))),
    };
    match regions {
        Some(Ok(r)) => Some(Arc::new(r)),
        Some(Err(e)) => {
            problems.push(format!("regions: {e}"));
            None
        }
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config")
    }

    #[test]
    fn shipped_default_config_is_valid() {
        let c = load(&root().join("default.toml")).unwrap();
        assert_eq!(c.kafka.brokers, "127.0.0.1:9092");
        assert_eq!(c.topics.sensors, "sensor-readings");
        assert!(!c.detectors.sensors.is_empty());
        assert!(c.sinks.contains_key("alerts"));
    }

    #[test]
    fn every_problem_is_listed_with_its_path() {
        let text = r#"
            bogus = 1
            [kafka]
            brokers = ""
            [processing]
            allowed_lateness = "soon"
            [[detectors.sensors]]
            type = "ewma_z"
            z_threshold = -1.0
            [[detectors.sensors]]
            type = "threshold"
            [[detectors.sensors]]
            type = "ewma_z"
            z_treshold = 3.0
            [[detectors.sensors]]
            type = "entity_burst"
        "#;
        let e = from_str(text, &root(), &[]).unwrap_err();
        let all = e.problems.join("\n");
        for want in [
            "bogus: unknown section",
            "kafka.brokers: must not be empty",
            "processing.allowed_lateness",
            "detectors.sensors[0].z_threshold: must be > 0",
            "detectors.sensors[2]",
            "z_treshold",
            "detectors.sensors[3].type: `entity_burst` does not work on the sensors stream",
        ] {
            assert!(all.contains(want), "missing `{want}` in:\n{all}");
        }
        assert!(e.problems.len() >= 6, "{all}");
    }

    /// `[registry] file` is relative to the config file; every bad line of it is a
    /// problem naming the file, the line and the field; unknown keys are errors.
    #[test]
    fn registry_points_load_relative_to_the_config_and_bad_lines_are_listed() {
        let dir = tempfile::tempdir().unwrap();
        let regions = root().join("regions.toml");
        let cfg = |extra: &str| {
            format!(
                "[regions]\nfile = \"{}\"\n[registry]\n{extra}",
                regions.display()
            )
        };
        std::fs::write(
            dir.path().join("points.ndjson"),
            "{\"sensor_id\":\"S-1\",\"limits\":{\"h\":150.0,\"hh\":160.0}}\n",
        )
        .unwrap();
        let c = from_str(&cfg("file = \"points.ndjson\"\n"), dir.path(), &[]).unwrap();
        assert_eq!(c.registry.topic, "sensor-registry");
        assert_eq!(c.points.get("S-1").unwrap().limits.hh, Some(160.0));
        // The config's clones share the points: an update reaches every decoder.
        let copy = c.clone();
        c.points.remove("S-1");
        assert!(copy.points.get("S-1").is_none());

        std::fs::write(
            dir.path().join("bad.ndjson"),
            "{\"sensor_id\":\"S-1\"}\n{\"sensor_id\":\"S-2\",\"limits\":{\"h\":5,\"hh\":4}}\n{\"sensor_id\":\"S-3\",\"range\":[1]}\n",
        )
        .unwrap();
        let e = from_str(
            &cfg("file = \"bad.ndjson\"\ntopic = \"\"\nfiel = 1\n"),
            dir.path(),
            &[],
        )
        .unwrap_err();
        let all = e.problems.join("\n");
        // `fiel` stops the section's parse, so its file is not read: fix that first.
        assert!(all.contains("registry.fiel: unknown field `fiel`"), "{all}");
        let e = from_str(
            &cfg("file = \"bad.ndjson\"\ntopic = \"\"\n"),
            dir.path(),
            &[],
        )
        .unwrap_err();
        let all = e.problems.join("\n");
        for want in [
            "registry.topic: must not be empty",
            "bad.ndjson:2: limits.hh: must be > h (5)",
            "bad.ndjson:3: range:",
        ] {
            assert!(all.contains(want), "missing `{want}` in:\n{all}");
        }
        assert_eq!(e.problems.len(), 3, "{all}");
        let e = from_str(&cfg("file = \"missing.ndjson\"\n"), dir.path(), &[]).unwrap_err();
        assert!(e.problems[0].starts_with("registry.file: "), "{e:?}");
        assert!(e.problems[0].contains("cannot read"), "{e:?}");
    }

    #[test]
    fn input_checks_are_validated_and_ranges_add_to_the_defaults() {
        let e = from_str(
            "[input]\nmax_future_skew = \"0s\"\ndedup_max_ids = 0\n[input.ranges]\nflow = [5.0, 1.0]\n",
            &root(),
            &[],
        )
        .unwrap_err();
        let all = e.problems.join("\n");
        for want in [
            "input.max_future_skew: must be > 0",
            "input.dedup_max_ids: must be >= 1",
            "input.ranges.flow: must be [low, high]",
        ] {
            assert!(all.contains(want), "missing `{want}` in:\n{all}");
        }
        let c = from_str("[input.ranges]\nflow = [0.0, 500.0]\n", &root(), &[]).unwrap();
        let r = c.input.ranges();
        assert_eq!(r.get("flow"), Some([0.0, 500.0]));
        assert!(r.get("gas_lel").is_some(), "built-in ranges stay");
        assert_eq!(c.build_ctx().screen.max_jump, Some(c.input.max_event_jump));
    }

    #[test]
    fn incident_settings_are_checked() {
        let c = from_str("", &root(), &[]).unwrap();
        assert_eq!(
            c.alerts.incidents.join_gap,
            crate::alert::incident::DEFAULT_JOIN_GAP
        );
        let c = from_str("[alerts.incidents]\njoin_gap = \"10m\"\n", &root(), &[]).unwrap();
        assert_eq!(c.alerts.incidents.join_gap, Duration::from_secs(600));
        let text = r#"
            [alerts.incidents]
            join_gap = "0s"
            max_members = 0
            [sinks.a]
            type = "kafka"
            incidents_topic = "incidents"
            [sinks.b]
            type = "kafka"
            topic = "alerts.red"
            [sinks.c]
            type = "kafka"
            topic = "alerts.all"
        "#;
        let all = from_str(text, &root(), &[])
            .unwrap_err()
            .problems
            .join("\n");
        for want in [
            "alerts.incidents.join_gap: must be > 0",
            "alerts.incidents.max_members: must be >= 1",
            "sinks.a.incidents_topic: `incidents` is the incidents input topic",
            "sinks.c.incidents_topic: `alerts.incidents` is also sinks.b's",
        ] {
            assert!(all.contains(want), "missing `{want}` in:\n{all}");
        }
        let e = from_str("[alerts.incidents]\ngap = \"1m\"\n", &root(), &[]).unwrap_err();
        assert!(e.problems[0].contains("alerts.incidents"), "{e}");
    }

    #[test]
    fn scale_out_needs_the_changelog_and_names_its_topics() {
        let e = from_str(
            "[processing]\nscale_out = true\n[state]\nchangelog = false\n",
            &root(),
            &[],
        )
        .unwrap_err();
        assert!(
            e.problems
                .iter()
                .any(|p| p.starts_with("state.changelog: must be true with processing.scale_out")),
            "{:?}",
            e.problems
        );
        let e = from_str(
            "[processing]\nscale_out = true\n[kafka.properties]\n\"partition.assignment.strategy\" = \"cooperative-sticky\"\n",
            &root(),
            &[],
        )
        .unwrap_err();
        assert!(
            e.problems[0].contains("partition.assignment.strategy"),
            "{:?}",
            e.problems
        );
        let c = from_str("[processing]\nscale_out = true\n", &root(), &[]).unwrap();
        assert!(
            c.processing.transactional(),
            "scale-out runs in transactions"
        );
        assert_eq!(
            ProcessingConfig::repartition_topic("g1", Stream::Sensors),
            "riskstream.repartition.g1.sensors"
        );
        assert!(
            !load(&root().join("default.toml"))
                .unwrap()
                .processing
                .scale_out
        );
    }

    #[test]
    fn console_section_is_typed_and_checked() {
        let c = load(&root().join("default.toml")).unwrap();
        assert!(c.console.enabled);
        assert_eq!(c.console.addr, "127.0.0.1:9465");
        assert_eq!(c.console.actions_topic, "alert-actions");
        let text = r#"
            [console]
            enabled = true
            addr = "nowhere"
            colour = "red"
            [[console.tokens]]
            token = "short"
            center = "999999"
        "#;
        let e = from_str(text, &root(), &[]).unwrap_err();
        assert!(e.problems.join("\n").contains("colour"), "{:?}", e.problems);
        let text = r#"
            [console]
            addr = "nowhere"
            [console.ack_limits]
            red = "2m"
            [[console.tokens]]
            token = "short"
            center = "999999"
        "#;
        let e = from_str(text, &root(), &[]).unwrap_err();
        let all = e.problems.join("\n");
        for want in [
            "console.addr",
            "console.tokens[0].token: must be at least 8",
            "console.tokens[0].center: `999999`",
        ] {
            assert!(all.contains(want), "missing `{want}` in:\n{all}");
        }
        let ok = from_str(
            "[console]\n[console.ack_limits]\nred = \"2m\"\n[[console.tokens]]\ntoken = \"0123456789\"\ncenter = \"330503\"\n",
            &root(),
            &[],
        )
        .unwrap();
        assert_eq!(ok.console.ack_limits.red, Duration::from_secs(120));
        assert_eq!(ok.console.ack_limits.blue, Duration::from_secs(4 * 3600));
        assert!(!format!("{:?}", ok.console).contains("0123456789"));
    }

    #[test]
    fn listeners_default_to_loopback() {
        let loopback = |a: &str| {
            a.parse::<std::net::SocketAddr>()
                .unwrap()
                .ip()
                .is_loopback()
        };
        assert!(loopback(&MetricsConfig::default().addr));
        assert!(loopback(&ConsoleConfig::default().addr));
        // No [metrics] or [console] section at all: the built-in defaults.
        let c = from_str("", &root(), &[]).unwrap();
        assert!(loopback(&c.metrics.addr), "{}", c.metrics.addr);
        assert!(loopback(&c.console.addr), "{}", c.console.addr);
        assert!(!c.console.enabled);
        // The shipped config keeps them on loopback too.
        let c = load(&root().join("default.toml")).unwrap();
        assert!(loopback(&c.metrics.addr), "{}", c.metrics.addr);
        assert!(loopback(&c.console.addr), "{}", c.console.addr);
    }

    #[test]
    fn secrets_never_appear_in_debug_or_problems() {
        let text = r#"
            [kafka.properties]
            "security.protocol" = "SASL_SSL"
            "sasl.username" = "riskstream"
            "sasl.password" = "pw-in-debug-1"
            "ssl.key.password" = "pw-in-debug-2"
            "sasl.oauthbearer.client.secret" = "pw-in-debug-3"
        "#;
        let c = from_str(text, &root(), &[]).unwrap();
        let debug = format!("{c:?}");
        for s in ["pw-in-debug-1", "pw-in-debug-2", "pw-in-debug-3"] {
            assert!(!debug.contains(s), "{debug}");
        }
        assert!(debug.contains("SASL_SSL") && debug.contains("sasl.password"));
        // The real value still reaches librdkafka.
        assert_eq!(c.kafka.properties["sasl.password"], "pw-in-debug-1");

        // A value of the wrong type: serde would quote it.
        let e = from_str(
            "[kafka.properties]\n\"sasl.password\" = 918273645\n",
            &root(),
            &[],
        )
        .unwrap_err();
        let all = e.problems.join(
            "
",
        );
        assert!(all.contains("kafka.properties.sasl.password"), "{all}");
        assert!(!all.contains("918273645"), "{all}");
        // A TOML syntax error quotes the line.
        let e = from_str(
            "[kafka.properties]\n\"sasl.password\" = \"unterminated-pw\n",
            &root(),
            &[],
        )
        .unwrap_err();
        let all = e.problems.join(
            "
",
        );
        assert!(all.contains("not valid TOML"), "{all}");
        assert!(!all.contains("unterminated-pw"), "{all}");
    }

    #[test]
    fn env_overrides_the_file() {
        let env = vec![
            (
                "RISKSTREAM_BROKERS".to_string(),
                "10.0.0.1:9092".to_string(),
            ),
            (
                "RISKSTREAM_METRICS_ADDR".to_string(),
                "127.0.0.1:19464".to_string(),
            ),
        ];
        let c = from_str("[kafka]\nbrokers = \"x:1\"\n", &root(), &env).unwrap();
        assert_eq!(c.kafka.brokers, "10.0.0.1:9092");
        assert_eq!(c.metrics.addr, "127.0.0.1:19464");
    }

    #[test]
    fn unknown_keys_in_nested_tables_are_errors() {
        let e = from_str("[alerts]\nresolve_afterr = \"5m\"\n", &root(), &[]).unwrap_err();
        assert!(e.problems[0].contains("resolve_afterr"), "{:?}", e.problems);
        let e = from_str(
            "[sinks.x]\ntype = \"kafka\"\ntopicc = \"a\"\n",
            &root(),
            &[],
        )
        .unwrap_err();
        assert!(
            e.problems.join("\n").contains("sinks.x"),
            "{:?}",
            e.problems
        );
    }
}
