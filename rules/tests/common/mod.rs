//! Helpers shared by the integration tests.
#![allow(clippy::unwrap_used)] // tests may panic
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use cds_rules::{Context, CtxDepartment, CtxEvent, CtxPatient, CtxVitals};

pub fn pack_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../cds-rules")
}

/// A fresh empty directory under the system temp dir.
pub fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!(
        "cds-rules-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

/// Copies the pack's rhai files and lib/ into a temp dir.
pub fn copy_pack(tag: &str) -> PathBuf {
    let d = temp_dir(tag);
    std::fs::create_dir_all(d.join("lib")).expect("lib");
    for sub in ["", "lib"] {
        for e in std::fs::read_dir(pack_dir().join(sub)).expect("read pack") {
            let p = e.expect("entry").path();
            if p.extension().is_some_and(|x| x == "rhai") {
                std::fs::copy(&p, d.join(sub).join(p.file_name().expect("name"))).expect("copy");
            }
        }
    }
    d
}

pub fn vitals_ctx(id: &str, now: &str, v: CtxVitals) -> Context {
    Context {
        event: CtxEvent {
            event_id: id.into(),
            event_type: "VITALS".into(),
            event_timestamp: now.into(),
            hospital_id: Some(1),
            department: Some("ICU".into()),
            vitals: Some(v),
            ..Default::default()
        },
        patient: CtxPatient {
            patient: "pk-42".into(),
            admitted: true,
            hospital_id: Some(1),
            department: Some("ICU".into()),
            admission_time: Some("2025-01-01T00:00:00Z".into()),
            ..Default::default()
        },
        department: CtxDepartment {
            hospital_id: Some(1),
            department: Some("ICU".into()),
            occupied: 5,
            bed_capacity: 10,
            occupancy_pct: 50.0,
            ..Default::default()
        },
        now: now.into(),
    }
}

pub fn sick() -> CtxVitals {
    CtxVitals {
        heart_rate: Some(135.0),
        bp_systolic: Some(85.0),
        bp_diastolic: Some(50.0),
        temperature_c: Some(39.5),
        oxygen_saturation: Some(88.0),
        respiratory_rate: Some(28.0),
        consciousness: Some("V".into()),
        supplemental_o2: Some(true),
    }
}

pub fn normal() -> CtxVitals {
    CtxVitals {
        heart_rate: Some(72.0),
        bp_systolic: Some(120.0),
        bp_diastolic: Some(80.0),
        temperature_c: Some(37.0),
        oxygen_saturation: Some(97.0),
        respiratory_rate: Some(16.0),
        consciousness: Some("A".into()),
        supplemental_o2: Some(false),
    }
}

/// A minimal valid rule with the given name, evoke and bodies.
pub fn rule_src(name: &str, evoke: &str, data_body: &str) -> String {
    format!(
        r#"const MLM = #{{
    maintenance: #{{ title: "T {name}", mlmname: "{name}", version: "1", institution: "i", author: "a", date: "2025-01-01", validation: "testing" }},
    library: #{{ purpose: "p", explanation: "e", keywords: ["k"], citations: [#{{ text: "c", url: "https://example.org/c" }}] }},
    knowledge: #{{ type: "data_driven", priority: 50, urgency: 50, evoke: {evoke}, suppress_minutes: 30 }},
}};
fn data(ctx) {{
    {data_body}
}}
fn logic(ctx, data) {{ true }}
fn action(ctx, data) {{ #{{ summary: "s", detail: "d", severity: "warning" }} }}
"#
    )
}
