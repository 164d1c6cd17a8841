//! Rules: the stage that runs the clinical rule pack (the `cds-rules` crate) on every event.
//!
//! It receives the Gold-eligible Silver records of each batch in arrival order, keeps the
//! per-patient context rules need ([`ContextState`]), evaluates every rule evoked by the
//! event's type, schedules and fires delayed evokes from the event-time watermark, reloads
//! changed rule files, and turns fired rules into alert documents for the sink. A rule that
//! fails is logged with file, line and event id and counted; the other rules go on.
//!
//! The stage can be split into [`Share`]s, one per rules thread (`--rules-threads`): every
//! share reads every record, so that each follows every placement (department occupancy) and
//! the same event-time watermark, but it evaluates the patient rules only for the patients it
//! owns (patient key mod the number of shares), and share 0 alone the department rules. Each
//! suppression window and each delayed evoke therefore lives in one share, and the shares
//! together give the alerts of one stage. A checkpoint holds them merged into one stage's
//! state, so a run may continue with another number of threads.

mod context;
mod forecast;
mod reorder;

use crate::model::HospitalId;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cds_rules::{
    AlertScope, DelayedEvokes, ReloadEvent, RuleOutcome, RulePack, RuleStats, Scopes, Suppressor,
};
use chrono::DateTime;
use tracing::{info, warn};

pub use context::{ctx_event, ctx_vitals, ContextSnapshot, ContextState};
pub use reorder::{PartitionId, ReorderState, ReorderWindow, PARTITION_IDLE};

use crate::checkpoint::{self, Checkpointed};
use crate::gold::micros;
use crate::metrics::Metrics;
use crate::model::Document;
use crate::model::{format_time, Network};
use crate::silver::SilverRecord;
use crate::support::codec::CodecError;

/// How often rule files are checked for changes.
pub const RELOAD_INTERVAL: Duration = Duration::from_millis(250);

/// How far the delayed-evoke clock stays behind the newest event time, so that a discharge
/// arriving a little late still cancels a "still admitted after 72 h" alert.
const DELAYED_LATENESS_SECS: i64 = 3600;

/// Why the rule pack could not start.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("no rule loaded from {dir}: {errors}")]
    Load { dir: String, errors: String },
}

/// One Gold-eligible record for the rules, with its patient key.
#[derive(Debug)]
pub struct RuleInput {
    pub patient: u64,
    pub record: Box<SilverRecord>,
    /// It arrived after a later record had gone to the rules ([`ReorderWindow`]): its alerts
    /// say `"late": true`.
    pub late: bool,
    /// This process runs the patient's rules. In a cluster the rules of each process also
    /// read the other processes' patients' records, without running their rules: so every
    /// process follows every placement (department occupancy, for the department rules of the
    /// hospitals it owns) and the same event-time watermark as one process would.
    pub own: bool,
}

impl RuleInput {
    /// A record in order (not late) of this process's patient.
    pub fn new(patient: u64, record: Box<SilverRecord>) -> Self {
        RuleInput {
            patient,
            record,
            late: false,
            own: true,
        }
    }
}

/// Which part of the rules work a [`RulesStage`] does, when the rules run on several threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Share {
    /// This share's number, 0-based; share 0 also runs the department rules.
    pub index: usize,
    /// How many shares the work is split into.
    pub count: usize,
}

/// Which hospitals' department rules a process runs: in a cluster, those of the hospitals whose
/// documents it writes (the ownership of [`crate::cluster`]); alone, every hospital's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hospitals {
    pub process: usize,
    /// Workers per process.
    pub workers: usize,
    pub processes: usize,
}

impl Hospitals {
    /// Every hospital: one process.
    pub const ALL: Hospitals = Hospitals {
        process: 0,
        workers: 1,
        processes: 1,
    };

    fn owns(self, hospital: Option<i64>) -> bool {
        if self.processes <= 1 {
            return true;
        }
        let workers = self.workers.max(1);
        hospital
            .and_then(|h| HospitalId::try_from(h).ok())
            .is_some_and(|h| {
                crate::cluster::hospital_worker(h, self.processes * workers) / workers
                    == self.process
            })
    }
}

impl Share {
    /// All of it: one rules thread.
    pub const WHOLE: Share = Share { index: 0, count: 1 };

    /// The share that owns a patient's rules.
    fn owner(count: usize, patient: u64) -> usize {
        (patient % count.max(1) as u64) as usize
    }

    fn owns(self, patient: u64) -> bool {
        Share::owner(self.count, patient) == self.index
    }

    /// The rules this share runs on an event of `patient` (`own`: this process's patient) in
    /// `hospital`.
    fn scopes(
        self,
        patient: u64,
        own: bool,
        hospital: Option<i64>,
        hospitals: Hospitals,
    ) -> Scopes {
        Scopes {
            patient: own && self.owns(patient),
            department: self.index == 0 && hospitals.owns(hospital),
        }
    }

