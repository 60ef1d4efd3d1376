//! Where a listener binds: one address, or a random free port in a range
//! (Kamaelia's `makeTCPServerPort`).

use anyhow::{Context, bail};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

/// Where a listener binds: one address (port 0 = any free port), or a random
/// free port in a range (Kamaelia's `makeTCPServerPort`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListenAddr {
    /// Exactly this address; port 0 lets the kernel pick.
    Addr(SocketAddr),
    /// A random free port in `lo..=hi` on `host`, retried until one binds.
    Range { host: IpAddr, lo: u16, hi: u16 },
}

impl ListenAddr {
    /// From `listen` (`HOST:PORT`, or just `HOST` with a range) and an
    /// optional `port-range` (`LO-HI`), as the CLI and the config file give them.
    pub fn from_parts(listen: Option<&str>, port_range: Option<&str>) -> anyhow::Result<Self> {
        match (listen, port_range) {
            (listen, Some(range)) => {
                let host = match listen {
                    None => IpAddr::from([127, 0, 0, 1]),
                    Some(text) => parse_host(text)?,
                };
                Self::parse_range(host, range)
            }
            (Some(text), None) => Self::parse_addr(text),
            (None, None) => {
                bail!("no address: give `listen` HOST:PORT (--listen), or a `port-range` LO-HI (--port-range)")
            }
        }
    }

    /// Parses `HOST:PORT` (IPv6 in brackets, `[::1]:7000`).
    pub fn parse_addr(text: &str) -> anyhow::Result<Self> {
        let addr = SocketAddr::from_str(text).map_err(|_| {
            anyhow::anyhow!(
                "invalid listen address `{text}`: expected HOST:PORT such as 127.0.0.1:7000 or [::1]:7000 (port 0 picks a free port)"
            )
        })?;
        Ok(Self::Addr(addr))
    }

    /// Parses a port range `LO-HI` to bind on `host`.
    pub fn parse_range(host: IpAddr, text: &str) -> anyhow::Result<Self> {
        let (lo, hi) = text
            .split_once('-')
            .with_context(|| format!("invalid port range `{text}`: expected LO-HI such as 7000-7100"))?;
        let port = |p: &str| {
            p.trim()
                .parse::<u16>()
                .with_context(|| format!("invalid port range `{text}`: `{p}` is not a port (1-65535)"))
        };
        let (lo, hi) = (port(lo)?, port(hi)?);
        if lo == 0 || lo > hi {
            bail!("invalid port range `{text}`: it is empty; give LO-HI with 1 <= LO <= HI, such as 7000-7100");
        }
        Ok(Self::Range { host, lo, hi })
    }
}

/// `HOST` or `HOST:PORT` (the port is ignored), for a port range's host.
fn parse_host(text: &str) -> anyhow::Result<IpAddr> {
    if let Ok(ip) = text.trim_matches(|c| c == '[' || c == ']').parse() {
        return Ok(ip);
    }
    match ListenAddr::parse_addr(text)? {
        ListenAddr::Addr(addr) => Ok(addr.ip()),
        ListenAddr::Range { host, .. } => Ok(host),
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Addr(addr) => write!(f, "{addr}"),
            Self::Range { host, lo, hi } => write!(f, "{host}:{lo}-{hi}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_addresses_and_ranges() {
        assert_eq!(ListenAddr::parse_addr("127.0.0.1:0").unwrap(), ListenAddr::Addr("127.0.0.1:0".parse().unwrap()));
        assert!(ListenAddr::parse_addr("[::1]:7000").is_ok());
        let err = ListenAddr::parse_addr("localhost").unwrap_err().to_string();
        assert!(err.contains("invalid listen address `localhost`"), "{err}");
        let host = "127.0.0.1".parse().unwrap();
        assert_eq!(ListenAddr::parse_range(host, "7000-7010").unwrap(), ListenAddr::Range { host, lo: 7000, hi: 7010 });
        let err = ListenAddr::parse_range(host, "7010-7000").unwrap_err().to_string();
        assert!(err.contains("is empty"), "{err}");
        assert!(ListenAddr::parse_range(host, "7000").is_err());
        assert!(ListenAddr::parse_range(host, "0-10").is_err());
        assert!(ListenAddr::parse_range(host, "1-70000").is_err());
    }
}

/// One entry of a listener's `allow-connect`: an IP address and a port or
/// an inclusive port range (`127.0.0.1:6379`, `[::1]:8080`,
/// `127.0.0.1:7000-7010`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowConnect {
    pub ip: IpAddr,
    pub ports: std::ops::RangeInclusive<u16>,
}

impl AllowConnect {
    /// Whether this entry allows connecting to `addr`.
    pub fn allows(&self, addr: &SocketAddr) -> bool {
        addr.ip() == self.ip && self.ports.contains(&addr.port())
    }
}

impl FromStr for AllowConnect {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> anyhow::Result<Self> {
        let bad = || {
            anyhow::anyhow!(
                "allow-connect entry `{text}` is not IP:PORT or IP:LO-HI (such as 127.0.0.1:6379, [::1]:8080, 127.0.0.1:7000-7010); names are not resolved"
            )
        };
        let (host, ports) = text.rsplit_once(':').ok_or_else(bad)?;
        let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        let ip: IpAddr = host.parse().map_err(|_| bad())?;
        let (lo, hi) = ports.split_once('-').unwrap_or((ports, ports));
        let (lo, hi): (u16, u16) = (lo.parse().map_err(|_| bad())?, hi.parse().map_err(|_| bad())?);
        if lo == 0 || lo > hi {
            return Err(bad());
        }
        Ok(Self { ip, ports: lo..=hi })
    }
}

#[cfg(test)]
mod allow_tests {
    use super::*;

    #[test]
    fn allow_connect_entries_parse_and_match() {
        let one: AllowConnect = "127.0.0.1:6379".parse().unwrap();
        assert!(one.allows(&"127.0.0.1:6379".parse().unwrap()));
        assert!(!one.allows(&"127.0.0.1:6380".parse().unwrap()));
        assert!(!one.allows(&"127.0.0.2:6379".parse().unwrap()));
        let v6: AllowConnect = "[::1]:8080".parse().unwrap();
        assert!(v6.allows(&"[::1]:8080".parse().unwrap()));
        let range: AllowConnect = "127.0.0.1:7000-7010".parse().unwrap();
        assert!(range.allows(&"127.0.0.1:7010".parse().unwrap()));
        assert!(!range.allows(&"127.0.0.1:7011".parse().unwrap()));
        for bad in ["localhost:80", "127.0.0.1", "127.0.0.1:0", "127.0.0.1:9-1", "1.2.3.4:x"] {
            assert!(bad.parse::<AllowConnect>().is_err(), "{bad}");
        }
    }
}
