//! Attaching containers to named networks: ADD, DEL and CHECK through the network's chain
//! under the state lock, the attachment recorded (and its result cached) in the state dir,
//! and every member's hosts-file block brought up to date as members come and go.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::{json, Map, Value};

use super::publish::{self, PublishSpec, Published};
use super::state::{self, Member};
use super::{Dirs, Network};
use crate::chain::{Attachment, Chain};
use crate::hosts::{self, HostsEntry};

/// What an ADD is asked for.
#[derive(Debug, Default)]
pub struct AddRequest {
    pub network: String,
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    pub publish: Vec<String>,
    pub aliases: Vec<String>,
    /// The name others resolve it by; the container id when absent.
    pub name: Option<String>,
    pub hosts_file: Option<PathBuf>,
}

fn runtime_config(member: &Member) -> Map<String, Value> {
    let mut config = Map::new();
    config.insert("portMappings".into(), json!(member.port_mappings));
    config
}

/// Attaches a container; returns the chain's result.
pub fn add(dirs: &Dirs, request: &AddRequest) -> Result<Value> {
    state::check_component("container id", &request.container_id)?;
    state::check_component("interface name", &request.ifname)?;
    if let Some(name) = &request.name {
        super::check_container_name("container name", name)?;
    }
    for alias in &request.aliases {
        super::check_container_name("alias", alias)?;
    }
    if let Some(file) = request.hosts_file.as_ref().filter(|f| !f.is_file()) {
        bail!(
            "hosts file {} does not exist: the bundle must provide the file it bind-mounts at /etc/hosts",
            file.display()
        );
    }
    let specs = request.publish.iter().map(|s| PublishSpec::parse(s)).collect::<Result<Vec<_>>>()?;
    let _lock = state::lock(dirs)?;
    let (network, conflist) = super::load(dirs, &request.network)?;
    if network.internal && !specs.is_empty() {
        bail!("network {} is internal: it publishes no ports (drop --publish or use another network)", network.name);
    }
    if state::member(dirs, &network.name, &request.container_id, &request.ifname)?.is_some() {
        bail!(
            "container {} is already attached to network {} on {} (del it first)",
            request.container_id,
            network.name,
            request.ifname
        );
    }
    let published: Vec<Published> = state::all_members(dirs)?
        .iter()
        .flat_map(|m| {
            let holder = format!("container {} on network {}", m.id, m.conflist["name"].as_str().unwrap_or_default());
            m.port_mappings.iter().map(move |p| Published { mapping: p.clone(), holder: holder.clone() })
        })
        .collect();
    let mut member = Member {
        id: request.container_id.clone(),
        ifname: request.ifname.clone(),
        netns: request.netns.clone(),
        name: request.name.clone().unwrap_or_else(|| request.container_id.clone()),
        aliases: request.aliases.clone(),
        hosts_file: request.hosts_file.clone(),
        port_mappings: publish::mappings(&specs, &published)?,
        result: Value::Null,
        conflist,
    };
    let runtime = runtime_config(&member);
    let attachment =
        Attachment { container_id: &member.id, netns: &member.netns, ifname: &member.ifname, runtime_config: &runtime };
    let chain = Chain { conflist: &member.conflist, bin_dir: &dirs.bin_dir };
    let result = chain.add(&attachment)?;
    member.result = result.clone();
    // An attachment that cannot be recorded, or whose names cannot be written, is undone:
    // a runtime whose createRuntime hook failed runs no poststop hook to free it.
    if let Err(e) =
        state::save(dirs, &network.name, &member).and_then(|()| sync_hosts(dirs, &network, Some(&member.id)))
    {
        let _ = chain.del(&attachment, Some(&result));
        let _ = state::forget(dirs, &network.name, &member.id, &member.ifname);
        if let Some(own) = &member.hosts_file {
            let _ = hosts::write_block(own, &network.name, &[]);
        }
        let _ = sync_hosts(dirs, &network, None);
        return Err(e);
    }
    Ok(result)
}

