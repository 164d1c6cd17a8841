//! A sink wrapper that notes when KPI documents are written and which event time they cover.
//!
//! Every KPI document of a write carries `as_of`, the event-time watermark of the epochs the
//! write includes. With event times that strictly increase in production order on one
//! partition, an event is in a write exactly when its event time is at most that `as_of`.
//!
//! Alert documents name the event that fired them (`event_id`), so an alert write is matched
//! to its reading exactly.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use cds_engine::gold::micros;
use cds_engine::model::parse_time;
use cds_engine::model::Document;
use cds_engine::sink::{Container, Sink, SinkError};

/// (when the write returned, its `as_of` in microseconds) for every KPI write, in order.
pub type WriteLog = Arc<Mutex<Vec<(Instant, i64)>>>;

/// (when the write returned, the event id of the reading that fired it) for every alert of
/// the rule watched, in order.
pub type AlertLog = Arc<Mutex<Vec<(Instant, String)>>>;

/// The alerts of one rule (its `mlmname`) to log, and where.
pub struct AlertWatch {
    pub mlmname: &'static str,
    pub log: AlertLog,
}

/// Forwards to the real sink, then logs the write.
pub struct ObservedSink {
    pub inner: Box<dyn Sink>,
    pub log: WriteLog,
    /// Alert writes to log as well; `None`: KPI writes only.
    pub alerts: Option<AlertWatch>,
}

impl Sink for ObservedSink {
    fn upsert(&mut self, container: Container, documents: &[Document]) -> Result<(), SinkError> {
        self.inner.upsert(container, documents)?;
        if container == Container::Kpis {
            let as_of = documents
                .iter()
                .filter_map(|d| d.body.get("as_of").and_then(|a| a.as_str()))
                .filter_map(parse_time)
                .map(|t| micros(&t))
                .max();
            if let (Some(as_of), Ok(mut log)) = (as_of, self.log.lock()) {
                log.push((Instant::now(), as_of));
            }
        }
        if let (Container::Alerts, Some(watch)) = (container, &self.alerts) {
            let now = Instant::now();
            let fired = documents
                .iter()
                .filter(|d| d.body.get("mlmname").and_then(|m| m.as_str()) == Some(watch.mlmname))
                .filter_map(|d| d.body.get("event_id").and_then(|e| e.as_str()));
            if let Ok(mut log) = watch.log.lock() {
                log.extend(fired.map(|e| (now, e.to_owned())));
            }
        }
        Ok(())
    }
}

/// The latest `as_of` written so far.
pub fn latest(log: &WriteLog) -> Option<i64> {
    log.lock().ok().and_then(|l| l.last().map(|(_, a)| *a))
}
