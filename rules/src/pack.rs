//! The rule pack: every MLM of a directory, evaluated per event, hot-reloaded by polling.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rhai::{Dynamic, ImmutableString};
use serde::Serialize;

use crate::alert::{alert_id, as_uuid, truncate_chars, Alert, Card, CardSource};
use crate::context::Context;
use crate::delayed::DelayedEvokes;
use crate::error::{LoadError, LoadErrors, Location, RuleError};
use crate::mlm::{AlertScope, Evoke, Mlm, EVENT_TYPES};
use crate::rule::{Evidence, Rule, Run};
use crate::sandbox::{epoch_seconds, lib_dir, Limits, Sandbox};
use crate::suppress::Suppressor;

/// The result of one rule on one event.
#[derive(Debug, Clone, PartialEq)]
pub enum RuleOutcome {
    /// The rule fired and the alert is to be written.
    Fired(Box<Alert>),
    /// `logic` returned false.
    NotFired { mlmname: String },
    /// The rule fired but an alert of the same or a higher band is inside its window.
    Suppressed(Box<Alert>),
    /// The rule failed or ran over a limit; the other rules still ran.
    Error(RuleError),
}

/// Which of the pack's rules an evaluation runs, by the scope of their alerts.
///
/// When the engine runs the rules on several threads, a patient's rules run on the thread that
/// owns the patient and the department rules on one thread, so that every suppression window
/// and every delayed evoke lives in exactly one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scopes {
    /// Rules whose alerts are about the patient (`scope: "patient"`, the default).
    pub patient: bool,
    /// Rules whose alerts are about the department (`scope: "department"`).
    pub department: bool,
}

impl Scopes {
    /// Every rule: a pack that runs on one thread.
    pub const ALL: Scopes = Scopes {
        patient: true,
        department: true,
    };

    /// Whether a rule of this scope runs.
    pub fn admits(self, scope: AlertScope) -> bool {
        match scope {
            AlertScope::Patient => self.patient,
            AlertScope::Department => self.department,
        }
    }

    /// Whether any rule runs.
    pub fn any(self) -> bool {
        self.patient || self.department
    }
}

/// Per-rule counters, a plain snapshot for the engine's metrics exporter.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RuleStats {
    pub mlmname: String,
    pub version: String,
    pub file: PathBuf,
    pub evaluations: u64,
    /// `logic` returned true (alerts written = fires - suppressed).
    pub fires: u64,
    pub suppressed: u64,
    pub errors: u64,
    /// Total time spent evaluating this rule.
    pub eval_time: Duration,
}

/// A rule with a delayed evoke, for the engine's scheduler.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DelayedRule {
    pub mlmname: String,
    pub after: String,
    pub hours: f64,
}

