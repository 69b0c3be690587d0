//! The container's root filesystem from containerd's mounts (what a snapshotter hands
//! Create): mounted on `<bundle>/rootfs` and unmounted again by the shim's own process,
//! with no helper process. Bind mounts, overlay, and overlays whose options do not fit in
//! the one page mount(2) copies (many layers), which go through fsopen/fsconfig instead.

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use containerd_shim::protos::types::mount::Mount;
use nix::mount::{mount, MsFlags};
use rustix::mount::{FsMountFlags, FsOpenFlags, MountAttrFlags, MoveMountFlags};

/// The propagation flags, applied by a mount call of their own after the mount itself.
const PROPAGATION: MsFlags =
    MsFlags::MS_SHARED.union(MsFlags::MS_PRIVATE).union(MsFlags::MS_SLAVE).union(MsFlags::MS_UNBINDABLE);

/// The flags a bind mount takes only through a remount of the new bind.
const BIND_REMOUNT: MsFlags = MsFlags::MS_RDONLY
    .union(MsFlags::MS_NOSUID)
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOEXEC)
    .union(MsFlags::MS_NOATIME)
    .union(MsFlags::MS_NODIRATIME)
    .union(MsFlags::MS_RELATIME)
    .union(MsFlags::MS_STRICTATIME);

/// A mount's options split the way the kernel takes them.
#[derive(Debug, PartialEq)]
struct Options {
    /// Flags for mount(2), propagation excluded.
    flags: MsFlags,
    /// Propagation flags (`rprivate`, `shared`, ...), applied after the mount.
    propagation: MsFlags,
    /// The filesystem's own options (`lowerdir=...`, `index=off`), in order.
    data: Vec<String>,
}

/// What a mount(2) flag option does: set or clear which flags.
fn flag_option(option: &str) -> Option<(bool, MsFlags)> {
    let set = |flags| Some((true, flags));
    let clear = |flags| Some((false, flags));
    match option {
        "defaults" => set(MsFlags::empty()),
        "ro" => set(MsFlags::MS_RDONLY),
        "rw" => clear(MsFlags::MS_RDONLY),
        "nosuid" => set(MsFlags::MS_NOSUID),
        "suid" => clear(MsFlags::MS_NOSUID),
        "nodev" => set(MsFlags::MS_NODEV),
        "dev" => clear(MsFlags::MS_NODEV),
        "noexec" => set(MsFlags::MS_NOEXEC),
        "exec" => clear(MsFlags::MS_NOEXEC),
        "sync" => set(MsFlags::MS_SYNCHRONOUS),
        "async" => clear(MsFlags::MS_SYNCHRONOUS),
        "dirsync" => set(MsFlags::MS_DIRSYNC),
        "remount" => set(MsFlags::MS_REMOUNT),
        "mand" => set(MsFlags::MS_MANDLOCK),
        "nomand" => clear(MsFlags::MS_MANDLOCK),
        "noatime" => set(MsFlags::MS_NOATIME),
        "atime" => clear(MsFlags::MS_NOATIME),
        "nodiratime" => set(MsFlags::MS_NODIRATIME),
        "diratime" => clear(MsFlags::MS_NODIRATIME),
        "relatime" => set(MsFlags::MS_RELATIME),
        "norelatime" => clear(MsFlags::MS_RELATIME),
        "strictatime" => set(MsFlags::MS_STRICTATIME),
        "nostrictatime" => clear(MsFlags::MS_STRICTATIME),
        "bind" => set(MsFlags::MS_BIND),
        "rbind" => set(MsFlags::MS_BIND | MsFlags::MS_REC),
        "private" => set(MsFlags::MS_PRIVATE),
        "rprivate" => set(MsFlags::MS_PRIVATE | MsFlags::MS_REC),
        "shared" => set(MsFlags::MS_SHARED),
        "rshared" => set(MsFlags::MS_SHARED | MsFlags::MS_REC),
        "slave" => set(MsFlags::MS_SLAVE),
        "rslave" => set(MsFlags::MS_SLAVE | MsFlags::MS_REC),
        "unbindable" => set(MsFlags::MS_UNBINDABLE),
        "runbindable" => set(MsFlags::MS_UNBINDABLE | MsFlags::MS_REC),
        _ => None,
    }
}

