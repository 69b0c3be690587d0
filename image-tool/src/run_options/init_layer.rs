//! Docker's "init layer": each bundle's own `hostname`, `hosts` and `resolv.conf` files,
//! written beside config.json and bind-mounted at /etc/hostname, /etc/hosts and
//! /etc/resolv.conf, from `--hostname`, `--name`, `--add-host` and the `--dns` options.
//!
//! `hosts` holds Docker's localhost lines, the `--add-host` lines and the container's own
//! hostname and name (on 127.0.1.1 until a network gives it an address); berth-cni's hook
//! later adds its own marked block (`# berth-cni NETWORK begin` ... `end`) and owns only that.
//! `resolv.conf` follows Docker's rule: the host's file, or systemd-resolved's upstream file
//! when the host's names only the 127.0.0.53 stub; loopback nameservers are dropped, Docker's
//! public fallback resolvers are written when none remain, and `--dns*` override.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{bail, Context, Result};
use clap::Args;
use oci_spec::runtime::{MountBuilder, Spec};

use super::network::NetworkPlan;

/// The annotation holding the container's name on networks (`--name`, default: the bundle
/// directory's name).
pub const NAME_ANNOTATION: &str = "berth.name";
/// Where the host's resolv.conf is read (default /etc/resolv.conf); tests point it elsewhere.
pub const HOST_RESOLV_CONF_ENV: &str = "BERTH_HOST_RESOLV_CONF";
/// Where systemd-resolved's upstream file is read (default /run/systemd/resolve/resolv.conf).
pub const SYSTEMD_RESOLV_CONF_ENV: &str = "BERTH_SYSTEMD_RESOLV_CONF";
/// The files, their names in the bundle and where the container sees them.
const FILES: [(&str, &str); 3] =
    [("hostname", "/etc/hostname"), ("hosts", "/etc/hosts"), ("resolv.conf", "/etc/resolv.conf")];

/// The lines Docker starts every container's hosts file with.
const LOCALHOST_LINES: &str = "127.0.0.1\tlocalhost
::1\tlocalhost ip6-localhost ip6-loopback
fe00::0\tip6-localnet
ff00::0\tip6-mcastprefix
ff02::1\tip6-allnodes
ff02::2\tip6-allrouters
";
/// The container's own names resolve here until a network gives it an address (the
/// Debian convention for a host without a fixed one).
const OWN_ADDRESS: &str = "127.0.1.1";
/// Docker's fallback resolvers when the host's file leaves none.
const FALLBACK_V4: [&str; 2] = ["8.8.8.8", "8.8.4.4"];
const FALLBACK_V6: [&str; 2] = ["2001:4860:4860::8888", "2001:4860:4860::8844"];

#[derive(Args, Debug, Clone, Default)]
pub struct InitLayerOptions {
    /// The container's hostname (default: the first 12 hex digits of the image's manifest digest)
    #[arg(long, value_name = "NAME", value_parser = parse_hostname, help_heading = "Name and name resolution")]
    pub hostname: Option<String>,
    /// The container's name on networks, also in its hosts file and the `berth.name`
    /// annotation (default: the bundle directory's name, characters a name cannot hold as '-')
    #[arg(long, value_name = "NAME", value_parser = parse_name, help_heading = "Name and name resolution")]
    pub name: Option<String>,
    /// Add a hosts line: NAME:IP (or NAME=IP; IPv6 as is or in brackets); repeatable
    #[arg(long = "add-host", value_name = "NAME:IP", value_parser = HostEntry::from_str, help_heading = "Name and name resolution")]
    pub add_hosts: Vec<HostEntry>,
    /// Nameserver for resolv.conf instead of the host's; repeatable
    #[arg(long, value_name = "IP", help_heading = "Name and name resolution")]
    pub dns: Vec<IpAddr>,
    /// Search domain for resolv.conf instead of the host's (`.` for none); repeatable
    #[arg(long = "dns-search", value_name = "DOMAIN", help_heading = "Name and name resolution")]
    pub dns_search: Vec<String>,
    /// resolv.conf option instead of the host's (e.g. ndots:2); repeatable
    #[arg(
        long = "dns-option",
        visible_alias = "dns-opt",
        value_name = "OPT",
        help_heading = "Name and name resolution"
    )]
    pub dns_options: Vec<String>,
}