/// What `reload_changed` did.
#[derive(Debug, Clone, PartialEq)]
pub enum ReloadEvent {
    Added {
        file: PathBuf,
        mlmname: String,
        version: String,
    },
    Reloaded {
        file: PathBuf,
        mlmname: String,
        version: String,
    },
    Removed {
        file: PathBuf,
        mlmname: String,
    },
    /// The file did not load; the previous version (if any) keeps running.
    Failed {
        file: PathBuf,
        errors: Vec<LoadError>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    mtime: Option<SystemTime>,
    len: u64,
}

/// The loaded MLMs of one directory, their suppression state and counters.
pub struct RulePack {
    dir: PathBuf,
    sandbox: Sandbox,
    /// By file path (sorted: evaluation order is the file-name order).
    rules: BTreeMap<PathBuf, Rule>,
    /// Every `.rhai` file seen, loaded or not, with the stamp last looked at.
    files: BTreeMap<PathBuf, Stamp>,
    lib_files: BTreeMap<PathBuf, Stamp>,
    stats: BTreeMap<String, RuleStats>,
    suppressor: Suppressor,
    /// Scores of `keep_score` rules from the evaluations since [`RulePack::take_scores`].
    kept: Vec<KeptScore>,
}

/// A score a `keep_score` rule computed, for the engine to keep with the patient (it comes
/// back to later events as `ctx.patient.scores`).
#[derive(Debug, Clone, PartialEq)]
pub struct KeptScore {
    /// The rule's `mlmname`.
    pub mlmname: String,
    pub score: f64,
    /// The evaluation's `ctx.now`, shared by the event's context and the engine's history.
    pub time: ImmutableString,
}

impl std::fmt::Debug for RulePack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RulePack")
            .field("dir", &self.dir)
            .field(
                "rules",
                &self
                    .rules
                    .values()
                    .map(|r| &r.mlm.mlmname)
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

fn stamp(path: &Path) -> Option<Stamp> {
    let md = std::fs::metadata(path).ok()?;
    Some(Stamp {
        mtime: md.modified().ok(),
        len: md.len(),
    })
}

/// `.rhai` files directly in `dir`, with their stamps.
fn scan(dir: &Path) -> std::io::Result<BTreeMap<PathBuf, Stamp>> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_file() && path.extension().is_some_and(|e| e == "rhai") {
            if let Some(s) = stamp(&path) {
                out.insert(path, s);
            }
        }
    }
    Ok(out)
}

fn scope_key(mlm: &Mlm, ctx: &Context) -> String {
    match mlm.scope {
        AlertScope::Patient => ctx.patient.patient.clone(),
        AlertScope::Department => {
            let h = ctx
                .department
                .hospital_id
                .or(ctx.event.hospital_id)
                .unwrap_or(0);
            let d = ctx
                .department
                .department
                .clone()
                .or_else(|| ctx.event.department.clone())
                .unwrap_or_default();
            format!("{h}:{d}")
        }
    }
}

/// Builds the alert document from a fired run.
fn make_alert(mlm: &Mlm, ctx: &Context, run: &Run, event_id: &str) -> Option<Alert> {
    let action = run.action.as_ref()?;
    let key = scope_key(mlm, ctx);
    let id = alert_id(&mlm.mlmname, &mlm.version, &key, event_id);
    let (hospital_id, department, patient) = match mlm.scope {
        AlertScope::Patient => (
            ctx.event.hospital_id.or(ctx.patient.hospital_id),
            ctx.event
                .department
                .clone()
                .or_else(|| ctx.patient.department.clone()),
            Some(ctx.patient.patient.clone()),
        ),
        AlertScope::Department => (
            ctx.department.hospital_id.or(ctx.event.hospital_id),
            ctx.department
                .department
                .clone()
                .or_else(|| ctx.event.department.clone()),
            None,
        ),
    };
    let url = mlm
        .citations
        .first()
        .map(|c| c.url.clone())
        .unwrap_or_default();
    Some(Alert {
        card: Card {
            uuid: as_uuid(&id),
            summary: truncate_chars(&action.summary, 139),
            detail: action.detail.clone(),
            indicator: action.severity,
            source: CardSource {
                label: mlm.title.clone(),
                url,
            },
        },
        id,
        doc_type: "alert".into(),
        mlmname: mlm.mlmname.clone(),
        version: mlm.version.clone(),
        title: mlm.title.clone(),
        priority: mlm.priority,
        urgency: mlm.urgency,
        severity: action.severity,
        evidence: run.data.clone(),
        hospital_id,
        department,
        patient,
        event_id: event_id.to_string(),
        event_time: ctx.now.clone(),
    })
}

impl RulePack {
    /// Loads every `*.rhai` in `dir` with the default [`Limits`]. Modules for `import` come
    /// from `dir/lib/`. If some files fail, the error carries the pack of the others.
    pub fn load(dir: impl AsRef<Path>) -> Result<RulePack, LoadErrors> {
        Self::load_with_limits(dir, Limits::default())
    }

