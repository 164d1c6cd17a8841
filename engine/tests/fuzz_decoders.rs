//! Hostile input for every decoder (event JSON, FHIR R4, HL7 v2, EHR CSV): generated payloads
//! (random bytes, and well-formed payloads mutated with the characters that break parsers) and
//! the checked-in corpus of `fixtures/hostile/`. For each payload: no decoder panics, whatever
//! is not an event is a dead letter with a reason, and a good payload after it is taken as if
//! the hostile one had never come.
//!
//! Each generated property runs 10,000 cases (`CDS_FUZZ_CASES` raises or lowers it).

mod common;

use std::path::Path;

use cds_engine::decode::{Decoder, Format, DECODER_PANIC};
use cds_engine::model::SourcePosition;
use cds_engine::model::{Network, Pseudonymiser};
use cds_engine::silver::{Outcome, Silver};
use proptest::prelude::*;
use serde_json::{json, Value};

use common::formats::{csv_extract, fhir_bundle, hl7_message};

/// An admission of patient `n`, as event JSON (the builders below turn it into each format).
fn admission(n: u32) -> Value {
    json!({
        "event_id": format!("good-{n}"),
        "event_type": "ADMISSION",
        "event_timestamp": "2026-03-02T10:00:00+00:00",
        "patient_id": format!("PGOOD{n:05}"),
        "hospital_id": 1,
        "department": "ICU",
        "bed_id": format!("ICU-{:02}", n % 20 + 1),
        "gender": "F",
        "age": 71,
        "admission_time": "2026-03-02T10:00:00+00:00",
        "admission_priority": "Emergency",
        "diagnosis_code": "I21.4",
    })
}

/// Vitals of patient `n`, as event JSON.
fn vitals(n: u32) -> Value {
    json!({
        "event_id": format!("good-v{n}"),
        "event_type": "VITALS",
        "event_timestamp": "2026-03-02T10:05:00+00:00",
        "patient_id": format!("PGOOD{n:05}"),
        "hospital_id": 1,
        "department": "ICU",
        "bed_id": format!("ICU-{:02}", n % 20 + 1),
        "vitals": {"heart_rate": 118, "bp_systolic": 92, "oxygen_saturation": 91,
                   "respiratory_rate": 24, "temperature_c": 38.6},
    })
}

/// One good payload of event `e` in `format`. CSV payloads are data lines (the header is fed
/// first, see [`header`]).
fn payload(format: Format, e: &Value, n: u32) -> Vec<u8> {
    match format {
        Format::Json => e.to_string().into_bytes(),
        Format::Fhir => fhir_bundle(e, &format!("enc-{n}")).to_string().into_bytes(),
        Format::Hl7v2 => hl7_message(e, &format!("CTL{n}")).into_bytes(),
        Format::EhrCsv => csv_extract(std::slice::from_ref(e), true)
            .lines()
            .nth(1)
            .unwrap_or_default()
            .as_bytes()
            .to_vec(),
        Format::Auto => unreachable!("the tests name their format"),
    }
}

/// The header line of the CSV extract the payloads come from.
fn header() -> Vec<u8> {
    csv_extract(&[admission(0)], true)
        .lines()
        .next()
        .unwrap_or_default()
        .as_bytes()
        .to_vec()
}

fn position() -> SourcePosition {
    SourcePosition {
        source: "fuzz".into(),
        partition: 0,
        offset: 0,
    }
}

/// A decoder and a Silver stage as the pipeline has them, the CSV header already read.
struct Stream {
    decoder: Decoder,
    silver: Silver,
}

impl Stream {
    fn new(format: Format, network: &Network) -> Self {
        let mut s = Stream {
            decoder: Decoder::new(format, Pseudonymiser::new(common::KEY)),
            silver: Silver::new(network.clone()),
        };
        if format == Format::EhrCsv {
            let taken = s.feed(&header());
            assert!(taken.is_empty(), "the header line is no event: {taken:?}");
        }
        s
    }

    fn feed(&mut self, payload: &[u8]) -> Vec<Outcome> {
        let decoded = self.decoder.decode_payload(payload, position);
        decoded.into_iter().map(|d| self.silver.admit(d)).collect()
    }
}

/// The contract for one hostile payload's outcomes: no panic, every refusal with a reason.
fn check_hostile(what: &str, outcomes: &[Outcome]) -> Result<(), String> {
    for o in outcomes {
        if let Outcome::DeadLetter(d) = o {
            if d.reason_code == DECODER_PANIC {
                return Err(format!("{what}: a decoder panicked"));
            }
            if d.reason.trim().is_empty() || d.reason_code.is_empty() {
                return Err(format!("{what}: a dead letter without a reason: {d:?}"));
            }
        }
    }
    Ok(())
}

/// A good payload after the hostile one is still an event.
fn check_good_after(what: &str, outcomes: &[Outcome]) -> Result<(), String> {
    if outcomes.iter().any(|o| matches!(o, Outcome::Record(_))) {
        Ok(())
    } else {
        Err(format!(
            "{what}: the good payload after a hostile one was not taken: {outcomes:?}"
        ))
    }
}

