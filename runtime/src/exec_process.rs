//! The process `exec` runs when given flags instead of `--process`: the container's own
//! process from its config.json (env, cwd, user, capabilities, rlimits), changed by the flags.

use std::path::Path;

use anyhow::{bail, Context, Result};
use oci_spec::runtime::{Capability, Process, Spec, UserBuilder};

use crate::cli::ExecArgs;

/// Builds the process for flag-form exec from the process in `spec` (the config.json of
/// `bundle`) and the flags.
pub fn from_flags(spec: &Spec, bundle: &Path, args: &ExecArgs) -> Result<Process> {
    let mut process =
        spec.process().clone().with_context(|| format!("config.json in {} has no process", bundle.display()))?;
    process.set_args(Some(args.command.clone()));
    process.set_terminal(Some(args.tty));
    if let Some(cwd) = &args.cwd {
        process.set_cwd(cwd.clone());
    }
    let mut env = process.env().clone().unwrap_or_default();
    for pair in &args.env {
        let Some((name, _)) = pair.split_once('=') else { bail!("invalid --env {pair:?}: use NAME=VALUE") };
        env.retain(|existing| existing.split_once('=').map(|(n, _)| n) != Some(name));
        env.push(pair.clone());
    }
    process.set_env(Some(env));
    let (uid, gid) = parse_user(args.user.as_deref())?;
    let current = process.user().clone();
    let mut user = UserBuilder::default().uid(uid.unwrap_or(current.uid())).gid(gid.unwrap_or(current.gid()));
    if !args.additional_gids.is_empty() {
        user = user.additional_gids(args.additional_gids.clone());
    } else if let Some(gids) = current.additional_gids() {
        user = user.additional_gids(gids.clone());
    }
    process.set_user(user.build()?);
    if !args.cap.is_empty() {
        let mut caps = process.capabilities().clone().unwrap_or_default();
        for name in &args.cap {
            // runc's callers name capabilities as config.json does (CAP_NET_ADMIN); oci-spec
            // parses the bare name (NET_ADMIN). Both are taken.
            let bare = name.strip_prefix("CAP_").unwrap_or(name);
            let cap: Capability = bare.parse().map_err(|_| anyhow::anyhow!("unknown capability {name:?}"))?;
            let with_cap = |set: &Option<oci_spec::runtime::Capabilities>| {
                let mut values = set.clone().unwrap_or_default();
                values.insert(cap);
                Some(values)
            };
            let (bounding, effective, permitted) =
                (with_cap(caps.bounding()), with_cap(caps.effective()), with_cap(caps.permitted()));
            caps.set_bounding(bounding).set_effective(effective).set_permitted(permitted);
        }
        process.set_capabilities(Some(caps));
    }
    if args.no_new_privs {
        process.set_no_new_privileges(Some(true));
    }
    if let Some(profile) = &args.apparmor {
        process.set_apparmor_profile(Some(profile.clone()));
    }
    if let Some(label) = &args.process_label {
        process.set_selinux_label(Some(label.clone()));
    }
    Ok(process)
}

/// `UID[:GID]`, numeric as runc takes it.
fn parse_user(user: Option<&str>) -> Result<(Option<u32>, Option<u32>)> {
    let Some(user) = user else { return Ok((None, None)) };
    let (uid, gid) = match user.split_once(':') {
        Some((uid, gid)) => (uid, Some(gid)),
        None => (user, None),
    };
    let number =
        |text: &str| text.parse::<u32>().with_context(|| format!("invalid --user {user:?}: use numeric UID[:GID]"));
    Ok((Some(number(uid)?), gid.map(number).transpose()?))
}
