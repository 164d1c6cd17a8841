//! The lake's Delta tables: their schemas and how rows become Arrow record batches.
//!
//! Every table is partitioned by `event_date` (the UTC date of the event time; for a payload
//! that is not an event, the date it was ingested). Columns are fixed: an attribute the event
//! model does not know yet travels in Silver's `extra` column as a JSON object (schema
//! evolution without a schema change, so no writer and no reader ever meets an unexpected
//! column), and Bronze keeps the payload as received, bytes untouched.

use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use deltalake::arrow::array::{
    Array, ArrayBuilder, ArrayRef, AsArray, BinaryBuilder, BooleanArray, BooleanBuilder,
    Date32Builder, Float64Builder, Int32Array, Int32Builder, Int64Array, Int64Builder, ListBuilder,
    RecordBatch, StringArray, StringBuilder, TimestampMicrosecondArray,
    TimestampMicrosecondBuilder,
};
use deltalake::arrow::compute::filter_record_batch;
use deltalake::arrow::datatypes::{
    DataType, Field, Int32Type, Int64Type, Schema, SchemaRef, TimeUnit, TimestampMicrosecondType,
};
use deltalake::arrow::error::ArrowError;

use crate::dims::Dimension;
use crate::model::patient_ref as display;
use crate::model::Document;
use crate::model::{AgeBand, EventType};
use crate::silver::SilverRecord;

/// The tables, by their path under the lake root.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    Bronze,
    Silver,
    FactPatientFlow,
    KpiSnapshots,
    DimPatient,
    DimDepartment,
}

impl Table {
    pub const ALL: [Table; 6] = [
        Table::Bronze,
        Table::Silver,
        Table::FactPatientFlow,
        Table::KpiSnapshots,
        Table::DimPatient,
        Table::DimDepartment,
    ];

    /// Where the table lives under the lake root.
    pub fn path(self) -> &'static str {
        match self {
            Table::Bronze => "bronze/events",
            Table::Silver => "silver/events",
            Table::FactPatientFlow => "gold/fact_patient_flow",
            Table::KpiSnapshots => "gold/kpi_snapshots",
            Table::DimPatient => Dimension::Patient.path(),
            Table::DimDepartment => Dimension::Department.path(),
        }
    }

    /// The SCD2 dimension a table holds.
    pub fn dimension(self) -> Option<Dimension> {
        match self {
            Table::DimPatient => Some(Dimension::Patient),
            Table::DimDepartment => Some(Dimension::Department),
            _ => None,
        }
    }

    /// Facts are partitioned by event date; the dimensions, rewritten whole, are not.
    pub fn partition_columns(self) -> Vec<&'static str> {
        match self.dimension() {
            Some(_) => Vec::new(),
            None => vec!["event_date"],
        }
    }

    /// Whether rows carry a source position, so that re-sent rows can be recognised.
    pub fn positioned(self) -> bool {
        !matches!(self, Table::KpiSnapshots | Table::DimDepartment)
    }

    pub fn schema(self) -> SchemaRef {
        if let Some(d) = self.dimension() {
            return super::dims::schema(d);
        }
        let ts = || DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        let position = || {
            vec![
                Field::new("source", DataType::Utf8, false),
                Field::new("partition", DataType::Int32, false),
                Field::new("offset", DataType::Int64, false),
            ]
        };
        let mut fields = match self {
            Table::Bronze => {
                let mut f = vec![Field::new("payload", DataType::Binary, false)];
                f.extend(position());
                f.push(Field::new("topic", DataType::Utf8, true));
                f.push(Field::new("ingested_at", ts(), false));
                f
            }
            Table::Silver => {
                let mut f = vec![
                    Field::new("event_id", DataType::Utf8, false),
                    Field::new("event_type", DataType::Utf8, true),
                    Field::new("event_timestamp", ts(), false),
                    Field::new("patient_id", DataType::Utf8, true),
                    Field::new("hospital_id", DataType::Int64, true),
                    Field::new("department", DataType::Utf8, true),
                    Field::new("bed_id", DataType::Utf8, true),
                    Field::new("gender", DataType::Utf8, true),
                    Field::new("age", DataType::Int64, true),
                    Field::new("admission_time", ts(), true),
                    Field::new("discharge_time", ts(), true),
                    Field::new("admission_priority", DataType::Utf8, true),
                    Field::new("diagnosis_code", DataType::Utf8, true),
                    Field::new("insurance_type", DataType::Utf8, true),
                ];
                for v in crate::gold::VITAL_NAMES {
                    f.push(Field::new(v, DataType::Float64, true));
                }
                f.push(Field::new("consciousness", DataType::Utf8, true));
                f.push(Field::new("supplemental_o2", DataType::Boolean, true));
                f.push(Field::new("dq_flags", DataType::List(flag_item()), false));
                f.push(Field::new("quarantined", DataType::Boolean, false));
                f.push(Field::new("extra", DataType::Utf8, true));
                f.extend(position());
                f
            }
            Table::FactPatientFlow => {
                let mut f = vec![
                    Field::new("event_id", DataType::Utf8, false),
                    Field::new("event_type", DataType::Utf8, false),
                    Field::new("event_timestamp", ts(), false),
                    Field::new("patient_key", DataType::Utf8, false),
                    Field::new("hospital_id", DataType::Int64, true),
                    Field::new("department", DataType::Utf8, true),
                    Field::new("bed_id", DataType::Utf8, true),
                    Field::new("admission_time", ts(), true),
                    Field::new("discharge_time", ts(), true),
                    Field::new("los_hours", DataType::Float64, true),
                    Field::new("admission_priority", DataType::Utf8, true),
                    Field::new("diagnosis_code", DataType::Utf8, true),
                    Field::new("gender", DataType::Utf8, true),
                    Field::new("age_band", DataType::Utf8, true),
                ];
                f.extend(position());
                f
            }
            Table::DimPatient | Table::DimDepartment => Vec::new(),
            Table::KpiSnapshots => vec![
                Field::new("id", DataType::Utf8, false),
                Field::new("type", DataType::Utf8, true),
                Field::new("hospital_id", DataType::Int64, false),
                Field::new("department", DataType::Utf8, true),
                Field::new("as_of", ts(), true),
                Field::new("written_at", ts(), false),
                Field::new("document", DataType::Utf8, false),
            ],
        };
        fields.push(Field::new("event_date", DataType::Date32, false));
        Arc::new(Schema::new(fields))
    }
}

