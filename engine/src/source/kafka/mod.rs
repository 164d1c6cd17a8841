//! Kafka and Azure Event Hubs (through its Kafka endpoint): the production source, and the
//! producer behind `cds simulate --to kafka://…`.
//!
//! The source assigns itself its partitions instead of joining a group's rebalancing: one
//! process reads every partition; each process of a cluster reads every partition too (and
//! keeps its own patients' records) under a group of its own, or, when the producers key by
//! patient, partition `p` belongs to the global worker `p mod (P·N)` of a cluster of `P`
//! processes with `N` workers each ([`PartitionShare`]). So a partition's reader is always the
//! same one, and a restarted engine reads again at once instead of waiting for the group to
//! notice that its killed predecessor is gone (a session timeout and a rebalance, seconds to
//! minutes). The group (`--group`) names where offsets are committed. Partitions added to a
//! topic while the engine runs are picked up within seconds.
//!
//! The source never commits on its own: the pipeline calls
//! [`Source::commit`] with the positions whose outputs are durably written, so a restart
//! resumes where the outputs stopped. Messages that are not events go to a dead-letter topic
//! with their reason and source position in headers (and to the local dead-letter store). A
//! broker that goes away is retried by librdkafka with backoff; the outage is logged once and
//! counted, and the source catches up when the broker is back.

mod config;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{DeliveryResult, Header, OwnedHeaders};
use rdkafka::producer::{
    BaseRecord, DefaultProducerContext, Producer, ProducerContext, ThreadedProducer,
};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Message, Offset, TopicPartitionList};
use tracing::{info, warn};

pub use config::{parse_setting, KafkaConfig, PartitionShare, EVENTHUB_CONNECTION_STRING_ENV};

use super::{DeadLetterDeliveries, Poll, Position, RawBatch, Source, SourceError};
use crate::model::DeadLetter;

fn kafka(e: KafkaError) -> SourceError {
    SourceError::Kafka(e.to_string())
}

pub(crate) fn client(config: &KafkaConfig) -> Result<ClientConfig, SourceError> {
    let mut c = ClientConfig::new();
    for (k, v) in config.client_settings(|k| std::env::var(k).ok())? {
        c.set(k, v);
    }
    Ok(c)
}

/// A producer for the simulator and the dead-letter topic: idempotent (no duplicates on
/// retry), keyed by patient so that one patient's events stay ordered in one partition.
pub fn producer(
    config: &KafkaConfig,
) -> Result<ThreadedProducer<DefaultProducerContext>, SourceError> {
    let mut c = client(config)?;
    c.set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("compression.type", "lz4");
    c.create().map_err(kafka)
}

/// Counts what became of the dead letters handed to the dead-letter topic. librdkafka reports
/// each delivery on its own thread; a failure (a topic that does not exist and cannot be
/// created, a refused write) is logged once per outage, never with the payload, and the
/// pipeline turns the counts into `cds_deadletter_publish_failures_total` and the operational
/// alert. The letters themselves stay in the local dead-letter store.
#[derive(Debug, Default)]
struct DeadLetterDelivery {
    failed: AtomicU64,
    delivered: AtomicU64,
    /// Whether the current run of failures was logged.
    logged: std::sync::atomic::AtomicBool,
}

impl ClientContext for DeadLetterDelivery {}

impl ProducerContext for DeadLetterDelivery {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
                if self.logged.swap(false, Ordering::Relaxed) {
                    info!("dead letters are published to the dead-letter topic again");
                }
            }
            Err((e, _)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                if !self.logged.swap(true, Ordering::Relaxed) {
                    warn!(error = %e, "a dead letter could not be published to the dead-letter topic; it stays in the local dead-letter store");
                }
            }
        }
    }
}

/// The dead-letter producer: idempotent, delivery reports counted.
fn deadletter_producer(
    config: &KafkaConfig,
    context: Arc<DeadLetterDelivery>,
) -> Result<ThreadedProducer<ArcDelivery>, SourceError> {
    let mut c = client(config)?;
    c.set("enable.idempotence", "true")
        .set("linger.ms", "5")
        // A letter that cannot be delivered within 30 s is reported as failed, not retried
        // for the default five minutes while nobody knows.
        .set("message.timeout.ms", "30000");
    c.create_with_context(ArcDelivery(context)).map_err(kafka)
}

