//! The one URL-safety policy (docs/registry.md §1.1 and §4.5, docs/README.md, modes): which agent
//! URLs may be registered, and which addresses may be dialled. Registration and use time share the
//! same address rules; the A2A proxy applies `check_ip` to every resolved address at dial time. It
//! decides only; it never dials.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use url::{Host, Url};

/// A registered agent URL, after the policy accepted it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentUrl {
    /// `remote://…`: the agent has no inbound endpoint; never dialled.
    NoInbound(String),
    Http(Url),
}

impl AgentUrl {
    pub fn as_str(&self) -> &str {
        match self {
            Self::NoInbound(raw) => raw,
            Self::Http(url) => url.as_str(),
        }
    }
}

/// Resolves a host name to addresses; swapped out in tests.
pub trait Resolver: Send + Sync {
    fn resolve(
        &self,
        host: &str,
        port: u16,
    ) -> futures::future::BoxFuture<'_, std::io::Result<Vec<SocketAddr>>>;
}

/// The system resolver.
pub struct SystemResolver;

impl Resolver for SystemResolver {
    fn resolve(
        &self,
        host: &str,
        port: u16,
    ) -> futures::future::BoxFuture<'_, std::io::Result<Vec<SocketAddr>>> {
        let host = host.to_owned();
        Box::pin(async move { Ok(tokio::net::lookup_host((host, port)).await?.collect()) })
    }
}

/// Which address classes this deployment may reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UrlPolicy {
    /// Loopback agents: dev mode, or a one-machine setup listening on loopback only.
    pub allow_loopback: bool,
    /// RFC-1918 and fd00::/8: relaxed ("SaaS") deploy mode, or dev mode.
    pub allow_private: bool,
}

/// What an IPv6 address says about an IPv4 one inside it.
enum Embedded {
    V4(Ipv4Addr),
    /// A translation prefix whose embedding cannot be judged reliably: refused outright.
    Refused(&'static str),
}

/// The IPv4 address an IPv6 address reaches, for the forms that embed one.
fn embedded_ipv4(ip: Ipv6Addr) -> Option<Embedded> {
    let s = ip.segments();
    let low = (u128::from(ip) & 0xffff_ffff) as u32;
    let tail = Ipv4Addr::from(low);
    match s {
        // ::ffff:a.b.c.d (mapped) and ::ffff:0:a.b.c.d (SIIT).
        [0, 0, 0, 0, 0, 0xffff, _, _] | [0, 0, 0, 0, 0xffff, 0, _, _] => Some(Embedded::V4(tail)),
        // ::a.b.c.d (IPv4-compatible, deprecated); `::` and `::1` are judged as IPv6.
        [0, 0, 0, 0, 0, 0, _, _] if low > 1 => Some(Embedded::V4(tail)),
        // 64:ff9b::/96, the well-known NAT64 prefix.
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(Embedded::V4(tail)),
        // 64:ff9b:1::/48, local-use NAT64 (RFC 8215): the embedding depends on the operator.
        [0x64, 0xff9b, 1, ..] => Some(Embedded::Refused(
            "local-use NAT64 address (64:ff9b:1::/48)",
        )),
        // 2002::/16, 6to4: the IPv4 address is the next 32 bits.
        [0x2002, high, low, ..] => Some(Embedded::V4(Ipv4Addr::from(
            (u32::from(high) << 16) | u32::from(low),
        ))),
        // 2001::/32, Teredo: the server and the (obfuscated) client address are inside.
        [0x2001, 0, ..] => Some(Embedded::Refused("Teredo tunnel address (2001::/32)")),
        _ => None,
    }
}

/// What a special-purpose range is to the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reach {
    /// Reachable after all: a registry entry marked globally reachable inside a block that is not.
    Global,
    /// Allowed only where loopback agents are (dev mode, a one-machine setup).
    Loopback,
    /// Private networks: allowed in the relaxed ("SaaS") deploy mode and in dev mode.
    Private,
    Never,
}

/// One row of [`SPECIAL_PURPOSE`].
struct SpecialRange {
    net: ipnet::IpNet,
    reach: Reach,
    label: &'static str,
}

