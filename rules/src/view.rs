//! The `ctx` a rule sees in rhai: read-only handles on one shared [`Context`].
//!
//! Why handles and not a rhai map: rhai deep-copies a map whenever it is passed to a function
//! or read out of another map, so `vitals::latest(ctx, "heart_rate")` copied the whole context,
//! recent readings included, once per vital, per rule, per event; and building the map went
//! through a serde round-trip. That was almost all of the rules stage's time. A handle is one
//! `Arc` clone, and its getters read the shared [`Context`] in place.
//!
//! Rules read it exactly as they read the map: `ctx.event.vitals.heart_rate`, `v[name]`,
//! `for r in ctx.patient.recent_vitals { r.time }`; anything missing, and any field name the
//! context does not have, reads as `()`. Writing to it is an error (no setters), so no rule can
//! change what the next rule of the event sees. Whatever a rule puts of it into `data()` or
//! `action()` is written to the alert as the same JSON the map gave.

use std::sync::Arc;

use rhai::{Array, Dynamic, Engine, ImmutableString};

use crate::context::{Context, CtxVitals};

/// `ctx` for a rule: a handle on the context of one evaluation.
pub(crate) fn rule_context(ctx: Arc<Context>) -> Dynamic {
    Dynamic::from(RuleContext(ctx))
}

/// `ctx`: the whole context of one evaluation.
#[derive(Debug, Clone)]
pub(crate) struct RuleContext(pub(crate) Arc<Context>);

/// `ctx.event`.
#[derive(Debug, Clone)]
pub(crate) struct EventView(Arc<Context>);

/// `ctx.patient`.
#[derive(Debug, Clone)]
pub(crate) struct PatientView(Arc<Context>);

/// `ctx.department`.
#[derive(Debug, Clone)]
pub(crate) struct DepartmentView(Arc<Context>);

/// `ctx.event.vitals` (`reading: None`) or one of `ctx.patient.recent_vitals`, which also has
/// its `time`.
#[derive(Debug, Clone)]
pub(crate) struct VitalsView {
    ctx: Arc<Context>,
    reading: Option<usize>,
}

impl VitalsView {
    fn vitals(&self) -> Option<&CtxVitals> {
        match self.reading {
            None => self.ctx.event.vitals.as_ref(),
            Some(i) => self.ctx.patient.recent_vitals.get(i).map(|r| &r.vitals),
        }
    }

    fn time(&self) -> Dynamic {
        self.reading
            .and_then(|i| self.ctx.patient.recent_vitals.get(i))
            .map_or(Dynamic::UNIT, |r| shared(&r.time))
    }

    fn field(&self, name: &str) -> Dynamic {
        match name {
            "time" => self.time(),
            _ => self
                .vitals()
                .and_then(|v| vital(v, name))
                .unwrap_or(Dynamic::UNIT),
        }
    }
}

fn text(s: &str) -> Dynamic {
    Dynamic::from(ImmutableString::from(s))
}

/// A text the context already holds as a rhai string: the same string, one more reference.
fn shared(s: &ImmutableString) -> Dynamic {
    Dynamic::from(s.clone())
}

fn opt_text(s: &Option<String>) -> Dynamic {
    s.as_deref().map_or(Dynamic::UNIT, text)
}

fn opt_int(i: Option<i64>) -> Dynamic {
    i.map_or(Dynamic::UNIT, Dynamic::from_int)
}

/// A vital by its field name; `None` when absent or not a vital.
pub(crate) fn vital(v: &CtxVitals, name: &str) -> Option<Dynamic> {
    let number = |f: Option<f64>| f.map(Dynamic::from_float);
    match name {
        "heart_rate" => number(v.heart_rate),
        "bp_systolic" => number(v.bp_systolic),
        "bp_diastolic" => number(v.bp_diastolic),
        "temperature_c" => number(v.temperature_c),
        "oxygen_saturation" => number(v.oxygen_saturation),
        "respiratory_rate" => number(v.respiratory_rate),
        "consciousness" => v.consciousness.as_ref().map(shared),
        "supplemental_o2" => v.supplemental_o2.map(Dynamic::from_bool),
        _ => None,
    }
}

