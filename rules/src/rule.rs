//! One compiled MLM: its AST (compiled once), its validated `MLM` map, and the calls into
//! `data`, `logic` and `action` under the sandbox's budget.

use std::path::{Path, PathBuf};

use rhai::{CallFnOptions, Dynamic, EvalAltResult, Scope, AST};

use crate::alert::Severity;
use crate::error::{strip_position, LoadError, Location, RuleError, RuleErrorKind};
use crate::mlm::{self, Mlm};
use crate::sandbox::Sandbox;

/// A loaded rule.
pub(crate) struct Rule {
    pub(crate) file: PathBuf,
    pub(crate) mlm: Mlm,
    ast: AST,
    /// Reused for every call (rewound after each), so no scope is allocated per event.
    scope: Scope<'static>,
    /// Lines of `fn data`, `fn logic`, `fn action`, for contract errors.
    fn_lines: [usize; 3],
    /// The source, to find the line of a function an error without position happened in.
    src: String,
}

/// What `action(ctx, data)` must return, checked.
#[derive(Debug, Clone)]
pub(crate) struct Action {
    pub(crate) summary: String,
    pub(crate) detail: String,
    pub(crate) severity: Severity,
    pub(crate) value: serde_json::Value,
}

/// When [`Rule::run`] turns what `data()` returned into JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Evidence {
    /// Only when the rule fired: the engine needs it for the alert and nothing else.
    WhenFired,
    /// Always (`cds rules test` compares it with the fixture's).
    Always,
}

/// The result of running one rule on one context.
#[derive(Debug, Clone)]
pub(crate) struct Run {
    /// `data()` as JSON; `null` when not asked for (see [`Evidence`]).
    pub(crate) data: serde_json::Value,
    pub(crate) fired: bool,
    pub(crate) action: Option<Action>,
    /// The kept field of `data()` (`score`, or the field `keep_score` names) as a number, for a
    /// rule that keeps scores (else `None`).
    pub(crate) score: Option<f64>,
}

/// The field `field` of what `data()` returned, when it is a number.
fn data_score(data: &Dynamic, field: &str) -> Option<f64> {
    let map = data.read_lock::<rhai::Map>()?;
    let score = map.get(field)?;
    score
        .as_float()
        .ok()
        .or_else(|| score.as_int().ok().map(|i| i as f64))
        .filter(|x| x.is_finite())
}

fn fn_line(src: &str, name: &str) -> usize {
    let pat = format!("fn {name}(");
    src.lines()
        .position(|l| l.contains(&pat))
        .map_or(0, |i| i + 1)
}

impl Rule {
    /// Reads, compiles, runs the top level once (to get `MLM`) and validates a rule file.
    pub(crate) fn compile(sandbox: &Sandbox, file: &Path) -> Result<Rule, Vec<LoadError>> {
        let src = std::fs::read_to_string(file).map_err(|e| {
            vec![LoadError {
                location: Location::line(file, 0),
                message: format!("cannot read: {e}"),
            }]
        })?;
        Self::compile_source(sandbox, file, &src)
    }

    pub(crate) fn compile_source(
        sandbox: &Sandbox,
        file: &Path,
        src: &str,
    ) -> Result<Rule, Vec<LoadError>> {
        let one = |pos, message: String| {
            vec![LoadError {
                location: Location::new(file, pos),
                message,
            }]
        };
        let engine = &sandbox.engine;
        let mut ast = engine
            .compile_into_self_contained(&Scope::new(), src)
            .map_err(|e| one(e.position(), strip_position(e.to_string())))?;
        ast.set_source(file.display().to_string());

        let mut errors = Vec::new();
        for (name, params) in [
            ("data", "ctx"),
            ("logic", "ctx, data"),
            ("action", "ctx, data"),
        ] {
            let arity = params.split(',').count();
            if !ast
                .iter_functions()
                .any(|f| f.name == name && f.params.len() == arity)
            {
                errors.push(LoadError {
                    location: Location::line(file, fn_line(src, name)),
                    message: format!("missing function `fn {name}({params})`"),
                });
            }
        }

        let mut scope = Scope::new();
        sandbox.budget.arm(sandbox.limits.time_budget);
        let ran = engine.run_ast_with_scope(&mut scope, &ast);
        sandbox.budget.disarm();
        if let Err(e) = ran {
            errors.extend(one(
                e.position(),
                format!("top level: {}", strip_position(e.to_string())),
            ));
            return Err(errors);
        }
        let mlm = match scope.get("MLM") {
            None => {
                errors.push(LoadError {
                    location: Location::line(file, 1),
                    message: "no `const MLM = #{ maintenance: .., library: .., knowledge: .. };`"
                        .into(),
                });
                return Err(errors);
            }
            Some(d) => match rhai::serde::from_dynamic::<serde_json::Value>(d) {
                Ok(v) => mlm::validate(file, src, &v).map_err(|mut e| {
                    errors.append(&mut e);
                    std::mem::take(&mut errors)
                })?,
                Err(e) => {
                    errors.push(LoadError {
                        location: Location::line(file, mlm::mlm_line(src)),
                        message: format!("MLM is not plain data: {e}"),
                    });
                    return Err(errors);
                }
            },
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Rule {
            file: file.to_path_buf(),
            mlm,
            ast,
            scope: Scope::new(),
            fn_lines: [
                fn_line(src, "data"),
                fn_line(src, "logic"),
                fn_line(src, "action"),
            ],
            src: src.to_string(),
        })
    }

