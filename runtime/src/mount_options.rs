//! Mount options that libcontainer 0.7 does not apply as written, and berth's part in
//! them. libcontainer mounts with fsopen/fsconfig and open_tree/mount_setattr: it sets the
//! per-mount flags (`ro`, `nosuid`, `noatime`, ...) and the recursive `r*` attributes, but
//! never clears one on a bind mount (`rw`, `suid`, `dev`, `exec`, `atime`, `diratime`,
//! `nostrictatime`, `norelatime`), drops the superblock flags (`sync`, `async`, `dirsync`,
//! `mand`, `nomand`) and `remount`, ignores every other option of a bind mount, and hands
//! `tmpcopyup`, `nosymfollow`, `symfollow`, `acl`, `noacl`, `iversion`, `noiversion`,
//! `silent` and `loud` to the filesystem, which refuses them. Before create, berth checks
//! each mount's options, refuses by name those nobody can apply, and, when libcontainer must
//! not see some, gives it a copy of the spec without them (see `SpecCopy`). After create, in
//! the container's mount namespace (the rootfs pivoted, the createContainer hooks run, the
//! process not yet started), it applies the rest: copy-up, clearing flags, (no)symfollow,
//! `acl`/`noacl` checks, `remount`, and the mounts it makes itself (`OwnMount`).
//!
//! Access times: `relatime`, `noatime` and `strictatime` pick the mode; `atime`,
//! `nostrictatime` and `norelatime` leave a mount that has noatime, strictatime or relatime
//! respectively: the first two for the kernel's default (relatime), `norelatime` for
//! strictatime (every access updates atime, which is what "not relatime" means).
//!
//! `remount` changes the mount already at the destination: per-mount flags (`ro` and `rw`
//! included: the filesystem may be shared with the host, so its own read-only state is
//! left alone), recursive flags, superblock flags and filesystem options (fspick).
//!
//! `silent` and `iversion` are mount(2) flags (MS_SILENT, MS_I_VERSION) that fsconfig has
//! no key for, so a mount whose options end with them in effect is made by berth, as runc
//! makes every mount: one mount(2) call with runc's flags and data (see `OwnMount`). What
//! the kernel (6.18 here) does with them: both land in the new superblock's flags. SB_SILENT
//! only quiets a filesystem's messages while it reads its device at mount time (tmpfs, proc
//! and the other virtual filesystems print nothing either way); SB_I_VERSION turns on the
//! inode change counter (NFS, IMA), which tmpfs, ext4, xfs (v5) and btrfs enable by
//! themselves. Neither shows in mountinfo or statfs. `noiversion` and `loud` only leave the
//! flag out, which is what an fsopen mount is, and a bind mount (runc remounts it with the
//! per-mount flags alone) ignores all four, so those cases need nothing from berth.

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{Mode, SFlag};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult, Gid, Pid, Uid};
use oci_spec::runtime::{Mount, Spec};

use crate::cgroup_v1_mount;

// mount_setattr(2) attributes.
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;
const MOUNT_ATTR_NOEXEC: u64 = 0x8;
const MOUNT_ATTR_ATIME: u64 = 0x70;
const MOUNT_ATTR_RELATIME: u64 = 0x0;
const MOUNT_ATTR_NOATIME: u64 = 0x10;
const MOUNT_ATTR_STRICTATIME: u64 = 0x20;
const MOUNT_ATTR_NODIRATIME: u64 = 0x80;
const MOUNT_ATTR_NOSYMFOLLOW: u64 = 0x0020_0000;

// statfs(2) f_flags, to see what a mount has before changing it.
const ST_RDONLY: i64 = 0x1;
const ST_NOSUID: i64 = 0x2;
const ST_NODEV: i64 = 0x4;
const ST_NOEXEC: i64 = 0x8;
const ST_NOATIME: i64 = 0x400;
const ST_NODIRATIME: i64 = 0x800;
const ST_RELATIME: i64 = 0x1000;
const ST_NOSYMFOLLOW: i64 = 0x2000;

pub(crate) const TMPFS_MAGIC: i64 = 0x0102_1994;

/// Options for mount(2) flags that only mount(2) can pass (see the module's notes).
const MOUNT2_ONLY: &[&str] = &["iversion", "noiversion", "silent", "loud"];

/// The mount(2) flags runc 1.1 reads from options, in its sense: (option, flag, true = set).
/// `acl`/`noacl` are left out: berth checks them rather than passing MS_POSIXACL (which
/// would make the kernel skip the umask on a filesystem without ACLs; runc later dropped it).
const MOUNT2_FLAGS: &[(&str, libc::c_ulong, bool)] = &[
    ("ro", libc::MS_RDONLY, true),
    ("rw", libc::MS_RDONLY, false),
    ("nosuid", libc::MS_NOSUID, true),
    ("suid", libc::MS_NOSUID, false),
    ("nodev", libc::MS_NODEV, true),
    ("dev", libc::MS_NODEV, false),
    ("noexec", libc::MS_NOEXEC, true),
    ("exec", libc::MS_NOEXEC, false),
    ("sync", libc::MS_SYNCHRONOUS, true),
    ("async", libc::MS_SYNCHRONOUS, false),
    ("dirsync", libc::MS_DIRSYNC, true),
    ("mand", libc::MS_MANDLOCK, true),
    ("nomand", libc::MS_MANDLOCK, false),
    ("noatime", libc::MS_NOATIME, true),
    ("atime", libc::MS_NOATIME, false),
    ("nodiratime", libc::MS_NODIRATIME, true),
    ("diratime", libc::MS_NODIRATIME, false),
    ("relatime", libc::MS_RELATIME, true),
    ("norelatime", libc::MS_RELATIME, false),
    ("strictatime", libc::MS_STRICTATIME, true),
    ("nostrictatime", libc::MS_STRICTATIME, false),
    ("lazytime", libc::MS_LAZYTIME, true),
    ("nolazytime", libc::MS_LAZYTIME, false),
    ("nosymfollow", libc::MS_NOSYMFOLLOW, true),
    ("symfollow", libc::MS_NOSYMFOLLOW, false),
    ("iversion", libc::MS_I_VERSION, true),
    ("noiversion", libc::MS_I_VERSION, false),
    ("silent", libc::MS_SILENT, true),
    ("loud", libc::MS_SILENT, false),
];

/// Options that are neither mount(2) flags nor filesystem data for runc's mount(2) call.
const NOT_MOUNT2_DATA: &[&str] = &["defaults", "tmpcopyup", "idmap", "ridmap", "acl", "noacl"];

/// Options libcontainer applies itself, or berth's propagation module does.
const APPLIED_ELSEWHERE: &[&str] = &[
    "defaults",
    "bind",
    "rbind",
    "idmap",
    "ridmap",
    "ro",
    "nosuid",
    "nodev",
    "noexec",
    "noatime",
    "relatime",
    "strictatime",
    "nodiratime",
    "rro",
    "rrw",
    "rnosuid",
    "rsuid",
    "rnodev",
    "rdev",
    "rnoexec",
    "rexec",
    "rnodiratime",
    "rdiratime",
    "rrelatime",
    "rnoatime",
    "ratime",
    "rstrictatime",
    "rnostrictatime",
    "rnosymfollow",
    "rsymfollow",
    "shared",
    "rshared",
    "slave",
    "rslave",
    "private",
    "rprivate",
    "unbindable",
    "runbindable",
];

/// Superblock flags: given to fsconfig when the filesystem is made, or set through a
/// reconfiguration (fspick) on `remount`.
const SUPERBLOCK_FLAGS: &[&str] = &["sync", "async", "dirsync", "mand", "nomand"];

/// Per-mount attributes as options name them: (option, attribute, true = set).
const PER_MOUNT: &[(&str, u64, bool)] = &[
    ("ro", MOUNT_ATTR_RDONLY, true),
    ("rw", MOUNT_ATTR_RDONLY, false),
    ("nosuid", MOUNT_ATTR_NOSUID, true),
    ("suid", MOUNT_ATTR_NOSUID, false),
    ("nodev", MOUNT_ATTR_NODEV, true),
    ("dev", MOUNT_ATTR_NODEV, false),
    ("noexec", MOUNT_ATTR_NOEXEC, true),
    ("exec", MOUNT_ATTR_NOEXEC, false),
    ("nodiratime", MOUNT_ATTR_NODIRATIME, true),
    ("diratime", MOUNT_ATTR_NODIRATIME, false),
    ("nosymfollow", MOUNT_ATTR_NOSYMFOLLOW, true),
    ("symfollow", MOUNT_ATTR_NOSYMFOLLOW, false),
];