fn parse_options(options: &[String]) -> Options {
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    for option in options {
        match flag_option(option) {
            Some((true, f)) => flags |= f,
            Some((false, f)) => flags &= !f,
            None => data.push(option.clone()),
        }
    }
    // As containerd does: MS_REC applies to the propagation call too, and to the mount
    // itself only when that is a bind.
    let propagation =
        if flags.intersects(PROPAGATION) { flags & (PROPAGATION | MsFlags::MS_REC) } else { MsFlags::empty() };
    let mut mount_flags = flags & !PROPAGATION;
    if !mount_flags.contains(MsFlags::MS_BIND) {
        mount_flags &= !MsFlags::MS_REC;
    }
    Options { flags: mount_flags, propagation, data }
}

/// The layers of an overlay `lowerdir` value, topmost first: split at `:` not escaped
/// with a backslash, escapes removed (the form `lowerdir+` takes).
fn split_lowerdirs(value: &str) -> Vec<String> {
    let mut dirs = Vec::new();
    let mut current = String::new();
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => current.extend(chars.next()),
            ':' => dirs.push(std::mem::take(&mut current)),
            c => current.push(c),
        }
    }
    dirs.push(current);
    dirs.retain(|d| !d.is_empty());
    dirs
}

/// Whether `data` fits the page mount(2) copies, its terminating NUL included.
fn fits_one_page(data: &str) -> bool {
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE).ok().flatten().unwrap_or(4096) as usize;
    data.len() < page
}

/// Mounts `mounts` one over the other on `target`, in order. On a failure the mounts
/// already made are undone, and the error names the mount that failed.
pub fn mount_all(mounts: &[Mount], target: &Path) -> Result<(), String> {
    for (n, m) in mounts.iter().enumerate() {
        if let Err(e) = mount_one(m, target) {
            let undone = match unmount(target) {
                Ok(()) => String::new(),
                Err(u) => format!("; undoing the mounts made before it failed too: {u}"),
            };
            return Err(format!(
                "cannot mount the rootfs: {} mount {} of {} (source {}) on {}: {e}{undone}",
                if m.type_.is_empty() { "untyped" } else { m.type_.as_str() },
                n + 1,
                mounts.len(),
                m.source,
                target.display()
            ));
        }
    }
    Ok(())
}

fn mount_one(m: &Mount, target: &Path) -> Result<(), String> {
    let options = parse_options(&m.options);
    let data = options.data.join(",");
    if m.type_ == "bind" || options.flags.contains(MsFlags::MS_BIND) {
        bind(&m.source, target, &options)?;
    } else if m.type_ == "overlay" && !fits_one_page(&data) {
        overlay_by_parts(&m.source, target, &options)?;
    } else {
        if !fits_one_page(&data) {
            return Err(format!("its options ({} bytes) do not fit in one page", data.len()));
        }
        let kind = (!m.type_.is_empty()).then_some(m.type_.as_str());
        let data = (!data.is_empty()).then_some(data.as_str());
        mount(Some(m.source.as_str()), target, kind, options.flags, data).map_err(|e| e.desc().to_string())?;
    }
    set_propagation(target, options.propagation)
}

/// A bind mount; flags such as `ro` take a remount of the bind to apply.
fn bind(source: &str, target: &Path, options: &Options) -> Result<(), String> {
    let bind_flags = MsFlags::MS_BIND | (options.flags & MsFlags::MS_REC);
    mount(Some(source), target, None::<&str>, bind_flags, None::<&str>).map_err(|e| e.desc().to_string())?;
    let remount = options.flags & BIND_REMOUNT;
    if !remount.is_empty() {
        let flags = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | remount;
        mount(None::<&str>, target, None::<&str>, flags, None::<&str>)
            .map_err(|e| format!("bound, but cannot apply {remount:?}: {}", e.desc()))?;
    }
    Ok(())
}