/// `latest_vital(ctx, name)`: the vital on the event, else the newest recent reading that has
/// it (readings are newest first), else `()`. A reading's `time` counts as one of its fields,
/// as it did when readings were maps.
pub(crate) fn latest_vital(ctx: &Context, name: &str) -> Dynamic {
    if let Some(x) = ctx.event.vitals.as_ref().and_then(|v| vital(v, name)) {
        return x;
    }
    ctx.patient
        .recent_vitals
        .iter()
        .find_map(|r| {
            if name == "time" {
                Some(shared(&r.time))
            } else {
                vital(&r.vitals, name)
            }
        })
        .unwrap_or(Dynamic::UNIT)
}

impl RuleContext {
    fn field(&self, name: &str) -> Dynamic {
        match name {
            "event" => Dynamic::from(EventView(Arc::clone(&self.0))),
            "patient" => Dynamic::from(PatientView(Arc::clone(&self.0))),
            "department" => Dynamic::from(DepartmentView(Arc::clone(&self.0))),
            "now" => text(&self.0.now),
            _ => Dynamic::UNIT,
        }
    }
}

impl EventView {
    fn field(&self, name: &str) -> Dynamic {
        let e = &self.0.event;
        match name {
            "event_id" => text(&e.event_id),
            "event_type" => text(&e.event_type),
            "event_timestamp" => text(&e.event_timestamp),
            "hospital_id" => opt_int(e.hospital_id),
            "department" => opt_text(&e.department),
            "gender" => opt_text(&e.gender),
            "age" => opt_int(e.age),
            "admission_time" => opt_text(&e.admission_time),
            "discharge_time" => opt_text(&e.discharge_time),
            "admission_priority" => opt_text(&e.admission_priority),
            "diagnosis_code" => opt_text(&e.diagnosis_code),
            "vitals" => self.vitals(),
            _ => Dynamic::UNIT,
        }
    }

    fn vitals(&self) -> Dynamic {
        if self.0.event.vitals.is_some() {
            Dynamic::from(VitalsView {
                ctx: Arc::clone(&self.0),
                reading: None,
            })
        } else {
            Dynamic::UNIT
        }
    }
}

impl PatientView {
    fn field(&self, name: &str) -> Dynamic {
        let p = &self.0.patient;
        match name {
            "patient" => text(&p.patient),
            "admitted" => Dynamic::from_bool(p.admitted),
            "hospital_id" => opt_int(p.hospital_id),
            "department" => opt_text(&p.department),
            "admission_time" => opt_text(&p.admission_time),
            "age" => opt_int(p.age),
            "gender" => opt_text(&p.gender),
            "recent_vitals" => Dynamic::from_array(self.recent_vitals()),
            "last_discharge_time" => opt_text(&p.last_discharge_time),
            "scores" => self.scores(),
            "admissions" => self.admissions(),
            "diagnoses" => self.diagnoses(),
            _ => Dynamic::UNIT,
        }
    }

    /// `ctx.patient.scores`: a map from rule name to its kept scores, each `#{time, score}`,
    /// newest first. Built when read (only trend rules read it).
    fn scores(&self) -> Dynamic {
        let map: rhai::Map = self
            .0
            .patient
            .scores
            .iter()
            .map(|(rule, scores)| {
                let list: Array = scores
                    .iter()
                    .map(|s| {
                        let mut m = rhai::Map::new();
                        m.insert("time".into(), shared(&s.time));
                        m.insert("score".into(), Dynamic::from_float(s.score));
                        Dynamic::from_map(m)
                    })
                    .collect();
                (rule.as_str().into(), Dynamic::from_array(list))
            })
            .collect();
        Dynamic::from_map(map)
    }

    /// `ctx.patient.admissions`: `#{time, hospital_id, department, kind, admission_priority}`
    /// each.
    fn admissions(&self) -> Dynamic {
        let list: Array = self
            .0
            .patient
            .admissions
            .iter()
            .map(|a| {
                let mut m = rhai::Map::new();
                m.insert("time".into(), text(&a.time));
                m.insert("hospital_id".into(), opt_int(a.hospital_id));
                m.insert("department".into(), opt_text(&a.department));
                m.insert("kind".into(), opt_text(&a.kind));
                m.insert("admission_priority".into(), opt_text(&a.admission_priority));
                Dynamic::from_map(m)
            })
            .collect();
        Dynamic::from_array(list)
    }

