//! Telecom / online fraud reports. Key: `id`.

use chrono::{DateTime, FixedOffset};

use super::fields::Fields;
use super::{DecodeError, InvalidReason};
use crate::regions::RegionRef;

#[derive(Debug, Clone, PartialEq)]
pub struct FraudReport {
    pub id: String,
    pub ts: DateTime<FixedOffset>,
    pub region: RegionRef,
    pub region_code: String,
    pub channel: String,
    pub scheme: String,
    pub suspect_phone: Option<String>,
    pub suspect_account: Option<String>,
    pub suspect_url: Option<String>,
    pub amount_cny: Option<f64>,
}

impl FraudReport {
    /// The suspects this report names, as `(kind, value)`.
    pub fn suspects(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            ("phone", self.suspect_phone.as_deref()),
            ("account", self.suspect_account.as_deref()),
            ("url", self.suspect_url.as_deref()),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
    }
}

pub(super) fn decode(f: &Fields<'_>) -> Result<FraudReport, DecodeError> {
    let r = FraudReport {
        id: f.str("id")?,
        ts: f.ts("ts")?,
        region: f.region("region")?,
        region_code: f.str("region")?,
        channel: f.str("channel")?,
        scheme: f.str("scheme")?,
        suspect_phone: f.opt_str("suspect_phone")?,
        suspect_account: f.opt_str("suspect_account")?,
        suspect_url: f.opt_str("suspect_url")?,
        amount_cny: f.opt_f64("amount_cny")?,
    };
    if r.suspects().next().is_none() {
        return Err(DecodeError::new(
            InvalidReason::MissingField,
            "missing required field: at least one of `suspect_phone`, `suspect_account`, `suspect_url`",
        ));
    }
    if r.amount_cny.is_some_and(|a| a < 0.0) {
        return Err(DecodeError::new(
            InvalidReason::OutOfRange,
            "field `amount_cny` must be >= 0",
        ));
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use crate::decode::{test_decoder, Event, InvalidReason, Stream};

    #[test]
    fn spec_example_and_suspect_rule() {
        let d = test_decoder();
        let mut v = serde_json::json!({"id":"FR-20261126-004711","ts":"2026-11-26T08:15:00+08:00","region":"330521102",
            "channel":"phone","scheme":"impersonation","suspect_phone":"+8613800000000",
            "suspect_account":null,"suspect_url":null,"amount_cny":12000.0});
        let Event::Fraud(r) = d
            .decode(Stream::Fraud, v.to_string().as_bytes())
            .unwrap()
            .event
        else {
            panic!()
        };
        assert_eq!(
            r.suspects().collect::<Vec<_>>(),
            vec![("phone", "+8613800000000")]
        );
        v["suspect_phone"] = serde_json::Value::Null;
        let e = d
            .decode(Stream::Fraud, v.to_string().as_bytes())
            .unwrap_err();
        assert_eq!(e.reason, InvalidReason::MissingField);
        assert!(e.message.contains("suspect_phone"));
        v["suspect_url"] = "http://x.example".into();
        v["amount_cny"] = (-1.0).into();
        let e = d
            .decode(Stream::Fraud, v.to_string().as_bytes())
            .unwrap_err();
        assert!(e.message.contains("amount_cny"));
    }
}
