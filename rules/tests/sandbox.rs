//! Runaway rules are stopped, reported with file/line/event, and do not stop the others.
#![allow(clippy::unwrap_used)] // tests may panic

mod common;

use std::time::{Duration, Instant};

use cds_rules::{RuleErrorKind, RuleOutcome, RulePack};
use common::*;

#[test]
fn endless_loop_and_huge_allocation_are_stopped_and_others_run() {
    let dir = temp_dir("sandbox");
    std::fs::write(
        dir.join("a_loop.rhai"),
        rule_src("loop", r#"["VITALS"]"#, "let x = 0; loop { x += 1; }"),
    )
    .unwrap();
    std::fs::write(
        dir.join("b_alloc.rhai"),
        rule_src(
            "alloc",
            r#"["VITALS"]"#,
            "let s = \"xxxxxxxx\"; loop { s += s; }",
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("c_array.rhai"),
        rule_src(
            "array",
            r#"["VITALS"]"#,
            "let a = []; a.pad(100000000, 0); a",
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("d_recurse.rhai"),
        rule_src("recurse", r#"["VITALS"]"#, "f(1)") + "\nfn f(x) { f(x + 1) }\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("e_good.rhai"),
        rule_src("good", r#"["VITALS"]"#, "#{ ok: true }"),
    )
    .unwrap();
    let mut pack = RulePack::load(&dir).expect("load");

    let ctx = vitals_ctx("ev-1", "2025-01-01T10:00:00Z", normal());
    for _ in 0..3 {
        let t = Instant::now();
        let outcomes = pack.evaluate(&ctx);
        let took = t.elapsed();
        assert_eq!(outcomes.len(), 5);
        // Each runaway rule is stopped within 50 ms (budget 20 ms + slack).
        assert!(took < Duration::from_millis(4 * 50 + 20), "took {took:?}");
        let mut errors = 0;
        for o in &outcomes {
            match o {
                RuleOutcome::Error(e) => {
                    errors += 1;
                    assert_eq!(e.event_id, "ev-1");
                    assert!(e.location.line > 0, "{e}");
                    assert!(e.location.file.to_string_lossy().ends_with(".rhai"), "{e}");
                    match e.mlmname.as_str() {
                        "loop" => assert!(
                            matches!(e.kind, RuleErrorKind::Timeout | RuleErrorKind::Limit),
                            "{e}"
                        ),
                        _ => assert_eq!(e.kind, RuleErrorKind::Limit, "{e}"),
                    }
                }
                RuleOutcome::Fired(a) | RuleOutcome::Suppressed(a) => assert_eq!(a.mlmname, "good"),
                RuleOutcome::NotFired { .. } => panic!("unexpected"),
            }
        }
        assert_eq!(errors, 4);
    }
    let stats = pack.stats();
    let good = stats.iter().find(|s| s.mlmname == "good").unwrap();
    assert_eq!((good.evaluations, good.fires, good.errors), (3, 3, 0));
    assert_eq!(good.suppressed, 2, "same band within 30 min");
    let looping = stats.iter().find(|s| s.mlmname == "loop").unwrap();
    assert_eq!(looping.errors, 3);
    // Each runaway rule individually within 50 ms.
    for s in &stats {
        assert!(
            s.eval_time < Duration::from_millis(3 * 50),
            "{} took {:?}",
            s.mlmname,
            s.eval_time
        );
    }
}

#[test]
fn eval_file_io_and_path_imports_are_refused() {
    let dir = temp_dir("refuse");
    std::fs::write(
        dir.join("eval.rhai"),
        rule_src("ev", r#"["VITALS"]"#, "eval(\"1\")"),
    )
    .unwrap();
    std::fs::write(
        dir.join("imp.rhai"),
        rule_src(
            "imp",
            r#"["VITALS"]"#,
            "import \"../../etc/passwd\" as p; 1",
        ),
    )
    .unwrap();
    let err = RulePack::load(&dir).expect_err("both must fail");
    assert_eq!(err.errors.len(), 2, "{err}");
    let text = err.to_string();
    assert!(text.contains("eval"), "{text}");
    assert!(text.contains("only plain names"), "{text}");
}

#[test]
fn time_budget_stops_a_loop_without_operation_limit() {
    let dir = temp_dir("budget");
    std::fs::write(
        dir.join("a_loop.rhai"),
        rule_src("loop", r#"["VITALS"]"#, "let x = 0; loop { x += 1; }"),
    )
    .unwrap();
    std::fs::write(
        dir.join("b_good.rhai"),
        rule_src("good", r#"["VITALS"]"#, "1"),
    )
    .unwrap();
    let limits = cds_rules::Limits {
        max_operations: 0,
        ..Default::default()
    };
    let mut pack = RulePack::load_with_limits(&dir, limits).expect("load");
    // The budget is CPU time (a thread paused by a busy machine is not the rule's fault), so
    // the bound is checked on this thread's CPU clock: on a loaded machine wall time runs on.
    let t = cpu_time::ThreadTime::now();
    let outcomes = pack.evaluate(&vitals_ctx("ev-9", "2025-01-01T10:00:00Z", normal()));
    assert!(
        t.elapsed() < Duration::from_millis(50),
        "took {:?} of CPU time",
        t.elapsed()
    );
    match &outcomes[0] {
        RuleOutcome::Error(e) => {
            assert_eq!(e.kind, RuleErrorKind::Timeout, "{e}");
            assert_eq!(e.event_id, "ev-9");
            assert!(e.location.line >= 6, "{e}");
        }
        o => panic!("expected a timeout, got {o:?}"),
    }
    assert!(matches!(&outcomes[1], RuleOutcome::Fired(_)));
}
