//! Named networks for bundles run without an orchestrator: each is a conflist
//! `<conf-dir>/NAME.conflist` (bridge + portmap + firewall + tuning, as podman writes its
//! own), and the state dir records who is attached to it. The default network `berth`
//! (bridge `berth0`) is made on first use.

pub mod attach;
pub mod pin;
pub mod publish;
pub mod state;
pub mod subnet;

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use ipnet::IpNet;
use serde::Serialize;
use serde_json::{json, Value};

/// The default network's name and bridge.
pub const DEFAULT_NETWORK: &str = "berth";
const DEFAULT_BRIDGE: &str = "berth0";
/// The version the written conflists declare: the newest the reference plugins of
/// Debian's 1.1.1 read, so either plugin set serves them.
const CONFLIST_VERSION: &str = "1.0.0";

/// Where configs, plugins and berth-cni's own state live.
#[derive(Debug, Clone)]
pub struct Dirs {
    pub conf_dir: PathBuf,
    pub bin_dir: PathBuf,
    pub state_dir: PathBuf,
}

impl Dirs {
    pub fn conflist(&self, name: &str) -> PathBuf {
        self.conf_dir.join(format!("{name}.conflist"))
    }

    /// host-local's data for the networks berth-cni writes: kept with the rest of its state.
    fn ipam_dir(&self) -> PathBuf {
        self.state_dir.join("ipam")
    }
}

/// Docker's rule for network and container names: a letter or digit, then letters,
/// digits, `_`, `.`, `-`.
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

pub fn check_name(name: &str) -> Result<()> {
    if !valid_name(name) {
        bail!("invalid network name {name:?}: use letters, digits, '_', '.' and '-', starting with a letter or digit");
    }
    Ok(())
}

/// A name or alias a container is resolved by (a hosts-file name: no blanks, no '#').
pub fn check_container_name(what: &str, name: &str) -> Result<()> {
    if !valid_name(name) {
        bail!("invalid {what} {name:?}: use letters, digits, '_', '.' and '-', starting with a letter or digit");
    }
    Ok(())
}

/// One subnet of a network and its gateway.
#[derive(Debug, Clone, Serialize)]
pub struct Subnet {
    pub subnet: IpNet,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
}

/// A network as `ls` and `inspect` show it, read from its conflist.
#[derive(Debug, Clone, Serialize)]
pub struct Network {
    pub name: String,
    pub bridge: String,
    pub subnets: Vec<Subnet>,
    pub ipv6: bool,
    /// No masquerading, no default route, no published ports.
    pub internal: bool,
    /// Whether members resolve each other's names (all but the default network).
    pub dns: bool,
    pub conflist: PathBuf,
}

/// What `network create` is asked for.
#[derive(Debug, Default)]
pub struct CreateOptions {
    pub subnets: Vec<String>,
    pub gateway: Option<String>,
    pub ipv6: bool,
    pub internal: bool,
}

fn read_conflist(path: &Path) -> Result<Value> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("{} is not valid JSON", path.display()))
}

impl Network {
    fn from_conflist(path: &Path, conflist: &Value) -> Network {
        let name = conflist["name"].as_str().unwrap_or_default().to_string();
        let empty = Vec::new();
        let plugins = conflist["plugins"].as_array().unwrap_or(&empty);
        let bridge = plugins.iter().find(|p| p["type"] == "bridge").cloned().unwrap_or(Value::Null);
        let subnets: Vec<Subnet> = bridge["ipam"]["ranges"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|set| set.as_array()?.first().cloned())
            .filter_map(|range| {
                Some(Subnet {
                    subnet: range["subnet"].as_str()?.parse().ok()?,
                    gateway: range["gateway"].as_str().and_then(|g| g.parse().ok()),
                })
            })
            .collect();
        Network {
            bridge: bridge["bridge"].as_str().unwrap_or_default().to_string(),
            ipv6: subnets.iter().any(|s| matches!(s.subnet, IpNet::V6(_))),
            internal: bridge["isGateway"] != true,
            dns: name != DEFAULT_NETWORK,
            subnets,
            name,
            conflist: path.to_path_buf(),
        }
    }
}

