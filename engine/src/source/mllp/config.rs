use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;

use serde::Deserialize;

use crate::source::SourceError;

/// Configuration of the MLLP listener source.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MllpConfig {
    /// `HOST:PORT` to listen on.
    pub listen: String,
    /// Where the durable log of received messages lives (`DATA_DIR/mllp`).
    pub log_dir: PathBuf,
    /// Most connections served at once; further ones are closed at once.
    #[serde(default = "default_connections")]
    pub max_connections: usize,
    /// Largest message taken; a longer frame is answered AR and dropped.
    #[serde(default = "default_message_bytes")]
    pub max_message_bytes: usize,
    /// Seconds a connection may send nothing (or take no ACK) before it is closed, so that
    /// senders that went quiet do not hold the connection slots forever.
    #[serde(default = "default_idle_timeout_secs")]
    pub idle_timeout_secs: u64,
    /// Most connections from one address at once, so that one misbehaving sender cannot take
    /// every slot from the others.
    #[serde(default = "default_max_per_peer")]
    pub max_per_peer: usize,
    /// Addresses that may connect; empty allows every address.
    #[serde(default)]
    pub allow: Vec<Cidr>,
    /// TLS (`mllps://`): the server's certificate chain and key, PEM.
    #[serde(default)]
    pub tls: Option<MllpTls>,
}

/// The PEM files of an `mllps://` listener.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MllpTls {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// Private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

fn default_connections() -> usize {
    32
}

fn default_message_bytes() -> usize {
    1 << 20
}

fn default_idle_timeout_secs() -> u64 {
    60
}

fn default_max_per_peer() -> usize {
    8
}

impl MllpConfig {
    /// Parses `mllp://HOST:PORT` (a plain listener with the default limits).
    pub fn from_url(url: &str, log_dir: PathBuf) -> Result<Self, SourceError> {
        let (tls, listen) = split_url(url)?;
        if tls {
            return Err(SourceError::Config(format!(
                "{url:?}: an mllps:// listener needs a certificate and a key"
            )));
        }
        Ok(MllpConfig {
            listen,
            log_dir,
            max_connections: default_connections(),
            max_message_bytes: default_message_bytes(),
            idle_timeout_secs: default_idle_timeout_secs(),
            max_per_peer: default_max_per_peer(),
            allow: Vec::new(),
            tls: None,
        })
    }
}

/// `mllp://HOST:PORT` or `mllps://HOST:PORT`: whether it is TLS, and `HOST:PORT`.
fn split_url(url: &str) -> Result<(bool, String), SourceError> {
    let (tls, rest) = match (url.strip_prefix("mllps://"), url.strip_prefix("mllp://")) {
        (Some(rest), _) => (true, rest),
        (None, Some(rest)) => (false, rest),
        (None, None) => (false, ""),
    };
    let listen = rest.trim_end_matches('/');
    if listen.is_empty() || !listen.contains(':') {
        return Err(SourceError::Config(format!(
            "{url:?}: expected mllp://HOST:PORT or mllps://HOST:PORT"
        )));
    }
    Ok((tls, listen.to_owned()))
}

/// The MLLP listener's command-line settings (`cds run --source mllp://…`). Each argument has an
/// `mllp_` id of its own: flattened into `cds run`, a bare field name (`tls_cert`) would share
/// its id with the HTTP server's flag and one would take the other's value.
#[derive(Debug, Clone, clap::Args)]
pub struct MllpArgs {
    /// Seconds an MLLP connection may send nothing before it is closed and its slot freed.
    #[arg(id = "mllp_idle_timeout", long = "mllp-idle-timeout", default_value_t = default_idle_timeout_secs(), value_name = "SECS")]
    pub idle_timeout_secs: u64,
    /// Most MLLP connections from one address at once; further ones are closed and counted.
    #[arg(id = "mllp_max_per_peer", long = "mllp-max-per-peer", default_value_t = default_max_per_peer(), value_name = "N")]
    pub max_per_peer: usize,
    /// Addresses that may connect to the MLLP listener, as CIDR (`10.0.0.0/8`, `::1/128`) or
    /// one address (repeatable); default every address. Others are closed and counted.
    #[arg(id = "mllp_allow", long = "mllp-allow", value_name = "CIDR")]
    pub allow: Vec<Cidr>,
    /// Certificate chain (PEM) of an `mllps://` listener.
    #[arg(id = "mllp_tls_cert", long = "mllp-tls-cert", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of an `mllps://` listener.
    #[arg(id = "mllp_tls_key", long = "mllp-tls-key", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
}

/// The settings of a run given no `--mllp-*` flag.
impl Default for MllpArgs {
    fn default() -> Self {
        MllpArgs {
            idle_timeout_secs: default_idle_timeout_secs(),
            max_per_peer: default_max_per_peer(),
            allow: Vec::new(),
            tls_cert: None,
            tls_key: None,
        }
    }
}

