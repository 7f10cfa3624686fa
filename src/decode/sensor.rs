//! Sensor readings from hazardous-chemical sites. Key: `sensor_id`.

use std::sync::Arc;

use chrono::{DateTime, FixedOffset};

use super::fields::Fields;
use super::{DecodeError, InvalidReason, Ranges};
use crate::regions::RegionRef;
use crate::registry::{Point, Registry};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SensorStatus {
    Ok,
    /// The device reports itself faulty; its values raise no value alerts.
    Fault,
    /// The value is outside its point's measuring range, or else its kind's
    /// ([`super::Ranges`]): a glitch, treated as a fault.
    OutOfRange,
}

impl SensorStatus {
    /// The value is not a measurement: kept out of every baseline, raises only
    /// `sensor_fault`.
    pub fn is_fault(self) -> bool {
        self != SensorStatus::Ok
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SensorReading {
    pub sensor_id: String,
    pub site_id: String,
    pub region: RegionRef,
    pub region_code: String,
    /// What is measured: `gas_lel`, `h2s_ppm`, `temperature`, `pressure`, `tank_level`, ...
    pub kind: String,
    pub ts: DateTime<FixedOffset>,
    pub value: f64,
    pub unit: Option<String>,
    pub status: SensorStatus,
    /// The sensor's monitoring point, when it is registered (as the registry stood when
    /// the reading was decoded).
    pub point: Option<Arc<Point>>,
}

pub(super) fn decode(
    f: &Fields<'_>,
    ranges: &Ranges,
    points: &Registry,
) -> Result<SensorReading, DecodeError> {
    let mut status = match f.opt_str_ref("status")? {
        None | Some("ok") => SensorStatus::Ok,
        Some("fault") => SensorStatus::Fault,
        Some(other) => {
            return Err(DecodeError::new(
                InvalidReason::OutOfRange,
                format!(
                    "field `status` must be `ok` or `fault`, got `{}`",
                    super::fields::clip(other)
                ),
            ))
        }
    };
    let sensor_id = f.str("sensor_id")?;
    let kind = f.str("kind")?;
    let value = f.f64("value")?;
    let point = points.get(&sensor_id);
    let admitted = match point.as_ref().and_then(|p| p.range) {
        Some(range) => super::ranges::within(range, value),
        None => ranges.admits(&kind, value),
    };
    if status == SensorStatus::Ok && !admitted {
        status = SensorStatus::OutOfRange;
    }
    Ok(SensorReading {
        sensor_id,
        site_id: f.str("site_id")?,
        region: f.region("region")?,
        region_code: f.str("region")?,
        kind,
        ts: f.ts("ts")?,
        value,
        unit: f.opt_str("unit")?,
        status,
        point,
    })
}

#[cfg(test)]
mod tests {
    use crate::decode::{test_decoder, Event, InvalidReason, Stream};

    fn base() -> serde_json::Value {
        serde_json::json!({"sensor_id":"S-330503-0042-GAS1","site_id":"SITE-330503-0042","region":"330503101",
            "kind":"gas_lel","ts":"2026-11-26T08:15:00+08:00","value":3.5,"unit":"%LEL"})
    }

    #[test]
    fn spec_example_decodes() {
        let d = test_decoder();
        let Event::Sensor(s) = d
            .decode(Stream::Sensors, base().to_string().as_bytes())
            .unwrap()
            .event
        else {
            panic!()
        };
        assert_eq!(s.value, 3.5);
        assert_eq!(s.kind, "gas_lel");
        assert_eq!(s.ts.offset().local_minus_utc(), 8 * 3600);
    }

    #[test]
    fn invalid_cases_name_their_field() {
        let d = test_decoder();
        let cases: Vec<(&str, serde_json::Value, InvalidReason)> = vec![
            ("value", serde_json::json!("NaN"), InvalidReason::NonFinite),
            ("value", serde_json::json!("high"), InvalidReason::WrongType),
            (
                "ts",
                serde_json::json!("2026-11-26 08:15:00"),
                InvalidReason::BadTimestamp,
            ),
            (
                "ts",
                serde_json::json!("2026-11-26T08:15:00"),
                InvalidReason::BadTimestamp,
            ),
            (
                "region",
                serde_json::json!("110101001"),
                InvalidReason::UnknownRegion,
            ),
            (
                "status",
                serde_json::json!("broken"),
                InvalidReason::OutOfRange,
            ),
            ("sensor_id", serde_json::json!(42), InvalidReason::WrongType),
        ];
        for (field, val, reason) in cases {
            let mut v = base();
            v[field] = val;
            let e = d
                .decode(Stream::Sensors, v.to_string().as_bytes())
                .unwrap_err();
            assert_eq!(e.reason, reason, "{field}: {}", e.message);
            assert!(e.message.contains(&format!("`{field}`")), "{}", e.message);
        }
    }

    /// Found by tests/fuzz_decode.rs: the status error quoted the whole value, so a huge
    /// one made an `x-error` header as big as the message; a dead letter past the
    /// producer's `message.max.bytes` is refused, and a refused dead letter stops the
    /// pipeline (the same input again after a restart).
    #[test]
    fn a_huge_bad_status_makes_a_short_error() {
        let d = test_decoder();
        let mut v = base();
        v["status"] = "x".repeat(1_000_000).into();
        let e = d
            .decode(Stream::Sensors, v.to_string().as_bytes())
            .unwrap_err();
        assert_eq!(e.reason, InvalidReason::OutOfRange);
        assert!(e.message.contains("`status`"), "{}", e.message);
        assert!(e.message.len() < 200, "{} bytes", e.message.len());
    }

    /// Nesting deeper than serde_json's recursion limit in a field no rule reads is still
    /// JSON (skipped without recursion); in a field a rule reads it is the wrong type.
    /// Neither overflows the stack.
    #[test]
    fn deep_nesting_neither_crashes_nor_hides_the_field() {
        let d = test_decoder();
        let deep = format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000));
        let good = base().to_string();
        let extra = format!("{},\"extra\":{deep}}}", &good[..good.len() - 1]);
        assert!(d.decode(Stream::Sensors, extra.as_bytes()).is_ok());
        let in_value = good.replace("3.5", &deep);
        let e = d.decode(Stream::Sensors, in_value.as_bytes()).unwrap_err();
        assert_eq!(e.reason, InvalidReason::WrongType, "{}", e.message);
        assert!(e.message.contains("`value`"));
        let e = d.decode(Stream::Sensors, deep.as_bytes()).unwrap_err();
        assert_eq!(e.reason, InvalidReason::NotJson);
    }

    #[test]
    fn unlisted_township_is_flagged() {
        let d = test_decoder();
        let mut v = base();
        v["region"] = "330503999".into();
        assert!(
            d.decode(Stream::Sensors, v.to_string().as_bytes())
                .unwrap()
                .unlisted_region
        );
    }
}
