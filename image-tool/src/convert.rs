//! An image config turned into a runtime-spec `config.json` by image-spec's conversion
//! rules: args = Entrypoint + Cmd, Env verbatim, cwd from WorkingDir, User resolved in the
//! image's own `/etc/passwd` and `/etc/group` (read inside the rootfs, capped), Labels as
//! annotations over the implied ones (ExposedPorts, StopSignal), Volumes as mounts; the
//! image config and the runtime spec are oci-spec's types.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context, Result};
use oci_spec::image::ImageConfiguration;
use oci_spec::runtime::{
    get_default_namespaces, Capabilities, Capability, LinuxCapabilities, LinuxDeviceCgroupBuilder, LinuxNamespaceType,
    LinuxResourcesBuilder, RootBuilder, Spec, UserBuilder,
};
use rustix::fs::{Mode, OFlags, ResolveFlags};

/// Largest `/etc/passwd` or `/etc/group` read from an image.
const MAX_ACCOUNT_FILE: u64 = 4 << 20;

/// The process identity the image's User field names.
#[derive(Debug, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}

/// Reads `path` (absolute, inside the image) with every symlink resolved inside `rootfs`;
/// None when it does not exist.
fn read_in_root(rootfs: &Path, path: &str) -> Result<Option<String>> {
    let root = rustix::fs::open(rootfs, OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
        .with_context(|| format!("cannot open {}", rootfs.display()))?;
    let fd = match rustix::fs::openat2(
        &root,
        path.trim_start_matches('/'),
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot open the image's {path}")),
    };
    let mut text = String::new();
    std::fs::File::from(fd)
        .take(MAX_ACCOUNT_FILE + 1)
        .read_to_string(&mut text)
        .with_context(|| format!("cannot read the image's {path}"))?;
    if text.len() as u64 > MAX_ACCOUNT_FILE {
        bail!("the image's {path} is larger than {MAX_ACCOUNT_FILE} bytes; refusing to read it");
    }
    Ok(Some(text))
}

/// Resolves `user` (`name`, `uid`, `name:group`, `uid:gid`, ...: the image's User or `--user`) in the image.
pub fn resolve_user(rootfs: &Path, user: &str) -> Result<Identity> {
    if user.is_empty() {
        return Ok(Identity { uid: 0, gid: 0, additional_gids: Vec::new() });
    }
    let (user_part, group_part) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let passwd = read_in_root(rootfs, "/etc/passwd")?.unwrap_or_default();
    let groups = read_in_root(rootfs, "/etc/group")?.unwrap_or_default();
    // name:x:uid:gid:...
    let account = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 4 && (f[0] == user_part || f[2] == user_part));
    let (uid, primary, name) = match (&account, user_part.parse::<u32>()) {
        (Some(f), _) => (
            f[2].parse().context("bad uid in the image's /etc/passwd")?,
            f[3].parse().context("bad gid in the image's /etc/passwd")?,
            Some(f[0].to_string()),
        ),
        (None, Ok(uid)) => (uid, 0, None),
        (None, Err(_)) => bail!("user {user_part:?} is not in the image's /etc/passwd"),
    };
    let gid = match group_part {
        None => primary,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => groups
                .lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.len() >= 3 && f[0] == g)
                .with_context(|| format!("group {g:?} is not in the image's /etc/group"))?[2]
                .parse()
                .context("bad gid in the image's /etc/group")?,
        },
    };
    // Supplementary groups apply when the user is named and no group is forced.
    let mut additional_gids = Vec::new();
    if let (Some(name), None) = (&name, group_part) {
        for f in groups.lines().map(|l| l.split(':').collect::<Vec<_>>()).filter(|f| f.len() >= 4) {
            if f[3].split(',').any(|member| member == name) {
                if let Ok(g) = f[2].parse::<u32>() {
                    if g != gid && !additional_gids.contains(&g) {
                        additional_gids.push(g);
                    }
                }
            }
        }
    }
    Ok(Identity { uid, gid, additional_gids })
}

