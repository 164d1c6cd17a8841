//! HL7 v2 messages: the parser (MSH encoding characters, escapes, repetitions, components) and
//! the mapping of ADT^A01/A02/A03/A04/A08/A11/A13 and ORU^R01 onto the event model.
//!
//! Pure functions from bytes to events; what the mapping needs beyond one message (where an
//! ORU's patient lies when the message has no PV1) comes from [`super::Census`].

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, TimeZone};
use serde_json::Value;

use super::{Census, FormatError, Place};
use crate::model::{Event, Timestamp, Vitals};

/// The separators a message declares in MSH-1 and MSH-2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encoding {
    pub field: u8,
    pub component: u8,
    pub repetition: u8,
    pub escape: Option<u8>,
    pub subcomponent: u8,
}

impl Default for Encoding {
    fn default() -> Self {
        Encoding {
            field: b'|',
            component: b'^',
            repetition: b'~',
            escape: Some(b'\\'),
            subcomponent: b'&',
        }
    }
}

/// One segment: its name and its fields, each a list of repetitions of components of
/// subcomponents, unescaped. For MSH, field 1 is the field separator and field 2 the encoding
/// characters, so that field numbers match the standard's (MSH-9 is `field(9)`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub name: String,
    fields: Vec<Vec<Vec<Vec<String>>>>,
}

impl Segment {
    /// Component `c` (1-based) of the first repetition of field `f` (1-based); "" if absent.
    pub fn get(&self, f: usize, c: usize) -> &str {
        self.sub(f, 0, c, 1)
    }

    /// Subcomponent `s` of component `c` of repetition `r` (0-based) of field `f`.
    pub fn sub(&self, f: usize, r: usize, c: usize, s: usize) -> &str {
        self.fields
            .get(f)
            .and_then(|reps| reps.get(r))
            .and_then(|comps| comps.get(c.wrapping_sub(1)))
            .and_then(|subs| subs.get(s.wrapping_sub(1)))
            .map_or("", String::as_str)
    }

    /// How many repetitions field `f` has.
    pub fn repetitions(&self, f: usize) -> usize {
        self.fields.get(f).map_or(0, Vec::len)
    }
}

/// A parsed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub encoding: Encoding,
    pub segments: Vec<Segment>,
}

impl Message {
    /// The first segment with this name.
    pub fn segment(&self, name: &str) -> Option<&Segment> {
        self.segments.iter().find(|s| s.name == name)
    }

    /// Every segment with this name, in order.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Segment> + 'a {
        self.segments.iter().filter(move |s| s.name == name)
    }

    /// MSH: always present in a parsed message.
    pub fn msh(&self) -> &Segment {
        &self.segments[0]
    }

    /// MSH-9.1 and MSH-9.2: `("ADT", "A01")`.
    pub fn kind(&self) -> (&str, &str) {
        (self.msh().get(9, 1), self.msh().get(9, 2))
    }

    /// MSH-10, the message control id.
    pub fn control_id(&self) -> &str {
        self.msh().get(10, 1)
    }
}

/// Parses the structure of a message. Segments end at CR, LF or CRLF; MLLP framing bytes
/// around the message are ignored.
pub fn parse(bytes: &[u8]) -> Result<Message, FormatError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| FormatError::Hl7("the message is not UTF-8 text".into()))?;
    let text = text.trim_matches(|c: char| c == '\u{b}' || c == '\u{1c}' || c.is_whitespace());
    let raw = text.as_bytes();
    if raw.len() < 8 || !raw.starts_with(b"MSH") {
        return Err(FormatError::Hl7(
            "the message does not start with MSH".into(),
        ));
    }
    let field = raw[3];
    let declared: Vec<u8> = raw[4..]
        .iter()
        .copied()
        .take_while(|b| *b != field && *b != b'\r' && *b != b'\n')
        .collect();
    if declared.len() < 2 || field.is_ascii_alphanumeric() {
        return Err(FormatError::Hl7(
            "MSH-2 does not declare the encoding characters".into(),
        ));
    }
    let encoding = Encoding {
        field,
        component: declared[0],
        repetition: declared[1],
        escape: declared.get(2).copied(),
        subcomponent: declared.get(3).copied().unwrap_or(b'&'),
    };
    let mut separators = vec![field, encoding.component, encoding.repetition];
    separators.extend(encoding.escape);
    separators.push(encoding.subcomponent);
    let mut unique = separators.clone();
    unique.sort_unstable();
    unique.dedup();
    if unique.len() != separators.len() {
        return Err(FormatError::Hl7(
            "MSH declares the same character for two separators".into(),
        ));
    }
    let mut segments = Vec::new();
    for line in text.split(['\r', '\n']).filter(|l| !l.trim().is_empty()) {
        segments.push(parse_segment(line, &encoding)?);
    }
    Ok(Message { encoding, segments })
}

