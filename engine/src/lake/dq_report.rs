//! The data-quality report (`cds report dq`, `/reports/dq`): per day and hospital, what came
//! in and what Silver made of it, computed after the fact from what a run kept.
//!
//! - **Bronze** (every payload as it arrived, in arrival order) is decoded again: the events
//!   in, the duplicates (an event id seen before) and the late arrivals (an event
//!   time behind the newest event time read before it: the watermark) per event day and
//!   hospital as the payload states it.
//! - **Silver** (every record Silver cleaned, quarantined ones included): the data-quality flags
//!   per rule, split into records kept (repaired or only flagged) and records quarantined (the
//!   quarantine's reasons); the fields the event model does not know (schema drift: each name,
//!   when first seen in event time, how often).
//! - **The dead-letter store**: payloads that were no event, by reason and by format (told
//!   from the payload as the decoder tells it: HL7 v2, FHIR, event JSON, other), dated by the
//!   day Bronze received them.
//!
//! Nothing here names a patient: the report holds counts, flag and field names only.

use std::collections::{BTreeMap, HashSet};
use std::io::BufRead;
use std::path::Path;

use chrono::{DateTime, NaiveDate};
use deltalake::arrow::array::{
    Array, BooleanArray, Int64Array, ListArray, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use deltalake::DeltaTable;
use serde::Serialize;

use super::tables::{column, read_data_file, Table};
use super::writer::table_url;
use crate::decode::{Decoder, Format};
use crate::model::{Pseudonymiser, SourcePosition};

/// Why a report could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("the lake at {lake}: {message}")]
    Lake { lake: String, message: String },
    #[error("the dead-letter store {path}: {message}")]
    DeadLetters { path: String, message: String },
}

/// What one day of one hospital brought.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DayCounts {
    /// Events decoded from the payloads received (duplicates included).
    pub events_in: u64,
    /// Copies of an event id seen before (in an earlier payload or earlier in the same one).
    pub duplicates: u64,
    /// Events whose time is behind the newest event time read before them.
    pub late: u64,
    /// Records Silver cleaned (duplicates are not cleaned again).
    pub records: u64,
    /// Of those, quarantined.
    pub quarantined: u64,
    /// Per data-quality rule: records kept with the flag (repaired, or only flagged).
    pub flagged: BTreeMap<String, u64>,
    /// Per data-quality rule: quarantined records with the flag (the quarantine's reasons).
    pub quarantine_reasons: BTreeMap<String, u64>,
}

/// One row of the report: a day (UTC, of the event time) and a hospital (`None`: the record
/// names none, or no valid one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DayHospital {
    pub day: String,
    pub hospital_id: Option<i64>,
    #[serde(flatten)]
    pub counts: DayCounts,
}

/// Dead letters of one day (received), reason and format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetters {
    /// The day Bronze received the payload; `None` when Bronze does not hold it (the lake was
    /// off, or the payload came from a source Bronze did not keep).
    pub day: Option<String>,
    pub reason: String,
    pub format: String,
    pub count: u64,
}

/// A field the event model does not know, as Silver kept it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnknownField {
    pub name: String,
    /// The earliest event time of a record that carried it (RFC 3339).
    pub first_seen: String,
    pub records: u64,
}

/// The whole report.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DqReport {
    pub lake: String,
    /// Days before this one are left out.
    pub since: Option<String>,
    pub days: Vec<DayHospital>,
    pub dead_letters: Vec<DeadLetters>,
    pub unknown_fields: Vec<UnknownField>,
    /// The sums over every row.
    pub totals: DayCounts,
    pub dead_letters_total: u64,
}

/// Where the report reads from.
#[derive(Clone)]
pub struct ReportInput<'a> {
    /// The lake's location (a directory or an object-storage URL).
    pub lake: &'a str,
    /// The data directory, for the dead-letter store.
    pub data_dir: &'a Path,
    /// How the payloads are read (`auto` tells HL7 v2, FHIR and event JSON apart).
    pub format: Format,
    pub since: Option<NaiveDate>,
    /// Told (payloads decoded, payloads in Bronze) as Bronze is decoded, for a progress line.
    pub progress: Option<&'a dyn Fn(usize, usize)>,
}

fn day_of(micros: i64) -> Option<NaiveDate> {
    DateTime::from_timestamp_micros(micros).map(|t| t.date_naive())
}

/// The format of a payload, as the decoder would tell it.
fn format_of(payload: &str) -> &'static str {
    match crate::decode::detect(payload.as_bytes()) {
        Ok(Format::Hl7v2) => "hl7v2",
        Ok(Format::Fhir) => "fhir",
        Ok(_) => "json",
        Err(_) => "other",
    }
}

