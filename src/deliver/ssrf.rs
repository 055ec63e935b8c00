//! SSRF guard for server-side replay and forward (DESIGN §8).
//!
//! The policy is applied to *resolved socket addresses* inside the connector, right before
//! connecting, so a name that resolves to an allowed address at check time and to a private
//! one at connect time (DNS rebinding) is still refused.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use crate::error::Error;

/// Most addresses of one name that are checked and tried (bounds work per lookup).
const MAX_ADDRS: usize = 32;
/// Time allowed for one name lookup.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// One `--forward-allow` entry.
#[derive(Clone, Debug, PartialEq)]
enum Allow {
    /// The word `loopback`: 127.0.0.0/8 and ::1.
    Loopback,
    /// A hostname: targets naming it are allowed whatever it resolves to (but see `always_refused`).
    Host(String),
    /// An address or network.
    Net(IpAddr, u8),
}

/// Which targets server-side deliveries may connect to.
#[derive(Clone, Debug)]
pub struct Policy {
    allow: Vec<Allow>,
    /// `--listen` is loopback: loopback targets are allowed without an entry.
    loopback_default: bool,
    /// hookrelay's own listeners: always refused (no forwarding loops).
    own: Vec<SocketAddr>,
}

/// Why a target was refused (the message is shown to the user as is).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refusal(pub String);

impl Policy {
    /// Build from `--forward-allow` entries, the listen address and our own listener addresses.
    pub fn new(
        entries: &[String],
        listen: SocketAddr,
        own: &[SocketAddr],
    ) -> Result<Policy, Error> {
        let allow = entries
            .iter()
            .map(|e| e.trim())
            .filter(|e| !e.is_empty())
            .map(parse_entry)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Policy {
            allow,
            loopback_default: canonical(listen.ip()).is_loopback(),
            own: own.to_vec(),
        })
    }

    /// Check one resolved address of a target whose URL names `host`.
    pub fn check(&self, host: &str, addr: SocketAddr) -> Result<(), Refusal> {
        let ip = canonical(addr.ip());
        let addr = SocketAddr::new(ip, addr.port());
        if ip.is_unspecified() {
            return Err(Refusal(format!(
                "{ip} is the unspecified address; never a valid target"
            )));
        }
        if ip.is_multicast() || ip == IpAddr::V4(Ipv4Addr::BROADCAST) {
            return Err(Refusal(format!("{ip} is not a unicast address")));
        }
        if self.is_own(addr) {
            return Err(Refusal(format!(
                "{addr} is hookrelay's own listener; refused to prevent forwarding loops"
            )));
        }
        let (class, special_prefix) = classify(ip);
        let host = normalize_host(host);
        let allowed = self.allow.iter().any(|entry| match entry {
            Allow::Loopback => ip.is_loopback(),
            Allow::Host(h) => *h == host,
            // A broad network (e.g. 0.0.0.0/0) does not open special ranges: those need an
            // entry at least as specific as the range itself.
            Allow::Net(net, prefix) => {
                contains(*net, *prefix, ip) && special_prefix.is_none_or(|sp| *prefix >= sp)
            }
        }) || (self.loopback_default && ip.is_loopback());
        if allowed {
            Ok(())
        } else {
            Err(Refusal(format!(
                "{ip} is {class}; not allowed by --forward-allow"
            )))
        }
    }

    /// Check every address; any refused address refuses the whole target.
    pub fn check_all(&self, host: &str, addrs: &[SocketAddr]) -> Result<(), Refusal> {
        if addrs.is_empty() {
            return Err(Refusal(format!("{host} did not resolve to any address")));
        }
        addrs.iter().try_for_each(|a| self.check(host, *a))
    }

    fn is_own(&self, addr: SocketAddr) -> bool {
        self.own.iter().any(|own| {
            let own_ip = canonical(own.ip());
            own.port() == addr.port()
                && (own_ip == addr.ip()
                    // Listening on 0.0.0.0/:: also answers on loopback (other local interface
                    // addresses are refused by default anyway unless listed).
                    || (own_ip.is_unspecified() && addr.ip().is_loopback()))
        })
    }
}

/// Resolve `host:port` (IP literals without a lookup), at most [`MAX_ADDRS`] addresses.
pub async fn resolve(host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let lookup = tokio::net::lookup_host((bare, port));
    match tokio::time::timeout(RESOLVE_TIMEOUT, lookup).await {
        Ok(Ok(addrs)) => Ok(addrs.take(MAX_ADDRS).collect()),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("resolving {bare} timed out"),
        )),
    }
}