/// Every per-mount attribute a bind's options can set, the access-time group included.
const ALL_PER_MOUNT: u64 = MOUNT_ATTR_RDONLY
    | MOUNT_ATTR_NOSUID
    | MOUNT_ATTR_NODEV
    | MOUNT_ATTR_NOEXEC
    | MOUNT_ATTR_NODIRATIME
    | MOUNT_ATTR_NOSYMFOLLOW
    | MOUNT_ATTR_ATIME;

/// The per-mount attributes a bind made with `options` has, as runc's remount of a bind
/// leaves them: what the options set, in order, over none.
fn bind_attributes(options: &[String]) -> u64 {
    let mut attributes = 0;
    for option in options {
        if let Some(&(_, attribute, set)) = PER_MOUNT.iter().find(|(name, _, _)| name == option) {
            if set {
                attributes |= attribute;
            } else {
                attributes &= !attribute;
            }
        } else if let Some(Atime::Set(mode)) = atime_option(option) {
            attributes = (attributes & !MOUNT_ATTR_ATIME) | mode;
        }
    }
    attributes
}

/// Gives a detached tree (and its submounts) exactly the per-mount attributes `set`.
pub(crate) fn set_bind_attributes(tree: &OwnedFd, set: u64) -> std::io::Result<()> {
    // The kernel takes an access-time mode only with the whole access-time group cleared.
    mount_setattr(tree, set, (ALL_PER_MOUNT & !set) | MOUNT_ATTR_ATIME, true)
}

/// The access-time mode a mount ends with.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Atime {
    /// relatime, noatime or strictatime (a MOUNT_ATTR_* value).
    Set(u64),
    /// Leave mode `from` for `to`, only when the mount has `from`.
    Leave { from: u64, to: u64 },
}

fn atime_option(option: &str) -> Option<Atime> {
    Some(match option {
        "relatime" => Atime::Set(MOUNT_ATTR_RELATIME),
        "noatime" => Atime::Set(MOUNT_ATTR_NOATIME),
        "strictatime" => Atime::Set(MOUNT_ATTR_STRICTATIME),
        "atime" => Atime::Leave { from: MOUNT_ATTR_NOATIME, to: MOUNT_ATTR_RELATIME },
        "nostrictatime" => Atime::Leave { from: MOUNT_ATTR_STRICTATIME, to: MOUNT_ATTR_RELATIME },
        "norelatime" => Atime::Leave { from: MOUNT_ATTR_RELATIME, to: MOUNT_ATTR_STRICTATIME },
        _ => return None,
    })
}

/// What berth does to one mount after libcontainer has made it.
#[derive(Debug, Default, Clone)]
struct Fixup {
    destination: PathBuf,
    /// `tmpcopyup`: the image's content of the destination copied into the new tmpfs.
    copy_up: bool,
    /// The copied-up tmpfs root keeps the options' mode / owner rather than the image's.
    explicit_mode: bool,
    explicit_owner: bool,
    /// Per-mount attributes to set and to clear (cleared only where set).
    set: u64,
    clear: u64,
    atime: Option<Atime>,
    /// `remount` only: recursive attributes (set, clear) on the mount and its submounts.
    recursive: Option<(u64, u64)>,
    /// Superblock flags and (for `remount`) filesystem options, in order.
    superblock: Vec<String>,
    /// `acl` / `noacl`: whether the filesystem must have POSIX ACLs.
    acl: Option<bool>,
    /// The mount berth makes itself in place of the one libcontainer made there.
    own: Option<OwnMount>,
    /// A cgroup v1 mount berth makes itself (see `cgroup_v1_mount`): the per-mount
    /// attributes of its binds.
    cgroup_v1: Option<u64>,
}

/// A mount berth makes with one mount(2) call, with the flags and data runc 1.1 passes,
/// because its options need flags (MS_SILENT, MS_I_VERSION) that fsconfig cannot pass.
/// libcontainer first makes it without them, at its place among the other mounts: that
/// creates the mount point and checks the type's rules (proc only on /proc, ...). After
/// create berth unmounts that one (refused while anything is mounted below it or a process
/// uses it: the new mount would hide it) and mounts its own there.
#[derive(Debug, Clone)]
struct OwnMount {
    /// The option that makes berth mount it (for messages).
    option: &'static str,
    source: CString,
    fstype: String,
    flags: libc::c_ulong,
    data: CString,
    /// A tmpfs is mounted writable and made read-only after its copy-up, as runc does.
    read_only_after: bool,
}

impl OwnMount {
    /// The mount berth must make itself, if the options leave MS_SILENT or MS_I_VERSION set.
    fn of(mount: &Mount, options: &[String]) -> Result<Option<OwnMount>> {
        let mut flags: libc::c_ulong = 0;
        let mut data = Vec::new();
        for option in options {
            if let Some(&(_, flag, set)) = MOUNT2_FLAGS.iter().find(|(name, _, _)| name == option) {
                if set {
                    flags |= flag;
                } else {
                    flags &= !flag;
                }
            } else if !NOT_MOUNT2_DATA.contains(&option.as_str())
                && !APPLIED_ELSEWHERE.contains(&option.as_str())
                && recursive_attribute(option).is_none()
            {
                data.push(option.as_str());
            }
        }
        let option = if flags & libc::MS_SILENT != 0 {
            "silent"
        } else if flags & libc::MS_I_VERSION != 0 {
            "iversion"
        } else {
            return Ok(None);
        };
        let destination = mount.destination().display();
        let refuse = |why: &str| anyhow::anyhow!("cannot apply mount option {option:?} to mount {destination}: {why}");
        let fstype = match mount.typ().as_deref() {
            None | Some("") => {
                return Err(refuse("berth makes this mount itself with mount(2), which needs the mount's type"))
            }
            // libcontainer builds a cgroup v1 mount from a tmpfs and one mount per hierarchy.
            Some("cgroup") => {
                return Err(refuse("a cgroup mount is several mounts, which berth cannot make with one mount(2) call"))
            }
            Some(fstype) => fstype.to_string(),
        };
        let source = mount.source().as_deref().unwrap_or(Path::new(&fstype)).as_os_str().to_owned();
        let read_only_after = fstype == "tmpfs" && flags & libc::MS_RDONLY != 0;
        if read_only_after {
            flags &= !libc::MS_RDONLY;
        }
        Ok(Some(OwnMount {
            option,
            source: c_path(&source)?,
            fstype,
            flags,
            data: CString::new(data.join(","))
                .with_context(|| format!("an option of mount {destination} holds a NUL byte"))?,
            read_only_after,
        }))
    }
}

/// The mounts as libcontainer must see them, and what berth applies after create.
#[derive(Debug, Default)]
pub struct Plan {
    /// libcontainer's copy of the spec, when it must differ from the bundle's.
    rewritten: Option<Spec>,
    fixups: Vec<Fixup>,
}

fn is_bind(mount: &Mount) -> bool {
    mount.typ().as_deref() == Some("bind") || mount.options().iter().flatten().any(|o| o == "bind" || o == "rbind")
}