/// One `--add-host` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostEntry {
    pub name: String,
    pub address: IpAddr,
}

impl FromStr for HostEntry {
    type Err = anyhow::Error;
    fn from_str(text: &str) -> Result<HostEntry> {
        // The name has no ':' or '=', the address may (IPv6), so split at the first.
        let Some(split) = text.find([':', '=']) else {
            bail!("bad --add-host {text:?}: give NAME:IP");
        };
        let (name, address) = (&text[..split], &text[split + 1..]);
        let name = parse_hostname(name).with_context(|| format!("bad --add-host {text:?}"))?;
        let bare = address.strip_prefix('[').and_then(|a| a.strip_suffix(']')).unwrap_or(address);
        let address =
            bare.parse().with_context(|| format!("bad --add-host {text:?}: {address:?} is not an IP address"))?;
        Ok(HostEntry { name, address })
    }
}

/// A hostname: 1 to 63 characters of letters, digits, '-' and '.', not starting with '-'.
fn parse_hostname(text: &str) -> Result<String> {
    let valid = !text.is_empty()
        && text.len() <= 63
        && !text.starts_with(['-', '.'])
        && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    if !valid {
        bail!("{text:?} is not a valid host name (1-63 letters, digits, '-' and '.')");
    }
    Ok(text.to_string())
}

/// A container name as Docker allows it: a letter or digit, then letters, digits, '_', '.', '-'.
fn parse_name(text: &str) -> Result<String> {
    let valid = text.starts_with(|c: char| c.is_ascii_alphanumeric())
        && text.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if !valid {
        bail!("{text:?} is not a valid container name (a letter or digit, then letters, digits, '_', '.' or '-')");
    }
    Ok(text.to_string())
}

/// The bundle directory's name as a container name: characters a name cannot hold become
/// '-', and leading ones that cannot start it are dropped.
fn default_name(bundle: &Path) -> Result<String> {
    let dir = bundle.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let name: String = dir
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || "_.-".contains(c) { c } else { '-' })
        .skip_while(|c| !c.is_ascii_alphanumeric())
        .collect();
    parse_name(&name)
        .with_context(|| format!("the bundle directory's name {dir:?} makes no container name; give one with --name"))
}

impl InitLayerOptions {
    /// The container's name: `--name`, else the bundle directory's.
    pub fn name(&self, bundle: &Path) -> Result<String> {
        match &self.name {
            Some(name) => Ok(name.clone()),
            None => default_name(bundle),
        }
    }

    /// Refuses the options a `container:` network cannot take: the target owns the files.
    pub fn check(&self, network: &NetworkPlan) -> Result<()> {
        let Some(target) = &network.shared_from else { return Ok(()) };
        let given = self.hostname.is_some()
            || !self.add_hosts.is_empty()
            || !self.dns.is_empty()
            || !self.dns_search.is_empty()
            || !self.dns_options.is_empty();
        if given {
            bail!(
                "--network container: shares the hostname, hosts and resolv.conf of the bundle {}; \
                 drop --hostname, --add-host and the --dns options",
                target.display()
            );
        }
        Ok(())
    }

