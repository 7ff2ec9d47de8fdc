//! Where the HTTP client may connect (G7, H15): link-local and cloud
//! metadata addresses are refused unless allow-listed; loopback and private
//! ranges are normal in a cluster and allowed. The check runs on the
//! address actually connected to (our resolver), so DNS rebinding cannot
//! slip past a check made on the name.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

/// An address range, `ADDR/BITS` or a single address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    bits: u8,
}

impl Cidr {
    /// Whether `ip` is inside the range. IPv4-mapped IPv6 addresses are
    /// compared as IPv4, so `::ffff:169.254.169.254` cannot slip through.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.bits)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.bits))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("Invalid address range {:?}", formats::text::escape(s));
        let (addr, bits) = match s.split_once('/') {
            Some((a, b)) => (a, Some(b)),
            None => (s, None),
        };
        let addr = IpAddr::from_str(addr.trim_matches(['[', ']'])).map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            Some(b) => b.parse::<u8>().ok().filter(|&b| b <= max).ok_or_else(bad)?,
            None => max,
        };
        Ok(Cidr {
            addr: addr.to_canonical(),
            bits,
        })
    }
}

/// The connect-time destination policy.
#[derive(Debug, Clone)]
pub struct EgressPolicy {
    /// Ranges refused.
    pub deny: Vec<Cidr>,
    /// Ranges allowed even when denied.
    pub allow: Vec<Cidr>,
}

impl Default for EgressPolicy {
    fn default() -> Self {
        let deny = [
            Cidr {
                addr: IpAddr::V4(Ipv4Addr::new(169, 254, 0, 0)),
                bits: 16,
            },
            Cidr {
                addr: IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0)),
                bits: 10,
            },
            Cidr {
                addr: IpAddr::V6(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)),
                bits: 128,
            },
        ];
        EgressPolicy {
            deny: deny.to_vec(),
            allow: Vec::new(),
        }
    }
}

impl EgressPolicy {
    /// Whether connecting to `ip` is allowed.
    pub fn permits(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        if ip.is_unspecified() || ip.is_multicast() {
            return self.allow.iter().any(|c| c.contains(ip));
        }
        self.allow.iter().any(|c| c.contains(ip)) || !self.deny.iter().any(|c| c.contains(ip))
    }
}

/// A resolver that drops the addresses the policy refuses, and fails when
/// none is left.
#[derive(Debug, Clone)]
pub(crate) struct PolicyResolver {
    pub(crate) policy: Arc<EgressPolicy>,
}

/// Error returned when every resolved address is refused.
#[derive(Debug, thiserror::Error)]
#[error("Destination not allowed: {0}")]
pub struct DestinationRefused(pub String);

impl reqwest::dns::Resolve for PolicyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|a| policy.permits(a.ip()))
                .collect();
            if allowed.is_empty() && !found.is_empty() {
                let shown = found
                    .iter()
                    .map(|a| a.ip().to_string())
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(Box::new(DestinationRefused(format!(
                    "{} resolves to {shown}",
                    formats::text::escape(&host)
                )))
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn metadata_and_link_local_are_refused_by_default() {
        let p = EgressPolicy::default();
        for bad in [
            "169.254.169.254",
            "169.254.0.1",
            "fe80::1",
            "fd00:ec2::254",
            "::ffff:169.254.169.254",
            "0.0.0.0",
        ] {
            assert!(!p.permits(ip(bad)), "{bad}");
        }
        for good in [
            "127.0.0.1",
            "10.0.0.1",
            "192.168.1.1",
            "::1",
            "8.8.8.8",
            "fd00:ec2::253",
        ] {
            assert!(p.permits(ip(good)), "{good}");
        }
    }

    #[test]
    fn allow_list_overrides_and_deny_list_adds() {
        let p = EgressPolicy {
            deny: vec!["10.0.0.0/8".parse().unwrap()],
            allow: vec!["10.1.2.3".parse().unwrap()],
        };
        assert!(!p.permits(ip("10.9.9.9")));
        assert!(p.permits(ip("10.1.2.3")));
        assert!(p.permits(ip("169.254.169.254")), "default list replaced");
    }

    #[test]
    fn ranges_parse_strictly() {
        assert!("1.2.3.4/33".parse::<Cidr>().is_err());
        assert!("1.2.3/8".parse::<Cidr>().is_err());
        assert!("::1/129".parse::<Cidr>().is_err());
        assert!("[fe80::]/10".parse::<Cidr>().is_ok());
        let c: Cidr = "192.168.0.0/16".parse().unwrap();
        assert!(c.contains(ip("192.168.255.1")));
        assert!(!c.contains(ip("192.169.0.1")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("1.2.3.4")));
    }
}