/// Checks every mount's options and splits them between libcontainer and berth; an option
/// neither can apply is refused, naming the mount.
pub fn plan(spec: &Spec, rootfs: &Path) -> Result<Plan> {
    let mut plan = Plan::default();
    let mut kept = Vec::new();
    let mut changed = false;
    let mounts = spec.mounts().clone().unwrap_or_default();
    let cgroup_v1_by_berth = cgroup_v1_mount::made_by_berth(spec);
    for (index, mount) in mounts.iter().enumerate() {
        let (for_libcontainer, fixup) = plan_mount(mount)?;
        if cgroup_v1_by_berth && cgroup_v1_mount::is_cgroup_mount(mount) {
            // plan_mount's refusals (options no cgroup mount can take) hold here too.
            let refusal = MadeByBerth {
                what: "make the cgroup v1".to_string(),
                remedy: "libcontainer cannot make it in a container that joins a PID namespace, so move what lies \
                         below it to another place",
            };
            check_nothing_below(spec, &mounts[index + 1..], mount, &refusal)?;
            kept.push(cgroup_v1_mount::placeholder(mount)?);
            changed = true;
            let options = mount.options().clone().unwrap_or_default();
            plan.fixups.push(Fixup {
                destination: mount.destination().to_path_buf(),
                cgroup_v1: Some(bind_attributes(&options)),
                ..Fixup::default()
            });
            continue;
        }
        if let Some(own) = fixup.as_ref().and_then(|fixup| fixup.own.as_ref()) {
            let refusal = MadeByBerth {
                what: format!("apply mount option {:?} to", own.option),
                remedy: "drop the option, or move what lies below to another place",
            };
            check_nothing_below(spec, &mounts[index + 1..], mount, &refusal)?;
        }
        changed |= for_libcontainer.as_ref() != Some(mount);
        kept.extend(for_libcontainer);
        plan.fixups.extend(fixup);
    }
    if changed {
        plan.rewritten_from(spec, rootfs).set_mounts(Some(kept));
    }
    Ok(plan)
}

/// Whether a bind mount drops `option`: everything but the per-mount flags, the atime
/// family, the recursive and propagation options and `bind`/`rbind`/`remount`.
fn ignored_on_bind(option: &str) -> bool {
    !(option == "remount"
        || APPLIED_ELSEWHERE.contains(&option)
        || MOUNT2_ONLY.contains(&option)
        || atime_option(option).is_some()
        || PER_MOUNT.iter().any(|(name, _, _)| *name == option)
        || recursive_attribute(option).is_some()
        || option == "rnorelatime")
}

fn plan_mount(mount: &Mount) -> Result<(Option<Mount>, Option<Fixup>)> {
    let destination = mount.destination();
    let options: Vec<String> = mount.options().clone().unwrap_or_default();
    let bind = is_bind(mount);
    let remount = options.iter().any(|o| o == "remount");
    let own = if bind || remount { None } else { OwnMount::of(mount, &options)? };
    let refuse = |option: &str, why: &str| -> anyhow::Error {
        anyhow::anyhow!("cannot apply mount option {option:?} to mount {}: {why}", destination.display())
    };
    let mut fixup = Fixup { destination: destination.to_path_buf(), ..Fixup::default() };
    let mut for_libcontainer = Vec::new();
    let mut atime_set_by_libcontainer = false;
    for (index, option) in options.iter().enumerate() {
        let option = option.as_str();
        if !remount && superseded_recursive(&options, index) {
            // libcontainer would keep both, e.g. rstrictatime in effect after rnostrictatime.
            continue;
        }
        if MOUNT2_ONLY.contains(&option) {
            // Never for libcontainer (fsconfig refuses the words). A bind mount ignores them,
            // and so does a remount for MS_SILENT; a new mount that needs one is `own`.
            if remount && !bind && option.ends_with("iversion") {
                return Err(refuse(
                    option,
                    "berth changes only the named flags of a mounted filesystem (fspick), and that cannot pass it",
                ));
            }
            continue;
        }
        if bind && ignored_on_bind(option) {
            // mount(2) ignores filesystem options and superblock flags with MS_BIND, and runc
            // (whose callers and the runtime-tools suite send them, e.g. `mode=755`) passes
            // them on to exactly that; libcontainer would hand them to the source's filesystem.
            continue;
        }
        if option == "acl" || option == "noacl" {
            // The filesystem decides (fsconfig cannot pass it): berth checks it holds.
            fixup.acl = Some(option == "acl");
            continue;
        }
        if option == "tmpcopyup" {
            if mount.typ().as_deref() != Some("tmpfs") || remount {
                return Err(refuse(option, "it applies only to a new tmpfs mount"));
            }
            fixup.copy_up = true;
            continue;
        }
        if SUPERBLOCK_FLAGS.contains(&option) || option == "lazytime" || option == "nolazytime" {
            if remount {
                if option == "dirsync" {
                    return Err(refuse(
                        option,
                        "the kernel sets it only when a filesystem is mounted, never on remount",
                    ));
                }
                fixup.superblock.push(option.to_string());
            } else if option.ends_with("lazytime") {
                // fsconfig takes these as filesystem options.
                for_libcontainer.push(option.to_string());
            } else {
                // libcontainer would take `sync` & co. for mount flags and drop them; as
                // `sync=` it hands them to fsconfig as a string, and the kernel reads the
                // key alone as the superblock flag, as mount(2) does.
                for_libcontainer.push(format!("{option}="));
            }
            continue;
        }
        if let Some(atime) = atime_option(option) {
            fixup.atime = Some(atime);
            atime_set_by_libcontainer = matches!(atime, Atime::Set(_)) && !remount;
            for_libcontainer.push(option.to_string());
            continue;
        }
        if let Some(&(_, attribute, set)) = PER_MOUNT.iter().find(|(name, _, _)| *name == option) {
            if set {
                fixup.set |= attribute;
                fixup.clear &= !attribute;
            } else {
                fixup.clear |= attribute;
                fixup.set &= !attribute;
            }
            // libcontainer would hand (no)symfollow to the filesystem.
            if attribute != MOUNT_ATTR_NOSYMFOLLOW {
                for_libcontainer.push(option.to_string());
            }
            continue;
        }
        if remount || own.is_some() {
            if let Some((set, clear)) = recursive_attribute(option) {
                let (all_set, all_clear) = fixup.recursive.get_or_insert((0, 0));
                *all_set = (*all_set & !clear) | set;
                *all_clear = (*all_clear & !set) | clear;
                continue;
            }
        }
        if option == "rnorelatime" {
            // libcontainer turns it into relatime, the opposite.
            for_libcontainer.push("rstrictatime".to_string());
            continue;
        }
        if option == "remount" || APPLIED_ELSEWHERE.contains(&option) {
            for_libcontainer.push(option.to_string());
            continue;
        }
        // A filesystem option: the filesystem checks it.
        if remount {
            fixup.superblock.push(option.to_string());
        } else {
            for_libcontainer.push(option.to_string());
        }
        fixup.explicit_mode |= option.starts_with("mode=");
        fixup.explicit_owner |= option.starts_with("uid=") || option.starts_with("gid=");
    }
    if remount {
        // The mount exists already: berth changes it and libcontainer must not mount anew.
        if fixup.atime.is_none()
            && fixup.set == 0
            && fixup.clear == 0
            && fixup.recursive.is_none()
            && fixup.superblock.is_empty()
            && fixup.acl.is_none()
        {
            return Ok((None, None));
        }
        return Ok((None, Some(fixup)));
    }
    // libcontainer sets every per-mount attribute but nosymfollow; berth clears and the rest.
    fixup.set &= MOUNT_ATTR_NOSYMFOLLOW;
    if atime_set_by_libcontainer {
        fixup.atime = None;
    }
    if own.is_some() {
        // mount(2) sets and clears every per-mount and superblock flag in one call.
        (fixup.set, fixup.clear, fixup.atime) = (0, 0, None);
        fixup.own = own;
    }
    let mut kept = mount.clone();
    if for_libcontainer != options {
        kept.set_options(Some(for_libcontainer));
    }
    let needed = fixup.copy_up
        || fixup.set != 0
        || fixup.clear != 0
        || fixup.atime.is_some()
        || !fixup.superblock.is_empty()
        || fixup.acl.is_some()
        || fixup.own.is_some()
        || fixup.recursive.is_some();
    Ok((Some(kept), needed.then_some(fixup)))
}

/// Why berth makes a mount itself, for refusing it where it would hide something.
struct MadeByBerth {
    /// What berth cannot do: "apply mount option \"silent\" to".
    what: String,
    remedy: &'static str,
}

