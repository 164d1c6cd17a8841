use serde::Deserialize;

use crate::source::SourceError;

/// The environment variable that holds an Azure Event Hubs connection string by default.
pub const EVENTHUB_CONNECTION_STRING_ENV: &str = "EVENTHUB_CONNECTION_STRING";

/// Configuration of the Kafka (or Azure Event Hubs) source and producer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// `HOST:PORT[,HOST:PORT]`.
    pub brokers: String,
    pub topics: Vec<String>,
    /// Consumer group.
    #[serde(default = "default_group")]
    pub group: String,
    /// Extra librdkafka settings (`--kafka-config KEY=VALUE`), applied last.
    #[serde(default)]
    pub settings: Vec<(String, String)>,
    /// Where malformed messages go; default `<topic>.deadletter`.
    #[serde(default)]
    pub deadletter_topic: Option<String>,
    /// The environment variable with an Event Hubs connection string, when it is set.
    #[serde(default)]
    pub eventhub_connection_string_env: Option<String>,
    /// Which partitions this process reads (all of them on one process).
    #[serde(default)]
    pub share: PartitionShare,
}

/// The partitions of one process in a cluster of `processes` processes with `workers` workers
/// each. When the producers key by patient (`keyed`), each partition has one reader: partition
/// `p` belongs to the global worker `p mod (processes × workers)`, and global worker `w` runs
/// in process `w / workers`, the same one after a restart, so its offsets and checkpointed
/// state stay together. Otherwise every process reads every partition (and keeps its own
/// patients' records), each with its own offsets: its group is `GROUP.process-I`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionShare {
    pub process: usize,
    pub processes: usize,
    pub workers: usize,
    /// The producers key every event by patient: a process reads only its own partitions.
    #[serde(default)]
    pub keyed: bool,
}

impl Default for PartitionShare {
    fn default() -> Self {
        PartitionShare {
            process: 0,
            processes: 1,
            workers: 1,
            keyed: false,
        }
    }
}

impl PartitionShare {
    /// Whether this process reads `partition`.
    pub fn reads(&self, partition: i32) -> bool {
        !self.keyed
            || crate::cluster::partition_process(partition, self.processes, self.workers)
                == self.process
    }

    /// The consumer group this process commits its offsets in: `group` itself, unless it is
    /// one of several processes that each read every partition.
    pub fn group(&self, group: &str) -> String {
        if self.keyed || self.processes <= 1 {
            group.to_owned()
        } else {
            format!("{group}.process-{}", self.process)
        }
    }
}

fn default_group() -> String {
    "cds".to_owned()
}

impl KafkaConfig {
    /// Parses `kafka://HOST:PORT[,HOST:PORT]/TOPIC[,TOPIC]`.
    pub fn from_url(url: &str) -> Result<Self, SourceError> {
        let rest = url
            .strip_prefix("kafka://")
            .ok_or_else(|| SourceError::Config(format!("{url:?} does not start with kafka://")))?;
        let (brokers, topics) = rest.split_once('/').ok_or_else(|| {
            SourceError::Config(format!("{url:?}: expected kafka://HOST:PORT/TOPIC"))
        })?;
        let topics: Vec<String> = topics
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect();
        if brokers.is_empty() || topics.is_empty() {
            return Err(SourceError::Config(format!(
                "{url:?}: expected kafka://HOST:PORT/TOPIC[,TOPIC]"
            )));
        }
        Ok(KafkaConfig {
            brokers: brokers.to_owned(),
            topics,
            group: default_group(),
            settings: Vec::new(),
            deadletter_topic: None,
            eventhub_connection_string_env: None,
            share: PartitionShare::default(),
        })
    }

    /// The dead-letter topic of a source topic.
    pub fn deadletter_topic_for(&self, topic: &str) -> String {
        self.deadletter_topic
            .clone()
            .unwrap_or_else(|| format!("{topic}.deadletter"))
    }