/// Every address block the IANA IPv4 and IPv6 Special-Purpose Address Registries mark
/// "Globally Reachable: False" (with the entries marked True that sit inside such a block),
/// multicast, and for IPv6 everything outside global unicast (2000::/3), which the IPv6
/// Address Space registry keeps reserved. The most specific match decides. Labels that the
/// contract's table names (docs/registry.md §1.1) are kept word for word.
const SPECIAL_PURPOSE: &[(&str, Reach, &str)] = &[
    ("0.0.0.0/8", Reach::Never, "unspecified address"),
    ("10.0.0.0/8", Reach::Private, "RFC-1918 private address"),
    (
        "100.64.0.0/10",
        Reach::Never,
        "carrier-grade NAT address (RFC-6598)",
    ),
    ("127.0.0.0/8", Reach::Loopback, "loopback address"),
    (
        "169.254.0.0/16",
        Reach::Never,
        "link-local address (cloud metadata endpoint)",
    ),
    ("172.16.0.0/12", Reach::Private, "RFC-1918 private address"),
    (
        "192.0.0.0/24",
        Reach::Never,
        "IETF protocol assignments (RFC-6890)",
    ),
    (
        "192.0.0.9/32",
        Reach::Global,
        "Port Control Protocol anycast (RFC-7723)",
    ),
    ("192.0.0.10/32", Reach::Global, "TURN anycast (RFC-8155)"),
    (
        "192.0.2.0/24",
        Reach::Never,
        "TEST-NET-1 documentation range (RFC-5737)",
    ),
    (
        "192.88.99.0/24",
        Reach::Never,
        "deprecated 6to4 relay anycast (RFC-7526)",
    ),
    ("192.168.0.0/16", Reach::Private, "RFC-1918 private address"),
    (
        "198.18.0.0/15",
        Reach::Never,
        "benchmarking range (RFC-2544)",
    ),
    (
        "198.51.100.0/24",
        Reach::Never,
        "TEST-NET-2 documentation range (RFC-5737)",
    ),
    (
        "203.0.113.0/24",
        Reach::Never,
        "TEST-NET-3 documentation range (RFC-5737)",
    ),
    ("224.0.0.0/4", Reach::Never, "IPv4 multicast address"),
    ("240.0.0.0/4", Reach::Never, "reserved address (RFC-1112)"),
    ("255.255.255.255/32", Reach::Never, "broadcast address"),
    (
        "::/0",
        Reach::Never,
        "IPv6 address outside global unicast (2000::/3)",
    ),
    ("2000::/3", Reach::Global, "IPv6 global unicast"),
    ("::/128", Reach::Never, "unspecified address"),
    ("::1/128", Reach::Loopback, "IPv6 loopback address"),
    (
        "100::/64",
        Reach::Never,
        "IPv6 discard-only prefix (RFC-6666)",
    ),
    (
        "100:0:0:1::/64",
        Reach::Never,
        "IPv6 dummy prefix (RFC-9780)",
    ),
    (
        "2001::/23",
        Reach::Never,
        "IPv6 IETF protocol assignments (RFC-2928)",
    ),
    (
        "2001:1::1/128",
        Reach::Global,
        "Port Control Protocol anycast (RFC-7723)",
    ),
    ("2001:1::2/128", Reach::Global, "TURN anycast (RFC-8155)"),
    (
        "2001:1::3/128",
        Reach::Global,
        "DNS-SD service registration anycast (RFC-9665)",
    ),
    (
        "2001:2::/48",
        Reach::Never,
        "IPv6 benchmarking range (RFC-5180)",
    ),
    ("2001:3::/32", Reach::Global, "AMT (RFC-7450)"),
    ("2001:4:112::/48", Reach::Global, "AS112-v6 (RFC-7535)"),
    ("2001:20::/28", Reach::Global, "ORCHIDv2 (RFC-7343)"),
    ("2001:30::/28", Reach::Global, "Drone Remote ID (RFC-9374)"),
    (
        "2001:db8::/32",
        Reach::Never,
        "IPv6 documentation address (RFC-3849 reserved)",
    ),
    (
        "3fff::/20",
        Reach::Never,
        "IPv6 documentation address (RFC-9637)",
    ),
    (
        "5f00::/16",
        Reach::Never,
        "IPv6 segment routing SIDs (RFC-9602)",
    ),
    (
        "fc00::/8",
        Reach::Never,
        "IPv6 ULA non-routable prefix (fc00::/8)",
    ),
    (
        "fd00::/8",
        Reach::Private,
        "IPv6 ULA address (RFC-4193 private)",
    ),
    (
        "fe80::/10",
        Reach::Never,
        "IPv6 link-local address (cloud metadata analogue)",
    ),
    (
        "fec0::/10",
        Reach::Never,
        "IPv6 site-local address (deprecated, RFC-3879)",
    ),
    ("ff00::/8", Reach::Never, "IPv6 multicast address"),
];

