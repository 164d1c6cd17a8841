//! Event-to-KPI latency through a real Kafka-protocol broker on loopback.
//!
//! A producer thread sends a steady flow of events at an offered rate; each event's latency is
//! measured from the time it was *due* to be sent (not the time it was sent), to the time the
//! sink returned from writing the first KPI write that includes it. Measuring from the
//! intended send time is the correction for coordinated omission: when the producer or the
//! broker stalls, the events queued behind the stall are charged the stall.
//!
//! Which write includes an event is exact: the stream's event times strictly increase on one
//! partition, and every KPI write carries `as_of`, the watermark of the epochs it includes.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use cds_engine::gold::micros;
use cds_engine::metrics::Metrics;
use cds_engine::model::{parse_time, Network, Pseudonymiser};
use cds_engine::pipeline::{self, PipelineConfig, Until};
use cds_engine::sink::sqlite::{SqliteConfig, SqliteSink};
use cds_engine::source::kafka::{KafkaConfig, KafkaSource};
use hdrhistogram::Histogram;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

use crate::observe::{latest, ObservedSink, WriteLog};
use crate::report::Report;
use crate::synth::Flow;

/// The percentiles of one offered load, in microseconds.
#[derive(Debug, Clone)]
pub struct LoadResult {
    pub rate: u64,
    pub events: u64,
    pub p50: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{name}-{}-{}", std::process::id(), nanos % 1_000_000_000)
}

fn create_topic(brokers: &str, topic: &str) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let topics = [NewTopic::new(topic, 1, TopicReplication::Fixed(1))];
    let results = rt.block_on(admin.create_topics(&topics, &AdminOptions::new()))?;
    for r in results {
        r.map_err(|(t, e)| anyhow::anyhow!("cannot create topic {t}: {e}"))?;
    }
    Ok(())
}

/// Sends `lines` at `rate` per second from `t0`; returns the intended send time of each.
fn produce(
    producer: &ThreadedProducer<DefaultProducerContext>,
    topic: &str,
    lines: &[String],
    rate: u64,
) -> anyhow::Result<Vec<Instant>> {
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let t0 = Instant::now();
    let mut due = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        let at = t0 + interval * i as u32;
        let now = Instant::now();
        if at > now {
            std::thread::sleep(at - now);
        }
        due.push(at);
        let mut record = Some(BaseRecord::<'_, (), str>::to(topic).payload(line.as_str()));
        while let Some(r) = record.take() {
            if let Err((e, r)) = producer.send(r) {
                if matches!(
                    e,
                    rdkafka::error::KafkaError::MessageProduction(
                        rdkafka::types::RDKafkaErrorCode::QueueFull
                    )
                ) {
                    std::thread::sleep(Duration::from_micros(200));
                    record = Some(r);
                } else {
                    bail!("produce: {e}");
                }
            }
        }
    }
    Ok(due)
}

