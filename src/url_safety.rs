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

impl UrlPolicy {
    pub const STRICT: Self = Self {
        allow_loopback: false,
        allow_private: false,
    };

    /// The label of the rule that blocks `ip`, if any. IPv6 forms that carry an IPv4 address
    /// (mapped, compatible, NAT64, 6to4, SIIT) are judged by that address.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), &'static str> {
        match ip {
            IpAddr::V4(v4) => self.check_v4(v4),
            IpAddr::V6(v6) => match embedded_ipv4(v6) {
                Some(Embedded::V4(v4)) => self.check_v4(v4),
                Some(Embedded::Refused(label)) => Err(label),
                None => self.check_v6(v6),
            },
        }
    }

    fn check_v4(&self, ip: Ipv4Addr) -> Result<(), &'static str> {
        let [a, b, c, _] = ip.octets();
        let label = match (a, b, c) {
            _ if ip.is_unspecified() => "unspecified address",
            _ if ip.is_broadcast() => "broadcast address",
            (169, 254, _) => "link-local address (cloud metadata endpoint)",
            (127, _, _) if !self.allow_loopback => "loopback address",
            (192, 0, 2) => "TEST-NET-1 documentation range (RFC-5737)",
            (198, 51, 100) => "TEST-NET-2 documentation range (RFC-5737)",
            (203, 0, 113) => "TEST-NET-3 documentation range (RFC-5737)",
            (100, 64..=127, _) => "carrier-grade NAT address (RFC-6598)",
            (224..=239, _, _) => "IPv4 multicast address",
            (0, _, _) => "unspecified address",
            (10, _, _) | (172, 16..=31, _) | (192, 168, _) if !self.allow_private => {
                "RFC-1918 private address"
            }
            _ => return Ok(()),
        };
        Err(label)
    }

    fn check_v6(&self, ip: Ipv6Addr) -> Result<(), &'static str> {
        let first = ip.segments()[0];
        let label = if ip.is_unspecified() {
            "unspecified address"
        } else if ip.is_loopback() {
            if self.allow_loopback {
                return Ok(());
            }
            "IPv6 loopback address"
        } else if first & 0xffc0 == 0xfe80 {
            "IPv6 link-local address (cloud metadata analogue)"
        } else if first & 0xff00 == 0xfc00 {
            "IPv6 ULA non-routable prefix (fc00::/8)"
        } else if first == 0x2001 && ip.segments()[1] == 0x0db8 {
            "IPv6 documentation address (RFC-3849 reserved)"
        } else if first & 0xff00 == 0xff00 {
            "IPv6 multicast address"
        } else if first & 0xff00 == 0xfd00 && !self.allow_private {
            "IPv6 ULA address (RFC-4193 private)"
        } else {
            return Ok(());
        };
        Err(label)
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
        ] {
            assert!(
                register(UrlPolicy::STRICT, url).await.is_err(),
                "{url} must be blocked"
            );
        }
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