/// IPv4-mapped IPv6 (`::ffff:a.b.c.d`) becomes the IPv4 address it stands for.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

fn normalize_host(host: &str) -> String {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

fn parse_entry(entry: &str) -> Result<Allow, Error> {
    if entry.eq_ignore_ascii_case("loopback") {
        return Ok(Allow::Loopback);
    }
    let bad = |why: &str| Error::Config(format!("--forward-allow `{entry}`: {why}"));
    if let Some((ip, prefix)) = entry.split_once('/') {
        let ip: IpAddr = ip.parse().map_err(|_| bad("not an IP network"))?;
        let ip = canonical(ip);
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| bad("bad prefix length"))?;
        return Ok(Allow::Net(ip, prefix));
    }
    let bare = entry.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        let ip = canonical(ip);
        return Ok(Allow::Net(ip, if ip.is_ipv4() { 32 } else { 128 }));
    }
    let host = normalize_host(entry);
    let valid = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
    if !valid {
        return Err(bad("expected a hostname, an IP, a CIDR or `loopback`"));
    }
    Ok(Allow::Host(host))
}

fn contains(net: IpAddr, prefix: u8, ip: IpAddr) -> bool {
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

/// Special (non-public) IPv4 ranges: (network, prefix, description).
const V4_SPECIAL: &[(Ipv4Addr, u8, &str)] = &[
    (
        Ipv4Addr::new(0, 0, 0, 0),
        8,
        "in the reserved \"this network\" range",
    ),
    (Ipv4Addr::new(10, 0, 0, 0), 8, "private"),
    (
        Ipv4Addr::new(100, 64, 0, 0),
        10,
        "in the shared (CGNAT) address space",
    ),
    (Ipv4Addr::new(127, 0, 0, 0), 8, "loopback"),
    (Ipv4Addr::new(169, 254, 0, 0), 16, "link-local"),
    (Ipv4Addr::new(172, 16, 0, 0), 12, "private"),
    (
        Ipv4Addr::new(192, 0, 0, 0),
        24,
        "reserved (IETF protocol assignments)",
    ),
    (Ipv4Addr::new(192, 168, 0, 0), 16, "private"),
    (Ipv4Addr::new(198, 18, 0, 0), 15, "reserved (benchmarking)"),
    (Ipv4Addr::new(240, 0, 0, 0), 4, "reserved"),
];

/// Special (non-public) IPv6 ranges.
const V6_SPECIAL: &[(Ipv6Addr, u8, &str)] = &[
    (Ipv6Addr::LOCALHOST, 128, "loopback"),
    (
        Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 0),
        96,
        "an IPv4-compatible (deprecated) address",
    ),
    (
        Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0),
        96,
        "a NAT64 address",
    ),
    (
        Ipv6Addr::new(0x2002, 0, 0, 0, 0, 0, 0, 0),
        16,
        "a 6to4 address",
    ),
    (
        Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0),
        7,
        "private (unique local)",
    ),
    (Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10, "link-local"),
];

