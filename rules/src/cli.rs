//! The `cds rules` subcommands. Each writes to `out` and returns the process exit code
//! (0 success, 1 a test/check/rule failed, 2 bad input such as an unreadable file), so the
//! engine's `main` only parses arguments and calls them.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{json, Value};

use crate::context::Context;
use crate::mlm::Evoke;
use crate::rule::Rule;
use crate::sandbox::{Limits, Sandbox};
use crate::RulePack;

/// One fixture of `DIR/tests/<rule>.json` (a JSON list of these).
#[derive(Debug, Deserialize)]
struct Fixture {
    name: String,
    ctx: Context,
    expect: Expect,
}

#[derive(Debug, Deserialize)]
struct Expect {
    fired: bool,
    /// Subset of `data()` to compare (numbers compare numerically: 7 equals 7.0).
    #[serde(default)]
    data: Option<serde_json::Map<String, Value>>,
    /// Subset of `action()` to compare (only when the rule fired).
    #[serde(default)]
    action: Option<serde_json::Map<String, Value>>,
}

fn values_match(expected: &Value, got: &Value) -> bool {
    match (expected, got) {
        (Value::Number(a), Value::Number(b)) => match (a.as_f64(), b.as_f64()) {
            (Some(x), Some(y)) => (x - y).abs() < 1e-9,
            _ => false,
        },
        (Value::Object(e), Value::Object(g)) => e
            .iter()
            .all(|(k, v)| g.get(k).is_some_and(|gv| values_match(v, gv))),
        (Value::Array(e), Value::Array(g)) => {
            e.len() == g.len() && e.iter().zip(g).all(|(a, b)| values_match(a, b))
        }
        _ => expected == got,
    }
}

/// Differences between an expected subset and the actual map, as "path: expected X, got Y".
fn diff_subset(
    prefix: &str,
    expected: &serde_json::Map<String, Value>,
    got: &Value,
    out: &mut Vec<String>,
) {
    for (k, e) in expected {
        let g = got.get(k).unwrap_or(&Value::Null);
        if !values_match(e, g) {
            out.push(format!("{prefix}.{k}: expected {e}, got {g}"));
        }
    }
}

/// Runs every fixture in `dir/tests/*.json` against `dir/<same stem>.rhai`; prints one line per
/// fixture (with the differences when it fails) and a closing `N passed, N failed` line.
pub fn test(dir: &Path, out: &mut dyn Write) -> i32 {
    let mut failed = 0usize;
    let mut passed = 0usize;
    let mut pack = match RulePack::load(dir) {
        Ok(p) => p,
        Err(e) => {
            for err in &e.errors {
                let _ = writeln!(out, "LOAD {err}");
            }
            failed += e.errors.len();
            match e.partial {
                Some(p) => *p,
                None => {
                    let _ = writeln!(out, "0 passed, {failed} failed");
                    return 2;
                }
            }
        }
    };
    let tests_dir = dir.join("tests");
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&tests_dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect(),
        Err(e) => {
            let _ = writeln!(out, "cannot read {}: {e}", tests_dir.display());
            return 2;
        }
    };
    files.sort();
    for fixture_file in files {
        let fname = fixture_file
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let stem = fixture_file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let rule_file = dir.join(format!("{stem}.rhai"));
        let fixtures: Vec<Fixture> = match std::fs::read_to_string(&fixture_file)
            .map_err(|e| e.to_string())
            .and_then(|s| serde_json::from_str(&s).map_err(|e| e.to_string()))
        {
            Ok(f) => f,
            Err(e) => {
                let _ = writeln!(out, "FAIL {fname}: cannot read fixtures: {e}");
                failed += 1;
                continue;
            }
        };
        let Some(mlm) = pack.mlm_of(&rule_file).cloned() else {
            let _ = writeln!(
                out,
                "FAIL {fname}: rule {} is not loaded",
                rule_file.display()
            );
            failed += fixtures.len().max(1);
            continue;
        };
        for fx in fixtures {
            let evoked = match &mlm.evoke {
                Evoke::Events(types) => types.contains(&fx.ctx.event.event_type),
                Evoke::Delayed { .. } => true,
            };
            let mut diffs = Vec::new();
            let (fired, data, action) = if evoked {
                match pack.run_file(&rule_file, &fx.ctx) {
                    Some(Ok((run, _))) => (run.fired, run.data, run.action.map(|a| a.value)),
                    Some(Err(e)) => {
                        diffs.push(format!("error: {e}"));
                        (false, Value::Null, None)
                    }
                    None => (false, Value::Null, None),
                }
            } else {
                (false, Value::Null, None)
            };
            if fired != fx.expect.fired {
                let why = if evoked {
                    String::new()
                } else {
                    format!(" (not evoked by {})", fx.ctx.event.event_type)
                };
                diffs.push(format!(
                    "fired: expected {}, got {fired}{why}",
                    fx.expect.fired
                ));
            }
            if let Some(exp) = &fx.expect.data {
                diff_subset("data", exp, &data, &mut diffs);
            }
            if let (Some(exp), true) = (&fx.expect.action, fired) {
                diff_subset(
                    "action",
                    exp,
                    action.as_ref().unwrap_or(&Value::Null),
                    &mut diffs,
                );
            }
            if diffs.is_empty() {
                passed += 1;
                let _ = writeln!(out, "ok   {fname}: {}", fx.name);
            } else {
                failed += 1;
                let _ = writeln!(out, "FAIL {fname}: {}", fx.name);
                for d in diffs {
                    let _ = writeln!(out, "       {d}");
                }
            }
        }
    }
    let _ = writeln!(out, "{passed} passed, {failed} failed");
    i32::from(failed > 0)
}

