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
    ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Float64Builder, Int32Builder,
    Int64Builder, ListBuilder, RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
};
use deltalake::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
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

/// One payload as received.
#[derive(Debug, Clone)]
pub struct BronzeRow {
    pub position: RowPosition,
    pub payload: Vec<u8>,
    pub ingested_at: i64,
    /// The event time, when the payload parsed (decides the partition).
    pub event_time: Option<i64>,
}

/// One Silver record (quarantined ones included); Gold-eligible ADT records also become a
/// patient-flow fact under their patient key.
#[derive(Debug, Clone)]
pub struct SilverRow {
    pub position: RowPosition,
    pub record: Box<SilverRecord>,
    /// The pseudonymised patient key, for Gold (None when quarantined).
    pub patient: Option<u64>,
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

/// Days since 1970-01-01 of a UTC instant in microseconds.
pub fn date32(micros: i64) -> i32 {
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
}

impl PositionColumns {
    fn new() -> Self {
        PositionColumns {
            source: StringBuilder::new(),
            partition: Int32Builder::new(),
            offset: Int64Builder::new(),
        }
    }
    fn push(&mut self, p: &RowPosition) {
        self.source.append_value(&p.source);
        self.partition.append_value(p.partition);
        self.offset.append_value(p.offset);
    }
    fn finish(mut self, columns: &mut Vec<ArrayRef>) {
        columns.push(Arc::new(self.source.finish()));
        columns.push(Arc::new(self.partition.finish()));
        columns.push(Arc::new(self.offset.finish()));
    }
}

fn utc_ts() -> TimestampMicrosecondBuilder {
    TimestampMicrosecondBuilder::new().with_timezone("UTC")
}

/// The Bronze batch of these rows.
pub fn bronze_batch(rows: &[BronzeRow]) -> Result<RecordBatch, ArrowError> {
    let mut payload = BinaryBuilder::new();
    let mut position = PositionColumns::new();
    let mut topic = StringBuilder::new();
    let mut ingested = utc_ts();
    let mut date = Date32Builder::new();
    for r in rows {
        payload.append_value(&r.payload);
        position.push(&r.position);
        match r.position.source.strip_prefix("kafka:") {
            Some(t) => topic.append_value(t),
            None => topic.append_null(),
        }
        ingested.append_value(r.ingested_at);
        date.append_value(date32(r.event_time.unwrap_or(r.ingested_at)));
    }
    let mut columns: Vec<ArrayRef> = vec![Arc::new(payload.finish())];
    position.finish(&mut columns);
    columns.push(Arc::new(topic.finish()));
    columns.push(Arc::new(ingested.finish()));
    columns.push(Arc::new(date.finish()));
    RecordBatch::try_new(Table::Bronze.schema(), columns)
}

fn opt_str(b: &mut StringBuilder, v: Option<&str>) {
    b.append_option(v);
}

/// The Silver batch of these rows.
pub fn silver_batch(rows: &[&SilverRow]) -> Result<RecordBatch, ArrowError> {
    let mut s: Vec<StringBuilder> = (0..10).map(|_| StringBuilder::new()).collect();
    let mut ts = utc_ts();
    let mut adm = utc_ts();
    let mut dis = utc_ts();
    let mut hospital = Int64Builder::new();
    let mut age = Int64Builder::new();
    let mut vitals: Vec<Float64Builder> = (0..6).map(|_| Float64Builder::new()).collect();
    let mut consciousness = StringBuilder::new();
    let mut o2 = BooleanBuilder::new();
    let mut flags = ListBuilder::new(StringBuilder::new()).with_field(flag_item());
    let mut quarantined = BooleanBuilder::new();
    let mut extra = StringBuilder::new();
    let mut position = PositionColumns::new();
    let mut date = Date32Builder::new();
    for r in rows {
        let e = &r.record.event;
        s[0].append_value(&e.event_id);
        opt_str(&mut s[1], e.event_type.as_deref());
        ts.append_value(micros(&e.event_timestamp));
        opt_str(&mut s[2], e.patient_id.as_deref());
        hospital.append_option(e.hospital_id);
        opt_str(&mut s[3], e.department.as_deref());
        opt_str(&mut s[4], e.bed_id.as_deref());
        opt_str(&mut s[5], e.gender.as_deref());
        age.append_option(e.age);
        adm.append_option(e.admission_time.as_ref().map(micros));
        dis.append_option(e.discharge_time.as_ref().map(micros));
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
        for (b, x) in vitals.iter_mut().zip(values) {
            b.append_option(x);
        }
        consciousness.append_option(v.and_then(|v| v.consciousness.as_deref()));
        o2.append_option(v.and_then(|v| v.supplemental_o2));
        for f in r.record.dq_flags.iter() {
            flags.values().append_value(f.name());
        }
        flags.append(true);
        quarantined.append_value(r.record.quarantined());
        if e.extra.is_empty() {
            extra.append_null();
        } else {
            extra.append_value(serde_json::Value::Object(e.extra.clone()).to_string());
        }
        position.push(&r.position);
        date.append_value(date32(micros(&e.event_timestamp)));
    }
    let mut it = s.into_iter().map(|mut b| Arc::new(b.finish()) as ArrayRef);
    let mut next = || {
        it.next()
            .unwrap_or_else(|| unreachable!("ten string columns"))
    };
    let mut columns: Vec<ArrayRef> = vec![next(), next(), Arc::new(ts.finish()), next()];
    columns.push(Arc::new(hospital.finish()));
    columns.push(next());
    columns.push(next());
    columns.push(next());
    columns.push(Arc::new(age.finish()));
    columns.push(Arc::new(adm.finish()));
    columns.push(Arc::new(dis.finish()));
    columns.push(next());
    columns.push(next());
    columns.push(next());
    for mut v in vitals {
        columns.push(Arc::new(v.finish()));
    }
    columns.push(Arc::new(consciousness.finish()));
    columns.push(Arc::new(o2.finish()));
    columns.push(Arc::new(flags.finish()));
    columns.push(Arc::new(quarantined.finish()));
    columns.push(Arc::new(extra.finish()));
    position.finish(&mut columns);
    columns.push(Arc::new(date.finish()));
    RecordBatch::try_new(Table::Silver.schema(), columns)
}

/// Whether a Silver row is a patient-flow fact: a Gold-eligible ADT record.
pub fn is_flow_fact(r: &SilverRow) -> bool {
    r.patient.is_some() && r.record.kind.is_some_and(EventType::is_adt)
}

/// The patient-flow facts of these rows (the caller passes only [`is_flow_fact`] rows).
/// The patient appears only as the pseudonymous key; the age only as its band.
pub fn flow_batch(rows: &[&SilverRow]) -> Result<RecordBatch, ArrowError> {
    let mut s: Vec<StringBuilder> = (0..8).map(|_| StringBuilder::new()).collect();
    let mut ts = utc_ts();
    let mut adm = utc_ts();
    let mut dis = utc_ts();
    let mut hospital = Int64Builder::new();
    let mut los = Float64Builder::new();
    let mut age = StringBuilder::new();
    let mut position = PositionColumns::new();
    let mut date = Date32Builder::new();
    for r in rows {
        let e = &r.record.event;
        s[0].append_value(&e.event_id);
        s[1].append_value(r.record.kind.map_or("", EventType::as_str));
        ts.append_value(micros(&e.event_timestamp));
        s[2].append_value(display(r.patient.unwrap_or_default()));
        hospital.append_option(e.hospital_id);
        opt_str(&mut s[3], e.department.as_deref());
        opt_str(&mut s[4], e.bed_id.as_deref());
        adm.append_option(e.admission_time.as_ref().map(micros));
        dis.append_option(e.discharge_time.as_ref().map(micros));
        let stay = match (r.record.kind, e.admission_time, e.discharge_time) {
            (Some(EventType::Discharge), Some(a), Some(d)) => {
                Some((d - a).num_microseconds().unwrap_or(0) as f64 / 3.6e9)
            }
            _ => None,
        };
        los.append_option(stay);
        opt_str(&mut s[5], e.admission_priority.as_deref());
        opt_str(&mut s[6], e.diagnosis_code.as_deref());
        opt_str(&mut s[7], e.gender.as_deref());
        age.append_value(AgeBand::of(e.age).label());
        position.push(&r.position);
        date.append_value(date32(micros(&e.event_timestamp)));
    }
    let mut it = s.into_iter().map(|mut b| Arc::new(b.finish()) as ArrayRef);
    let mut next = || {
        it.next()
            .unwrap_or_else(|| unreachable!("eight string columns"))
    };
    let mut columns: Vec<ArrayRef> = vec![next(), next(), Arc::new(ts.finish()), next()];
    columns.push(Arc::new(hospital.finish()));
    columns.push(next());
    columns.push(next());
    columns.push(Arc::new(adm.finish()));
    columns.push(Arc::new(dis.finish()));
    columns.push(Arc::new(los.finish()));
    columns.push(next());
    columns.push(next());
    columns.push(next());
    columns.push(Arc::new(age.finish()));
    position.finish(&mut columns);
    columns.push(Arc::new(date.finish()));
    RecordBatch::try_new(Table::FactPatientFlow.schema(), columns)
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
