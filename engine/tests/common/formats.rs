//! The same events in the hospital formats the engine takes: FHIR R4 Bundles, HL7 v2
//! messages (and their cancels), a daily CSV extract. Built here from the model's JSON, by code
//! independent of the engine's decoders, so that a decoder is checked against another reading of
//! the standard.

use chrono::{DateTime, Datelike, Duration as Days, FixedOffset, NaiveDate};
use serde_json::{json, Value};

pub fn time(v: &Value, field: &str) -> Option<DateTime<FixedOffset>> {
    v[field]
        .as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
}

/// A birth date that gives `age` full years at `at` (its birthday is a hundred days behind).
pub fn birth_date(age: i64, at: DateTime<FixedOffset>) -> NaiveDate {
    let d = at.date_naive();
    let year = d.year() - age as i32;
    let same_day = NaiveDate::from_ymd_opt(year, d.month(), d.day().min(28)).expect("date");
    same_day - Days::days(100)
}

/// Which encounter each event belongs to: a patient's stay from one ADMISSION to the next.
pub fn encounter_ids(events: &[Value]) -> Vec<String> {
    let mut stays: std::collections::HashMap<String, u32> = std::collections::HashMap::new();
    events
        .iter()
        .map(|e| {
            let p = e["patient_id"].as_str().unwrap_or_default().to_owned();
            let n = stays.entry(p.clone()).or_insert(0);
            if e["event_type"] == "ADMISSION" {
                *n += 1;
            }
            format!("enc-{p}-{n}")
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// FHIR R4

pub fn fhir_bundle(e: &Value, encounter: &str) -> Value {
    let patient = e["patient_id"].as_str().unwrap_or_default();
    let at = e["event_timestamp"].clone();
    let mut entries = Vec::new();
    if e["event_type"] == "VITALS" {
        let v = &e["vitals"];
        let obs = |id: &str, code: &str, value: Value, unit: &str| {
            json!({"resource": {"resourceType": "Observation", "id": format!("{}-{id}", e["event_id"].as_str().unwrap_or_default()),
                "status": "final",
                "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}]}],
                "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
                "subject": {"reference": format!("Patient/{patient}")},
                "encounter": {"reference": format!("Encounter/{encounter}")},
                "effectiveDateTime": at,
                "valueQuantity": {"value": value, "system": "http://unitsofmeasure.org", "code": unit}}})
        };
        if !v["heart_rate"].is_null() {
            entries.push(obs("hr", "8867-4", v["heart_rate"].clone(), "/min"));
        }
        if !v["respiratory_rate"].is_null() {
            entries.push(obs("rr", "9279-1", v["respiratory_rate"].clone(), "/min"));
        }
        if !v["oxygen_saturation"].is_null() {
            entries.push(obs("spo2", "59408-5", v["oxygen_saturation"].clone(), "%"));
        }
        if let Some(t) = v["temperature_c"].as_f64() {
            entries.push(obs("temp", "8310-5", json!(t), "Cel"));
        } else if let Some(t) = v["temperature_f"].as_f64() {
            entries.push(obs("temp", "8310-5", json!(t), "[degF]"));
        }
        if !v["bp_systolic"].is_null() || !v["bp_diastolic"].is_null() {
            let mut panel = obs("bp", "85354-9", Value::Null, "");
            let r = &mut panel["resource"];
            if let Some(o) = r.as_object_mut() {
                o.remove("valueQuantity");
            }
            let mut components = Vec::new();
            for (code, field) in [("8480-6", "bp_systolic"), ("8462-4", "bp_diastolic")] {
                if !v[field].is_null() {
                    components.push(
                        json!({"code": {"coding": [{"system": "http://loinc.org", "code": code}]},
                        "valueQuantity": {"value": v[field], "code": "mm[Hg]"}}),
                    );
                }
            }
            r["component"] = json!(components);
            entries.push(panel);
        }
        return json!({"resourceType": "Bundle", "type": "collection", "entry": entries});
    }
    let mut p = json!({"resourceType": "Patient", "id": patient});
    if let Some(g) = e["gender"].as_str() {
        p["gender"] = json!(match g {
            "M" => "male",
            "F" => "female",
            "O" => "other",
            _ => "unknown",
        });
    }
    if let (Some(age), Some(t)) = (e["age"].as_i64(), time(e, "event_timestamp")) {
        p["birthDate"] = json!(birth_date(age, t).to_string());
    }
    entries.push(json!({"resource": p}));
    let status = if e["event_type"] == "DISCHARGE" {
        "finished"
    } else {
        "in-progress"
    };
    let mut period = json!({"start": e["admission_time"]});
    if status == "finished" {
        period["end"] = e["discharge_time"].clone();
    }
    let mut enc = json!({"resourceType": "Encounter", "id": encounter, "status": status,
    "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
    "subject": {"reference": format!("Patient/{patient}")},
    "period": period,
    "serviceProvider": {"reference": format!("Organization/{}", e["hospital_id"])},
    "location": [
        {"location": {"display": e["department"]}, "status": "active",
         "physicalType": {"coding": [{"code": "wa"}]}, "period": {"start": at}},
        {"location": {"display": e["bed_id"]}, "status": "active",
         "physicalType": {"coding": [{"code": "bd"}]}}
    ]});
    if let Some(p) = e["admission_priority"].as_str() {
        let code = match p {
            "Emergency" => "EM",
            "Urgent" => "UR",
            _ => "EL",
        };
        enc["priority"] = json!({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActPriority", "code": code}]});
    }
    if let Some(d) = e["diagnosis_code"].as_str() {
        enc["reasonCode"] =
            json!([{"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": d}]}]);
    }
    entries.push(json!({"resource": enc}));
    json!({"resourceType": "Bundle", "type": "transaction", "entry": entries})
}

pub fn dtm(v: &Value, field: &str) -> String {
    time(v, field)
        .map(|t| t.format("%Y%m%d%H%M%S%.3f%z").to_string())
        .unwrap_or_default()
}

pub fn hl7_message(e: &Value, control: &str) -> String {
    let (kind, trigger) = match e["event_type"].as_str().unwrap_or_default() {
        "ADMISSION" => ("ADT", "A01"),
        "TRANSFER" => ("ADT", "A02"),
        "DISCHARGE" => ("ADT", "A03"),
        _ => ("ORU", "R01"),
    };
    let at = dtm(e, "event_timestamp");
    let mut m = format!(
        "MSH|^~\\&|SIM|H{h}|CDS|H{h}|{at}||{kind}^{trigger}|{control}|P|2.5.1\r",
        h = e["hospital_id"]
    );
    if kind == "ADT" {
        m.push_str(&format!("EVN|{trigger}|{at}|||||{at}\r"));
    }
    let sex = e["gender"].as_str().unwrap_or("U");
    let born = match (e["age"].as_i64(), time(e, "event_timestamp")) {
        (Some(age), Some(t)) => birth_date(age, t).format("%Y%m%d").to_string(),
        _ => String::new(),
    };
    m.push_str(&format!(
        "PID|1||{}^^^SIM^MR||DOE^J||{born}|{sex}\r",
        e["patient_id"].as_str().unwrap_or_default()
    ));
    let priority = match e["admission_priority"].as_str() {
        Some("Emergency") => "E",
        Some("Urgent") => "U",
        Some(_) => "R",
        None => "",
    };
    let bed = e["bed_id"].as_str().unwrap_or_default();
    let mut pv1: Vec<String> = vec![String::new(); 46];
    pv1[0] = "PV1".into();
    pv1[1] = "1".into();
    pv1[2] = "I".into();
    pv1[3] = format!(
        "{}^^{}^H{}",
        e["department"].as_str().unwrap_or_default(),
        bed,
        e["hospital_id"]
    );
    pv1[4] = priority.into();
    pv1[44] = dtm(e, "admission_time");
    pv1[45] = dtm(e, "discharge_time");
    m.push_str(&pv1.join("|"));
    m.push('\r');
    if let Some(d) = e["diagnosis_code"].as_str() {
        m.push_str(&format!("DG1|1||{d}^^I10\r"));
    }
    if kind == "ORU" {
        m.push_str(&format!("OBR|1|||85353-1^Vital signs^LN|||{at}\r"));
        let v = &e["vitals"];
        let mut n = 0;
        for (code, field, unit) in [
            ("8867-4", "heart_rate", "/min"),
            ("8480-6", "bp_systolic", "mm[Hg]"),
            ("8462-4", "bp_diastolic", "mm[Hg]"),
            ("8310-5", "temperature_c", "Cel"),
            ("8310-5", "temperature_f", "[degF]"),
            ("59408-5", "oxygen_saturation", "%"),
            ("9279-1", "respiratory_rate", "/min"),
        ] {
            if let Some(x) = v[field].as_f64() {
                n += 1;
                m.push_str(&format!(
                    "OBX|{n}|NM|{code}^{field}^LN||{x}|{unit}^^UCUM|||||F|||{at}\r"
                ));
            }
        }
    }
    m
}

pub fn cancel_message(e: &Value, trigger: &str, control: &str) -> String {
    // A cancel carries the patient and the visit as the message it cancels did.
    let at = dtm(e, "event_timestamp");
    hl7_message(e, control)
        .replacen("ADT^A01", &format!("ADT^{trigger}"), 1)
        .replacen("ADT^A03", &format!("ADT^{trigger}"), 1)
        .replacen(&format!("EVN|A01|{at}"), &format!("EVN|{trigger}|{at}"), 1)
        .replacen(&format!("EVN|A03|{at}"), &format!("EVN|{trigger}|{at}"), 1)
}

pub fn csv_field(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) if s.contains([',', '"']) => format!("\"{}\"", s.replace('"', "\"\"")),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A daily extract of `events` as CSV with the column names of a typical EHR export; without
/// `record_id` the extract has no event id column, as many do.
pub fn csv_extract(events: &[Value], record_id: bool) -> String {
    let all_columns = [
        ("record_id", "event_id"),
        ("movement", "event_type"),
        ("event_time", "event_timestamp"),
        ("mrn", "patient_id"),
        ("facility", "hospital_id"),
        ("ward", "department"),
        ("bed", "bed_id"),
        ("sex", "gender"),
        ("age", "age"),
        ("admit_time", "admission_time"),
        ("discharge_time", "discharge_time"),
        ("admission_type", "admission_priority"),
        ("primary_dx", "diagnosis_code"),
        ("payer", "insurance_type"),
    ];
    let columns: Vec<(&str, &str)> = all_columns
        .into_iter()
        .filter(|(name, _)| record_id || *name != "record_id")
        .collect();
    let vitals = [
        ("heart_rate", "heart_rate"),
        ("bp_systolic", "bp_systolic"),
        ("bp_diastolic", "bp_diastolic"),
        ("temperature_c", "temperature_c"),
        ("temperature_f", "temperature_f"),
        ("spo2", "oxygen_saturation"),
        ("respiratory_rate", "respiratory_rate"),
    ];
    let mut csv = String::new();
    let header: Vec<&str> = columns
        .iter()
        .map(|c| c.0)
        .chain(vitals.iter().map(|c| c.0))
        .collect();
    csv.push_str(&header.join(","));
    csv.push_str("\r\n");
    for e in events {
        let row: Vec<String> = columns
            .iter()
            .map(|(_, f)| {
                // Times in the extract's plain form where they are UTC.
                match e[*f].as_str() {
                    Some(t) if f.ends_with("time") || *f == "event_timestamp" => {
                        t.replace('T', " ").trim_end_matches('Z').to_owned()
                    }
                    _ => csv_field(&e[*f]),
                }
            })
            .chain(vitals.iter().map(|(_, f)| csv_field(&e["vitals"][*f])))
            .collect();
        csv.push_str(&row.join(","));
        csv.push_str("\r\n");
    }
    csv
}