fn lake_error(lake: &str, message: impl std::fmt::Display) -> ReportError {
    ReportError::Lake {
        lake: lake.to_owned(),
        message: message.to_string(),
    }
}

/// Makes the report.
pub fn report(input: &ReportInput<'_>) -> Result<DqReport, ReportError> {
    let mut rows: BTreeMap<(NaiveDate, Option<i64>), DayCounts> = BTreeMap::new();
    let keep = |day: NaiveDate| input.since.is_none_or(|since| day >= since);

    // Bronze: events in, duplicates, late arrivals; and when each position was received.
    let (streams, payloads) =
        crate::source::bronze::read_table(input.lake).map_err(|e| lake_error(input.lake, e))?;
    // The report's decoder needs a key for what it remembers of patients; nothing it keys
    // leaves this function.
    let mut decoder = Decoder::new(input.format, Pseudonymiser::new(b"dq-report"));
    let mut seen: HashSet<String> = HashSet::new();
    let mut watermark = i64::MIN;
    let mut received: BTreeMap<(String, i32, i64), NaiveDate> = BTreeMap::new();
    let mut decoded = Vec::new();
    for (i, row) in payloads.iter().enumerate() {
        if let Some(progress) = input.progress.filter(|_| i % 5_000 == 0) {
            progress(i, payloads.len());
        }
        let source = streams
            .get(usize::from(row.position.stream))
            .cloned()
            .unwrap_or_default();
        if let Some(day) = day_of(row.ingested_at) {
            received.insert(
                (source.clone(), row.position.partition, row.position.offset),
                day,
            );
        }
        let position = || SourcePosition {
            source: source.clone(),
            partition: row.position.partition,
            offset: row.position.offset,
        };
        decoder.decode_into(&row.payload, position, &mut decoded);
        for event in decoded.drain(..).flatten() {
            let at = event.event_timestamp.timestamp_micros();
            let late = at < watermark;
            watermark = watermark.max(at);
            let duplicate = !seen.insert(event.event_id.clone());
            let Some(day) = day_of(at).filter(|d| keep(*d)) else {
                continue;
            };
            let counts = rows.entry((day, event.hospital_id)).or_default();
            counts.events_in += 1;
            counts.duplicates += u64::from(duplicate);
            counts.late += u64::from(late);
        }
    }

    // Silver: flags, quarantine, unknown fields.
    let mut unknown: BTreeMap<String, (i64, u64)> = BTreeMap::new();
    for batch in silver_batches(input.lake)? {
        silver_rows(&batch, &keep, &mut rows, &mut unknown)
            .map_err(|e| lake_error(input.lake, format!("silver/events: {e}")))?;
    }

    // Dead letters.
    let mut dead: BTreeMap<(Option<NaiveDate>, String, String), u64> = BTreeMap::new();
    let path = input
        .data_dir
        .join("lake")
        .join("deadletter")
        .join("deadletter.jsonl");
    let dead_error = |message: String| ReportError::DeadLetters {
        path: path.display().to_string(),
        message,
    };
    match std::fs::File::open(&path) {
        Ok(file) => {
            for line in std::io::BufReader::new(file).lines() {
                let line = line.map_err(|e| dead_error(e.to_string()))?;
                if line.trim().is_empty() {
                    continue;
                }
                let letter: serde_json::Value = serde_json::from_str(&line)
                    .map_err(|_| dead_error("a line is not a dead letter".into()))?;
                let position = &letter["position"];
                let key = (
                    position["source"].as_str().unwrap_or_default().to_owned(),
                    position["partition"].as_i64().unwrap_or_default() as i32,
                    position["offset"].as_i64().unwrap_or_default(),
                );
                let day = received.get(&key).copied();
                if day.is_some_and(|d| !keep(d)) {
                    continue;
                }
                let reason = letter["reason_code"]
                    .as_str()
                    .unwrap_or("unknown")
                    .to_owned();
                let format = format_of(letter["payload"].as_str().unwrap_or_default()).to_owned();
                *dead.entry((day, reason, format)).or_default() += 1;
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(dead_error(e.to_string())),
    }

    let mut report = DqReport {
        lake: input.lake.to_owned(),
        since: input.since.map(|d| d.to_string()),
        ..DqReport::default()
    };
    for ((day, hospital_id), counts) in rows {
        add(&mut report.totals, &counts);
        report.days.push(DayHospital {
            day: day.to_string(),
            hospital_id,
            counts,
        });
    }
    for ((day, reason, format), count) in dead {
        report.dead_letters_total += count;
        report.dead_letters.push(DeadLetters {
            day: day.map(|d| d.to_string()),
            reason,
            format,
            count,
        });
    }
    report.unknown_fields = unknown
        .into_iter()
        .map(|(name, (first, records))| UnknownField {
            name,
            first_seen: DateTime::from_timestamp_micros(first)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                .unwrap_or_default(),
            records,
        })
        .collect();
    Ok(report)
}

fn add(total: &mut DayCounts, counts: &DayCounts) {
    total.events_in += counts.events_in;
    total.duplicates += counts.duplicates;
    total.late += counts.late;
    total.records += counts.records;
    total.quarantined += counts.quarantined;
    for (flag, n) in &counts.flagged {
        *total.flagged.entry(flag.clone()).or_default() += n;
    }
    for (flag, n) in &counts.quarantine_reasons {
        *total.quarantine_reasons.entry(flag.clone()).or_default() += n;
    }
}

/// Every record batch of the Silver table (none when the lake has no Silver table yet).
fn silver_batches(lake: &str) -> Result<Vec<RecordBatch>, ReportError> {
    let url = table_url(lake, Table::Silver.path()).map_err(|e| lake_error(lake, e))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| lake_error(lake, e))?;
    runtime.block_on(async {
        let Ok(table) = DeltaTable::try_from_url(url).await else {
            return Ok(Vec::new());
        };
        if table.version().is_none() {
            return Ok(Vec::new());
        }
        let store = table.object_store();
        let files: Vec<String> = table
            .snapshot()
            .map_err(|e| lake_error(lake, e))?
            .log_data()
            .iter()
            .map(|f| f.path().into_owned())
            .collect();
        let mut batches = Vec::new();
        for path in files {
            batches.extend(
                read_data_file(&store, &path)
                    .await
                    .map_err(|e| lake_error(lake, e))?,
            );
        }
        Ok(batches)
    })
}

/// Counts one Silver batch's rows into `rows` and `unknown`.
fn silver_rows(
    batch: &RecordBatch,
    keep: &impl Fn(NaiveDate) -> bool,
    rows: &mut BTreeMap<(NaiveDate, Option<i64>), DayCounts>,
    unknown: &mut BTreeMap<String, (i64, u64)>,
) -> Result<(), String> {
    let time = column::<TimestampMicrosecondArray>(batch, "event_timestamp")?;
    let hospital = column::<Int64Array>(batch, "hospital_id")?;
    let flags = column::<ListArray>(batch, "dq_flags")?;
    let quarantined = column::<BooleanArray>(batch, "quarantined")?;
    let extra = column::<StringArray>(batch, "extra")?;
    for i in 0..batch.num_rows() {
        let at = time.value(i);
        let Some(day) = day_of(at).filter(|d| keep(*d)) else {
            continue;
        };
        let hospital_id = (!hospital.is_null(i)).then(|| hospital.value(i));
        let counts = rows.entry((day, hospital_id)).or_default();
        counts.records += 1;
        let held = quarantined.value(i);
        counts.quarantined += u64::from(held);
        let list = flags.value(i);
        if let Some(names) = list.as_any().downcast_ref::<StringArray>() {
            for flag in names.iter().flatten() {
                let by = if held {
                    &mut counts.quarantine_reasons
                } else {
                    &mut counts.flagged
                };
                *by.entry(flag.to_owned()).or_default() += 1;
            }
        }
        if !extra.is_null(i) {
            if let Ok(serde_json::Value::Object(fields)) =
                serde_json::from_str::<serde_json::Value>(extra.value(i))
            {
                for name in fields.keys() {
                    let entry = unknown.entry(name.clone()).or_insert((at, 0));
                    entry.0 = entry.0.min(at);
                    entry.1 += 1;
                }
            }
        }
    }
    Ok(())
}

/// Escapes text for HTML.
fn esc(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A horizontal bar chart as inline SVG: one bar per (label, value), labelled with both.
fn bars(title: &str, items: &[(String, u64)]) -> String {
    if items.is_empty() {
        return String::new();
    }
    let max = items.iter().map(|(_, v)| *v).max().unwrap_or(1).max(1) as f64;
    let (row, label_w, bar_w) = (18.0, 230.0, 420.0);
    let height = row * items.len() as f64 + 8.0;
    let mut svg = format!(
        "<figure><figcaption>{}</figcaption><svg role=\"img\" aria-label=\"{}\" width=\"{}\" \
         height=\"{height}\" viewBox=\"0 0 {} {height}\">",
        esc(title),
        esc(title),
        label_w + bar_w + 80.0,
        label_w + bar_w + 80.0
    );
    for (i, (label, value)) in items.iter().enumerate() {
        let y = 4.0 + row * i as f64;
        let w = (*value as f64 / max * bar_w).max(1.0);
        svg.push_str(&format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\
             <rect x=\"{label_w}\" y=\"{y}\" width=\"{w:.1}\" height=\"{}\" fill=\"#3b6ea5\"/>\
             <text x=\"{}\" y=\"{}\">{value}</text>",
            label_w - 6.0,
            y + 13.0,
            esc(label),
            row - 4.0,
            label_w + w + 4.0,
            y + 13.0
        ));
    }
    svg.push_str("</svg></figure>");
    svg
}

/// The report as one self-contained HTML page (inline SVG charts, no script, no network).
pub fn render_html(report: &DqReport) -> String {
    let mut html = String::from(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>cds data-quality report</title><style>\
         body{font:14px system-ui,sans-serif;margin:2em;color:#111;background:#fff}\
         table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #999;padding:3px 8px;text-align:right}\
         th{background:#eee}td.l,th.l{text-align:left}svg text{font:12px system-ui,sans-serif;fill:#111}\
         figcaption{font-weight:600;margin-top:1em}</style></head><body>",
    );
    html.push_str(&format!(
        "<h1>Data-quality report</h1><p>Lake <code>{}</code>{}.</p>",
        esc(&report.lake),
        report
            .since
            .as_ref()
            .map(|s| format!(", days from {}", esc(s)))
            .unwrap_or_default()
    ));
    let t = &report.totals;
    html.push_str(&format!(
        "<table><tr><th class=\"l\">In total</th><th>events in</th><th>duplicates</th>\
         <th>late</th><th>records</th><th>quarantined</th><th>dead letters</th></tr>\
         <tr><td class=\"l\">every day and hospital</td><td>{}</td><td>{}</td><td>{}</td>\
         <td>{}</td><td>{}</td><td>{}</td></tr></table>",
        t.events_in, t.duplicates, t.late, t.records, t.quarantined, report.dead_letters_total
    ));
    let mut per_day: BTreeMap<&str, u64> = BTreeMap::new();
    for row in &report.days {
        *per_day.entry(row.day.as_str()).or_default() += row.counts.events_in;
    }
    let per_day: Vec<(String, u64)> = per_day
        .into_iter()
        .map(|(d, n)| (d.to_owned(), n))
        .collect();
    html.push_str(&bars("Events in per day", &per_day));
    let flags: Vec<(String, u64)> = t
        .flagged
        .iter()
        .map(|(f, n)| (format!("{f} (kept)"), *n))
        .chain(
            t.quarantine_reasons
                .iter()
                .map(|(f, n)| (format!("{f} (quarantined)"), *n)),
        )
        .collect();
    html.push_str(&bars("Records per data-quality rule", &flags));
    let dead: Vec<(String, u64)> = report
        .dead_letters
        .iter()
        .map(|d| (format!("{} · {}", d.reason, d.format), d.count))
        .collect();
    html.push_str(&bars("Dead letters by reason and format", &dead));

    html.push_str(
        "<h2>Per day and hospital</h2><table><tr><th class=\"l\">day</th><th>hospital</th>\
         <th>events in</th><th>duplicates</th><th>late</th><th>records</th><th>quarantined</th>\
         <th class=\"l\">flags (kept)</th><th class=\"l\">quarantine reasons</th></tr>",
    );
    let list = |m: &BTreeMap<String, u64>| {
        m.iter()
            .map(|(k, v)| format!("{} {v}", esc(k)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    for row in &report.days {
        let c = &row.counts;
        html.push_str(&format!(
            "<tr><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td class=\"l\">{}</td><td class=\"l\">{}</td></tr>",
            esc(&row.day),
            row.hospital_id.map_or("–".to_owned(), |h| h.to_string()),
            c.events_in,
            c.duplicates,
            c.late,
            c.records,
            c.quarantined,
            list(&c.flagged),
            list(&c.quarantine_reasons)
        ));
    }
    html.push_str(
        "</table><h2>Dead letters</h2><table><tr><th class=\"l\">day received</th>\
                   <th class=\"l\">reason</th><th class=\"l\">format</th><th>payloads</th></tr>",
    );
    for d in &report.dead_letters {
        html.push_str(&format!(
            "<tr><td class=\"l\">{}</td><td class=\"l\">{}</td><td class=\"l\">{}</td><td>{}</td></tr>",
            esc(d.day.as_deref().unwrap_or("not in Bronze")),
            esc(&d.reason),
            esc(&d.format),
            d.count
        ));
    }
    html.push_str("</table><h2>Schema drift: fields the event model does not know</h2>\
                   <table><tr><th class=\"l\">field</th><th class=\"l\">first seen (event time)</th>\
                   <th>records</th></tr>");
    for f in &report.unknown_fields {
        html.push_str(&format!(
            "<tr><td class=\"l\">{}</td><td class=\"l\">{}</td><td>{}</td></tr>",
            esc(&f.name),
            esc(&f.first_seen),
            f.records
        ));
    }
    html.push_str("</table></body></html>\n");
    html
}