/// The list element as Delta names it (`element`), so that batches match the table's schema.
fn flag_item() -> Arc<Field> {
    Arc::new(Field::new("element", DataType::Utf8, true))
}

/// Where a row came from: the stream's name (`kafka:TOPIC`, `file:PATH`), partition, offset.
#[derive(Debug, Clone)]
pub struct RowPosition {
    pub source: Arc<str>,
    pub partition: i32,
    pub offset: i64,
}

/// The positions a batch's rows came from: per (source, partition), the lowest and the highest
/// offset. Rows of a partition arrive in offset order, so this is all the writer needs to know
/// which rows a table already holds and what its commit records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    pub source: Arc<str>,
    pub partition: i32,
    pub first: i64,
    pub last: i64,
}

/// Widens the span of `p`'s partition in `spans` to take `p` in.
fn widen(spans: &mut Vec<Span>, p: &RowPosition) {
    // An epoch reads from few partitions, nearly always the one of the previous row.
    let found = spans
        .iter_mut()
        .rev()
        .find(|s| s.partition == p.partition && s.source == p.source);
    match found {
        Some(s) => {
            s.first = s.first.min(p.offset);
            s.last = s.last.max(p.offset);
        }
        None => spans.push(Span {
            source: p.source.clone(),
            partition: p.partition,
            first: p.offset,
            last: p.offset,
        }),
    }
}

/// Rows of one table built into a record batch where they were decoded, with their spans.
#[derive(Debug, Clone)]
pub struct Positioned {
    pub batch: RecordBatch,
    pub spans: Vec<Span>,
}

/// The lake's rows of one epoch, built into columns on the ingest thread. The payloads and
/// Silver records are copied once, into the columns, and freed where they were allocated; the
/// lake thread receives a few large buffers instead of a heap object per row.
#[derive(Debug, Clone)]
pub struct EpochRows {
    pub bronze: Positioned,
    pub silver: Positioned,
    pub facts: Positioned,
    /// The Silver rows that carry a patient key: (row of `silver`, pseudonym), and their spans.
    pub patients: Vec<(u32, u64)>,
    pub patient_spans: Vec<Span>,
}

