//! `cds`: a real-time clinical decision support stream processor.
//!
//! Hospitals stream admission, discharge, transfer and vitals events; `cds` cleans them and
//! keeps KPIs live with differential dataflow.
//!
//! # Layout
//!
//! One module per stage, in data-flow order, so that one event can be followed by opening them
//! in turn:
//!
//! - [`model`]: the event model, the canonical vocabulary, the hospital network, pseudonyms,
//!   dead letters and the [`model::Document`] every output carries.
//! - [`source`]: where payloads come from (the simulator, files, Kafka, the HL7 v2 MLLP
//!   listener) behind one trait, and the one `--source` names ([`source::SourceConfig`]).
//! - [`decode`]: payloads to events (event JSON, FHIR R4, HL7 v2, EHR CSV), and dead letters for
//!   what is not one.
//! - [`silver`]: data-quality rules that flag and repair; duplicates; quarantine.
//! - [`gold`]: facts, the differential dataflow of the KPIs (one operator per file), and the KPI
//!   documents.
//! - [`rules`]: the stage that runs the clinical rule pack and turns fired rules into alerts.
//! - [`sink`]: where documents go: the embedded SQLite store or Azure Cosmos DB, behind one trait,
//!   and the one `--sink` names ([`sink::SinkConfig`]).
//! - [`dims`]: the SCD type 2 dimensions (patients, departments) for the store and the lake, and
//!   the departments-file watcher.
//! - [`lake`]: the lake: Bronze/Silver/Gold Delta tables, the dead-letter store and the
//!   quarantined Silver records.
//! - [`checkpoint`]: what each stateful stage gives a checkpoint ([`checkpoint::Checkpointed`]),
//!   the checkpoint files, when checkpoints are taken and written, and restoring a run from one.
//! - [`pipeline`]: the job that wires the stages with bounded channels and threads: the
//!   ingest loop, the timely workers, the rules thread and the sink thread, one file each.
//! - `cluster`: who owns what across the timely workers (patients, hospitals), one rule each.
//! - [`metrics`]: the Prometheus registry of a run, one struct per stage.
//! - `ops`: operational alerts (sink retries exhausted, source unreachable, checkpoint failed,
//!   rule errors): metrics, log lines and a Teams/Slack webhook, one notice per outage.
//! - [`http`]: the KPI and alert API, the live feed, the dashboard, CDS Hooks, `/healthz`,
//!   `/readyz`, `/metrics`.
//! - [`support`]: what several stages share: retries with backoff, files private to the
//!   engine's user, fault isolation, stage heartbeats.
//! - [`cli`]: the `cds` command line, which reads the flags of a run into one typed
//!   configuration; `main.rs` only calls [`cli::main`].

pub mod checkpoint;
pub mod cli;
mod cluster;
pub mod decode;
pub mod dims;
pub mod gold;
pub mod http;
pub mod lake;
pub mod metrics;
pub mod model;
mod ops;
pub mod pipeline;
pub mod rules;
pub mod silver;
pub mod sink;
pub mod source;
pub mod support;
