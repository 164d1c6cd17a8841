//! HL7 v2 over MLLP: a TCP listener that takes framed messages (`0x0B` message `0x1C 0x0D`),
//! appends each to a durable log in the data directory, and only then answers with an ACK.
//!
//! The log is the source: the engine reads it like a file, and a payload's position is the
//! byte offset just past its record, which is what a checkpoint stores. A message is
//! acknowledged after its record is synced to disk, so an acknowledged message survives a
//! crash; a restart continues after the checkpointed offset, so nothing is read twice.
//!
//! The ACK says what became of the message: `AA` when it maps onto events, `AE` (with an ERR
//! segment) when it is HL7 v2 of a type we take but its content is wrong, `AR` when it is not
//! HL7 v2 or of a type we do not take. Every message is logged, the failing ones included, so
//! that they reach the dead-letter store with the reason.
//!
//! Senders are outside parties, and one that misbehaves must not lock the others out: a
//! connection that sends nothing for the idle timeout is closed, accepted sockets get TCP
//! keepalive, one address holds at most `max_per_peer` of the slots, addresses outside the
//! allow list are closed at accept, and a connection's slot is an owned guard dropped however
//! its task ends (a panic included). Every refusal and idle timeout is counted and logged
//! with fixed text, never a message's content. `mllps://` runs the same over TLS.

mod config;
pub mod framer;

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{IpAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use prometheus::{IntCounter, IntCounterVec, Opts};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;

pub use config::{Cidr, CidrError, MllpArgs, MllpConfig, MllpTls};
use framer::{Framed, Framer, CR, END, START};

use super::{Poll, Position, RawBatch, Source, SourceError};
use crate::decode::{hl7v2, Census, FormatError};

/// The file of received messages, in MLLP framing, under the log directory.
const LOG_FILE: &str = "received.hl7";

/// The writing side of the log, shared by the connections.
struct LogWriter {
    file: File,
    len: u64,
}

/// Receives HL7 v2 over MLLP.
pub struct MllpSource {
    name: String,
    path: PathBuf,
    reader: BufReader<File>,
    /// Offset of the next record to read.
    read_at: u64,
    /// Bytes of the log that are synced to disk.
    durable: Arc<AtomicU64>,
    /// Dropped with the source, which stops the listener.
    _stop: watch::Sender<()>,
    local_addr: std::net::SocketAddr,
    metrics: MllpMetrics,
}

impl std::fmt::Debug for MllpSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MllpSource")
            .field("name", &self.name)
            .finish()
    }
}

