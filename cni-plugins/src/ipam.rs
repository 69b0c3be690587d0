//! Delegating to an IPAM plugin found in CNI_PATH: the same environment (with the command
//! given) and the same network config on stdin, its result or error passed back. When the
//! plugin found is this very binary, the call is made in this process: same code, same
//! store and lock, one process start less.

use std::path::PathBuf;

use serde_json::Value;

use crate::error::{CniError, CniResult, INVALID_CONFIG, INVALID_ENVIRONMENT};
use crate::result::NetResult;
use crate::skel::Args;

fn find(ipam_type: &str, args: &Args) -> CniResult<PathBuf> {
    if ipam_type.is_empty() || ipam_type.contains('/') {
        return Err(CniError::new(INVALID_CONFIG, format!("ipam.type {ipam_type:?} does not name a plugin")));
    }
    args.path.iter().map(|dir| PathBuf::from(dir).join(ipam_type)).find(|p| p.is_file()).ok_or_else(|| CniError::new(INVALID_ENVIRONMENT, format!("IPAM plugin {ipam_type:?} is not in CNI_PATH ({})", args.path.join(":"))))
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
pub fn delegate(command: &str, args: &Args, conf: &Value) -> CniResult<Value> {
    let ipam_type = conf["ipam"]["type"].as_str().unwrap_or_default();
    let plugin = find(ipam_type, args)?;
    let call = Args { command: command.to_string(), ..args.clone() };
    if ipam_type == "host-local" && is_this_binary(&plugin) {
        let version = conf["cniVersion"].as_str().unwrap_or("1.1.0");
        return crate::skel::call(&crate::host_local::HostLocal, ipam_type, &call, conf, version)
            .map(Option::unwrap_or_default)
            .map_err(|e| CniError::new(e.code, format!("IPAM plugin {ipam_type}: {}", e.msg)).with_details(e.details));
    }
    let (code, value) = crate::exec::run_plugin(&plugin, &call, conf).map_err(|e| CniError::io(format!("cannot run IPAM plugin {}", plugin.display()), e))?;
    if value.is_string() {
        return Err(CniError::new(crate::error::DECODING_FAILURE, format!("IPAM plugin {ipam_type} printed no JSON")));
    }
    if code != 0 {
        let code = value["code"].as_u64().unwrap_or(999) as u32;
        let msg = value["msg"].as_str().unwrap_or("failed without a message");
        return Err(CniError::new(code, format!("IPAM plugin {ipam_type}: {msg}")).with_details(value["details"].as_str().unwrap_or_default().to_string()));
    }
    Ok(value)
}

/// ADD through the IPAM plugin, its result read back.
pub fn add(args: &Args, conf: &Value) -> CniResult<NetResult> {
    NetResult::from_json(&delegate("ADD", args, conf)?)
}
