//! The firewall plugin's iptables backend: the reference plugin's filter-table chains and
//! rules (`CNI-FORWARD` jumped to first from `FORWARD`, the admin chain jumped to first
//! from it, two accept rules per container address; for `same-bridge`, the per-bridge
//! rules of `CNI-ISOLATION-STAGE-1/2`), with the same texts. Each operation reads the
//! table once (`iptables-save`) and writes what is missing, or present, in one
//! `iptables-restore --noflush` transaction, under a lock so that parallel ADDs do not
//! both add a shared rule.

use std::net::IpAddr;
use std::process::{Command, Stdio};

use crate::error::{CniError, CniResult, IO_FAILURE};
use crate::firewall::iptables::restore_table;
pub use crate::firewall::iptables::Family;

/// The chain holding the containers' accept rules.
pub const FORWARD_CHAIN: &str = "CNI-FORWARD";
const STAGE_1: &str = "CNI-ISOLATION-STAGE-1";
const STAGE_2: &str = "CNI-ISOLATION-STAGE-2";
const ISOLATION_NOTE: &str = "\"CNI firewall plugin rules (ingressPolicy: same-bridge)\"";

/// One rule: its chain and its matches and target, in the words `iptables-save` prints
/// them (so a rule is found in the saved table by its text).
struct Rule {
    chain: String,
    spec: String,
}

impl Rule {
    fn new(chain: &str, spec: String) -> Rule {
        Rule { chain: chain.to_string(), spec }
    }

    fn saved(&self) -> String {
        format!("-A {} {}", self.chain, self.spec)
    }
}

/// The filter table of one family as `iptables-save` printed it.
struct Saved(String);

impl Saved {
    fn read(family: Family) -> CniResult<Saved> {
        let tool = family.tool("save");
        let out = Command::new(&tool)
            .args(["-t", "filter"])
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| CniError::io(format!("cannot run {tool}"), e))?;
        if !out.status.success() {
            return Err(CniError::new(
                IO_FAILURE,
                format!("{tool} -t filter failed: {}", String::from_utf8_lossy(&out.stderr).trim()),
            ));
        }
        Ok(Saved(String::from_utf8_lossy(&out.stdout).into_owned()))
    }

    fn has_chain(&self, chain: &str) -> bool {
        let declared = format!(":{chain} ");
        self.0.lines().any(|l| l.starts_with(&declared))
    }

    fn has(&self, rule: &Rule) -> bool {
        let line = rule.saved();
        self.0.lines().any(|l| l == line)
    }
}

/// Restore lines for the filter table, built against what the table holds.
#[derive(Default)]
struct Transaction(String);

impl Transaction {
    fn ensure_chain(&mut self, saved: &Saved, chain: &str) {
        if !saved.has_chain(chain) && !self.0.contains(&format!(":{chain} - [0:0]\n")) {
            self.0.push_str(&format!(":{chain} - [0:0]\n"));
        }
    }

    /// Adds `rule` unless the table has it: first in its chain or last.
    fn ensure_rule(&mut self, saved: &Saved, rule: &Rule, first: bool) {
        if saved.has(rule) {
            return;
        }
        let line = if first {
            format!("-I {} 1 {}\n", rule.chain, rule.spec)
        } else {
            format!("-A {} {}\n", rule.chain, rule.spec)
        };
        if !self.0.contains(&line) {
            self.0.push_str(&line);
        }
    }

    fn delete_rule(&mut self, saved: &Saved, rule: &Rule) {
        if saved.has(rule) {
            self.0.push_str(&format!("-D {} {}\n", rule.chain, rule.spec));
        }
    }

    fn commit(self, family: Family) -> CniResult<()> {
        if self.0.is_empty() {
            return Ok(());
        }
        restore_table(family, "filter", &self.0)
    }
}

fn forward_jump() -> Rule {
    Rule::new("FORWARD", format!("-m comment --comment \"CNI firewall plugin rules\" -j {FORWARD_CHAIN}"))
}

fn admin_jump(admin_chain: &str) -> Rule {
    Rule::new(FORWARD_CHAIN, format!("-m comment --comment \"CNI firewall plugin admin overrides\" -j {admin_chain}"))
}

/// The two accept rules of one container address: replies to what it opened, and all it sends.
fn address_rules(address: &IpAddr) -> [Rule; 2] {
    let host = format!("{address}/{}", Family::of(address).host_prefix());
    [
        Rule::new(FORWARD_CHAIN, format!("-d {host} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT")),
        Rule::new(FORWARD_CHAIN, format!("-s {host} -j ACCEPT")),
    ]
}

