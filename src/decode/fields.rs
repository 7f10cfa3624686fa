//! Field extraction with errors that name the field.

use chrono::{DateTime, FixedOffset};
use serde_json::{Map, Value};

use super::{DecodeError, InvalidReason};
use crate::regions::{RegionRef, Regions};

pub(crate) struct Fields<'a> {
    obj: &'a Map<String, Value>,
    regions: &'a Regions,
}

fn missing(name: &str) -> DecodeError {
    DecodeError::new(
        InvalidReason::MissingField,
        format!("missing required field `{name}`"),
    )
}

fn wrong(name: &str, want: &str) -> DecodeError {
    DecodeError::new(
        InvalidReason::WrongType,
        format!("field `{name}` must be {want}"),
    )
}

impl<'a> Fields<'a> {
    pub(crate) fn new(obj: &'a Map<String, Value>, regions: &'a Regions) -> Self {
        Self { obj, regions }
    }

    fn get(&self, name: &str) -> Option<&'a Value> {
        self.obj.get(name).filter(|v| !v.is_null())
    }

    pub(crate) fn str(&self, name: &str) -> Result<String, DecodeError> {
        match self.get(name) {
            None => Err(missing(name)),
            Some(Value::String(s)) if s.trim().is_empty() => Err(DecodeError::new(
                InvalidReason::MissingField,
                format!("field `{name}` must be a non-empty string"),
            )),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(wrong(name, "a string")),
        }
    }

    pub(crate) fn opt_str(&self, name: &str) -> Result<Option<String>, DecodeError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(wrong(name, "a string")),
        }
    }

    pub(crate) fn f64(&self, name: &str) -> Result<f64, DecodeError> {
        let v = self.get(name).ok_or_else(|| missing(name))?;
        number(name, v)
    }

    pub(crate) fn opt_f64(&self, name: &str) -> Result<Option<f64>, DecodeError> {
        self.get(name).map(|v| number(name, v)).transpose()
    }

    pub(crate) fn ts(&self, name: &str) -> Result<DateTime<FixedOffset>, DecodeError> {
        let s = match self.get(name) {
            None => return Err(missing(name)),
            Some(Value::String(s)) => s,
            Some(_) => return Err(wrong(name, "an RFC 3339 timestamp string")),
        };
        DateTime::parse_from_rfc3339(s).map_err(|e| {
            DecodeError::new(
                InvalidReason::BadTimestamp,
                format!(
                    "field `{name}`: `{}` is not an RFC 3339 time with offset ({e})",
                    clip(s)
                ),
            )
        })
    }

    pub(crate) fn region(&self, name: &str) -> Result<RegionRef, DecodeError> {
        let code = match self.get(name) {
            None => return Err(missing(name)),
            Some(Value::String(s)) => s,
            Some(_) => return Err(wrong(name, "a region code string")),
        };
        self.regions.resolve(code).ok_or_else(|| {
            DecodeError::new(
                InvalidReason::UnknownRegion,
                format!(
                    "field `{name}`: `{}` is not a region of the hierarchy",
                    clip(code)
                ),
            )
        })
    }
}

fn number(name: &str, v: &Value) -> Result<f64, DecodeError> {
    match v {
        Value::Number(n) => n.as_f64().filter(|x| x.is_finite()).ok_or_else(|| {
            DecodeError::new(
                InvalidReason::NonFinite,
                format!("field `{name}` must be a finite number"),
            )
        }),
        // Some producers write "NaN"/"Infinity" as strings; name the real problem.
        Value::String(s) if s.parse::<f64>().is_ok_and(|x| !x.is_finite()) => {
            Err(DecodeError::new(
                InvalidReason::NonFinite,
                format!("field `{name}` must be a finite number, got `{}`", clip(s)),
            ))
        }
        _ => Err(wrong(name, "a number")),
    }
}

/// Keeps error texts (and so DLQ headers) short whatever the input.
fn clip(s: &str) -> String {
    if s.chars().count() > 40 {
        format!("{}…", s.chars().take(40).collect::<String>())
    } else {
        s.to_string()
    }
}
