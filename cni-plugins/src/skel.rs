//! The CNI exec protocol: `CNI_*` environment and the network config on stdin in, a result
//! or error JSON on stdout out; version negotiation and the rules on which command each
//! config version allows.

use std::io::Read;

use serde_json::{json, Value};

use crate::error::{CniError, CniResult, DECODING_FAILURE, INCOMPATIBLE_VERSION, INVALID_CONFIG, INVALID_ENVIRONMENT};
use crate::result::NetResult;

/// Versions berth's plugins read configs of and write results in.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The `CNI_*` environment of one call.
#[derive(Debug, Clone, Default)]
pub struct Args {
    pub command: String,
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    /// `CNI_ARGS`: `K=V;K=V`.
    pub args: Vec<(String, String)>,
    pub path: Vec<String>,
}

impl Args {
    pub fn from_env() -> Args {
        let var = |k: &str| std::env::var(k).unwrap_or_default();
        Args {
            command: var("CNI_COMMAND"),
            container_id: var("CNI_CONTAINERID"),
            netns: var("CNI_NETNS"),
            ifname: var("CNI_IFNAME"),
            args: var("CNI_ARGS").split(';').filter(|p| !p.is_empty()).map(|p| p.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())).unwrap_or((p.to_string(), String::new()))).collect(),
            path: var("CNI_PATH").split(':').filter(|p| !p.is_empty()).map(String::from).collect(),
        }
    }

    fn require(&self, what: &[(&str, &str)]) -> CniResult<()> {
        let missing: Vec<&str> = what.iter().filter(|(_, v)| v.is_empty()).map(|(k, _)| *k).collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(CniError::new(INVALID_ENVIRONMENT, format!("required environment variables missing: {}", missing.join(", "))))
        }
    }
}

/// A plugin: each command gets the call's environment and the whole network config.
pub trait Plugin {
    fn add(&self, args: &Args, conf: &Value) -> CniResult<NetResult>;
    fn del(&self, args: &Args, conf: &Value) -> CniResult<()>;
    fn check(&self, args: &Args, conf: &Value) -> CniResult<()>;
    /// Frees what belongs to attachments not in `valid` (container id, ifname).
    fn gc(&self, conf: &Value, valid: &[(String, String)]) -> CniResult<()>;
    fn status(&self, conf: &Value) -> CniResult<()>;
}

/// Parses a version `a.b.c` into numbers for ordering.
fn version_key(v: &str) -> Option<(u32, u32, u32)> {
    let mut parts = v.split('.').map(|p| p.parse::<u32>().ok());
    Some((parts.next()??, parts.next()??, parts.next().flatten().unwrap_or(0)))
}

/// At least version `min`.
pub fn at_least(version: &str, min: &str) -> bool {
    matches!((version_key(version), version_key(min)), (Some(a), Some(b)) if a >= b)
}

/// Runs one call of `plugin`; returns the exit code.
pub fn run(plugin: &dyn Plugin, name: &str) -> i32 {
    let args = Args::from_env();
    let mut stdin = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut stdin);
    let version = serde_json::from_slice::<Value>(&stdin).ok().and_then(|c| c["cniVersion"].as_str().map(String::from)).unwrap_or_else(|| "1.1.0".into());
    match dispatch(plugin, name, &args, &stdin, &version) {
        Ok(Some(out)) => {
            println!("{}", serde_json::to_string(&out).unwrap_or_default());
            0
        }
        Ok(None) => 0,
        Err(e) => {
            println!("{}", serde_json::to_string(&e.to_json(&version)).unwrap_or_default());
            eprintln!("{name}: {}", e.msg);
            1
        }
    }
}

fn dispatch(plugin: &dyn Plugin, name: &str, args: &Args, stdin: &[u8], version: &str) -> CniResult<Option<Value>> {
    if args.command == "VERSION" {
        return Ok(Some(json!({ "cniVersion": "1.1.0", "supportedVersions": SUPPORTED_VERSIONS })));
    }
    let conf: Value = serde_json::from_slice(stdin).map_err(|e| CniError::new(DECODING_FAILURE, format!("the network config on stdin is not JSON: {e}")))?;
    call(plugin, name, args, &conf, version)
}

/// One call of `plugin` with a parsed config, as `run` makes it; also how a plugin calls
/// another plugin of this binary without starting a process.
pub fn call(plugin: &dyn Plugin, name: &str, args: &Args, conf: &Value, version: &str) -> CniResult<Option<Value>> {
    if !SUPPORTED_VERSIONS.contains(&version) {
        return Err(CniError::new(INCOMPATIBLE_VERSION, format!("{name} does not support config version {version:?}")).with_details(format!("supported: {}", SUPPORTED_VERSIONS.join(", "))));
    }
    if conf["name"].as_str().is_none_or(str::is_empty) && args.command != "VERSION" {
        return Err(CniError::new(INVALID_CONFIG, "the network config has no name"));
    }
    let attachment = [("CNI_CONTAINERID", args.container_id.as_str()), ("CNI_IFNAME", args.ifname.as_str())];
    match args.command.as_str() {
        "ADD" => {
            args.require(&attachment)?;
            args.require(&[("CNI_NETNS", args.netns.as_str())])?;
            Ok(Some(plugin.add(args, conf)?.to_json(version)))
        }
        "DEL" => {
            args.require(&attachment)?;
            plugin.del(args, conf).map(|()| None)
        }
        "CHECK" => {
            if !at_least(version, "0.4.0") {
                return Err(CniError::new(INCOMPATIBLE_VERSION, format!("config version {version} does not allow CHECK (0.4.0 and later do)")));
            }
            args.require(&attachment)?;
            args.require(&[("CNI_NETNS", args.netns.as_str())])?;
            plugin.check(args, conf).map(|()| None)
        }
        "GC" | "STATUS" if !at_least(version, "1.1.0") => Err(CniError::new(INCOMPATIBLE_VERSION, format!("config version {version} does not allow {} (1.1.0 does)", args.command))),
        "GC" => {
            // `cni.dev/valid-attachments` (1.1), also under its pre-release name.
            let listed = conf["cni.dev/valid-attachments"].as_array().or(conf["cni.dev/attachments"].as_array());
            let valid: Vec<(String, String)> = listed.into_iter().flatten().map(|a| (a["containerID"].as_str().unwrap_or_default().to_string(), a["ifname"].as_str().unwrap_or_default().to_string())).collect();
            plugin.gc(conf, &valid).map(|()| None)
        }
        "STATUS" => plugin.status(conf).map(|()| None),
        "" => Err(CniError::new(INVALID_ENVIRONMENT, "CNI_COMMAND is not set")),
        other => Err(CniError::new(INVALID_ENVIRONMENT, format!("unknown CNI_COMMAND {other:?}"))),
    }
}

/// The config's `prevResult`, if any.
pub fn prev_result(conf: &Value) -> CniResult<Option<NetResult>> {
    match conf.get("prevResult") {
        None | Some(Value::Null) => Ok(None),
        Some(prev) => NetResult::from_json(prev).map(Some),
    }
}
