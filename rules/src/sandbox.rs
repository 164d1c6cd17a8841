//! The rhai engine rules run in, and the only functions they get beyond rhai's core language.
//!
//! Why each limit: a rule is code written by clinicians and informaticians, hot-reloaded into a
//! process that must not stop. Operation, depth and size limits stop runaway loops, recursion
//! and allocations deterministically; the time budget (rhai has no timeout of its own, so it is
//! checked in `on_progress`) catches whatever is slow without hitting a count. It counts the
//! rules thread's own CPU time, not the wall clock: on a loaded machine the operating system
//! pauses the thread, and a wall-clock budget then failed rules that had done nothing wrong,
//! so the same events raised different alerts from one run to the next. There is
//! no file, network or process access in rhai's packages, `eval` is disabled, `print`/`debug`
//! are swallowed, and `import` resolves only plain names in the pack's own `lib/` folder.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::error::{LoadError, Location};
use rhai::module_resolvers::FileModuleResolver;
use rhai::{
    Dynamic, Engine, EvalAltResult, ImmutableString, Module, ModuleResolver, Position, Scope,
    Shared, FLOAT, INT,
};

/// Limits of the sandbox. The defaults are generous for scoring rules (a NEWS2 evaluation
/// takes a few thousand operations) and tight enough to stop a bad rule within milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub max_operations: u64,
    pub max_call_levels: usize,
    pub max_expr_depth: usize,
    pub max_function_expr_depth: usize,
    pub max_variables: usize,
    pub max_string_size: usize,
    pub max_array_size: usize,
    pub max_map_size: usize,
    pub max_modules: usize,
    /// CPU-time budget of one call into a rule (`data`, `logic` or `action`), measured on the
    /// calling thread.
    pub time_budget: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_operations: 200_000,
            max_call_levels: 32,
            max_expr_depth: 64,
            max_function_expr_depth: 32,
            max_variables: 256,
            max_string_size: 16 * 1024,
            max_array_size: 4096,
            max_map_size: 1024,
            max_modules: 16,
            time_budget: Duration::from_millis(20),
        }
    }
}

/// The CPU-time budget shared between the pack (which arms it before each call) and the
/// engine's `on_progress` callback (which checks it). Both run on the thread that evaluates
/// the rule, whose CPU clock the deadline is on; in nanoseconds, `u64::MAX` means disarmed.
///
/// Reading a thread's CPU clock is a system call (no vDSO shortcut), dearer than a whole
/// short rule. So arming does not read it: the clock starts at the first check, which
/// `on_progress` makes only every [`CHECK_EVERY`] operations. A rule that finishes before
/// that never reads the clock; a runaway one gets its full budget, counted from a few
/// microseconds late.
#[derive(Debug)]
pub(crate) struct Budget {
    deadline_ns: AtomicU64,
    budget_ns: AtomicU64,
}

/// `deadline_ns` of an armed budget whose clock has not been read yet.
const ARMED: u64 = u64::MAX - 1;

/// Operations between two looks at the clock (a power of two). Even slow operations (a sort
/// or a string of the maximum size) take microseconds, so a runaway rule is still stopped
/// within a millisecond or so of its budget.
const CHECK_EVERY: u64 = 256;

/// CPU time the calling thread has used, in nanoseconds.
fn thread_cpu_ns() -> u64 {
    u64::try_from(cpu_time::ThreadTime::now().as_duration().as_nanos()).unwrap_or(u64::MAX)
}

impl Budget {
    fn new() -> Self {
        Self {
            deadline_ns: AtomicU64::new(u64::MAX),
            budget_ns: AtomicU64::new(0),
        }
    }

    pub(crate) fn arm(&self, budget: Duration) {
        let budget = u64::try_from(budget.as_nanos()).unwrap_or(u64::MAX);
        self.budget_ns.store(budget, Ordering::Relaxed);
        self.deadline_ns.store(ARMED, Ordering::Relaxed);
    }