/// Refuses a mount berth makes itself (after all the others, see `OwnMount` and
/// `cgroup_v1_mount`) where it would hide what the container gets later in runc's order: a
/// mount listed after it, a masked or read-only path, the devices libcontainer creates in
/// /dev, or the process's working directory (its init enters it before berth mounts).
/// Paths are compared as written; what symlinks in the image hide, the unmount in the
/// helper finds busy.
fn check_nothing_below(spec: &Spec, later: &[Mount], mount: &Mount, made: &MadeByBerth) -> Result<()> {
    let destination = lexical(mount.destination());
    let linux = spec.linux().as_ref();
    let mut hidden: Vec<(String, PathBuf)> = Vec::new();
    // A later `remount` changes whatever is mounted there then: berth's mount, as in runc.
    let later = later.iter().filter(|m| !m.options().iter().flatten().any(|o| o == "remount"));
    hidden.extend(later.map(|m| ("the mount listed after it at".to_string(), lexical(m.destination()))));
    for (what, paths) in [
        ("masked path", linux.and_then(|l| l.masked_paths().clone())),
        ("read-only path", linux.and_then(|l| l.readonly_paths().clone())),
    ] {
        hidden.extend(paths.unwrap_or_default().iter().map(|p| (what.to_string(), lexical(Path::new(p)))));
    }
    hidden.push(("the devices libcontainer creates in".to_string(), PathBuf::from("/dev")));
    if let Some(process) = spec.process() {
        hidden.push(("the process's working directory".to_string(), lexical(process.cwd())));
    }
    for (what, path) in hidden {
        if path.starts_with(&destination) {
            bail!(
                "cannot {} mount {}: berth makes this mount itself, after the container's other mounts, and it would hide {what} {}; {}",
                made.what,
                mount.destination().display(),
                path.display(),
                made.remedy
            );
        }
    }
    Ok(())
}

/// An absolute path with `.`, `..` and repeated slashes resolved as text (inside `/`).
fn lexical(path: &Path) -> PathBuf {
    let mut clean = PathBuf::from("/");
    for component in path.components() {
        match component {
            std::path::Component::Normal(name) => clean.push(name),
            std::path::Component::ParentDir => {
                clean.pop();
            }
            _ => {}
        }
    }
    clean
}

/// The attribute (or the access-time group) a recursive option changes.
fn recursive_group(option: &str) -> Option<u64> {
    let plain = option.strip_prefix('r')?;
    if let Some(&(_, attribute, _)) = PER_MOUNT.iter().find(|(name, _, _)| *name == plain) {
        return Some(attribute);
    }
    atime_option(plain).map(|_| MOUNT_ATTR_ATIME)
}

/// True when a later recursive option of the list changes the same attribute.
fn superseded_recursive(options: &[String], index: usize) -> bool {
    let Some(group) = recursive_group(&options[index]) else { return false };
    options[index + 1..].iter().any(|later| recursive_group(later) == Some(group))
}

/// The recursive form of a per-mount option, as (set, clear) attributes.
fn recursive_attribute(option: &str) -> Option<(u64, u64)> {
    let plain = option.strip_prefix('r')?;
    if let Some(&(_, attribute, set)) = PER_MOUNT.iter().find(|(name, _, _)| *name == plain) {
        return Some(if set { (attribute, 0) } else { (0, attribute) });
    }
    match atime_option(plain)? {
        Atime::Set(mode) => Some((mode, MOUNT_ATTR_ATIME)),
        Atime::Leave { to, .. } => Some((to, MOUNT_ATTR_ATIME)),
    }
}

impl Plan {
    /// The spec libcontainer must read instead of the bundle's, if any.
    pub fn rewritten(&self) -> Option<&Spec> {
        self.rewritten.as_ref()
    }

    /// Leaves `linux.mountLabel` out of libcontainer's spec: libcontainer 0.7 passes it to
    /// the tmpfs over each masked directory even where SELinux is off, and the kernel then
    /// refuses the `context=` option, failing a create that runc makes.
    pub fn drop_mount_label(&mut self, spec: &Spec, rootfs: &Path) {
        if let Some(linux) = self.rewritten_from(spec, rootfs).linux_mut() {
            linux.set_mount_label(None);
        }
    }

    /// Leaves an explicit `process.noNewPrivileges: false` out of libcontainer's spec: 0.7
    /// takes any value there as set, loads the seccomp filter only after dropping the
    /// capabilities, and fails the create ("failed to load seccomp context") that runc makes.
    pub fn unset_false_no_new_privileges(&mut self, spec: &Spec, rootfs: &Path) {
        if let Some(process) = self.rewritten_from(spec, rootfs).process_mut() {
            process.set_no_new_privileges(None);
        }
    }

    /// libcontainer's copy of the spec, made from `spec` on first use.
    fn rewritten_from(&mut self, spec: &Spec, rootfs: &Path) -> &mut Spec {
        self.rewritten.get_or_insert_with(|| {
            let mut copy = spec.clone();
            // The copy lives outside the bundle: its rootfs path must not depend on where.
            if let Some(root) = copy.root_mut() {
                root.set_path(rootfs.to_path_buf());
            }
            copy
        })
    }
}

/// A directory holding libcontainer's copy of the spec, the other entries of the bundle
/// linked beside it (hooks that run during create see it as the bundle), removed on drop.
pub struct SpecCopy {
    pub dir: PathBuf,
}

impl SpecCopy {
    /// Writes `spec` to `dir`/config.json and links the bundle's other entries there.
    pub fn write(dir: PathBuf, bundle: &Path, spec: &Spec) -> Result<SpecCopy> {
        use std::os::unix::fs::DirBuilderExt;
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let copy = SpecCopy { dir };
        spec.save(copy.dir.join("config.json"))
            .with_context(|| format!("cannot write {}/config.json", copy.dir.display()))?;
        for entry in std::fs::read_dir(bundle).with_context(|| format!("cannot read bundle {}", bundle.display()))? {
            let name = entry?.file_name();
            if name != "config.json" {
                std::os::unix::fs::symlink(bundle.join(&name), copy.dir.join(&name)).with_context(|| {
                    format!("cannot link {} into {}", bundle.join(&name).display(), copy.dir.display())
                })?;
            }
        }
        Ok(copy)
    }
}

impl Drop for SpecCopy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Plan {
    /// Whether anything is left for berth to do after create.
    pub fn has_fixups(&self) -> bool {
        !self.fixups.is_empty()
    }
}

/// What the plan needs from the host, opened before entering the container's mount
/// namespace: the cloned cgroup hierarchies of each cgroup v1 mount berth makes, in order.
pub struct HostParts {
    cgroup_v1: Vec<Vec<cgroup_v1_mount::HierarchyTree>>,
}

impl Plan {
    /// Opens on the host what the plan mounts in the container of `init`.
    pub fn open_host_parts(&self, init: Pid) -> Result<HostParts> {
        let mut cgroup_v1 = Vec::new();
        for fixup in &self.fixups {
            if let Some(attributes) = fixup.cgroup_v1 {
                cgroup_v1.push(
                    cgroup_v1_mount::open_hierarchies(init, attributes)
                        .with_context(|| format!("cannot prepare the cgroup mount {}", fixup.destination.display()))?,
                );
            }
        }
        Ok(HostParts { cgroup_v1 })
    }
}

/// Applies the plan from inside the mount namespace of `init` (see `mount_namespace`);
/// `proc` is the host's /proc and `host` what the plan opened there, before entering it.
pub fn apply_inside(plan: &Plan, proc: &OwnedFd, init: Pid, host: HostParts) -> Result<()> {
    // Copied-up entries keep the image's modes exactly.
    nix::sys::stat::umask(Mode::empty());
    let mut cgroup_v1 = host.cgroup_v1.into_iter();
    for fixup in &plan.fixups {
        if fixup.cgroup_v1.is_some() {
            let trees = cgroup_v1.next().context("the cgroup hierarchies were not opened on the host")?;
            cgroup_v1_mount::mount_inside(&fixup.destination, trees)
                .with_context(|| format!("cannot make the cgroup mount {}", fixup.destination.display()))?;
        } else {
            apply_fixup(fixup, proc, init)?;
        }
    }
    Ok(())
}