impl MllpSource {
    /// Opens (or creates) the log and starts listening.
    pub fn open(config: &MllpConfig) -> Result<Self, SourceError> {
        std::fs::create_dir_all(&config.log_dir).map_err(|source| SourceError::Open {
            path: config.log_dir.display().to_string(),
            source,
        })?;
        let path = config.log_dir.join(LOG_FILE);
        let open_err = |source| SourceError::Open {
            path: path.display().to_string(),
            source,
        };
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(open_err)?;
        let len = file.metadata().map_err(open_err)?.len();
        let reader = BufReader::with_capacity(1 << 16, File::open(&path).map_err(open_err)?);
        let listener = TcpListener::bind(&config.listen)
            .map_err(|e| SourceError::Config(format!("cannot listen on {}: {e}", config.listen)))?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| SourceError::Config(e.to_string()))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| SourceError::Config(e.to_string()))?;
        let tls = config.tls.as_ref().map(tls_acceptor).transpose()?;
        let metrics = MllpMetrics::new()?;
        let durable = Arc::new(AtomicU64::new(len));
        let (stop, stopped) = watch::channel(());
        let listening = Arc::new(Listening {
            writer: Mutex::new(LogWriter { file, len }),
            durable: durable.clone(),
            slots: Arc::new(Semaphore::new(config.max_connections.max(1))),
            peers: Arc::new(Mutex::new(HashMap::new())),
            max_per_peer: config.max_per_peer.max(1),
            allow: config.allow.clone(),
            idle: Duration::from_secs(config.idle_timeout_secs.max(1)),
            max_message_bytes: config.max_message_bytes.max(64),
            tls,
            metrics: metrics.clone(),
        });
        // One thread runs every connection: they wait on the network, not on the CPU, and
        // log appends go to tokio's blocking threads.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| SourceError::Config(format!("cannot start the MLLP listener: {e}")))?;
        std::thread::Builder::new()
            .name("cds-mllp".into())
            .spawn(move || {
                runtime.block_on(listening.accept(listener, stopped));
                // Connections still open are dropped (and their slots with them).
                runtime.shutdown_timeout(Duration::from_secs(1));
            })
            .map_err(|e| SourceError::Config(e.to_string()))?;
        let scheme = if config.tls.is_some() {
            "mllps"
        } else {
            "mllp"
        };
        tracing::info!(address = %local_addr, tls = config.tls.is_some(), "MLLP listener started");
        Ok(MllpSource {
            name: format!("{scheme}://{}", config.listen),
            path,
            reader,
            read_at: 0,
            durable,
            _stop: stop,
            local_addr,
            metrics,
        })
    }

    /// The address the listener is bound to (useful with port 0).
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.local_addr
    }

    /// Appends the log up to and including the next CR to `record`; returns the bytes read.
    fn read_segment(&mut self, record: &mut Vec<u8>) -> Result<usize, SourceError> {
        let n = self
            .reader
            .read_until(CR, record)
            .map_err(|e| self.read_err(e))?;
        self.read_at += n as u64;
        Ok(n)
    }

    fn read_err(&self, source: std::io::Error) -> SourceError {
        SourceError::Read {
            path: self.path.display().to_string(),
            source,
        }
    }
}

impl Source for MllpSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn poll(
        &mut self,
        batch: &mut RawBatch,
        max: usize,
        wait: Duration,
    ) -> Result<Poll, SourceError> {
        let deadline = Instant::now() + wait;
        let before = batch.len();
        let mut record = Vec::new();
        loop {
            let durable = self.durable.load(Ordering::Acquire);
            while self.read_at < durable && batch.len() - before < max {
                record.clear();
                if self.read_segment(&mut record)? == 0 {
                    break;
                }
                // A record is START message END CR; a CR inside the message (the segment
                // separator) ends a read early, so keep reading until END CR.
                while !record.ends_with(&[END, CR]) && self.read_at < durable {
                    if self.read_segment(&mut record)? == 0 {
                        break;
                    }
                }
                let body = record
                    .strip_prefix(&[START])
                    .and_then(|r| r.strip_suffix(&[END, CR]))
                    .unwrap_or(&record);
                batch.push(body, 0, self.read_at as i64);
            }
            if batch.len() > before {
                return Ok(Poll::Ready);
            }
            if Instant::now() >= deadline {
                return Ok(Poll::Idle);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        vec![
            Box::new(self.metrics.refused.clone()),
            Box::new(self.metrics.idle_timeouts.clone()),
        ]
    }

    fn skip_to(&mut self, upto: &[Position]) -> Result<(), SourceError> {
        let Some(last) = upto.iter().map(|p| p.offset).max() else {
            return Ok(());
        };
        let target = u64::try_from(last).unwrap_or(0);
        let durable = self.durable.load(Ordering::Acquire);
        if target > durable {
            return Err(SourceError::Config(format!(
                "the checkpoint is {target} bytes into the MLLP log, which holds {durable}: the log was replaced"
            )));
        }
        self.reader
            .seek(SeekFrom::Start(target))
            .map_err(|e| self.read_err(e))?;
        self.read_at = target;
        Ok(())
    }
}

/// Seconds of silence after which the kernel starts probing an accepted connection, so that
/// a sender that vanished (cable pulled, VPN dropped) is noticed even while it owes nothing.
const KEEPALIVE_TIME: Duration = Duration::from_secs(30);
/// Seconds between keepalive probes.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// Bytes read from a connection at a time.
const READ_CHUNK: usize = 16 * 1024;

/// The listener's counters, registered in the run's metrics by the pipeline
/// ([`Source::collectors`]).
#[derive(Clone)]
struct MllpMetrics {
    /// Connections closed at accept, by reason: `not_allowed` (not in `--mllp-allow`),
    /// `peer_cap` (that address holds `--mllp-max-per-peer` connections), `full` (every slot
    /// is taken).
    refused: IntCounterVec,
    /// Connections closed because they sent nothing for the idle timeout.
    idle_timeouts: IntCounter,
}

impl MllpMetrics {
    fn new() -> Result<Self, SourceError> {
        let metric_err = |e: prometheus::Error| SourceError::Config(format!("MLLP metrics: {e}"));
        let refused = IntCounterVec::new(
            Opts::new(
                "cds_mllp_connections_refused_total",
                "MLLP connections closed at accept, by reason",
            ),
            &["reason"],
        )
        .map_err(metric_err)?;
        for reason in [Refused::NotAllowed, Refused::PeerCap, Refused::Full] {
            refused.with_label_values(&[reason.label()]);
        }
        let idle_timeouts = IntCounter::new(
            "cds_mllp_idle_timeouts_total",
            "MLLP connections closed after the idle timeout",
        )
        .map_err(metric_err)?;
        Ok(MllpMetrics {
            refused,
            idle_timeouts,
        })
    }
}

/// Why a connection was closed at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refused {
    NotAllowed,
    PeerCap,
    Full,
}

