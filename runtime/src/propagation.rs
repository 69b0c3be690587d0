//! Per-mount propagation (`shared`, `slave`, `private`, `unbindable` and their recursive
//! forms), which libcontainer 0.7 parses but does not apply: berth sets it in the
//! container's mount namespace after create, before the process can start.

use anyhow::{Context, Result};
use nix::mount::MsFlags;
use oci_spec::runtime::Spec;

/// The propagation flags a mount option asks for, if it is one.
fn propagation_flags(option: &str) -> Option<MsFlags> {
    Some(match option {
        "shared" => MsFlags::MS_SHARED,
        "rshared" => MsFlags::MS_SHARED | MsFlags::MS_REC,
        "slave" => MsFlags::MS_SLAVE,
        "rslave" => MsFlags::MS_SLAVE | MsFlags::MS_REC,
        "private" => MsFlags::MS_PRIVATE,
        "rprivate" => MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        "unbindable" => MsFlags::MS_UNBINDABLE,
        "runbindable" => MsFlags::MS_UNBINDABLE | MsFlags::MS_REC,
        _ => return None,
    })
}

/// Each mount's destination with the propagation changes its options ask for, in order.
fn requested(spec: &Spec) -> Vec<(String, MsFlags)> {
    let mut changes = Vec::new();
    for mount in spec.mounts().iter().flatten() {
        for option in mount.options().iter().flatten() {
            if let Some(flags) = propagation_flags(option) {
                changes.push((mount.destination().to_string_lossy().into_owned(), flags));
            }
        }
    }
    changes
}

/// Whether the spec asks for any propagation change.
pub fn wanted(spec: &Spec) -> bool {
    !requested(spec).is_empty()
}

/// Applies the spec's per-mount propagation from inside the container's mount namespace
/// (see `mount_namespace`).
pub fn apply_inside(spec: &Spec) -> Result<()> {
    for (destination, flags) in requested(spec) {
        nix::mount::mount(None::<&str>, destination.as_str(), None::<&str>, flags, None::<&str>)
            .with_context(|| format!("cannot set the propagation of mount {destination}"))?;
    }
    Ok(())
}