    /// `ctx.patient.diagnoses`: `#{time, code}` each.
    fn diagnoses(&self) -> Dynamic {
        let list: Array = self
            .0
            .patient
            .diagnoses
            .iter()
            .map(|d| {
                let mut m = rhai::Map::new();
                m.insert("time".into(), text(&d.time));
                m.insert("code".into(), text(&d.code));
                Dynamic::from_map(m)
            })
            .collect();
        Dynamic::from_array(list)
    }

    fn recent_vitals(&self) -> Array {
        (0..self.0.patient.recent_vitals.len())
            .map(|i| {
                Dynamic::from(VitalsView {
                    ctx: Arc::clone(&self.0),
                    reading: Some(i),
                })
            })
            .collect()
    }
}

impl DepartmentView {
    fn field(&self, name: &str) -> Dynamic {
        let d = &self.0.department;
        match name {
            "hospital_id" => opt_int(d.hospital_id),
            "department" => opt_text(&d.department),
            "kind" => opt_text(&d.kind),
            "occupied" => Dynamic::from_int(d.occupied),
            "bed_capacity" => Dynamic::from_int(d.bed_capacity),
            "occupancy_pct" => Dynamic::from_float(d.occupancy_pct),
            "forecast" => {
                let list: Array = d
                    .forecast
                    .iter()
                    .map(|h| {
                        let mut m = rhai::Map::new();
                        m.insert("hours".into(), Dynamic::from_int(h.hours));
                        m.insert("expected".into(), Dynamic::from_float(h.expected));
                        m.insert("p10".into(), Dynamic::from_float(h.p10));
                        m.insert("p90".into(), Dynamic::from_float(h.p90));
                        m.insert(
                            "p_over_capacity".into(),
                            Dynamic::from_float(h.p_over_capacity),
                        );
                        Dynamic::from_map(m)
                    })
                    .collect();
                Dynamic::from_array(list)
            }
            _ => Dynamic::UNIT,
        }
    }
}

/// Field names with a getter of their own (faster than the by-name indexer, which serves
/// `x[name]` and names the context does not have).
const CTX_FIELDS: &[&str] = &["event", "patient", "department", "now"];
const EVENT_FIELDS: &[&str] = &[
    "event_id",
    "event_type",
    "event_timestamp",
    "hospital_id",
    "department",
    "gender",
    "age",
    "admission_time",
    "discharge_time",
    "admission_priority",
    "diagnosis_code",
    "vitals",
];
const PATIENT_FIELDS: &[&str] = &[
    "patient",
    "admitted",
    "hospital_id",
    "department",
    "admission_time",
    "age",
    "gender",
    "recent_vitals",
    "last_discharge_time",
    "scores",
    "admissions",
    "diagnoses",
];
const DEPARTMENT_FIELDS: &[&str] = &[
    "hospital_id",
    "department",
    "kind",
    "occupied",
    "bed_capacity",
    "occupancy_pct",
    "forecast",
];
const VITALS_FIELDS: &[&str] = &[
    "time",
    "heart_rate",
    "bp_systolic",
    "bp_diastolic",
    "temperature_c",
    "oxygen_saturation",
    "respiratory_rate",
    "consciousness",
    "supplemental_o2",
];

macro_rules! register_view {
    ($engine:expr, $ty:ty, $name:literal, $fields:expr) => {{
        $engine.register_type_with_name::<$ty>($name);
        for &field in $fields {
            $engine.register_get(field, move |v: &mut $ty| -> Dynamic { v.field(field) });
        }
        $engine.register_indexer_get(|v: &mut $ty, name: ImmutableString| -> Dynamic {
            v.field(&name)
        });
    }};
}