    /// The librdkafka settings shared by consumer and producer, in order: brokers, Event Hubs
    /// (when its connection string is in the environment), then `settings`.
    ///
    /// Event Hubs speaks Kafka on port 9093 of the namespace host with SASL PLAIN over TLS;
    /// the user name is the literal `$ConnectionString` and the password the connection string.
    pub fn client_settings(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Vec<(String, String)>, SourceError> {
        let mut out = vec![("bootstrap.servers".to_owned(), self.brokers.clone())];
        let var = self
            .eventhub_connection_string_env
            .as_deref()
            .unwrap_or(EVENTHUB_CONNECTION_STRING_ENV);
        if let Some(conn) = env(var).filter(|c| !c.trim().is_empty()) {
            let host = eventhub_host(&conn).ok_or_else(|| {
                // Never echo the connection string: it holds the key.
                SourceError::Config(format!(
                    "{var} is not an Event Hubs connection string (no Endpoint=sb://...)"
                ))
            })?;
            out[0].1 = format!("{host}:9093");
            out.push(("security.protocol".into(), "SASL_SSL".into()));
            out.push(("sasl.mechanism".into(), "PLAIN".into()));
            out.push(("sasl.username".into(), "$ConnectionString".into()));
            out.push(("sasl.password".into(), conn));
        }
        out.extend(self.settings.iter().cloned());
        Ok(out)
    }
}

/// The namespace host of `Endpoint=sb://NAMESPACE.servicebus.windows.net/;...`.
fn eventhub_host(conn: &str) -> Option<String> {
    conn.split(';')
        .filter_map(|part| part.trim().split_once('='))
        .find(|(k, _)| k.eq_ignore_ascii_case("Endpoint"))
        .map(|(_, v)| {
            v.trim()
                .trim_start_matches("sb://")
                .trim_end_matches('/')
                .to_owned()
        })
        .filter(|h| !h.is_empty())
}

/// Parses a repeated `KEY=VALUE` flag.
pub fn parse_setting(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_partitions_have_one_reader_and_unkeyed_ones_every_process() {
        // 2 processes × 2 workers over 10 partitions: worker p mod 4, process worker / 2.
        let share = |process, keyed| PartitionShare {
            process,
            processes: 2,
            workers: 2,
            keyed,
        };
        let read = |process, keyed| -> Vec<i32> {
            (0..10)
                .filter(|p| share(process, keyed).reads(*p))
                .collect()
        };
        assert_eq!(read(0, true), vec![0, 1, 4, 5, 8, 9]);
        assert_eq!(read(1, true), vec![2, 3, 6, 7]);
        assert_eq!(share(1, true).group("cds"), "cds");
        // Without keys every process reads everything, with offsets of its own.
        assert_eq!(read(1, false), (0..10).collect::<Vec<_>>());
        assert_eq!(share(1, false).group("cds"), "cds.process-1");
        assert!((0..10).all(|p| PartitionShare::default().reads(p)));
        assert_eq!(PartitionShare::default().group("cds"), "cds");
    }

    #[test]
    fn parses_urls() {
        let c = KafkaConfig::from_url("kafka://127.0.0.1:9092/adt,vitals").expect("valid");
        assert_eq!(c.brokers, "127.0.0.1:9092");
        assert_eq!(c.topics, ["adt", "vitals"]);
        assert_eq!(c.deadletter_topic_for("adt"), "adt.deadletter");
        assert!(KafkaConfig::from_url("kafka://127.0.0.1:9092").is_err());
        assert!(KafkaConfig::from_url("kafka:///adt").is_err());
    }

    #[test]
    fn event_hubs_settings_come_from_the_connection_string() {
        let mut c = KafkaConfig::from_url("kafka://ignored:9092/adt").expect("valid");
        c.settings.push(("client.id".into(), "cds-test".into()));
        let conn = "Endpoint=sb://contoso-hospital.servicebus.windows.net/;SharedAccessKeyName=listen;SharedAccessKey=c2VjcmV0";
        let settings = c
            .client_settings(|k| (k == EVENTHUB_CONNECTION_STRING_ENV).then(|| conn.to_owned()))
            .expect("settings");
        let get = |k: &str| {
            settings
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(
            get("bootstrap.servers"),
            Some("contoso-hospital.servicebus.windows.net:9093")
        );
        assert_eq!(get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(get("sasl.mechanism"), Some("PLAIN"));
        assert_eq!(get("sasl.username"), Some("$ConnectionString"));
        assert_eq!(get("sasl.password"), Some(conn));
        assert_eq!(
            get("client.id"),
            Some("cds-test"),
            "explicit settings apply last"
        );

        let plain = c.client_settings(|_| None).expect("no event hubs");
        assert_eq!(
            plain[0],
            ("bootstrap.servers".to_owned(), "ignored:9092".to_owned())
        );
        assert!(!plain.iter().any(|(k, _)| k.starts_with("sasl")));

        let err = c
            .client_settings(|_| Some("SharedAccessKey=secret".into()))
            .expect_err("no endpoint");
        assert!(
            !err.to_string().contains("secret"),
            "the error never shows the secret"
        );
    }
}