/// The delivery counters shared between the producer's thread and the source.
#[derive(Debug, Clone)]
struct ArcDelivery(Arc<DeadLetterDelivery>);

impl ClientContext for ArcDelivery {}

impl ProducerContext for ArcDelivery {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, opaque: ()) {
        self.0.delivery(result, opaque);
    }
}

/// Creates the dead-letter topics that do not exist yet, with as many partitions as their
/// source topic and the broker's default replication, so that brokers that do not create
/// topics on first write still receive dead letters. A broker that refuses (no rights, Event
/// Hubs without the topic) is logged once; publishing then fails visibly (see
/// [`DeadLetterDelivery`]).
fn create_deadletter_topics(config: &KafkaConfig, partitions: &BTreeMap<String, i32>) {
    let Ok(client) = client(config) else { return };
    let Ok(admin) = client.create::<AdminClient<DefaultClientContext>>() else {
        warn!("cannot create a Kafka admin client; dead-letter topics are not created");
        return;
    };
    let names: Vec<(String, i32)> = config
        .topics
        .iter()
        .map(|t| {
            let n = partitions.get(t).copied().filter(|n| *n > 0).unwrap_or(1);
            (config.deadletter_topic_for(t), n)
        })
        .collect();
    let topics: Vec<NewTopic<'_>> = names
        .iter()
        .map(|(name, n)| NewTopic::new(name, *n, TopicReplication::Fixed(-1)))
        .collect();
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
    {
        Ok(r) => r,
        Err(_) => return,
    };
    match runtime.block_on(admin.create_topics(&topics, &options)) {
        Ok(results) => {
            for result in results {
                match result {
                    Ok(topic) => info!(topic = %topic, "dead-letter topic created"),
                    Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                    Err((topic, code)) => {
                        warn!(topic = %topic, error = %code, "the broker did not create the dead-letter topic; create it with the source topic")
                    }
                }
            }
        }
        Err(e) => {
            warn!(error = %e, "cannot create the dead-letter topics; create them with the source topic")
        }
    }
}

/// Consumes JSON events from Kafka topics.
pub struct KafkaSource {
    name: String,
    config: KafkaConfig,
    consumer: BaseConsumer,
    deadletters: Option<ThreadedProducer<ArcDelivery>>,
    /// What became of the letters handed to `deadletters`.
    deliveries: Arc<DeadLetterDelivery>,
    outage: Option<Instant>,
    lag: Option<LagReader>,
    /// Partitions per topic known and assigned so far (the owned ones among them are read).
    assigned: BTreeMap<String, i32>,
    /// When to ask the broker for the partitions again while none could be assigned.
    next_assignment: Instant,
    /// Where a checkpoint says each partition continues (the offset after the last one it
    /// covers), by (topic, partition): read from there rather than from the group's committed
    /// offset, which never runs ahead of it and may be far behind (a new group after a rescale).
    resume: BTreeMap<(String, i32), i64>,
}

/// Reads high watermarks on its own thread and client: a round trip to the broker per
/// partition on the ingest thread stalled the pipeline (up to 170 ms through the test broker,
/// every lag reading). The ingest thread hands over its positions and reads the last result.
/// The same thread also counts the topics' partitions, so that partitions added while the
/// engine runs are assigned without a metadata round trip on the ingest thread.
struct LagReader {
    positions: SyncSender<Vec<(String, i32, i64)>>,
    /// The last lag computed; `u64::MAX` while unknown.
    lag: Arc<AtomicU64>,
    /// The last partition count read per topic.
    partitions: Arc<Mutex<BTreeMap<String, i32>>>,
}