/// The host's /proc, opened before entering the container's mount namespace (whose own
/// /proc shows another pid namespace): through it the helper reads its descriptors' paths
/// and its mount table, both as the container sees them.
pub fn open_host_proc() -> Result<OwnedFd> {
    let fd = nix::fcntl::openat(None, "/proc", OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
        .context("cannot open /proc")?;
    // SAFETY: openat returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The path of an open file as the container sees it (symlinks resolved).
fn path_in_container(proc: &OwnedFd, fd: &OwnedFd) -> Result<PathBuf> {
    let link = nix::fcntl::readlinkat(Some(proc.as_raw_fd()), format!("self/fd/{}", fd.as_raw_fd()).as_str())
        .context("cannot read the path of a mount")?;
    Ok(PathBuf::from(link))
}

/// This process's mount table (the container's, once in its mount namespace).
fn mount_table(proc: &OwnedFd) -> Result<String> {
    let fd =
        nix::fcntl::openat(Some(proc.as_raw_fd()), "self/mountinfo", OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())
            .context("cannot open the mount table")?;
    let mut text = String::new();
    // SAFETY: a new descriptor that nothing else owns.
    unsafe { File::from_raw_fd(fd) }.read_to_string(&mut text).context("cannot read the mount table")?;
    Ok(text)
}

/// A path as mountinfo shows it: these bytes escaped as octal.
fn mountinfo_path(point: &Path) -> String {
    let mut shown = String::new();
    for c in point.to_string_lossy().chars() {
        match c {
            ' ' | '\t' | '\n' | '\\' => shown.push_str(&format!("\\{:03o}", c as u32)),
            c => shown.push(c),
        }
    }
    shown
}

/// True when the topmost mount at `point` covers another mount at the same place.
fn covers_a_mount(proc: &OwnedFd, point: &Path) -> Result<bool> {
    let text = mount_table(proc)?;
    let shown = mountinfo_path(point);
    let mounts: Vec<Vec<&str>> =
        text.lines().map(|line| line.split(' ').collect()).filter(|f: &Vec<&str>| f.len() > 4).collect();
    let Some(top) = mounts.iter().rev().find(|fields| fields[4] == shown) else {
        bail!("{} is not mounted", point.display())
    };
    Ok(mounts.iter().any(|fields| fields[0] == top[1] && fields[4] == shown))
}

fn apply_fixup(fixup: &Fixup, proc: &OwnedFd, init: Pid) -> Result<()> {
    let destination = &fixup.destination;
    if let Some(own) = &fixup.own {
        replace_with_own_mount(own, destination, proc, init)
            .with_context(|| format!("cannot mount {} with mount option {:?}", destination.display(), own.option))?;
    }
    let target = open_in_root(destination, libc::O_PATH)
        .with_context(|| format!("cannot open mount {} in the container", destination.display()))?;
    if fixup.copy_up {
        copy_up(&target, fixup, proc)
            .with_context(|| format!("cannot copy the image's {} into its tmpfs (tmpcopyup)", destination.display()))?;
    }
    if !fixup.superblock.is_empty() {
        reconfigure(&target, &fixup.superblock).with_context(|| {
            format!("cannot set {} on the filesystem of mount {}", fixup.superblock.join(","), destination.display())
        })?;
    }
    if let Some(wanted) = fixup.acl {
        if has_acls(&target).with_context(|| format!("cannot check POSIX ACLs on mount {}", destination.display()))?
            != wanted
        {
            let (option, why) = if wanted { ("acl", "has no POSIX ACLs") } else { ("noacl", "keeps POSIX ACLs on") };
            bail!("cannot apply mount option {option:?} to mount {}: its filesystem {why}", destination.display());
        }
    }
    let flags = mount_flags(&target)?;
    let mut set = fixup.set;
    let mut clear = 0;
    for (attribute, shown) in [
        (MOUNT_ATTR_RDONLY, ST_RDONLY),
        (MOUNT_ATTR_NOSUID, ST_NOSUID),
        (MOUNT_ATTR_NODEV, ST_NODEV),
        (MOUNT_ATTR_NOEXEC, ST_NOEXEC),
        (MOUNT_ATTR_NODIRATIME, ST_NODIRATIME),
        (MOUNT_ATTR_NOSYMFOLLOW, ST_NOSYMFOLLOW),
    ] {
        if fixup.clear & attribute != 0 && flags & shown != 0 {
            clear |= attribute;
        }
    }
    let current_atime = if flags & ST_NOATIME != 0 {
        MOUNT_ATTR_NOATIME
    } else if flags & ST_RELATIME != 0 {
        MOUNT_ATTR_RELATIME
    } else {
        MOUNT_ATTR_STRICTATIME
    };
    let atime = match fixup.atime {
        Some(Atime::Set(mode)) => Some(mode),
        Some(Atime::Leave { from, to }) if from == current_atime => Some(to),
        _ => None,
    };
    if let Some(mode) = atime {
        set |= mode;
        clear |= MOUNT_ATTR_ATIME;
    }
    if set != 0 || clear != 0 {
        mount_setattr(&target, set, clear, false)
            .with_context(|| format!("cannot change the mount flags of {}", destination.display()))?;
    }
    if let Some((set, clear)) = fixup.recursive {
        mount_setattr(&target, set, clear, true)
            .with_context(|| format!("cannot change the mount flags below {}", destination.display()))?;
    }
    if let Some(own) = fixup.own.as_ref().filter(|own| own.read_only_after) {
        // runc's read-only remount of a tmpfs: the same flags with MS_RDONLY, as a bind
        // remount, so the mount is read-only and its filesystem stays writable.
        let point = c_path(path_in_container(proc, &target)?.as_os_str())?;
        let flags = own.flags | libc::MS_RDONLY | libc::MS_REMOUNT | libc::MS_BIND;
        // SAFETY: NUL-terminated strings; the data pointer is an empty string.
        cvt(unsafe { libc::mount(c"".as_ptr(), point.as_ptr(), std::ptr::null(), flags, c"".as_ptr().cast()) }
            as libc::c_long)
        .with_context(|| format!("cannot make mount {} read-only", destination.display()))?;
    }
    Ok(())
}

/// Unmounts what libcontainer mounted at the destination without MS_SILENT or MS_I_VERSION
/// and makes the mount with them (see `OwnMount`).
fn replace_with_own_mount(own: &OwnMount, destination: &Path, proc: &OwnedFd, init: Pid) -> Result<()> {
    let placeholder = open_in_root(destination, libc::O_PATH).context("cannot open it in the container")?;
    let point = path_in_container(proc, &placeholder)?;
    drop(placeholder);
    let shown = top_mount_type(proc, &point)?;
    if shown != own.fstype {
        bail!(
            "the mount on top at {} is a {shown}, not the {} libcontainer made: a later mount lies on it",
            point.display(),
            own.fstype
        );
    }
    let point = c_path(point.as_os_str())?;
    // SAFETY: a NUL-terminated path. Without MNT_DETACH the kernel refuses a mount that has
    // mounts below it or a process inside it, which the new mount would hide.
    match cvt(unsafe { libc::umount2(point.as_ptr(), libc::UMOUNT_NOFOLLOW) } as libc::c_long) {
        Ok(_) => {}
        Err(error) if error.raw_os_error() == Some(libc::EBUSY) => bail!(
            "berth makes this mount itself, after the container's other mounts, and something is mounted below it (or the \
             container's process works in it), which it would hide; drop the option, or move what lies below to another place"
        ),
        Err(error) => return Err(error).context("cannot unmount the mount libcontainer made there"),
    }
    let fstype = c_path(OsStr::new(&own.fstype))?;
    in_container_namespaces(init, proc, || {
        // SAFETY: NUL-terminated strings that outlive the call.
        cvt(unsafe {
            libc::mount(own.source.as_ptr(), point.as_ptr(), fstype.as_ptr(), own.flags, own.data.as_ptr().cast())
        } as libc::c_long)
        .map(drop)
    })
    .context("mount(2)")
}

/// The filesystem type of the topmost mount at `point`, from the container's mount table.
fn top_mount_type(proc: &OwnedFd, point: &Path) -> Result<String> {
    let text = mount_table(proc)?;
    let shown = mountinfo_path(point);
    let top = text.lines().rfind(|line| line.split(' ').nth(4) == Some(shown.as_str()));
    let fstype = top.and_then(|line| line.split_once(" - ")).and_then(|(_, rest)| rest.split(' ').next());
    fstype.map(str::to_string).with_context(|| format!("{} is not mounted", point.display()))
}

/// Runs `work` in a grandchild that has joined the init's namespaces besides the mount
/// namespace (entered already): a proc, sysfs or mqueue mount belongs to the pid, network
/// or IPC namespace of the process that makes it, and its owner to that process's user
/// namespace. A pid namespace applies to children only, hence the second fork.
fn in_container_namespaces(init: Pid, proc: &OwnedFd, work: impl FnOnce() -> std::io::Result<()>) -> Result<()> {
    let mut enter = 0;
    for (name, flag) in [
        ("net", libc::CLONE_NEWNET),
        ("ipc", libc::CLONE_NEWIPC),
        ("cgroup", libc::CLONE_NEWCGROUP),
        ("pid", libc::CLONE_NEWPID),
        ("user", libc::CLONE_NEWUSER),
    ] {
        let stat = |path: String| nix::sys::stat::fstatat(Some(proc.as_raw_fd()), path.as_str(), AtFlags::empty());
        let (own, theirs) = (stat(format!("self/ns/{name}"))?, stat(format!("{init}/ns/{name}"))?);
        if (own.st_dev, own.st_ino) != (theirs.st_dev, theirs.st_ino) {
            enter |= flag;
        }
    }
    // SAFETY: a pid with no flags.
    let pidfd = cvt(unsafe { libc::syscall(libc::SYS_pidfd_open, init.as_raw(), 0) })
        .context("cannot open the container's init")?;
    // SAFETY: pidfd_open returned a new descriptor that nothing else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as RawFd) };
    let run = || -> std::io::Result<()> {
        if enter != 0 {
            // SAFETY: a pidfd and namespace flags; this process is single-threaded.
            cvt(unsafe { libc::setns(pidfd.as_raw_fd(), enter) } as libc::c_long)?;
        }
        if enter & libc::CLONE_NEWUSER != 0 {
            // As the container's root, as runc mounts: a new tmpfs's root is its creator's.
            let root = (Gid::from_raw(0), Uid::from_raw(0));
            nix::unistd::setresgid(root.0, root.0, root.0)
                .and_then(|()| nix::unistd::setresuid(root.1, root.1, root.1))?;
        }
        // SAFETY: the child only makes the syscalls in `work`, then _exits.
        match unsafe { fork() }? {
            ForkResult::Child => exit_with(work()),
            ForkResult::Parent { child } => match waitpid(child, None)? {
                WaitStatus::Exited(_, 0) => Ok(()),
                WaitStatus::Exited(_, code) => Err(std::io::Error::from_raw_os_error(code)),
                _ => Err(std::io::Error::other("the mounting process was killed")),
            },
        }
    };
    // SAFETY: this helper is single-threaded; the child runs `run`, then _exits.
    match unsafe { fork() }.context("cannot fork to join the container's namespaces")? {
        ForkResult::Child => exit_with(run()),
        ForkResult::Parent { child } => match waitpid(child, None).context("cannot wait for the mounting process")? {
            WaitStatus::Exited(_, 0) => Ok(()),
            WaitStatus::Exited(_, code) => Err(std::io::Error::from_raw_os_error(code).into()),
            status => bail!("the mounting process ended with {status:?}"),
        },
    }
}

/// Ends a forked child with the errno of `outcome` as exit code (0 for success).
fn exit_with(outcome: std::io::Result<()>) -> ! {
    let code = match outcome {
        Ok(()) => 0,
        Err(error) => error.raw_os_error().filter(|&errno| (1..256).contains(&errno)).unwrap_or(libc::EIO),
    };
    // SAFETY: ends the forked child without running the parent's exit handlers.
    unsafe { libc::_exit(code) }
}

pub(crate) fn cvt(result: libc::c_long) -> std::io::Result<libc::c_long> {
    if result < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(result)
    }
}

pub(crate) fn c_path(path: &OsStr) -> Result<CString> {
    CString::new(path.as_bytes()).with_context(|| format!("path {path:?} holds a NUL byte"))
}

/// Opens `path` inside the container's root (this process's root after setns): symlinks
/// resolve within it and no magic link is followed, as libcontainer resolved the mount.
pub(crate) fn open_in_root(path: &Path, flags: libc::c_int) -> Result<OwnedFd> {
    const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
    const RESOLVE_IN_ROOT: u64 = 0x10;
    let name = c_path(path.as_os_str())?;
    #[repr(C)]
    struct OpenHow {
        flags: u64,
        mode: u64,
        resolve: u64,
    }
    let how =
        OpenHow { flags: (flags | libc::O_CLOEXEC) as u64, mode: 0, resolve: RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS };
    // SAFETY: a valid path string and an open_how of the size given.
    let fd = cvt(unsafe {
        libc::syscall(
            libc::SYS_openat2,
            libc::AT_FDCWD,
            name.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    })?;
    // SAFETY: openat2 returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// The mount's flags as statvfs reports them (per-mount flags and the superblock's).
fn mount_flags(fd: &OwnedFd) -> Result<i64> {
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: fstatvfs fills the struct on success.
    cvt(unsafe { libc::fstatvfs(fd.as_raw_fd(), stat.as_mut_ptr()) } as libc::c_long)
        .context("cannot statvfs a mount")?;
    // SAFETY: initialised by the successful call.
    Ok(unsafe { stat.assume_init() }.f_flag as i64)
}

/// The filesystem type (statfs(2)'s f_type) of the mount `fd` is on.
pub(crate) fn fs_type(fd: &OwnedFd) -> Result<i64> {
    let mut stat = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: fstatfs fills the struct on success.
    cvt(unsafe { libc::fstatfs(fd.as_raw_fd(), stat.as_mut_ptr()) } as libc::c_long)
        .context("cannot statfs a mount")?;
    // SAFETY: initialised by the successful call. f_type is signed in glibc, unsigned in musl.
    Ok(unsafe { stat.assume_init() }.f_type as _)
}

fn mount_setattr(fd: &OwnedFd, set: u64, clear: u64, recursive: bool) -> std::io::Result<()> {
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    let attr = MountAttr { attr_set: set, attr_clr: clear, propagation: 0, userns_fd: 0 };
    let flags = libc::AT_EMPTY_PATH | if recursive { libc::AT_RECURSIVE } else { 0 };
    // SAFETY: an empty path on a valid descriptor and a mount_attr of the size given.
    cvt(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    })
    .map(drop)
}

/// Whether the filesystem mounted at `fd` (a directory) has POSIX ACLs: it answers for
/// the access ACL of its root, set or not, rather than not supporting it.
fn has_acls(fd: &OwnedFd) -> Result<bool> {
    let root = open_dir(fd.as_raw_fd(), OsStr::new("."))?;
    // SAFETY: a size query (no buffer) on a valid descriptor with a NUL-terminated name.
    let result =
        unsafe { libc::fgetxattr(root.as_raw_fd(), c"system.posix_acl_access".as_ptr(), std::ptr::null_mut(), 0) };
    if result >= 0 {
        return Ok(true);
    }
    match std::io::Error::last_os_error().raw_os_error() {
        Some(libc::ENODATA) => Ok(true),
        Some(libc::EOPNOTSUPP) => Ok(false),
        _ => Err(std::io::Error::last_os_error().into()),
    }
}

/// Sets superblock flags and filesystem options on the filesystem mounted at `fd`
/// (fspick, fsconfig, reconfigure): only what is named changes.
fn reconfigure(fd: &OwnedFd, options: &[String]) -> Result<()> {
    const FSPICK_CLOEXEC: libc::c_uint = 0x1;
    const FSPICK_EMPTY_PATH: libc::c_uint = 0x8;
    const FSCONFIG_SET_FLAG: libc::c_uint = 0;
    const FSCONFIG_SET_STRING: libc::c_uint = 1;
    const FSCONFIG_CMD_RECONFIGURE: libc::c_uint = 7;
    // SAFETY: an empty path on a valid descriptor.
    let context = cvt(unsafe {
        libc::syscall(libc::SYS_fspick, fd.as_raw_fd(), c"".as_ptr(), FSPICK_CLOEXEC | FSPICK_EMPTY_PATH)
    })
    .context("fspick")?;
    // SAFETY: fspick returned a new descriptor that nothing else owns.
    let context = unsafe { OwnedFd::from_raw_fd(context as RawFd) };
    for option in options {
        let (key, value) = match option.split_once('=') {
            Some((key, value)) => (key, Some(c_path(OsStr::new(value))?)),
            None => (option.as_str(), None),
        };
        let key = c_path(OsStr::new(key))?;
        let (command, value_ptr) = match &value {
            Some(value) => (FSCONFIG_SET_STRING, value.as_ptr()),
            None => (FSCONFIG_SET_FLAG, std::ptr::null()),
        };
        // SAFETY: valid strings (or null for a flag) on a filesystem context descriptor.
        cvt(unsafe { libc::syscall(libc::SYS_fsconfig, context.as_raw_fd(), command, key.as_ptr(), value_ptr, 0) })
            .with_context(|| format!("the filesystem refuses {option:?}"))?;
    }
    // SAFETY: a command on a filesystem context descriptor.
    cvt(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            context.as_raw_fd(),
            FSCONFIG_CMD_RECONFIGURE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_char>(),
            0,
        )
    })
    .context("reconfigure")?;
    Ok(())
}