/// The record batches of one data file of a table (`path` relative to the table's store), read
/// whole: the dimensions' loader, compaction and the Bronze replay read files this way.
pub async fn read_data_file(
    store: &Arc<dyn object_store::ObjectStore>,
    path: &str,
) -> Result<Vec<RecordBatch>, String> {
    use object_store::ObjectStoreExt;
    let bytes = store
        .get(&deltalake::Path::from(path))
        .await
        .map_err(|e| e.to_string())?
        .bytes()
        .await
        .map_err(|e| e.to_string())?;
    deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
        .and_then(|b| b.build())
        .map_err(|e| e.to_string())?
        .map(|batch| batch.map_err(|e| e.to_string()))
        .collect()
}

/// A column of a record batch as its array type; the error names the column.
pub fn column<'a, T: 'static>(batch: &'a RecordBatch, name: &str) -> Result<&'a T, String> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| format!("column {name} missing or of another type"))
}

/// Days since 1970-01-01 of a UTC instant in microseconds (0 outside chrono's dates).
pub fn date32(micros: i64) -> i32 {
    // Every row needs its date: plain division within ±90 million days (about ±246,000
    // years, inside chrono's range), chrono for the rest.
    const DAY: i64 = 86_400_000_000;
    const NEAR: i64 = 90_000_000;
    let days = micros.div_euclid(DAY);
    if (-NEAR..=NEAR).contains(&days) {
        return days as i32;
    }
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
    DateTime::<Utc>::from_timestamp_micros(micros)
        .map(|t| (t.date_naive() - epoch).num_days() as i32)
        .unwrap_or(0)
}

fn micros(t: &chrono::DateTime<chrono::FixedOffset>) -> i64 {
    t.timestamp_micros()
}

struct PositionColumns {
    source: StringBuilder,
    partition: Int32Builder,
    offset: Int64Builder,
    spans: Vec<Span>,
}

impl PositionColumns {
    fn new() -> Self {
        PositionColumns {
            source: StringBuilder::new(),
            partition: Int32Builder::new(),
            offset: Int64Builder::new(),
            spans: Vec::new(),
        }
    }
    fn push(&mut self, p: &RowPosition) {
        self.source.append_value(&p.source);
        self.partition.append_value(p.partition);
        self.offset.append_value(p.offset);
        widen(&mut self.spans, p);
    }
    fn finish(mut self, columns: &mut Vec<ArrayRef>) -> Vec<Span> {
        columns.push(Arc::new(self.source.finish()));
        columns.push(Arc::new(self.partition.finish()));
        columns.push(Arc::new(self.offset.finish()));
        self.spans
    }
}

fn utc_ts() -> TimestampMicrosecondBuilder {
    TimestampMicrosecondBuilder::new().with_timezone("UTC")
}

/// The columns of `bronze/events`, filled payload by payload.
struct BronzeColumns {
    payload: BinaryBuilder,
    position: PositionColumns,
    topic: StringBuilder,
    ingested: TimestampMicrosecondBuilder,
    date: Date32Builder,
}

impl BronzeColumns {
    fn new() -> Self {
        BronzeColumns {
            payload: BinaryBuilder::new(),
            position: PositionColumns::new(),
            topic: StringBuilder::new(),
            ingested: utc_ts(),
            date: Date32Builder::new(),
        }
    }

    fn push(&mut self, p: &RowPosition, payload: &[u8], ingested_at: i64, event_time: Option<i64>) {
        self.payload.append_value(payload);
        self.position.push(p);
        match p.source.strip_prefix("kafka:") {
            Some(t) => self.topic.append_value(t),
            None => self.topic.append_null(),
        }
        self.ingested.append_value(ingested_at);
        // A payload that Silver did not turn into a record (a duplicate or a dead letter)
        // still goes to its event's date when it has one.
        let at = event_time
            .or_else(|| event_time_of(payload))
            .unwrap_or(ingested_at);
        self.date.append_value(date32(at));
    }

    fn finish(mut self) -> Result<Positioned, ArrowError> {
        let mut columns: Vec<ArrayRef> = vec![Arc::new(self.payload.finish())];
        let spans = self.position.finish(&mut columns);
        columns.push(Arc::new(self.topic.finish()));
        columns.push(Arc::new(self.ingested.finish()));
        columns.push(Arc::new(self.date.finish()));
        let batch = RecordBatch::try_new(Table::Bronze.schema(), columns)?;
        Ok(Positioned { batch, spans })
    }
}