    /// [`RulePack::load`] with explicit sandbox limits.
    pub fn load_with_limits(dir: impl AsRef<Path>, limits: Limits) -> Result<RulePack, LoadErrors> {
        let dir = dir.as_ref().to_path_buf();
        let files = scan(&dir).map_err(|e| LoadErrors {
            errors: vec![LoadError {
                location: Location::line(&dir, 0),
                message: format!("cannot read directory: {e}"),
            }],
            partial: None,
        })?;
        let (sandbox, mut errors) = Sandbox::new(&dir, limits);
        let mut pack = RulePack {
            sandbox,
            lib_files: scan(&lib_dir(&dir)).unwrap_or_default(),
            dir,
            rules: BTreeMap::new(),
            files: BTreeMap::new(),
            stats: BTreeMap::new(),
            suppressor: Suppressor::new(),
            kept: Vec::new(),
        };
        for (path, st) in files {
            pack.files.insert(path.clone(), st);
            if let Err(mut e) = pack.install(&path).map(|_| ()) {
                errors.append(&mut e);
            }
        }
        if errors.is_empty() {
            Ok(pack)
        } else {
            Err(LoadErrors {
                errors,
                partial: Some(Box::new(pack)),
            })
        }
    }

    /// Compiles `path` and, if it loads and its mlmname is not taken by another file, puts it
    /// in place of the previous version. Returns (mlmname, version, replaced an old version).
    fn install(&mut self, path: &Path) -> Result<(String, String, bool), Vec<LoadError>> {
        let rule = Rule::compile(&self.sandbox, path)?;
        let name = rule.mlm.mlmname.clone();
        if let Some(other) = self
            .rules
            .values()
            .find(|r| r.mlm.mlmname == name && r.file != path)
        {
            return Err(vec![LoadError {
                location: Location::line(
                    path,
                    crate::mlm::mlm_line(&std::fs::read_to_string(path).unwrap_or_default()),
                ),
                message: format!(
                    "mlmname '{name}' is already used by {}",
                    other.file.display()
                ),
            }]);
        }
        let version = rule.mlm.version.clone();
        let old = self.rules.insert(path.to_path_buf(), rule);
        if let Some(old) = &old {
            if old.mlm.mlmname != name {
                self.stats.remove(&old.mlm.mlmname);
            }
        }
        let s = self.stats.entry(name.clone()).or_default();
        s.mlmname = name.clone();
        s.version = version.clone();
        s.file = path.to_path_buf();
        Ok((name, version, old.is_some()))
    }

    /// Looks at the files' modification times and sizes and applies what changed: a changed
    /// or new file is compiled and replaces the old version only if it loads; a removed file's
    /// rule is dropped. A change in `lib/` recompiles every rule. Call it every ~250 ms.
    pub fn reload_changed(&mut self) -> Vec<ReloadEvent> {
        let mut events = Vec::new();
        let Ok(current) = scan(&self.dir) else {
            return events; // directory gone for a moment: keep running what we have
        };
        let lib_now = scan(&lib_dir(&self.dir)).unwrap_or_default();
        let lib_changed = lib_now != self.lib_files;
        self.lib_files = lib_now;
        if lib_changed {
            let (sandbox, lib_errors) = Sandbox::new(&self.dir, self.sandbox.limits);
            if !lib_errors.is_empty() {
                // Keep the engine with the previous lib modules, and the rules compiled for it.
                let mut by_file: BTreeMap<PathBuf, Vec<LoadError>> = BTreeMap::new();
                for e in lib_errors {
                    by_file.entry(e.location.file.clone()).or_default().push(e);
                }
                events.extend(
                    by_file
                        .into_iter()
                        .map(|(file, errors)| ReloadEvent::Failed { file, errors }),
                );
                return events;
            }
            self.sandbox = sandbox;
        }

        let gone: Vec<PathBuf> = self
            .files
            .keys()
            .filter(|p| !current.contains_key(*p))
            .cloned()
            .collect();
        for path in gone {
            self.files.remove(&path);
            if let Some(rule) = self.rules.remove(&path) {
                self.stats.remove(&rule.mlm.mlmname);
                events.push(ReloadEvent::Removed {
                    file: path,
                    mlmname: rule.mlm.mlmname,
                });
            }
        }
        for (path, st) in current {
            let changed = self.files.get(&path) != Some(&st);
            if !(changed || lib_changed) {
                continue;
            }
            self.files.insert(path.clone(), st);
            match self.install(&path) {
                Ok((mlmname, version, true)) => events.push(ReloadEvent::Reloaded {
                    file: path,
                    mlmname,
                    version,
                }),
                Ok((mlmname, version, false)) => events.push(ReloadEvent::Added {
                    file: path,
                    mlmname,
                    version,
                }),
                Err(errors) => events.push(ReloadEvent::Failed { file: path, errors }),
            }
        }
        events
    }

