//! The CNI exec protocol: `CNI_*` environment and the network config on stdin in, a result
//! or error JSON on stdout out; version negotiation and the rules on which command each
//! config version allows.

use std::io::Read;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::conf::NetConf;
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
            args: var("CNI_ARGS")
                .split(';')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    p.split_once('=')
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .unwrap_or((p.to_string(), String::new()))
                })
                .collect(),
            path: var("CNI_PATH").split(':').filter(|p| !p.is_empty()).map(String::from).collect(),
        }
    }

    fn require(&self, what: &[(&str, &str)]) -> CniResult<()> {
        let missing: Vec<&str> = what.iter().filter(|(_, v)| v.is_empty()).map(|(k, _)| *k).collect();
        if !missing.is_empty() {
            return Err(CniError::new(
                INVALID_ENVIRONMENT,
                format!("required environment variables missing: {}", missing.join(", ")),
            ));
        }
        self.check_attachment()
    }

    /// The container id and interface name as libcni checks them before calling a plugin:
    /// plugins build paths from both, so one that could climb out of a directory is refused.
    fn check_attachment(&self) -> CniResult<()> {
        let id = &self.container_id;
        let id_ok = id.is_empty()
            || (id.starts_with(|c: char| c.is_ascii_alphanumeric())
                && id.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)));
        if !id_ok {
            return Err(CniError::new(
                INVALID_ENVIRONMENT,
                format!("CNI_CONTAINERID {id:?} is invalid: letters, digits, '_', '.' and '-', starting with a letter or digit"),
            ));
        }
        let ifname = &self.ifname;
        let ifname_ok = ifname.is_empty()
            || (ifname.len() <= 15
                && ifname != "."
                && ifname != ".."
                && !ifname.contains(['/', ':'])
                && !ifname.contains(char::is_whitespace));
        if !ifname_ok {
            return Err(CniError::new(
                INVALID_ENVIRONMENT,
                format!("CNI_IFNAME {ifname:?} is not a valid interface name"),
            ));
        }
        Ok(())
    }
}

/// A plugin: each command gets the call's environment and the whole network config, as
/// JSON (which a plugin passes on unchanged to its IPAM plugin); each reads its own keys
/// from it with `conf::parse`.
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

/// The config's version alone, read before anything else of it (an error names it too).
#[derive(Deserialize)]
struct ConfigVersion {
    #[serde(rename = "cniVersion")]
    cni_version: String,
}

/// Runs one call of `plugin`; returns the exit code.
pub fn run(plugin: &dyn Plugin, name: &str) -> i32 {
    let args = Args::from_env();
    let mut stdin = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut stdin);
    // Read once: the version comes from the parsed config (a second parse for it alone
    // cost a tenth of an ADD of 1000 published ports).
    let conf = serde_json::from_slice::<Value>(&stdin);
    let version = conf.as_ref().ok().and_then(|c| c.get("cniVersion")).and_then(Value::as_str).unwrap_or("1.1.0");
    let version = version.to_string();
    match dispatch(plugin, name, &args, conf, &version) {
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

fn dispatch(
    plugin: &dyn Plugin,
    name: &str,
    args: &Args,
    conf: serde_json::Result<Value>,
    version: &str,
) -> CniResult<Option<Value>> {
    if args.command == "VERSION" {
        return Ok(Some(json!({ "cniVersion": "1.1.0", "supportedVersions": SUPPORTED_VERSIONS })));
    }
    let conf =
        conf.map_err(|e| CniError::new(DECODING_FAILURE, format!("the network config on stdin is not JSON: {e}")))?;
    call(plugin, name, args, &conf, version)
}

/// One call of `plugin` with a parsed config, as `run` makes it; also how a plugin calls
/// another plugin of this binary without starting a process.
pub fn call(plugin: &dyn Plugin, name: &str, args: &Args, conf: &Value, version: &str) -> CniResult<Option<Value>> {
    if !SUPPORTED_VERSIONS.contains(&version) {
        return Err(CniError::new(INCOMPATIBLE_VERSION, format!("{name} does not support config version {version:?}"))
            .with_details(format!("supported: {}", SUPPORTED_VERSIONS.join(", "))));
    }
    let common: NetConf = crate::conf::parse(conf)?;
    if common.name.is_empty() {
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
                return Err(CniError::new(
                    INCOMPATIBLE_VERSION,
                    format!("config version {version} does not allow CHECK (0.4.0 and later do)"),
                ));
            }
            args.require(&attachment)?;
            args.require(&[("CNI_NETNS", args.netns.as_str())])?;
            plugin.check(args, conf).map(|()| None)
        }
        "GC" | "STATUS" if !at_least(version, "1.1.0") => Err(CniError::new(
            INCOMPATIBLE_VERSION,
            format!("config version {version} does not allow {} (1.1.0 does)", args.command),
        )),
        "GC" => plugin.gc(conf, &common.valid_attachments()).map(|()| None),
        "STATUS" => plugin.status(conf).map(|()| None),
        "" => Err(CniError::new(INVALID_ENVIRONMENT, "CNI_COMMAND is not set")),
        other => Err(CniError::new(INVALID_ENVIRONMENT, format!("unknown CNI_COMMAND {other:?}"))),
    }
}

/// Answers a run under a name that is no plugin of this binary (a link named wrongly, or a
/// runtime asking for a `type` berth does not have): a CNI error on stdout, as the runtime
/// reads it, naming the name and the plugins the binary can be; exit code 1.
pub fn refuse_unknown_plugin(name: &str, plugins: &[&str]) -> i32 {
    // A runtime sends the config on stdin: answer in its version. A person running the
    // binary by hand sets no CNI_COMMAND, and stdin is then not read (it would wait).
    let version = if std::env::var_os("CNI_COMMAND").is_some() {
        let mut stdin = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut stdin);
        serde_json::from_slice::<ConfigVersion>(&stdin).map(|c| c.cni_version).unwrap_or_else(|_| "1.1.0".into())
    } else {
        "1.1.0".into()
    };
    let error = CniError::new(
        INVALID_ENVIRONMENT,
        format!(
            "berth-cni has no plugin named {name:?}: it runs as one of {} (the file name it is run under)",
            plugins.join(", ")
        ),
    )
    .with_details("install berth-cni's plugins as links named after their CNI type (make install does)");
    println!("{}", serde_json::to_string(&error.to_json(&version)).unwrap_or_default());
    eprintln!("berth-cni: {}", error.msg);
    1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(container_id: &str, ifname: &str) -> Args {
        Args {
            command: "ADD".into(),
            container_id: container_id.into(),
            netns: "/run/netns/x".into(),
            ifname: ifname.into(),
            args: Vec::new(),
            path: Vec::new(),
        }
    }

    #[test]
    fn ids_and_interface_names_that_could_make_paths_are_refused() {
        for (id, ifname) in [("c1", "eth0"), ("a1b2_c.d-e", "net1"), ("0123456789abcdef", "x")] {
            assert!(args(id, ifname).check_attachment().is_ok(), "{id} {ifname}");
        }
        for (id, ifname) in
            [("../x", "eth0"), ("a/b", "eth0"), ("-x", "eth0"), ("c1", "../e"), ("c1", "a/b"), ("c1", "..")]
        {
            let refused = args(id, ifname).check_attachment().unwrap_err();
            assert_eq!(refused.code, INVALID_ENVIRONMENT, "{id} {ifname}");
        }
        assert!(args("c1", "sixteen-chars-xx").check_attachment().is_err());
    }
}