    pub(crate) fn disarm(&self) {
        self.deadline_ns.store(u64::MAX, Ordering::Relaxed);
    }

    fn expired(&self) -> bool {
        match self.deadline_ns.load(Ordering::Relaxed) {
            u64::MAX => false,
            ARMED => {
                let budget = self.budget_ns.load(Ordering::Relaxed);
                // Clamped below the markers: a huge budget never reads as disarmed.
                let deadline = thread_cpu_ns().saturating_add(budget).min(ARMED - 1);
                self.deadline_ns.store(deadline, Ordering::Relaxed);
                false
            }
            deadline => thread_cpu_ns() > deadline,
        }
    }
}

/// Resolves `import "name"` to `<pack>/lib/name.rhai` and nothing else: no paths, no `..`.
struct PackResolver {
    inner: FileModuleResolver,
}

impl ModuleResolver for PackResolver {
    fn resolve(
        &self,
        engine: &Engine,
        _source: Option<&str>,
        path: &str,
        pos: Position,
    ) -> Result<Shared<Module>, Box<EvalAltResult>> {
        let plain = !path.is_empty()
            && path
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !plain {
            return Err(Box::new(EvalAltResult::ErrorModuleNotFound(
                format!("{path} (only plain names of modules in the pack's lib/ folder may be imported)"),
                pos,
            )));
        }
        // `None` as source: always relative to lib/, never to the importing file.
        self.inner.resolve(engine, None, path, pos)
    }
}

/// The engine plus the budget its `on_progress` callback checks.
pub(crate) struct Sandbox {
    pub(crate) engine: Engine,
    pub(crate) budget: Arc<Budget>,
    pub(crate) limits: Limits,
}

impl Sandbox {
    /// `pack_dir` is the rule pack's folder. Every `pack_dir/lib/NAME.rhai` is compiled and
    /// registered as the static module `NAME`, so rules call `NAME::fn(..)` from any function
    /// without an `import` (rhai functions do not see a script's top-level imports when called
    /// one by one, and importing per call would cost time on every event). Lib modules that do
    /// not compile are reported and left out.
    pub(crate) fn new(pack_dir: &Path, limits: Limits) -> (Self, Vec<LoadError>) {
        let mut engine = Engine::new();
        engine
            .set_max_operations(limits.max_operations)
            .set_max_call_levels(limits.max_call_levels)
            .set_max_expr_depths(limits.max_expr_depth, limits.max_function_expr_depth)
            .set_max_variables(limits.max_variables)
            .set_max_string_size(limits.max_string_size)
            .set_max_array_size(limits.max_array_size)
            .set_max_map_size(limits.max_map_size)
            .set_max_modules(limits.max_modules)
            .set_strict_variables(true);
        engine.disable_symbol("eval");
        engine.on_print(|_| {});
        engine.on_debug(|_, _, _| {});

        let mut inner = FileModuleResolver::new_with_path(lib_dir(pack_dir));
        // No cache: a changed lib module is picked up when the rules are recompiled.
        inner.enable_cache(false);
        engine.set_module_resolver(PackResolver { inner });

        let budget = Arc::new(Budget::new());
        let checker = Arc::clone(&budget);
        engine.on_progress(move |ops| {
            // Reading the clock on every operation would cost more than the rule itself.
            if ops.is_multiple_of(CHECK_EVERY) && checker.expired() {
                Some(Dynamic::from("time budget exceeded"))
            } else {
                None
            }
        });
        register_helpers(&mut engine);
        let errors = register_lib_modules(&mut engine, pack_dir, &budget, limits.time_budget);
        (
            Self {
                engine,
                budget,
                limits,
            },
            errors,
        )
    }
}