impl LagReader {
    fn start(config: &KafkaConfig) -> Option<Self> {
        let client: BaseConsumer = client(config).ok()?.create().ok()?;
        let (tx, rx) = sync_channel::<Vec<(String, i32, i64)>>(1);
        let lag = Arc::new(AtomicU64::new(u64::MAX));
        let out = lag.clone();
        let partitions = Arc::new(Mutex::new(BTreeMap::new()));
        let counts = partitions.clone();
        let topics = config.topics.clone();
        std::thread::Builder::new()
            .name("cds-kafka-lag".into())
            .spawn(move || {
                while let Ok(positions) = rx.recv() {
                    for topic in &topics {
                        if let Ok(n) = partition_count(&client, topic, Duration::from_secs(1)) {
                            if let Ok(mut c) = counts.lock() {
                                c.insert(topic.clone(), n);
                            }
                        }
                    }
                    let mut total = 0u64;
                    for (topic, partition, read) in positions {
                        let Ok((_, high)) =
                            client.fetch_watermarks(&topic, partition, Duration::from_secs(1))
                        else {
                            continue;
                        };
                        if high >= 0 {
                            total += high.saturating_sub(read).max(0) as u64;
                        }
                    }
                    out.store(total, Ordering::Relaxed);
                }
            })
            .ok()?;
        Some(LagReader {
            positions: tx,
            lag,
            partitions,
        })
    }
}

/// How many partitions `topic` has, by one metadata request.
pub(crate) fn partition_count(
    client: &BaseConsumer,
    topic: &str,
    timeout: Duration,
) -> Result<i32, KafkaError> {
    let metadata = client.fetch_metadata(Some(topic), timeout)?;
    let n = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map_or(0, |t| t.partitions().len());
    Ok(i32::try_from(n).unwrap_or(i32::MAX))
}

impl KafkaSource {
    pub fn open(config: KafkaConfig) -> Result<Self, SourceError> {
        let mut c = client(&config)?;
        c.set("group.id", config.share.group(&config.group))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false");
        let consumer: BaseConsumer = c.create().map_err(kafka)?;
        let mut source = KafkaSource {
            name: format!("kafka://{}/{}", config.brokers, config.topics.join(",")),
            deadletters: None,
            deliveries: Arc::default(),
            outage: None,
            lag: None,
            assigned: BTreeMap::new(),
            next_assignment: Instant::now(),
            resume: BTreeMap::new(),
            consumer,
            config,
        };
        // A broker that is away now is not an error: the source keeps asking (see `poll`).
        source.assign(None, Duration::from_secs(5));
        create_deadletter_topics(&source.config, &source.assigned);
        info!(brokers = %source.config.brokers, topics = %source.config.topics.join(","), group = %source.config.group, "kafka source started");
        Ok(source)
    }

    /// Assigns the partitions this process owns that are not assigned yet, each from the
    /// group's committed offset (the earliest one when none is committed). `counts` are
    /// partition counts read elsewhere; `None` asks the broker, waiting at most `timeout`.
    fn assign(&mut self, counts: Option<&BTreeMap<String, i32>>, timeout: Duration) {
        let mut list = TopicPartitionList::new();
        let mut known = Vec::new();
        for topic in &self.config.topics {
            let n = match counts {
                Some(c) => c.get(topic).copied(),
                None => match partition_count(&self.consumer, topic, timeout) {
                    Ok(n) => Some(n),
                    Err(e) => {
                        self.trouble(&e);
                        return;
                    }
                },
            };
            let Some(n) = n else { continue };
            let from = self.assigned.get(topic).copied().unwrap_or(0);
            for p in from..n {
                if self.config.share.reads(p) {
                    // A checkpoint's position, else Offset::Stored: the group's committed
                    // offset, else `auto.offset.reset`.
                    let from = self
                        .resume
                        .get(&(topic.clone(), p))
                        .map_or(Offset::Stored, |o| Offset::Offset(*o));
                    if list.add_partition_offset(topic, p, from).is_err() {
                        return;
                    }
                }
            }
            if n > from {
                known.push((topic.clone(), n));
            }
        }
        if list.count() > 0 {
            if let Err(e) = self.consumer.incremental_assign(&list) {
                self.trouble(&e);
                return;
            }
            info!(partitions = list.count(), "kafka partitions assigned");
        }
        for (topic, n) in known {
            self.assigned.insert(topic, n);
        }
    }

