//! A Kafka-protocol broker for the tests: `tests/run.sh` starts one on 127.0.0.1 and exports
//! `CDS_TEST_KAFKA=HOST:PORT` (and `CDS_TEST_TANSU=PATH`). Without it the tests fail with a
//! clear message: a missing broker is never a skipped test.

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;

pub fn broker() -> String {
    std::env::var("CDS_TEST_KAFKA")
        .expect("CDS_TEST_KAFKA is not set: run the suite with `bash tests/run.sh`, which starts a Kafka broker")
}

/// A new topic of `partitions` partitions named after `name`, and its dead-letter topic.
pub fn topic_with_deadletters(brokers: &str, name: &str, partitions: i32) -> String {
    let topic = super::unique(name);
    create_topics(
        brokers,
        &[(&topic, partitions), (&format!("{topic}.deadletter"), 1)],
    );
    topic
}

pub fn create_topics(brokers: &str, topics: &[(&str, i32)]) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("admin client");
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|(t, p)| NewTopic::new(t, *p, TopicReplication::Fixed(1)))
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let results = rt
        .block_on(admin.create_topics(&new, &AdminOptions::new()))
        .expect("create topics");
    for r in results {
        r.expect("topic created");
    }
}

/// Produces simulator events (`cds simulate ARGS --to kafka://...`) to a topic.
pub fn produce(brokers: &str, topic: &str, args: &[&str]) {
    let out = super::cds()
        .arg("simulate")
        .args(args)
        .args(["--to", &format!("kafka://{brokers}/{topic}")])
        .output()
        .expect("simulate --to kafka");
    assert!(
        out.status.success(),
        "producing failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Produces simulator events one message per record batch (no batching): a consumer resuming
/// at any offset then starts exactly there. tansu 0.6.0 answers a fetch that starts inside a
/// record batch with the batch after it, skipping the rest of that batch, which a resume
/// test must not mistake for the engine losing events (Apache Kafka and Event Hubs return the
/// batch that contains the offset).
pub fn produce_unbatched(brokers: &str, topic: &str, args: &[&str]) -> usize {
    let out = super::simulate(args);
    let lines = super::lines(&out);
    produce_lines_unbatched(brokers, topic, &lines)
}

/// Produces the given payloads one message per record batch (see [`produce_unbatched`]),
/// without keys.
pub fn produce_lines_unbatched(brokers: &str, topic: &str, lines: &[&[u8]]) -> usize {
    send_lines(brokers, topic, lines, None)
}

/// The same, without keys, every payload to `partition`.
pub fn produce_lines_to_partition(
    brokers: &str,
    topic: &str,
    partition: i32,
    lines: &[&[u8]],
) -> usize {
    send_lines(brokers, topic, lines, Some(partition))
}

fn send_lines(brokers: &str, topic: &str, lines: &[&[u8]], partition: Option<i32>) -> usize {
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "0")
        .set("batch.num.messages", "1")
        .set("max.in.flight.requests.per.connection", "1")
        .create()
        .expect("producer");
    let mut n = 0;
    for line in lines.iter().copied() {
        let mut record = BaseRecord::<str, [u8]>::to(topic).payload(line);
        if let Some(p) = partition {
            record = record.partition(p);
        }
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, r)) => {
                    record = r;
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
            }
        }
        n += 1;
    }
    producer
        .flush(std::time::Duration::from_secs(300))
        .expect("all produced");
    n
}
