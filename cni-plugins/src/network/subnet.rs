//! Choosing a network's subnets: the user's `--subnet`s checked, or a free private one
//! that no other network's config and no host route uses.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use anyhow::{bail, Context, Result};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde_json::Value;

/// IPv4 networks are taken from 10.90.0.0/24 upwards (podman starts at 10.89, Docker at
/// 172.17), one /24 each.
const FIRST_V4: Ipv4Addr = Ipv4Addr::new(10, 90, 0, 0);
const V4_CANDIDATES: u32 = 10 * 256;

/// A user's `--subnet`: a CIDR whose host bits are zero.
pub fn parse(text: &str) -> Result<IpNet> {
    let net: IpNet =
        text.parse().with_context(|| format!("invalid subnet {text:?}: write it as a CIDR like 10.1.2.0/24"))?;
    if net.trunc() != net {
        bail!("invalid subnet {text:?}: its host bits are set (did you mean {}?)", net.trunc());
    }
    // Room for the gateway and at least one container.
    if net.max_prefix_len() - net.prefix_len() < 2 {
        bail!("invalid subnet {text:?}: too small for a gateway and a container");
    }
    Ok(net)
}

/// Every subnet the configs in `conf_dir` name (any `subnet` key, at any depth, of any
/// `.conflist`, `.conf` or `.json` file), with the file that names it; `except` is skipped.
pub fn configured(conf_dir: &Path, except: Option<&str>) -> Vec<(IpNet, String)> {
    fn collect(value: &Value, found: &mut Vec<IpNet>) {
        match value {
            Value::Object(map) => {
                for (key, v) in map {
                    match (key.as_str(), v.as_str().and_then(|s| s.parse::<IpNet>().ok())) {
                        ("subnet", Some(net)) => found.push(net),
                        _ => collect(v, found),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| collect(v, found)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    for entry in std::fs::read_dir(conf_dir).into_iter().flatten().flatten() {
        let path = entry.path();
        let is_config = matches!(path.extension().and_then(|e| e.to_str()), Some("conflist" | "conf" | "json"));
        if !is_config || except.is_some_and(|name| path.file_stem().and_then(|s| s.to_str()) == Some(name)) {
            continue;
        }
        let Ok(json) = std::fs::read(&path).map(|b| serde_json::from_slice::<Value>(&b)) else { continue };
        let mut found = Vec::new();
        collect(&json.unwrap_or(Value::Null), &mut found);
        all.extend(found.into_iter().map(|net| (net, path.display().to_string())));
    }
    all
}

/// The host's routes (main table, default routes left out: they cover everything).
pub fn host_routes() -> Vec<IpNet> {
    let mut routes = Vec::new();
    let v4 = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    for line in v4.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(dst), Some(mask)) = (fields.get(1), fields.get(7)) else { continue };
        let (Ok(dst), Ok(mask)) = (u32::from_str_radix(dst, 16), u32::from_str_radix(mask, 16)) else { continue };
        // The file prints the kernel's little-endian words.
        let (dst, mask) = (Ipv4Addr::from(dst.swap_bytes()), mask.swap_bytes().leading_ones() as u8);
        if mask > 0 {
            routes.extend(Ipv4Net::new(dst, mask).ok().map(IpNet::V4));
        }
    }
    let v6 = std::fs::read_to_string("/proc/net/ipv6_route").unwrap_or_default();
    for line in v6.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(dst), Some(len)) = (fields.first(), fields.get(1)) else { continue };
        let (Ok(dst), Ok(len)) = (u128::from_str_radix(dst, 16), u8::from_str_radix(len, 16)) else { continue };
        let dst = Ipv6Addr::from(dst);
        // Link-local and multicast routes exist on every link; they are not networks in use.
        if len > 0 && !dst.is_multicast() && (dst.segments()[0] & 0xffc0) != 0xfe80 {
            routes.extend(Ipv6Net::new(dst, len).ok().map(IpNet::V6));
        }
    }
    routes
}

pub fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// What already uses a subnet that overlaps `net`, if anything.
pub fn user_of(net: &IpNet, taken: &[(IpNet, String)], routes: &[IpNet]) -> Option<String> {
    if let Some((other, file)) = taken.iter().find(|(other, _)| overlaps(net, other)) {
        return Some(format!("subnet {other} of {file}"));
    }
    routes.iter().find(|route| overlaps(net, route)).map(|route| format!("the host route to {route}"))
}

/// A free IPv4 /24 from 10.90.0.0 up.
pub fn free_v4(taken: &[(IpNet, String)], routes: &[IpNet]) -> Result<IpNet> {
    let first = u32::from(FIRST_V4);
    (0..V4_CANDIDATES)
        .map(|n| IpNet::V4(Ipv4Net::new(Ipv4Addr::from(first + (n << 8)), 24).expect("a /24 is a valid prefix")))
        .find(|net| user_of(net, taken, routes).is_none())
        .context("no free IPv4 subnet left in 10.90.0.0-10.99.255.0: give one with --subnet")
}

/// A free IPv6 /64 in a random unique local prefix (fd00::/8 and 40 random bits, as RFC
/// 4193 asks).
pub fn free_v6(taken: &[(IpNet, String)], routes: &[IpNet]) -> Result<IpNet> {
    let mut random = [0u8; 7];
    for _ in 0..16 {
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut random))
            .context("cannot read /dev/urandom to choose an IPv6 subnet")?;
        let mut bytes = [0u8; 16];
        bytes[0] = 0xfd;
        bytes[1..8].copy_from_slice(&random);
        let net = IpNet::V6(Ipv6Net::new(Ipv6Addr::from(bytes), 64).expect("a /64 is a valid prefix"));
        if user_of(&net, taken, routes).is_none() {
            return Ok(net);
        }
    }
    bail!("no free IPv6 subnet found: give one with --subnet")
}

