//! Loading, validation errors, hot reload, suppression, delayed evokes and alert documents.
#![allow(clippy::unwrap_used)] // tests may panic

mod common;

use std::time::Duration;

use cds_rules::{DelayedEvokes, ReloadEvent, RuleOutcome, RulePack, Severity, Suppressor};
use common::*;

fn fired(outcomes: &[RuleOutcome], name: &str) -> Option<Box<cds_rules::Alert>> {
    outcomes.iter().find_map(|o| match o {
        RuleOutcome::Fired(a) if a.mlmname == name => Some(a.clone()),
        _ => None,
    })
}

#[test]
fn the_pack_loads_and_evaluates_vitals_rules() {
    let mut pack = RulePack::load(pack_dir()).expect("pack loads");
    let names: Vec<_> = pack.rules().iter().map(|m| m.mlmname.clone()).collect();
    for n in [
        "capacity",
        "capacity_forecast",
        "hypoxia",
        "lace",
        "long_stay",
        "news2",
        "news2_trend",
        "qsofa",
        "readmission",
        "sirs",
    ] {
        assert!(names.iter().any(|x| x == n), "{n} missing from {names:?}");
    }
    let out = pack.evaluate(&vitals_ctx("e-1", "2025-01-01T10:00:00Z", sick()));
    assert_eq!(
        out.len(),
        5,
        "news2, news2_trend, qsofa, sirs, hypoxia are VITALS rules: {out:?}"
    );
    let a = fired(&out, "news2").expect("news2 fires");
    assert_eq!(a.severity, Severity::Critical);
    assert_eq!(a.doc_type, "alert");
    assert_eq!(a.patient.as_deref(), Some("pk-42"));
    assert_eq!(a.event_id, "e-1");
    assert_eq!(a.id.len(), 32);
    assert_eq!(a.card.uuid.len(), 36);
    assert!(a.card.summary.chars().count() < 140);
    assert!(a.card.source.url.starts_with("https://"));
    assert_eq!(a.card.source.label, a.title);
    assert_eq!(a.evidence["band"], "high");
    let json = serde_json::to_value(&*a).unwrap();
    assert_eq!(json["type"], "alert");
    assert_eq!(json["card"]["indicator"], "critical");

    // Same id on replay (fresh pack, same event): deterministic.
    let mut again = RulePack::load(pack_dir()).expect("pack loads");
    let b = fired(
        &again.evaluate(&vitals_ctx("e-1", "2025-01-01T10:00:00Z", sick())),
        "news2",
    )
    .unwrap();
    assert_eq!(a.id, b.id);
    assert_eq!(pack.delayed_rules().len(), 1);
    assert_eq!(pack.delayed_rules()[0].mlmname, "long_stay");
    assert_eq!(pack.delayed_rules()[0].hours, 72.0);
}

