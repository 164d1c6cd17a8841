//! `cds rules test | check | eval`.
#![allow(clippy::unwrap_used)] // tests may panic

mod common;

use common::*;

fn run(f: impl FnOnce(&mut Vec<u8>) -> i32) -> (i32, String) {
    let mut out = Vec::new();
    let code = f(&mut out);
    (code, String::from_utf8_lossy(&out).into_owned())
}

#[test]
fn the_pack_passes_its_fixtures() {
    let (code, out) = run(|o| cds_rules::cli::test(&pack_dir(), o));
    println!("{out}");
    assert_eq!(code, 0, "{out}");
    assert!(
        out.lines()
            .last()
            .unwrap_or("")
            .ends_with(" passed, 0 failed"),
        "{out}"
    );
}

#[test]
fn a_failing_fixture_prints_the_difference() {
    let dir = copy_pack("clitest");
    std::fs::create_dir_all(dir.join("tests")).unwrap();
    let fixtures = std::fs::read_to_string(pack_dir().join("tests/qsofa.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&fixtures).unwrap();
    v[0]["expect"]["data"]["score"] = serde_json::json!(3);
    v[1]["expect"]["fired"] = serde_json::json!(true);
    std::fs::write(dir.join("tests/qsofa.json"), v.to_string()).unwrap();
    let (code, out) = run(|o| cds_rules::cli::test(&dir, o));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("data.score: expected 3, got 2"), "{out}");
    assert!(out.contains("fired: expected true, got false"), "{out}");
    assert!(out.contains(" passed, 2 failed"), "{out}");
}

#[test]
fn check_reports_line_and_column() {
    let (code, out) = run(|o| cds_rules::cli::check(&pack_dir().join("news2.rhai"), o));
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("ok "), "{out}");

    let dir = temp_dir("check");
    let f = dir.join("bad.rhai");
    std::fs::write(
        &f,
        "const MLM = #{};\nfn data(ctx) {\n    let x = 1 +;\n}\n",
    )
    .unwrap();
    let (code, out) = run(|o| cds_rules::cli::check(&f, o));
    assert_eq!(code, 1);
    assert!(out.contains("bad.rhai:3:"), "{out}");

    let f = dir.join("meta.rhai");
    std::fs::write(
        &f,
        rule_src("m", "[\"VITALS\"]", "1").replace("validation: \"testing\"", "validation: 3"),
    )
    .unwrap();
    let (code, out) = run(|o| cds_rules::cli::check(&f, o));
    assert_eq!(code, 1);
    assert!(
        out.contains("meta.rhai:2: MLM.maintenance.validation must be a string"),
        "{out}"
    );
}

#[test]
fn eval_prints_one_json_object() {
    let dir = temp_dir("eval");
    let ctx = vitals_ctx("e-7", "2025-01-01T10:00:00Z", sick());
    let ctx_file = dir.join("ctx.json");
    std::fs::write(&ctx_file, serde_json::to_string(&ctx).unwrap()).unwrap();
    let (code, out) = run(|o| cds_rules::cli::eval(&pack_dir().join("qsofa.rhai"), &ctx_file, o));
    assert_eq!(code, 0, "{out}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["fired"], true);
    assert_eq!(v["data"]["score"], 3);
    assert_eq!(v["action"]["severity"], "critical");

    let calm = vitals_ctx("e-8", "2025-01-01T10:00:00Z", normal());
    std::fs::write(&ctx_file, serde_json::to_string(&calm).unwrap()).unwrap();
    let (code, out) = run(|o| cds_rules::cli::eval(&pack_dir().join("qsofa.rhai"), &ctx_file, o));
    assert_eq!(code, 0, "{out}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["fired"], false);
    assert!(v["action"].is_null());
}
