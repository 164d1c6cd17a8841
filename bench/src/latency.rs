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
//!
//! Event to alert, the delay clinicians feel, is measured the same way with the rule pack and
//! the lake on: the flow has deteriorating patients whose readings fire NEWS2, and each NEWS2
//! alert is timed from its reading's due time to the return of the sink write that carries it
//! (the alert names the reading's `event_id`).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use cds_engine::gold::micros;
use cds_engine::lake::writer::LakeConfig;
use cds_engine::metrics::Metrics;
use cds_engine::model::DeadLetter;
use cds_engine::model::{parse_time, Network, Pseudonymiser};
use cds_engine::pipeline::{self, PipelineConfig};
use cds_engine::rules::RulesStage;
use cds_engine::sink::sqlite::{SqliteConfig, SqliteSink};
use cds_engine::source::kafka::{KafkaConfig, KafkaSource};
use cds_engine::source::{Poll, Position, RawBatch, Source, SourceError};
use hdrhistogram::Histogram;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

use crate::observe::{latest, AlertLog, AlertWatch, ObservedSink, WriteLog};
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
    /// Where the time went: due -> read by the pipeline's source (producer, broker, consumer),
    /// and read -> KPI written (the engine), as (p50, p99, max).
    pub to_read: (u64, u64, u64),
    pub read_to_written: (u64, u64, u64),
    /// The longest single call of the source's `poll`, `commit` and `lag`, and the longest
    /// gap between two polls (time the ingest thread spent elsewhere).
    pub longest_poll: Duration,
    pub longest_commit: Duration,
    pub longest_lag: Duration,
    pub longest_gap: Duration,
    pub checkpoints: u64,
}

/// What the source wrapper saw.
#[derive(Debug, Default)]
struct SourceLog {
    /// When a poll returned messages, and the highest offset it returned.
    arrivals: Vec<(Instant, i64)>,
    longest_poll: Duration,
    longest_commit: Duration,
    longest_lag: Duration,
    longest_gap: Duration,
    last_return: Option<Instant>,
}

/// The Kafka source, with every call timed: separates the broker's and the consumer's share
/// of the latency from the engine's.
struct TimedSource {
    inner: KafkaSource,
    log: Arc<Mutex<SourceLog>>,
}

impl Source for TimedSource {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn poll(
        &mut self,
        batch: &mut RawBatch,
        max: usize,
        wait: Duration,
    ) -> Result<Poll, SourceError> {
        let before = batch.len();
        let t = Instant::now();
        let r = self.inner.poll(batch, max, wait);
        let now = Instant::now();
        if let Ok(mut log) = self.log.lock() {
            log.longest_poll = log.longest_poll.max(now - t);
            if let Some(last) = log.last_return {
                log.longest_gap = log.longest_gap.max(t.saturating_duration_since(last));
            }
            log.last_return = Some(now);
            if let Some(high) = batch.iter().skip(before).map(|(_, p)| p.offset).max() {
                log.arrivals.push((now, high));
            }
        }
        r
    }

    fn stream_name(&self, stream: u16) -> String {
        self.inner.stream_name(stream)
    }

    fn dead_letter(&mut self, letter: &DeadLetter) -> Result<(), SourceError> {
        self.inner.dead_letter(letter)
    }

    fn commit(&mut self, upto: &[Position]) -> Result<(), SourceError> {
        let t = Instant::now();
        let r = self.inner.commit(upto);
        if let Ok(mut log) = self.log.lock() {
            log.longest_commit = log.longest_commit.max(t.elapsed());
        }
        r
    }

    fn lag(&mut self) -> Option<u64> {
        let t = Instant::now();
        let r = self.inner.lag();
        if let Ok(mut log) = self.log.lock() {
            log.longest_lag = log.longest_lag.max(t.elapsed());
        }
        r
    }

    fn identity(&self) -> String {
        self.inner.identity()
    }

    fn skip_to(&mut self, upto: &[Position]) -> Result<(), SourceError> {
        self.inner.skip_to(upto)
    }
}

fn percentiles(h: &Histogram<u64>) -> (u64, u64, u64) {
    (h.value_at_quantile(0.5), h.value_at_quantile(0.99), h.max())
}

pub(crate) fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{name}-{}-{}", std::process::id(), nanos % 1_000_000_000)
}

pub(crate) fn create_topic(brokers: &str, topic: &str, partitions: i32) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let topics = [NewTopic::new(topic, partitions, TopicReplication::Fixed(1))];
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