    /// Whether any rule's evoke lists `event_type`: when none does, the engine need not build
    /// a context for the event at all.
    pub fn evokes(&self, event_type: &str) -> bool {
        self.evokes_in(event_type, Scopes::ALL)
    }

    /// [`RulePack::evokes`] among the rules of `scopes`.
    pub fn evokes_in(&self, event_type: &str, scopes: Scopes) -> bool {
        self.rules
            .values()
            .any(|r| scopes.admits(r.mlm.scope) && r.mlm.evoke.lists(event_type))
    }

    /// The alert scope of the rule `mlmname`, if loaded.
    pub fn scope_of(&self, mlmname: &str) -> Option<AlertScope> {
        self.rules
            .values()
            .find(|r| r.mlm.mlmname == mlmname)
            .map(|r| r.mlm.scope)
    }

    /// Evaluates every rule whose evoke lists `ctx.event.event_type`, in file-name order.
    pub fn evaluate(&mut self, ctx: &Context) -> Vec<RuleOutcome> {
        if !self.evokes(&ctx.event.event_type) {
            return Vec::new();
        }
        self.evaluate_shared(&Arc::new(ctx.clone()))
    }

    /// [`RulePack::evaluate`] on a context the caller already shares: the rules read it in
    /// place, nothing of it is copied.
    pub fn evaluate_shared(&mut self, ctx: &Arc<Context>) -> Vec<RuleOutcome> {
        self.evaluate_in(Arc::clone(ctx), Scopes::ALL)
    }

    /// [`RulePack::evaluate_shared`] for the rules of `scopes` only.
    ///
    /// A `keep_score` rule's score of this event joins `ctx.patient.scores` for the rules after
    /// it (file-name order), so that a trend rule reads the current score without computing it
    /// again. Given the only handle on the context, the score joins it in place; a context the
    /// caller still shares is copied first.
    pub fn evaluate_in(&mut self, mut ctx: Arc<Context>, scopes: Scopes) -> Vec<RuleOutcome> {
        // The evoking event's type, borrowed from the known types (the context may change
        // while its rules run); a rule evokes on known types only.
        let Some(event_type) = EVENT_TYPES
            .iter()
            .copied()
            .find(|t| *t == ctx.event.event_type)
        else {
            return Vec::new();
        };
        let mut ctx_dyn = to_dynamic(&ctx);
        let RulePack {
            sandbox,
            rules,
            stats,
            suppressor,
            kept,
            ..
        } = self;
        // What an earlier evaluation kept and nobody took is not this event's.
        kept.clear();
        let mut outcomes = Vec::new();
        let mut evoked = rules
            .values_mut()
            .filter(|r| scopes.admits(r.mlm.scope) && r.mlm.evoke.lists(event_type))
            .peekable();
        while let Some(rule) = evoked.next() {
            let before = kept.len();
            outcomes.extend(evaluate_one(
                sandbox, stats, suppressor, kept, rule, &ctx, &ctx_dyn,
            ));
            if kept.len() > before && evoked.peek().is_some() {
                // The rules' handle goes first, so that the context is unshared if the caller
                // handed it over.
                drop(ctx_dyn);
                let next = Arc::make_mut(&mut ctx);
                for k in &kept[before..] {
                    next.patient
                        .scores
                        .entry(k.mlmname.clone())
                        .or_default()
                        .insert(
                            0,
                            crate::context::CtxScore {
                                time: k.time.clone(),
                                score: k.score,
                            },
                        );
                }
                ctx_dyn = to_dynamic(&ctx);
            }
        }
        outcomes
    }