/// The subnet's first address, the bridge's address as the network's gateway.
pub fn first_host(net: &IpNet) -> IpAddr {
    match net {
        IpNet::V4(v4) => IpAddr::V4(Ipv4Addr::from(u32::from(v4.network()) + 1)),
        IpNet::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6.network()) + 1)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_are_checked_and_chosen_around_what_is_taken() {
        assert_eq!(parse("10.1.2.0/24").unwrap().to_string(), "10.1.2.0/24");
        let host_bits = parse("10.1.2.3/24").unwrap_err().to_string();
        assert!(host_bits.contains("did you mean 10.1.2.0/24"), "{host_bits}");
        assert!(parse("10.1.2.0/33").is_err() && parse("banana").is_err() && parse("10.1.2.0").is_err());
        assert!(parse("10.1.2.0/31").unwrap_err().to_string().contains("too small"));
        assert!(parse("10.1.2.0/30").is_ok() && parse("fd00::/126").is_ok());
        let taken = vec![("10.90.0.0/24".parse().unwrap(), "a.conflist".to_string())];
        let routes = vec!["10.90.1.0/25".parse().unwrap()];
        assert_eq!(free_v4(&taken, &routes).unwrap().to_string(), "10.90.2.0/24");
        assert_eq!(
            user_of(&"10.90.0.128/25".parse().unwrap(), &taken, &routes).unwrap(),
            "subnet 10.90.0.0/24 of a.conflist"
        );
        assert_eq!(user_of(&"10.0.0.0/8".parse().unwrap(), &[], &routes).unwrap(), "the host route to 10.90.1.0/25");
        let v6 = free_v6(&taken, &routes).unwrap();
        assert!(v6.to_string().starts_with("fd") && v6.prefix_len() == 64, "{v6}");
        assert_eq!(first_host(&"10.90.2.0/24".parse().unwrap()).to_string(), "10.90.2.1");
        assert_eq!(first_host(&"fd00:1::/64".parse().unwrap()).to_string(), "fd00:1::1");
    }
}
