//! Running a conflist's plugins as libcni (and cnitool) runs them: ADD in order with each
//! plugin's result passed to the next as `prevResult`, DEL in reverse with the cached ADD
//! result, CHECK in order; `runtimeConfig` keys go only to plugins whose `capabilities`
//! declare them. Plugins are found in one bin directory by their `type`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::{Map, Value};

use crate::error::CniError;
use crate::exec::run_plugin;
use crate::skel::Args;

/// One attachment of a container to a network, as the chain's calls see it.
pub struct Attachment<'a> {
    pub container_id: &'a str,
    /// The namespace's path; empty for a DEL whose namespace is gone.
    pub netns: &'a str,
    pub ifname: &'a str,
    /// `runtimeConfig` offered to the plugins (e.g. `portMappings`), by capability.
    pub runtime_config: &'a Map<String, Value>,
}

/// A conflist and the directory holding its plugins.
pub struct Chain<'a> {
    pub conflist: &'a Value,
    pub bin_dir: &'a Path,
}

impl Chain<'_> {
    fn name(&self) -> &str {
        self.conflist["name"].as_str().unwrap_or_default()
    }

    fn version(&self) -> &str {
        self.conflist["cniVersion"].as_str().unwrap_or("1.0.0")
    }

    fn plugins(&self) -> Result<&Vec<Value>> {
        match self.conflist["plugins"].as_array() {
            Some(plugins) if !plugins.is_empty() => Ok(plugins),
            _ => bail!("network {:?}: its conflist has no plugins", self.name()),
        }
    }

    /// One plugin's config as libcni builds it: the plugin's own keys, the network's name
    /// and version, the previous result, and the runtimeConfig its capabilities ask for.
    fn plugin_config(&self, plugin: &Value, prev_result: Option<&Value>, attachment: &Attachment) -> Value {
        let mut conf = plugin.clone();
        conf["name"] = self.name().into();
        conf["cniVersion"] = self.version().into();
        if let Some(prev) = prev_result {
            conf["prevResult"] = prev.clone();
        }
        let wanted: Map<String, Value> = plugin["capabilities"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(_, on)| on.as_bool() == Some(true))
            .filter_map(|(cap, _)| attachment.runtime_config.get(cap).map(|v| (cap.clone(), v.clone())))
            .collect();
        if !wanted.is_empty() {
            conf["runtimeConfig"] = Value::Object(wanted);
        }
        conf
    }

    /// Runs one plugin; its printed result on success, its CNI error as the failure.
    fn invoke(&self, command: &str, plugin: &Value, conf: &Value, attachment: &Attachment) -> Result<Value> {
        let kind = plugin["type"].as_str().unwrap_or_default();
        if kind.is_empty() || kind.contains('/') {
            bail!("network {:?}: a plugin has no valid \"type\": {plugin}", self.name());
        }
        let binary: PathBuf = self.bin_dir.join(kind);
        if !binary.exists() {
            bail!("network {:?}: plugin {kind} is not in {} (give --bin-dir)", self.name(), self.bin_dir.display());
        }
        let args = Args {
            command: command.into(),
            container_id: attachment.container_id.into(),
            netns: attachment.netns.into(),
            ifname: attachment.ifname.into(),
            args: Vec::new(),
            path: vec![self.bin_dir.display().to_string()],
        };
        let (code, out) =
            run_plugin(&binary, &args, conf).with_context(|| format!("cannot run plugin {}", binary.display()))?;
        if code != 0 {
            let why = serde_json::from_value::<CniError>(out.clone()).map(|e| e.to_string()).unwrap_or(out.to_string());
            bail!("network {:?}: plugin {kind} failed {command} of {}: {why}", self.name(), attachment.container_id);
        }
        Ok(out)
    }

    /// ADD through every plugin; the last plugin's result. A failed ADD is undone (DEL
    /// through the plugins already run, with what they returned) before its error returns.
    pub fn add(&self, attachment: &Attachment) -> Result<Value> {
        let plugins = self.plugins()?;
        let mut result: Option<Value> = None;
        for (done, plugin) in plugins.iter().enumerate() {
            let conf = self.plugin_config(plugin, result.as_ref(), attachment);
            match self.invoke("ADD", plugin, &conf, attachment) {
                // A plugin that prints nothing passes the previous result on.
                Ok(Value::Null) => {}
                Ok(out) => result = Some(out),
                Err(e) => {
                    for undone in plugins[..=done].iter().rev() {
                        let conf = self.plugin_config(undone, result.as_ref(), attachment);
                        let _ = self.invoke("DEL", undone, &conf, attachment);
                    }
                    return Err(e);
                }
            }
        }
        result.with_context(|| format!("network {:?}: its plugins returned no result", self.name()))
    }

    /// DEL through every plugin in reverse order with the cached ADD result (if any). Best
    /// effort: every plugin is called; the first failure is returned.
    pub fn del(&self, attachment: &Attachment, cached: Option<&Value>) -> Result<()> {
        let mut first_failure = None;
        for plugin in self.plugins()?.iter().rev() {
            let conf = self.plugin_config(plugin, cached, attachment);
            if let Err(e) = self.invoke("DEL", plugin, &conf, attachment) {
                first_failure.get_or_insert(e);
            }
        }
        first_failure.map_or(Ok(()), Err)
    }

    /// CHECK through every plugin in order with the cached ADD result.
    pub fn check(&self, attachment: &Attachment, cached: &Value) -> Result<()> {
        for plugin in self.plugins()? {
            let conf = self.plugin_config(plugin, Some(cached), attachment);
            self.invoke("CHECK", plugin, &conf, attachment)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn runtime_config_reaches_only_plugins_declaring_the_capability() {
        let conflist = json!({ "cniVersion": "1.0.0", "name": "n", "plugins": [] });
        let chain = Chain { conflist: &conflist, bin_dir: Path::new("/nonexistent") };
        let runtime =
            json!({ "portMappings": [{ "hostPort": 8080, "containerPort": 80, "protocol": "tcp" }], "aliases": ["x"] });
        let attachment =
            Attachment { container_id: "c", netns: "", ifname: "eth0", runtime_config: runtime.as_object().unwrap() };
        let portmap = json!({ "type": "portmap", "capabilities": { "portMappings": true, "ips": false } });
        let conf = chain.plugin_config(&portmap, Some(&json!({ "ips": [] })), &attachment);
        assert_eq!(conf["runtimeConfig"], json!({ "portMappings": runtime["portMappings"] }));
        assert_eq!(
            (&conf["name"], &conf["cniVersion"], &conf["prevResult"]),
            (&json!("n"), &json!("1.0.0"), &json!({ "ips": [] }))
        );
        let declined = json!({ "type": "portmap", "capabilities": { "portMappings": false } });
        assert!(chain.plugin_config(&declined, None, &attachment).get("runtimeConfig").is_none());
        let tuning = json!({ "type": "tuning" });
        let conf = chain.plugin_config(&tuning, None, &attachment);
        assert!(conf.get("runtimeConfig").is_none() && conf.get("prevResult").is_none(), "{conf}");
    }
}