fn parse_segment(line: &str, enc: &Encoding) -> Result<Segment, FormatError> {
    let fs = char::from(enc.field);
    let mut parts = line.split(fs);
    let name = parts.next().unwrap_or_default().to_owned();
    if name.len() != 3 || !name.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(FormatError::Hl7(format!(
            "invalid segment name {:?}",
            name.chars().take(8).collect::<String>()
        )));
    }
    let mut fields: Vec<Vec<Vec<Vec<String>>>> = vec![Vec::new()];
    if name == "MSH" {
        fields.push(vec![vec![vec![fs.to_string()]]]);
        let declared = parts.next().unwrap_or_default();
        fields.push(vec![vec![vec![declared.to_owned()]]]);
    }
    for raw in parts {
        fields.push(parse_field(raw, enc));
    }
    Ok(Segment { name, fields })
}

fn parse_field(raw: &str, enc: &Encoding) -> Vec<Vec<Vec<String>>> {
    if raw.is_empty() {
        return Vec::new();
    }
    raw.split(char::from(enc.repetition))
        .map(|rep| {
            rep.split(char::from(enc.component))
                .map(|comp| {
                    comp.split(char::from(enc.subcomponent))
                        // `""` is HL7's explicit null: no value here.
                        .map(|s| {
                            if s == "\"\"" {
                                String::new()
                            } else {
                                unescape(s, enc)
                            }
                        })
                        .collect()
                })
                .collect()
        })
        .collect()
}

/// Resolves the escape sequences of HL7 v2 (2.7 chapter 2.7): `\F\ \S\ \T\ \R\ \E\` to the
/// declared separators, `\Xhh..\` to the bytes it spells, `\.br\` to a line break; formatting
/// escapes (`\H\ \N\` and the other `\.xx\`) are dropped; an unknown or unterminated one is
/// kept as written.
pub fn unescape(s: &str, enc: &Encoding) -> String {
    let Some(esc) = enc.escape.map(char::from) else {
        return s.to_owned();
    };
    if !s.contains(esc) {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find(esc) {
        out.push_str(&rest[..start]);
        let after = &rest[start + esc.len_utf8()..];
        let Some(end) = after.find(esc) else {
            out.push_str(&rest[start..]);
            return out;
        };
        let body = &after[..end];
        match body {
            "F" => out.push(char::from(enc.field)),
            "S" => out.push(char::from(enc.component)),
            "T" => out.push(char::from(enc.subcomponent)),
            "R" => out.push(char::from(enc.repetition)),
            "E" => out.push(esc),
            "H" | "N" => {}
            ".br" => out.push('\n'),
            // Hex digits are ASCII: a body with any other character is not a hex escape (and
            // slicing it by pairs of bytes would cut a character in two).
            b if b.starts_with('X') && b.is_ascii() && b.len() > 1 && (b.len() - 1) % 2 == 0 => {
                let bytes: Option<Vec<u8>> = (1..b.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&b[i..i + 2], 16).ok())
                    .collect();
                match bytes {
                    Some(bytes) => out.push_str(&String::from_utf8_lossy(&bytes)),
                    None => {
                        out.push(esc);
                        out.push_str(body);
                        out.push(esc);
                    }
                }
            }
            b if b.starts_with('.') => {}
            _ => {
                out.push(esc);
                out.push_str(body);
                out.push(esc);
            }
        }
        rest = &after[end + esc.len_utf8()..];
    }
    out.push_str(rest);
    out
}