fn pack_dir_of(file: &Path) -> PathBuf {
    match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Compiles and validates one rule file (imports from its folder's `lib/`); prints
/// `file:line:col: message` per problem, or a one-line summary when it is fine.
pub fn check(file: &Path, out: &mut dyn Write) -> i32 {
    let (sandbox, lib_errors) = Sandbox::new(&pack_dir_of(file), Limits::default());
    for e in &lib_errors {
        let _ = writeln!(out, "{e}");
    }
    match Rule::compile(&sandbox, file) {
        Ok(rule) => {
            let m = &rule.mlm;
            let evoke = serde_json::to_string(&m.evoke).unwrap_or_default();
            let _ = writeln!(
                out,
                "ok {}: {} {} ({}), evoke {evoke}",
                file.display(),
                m.mlmname,
                m.version,
                m.title
            );
            i32::from(!lib_errors.is_empty())
        }
        Err(errors) => {
            for e in errors {
                let _ = writeln!(out, "{e}");
            }
            1
        }
    }
}

/// Runs one rule on the context in `ctx_path` (JSON of [`Context`]), without evoke filtering
/// or suppression, and prints `{"fired": bool, "data": .., "action": ..|null, "evoked": bool}`.
pub fn eval(file: &Path, ctx_path: &Path, out: &mut dyn Write) -> i32 {
    let ctx: Context = match std::fs::read_to_string(ctx_path)
        .map_err(|e| e.to_string())
        .and_then(|s| serde_json::from_str(&s).map_err(|e| e.to_string()))
    {
        Ok(c) => c,
        Err(e) => {
            let _ = writeln!(out, "{}: {e}", ctx_path.display());
            return 2;
        }
    };
    let (sandbox, lib_errors) = Sandbox::new(&pack_dir_of(file), Limits::default());
    if !lib_errors.is_empty() {
        for e in lib_errors {
            let _ = writeln!(out, "{e}");
        }
        return 1;
    }
    let mut rule = match Rule::compile(&sandbox, file) {
        Ok(r) => r,
        Err(errors) => {
            for e in errors {
                let _ = writeln!(out, "{e}");
            }
            return 1;
        }
    };
    let evoked = match &rule.mlm.evoke {
        Evoke::Events(t) => t.contains(&ctx.event.event_type),
        Evoke::Delayed { .. } => true,
    };
    let ctx_dyn = crate::view::rule_context(std::sync::Arc::new(ctx.clone()));
    match rule.run(
        &sandbox,
        &ctx_dyn,
        &ctx.event.event_id,
        crate::rule::Evidence::Always,
    ) {
        Ok(run) => {
            let doc = json!({
                "fired": run.fired,
                "data": run.data,
                "action": run.action.map(|a| a.value),
                "evoked": evoked,
            });
            let _ = writeln!(out, "{doc}");
            0
        }
        Err(e) => {
            let _ = writeln!(out, "{e}");
            1
        }
    }
}
