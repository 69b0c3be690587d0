//! The container's seccomp profile for a process added by `exec`, as runc applies it:
//! libcontainer 0.7 gives exec'd processes a spec without the profile, so berth's executor
//! loads it, last before the exec. Loading a filter needs CAP_SYS_ADMIN unless
//! no_new_privs is set, and runc sets no no_new_privs the process did not ask for: so a
//! process without CAP_SYS_ADMIN is lent it (and CAP_SETPCAP, to give it back) for that
//! moment, and every lent capability is dropped again before the exec.

use caps::{CapSet, Capability as Cap};
use libcontainer::workload::ExecutorError;
use oci_spec::runtime::{Capabilities, Capability, LinuxCapabilities, LinuxSeccomp, Process};

/// A capability lent to the process, and the sets it was added to.
#[derive(Clone, Debug, PartialEq)]
pub struct Lent {
    capability: Cap,
    bounding: bool,
    permitted: bool,
    effective: bool,
}

/// The profile and what was lent to load it.
#[derive(Clone, Debug)]
pub struct ExecSeccomp {
    profile: LinuxSeccomp,
    lent: Vec<Lent>,
}

impl ExecSeccomp {
    /// For `process` in a container filtered by `profile`: lends the process what loading
    /// the filter needs (changing its capabilities in place).
    pub fn prepare(profile: LinuxSeccomp, process: &mut Process) -> Result<ExecSeccomp, anyhow::Error> {
        if libcontainer::seccomp::is_notify(&profile) {
            anyhow::bail!(
                "the container's seccomp profile has notify actions, which berth cannot apply to an exec'd process"
            );
        }
        let mut lent = Vec::new();
        let has_no_new_privileges = process.no_new_privileges() == Some(true);
        let mut caps = process.capabilities().clone().unwrap_or_default();
        let effective = caps.effective().clone().unwrap_or_default();
        if !has_no_new_privileges && !effective.contains(&Capability::SysAdmin) {
            // CAP_SETPCAP drops the lent capabilities from the bounding set; it is given back last.
            for (capability, spec_capability) in
                [(Cap::CAP_SYS_ADMIN, Capability::SysAdmin), (Cap::CAP_SETPCAP, Capability::Setpcap)]
            {
                if let Some(added) = lend(&mut caps, spec_capability, capability) {
                    lent.push(added);
                }
            }
            process.set_capabilities(Some(caps));
        }
        Ok(ExecSeccomp { profile, lent })
    }

    /// In the exec'd process, after capabilities were set: loads the filter, then drops what
    /// was lent.
    pub fn apply(&self) -> Result<(), ExecutorError> {
        match libcontainer::seccomp::initialize_seccomp(&self.profile) {
            Ok(None) => {}
            Ok(Some(_)) => return Err(other("the seccomp profile asked for a notify listener".into())),
            Err(e) => return Err(other(format!("cannot load the container's seccomp filter: {e}"))),
        }
        let give_back = |set: CapSet, wanted: fn(&Lent) -> bool| {
            self.lent.iter().filter(|l| wanted(l)).try_for_each(|l| {
                caps::drop(None, set, l.capability)
                    .map_err(|e| other(format!("cannot drop {} lent to load the seccomp filter: {e}", l.capability)))
            })
        };
        give_back(CapSet::Bounding, |l| l.bounding)?;
        give_back(CapSet::Effective, |l| l.effective)?;
        give_back(CapSet::Permitted, |l| l.permitted)
    }
}

/// Adds `capability` to the bounding, permitted and effective sets where it is missing.
fn lend(caps: &mut LinuxCapabilities, spec_capability: Capability, capability: Cap) -> Option<Lent> {
    let mut added = Lent { capability, bounding: false, permitted: false, effective: false };
    let add = |set: &Option<Capabilities>, flag: &mut bool| {
        let mut set = set.clone().unwrap_or_default();
        *flag = set.insert(spec_capability);
        set
    };
    let bounding = add(caps.bounding(), &mut added.bounding);
    let permitted = add(caps.permitted(), &mut added.permitted);
    let effective = add(caps.effective(), &mut added.effective);
    caps.set_bounding(Some(bounding)).set_permitted(Some(permitted)).set_effective(Some(effective));
    (added.bounding || added.permitted || added.effective).then_some(added)
}

fn other(message: String) -> ExecutorError {
    ExecutorError::Other(message)
}