/// Parses an HL7 DTM (`YYYY[MM[DD[HH[MM[SS[.S+]]]]]][+/-ZZZZ]`). Without an offset the time
/// is taken as UTC.
pub fn parse_dtm(s: &str) -> Option<Timestamp> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let (digits, offset) = match s.find(['+', '-']) {
        Some(i) => (&s[..i], Some(&s[i..])),
        None => (s, None),
    };
    let (main, fraction) = match digits.split_once('.') {
        Some((m, f)) => (m, Some(f)),
        None => (digits, None),
    };
    if !main.bytes().all(|b| b.is_ascii_digit()) || main.len() < 4 || main.len() % 2 != 0 {
        return None;
    }
    let num = |a: usize, b: usize, default: u32| -> Option<u32> {
        match main.get(a..b) {
            Some(x) => x.parse().ok(),
            None => Some(default),
        }
    };
    let date =
        NaiveDate::from_ymd_opt(main.get(0..4)?.parse().ok()?, num(4, 6, 1)?, num(6, 8, 1)?)?;
    let mut micros = 0u32;
    if let Some(f) = fraction {
        if f.is_empty() || f.len() > 6 || !f.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        micros = format!("{f:0<6}").parse().ok()?;
    }
    let time = date.and_hms_micro_opt(num(8, 10, 0)?, num(10, 12, 0)?, num(12, 14, 0)?, micros)?;
    let offset = match offset {
        None => FixedOffset::east_opt(0)?,
        Some(o) => {
            let sign = if o.starts_with('-') { -1 } else { 1 };
            let d = &o[1..];
            if d.len() != 4 || !d.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let h: i32 = d[0..2].parse().ok()?;
            let m: i32 = d[2..4].parse().ok()?;
            FixedOffset::east_opt(sign * (h * 3600 + m * 60))?
        }
    };
    local(offset, time)
}

fn local(offset: FixedOffset, time: NaiveDateTime) -> Option<DateTime<FixedOffset>> {
    offset.from_local_datetime(&time).single()
}

/// The trigger events this mapping takes.
const ADT_TRIGGERS: [&str; 7] = ["A01", "A02", "A03", "A04", "A08", "A11", "A13"];

/// Whether a message is of a type the mapping takes (ADT^A01.. and ORU^R01).
pub fn supported(message: &Message) -> bool {
    match message.kind() {
        ("ADT", t) => ADT_TRIGGERS.contains(&t),
        ("ORU", "R01") => true,
        _ => false,
    }
}

/// Maps one message onto events of the model (an A08 onto a `PATIENT_UPDATE`).
pub fn to_events(bytes: &[u8], census: &mut Census) -> Result<Vec<Event>, FormatError> {
    let message = parse(bytes)?;
    map(&message, census)
}

