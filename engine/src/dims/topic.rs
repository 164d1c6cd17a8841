//! Department metadata from a Kafka topic (`--departments kafka://HOST:PORT/TOPIC`), for
//! networks whose bed management system publishes its wards rather than a file.
//!
//! Each message is one department: a CSV row in the departments file's column order
//! (`hospital_id,hospital_name,department,bed_capacity,staff_count[,kind[,aliases]]`; a header
//! row is skipped) or a JSON object with those names (`aliases` a `|`-separated string or a
//! list). The latest message per (hospital, department) wins; a JSON object with
//! `"removed": true` takes the department out. The network is what the topic holds from its
//! beginning: at start it is read to its end, and while the engine runs every new message that
//! changes the network puts it in force like a changed file (same checks, same history).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde_json::Value;
use tracing::warn;

use crate::model::{Network, NetworkError};
use crate::source::kafka::{client, partition_count, KafkaConfig};

/// The departments file's columns, in the order a CSV message gives them.
const COLUMNS: [&str; 7] = [
    "hospital_id",
    "hospital_name",
    "department",
    "bed_capacity",
    "staff_count",
    "kind",
    "aliases",
];

/// What one message says.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    /// A department as it is now: the seven columns.
    Department([String; 7]),
    /// A department taken out: hospital id and name.
    Removed(String, String),
    /// A header row.
    Header,
}

/// The departments topic: a consumer of all its partitions from the beginning, and the latest
/// row per department.
pub struct DepartmentsTopic {
    topic: String,
    consumer: BaseConsumer,
    /// By (hospital id, department name in upper case): arrival number and the row.
    rows: BTreeMap<(String, String), (u64, [String; 7])>,
    arrivals: u64,
    /// The network last handed out.
    last: Option<Network>,
}

impl std::fmt::Debug for DepartmentsTopic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DepartmentsTopic")
            .field("topic", &self.topic)
            .field("departments", &self.rows.len())
            .finish()
    }
}

impl DepartmentsTopic {
    /// Whether `--departments` names a topic rather than a file.
    pub fn is_topic(location: &str) -> bool {
        location.starts_with("kafka://")
    }

    /// Connects to the topic of `url` (`kafka://HOST:PORT/TOPIC`) and assigns every partition
    /// from its beginning. The Event Hubs connection string of the environment applies as for
    /// the source.
    pub fn open(url: &str) -> Result<Self, NetworkError> {
        let failed = |reason: String| NetworkError::Topic {
            url: url.to_owned(),
            reason,
        };
        let config = KafkaConfig::from_url(url).map_err(|e| failed(e.to_string()))?;
        let [topic] = config.topics.as_slice() else {
            return Err(failed("name one topic".into()));
        };
        let consumer: BaseConsumer = client(&config)
            .map_err(|e| failed(e.to_string()))?
            .set("group.id", "cds-departments")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .create()
            .map_err(|e| failed(e.to_string()))?;
        let partitions = partition_count(&consumer, topic, Duration::from_secs(10))
            .map_err(|e| failed(format!("no partitions ({e})")))?;
        let mut list = TopicPartitionList::new();
        for p in 0..partitions {
            list.add_partition_offset(topic, p, Offset::Beginning)
                .map_err(|e| failed(e.to_string()))?;
        }
        consumer.assign(&list).map_err(|e| failed(e.to_string()))?;
        Ok(DepartmentsTopic {
            topic: topic.clone(),
            consumer,
            rows: BTreeMap::new(),
            arrivals: 0,
            last: None,
        })
    }

    /// Reads the topic up to the end it has now (at most `timeout`) and returns the network it
    /// describes.
    pub fn read_to_end(&mut self, timeout: Duration) -> Result<Network, NetworkError> {
        let url = self.topic.clone();
        let failed = |reason: String| NetworkError::Topic {
            url: url.clone(),
            reason,
        };
        let deadline = Instant::now() + timeout;
        let left = || deadline.saturating_duration_since(Instant::now());
        let partitions = partition_count(&self.consumer, &self.topic, left())
            .map_err(|e| failed(e.to_string()))?;
        let mut ends = BTreeMap::new();
        for p in 0..partitions {
            let (low, high) = self
                .consumer
                .fetch_watermarks(&self.topic, p, left())
                .map_err(|e| failed(e.to_string()))?;
            // A partition whose messages have all expired has nothing to read.
            if high > low {
                ends.insert(p, high);
            }
        }
        let mut read: BTreeMap<i32, i64> = BTreeMap::new();
        while ends
            .iter()
            .any(|(p, end)| read.get(p).is_none_or(|r| r + 1 < *end))
        {
            if Instant::now() > deadline {
                return Err(failed(format!(
                    "not read to its end within {} s",
                    timeout.as_secs()
                )));
            }
            if let Some((partition, offset)) = self.poll_one(Duration::from_millis(200)) {
                read.insert(partition, offset);
            }
        }
        let network = self.network().map_err(|e| match e {
            NetworkError::Empty => failed("holds no department".into()),
            other => other,
        })?;
        self.last = Some(network.clone());
        Ok(network)
    }