    fn stream_of(&self, topic: &str) -> u16 {
        self.config
            .topics
            .iter()
            .position(|t| t == topic)
            .unwrap_or(0) as u16
    }

    /// Notes an error from the broker: logged once per outage, then quiet until it recovers.
    fn trouble(&mut self, e: &KafkaError) {
        if self.outage.is_none() {
            warn!(error = %e, "kafka unavailable; retrying with backoff");
            self.outage = Some(Instant::now());
        }
    }

    fn recovered(&mut self) {
        if let Some(since) = self.outage.take() {
            info!(
                after_ms = since.elapsed().as_millis() as u64,
                "kafka available again"
            );
        }
    }
}

impl Source for KafkaSource {
    fn name(&self) -> &str {
        &self.name
    }

    /// Reads on after the checkpoint's positions: the partitions assigned already are assigned
    /// again from there, those assigned later start there. Should that fail, the group's
    /// committed offsets (never ahead of a checkpoint) are read from, as before, and the
    /// pipeline passes over what the checkpoint covers.
    fn skip_to(&mut self, upto: &[Position]) -> Result<(), SourceError> {
        let mut list = TopicPartitionList::new();
        for p in upto {
            let Some(topic) = self.config.topics.get(usize::from(p.stream)) else {
                continue;
            };
            let next = p.offset.saturating_add(1);
            self.resume.insert((topic.clone(), p.partition), next);
            let assigned = self.assigned.get(topic).is_some_and(|n| p.partition < *n);
            if assigned && self.config.share.reads(p.partition) {
                // A partition number the list refuses is left to its committed offset.
                let _ = list.add_partition_offset(topic, p.partition, Offset::Offset(next));
            }
        }
        if list.count() > 0 {
            if let Err(e) = self.consumer.incremental_unassign(&list) {
                warn!(error = %e, "could not move to the checkpoint's offsets; reading from the committed ones");
                return Ok(());
            }
            if let Err(e) = self.consumer.incremental_assign(&list) {
                // Assigned again as they were, so that nothing goes unread.
                warn!(error = %e, "could not move to the checkpoint's offsets; reading from the committed ones");
                let mut stored = TopicPartitionList::new();
                for ((topic, partition), _) in list.to_topic_map() {
                    let _ = stored.add_partition_offset(&topic, partition, Offset::Stored);
                }
                self.consumer.incremental_assign(&stored).map_err(kafka)?;
            }
        }
        Ok(())
    }

    fn partitions(&self) -> Vec<(u16, i32)> {
        let mut owned = Vec::new();
        for (topic, n) in &self.assigned {
            let stream = self.stream_of(topic);
            owned.extend(
                (0..*n)
                    .filter(|p| self.config.share.reads(*p))
                    .map(|p| (stream, p)),
            );
        }
        owned
    }

    fn stream_name(&self, stream: u16) -> String {
        let topic = self
            .config
            .topics
            .get(usize::from(stream))
            .map_or("?", String::as_str);
        format!("kafka:{topic}")
    }

    fn poll(
        &mut self,
        batch: &mut RawBatch,
        max: usize,
        wait: Duration,
    ) -> Result<Poll, SourceError> {
        if self.assigned.is_empty() && Instant::now() >= self.next_assignment {
            // Nothing could be assigned yet (the broker was away, or the topic is missing).
            self.next_assignment = Instant::now() + Duration::from_secs(1);
            self.assign(None, wait.max(Duration::from_millis(250)));
        }
        let deadline = Instant::now() + wait;
        let before = batch.len();
        while batch.len() - before < max {
            // Block only for the first message; then take what is already there.
            let timeout = if batch.len() > before {
                Duration::ZERO
            } else {
                deadline.saturating_duration_since(Instant::now())
            };
            match self.consumer.poll(timeout) {
                Some(Ok(m)) => {
                    let position = Position {
                        stream: self.stream_of(m.topic()),
                        partition: m.partition(),
                        offset: m.offset(),
                    };
                    batch.push_at(m.payload().unwrap_or_default(), position);
                }
                Some(Err(e)) => {
                    self.trouble(&e);
                    break;
                }
                None => break,
            }
        }
        if batch.len() > before {
            self.recovered();
            Ok(Poll::Ready)
        } else {
            Ok(Poll::Idle)
        }
    }