    /// Evaluates the delayed rule `mlmname` (the engine calls it when [`DelayedEvokes::due`]
    /// returns it). `None` if the pack has no such rule (e.g. removed since it was scheduled).
    pub fn evaluate_delayed(&mut self, ctx: &Context, mlmname: &str) -> Option<RuleOutcome> {
        let RulePack {
            sandbox,
            rules,
            stats,
            suppressor,
            kept,
            ..
        } = self;
        let rule = rules.values_mut().find(|r| r.mlm.mlmname == mlmname)?;
        let ctx = Arc::new(ctx.clone());
        let ctx_dyn = to_dynamic(&ctx);
        kept.clear();
        evaluate_one(sandbox, stats, suppressor, kept, rule, &ctx, &ctx_dyn)
    }

    /// Schedules or cancels delayed evokes for an event: an event of a delayed rule's `after`
    /// type schedules it at `admission_time` (or the event time) + hours; a DISCHARGE cancels
    /// everything of the patient. Call it for every ADT event, before [`DelayedEvokes::due`].
    pub fn schedule_delayed(&self, evokes: &mut DelayedEvokes, ctx: &Context) {
        self.schedule_delayed_in(evokes, ctx, Scopes::ALL);
    }

    /// [`RulePack::schedule_delayed`] for the rules of `scopes` only (a DISCHARGE still
    /// cancels everything of the patient).
    pub fn schedule_delayed_in(&self, evokes: &mut DelayedEvokes, ctx: &Context, scopes: Scopes) {
        let patient = &ctx.patient.patient;
        if ctx.event.event_type == "DISCHARGE" {
            evokes.cancel(patient);
            return;
        }
        for r in self.rules.values().filter(|r| scopes.admits(r.mlm.scope)) {
            if let Evoke::Delayed { after, hours } = &r.mlm.evoke {
                if *after != ctx.event.event_type {
                    continue;
                }
                let start = ctx
                    .event
                    .admission_time
                    .as_deref()
                    .and_then(epoch_seconds)
                    .or_else(|| epoch_seconds(&ctx.event.event_timestamp));
                if let Some(start) = start {
                    let due = start + (hours * 3600.0).round() as i64;
                    evokes.schedule(&r.mlm.mlmname, patient, &ctx.event.event_id, due);
                }
            }
        }
    }

    /// Rules with a delayed evoke: (mlmname, after, hours).
    pub fn delayed_rules(&self) -> Vec<DelayedRule> {
        self.rules
            .values()
            .filter_map(|r| match &r.mlm.evoke {
                Evoke::Delayed { after, hours } => Some(DelayedRule {
                    mlmname: r.mlm.mlmname.clone(),
                    after: after.clone(),
                    hours: *hours,
                }),
                Evoke::Events(_) => None,
            })
            .collect()
    }

    /// Metadata of every loaded rule, in evaluation order.
    pub fn rules(&self) -> Vec<&Mlm> {
        self.rules.values().map(|r| &r.mlm).collect()
    }

    /// Counter snapshot, one entry per loaded rule.
    pub fn stats(&self) -> Vec<RuleStats> {
        self.stats.values().cloned().collect()
    }

