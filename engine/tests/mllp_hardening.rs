//! The MLLP listener under senders that misbehave, through the `cds` binary: connections
//! that go quiet are closed after the idle timeout and free their slots, one address cannot
//! take every slot, addresses outside `--mllp-allow` are turned away, a connection dropped
//! in the middle of a frame gives its slot back, and `mllps://` answers over TLS. Every
//! refusal and timeout is counted on `/metrics`.

mod common;

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cds_engine::source::mllp;
use common::servers::metric;
use common::{cds, free_port, scratch};

const IDLE_TIMEOUTS: &str = "cds_mllp_idle_timeouts_total";

fn refused(reason: &str) -> String {
    format!("cds_mllp_connections_refused_total{{reason=\"{reason}\"}}")
}

/// An admission message the engine takes (ACK `AA`).
fn admission(control: &str) -> Vec<u8> {
    format!(
        "MSH|^~\\&|ADT|WARD|CDS|HOSP|20260302101500||ADT^A01|{control}|P|2.5.1\rPID|1||P1^^^X^MR\rPV1|1|I|ICU^^^3\r"
    )
    .into_bytes()
}

/// A running `cds run` with an MLLP source; killed when dropped.
struct Engine {
    child: Child,
    mllp: SocketAddr,
    http: String,
    dir: PathBuf,
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Starts the engine listening on `scheme://127.0.0.1:PORT` with `extra` flags, and waits
/// until its metrics (the listener's among them) are served.
fn start(name: &str, scheme: &str, extra: &[&str]) -> Engine {
    let dir = scratch(name);
    let port = free_port();
    let http = format!("127.0.0.1:{}", free_port());
    let log = File::create(dir.join("stderr.log")).expect("log file");
    let child = cds()
        .args([
            "run",
            "--source",
            &format!("{scheme}://127.0.0.1:{port}"),
            "--http",
            &http,
            "--rules",
            "off",
            "--lake",
            "off",
            "--checkpoint-interval",
            "0",
            "--data-dir",
        ])
        .arg(dir.join("data"))
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("cds run");
    let mut engine = Engine {
        child,
        mllp: SocketAddr::from(([127, 0, 0, 1], port)),
        http,
        dir,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while metric(&engine.http, IDLE_TIMEOUTS).is_none() {
        if let Ok(Some(status)) = engine.child.try_wait() {
            panic!(
                "cds run stopped ({status}):\n{}",
                std::fs::read_to_string(engine.dir.join("stderr.log")).unwrap_or_default()
            );
        }
        assert!(Instant::now() < deadline, "the engine did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    engine
}

/// Waits until a series on `/metrics` has the value `want`.
fn wait_metric(engine: &Engine, series: &str, want: f64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = metric(&engine.http, series);
        if got == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{series} is {got:?}, expected {want}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A connection to the listener from a local address of our choosing (any of 127.0.0.0/8
/// is this machine), so that a test can be more than one sender.
fn connect_from(local: [u8; 4], to: SocketAddr) -> TcpStream {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket
        .bind(&SocketAddr::from((local, 0)).into())
        .expect("bind a loopback address");
    socket.connect(&to.into()).expect("connect");
    socket.into()
}

/// Whether the listener closed the connection (within a few seconds).
fn closed_by_listener(mut stream: &TcpStream, within: Duration) -> bool {
    stream.set_read_timeout(Some(within)).expect("timeout");
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => false,
        Err(_) => true,
    }
}

/// Sends one message and returns its ACK.
fn ack(stream: &mut TcpStream, control: &str) -> String {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let ack = mllp::send(stream, &admission(control)).expect("an ACK");
    String::from_utf8(ack).expect("utf-8 ACK")
}

#[test]
fn forty_idle_connections_do_not_lock_out_a_sender_after_the_idle_timeout() {
    // No per-address cap to speak of: the 32 slots are the limit here.
    let engine = start(
        "idle",
        "mllp",
        &["--mllp-idle-timeout", "1", "--mllp-max-per-peer", "64"],
    );
    let idle: Vec<TcpStream> = (0..40)
        .map(|_| TcpStream::connect(engine.mllp).expect("connect"))
        .collect();
    wait_metric(&engine, &refused("full"), 8.0);
    // The held ones are closed after a second of silence, and counted.
    wait_metric(&engine, IDLE_TIMEOUTS, 32.0);
    let closed = idle
        .iter()
        .filter(|s| closed_by_listener(s, Duration::from_secs(5)))
        .count();
    assert_eq!(closed, 40, "every idle connection is closed");
    let mut sender = TcpStream::connect(engine.mllp).expect("connect");
    let answer = ack(&mut sender, "AFTER-IDLE");
    assert!(answer.contains("MSA|AA|AFTER-IDLE"), "{answer}");
    wait_metric(&engine, &refused("full"), 8.0);
}

#[test]
fn a_sender_gets_its_ack_while_idle_connections_are_held_up_to_the_per_peer_cap() {
    // 8 s: the sender's ACK must come while the idle ones are still held, on a loaded machine too.
    let engine = start("peer-idle", "mllp", &["--mllp-idle-timeout", "8"]);
    let _idle: Vec<TcpStream> = (0..40)
        .map(|_| connect_from([127, 0, 0, 1], engine.mllp))
        .collect();
    // The default cap holds 8 of them; the other 32 are refused at once.
    wait_metric(&engine, &refused("peer_cap"), 32.0);
    let mut sender = connect_from([127, 0, 0, 2], engine.mllp);
    let answer = ack(&mut sender, "WHILE-HELD");
    assert!(answer.contains("MSA|AA|WHILE-HELD"), "{answer}");
    assert_eq!(
        metric(&engine.http, IDLE_TIMEOUTS),
        Some(0.0),
        "the idle connections were still held"
    );
    // The sender leaves; only the 8 idle ones time out.
    drop(sender);
    wait_metric(&engine, IDLE_TIMEOUTS, 8.0);
    let mut again = connect_from([127, 0, 0, 1], engine.mllp);
    let answer = ack(&mut again, "AFTER-IDLE");
    assert!(answer.contains("MSA|AA|AFTER-IDLE"), "{answer}");
    assert_eq!(metric(&engine.http, &refused("full")), Some(0.0));
}

#[test]
fn the_per_peer_cap_refuses_one_connection_more_and_counts_it() {
    let engine = start("peer-cap", "mllp", &["--mllp-max-per-peer", "2"]);
    let mut first = TcpStream::connect(engine.mllp).expect("connect");
    let mut second = TcpStream::connect(engine.mllp).expect("connect");
    assert!(ack(&mut first, "ONE").contains("MSA|AA|ONE"));
    assert!(ack(&mut second, "TWO").contains("MSA|AA|TWO"));
    let third = TcpStream::connect(engine.mllp).expect("connect");
    assert!(
        closed_by_listener(&third, Duration::from_secs(5)),
        "the third connection from one address is closed"
    );
    wait_metric(&engine, &refused("peer_cap"), 1.0);
    // The two it holds are served as before.
    assert!(ack(&mut first, "THREE").contains("MSA|AA|THREE"));
    // Another address is not held to this one's cap.
    let mut other = connect_from([127, 0, 0, 3], engine.mllp);
    assert!(ack(&mut other, "FOUR").contains("MSA|AA|FOUR"));
    assert_eq!(metric(&engine.http, &refused("peer_cap")), Some(1.0));
}

#[test]
fn addresses_outside_the_allow_list_are_refused_and_counted() {
    let engine = start(
        "allow",
        "mllp",
        &["--mllp-allow", "10.0.0.0/8", "--mllp-allow", "127.0.0.2/32"],
    );
    let outside = connect_from([127, 0, 0, 1], engine.mllp);
    assert!(
        closed_by_listener(&outside, Duration::from_secs(5)),
        "127.0.0.1 is not in 10.0.0.0/8"
    );
    wait_metric(&engine, &refused("not_allowed"), 1.0);
    let mut inside = connect_from([127, 0, 0, 2], engine.mllp);
    let answer = ack(&mut inside, "ALLOWED");
    assert!(answer.contains("MSA|AA|ALLOWED"), "{answer}");
    assert_eq!(metric(&engine.http, &refused("not_allowed")), Some(1.0));
}

#[test]
fn a_connection_dropped_mid_frame_frees_its_slot() {
    // One connection per address, and no idle timeout within the test: only the drop can
    // free the slot.
    let engine = start(
        "mid-frame",
        "mllp",
        &["--mllp-max-per-peer", "1", "--mllp-idle-timeout", "600"],
    );
    let mut broken = TcpStream::connect(engine.mllp).expect("connect");
    let message = admission("LOST");
    broken.write_all(&[0x0b]).expect("write");
    broken
        .write_all(&message[..message.len() / 2])
        .expect("write");
    broken.flush().expect("flush");
    drop(broken);
    // The listener notices the close a moment later; until then the slot is still taken.
    let deadline = Instant::now() + Duration::from_secs(10);
    let answer = loop {
        let mut sender = TcpStream::connect(engine.mllp).expect("connect");
        sender
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        match mllp::send(&mut sender, &admission("AFTER-DROP")) {
            Ok(ack) => break String::from_utf8(ack).expect("utf-8 ACK"),
            Err(e) => assert!(
                Instant::now() < deadline,
                "the slot of the dropped connection was not freed: {e}"
            ),
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(answer.contains("MSA|AA|AFTER-DROP"), "{answer}");
    assert_eq!(metric(&engine.http, IDLE_TIMEOUTS), Some(0.0));
}

/// A certificate authority and a server certificate for `localhost` signed by it, made with
/// the `openssl` command; returns (CA certificate, server chain, server key).
fn certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("the openssl command");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=cds-test-ca",
    ]);
    run(&[
        "req",
        "-new",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "key.pem",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    std::fs::write(
        dir.join("server.ext"),
        "basicConstraints=critical,CA:FALSE\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n\
         keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .expect("extensions file");
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "cert.pem",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    ]);
    (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    )
}

#[test]
fn a_tls_sender_gets_its_ack_over_mllps() {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;

    let certs = scratch("certs");
    let (ca, cert, key) = certificates(&certs);
    let engine = start(
        "tls",
        "mllps",
        &[
            "--mllp-tls-cert",
            cert.to_str().expect("utf-8"),
            "--mllp-tls-key",
            key.to_str().expect("utf-8"),
        ],
    );
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(&ca).expect("CA file") {
        roots.add(c.expect("CA certificate")).expect("a root");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let server_name = "localhost".try_into().expect("server name");
    let client = rustls::ClientConnection::new(Arc::new(config), server_name).expect("TLS client");
    let tcp = TcpStream::connect(engine.mllp).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut tls = rustls::StreamOwned::new(client, tcp);
    let mut frame = vec![0x0b];
    frame.extend(admission("OVER-TLS"));
    frame.extend([0x1c, 0x0d]);
    tls.write_all(&frame).expect("send over TLS");
    tls.flush().expect("flush");
    let mut answer = Vec::new();
    let mut chunk = [0u8; 1024];
    while !answer.ends_with(&[0x1c, 0x0d]) {
        let n = tls.read(&mut chunk).expect("the ACK over TLS");
        assert!(n > 0, "the listener closed before its ACK");
        answer.extend_from_slice(&chunk[..n]);
    }
    let answer = String::from_utf8(answer).expect("utf-8 ACK");
    assert!(answer.contains("MSA|AA|OVER-TLS"), "{answer}");

    // A sender speaking plain MLLP to the TLS listener gets no ACK.
    let mut plain = TcpStream::connect(engine.mllp).expect("connect");
    plain
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let answer = mllp::send(&mut plain, &admission("PLAIN"));
    assert!(
        !matches!(&answer, Ok(a) if a.windows(3).any(|w| w == b"MSA")),
        "{answer:?}"
    );
    let _ = std::fs::remove_dir_all(certs);
}