    /// Writes the three files into `bundle` and adds their bind mounts, the hostname and the
    /// name annotation to `spec` (read-only mounts when the root is read-only, as Docker).
    /// With a `container:` network the target's files are shared instead and none is
    /// written; `--link` lines go into the hosts file.
    pub fn write(
        &self,
        bundle: &Path,
        spec: &mut Spec,
        default_hostname: &str,
        name: &str,
        network: &NetworkPlan,
    ) -> Result<()> {
        let name = name.to_string();
        if network.shared_from.is_some() {
            return annotate_name(spec, name);
        }
        let default_hostname = network.hostname.as_deref().unwrap_or(default_hostname);
        let hostname = self.hostname.clone().unwrap_or_else(|| default_hostname.to_string());
        let resolv = resolv_conf(&host_resolv_conf()?, &self.dns, &self.dns_search, &self.dns_options, false);
        let mut extra = self.add_hosts.clone();
        for (address, names) in &network.link_hosts {
            let address = address.parse().with_context(|| format!("--link: bad address {address:?}"))?;
            extra.extend(names.iter().map(|name| HostEntry { name: name.clone(), address }));
        }
        let contents = [format!("{hostname}\n"), hosts(&hostname, &name, &extra), resolv];
        for ((file, _), text) in FILES.iter().zip(&contents) {
            let path = bundle.join(file);
            std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        }
        let writable = !spec.root().as_ref().and_then(|r| r.readonly()).unwrap_or(false);
        let mut mounts = spec.mounts().clone().unwrap_or_default();
        for (file, destination) in FILES {
            mounts.push(
                MountBuilder::default()
                    .destination(destination)
                    .typ("bind")
                    .source(bundle.join(file))
                    .options(vec!["rbind".into(), "rprivate".into(), if writable { "rw" } else { "ro" }.into()])
                    .build()?,
            );
        }
        spec.set_mounts(Some(mounts));
        spec.set_hostname(Some(hostname));
        annotate_name(spec, name)
    }
}

/// Writes the `berth.name` annotation.
fn annotate_name(spec: &mut Spec, name: String) -> Result<()> {
    let mut annotations = spec.annotations().clone().unwrap_or_default();
    annotations.insert(NAME_ANNOTATION.into(), name);
    spec.set_annotations(Some(annotations));
    Ok(())
}

/// The init-layer files a bundle holds, for undo and release.
pub fn file_names() -> impl Iterator<Item = &'static str> {
    FILES.iter().map(|(file, _)| *file)
}

fn hosts(hostname: &str, name: &str, extra: &[HostEntry]) -> String {
    let mut text = LOCALHOST_LINES.to_string();
    for entry in extra {
        text.push_str(&format!("{}\t{}\n", entry.address, entry.name));
    }
    if hostname == name {
        text.push_str(&format!("{OWN_ADDRESS}\t{hostname}\n"));
    } else {
        text.push_str(&format!("{OWN_ADDRESS}\t{hostname} {name}\n"));
    }
    text
}

/// The host's resolver file: `$BERTH_HOST_RESOLV_CONF` or /etc/resolv.conf, or
/// systemd-resolved's upstream file when that names only the 127.0.0.53 stub. A missing
/// file reads as empty (the fallback resolvers are used), as in Docker.
fn host_resolv_conf() -> Result<String> {
    let path = |var: &str, default: &str| std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| default.into());
    let read = |path: &Path| match std::fs::read_to_string(path) {
        Ok(text) => Ok(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(e).with_context(|| format!("cannot read the host's resolver file {}", path.display())),
    };
    let host = read(&path(HOST_RESOLV_CONF_ENV, "/etc/resolv.conf"))?;
    if nameservers(&host) == ["127.0.0.53"] {
        let systemd = path(SYSTEMD_RESOLV_CONF_ENV, "/run/systemd/resolve/resolv.conf");
        if systemd.exists() {
            return read(&systemd);
        }
    }
    Ok(host)
}

/// The values of `keyword` lines (comments after `#` or `;` ignored).
fn values<'a>(text: &'a str, keyword: &str) -> Vec<&'a str> {
    text.lines()
        .map(|l| l.split(['#', ';']).next().unwrap_or(""))
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            (words.next() == Some(keyword)).then(|| words.collect::<Vec<_>>())
        })
        .flatten()
        .collect()
}

fn nameservers(text: &str) -> Vec<&str> {
    values(text, "nameserver")
}