/// Waits until a KPI write covers event time `at`, or `limit` passes.
fn wait_written(log: &WriteLog, at: i64, limit: Duration) -> bool {
    let t = Instant::now();
    while t.elapsed() < limit {
        if latest(log).is_some_and(|w| w >= at) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

/// Runs one offered load for `seconds` after a warm-up; returns its percentiles.
pub fn one_load(
    scratch: &Path,
    network: &Network,
    brokers: &str,
    rate: u64,
    seconds: f64,
    tuning: Tuning,
) -> anyhow::Result<LoadResult> {
    let topic = unique("bench-latency");
    create_topic(brokers, &topic)?;
    let data = scratch.join(&topic);
    let start = parse_time("2026-03-02T00:00:00Z").context("start time")?;
    let warmup = 200usize;
    let measured = ((rate as f64 * seconds) as usize).max(1);
    // 5,000 beds in rotation: a steady census, each stay ten events.
    let mut flow = Flow::new(network, start, 5_000);
    let mut times = Vec::with_capacity(warmup + measured);
    let mut lines = Vec::with_capacity(warmup + measured);
    for _ in 0..warmup + measured {
        times.push(micros(&flow.next_time()));
        let mut line = String::new();
        flow.next_line(&mut line);
        lines.push(line);
    }

    let mut kafka = KafkaConfig::from_url(&format!("kafka://{brokers}/{topic}"))?;
    kafka.group = topic.clone();
    if let Some(ms) = tuning.fetch_wait_ms {
        kafka
            .settings
            .push(("fetch.wait.max.ms".into(), ms.to_string()));
    }
    let source = KafkaSource::open(kafka)?;
    let log: WriteLog = Arc::default();
    let sink = ObservedSink {
        inner: Box::new(SqliteSink::open(&SqliteConfig::in_data_dir(&data))?),
        log: log.clone(),
    };
    let mut config = PipelineConfig::new(data.clone(), network.clone());
    config.until = Until::Shutdown;
    config.flush_interval = Duration::from_millis(tuning.flush_ms);
    let shutdown = Arc::new(AtomicBool::new(false));
    let job = {
        let shutdown = shutdown.clone();
        std::thread::spawn(move || {
            pipeline::run(
                config,
                Box::new(source),
                Box::new(sink),
                None,
                Pseudonymiser::new(b"bench"),
                Arc::new(Metrics::new()),
                shutdown,
            )
        })
    };
    let result = (|| {
        let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("linger.ms", "0")
            .set("enable.idempotence", "true")
            .create()?;
        // Warm-up: the consumer joins its group and the first epochs run before timing.
        produce(&producer, &topic, &lines[..warmup], 1_000)?;
        if !wait_written(&log, times[warmup - 1], Duration::from_secs(60)) {
            bail!("the warm-up events were not written within 60 s");
        }
        let due = produce(&producer, &topic, &lines[warmup..], rate)?;
        producer.flush(Duration::from_secs(30))?;
        let last = times[warmup + measured - 1];
        if !wait_written(&log, last, Duration::from_secs(120)) {
            bail!("the events at {rate}/s were not all written within 120 s");
        }
        Ok(due)
    })();
    shutdown.store(true, Ordering::Relaxed);
    let summary = job
        .join()
        .map_err(|_| anyhow::anyhow!("the pipeline thread panicked"))??;
    let due = result?;
    let _ = std::fs::remove_dir_all(&data);

    let writes = log
        .lock()
        .map_err(|_| anyhow::anyhow!("write log poisoned"))?
        .clone();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)?;
    let mut w = 0usize;
    for (i, due) in due.iter().enumerate() {
        let at = times[warmup + i];
        while writes.get(w).is_some_and(|(_, as_of)| *as_of < at) {
            w += 1;
        }
        let Some((written, _)) = writes.get(w) else {
            bail!("event {i} at {rate}/s is in no KPI write");
        };
        let us = written.saturating_duration_since(*due).as_micros() as u64;
        hist.record(us.max(1))?;
    }
    if summary.events < (warmup + measured) as u64 {
        bail!(
            "the pipeline read {} events of {}",
            summary.events,
            warmup + measured
        );
    }
    Ok(LoadResult {
        rate,
        events: measured as u64,
        p50: hist.value_at_quantile(0.5),
        p99: hist.value_at_quantile(0.99),
        p999: hist.value_at_quantile(0.999),
        max: hist.max(),
    })
}

/// The two knobs between a produced event and its written KPIs: the pipeline's sink flush
/// interval (`PipelineConfig::flush_interval`, 20 ms by default) and the consumer's
/// `fetch.wait.max.ms` (librdkafka's default is 500 ms: how long the broker may hold a fetch
/// that has less than `fetch.min.bytes`; a broker that answers only at that deadline adds it
/// to every event).
#[derive(Debug, Clone, Copy)]
pub struct Tuning {
    pub flush_ms: u64,
    pub fetch_wait_ms: Option<u64>,
}

impl std::fmt::Display for Tuning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "sink flush interval {} ms, fetch.wait.max.ms ",
            self.flush_ms
        )?;
        match self.fetch_wait_ms {
            Some(ms) => write!(f, "{ms}"),
            None => write!(f, "default (500)"),
        }
    }
}

impl std::str::FromStr for Tuning {
    type Err = String;

    /// `FLUSH_MS/FETCH_WAIT_MS`, the second `default` for librdkafka's.
    fn from_str(s: &str) -> Result<Self, String> {
        let (flush, fetch) = s.split_once('/').ok_or("expected FLUSH_MS/FETCH_WAIT_MS")?;
        Ok(Tuning {
            flush_ms: flush.parse().map_err(|_| "bad FLUSH_MS")?,
            fetch_wait_ms: match fetch {
                "default" => None,
                ms => Some(ms.parse().map_err(|_| "bad FETCH_WAIT_MS")?),
            },
        })
    }
}

/// Runs every offered load and reports its percentiles.
pub fn measure(
    report: &mut Report,
    scratch: &Path,
    network: &Network,
    brokers: &str,
    rates: &[u64],
    seconds: f64,
    tuning: Tuning,
) -> anyhow::Result<Vec<LoadResult>> {
    let mut results = Vec::new();
    for &rate in rates {
        let r = one_load(scratch, network, brokers, rate, seconds, tuning)?;
        let what = format!("{rate} events/s offered, {} events, {tuning}", r.events);
        for (name, v) in [
            ("p50", r.p50),
            ("p99", r.p99),
            ("p99.9", r.p999),
            ("max", r.max),
        ] {
            report.figure(
                "latency",
                &format!("{what}: produce -> KPI written, {name}"),
                v as f64 / 1000.0,
                "ms",
            );
        }
        results.push(r);
    }
    Ok(results)
}
