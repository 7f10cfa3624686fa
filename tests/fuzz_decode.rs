//! Fuzzing the decoders with proptest (cargo-fuzz needs nightly): the public
//! `riskstream::decode::Decoder` is fed
//!
//! 1. arbitrary bytes (raw, JSON-token soup, and byte-level edits of valid messages),
//! 2. arbitrary JSON values (mostly objects over the streams' field names),
//! 3. valid messages of each stream with 0-4 mutations: a field removed or retyped,
//!    non-finite numbers as strings and as `NaN`/`Infinity` literals, numbers beyond f64,
//!    huge strings, deep nesting, invalid UTF-8, unicode look-alike region codes,
//!    timestamps at and beyond RFC 3339's extremes, duplicate keys, unknown fields.
//!
//! Every input must leave the decoder without a panic, with either an event that keeps
//! SPEC.md's rules and agrees with a reference reading of the same bytes (serde_json, top
//! level only),
//! or an error whose reason is one of the declared `riskstream_events_invalid_total`
//! labels, whose text is short enough for an `x-error` header and, for a field error,
//! names a field of the stream.
//!
//! `RISKSTREAM_FUZZ_CASES` sets the inputs per family (default 20000: a few seconds per
//! family in a debug build); `RISKSTREAM_FUZZ_SEED` (64 hex digits) replays a run, whose
//! seed is printed with the number of executions and failures:
//!
//! ```sh
//! RISKSTREAM_FUZZ_CASES=1000000 cargo test --test fuzz_decode -- --nocapture
//! ```

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use riskstream::decode::{DecodeError, Decoded, Decoder, Event, SensorStatus, Stream};
use riskstream::regions::Regions;

/// The labels of `riskstream_events_invalid_total{reason}` (SPEC: bad input).
const REASONS: &[&str] = &[
    "not_utf8",
    "not_json",
    "missing_field",
    "wrong_type",
    "non_finite",
    "bad_timestamp",
    "unknown_region",
    "out_of_range",
];

/// The longest error text accepted: it becomes a Kafka header on the dead letter.
const MAX_ERROR_CHARS: usize = 300;

fn fields(s: Stream) -> &'static [&'static str] {
    match s {
        Stream::Incidents => &[
            "id", "ts", "region", "category", "severity", "lat", "lon", "summary",
        ],
        Stream::Sensors => &[
            "sensor_id",
            "site_id",
            "region",
            "kind",
            "ts",
            "value",
            "unit",
            "status",
        ],
        Stream::Fraud => &[
            "id",
            "ts",
            "region",
            "channel",
            "scheme",
            "suspect_phone",
            "suspect_account",
            "suspect_url",
            "amount_cny",
        ],
    }
}

fn regions() -> Arc<Regions> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/regions.toml");
    Arc::new(Regions::from_file(&p).expect("config/regions.toml"))
}

// ---------------------------------------------------------------------------------------
// the oracle

/// One top-level value as the reference reads it. Nested arrays and objects are checked
/// for syntax and skipped, as no field rule reads inside them: serde_json skips them
/// without a recursion limit (so deep nesting is still JSON) and without building their
/// strings (so a lone surrogate escape inside them, legal in the JSON grammar, is too).
#[derive(Debug, Clone, PartialEq)]
enum R {
    Null,
    Bool,
    Num(f64),
    Str(String),
    Nested,
}

/// The reference reading of a message: the top-level fields (last duplicate wins, as in a
/// JSON map), `None` when the JSON is not an object.
struct Top(Option<BTreeMap<String, R>>);