/// The container's resolv.conf from the host's: `dns` (else the host's nameservers that are
/// not loopback, else Docker's fallback resolvers, with the IPv6 pair when `ipv6`), `search`
/// (else the host's; `.` means none) and `options` (else the host's).
fn resolv_conf(host: &str, dns: &[IpAddr], search: &[String], options: &[String], ipv6: bool) -> String {
    let mut servers: Vec<String> = if dns.is_empty() {
        nameservers(host)
            .into_iter()
            .filter(|s| {
                // A zone (fe80::1%eth0) is not part of the address.
                let address = s.split('%').next().unwrap_or(s);
                address.parse::<IpAddr>().is_ok_and(|a| !a.is_loopback())
            })
            .map(String::from)
            .collect()
    } else {
        dns.iter().map(IpAddr::to_string).collect()
    };
    if servers.is_empty() {
        servers.extend(FALLBACK_V4.iter().map(|s| s.to_string()));
        if ipv6 {
            servers.extend(FALLBACK_V6.iter().map(|s| s.to_string()));
        }
    }
    let search: Vec<String> = if search.is_empty() {
        values(host, "search").into_iter().chain(values(host, "domain")).map(String::from).collect()
    } else {
        search.iter().filter(|s| s.as_str() != ".").cloned().collect()
    };
    let options: Vec<String> = if options.is_empty() {
        values(host, "options").into_iter().map(String::from).collect()
    } else {
        options.to_vec()
    };
    let mut text = String::new();
    for server in servers {
        text.push_str(&format!("nameserver {server}\n"));
    }
    if !search.is_empty() {
        text.push_str(&format!("search {}\n", search.join(" ")));
    }
    if !options.is_empty() {
        text.push_str(&format!("options {}\n", options.join(" ")));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_follows_docker_rule() {
        let host = "# a comment\nnameserver 127.0.0.1\nnameserver 10.0.0.2 # lan\nnameserver ::1\nsearch lan example\noptions ndots:2\n";
        assert_eq!(
            resolv_conf(host, &[], &[], &[], false),
            "nameserver 10.0.0.2\nsearch lan example\noptions ndots:2\n"
        );
        let loopback_only = "nameserver 127.0.0.11\nnameserver ::1\n";
        assert_eq!(resolv_conf(loopback_only, &[], &[], &[], false), "nameserver 8.8.8.8\nnameserver 8.8.4.4\n");
        assert_eq!(
            resolv_conf(loopback_only, &[], &[], &[], true),
            "nameserver 8.8.8.8\nnameserver 8.8.4.4\nnameserver 2001:4860:4860::8888\nnameserver 2001:4860:4860::8844\n"
        );
        let dns: Vec<IpAddr> = vec!["192.0.2.1".parse().unwrap(), "2001:db8::1".parse().unwrap()];
        assert_eq!(
            resolv_conf(host, &dns, &[".".into()], &["ndots:5".into()], false),
            "nameserver 192.0.2.1\nnameserver 2001:db8::1\noptions ndots:5\n"
        );
        assert_eq!(
            resolv_conf("", &[], &["corp".into()], &[], false),
            "nameserver 8.8.8.8\nnameserver 8.8.4.4\nsearch corp\n"
        );
    }

    #[test]
    fn hosts_holds_localhost_extra_lines_and_own_names() {
        let extra = vec!["db:192.0.2.7".parse::<HostEntry>().unwrap(), "v6=[2001:db8::7]".parse().unwrap()];
        let text = hosts("h1", "web", &extra);
        assert!(text.starts_with(LOCALHOST_LINES));
        assert!(text.ends_with("192.0.2.7\tdb\n2001:db8::7\tv6\n127.0.1.1\th1 web\n"), "{text}");
        assert!(hosts("same", "same", &[]).ends_with("127.0.1.1\tsame\n"));
    }

    #[test]
    fn bad_add_host_and_names_are_refused() {
        for bad in ["db", "db:", "db:300.1.1.1", ":1.2.3.4", "d b:1.2.3.4", "db:host-gateway"] {
            assert!(bad.parse::<HostEntry>().is_err(), "{bad}");
        }
        assert!("db:2001:db8::1".parse::<HostEntry>().is_ok());
        assert!(parse_name("web_1.a-b").is_ok());
        assert_eq!(default_name(Path::new("/b/bundle-example.org_odd:1-")).unwrap(), "bundle-example.org_odd-1-");
        assert_eq!(default_name(Path::new("/b/_odd name")).unwrap(), "odd-name");
        assert!(default_name(Path::new("/b/__")).is_err());
        for bad in ["", "-x", "a b", "a/b"] {
            assert!(parse_name(bad).is_err(), "{bad}");
        }
    }
}