/// Maps a parsed message.
pub fn map(message: &Message, census: &mut Census) -> Result<Vec<Event>, FormatError> {
    let (kind, trigger) = message.kind();
    if !supported(message) {
        return Err(FormatError::Unsupported(format!(
            "HL7 v2 message type {kind}^{trigger}"
        )));
    }
    let msh = message.msh();
    let control = message.control_id();
    if control.is_empty() {
        return Err(FormatError::Hl7(
            "MSH-10 (message control id) is empty".into(),
        ));
    }
    let pid = message
        .segment("PID")
        .ok_or_else(|| FormatError::Hl7("no PID segment".into()))?;
    let patient = patient_id(pid)
        .ok_or_else(|| FormatError::Hl7("PID-3 (patient identifier) is empty".into()))?;
    let evn = message.segment("EVN");
    let pv1 = message.segment("PV1");
    // Event time: EVN-6 (event occurred), else EVN-2 (recorded), else MSH-7.
    let time_of = |f: &str, what: &str| -> Result<Option<Timestamp>, FormatError> {
        if f.trim().is_empty() {
            return Ok(None);
        }
        parse_dtm(f)
            .map(Some)
            .ok_or_else(|| FormatError::Hl7(format!("{what} is not an HL7 date/time: {f:?}")))
    };
    let mut at = None;
    if let Some(evn) = evn {
        at = time_of(evn.get(6, 1), "EVN-6")?.or(time_of(evn.get(2, 1), "EVN-2")?);
    }
    let at = match at {
        Some(t) => t,
        None => time_of(msh.get(7, 1), "MSH-7")?
            .ok_or_else(|| FormatError::Hl7("no event time (EVN-6, EVN-2, MSH-7)".into()))?,
    };
    let event_at = if kind == "ORU" {
        // The time the vitals were taken: OBX-14, else OBR-7.
        let obx_time = message
            .all("OBX")
            .map(|s| s.get(14, 1))
            .find(|t| !t.is_empty());
        let obr_time = message
            .segment("OBR")
            .map(|s| s.get(7, 1))
            .filter(|t| !t.is_empty());
        match obx_time.or(obr_time) {
            Some(t) => time_of(t, "OBX-14/OBR-7")?.unwrap_or(at),
            None => at,
        }
    } else {
        at
    };

    let mut e = Event {
        event_id: format!("hl7:{}:{}", msh.get(3, 1), control),
        event_timestamp: event_at,
        patient_id: Some(patient.clone()),
        ..Event::default()
    };
    e.gender = Some(sex(pid.get(8, 1)).to_owned());
    if let Some(born) = parse_dtm(pid.get(7, 1)) {
        e.age = Some(age_at(born.date_naive(), &event_at));
    }
    let mut place = pv1.and_then(place_of);
    if let Some(pv1) = pv1 {
        e.admission_time = time_of(pv1.get(44, 1), "PV1-44")?;
        e.discharge_time = time_of(pv1.get(45, 1), "PV1-45")?;
        e.admission_priority = priority(pv1.get(4, 1)).map(str::to_owned);
        let class = pv1.get(2, 1);
        if !class.is_empty() {
            e.extra.insert("patient_class".into(), Value::from(class));
        }
        let visit = pv1.get(19, 1);
        if !visit.is_empty() {
            e.extra.insert("visit_number".into(), Value::from(visit));
        }
    }
    if let Some(dg1) = message.segment("DG1") {
        let code = dg1.get(3, 1);
        if !code.is_empty() {
            e.diagnosis_code = Some(code.to_owned());
        }
    }
    if let Some(in1) = message.segment("IN1") {
        let plan = in1.get(2, 1);
        if !plan.is_empty() {
            e.insurance_type = Some(plan.to_owned());
        }
    }
    let event_type = match (kind, trigger) {
        ("ADT", "A01" | "A04") => "ADMISSION",
        ("ADT", "A02") => "TRANSFER",
        ("ADT", "A03") => "DISCHARGE",
        ("ADT", "A11") => "CANCEL_ADMISSION",
        ("ADT", "A13") => "CANCEL_DISCHARGE",
        ("ADT", _) => {
            // A08 updates patient information: new demographics, no movement. What PID leaves
            // empty is not stated; the place is not the update's to say.
            e.event_type = Some("PATIENT_UPDATE".to_owned());
            if pid.get(8, 1).trim().is_empty() {
                e.gender = None;
            }
            e.admission_time = None;
            e.discharge_time = None;
            e.admission_priority = None;
            return Ok(vec![e]);
        }
        _ => "VITALS",
    };
    e.event_type = Some(event_type.to_owned());
    if event_type == "DISCHARGE" && e.discharge_time.is_none() {
        e.discharge_time = Some(at);
    }
    if event_type == "VITALS" {
        e.vitals = Some(vitals(message)?);
        if place.is_none() {
            place = census.place_of(&patient).cloned();
        }
    }
    if let Some(p) = &place {
        e.hospital_id = p.hospital_id;
        e.department = p.department.clone();
        e.bed_id = p.bed_id.clone();
    }
    census.observe(&patient, event_type, place.as_ref());
    Ok(vec![e])
}