    /// Waits up to `wait` for messages; the new network when they changed it. A network that
    /// does not load is logged and the previous one stays in force.
    pub fn changed(&mut self, wait: Duration) -> Option<Network> {
        let deadline = Instant::now() + wait;
        let mut any = false;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.poll_one(left.min(Duration::from_millis(100))) {
                Some(_) => any = true,
                None if any => break,
                None => {}
            }
        }
        if !any {
            return None;
        }
        match self.network() {
            Ok(network) if self.last.as_ref() != Some(&network) => {
                self.last = Some(network.clone());
                Some(network)
            }
            Ok(_) => None,
            Err(e) => {
                warn!(error = %e, "the departments topic describes a network that does not load; keeping the previous one");
                None
            }
        }
    }

    /// Takes one message, if one comes within `wait`: its partition and offset.
    fn poll_one(&mut self, wait: Duration) -> Option<(i32, i64)> {
        let message = match self.consumer.poll(wait)? {
            Ok(m) => m,
            Err(e) => {
                warn!(error = %e, "departments topic: read failed");
                return None;
            }
        };
        let at = (message.partition(), message.offset());
        let before = self.rows.clone();
        match message.payload().map(entry) {
            Some(Ok(Entry::Department(row))) => {
                self.arrivals += 1;
                let key = (row[0].clone(), row[2].to_uppercase());
                let order = self.rows.get(&key).map_or(self.arrivals, |(n, _)| *n);
                self.rows.insert(key, (order, row));
            }
            Some(Ok(Entry::Removed(hospital, department))) => {
                self.rows.remove(&(hospital, department.to_uppercase()));
            }
            Some(Ok(Entry::Header)) | None => {}
            Some(Err(reason)) => {
                warn!(partition = at.0, offset = at.1, %reason, "departments topic: message skipped");
            }
        }
        // A department the network's checks refuse (a bad number, a name or alias another
        // department has, another name for the hospital) is skipped, not kept to block every
        // later change.
        match self.network() {
            Ok(_) | Err(NetworkError::Empty) => {}
            Err(e) => {
                warn!(partition = at.0, offset = at.1, reason = %e, "departments topic: message skipped");
                self.rows = before;
            }
        }
        Some(at)
    }

    /// The network of the rows read so far, through the departments file's own checks.
    fn network(&self) -> Result<Network, NetworkError> {
        let mut rows: Vec<&(u64, [String; 7])> = self.rows.values().collect();
        rows.sort_by_key(|(order, _)| *order);
        let mut out = csv::Writer::from_writer(Vec::new());
        let failed = |e: csv::Error| NetworkError::Topic {
            url: self.topic.clone(),
            reason: e.to_string(),
        };
        out.write_record(COLUMNS).map_err(failed)?;
        for (_, row) in rows {
            out.write_record(row).map_err(failed)?;
        }
        let text = out.into_inner().map_err(|e| NetworkError::Topic {
            url: self.topic.clone(),
            reason: e.to_string(),
        })?;
        Network::parse(&String::from_utf8_lossy(&text))
    }
}

/// What a message says: a CSV row or a JSON object.
fn entry(payload: &[u8]) -> Result<Entry, String> {
    let text = std::str::from_utf8(payload).map_err(|_| "not UTF-8".to_owned())?;
    let text = text.trim();
    if text.starts_with('{') {
        let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        let field = |name: &str| match v.get(name) {
            Some(Value::String(s)) => s.trim().to_owned(),
            Some(Value::Number(n)) => n.to_string(),
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join("|"),
            _ => String::new(),
        };
        if field("hospital_id").is_empty() || field("department").is_empty() {
            return Err("a department needs hospital_id and department".into());
        }
        if v.get("removed").and_then(Value::as_bool) == Some(true) {
            return Ok(Entry::Removed(field("hospital_id"), field("department")));
        }
        return Ok(Entry::Department(COLUMNS.map(field)));
    }
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let row = reader
        .records()
        .next()
        .ok_or_else(|| "empty".to_owned())?
        .map_err(|e| format!("not a CSV row: {e}"))?;
    if row.get(0) == Some("hospital_id") {
        return Ok(Entry::Header);
    }
    if !(5..=7).contains(&row.len()) {
        return Err(format!("expected 5 to 7 columns, found {}", row.len()));
    }
    Ok(Entry::Department(std::array::from_fn(|i| {
        row.get(i).unwrap_or_default().to_owned()
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_csv_rows_or_json_objects() {
        assert_eq!(
            entry(b"hospital_id,hospital_name,department,bed_capacity,staff_count"),
            Ok(Entry::Header)
        );
        let Ok(Entry::Department(row)) = entry(b"1042,\"Royal, North\",Ward 7B,28,40,ward,W7B|7B")
        else {
            panic!("a row")
        };
        assert_eq!(row[1], "Royal, North");
        assert_eq!(row[6], "W7B|7B");
        let Ok(Entry::Department(row)) = entry(
            br#"{"hospital_id": 1042, "hospital_name": "Royal", "department": "Renal",
                "bed_capacity": 12, "staff_count": 20, "aliases": ["Kidney", "RU"]}"#,
        ) else {
            panic!("an object")
        };
        assert_eq!(
            row,
            ["1042", "Royal", "Renal", "12", "20", "", "Kidney|RU"].map(String::from)
        );
        assert_eq!(
            entry(br#"{"hospital_id": 1042, "department": "Renal", "removed": true}"#),
            Ok(Entry::Removed("1042".into(), "Renal".into()))
        );
        assert!(entry(b"1,A,ICU").is_err());
        assert!(entry(br#"{"department": "ICU"}"#).is_err());
        assert!(entry(b"\xff").is_err());
    }
}