/// Registers the handle types, their getters, and `latest_vital` and `highest_vital_within` on
/// them.
pub(crate) fn register(engine: &mut Engine) {
    register_view!(engine, RuleContext, "Context", CTX_FIELDS);
    register_view!(engine, EventView, "Event", EVENT_FIELDS);
    register_view!(engine, PatientView, "Patient", PATIENT_FIELDS);
    register_view!(engine, DepartmentView, "Department", DEPARTMENT_FIELDS);
    register_view!(engine, VitalsView, "Vitals", VITALS_FIELDS);
    engine.register_fn(
        "latest_vital",
        |ctx: &mut RuleContext, name: ImmutableString| -> Dynamic { latest_vital(&ctx.0, &name) },
    );
    engine.register_fn(
        "highest_vital_within",
        |ctx: &mut RuleContext,
         name: ImmutableString,
         minutes: Dynamic|
         -> Result<Dynamic, Box<rhai::EvalAltResult>> {
            crate::sandbox::highest_vital_within(&ctx.0, &name, &minutes)
        },
    );
    for (name, trend) in [
        ("score_rise", crate::sandbox::Trend::Rise),
        ("score_slope", crate::sandbox::Trend::Slope),
    ] {
        engine.register_fn(
            name,
            move |ctx: &mut RuleContext,
                  rule: ImmutableString,
                  hours: Dynamic|
                  -> Result<Dynamic, Box<rhai::EvalAltResult>> {
                crate::sandbox::score_trend(&ctx.0, &rule, &hours, None, trend)
            },
        );
        engine.register_fn(
            name,
            move |ctx: &mut RuleContext,
                  rule: ImmutableString,
                  hours: Dynamic,
                  current: Dynamic|
                  -> Result<Dynamic, Box<rhai::EvalAltResult>> {
                crate::sandbox::score_trend(&ctx.0, &rule, &hours, Some(&current), trend)
            },
        );
    }
}

/// `value` with every handle replaced by the map it stands for, for JSON output. `None` when
/// it holds no handle (the usual case: rules copy fields out of `ctx`).
fn plain(value: &Dynamic) -> Result<Option<Dynamic>, String> {
    fn map_of<T: serde::Serialize>(part: &T) -> Result<Option<Dynamic>, String> {
        rhai::serde::to_dynamic(part)
            .map(Some)
            .map_err(|e| e.to_string())
    }
    if let Some(c) = value.read_lock::<RuleContext>() {
        return map_of(&*c.0);
    }
    if let Some(e) = value.read_lock::<EventView>() {
        return map_of(&e.0.event);
    }
    if let Some(p) = value.read_lock::<PatientView>() {
        return map_of(&p.0.patient);
    }
    if let Some(d) = value.read_lock::<DepartmentView>() {
        return map_of(&d.0.department);
    }
    if let Some(v) = value.read_lock::<VitalsView>() {
        return match v.reading {
            None => map_of(&v.ctx.event.vitals),
            Some(i) => map_of(&v.ctx.patient.recent_vitals.get(i)),
        };
    }
    if let Some(a) = value.read_lock::<Array>() {
        let mut changed = false;
        let mut out = Array::with_capacity(a.len());
        for x in a.iter() {
            match plain(x)? {
                Some(p) => {
                    changed = true;
                    out.push(p);
                }
                None => out.push(x.clone()),
            }
        }
        return Ok(changed.then(|| Dynamic::from_array(out)));
    }
    if let Some(m) = value.read_lock::<rhai::Map>() {
        let mut changed = false;
        let mut out = rhai::Map::new();
        for (k, x) in m.iter() {
            match plain(x)? {
                Some(p) => {
                    changed = true;
                    out.insert(k.clone(), p);
                }
                None => {
                    out.insert(k.clone(), x.clone());
                }
            }
        }
        return Ok(changed.then(|| Dynamic::from_map(out)));
    }
    Ok(None)
}

