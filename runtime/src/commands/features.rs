//! `features`: runtime-spec's features document, saying what this berth on this host supports.

use std::path::Path;

use anyhow::Result;
use serde_json::json;

/// Mount options berth applies (libcontainer, or berth's mount_options and propagation
/// modules), each checked by a test: runc 1.1's list, all 62.
const MOUNT_OPTIONS: &[&str] = &[
    "acl",
    "async",
    "atime",
    "bind",
    "defaults",
    "dev",
    "diratime",
    "dirsync",
    "exec",
    "iversion",
    "lazytime",
    "loud",
    "mand",
    "noacl",
    "noatime",
    "nodev",
    "nodiratime",
    "noexec",
    "noiversion",
    "nolazytime",
    "nomand",
    "norelatime",
    "nostrictatime",
    "nosuid",
    "nosymfollow",
    "private",
    "ratime",
    "rbind",
    "rdev",
    "rdiratime",
    "relatime",
    "remount",
    "rexec",
    "rnoatime",
    "rnodev",
    "rnodiratime",
    "rnoexec",
    "rnorelatime",
    "rnostrictatime",
    "rnosuid",
    "rnosymfollow",
    "ro",
    "rprivate",
    "rrelatime",
    "rro",
    "rrw",
    "rshared",
    "rslave",
    "rstrictatime",
    "rsuid",
    "rsymfollow",
    "runbindable",
    "rw",
    "shared",
    "silent",
    "slave",
    "strictatime",
    "suid",
    "symfollow",
    "sync",
    "tmpcopyup",
    "unbindable",
];

pub fn features(criu: Option<&Path>) -> Result<()> {
    let checkpoint = crate::checkpoint::criu_check(criu).is_ok();
    let document = json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": oci_spec::runtime::VERSION,
        "hooks": ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"],
        "mountOptions": MOUNT_OPTIONS,
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts"],
            "capabilities": grantable_capabilities(),
            "cgroup": {
                "v1": true,
                "v2": true,
                "systemd": crate::cgroups::unified_host() && Path::new("/run/systemd/system").exists(),
                "systemdUser": false,
                "rdma": false
            },
            "seccomp": {
                "enabled": true,
                "actions": ["SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD",
                    "SCMP_ACT_LOG", "SCMP_ACT_TRACE", "SCMP_ACT_TRAP"],
                "operators": ["SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_LE", "SCMP_CMP_LT", "SCMP_CMP_MASKED_EQ", "SCMP_CMP_NE"],
                "archs": ["SCMP_ARCH_X86", "SCMP_ARCH_X86_64", "SCMP_ARCH_X32", "SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]
            },
            "apparmor": {"enabled": apparmor_enabled()},
            // libcontainer 0.7 applies no SELinux labels, and berth refuses configs that ask for one.
            "selinux": {"enabled": false},
            "intelRdt": {"enabled": Path::new("/sys/fs/resctrl/schemata").exists()}
        },
        "annotations": {
            "org.opencontainers.runc.checkpoint.enabled": checkpoint.to_string(),
            "io.github.berth.version": env!("CARGO_PKG_VERSION"),
            "io.github.youki.libcontainer.version": "0.7.0"
        }
    });
    println!("{}", serde_json::to_string_pretty(&document)?);
    Ok(())
}

/// The capabilities berth can give a container: those in its own bounding set (a
/// capability the caller lacks cannot be granted, whatever the kernel knows).
fn grantable_capabilities() -> std::collections::BTreeSet<String> {
    caps::read(None, caps::CapSet::Bounding).unwrap_or_default().iter().map(|c| c.to_string()).collect()
}

fn apparmor_enabled() -> bool {
    std::fs::read_to_string("/sys/module/apparmor/parameters/enabled").map(|v| v.trim() == "Y").unwrap_or(false)
}
