//! `hook add|del NETWORK`: OCI hook mode. A createRuntime hook gets the container's state
//! on stdin (id, pid, bundle) while its namespaces exist; a poststop hook gets it after
//! the process is gone.

use std::io::Read;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::Deserialize;

use super::PublishArgs;
use crate::network::attach::{self, AddRequest};
use crate::network::pin;
use crate::network::Dirs;

#[derive(Args, Debug)]
pub struct HookAddArgs {
    /// The network's name
    pub network: String,
    #[command(flatten)]
    pub publish: PublishArgs,
    /// The name the other members resolve this container by, and under which its network
    /// namespace is pinned for `--network container:NAME` bundles while it runs [default: the container id]
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// The container's hosts file (bind-mounted at /etc/hosts), whose block lists the network's members
    #[arg(long, value_name = "PATH")]
    pub hosts_file: Option<PathBuf>,
    /// The interface inside the container
    #[arg(long, default_value = "eth0")]
    pub ifname: String,
}

#[derive(Args, Debug)]
pub struct HookDelArgs {
    /// The network's name
    pub network: String,
    /// The interface inside the container
    #[arg(long, default_value = "eth0")]
    pub ifname: String,
}

/// The fields of the OCI state the hooks read.
#[derive(Deserialize)]
struct OciState {
    id: String,
    #[serde(default)]
    pid: i64,
    #[serde(default)]
    bundle: PathBuf,
}

/// A runtime runs a hook with only the environment its spec gives, often none; the plugins
/// find iptables, nft and the like through PATH, so a hook without one gets the usual one.
fn ensure_path() {
    if std::env::var_os("PATH").is_none() {
        std::env::set_var("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    }
}

fn read_state() -> Result<OciState> {
    ensure_path();
    let mut text = String::new();
    std::io::stdin().read_to_string(&mut text).context("cannot read the container's state on stdin")?;
    serde_json::from_str(&text).with_context(|| format!("the state on stdin is not an OCI state: {text:?}"))
}

pub fn add(dirs: &Dirs, args: &HookAddArgs) -> Result<()> {
    let state = read_state()?;
    if state.pid <= 0 {
        bail!("container {} has no process in its state: run berth-cni hook add as a createRuntime hook", state.id);
    }
    let name = args.name.clone().unwrap_or_else(|| state.id.clone());
    // Checked before attaching, so a refused name leaves the network untouched; `pin` checks
    // again under the same rule in case another container took it meanwhile.
    pin::available(dirs, &name, &state.id)?;
    let request = AddRequest {
        network: args.network.clone(),
        netns: format!("/proc/{}/ns/net", state.pid),
        container_id: state.id.clone(),
        ifname: args.ifname.clone(),
        publish: args.publish.publish.clone(),
        aliases: args.publish.aliases.clone(),
        name: args.name.clone(),
        hosts_file: args.hosts_file.clone(),
    };
    attach::add(dirs, &request)?;
    let pinned = pin::pin(dirs, &name, &state.id, state.pid, &state.bundle);
    if let Err(e) = pinned {
        let _ = attach::del(dirs, &args.network, &state.id, &args.ifname, &request.netns);
        return Err(e).with_context(|| format!("cannot attach container {} to {}", state.id, args.network));
    }
    Ok(())
}

pub fn del(dirs: &Dirs, args: &HookDelArgs) -> Result<()> {
    // No namespace: the process is gone, and its pid may already name another process.
    let state = read_state()?;
    // The pin goes whatever DEL says: a pin left behind would keep the namespace alive.
    let detached = attach::del(dirs, &args.network, &state.id, &args.ifname, "");
    let unpinned = pin::unpin(dirs, &state.id);
    detached.and(unpinned)
}