/// Runs good, hostile, good through one stream.
fn sandwich(format: Format, network: &Network, hostile: &[u8]) -> Result<(), String> {
    let mut s = Stream::new(format, network);
    let before = s.feed(&payload(format, &admission(1), 1));
    check_good_after("the first good payload", &before)?;
    let outcomes = s.feed(hostile);
    check_hostile("hostile payload", &outcomes)?;
    let good = payload(format, &admission(2), 2);
    let after = s.feed(&good);
    // An edit may turn the hostile payload into this very event, its id included: then the
    // good one is rightly a duplicate (deduplication working), not a payload lost.
    let id_of = |o: &Outcome| match o {
        Outcome::Record(r) => Some(r.event.event_id.clone()),
        _ => None,
    };
    let good_ids: Vec<String> = Stream::new(format, network)
        .feed(&good)
        .iter()
        .filter_map(id_of)
        .collect();
    let hostile_took_it = outcomes
        .iter()
        .filter_map(id_of)
        .any(|id| good_ids.contains(&id));
    if hostile_took_it && after.iter().all(|o| matches!(o, Outcome::Duplicate(_))) {
        return Ok(());
    }
    check_good_after("after", &after)
}

/// Characters and fragments that break parsers: separators and escapes of each format,
/// multi-byte and invalid UTF-8, numbers out of range, deep nesting.
const TOKENS: &[&[u8]] = &[
    b"|",
    b"^",
    b"~",
    b"&",
    b"\\",
    b"\\X",
    b"\\XA\xc3\xa9B\\",
    b"\\X4\\",
    b"\\.br\\",
    b"\r",
    b"\n",
    b"\r\rMSH|",
    b"\"",
    b",",
    b"\"\"",
    b"{",
    b"}",
    b"[",
    b"]",
    b"[[[[[[[[[[[[",
    b":",
    b"\x00",
    b"\xef\xbb\xbf",
    b"\xff\xfe",
    b"\xc3",
    b"\xc3\xa9",
    b"\xf0\x9f\x92\xa5",
    b"1e999",
    b"-0",
    b"99999999999999999999",
    b"NaN",
    b"null",
    b"\"resourceType\":\"Bundle\"",
    b"\"entry\":",
    b"2026-02-30",
    b"+275760-09-13T00:00:00Z",
    b"19000101",
    b"99991231235959.9999+9999",
];

/// An edit of a payload: flip a byte, insert a token, cut the payload, or repeat a piece.
#[derive(Debug, Clone)]
enum Edit {
    Flip(usize, u8),
    Insert(usize, usize),
    Truncate(usize),
    Repeat(usize, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Flip(i, b)),
        (any::<usize>(), 0..TOKENS.len()).prop_map(|(i, t)| Edit::Insert(i, t)),
        any::<usize>().prop_map(Edit::Truncate),
        (any::<usize>(), 1usize..64).prop_map(|(i, n)| Edit::Repeat(i, n)),
    ]
}

fn apply(mut bytes: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for e in edits {
        let at = |i: usize, len: usize| if len == 0 { 0 } else { i % (len + 1) };
        match *e {
            Edit::Flip(i, b) if !bytes.is_empty() => {
                let i = i % bytes.len();
                bytes[i] = b;
            }
            Edit::Flip(..) => {}
            Edit::Insert(i, t) => {
                let i = at(i, bytes.len());
                bytes.splice(i..i, TOKENS[t].iter().copied());
            }
            Edit::Truncate(i) => bytes.truncate(at(i, bytes.len())),
            Edit::Repeat(i, n) => {
                let i = at(i, bytes.len());
                let end = (i + n).min(bytes.len());
                let piece = bytes[i..end].to_vec();
                bytes.splice(i..i, piece);
            }
        }
    }
    bytes
}

/// A hostile payload for `format`: random bytes, or a good payload (an admission or vitals of
/// patient 3, unlike the good payloads around it) with up to eight edits.
fn hostile(format: Format) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        1 => proptest::collection::vec(any::<u8>(), 0..300),
        4 => (any::<bool>(), proptest::collection::vec(edit(), 1..8)).prop_map(move |(vit, edits)| {
            let e = if vit { vitals(3) } else { admission(3) };
            apply(payload(format, &e, 3), &edits)
        }),
    ]
}