fn register_lib_modules(
    engine: &mut Engine,
    pack_dir: &Path,
    budget: &Budget,
    time: Duration,
) -> Vec<LoadError> {
    let mut errors = Vec::new();
    let Ok(rd) = std::fs::read_dir(lib_dir(pack_dir)) else {
        return errors; // no lib folder: nothing to register
    };
    let mut files: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "rhai"))
        .collect();
    files.sort();
    for file in files {
        let name = file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            errors.push(LoadError {
                location: Location::line(&file, 0),
                message: "lib module names may use only letters, digits and '_'".into(),
            });
            continue;
        }
        let src = match std::fs::read_to_string(&file) {
            Ok(s) => s,
            Err(e) => {
                errors.push(LoadError {
                    location: Location::line(&file, 0),
                    message: format!("cannot read: {e}"),
                });
                continue;
            }
        };
        let ast = match engine.compile_into_self_contained(&Scope::new(), &src) {
            Ok(a) => a,
            Err(e) => {
                errors.push(LoadError {
                    location: Location::new(&file, e.position()),
                    message: crate::error::strip_position(e.to_string()),
                });
                continue;
            }
        };
        budget.arm(time);
        let module = Module::eval_ast_as_new(Scope::new(), &ast, engine);
        budget.disarm();
        match module {
            Ok(m) => {
                engine.register_static_module(name, Shared::new(m));
            }
            Err(e) => errors.push(LoadError {
                location: Location::new(&file, e.position()),
                message: crate::error::strip_position(e.to_string()),
            }),
        }
    }
    errors
}

pub(crate) fn lib_dir(pack_dir: &Path) -> PathBuf {
    pack_dir.join("lib")
}

/// Epoch seconds of an RFC 3339 time.
pub(crate) fn epoch_seconds(s: &str) -> Option<i64> {
    utc_seconds(s).or_else(|| {
        chrono::DateTime::parse_from_rfc3339(s.trim())
            .ok()
            .map(|t| t.timestamp())
    })
}

/// Epoch seconds of `YYYY-MM-DDTHH:MM:SSZ`, the shape the engine writes every context time in,
/// without a general parser: trend and window helpers read one per kept reading, on every event.
/// `None` for any other shape (the general parser takes it).
fn utc_seconds(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || b[19] != b'Z'
    {
        return None;
    }
    let num = |from: usize, to: usize| -> Option<i64> {
        b[from..to].iter().try_fold(0i64, |n, d| {
            d.is_ascii_digit().then(|| n * 10 + i64::from(d - b'0'))
        })
    };
    let (year, month, day) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (hour, minute, second) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        _ => return None,
    };
    if day < 1 || day > days_in_month || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    // Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hour * 3600 + minute * 60 + second)
}

fn time_arg(v: &Dynamic) -> Result<i64, Box<EvalAltResult>> {
    if let Some(i) = v.clone().try_cast::<INT>() {
        return Ok(i);
    }
    if let Some(s) = v.clone().try_cast::<ImmutableString>() {
        return epoch_seconds(&s).ok_or_else(|| format!("not an RFC 3339 time: '{s}'").into());
    }
    Err(format!(
        "expected an RFC 3339 time or epoch seconds, got {}",
        v.type_name()
    )
    .into())
}

fn seconds_between(a: &Dynamic, b: &Dynamic) -> Result<Option<i64>, Box<EvalAltResult>> {
    if a.is_unit() || b.is_unit() {
        return Ok(None);
    }
    Ok(Some(time_arg(b)? - time_arg(a)?))
}

