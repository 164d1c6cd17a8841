//! Starting the real binary with a tokens file and talking HTTP to it (a few lines of
//! HTTP/1.1 over a TCP stream: no client library needed).

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use cds_engine::http::auth::hash_token;
use serde_json::Value;

pub struct Engine {
    child: Child,
    pub addr: String,
    pub dir: PathBuf,
    pub stderr: PathBuf,
    args: Vec<std::ffi::OsString>,
    env: Vec<(String, String)>,
    starts: usize,
}

fn spawn(args: &[std::ffi::OsString], env: &[(String, String)], stderr: &std::path::Path) -> Child {
    super::cds()
        .args(args)
        .env("CDS_PSEUDONYM_KEY", "http-test")
        .env("CDS_LOG", "debug")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(stderr).expect("log file"))
        .spawn()
        .expect("engine")
}

impl Engine {
    /// Waits until the engine has read `lines` events (when given) and its alerts have stopped
    /// changing.
    pub fn settle(&self, lines: Option<usize>) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last = String::new();
        loop {
            let metrics = get(self, "/metrics", None).1;
            let read_all = lines.is_none_or(|lines| {
                metrics
                    .lines()
                    .filter(|l| l.starts_with("cds_events_in_total"))
                    .filter_map(|l| l.rsplit(' ').next()?.parse::<usize>().ok())
                    .sum::<usize>()
                    == lines
            });
            let (status, body) = get(self, "/api/alerts", Some("tok-admin"));
            if read_all && status == 200 && body.len() > 50 && body == last {
                return;
            }
            last = body;
            assert!(Instant::now() < deadline, "the engine did not settle");
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// Stops the engine as an operator does (SIGTERM: it finishes, checkpoints and exits), starts
    /// it again with the same flags, data directory and file, and waits until it serves.
    pub fn restart(&mut self) {
        let pid = self.child.id().to_string();
        let stopped = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        assert!(stopped.success(), "signalled");
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("state") {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "the engine did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        let log = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        assert!(
            status.success(),
            "stopped cleanly on SIGTERM ({status}):\n{log}"
        );
        assert!(
            log.contains("cds: stopping"),
            "the stop was the signal's:\n{log}"
        );
        self.starts += 1;
        self.stderr = self.dir.join(format!("engine-{}.log", self.starts));
        self.child = spawn(&self.args, &self.env, &self.stderr);
        self.addr = address_in_log(&self.stderr, "http");
        self.settle(None);
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const TOKENS: &str = r#"
[[token]]
name = "dr-icu-3"
sha256 = "CLIN"
role = "clinician"
hospitals = [3]
departments = ["ICU"]

[[token]]
name = "dr-h1"
sha256 = "WARD"
role = "clinician"
hospitals = [1]

[[token]]
name = "beds-3"
sha256 = "BED"
role = "bed_manager"
hospitals = [3]

[[token]]
name = "ops"
sha256 = "ADMIN"
role = "admin"
"#;

pub fn start() -> (Engine, Vec<String>) {
    start_with(&[], "")
}

/// The engine with extra `run` flags and extra tokens-file entries (already hashed).
pub fn start_with(flags: &[&str], more_tokens: &str) -> (Engine, Vec<String>) {
    start_full(flags, more_tokens, &[], None)
}

/// The engine with extra `run` flags, tokens-file entries, environment variables, and the
/// events of its file (`None`: the usual simulated 6,000).
pub fn start_full(
    flags: &[&str],
    more_tokens: &str,
    env: &[(&str, &str)],
    events: Option<&[u8]>,
) -> (Engine, Vec<String>) {
    let dir = super::scratch("engine");
    let events = match events {
        Some(e) => e.to_vec(),
        None => super::simulate(&["--seed", "5", "--max-events", "6000", "--dirty-rate", "0"]),
    };
    let patients: BTreeSet<String> = String::from_utf8_lossy(&events)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["patient_id"].as_str().map(str::to_owned))
        .collect();
    std::fs::write(dir.join("events.jsonl"), &events).expect("events");
    let tokens = TOKENS
        .replace("CLIN", &hash_token("tok-clin"))
        .replace("BED", &hash_token("tok-bed"))
        .replace("WARD", &hash_token("tok-ward"))
        .replace("ADMIN", &hash_token("tok-admin"))
        + more_tokens;
    std::fs::write(dir.join("tokens.toml"), tokens).expect("tokens");
    let mut args: Vec<std::ffi::OsString> = ["run", "--http", "127.0.0.1:0", "--rules"]
        .iter()
        .map(Into::into)
        .collect();
    args.push(super::rules_dir().into());
    args.push("--source".into());
    args.push(format!("file:{}", dir.join("events.jsonl").display()).into());
    args.push("--tokens".into());
    args.push(dir.join("tokens.toml").into());
    args.push("--data-dir".into());
    args.push(dir.join("data").into());
    args.extend(flags.iter().map(Into::into));
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let stderr = dir.join("engine.log");
    let child = spawn(&args, &env, &stderr);
    let addr = address_in_log(&stderr, "http");
    let engine = Engine {
        child,
        addr,
        dir,
        stderr,
        args,
        env,
        starts: 1,
    };
    // Wait until the whole file is read and the store has stopped changing.
    let lines = events.iter().filter(|&&b| b == b'\n').count();
    engine.settle(Some(lines));
    (engine, patients.into_iter().collect())
}

/// The whole answer (head and body) to a GET, or `None` while nothing answers (or within
/// `timeout`).
pub fn response(
    addr: &str,
    path: &str,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> Option<String> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(timeout)).ok()?;
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    Some(text)
}

pub fn request(addr: &str, path: &str, headers: &[(&str, &str)]) -> TcpStream {
    send(addr, "GET", path, headers, "")
}

/// Sends one request (`Connection: close`) and returns the connection, to read the answer from.
pub fn send(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> TcpStream {
    let mut s = TcpStream::connect(addr).expect("connect");
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if method != "GET" {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).expect("send");
    s
}

/// Status and body (chunked transfer decoded) of a GET.
pub fn get(engine: &Engine, path: &str, token: Option<&str>) -> (u16, String) {
    call(engine, "GET", path, token, "")
}

/// Status and body of a POST with a JSON body.
pub fn post(engine: &Engine, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
    call(engine, "POST", path, token, body)
}

fn call(
    engine: &Engine,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, String) {
    let (status, _, body) = call_with_head(engine, method, path, token, body);
    (status, body)
}

/// Status, the next page's path (the `Link` header's `rel="next"`), and body of a GET.
pub fn get_page(engine: &Engine, path: &str, token: Option<&str>) -> (u16, Option<String>, String) {
    let (status, head, body) = call_with_head(engine, "GET", path, token, "");
    let next = head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        if !name.trim().eq_ignore_ascii_case("link") {
            return None;
        }
        let value = value.trim();
        value
            .ends_with("rel=\"next\"")
            .then(|| {
                value
                    .strip_prefix('<')?
                    .split_once('>')
                    .map(|(p, _)| p.to_owned())
            })
            .flatten()
    });
    (status, next, body)
}