/// Waits until the alert for the reading `event_id` is written, or `limit` passes.
fn wait_alerted(log: &AlertLog, event_id: &str, limit: Duration) -> bool {
    let t = Instant::now();
    while t.elapsed() < limit {
        if log
            .lock()
            .is_ok_and(|l| l.iter().rev().any(|(_, e)| e == event_id))
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

/// What a load measures the latency to.
#[derive(Debug, Clone, Copy)]
pub enum Written<'a> {
    /// The first KPI write that includes the event (rules and lake off).
    Kpis,
    /// The NEWS2 alert on a deteriorating reading, with the rule pack in this directory and
    /// the lake on.
    News2Alert {
        rules: &'a Path,
        /// The engine's `--reorder-window`.
        reorder_window: Duration,
    },
}

impl Written<'_> {
    /// The report section.
    pub fn section(&self) -> &'static str {
        match self {
            Written::Kpis => "latency",
            Written::News2Alert { .. } => "alert-latency",
        }
    }

    /// What is written at the end of the span measured.
    pub fn what(&self) -> &'static str {
        match self {
            Written::Kpis => "KPI written",
            Written::News2Alert { .. } => "NEWS2 alert written",
        }
    }

    /// The span measured.
    pub fn span(&self) -> &'static str {
        match self {
            Written::Kpis => "produce -> KPI written",
            Written::News2Alert { .. } => "reading due -> NEWS2 alert written",
        }
    }
}

/// The rule whose alerts the event-to-alert latency times.
const NEWS2: &str = "news2";

/// Beds in rotation of the event-to-alert flow, and every how many beds a stay starts with a
/// deteriorating reading: 100 beds, so that the 200-event warm-up includes the first alerts
/// (events 100 to 199 are the first readings); one stay in four, so that 1 event in 40 fires
/// NEWS2 (and, with it, the other rules that watch vital signs).
const ALERT_BEDS: u64 = 100;
const DETERIORATING_EVERY: u64 = 4;