/// Time helpers for rule authors. Each accepts RFC 3339 strings or epoch seconds and returns
/// `()` when an argument is `()` (a missing time), so a rule can test for it instead of failing.
pub(crate) fn register_helpers(engine: &mut Engine) {
    // `latest_vital(ctx, name)` (see `view::latest_vital`): native because it runs several
    // times per rule and event.
    crate::view::register(engine);
    engine.register_fn(
        "score",
        |value: Dynamic,
         bands: rhai::Array,
         above: Dynamic|
         -> Result<Dynamic, Box<EvalAltResult>> { score(&value, &bands, above) },
    );
    engine.register_fn(
        "icd10_matches",
        |code: Dynamic, patterns: rhai::Array| -> Result<bool, Box<EvalAltResult>> {
            icd10_matches(&code, &patterns)
        },
    );
    engine.register_fn(
        "parse_time",
        |s: Dynamic| -> Result<Dynamic, Box<EvalAltResult>> {
            if s.is_unit() {
                return Ok(Dynamic::UNIT);
            }
            time_arg(&s).map(Dynamic::from_int)
        },
    );
    engine.register_fn(
        "hours_between",
        |a: Dynamic, b: Dynamic| -> Result<Dynamic, Box<EvalAltResult>> {
            Ok(seconds_between(&a, &b)?
                .map_or(Dynamic::UNIT, |s| Dynamic::from_float(s as FLOAT / 3600.0)))
        },
    );
    engine.register_fn(
        "minutes_between",
        |a: Dynamic, b: Dynamic| -> Result<Dynamic, Box<EvalAltResult>> {
            Ok(seconds_between(&a, &b)?
                .map_or(Dynamic::UNIT, |s| Dynamic::from_float(s as FLOAT / 60.0)))
        },
    );
    engine.register_fn(
        "days_between",
        |a: Dynamic, b: Dynamic| -> Result<Dynamic, Box<EvalAltResult>> {
            Ok(seconds_between(&a, &b)?
                .map_or(Dynamic::UNIT, |s| Dynamic::from_float(s as FLOAT / 86400.0)))
        },
    );
}

/// `highest_vital_within(ctx, name, minutes)`: the highest value of vital `name` among the
/// patient's recent readings (`ctx.patient.recent_vitals`, the readings before this event) taken
/// at most `minutes` before `ctx.now` and not after it; `()` when there is none. The window stays
/// in the rule file; this only walks the readings, natively, because rules such as hypoxia run
/// it on every VITALS event. A reading time that is not RFC 3339 is an error, as it is for
/// `minutes_between`.
pub(crate) fn highest_vital_within(
    ctx: &crate::context::Context,
    name: &str,
    minutes: &Dynamic,
) -> Result<Dynamic, Box<EvalAltResult>> {
    let readings = &ctx.patient.recent_vitals;
    if readings.is_empty() {
        return Ok(Dynamic::UNIT);
    }
    let limit = number(minutes).ok_or_else(|| {
        format!(
            "highest_vital_within: minutes must be a number, got {}",
            minutes.type_name()
        )
    })?;
    let seconds = |s: &str| -> Result<i64, Box<EvalAltResult>> {
        epoch_seconds(s).ok_or_else(|| format!("not an RFC 3339 time: '{s}'").into())
    };
    let now = seconds(&ctx.now)?;
    let mut highest: Option<(f64, Dynamic)> = None;
    for reading in readings {
        let age = (now - seconds(&reading.time)?) as FLOAT / 60.0;
        if !(0.0..=limit).contains(&age) {
            continue;
        }
        let Some(value) = crate::view::vital(&reading.vitals, name) else {
            continue;
        };
        let Some(x) = number(&value) else {
            continue;
        };
        if highest.as_ref().is_none_or(|(h, _)| x > *h) {
            highest = Some((x, value));
        }
    }
    Ok(highest.map_or(Dynamic::UNIT, |(_, value)| value))
}