    /// The share that keeps a suppression window or a delayed evoke of rule `mlmname` for
    /// `patient_key` (the patient's key as rules see it): its patient's owner for a patient
    /// rule, share 0 for a department rule or a rule no longer loaded.
    fn keeps(self, pack: &RulePack, mlmname: &str, patient_key: &str) -> bool {
        let owner = match pack.scope_of(mlmname) {
            Some(AlertScope::Patient) => u64::from_str_radix(patient_key, 16)
                .map_or(0, |patient| Share::owner(self.count, patient)),
            _ => 0,
        };
        owner == self.index
    }
}

/// What a share other than share 0 adds to a checkpoint of the stage: its suppression windows
/// and pending delayed evokes (the patient contexts and the watermark are the same in every
/// share).
#[derive(Debug, Clone)]
pub struct SharePart {
    suppressor: Suppressor,
    delayed: DelayedEvokes,
    /// The kept scores of the share's own patients (only the owner runs their rules).
    scores: HashMap<u64, Vec<context::KeptScores>>,
}

/// What a checkpoint keeps of the rules stage (borrowed when written, owned when read).
#[derive(serde::Serialize, serde::Deserialize)]
pub struct RulesSnapshot<'a> {
    context: ContextSnapshot<'a>,
    suppressor: std::borrow::Cow<'a, cds_rules::Suppressor>,
    delayed: std::borrow::Cow<'a, DelayedEvokes>,
    watermark: i64,
}

/// Loads the pack in `dir`: files that do not load are reported and left out; an error only
/// when no rule at all loads.
fn load_pack(dir: &Path) -> Result<RulePack, RulesError> {
    match RulePack::load(dir) {
        Ok(pack) => Ok(pack),
        Err(e) => {
            for err in &e.errors {
                warn!(error = %err, "rule file not loaded");
            }
            match e.partial {
                Some(pack) if !pack.rules().is_empty() => Ok(*pack),
                _ => Err(RulesError::Load {
                    dir: dir.display().to_string(),
                    errors: e.to_string(),
                }),
            }
        }
    }
}

/// The rules stage of a run.
pub struct RulesStage {
    pack: RulePack,
    share: Share,
    hospitals: Hospitals,
    state: ContextState,
    delayed: DelayedEvokes,
    watermark: i64,
    last_reload: Instant,
    reported: HashMap<String, RuleStats>,
    metrics: std::sync::Arc<Metrics>,
    /// Turns repeated rule errors into the `rule_errors` operational alert, when watched.
    error_watch: Option<crate::ops::RuleErrorWatch>,
    /// Occupancy forecast documents for the sink, the newest of each department (share 0
    /// writes them, for the hospitals whose documents this process writes).
    forecasts: std::collections::BTreeMap<String, Document>,
}

impl std::fmt::Debug for RulesStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RulesStage")
            .field("dir", &self.pack.dir())
            .finish()
    }
}

/// Everything the stage needs to continue after a restart: patient contexts, suppression
/// windows, pending delayed evokes, the event-time watermark.
impl RulesStage {
    /// Restores the stage from the checkpoints of every process of another cluster layout,
    /// taken at one position of the stream (see [`crate::checkpoint`], rescaling): what every
    /// process follows alike from the first, and of what each process kept alone (suppression
    /// windows, delayed evokes, kept scores) what this process now owns, by `owns` for a
    /// patient and by `hospitals` for a department.
    pub(crate) fn restore_rescaled(
        &mut self,
        snapshots: Vec<RulesSnapshot<'static>>,
        owns: impl Fn(u64) -> bool,
        hospitals: Hospitals,
    ) {
        let mut suppressor = Suppressor::new();
        let mut delayed = DelayedEvokes::new();
        let mut watermark = i64::MIN;
        let mut contexts = Vec::with_capacity(snapshots.len());
        for snapshot in snapshots {
            suppressor.merge(&snapshot.suppressor);
            delayed.merge(&snapshot.delayed);
            watermark = watermark.max(snapshot.watermark);
            contexts.push(snapshot.context);
        }
        let Some(context) = ContextSnapshot::rescaled(contexts, &owns) else {
            return;
        };
        let pack = &self.pack;
        // A rule no longer loaded: the first process keeps what it left, as share 0 does.
        let first = hospitals.process == 0;
        let patient = |key: &str| u64::from_str_radix(key, 16).ok();
        suppressor.retain(|mlmname, key| match pack.scope_of(mlmname) {
            Some(AlertScope::Patient) => patient(key).is_some_and(&owns),
            Some(AlertScope::Department) => key
                .split_once(':')
                .and_then(|(h, _)| h.parse::<i64>().ok())
                .is_some_and(|h| hospitals.owns(Some(h))),
            None => first,
        });
        delayed.retain(|due| match pack.scope_of(&due.mlmname) {
            Some(AlertScope::Patient) => patient(&due.patient_key).is_some_and(&owns),
            Some(AlertScope::Department) => patient(&due.patient_key)
                .and_then(|p| context.hospital_of(p))
                .map_or(first, |h| hospitals.owns(Some(h))),
            None => first,
        });
        self.restore(RulesSnapshot {
            context,
            suppressor: std::borrow::Cow::Owned(suppressor),
            delayed: std::borrow::Cow::Owned(delayed),
            watermark,
        });
    }
}