fn cases() -> u32 {
    std::env::var("CDS_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}

fn fuzz(format: Format) {
    let network = Network::default_network();
    let config = ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest::test_runner::TestRunner::new(config)
        .run(&hostile(format), |bytes| {
            sandwich(format, &network, &bytes).map_err(TestCaseError::fail)
        })
        .unwrap_or_else(|e| panic!("{format:?}: {e}"));
}

#[test]
fn event_json_survives_generated_payloads() {
    fuzz(Format::Json);
}

#[test]
fn fhir_survives_generated_payloads() {
    fuzz(Format::Fhir);
}

#[test]
fn hl7v2_survives_generated_payloads() {
    fuzz(Format::Hl7v2);
}

#[test]
fn ehr_csv_survives_generated_payloads() {
    fuzz(Format::EhrCsv);
}

/// The good payloads of each format are events (else the properties above prove nothing).
#[test]
fn the_good_payloads_are_events() {
    let network = Network::default_network();
    for format in [Format::Json, Format::Fhir, Format::Hl7v2, Format::EhrCsv] {
        for e in [admission(7), vitals(7)] {
            let mut s = Stream::new(format, &network);
            let outcomes = s.feed(&payload(format, &e, 7));
            assert!(
                check_good_after("good", &outcomes).is_ok(),
                "{format:?} {}: {outcomes:?}",
                e["event_type"]
            );
        }
    }
}

fn hostile_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hostile")
}

/// Corpus cases that are events, hostile only to a parser that mishandles them.
const TAKEN: &[&str] = &[
    "hl7v2-hex-escape-multibyte.hl7",
    "hl7v2-hex-escape-odd.hl7",
    "csv-without-event-id.csv",
];

/// The checked-in corpus, one case per file: `.hl7` (one message), `.fhir.json` (one
/// resource or Bundle), `.json` (one event), `.csv` (an extract: a header and rows).
#[test]
fn the_hostile_corpus_is_dead_lettered_and_the_stream_goes_on() {
    let network = Network::default_network();
    let mut seen = 0;
    let mut entries: Vec<_> = std::fs::read_dir(hostile_dir())
        .expect("the hostile corpus")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    entries.sort();
    for path in entries {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let bytes = std::fs::read(&path).expect("read a corpus file");
        let format = if name.ends_with(".fhir.json") {
            Format::Fhir
        } else if name.ends_with(".json") {
            Format::Json
        } else if name.ends_with(".hl7") {
            Format::Hl7v2
        } else if name.ends_with(".csv") {
            Format::EhrCsv
        } else {
            continue;
        };
        seen += 1;
        let outcomes = if format == Format::EhrCsv {
            // The corpus file brings its own header: a fresh decoder reads it first.
            let mut decoder = Decoder::new(format, Pseudonymiser::new(common::KEY));
            let mut silver = Silver::new(network.clone());
            let mut all = Vec::new();
            for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                all.extend(
                    decoder
                        .decode_payload(line, position)
                        .into_iter()
                        .map(|d| silver.admit(d)),
                );
            }
            all.extend(decoder.finish(position).map(Outcome::DeadLetter));
            all
        } else {
            let mut s = Stream::new(format, &network);
            let mut all = s.feed(&bytes);
            let after = s.feed(&payload(format, &admission(2), 2));
            check_good_after(&name, &after).unwrap_or_else(|e| panic!("{e}"));
            all.retain(|o| !matches!(o, Outcome::Duplicate(_)));
            all
        };
        check_hostile(&name, &outcomes).unwrap_or_else(|e| panic!("{e}"));
        if TAKEN.contains(&name.as_str()) {
            let Some(Outcome::Record(r)) = outcomes.first() else {
                panic!("{name}: not taken as an event: {outcomes:?}");
            };
            // Finding 2: a derived id holds no MRN.
            assert!(!r.event.event_id.contains("P900"), "{}", r.event.event_id);
            continue;
        }
        assert!(
            outcomes.iter().any(|o| matches!(o, Outcome::DeadLetter(_))),
            "{name}: no dead letter: {outcomes:?}"
        );
        // A payload refused whole is kept whole for a fix and a replay.
        if let [Outcome::DeadLetter(d)] = outcomes.as_slice() {
            if format != Format::EhrCsv {
                assert_eq!(
                    d.payload,
                    String::from_utf8_lossy(&bytes),
                    "{name}: the dead letter lost its payload"
                );
            }
        }
    }
    assert!(seen >= 15, "the corpus has {seen} cases");
}

/// A defect that panics a decoder costs one payload, not the stream (failure drill: a payload
/// holding the chaos marker panics the decoder; test builds only).
#[cfg(feature = "chaos")]
#[test]
fn a_panicking_decoder_dead_letters_the_payload_and_goes_on() {
    let network = Network::default_network();
    for format in [Format::Json, Format::Fhir, Format::Hl7v2, Format::EhrCsv] {
        let mut s = Stream::new(format, &network);
        let mut bad = payload(format, &admission(4), 4);
        bad.extend_from_slice(cds_engine::support::fault::DECODER_PANIC_MARKER);
        let outcomes = s.feed(&bad);
        let [Outcome::DeadLetter(d)] = outcomes.as_slice() else {
            panic!("{format:?}: {outcomes:?}");
        };
        assert_eq!(d.reason_code, DECODER_PANIC);
        assert_eq!(d.payload, String::from_utf8_lossy(&bad), "payload kept");
        assert!(!d.reason.contains("PGOOD"), "no payload in the reason");
        let after = s.feed(&payload(format, &admission(5), 5));
        check_good_after(&format!("{format:?}"), &after).unwrap_or_else(|e| panic!("{e}"));
    }
}
