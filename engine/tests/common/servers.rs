//! Servers a test starts, stops and restarts on its own port: a Kafka broker (tansu) that keeps
//! its log on disk, and the Cosmos DB test server. Both die with the value that owns them.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A private broker (`CDS_TEST_TANSU`). Unlike the suite's shared broker it keeps its log in a
/// SQLite file, so that a restart keeps topics, messages and committed offsets, as a restarted
/// Kafka broker (or an Event Hubs failover) does.
pub struct Tansu {
    child: Child,
}

impl Tansu {
    /// Starts it on `port` with its log in `dir`, and waits until it listens.
    pub fn start(port: u16, dir: &Path) -> Self {
        let tansu = std::env::var("CDS_TEST_TANSU")
            .expect("CDS_TEST_TANSU is not set: run `bash tests/run.sh`");
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(&tansu)
            .current_dir(dir)
            .args(["broker", "--listener-url", &url])
            .args(["--advertised-listener-url", &url])
            .args(["--storage-engine", "sqlite://tansu.db"])
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(dir.join("tansu.log"))
                    .map(Stdio::from)
                    .unwrap_or(Stdio::null()),
            )
            .spawn()
            .expect("start tansu");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "tansu did not start on {port}");
            std::thread::sleep(Duration::from_millis(100));
        }
        Tansu { child }
    }

    pub fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The Cosmos DB test server (`CDS_TEST_COSMOS_SERVER`, else `tests/cosmos/server.js`) on a
/// fixed port, so that it can be stopped and started again under the engine.
pub struct CosmosServer {
    child: Option<Child>,
    port: u16,
    log: PathBuf,
}

impl CosmosServer {
    pub fn start(port: u16, log: PathBuf) -> Self {
        let mut server = CosmosServer {
            child: None,
            port,
            log,
        };
        server.restart();
        server
    }

    /// Stops it if it runs, starts it again and waits until it listens (it prints one line).
    pub fn restart(&mut self) {
        self.stop();
        let launcher = std::env::var_os("CDS_TEST_COSMOS_SERVER").map_or_else(
            || Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/cosmos/server.js"),
            PathBuf::from,
        );
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("server log");
        let mut child = Command::new("node")
            .arg(launcher)
            .arg(self.port.to_string())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start node tests/cosmos/server.js");
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            let _ = BufReader::new(out).read_line(&mut line);
        }
        assert!(
            line.starts_with("listening"),
            "the Cosmos DB test server did not start: {line:?}\n{}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
        self.child = Some(child);
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }
}

impl Drop for CosmosServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The value of a series on the engine's `/metrics`: `name` alone takes its first series,
/// `name{labels}` as rendered takes that one. `None` while the HTTP server is not up yet.
pub fn metric(http: &str, series: &str) -> Option<f64> {
    let body = super::http::response(http, "/metrics", &[], Duration::from_secs(30))?;
    body.lines().find_map(|l| {
        let rest = l.strip_prefix(series)?;
        let rest = match rest.strip_prefix('{') {
            Some(labelled) => labelled.split_once('}')?.1,
            None => rest,
        };
        rest.strip_prefix(' ')?.trim().parse().ok()
    })
}