/// What kind of address `ip` is, and the prefix length of its special range if it has one.
fn classify(ip: IpAddr) -> (&'static str, Option<u8>) {
    let found = match ip {
        IpAddr::V4(v4) => V4_SPECIAL
            .iter()
            .find(|(net, p, _)| contains(IpAddr::V4(*net), *p, IpAddr::V4(v4)))
            .map(|(_, p, what)| (*what, Some(*p))),
        // ::1 is inside ::/96 too: the table lists it first so it reads "loopback".
        IpAddr::V6(v6) => V6_SPECIAL
            .iter()
            .find(|(net, p, _)| contains(IpAddr::V6(*net), *p, IpAddr::V6(v6)))
            .map(|(_, p, what)| (*what, Some(*p))),
    };
    found.unwrap_or(("a public address", None))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn policy(entries: &[&str], listen: &str, own: &[&str]) -> Policy {
        let entries: Vec<String> = entries.iter().map(|s| s.to_string()).collect();
        let own: Vec<SocketAddr> = own.iter().map(|s| sa(s)).collect();
        Policy::new(&entries, sa(listen), &own).unwrap()
    }

    #[test]
    fn loopback_listener_allows_loopback_only() {
        let p = policy(&[], "127.0.0.1:8080", &["127.0.0.1:8080"]);
        assert!(p.check("127.0.0.1", sa("127.0.0.1:3000")).is_ok());
        assert!(p.check("localhost", sa("[::1]:3000")).is_ok());
        let e = p
            .check("169.254.169.254", sa("169.254.169.254:80"))
            .unwrap_err();
        assert_eq!(
            e.0,
            "169.254.169.254 is link-local; not allowed by --forward-allow"
        );
        assert!(p
            .check("10.0.0.1", sa("10.0.0.1:80"))
            .unwrap_err()
            .0
            .contains("private"));
        assert!(p
            .check("x", sa("100.64.1.1:80"))
            .unwrap_err()
            .0
            .contains("CGNAT"));
        assert!(p
            .check("x", sa("[fd00:ec2::254]:80"))
            .unwrap_err()
            .0
            .contains("unique local"));
        assert!(p
            .check("x", sa("[fe80::1]:80"))
            .unwrap_err()
            .0
            .contains("link-local"));
        assert!(p
            .check("x", sa("93.184.216.34:80"))
            .unwrap_err()
            .0
            .contains("public"));
    }

    #[test]
    fn mapped_unspecified_and_own_are_refused() {
        let p = policy(
            &["0.0.0.0/0", "::/0"],
            "127.0.0.1:8080",
            &["127.0.0.1:8080"],
        );
        let e = p.check("x", sa("[::ffff:169.254.169.254]:80")).unwrap_err();
        assert!(e.0.starts_with("169.254.169.254 is link-local"), "{}", e.0);
        assert!(p
            .check("x", sa("0.0.0.0:1"))
            .unwrap_err()
            .0
            .contains("unspecified"));
        assert!(p
            .check("x", sa("[::]:1"))
            .unwrap_err()
            .0
            .contains("unspecified"));
        assert!(p.check("x", sa("[::ffff:0.0.0.0]:1")).is_err());
        let e = p.check("localhost", sa("127.0.0.1:8080")).unwrap_err();
        assert!(e.0.contains("own listener"), "{}", e.0);
        assert!(p.check("x", sa("[::ffff:127.0.0.1]:8080")).is_err());
        // A broad CIDR opens public space but not special ranges.
        assert!(p.check("x", sa("93.184.216.34:80")).is_ok());
        assert!(p.check("x", sa("10.1.2.3:80")).is_err());
        assert!(p.check("x", sa("224.0.0.1:80")).is_err());
    }

    #[test]
    fn wildcard_listener_refuses_loopback_on_its_port() {
        let p = policy(&["loopback"], "0.0.0.0:8080", &["0.0.0.0:8080"]);
        assert!(p.check("x", sa("127.0.0.1:8080")).is_err());
        assert!(p.check("x", sa("[::1]:8080")).is_err());
        assert!(p.check("x", sa("127.0.0.1:3000")).is_ok());
    }

    #[test]
    fn non_loopback_listener_allows_only_listed() {
        let p = policy(
            &["10.0.0.0/8", "hooks.internal", "192.168.1.5"],
            "0.0.0.0:8080",
            &["0.0.0.0:8080"],
        );
        assert!(p.check("x", sa("127.0.0.1:3000")).is_err());
        assert!(p.check("x", sa("10.9.9.9:80")).is_ok());
        assert!(p.check("HOOKS.internal.", sa("172.16.0.9:80")).is_ok());
        assert!(p.check("x", sa("192.168.1.5:80")).is_ok());
        assert!(p.check("x", sa("192.168.1.6:80")).is_err());
        // A name resolving to several addresses is refused if any one is refused.
        let addrs = [sa("10.0.0.1:80"), sa("169.254.169.254:80")];
        assert!(p.check_all("evil.example", &addrs).is_err());
        assert!(p.check_all("evil.example", &[]).is_err());
        assert!(p.check_all("evil.example", &addrs[..1]).is_ok());
    }

    #[test]
    fn entries_parse() {
        let bad = |e: &str| Policy::new(&[e.to_string()], sa("127.0.0.1:1"), &[]).is_err();
        assert!(bad("10.0.0.0/33"));
        assert!(bad("not a host!"));
        assert!(!bad("10.0.0.0/8"));
        assert!(!bad("[::1]"));
        assert!(!bad("fd00::/8"));
        assert!(!bad("LOOPBACK"));
    }
}