/// Runs one offered load for `seconds` after a warm-up; returns its percentiles.
pub fn one_load(
    scratch: &Path,
    network: &Network,
    brokers: &str,
    rate: u64,
    seconds: f64,
    tuning: Tuning,
    written: Written<'_>,
) -> anyhow::Result<LoadResult> {
    let topic = unique("bench-latency");
    create_topic(brokers, &topic, 1)?;
    let data = scratch.join(&topic);
    let start = parse_time("2026-03-02T00:00:00Z").context("start time")?;
    let warmup = 200usize;
    let measured = ((rate as f64 * seconds) as usize).max(1);
    let mut flow = match written {
        // 5,000 beds in rotation: a steady census, each stay ten events.
        Written::Kpis => Flow::new(network, start, 5_000),
        // Event time advances as fast as the readings are sent, as a live feed's does: the
        // reorder window then costs what it costs a hospital.
        Written::News2Alert { .. } => Flow::new(network, start, ALERT_BEDS)
            .deteriorating(DETERIORATING_EVERY)
            .spaced((1_000_000 / rate.max(1)) as i64),
    };
    let mut times = Vec::with_capacity(warmup + measured);
    let mut lines = Vec::with_capacity(warmup + measured);
    // Event numbers of the measured readings that must fire NEWS2.
    let mut deteriorating = Vec::new();
    for seq in 0..warmup + measured {
        if seq >= warmup && flow.next_deteriorates() {
            deteriorating.push(seq);
        }
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
    let source_log: Arc<Mutex<SourceLog>> = Arc::default();
    let source = TimedSource {
        inner: KafkaSource::open(kafka)?,
        log: source_log.clone(),
    };
    let log: WriteLog = Arc::default();
    let alert_log: AlertLog = Arc::default();
    let sink = ObservedSink {
        inner: Box::new(SqliteSink::open(&SqliteConfig::in_data_dir(&data))?),
        log: log.clone(),
        alerts: match written {
            Written::Kpis => None,
            Written::News2Alert { .. } => Some(AlertWatch {
                mlmname: NEWS2,
                log: alert_log.clone(),
            }),
        },
    };
    let mut config = PipelineConfig::new(data.clone(), network.clone());
    config.until = pipeline::Until::Shutdown;
    config.flush_interval = Duration::from_millis(tuning.flush_ms);
    config.checkpoint_interval = tuning.checkpoint_secs.map(Duration::from_secs);
    let metrics = Arc::new(Metrics::new());
    let rules = match written {
        Written::Kpis => None,
        Written::News2Alert {
            rules,
            reorder_window,
        } => {
            config.reorder_window = reorder_window;
            config.lake = Some(LakeConfig::new(data.join("lake").display().to_string()));
            // As `cds run` has it by default: one rules thread per core.
            config.rules_threads = pipeline::auto_rules_threads();
            Some(RulesStage::load(rules, network.clone(), metrics.clone())?)
        }
    };
    let shutdown = Arc::new(AtomicBool::new(false));
    let job = {
        let (shutdown, metrics) = (shutdown.clone(), metrics.clone());
        std::thread::spawn(move || {
            pipeline::run(
                config,
                pipeline::Parts {
                    source: Box::new(source),
                    sink: Box::new(sink),
                    rules,
                    pseudonyms: Pseudonymiser::new(b"bench"),
                    metrics,
                    shutdown,
                },
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
        if let Some(&seq) = deteriorating.last() {
            if !wait_alerted(&alert_log, &format!("B-{seq}"), Duration::from_secs(120)) {
                bail!("the last deteriorating reading at {rate}/s was not alerted on within 120 s");
            }
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
    let source_log = std::mem::take(
        &mut *source_log
            .lock()
            .map_err(|_| anyhow::anyhow!("source log poisoned"))?,
    );
    let new_hist = || Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3);
    let (mut hist, mut to_read, mut read_to_written) = (new_hist()?, new_hist()?, new_hist()?);
    if let Written::News2Alert { .. } = written {
        let alerts = std::mem::take(
            &mut *alert_log
                .lock()
                .map_err(|_| anyhow::anyhow!("alert log poisoned"))?,
        );
        // The first write of each measured reading's alert, by event number.
        let mut alerted: std::collections::BTreeMap<usize, Instant> = Default::default();
        for (at, event_id) in alerts {
            let Some(seq) = event_id
                .strip_prefix("B-")
                .and_then(|n| n.parse::<usize>().ok())
            else {
                bail!("an alert names event {event_id:?}, not one of the bench's");
            };
            if seq >= warmup {
                alerted.entry(seq).or_insert(at);
            }
        }
        if let Some(seq) = deteriorating.iter().find(|s| !alerted.contains_key(s)) {
            bail!("the deteriorating reading B-{seq} at {rate}/s fired no NEWS2 alert");
        }
        for (&seq, alert_written) in &alerted {
            let Some(due) = due.get(seq - warmup) else {
                bail!("an alert names event B-{seq}, beyond the {measured} measured");
            };
            hist.record((alert_written.saturating_duration_since(*due).as_micros() as u64).max(1))?;
            // The topic is new and has one producer: event number n is at offset n.
            let offset = seq as i64;
            let a = source_log
                .arrivals
                .partition_point(|(_, high)| *high < offset);
            if let Some((read, _)) = source_log.arrivals.get(a) {
                to_read.record((read.saturating_duration_since(*due).as_micros() as u64).max(1))?;
                read_to_written.record(
                    (alert_written.saturating_duration_since(*read).as_micros() as u64).max(1),
                )?;
            }
        }
    }
    let (mut w, mut a) = (0usize, 0usize);
    let kpis = match written {
        Written::Kpis => due.len(),
        Written::News2Alert { .. } => 0,
    };
    for (i, due) in due.iter().enumerate().take(kpis) {
        let at = times[warmup + i];
        while writes.get(w).is_some_and(|(_, as_of)| *as_of < at) {
            w += 1;
        }
        let Some((written, _)) = writes.get(w) else {
            bail!("event {i} at {rate}/s is in no KPI write");
        };
        let us = written.saturating_duration_since(*due).as_micros() as u64;
        hist.record(us.max(1))?;
        // The topic is new and has one producer: event number n is at offset n.
        let offset = (warmup + i) as i64;
        while source_log
            .arrivals
            .get(a)
            .is_some_and(|(_, high)| *high < offset)
        {
            a += 1;
        }
        if let Some((read, _)) = source_log.arrivals.get(a) {
            to_read.record((read.saturating_duration_since(*due).as_micros() as u64).max(1))?;
            read_to_written
                .record((written.saturating_duration_since(*read).as_micros() as u64).max(1))?;
        }
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
        events: hist.len(),
        p50: hist.value_at_quantile(0.5),
        p99: hist.value_at_quantile(0.99),
        p999: hist.value_at_quantile(0.999),
        max: hist.max(),
        to_read: percentiles(&to_read),
        read_to_written: percentiles(&read_to_written),
        longest_poll: source_log.longest_poll,
        longest_commit: source_log.longest_commit,
        longest_lag: source_log.longest_lag,
        longest_gap: source_log.longest_gap,
        checkpoints: metrics.checkpoint.checkpoints_written.get(),
    })
}

/// `fetch.wait.max.ms` when the source is given none (the engine leaves librdkafka's).
const DEFAULT_FETCH_WAIT: &str = "librdkafka's 500";

/// The knobs between a produced event and its written KPIs: the pipeline's sink flush
/// interval (`PipelineConfig::flush_interval`), the consumer's `fetch.wait.max.ms` (how long
/// the broker may hold a fetch that has less than `fetch.min.bytes`; a broker that answers
/// only at that deadline adds it to every event), and how often a checkpoint is taken.
#[derive(Debug, Clone, Copy)]
pub struct Tuning {
    pub flush_ms: u64,
    /// `None`: the engine's default.
    pub fetch_wait_ms: Option<u64>,
    /// Seconds between checkpoints (`cds run` takes one every 10 s by default); `None`: off.
    pub checkpoint_secs: Option<u64>,
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
            None => write!(f, "engine default ({DEFAULT_FETCH_WAIT} ms)"),
        }?;
        match self.checkpoint_secs {
            Some(s) => write!(f, ", checkpoint every {s} s"),
            None => write!(f, ", no checkpoints"),
        }
    }
}

impl std::str::FromStr for Tuning {
    type Err = String;

    /// `FLUSH_MS/FETCH_WAIT_MS/CHECKPOINT_S`: `default` for the engine's fetch wait, `off`
    /// (or nothing) for no checkpoints.
    fn from_str(s: &str) -> Result<Self, String> {
        let mut parts = s.split('/');
        let (Some(flush), Some(fetch)) = (parts.next(), parts.next()) else {
            return Err("expected FLUSH_MS/FETCH_WAIT_MS[/CHECKPOINT_S]".into());
        };
        Ok(Tuning {
            flush_ms: flush.parse().map_err(|_| "bad FLUSH_MS")?,
            fetch_wait_ms: match fetch {
                "default" => None,
                ms => Some(ms.parse().map_err(|_| "bad FETCH_WAIT_MS")?),
            },
            checkpoint_secs: match parts.next() {
                None | Some("off") => None,
                Some(secs) => Some(secs.parse().map_err(|_| "bad CHECKPOINT_S")?),
            },
        })
    }
}

/// The offered loads of a measurement, events per second, each lasting `seconds`.
#[derive(Debug, Clone, Copy)]
pub struct Loads<'a> {
    pub rates: &'a [u64],
    pub seconds: f64,
}

/// Runs every offered load and reports its percentiles.
pub fn measure(
    report: &mut Report,
    scratch: &Path,
    network: &Network,
    brokers: &str,
    loads: Loads<'_>,
    tuning: Tuning,
    written: Written<'_>,
) -> anyhow::Result<Vec<LoadResult>> {
    let mut results = Vec::new();
    let section = written.section();
    let Loads { rates, seconds } = loads;
    for &rate in rates {
        let r = one_load(scratch, network, brokers, rate, seconds, tuning, written)?;
        let what = match written {
            Written::Kpis => format!("{rate} events/s offered, {} events, {tuning}", r.events),
            Written::News2Alert { reorder_window, .. } => format!(
                "{rate} events/s offered, {} NEWS2 alerts, rule pack and lake on, reorder window {} ms, {tuning}",
                r.events,
                reorder_window.as_millis()
            ),
        };
        for (name, v) in [
            ("p50", r.p50),
            ("p99", r.p99),
            ("p99.9", r.p999),
            ("max", r.max),
        ] {
            report.figure(
                section,
                &format!("{what}: {}, {name}", written.span()),
                v as f64 / 1000.0,
                "ms",
            );
        }
        let ms = |us: u64| us as f64 / 1000.0;
        let (a, b) = (r.to_read, r.read_to_written);
        report.line(
            section,
            &format!("{what}: where the time went"),
            &format!(
                "due -> read by the source p50/p99/max {:.1}/{:.1}/{:.1} ms; read -> {} {:.1}/{:.1}/{:.1} ms; longest poll {:.0} ms, commit {:.0} ms, lag {:.0} ms, gap between polls {:.0} ms; {} checkpoints",
                ms(a.0), ms(a.1), ms(a.2), written.what(), ms(b.0), ms(b.1), ms(b.2),
                r.longest_poll.as_secs_f64() * 1000.0,
                r.longest_commit.as_secs_f64() * 1000.0,
                r.longest_lag.as_secs_f64() * 1000.0,
                r.longest_gap.as_secs_f64() * 1000.0,
                r.checkpoints,
            ),
        );
        results.push(r);
    }
    Ok(results)
}
