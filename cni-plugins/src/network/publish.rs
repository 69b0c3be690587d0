//! `--publish SPEC` in Docker's forms (`[IP:][HOST:]CTR[/PROTO]`, port ranges of equal
//! length, `CTR` alone for a free high host port) and the `portMappings` runtimeConfig
//! entries they become. A free host port is one no attachment in the state dir publishes
//! and no socket on the host holds.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// One entry of the `portMappings` capability, as the portmap plugin reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: String,
    #[serde(rename = "hostIP", default, skip_serializing_if = "String::is_empty")]
    pub host_ip: String,
}

/// A parsed SPEC: host ports `None` means "choose free ones".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishSpec {
    pub host_ip: Option<IpAddr>,
    pub host_ports: Option<(u16, u16)>,
    pub container_ports: (u16, u16),
    pub protocol: String,
}

fn port_range(text: &str, spec: &str) -> Result<(u16, u16)> {
    let port = |p: &str| match p.parse::<u16>() {
        Ok(n) if n > 0 => Ok(n),
        _ => bail!("invalid --publish {spec:?}: {p:?} is not a port (1-65535)"),
    };
    let (low, high) = match text.split_once('-') {
        Some((low, high)) => (port(low)?, port(high)?),
        None => (port(text)?, port(text)?),
    };
    if low > high {
        bail!("invalid --publish {spec:?}: the range {text} ends below its start");
    }
    Ok((low, high))
}

impl PublishSpec {
    pub fn parse(spec: &str) -> Result<PublishSpec> {
        let (ports, protocol) = match spec.rsplit_once('/') {
            Some((ports, proto @ ("tcp" | "udp" | "sctp"))) => (ports, proto),
            Some((_, other)) => bail!("invalid --publish {spec:?}: protocol {other:?} is not tcp, udp or sctp"),
            None => (spec, "tcp"),
        };
        // An IPv6 host address is written in brackets: [::1]:8080:80.
        let (host_ip, rest) = match ports.strip_prefix('[') {
            Some(bracketed) => {
                let (ip, rest) = bracketed
                    .split_once("]:")
                    .with_context(|| format!("invalid --publish {spec:?}: expected [IPv6]:HOST:CTR"))?;
                let ip: IpAddr =
                    ip.parse().with_context(|| format!("invalid --publish {spec:?}: {ip:?} is not an IP address"))?;
                (Some(ip), rest.split(':').collect::<Vec<_>>())
            }
            None => {
                let parts: Vec<&str> = ports.split(':').collect();
                match parts.len() {
                    1 | 2 => (None, parts),
                    3 => {
                        let ip: IpAddr = parts[0].parse().with_context(|| {
                            format!(
                                "invalid --publish {spec:?}: {:?} is not an IP address (IPv6 goes in brackets)",
                                parts[0]
                            )
                        })?;
                        (Some(ip), parts[1..].to_vec())
                    }
                    _ => bail!("invalid --publish {spec:?}: expected [IP:][HOST:]CTR[/PROTO] (IPv6 goes in brackets)"),
                }
            }
        };
        let (host, container) = match rest.as_slice() {
            [container] if host_ip.is_none() => (None, *container),
            ["", container] => (None, *container),
            [host, container] => (Some(*host), *container),
            _ => bail!("invalid --publish {spec:?}: expected [IP:][HOST:]CTR[/PROTO]"),
        };
        let container_ports = port_range(container, spec)?;
        let host_ports = host.map(|h| port_range(h, spec)).transpose()?;
        if let Some((low, high)) = host_ports {
            if high - low != container_ports.1 - container_ports.0 {
                bail!("invalid --publish {spec:?}: the host range {host} and the container range {container} differ in length", host = host.unwrap_or_default());
            }
        }
        Ok(PublishSpec { host_ip, host_ports, container_ports, protocol: protocol.to_string() })
    }
}

/// Whether no socket on the host holds `port` for `protocol` (sctp is not checked: this
/// kernel may not have it, and its ports are chosen from those no attachment publishes).
/// A host IP that is no address of this host is an error.
fn free_on_host(ip: Option<IpAddr>, port: u16, protocol: &str) -> Result<bool> {
    let at = SocketAddr::new(ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)), port);
    let bound = match protocol {
        "tcp" => TcpListener::bind(at).map(drop),
        "udp" => UdpSocket::bind(at).map(drop),
        _ => Ok(()),
    };
    match bound {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AddrNotAvailable => {
            bail!("cannot publish on {}: it is not an address of this host", at.ip())
        }
        Err(_) => Ok(false),
    }
}