/// `icd10_matches(code, patterns)`: whether an ICD-10 code falls under any of the patterns, as
/// coding algorithms (Charlson, Elixhauser) print them: a prefix (`"I50"`, `"I25.2"`) or a range
/// of three-character categories (`"C00-C26"`). Dots and case do not matter; `()` matches
/// nothing. The code lists stay in the rule files; this only compares, natively, because a
/// comorbidity index runs every list on every code.
fn icd10_matches(code: &Dynamic, patterns: &[Dynamic]) -> Result<bool, Box<EvalAltResult>> {
    if code.is_unit() {
        return Ok(false);
    }
    let Some(code) = code.read_lock::<ImmutableString>() else {
        return Err(format!(
            "icd10_matches: the code must be a string or (), got {}",
            code.type_name()
        )
        .into());
    };
    let normal = |s: &str| -> String {
        s.chars()
            .filter(|c| *c != '.' && !c.is_whitespace())
            .map(|c| c.to_ascii_uppercase())
            .collect()
    };
    let code = normal(&code);
    for pattern in patterns {
        let Some(p) = pattern.read_lock::<ImmutableString>() else {
            return Err(format!(
                "icd10_matches: a pattern must be a string, got {}",
                pattern.type_name()
            )
            .into());
        };
        let hit = match p.split_once('-') {
            Some((lo, hi)) => {
                let (lo, hi) = (normal(lo), normal(hi));
                if lo.len() != 3 || hi.len() != 3 {
                    return Err(format!(
                        "icd10_matches: a range is of three-character categories (\"C00-C26\"), got \"{}\"", p.as_str()
                    )
                    .into());
                }
                let head: String = code.chars().take(3).collect();
                head.len() == 3 && lo <= head && head <= hi
            }
            None => {
                let prefix = normal(&p);
                !prefix.is_empty() && code.starts_with(&prefix)
            }
        };
        if hit {
            return Ok(true);
        }
    }
    Ok(false)
}

/// What [`score_trend`] computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Trend {
    /// `score_rise`: the current score minus the lowest kept score of the window.
    Rise,
    /// `score_slope`: least-squares slope, in points per hour, of the kept scores of the window
    /// and the current one.
    Slope,
}

/// `score_rise(ctx, rule, hours)` and `score_slope(ctx, rule, hours)`: how the scores that
/// `rule` (a `keep_score` rule) kept on the patient's earlier events, at most `hours` before
/// `ctx.now`, move up to its score of this event (the newest kept score, at `ctx.now`: `rule`
/// ran before the calling rule). With a fourth argument `current`, that is the current score
/// instead (a rule that computes it itself). `()` when there is no current score, when the
/// window holds no earlier score, or when fewer than two distinct times remain (slope). The
/// thresholds (how much of a rise matters) stay in the rule file.
pub(crate) fn score_trend(
    ctx: &crate::context::Context,
    rule: &str,
    hours: &Dynamic,
    current: Option<&Dynamic>,
    trend: Trend,
) -> Result<Dynamic, Box<EvalAltResult>> {
    let name = match trend {
        Trend::Rise => "score_rise",
        Trend::Slope => "score_slope",
    };
    let limit = number(hours)
        .ok_or_else(|| format!("{name}: hours must be a number, got {}", hours.type_name()))?;
    let kept = ctx.patient.scores.get(rule).map_or(&[][..], Vec::as_slice);
    // This event's score: given, or the newest kept one when it is of `ctx.now`.
    let (now_score, earlier) = match current {
        Some(c) if c.is_unit() => return Ok(Dynamic::UNIT),
        Some(c) => {
            let x = number(c).ok_or_else(|| {
                format!(
                    "{name}: the current score must be a number or (), got {}",
                    c.type_name()
                )
            })?;
            (x, kept)
        }
        None => match kept.split_first() {
            Some((first, rest)) if first.time == ctx.now => (first.score, rest),
            _ => return Ok(Dynamic::UNIT),
        },
    };
    if earlier.is_empty() {
        return Ok(Dynamic::UNIT);
    }
    let now =
        epoch_seconds(&ctx.now).ok_or_else(|| format!("not an RFC 3339 time: '{}'", ctx.now))?;
    // (hours before now, score) of the earlier kept scores inside the window.
    let mut points = Vec::with_capacity(earlier.len() + 1);
    for s in earlier {
        let at =
            epoch_seconds(&s.time).ok_or_else(|| format!("not an RFC 3339 time: '{}'", s.time))?;
        let age = (now - at) as FLOAT / 3600.0;
        if (0.0..=limit).contains(&age) {
            points.push((-age, s.score));
        }
    }
    if points.is_empty() {
        return Ok(Dynamic::UNIT);
    }
    match trend {
        Trend::Rise => {
            let lowest = points
                .iter()
                .map(|(_, y)| *y)
                .fold(FLOAT::INFINITY, FLOAT::min);
            Ok(Dynamic::from_float(now_score - lowest))
        }
        Trend::Slope => {
            points.push((0.0, now_score));
            let n = points.len() as FLOAT;
            let mean_x = points.iter().map(|(x, _)| x).sum::<FLOAT>() / n;
            let mean_y = points.iter().map(|(_, y)| y).sum::<FLOAT>() / n;
            let sxx: FLOAT = points.iter().map(|(x, _)| (x - mean_x).powi(2)).sum();
            let sxy: FLOAT = points
                .iter()
                .map(|(x, y)| (x - mean_x) * (y - mean_y))
                .sum();
            if sxx <= 0.0 {
                return Ok(Dynamic::UNIT);
            }
            Ok(Dynamic::from_float(sxy / sxx))
        }
    }
}