/// What a rule returned, as JSON (the alert's evidence and the action's fields).
pub(crate) fn to_json(value: &Dynamic) -> Result<serde_json::Value, String> {
    match rhai::serde::from_dynamic::<serde_json::Value>(value) {
        Ok(v) => Ok(v),
        Err(e) => match plain(value)? {
            Some(p) => rhai::serde::from_dynamic(&p).map_err(|e| e.to_string()),
            None => Err(e.to_string()),
        },
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests may panic

    use super::*;
    use crate::context::{CtxEvent, CtxReading};

    /// An engine with the built-ins of the sandbox (these handles among them).
    fn engine() -> Engine {
        let mut engine = Engine::new();
        crate::sandbox::register_helpers(&mut engine);
        engine
    }

    fn ctx() -> Arc<Context> {
        Arc::new(Context {
            event: CtxEvent {
                event_id: "ev-1".into(),
                event_type: "VITALS".into(),
                vitals: Some(CtxVitals {
                    heart_rate: Some(120.0),
                    ..CtxVitals::default()
                }),
                ..CtxEvent::default()
            },
            now: "2025-01-01T10:00:00Z".into(),
            patient: crate::context::CtxPatient {
                recent_vitals: vec![CtxReading {
                    time: "2025-01-01T09:30:00Z".into(),
                    vitals: CtxVitals {
                        oxygen_saturation: Some(91.0),
                        ..CtxVitals::default()
                    },
                }],
                ..Default::default()
            },
            ..Context::default()
        })
    }

    fn eval(script: &str) -> Dynamic {
        let mut scope = rhai::Scope::new();
        scope.push("ctx", rule_context(ctx()));
        engine()
            .eval_with_scope::<Dynamic>(&mut scope, script)
            .expect("the test script runs")
    }

    #[test]
    fn reads_like_the_map_it_replaces() {
        assert_eq!(eval("ctx.event.vitals.heart_rate").as_float(), Ok(120.0));
        assert_eq!(
            eval(r#"ctx.event.vitals["heart_rate"]"#).as_float(),
            Ok(120.0)
        );
        assert!(eval("ctx.event.vitals.bp_systolic").is_unit());
        assert!(eval("ctx.event.no_such_field").is_unit());
        assert!(eval("ctx.department.hospital_id").is_unit());
        assert_eq!(
            eval("ctx.patient.recent_vitals[0].time").to_string(),
            "2025-01-01T09:30:00Z"
        );
        assert_eq!(
            eval(r#"latest_vital(ctx, "oxygen_saturation")"#).as_float(),
            Ok(91.0)
        );
        assert!(eval(r#"latest_vital(ctx, "consciousness")"#).is_unit());
    }

    #[test]
    fn the_highest_reading_within_a_window_is_the_loop_a_rule_would_write() {
        // The loop hypoxia.rhai had before the built-in, as the reference.
        let by_hand = |minutes: i64| {
            eval(&format!(
                r#"
                let best = ();
                let now = parse_time(ctx.now);
                for r in ctx.patient.recent_vitals {{
                    let m = minutes_between(r.time, now);
                    if m != () && m >= 0.0 && m <= {minutes}.0 && r.oxygen_saturation != () {{
                        if best == () || r.oxygen_saturation > best {{ best = r.oxygen_saturation; }}
                    }}
                }}
                best"#
            ))
        };
        let native = |minutes: i64| {
            eval(&format!(
                r#"highest_vital_within(ctx, "oxygen_saturation", {minutes})"#
            ))
        };
        for minutes in [0, 29, 30, 60] {
            assert_eq!(
                native(minutes).as_float().ok(),
                by_hand(minutes).as_float().ok(),
                "{minutes} minutes"
            );
        }
        assert_eq!(native(30).as_float(), Ok(91.0), "30 minutes before now");
        assert!(native(29).is_unit(), "outside the window");
        assert!(eval(r#"highest_vital_within(ctx, "heart_rate", 60)"#).is_unit());
    }

    fn eval_with(ctx: Context, script: &str) -> Dynamic {
        let mut scope = rhai::Scope::new();
        scope.push("ctx", rule_context(Arc::new(ctx)));
        engine()
            .eval_with_scope::<Dynamic>(&mut scope, script)
            .expect("the test script runs")
    }

    /// Kept scores at 06:00 = 1, 09:00 = 0, 11:00 = 2; now 12:00.
    fn scored() -> Context {
        let s = |time: &str, score: f64| crate::context::CtxScore {
            time: format!("2025-01-01T{time}:00Z").into(),
            score,
        };
        let mut ctx = (*ctx()).clone();
        ctx.now = "2025-01-01T12:00:00Z".into();
        ctx.patient.scores.insert(
            "news2".into(),
            vec![s("11:00", 2.0), s("09:00", 0.0), s("06:00", 1.0)],
        );
        ctx
    }

    #[test]
    fn the_rise_is_from_the_lowest_kept_score_of_the_window() {
        let rise = |hours: i64, current: &str| {
            eval_with(
                scored(),
                &format!(r#"score_rise(ctx, "news2", {hours}, {current})"#),
            )
        };
        assert_eq!(
            rise(6, "3").as_float(),
            Ok(3.0),
            "lowest of 6 h is 0 at 09:00"
        );
        assert_eq!(
            rise(2, "3").as_float(),
            Ok(1.0),
            "only 11:00 (2) within 2 h"
        );
        assert_eq!(rise(6, "0.5").as_float(), Ok(0.5));
        assert!(rise(0, "3").is_unit(), "nothing kept at 12:00 itself");
        assert!(rise(6, "()").is_unit(), "no current score");
        assert!(eval_with(scored(), r#"score_rise(ctx, "qsofa", 6, 3)"#).is_unit());
        let mut scope = rhai::Scope::new();
        scope.push("ctx", rule_context(Arc::new(scored())));
        assert!(
            engine()
                .eval_with_scope::<Dynamic>(&mut scope, r#"score_rise(ctx, "news2", "six", 3)"#)
                .is_err(),
            "hours must be a number"
        );
    }

    #[test]
    fn without_a_current_score_the_kept_score_of_now_is_the_current_one() {
        let mut ctx = scored();
        let rise = |ctx: &Context| eval_with(ctx.clone(), r#"score_rise(ctx, "news2", 6)"#);
        assert!(
            rise(&ctx).is_unit(),
            "no score kept at now: no current score"
        );
        if let Some(kept) = ctx.patient.scores.get_mut("news2") {
            kept.insert(
                0,
                crate::context::CtxScore {
                    time: ctx.now.as_str().into(),
                    score: 4.0,
                },
            );
        }
        assert_eq!(rise(&ctx).as_float(), Ok(4.0), "4 now, lowest 0 at 09:00");
        let slope = eval_with(ctx.clone(), r#"score_slope(ctx, "news2", 1)"#);
        assert_eq!(slope.as_float(), Ok(2.0), "(-1, 2), (0, 4)");
    }

    #[test]
    fn the_slope_is_least_squares_over_the_window_and_the_current_score() {
        let slope = |hours: i64, current: i64| {
            eval_with(
                scored(),
                &format!(r#"score_slope(ctx, "news2", {hours}, {current})"#),
            )
            .as_float()
            .ok()
        };
        // (-3, 0), (-1, 2), (0, 3): mean x -4/3, mean y 5/3, Sxx = Sxy = 42/9: slope 1.
        let close = |a: Option<f64>, b: f64| a.is_some_and(|a| (a - b).abs() < 1e-9);
        assert!(close(slope(5, 3), 1.0), "{:?}", slope(5, 3));
        // (-1, 2), (0, 4): 2 points per hour.
        assert!(close(slope(1, 4), 2.0));
        // (-6, 1), (-3, 0), (-1, 2), (0, 3): mean x -2.5, mean y 1.5,
        // Sxx = 12.25 + 0.25 + 2.25 + 6.25 = 21, Sxy = 1.75 + 0.75 + 0.75 + 3.75 = 7: slope 1/3.
        assert!(close(slope(6, 3), 1.0 / 3.0), "{:?}", slope(6, 3));
        assert!(slope(0, 3).is_none(), "one point has no slope");
    }

    #[test]
    fn icd10_codes_match_prefixes_and_category_ranges() {
        let m = |code: &str, patterns: &str| {
            eval_with(scored(), &format!("icd10_matches({code}, {patterns})"))
                .as_bool()
                .expect("a bool")
        };
        assert!(m(r#""I25.2""#, r#"["I21", "I25.2"]"#));
        assert!(
            m(r#""i252""#, r#"["I25.2"]"#),
            "case and dots do not matter"
        );
        assert!(!m(r#""I25.1""#, r#"["I21", "I25.2"]"#));
        assert!(m(r#""C50.9""#, r#"["C45-C58"]"#));
        assert!(m(r#""C45""#, r#"["C45-C58"]"#) && m(r#""C58.1""#, r#"["C45-C58"]"#));
        assert!(!m(r#""C59""#, r#"["C45-C58"]"#) && !m(r#""C44.9""#, r#"["C45-C58"]"#));
        assert!(!m("()", r#"["C45-C58"]"#), "no code matches nothing");
        assert!(
            !m(r#""C5""#, r#"["C45-C58"]"#),
            "a range needs a whole category"
        );
    }

    #[test]
    fn cannot_be_changed_by_a_rule() {
        let mut scope = rhai::Scope::new();
        scope.push("ctx", rule_context(ctx()));
        assert!(engine()
            .run_with_scope(&mut scope, r#"ctx.event.department = "ICU";"#)
            .is_err());
    }

    #[test]
    fn a_part_put_whole_into_data_is_written_as_its_map() {
        let data = eval("#{ vitals: ctx.event.vitals, n: 1 }");
        let json = to_json(&data).expect("the data converts to JSON");
        assert_eq!(
            json,
            serde_json::json!({ "vitals": { "heart_rate": 120.0 }, "n": 1 })
        );
    }
}
