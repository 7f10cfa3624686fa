//! Every metric riskstream exports, in one place. Labels stay low-cardinality: stream,
//! detector, level, status, reason, sink, and topic/partition for lag (bounded by the
//! partition count); never a sensor id, phone number or region code of unbounded count.
//! The console's and the alarm KPIs' metrics carry `center`, a command-center code: bounded by the region
//! hierarchy (one city, its counties and townships: 77 in the demo city), so acceptable.
//!
//! Console rates are left to PromQL rather than exported as gauges: a ratio over a
//! chosen range (`increase(...[7d])`) is what a review wants, it survives restarts and
//! aggregates across instances, while a lifetime-ratio gauge does neither:
//!   timeliness    = sum by (level, center) (increase(riskstream_console_acks_total{within_limit="true"}[7d]))
//!                 / sum by (level, center) (increase(riskstream_console_acks_total[7d]))
//!   effectiveness = sum by (level, center) (increase(riskstream_console_closed_total{outcome="handled"}[7d]))
//!                 / sum by (level, center) (increase(riskstream_console_closed_total[7d]))

use prometheus::core::Collector;
use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::alert::{Alert, Incident};
use crate::decode::{InvalidReason, Stream};

static SINK_DROPPED: std::sync::LazyLock<IntCounterVec> = std::sync::LazyLock::new(|| {
    IntCounterVec::new(
        Opts::new(
            "riskstream_sink_dropped_total",
            "Deliveries a sink dropped by its own policy (webhook when_full = \"drop_oldest\").",
        ),
        &["sink"],
    )
    .expect("valid metric")
});

/// `riskstream_sink_dropped_total{sink}`. Process-wide because sinks are built without a
/// [`Metrics`] handle; every [`Metrics`] registry exports this same counter.
pub fn sink_dropped() -> &'static IntCounterVec {
    &SINK_DROPPED
}

pub struct Metrics {
    registry: Registry,
    /// The per-stream children of the per-event counters, resolved once: a label lookup
    /// hashes the label values on every call, and these run for every input.
    consumed_by_stream: [prometheus::IntCounter; 3],
    late_by_stream: [prometheus::IntCounter; 3],
    duplicate_by_stream: [prometheus::IntCounter; 3],
    pub events_consumed: IntCounterVec,
    pub events_invalid: IntCounterVec,
    pub events_late: IntCounterVec,
    pub events_duplicate: IntCounterVec,
    pub unknown_region: IntCounterVec,
    pub alerts: IntCounterVec,
    pub event_to_alert: Histogram,
    pub consumer_lag: IntGaugeVec,
    pub open_episodes: IntGauge,
    pub incidents: IntCounterVec,
    pub open_incidents: IntGauge,
    pub detector_keys: IntGauge,
    pub sink_errors: IntCounterVec,
    pub sink_seconds: prometheus::HistogramVec,
    pub sink_dropped: IntCounterVec,
    pub in_flight: IntGauge,
    pub watermark: prometheus::GaugeVec,
    pub build_info: Gauge,
    pub console_time_to_ack: prometheus::HistogramVec,
    pub console_acks: IntCounterVec,
    pub console_closed: IntCounterVec,
    pub console_false_alarms: IntCounterVec,
    pub budget_verdicts_applied: IntCounterVec,
    pub console_denied: IntCounterVec,
    pub console_clients: IntGauge,
    pub incidents_escalated: IntCounterVec,
    /// Anomalous signals a shelf silenced (src/alert/shelve.rs).
    pub alerts_shelved: IntCounterVec,
    pub state_writes: IntCounterVec,
    pub state_restore_seconds: Gauge,
    pub state_restored_records: IntGauge,
    pub transactions: IntCounterVec,
    /// Monitoring points in the registry (src/registry).
    pub registry_points: IntGauge,
    /// Registry topic records by result: `upserted`, `removed`, `rejected`.
    pub registry_records: IntCounterVec,
    /// The alarm KPIs per command center (src/alert/kpi.rs), all labelled `center`.
    pub kpi: KpiMetrics,
}

