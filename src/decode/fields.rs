//! Field extraction with errors that name the field.
//!
//! The message is parsed once into a flat list of its top-level fields whose strings
//! borrow from the input when they hold no escapes: no `serde_json::Value` tree, no
//! allocation per key. Nested arrays and objects are checked for syntax and skipped (no
//! field rule reads them). A repeated key means its last value, as with a JSON map.

use std::borrow::Cow;
use std::fmt;

use chrono::{DateTime, FixedOffset};
use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::{DecodeError, InvalidReason};
use crate::regions::{RegionRef, Regions};

/// One top-level value, as much of it as the field rules look at.
#[derive(Debug)]
pub(crate) enum Raw<'a> {
    Null,
    Number(f64),
    String(Cow<'a, str>),
    /// A boolean, array or object: always the wrong type for a field.
    Other,
}

/// The top-level fields of a message, in input order; `None` when it is JSON but not an object.
pub(crate) struct Object<'a>(pub(crate) Option<Vec<(Cow<'a, str>, Raw<'a>)>>);

struct Str<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Str<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E>(self, s: String) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(s)))
            }
        }
        d.deserialize_str(V)
    }
}

/// Accepts any JSON value; `as_object` says whether the top level is an object.
struct AnyValue<'a, const TOP: bool>(Raw<'a>, Option<Vec<(Cow<'a, str>, Raw<'a>)>>);

impl<'de, const TOP: bool> Deserialize<'de> for AnyValue<'de, TOP> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<const TOP: bool>;
        impl<'de, const TOP: bool> Visitor<'de> for V<TOP> {
            type Value = AnyValue<'de, TOP>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(AnyValue(Raw::Null, None))
            }
            fn visit_none<E>(self) -> Result<Self::Value, E> {
                Ok(AnyValue(Raw::Null, None))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(AnyValue(Raw::Other, None))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
                Ok(AnyValue(Raw::Number(v as f64), None))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
                Ok(AnyValue(Raw::Number(v as f64), None))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
                Ok(AnyValue(Raw::Number(v), None))
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
                Ok(AnyValue(Raw::String(Cow::Borrowed(s)), None))
            }
            fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
                Ok(AnyValue(Raw::String(Cow::Owned(s.to_owned())), None))
            }
            fn visit_string<E>(self, s: String) -> Result<Self::Value, E> {
                Ok(AnyValue(Raw::String(Cow::Owned(s)), None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(AnyValue(Raw::Other, None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                if !TOP {
                    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                    return Ok(AnyValue(Raw::Other, None));
                }
                let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(12));
                while let Some(Str(k)) = map.next_key::<Str<'de>>()? {
                    let AnyValue(v, _) = map.next_value::<AnyValue<'de, false>>()?;
                    fields.push((k, v));
                }
                Ok(AnyValue(Raw::Other, Some(fields)))
            }
        }
        d.deserialize_any(V::<TOP>)
    }
}

impl<'de> Deserialize<'de> for Object<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let AnyValue(_, fields) = AnyValue::<'de, true>::deserialize(d)?;
        Ok(Object(fields))
    }
}

pub(crate) struct Fields<'a> {
    obj: &'a [(Cow<'a, str>, Raw<'a>)],
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
    pub(crate) fn new(obj: &'a [(Cow<'a, str>, Raw<'a>)], regions: &'a Regions) -> Self {
        Self { obj, regions }
    }

    fn get(&self, name: &str) -> Option<&'a Raw<'a>> {
        // The last occurrence wins, as a JSON map would keep it.
        self.obj
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
            .filter(|v| !matches!(v, Raw::Null))
    }

    pub(crate) fn str(&self, name: &str) -> Result<String, DecodeError> {
        match self.get(name) {
            None => Err(missing(name)),
            Some(Raw::String(s)) if s.trim().is_empty() => Err(DecodeError::new(
                InvalidReason::MissingField,
                format!("field `{name}` must be a non-empty string"),
            )),
            Some(Raw::String(s)) => Ok(s.to_string()),
            Some(_) => Err(wrong(name, "a string")),
        }
    }

    pub(crate) fn opt_str(&self, name: &str) -> Result<Option<String>, DecodeError> {
        self.opt_str_ref(name).map(|s| s.map(str::to_string))
    }

    /// As `opt_str`, borrowed: for fields only compared, never kept.
    pub(crate) fn opt_str_ref(&self, name: &str) -> Result<Option<&'a str>, DecodeError> {
        match self.get(name) {
            None => Ok(None),
            Some(Raw::String(s)) if s.trim().is_empty() => Ok(None),
            Some(Raw::String(s)) => Ok(Some(s)),
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
            Some(Raw::String(s)) => s,
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
            Some(Raw::String(s)) => s,
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

fn number(name: &str, v: &Raw<'_>) -> Result<f64, DecodeError> {
    match v {
        // serde_json rejects numbers beyond f64 at parse time, so this holds only finite
        // values; the filter keeps the rule explicit.
        Raw::Number(x) => Some(*x).filter(|x| x.is_finite()).ok_or_else(|| {
            DecodeError::new(
                InvalidReason::NonFinite,
                format!("field `{name}` must be a finite number"),
            )
        }),
        // Some producers write "NaN"/"Infinity" as strings; name the real problem.
        Raw::String(s) if s.parse::<f64>().is_ok_and(|x| !x.is_finite()) => Err(DecodeError::new(
            InvalidReason::NonFinite,
            format!("field `{name}` must be a finite number, got `{}`", clip(s)),
        )),
        _ => Err(wrong(name, "a number")),
    }
}

/// Keeps error texts (and so DLQ headers) short whatever the input.
pub(super) fn clip(s: &str) -> String {
    if s.chars().count() > 40 {
        format!("{}…", s.chars().take(40).collect::<String>())
    } else {
        s.to_string()
    }
}