impl Checkpointed for RulesStage {
    type State<'a> = RulesSnapshot<'a>;

    fn snapshot(&self) -> RulesSnapshot<'_> {
        RulesSnapshot {
            context: self.state.snapshot(),
            suppressor: std::borrow::Cow::Borrowed(self.pack.suppressor()),
            delayed: std::borrow::Cow::Borrowed(&self.delayed),
            watermark: self.watermark,
        }
    }

    fn restore(&mut self, state: RulesSnapshot<'static>) {
        self.state.restore(state.context);
        self.pack.set_suppressor(state.suppressor.into_owned());
        self.delayed = state.delayed.into_owned();
        self.watermark = state.watermark;
    }
}

impl RulesStage {
    /// Loads the pack in `dir`. Files that do not load are reported and left out; the stage
    /// fails only when no rule at all loads.
    pub fn load(
        dir: &Path,
        network: Network,
        metrics: std::sync::Arc<Metrics>,
    ) -> Result<Self, RulesError> {
        let pack = load_pack(dir)?;
        let names: Vec<&str> = pack.rules().iter().map(|m| m.mlmname.as_str()).collect();
        info!(rules = names.len(), names = %names.join(","), "rule pack loaded");
        Ok(RulesStage {
            pack,
            share: Share::WHOLE,
            hospitals: Hospitals::ALL,
            state: ContextState::new(network),
            delayed: DelayedEvokes::new(),
            watermark: i64::MIN,
            last_reload: Instant::now(),
            reported: HashMap::new(),
            metrics,
            error_watch: None,
            forecasts: std::collections::BTreeMap::new(),
        })
    }

    /// Splits the stage (as loaded or restored) into `count` shares, one per rules thread
    /// (see the module's documentation). Each share compiles the pack on its own: rhai's
    /// engine and scopes are not shared between threads.
    pub fn into_shares(mut self, count: usize) -> Result<Vec<RulesStage>, RulesError> {
        let count = count.max(1);
        let mut shares = Vec::with_capacity(count);
        for index in 1..count {
            let mut share = RulesStage {
                pack: load_pack(self.pack.dir())?,
                share: Share { index, count },
                hospitals: self.hospitals,
                state: self.state.clone(),
                delayed: self.delayed.clone(),
                watermark: self.watermark,
                last_reload: Instant::now(),
                reported: HashMap::new(),
                metrics: self.metrics.clone(),
                error_watch: None,
                forecasts: std::collections::BTreeMap::new(),
            };
            let mut suppressor = self.pack.suppressor().clone();
            share.keep_own(&mut suppressor);
            share.pack.set_suppressor(suppressor);
            share
                .state
                .forget_readings(|patient| share.share.owns(patient));
            shares.push(share);
        }
        self.share = Share { index: 0, count };
        // Share 0 keeps every patient's readings (its department rules read whole contexts),
        // but only its own patients' kept scores: the owners keep the others'.
        let first = self.share;
        self.state.forget_scores(|patient| first.owns(patient));
        let mut suppressor = self.pack.suppressor().clone();
        self.keep_own(&mut suppressor);
        self.pack.set_suppressor(suppressor);
        shares.insert(0, self);
        Ok(shares)
    }

    /// Drops what another share keeps: suppression windows and delayed evokes.
    fn keep_own(&mut self, suppressor: &mut Suppressor) {
        let (share, pack) = (self.share, &self.pack);
        suppressor.retain(|mlmname, key| share.keeps(pack, mlmname, key));
        self.delayed
            .retain(|due| share.keeps(pack, &due.mlmname, &due.patient_key));
    }

    /// This share's part of a checkpoint (a copy, sent to share 0).
    pub fn part(&self) -> SharePart {
        let share = self.share;
        SharePart {
            suppressor: self.pack.suppressor().clone(),
            delayed: self.delayed.clone(),
            scores: self.state.scores_of(|patient| share.owns(patient)),
        }
    }

