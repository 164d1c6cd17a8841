//! Rules runtime: Arden-style medical logic modules (MLMs) written in rhai.
//!
//! # Layout
//!
//! - `context`  — [`Context`], the `ctx` a rule sees; the engine fills it, `cds rules eval`
//!   reads it from JSON (one type, so both see the same shape).
//! - `mlm`      — the `MLM` map of a rule file (maintenance, library, knowledge) and its
//!   validation on load ([`Mlm`], [`Evoke`], [`AlertScope`]).
//! - `sandbox`  — the rhai engine: limits, CPU-time budget, `import` restricted to the
//!   pack's `lib/`, time helpers for rule authors ([`Limits`]).
//! - `view`     — `ctx` in rhai: read-only typed handles on one shared [`Context`].
//! - `rule`     — one compiled MLM and the calls into `data`, `logic`, `action`.
//! - `pack`     — [`RulePack`]: load a directory, evaluate per event, hot reload, stats.
//! - `alert`    — the [`Alert`] document and its CDS Hooks [`Card`].
//! - `suppress` — [`Suppressor`], event-time alert suppression (checkpointed by the engine).
//! - `delayed`  — [`DelayedEvokes`], watermark-driven "N hours after ADMISSION" evokes.
//! - `error`    — typed errors ([`LoadError`], [`LoadErrors`], [`RuleError`]).
//! - [`cli`]    — `cds rules test | check | eval`, writing to any `Write`.
//!
//! The engine owns one [`RulePack`] per rules thread (each evaluating the rules of the
//! [`Scopes`] it owns for an event), calls [`RulePack::evaluate`] for every Silver event, drives [`DelayedEvokes`] with its event-time watermark and polls
//! [`RulePack::reload_changed`]. A failing rule yields [`RuleOutcome::Error`]; it never panics or
//! stops the other rules.

mod alert;
pub mod cli;
mod context;
mod delayed;
mod error;
mod mlm;
mod pack;
mod rule;
mod sandbox;
mod suppress;
mod view;

pub use alert::{Alert, Card, CardSource, Severity};
pub use context::{
    Context, CtxAdmission, CtxDepartment, CtxDiagnosis, CtxEvent, CtxHorizon, CtxPatient,
    CtxReading, CtxScore, CtxVitals,
};
pub use delayed::{DelayedEvokes, Due};
pub use error::{LoadError, LoadErrors, Location, RuleError, RuleErrorKind};
pub use mlm::{AlertScope, Citation, Evoke, Mlm, EVENT_TYPES};
pub use pack::{DelayedRule, KeptScore, ReloadEvent, RuleOutcome, RulePack, RuleStats, Scopes};
/// The shared string type of the context's repeated texts (see [`Context`]).
pub use rhai::ImmutableString;
pub use sandbox::Limits;
pub use suppress::Suppressor;

/// Epoch seconds of an RFC 3339 time (what the sandbox's `parse_time` returns), for the
/// engine when it compares watermarks with [`Due::due_time`].
pub fn epoch_seconds(rfc3339: &str) -> Option<i64> {
    sandbox::epoch_seconds(rfc3339)
}