#[test]
fn a_broken_file_is_reported_with_line_and_the_rest_loads() {
    let dir = temp_dir("broken");
    std::fs::write(
        dir.join("good.rhai"),
        rule_src("good", r#"["VITALS"]"#, "1"),
    )
    .unwrap();
    std::fs::write(
        dir.join("syntax.rhai"),
        "const MLM = #{};\nfn data(ctx) {\n  let x = ;\n}\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("badevoke.rhai"),
        rule_src("bad", r#"["VITALZ"]"#, "1"),
    )
    .unwrap();
    let missing = rule_src("missing", r#"["VITALS"]"#, "1").replace("priority: 50, ", "");
    std::fs::write(dir.join("missing.rhai"), missing).unwrap();
    let err = RulePack::load(&dir).expect_err("three broken files");
    let text = err.to_string();
    let syntax = err
        .errors
        .iter()
        .find(|e| e.location.file.ends_with("syntax.rhai"))
        .expect("syntax error");
    assert_eq!(syntax.location.line, 3, "{syntax}");
    let evoke = err
        .errors
        .iter()
        .find(|e| e.location.file.ends_with("badevoke.rhai"))
        .expect("evoke error");
    assert!(evoke.message.contains("VITALZ"), "{evoke}");
    assert_eq!(evoke.location.line, 4, "{evoke}");
    let prio = err
        .errors
        .iter()
        .find(|e| e.location.file.ends_with("missing.rhai"))
        .expect("priority error");
    assert!(prio.message.contains("priority is missing"), "{prio}");
    assert!(text.contains("syntax.rhai:3"), "{text}");
    let pack = err.partial.expect("the rest is loaded");
    assert_eq!(pack.rules().len(), 1);
}

/// `keep_score: true` hands every evaluation's `data().score` to the engine (fired or not) and
/// shows it to the rules after it in the same event; a department rule may not keep scores.
#[test]
fn a_kept_score_reaches_the_engine_and_the_rules_after_it() {
    let dir = temp_dir("keep");
    let keeps = rule_src("a_keeps", r#"["VITALS"]"#, "#{ score: 4 }")
        .replace(
            "suppress_minutes: 30 }",
            "suppress_minutes: 30, keep_score: true }",
        )
        .replace(
            "fn logic(ctx, data) { true }",
            "fn logic(ctx, data) { false }",
        );
    std::fs::write(dir.join("a_keeps.rhai"), keeps).unwrap();
    let reads = rule_src(
        "b_reads",
        r#"["VITALS"]"#,
        "#{ seen: ctx.patient.scores.a_keeps[0].score, at: ctx.patient.scores.a_keeps[0].time }",
    );
    std::fs::write(dir.join("b_reads.rhai"), reads).unwrap();
    let mut pack = RulePack::load(&dir).expect("load");
    let ctx = vitals_ctx("e-1", "2025-01-01T10:00:00Z", normal());
    let out = pack.evaluate(&ctx);
    let alert = fired(&out, "b_reads").expect("b_reads fires");
    assert_eq!(alert.evidence["seen"], 4.0, "{:?}", alert.evidence);
    assert_eq!(alert.evidence["at"], "2025-01-01T10:00:00Z");
    let kept: Vec<_> = pack.take_scores().collect();
    assert_eq!(
        kept,
        [cds_rules::KeptScore {
            mlmname: "a_keeps".into(),
            score: 4.0,
            time: "2025-01-01T10:00:00Z".into(),
        }]
    );

    let department = rule_src("dept", r#"["ADMISSION"]"#, "#{ score: 1 }").replace(
        "suppress_minutes: 30 }",
        r#"suppress_minutes: 30, scope: "department", keep_score: true }"#,
    );
    std::fs::write(dir.join("dept.rhai"), department).unwrap();
    let err = RulePack::load(&dir).expect_err("a department rule keeps no score");
    assert!(err.to_string().contains("keep_score"), "{err}");
}

#[test]
fn hot_reload_changes_adds_removes_and_keeps_the_old_version_on_error() {
    let dir = temp_dir("reload");
    let f = dir.join("r.rhai");
    std::fs::write(&f, rule_src("r", r#"["VITALS"]"#, "#{ v: 1 }")).unwrap();
    let mut pack = RulePack::load(&dir).expect("load");
    assert!(pack.reload_changed().is_empty());
    let ctx = vitals_ctx("e", "2025-01-01T10:00:00Z", normal());
    let ev = |pack: &mut RulePack, id: &str| {
        let mut c = ctx.clone();
        c.event.event_id = id.into();
        pack.suppressor_mut().prune(i64::MAX);
        pack.evaluate(&c)
    };
    assert_eq!(fired(&ev(&mut pack, "1"), "r").unwrap().evidence["v"], 1);

    // changed
    std::fs::write(&f, rule_src("r", r#"["VITALS"]"#, "#{ v: 22 }")).unwrap();
    let events = pack.reload_changed();
    assert!(
        matches!(&events[..], [ReloadEvent::Reloaded { mlmname, .. }] if mlmname == "r"),
        "{events:?}"
    );
    assert_eq!(fired(&ev(&mut pack, "2"), "r").unwrap().evidence["v"], 22);

    // broken: old version keeps running, error reported once
    std::fs::write(
        &f,
        rule_src("r", r#"["VITALS"]"#, "#{ v: 3 ").replace("fn logic", "fn logic("),
    )
    .unwrap();
    let events = pack.reload_changed();
    assert!(
        matches!(&events[..], [ReloadEvent::Failed { errors, .. }] if errors[0].location.line > 0),
        "{events:?}"
    );
    assert_eq!(fired(&ev(&mut pack, "3"), "r").unwrap().evidence["v"], 22);
    assert!(
        pack.reload_changed().is_empty(),
        "a failure is reported once"
    );

    // fixed again
    std::fs::write(&f, rule_src("r", r#"["VITALS"]"#, "#{ v: 4444 }")).unwrap();
    assert_eq!(pack.reload_changed().len(), 1);
    assert_eq!(fired(&ev(&mut pack, "4"), "r").unwrap().evidence["v"], 4444);

    // added
    std::fs::write(dir.join("s.rhai"), rule_src("s", r#"["VITALS"]"#, "1")).unwrap();
    let events = pack.reload_changed();
    assert!(
        matches!(&events[..], [ReloadEvent::Added { mlmname, .. }] if mlmname == "s"),
        "{events:?}"
    );
    assert_eq!(ev(&mut pack, "5").len(), 2);

    // removed
    std::fs::remove_file(&f).unwrap();
    let events = pack.reload_changed();
    assert!(
        matches!(&events[..], [ReloadEvent::Removed { mlmname, .. }] if mlmname == "r"),
        "{events:?}"
    );
    assert_eq!(ev(&mut pack, "6").len(), 1);
    assert_eq!(pack.stats().len(), 1);
}

#[test]
fn a_changed_lib_module_recompiles_the_rules() {
    let dir = copy_pack("lib");
    let mut pack = RulePack::load(&dir).expect("load");
    let lib = dir.join("lib/vitals.rhai");
    let src = std::fs::read_to_string(&lib).unwrap();
    std::fs::write(&lib, format!("{src}\nfn extra() {{ 1 }}\n")).unwrap();
    let events = pack.reload_changed();
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, ReloadEvent::Reloaded { .. }))
            .count(),
        10,
        "{events:?}"
    );
    std::fs::write(&lib, "fn broken( {").unwrap();
    let events = pack.reload_changed();
    assert!(
        matches!(&events[..], [ReloadEvent::Failed { .. }]),
        "{events:?}"
    );
    assert!(fired(
        &pack.evaluate(&vitals_ctx("x", "2025-01-01T10:00:00Z", sick())),
        "news2"
    )
    .is_some());
}

#[test]
fn suppression_by_band_and_escalation() {
    let mut pack = RulePack::load(pack_dir()).expect("load");
    let mut medium = normal();
    medium.respiratory_rate = Some(22.0); // 2
    medium.heart_rate = Some(95.0); // 1
    medium.temperature_c = Some(38.5); // 1
    medium.oxygen_saturation = Some(95.0); // 1  -> 5 medium
    let news = |pack: &mut RulePack, id: &str, t: &str, v| {
        pack.evaluate(&vitals_ctx(id, t, v))
            .into_iter()
            .find(|o| match o {
                RuleOutcome::Fired(a) | RuleOutcome::Suppressed(a) => a.mlmname == "news2",
                _ => false,
            })
    };
    assert!(matches!(
        news(&mut pack, "1", "2025-01-01T10:00:00Z", medium.clone()),
        Some(RuleOutcome::Fired(_))
    ));
    assert!(matches!(
        news(&mut pack, "2", "2025-01-01T10:30:00Z", medium.clone()),
        Some(RuleOutcome::Suppressed(_))
    ));
    // escalation to high alerts at once
    assert!(matches!(
        news(&mut pack, "3", "2025-01-01T10:31:00Z", sick()),
        Some(RuleOutcome::Fired(_))
    ));
    // back to medium while the high window is open: suppressed (de-escalation is not news)
    assert!(matches!(
        news(&mut pack, "4", "2025-01-01T10:40:00Z", medium.clone()),
        Some(RuleOutcome::Suppressed(_))
    ));
    // after 60 min of event time, medium alerts again
    assert!(matches!(
        news(&mut pack, "5", "2025-01-01T11:45:00Z", medium.clone()),
        Some(RuleOutcome::Fired(_))
    ));

    // the state round-trips through serde (checkpoint)
    let json = serde_json::to_string(pack.suppressor()).unwrap();
    let restored: Suppressor = serde_json::from_str(&json).unwrap();
    let mut fresh = RulePack::load(pack_dir()).expect("load");
    fresh.set_suppressor(restored);
    assert!(matches!(
        news(&mut fresh, "6", "2025-01-01T11:50:00Z", medium),
        Some(RuleOutcome::Suppressed(_))
    ));
    fresh.suppressor_mut().prune(i64::MAX);
    assert!(fresh.suppressor().is_empty());
}

#[test]
fn capacity_alerts_are_per_department() {
    let mut pack = RulePack::load(pack_dir()).expect("load");
    let mut c = vitals_ctx("a1", "2025-01-01T10:00:00Z", normal());
    c.event.event_type = "ADMISSION".into();
    c.department.occupied = 9;
    let first = pack.evaluate(&c);
    let a = fired(&first, "capacity").expect("capacity fires at 90 %");
    assert_eq!(a.patient, None);
    assert_eq!(a.department.as_deref(), Some("ICU"));
    // another patient, same department, 10 minutes later: suppressed
    c.event.event_id = "a2".into();
    c.patient.patient = "pk-other".into();
    c.now = "2025-01-01T10:10:00Z".into();
    assert!(pack
        .evaluate(&c)
        .iter()
        .any(|o| matches!(o, RuleOutcome::Suppressed(a) if a.mlmname == "capacity")));
    // full: escalation
    c.event.event_id = "a3".into();
    c.department.occupied = 10;
    assert_eq!(
        fired(&pack.evaluate(&c), "capacity").unwrap().severity,
        Severity::Critical
    );
}

#[test]
fn delayed_evokes_follow_the_watermark_and_discharge_cancels() {
    let pack_dir = pack_dir();
    let mut pack = RulePack::load(&pack_dir).expect("load");
    let mut evokes = DelayedEvokes::new();
    let mut adm = vitals_ctx("adm-1", "2025-01-01T00:00:00Z", normal());
    adm.event.event_type = "ADMISSION".into();
    adm.event.vitals = None;
    adm.event.admission_time = Some("2025-01-01T00:00:00Z".into());
    adm.patient.admission_time = adm.event.admission_time.clone();
    pack.schedule_delayed(&mut evokes, &adm);
    let mut adm2 = adm.clone();
    adm2.event.event_id = "adm-2".into();
    adm2.patient.patient = "pk-2".into();
    pack.schedule_delayed(&mut evokes, &adm2);
    assert_eq!(evokes.len(), 2);

    let t = |s: &str| cds_rules::epoch_seconds(s).unwrap();
    assert!(evokes.due(t("2025-01-03T23:59:59Z")).is_empty());
    // patient 2 is discharged before 72 h
    let mut dis = adm2.clone();
    dis.event.event_type = "DISCHARGE".into();
    pack.schedule_delayed(&mut evokes, &dis);
    // checkpoint round trip
    let mut evokes: DelayedEvokes =
        serde_json::from_str(&serde_json::to_string(&evokes).unwrap()).unwrap();
    let due = evokes.due(t("2025-01-04T00:00:00Z"));
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].patient_key, "pk-42");
    assert_eq!(due[0].admission_event_id, "adm-1");
    assert!(evokes.is_empty());

    let mut ctx = adm.clone();
    ctx.now = "2025-01-04T00:00:00Z".into();
    match pack.evaluate_delayed(&ctx, &due[0].mlmname) {
        Some(RuleOutcome::Fired(a)) => {
            assert_eq!(a.event_id, "adm-1");
            assert_eq!(a.event_time, "2025-01-04T00:00:00Z");
        }
        o => panic!("{o:?}"),
    }
    assert!(pack.evaluate_delayed(&ctx, "no-such-rule").is_none());
}

#[test]
fn ten_thousand_vitals_events() {
    let mut pack = RulePack::load(pack_dir()).expect("load");
    let mut ctxs = Vec::with_capacity(10_000);
    for i in 0..10_000u32 {
        let mut v = if i % 3 == 0 { sick() } else { normal() };
        v.heart_rate = Some(50.0 + f64::from(i % 100));
        let mut c = vitals_ctx(&format!("ev-{i}"), "2025-01-01T10:00:00Z", v);
        c.patient.patient = format!("pk-{}", i % 500);
        c.patient.recent_vitals = (0..4)
            .map(|k| cds_rules::CtxReading {
                time: format!("2025-01-01T0{}:30:00Z", 9 - k).into(),
                vitals: normal(),
            })
            .collect();
        ctxs.push(c);
    }
    let t = std::time::Instant::now();
    let mut outcomes = 0usize;
    let mut errors = 0usize;
    for c in &ctxs {
        for o in pack.evaluate(c) {
            outcomes += 1;
            if let RuleOutcome::Error(e) = o {
                errors += 1;
                eprintln!("{e}");
            }
        }
    }
    let took = t.elapsed();
    assert_eq!(errors, 0);
    assert_eq!(outcomes, 50_000);
    let rate = 10_000.0 / took.as_secs_f64().max(1e-9);
    println!("evaluated 10000 VITALS events x 5 rules in {took:?}: {rate:.0} events/s");
    let _ = Duration::ZERO;
}

/// `logic` may change the `data` it is given: neither the alert's evidence nor `action` sees it.
#[test]
fn what_logic_changes_in_data_reaches_neither_evidence_nor_action() {
    let dir = temp_dir("logic-changes-data");
    let src = rule_src("meddler", r#"["VITALS"]"#, "#{ x: 1, nested: #{ y: 2 } }")
        .replace(
            "fn logic(ctx, data) { true }",
            "fn logic(ctx, data) { data.x = 99; data.nested.y = 99; true }",
        )
        .replace(
            r#"summary: "s""#,
            r#"summary: `x=${data.x} y=${data.nested.y}`"#,
        );
    std::fs::write(dir.join("meddler.rhai"), src).unwrap();
    let mut pack = RulePack::load(&dir).expect("pack loads");
    let out = pack.evaluate(&vitals_ctx("e-1", "2025-01-01T10:00:00Z", sick()));
    let a = fired(&out, "meddler").expect("fires");
    assert_eq!(
        a.evidence,
        serde_json::json!({ "x": 1, "nested": { "y": 2 } })
    );
    assert_eq!(a.card.summary, "x=1 y=2");
}