    /// Calls `name` with the given arguments (moved in: rhai takes them by value).
    fn call(
        &mut self,
        sandbox: &Sandbox,
        name: &str,
        args: impl rhai::FuncArgs,
    ) -> Result<Dynamic, Box<EvalAltResult>> {
        let opts = CallFnOptions::new().eval_ast(false).rewind_scope(true);
        sandbox
            .engine
            .call_fn_with_options(opts, &mut self.scope, &self.ast, name, args)
    }

    fn contract(&self, which: usize, event_id: &str, message: String) -> RuleError {
        RuleError {
            mlmname: self.mlm.mlmname.clone(),
            location: Location::line(&self.file, self.fn_lines[which]),
            event_id: event_id.to_string(),
            kind: RuleErrorKind::Contract,
            message,
        }
    }

    /// Runs `data`, `logic` and (when it fired) `action` under one time budget. `ctx` is a
    /// [`crate::view::RuleContext`] handle shared by the rules of the event. The JSON of
    /// `data()` is made only when the rule fired (it is the alert's evidence), unless
    /// `evidence` is [`Evidence::Always`] (`cds rules test` compares it either way).
    pub(crate) fn run(
        &mut self,
        sandbox: &Sandbox,
        ctx: &Dynamic,
        event_id: &str,
        evidence: Evidence,
    ) -> Result<Run, RuleError> {
        sandbox.budget.arm(sandbox.limits.time_budget);
        let result = self.run_armed(sandbox, ctx, event_id, evidence);
        sandbox.budget.disarm();
        result
    }

    fn run_armed(
        &mut self,
        sandbox: &Sandbox,
        ctx: &Dynamic,
        event_id: &str,
        evidence: Evidence,
    ) -> Result<Run, RuleError> {
        let rhai_err = |rule: &Rule, called: &str, e: Box<EvalAltResult>| {
            RuleError::from_rhai(&rule.mlm.mlmname, &rule.file, event_id, &e, called, |f| {
                fn_line(&rule.src, f)
            })
        };
        let data = self
            .call(sandbox, "data", (ctx.clone(),))
            .map_err(|e| rhai_err(self, "data", e))?;
        // What `logic` changes in `data` must not reach the evidence or `action`. Rather than
        // copying `data` for every evaluation, `logic` takes it, and in the rare case that the
        // rule fires `data` is computed again (it depends on `ctx` alone). `cds rules test`
        // (evidence always) keeps a copy instead.
        let score = self
            .mlm
            .keep_score
            .as_deref()
            .and_then(|field| data_score(&data, field));
        let kept = (evidence == Evidence::Always).then(|| data.clone());
        let fired_d = self
            .call(sandbox, "logic", (ctx.clone(), data))
            .map_err(|e| rhai_err(self, "logic", e))?;
        let fired = fired_d.as_bool().map_err(|t| {
            self.contract(
                1,
                event_id,
                format!("logic() must return a bool, returned {t}"),
            )
        })?;
        let data = match kept {
            Some(data) => data,
            None if fired => self
                .call(sandbox, "data", (ctx.clone(),))
                .map_err(|e| rhai_err(self, "data", e))?,
            None => Dynamic::UNIT,
        };
        let data_json = if fired || evidence == Evidence::Always {
            crate::view::to_json(&data).map_err(|e| {
                self.contract(
                    0,
                    event_id,
                    format!("data() returned something that is not plain data: {e}"),
                )
            })?
        } else {
            serde_json::Value::Null
        };
        let action = if fired {
            let a = self
                .call(sandbox, "action", (ctx.clone(), data))
                .map_err(|e| rhai_err(self, "action", e))?;
            Some(self.check_action(&a, event_id)?)
        } else {
            None
        };
        Ok(Run {
            data: data_json,
            fired,
            action,
            score,
        })
    }

    fn check_action(&self, a: &Dynamic, event_id: &str) -> Result<Action, RuleError> {
        let value = crate::view::to_json(a).map_err(|e| {
            self.contract(
                2,
                event_id,
                format!("action() returned something that is not plain data: {e}"),
            )
        })?;
        let field = |k: &str| {
            value
                .get(k)
                .and_then(serde_json::Value::as_str)
                .map(str::to_string)
        };
        let (Some(summary), Some(detail), Some(sev)) =
            (field("summary"), field("detail"), field("severity"))
        else {
            return Err(self.contract(
                2,
                event_id,
                "action() must return a map with string fields summary, detail and severity".into(),
            ));
        };
        let severity = Severity::parse(&sev).ok_or_else(|| {
            self.contract(
                2,
                event_id,
                format!("unknown severity '{sev}' (info/warning/critical or low/medium/high)"),
            )
        })?;
        Ok(Action {
            summary,
            detail,
            severity,
            value,
        })
    }
}