    fn lag(&mut self) -> Option<u64> {
        // The positions are local; the watermarks are read on the lag thread, and the reading
        // returned is the previous one's result.
        if self.outage.is_some() {
            // A message would end the outage too, but a quiet topic sends none: one metadata
            // round trip tells whether the broker answers again (only while it is away).
            let topic = self.config.topics.first().map(String::as_str);
            if self
                .consumer
                .fetch_metadata(topic, Duration::from_millis(250))
                .is_err()
            {
                return None;
            }
            self.recovered();
        }
        if self.lag.is_none() {
            self.lag = LagReader::start(&self.config);
        }
        let counts = self
            .lag
            .as_ref()
            .and_then(|r| r.partitions.lock().ok().map(|c| c.clone()));
        if let Some(counts) = counts {
            self.assign(Some(&counts), Duration::ZERO);
        }
        let reader = self.lag.as_ref()?;
        let positions = self.consumer.position().ok()?;
        let read: Vec<(String, i32, i64)> = positions
            .elements()
            .iter()
            .map(|p| {
                let offset = p.offset().to_raw().filter(|o| *o >= 0).unwrap_or(0);
                (p.topic().to_owned(), p.partition(), offset)
            })
            .collect();
        match reader.positions.try_send(read) {
            Ok(()) | Err(TrySendError::Full(_)) => {}
            Err(TrySendError::Disconnected(_)) => self.lag = None,
        }
        let lag = self.lag.as_ref()?.lag.load(Ordering::Relaxed);
        (lag != u64::MAX).then_some(lag)
    }

    fn unavailable_since(&self) -> Option<Instant> {
        self.outage
    }

    fn behind(&mut self) -> Option<bool> {
        Some(self.lag() != Some(0))
    }

    fn dead_letter(&mut self, letter: &DeadLetter) -> Result<(), SourceError> {
        if self.deadletters.is_none() {
            self.deadletters = Some(deadletter_producer(&self.config, self.deliveries.clone())?);
        }
        let Some(p) = self.deadletters.as_ref() else {
            return Ok(());
        };
        let topic = self
            .config
            .topics
            .iter()
            .find(|t| letter.position.source.ends_with(t.as_str()))
            .or(self.config.topics.first())
            .map(|t| self.config.deadletter_topic_for(t))
            .unwrap_or_default();
        let partition = letter.position.partition.to_string();
        let offset = letter.position.offset.to_string();
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "cds.reason",
                value: Some(letter.reason.as_str()),
            })
            .insert(Header {
                key: "cds.reason_code",
                value: Some(letter.reason_code),
            })
            .insert(Header {
                key: "cds.source",
                value: Some(letter.position.source.as_str()),
            })
            .insert(Header {
                key: "cds.partition",
                value: Some(partition.as_str()),
            })
            .insert(Header {
                key: "cds.offset",
                value: Some(offset.as_str()),
            });
        let record: BaseRecord<'_, str, [u8]> = BaseRecord::to(&topic)
            .payload(letter.payload.as_bytes())
            .key(offset.as_str())
            .headers(headers);
        // A full local queue is a failed publish like any other: counted, never fatal (the
        // letter is in the local store).
        if let Err((e, _)) = p.send(record) {
            self.deliveries.failed.fetch_add(1, Ordering::Relaxed);
            if !self.deliveries.logged.swap(true, Ordering::Relaxed) {
                warn!(error = %e, "a dead letter could not be published to the dead-letter topic; it stays in the local dead-letter store");
            }
        }
        Ok(())
    }

    fn dead_letter_deliveries(&self) -> DeadLetterDeliveries {
        DeadLetterDeliveries {
            failed: self.deliveries.failed.load(Ordering::Relaxed),
            delivered: self.deliveries.delivered.load(Ordering::Relaxed),
        }
    }

    fn commit(&mut self, upto: &[Position]) -> Result<(), SourceError> {
        let mut list = TopicPartitionList::new();
        for pos in upto {
            if let Some(topic) = self.config.topics.get(usize::from(pos.stream)) {
                // Kafka commits the next offset to read.
                list.add_partition_offset(topic, pos.partition, Offset::Offset(pos.offset + 1))
                    .map_err(kafka)?;
            }
        }
        if list.count() == 0 {
            return Ok(());
        }
        match self.consumer.commit(&list, CommitMode::Sync) {
            Ok(()) => Ok(()),
            // A rebalance or an outage can refuse a commit; the next one covers it, and a
            // restart re-reads at most what was not committed (outputs are idempotent).
            Err(e) => {
                self.trouble(&e);
                Ok(())
            }
        }
    }
}

