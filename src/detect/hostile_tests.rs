//! Hostile input (issue 24): every sensor detector of `config/default.toml`, and the
//! variants the durable tests add, fed values no sensor should send (+-1e308, the
//! largest and smallest floats, subnormals, alternating extremes) among ordinary ones,
//! with gaps and reordering within the allowed lateness. Whatever the input:
//!
//! - every score is finite and in [0, 1], every firing signal's evidence finite;
//! - every state the detector saves is finite (`state::codec::encode` checks each one
//!   in unit tests);
//! - an extreme value never resolves an open episode: no `Clear` on an extreme reading.
//!
//! The first two hold for values fed raw, past the decoder's measuring ranges (a
//! detector must survive any finite input however it is fed); the third for readings
//! as the pipeline feeds them, decoded (an extreme is then a fault, which no value
//! detector judges).

use std::path::Path;

use proptest::prelude::*;

use super::testutil::{raw_reading, reading};
use super::{BuildCtx, Detector, DetectorConfig, SignalKind};
use crate::decode::Stream;

/// Readings farther from zero than this are "extreme" here.
const EXTREME: f64 = 1e100;

fn sensor_detectors() -> Vec<(String, Box<dyn Detector>)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/default.toml");
    let cfg = crate::config::load(&path).expect("config/default.toml loads");
    let ctx = BuildCtx::new(cfg.regions.clone());
    let mut list = cfg.detectors.sensors.clone();
    for extra in [
        "type = \"ewma_z\"\nbaseline = \"frozen\"\nsmoothing = 0.3\ndirection = \"both\"",
        "type = \"ewma_z\"\ndirection = \"both\"\nmin_samples = 2",
        "type = \"cusum\"\ndirection = \"both\"\nkinds = []\nmin_samples = 2",
        "type = \"robust_z\"\nkinds = []\nmin_samples = 3\nwindow = 8",
        "type = \"rate_of_change\"\ndirection = \"both\"",
    ] {
        list.push(toml::from_str::<DetectorConfig>(extra).expect("extra detector"));
    }
    list.iter()
        .enumerate()
        .map(|(i, c)| {
            let mut d = c.build(Stream::Sensors, &ctx);
            d.track_changes();
            (format!("{}#{i}", c.name()), d)
        })
        .collect()
}

fn value() -> impl Strategy<Value = f64> {
    prop_oneof![
        6 => (-1.0f64..1.0).prop_map(|n| 5.0 + n),
        1 => prop::sample::select(vec![
            1e308, -1e308, f64::MAX, f64::MIN, 1e154, -1e154,
            5e-324, -5e-324, f64::MIN_POSITIVE, 0.0, -0.0,
        ]),
    ]
}

/// (sensor, value, seconds since the previous reading; negative: reordered).
fn reading_step() -> impl Strategy<Value = (usize, f64, i64)> {
    (
        0usize..4,
        value(),
        prop_oneof![8 => 1i64..90, 1 => -20i64..0, 1 => 600i64..7200],
    )
}

const SENSORS: [(&str, &str); 4] = [
    ("G1", "gas_lel"),
    ("P1", "pressure"),
    ("X1", "generic"),
    ("T1", "temperature"),
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn no_detector_breaks_on_extreme_values(steps in prop::collection::vec(reading_step(), 1..400)) {
        feed(&steps, raw_reading, false)?;
    }

    #[test]
    fn an_extreme_reading_never_resolves_an_episode(steps in prop::collection::vec(reading_step(), 1..400)) {
        feed(&steps, reading, true)?;
    }
}

/// Feeds `steps` made into events by `make` to every sensor detector, checking as it
/// goes (with `check_clear`: that no extreme reading resolves an episode).
fn feed(
    steps: &[(usize, f64, i64)],
    make: fn(&str, &str, i64, f64) -> crate::decode::Event,
    check_clear: bool,
) -> Result<(), TestCaseError> {
    let mut dets = sensor_detectors();
    let mut t = 0i64;
    let mut out = Vec::new();
    let mut keys = Vec::new();
    for (n, (s, v, gap)) in steps.iter().enumerate() {
        t += gap;
        let (id, kind) = SENSORS[*s];
        let ev = make(id, kind, t, *v);
        for (name, d) in &mut dets {
            out.clear();
            let score = d.observe(&ev, false, &mut out);
            prop_assert!(
                score.is_finite() && (0.0..=1.0).contains(&score),
                "{name}: score {score} at step {n} ({v})"
            );
            for sig in &out {
                match &sig.kind {
                    SignalKind::Anomalous {
                        score, evidence, ..
                    } => {
                        prop_assert!(
                            score.is_finite() && (0.5..=1.0).contains(score),
                            "{name}: signal score {score} at step {n}"
                        );
                        for (what, x) in [
                            ("observed", evidence.observed),
                            ("expected", evidence.expected),
                            ("score", evidence.score),
                            ("threshold", evidence.threshold),
                        ] {
                            prop_assert!(
                                x.is_finite(),
                                "{name}: evidence.{what} = {x} at step {n} ({v})"
                            );
                        }
                    }
                    SignalKind::Clear => prop_assert!(
                        !check_clear || v.abs() < EXTREME || sig.key != id,
                        "{name}: the extreme reading {v} resolved {}'s episode at step {n}",
                        sig.key
                    ),
                }
            }
            // Saving checks the state is finite (codec::encode, in unit tests).
            keys.clear();
            d.take_dirty(&mut keys);
            for k in &keys {
                let saved = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| d.save(k)));
                prop_assert!(
                    saved.is_ok(),
                    "{name}: state of {k} not finite at step {n} ({v})"
                );
            }
        }
    }
    Ok(())
}