/// A namespace path that still exists, else "" (DEL of a container whose namespace is gone).
fn existing_netns(netns: &str) -> &str {
    if !netns.is_empty() && Path::new(netns).exists() {
        netns
    } else {
        ""
    }
}

/// Detaches a container: DEL with the cached result and config. Succeeds when repeated,
/// and when the namespace is gone.
pub fn del(dirs: &Dirs, network_name: &str, container_id: &str, ifname: &str, netns: &str) -> Result<()> {
    state::check_component("container id", container_id)?;
    state::check_component("interface name", ifname)?;
    super::check_name(network_name)?;
    let _lock = state::lock(dirs)?;
    let recorded = state::member(dirs, network_name, container_id, ifname)?;
    let (conflist, cached, runtime) = match &recorded {
        Some(member) => (member.conflist.clone(), Some(&member.result), runtime_config(member)),
        // Not attached (or already detached): DEL anyway with today's config, as CNI
        // allows, so whatever a lost record left behind is freed.
        None if dirs.conflist(network_name).exists() => (super::load(dirs, network_name)?.1, None, Map::new()),
        // Neither attached nor a network any more: nothing is left to free.
        None => return Ok(()),
    };
    let attachment = Attachment { container_id, netns: existing_netns(netns), ifname, runtime_config: &runtime };
    Chain { conflist: &conflist, bin_dir: &dirs.bin_dir }.del(&attachment, cached)?;
    if let Some(member) = &recorded {
        state::forget(dirs, network_name, container_id, ifname)?;
        if let Some(own) = &member.hosts_file {
            hosts::write_block(own, network_name, &[])?;
        }
    }
    if dirs.conflist(network_name).exists() {
        sync_hosts(dirs, &super::load(dirs, network_name)?.0, None)?;
    }
    Ok(())
}

/// CHECK through the chain with the cached result.
pub fn check(dirs: &Dirs, network_name: &str, container_id: &str, ifname: &str, netns: &str) -> Result<()> {
    super::check_name(network_name)?;
    let _lock = state::lock(dirs)?;
    let Some(member) = state::member(dirs, network_name, container_id, ifname)? else {
        bail!("container {container_id} is not attached to network {network_name} on {ifname}: nothing to check");
    };
    let runtime = runtime_config(&member);
    let attachment = Attachment { container_id, netns, ifname, runtime_config: &runtime };
    Chain { conflist: &member.conflist, bin_dir: &dirs.bin_dir }.check(&attachment, &member.result)
}

/// A member's addresses, from its cached result.
fn addresses(member: &Member) -> Vec<IpAddr> {
    member.result["ips"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|ip| ip["address"].as_str()?.split('/').next()?.parse().ok())
        .collect()
}

fn entries_of(member: &Member) -> Vec<HostsEntry> {
    let mut names = vec![member.name.clone()];
    names.extend(member.aliases.iter().filter(|a| **a != member.name).cloned());
    addresses(member).into_iter().map(|address| HostsEntry { address, names: names.clone() }).collect()
}

/// Rewrites the network's block of every member's hosts file: its own lines first, then
/// every other member's (only its own on the default network, which resolves no names).
/// Only the file of `subject` (the member being added) may fail the call: another member's
/// unwritable file (its container may have filled it with anything) is reported on stderr
/// and the others are still written.
fn sync_hosts(dirs: &Dirs, network: &Network, subject: Option<&str>) -> Result<()> {
    let members = state::members(dirs, &network.name)?;
    for member in &members {
        let Some(file) = &member.hosts_file else { continue };
        let mut entries = entries_of(member);
        if network.dns {
            for other in members.iter().filter(|o| o.id != member.id) {
                entries.extend(entries_of(other));
            }
        }
        let written = hosts::write_block(file, &network.name, &entries)
            .with_context(|| format!("cannot update the hosts file of container {}", member.id));
        match written {
            Err(e) if subject == Some(member.id.as_str()) => return Err(e),
            Err(e) => eprintln!("berth-cni: {e:#}; the other members' files are still updated"),
            Ok(()) => {}
        }
    }
    Ok(())
}