    /// The whole stage's checkpoint state, encoded by share 0 with the other shares' parts.
    pub fn encode_with(&self, parts: &[SharePart]) -> Result<Vec<u8>, CodecError> {
        if parts.is_empty() {
            return checkpoint::encode(self);
        }
        let mut snapshot = self.snapshot();
        let mut suppressor = self.pack.suppressor().clone();
        let mut delayed = self.delayed.clone();
        for part in parts {
            suppressor.merge(&part.suppressor);
            delayed.merge(&part.delayed);
        }
        snapshot.suppressor = std::borrow::Cow::Owned(suppressor);
        snapshot.delayed = std::borrow::Cow::Owned(delayed);
        snapshot.context.scores = std::borrow::Cow::Owned(
            self.state
                .scores_with(parts.iter().map(|part| part.scores.clone())),
        );
        crate::support::codec::encode(&snapshot)
    }

    /// Takes back another share's suppression windows and delayed evokes, so that share 0
    /// holds the whole stage's state again (for the final checkpoint).
    pub fn absorb(&mut self, other: RulesStage) {
        self.pack.suppressor_mut().merge(other.pack.suppressor());
        self.delayed.merge(&other.delayed);
        let theirs = other.share;
        self.state
            .adopt_scores(other.state.scores_of(|patient| theirs.owns(patient)));
        self.share = Share::WHOLE;
    }

    /// The names of the loaded rules, in evaluation order.
    pub fn rules(&self) -> Vec<String> {
        self.pack
            .rules()
            .iter()
            .map(|m| m.mlmname.clone())
            .collect()
    }

    /// Which share this is.
    pub fn share(&self) -> Share {
        self.share
    }

    /// Runs the department rules of `hospitals` only (a process of a cluster).
    pub fn for_hospitals(mut self, hospitals: Hospitals) -> Self {
        self.hospitals = hospitals;
        self
    }

    /// No occupancy forecasts: a process of a cluster that reads only its own partitions
    /// (`--partitions-by-patient`) sees only some patients of each department, and a forecast
    /// of part of a department would be wrong, not partial.
    pub fn without_forecasts(mut self) -> Self {
        self.state.disable_forecasts();
        self
    }

    /// Raises and clears the `rule_errors` operational alert from this stage's errors.
    pub(crate) fn watch_errors(&mut self, watch: crate::ops::RuleErrorWatch) {
        self.error_watch = Some(watch);
    }

    /// Reads bed capacities and department kinds from the network in force (the departments
    /// watcher puts a changed file in force).
    pub(crate) fn follow_network(&mut self, live: crate::model::LiveNetwork) {
        self.state.follow_network(live);
    }

    /// The rule directory.
    pub fn dir(&self) -> PathBuf {
        self.pack.dir().to_path_buf()
    }

    /// Evaluates a batch in its order (the reorder window's: event time); returns the alert
    /// documents.
    pub fn process(&mut self, batch: &[RuleInput]) -> Vec<Document> {
        self.state.refresh_network();
        let mut alerts = Vec::new();
        for RuleInput {
            patient,
            record,
            late,
            own,
        } in batch
        {
            let hospital = record.event.hospital_id;
            let scopes = self.share.scopes(*patient, *own, hospital, self.hospitals);
            let adt = scopes.any() && record.kind.is_some_and(|k| k.is_adt());
            let evoked = record
                .kind
                .is_some_and(|k| self.pack.evokes_in(k.as_str(), scopes));
            // Share 0 keeps every patient's readings: its department rules see whole contexts.
            let readings = scopes.patient || self.share.index == 0;
            // The context is built once, only for an event that needs it, and shared by the
            // rules it evokes.
            if let Some(mut ctx) = self
                .state
                .observe(*patient, record, adt || evoked, readings)
            {
                // The department's forecast, on the admissions, transfers and discharges this
                // thread runs rules for (on readings no rule needs it).
                if adt {
                    let at = micros(&record.event.event_timestamp);
                    self.state.add_forecast(&mut ctx, at);
                }
                let ctx = Arc::new(ctx);
                if adt {
                    self.pack
                        .schedule_delayed_in(&mut self.delayed, &ctx, scopes);
                }
                if evoked {
                    // Handed over: a score kept by one rule joins the context in place.
                    for outcome in self.pack.evaluate_in(ctx, scopes) {
                        self.handle(outcome, *late, &mut alerts);
                    }
                    self.state.keep_scores(
                        *patient,
                        micros(&record.event.event_timestamp),
                        self.pack.take_scores(),
                    );
                }
            }
            let at = micros(&record.event.event_timestamp);
            // A late record's forecast is made at the newest event time, not back in the past.
            let now = at.max(self.watermark.saturating_mul(1_000_000));
            for ward in self.state.take_touched() {
                self.forecast_document(&ward, now);
            }
            // Delayed evokes fire as soon as the record that moves the watermark past them is
            // processed: their context then depends only on the order of records, not on how
            // the source happened to batch them (a restart batches differently).
            let watermark = at / 1_000_000;
            if watermark > self.watermark {
                // Every department's forecast moves on with the hours, not only with its events.
                let new_hour = self.watermark != i64::MIN
                    && watermark.div_euclid(3600) > self.watermark.div_euclid(3600);
                self.watermark = watermark;
                if new_hour {
                    for ward in self.state.forecast_wards() {
                        self.forecast_document(&ward, at);
                    }
                }
                self.fire_delayed(&mut alerts);
            }
        }
        self.report_stats();
        alerts
    }

