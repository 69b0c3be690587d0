//! Delegating to an IPAM plugin found in CNI_PATH: the same environment (with the command
//! given) and the same network config on stdin, its result or error passed back. When the
//! plugin found is this very binary, the call is made in this process: same code, same
//! store and lock, one process start less.

use std::path::PathBuf;

use serde::Deserialize;
use serde_json::Value;

use crate::error::{CniError, CniResult, DECODING_FAILURE, INVALID_CONFIG, INVALID_ENVIRONMENT};
use crate::result::NetResult;
use crate::skel::Args;

/// The `ipam` key as the delegating plugin reads it: which plugin; the rest is that
/// plugin's to read.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct IpamType {
    #[serde(rename = "type", default)]
    pub plugin: String,
}

/// What a delegation needs: the IPAM plugin, the config's version, and the config itself.
#[derive(Clone, Copy)]
pub struct Delegation<'a> {
    pub ipam: &'a IpamType,
    pub version: &'a str,
    pub conf: &'a Value,
}

fn find(ipam_type: &str, args: &Args) -> CniResult<PathBuf> {
    if ipam_type.is_empty() || ipam_type.contains('/') {
        return Err(CniError::new(INVALID_CONFIG, format!("ipam.type {ipam_type:?} does not name a plugin")));
    }
    args.path.iter().map(|dir| PathBuf::from(dir).join(ipam_type)).find(|p| p.is_file()).ok_or_else(|| {
        CniError::new(
            INVALID_ENVIRONMENT,
            format!("IPAM plugin {ipam_type:?} is not in CNI_PATH ({})", args.path.join(":")),
        )
    })
}

/// Whether `plugin` is the file this process runs (the same inode).
fn is_this_binary(plugin: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(plugin), std::fs::metadata("/proc/self/exe")) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

/// Runs the config's IPAM plugin for `command`; returns what it printed (Null if nothing).
pub fn delegate(command: &str, args: &Args, to: Delegation) -> CniResult<Value> {
    let ipam_type = to.ipam.plugin.as_str();
    let plugin = find(ipam_type, args)?;
    let call = Args { command: command.to_string(), ..args.clone() };
    let conf = to.conf;
    if ipam_type == "host-local" && is_this_binary(&plugin) {
        let version = if to.version.is_empty() { "1.1.0" } else { to.version };
        return crate::skel::call(&crate::host_local::HostLocal, ipam_type, &call, conf, version)
            .map(Option::unwrap_or_default)
            .map_err(|e| CniError::new(e.code, format!("IPAM plugin {ipam_type}: {}", e.msg)).with_details(e.details));
    }
    let (code, value) = crate::exec::run_plugin(&plugin, &call, conf)
        .map_err(|e| CniError::io(format!("cannot run IPAM plugin {}", plugin.display()), e))?;
    if value.is_string() {
        return Err(CniError::new(DECODING_FAILURE, format!("IPAM plugin {ipam_type} printed no JSON")));
    }
    if code != 0 {
        let e: CniError = serde_json::from_value(value).unwrap_or_else(|_| CniError::new(crate::error::INTERNAL, ""));
        let msg = if e.msg.is_empty() { "failed without a message" } else { &e.msg };
        return Err(CniError::new(e.code, format!("IPAM plugin {ipam_type}: {msg}")).with_details(e.details.clone()));
    }
    Ok(value)
}

/// ADD through the IPAM plugin, its result read back.
pub fn add(args: &Args, to: Delegation) -> CniResult<NetResult> {
    NetResult::from_json(&delegate("ADD", args, to)?)
}