    /// The scores that `keep_score` rules computed since the last call, in evaluation order.
    /// The engine calls it after each event's evaluation and keeps them with the patient.
    pub fn take_scores(&mut self) -> std::vec::Drain<'_, KeptScore> {
        self.kept.drain(..)
    }

    /// Suppression state, to checkpoint.
    pub fn suppressor(&self) -> &Suppressor {
        &self.suppressor
    }

    /// Mutable suppression state (e.g. to `prune` it at the watermark).
    pub fn suppressor_mut(&mut self) -> &mut Suppressor {
        &mut self.suppressor
    }

    /// Restores suppression state from a checkpoint.
    pub fn set_suppressor(&mut self, s: Suppressor) {
        self.suppressor = s;
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Runs one rule on a context without evoke filtering or suppression (for `cds rules`).
    pub(crate) fn run_file(
        &mut self,
        path: &Path,
        ctx: &Context,
    ) -> Option<Result<(Run, &Mlm), RuleError>> {
        let RulePack { sandbox, rules, .. } = self;
        let rule = rules.get_mut(path)?;
        let ctx_dyn = to_dynamic(&Arc::new(ctx.clone()));
        Some(
            rule.run(sandbox, &ctx_dyn, &ctx.event.event_id, Evidence::Always)
                .map(|run| (run, &rule.mlm)),
        )
    }

    /// The rule loaded from `path`, if it loaded.
    pub(crate) fn mlm_of(&self, path: &Path) -> Option<&Mlm> {
        self.rules.get(path).map(|r| &r.mlm)
    }
}

/// The context as rules see it: a read-only handle on the shared [`Context`] (see
/// [`crate::view`]), made once per event and shared by every rule it evokes.
fn to_dynamic(ctx: &Arc<Context>) -> Dynamic {
    crate::view::rule_context(Arc::clone(ctx))
}

/// Runs one rule on the event's context, counts it, and applies suppression to what fired.
fn evaluate_one(
    sandbox: &Sandbox,
    stats: &mut BTreeMap<String, RuleStats>,
    suppressor: &mut Suppressor,
    kept: &mut Vec<KeptScore>,
    rule: &mut Rule,
    ctx: &Context,
    ctx_dyn: &Dynamic,
) -> Option<RuleOutcome> {
    let started = Instant::now();
    let result = rule.run(sandbox, ctx_dyn, &ctx.event.event_id, Evidence::WhenFired);
    let elapsed = started.elapsed();
    // Looked up before inserting: the name is copied only the first time.
    let s = match stats.get_mut(&rule.mlm.mlmname) {
        Some(s) => s,
        None => stats.entry(rule.mlm.mlmname.clone()).or_default(),
    };
    s.eval_time += elapsed;
    s.evaluations += 1;
    let run = match result {
        Ok(run) => run,
        Err(e) => {
            s.errors += 1;
            return Some(RuleOutcome::Error(e));
        }
    };
    if let Some(score) = run.score {
        kept.push(KeptScore {
            mlmname: rule.mlm.mlmname.clone(),
            score,
            time: ctx.now.as_str().into(),
        });
    }
    if !run.fired {
        return Some(RuleOutcome::NotFired {
            mlmname: rule.mlm.mlmname.clone(),
        });
    }
    s.fires += 1;
    let alert = make_alert(&rule.mlm, ctx, &run, &ctx.event.event_id)?;
    let now = epoch_seconds(&ctx.now)
        .or_else(|| epoch_seconds(&ctx.event.event_timestamp))
        .unwrap_or(0);
    let key = scope_key(&rule.mlm, ctx);
    if suppressor.check_and_record(
        &rule.mlm.mlmname,
        &key,
        alert.severity,
        now,
        rule.mlm.suppress_minutes,
    ) {
        s.suppressed += 1;
        Some(RuleOutcome::Suppressed(Box::new(alert)))
    } else {
        Some(RuleOutcome::Fired(Box::new(alert)))
    }
}
