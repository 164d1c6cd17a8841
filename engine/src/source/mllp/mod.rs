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

mod config;

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use config::MllpConfig;

use super::format::{hl7v2, Census, FormatError};
use super::{Poll, Position, RawBatch, Source, SourceError};

const START: u8 = 0x0b;
const END: u8 = 0x1c;
const CR: u8 = 0x0d;

/// The file of received messages, in MLLP framing, under the log directory.
const LOG_FILE: &str = "received.hl7";

/// The writing side of the log, shared by the connection threads.
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
    stop: Arc<AtomicBool>,
    local_addr: std::net::SocketAddr,
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
        let durable = Arc::new(AtomicU64::new(len));
        let stop = Arc::new(AtomicBool::new(false));
        let writer = Arc::new(Mutex::new(LogWriter { file, len }));
        let listening = Listening {
            writer,
            durable: durable.clone(),
            stop: stop.clone(),
            connections: Arc::new(AtomicUsize::new(0)),
            max_connections: config.max_connections.max(1),
            max_message_bytes: config.max_message_bytes.max(64),
        };
        std::thread::Builder::new()
            .name("cds-mllp".into())
            .spawn(move || listening.accept(listener))
            .map_err(|e| SourceError::Config(e.to_string()))?;
        tracing::info!(address = %local_addr, "MLLP listener started");
        Ok(MllpSource {
            name: format!("mllp://{}", config.listen),
            path,
            reader,
            read_at: 0,
            durable,
            stop,
            local_addr,
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

impl Drop for MllpSource {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
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

/// The listener's shared state.
#[derive(Clone)]
struct Listening {
    writer: Arc<Mutex<LogWriter>>,
    durable: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    connections: Arc<AtomicUsize>,
    max_connections: usize,
    max_message_bytes: usize,
}

impl Listening {
    fn accept(self, listener: TcpListener) {
        while !self.stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((stream, _)) => {
                    if self.connections.load(Ordering::Acquire) >= self.max_connections {
                        tracing::warn!("MLLP connection refused: too many connections");
                        drop(stream);
                        continue;
                    }
                    self.connections.fetch_add(1, Ordering::AcqRel);
                    let this = self.clone();
                    let spawned = std::thread::Builder::new()
                        .name("cds-mllp-conn".into())
                        .spawn(move || {
                            if let Err(e) = this.serve(stream) {
                                tracing::debug!(error = %e, "MLLP connection closed");
                            }
                            this.connections.fetch_sub(1, Ordering::AcqRel);
                        });
                    if spawned.is_err() {
                        self.connections.fetch_sub(1, Ordering::AcqRel);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "MLLP accept failed");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }

    /// Reads frames from one connection until it closes, answering each.
    fn serve(&self, stream: TcpStream) -> std::io::Result<()> {
        stream.set_nonblocking(false)?;
        stream.set_read_timeout(Some(Duration::from_millis(500)))?;
        let mut out = stream.try_clone()?;
        let mut input = BufReader::new(stream);
        let mut frame = Vec::new();
        let mut in_frame = false;
        let mut byte = [0u8; 1];
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            let n = match input.read(&mut byte) {
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue
                }
                Err(e) => return Err(e),
            };
            if n == 0 {
                return Ok(());
            }
            match (in_frame, byte[0]) {
                (false, START) => {
                    in_frame = true;
                    frame.clear();
                }
                (false, _) => {}
                (true, END) => {
                    // The frame ends with END CR; the CR may still be in flight.
                    in_frame = false;
                    let answer = self.take(&frame)?;
                    out.write_all(&answer)?;
                    out.flush()?;
                }
                (true, START) => frame.clear(),
                (true, b) => {
                    frame.push(b);
                    if frame.len() > self.max_message_bytes {
                        in_frame = false;
                        let ack = hl7v2::ack(None, "AR", Some(("100", "message too long")), &now());
                        out.write_all(&framed(&ack))?;
                        frame.clear();
                    }
                }
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

    #[test]
    fn acknowledges_after_logging_and_reads_back_from_the_log() {
        let dir = std::env::temp_dir().join(format!("cds-mllp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let config = MllpConfig {
            listen: "127.0.0.1:0".into(),
            log_dir: dir.clone(),
            max_connections: 4,
            max_message_bytes: 4096,
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
