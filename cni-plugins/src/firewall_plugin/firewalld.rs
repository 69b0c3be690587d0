//! The firewall plugin's firewalld backend: a container's addresses become sources of a
//! firewalld zone (`trusted` unless `firewalldZone` says otherwise), through `firewall-cmd`
//! (installed with firewalld) rather than a D-Bus client of berth's own.

use std::net::IpAddr;
use std::process::{Command, Stdio};

use crate::error::{CniError, CniResult, IO_FAILURE};

/// firewalld's pid file.
const PID_FILE: &str = "/run/firewalld.pid";

/// Whether firewalld runs: its pid file names a live process called firewalld. (Read from
/// /proc, so that choosing a backend costs no process and no D-Bus round trip per ADD.)
pub fn running() -> bool {
    let Ok(pid) = std::fs::read_to_string(PID_FILE) else { return false };
    std::fs::read_to_string(format!("/proc/{}/comm", pid.trim())).is_ok_and(|comm| comm.trim().starts_with("firewalld"))
}

fn source(address: &IpAddr) -> String {
    format!("{address}/{}", if address.is_ipv4() { 32 } else { 128 })
}

/// Runs `firewall-cmd --zone=ZONE --OPERATION-source=ADDRESS`; its exit code and output.
fn firewall_cmd(zone: &str, operation: &str, address: &IpAddr) -> CniResult<(bool, String)> {
    let out = Command::new("firewall-cmd")
        .arg(format!("--zone={zone}"))
        .arg(format!("--{operation}-source={}", source(address)))
        .stdin(Stdio::null())
        .output()
        .map_err(|e| CniError::io("cannot run firewall-cmd (firewalld's command, installed with it)", e))?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    Ok((out.status.success(), text.trim().to_string()))
}

/// Adds `addresses` to `zone`; an address already in a zone is left there, as the
/// reference plugin leaves it.
pub fn add(zone: &str, addresses: &[IpAddr]) -> CniResult<()> {
    for address in addresses {
        let (added, text) = firewall_cmd(zone, "add", address)?;
        if !added && !text.contains("ZONE_ALREADY_SET") {
            return Err(CniError::new(
                IO_FAILURE,
                format!("cannot add {} to firewalld zone {zone}: {text}", source(address)),
            ));
        }
    }
    Ok(())
}

/// Removes `addresses` from `zone`, best effort: with firewalld stopped there is nothing
/// of its to remove.
pub fn del(zone: &str, addresses: &[IpAddr]) {
    if !running() {
        return;
    }
    for address in addresses {
        let _ = firewall_cmd(zone, "remove", address);
    }
}

pub fn check(zone: &str, addresses: &[IpAddr]) -> CniResult<()> {
    for address in addresses {
        if !firewall_cmd(zone, "query", address)?.0 {
            return Err(CniError::new(
                IO_FAILURE,
                format!("{} is not a source of firewalld zone {zone}", source(address)),
            ));
        }
    }
    Ok(())
}