/// The most specific special-purpose range holding `ip`, if any.
fn special_range(ip: IpAddr) -> Option<&'static SpecialRange> {
    static RANGES: std::sync::LazyLock<Vec<SpecialRange>> = std::sync::LazyLock::new(|| {
        SPECIAL_PURPOSE
            .iter()
            .map(|(net, reach, label)| SpecialRange {
                net: net.parse().expect("the registry table parses"),
                reach: *reach,
                label,
            })
            .collect()
    });
    RANGES
        .iter()
        .filter(|range| range.net.contains(&ip))
        .max_by_key(|range| range.net.prefix_len())
}

impl UrlPolicy {
    pub const STRICT: Self = Self {
        allow_loopback: false,
        allow_private: false,
    };

    /// The label of the rule that blocks `ip`, if any. IPv6 forms that carry an IPv4 address
    /// (mapped, compatible, NAT64, 6to4, SIIT) are judged by that address.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), &'static str> {
        let ip = match ip {
            IpAddr::V6(v6) => match embedded_ipv4(v6) {
                Some(Embedded::V4(v4)) => IpAddr::V4(v4),
                Some(Embedded::Refused(label)) => return Err(label),
                None => ip,
            },
            v4 => v4,
        };
        let Some(range) = special_range(ip) else {
            return Ok(());
        };
        let allowed = match range.reach {
            Reach::Global => true,
            Reach::Loopback => self.allow_loopback,
            Reach::Private => self.allow_private,
            Reach::Never => false,
        };
        if allowed { Ok(()) } else { Err(range.label) }
    }

    /// The registration check of docs/registry.md §1.1, with `remote://` accepted as "no inbound
    /// endpoint".
    pub async fn check_registration(
        &self,
        raw: &str,
        resolver: &dyn Resolver,
    ) -> Result<AgentUrl, String> {
        if raw.is_empty() {
            return Err("url is required".to_owned());
        }
        let url = Url::parse(raw).map_err(|err| format!("url is not valid: {err}"))?;
        match url.scheme() {
            "remote" => return Ok(AgentUrl::NoInbound(raw.to_owned())),
            "http" | "https" => {}
            other => return Err(format!("url scheme must be http or https, got \"{other}\"")),
        }
        self.check_host(&url, resolver).await?;
        Ok(AgentUrl::Http(url))
    }

    /// The use-time check of docs/registry.md §4.5 (discovery; the proxy re-checks each address at
    /// dial time).
    pub async fn check_use(&self, raw: &str, resolver: &dyn Resolver) -> Result<Url, String> {
        let url = Url::parse(raw).map_err(|err| format!("url is not valid: {err}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!(
                "url scheme must be http or https, got \"{}\"",
                url.scheme()
            ));
        }
        self.check_host(&url, resolver).await?;
        Ok(url)
    }

    async fn check_host(&self, url: &Url, resolver: &dyn Resolver) -> Result<(), String> {
        let blocked = |label: &str| format!("url targets a blocked address: {label}");
        match url.host() {
            None => Err("url is not valid: empty host".to_owned()),
            Some(Host::Ipv4(ip)) => self.check_ip(IpAddr::V4(ip)).map_err(blocked),
            Some(Host::Ipv6(ip)) => self.check_ip(IpAddr::V6(ip)).map_err(blocked),
            Some(Host::Domain(name)) if name.eq_ignore_ascii_case("localhost") => {
                // `localhost` is loopback, whatever it resolves to.
                self.check_ip(IpAddr::V4(Ipv4Addr::LOCALHOST))
                    .map_err(blocked)
            }
            Some(Host::Domain(name)) => {
                let port = url.port_or_known_default().unwrap_or(80);
                let addresses = resolver.resolve(name, port).await.map_err(|err| {
                    format!("hostname \"{name}\" cannot be resolved (DNS error): {err}")
                })?;
                if addresses.is_empty() {
                    return Err(format!(
                        "hostname \"{name}\" cannot be resolved (DNS error): no addresses"
                    ));
                }
                for address in addresses {
                    self.check_ip(address.ip()).map_err(|label| {
                        format!(
                            "hostname \"{name}\" resolves to forbidden address: {}",
                            blocked(label)
                        )
                    })?;
                }
                Ok(())
            }
        }
    }
}