/// What one operation works on: the addresses of one family; the admin chain when this
/// backend holds their accept rules (with the firewalld backend it does not); for
/// `same-bridge` the bridge whose interfaces alone may reach them.
pub struct Attachment<'a> {
    pub family: Family,
    pub addresses: Vec<IpAddr>,
    pub admin_chain: Option<&'a str>,
    pub isolated_bridge: Option<&'a str>,
}

/// Serialises this plugin's read-then-write of the filter table between parallel calls.
fn locked<T>(work: impl FnOnce() -> CniResult<T>) -> CniResult<T> {
    let path = "/run/berth-cni-firewall.lock";
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| CniError::io(format!("cannot open the firewall lock {path}"), e))?;
    // SAFETY: flock on a descriptor this process holds; released when `lock` is closed.
    if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) } != 0 {
        return Err(CniError::io(format!("cannot lock {path}"), std::io::Error::last_os_error()));
    }
    let result = work();
    drop(lock);
    result
}

/// Adds the attachment's rules and the shared chains and jumps they need.
pub fn add(a: &Attachment) -> CniResult<()> {
    locked(|| {
        let saved = Saved::read(a.family)?;
        let mut t = Transaction::default();
        if a.addresses.is_empty() {
            return Ok(());
        }
        if let Some(admin_chain) = a.admin_chain {
            t.ensure_chain(&saved, FORWARD_CHAIN);
            t.ensure_chain(&saved, admin_chain);
            t.ensure_rule(&saved, &forward_jump(), true);
            t.ensure_rule(&saved, &admin_jump(admin_chain), true);
            for rule in a.addresses.iter().flat_map(address_rules) {
                t.ensure_rule(&saved, &rule, false);
            }
        }
        if let Some(bridge) = a.isolated_bridge {
            // After the accept rules, as the reference orders them: its jump comes first in FORWARD.
            t.ensure_chain(&saved, STAGE_1);
            t.ensure_chain(&saved, STAGE_2);
            t.ensure_rule(
                &saved,
                &Rule::new("FORWARD", format!("-m comment --comment {ISOLATION_NOTE} -j {STAGE_1}")),
                true,
            );
            t.ensure_rule(
                &saved,
                &Rule::new(
                    STAGE_1,
                    format!("-i {bridge} ! -o {bridge} -m comment --comment {ISOLATION_NOTE} -j {STAGE_2}"),
                ),
                true,
            );
            t.ensure_rule(
                &saved,
                &Rule::new(STAGE_1, format!("-m comment --comment {ISOLATION_NOTE} -j RETURN")),
                false,
            );
            t.ensure_rule(
                &saved,
                &Rule::new(STAGE_2, format!("-o {bridge} -m comment --comment {ISOLATION_NOTE} -j DROP")),
                true,
            );
            t.ensure_rule(
                &saved,
                &Rule::new(STAGE_2, format!("-m comment --comment {ISOLATION_NOTE} -j RETURN")),
                false,
            );
        }
        t.commit(a.family)
    })
}

/// Removes the accept rules of `addresses` (whichever of them are there). The shared
/// chains and jumps, and the per-bridge isolation rules, stay: other containers use them.
pub fn del(family: Family, addresses: &[IpAddr]) -> CniResult<()> {
    if addresses.is_empty() {
        return Ok(());
    }
    locked(|| {
        let saved = Saved::read(family)?;
        let mut t = Transaction::default();
        for rule in addresses.iter().flat_map(address_rules) {
            t.delete_rule(&saved, &rule);
        }
        t.commit(family)
    })
}

/// Whether the attachment's rules are all in place; the first one missing otherwise.
pub fn check(a: &Attachment) -> CniResult<()> {
    let Some(admin_chain) = a.admin_chain.filter(|_| !a.addresses.is_empty()) else { return Ok(()) };
    let saved = Saved::read(a.family)?;
    let expected =
        [forward_jump(), admin_jump(admin_chain)].into_iter().chain(a.addresses.iter().flat_map(address_rules));
    for rule in expected {
        if !saved.has(&rule) {
            return Err(CniError::new(
                IO_FAILURE,
                format!("the firewall rule \"{}\" is missing from the filter table", rule.saved()),
            ));
        }
    }
    Ok(())
}