fn call_with_head(
    engine: &Engine,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, String, String) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| vec![("Authorization", a)])
        .unwrap_or_default();
    let mut s = send(&engine.addr, method, path, &headers, body);
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    (status, head.to_owned(), body)
}

pub fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

pub fn json(body: &str) -> Vec<Value> {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not a JSON list ({e}): {body:.200}"))
}

/// Reads `n` SSE event ids from the stream (after `last`, if given).
pub fn stream_ids(engine: &Engine, token: &str, last: Option<u64>, n: usize) -> Vec<u64> {
    let auth = format!("Bearer {token}");
    let last_s = last.map(|l| l.to_string());
    let mut headers = vec![("Authorization", auth.as_str())];
    if let Some(l) = last_s.as_deref() {
        headers.push(("Last-Event-ID", l));
    }
    let s = request(&engine.addr, "/api/alerts/stream", &headers);
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut ids = Vec::new();
    for line in BufReader::new(s).lines() {
        let Ok(line) = line else { break };
        if let Some(id) = line.strip_prefix("id:") {
            ids.push(id.trim().parse().expect("numeric id"));
            if ids.len() == n {
                break;
            }
        }
    }
    ids
}

/// The address the engine announces in its log (`HTTP on SCHEME://ADDR`), waited for up to 30 s.
pub fn address_in_log(log: &std::path::Path, scheme: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    let marker = format!("HTTP on {scheme}://");
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(a) = text
            .split(marker.as_str())
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
        {
            return a.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no {scheme} address in the log:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
