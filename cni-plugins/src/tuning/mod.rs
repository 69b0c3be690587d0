//! The tuning plugin (CNI `type` "tuning"), chained after the plugin that made the
//! interface: sets net.* sysctls of the container's namespace and the interface's MAC,
//! MTU, queue length, promiscuous and all-multicast modes; DEL puts back the MAC, MTU,
//! queue length and modes it changed, from the settings saved in `dataDir`.

mod backup;
mod config;

use serde_json::Value;

use crate::error::{CniError, CniResult, INVALID_CONFIG, IO_FAILURE};
use crate::netlink::route::{mac_text, Link, LinkSettings, RouteClient};
use crate::result::NetResult;
use crate::skel::{Args, Plugin};
use config::{sysctl_path, TuningConf};

pub struct Tuning;

fn required_prev_result(c: &TuningConf) -> CniResult<NetResult> {
    c.net.prev_result()?.ok_or_else(|| {
        CniError::new(
            INVALID_CONFIG,
            "the tuning plugin needs a prevResult: chain it after the plugin that makes the interface",
        )
    })
}

/// The container's interface, in the namespace the process is in.
fn interface(client: &mut RouteClient, ifname: &str) -> CniResult<Link> {
    client.link(ifname)?.ok_or_else(|| CniError::new(IO_FAILURE, format!("the container has no interface {ifname}")))
}

fn write_sysctls(c: &TuningConf, ifname: &str) -> CniResult<()> {
    for (key, value) in &c.sysctl {
        let path = sysctl_path(key, ifname)?;
        std::fs::write(&path, value)
            .map_err(|e| CniError::io(format!("cannot set sysctl {key} ({path}) to {value:?}"), e))?;
    }
    Ok(())
}

impl Plugin for Tuning {
    fn add(&self, args: &Args, conf: &Value) -> CniResult<NetResult> {
        let c = TuningConf::parse(conf, &args.args)?;
        let mut result = required_prev_result(&c)?;
        // Everything this plugin changes is in the container's namespace; the dataDir is a
        // file path, the same in any network namespace.
        crate::netns::enter(&args.netns)?;
        write_sysctls(&c, &args.ifname)?;
        if c.link == LinkSettings::default() {
            return Ok(result);
        }
        let mut client = RouteClient::open()?;
        let link = interface(&mut client, &args.ifname)?;
        backup::save(&backup::file(&c.data_dir, &args.container_id, &args.ifname), &link, &c.link)?;
        client.tune_link(link.index, &c.link)?;
        if let Some(mac) = c.link.mac {
            for reported in result.interfaces.iter_mut().filter(|i| i.name == args.ifname) {
                reported.mac = mac_text(&mac);
            }
        }
        Ok(result)
    }

    fn del(&self, args: &Args, conf: &Value) -> CniResult<()> {
        let c = TuningConf::parse(conf, &args.args)?;
        let path = backup::file(&c.data_dir, &args.container_id, &args.ifname);
        let Some(original) = backup::load(&path) else {
            let _ = std::fs::remove_file(&path); // an unreadable one restores nothing
            return Ok(());
        };
        // With the namespace or the interface gone there is nothing to put back, and the
        // saved settings are dropped (the reference keeps them forever then).
        if !args.netns.is_empty() && crate::netns::enter(&args.netns).is_ok() {
            let mut client = RouteClient::open()?;
            if let Some(link) = client.link(&args.ifname)? {
                client.tune_link(link.index, &original).map_err(|e| {
                    CniError::new(IO_FAILURE, format!("cannot restore {}'s original settings: {e}", args.ifname))
                })?;
            }
        }
        std::fs::remove_file(&path).map_err(|e| CniError::io(format!("cannot remove {}", path.display()), e))
    }

    fn check(&self, args: &Args, conf: &Value) -> CniResult<()> {
        let c = TuningConf::parse(conf, &args.args)?;
        required_prev_result(&c)?;
        crate::netns::enter(&args.netns)?;
        for (key, value) in &c.sysctl {
            let path = sysctl_path(key, &args.ifname)?;
            let current =
                std::fs::read_to_string(&path).map_err(|e| CniError::io(format!("cannot read sysctl {path}"), e))?;
            // The kernel prints some values with tabs ("0\t0") that configs write with spaces.
            if current.split_whitespace().ne(value.split_whitespace()) {
                return Err(CniError::new(
                    IO_FAILURE,
                    format!("sysctl {key} is {:?}, configured {value:?}", current.trim_end()),
                ));
            }
        }
        let link = interface(&mut RouteClient::open()?, &args.ifname)?;
        let wanted = &c.link;
        let differs = |what: &str, now: String, configured: String| {
            Err(CniError::new(IO_FAILURE, format!("{}'s {what} is {now}, configured {configured}", args.ifname)))
        };
        if let Some(mac) = wanted.mac.filter(|m| mac_text(m) != link.mac) {
            return differs("MAC", link.mac.clone(), mac_text(&mac));
        }
        if let Some(mtu) = wanted.mtu.filter(|m| *m != link.mtu) {
            return differs("MTU", link.mtu.to_string(), mtu.to_string());
        }
        if let Some(txqlen) = wanted.txqlen.filter(|q| *q != link.txqlen) {
            return differs("transmit queue length", link.txqlen.to_string(), txqlen.to_string());
        }
        // As the reference checks it: promiscuous exactly as configured, off when not asked for.
        if wanted.promiscuous.unwrap_or(false) != link.promiscuous {
            return differs(
                "promiscuous mode",
                link.promiscuous.to_string(),
                wanted.promiscuous.unwrap_or(false).to_string(),
            );
        }
        if let Some(allmulti) = wanted.allmulti.filter(|a| *a != link.allmulti) {
            return differs("all-multicast mode", link.allmulti.to_string(), allmulti.to_string());
        }
        Ok(())
    }

    fn gc(&self, _conf: &Value, _valid: &[(String, String)]) -> CniResult<()> {
        // Nothing outside the container's namespace but the saved settings, whose file
        // names no network: one network's GC cannot tell another's from stale ones.
        Ok(())
    }

    fn status(&self, _conf: &Value) -> CniResult<()> {
        Ok(())
    }
}