/// Deploy mode (docs/workspaces.md §1.1): relaxed iff `MOLECULE_DEPLOY_MODE=saas`, or unset with an
/// org id.
pub fn relaxed_deploy_mode(deploy_mode: &str, org_id: Option<&str>) -> bool {
    match deploy_mode.trim().to_ascii_lowercase().as_str() {
        "saas" => true,
        "" => org_id.is_some_and(|id| !id.trim().is_empty()),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// A resolver with fixed answers; anything else is NXDOMAIN.
    struct FakeResolver(HashMap<&'static str, Vec<IpAddr>>);

    impl Resolver for FakeResolver {
        fn resolve(
            &self,
            host: &str,
            port: u16,
        ) -> futures::future::BoxFuture<'_, std::io::Result<Vec<SocketAddr>>> {
            let answer = self
                .0
                .get(host)
                .map(|ips| ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect())
                .ok_or_else(|| std::io::Error::other("no such host"));
            Box::pin(async move { answer })
        }
    }

    fn resolver() -> FakeResolver {
        FakeResolver(HashMap::from([
            ("example.com", vec!["93.184.215.14".parse().unwrap()]),
            ("metadata.evil", vec!["169.254.169.254".parse().unwrap()]),
            (
                "mixed.evil",
                vec![
                    "93.184.215.14".parse().unwrap(),
                    "10.0.0.1".parse().unwrap(),
                ],
            ),
        ]))
    }

    const RELAXED: UrlPolicy = UrlPolicy {
        allow_loopback: false,
        allow_private: true,
    };
    const LOCAL: UrlPolicy = UrlPolicy {
        allow_loopback: true,
        allow_private: false,
    };

    async fn register(policy: UrlPolicy, url: &str) -> Result<AgentUrl, String> {
        policy.check_registration(url, &resolver()).await
    }

    #[tokio::test]
    async fn the_contract_test_vectors() {
        assert!(
            register(UrlPolicy::STRICT, "https://example.com:443")
                .await
                .is_ok()
        );
        assert!(register(LOCAL, "http://localhost:8000").await.is_ok());
        assert_eq!(
            register(UrlPolicy::STRICT, "http://127.0.0.2:8080")
                .await
                .unwrap_err(),
            "url targets a blocked address: loopback address"
        );
        assert_eq!(
            register(UrlPolicy::STRICT, "http://[::ffff:169.254.169.254]:80")
                .await
                .unwrap_err(),
            "url targets a blocked address: link-local address (cloud metadata endpoint)"
        );
        assert_eq!(
            register(UrlPolicy::STRICT, "http://100.64.0.1/")
                .await
                .unwrap_err(),
            "url targets a blocked address: carrier-grade NAT address (RFC-6598)"
        );
        assert_eq!(
            register(UrlPolicy::STRICT, "ftp://x").await.unwrap_err(),
            "url scheme must be http or https, got \"ftp\""
        );
        assert!(
            register(UrlPolicy::STRICT, "://not-a-url")
                .await
                .unwrap_err()
                .starts_with("url is not valid: ")
        );
        assert!(
            register(UrlPolicy::STRICT, "http://nxdomain.invalid/")
                .await
                .unwrap_err()
                .starts_with("hostname \"nxdomain.invalid\" cannot be resolved (DNS error): ")
        );
        assert!(register(RELAXED, "http://172.18.0.42:8000").await.is_ok());
        assert_eq!(
            register(UrlPolicy::STRICT, "http://172.18.0.42:8000")
                .await
                .unwrap_err(),
            "url targets a blocked address: RFC-1918 private address"
        );
        assert_eq!(
            register(UrlPolicy::STRICT, "").await.unwrap_err(),
            "url is required"
        );
    }

    #[tokio::test]
    async fn remote_urls_mean_no_inbound_endpoint() {
        assert_eq!(
            register(UrlPolicy::STRICT, "remote://no-inbound")
                .await
                .unwrap(),
            AgentUrl::NoInbound("remote://no-inbound".to_owned())
        );
        // Never dialled, so never accepted at use time.
        assert!(
            UrlPolicy::STRICT
                .check_use("remote://no-inbound", &resolver())
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn every_encoding_of_a_blocked_address_is_blocked() {
        for url in [
            "http://2130706433/",                             // decimal 127.0.0.1
            "http://0177.0.0.1/",                             // octal
            "http://0x7f.1/",                                 // hex, short form
            "http://[::ffff:127.0.0.1]/",                     // IPv4-mapped IPv6
            "http://[::ffff:0:a9fe:a9fe]/",                   // SIIT 169.254.169.254
            "http://[::127.0.0.1]/",                          // IPv4-compatible
            "http://[::a9fe:a9fe]/",                          // IPv4-compatible metadata endpoint
            "http://[64:ff9b::169.254.169.254]/",             // NAT64 metadata endpoint
            "http://[64:ff9b::7f00:1]/",                      // NAT64 loopback
            "http://[64:ff9b:1::a00:1]/",                     // local-use NAT64
            "http://[2002:a9fe:a9fe::]/",                     // 6to4 of 169.254.169.254
            "http://[2002:7f00:1::1]/",                       // 6to4 of 127.0.0.1
            "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/", // Teredo
            "http://[::1]:8080/",
            "http://[fe80::1]/",
            "http://[fd12::1]/",
            "http://[fc00::1]/",
            "http://[2001:db8::1]/",
            "http://0.0.0.0/",
            "http://224.0.0.1/",
            "http://192.0.2.1/",
            "http://198.51.100.1/",
            "http://203.0.113.1/",
            "http://10.1.2.3/",
            "http://192.168.1.1/",
            "http://LOCALHOST:9000/",
            // Audit N12: the rest of the special-purpose registries.
            "http://[fec0::1]/",
            "http://[100::1]/",
            "http://[5f00::1]/",
            "http://[3fff::1]/",
            "http://[2001:2::1]/",
            "http://[4000::1]/",
            "http://198.18.0.1/",
            "http://198.19.255.254/",
            "http://240.0.0.1/",
            "http://255.255.255.255/",
            "http://192.0.0.1/",
            "http://192.88.99.1/",
            "http://[::ffff:198.18.0.1]/",
        ] {
            assert!(
                register(UrlPolicy::STRICT, url).await.is_err(),
                "{url} must be blocked"
            );
        }
    }

    #[test]
    fn globally_reachable_entries_inside_blocked_ranges_are_reachable() {
        for ip in [
            "192.0.0.9",
            "192.0.0.10",
            "2001:4:112::1",
            "2001:20::1",
            "2620:4f:8000::1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(UrlPolicy::STRICT.check_ip(ip), Ok(()), "{ip}");
        }
        assert_eq!(
            UrlPolicy::STRICT.check_ip("192.0.0.8".parse().unwrap()),
            Err("IETF protocol assignments (RFC-6890)")
        );
        // A relaxed policy opens private networks, never the rest.
        assert_eq!(
            RELAXED.check_ip("198.18.0.1".parse().unwrap()),
            Err("benchmarking range (RFC-2544)")
        );
        assert_eq!(RELAXED.check_ip("fd12::1".parse().unwrap()), Ok(()));
        assert!(LOCAL.check_ip("::1".parse().unwrap()).is_ok());
        assert!(LOCAL.check_ip("fe80::1".parse().unwrap()).is_err());
    }

    #[test]
    fn ipv6_forms_of_public_ipv4_addresses_are_judged_as_those() {
        for ip in [
            "64:ff9b::93.184.215.14",
            "2002:5db8:d70e::1",
            "::ffff:93.184.215.14",
            "2606:4700::1111",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(UrlPolicy::STRICT.check_ip(ip), Ok(()), "{ip}");
        }
        let relaxed = UrlPolicy {
            allow_loopback: false,
            allow_private: true,
        };
        assert_eq!(
            relaxed.check_ip("64:ff9b::10.0.0.1".parse().unwrap()),
            Ok(())
        );
        assert!(
            UrlPolicy::STRICT
                .check_ip("64:ff9b::10.0.0.1".parse().unwrap())
                .is_err()
        );
    }

    #[tokio::test]
    async fn names_are_judged_by_every_address_they_resolve_to() {
        assert_eq!(
            register(UrlPolicy::STRICT, "http://metadata.evil/")
                .await
                .unwrap_err(),
            "hostname \"metadata.evil\" resolves to forbidden address: url targets a blocked address: link-local address (cloud metadata endpoint)"
        );
        assert!(
            register(UrlPolicy::STRICT, "http://mixed.evil/")
                .await
                .is_err()
        );
        assert!(register(RELAXED, "http://mixed.evil/").await.is_ok());
    }

    #[test]
    fn deploy_mode_classification() {
        assert!(relaxed_deploy_mode(" SaaS ", None));
        assert!(!relaxed_deploy_mode("self-hosted", Some("org")));
        assert!(!relaxed_deploy_mode("weird", None));
        assert!(relaxed_deploy_mode("", Some("org-1")));
        assert!(!relaxed_deploy_mode("", None));
    }
}