impl Refused {
    fn label(self) -> &'static str {
        match self {
            Refused::NotAllowed => "not_allowed",
            Refused::PeerCap => "peer_cap",
            Refused::Full => "full",
        }
    }
}

/// Why a connection ended other than by the sender closing it.
#[derive(Debug, thiserror::Error)]
enum ConnectionError {
    #[error("no bytes for the idle timeout")]
    Idle,
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the log writer stopped: {0}")]
    Writer(#[from] tokio::task::JoinError),
}

/// A connection's place: a slot of the listener and one of its address's. Dropping it frees
/// both, and it is dropped on every way out of the connection's task (the sender closing, an
/// error, the idle timeout, a panic, the listener stopping).
struct Slot {
    _permit: OwnedSemaphorePermit,
    _peer: PeerSlot,
}

/// One of an address's `--mllp-max-per-peer` connections.
struct PeerSlot {
    peers: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut peers = self.peers.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = peers.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                // The map holds only addresses that are connected now: it stays bounded.
                peers.remove(&self.ip);
            }
        }
    }
}

/// The listener's shared state.
struct Listening {
    writer: Mutex<LogWriter>,
    durable: Arc<AtomicU64>,
    slots: Arc<Semaphore>,
    peers: Arc<Mutex<HashMap<IpAddr, usize>>>,
    max_per_peer: usize,
    allow: Vec<Cidr>,
    idle: Duration,
    max_message_bytes: usize,
    tls: Option<TlsAcceptor>,
    metrics: MllpMetrics,
}