/// The network `name` and its conflist. The default network is made if missing.
pub fn load(dirs: &Dirs, name: &str) -> Result<(Network, Value)> {
    check_name(name)?;
    let path = dirs.conflist(name);
    if !path.exists() {
        if name == DEFAULT_NETWORK {
            create(dirs, name, &CreateOptions::default())?;
        } else {
            bail!("network {name} not found: no {} (create it with `berth-cni network create {name}`)", path.display());
        }
    }
    let conflist = read_conflist(&path)?;
    Ok((Network::from_conflist(&path, &conflist), conflist))
}

/// Every network of the conf dir, by name.
pub fn list(dirs: &Dirs) -> Result<Vec<Network>> {
    let mut networks = Vec::new();
    let entries = match std::fs::read_dir(&dirs.conf_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(networks),
        Err(e) => return Err(e).with_context(|| format!("cannot list {}", dirs.conf_dir.display())),
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) == Some("conflist") {
            networks.push(Network::from_conflist(&path, &read_conflist(&path)?));
        }
    }
    networks.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(networks)
}

/// The first `berthN` bridge no conflist names and no host link has (berth0 is the default's).
fn free_bridge(dirs: &Dirs) -> Result<String> {
    let named: Vec<String> = list(dirs)?.into_iter().map(|n| n.bridge).collect();
    (1..10_000)
        .map(|n| format!("berth{n}"))
        .find(|b| !named.contains(b) && !Path::new("/sys/class/net").join(b).exists())
        .context("no free bridge name berthN left")
}

/// The subnets of a new network: the given ones, checked; else a free IPv4 one (and a
/// free IPv6 one with `--ipv6`).
fn choose_subnets(dirs: &Dirs, name: &str, options: &CreateOptions) -> Result<Vec<Subnet>> {
    let taken = subnet::configured(&dirs.conf_dir, Some(name));
    let routes = subnet::host_routes();
    let mut nets = Vec::new();
    for text in &options.subnets {
        let net = subnet::parse(text)?;
        if let Some(user) = subnet::user_of(&net, &taken, &routes) {
            bail!("subnet {net} overlaps {user}: choose another --subnet");
        }
        if let Some(other) = nets.iter().find(|other| subnet::overlaps(&net, other)) {
            bail!("subnet {net} overlaps subnet {other} given too");
        }
        nets.push(net);
    }
    let has_v6 = nets.iter().any(|n| matches!(n, IpNet::V6(_)));
    if nets.is_empty() {
        nets.push(subnet::free_v4(&taken, &routes)?);
    }
    if options.ipv6 && !has_v6 {
        nets.push(subnet::free_v6(&taken, &routes)?);
    }
    let gateway = options
        .gateway
        .as_deref()
        .map(|g| g.parse::<IpAddr>().with_context(|| format!("invalid gateway {g:?}: give an IP address")))
        .transpose()?;
    if let Some(gw) = gateway {
        if options.subnets.is_empty() {
            bail!("--gateway {gw} needs the --subnet it belongs to");
        }
        let Some(owner) = nets.iter().find(|n| n.contains(&gw)) else {
            bail!("gateway {gw} is in none of the network's subnets ({})", join(&nets));
        };
        if gw == owner.network() || matches!((owner, gw), (IpNet::V4(v4), IpAddr::V4(a)) if a == v4.broadcast()) {
            bail!("gateway {gw} is not a host address of {owner}");
        }
    }
    Ok(nets
        .into_iter()
        .map(|net| {
            let own = gateway.filter(|gw| net.contains(gw));
            Subnet { subnet: net, gateway: Some(own.unwrap_or_else(|| subnet::first_host(&net))) }
        })
        .collect())
}

fn join(nets: &[IpNet]) -> String {
    nets.iter().map(IpNet::to_string).collect::<Vec<_>>().join(", ")
}