/// The event time of a payload that Silver did not turn into a record, when it has one.
fn event_time_of(payload: &[u8]) -> Option<i64> {
    #[derive(serde::Deserialize)]
    struct Probe {
        event_timestamp: Option<String>,
    }
    let probe: Probe = serde_json::from_slice(payload).ok()?;
    crate::model::parse_time(probe.event_timestamp.as_deref()?).map(|t| t.timestamp_micros())
}

/// The finished string columns of a table, one per call, in the order their builders were
/// made; the caller interleaves them with its typed columns.
fn string_columns(builders: Vec<StringBuilder>) -> impl FnMut() -> ArrayRef {
    let mut finished = builders
        .into_iter()
        .map(|mut b| Arc::new(b.finish()) as ArrayRef);
    move || {
        finished
            .next()
            .unwrap_or_else(|| unreachable!("a table asked for more string columns than it made"))
    }
}

fn opt_str(b: &mut StringBuilder, v: Option<&str>) {
    b.append_option(v);
}

/// The columns of `silver/events`, filled record by record.
struct SilverColumns {
    s: Vec<StringBuilder>,
    ts: TimestampMicrosecondBuilder,
    adm: TimestampMicrosecondBuilder,
    dis: TimestampMicrosecondBuilder,
    hospital: Int64Builder,
    age: Int64Builder,
    vitals: Vec<Float64Builder>,
    consciousness: StringBuilder,
    o2: BooleanBuilder,
    flags: ListBuilder<StringBuilder>,
    quarantined: BooleanBuilder,
    extra: StringBuilder,
    position: PositionColumns,
    date: Date32Builder,
    rows: u32,
}

impl SilverColumns {
    fn new() -> Self {
        SilverColumns {
            s: (0..10).map(|_| StringBuilder::new()).collect(),
            ts: utc_ts(),
            adm: utc_ts(),
            dis: utc_ts(),
            hospital: Int64Builder::new(),
            age: Int64Builder::new(),
            vitals: (0..6).map(|_| Float64Builder::new()).collect(),
            consciousness: StringBuilder::new(),
            o2: BooleanBuilder::new(),
            flags: ListBuilder::new(StringBuilder::new()).with_field(flag_item()),
            quarantined: BooleanBuilder::new(),
            extra: StringBuilder::new(),
            position: PositionColumns::new(),
            date: Date32Builder::new(),
            rows: 0,
        }
    }

    /// Adds a record; returns its row number.
    fn push(&mut self, record: &SilverRecord, p: &RowPosition) -> u32 {
        let e = &record.event;
        let s = &mut self.s;
        s[0].append_value(&e.event_id);
        opt_str(&mut s[1], e.event_type.as_deref());
        self.ts.append_value(micros(&e.event_timestamp));
        opt_str(&mut s[2], e.patient_id.as_deref());
        self.hospital.append_option(e.hospital_id);
        opt_str(&mut s[3], e.department.as_deref());
        opt_str(&mut s[4], e.bed_id.as_deref());
        opt_str(&mut s[5], e.gender.as_deref());
        self.age.append_option(e.age);
        self.adm
            .append_option(e.admission_time.as_ref().map(micros));
        self.dis
            .append_option(e.discharge_time.as_ref().map(micros));
        opt_str(&mut s[6], e.admission_priority.as_deref());
        opt_str(&mut s[7], e.diagnosis_code.as_deref());
        opt_str(&mut s[8], e.insurance_type.as_deref());
        let v = e.vitals.as_ref();
        let values = [
            v.and_then(|v| v.heart_rate),
            v.and_then(|v| v.bp_systolic),
            v.and_then(|v| v.bp_diastolic),
            v.and_then(|v| v.temperature_c),
            v.and_then(|v| v.oxygen_saturation),
            v.and_then(|v| v.respiratory_rate),
        ];
        for (b, x) in self.vitals.iter_mut().zip(values) {
            b.append_option(x);
        }
        self.consciousness
            .append_option(v.and_then(|v| v.consciousness.as_deref()));
        self.o2.append_option(v.and_then(|v| v.supplemental_o2));
        for f in record.dq_flags.iter() {
            self.flags.values().append_value(f.name());
        }
        self.flags.append(true);
        self.quarantined.append_value(record.quarantined());
        if e.extra.is_empty() {
            self.extra.append_null();
        } else {
            self.extra
                .append_value(serde_json::Value::Object(e.extra.clone()).to_string());
        }
        self.position.push(p);
        self.date.append_value(date32(micros(&e.event_timestamp)));
        self.rows += 1;
        self.rows - 1
    }