impl Listening {
    /// Accepts connections until the source is dropped.
    async fn accept(self: Arc<Self>, listener: TcpListener, mut stop: watch::Receiver<()>) {
        let listener = match tokio::net::TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "MLLP listener cannot start");
                return;
            }
        };
        loop {
            let accepted = tokio::select! {
                _ = stop.changed() => return,
                accepted = listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, mostly: wait rather than spin.
                    tracing::warn!(error = %e, "MLLP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let slot = match self.admit(peer.ip()) {
                Ok(slot) => slot,
                Err(reason) => {
                    self.metrics
                        .refused
                        .with_label_values(&[reason.label()])
                        .inc();
                    tracing::warn!(
                        reason = reason.label(),
                        peer = %peer.ip(),
                        "MLLP connection refused"
                    );
                    drop(stream);
                    continue;
                }
            };
            tokio::spawn(self.clone().connection(stream, slot));
        }
    }

    /// Decides whether a connection from `ip` is served, and takes its slot if so.
    fn admit(&self, ip: IpAddr) -> Result<Slot, Refused> {
        let ip = ip.to_canonical();
        if !self.allow.is_empty() && !self.allow.iter().any(|c| c.contains(ip)) {
            return Err(Refused::NotAllowed);
        }
        let peer = {
            let mut peers = self.peers.lock().unwrap_or_else(PoisonError::into_inner);
            let held = peers.entry(ip).or_insert(0);
            if *held >= self.max_per_peer {
                return Err(Refused::PeerCap);
            }
            *held += 1;
            PeerSlot {
                peers: self.peers.clone(),
                ip,
            }
        };
        // On refusal `peer` is dropped here, which gives the address's slot back.
        let permit = self
            .slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refused::Full)?;
        Ok(Slot {
            _permit: permit,
            _peer: peer,
        })
    }

    /// Serves one connection; `_slot` is held until it ends, however it ends.
    async fn connection(self: Arc<Self>, stream: tokio::net::TcpStream, _slot: Slot) {
        if let Err(e) = keepalive(&stream) {
            tracing::debug!(error = %e, "MLLP keepalive not set");
        }
        let result = match &self.tls {
            None => self.serve(stream).await,
            Some(acceptor) => {
                match tokio::time::timeout(self.idle, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => self.serve(tls).await,
                    Ok(Err(e)) => Err(ConnectionError::Io(e)),
                    Err(_) => Err(ConnectionError::Idle),
                }
            }
        };
        match result {
            Ok(()) => tracing::debug!("MLLP connection closed by the sender"),
            Err(ConnectionError::Idle) => {
                self.metrics.idle_timeouts.inc();
                tracing::info!("MLLP connection closed: idle for the idle timeout");
            }
            Err(e) => tracing::debug!(error = %e, "MLLP connection closed"),
        }
    }

    /// Reads frames from one connection until it closes or goes idle, answering each.
    async fn serve<S>(self: &Arc<Self>, mut stream: S) -> Result<(), ConnectionError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut framer = Framer::new(self.max_message_bytes);
        let mut chunk = vec![0u8; READ_CHUNK];
        let mut frames = Vec::new();
        loop {
            let n = tokio::time::timeout(self.idle, stream.read(&mut chunk))
                .await
                .map_err(|_| ConnectionError::Idle)??;
            if n == 0 {
                if framer.in_frame() {
                    tracing::debug!("MLLP connection closed inside a frame");
                }
                return Ok(());
            }
            framer.push(&chunk[..n], &mut frames);
            for frame in frames.drain(..) {
                let answer = match frame {
                    Framed::Message(message) => {
                        // Appending syncs the log to disk: off the async threads.
                        let this = self.clone();
                        tokio::task::spawn_blocking(move || this.take(&message)).await??
                    }
                    Framed::TooLong => framed(&hl7v2::ack(
                        None,
                        "AR",
                        Some(("100", "message too long")),
                        &now(),
                    )),
                };
                // A sender that does not read its ACKs is as idle as one that sends nothing.
                tokio::time::timeout(self.idle, async {
                    stream.write_all(&answer).await?;
                    stream.flush().await
                })
                .await
                .map_err(|_| ConnectionError::Idle)??;
            }
        }
    }

    /// Logs one message durably, then returns its framed ACK.
    fn take(&self, message: &[u8]) -> std::io::Result<Vec<u8>> {
        let parsed = hl7v2::parse(message);
        let (code, error) = match &parsed {
            Err(e) => ("AR", Some(("100".to_owned(), e.to_string()))),
            Ok(m) if !hl7v2::supported(m) => {
                let (k, t) = m.kind();
                (
                    "AR",
                    Some((
                        "200".to_owned(),
                        format!("unsupported message type {k}^{t}"),
                    )),
                )
            }
            // The content is checked with a scratch census: the engine maps it for real.
            Ok(m) => match hl7v2::map(m, &mut Census::default()) {
                Ok(_) => ("AA", None),
                Err(FormatError::Hl7(reason)) => ("AE", Some(("207".to_owned(), reason))),
                Err(e) => ("AE", Some(("207".to_owned(), e.to_string()))),
            },
        };
        self.append(message)?;
        let error = error.as_ref().map(|(c, t)| (c.as_str(), t.as_str()));
        let ack = hl7v2::ack(parsed.as_ref().ok(), code, error, &now());
        Ok(framed(&ack))
    }

    /// Appends one record and syncs it; the reader may then read it.
    fn append(&self, message: &[u8]) -> std::io::Result<()> {
        let mut record = Vec::with_capacity(message.len() + 3);
        record.push(START);
        record.extend(message.iter().copied().filter(|b| *b != START && *b != END));
        record.extend_from_slice(&[END, CR]);
        let mut log = self
            .writer
            .lock()
            .map_err(|_| std::io::Error::other("the MLLP log lock is poisoned"))?;
        log.file.write_all(&record)?;
        log.file.sync_data()?;
        log.len += record.len() as u64;
        self.durable.store(log.len, Ordering::Release);
        Ok(())
    }
}