fn set_propagation(target: &Path, propagation: MsFlags) -> Result<(), String> {
    if propagation.is_empty() {
        return Ok(());
    }
    mount(None::<&str>, target, None::<&str>, propagation, None::<&str>)
        .map_err(|e| format!("cannot set propagation {propagation:?}: {}", e.desc()))
}

/// The mount attributes fsmount takes for mount(2) flags, or the flag it has none for.
fn mount_attributes(flags: MsFlags) -> Result<MountAttrFlags, String> {
    let table = [
        (MsFlags::MS_RDONLY, MountAttrFlags::MOUNT_ATTR_RDONLY),
        (MsFlags::MS_NOSUID, MountAttrFlags::MOUNT_ATTR_NOSUID),
        (MsFlags::MS_NODEV, MountAttrFlags::MOUNT_ATTR_NODEV),
        (MsFlags::MS_NOEXEC, MountAttrFlags::MOUNT_ATTR_NOEXEC),
        (MsFlags::MS_NOATIME, MountAttrFlags::MOUNT_ATTR_NOATIME),
        (MsFlags::MS_NODIRATIME, MountAttrFlags::MOUNT_ATTR_NODIRATIME),
        (MsFlags::MS_RELATIME, MountAttrFlags::MOUNT_ATTR_RELATIME),
        (MsFlags::MS_STRICTATIME, MountAttrFlags::MOUNT_ATTR_STRICTATIME),
    ];
    let mut attributes = MountAttrFlags::empty();
    let mut left = flags;
    for (flag, attribute) in table {
        if flags.contains(flag) {
            attributes |= attribute;
            left &= !flag;
        }
    }
    if left.is_empty() {
        Ok(attributes)
    } else {
        Err(format!("its options set {left:?}, which an overlay of this many layers cannot take"))
    }
}

/// An overlay whose options exceed a page: the layers are given one at a time with
/// `lowerdir+` through the new mount API (Linux 6.8 or later), then mounted on `target`.
fn overlay_by_parts(source: &str, target: &Path, options: &Options) -> Result<(), String> {
    let attributes = mount_attributes(options.flags)?;
    let fs = rustix::mount::fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC).map_err(|e| format!("fsopen: {e}"))?;
    let with_log = |what: String, e: rustix::io::Errno| format!("{what}: {e}{}", kernel_log(&fs));
    rustix::mount::fsconfig_set_string(fs.as_fd(), "source", source)
        .map_err(|e| with_log(format!("source {source}"), e))?;
    for option in &options.data {
        match option.split_once('=') {
            Some(("lowerdir", dirs)) => {
                for dir in split_lowerdirs(dirs) {
                    rustix::mount::fsconfig_set_string(fs.as_fd(), "lowerdir+", dir.as_str())
                        .map_err(|e| with_log(format!("layer {dir} (lowerdir+; needs Linux 6.8 or later)"), e))?;
                }
            }
            Some((key, value)) => rustix::mount::fsconfig_set_string(fs.as_fd(), key, value)
                .map_err(|e| with_log(format!("option {option}"), e))?,
            None => rustix::mount::fsconfig_set_flag(fs.as_fd(), option.as_str())
                .map_err(|e| with_log(format!("option {option}"), e))?,
        }
    }
    rustix::mount::fsconfig_create(fs.as_fd()).map_err(|e| with_log("creating the overlay".to_string(), e))?;
    let mounted = rustix::mount::fsmount(fs.as_fd(), FsMountFlags::FSMOUNT_CLOEXEC, attributes)
        .map_err(|e| with_log("fsmount".to_string(), e))?;
    rustix::mount::move_mount(mounted.as_fd(), "", rustix::fs::CWD, target, MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH)
        .map_err(|e| format!("move_mount: {e}"))
}

/// The messages the kernel left on a filesystem context (why fsconfig refused), if any.
fn kernel_log(fs: &OwnedFd) -> String {
    let mut messages = Vec::new();
    let mut buffer = [0u8; 1024];
    while let Ok(n) = rustix::io::read(fs, &mut buffer) {
        if n == 0 {
            break;
        }
        messages.push(String::from_utf8_lossy(&buffer[..n]).trim().to_string());
    }
    if messages.is_empty() {
        String::new()
    } else {
        format!(" ({})", messages.join("; "))
    }
}