/// The kernel's ephemeral port range, where Docker picks free host ports too.
fn ephemeral_range() -> (u16, u16) {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let mut bounds = text.split_whitespace().filter_map(|p| p.parse().ok());
    match (bounds.next(), bounds.next()) {
        (Some(low), Some(high)) if low <= high => (low, high),
        _ => (32768, 60999),
    }
}

/// A host port another attachment publishes, and which attachment (for the error).
#[derive(Debug, Clone)]
pub struct Published {
    pub mapping: PortMapping,
    pub holder: String,
}

/// Two mappings collide when they share port and protocol and one listens on every address
/// or both on the same one.
fn collides(a: &PortMapping, b: &PortMapping) -> bool {
    a.host_port == b.host_port
        && a.protocol == b.protocol
        && (a.host_ip.is_empty() || b.host_ip.is_empty() || a.host_ip == b.host_ip)
}

/// The mappings of `specs`, free host ports chosen for those without; a given host port
/// that another attachment (or another SPEC of the same call) publishes is refused.
pub fn mappings(specs: &[PublishSpec], published: &[Published]) -> Result<Vec<PortMapping>> {
    let mut taken: Vec<Published> = published.to_vec();
    let mut out = Vec::new();
    for spec in specs {
        let host_ip = spec.host_ip.map(|ip| ip.to_string()).unwrap_or_default();
        for offset in 0..=(spec.container_ports.1 - spec.container_ports.0) {
            let container_port = spec.container_ports.0 + offset;
            let mapping = |host_port| PortMapping {
                host_port,
                container_port,
                protocol: spec.protocol.clone(),
                host_ip: host_ip.clone(),
            };
            let chosen = match spec.host_ports {
                Some((low, _)) => {
                    let wanted = mapping(low + offset);
                    if let Some(holder) = taken.iter().find(|t| collides(&t.mapping, &wanted)) {
                        bail!(
                            "host port {}/{} is already published by {}: choose another host port",
                            wanted.host_port,
                            wanted.protocol,
                            holder.holder
                        );
                    }
                    wanted
                }
                None => {
                    let (low, high) = ephemeral_range();
                    let mut found = None;
                    for port in low..=high {
                        let candidate = mapping(port);
                        if !taken.iter().any(|t| collides(&t.mapping, &candidate))
                            && free_on_host(spec.host_ip, port, &spec.protocol)?
                        {
                            found = Some(candidate);
                            break;
                        }
                    }
                    found.with_context(|| format!("no free host port left for {container_port}/{}", spec.protocol))?
                }
            };
            taken.push(Published { mapping: chosen.clone(), holder: "another --publish of the same container".into() });
            out.push(chosen);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(host_ip: Option<&str>, host: Option<(u16, u16)>, ctr: (u16, u16), proto: &str) -> PublishSpec {
        PublishSpec {
            host_ip: host_ip.map(|ip| ip.parse().unwrap()),
            host_ports: host,
            container_ports: ctr,
            protocol: proto.into(),
        }
    }

    #[test]
    fn every_docker_form_parses() {
        let cases = [
            ("80", spec(None, None, (80, 80), "tcp")),
            ("80/udp", spec(None, None, (80, 80), "udp")),
            ("8080:80", spec(None, Some((8080, 8080)), (80, 80), "tcp")),
            ("8080:80/sctp", spec(None, Some((8080, 8080)), (80, 80), "sctp")),
            ("8080:80/tcp", spec(None, Some((8080, 8080)), (80, 80), "tcp")),
            ("127.0.0.1:8080:80", spec(Some("127.0.0.1"), Some((8080, 8080)), (80, 80), "tcp")),
            ("127.0.0.1::80/udp", spec(Some("127.0.0.1"), None, (80, 80), "udp")),
            ("[::1]:8080:80", spec(Some("::1"), Some((8080, 8080)), (80, 80), "tcp")),
            ("[fd00::1]::53/udp", spec(Some("fd00::1"), None, (53, 53), "udp")),
            (":80", spec(None, None, (80, 80), "tcp")),
            ("8000-8010:80-90", spec(None, Some((8000, 8010)), (80, 90), "tcp")),
            ("80-82", spec(None, None, (80, 82), "tcp")),
            ("10.0.0.1:9000-9001:90-91/udp", spec(Some("10.0.0.1"), Some((9000, 9001)), (90, 91), "udp")),
        ];
        for (text, expected) in cases {
            assert_eq!(PublishSpec::parse(text).unwrap(), expected, "{text}");
        }
    }

    #[test]
    fn bad_specs_are_refused_saying_why() {
        let cases = [
            ("", "is not a port"),
            ("0", "is not a port"),
            ("70000", "is not a port"),
            ("http", "is not a port"),
            ("80/icmp", "protocol \"icmp\""),
            ("8080:", "is not a port"),
            ("1.2.3:8080:80", "is not an IP address"),
            ("::1:8080:80", "IPv6 goes in brackets"),
            ("[::1]8080:80", "expected [IPv6]:HOST:CTR"),
            ("90-80", "ends below its start"),
            ("8000-8010:80-85", "differ in length"),
            ("8000-8001:80", "differ in length"),
            ("1.2.3.4:80", "is not a port"),
        ];
        for (text, why) in cases {
            let e = PublishSpec::parse(text).unwrap_err().to_string();
            assert!(e.contains(why) && e.contains(&format!("{text:?}")), "{text}: {e}");
        }
    }

    fn published(host_port: u16, protocol: &str, host_ip: &str) -> Published {
        let mapping = PortMapping { host_port, container_port: 80, protocol: protocol.into(), host_ip: host_ip.into() };
        Published { mapping, holder: "container c on network n".into() }
    }

    #[test]
    fn a_host_port_published_elsewhere_is_refused_naming_its_holder() {
        let others = [published(8080, "tcp", ""), published(9090, "udp", "127.0.0.1")];
        let refused = |spec: &str| mappings(&[PublishSpec::parse(spec).unwrap()], &others).unwrap_err().to_string();
        assert_eq!(
            refused("8080:80"),
            "host port 8080/tcp is already published by container c on network n: choose another host port"
        );
        assert!(refused("127.0.0.1:8080:80").contains("already published by container c"));
        assert!(refused("9090:53/udp").contains("already published by container c"));
        let twice = [PublishSpec::parse("7070:80").unwrap(), PublishSpec::parse("7070:81").unwrap()];
        assert!(mappings(&twice, &[]).unwrap_err().to_string().contains("another --publish of the same container"));
        // Another protocol or another specific address is no collision.
        assert!(mappings(&[PublishSpec::parse("8080:80/udp").unwrap()], &others).is_ok());
        assert!(mappings(&[PublishSpec::parse("127.0.0.2:9090:53/udp").unwrap()], &others).is_ok());
        let foreign = mappings(&[PublishSpec::parse("192.0.2.99::80").unwrap()], &[]).unwrap_err().to_string();
        assert_eq!(foreign, "cannot publish on 192.0.2.99: it is not an address of this host");
    }

    #[test]
    fn free_host_ports_skip_published_and_bound_ones() {
        let (low, _) = ephemeral_range();
        let bound = TcpListener::bind(("0.0.0.0", low + 1));
        let published = vec![published(low, "tcp", "")];
        let specs = [PublishSpec::parse("80-81").unwrap(), PublishSpec::parse("8080:53/udp").unwrap()];
        let got = mappings(&specs, &published).unwrap();
        let host_ports: Vec<u16> = got.iter().map(|m| m.host_port).collect();
        assert!(!host_ports.contains(&low), "{got:?}");
        if bound.is_ok() {
            assert!(!host_ports.contains(&(low + 1)), "{got:?}");
        }
        assert_eq!((got[0].container_port, got[1].container_port, got[0].protocol.as_str()), (80, 81, "tcp"));
        assert_eq!(
            got[2],
            PortMapping { host_port: 8080, container_port: 53, protocol: "udp".into(), host_ip: String::new() }
        );
        assert_ne!(got[0].host_port, got[1].host_port);
    }
}