/// The image's Env, plus Docker's default PATH when it sets none (runc looks `args[0]`
/// up in the process's own PATH).
fn env_with_path(mut env: Vec<String>) -> Vec<String> {
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.push("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    }
    env
}

/// A Volumes path must be absolute and clean (no `.`, `..`, empty or trailing parts).
pub fn check_volume(path: &str) -> Result<()> {
    let clean =
        path.starts_with('/') && path.len() > 1 && path[1..].split('/').all(|p| !p.is_empty() && p != "." && p != "..");
    if !clean {
        bail!("the image's volume {path:?} is not an absolute, clean path; refusing the image");
    }
    Ok(())
}

/// The image's Volumes, sorted, each checked with `check_volume`.
pub fn image_volumes(image_config: &ImageConfiguration) -> Result<Vec<String>> {
    let mut paths = image_config.config().as_ref().and_then(|c| c.volumes().clone()).unwrap_or_default();
    paths.sort();
    for path in &paths {
        check_volume(path)?;
    }
    Ok(paths)
}

/// The runtime config for `image_config`: oci-spec's `Spec::default()` (runc's default spec:
/// mounts, masked and read-only paths, rlimits, no_new_privileges) with what unpack changes:
/// - process: args, env (plus a default PATH), cwd and user from the image config, no terminal,
///   and Docker's capability set (what `docker run` grants; runc's three are too few for
///   images that chown or switch users at start);
/// - root: `rootfs`, writable (the bundle's own overlay upper takes the writes);
/// - hostname: `hostname`;
/// - mounts: the default ones (`storage_options::apply` adds the volumes);
/// - annotations: the implied ones with the image's Labels over them;
/// - linux: namespaces pid, network, ipc, uts, mount (no cgroup namespace, as Docker on
///   cgroup v1 and runc 1.1's spec) and a deny-all device rule (runc's spec has it; oci-spec's
///   default list is empty).
pub fn runtime_config(image_config: &ImageConfiguration, rootfs: &Path, hostname: &str) -> Result<Spec> {
    let config = image_config.config().clone().unwrap_or_default();
    let mut args = config.entrypoint().clone().unwrap_or_default();
    args.extend(config.cmd().clone().unwrap_or_default());
    if args.is_empty() {
        bail!("the image has neither Entrypoint nor Cmd, so there is nothing to run");
    }
    let identity = resolve_user(rootfs, config.user().as_deref().unwrap_or(""))?;
    let cwd = config.working_dir().as_deref().filter(|s| !s.is_empty()).unwrap_or("/");
    let mut annotations = HashMap::new();
    let (os, architecture) = (image_config.os().to_string(), image_config.architecture().to_string());
    for (key, field) in [
        ("org.opencontainers.image.os", Some(&os)),
        ("org.opencontainers.image.architecture", Some(&architecture)),
        ("org.opencontainers.image.author", image_config.author().as_ref()),
        ("org.opencontainers.image.created", image_config.created().as_ref()),
        ("org.opencontainers.image.stopSignal", config.stop_signal().as_ref()),
    ] {
        if let Some(text) = field.filter(|s| !s.is_empty()) {
            annotations.insert(key.to_string(), text.clone());
        }
    }
    // oci-spec reads ExposedPorts and Volumes (JSON objects) in hash order; sort them as
    // the keys of the document read.
    let sorted = |keys: &Option<Vec<String>>| -> Vec<String> {
        let mut keys = keys.clone().unwrap_or_default();
        keys.sort();
        keys
    };
    let ports = sorted(config.exposed_ports());
    if !ports.is_empty() {
        annotations.insert("org.opencontainers.image.exposedPorts".into(), ports.join(","));
    }
    for (k, v) in config.labels().iter().flatten() {
        annotations.insert(k.clone(), v.clone()); // labels win over implied annotations
    }
    image_volumes(image_config)?; // a bad Volumes path refuses the image before anything is made
    let mut spec = Spec::default();
    let docker_caps: Capabilities = DOCKER_CAPS.iter().copied().collect();
    let mut capabilities = LinuxCapabilities::default();
    capabilities.set_bounding(Some(docker_caps.clone()));
    capabilities.set_effective(Some(docker_caps.clone()));
    capabilities.set_permitted(Some(docker_caps));
    capabilities.set_inheritable(None);
    capabilities.set_ambient(None);
    let mut process = spec.process().clone().unwrap_or_default();
    process.set_terminal(Some(false));
    process.set_user(
        UserBuilder::default().uid(identity.uid).gid(identity.gid).additional_gids(identity.additional_gids).build()?,
    );
    process.set_args(Some(args));
    process.set_env(Some(env_with_path(config.env().clone().unwrap_or_default())));
    process.set_cwd(cwd.into());
    process.set_capabilities(Some(capabilities));
    let mut linux = spec.linux().clone().unwrap_or_default();
    linux.set_namespaces(Some(
        get_default_namespaces().into_iter().filter(|ns| ns.typ() != LinuxNamespaceType::Cgroup).collect(),
    ));
    linux.set_resources(Some(
        LinuxResourcesBuilder::default()
            .devices(vec![LinuxDeviceCgroupBuilder::default().allow(false).access("rwm").build()?])
            .build()?,
    ));
    spec.set_process(Some(process));
    spec.set_root(Some(RootBuilder::default().path("rootfs").readonly(false).build()?));
    spec.set_hostname(Some(hostname.to_string()));
    spec.set_annotations(Some(annotations));
    spec.set_linux(Some(linux));
    Ok(spec)
}

/// The capabilities `docker run` gives a container.
const DOCKER_CAPS: &[Capability] = &[
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_is_the_default_spec_with_the_documented_changes() {
        let image: ImageConfiguration = serde_json::from_value(serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "config": {
                "Entrypoint": ["/bin/app"], "Cmd": ["--serve"], "Env": ["A=b"], "WorkingDir": "/srv",
                "Volumes": {"/var/b": {}, "/a": {}}, "ExposedPorts": {"90/udp": {}, "80/tcp": {}},
                "StopSignal": "SIGINT", "Labels": {"org.opencontainers.image.stopSignal": "SIGQUIT"}
            },
            "rootfs": {"type": "layers", "diff_ids": []}
        }))
        .unwrap();
        let spec = runtime_config(&image, Path::new("/nonexistent"), "host1").unwrap();
        let default = Spec::default();
        let process = spec.process().as_ref().unwrap();
        assert_eq!(process.args().as_ref().unwrap(), &["/bin/app", "--serve"]);
        assert_eq!(
            process.env().as_ref().unwrap(),
            &["A=b", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
        );
        assert_eq!(process.cwd(), Path::new("/srv"));
        assert_eq!(process.rlimits(), default.process().as_ref().unwrap().rlimits());
        let caps = process.capabilities().as_ref().unwrap();
        assert_eq!(caps.bounding().as_ref().unwrap().len(), DOCKER_CAPS.len());
        assert!(caps.ambient().is_none() && caps.inheritable().is_none());
        assert_eq!(spec.root().as_ref().unwrap().readonly(), Some(false));
        assert_eq!(spec.hostname().as_deref(), Some("host1"));
        assert_eq!(spec.mounts(), default.mounts());
        assert_eq!(image_volumes(&image).unwrap(), ["/a", "/var/b"]);
        let annotations = spec.annotations().as_ref().unwrap();
        assert_eq!(annotations["org.opencontainers.image.exposedPorts"], "80/tcp,90/udp");
        assert_eq!(annotations["org.opencontainers.image.stopSignal"], "SIGQUIT");
        let linux = spec.linux().as_ref().unwrap();
        assert_eq!(linux.masked_paths(), default.linux().as_ref().unwrap().masked_paths());
        assert_eq!(linux.readonly_paths(), default.linux().as_ref().unwrap().readonly_paths());
        assert!(linux.namespaces().as_ref().unwrap().iter().all(|ns| ns.typ() != LinuxNamespaceType::Cgroup));
        let devices = linux.resources().as_ref().unwrap().devices().clone().unwrap();
        assert_eq!((devices.len(), devices[0].allow(), devices[0].access().as_deref()), (1, false, Some("rwm")));
    }

    #[test]
    fn volumes_must_be_absolute_and_clean() {
        assert!(check_volume("/data").is_ok());
        assert!(check_volume("/var/lib/db").is_ok());
        for bad in ["data", "/", "/a/../b", "/a/./b", "/a//b", "/a/", ""] {
            assert!(check_volume(bad).is_err(), "{bad}");
        }
    }
}