/// PID-3: the identifier of type MR (medical record number) if any, else the first.
fn patient_id(pid: &Segment) -> Option<String> {
    let n = pid.repetitions(3);
    let pick = (0..n)
        .find(|&r| pid.sub(3, r, 5, 1) == "MR")
        .or((n > 0).then_some(0))?;
    let id = pid.sub(3, pick, 1, 1).trim();
    (!id.is_empty()).then(|| id.to_owned())
}

/// PID-8 (HL7 table 0001) to the model's M, F, O, U.
fn sex(s: &str) -> &'static str {
    match s.trim() {
        "M" => "M",
        "F" => "F",
        "O" | "A" | "N" => "O",
        _ => "U",
    }
}

/// PV1-4 admission type (HL7 table 0007): E emergency, U urgent, R/C elective.
fn priority(s: &str) -> Option<&'static str> {
    match s.trim() {
        "E" | "A" | "T" => Some("Emergency"),
        "U" => Some("Urgent"),
        "R" | "C" | "EL" => Some("Elective"),
        _ => None,
    }
}

/// PV1-3 assigned location (point of care ^ room ^ bed ^ facility) and PV1-10 hospital
/// service: the point of care names the department (or, when empty, the service); the
/// facility's number is the hospital.
fn place_of(pv1: &Segment) -> Option<Place> {
    let point_of_care = pv1.get(3, 1).trim();
    let service = pv1.get(10, 1).trim();
    let facility = pv1.get(3, 4).trim();
    let department = if point_of_care.is_empty() {
        service
    } else {
        point_of_care
    };
    if department.is_empty() && facility.is_empty() {
        return None;
    }
    let bed = pv1.get(3, 3).trim();
    let room = pv1.get(3, 2).trim();
    Some(Place {
        hospital_id: super::hospital_number(facility),
        department: (!department.is_empty()).then(|| department.to_owned()),
        bed_id: (!bed.is_empty()).then(|| {
            if room.is_empty() {
                bed.to_owned()
            } else {
                format!("{room}-{bed}")
            }
        }),
    })
}

/// Full years between a birth date and an event.
pub fn age_at(born: NaiveDate, at: &Timestamp) -> i64 {
    use chrono::Datelike;
    let on = at.date_naive();
    let mut years = i64::from(on.year() - born.year());
    if (on.month(), on.day()) < (born.month(), born.day()) {
        years -= 1;
    }
    years
}

/// OBX segments with a LOINC code the model knows, in the units of the model.
fn vitals(message: &Message) -> Result<Vitals, FormatError> {
    let mut v = Vitals::default();
    let mut any = false;
    for obx in message.all("OBX") {
        let code = obx.get(3, 1).trim();
        let raw = obx.get(5, 1).trim();
        if raw.is_empty() {
            continue;
        }
        let unit = match obx.get(6, 1).trim() {
            "" => obx.get(6, 2).trim(),
            u => u,
        };
        let Some(slot) = super::loinc_vital(code) else {
            continue;
        };
        let value: f64 = raw
            .parse()
            .map_err(|_| FormatError::Hl7(format!("OBX-5 of {code} is not a number: {raw:?}")))?;
        super::set_vital(&mut v, slot, value, unit);
        any = true;
    }
    if !any {
        return Err(FormatError::Hl7(
            "ORU^R01 without a vital sign the model knows (OBX-3 LOINC code)".into(),
        ));
    }
    Ok(v)
}

