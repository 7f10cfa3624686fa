//! Incidents: one reported public-safety case. Key: `id`.

use chrono::{DateTime, FixedOffset};

use super::fields::Fields;
use super::{DecodeError, InvalidReason};
use crate::regions::RegionRef;

#[derive(Debug, Clone, PartialEq)]
pub struct Incident {
    pub id: String,
    pub ts: DateTime<FixedOffset>,
    pub region: RegionRef,
    pub region_code: String,
    pub category: String,
    /// 1 (minor) ..= 4 (most severe), when the reporter gave one.
    pub severity: Option<u8>,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    pub summary: Option<String>,
}

pub(super) fn decode(f: &Fields<'_>) -> Result<Incident, DecodeError> {
    let severity = match f.opt_f64("severity")? {
        None => None,
        Some(s) if s.fract() == 0.0 && (1.0..=4.0).contains(&s) => Some(s as u8),
        Some(s) => {
            // `{s}` writes every digit: 5e-324 would take 300 characters of the header.
            let shown = s.to_string();
            let shown = if shown.len() > 24 {
                format!("{s:e}")
            } else {
                shown
            };
            return Err(DecodeError::new(
                InvalidReason::OutOfRange,
                format!("field `severity` must be an integer 1..4, got {shown}"),
            ));
        }
    };
    Ok(Incident {
        id: f.str("id")?,
        ts: f.ts("ts")?,
        region: f.region("region")?,
        region_code: f.str("region")?,
        category: f.str("category")?,
        severity,
        lat: f.opt_f64("lat")?,
        lon: f.opt_f64("lon")?,
        summary: f.opt_str("summary")?,
    })
}

#[cfg(test)]
mod tests {
    use crate::decode::{test_decoder, Event, InvalidReason, Stream};

    #[test]
    fn spec_example_decodes() {
        let d = test_decoder();
        let m =
            br#"{"id":"INC-20261126-000123","ts":"2026-11-26T08:15:00+08:00","region":"330502001",
            "category":"dispute","severity":2,"lat":30.87,"lon":120.09,"summary":"...","extra":1}"#;
        let Event::Incident(i) = d.decode(Stream::Incidents, m).unwrap().event else {
            panic!("not an incident")
        };
        assert_eq!(i.id, "INC-20261126-000123");
        assert_eq!(i.severity, Some(2));
        assert_eq!(i.category, "dispute");
    }

    #[test]
    fn each_required_field_is_named() {
        let d = test_decoder();
        let full = serde_json::json!({"id":"I1","ts":"2026-11-26T08:15:00+08:00","region":"330502001","category":"fire"});
        for field in ["id", "ts", "region", "category"] {
            let mut v = full.clone();
            v.as_object_mut().unwrap().remove(field);
            let e = d
                .decode(Stream::Incidents, v.to_string().as_bytes())
                .unwrap_err();
            assert_eq!(e.reason, InvalidReason::MissingField);
            assert!(e.message.contains(&format!("`{field}`")), "{}", e.message);
        }
        let mut v = full.clone();
        v["severity"] = 7.into();
        let e = d
            .decode(Stream::Incidents, v.to_string().as_bytes())
            .unwrap_err();
        assert_eq!(e.reason, InvalidReason::OutOfRange);
        assert!(e.message.contains("severity"));
        // Found by tests/fuzz_decode.rs: 5e-324 was written out in 300-odd digits.
        v["severity"] = 5e-324.into();
        let e = d
            .decode(Stream::Incidents, v.to_string().as_bytes())
            .unwrap_err();
        assert!(e.message.ends_with("got 5e-324"), "{}", e.message);
    }
}