    fn finish(mut self) -> Result<Positioned, ArrowError> {
        let mut next = string_columns(self.s);
        let mut columns: Vec<ArrayRef> = vec![next(), next(), Arc::new(self.ts.finish()), next()];
        columns.push(Arc::new(self.hospital.finish()));
        columns.push(next());
        columns.push(next());
        columns.push(next());
        columns.push(Arc::new(self.age.finish()));
        columns.push(Arc::new(self.adm.finish()));
        columns.push(Arc::new(self.dis.finish()));
        columns.push(next());
        columns.push(next());
        columns.push(next());
        for mut v in self.vitals {
            columns.push(Arc::new(v.finish()));
        }
        columns.push(Arc::new(self.consciousness.finish()));
        columns.push(Arc::new(self.o2.finish()));
        columns.push(Arc::new(self.flags.finish()));
        columns.push(Arc::new(self.quarantined.finish()));
        columns.push(Arc::new(self.extra.finish()));
        let spans = self.position.finish(&mut columns);
        columns.push(Arc::new(self.date.finish()));
        let batch = RecordBatch::try_new(Table::Silver.schema(), columns)?;
        Ok(Positioned { batch, spans })
    }
}

/// Whether a Silver record is a patient-flow fact: a Gold-eligible ADT record (it has a
/// patient key).
pub fn is_flow_fact(record: &SilverRecord, patient: Option<u64>) -> bool {
    patient.is_some() && record.kind.is_some_and(EventType::is_adt)
}

/// The columns of `gold/fact_patient_flow`, filled fact by fact. The patient appears only as
/// the pseudonymous key; the age only as its band.
struct FlowColumns {
    s: Vec<StringBuilder>,
    ts: TimestampMicrosecondBuilder,
    adm: TimestampMicrosecondBuilder,
    dis: TimestampMicrosecondBuilder,
    hospital: Int64Builder,
    los: Float64Builder,
    age: StringBuilder,
    position: PositionColumns,
    date: Date32Builder,
}

impl FlowColumns {
    fn new() -> Self {
        FlowColumns {
            s: (0..8).map(|_| StringBuilder::new()).collect(),
            ts: utc_ts(),
            adm: utc_ts(),
            dis: utc_ts(),
            hospital: Int64Builder::new(),
            los: Float64Builder::new(),
            age: StringBuilder::new(),
            position: PositionColumns::new(),
            date: Date32Builder::new(),
        }
    }

    fn push(&mut self, record: &SilverRecord, patient: u64, p: &RowPosition) {
        let e = &record.event;
        let s = &mut self.s;
        s[0].append_value(&e.event_id);
        s[1].append_value(record.kind.map_or("", EventType::as_str));
        self.ts.append_value(micros(&e.event_timestamp));
        s[2].append_value(display(patient));
        self.hospital.append_option(e.hospital_id);
        opt_str(&mut s[3], e.department.as_deref());
        opt_str(&mut s[4], e.bed_id.as_deref());
        self.adm
            .append_option(e.admission_time.as_ref().map(micros));
        self.dis
            .append_option(e.discharge_time.as_ref().map(micros));
        let stay = match (record.kind, e.admission_time, e.discharge_time) {
            (Some(EventType::Discharge), Some(a), Some(d)) => {
                Some((d - a).num_microseconds().unwrap_or(0) as f64 / 3.6e9)
            }
            _ => None,
        };
        self.los.append_option(stay);
        opt_str(&mut s[5], e.admission_priority.as_deref());
        opt_str(&mut s[6], e.diagnosis_code.as_deref());
        opt_str(&mut s[7], e.gender.as_deref());
        self.age.append_value(AgeBand::of(e.age).label());
        self.position.push(p);
        self.date.append_value(date32(micros(&e.event_timestamp)));
    }