/// Mounts containerd's rootfs mounts (a snapshotter's overlay, say) on `<bundle>/rootfs`;
/// false when there are none (`ctr run --rootfs`: the bundle's rootfs is used as it is).
pub fn mount_bundle_rootfs(bundle: &Path, mounts: &[Mount]) -> Result<bool, String> {
    if mounts.is_empty() {
        return Ok(false);
    }
    let target = bundle.join("rootfs");
    std::fs::create_dir_all(&target).map_err(|e| format!("cannot create {}: {e}", target.display()))?;
    mount_all(mounts, &target)?;
    Ok(true)
}

/// Undoes `mount_bundle_rootfs`; a failure is logged (the container is gone either way).
pub fn unmount_bundle_rootfs(bundle: &Path) {
    if let Err(e) = unmount(&bundle.join("rootfs")) {
        log::warn!("{e}");
    }
}

/// Unmounts everything on and below `target`, deepest first. (containerd-shim's
/// `umount_recursive` runs in this process: it reads mountinfo and calls umount2, with no
/// helper and no wait on the crate's monitor.)
pub fn unmount(target: &Path) -> Result<(), String> {
    let path = target.to_str().ok_or_else(|| format!("rootfs path {} is not UTF-8", target.display()))?;
    containerd_shim::mount::umount_recursive(Some(path), 0).map_err(|e| format!("cannot unmount {path}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(options: &[&str]) -> Vec<String> {
        options.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn flags_and_filesystem_options_are_split() {
        let parsed = parse_options(&strings(&["index=off", "ro", "nosuid", "workdir=/w", "userxattr", "nodev"]));
        assert_eq!(parsed.flags, MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV);
        assert_eq!(parsed.propagation, MsFlags::empty());
        assert_eq!(parsed.data, strings(&["index=off", "workdir=/w", "userxattr"]));
    }

    #[test]
    fn a_later_option_clears_an_earlier_flag() {
        assert_eq!(parse_options(&strings(&["ro", "rw", "noexec", "exec", "nodev"])).flags, MsFlags::MS_NODEV);
    }

    #[test]
    fn rbind_keeps_rec_on_the_bind_and_propagation_goes_apart() {
        let parsed = parse_options(&strings(&["rbind", "rprivate", "ro"]));
        assert_eq!(parsed.flags, MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_RDONLY);
        assert_eq!(parsed.propagation, MsFlags::MS_PRIVATE | MsFlags::MS_REC);
        let parsed = parse_options(&strings(&["rslave"]));
        assert_eq!(parsed.flags, MsFlags::empty());
        assert_eq!(parsed.propagation, MsFlags::MS_SLAVE | MsFlags::MS_REC);
    }

    #[test]
    fn lowerdirs_split_at_unescaped_colons_topmost_first() {
        assert_eq!(split_lowerdirs("/s/3/fs:/s/2/fs:/s/1/fs"), strings(&["/s/3/fs", "/s/2/fs", "/s/1/fs"]));
        assert_eq!(split_lowerdirs("/a\\:b:/c\\\\d"), strings(&["/a:b", "/c\\d"]));
        assert_eq!(split_lowerdirs("/only"), strings(&["/only"]));
    }

    #[test]
    fn only_options_shorter_than_a_page_go_to_mount2() {
        assert!(fits_one_page(&"x".repeat(4095)));
        assert!(!fits_one_page(&"x".repeat(4096)));
    }

    #[test]
    fn flags_map_onto_mount_attributes_or_are_refused() {
        assert_eq!(
            mount_attributes(MsFlags::MS_RDONLY | MsFlags::MS_NODEV),
            Ok(MountAttrFlags::MOUNT_ATTR_RDONLY | MountAttrFlags::MOUNT_ATTR_NODEV)
        );
        assert!(mount_attributes(MsFlags::MS_SYNCHRONOUS).unwrap_err().contains("MS_SYNCHRONOUS"));
    }
}