impl<'de> Deserialize<'de> for R {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = R;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("JSON")
            }
            fn visit_unit<E>(self) -> Result<R, E> {
                Ok(R::Null)
            }
            fn visit_bool<E>(self, _: bool) -> Result<R, E> {
                Ok(R::Bool)
            }
            fn visit_i64<E>(self, v: i64) -> Result<R, E> {
                Ok(R::Num(v as f64))
            }
            fn visit_u64<E>(self, v: u64) -> Result<R, E> {
                Ok(R::Num(v as f64))
            }
            fn visit_f64<E>(self, v: f64) -> Result<R, E> {
                Ok(R::Num(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<R, E> {
                Ok(R::Str(v.to_string()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<R, A::Error> {
                while a.next_element::<IgnoredAny>()?.is_some() {}
                Ok(R::Nested)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<R, A::Error> {
                while a.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(R::Nested)
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for Top {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Top;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("JSON")
            }
            fn visit_unit<E>(self) -> Result<Top, E> {
                Ok(Top(None))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Top, E> {
                Ok(Top(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Top, E> {
                Ok(Top(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Top, E> {
                Ok(Top(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Top, E> {
                Ok(Top(None))
            }
            fn visit_str<E>(self, _: &str) -> Result<Top, E> {
                Ok(Top(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Top, A::Error> {
                while a.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Top(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Top, A::Error> {
                let mut m = BTreeMap::new();
                while let Some((k, v)) = a.next_entry::<String, R>()? {
                    m.insert(k, v);
                }
                Ok(Top(Some(m)))
            }
        }
        d.deserialize_any(V)
    }
}

/// Why a decode result breaks the rules, if it does.
fn check(
    regions: &Regions,
    stream: Stream,
    bytes: &[u8],
    result: &Result<Decoded, DecodeError>,
) -> Result<(), String> {
    let reference = std::str::from_utf8(bytes)
        .ok()
        .map(|t| serde_json::from_str::<Top>(t).map(|t| t.0));
    let verdict = match &reference {
        None => "not_utf8",
        Some(Ok(Some(_))) => "object",
        Some(_) => "not_json",
    };
    match result {
        Ok(d) => {
            let Some(Ok(Some(obj))) = &reference else {
                return Err(format!("decoded, but the reference says {verdict}"));
            };
            check_event(regions, stream, obj, d)
        }
        Err(e) => {
            let label = e.reason.as_str();
            if !REASONS.contains(&label) {
                return Err(format!("undeclared reason `{label}`"));
            }
            if e.message.trim().is_empty() {
                return Err("empty error message".into());
            }
            if e.message.chars().count() > MAX_ERROR_CHARS {
                return Err(format!(
                    "error message of {} chars (x-error header): {}…",
                    e.message.chars().count(),
                    e.message.chars().take(120).collect::<String>()
                ));
            }
            match (label, verdict) {
                ("not_utf8", "not_utf8") | ("not_json", "not_json") => Ok(()),
                ("not_utf8" | "not_json", v) | (_, v @ ("not_utf8" | "not_json")) => {
                    Err(format!("`{label}`, but the reference says {v}"))
                }
                _ => {
                    let named = fields(stream)
                        .iter()
                        .any(|f| e.message.contains(&format!("`{f}`")));
                    if named {
                        Ok(())
                    } else {
                        Err(format!("`{label}` names no field of {stream}"))
                    }
                }
            }
        }
    }
}

fn check_event(
    regions: &Regions,
    stream: Stream,
    obj: &BTreeMap<String, R>,
    d: &Decoded,
) -> Result<(), String> {
    if d.event.stream() != stream {
        return Err(format!("{stream} message decoded as {}", d.event.stream()));
    }
    // A required string: present in the input as that string, not blank.
    let req = |name: &str, got: &str| -> Result<(), String> {
        match obj.get(name) {
            Some(R::Str(s)) if s == got && !s.trim().is_empty() => Ok(()),
            other => Err(format!("`{name}` = {got:?} from input {other:?}")),
        }
    };
    // An optional string: absent/null/blank in the input, or that string.
    let opt = |name: &str, got: Option<&str>| -> Result<(), String> {
        match (obj.get(name), got) {
            (None | Some(R::Null), None) => Ok(()),
            (Some(R::Str(s)), None) if s.trim().is_empty() => Ok(()),
            (Some(R::Str(s)), Some(g)) if s == g && !g.trim().is_empty() => Ok(()),
            (other, _) => Err(format!("`{name}` = {got:?} from input {other:?}")),
        }
    };
    let num = |name: &str, got: Option<f64>| -> Result<(), String> {
        match (obj.get(name), got) {
            (None | Some(R::Null), None) => Ok(()),
            (Some(R::Num(n)), Some(g)) if *n == g && g.is_finite() => Ok(()),
            (other, _) => Err(format!("`{name}` = {got:?} from input {other:?}")),
        }
    };
    let ts = |got: &chrono::DateTime<chrono::FixedOffset>| -> Result<(), String> {
        match obj.get("ts") {
            Some(R::Str(s)) if chrono::DateTime::parse_from_rfc3339(s).ok() == Some(*got) => Ok(()),
            other => Err(format!("`ts` = {got} from input {other:?}")),
        }
    };
    let region = |code: &str| -> Result<(), String> {
        req("region", code)?;
        match regions.resolve(code) {
            Some(r) if r == d.event.region() && r.unlisted == d.unlisted_region => Ok(()),
            other => Err(format!(
                "`region` {code:?} resolves to {other:?}, event has {:?}",
                d.event.region()
            )),
        }
    };
    match &d.event {
        Event::Incident(i) => {
            req("id", &i.id)?;
            ts(&i.ts)?;
            region(&i.region_code)?;
            req("category", &i.category)?;
            num("severity", i.severity.map(f64::from))?;
            if i.severity.is_some_and(|s| !(1..=4).contains(&s)) {
                return Err(format!("severity {:?}", i.severity));
            }
            num("lat", i.lat)?;
            num("lon", i.lon)?;
            opt("summary", i.summary.as_deref())
        }
        Event::Sensor(r) => {
            req("sensor_id", &r.sensor_id)?;
            req("site_id", &r.site_id)?;
            region(&r.region_code)?;
            req("kind", &r.kind)?;
            ts(&r.ts)?;
            num("value", Some(r.value))?;
            opt("unit", r.unit.as_deref())?;
            // Outside its kind's measuring range (or beyond 1e30 for a kind with none),
            // a reading the device calls ok is a fault.
            let plausible = match riskstream::decode::default_ranges().get(&r.kind) {
                // NAMUR NE 43's saturation band: 3.125 % of the span either side.
                Some([lo, hi]) => {
                    let slack = (hi - lo) / 32.0;
                    *lo - slack <= r.value && r.value <= *hi + slack
                }
                None => r.value.abs() <= 1e30,
            };
            let status = match r.status {
                SensorStatus::Ok if plausible => None,
                SensorStatus::OutOfRange if !plausible => None,
                SensorStatus::Fault => Some("fault"),
                other => return Err(format!("status {other:?} for value {}", r.value)),
            };
            match (obj.get("status"), status) {
                (None | Some(R::Null), None) => Ok(()),
                (Some(R::Str(s)), None) if s == "ok" || s.trim().is_empty() => Ok(()),
                (Some(R::Str(s)), Some("fault")) if s == "fault" => Ok(()),
                (other, _) => Err(format!("status {:?} from input {other:?}", r.status)),
            }
        }
        Event::Fraud(f) => {
            req("id", &f.id)?;
            ts(&f.ts)?;
            region(&f.region_code)?;
            req("channel", &f.channel)?;
            req("scheme", &f.scheme)?;
            opt("suspect_phone", f.suspect_phone.as_deref())?;
            opt("suspect_account", f.suspect_account.as_deref())?;
            opt("suspect_url", f.suspect_url.as_deref())?;
            if f.suspects().next().is_none() {
                return Err("fraud report without a suspect".into());
            }
            num("amount_cny", f.amount_cny)?;
            if f.amount_cny.is_some_and(|a| a < 0.0) {
                return Err(format!("amount_cny {:?}", f.amount_cny));
            }
            Ok(())
        }
    }
}

// ---------------------------------------------------------------------------------------
// the runner

/// What an input must do besides keeping the rules.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    /// Anything the rules allow.
    Any,
    /// A valid message, changed only in ways that keep it valid: it must decode.
    Valid,
}

#[derive(Debug, Clone)]
struct Input {
    stream: Stream,
    bytes: Vec<u8>,
    expect: Expect,
}

fn cases() -> u64 {
    std::env::var("RISKSTREAM_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
}

fn seed() -> [u8; 32] {
    if let Ok(hex) = std::env::var("RISKSTREAM_FUZZ_SEED") {
        let mut s = [0u8; 32];
        for (i, b) in s.iter_mut().enumerate() {
            *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2).expect("64 hex digits"), 16)
                .expect("hex");
        }
        return s;
    }
    use rand::Rng;
    rand::rng().random()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Shows an input in a failure report: text where it is UTF-8, escaped otherwise, clipped.
fn show(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(bytes);
    let s: String = s.chars().take(400).collect();
    format!("{s:?} ({} bytes)", bytes.len())
}

/// Runs `cases()` inputs of one family, counting executions, outcomes and failures.
fn fuzz(family: &str, strategy: impl Strategy<Value = Input>) {
    let regions = regions();
    let decoder = Decoder::new(regions.clone());
    let n = cases();
    let seed = seed();
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed),
    );
    let mut failures: Vec<String> = Vec::new();
    let mut failed = 0u64;
    let mut outcomes = std::collections::BTreeMap::<&str, u64>::new();
    // The panic message still goes to stderr; the input goes into the report.
    let start = Instant::now();
    for _ in 0..n {
        let input = strategy
            .new_tree(&mut runner)
            .expect("strategy makes inputs")
            .current();
        let result = catch_unwind(AssertUnwindSafe(|| {
            decoder.decode(input.stream, &input.bytes)
        }));
        let verdict = match &result {
            Err(p) => {
                let what = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                Err(format!("PANIC: {what}"))
            }
            Ok(r) => {
                *outcomes
                    .entry(match r {
                        Ok(_) => "ok",
                        Err(e) => e.reason.as_str(),
                    })
                    .or_default() += 1;
                check(&regions, input.stream, &input.bytes, r).and_then(|()| {
                    match (input.expect, r) {
                        (Expect::Valid, Err(e)) => {
                            Err(format!("a valid message was rejected: {}", e.message))
                        }
                        _ => Ok(()),
                    }
                })
            }
        };
        if let Err(why) = verdict {
            failed += 1;
            if failures.len() < 10 {
                failures.push(format!("{} {}: {why}", input.stream, show(&input.bytes)));
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let shown: Vec<String> = outcomes.iter().map(|(k, v)| format!("{k} {v}")).collect();
    eprintln!(
        "fuzz_decode {family}: {n} executions, {failed} failures in {secs:.1}s ({:.0}/s), seed {}; outcomes: {}",
        n as f64 / secs.max(1e-9),
        hex(&seed),
        shown.join(", ")
    );
    assert!(
        failed == 0,
        "{family}: {failed} of {n} inputs broke the rules (RISKSTREAM_FUZZ_SEED={} replays):\n{}",
        hex(&seed),
        failures.join("\n")
    );
}

fn any_stream() -> impl Strategy<Value = Stream> {
    prop::sample::select(Stream::ALL.to_vec())
}

// ---------------------------------------------------------------------------------------
// valid messages, as (key, raw JSON token) lists so that mutations can write invalid JSON

type Fields = Vec<(String, String)>;

fn js(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

fn encode(fields: &Fields) -> Vec<u8> {
    let body: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("{}:{v}", js(k)))
        .collect();
    format!("{{{}}}", body.join(",")).into_bytes()
}

/// Region codes the hierarchy resolves: listed townships, counties, the city, and unlisted
/// 9-digit codes under a known county.
fn region_code() -> impl Strategy<Value = String> {
    let r = regions();
    let towns: Vec<String> = r.township_codes().map(String::from).collect();
    let counties: Vec<String> = r.county_codes().map(String::from).collect();
    let city = r.city_code().to_string();
    let unlisted = (prop::sample::select(counties.clone()), 900u32..1000)
        .prop_map(|(c, n)| format!("{c}{n:03}"))
        .prop_filter("not listed", move |c| {
            r.resolve(c).is_some_and(|x| x.unlisted)
        });
    prop_oneof![
        6 => prop::sample::select(towns),
        2 => prop::sample::select(counties),
        1 => Just(city),
        1 => unlisted,
    ]
}

fn timestamp() -> impl Strategy<Value = String> {
    (
        1970i32..2100,
        1u32..=12,
        1u32..=28,
        0u32..24,
        0u32..60,
        0u32..60,
        prop::option::of(0u32..1_000_000_000),
        prop::sample::select(vec!["Z", "+08:00", "-05:30", "+00:00", "+14:00", "-12:00"]),
    )
        .prop_map(|(y, mo, d, h, mi, s, frac, off)| {
            let frac = frac.map(|f| format!(".{f:09}")).unwrap_or_default();
            format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}{frac}{off}")
        })
}

/// A non-blank string: ids, categories, kinds ...
fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[A-Za-z0-9_-]{1,24}",
        1 => "\\PC{0,8}[^\\s]\\PC{0,8}",
        1 => "[一-龥]{1,6}",
    ]
}

fn finite() -> impl Strategy<Value = f64> {
    prop_oneof![
        4 => -1000.0f64..1000.0,
        1 => any::<f64>().prop_filter("finite", |x| x.is_finite()),
        1 => prop::sample::select(vec![0.0, -0.0, f64::MAX, f64::MIN, f64::MIN_POSITIVE, 5e-324, 1e300]),
    ]
}

fn num(x: f64) -> String {
    serde_json::to_string(&x).unwrap()
}

fn valid(stream: Stream) -> BoxedStrategy<Fields> {
    let opt_word = || prop::option::of(word());
    match stream {
        Stream::Incidents => (
            word(),
            timestamp(),
            region_code(),
            word(),
            prop::option::of(1u8..=4),
            prop::option::of(-90.0f64..90.0),
            prop::option::of(-180.0f64..180.0),
            prop::option::of("\\PC{0,40}"),
        )
            .prop_map(|(id, ts, region, category, sev, lat, lon, summary)| {
                let mut f = vec![
                    ("id".into(), js(&id)),
                    ("ts".into(), js(&ts)),
                    ("region".into(), js(&region)),
                    ("category".into(), js(&category)),
                ];
                if let Some(s) = sev {
                    f.push(("severity".into(), s.to_string()));
                }
                if let Some(x) = lat {
                    f.push(("lat".into(), num(x)));
                }
                if let Some(x) = lon {
                    f.push(("lon".into(), num(x)));
                }
                if let Some(s) = summary {
                    f.push(("summary".into(), js(&s)));
                }
                f
            })
            .boxed(),
        Stream::Sensors => (
            word(),
            word(),
            region_code(),
            prop_oneof![
                prop::sample::select(vec![
                    "gas_lel",
                    "h2s_ppm",
                    "temperature",
                    "pressure",
                    "tank_level"
                ])
                .prop_map(String::from),
                word()
            ],
            timestamp(),
            finite(),
            opt_word(),
            prop::option::of(prop::sample::select(vec!["ok", "fault"])),
        )
            .prop_map(|(sensor, site, region, kind, ts, value, unit, status)| {
                let mut f = vec![
                    ("sensor_id".into(), js(&sensor)),
                    ("site_id".into(), js(&site)),
                    ("region".into(), js(&region)),
                    ("kind".into(), js(&kind)),
                    ("ts".into(), js(&ts)),
                    ("value".into(), num(value)),
                ];
                if let Some(u) = unit {
                    f.push(("unit".into(), js(&u)));
                }
                if let Some(s) = status {
                    f.push(("status".into(), js(s)));
                }
                f
            })
            .boxed(),
        Stream::Fraud => (
            word(),
            timestamp(),
            region_code(),
            word(),
            word(),
            (opt_word(), opt_word(), opt_word()).prop_filter("one suspect", |(a, b, c)| {
                a.is_some() || b.is_some() || c.is_some()
            }),
            prop::option::of(finite().prop_map(f64::abs)),
            any::<bool>(),
        )
            .prop_map(
                |(id, ts, region, channel, scheme, (phone, account, url), amount, nulls)| {
                    let mut f = vec![
                        ("id".into(), js(&id)),
                        ("ts".into(), js(&ts)),
                        ("region".into(), js(&region)),
                        ("channel".into(), js(&channel)),
                        ("scheme".into(), js(&scheme)),
                    ];
                    for (k, v) in [
                        ("suspect_phone", phone),
                        ("suspect_account", account),
                        ("suspect_url", url),
                    ] {
                        match v {
                            Some(v) => f.push((k.into(), js(&v))),
                            None if nulls => f.push((k.into(), "null".into())),
                            None => {}
                        }
                    }
                    if let Some(a) = amount {
                        f.push(("amount_cny".into(), num(a)));
                    }
                    f
                },
            )
            .boxed(),
    }
}

fn valid_message() -> impl Strategy<Value = (Stream, Fields)> {
    any_stream().prop_flat_map(|s| valid(s).prop_map(move |f| (s, f)))
}

// ---------------------------------------------------------------------------------------
// arbitrary JSON

fn json_value(depth: u32) -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        finite().prop_map(Value::from),
        "\\PC{0,20}".prop_map(Value::String),
        prop::sample::select(vec!["NaN", "Infinity", "-Infinity", "ok", "fault", "", " "])
            .prop_map(|s| Value::String(s.into())),
        region_code().prop_map(Value::String),
        timestamp().prop_map(Value::String),
    ];
    leaf.prop_recursive(depth, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// Object keys: the streams' field names mostly.
fn key() -> impl Strategy<Value = String> {
    let all: Vec<&str> = Stream::ALL
        .iter()
        .flat_map(|s| fields(*s).iter().copied())
        .collect();
    prop_oneof![
        4 => prop::sample::select(all).prop_map(String::from),
        1 => "\\PC{0,10}",
    ]
}

// ---------------------------------------------------------------------------------------
// mutations

#[derive(Debug, Clone)]
enum Mutation {
    /// Drop a field.
    Remove(Index),
    /// Give a field another raw token (another type, an edge value, invalid JSON).
    Set(Index, String),
    /// Add a field (unknown to the stream, or a duplicate key whose last value wins).
    Add(String, String),
    /// Insert an invalid UTF-8 sequence at a byte position of the encoded message.
    BadUtf8(Index, Vec<u8>),
    /// Cut the encoded message.
    Truncate(Index),
}

/// Raw tokens aimed at the number, string and type rules.
fn edge_token() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        // non-finite, as strings and as the literals JSON does not have
        "\"NaN\"",
        "\"nan\"",
        "\"Infinity\"",
        "\"-Infinity\"",
        "\"inf\"",
        "\"-inf\"",
        "\"1e999\"",
        "NaN",
        "Infinity",
        "-Infinity",
        "nan",
        "inf",
        // numbers at and beyond f64
        "1e308",
        "-1e308",
        "1.7976931348623157e308",
        "1e309",
        "-1e999",
        "5e-324",
        "1e-400",
        "-0",
        "0",
        "18446744073709551615",
        "18446744073709551616",
        "-9223372036854775808",
        "-9223372036854775809",
        "123456789012345678901234567890",
        "1.",
        ".5",
        "01",
        "+1",
        "0x10",
        // severity and status edges
        "1",
        "4",
        "4.0",
        "2.5",
        "5",
        "-1",
        "0.9999999999999999",
        "\"2\"",
        "\"ok\"",
        "\"fault\"",
        "\"FAULT\"",
        "\"ok \"",
        // other types
        "true",
        "false",
        "null",
        "[]",
        "{}",
        "[1,2]",
        "{\"a\":1}",
        "\"\"",
        "\"   \"",
        "\"\\t\\n\"",
        // escapes
        "\"\\u0000\"",
        "\"\\ud800\"",
        "\"\\udfff\\ud800\"",
        "\"\\ud83d\\ude00\"",
        "\"a\\\"b\"",
        "\"\\u00e9t\\u00e9\"",
        "\"\\/\"",
        "\"\\x41\"",
    ])
    .prop_map(String::from)
}

/// Timestamps at and past the edges of what RFC 3339 and chrono hold.
fn edge_timestamp() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "0000-01-01T00:00:00Z",
            "0000-01-01T00:00:00+23:59",
            "9999-12-31T23:59:59.999999999-23:59",
            "9999-12-31T23:59:59.999999999+23:59",
            "+10000-01-01T00:00:00Z",
            "-0001-01-01T00:00:00Z",
            "1970-01-01T00:00:00Z",
            "2026-02-29T00:00:00Z",
            "2028-02-29T00:00:00Z",
            "2026-02-30T00:00:00Z",
            "2026-12-31T23:59:60Z",
            "2026-12-31T23:59:60.999999999+08:00",
            "2026-11-26T24:00:00Z",
            "2026-11-26T08:15:00+24:00",
            "2026-11-26T08:15:00+08:60",
            "2026-11-26t08:15:00z",
            "2026-11-26 08:15:00+08:00",
            "2026-11-26T08:15:00",
            "2026-11-26T08:15+08:00",
            "2026-11-26T08:15:00.+08:00",
            "2026-11-26T08:15:00.1234567890123456789012345678901234567890+08:00",
            "2026-11-26T08:15:00+08:00 ",
            " 2026-11-26T08:15:00+08:00",
            "２０２６-11-26T08:15:00+08:00",
            "2026-11-26T08:15:00+08:00\u{0}",
            "",
        ])
        .prop_map(String::from),
        "[0-9T:+\\-Zz. ]{0,40}",
        (any::<i32>(), any::<u8>(), any::<u8>())
            .prop_map(|(y, m, d)| format!("{y:04}-{m:02}-{d:02}T00:00:00Z")),
    ]
    .prop_map(|s| js(&s))
}

/// Region codes that look right and are not: other digits, look-alike unicode, padding.
fn edge_region() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9]{0,12}",
        region_code().prop_map(|c| format!(" {c}")),
        region_code().prop_map(|c| format!("{c}\u{0}")),
        region_code().prop_map(|c| c
            .chars()
            .map(|d| char::from_u32(d as u32 - '0' as u32 + 0xFF10).unwrap())
            .collect()),
        region_code().prop_map(|c| c
            .chars()
            .map(|d| char::from_u32(d as u32 - '0' as u32 + 0x0660).unwrap())
            .collect()),
        region_code().prop_map(|c| format!("{c}\u{301}")),
        region_code().prop_map(|c| c[..c.len() - 1].to_string()),
        "\\PC{0,12}",
    ]
    .prop_map(|s| js(&s))
}

fn huge_string() -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec![1_000usize, 70_000, 1_000_000]),
        prop::sample::select(vec!["a", "é", "界", "😀", " ", "\\\"", "\\u0000"]),
    )
        .prop_map(|(n, unit)| format!("\"{}\"", unit.repeat(n)))
}

fn deep(depth: usize, object: bool) -> String {
    if object {
        format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth))
    } else {
        format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
    }
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let any_token = prop_oneof![
        4 => edge_token(),
        2 => edge_timestamp(),
        2 => edge_region(),
        2 => json_value(3).prop_map(|v| v.to_string()),
        1 => huge_string(),
        1 => (0usize..300, any::<bool>()).prop_map(|(d, o)| deep(d, o)),
    ];
    prop_oneof![
        3 => any::<Index>().prop_map(Mutation::Remove),
        8 => (any::<Index>(), any_token.clone()).prop_map(|(i, t)| Mutation::Set(i, t)),
        2 => (key(), any_token).prop_map(|(k, t)| Mutation::Add(k, t)),
        1 => (
            any::<Index>(),
            prop::sample::select(vec![
                vec![0xff], vec![0xfe, 0xff], vec![0xc0, 0x80], vec![0xed, 0xa0, 0x80],
                vec![0xf4, 0x90, 0x80, 0x80], vec![0xe2, 0x82], vec![0x80], vec![0xf8, 0x88, 0x80, 0x80, 0x80],
            ])
        )
            .prop_map(|(i, b)| Mutation::BadUtf8(i, b)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
    ]
}

fn apply(mut fields: Fields, mutations: &[Mutation]) -> Vec<u8> {
    let mut byte_edits = Vec::new();
    for m in mutations {
        match m {
            Mutation::Remove(i) if !fields.is_empty() => {
                fields.remove(i.index(fields.len()));
            }
            Mutation::Set(i, t) if !fields.is_empty() => {
                let at = i.index(fields.len());
                fields[at].1 = t.clone();
            }
            Mutation::Add(k, t) => fields.push((k.clone(), t.clone())),
            Mutation::BadUtf8(..) | Mutation::Truncate(_) => byte_edits.push(m.clone()),
            _ => {}
        }
    }
    let mut bytes = encode(&fields);
    for m in byte_edits {
        match m {
            Mutation::BadUtf8(i, b) => {
                let at = i.index(bytes.len() + 1);
                bytes.splice(at..at, b);
            }
            Mutation::Truncate(i) => bytes.truncate(i.index(bytes.len() + 1)),
            _ => {}
        }
    }
    bytes
}

// ---------------------------------------------------------------------------------------
// the three families

#[test]
fn fuzz_arbitrary_bytes() {
    let soup = prop::collection::vec(
        prop::sample::select(vec![
            "{",
            "}",
            "[",
            "]",
            "\"",
            ":",
            ",",
            " ",
            "\\",
            "\\u",
            "0",
            "1",
            "-",
            ".",
            "e",
            "E",
            "true",
            "null",
            "NaN",
            "\"ts\"",
            "\"value\"",
            "\"region\"",
            "\"id\"",
            "\"330502001\"",
            "\"2026-11-26T08:15:00+08:00\"",
            "\u{ff}",
            "é",
            "\u{0}",
        ]),
        0..40,
    )
    .prop_map(|t| t.concat().into_bytes());
    let edited = (
        valid_message(),
        prop::collection::vec((any::<Index>(), any::<u8>(), 0u8..3), 1..4),
    )
        .prop_map(|((s, f), edits)| {
            let mut b = encode(&f);
            for (i, byte, op) in edits {
                let at = i.index(b.len().max(1));
                match op {
                    0 if at < b.len() => b[at] = byte,
                    1 => b.insert(at.min(b.len()), byte),
                    _ if at < b.len() => {
                        b.remove(at);
                    }
                    _ => {}
                }
            }
            (s, b)
        });
    let strategy = prop_oneof![
        2 => (any_stream(), prop::collection::vec(any::<u8>(), 0..256)),
        2 => (any_stream(), soup),
        3 => edited,
    ]
    .prop_map(|(stream, bytes)| Input {
        stream,
        bytes,
        expect: Expect::Any,
    });
    fuzz("bytes", strategy);
}

#[test]
fn fuzz_arbitrary_json() {
    let strategy = (
        any_stream(),
        prop_oneof![
            1 => json_value(4),
            4 => prop::collection::vec((key(), json_value(2)), 0..12)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ],
    )
        .prop_map(|(stream, v)| Input {
            stream,
            bytes: serde_json::to_vec(&v).unwrap(),
            expect: Expect::Any,
        });
    fuzz("json", strategy);
}

#[test]
fn fuzz_mutated_messages() {
    // Changes that keep a message valid: unknown extra fields, whitespace between tokens.
    let harmless = prop_oneof![
        ("x_[a-z]{1,8}", json_value(2)).prop_map(|(k, v)| Some((k, v.to_string()))),
        Just(None),
    ];
    let strategy = (
        valid_message(),
        prop::collection::vec(mutation(), 0..5),
        harmless,
        any::<bool>(),
    )
        .prop_map(|((stream, fields), mutations, extra, spaced)| {
            let mut fields = fields;
            if let Some(kv) = extra {
                fields.push(kv);
            }
            let mut bytes = apply(fields, &mutations);
            if spaced && mutations.is_empty() {
                let text = String::from_utf8(bytes).unwrap();
                bytes = format!(" \n{}\t ", text.replacen(':', " : ", 1)).into_bytes();
            }
            Input {
                stream,
                bytes,
                expect: if mutations.is_empty() {
                    Expect::Valid
                } else {
                    Expect::Any
                },
            }
        });
    fuzz("mutations", strategy);
}