    /// Renders a department's forecast at event time `at` (µs) into the documents for the sink,
    /// in share 0 and for a hospital whose documents this process writes.
    fn forecast_document(&mut self, ward: &(i64, String), at: i64) {
        if self.share.index != 0 || !self.hospitals.owns(Some(ward.0)) {
            return;
        }
        let Some((horizons, beds, present)) = self.state.forecast(ward, at) else {
            return;
        };
        let id = format!("forecast:{}:{}", ward.0, ward.1);
        let as_of = DateTime::from_timestamp_micros(at)
            .map(|t| format_time(&t.fixed_offset()))
            .unwrap_or_default();
        let body = serde_json::json!({
            "id": id,
            "type": "forecast",
            "hospital_id": ward.0,
            "department": ward.1,
            "as_of": as_of,
            "occupied": present,
            "bed_capacity": beds,
            "horizons": horizons,
        });
        self.forecasts.insert(
            id.clone(),
            Document {
                id,
                hospital_id: ward.0,
                body,
            },
        );
    }

    /// The forecast documents rendered since the last call (the newest of each department).
    pub fn take_forecasts(&mut self) -> Vec<Document> {
        std::mem::take(&mut self.forecasts).into_values().collect()
    }

    /// Fires the delayed evokes that came due, for patients still admitted.
    fn fire_delayed(&mut self, alerts: &mut Vec<Document>) {
        if self.watermark == i64::MIN {
            return;
        }
        for due in self.delayed.due(self.watermark - DELAYED_LATENESS_SECS) {
            let Ok(patient) = u64::from_str_radix(&due.patient_key, 16) else {
                continue;
            };
            if !self.state.admitted(patient) {
                continue;
            }
            let now = DateTime::from_timestamp(due.due_time, 0)
                .map(|t| format_time(&t.fixed_offset()))
                .unwrap_or_default();
            let mut ctx = self.state.delayed(patient, &due.admission_event_id, &now);
            self.state
                .add_forecast(&mut ctx, due.due_time.saturating_mul(1_000_000));
            if let Some(outcome) = self.pack.evaluate_delayed(&ctx, &due.mlmname) {
                self.handle(outcome, false, alerts);
            }
            self.state.keep_scores(
                patient,
                due.due_time.saturating_mul(1_000_000),
                self.pack.take_scores(),
            );
        }
    }

    /// Turns a fired rule into its alert document (`late`: the record that evoked it was
    /// late for the reorder window, and the document says so).
    fn handle(&mut self, outcome: RuleOutcome, late: bool, alerts: &mut Vec<Document>) {
        match outcome {
            RuleOutcome::Fired(alert) => {
                let hospital_id = alert.hospital_id.unwrap_or(0);
                match serde_json::to_value(&*alert) {
                    Ok(mut body) => {
                        if let (true, Some(fields)) = (late, body.as_object_mut()) {
                            fields.insert("late".into(), serde_json::Value::Bool(true));
                        }
                        alerts.push(Document {
                            id: alert.id.clone(),
                            hospital_id,
                            body,
                        });
                    }
                    Err(e) => warn!(rule = %alert.mlmname, error = %e, "alert not serialisable"),
                }
            }
            RuleOutcome::Error(e) => {
                // The rule's own message is left out: a rule may build it from the event (a
                // patient's values). `cds rules test` shows it to the rule's author.
                warn!(rule = %e.mlmname, location = %e.location, event_id = %e.event_id, kind = ?e.kind, "rule failed");
            }
            RuleOutcome::NotFired { .. } | RuleOutcome::Suppressed(_) => {}
        }
    }

    /// Reloads changed rule files when the interval has passed.
    pub fn maybe_reload(&mut self) {
        // Called at least every reload interval, with or without input: the quiet window of
        // the rule error alert is measured here.
        if let Some(watch) = self.error_watch.as_mut() {
            watch.tick();
        }
        if self.last_reload.elapsed() < RELOAD_INTERVAL {
            return;
        }
        self.last_reload = Instant::now();
        for event in self.pack.reload_changed() {
            match event {
                ReloadEvent::Added {
                    file,
                    mlmname,
                    version,
                } => {
                    info!(file = %file.display(), rule = %mlmname, version = %version, "rule added")
                }
                ReloadEvent::Reloaded {
                    file,
                    mlmname,
                    version,
                } => {
                    info!(file = %file.display(), rule = %mlmname, version = %version, "rule reloaded")
                }
                ReloadEvent::Removed { file, mlmname } => {
                    info!(file = %file.display(), rule = %mlmname, "rule removed")
                }
                ReloadEvent::Failed { file, errors } => {
                    for e in errors {
                        warn!(file = %file.display(), error = %e, "rule file failed to reload; the previous version keeps running");
                    }
                }
            }
        }
    }