/// ISA-18.2 alarm KPIs per command center, mirrored from [`crate::alert::KpiTracker`]:
/// the counters are set to its cumulative figures, the gauges to its current ones.
pub struct KpiMetrics {
    pub activations: IntCounterVec,
    pub rate_10m: IntGaugeVec,
    pub in_flood: IntGaugeVec,
    pub floods: IntCounterVec,
    pub flood_seconds: IntCounterVec,
    pub chattering: IntCounterVec,
    pub stale: IntGaugeVec,
}

impl KpiMetrics {
    fn new(r: &Registry) -> Self {
        let gauge = |name: &str, help: &str| {
            let g = IntGaugeVec::new(Opts::new(name, help), &["center"]).expect("valid metric");
            r.register(Box::new(g.clone())).expect("unique metric");
            g
        };
        Self {
            activations: counter(
                r,
                "riskstream_alarm_activations_total",
                "Alarm activations (episodes opened or re-opened) routed to each command center.",
                &["center"],
            ),
            rate_10m: gauge(
                "riskstream_alarm_rate_10m",
                "Alarm activations routed to each command center in the last 10 event-time minutes (ISA-18.2: about 1 is manageable, more than 10 is a flood).",
            ),
            in_flood: gauge(
                "riskstream_alarm_in_flood",
                "1 while a command center is in an alarm flood (more than 10 activations within 600 s of event time), else 0.",
            ),
            floods: counter(
                r,
                "riskstream_alarm_floods_total",
                "Alarm floods begun per command center (more than 10 activations within 600 s).",
                &["center"],
            ),
            flood_seconds: counter(
                r,
                "riskstream_alarm_flood_seconds_total",
                "Event-time seconds each command center spent in an alarm flood.",
                &["center"],
            ),
            chattering: counter(
                r,
                "riskstream_alarm_chattering_total",
                "Activations that were one point's third (or later) within 60 s: chattering alarms, per command center.",
                &["center"],
            ),
            stale: gauge(
                "riskstream_alarms_stale",
                "Open alarms routed to each command center that have been open more than 24 h of event time.",
            ),
        }
    }

    /// Creates every series of `center` at zero, so dashboards and rules see it from start.
    pub fn center(&self, center: &str) {
        self.set(center, &crate::alert::kpi::CenterFigures::default());
    }

    /// Mirrors `center`'s figures. A counter only ever rises to the tracker's total.
    pub fn set(&self, center: &str, f: &crate::alert::kpi::CenterFigures) {
        let l = [center];
        let rise = |c: &IntCounterVec, to: u64| {
            let c = c.with_label_values(&l);
            c.inc_by(to.saturating_sub(c.get()));
        };
        rise(&self.activations, f.activations);
        rise(&self.floods, f.floods);
        rise(&self.flood_seconds, f.flood_seconds);
        rise(&self.chattering, f.chatter);
        self.rate_10m
            .with_label_values(&l)
            .set(i64::from(f.rate_10m));
        self.in_flood
            .with_label_values(&l)
            .set(i64::from(f.in_flood));
        self.stale.with_label_values(&l).set(i64::from(f.stale));
    }
}

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    register(r, c)
}

/// `counter` with these label values' series created at zero.
fn counter_with(
    r: &Registry,
    name: &str,
    help: &str,
    label: &str,
    values: &[&str],
) -> IntCounterVec {
    let c = counter(r, name, help, &[label]);
    for v in values {
        c.with_label_values(&[v]);
    }
    c
}

fn int_gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    register(r, IntGauge::new(name, help).expect("valid"))
}

fn gauge(r: &Registry, name: &str, help: &str) -> Gauge {
    register(r, Gauge::new(name, help).expect("valid"))
}