/// A detached copy of the single mount at `fd` (no submounts), opened as a directory.
pub(crate) fn clone_mount(fd: RawFd, name: &CString, flags: libc::c_int) -> std::io::Result<OwnedFd> {
    const OPEN_TREE_CLONE: libc::c_int = 1;
    // SAFETY: a valid path string relative to a valid descriptor.
    let tree = cvt(unsafe {
        libc::syscall(libc::SYS_open_tree, fd, name.as_ptr(), OPEN_TREE_CLONE | libc::O_CLOEXEC | flags)
    })?;
    // SAFETY: open_tree returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(tree as RawFd) })
}

fn open_dir(dir: RawFd, name: &OsStr) -> nix::Result<OwnedFd> {
    let fd = nix::fcntl::openat(
        Some(dir),
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    // SAFETY: openat returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Copies what the image has at the destination into the tmpfs mounted over it. The
/// source is read from a copy of the mount holding the destination's parent, without its
/// submounts (so the tmpfs does not hide it and nothing mounted later leaks in); the
/// target is a copy of the tmpfs alone, made writable. Every entry is opened relative to
/// its directory without following symlinks, so nothing outside the rootfs is reached.
fn copy_up(tmpfs: &OwnedFd, fixup: &Fixup, proc: &OwnedFd) -> Result<()> {
    if fs_type(tmpfs)? != TMPFS_MAGIC {
        bail!("the mount there is not a tmpfs");
    }
    // Where libcontainer mounted it, symlinks of the image resolved (/var/run is /run).
    let destination = path_in_container(proc, tmpfs)?;
    if covers_a_mount(proc, &destination)? {
        bail!("the tmpfs at {} covers another mount; berth copies up only the image's content", destination.display());
    }
    let parent = destination.parent().context("the destination is the root")?;
    let name = destination.file_name().context("the destination has no name")?;
    let parent =
        open_in_root(parent, libc::O_PATH | libc::O_DIRECTORY).context("cannot open the destination's parent")?;
    let lower = clone_mount(parent.as_raw_fd(), &c_path(OsStr::new(""))?, libc::AT_EMPTY_PATH)
        .context("cannot clone the parent mount")?;
    let source = match open_dir(lower.as_raw_fd(), name) {
        Ok(source) => source,
        Err(nix::errno::Errno::ENOENT) => return Ok(()),
        Err(error) => return Err(error).context("the image's destination is not a directory"),
    };
    let upper = clone_mount(tmpfs.as_raw_fd(), &c_path(OsStr::new(""))?, libc::AT_EMPTY_PATH)
        .context("cannot clone the tmpfs")?;
    mount_setattr(&upper, 0, MOUNT_ATTR_RDONLY, false).context("cannot make the tmpfs copy writable")?;
    let target = open_dir(upper.as_raw_fd(), OsStr::new(".")).context("cannot open the tmpfs")?;
    copy_tree(&source, &target)?;
    let stat = nix::sys::stat::fstat(source.as_raw_fd())?;
    if !fixup.explicit_owner {
        nix::unistd::fchown(target.as_raw_fd(), Some(Uid::from_raw(stat.st_uid)), Some(Gid::from_raw(stat.st_gid)))
            .context("cannot set the tmpfs root's owner")?;
    }
    if !fixup.explicit_mode {
        nix::sys::stat::fchmod(target.as_raw_fd(), Mode::from_bits_truncate(stat.st_mode & 0o7777))
            .context("cannot set the tmpfs root's mode")?;
    }
    Ok(())
}

fn copy_tree(source: &OwnedFd, target: &OwnedFd) -> Result<()> {
    let listing = nix::dir::Dir::openat(
        Some(source.as_raw_fd()),
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let names: Vec<CString> = listing
        .into_iter()
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.file_name().to_owned())
        .filter(|name| name.as_bytes() != b"." && name.as_bytes() != b"..")
        .collect();
    for name in names {
        let shown = String::from_utf8_lossy(name.as_bytes()).into_owned();
        copy_entry(source, target, OsStr::from_bytes(name.as_bytes()))
            .with_context(|| format!("cannot copy {shown}"))?;
    }
    Ok(())
}

fn copy_entry(source: &OwnedFd, target: &OwnedFd, name: &OsStr) -> Result<()> {
    let (src, dst) = (source.as_raw_fd(), target.as_raw_fd());
    let stat = nix::sys::stat::fstatat(Some(src), name, AtFlags::AT_SYMLINK_NOFOLLOW)?;
    let kind = SFlag::from_bits_truncate(stat.st_mode & libc::S_IFMT);
    let mode = Mode::from_bits_truncate(stat.st_mode & 0o7777);
    let exists = |result: nix::Result<()>| match result {
        Err(nix::errno::Errno::EEXIST) => Ok(false),
        other => other.map(|()| true),
    };
    match kind {
        SFlag::S_IFDIR => {
            // A directory may exist already: a mount point for a later mount.
            exists(nix::sys::stat::mkdirat(Some(dst), name, Mode::from_bits_truncate(0o700)))?;
            let (from, to) = (open_dir(src, name)?, open_dir(dst, name)?);
            copy_tree(&from, &to)?;
        }
        SFlag::S_IFREG => {
            let from = nix::fcntl::openat(
                Some(src),
                name,
                OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )?;
            // SAFETY: a new descriptor that nothing else owns.
            let mut from = unsafe { File::from_raw_fd(from) };
            let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
            match nix::fcntl::openat(Some(dst), name, flags, Mode::from_bits_truncate(0o600)) {
                Ok(to) => {
                    // SAFETY: a new descriptor that nothing else owns.
                    let mut to = unsafe { File::from_raw_fd(to) };
                    std::io::copy(&mut from, &mut to)?;
                }
                // A file made as a mount point for a later mount stays as it is.
                Err(nix::errno::Errno::EEXIST) => return Ok(()),
                Err(error) => return Err(error.into()),
            }
        }
        SFlag::S_IFLNK => {
            let link = nix::fcntl::readlinkat(Some(src), name)?;
            if !exists(nix::unistd::symlinkat(link.as_os_str(), Some(dst), name))? {
                return Ok(());
            }
        }
        SFlag::S_IFCHR | SFlag::S_IFBLK | SFlag::S_IFIFO | SFlag::S_IFSOCK => {
            if !exists(nix::sys::stat::mknodat(Some(dst), name, kind, mode, stat.st_rdev))? {
                return Ok(());
            }
        }
        _ => bail!("unknown file type {:o}", stat.st_mode),
    }
    nix::unistd::fchownat(
        Some(dst),
        name,
        Some(Uid::from_raw(stat.st_uid)),
        Some(Gid::from_raw(stat.st_gid)),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )?;
    if kind != SFlag::S_IFLNK {
        // Made just now by this process and not a symlink (the nofollow form needs /proc).
        nix::sys::stat::fchmodat(Some(dst), name, mode, nix::sys::stat::FchmodatFlags::FollowSymlink)?;
    }
    let times = |sec, nsec| nix::sys::time::TimeSpec::new(sec, nsec);
    nix::sys::stat::utimensat(
        Some(dst),
        name,
        &times(stat.st_atime, stat.st_atime_nsec),
        &times(stat.st_mtime, stat.st_mtime_nsec),
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::MountBuilder;

    fn mount(typ: &str, options: &[&str]) -> Mount {
        MountBuilder::default()
            .destination("/x")
            .typ(typ)
            .source(if typ == "bind" { "/tmp" } else { typ })
            .options(options.iter().map(|o| o.to_string()).collect::<Vec<_>>())
            .build()
            .unwrap()
    }

    #[test]
    fn tmpcopyup_and_symfollow_are_kept_from_libcontainer() {
        let (kept, fixup) =
            plan_mount(&mount("tmpfs", &["rw", "nosuid", "tmpcopyup", "nosymfollow", "size=1m"])).unwrap();
        assert_eq!(kept.unwrap().options().clone().unwrap(), vec!["rw", "nosuid", "size=1m"]);
        let fixup = fixup.unwrap();
        assert!(fixup.copy_up);
        assert_eq!((fixup.set, fixup.clear), (MOUNT_ATTR_NOSYMFOLLOW, MOUNT_ATTR_RDONLY));
    }

    #[test]
    fn the_last_of_opposite_options_wins() {
        let (_, fixup) = plan_mount(&mount("bind", &["rbind", "noexec", "exec", "nosymfollow", "symfollow"])).unwrap();
        let fixup = fixup.unwrap();
        assert_eq!((fixup.set, fixup.clear), (0, MOUNT_ATTR_NOEXEC | MOUNT_ATTR_NOSYMFOLLOW));
    }

    #[test]
    fn unapplicable_options_are_refused_by_name() {
        for (typ, options, option) in [
            ("tmpfs", &["remount", "iversion"][..], "iversion"),
            ("cgroup", &["silent"][..], "silent"),
            ("proc", &["tmpcopyup"][..], "tmpcopyup"),
        ] {
            let error = plan_mount(&mount(typ, options)).unwrap_err().to_string();
            assert!(error.contains(&format!("{option:?}")) && error.contains("/x"), "{error}");
        }
    }

    #[test]
    fn a_bind_mount_drops_what_mount2_ignores_with_ms_bind() {
        let options = ["rbind", "acl", "size=1m", "sync", "tmpcopyup", "silent", "ro", "nosuid", "rprivate"];
        let (kept, _) = plan_mount(&mount("bind", &options)).unwrap();
        assert_eq!(kept.unwrap().options().clone().unwrap(), vec!["rbind", "ro", "nosuid", "rprivate"]);
    }

    #[test]
    fn silent_and_iversion_make_a_mount_berth_makes_with_runc_flags_and_data() {
        let options = [
            "ro",
            "nosuid",
            "silent",
            "size=1m",
            "mode=750",
            "sync",
            "noiversion",
            "iversion",
            "rnoexec",
            "tmpcopyup",
            "private",
        ];
        let (kept, fixup) = plan_mount(&mount("tmpfs", &options)).unwrap();
        // libcontainer makes it first, without the words fsconfig refuses.
        assert_eq!(
            kept.unwrap().options().clone().unwrap(),
            vec!["ro", "nosuid", "size=1m", "mode=750", "sync=", "private"]
        );
        let fixup = fixup.unwrap();
        let own = fixup.own.unwrap();
        assert_eq!(own.option, "silent");
        assert_eq!(own.flags, libc::MS_NOSUID | libc::MS_SILENT | libc::MS_SYNCHRONOUS | libc::MS_I_VERSION);
        assert!(own.read_only_after);
        assert_eq!(own.data.to_str().unwrap(), "size=1m,mode=750");
        assert_eq!((own.source.to_str().unwrap(), own.fstype.as_str()), ("tmpfs", "tmpfs"));
        assert_eq!(fixup.recursive, Some((MOUNT_ATTR_NOEXEC, 0)));
        assert!(fixup.copy_up);
        let own =
            plan_mount(&mount("proc", &["noexec", "iversion", "silent", "loud"])).unwrap().1.unwrap().own.unwrap();
        assert_eq!(
            (own.option, own.flags, own.read_only_after),
            ("iversion", libc::MS_NOEXEC | libc::MS_I_VERSION, false)
        );
    }

    #[test]
    fn options_that_leave_the_flags_out_or_meet_a_bind_mount_need_nothing() {
        for (typ, options) in [
            ("tmpfs", &["silent", "loud", "noiversion"][..]),
            ("bind", &["bind", "silent", "iversion", "noiversion", "loud"][..]),
            ("tmpfs", &["remount", "silent", "loud"][..]),
        ] {
            let (kept, fixup) = plan_mount(&mount(typ, options)).unwrap();
            let kept = kept.map(|m| m.options().clone().unwrap());
            assert!(
                kept.as_deref().unwrap_or_default().iter().all(|o| !MOUNT2_ONLY.contains(&o.as_str())),
                "{options:?}: {kept:?}"
            );
            assert!(fixup.is_none(), "{options:?}");
        }
    }

    #[test]
    fn a_mount_berth_makes_may_not_hide_what_comes_after_it() {
        let with = |mounts: Vec<Mount>| {
            let mut spec = Spec::default();
            spec.set_mounts(Some(mounts));
            plan(&spec, Path::new("/rootfs"))
        };
        let at = |destination: &str, typ: &str, options: &[&str]| {
            let mut mount = mount(typ, options);
            mount.set_destination(PathBuf::from(destination));
            mount
        };
        let error =
            with(vec![at("/data", "tmpfs", &["silent"]), at("/data/./x", "bind", &["bind"])]).unwrap_err().to_string();
        assert!(error.contains("\"silent\"") && error.contains("mount /data:") && error.contains("/data/x"), "{error}");
        let error = with(vec![at("/proc", "proc", &["iversion"])]).unwrap_err().to_string();
        assert!(error.contains("masked path /proc/"), "{error}");
        let error = with(vec![at("/dev", "tmpfs", &["silent"])]).unwrap_err().to_string();
        assert!(error.contains("devices libcontainer creates in /dev"), "{error}");
        // Mounts listed before it are hidden in runc too, and a later remount changes it.
        let planned = with(vec![
            at("/data/x", "tmpfs", &[]),
            at("/data", "tmpfs", &["silent"]),
            at("/data", "tmpfs", &["remount", "ro"]),
        ]);
        assert_eq!(planned.unwrap().fixups.len(), 2);
    }

    #[test]
    fn superblock_flags_reach_fsconfig_and_recursive_options_collapse() {
        let (kept, fixup) =
            plan_mount(&mount("tmpfs", &["sync", "dirsync", "lazytime", "rnoatime", "rstrictatime", "rro"])).unwrap();
        assert_eq!(
            kept.unwrap().options().clone().unwrap(),
            vec!["sync=", "dirsync=", "lazytime", "rstrictatime", "rro"]
        );
        assert!(fixup.is_none());
    }

    #[test]
    fn a_bind_has_exactly_the_per_mount_flags_its_options_leave() {
        let options = |list: &[&str]| list.iter().map(|o| o.to_string()).collect::<Vec<_>>();
        assert_eq!(
            bind_attributes(&options(&["nosuid", "noexec", "nodev", "relatime", "ro"])),
            MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC | MOUNT_ATTR_NODEV | MOUNT_ATTR_RDONLY
        );
        assert_eq!(bind_attributes(&options(&["ro", "noatime", "rw", "strictatime"])), MOUNT_ATTR_STRICTATIME);
        assert_eq!(bind_attributes(&options(&["mode=755", "rbind"])), 0);
    }

    #[test]
    fn remount_is_left_to_berth() {
        let (kept, fixup) = plan_mount(&mount("tmpfs", &["remount", "ro", "sync", "size=2m", "rnosuid"])).unwrap();
        assert!(kept.is_none());
        let fixup = fixup.unwrap();
        assert_eq!(fixup.set, MOUNT_ATTR_RDONLY);
        assert_eq!(fixup.superblock, vec!["sync", "size=2m"]);
        assert_eq!(fixup.recursive, Some((MOUNT_ATTR_NOSUID, 0)));
    }
}
