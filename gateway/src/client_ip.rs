//! Which address a request came from: the connection's peer, or — when the peer is a trusted
//! proxy (`MOLECULE_TRUSTED_PROXIES`) — the nearest address in its `Forwarded` (RFC 7239) or
//! `X-Forwarded-For` chain that is not itself a trusted proxy. Nothing else believes a
//! forwarded header.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    str::FromStr,
};

use axum::extract::ConnectInfo;
use http::Extensions;

/// The client address the edge settled on, left in the request's extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

/// CIDR blocks whose forwarded headers are believed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<(IpAddr, u8)>);

impl FromStr for TrustedProxies {
    type Err = String;

    /// A comma-separated list of `address/prefix` or bare addresses.
    fn from_str(list: &str) -> Result<Self, Self::Err> {
        list.split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(|entry| {
                let (address, prefix) = match entry.split_once('/') {
                    Some((address, prefix)) => (address, Some(prefix)),
                    None => (entry, None),
                };
                let address: IpAddr = address
                    .parse()
                    .map_err(|_| format!("{entry:?} is not an address or CIDR block"))?;
                let address = address.to_canonical();
                let width = if address.is_ipv4() { 32 } else { 128 };
                let prefix = match prefix {
                    Some(prefix) => prefix
                        .parse::<u8>()
                        .ok()
                        .filter(|prefix| *prefix <= width)
                        .ok_or_else(|| format!("{entry:?} has an invalid prefix length"))?,
                    None => width,
                };
                Ok((address, prefix))
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }
}

impl TrustedProxies {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0
            .iter()
            .any(|(network, prefix)| in_block(ip, *network, *prefix))
    }

    /// The client behind `peer`: `peer` itself unless it is trusted, else the rightmost
    /// untrusted entry of `forwarded_for` (entries a client wrote itself sit further left and
    /// are never reached while a trusted hop vouches for the one to their right).
    pub fn client_ip(&self, peer: IpAddr, forwarded_for: Option<&str>) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.contains(peer) {
            return peer;
        }
        let mut client = peer;
        for entry in forwarded_for.unwrap_or("").rsplit(',') {
            let Ok(hop) = entry.trim().parse::<IpAddr>() else {
                break;
            };
            client = hop.to_canonical();
            if !self.contains(client) {
                break;
            }
        }
        client
    }
}

fn in_block(ip: IpAddr, network: IpAddr, prefix: u8) -> bool {
    match (ip, network) {
        (IpAddr::V4(ip), IpAddr::V4(network)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(ip) & mask == u32::from(network) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(network)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(ip) & mask == u128::from(network) & mask
        }
        _ => false,
    }
}

impl TrustedProxies {
    /// Settles a request's client address once and records it in the request (for limiters
    /// and what is forwarded). `None` for a request that did not come off a socket.
    pub fn settle(&self, request: &mut http::Request<axum::body::Body>) -> Option<IpAddr> {
        let peer = peer_ip(request.extensions())?;
        let header = |name: &str| {
            request
                .headers()
                .get(name)
                .and_then(|value| value.to_str().ok())
        };
        // RFC 7239's `Forwarded` when the proxy sends it, else the de-facto `X-Forwarded-For`.
        let chain = match header("forwarded") {
            Some(forwarded) => Some(forwarded_for_hops(forwarded)),
            None => header("x-forwarded-for").map(str::to_owned),
        };
        let client = self.client_ip(peer, chain.as_deref());
        request.extensions_mut().insert(ClientIp(client));
        Some(client)
    }
}