impl Drop for KafkaSource {
    fn drop(&mut self) {
        if let Some(p) = self.deadletters.as_ref() {
            let _ = p.flush(Duration::from_secs(5));
        }
    }
}

/// Produces JSON lines to a topic, keyed by `patient_id` when the line has one; returns how
/// many were acknowledged. `each` is called after every line (pacing, progress).
pub fn produce_lines(
    config: &KafkaConfig,
    lines: impl Iterator<Item = Vec<u8>>,
    mut each: impl FnMut(u64),
) -> Result<u64, SourceError> {
    let producer = producer(config)?;
    let topic = config
        .topics
        .first()
        .ok_or_else(|| SourceError::Config("no topic".into()))?;
    let mut sent = 0u64;
    for line in lines {
        let key = patient_key(&line);
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).payload(&line);
        if let Some(k) = key.as_deref() {
            record = record.key(k);
        }
        let mut record = Some(record);
        while let Some(r) = record.take() {
            match producer.send(r) {
                Ok(()) => {}
                Err((
                    KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                    r,
                )) => {
                    // Backpressure from the local queue: wait for deliveries, then retry.
                    std::thread::sleep(Duration::from_millis(5));
                    record = Some(r);
                }
                Err((e, _)) => return Err(kafka(e)),
            }
        }
        sent += 1;
        each(sent);
    }
    producer.flush(Duration::from_secs(30)).map_err(kafka)?;
    Ok(sent)
}

/// The `patient_id` of a JSON line, found without a full parse (a bad line has no key).
fn patient_key(line: &[u8]) -> Option<Vec<u8>> {
    let pat = b"\"patient_id\":\"";
    let start = line.windows(pat.len()).position(|w| w == pat)? + pat.len();
    let len = line[start..].iter().position(|b| *b == b'"')?;
    Some(line[start..start + len].to_vec())
}

/// Highest processed position per (stream, partition), for commits.
pub fn last_positions(positions: impl Iterator<Item = Position>) -> Vec<Position> {
    let mut last: BTreeMap<(u16, i32), i64> = BTreeMap::new();
    for p in positions {
        let slot = last.entry((p.stream, p.partition)).or_insert(p.offset);
        *slot = (*slot).max(p.offset);
    }
    last.into_iter()
        .map(|((stream, partition), offset)| Position {
            stream,
            partition,
            offset,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_by_patient() {
        assert_eq!(
            patient_key(br#"{"event_id":"e","patient_id":"P1234567","age":3}"#),
            Some(b"P1234567".to_vec())
        );
        assert_eq!(patient_key(b"{\"truncated\": "), None);
    }

    #[test]
    fn last_positions_per_partition() {
        let p = |stream, partition, offset| Position {
            stream,
            partition,
            offset,
        };
        let got = last_positions(
            [p(0, 1, 5), p(0, 1, 9), p(0, 2, 3), p(1, 1, 7), p(0, 1, 8)].into_iter(),
        );
        assert_eq!(got, vec![p(0, 1, 9), p(0, 2, 3), p(1, 1, 7)]);
    }
}