fn histogram(r: &Registry, name: &str, help: &str, buckets: &[f64]) -> Histogram {
    let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
    register(r, Histogram::with_opts(opts).expect("valid histogram"))
}

fn histogram_vec(
    r: &Registry,
    name: &str,
    help: &str,
    buckets: &[f64],
    labels: &[&str],
) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
    register(r, HistogramVec::new(opts, labels).expect("valid histogram"))
}

fn register<C: Collector + Clone + 'static>(r: &Registry, c: C) -> C {
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

/// `riskstream_build_info`: always 1, the version a label.
fn build_info(r: &Registry) -> Gauge {
    let g = Gauge::with_opts(
        Opts::new("riskstream_build_info", "Always 1; the version is a label.")
            .const_label("version", env!("CARGO_PKG_VERSION")),
    )
    .expect("valid");
    g.set(1.0);
    register(r, g)
}

impl Metrics {
    // One registration per exported metric, in one flat list on purpose: this is the
    // place a reader finds every metric's name, help and labels (module docs), and
    // splitting it into groups would only scatter that list. Each entry is one call.
    pub fn new() -> Self {
        let r = Registry::new();
        let events_consumed = counter(
            &r,
            "riskstream_events_consumed_total",
            "Input messages consumed, valid or not.",
            &["stream"],
        );
        let events_late = counter(
            &r,
            "riskstream_events_late_total",
            "Events behind their stream's watermark (allowed lateness exceeded).",
            &["stream"],
        );
        let events_duplicate = counter(
            &r,
            "riskstream_events_duplicate_total",
            "Events seen already within the dedup window (a resent report, a repeated reading): counted once.",
            &["stream"],
        );
        // The per-stream children also pre-create the series: dashboards see zeros.
        let by_stream = |v: &IntCounterVec| Stream::ALL.map(|s| v.with_label_values(&[s.as_str()]));
        Self {
            consumed_by_stream: by_stream(&events_consumed),
            late_by_stream: by_stream(&events_late),
            duplicate_by_stream: by_stream(&events_duplicate),
            events_consumed,
            events_late,
            events_duplicate,
            events_invalid: counter(
                &r,
                "riskstream_events_invalid_total",
                "Input messages sent to the dead-letter topic, by reason.",
                &["stream", "reason"],
            ),
            unknown_region: counter(
                &r,
                "riskstream_unknown_region_total",
                "Events whose 9-digit region is not in the hierarchy, routed to its county.",
                &["stream"],
            ),
            alerts: counter(
                &r,
                "riskstream_alerts_total",
                "Alert messages published (episode state changes).",
                &["stream", "detector", "level", "status"],
            ),
            sink_errors: counter(
                &r,
                "riskstream_sink_errors_total",
                "Failed deliveries to a sink.",
                &["sink"],
            ),
            sink_seconds: histogram_vec(
                &r,
                "riskstream_sink_seconds",
                "Time from handing an alert to a sink to its acknowledgement.",
                &[
                    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                    30.0,
                ],
                &["sink"],
            ),
            sink_dropped: register(&r, SINK_DROPPED.clone()),
            event_to_alert: histogram(
                &r,
                "riskstream_event_to_alert_seconds",
                "Time from consuming an event to every sink acknowledging the alerts it caused.",
                &[
                    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ],
            ),
            consumer_lag: register(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "riskstream_consumer_lag",
                        "Messages between the committed and the high-water offset, per input partition.",
                    ),
                    &["topic", "partition"],
                )
                .expect("valid"),
            ),
            open_episodes: int_gauge(
                &r,
                "riskstream_open_episodes",
                "Alert episodes currently firing.",
            ),
            incidents: counter(
                &r,
                "riskstream_incidents_total",
                "Incident messages published (one per incident state change).",
                &["stream", "level", "status"],
            ),
            open_incidents: int_gauge(
                &r,
                "riskstream_open_incidents",
                "Incidents currently open (firing, or waiting join_gap after their last member resolved).",
            ),
            detector_keys: int_gauge(
                &r,
                "riskstream_detector_keys",
                "Keys held in detector state across all detectors.",
            ),
            in_flight: int_gauge(
                &r,
                "riskstream_inputs_in_flight",
                "Inputs handled but not yet acknowledged by every sink.",
            ),
            watermark: register(
                &r,
                GaugeVec::new(
                    Opts::new(
                        "riskstream_watermark_seconds",
                        "Event-time watermark per stream, as a Unix time.",
                    ),
                    &["stream"],
                )
                .expect("valid"),
            ),
            build_info: build_info(&r),
            console_time_to_ack: histogram_vec(
                &r,
                "riskstream_console_time_to_ack_seconds",
                "Wall time from the console first showing an incident (or an episode acted on alone) to its first acknowledgement, per level and acting center.",
                &[
                    5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0,
                    14400.0, 28800.0,
                ],
                &["level", "center"],
            ),
            console_acks: counter(
                &r,
                "riskstream_console_acks_total",
                "First acknowledgements of incidents (or episodes acted on alone), and whether they came within the level's limit (console.ack_limits).",
                &["level", "center", "within_limit"],
            ),
            console_closed: counter(
                &r,
                "riskstream_console_closed_total",
                "Incidents (or episodes acted on alone) closed by operators, by outcome (handled, false_alarm, duplicate).",
                &["level", "center", "outcome"],
            ),
            console_false_alarms: counter(
                &r,
                "riskstream_console_false_alarms_total",
                "Episodes operators closed as false alarms (alone or as members of an incident closed so), per detector: feedback for tuning.",
                &["detector"],
            ),
            budget_verdicts_applied: counter(
                &r,
                "riskstream_budget_verdicts_applied_total",
                "False-alarm verdicts that raised a key's threshold in a detector with a false-alarm budget (held for one budget period), per detector.",
                &["detector"],
            ),
            console_denied: counter(
                &r,
                "riskstream_console_denied_total",
                "Console requests refused: missing_token, unknown_token (401), outside_center, shelve_refused (403: gas/H2S limits or a point outside the center).",
                &["reason"],
            ),
            console_clients: int_gauge(
                &r,
                "riskstream_console_clients",
                "Console pages connected to the live stream (SSE).",
            ),
            incidents_escalated: counter(
                &r,
                "riskstream_incidents_escalated_total",
                "Incidents escalated one tier up because nobody acknowledged them within the level's limit (console.ack_limits); `to` is the tier that joined (county, city).",
                &["level", "to"],
            ),
            alerts_shelved: counter(
                &r,
                "riskstream_alerts_shelved_total",
                "Anomalous detector signals silenced because their point or site is shelved or out of service (console shelving); `kind` is shelved or out_of_service.",
                &["stream", "detector", "kind"],
            ),
            state_writes: counter(
                &r,
                "riskstream_state_writes_total",
                "Changelog records written (changed state keys and tombstones) per stream.",
                &["stream"],
            ),
            state_restore_seconds: gauge(
                &r,
                "riskstream_state_restore_seconds",
                "How long the last restore of durable state from the changelog took.",
            ),
            state_restored_records: int_gauge(
                &r,
                "riskstream_state_restored_records",
                "Changelog records read by the last restore.",
            ),
            transactions: counter_with(
                &r,
                "riskstream_transactions_total",
                "Exactly-once transactions by outcome (committed, aborted).",
                "outcome",
                &["committed", "aborted"],
            ),
            registry_points: int_gauge(
                &r,
                "riskstream_registry_points",
                "Monitoring points in the sensor registry (file and topic).",
            ),
            registry_records: counter_with(
                &r,
                "riskstream_registry_records_total",
                "Registry topic records applied, by result (upserted, removed, rejected: not a valid point, the previous version stays).",
                "result",
                &["upserted", "removed", "rejected"],
            ),
            kpi: KpiMetrics::new(&r),
            registry: r,
        }
    }

    pub fn consumed(&self, s: Stream) {
        self.consumed_by_stream[s.index()].inc();
    }

    pub fn invalid(&self, s: Stream, r: InvalidReason) {
        self.events_invalid
            .with_label_values(&[s.as_str(), r.as_str()])
            .inc();
    }

    pub fn late(&self, s: Stream) {
        self.late_by_stream[s.index()].inc();
    }

    pub fn duplicate(&self, s: Stream) {
        self.duplicate_by_stream[s.index()].inc();
    }

    pub fn unknown_region(&self, s: Stream) {
        self.unknown_region.with_label_values(&[s.as_str()]).inc();
    }

    pub fn alert(&self, a: &Alert) {
        self.alerts
            .with_label_values(&[
                a.stream.as_str(),
                a.detector.as_str(),
                a.level.as_str(),
                a.status.as_str(),
            ])
            .inc();
    }

    pub fn incident(&self, i: &Incident) {
        self.incidents
            .with_label_values(&[i.stream.as_str(), i.level.as_str(), i.status.as_str()])
            .inc();
    }

    pub fn sink_error(&self, sink: &str) {
        self.sink_errors.with_label_values(&[sink]).inc();
    }

    pub fn set_lag(&self, topic: &str, partition: i32, lag: i64) {
        self.consumer_lag
            .with_label_values(&[topic, &partition.to_string()])
            .set(lag);
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding cannot fail");
        String::from_utf8(buf).expect("utf-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_metric_names_are_exported() {
        let m = Metrics::new();
        m.invalid(Stream::Sensors, InvalidReason::NotJson);
        m.set_lag("sensor-readings", 3, 42);
        m.event_to_alert.observe(0.01);
        m.alerts
            .with_label_values(&["sensors", "threshold", "red", "firing"])
            .inc();
        sink_dropped()
            .with_label_values(&["metrics_test_hook"])
            .inc();
        m.kpi.center("330500");
        let text = m.render();
        for name in [
            "riskstream_alarm_activations_total{center=\"330500\"} 0",
            "riskstream_alarm_rate_10m{center=\"330500\"} 0",
            "riskstream_alarm_in_flood{center=\"330500\"} 0",
            "riskstream_alarm_floods_total{center=\"330500\"} 0",
            "riskstream_alarm_flood_seconds_total{center=\"330500\"} 0",
            "riskstream_alarm_chattering_total{center=\"330500\"} 0",
            "riskstream_alarms_stale{center=\"330500\"} 0",
            "riskstream_events_consumed_total{stream=\"sensors\"} 0",
            "riskstream_events_invalid_total{reason=\"not_json\",stream=\"sensors\"} 1",
            "riskstream_alerts_total{detector=\"threshold\",level=\"red\",status=\"firing\",stream=\"sensors\"} 1",
            "riskstream_event_to_alert_seconds_bucket",
            "riskstream_consumer_lag{partition=\"3\",topic=\"sensor-readings\"} 42",
            "riskstream_sink_dropped_total{sink=\"metrics_test_hook\"} 1",
        ] {
            assert!(text.contains(name), "missing {name} in\n{text}");
        }
    }

    #[test]
    fn kpi_counters_rise_to_the_tracker_s_totals() {
        let m = Metrics::new();
        let mut f = crate::alert::kpi::CenterFigures {
            activations: 5,
            rate_10m: 5,
            ..Default::default()
        };
        m.kpi.set("330503", &f);
        f.activations = 7;
        f.rate_10m = 2;
        f.in_flood = true;
        m.kpi.set("330503", &f);
        let text = m.render();
        for s in [
            "riskstream_alarm_activations_total{center=\"330503\"} 7",
            "riskstream_alarm_rate_10m{center=\"330503\"} 2",
            "riskstream_alarm_in_flood{center=\"330503\"} 1",
        ] {
            assert!(text.contains(s), "missing {s}");
        }
    }
}