/// The `for=` hops of a `Forwarded` header as an `X-Forwarded-For` list: quotes, brackets and
/// ports removed. A hop without `for=`, or an obfuscated one (`unknown`, `_hidden`), stays in
/// the list unparsable, so the chain is believed no further than it.
fn forwarded_for_hops(header: &str) -> String {
    header
        .split(',')
        .map(|element| {
            element
                .split(';')
                .find_map(|pair| {
                    let (name, value) = pair.trim().split_once('=')?;
                    name.trim()
                        .eq_ignore_ascii_case("for")
                        .then(|| node_address(value.trim().trim_matches('"')))
                })
                .unwrap_or("unknown")
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The address of a `Forwarded` node: `192.0.2.1`, `192.0.2.1:4711`, `[2001:db8::1]:4711`.
fn node_address(node: &str) -> &str {
    if let Some(bracketed) = node.strip_prefix('[') {
        return bracketed.split(']').next().unwrap_or(bracketed);
    }
    match node.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            host
        }
        _ => node,
    }
}

/// Who a limiter counts: a credential the server recognises (by a keyed hash of it, never the
/// token), so agents behind one load balancer each get their own allowance; otherwise the
/// client address. An unrecognised bearer counts against its address, so inventing tokens buys
/// no fresh allowance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Caller {
    Credential(u64),
    Address(IpAddr),
}

impl Caller {
    pub fn credential(bearer: &str) -> Self {
        use std::hash::BuildHasher;
        static KEYS: std::sync::OnceLock<std::hash::RandomState> = std::sync::OnceLock::new();
        Self::Credential(KEYS.get_or_init(Default::default).hash_one(bearer))
    }
}

/// The connection's peer, as the listener recorded it.
pub fn peer_ip(extensions: &Extensions) -> Option<IpAddr> {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip().to_canonical())
}

/// The client address the edge settled on, else the peer, else "unspecified" (in-process).
pub fn of(extensions: &Extensions) -> IpAddr {
    extensions
        .get::<ClientIp>()
        .map(|ClientIp(ip)| *ip)
        .or_else(|| peer_ip(extensions))
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn forwarded_headers_name_the_same_chain() {
        assert_eq!(
            forwarded_for_hops(
                r#"for=192.0.2.60;proto=http;by=203.0.113.43, For="[2001:db8:cafe::17]:4711""#
            ),
            "192.0.2.60,2001:db8:cafe::17"
        );
        assert_eq!(
            forwarded_for_hops("for=198.51.100.17:8080, for=_hidden, proto=https"),
            "198.51.100.17,_hidden,unknown"
        );
        let trusted: TrustedProxies = "10.0.0.0/8".parse().unwrap();
        let chain = forwarded_for_hops("for=203.0.113.9, for=10.1.1.1");
        assert_eq!(
            trusted.client_ip(ip("10.0.0.2"), Some(&chain)),
            ip("203.0.113.9")
        );
        let spoofed = forwarded_for_hops("for=203.0.113.9, for=_hidden");
        assert_eq!(
            trusted.client_ip(ip("10.0.0.2"), Some(&spoofed)),
            ip("10.0.0.2"),
            "an opaque hop is believed no further"
        );
    }

    #[test]
    fn blocks_match_by_prefix_in_both_families() {
        let trusted: TrustedProxies = "10.0.0.0/8, 192.168.1.7, fd00::/8".parse().unwrap();
        assert!(trusted.contains(ip("10.200.3.4")));
        assert!(
            trusted.contains(ip("::ffff:10.1.1.1")),
            "v4-mapped peers count as v4"
        );
        assert!(trusted.contains(ip("192.168.1.7")));
        assert!(!trusted.contains(ip("192.168.1.8")));
        assert!(trusted.contains(ip("fd12::1")));
        assert!(!trusted.contains(ip("fe80::1")));
        assert!("10.0.0.0/33".parse::<TrustedProxies>().is_err());
        assert!("nonsense".parse::<TrustedProxies>().is_err());
        assert_eq!(
            "".parse::<TrustedProxies>().unwrap(),
            TrustedProxies::default()
        );
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_hops() {
        let trusted: TrustedProxies = "10.0.0.0/8".parse().unwrap();
        let client = Some("6.6.6.6, 203.0.113.9, 10.0.0.2");
        assert_eq!(trusted.client_ip(ip("10.0.0.1"), client), ip("203.0.113.9"));
        assert_eq!(
            trusted.client_ip(ip("198.51.100.1"), client),
            ip("198.51.100.1"),
            "an untrusted peer's header is ignored"
        );
        assert_eq!(trusted.client_ip(ip("10.0.0.1"), None), ip("10.0.0.1"));
        assert_eq!(
            trusted.client_ip(ip("10.0.0.1"), Some("garbage, 10.0.0.3")),
            ip("10.0.0.3")
        );
    }
}
