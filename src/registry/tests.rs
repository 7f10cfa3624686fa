use super::*;

const GOOD: &str = r#"{"sensor_id":"S-330503-0042-TEMP1","name":"R-2 reactor outlet temperature","site_id":"SITE-330503-0042","kind":"temperature","unit":"degC","range":[-50.0,300.0],"limits":{"hh":160.0,"h":150.0,"l":20.0,"ll":10.0},"deadband":2.0,"site_name":"Jiahe Chemical","hazard_grade":2}"#;

#[test]
fn the_spec_example_parses() {
    let p = Point::parse(GOOD.as_bytes()).unwrap();
    assert_eq!(p.limits.hh, Some(160.0));
    assert_eq!(p.limits.ll, Some(10.0));
    assert_eq!(p.range, Some([-50.0, 300.0]));
    assert_eq!(p.hazard_grade, Some(2));
    // Written back, it reads the same.
    let again = Point::parse(serde_json::to_string(&p).unwrap().as_bytes()).unwrap();
    assert_eq!(again, p);
    // Only sensor_id is required; other fields of newer producers are ignored.
    let p = Point::parse(br#"{"sensor_id":"S-1","vendor":"x"}"#).unwrap();
    assert_eq!(p, Point::new("S-1"));
}

#[test]
fn every_problem_names_its_field() {
    let cases: [(&str, &str); 10] = [
        (r#"{"name":"x"}"#, "sensor_id"),
        (r#"{"sensor_id":""}"#, "sensor_id: must not be empty"),
        (
            r#"{"sensor_id":"S","limits":{"h":5,"hh":4}}"#,
            "limits.hh: must be > h",
        ),
        (
            r#"{"sensor_id":"S","limits":{"l":1,"ll":2}}"#,
            "limits.ll: must be < l",
        ),
        (
            r#"{"sensor_id":"S","limits":{"h":1,"l":2}}"#,
            "limits: the low limits",
        ),
        (
            r#"{"sensor_id":"S","limits":{"hhh":1}}"#,
            "limits.hhh: unknown field `hhh`",
        ),
        (
            r#"{"sensor_id":"S","limits":{"h":"high"}}"#,
            "limits.h: invalid type",
        ),
        (
            r#"{"sensor_id":"S","range":[5,1]}"#,
            "range: must be [low, high]",
        ),
        (
            r#"{"sensor_id":"S","levels":{"h":"red","hh":"yellow"}}"#,
            "levels.hh: must not be below levels.h",
        ),
        (
            r#"{"sensor_id":"S","hazard_grade":7,"deadband":-1}"#,
            "deadband: must be a finite number >= 0",
        ),
    ];
    for (json, want) in cases {
        let e = Point::parse(json.as_bytes()).unwrap_err();
        assert!(
            e.iter().any(|p| p.starts_with(want) || p.contains(want)),
            "{json}: {e:?}"
        );
    }
    let e = Point::parse(br#"{"sensor_id":"S","hazard_grade":7,"deadband":-1}"#).unwrap_err();
    assert_eq!(e.len(), 2, "both problems listed: {e:?}");
    assert!(e[1].starts_with("hazard_grade: must be 1 to 4"), "{e:?}");
    let e = Point::parse(br#"{"sensor_id":"S","levels":{"h":"amber"}}"#).unwrap_err();
    assert!(
        e[0].starts_with("levels.h: unknown variant `amber`"),
        "{e:?}"
    );
}

#[test]
fn a_file_lists_every_bad_line_with_its_number() {
    let text = format!(
        "{GOOD}\n\n{}\nnot json\n{}\n",
        r#"{"sensor_id":"S-2","limits":{"h":5,"hh":4}}"#, r#"{"sensor_id":"S-3","hazard_grade":0}"#
    );
    let e = parse_lines(&text, "points.ndjson").unwrap_err();
    assert_eq!(e.problems.len(), 3, "{e:?}");
    assert!(
        e.problems[0].starts_with("points.ndjson:3: limits.hh:"),
        "{e:?}"
    );
    assert!(
        e.problems[1].starts_with("points.ndjson:4: not a point object"),
        "{e:?}"
    );
    assert!(
        e.problems[2].starts_with("points.ndjson:5: hazard_grade:"),
        "{e:?}"
    );
    let ok = parse_lines(&format!("{GOOD}\n\n"), "p").unwrap();
    assert_eq!(ok.len(), 1);
}

#[test]
fn topic_records_replace_remove_and_keep_the_last_good_version() {
    let r = Registry::new();
    let key = "S-330503-0042-TEMP1";
    assert_eq!(r.apply(key, Some(GOOD.as_bytes())), Ok(Applied::Upserted));
    assert_eq!(r.get(key).unwrap().limits.h, Some(150.0));
    let changed = GOOD.replace(r#""h":150.0"#, r#""h":140.0"#);
    r.apply(key, Some(changed.as_bytes())).unwrap();
    assert_eq!(r.get(key).unwrap().limits.h, Some(140.0));
    // A bad edit changes nothing; nor does a record under another key.
    let bad = GOOD.replace(r#""h":150.0"#, r#""h":170.0"#);
    let e = r.apply(key, Some(bad.as_bytes())).unwrap_err();
    assert!(e.problems[0].starts_with("limits.hh"), "{e:?}");
    let e = r.apply("S-OTHER", Some(GOOD.as_bytes())).unwrap_err();
    assert!(e.problems[0].starts_with("sensor_id:"), "{e:?}");
    assert_eq!(r.get(key).unwrap().limits.h, Some(140.0));
    assert!(r.get("S-OTHER").is_none());
    assert_eq!(r.apply(key, None), Ok(Applied::Removed));
    assert!(r.get(key).is_none());
    assert_eq!(r.apply(key, None), Ok(Applied::Unchanged));
    assert!(r.is_empty());
}

/// A reading outside its point's measuring range is a fault even where its kind's
/// (much wider) built-in range admits it; an unregistered sensor keeps the kind's.
#[test]
fn the_decoder_judges_with_the_points_range() {
    use crate::decode::{Event, SensorStatus, Stream};
    let reg = Arc::new(Registry::with_points([
        Point::parse(GOOD.as_bytes()).unwrap()
    ]));
    let d = crate::decode::test_decoder().with_points(reg.clone());
    let status = |id: &str, v: f64| {
        let j = serde_json::json!({"sensor_id":id,"site_id":"SITE-330503-0042","region":"330503101",
            "kind":"temperature","ts":"2026-11-26T08:15:00+08:00","value":v});
        let Event::Sensor(r) = d
            .decode(Stream::Sensors, j.to_string().as_bytes())
            .unwrap()
            .event
        else {
            panic!()
        };
        (r.status, r.point.is_some())
    };
    let id = "S-330503-0042-TEMP1";
    assert_eq!(status(id, 299.0), (SensorStatus::Ok, true));
    assert_eq!(status(id, 400.0), (SensorStatus::OutOfRange, true));
    assert_eq!(status(id, -70.0), (SensorStatus::OutOfRange, true));
    // [-50, 300]: NAMUR NE 43's saturation band (3.125 % of the span) is still a reading.
    assert_eq!(status(id, 305.0), (SensorStatus::Ok, true));
    assert_eq!(status("S-UNREGISTERED", 400.0), (SensorStatus::Ok, false));
    reg.remove(id);
    assert_eq!(status(id, 400.0), (SensorStatus::Ok, false));
}