/// Turns on TCP keepalive for an accepted connection.
fn keepalive(stream: &tokio::net::TcpStream) -> std::io::Result<()> {
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE_TIME)
        .with_interval(KEEPALIVE_INTERVAL);
    socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive)
}

/// The TLS side of an `mllps://` listener, from its PEM files. Only the ring provider is
/// named: the build links more than one, and rustls will not pick among them by itself.
fn tls_acceptor(files: &MllpTls) -> Result<TlsAcceptor, SourceError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    fn tls_err(what: &str, path: &std::path::Path, e: impl std::fmt::Display) -> SourceError {
        SourceError::Config(format!("MLLP TLS {what} {}: {e}", path.display()))
    }
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| tls_err("certificate", &files.cert, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| tls_err("certificate", &files.cert, e))?;
    if certs.is_empty() {
        return Err(tls_err(
            "certificate",
            &files.cert,
            "no certificate in the file",
        ));
    }
    let key =
        PrivateKeyDer::from_pem_file(&files.key).map_err(|e| tls_err("key", &files.key, e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
        .map_err(|e| tls_err("certificate and key", &files.cert, e))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn framed(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 3);
    out.push(START);
    out.extend_from_slice(message);
    out.extend_from_slice(&[END, CR]);
    out
}

fn now() -> String {
    chrono::Utc::now().format("%Y%m%d%H%M%S%z").to_string()
}

/// Sends one message over MLLP and returns the ACK (for tests and tools).
pub fn send(stream: &mut TcpStream, message: &[u8]) -> std::io::Result<Vec<u8>> {
    stream.write_all(&framed(message))?;
    stream.flush()?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut ack = Vec::new();
    reader.read_until(START, &mut ack)?;
    ack.clear();
    reader.read_until(END, &mut ack)?;
    let mut cr = [0u8; 1];
    reader.read_exact(&mut cr)?;
    if ack.last() == Some(&END) {
        ack.pop();
    }
    Ok(ack)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A listener's shared state without a socket, over a scratch log.
    fn listening(dir: &std::path::Path, max_connections: usize, max_per_peer: usize) -> Listening {
        std::fs::create_dir_all(dir).expect("scratch dir");
        let file = File::create(dir.join(LOG_FILE)).expect("log");
        Listening {
            writer: Mutex::new(LogWriter { file, len: 0 }),
            durable: Arc::new(AtomicU64::new(0)),
            slots: Arc::new(Semaphore::new(max_connections)),
            peers: Arc::new(Mutex::new(HashMap::new())),
            max_per_peer,
            allow: vec![
                "10.0.0.0/8".parse().expect("cidr"),
                "::1".parse().expect("cidr"),
            ],
            idle: Duration::from_secs(60),
            max_message_bytes: 1024,
            tls: None,
            metrics: MllpMetrics::new().expect("metrics"),
        }
    }

    #[test]
    fn slots_come_back_when_a_connection_task_panics() {
        let dir = std::env::temp_dir().join(format!("cds-mllp-slots-{}", std::process::id()));
        let this = listening(&dir, 2, 1);
        let a: IpAddr = "10.1.2.3".parse().expect("ip");
        let b: IpAddr = "::ffff:10.9.9.9".parse().expect("ip");
        assert_eq!(
            this.admit("127.0.0.1".parse().expect("ip")).err(),
            Some(Refused::NotAllowed)
        );
        let slot = this.admit(a).expect("first from a");
        assert_eq!(this.admit(a).err(), Some(Refused::PeerCap));
        let other = this.admit(b).expect("b, an IPv4 address seen as IPv6");
        assert_eq!(
            this.admit("::1".parse().expect("ip")).err(),
            Some(Refused::Full)
        );
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let task = runtime.spawn(async move {
            let _held = slot;
            panic!("a defect in a connection task");
        });
        assert!(runtime.block_on(task).is_err_and(|e| e.is_panic()));
        drop(other);
        assert!(
            this.admit(a).is_ok(),
            "the panicked task gave a's slot back"
        );
        assert!(
            this.peers.lock().expect("peers").is_empty(),
            "no address is remembered"
        );
        assert_eq!(this.slots.available_permits(), 2);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn acknowledges_after_logging_and_reads_back_from_the_log() {
        let dir = std::env::temp_dir().join(format!("cds-mllp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let config = MllpConfig {
            listen: "127.0.0.1:0".into(),
            log_dir: dir.clone(),
            max_connections: 4,
            max_message_bytes: 4096,
            idle_timeout_secs: 60,
            max_per_peer: 4,
            allow: Vec::new(),
            tls: None,
        };
        let mut source = MllpSource::open(&config).expect("listen");
        let mut stream = TcpStream::connect(source.local_addr()).expect("connect");
        let good = b"MSH|^~\\&|A|B|C|D|20260302101500||ADT^A01|C1|P|2.5.1\rPID|1||P1^^^X^MR\rPV1|1|I|ICU^^^3\r";
        let ack = String::from_utf8(send(&mut stream, good).expect("ack")).expect("utf-8");
        assert!(ack.contains("MSA|AA|C1"), "{ack}");
        let bad = b"MSH|^~\\&|A|B|C|D|20260302101500||ADT^A01|C2|P|2.5.1\rPV1|1|I|ICU^^^3\r";
        let ack = String::from_utf8(send(&mut stream, bad).expect("ack")).expect("utf-8");
        assert!(ack.contains("MSA|AE|C2") && ack.contains("\rERR|"), "{ack}");
        let other = b"MSH|^~\\&|A|B|C|D|20260302101500||SIU^S12|C3|P|2.5.1\r";
        let ack = String::from_utf8(send(&mut stream, other).expect("ack")).expect("utf-8");
        assert!(ack.contains("MSA|AR|C3") && ack.contains("200^"), "{ack}");
        let ack = String::from_utf8(send(&mut stream, b"hello").expect("ack")).expect("utf-8");
        assert!(ack.contains("MSA|AR|"), "{ack}");

        let mut batch = RawBatch::default();
        let mut got = Vec::new();
        while got.len() < 4 {
            batch.clear();
            source
                .poll(&mut batch, 10, Duration::from_millis(200))
                .expect("poll");
            got.extend(batch.iter().map(|(p, pos)| (p.to_vec(), pos.offset)));
        }
        assert_eq!(got[0].0, good.to_vec());
        assert_eq!(got[3].0, b"hello".to_vec());
        // A restart continues after the last processed record.
        drop(source);
        let mut config = config;
        config.listen = "127.0.0.1:0".into();
        let mut again = MllpSource::open(&config).expect("reopen");
        again
            .skip_to(&[Position {
                stream: 0,
                partition: 0,
                offset: got[1].1,
            }])
            .expect("skip");
        batch.clear();
        again
            .poll(&mut batch, 10, Duration::from_millis(50))
            .expect("poll");
        let rest: Vec<Vec<u8>> = batch.iter().map(|(p, _)| p.to_vec()).collect();
        assert_eq!(rest, vec![other.to_vec(), b"hello".to_vec()]);
        let _ = std::fs::remove_dir_all(dir);
    }
}