    /// Adds what the counters of each rule grew by since the last report.
    fn report_stats(&mut self) {
        let m = &self.metrics;
        let mut errors = 0;
        for s in self.pack.stats() {
            let before = self.reported.get(&s.mlmname);
            let grow = |now: u64, then: Option<u64>| now.saturating_sub(then.unwrap_or(0));
            let labels = [s.mlmname.as_str()];
            m.rules
                .rule_evaluations
                .with_label_values(&labels)
                .inc_by(grow(s.evaluations, before.map(|b| b.evaluations)));
            m.rules
                .rule_fires
                .with_label_values(&labels)
                .inc_by(grow(s.fires, before.map(|b| b.fires)));
            m.rules
                .rule_suppressed
                .with_label_values(&labels)
                .inc_by(grow(s.suppressed, before.map(|b| b.suppressed)));
            let failed = grow(s.errors, before.map(|b| b.errors));
            errors += failed;
            m.rules
                .rule_errors
                .with_label_values(&labels)
                .inc_by(failed);
            let spent = s
                .eval_time
                .saturating_sub(before.map_or(Duration::ZERO, |b| b.eval_time));
            m.rules
                .rule_eval_seconds
                .with_label_values(&labels)
                .inc_by(spent.as_secs_f64());
            self.reported.insert(s.mlmname.clone(), s);
        }
        if let Some(watch) = self.error_watch.as_mut() {
            watch.record(errors);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{parse_time, Event, Pseudonymiser};
    use crate::silver::{Outcome, Silver};
    use crate::source::simulator::{write_jsonl, SimulatorConfig};
    use serde_json::Value;
    use std::collections::BTreeMap;

    /// In a cluster of 2 processes × 2 workers, hospital h's documents are written by worker
    /// h mod 4, in process (h mod 4) / 2; its department rules run there, on share 0, and a
    /// patient's rules only where the patient is this process's.
    #[test]
    fn department_rules_run_where_the_hospital_is_and_patient_rules_where_the_patient_is() {
        let second = Hospitals {
            process: 1,
            workers: 2,
            processes: 2,
        };
        let owned: Vec<i64> = (0..8).filter(|h| second.owns(Some(*h))).collect();
        assert_eq!(owned, [2, 3, 6, 7]);
        assert!(!second.owns(None) && !second.owns(Some(-1)));
        assert!(Hospitals::ALL.owns(Some(5)) && Hospitals::ALL.owns(None));
        let share = Share { index: 0, count: 2 };
        let scopes = share.scopes(4, false, Some(2), second);
        assert!(!scopes.patient && scopes.department);
        let scopes = share.scopes(4, true, Some(1), second);
        assert!(scopes.patient && !scopes.department);
        let other = Share { index: 1, count: 2 };
        assert!(!other.scopes(4, true, Some(2), second).department);
    }

    fn pack_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../cds-rules")
    }

    /// A simulated stream's records as the ingest hands them to the rules (quarantined and
    /// cancelling records left out), with their patient keys.
    fn records(events: u64) -> Vec<RuleInput> {
        let network = Network::default_network();
        let config = SimulatorConfig {
            seed: 5,
            max_events: Some(events),
            rate: None,
            dirty_rate: 0.0,
            start: parse_time("2026-03-02T00:00:00Z").expect("time"),
            surge: None,
            daytime_discharges: false,
        };
        let mut jsonl = Vec::new();
        write_jsonl(config, &network, &mut jsonl).expect("simulate");
        let pseudonyms = Pseudonymiser::new(b"test");
        let mut silver = Silver::new(network);
        jsonl
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .filter_map(|l| match silver.clean(Event::from_json(l).ok()?) {
                Outcome::Record(r)
                    if !r.quarantined() && !r.kind.is_some_and(|k| k.is_cancel()) =>
                {
                    Some(RuleInput::new(
                        pseudonyms.key(r.event.patient_id.as_deref()?),
                        r,
                    ))
                }
                _ => None,
            })
            .collect()
    }

    fn stage() -> RulesStage {
        let network = Network::default_network();
        RulesStage::load(&pack_dir(), network, Arc::new(Metrics::new())).expect("the pack loads")
    }

    fn ids(documents: &[Document]) -> Vec<String> {
        let mut ids: Vec<String> = documents.iter().map(|d| d.id.clone()).collect();
        ids.sort();
        ids
    }

    #[test]
    fn three_shares_give_the_alerts_and_the_state_of_one_stage() {
        let records = records(20_000);
        let (first, second) = records.split_at(records.len() / 2);
        let mut whole = stage();
        let mut want = whole.process(first);
        let mut shares = stage().into_shares(3).expect("shares");
        let mut got: Vec<Document> = shares.iter_mut().flat_map(|s| s.process(first)).collect();
        assert_eq!(ids(&got), ids(&want));

        // A checkpoint of the shares, restored into a stage split another way, goes on alike.
        let parts: Vec<SharePart> = shares[1..].iter().map(RulesStage::part).collect();
        let merged = shares[0].encode_with(&parts).expect("encode");
        let mut restored = stage();
        checkpoint::decode_into(&mut restored, &merged).expect("decode");
        assert!(windows_and_dues(&restored) == windows_and_dues(&whole));
        let mut shares = restored.into_shares(2).expect("shares");
        let after_restore = whole.process(second);
        let trends_after_restore = after_restore
            .iter()
            .filter(|d| d.body["mlmname"] == "news2_trend")
            .count();
        want.extend(after_restore);
        got.extend(shares.iter_mut().flat_map(|s| s.process(second)));
        assert_eq!(ids(&got), ids(&want));
        assert!(
            want.iter().any(|d| d.body["mlmname"] == "capacity")
                && want.iter().any(|d| d.body["mlmname"] == "long_stay")
                && want.iter().any(|d| d.body["mlmname"] == "news2"),
            "department, delayed and patient rules all fired"
        );
        assert!(
            trends_after_restore > 0,
            "trend rules fired after the restore, on scores kept before it"
        );

        let mut back = shares.remove(0);
        for other in shares {
            back.absorb(other);
        }
        assert!(windows_and_dues(&back) == windows_and_dues(&whole));
        assert!(
            back.state.kept_scores() == whole.state.kept_scores(),
            "every patient's kept scores are back in one stage"
        );
        assert!(!whole.state.kept_scores().is_empty());
        assert!(!whole.delayed.is_empty() && !whole.pack.suppressor().is_empty());
    }

    /// A Silver record of one JSON event, as the ingest hands it to the rules.
    fn input(json: &str) -> RuleInput {
        let mut silver = Silver::new(Network::default_network());
        let Outcome::Record(r) = silver.clean(Event::from_json(json.as_bytes()).expect("event"))
        else {
            panic!("not a record: {json}");
        };
        let patient = Pseudonymiser::new(b"test").key(r.event.patient_id.as_deref().expect("id"));
        RuleInput::new(patient, r)
    }

    /// The alerts of `rule` of a stage that processes `events` in two batches, with a checkpoint
    /// and a restore into a new stage between them when `restart`.
    fn alerts_of(rule: &str, events: &[String], split: usize, restart: bool) -> Vec<Value> {
        let inputs: Vec<RuleInput> = events.iter().map(|e| input(e)).collect();
        let (first, second) = inputs.split_at(split);
        let mut stage = stage();
        let mut alerts = stage.process(first);
        if restart {
            let bytes = checkpoint::encode(&stage).expect("encode");
            stage = self::stage();
            checkpoint::decode_into(&mut stage, &bytes).expect("decode");
        }
        alerts.extend(stage.process(second));
        alerts
            .into_iter()
            .filter(|d| d.body["mlmname"] == rule)
            .map(|d| d.body)
            .collect()
    }

    fn adt(id: &str, kind: &str, time: &str, extra: &str) -> String {
        format!(
            r#"{{"event_id":"{id}","event_type":"{kind}","event_timestamp":"{time}","patient_id":"P-LACE","hospital_id":1,"department":"Oncology","gender":"F","age":71{extra}}}"#
        )
    }

    /// LACE at discharge reads the patient's earlier admissions and diagnoses, which the stage
    /// keeps from the events (and through a checkpoint): two emergency stays in the months
    /// before, heart failure and COPD on them, breast cancer on this one, eight days.
    #[test]
    fn lace_reads_the_admissions_and_diagnoses_the_stage_kept() {
        let stay = |n: u32, admitted: &str, discharged: &str, priority: &str, dx: &str| {
            let fields = format!(
                r#","admission_time":"{admitted}","admission_priority":"{priority}","diagnosis_code":"{dx}""#
            );
            [
                adt(&format!("A{n}"), "ADMISSION", admitted, &fields),
                adt(
                    &format!("D{n}"),
                    "DISCHARGE",
                    discharged,
                    &format!(r#"{fields},"discharge_time":"{discharged}""#),
                ),
            ]
        };
        let mut events = Vec::new();
        events.extend(stay(
            1,
            "2026-01-05T08:00:00Z",
            "2026-01-08T08:00:00Z",
            "Emergency",
            "I50.9",
        ));
        events.extend(stay(
            2,
            "2026-02-10T08:00:00Z",
            "2026-02-12T08:00:00Z",
            "Emergency",
            "J44.1",
        ));
        events.extend(stay(
            3,
            "2026-03-01T08:00:00Z",
            "2026-03-09T10:00:00Z",
            "Emergency",
            "C50.9",
        ));
        for restart in [false, true] {
            let lace = alerts_of("lace", &events, 4, restart);
            assert_eq!(
                lace.len(),
                1,
                "one high-risk discharge (restart: {restart})"
            );
            let data = &lace[0]["evidence"];
            assert_eq!(data["score"], 15, "L 5 + A 3 + C 5 + E 2: {data}");
            assert_eq!(data["charlson_index"], 4);
            assert_eq!(data["emergency_visits_6_months"], 2);
            assert_eq!(lace[0]["event_id"], "D3");
        }
    }

    /// NEWS2 scores kept on earlier readings come back to the trend rule, through a checkpoint
    /// too: 0 at 10:00, 3 at 11:00 is a rise of 3 within 6 hours.
    #[test]
    fn the_trend_rule_reads_the_scores_news2_kept() {
        let vitals = |id: &str, time: &str, rr: u32, hr: u32| {
            adt(
                id,
                "VITALS",
                time,
                &format!(
                    r#","vitals":{{"heart_rate":{hr},"bp_systolic":120,"temperature_c":37.0,"oxygen_saturation":97,"respiratory_rate":{rr},"consciousness":"A","supplemental_o2":false}}"#
                ),
            )
        };
        let events = vec![
            adt(
                "A1",
                "ADMISSION",
                "2026-03-01T08:00:00Z",
                r#","admission_time":"2026-03-01T08:00:00Z""#,
            ),
            vitals("V1", "2026-03-01T10:00:00Z", 16, 72),
            vitals("V2", "2026-03-01T11:00:00Z", 22, 95),
        ];
        for restart in [false, true] {
            let trend = alerts_of("news2_trend", &events, 2, restart);
            assert_eq!(trend.len(), 1, "restart: {restart}");
            assert_eq!(trend[0]["evidence"]["rise"], 3.0);
            assert_eq!(trend[0]["event_id"], "V2");
        }
        assert!(alerts_of("news2_trend", &events[..2], 2, false).is_empty());
    }

    /// The newest forecast document of each department after processing `records` in batches
    /// of 500, with a checkpoint and a restore into a new stage (split into `threads` shares)
    /// after the first half when `restart`.
    fn forecasts(records: &[RuleInput], restart: Option<usize>) -> BTreeMap<String, Value> {
        let mut newest = BTreeMap::new();
        let mut keep = |docs: Vec<Document>| {
            for d in docs {
                newest.insert(d.id, d.body);
            }
        };
        let (first, second) = records.split_at(records.len() / 2);
        let mut whole = stage();
        for batch in first.chunks(500) {
            whole.process(batch);
            keep(whole.take_forecasts());
        }
        let mut shares = match restart {
            None => vec![whole],
            Some(threads) => {
                let bytes = checkpoint::encode(&whole).expect("encode");
                let mut restored = stage();
                checkpoint::decode_into(&mut restored, &bytes).expect("decode");
                restored.into_shares(threads).expect("shares")
            }
        };
        for batch in second.chunks(500) {
            for share in &mut shares {
                share.process(batch);
                keep(share.take_forecasts());
            }
        }
        newest
    }

    /// Forecasts are written per department, are coherent, and a restart from a checkpoint
    /// (onto another number of rules threads too) gives the forecasts of an uninterrupted run.
    #[test]
    fn the_forecast_after_a_restart_equals_the_uninterrupted_one() {
        // About a day: a department is forecast once it has 30 completed stays of its own, which
        // every hospital's emergency department has by then.
        let records = records(20_000);
        let want = forecasts(&records, None);
        assert!(want.len() >= 7, "departments forecast: {}", want.len());
        for (id, doc) in &want {
            assert!(id.starts_with("forecast:"), "{id}");
            let horizons = doc["horizons"].as_array().expect("horizons");
            assert_eq!(horizons.len(), 3);
            for h in horizons {
                let (p10, e, p90) = (h["p10"].as_f64(), h["expected"].as_f64(), h["p90"].as_f64());
                assert!(p10 <= e && e <= p90, "{id}: {h}");
                let over = h["p_over_capacity"].as_f64().unwrap_or(-1.0);
                assert!((0.0..=1.0).contains(&over), "{id}: {h}");
            }
        }
        assert_eq!(forecasts(&records, Some(1)), want, "restart");
        assert_eq!(
            forecasts(&records, Some(3)),
            want,
            "restart on three threads"
        );
    }

    /// The suppression windows and the delayed evokes of a stage, in a comparable form.
    fn windows_and_dues(stage: &RulesStage) -> (Suppressor, Vec<cds_rules::Due>) {
        let dues = stage.delayed.clone().due(i64::MAX);
        (stage.pack.suppressor().clone(), dues)
    }
}