/// A number of rhai (integer or float) as `f64`, for comparing with thresholds.
fn number(v: &Dynamic) -> Option<f64> {
    v.as_float()
        .ok()
        .or_else(|| v.as_int().ok().map(|i| i as f64))
}

/// `score(value, bands, above)`: the points of a threshold table, the way scoring systems
/// (NEWS2, ...) print them. `bands` is `[limit, points, limit, points, ...]` with rising limits;
/// the result is the points of the first `limit` with `value <= limit`, else `above`, and `()`
/// when `value` is `()` (missing: the rule says what that scores, e.g. `?? 0`). The table stays
/// in the rule file; this only walks it, natively, because scoring runs on every VITALS event.
fn score(
    value: &Dynamic,
    bands: &[Dynamic],
    above: Dynamic,
) -> Result<Dynamic, Box<EvalAltResult>> {
    if value.is_unit() {
        return Ok(Dynamic::UNIT);
    }
    let x = number(value).ok_or_else(|| {
        format!(
            "score: the value must be a number or (), got {}",
            value.type_name()
        )
    })?;
    if !bands.len().is_multiple_of(2) {
        return Err("score: bands must be pairs [limit, points, limit, points, ...]".into());
    }
    for pair in bands.chunks_exact(2) {
        let limit = number(&pair[0]).ok_or_else(|| {
            format!(
                "score: a limit must be a number, got {}",
                pair[0].type_name()
            )
        })?;
        if x <= limit {
            return Ok(pair[1].clone());
        }
    }
    Ok(above)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fast_utc_parser_agrees_with_chrono() {
        let chrono = |s: &str| {
            chrono::DateTime::parse_from_rfc3339(s)
                .ok()
                .map(|t| t.timestamp())
        };
        for s in [
            "1970-01-01T00:00:00Z",
            "2025-03-10T12:00:00Z",
            "2024-02-29T23:59:59Z",
            "2000-02-29T00:00:01Z",
            "1999-12-31T23:59:59Z",
            "2100-03-01T00:00:00Z",
            "1969-07-20T20:17:40Z",
        ] {
            assert_eq!(utc_seconds(s), chrono(s), "{s}");
            assert!(utc_seconds(s).is_some());
        }
        for s in [
            "2023-02-29T00:00:00Z",
            "2025-13-01T00:00:00Z",
            "2025-03-10T24:00:00Z",
            "2025-03-10T12:00:00+01:00",
            "2025-03-10T12:00:00.5Z",
            "2025-03-10 12:00:00Z",
        ] {
            assert_eq!(utc_seconds(s), None, "{s}");
        }
        assert_eq!(
            epoch_seconds("2025-03-10T13:00:00+01:00"),
            epoch_seconds("2025-03-10T12:00:00Z")
        );
    }
}
