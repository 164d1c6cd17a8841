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
//! - [`model`]: the event model, the canonical vocabulary, the hospital network, pseudonyms.
//! - [`source`]: where payloads come from (the simulator, files, Kafka, the HL7 v2 MLLP
//!   listener) behind one trait; the payload formats (event JSON, FHIR R4, HL7 v2, EHR CSV);
//!   the departments file, watched for capacity changes.
//! - [`silver`]: data-quality rules that flag and repair; duplicates; dead letters.
//! - [`gold`]: facts, the differential dataflow of the KPIs, and the KPI documents.
//! - [`rules`]: the stage that runs the clinical rule pack and turns fired rules into alerts.
//! - [`sink`]: where documents go: the embedded SQLite store or Azure Cosmos DB, behind one trait.
//! - [`lake`]: the lake: Bronze/Silver/Gold Delta tables, the dead-letter store and the
//!   quarantined Silver records.
//! - [`checkpoint`]: what each stateful stage gives a checkpoint ([`checkpoint::Checkpointed`]),
//!   the checkpoint files, when checkpoints are taken and written, and restoring a run from one.
//! - [`http`]: `/healthz`, `/readyz`, `/metrics`.
//! - [`metrics`]: the Prometheus registry of a run.
//! - `ops`: operational alerts (sink retries exhausted, source unreachable, checkpoint failed,
//!   rule errors): metrics, log lines and a Teams/Slack webhook, one notice per outage.
//! - [`pipeline`]: the job that wires the stages with bounded channels and threads: the
//!   ingest loop, the timely workers, the rules thread and the sink thread, one file each.
//! - `cluster`: who owns what across the timely workers (patients, hospitals), one rule each.
//! - [`support`]: what several stages share: retries with backoff, files private to the
//!   engine's user.
//! - [`cli`]: the `cds` command line; `main.rs` only calls [`cli::main`].

pub mod checkpoint;
pub mod cli;
mod cluster;
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