/// The conflist podman 4.3 writes for a bridge network (bridge with host-local, portmap
/// with the portMappings capability, firewall, tuning), host-local's data kept in the state dir.
fn conflist_for(dirs: &Dirs, name: &str, bridge: &str, subnets: &[Subnet], internal: bool) -> Value {
    let ranges: Vec<Value> = subnets
        .iter()
        .map(|s| {
            let mut range = json!({ "subnet": s.subnet.to_string() });
            if !internal {
                range["gateway"] = json!(s.gateway.map(|g| g.to_string()));
            }
            json!([range])
        })
        .collect();
    let mut ipam = json!({ "type": "host-local", "ranges": ranges, "dataDir": dirs.ipam_dir() });
    let mut bridge_plugin = json!({ "type": "bridge", "bridge": bridge, "isGateway": !internal, "hairpinMode": true });
    if !internal {
        bridge_plugin["ipMasq"] = json!(true);
        let defaults: Vec<Value> = subnets
            .iter()
            .map(|s| json!({ "dst": if s.subnet.addr().is_ipv4() { "0.0.0.0/0" } else { "::/0" } }))
            .collect();
        ipam["routes"] = json!(defaults);
    }
    bridge_plugin["ipam"] = ipam;
    bridge_plugin["capabilities"] = json!({ "ips": true });
    json!({
        "cniVersion": CONFLIST_VERSION,
        "name": name,
        "plugins": [
            bridge_plugin,
            { "type": "portmap", "capabilities": { "portMappings": true } },
            { "type": "firewall", "backend": "" },
            { "type": "tuning" }
        ]
    })
}

/// Writes the conflist of a new network; refuses an existing name.
pub fn create(dirs: &Dirs, name: &str, options: &CreateOptions) -> Result<Network> {
    check_name(name)?;
    let path = dirs.conflist(name);
    if path.exists() {
        bail!("network {name} already exists ({})", path.display());
    }
    let subnets = choose_subnets(dirs, name, options)?;
    let bridge = if name == DEFAULT_NETWORK { DEFAULT_BRIDGE.to_string() } else { free_bridge(dirs)? };
    let conflist = conflist_for(dirs, name, &bridge, &subnets, options.internal);
    std::fs::create_dir_all(&dirs.conf_dir).with_context(|| format!("cannot create {}", dirs.conf_dir.display()))?;
    // Written aside and renamed: a runtime reading the directory never sees half a file.
    let partial = dirs.conf_dir.join(format!(".{name}.conflist.{}", std::process::id()));
    std::fs::write(&partial, serde_json::to_vec_pretty(&conflist).expect("a conflist is JSON"))
        .with_context(|| format!("cannot write {}", partial.display()))?;
    std::fs::rename(&partial, &path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(Network::from_conflist(&path, &conflist))
}

/// Removes a network's conflist; refused while containers are attached.
pub fn remove(dirs: &Dirs, name: &str) -> Result<()> {
    check_name(name)?;
    let path = dirs.conflist(name);
    if !path.exists() {
        bail!("network {name} not found: no {}", path.display());
    }
    let attached = state::members(dirs, name)?;
    if !attached.is_empty() {
        let ids: Vec<&str> = attached.iter().map(|m| m.id.as_str()).collect();
        bail!("network {name} has containers attached ({}): remove them first (`berth-cni del`)", ids.join(", "));
    }
    let bridge = Network::from_conflist(&path, &read_conflist(&path)?).bridge;
    std::fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
    let _ = std::fs::remove_dir_all(dirs.ipam_dir().join(name));
    // Its bridge goes too, as podman's network rm removes it; the plugins make it again if
    // the network is created anew.
    let mut links = crate::netlink::route::RouteClient::open().context("cannot open netlink")?;
    if let Some(link) = links.link(&bridge).with_context(|| format!("cannot look up bridge {bridge}"))? {
        links.delete_link(link.index).with_context(|| format!("cannot delete bridge {bridge} of network {name}"))?;
    }
    Ok(())
}