    fn finish(mut self) -> Result<Positioned, ArrowError> {
        let mut next = string_columns(self.s);
        let mut columns: Vec<ArrayRef> = vec![next(), next(), Arc::new(self.ts.finish()), next()];
        columns.push(Arc::new(self.hospital.finish()));
        columns.push(next());
        columns.push(next());
        columns.push(Arc::new(self.adm.finish()));
        columns.push(Arc::new(self.dis.finish()));
        columns.push(Arc::new(self.los.finish()));
        columns.push(next());
        columns.push(next());
        columns.push(next());
        columns.push(Arc::new(self.age.finish()));
        let spans = self.position.finish(&mut columns);
        columns.push(Arc::new(self.date.finish()));
        let batch = RecordBatch::try_new(Table::FactPatientFlow.schema(), columns)?;
        Ok(Positioned { batch, spans })
    }
}

/// The lake's rows of one epoch while its payloads are decoded.
pub struct EpochColumns {
    bronze: BronzeColumns,
    silver: SilverColumns,
    facts: FlowColumns,
    patients: Vec<(u32, u64)>,
    patient_spans: Vec<Span>,
}

impl Default for EpochColumns {
    fn default() -> Self {
        EpochColumns {
            bronze: BronzeColumns::new(),
            silver: SilverColumns::new(),
            facts: FlowColumns::new(),
            patients: Vec::new(),
            patient_spans: Vec::new(),
        }
    }
}

impl std::fmt::Debug for EpochColumns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EpochColumns")
            .field("payloads", &self.bronze.date.len())
            .field("records", &self.silver.rows)
            .finish()
    }
}

impl EpochColumns {
    /// One payload as received; `event_time` is that of its first record, if it has one
    /// (it decides the partition).
    pub fn payload(
        &mut self,
        p: &RowPosition,
        payload: &[u8],
        ingested_at: i64,
        event_time: Option<i64>,
    ) {
        self.bronze.push(p, payload, ingested_at, event_time);
    }

    /// One Silver record (quarantined ones included), with its pseudonymous patient key when
    /// it went to Gold; a Gold-eligible ADT record also becomes a patient-flow fact.
    pub fn record(&mut self, record: &SilverRecord, patient: Option<u64>, p: &RowPosition) {
        let row = self.silver.push(record, p);
        if let Some(key) = patient {
            self.patients.push((row, key));
            widen(&mut self.patient_spans, p);
            if is_flow_fact(record, patient) {
                self.facts.push(record, key, p);
            }
        }
    }

    /// Whether no payload was added.
    pub fn is_empty(&self) -> bool {
        self.bronze.date.is_empty()
    }

    /// The record batches of the epoch.
    pub fn finish(self) -> Result<EpochRows, ArrowError> {
        Ok(EpochRows {
            bronze: self.bronze.finish()?,
            silver: self.silver.finish()?,
            facts: self.facts.finish()?,
            patients: self.patients,
            patient_spans: self.patient_spans,
        })
    }
}

/// One written KPI document, as a snapshot row.
#[derive(Debug, Clone)]
pub struct KpiRow {
    pub document: Document,
    pub written_at: i64,
}

/// The KPI snapshot batch of these rows, partitioned by the date they were written.
pub fn kpi_batch(rows: &[KpiRow]) -> Result<RecordBatch, ArrowError> {
    let mut id = StringBuilder::new();
    let mut kind = StringBuilder::new();
    let mut hospital = Int64Builder::new();
    let mut department = StringBuilder::new();
    let mut as_of = utc_ts();
    let mut written = utc_ts();
    let mut doc = StringBuilder::new();
    let mut date = Date32Builder::new();
    for r in rows {
        let body = &r.document.body;
        id.append_value(&r.document.id);
        kind.append_option(body.get("type").and_then(|t| t.as_str()));
        hospital.append_value(r.document.hospital_id);
        department.append_option(body.get("department").and_then(|t| t.as_str()));
        as_of.append_option(
            body.get("as_of")
                .and_then(|t| t.as_str())
                .and_then(crate::model::parse_time)
                .map(|t| micros(&t)),
        );
        written.append_value(r.written_at);
        doc.append_value(body.to_string());
        date.append_value(date32(r.written_at));
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(id.finish()),
        Arc::new(kind.finish()),
        Arc::new(hospital.finish()),
        Arc::new(department.finish()),
        Arc::new(as_of.finish()),
        Arc::new(written.finish()),
        Arc::new(doc.finish()),
        Arc::new(date.finish()),
    ];
    RecordBatch::try_new(Table::KpiSnapshots.schema(), columns)
}