/// The ACK of a message: MSA-1 `AA`, `AE` or `AR`, with an ERR segment saying why when not
/// `AA`. `received` is the message as far as it could be parsed.
pub fn ack(
    received: Option<&Message>,
    code: &str,
    error: Option<(&str, &str)>,
    now: &str,
) -> Vec<u8> {
    let enc = received.map(|m| m.encoding).unwrap_or_default();
    let fs = char::from(enc.field);
    let cs = char::from(enc.component);
    let msh = received.map(Message::msh);
    let field = |f: usize, c: usize| msh.map_or("", |m| m.get(f, c)).to_owned();
    let esc = |s: &str| escape(s, &enc);
    let declared = match received {
        Some(m) => m.msh().get(2, 1).to_owned(),
        None => "^~\\&".to_owned(),
    };
    let trigger = field(9, 2);
    let version = match field(12, 1) {
        v if v.is_empty() => "2.5.1".to_owned(),
        v => v,
    };
    let control = field(10, 1);
    let mut out = format!(
        "MSH{fs}{declared}{fs}CDS{fs}CDS{fs}{}{fs}{}{fs}{now}{fs}{fs}ACK{cs}{}{cs}ACK{fs}ACK{}{fs}P{fs}{version}\r",
        esc(&field(3, 1)),
        esc(&field(4, 1)),
        esc(&trigger),
        esc(&control),
    );
    out.push_str(&format!("MSA{fs}{code}{fs}{}\r", esc(&control)));
    if let Some((err_code, text)) = error {
        // ERR-3 error code (HL7 table 0357), ERR-4 severity, ERR-8 user message.
        out.push_str(&format!(
            "ERR{fs}{fs}{fs}{err_code}{cs}{}{cs}HL70357{fs}E{fs}{fs}{fs}{fs}{}\r",
            esc(text),
            esc(text)
        ));
    }
    out.into_bytes()
}