impl MllpArgs {
    /// The listener's configuration for `--source URL`.
    pub fn config(&self, url: &str, log_dir: PathBuf) -> Result<MllpConfig, SourceError> {
        let (tls, listen) = split_url(url)?;
        if self.idle_timeout_secs == 0 || self.max_per_peer == 0 {
            return Err(SourceError::Config(
                "--mllp-idle-timeout and --mllp-max-per-peer must be at least 1".into(),
            ));
        }
        let tls = match (tls, &self.tls_cert, &self.tls_key) {
            (true, Some(cert), Some(key)) => Some(MllpTls {
                cert: cert.clone(),
                key: key.clone(),
            }),
            (true, _, _) => {
                return Err(SourceError::Config(
                    "an mllps:// source needs --mllp-tls-cert FILE and --mllp-tls-key FILE".into(),
                ))
            }
            (false, None, None) => None,
            (false, _, _) => {
                return Err(SourceError::Config(
                    "--mllp-tls-cert and --mllp-tls-key need an mllps:// source".into(),
                ))
            }
        };
        Ok(MllpConfig {
            listen,
            log_dir,
            max_connections: default_connections(),
            max_message_bytes: default_message_bytes(),
            idle_timeout_secs: self.idle_timeout_secs,
            max_per_peer: self.max_per_peer,
            allow: self.allow.clone(),
            tls,
        })
    }
}

/// A block of addresses, `ADDRESS/PREFIX` (one address when the prefix is left out).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

/// Why a CIDR block does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("{0:?} is not an IP address (expected e.g. 10.0.0.0/8 or fd00::/8)")]
    Address(String),
    #[error("{0:?}: the prefix length must be a number up to 32 (IPv4) or 128 (IPv6)")]
    Prefix(String),
}

impl Cidr {
    /// Whether `ip` is in the block (an IPv4 address seen as IPv6, `::ffff:a.b.c.d`, counts as
    /// the IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => prefix_match(
                u128::from(u32::from(net)) << 96,
                u128::from(u32::from(ip)) << 96,
                self.prefix,
            ),
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_match(u128::from(net), u128::from(ip), self.prefix)
            }
            _ => false,
        }
    }
}

/// Whether the first `prefix` bits of two left-aligned addresses agree.
fn prefix_match(a: u128, b: u128, prefix: u8) -> bool {
    match prefix {
        0 => true,
        p => {
            let mask = u128::MAX << (128 - u32::from(p.min(128)));
            a & mask == b & mask
        }
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (address, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let network: IpAddr = address
            .parse()
            .map_err(|_| CidrError::Address(s.to_owned()))?;
        let network = network.to_canonical();
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| CidrError::Prefix(s.to_owned()))?,
        };
        Ok(Cidr { network, prefix })
    }
}

impl TryFrom<String> for Cidr {
    type Error = CidrError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    #[test]
    fn cidr_blocks_match_by_prefix() {
        let ten: Cidr = "10.0.0.0/8".parse().expect("cidr");
        assert!(ten.contains(ip("10.200.3.4")));
        assert!(ten.contains(ip("::ffff:10.1.1.1")));
        assert!(!ten.contains(ip("127.0.0.1")));
        assert!(!ten.contains(ip("::1")));
        let one: Cidr = "192.168.1.7".parse().expect("cidr");
        assert!(one.contains(ip("192.168.1.7")) && !one.contains(ip("192.168.1.8")));
        let all: Cidr = "0.0.0.0/0".parse().expect("cidr");
        assert!(all.contains(ip("8.8.8.8")));
        let v6: Cidr = "fd00::/8".parse().expect("cidr");
        assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("ward-3/8".parse::<Cidr>().is_err());
        assert!("::/129".parse::<Cidr>().is_err());
    }

    #[test]
    fn urls_and_tls_files_go_together() {
        let args = MllpArgs {
            idle_timeout_secs: 60,
            max_per_peer: 8,
            allow: Vec::new(),
            tls_cert: None,
            tls_key: None,
        };
        let plain = args
            .config("mllp://127.0.0.1:2575", PathBuf::from("log"))
            .expect("plain");
        assert_eq!(plain.listen, "127.0.0.1:2575");
        assert!(plain.tls.is_none());
        assert!(args
            .config("mllps://127.0.0.1:2575", PathBuf::from("log"))
            .is_err());
        let tls = MllpArgs {
            tls_cert: Some("cert.pem".into()),
            tls_key: Some("key.pem".into()),
            ..args.clone()
        };
        assert!(tls
            .config("mllps://0.0.0.0:2575", PathBuf::from("log"))
            .expect("tls")
            .tls
            .is_some());
        assert!(tls
            .config("mllp://0.0.0.0:2575", PathBuf::from("log"))
            .is_err());
        assert!(MllpConfig::from_url("mllps://h:1", PathBuf::from("log")).is_err());
        assert!(MllpConfig::from_url("mllp://nohost", PathBuf::from("log")).is_err());
    }
}
