//! The alarm KPIs through the real pipeline: a simulated city's activations reach the
//! per-center metrics and the console's `/api/kpi` view, and agree with a count of the
//! published alerts made by hand. Driven input by input as `run` does (as
//! `incident_tests` does), so no broker is needed.

use std::sync::Arc;

use super::Pipeline;
use crate::alert::kpi::{self, is_activation};
use crate::alert::Alert;
use crate::clock::ManualClock;
use crate::config::Config;
use crate::console::{ConsoleConfig, ConsoleState};
use crate::sink::LogDeadLetters;
use crate::telemetry::metrics::Metrics;

fn config() -> Config {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/default.toml");
    crate::config::load(&root).expect("default config")
}

/// The value of the series `name{center="C"}` in a /metrics text.
fn sample(text: &str, name: &str, center: &str) -> Option<f64> {
    let prefix = format!("{name}{{center=\"{center}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|v| v.parse().expect("a number"))
}

#[test]
fn a_simulated_city_s_activations_reach_metrics_and_the_console() {
    let cfg = config();
    let clock = ManualClock::new("2026-11-27T00:00:00Z".parse().unwrap());
    let metrics = Arc::new(Metrics::new());
    // Every KPI series of the city and the counties exists before any input.
    let text = metrics.render();
    let mut p = Pipeline::new(
        &cfg,
        Vec::new(),
        Arc::new(LogDeadLetters),
        metrics.clone(),
        Arc::new(clock.clone()),
    );
    assert_eq!(
        sample(&text, "riskstream_alarm_activations_total", "330500"),
        None
    );
    let text = metrics.render();
    for c in ["330500", "330502", "330503", "330521", "330522", "330523"] {
        for m in [
            "riskstream_alarm_activations_total",
            "riskstream_alarm_rate_10m",
            "riskstream_alarm_in_flood",
            "riskstream_alarm_floods_total",
            "riskstream_alarm_flood_seconds_total",
            "riskstream_alarm_chattering_total",
            "riskstream_alarms_stale",
        ] {
            assert_eq!(sample(&text, m, c), Some(0.0), "{m} of {c} from start");
        }
    }
    let console = Arc::new(ConsoleState::new(
        Arc::new(clock),
        &ConsoleConfig::default(),
    ));
    p = p.with_console(console.clone());
    let city = crate::simulate::generate(
        &crate::simulate::SimConfig {
            hours: 6.0,
            seed: 5,
            start: chrono::DateTime::parse_from_rfc3339("2026-11-26T06:00:00+08:00").unwrap(),
            sites: 8,
        },
        &cfg.regions,
    );
    let dec = crate::decode::Decoder::new(cfg.regions.clone());
    let mut published: Vec<Alert> = Vec::new();
    for e in city.envelopes() {
        let Ok(d) = dec.decode(e.stream, &e.payload) else {
            continue;
        };
        let obs = p.detectors.observe(&d.event, &mut p.signals);
        let moved: Vec<_> = obs.watermark.map(|w| (e.stream, w)).into_iter().collect();
        p.policy_step(Some(&d.event), &moved);
        published.append(&mut p.alerts);
    }
    let moved = p.detectors.flush(&mut p.signals);
    p.policy_step(None, &moved);
    published.append(&mut p.alerts);

    let text = metrics.render();
    let mut seen_any = false;
    for c in ["330500", "330502", "330503", "330521"] {
        let by_hand = published
            .iter()
            .filter(|a| is_activation(a) && a.route.iter().any(|r| r == c))
            .count();
        let got = sample(&text, "riskstream_alarm_activations_total", c).unwrap();
        assert_eq!(got, by_hand as f64, "activations of {c}");
        let view = console.kpi_view(c, &cfg.regions);
        assert_eq!(
            view.figures.activations, by_hand as u64,
            "console view of {c}"
        );
        // What the view ranks is what was counted: no bad actor above the total.
        assert!(view
            .bad_actors
            .iter()
            .all(|r| r.activations <= by_hand as u64));
        assert!(view.bad_actors.len() <= kpi::TOP);
        seen_any |= by_hand > 0;
        let floods = sample(&text, "riskstream_alarm_floods_total", c).unwrap();
        assert_eq!(floods, view.figures.floods as f64);
    }
    assert!(seen_any, "the simulated city raised alarms");
    let city_view = console.kpi_view("330500", &cfg.regions);
    assert!(!city_view.bad_actors.is_empty());
    assert!(city_view.as_of.is_some());
}