/// Escapes the separators in a value (the inverse of [`unescape`]).
pub fn escape(s: &str, enc: &Encoding) -> String {
    let Some(esc) = enc.escape.map(char::from) else {
        return s.to_owned();
    };
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        let code = match ch {
            c if c == esc => Some('E'),
            c if c == char::from(enc.field) => Some('F'),
            c if c == char::from(enc.component) => Some('S'),
            c if c == char::from(enc.subcomponent) => Some('T'),
            c if c == char::from(enc.repetition) => Some('R'),
            '\r' | '\n' => None,
            c => {
                out.push(c);
                continue;
            }
        };
        if let Some(code) = code {
            out.push(esc);
            out.push(code);
            out.push(esc);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const A01: &str = "MSH|^~\\&|ADT1|GOOD HEALTH HOSPITAL|CDS|H3|20260302101500+0000||ADT^A01^ADT_A01|MSG00001|P|2.5.1\r\
EVN|A01|20260302101500+0000\r\
PID|1||PATID1234^^^GOOD HEALTH HOSPITAL^MR~123456789^^^USSSA^SS||EVERYMAN^ADAM^A^III||19610615|M\r\
PV1|1|I|ICU^2012^01^3||||004777^ATTEND^AARON^A|||CAR|||||||||V100^^^^VN|||||||||||||||||||||||||20260302101000+0000\r\
DG1|1||I21.4^NSTEMI^I10\r";

    #[test]
    fn parses_an_admission() {
        let mut census = Census::default();
        let events = to_events(A01.as_bytes(), &mut census).expect("valid A01");
        assert_eq!(events.len(), 1);
        let e = &events[0];
        assert_eq!(e.event_type.as_deref(), Some("ADMISSION"));
        assert_eq!(e.event_id, "hl7:ADT1:MSG00001");
        assert_eq!(e.patient_id.as_deref(), Some("PATID1234"));
        assert_eq!(e.hospital_id, Some(3));
        assert_eq!(e.department.as_deref(), Some("ICU"));
        assert_eq!(e.bed_id.as_deref(), Some("2012-01"));
        assert_eq!(e.gender.as_deref(), Some("M"));
        assert_eq!(e.age, Some(64));
        assert_eq!(e.diagnosis_code.as_deref(), Some("I21.4"));
        assert_eq!(
            e.admission_time.map(|t| t.to_rfc3339()),
            Some("2026-03-02T10:10:00+00:00".into())
        );
    }

    #[test]
    fn declared_separators_and_escapes() {
        let enc = Encoding {
            field: b'#',
            component: b'!',
            repetition: b'%',
            escape: Some(b'$'),
            subcomponent: b'@',
        };
        let msg = "MSH#!%$@#A#B#C#D#20260302#\
#ADT!A08#X1#P#2.5\nPID#1##ID1!!!AUTH!MR##NAME$F$WITH$S$SEPS!X$X41$#";
        let m = parse(msg.as_bytes()).expect("parse");
        assert_eq!(m.encoding, enc);
        assert_eq!(m.kind(), ("ADT", "A08"));
        let pid = m.segment("PID").expect("pid");
        assert_eq!(pid.sub(3, 0, 5, 1), "MR");
        assert_eq!(pid.get(5, 1), "NAME#WITH!SEPS");
        assert_eq!(pid.get(5, 2), "XA");
        assert_eq!(
            unescape("a\\T\\b\\R\\c\\E\\d\\.br\\e\\H\\", &Encoding::default()),
            "a&b~c\\d\ne"
        );
        assert_eq!(escape("a|b^c", &Encoding::default()), "a\\F\\b\\S\\c");
    }

    #[test]
    fn times_and_errors() {
        assert_eq!(
            parse_dtm("20260302101530.25-0500").map(|t| t.to_rfc3339()),
            Some("2026-03-02T10:15:30.250-05:00".into())
        );
        assert_eq!(
            parse_dtm("202603").map(|t| t.to_rfc3339()),
            Some("2026-03-01T00:00:00+00:00".into())
        );
        assert!(parse_dtm("2026-03-02").is_none());
        assert!(matches!(parse(b"PID|1"), Err(FormatError::Hl7(_))));
        let unsupported = A01.replace("ADT^A01^ADT_A01", "ADT^A05");
        assert!(matches!(
            to_events(unsupported.as_bytes(), &mut Census::default()),
            Err(FormatError::Unsupported(_))
        ));
    }

    #[test]
    fn vitals_take_the_patients_place_from_the_census() {
        let mut census = Census::default();
        to_events(A01.as_bytes(), &mut census).expect("A01");
        let oru = "MSH|^~\\&|MON|H3|CDS|H3|20260302110000||ORU^R01|V1|P|2.5.1\r\
PID|1||PATID1234^^^X^MR\r\
OBR|1|||85353-1^Vital signs^LN|||20260302105900\r\
OBX|1|NM|8867-4^Heart rate^LN||88|/min^beats/min^UCUM\r\
OBX|2|NM|8310-5^Body temperature^LN||100.4|[degF]^F^UCUM\r\
OBX|3|NM|59408-5^SpO2^LN||97|%^%^UCUM\r";
        let events = to_events(oru.as_bytes(), &mut census).expect("ORU");
        let e = &events[0];
        assert_eq!(e.event_type.as_deref(), Some("VITALS"));
        assert_eq!(e.department.as_deref(), Some("ICU"));
        let v = e.vitals.as_ref().expect("vitals");
        assert_eq!(v.heart_rate, Some(88.0));
        assert!((v.temperature_c.unwrap_or_default() - 38.0).abs() < 1e-9);
        assert_eq!(v.oxygen_saturation, Some(97.0));
        assert_eq!(e.event_timestamp.to_rfc3339(), "2026-03-02T10:59:00+00:00");
    }

    #[test]
    fn acks_echo_the_control_id() {
        let m = parse(A01.as_bytes()).expect("parse");
        let ack = String::from_utf8(ack(Some(&m), "AE", Some(("207", "bad|thing")), "20260302"))
            .expect("utf-8");
        assert!(ack.contains("MSA|AE|MSG00001\r"), "{ack}");
        assert!(ack.contains("ERR|||207^bad\\F\\thing^HL70357|E"), "{ack}");
        assert!(
            ack.starts_with("MSH|^~\\&|CDS|CDS|ADT1|GOOD HEALTH HOSPITAL|20260302||ACK^A01^ACK|")
        );
    }
}