/// The rows of a Bronze, Silver or fact batch whose position `keep` accepts.
pub fn rows_after(
    batch: &RecordBatch,
    keep: impl Fn(&str, i32, i64) -> bool,
) -> Result<RecordBatch, ArrowError> {
    let column = |name: &str| {
        batch
            .column_by_name(name)
            .ok_or_else(|| ArrowError::SchemaError(format!("no column {name}")))
    };
    let source = column("source")?.as_string_opt::<i32>();
    let partition = column("partition")?.as_primitive_opt::<Int32Type>();
    let offset = column("offset")?.as_primitive_opt::<Int64Type>();
    let (Some(source), Some(partition), Some(offset)) = (source, partition, offset) else {
        return Err(ArrowError::SchemaError(
            "position columns of another type".into(),
        ));
    };
    let mask: BooleanArray = (0..batch.num_rows())
        .map(|i| Some(keep(source.value(i), partition.value(i), offset.value(i))))
        .collect();
    filter_record_batch(batch, &mask)
}

/// What `gold/dim_patient` needs of a Silver batch's rows, read from its columns.
pub struct PatientColumns<'a> {
    gender: &'a StringArray,
    age: &'a Int64Array,
    insurance: &'a StringArray,
    at: &'a TimestampMicrosecondArray,
    source: &'a StringArray,
    partition: &'a Int32Array,
    offset: &'a Int64Array,
}

impl<'a> PatientColumns<'a> {
    pub fn of(batch: &'a RecordBatch) -> Result<Self, ArrowError> {
        let column = |name: &str| {
            batch
                .column_by_name(name)
                .ok_or_else(|| ArrowError::SchemaError(format!("no column {name}")))
        };
        let text = |name: &str| {
            column(name)?
                .as_string_opt::<i32>()
                .ok_or_else(|| ArrowError::SchemaError(format!("{name} is not text")))
        };
        let int64 = |name: &str| {
            column(name)?
                .as_primitive_opt::<Int64Type>()
                .ok_or_else(|| ArrowError::SchemaError(format!("{name} is not an integer")))
        };
        Ok(PatientColumns {
            gender: text("gender")?,
            age: int64("age")?,
            insurance: text("insurance_type")?,
            at: column("event_timestamp")?
                .as_primitive_opt::<TimestampMicrosecondType>()
                .ok_or_else(|| ArrowError::SchemaError("event_timestamp".into()))?,
            source: text("source")?,
            partition: column("partition")?
                .as_primitive_opt::<Int32Type>()
                .ok_or_else(|| ArrowError::SchemaError("partition".into()))?,
            offset: int64("offset")?,
        })
    }

    /// Where row `i` came from.
    pub fn position(&self, i: usize) -> (&'a str, i32, i64) {
        (
            self.source.value(i),
            self.partition.value(i),
            self.offset.value(i),
        )
    }

    /// Gender, age and insurance type as row `i` states them, and its event time.
    pub fn version(&self, i: usize) -> (Option<&'a str>, Option<i64>, Option<&'a str>, i64) {
        let text = |a: &'a StringArray| (!a.is_null(i)).then(|| a.value(i));
        let age = (!self.age.is_null(i)).then(|| self.age.value(i));
        (
            text(self.gender),
            age,
            text(self.insurance),
            self.at.value(i),
        )
    }

    /// The tracked attributes row `i` states, in the dimension's order (the age as its band).
    pub fn stated(&self, i: usize) -> [Option<&'a str>; 3] {
        let (gender, age, insurance, _) = self.version(i);
        [gender, age.map(|a| AgeBand::of(Some(a)).label()), insurance]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The division gives the date chrono gives, around the epoch, at day boundaries and far out.
    #[test]
    fn date32_is_the_utc_date() {
        let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch");
        let by_chrono = |m: i64| {
            DateTime::<Utc>::from_timestamp_micros(m)
                .map(|t| (t.date_naive() - epoch).num_days() as i32)
                .unwrap_or(0)
        };
        let day = 86_400_000_000i64;
        let mut samples = vec![0, -1, 1, day - 1, day, -day, -day - 1, i64::MIN, i64::MAX];
        for d in [
            19_000i64,
            -719_162,
            2_932_896,
            89_999_999,
            90_000_000,
            90_000_001,
            -95_000_000,
        ] {
            samples.extend([d * day - 1, d * day, d * day + 1, d * day + 43_200_000_000]);
        }
        for m in samples {
            assert_eq!(date32(m), by_chrono(m), "{m}");
        }
    }
}
