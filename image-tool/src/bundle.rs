//! Bundles: `rootfs/` an overlay of the image's shared read-only layers under the bundle's
//! own `upper/` and `work/`, `config.json` from the image config and `unpack`'s options,
//! the init layer's `hostname`, `hosts` and `resolv.conf`, and the store's record of every
//! bundle (`bundles.json`: its image, layers and volumes), which gc, df and the volume
//! commands read; `release` undoes all of it but the volumes (its anonymous ones too with
//! `--volumes`).

use std::collections::BTreeMap;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rustix::mount::{FsMountFlags, FsOpenFlags, MountAttrFlags, MoveMountFlags};
use serde::{Deserialize, Serialize};

use crate::convert;
use crate::extract::Limits;
use crate::image::{self, chain_ids};
use crate::in_use;
use crate::layers;
use crate::run_options::{init_layer, RunOptions};
use crate::storage_options::{self, Attached, Request};
use crate::store::{Locked, Store};
use crate::volumes;
use oci_spec::image::Platform;

/// What the store remembers of a bundle.
#[derive(Serialize, Deserialize, Clone, Debug)]
#[serde(rename_all = "camelCase")]
pub struct BundleRecord {
    pub image: String,
    pub manifest: String,
    pub chain_ids: Vec<String>,
    /// Every volume of the store the bundle mounts: they are in use while it exists.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<String>,
    /// The anonymous volumes made for it, which `release --volumes` removes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub anonymous_volumes: Vec<String>,
}

/// The bundles the store has made, by absolute path.
pub fn records(store: &Store) -> Result<BTreeMap<String, BundleRecord>> {
    let path = store.root().join("bundles.json");
    match std::fs::read(&path) {
        Ok(data) => serde_json::from_slice(&data).with_context(|| format!("{} is corrupt", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

fn write_records(locked: &Locked<'_>, records: &BTreeMap<String, BundleRecord>) -> Result<()> {
    let tmp = locked.staging("bundles.json");
    std::fs::write(&tmp, serde_json::to_vec_pretty(records)?)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, locked.store().root().join("bundles.json")).context("cannot update the store's bundles.json")
}

/// The bundle's absolute path, which names it in the store.
fn bundle_key(bundle: &Path) -> Result<PathBuf> {
    let parent = bundle.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = bundle.file_name().with_context(|| format!("{} names no bundle directory", bundle.display()))?;
    Ok(std::fs::canonicalize(parent)
        .with_context(|| format!("the bundle's parent {} does not exist", parent.display()))?
        .join(name))
}

/// Makes `bundle` from image `name`: layers extracted if needed, overlay mounted, config
/// written. On failure nothing of the bundle is left.
pub fn unpack(
    store: &Store,
    name: &str,
    bundle: &Path,
    platform: Option<&Platform>,
    limits: Limits,
    options: &RunOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<()> {
    // Parsed before anything is made, so bad storage options leave nothing.
    let storage = options.storage.requests()?;
    let locked = store.lock()?;
    let key = bundle_key(bundle)?;
    if key.exists() && std::fs::read_dir(&key).map(|mut d| d.next().is_some()).unwrap_or(true) {
        bail!("bundle directory {} already exists and is not empty; release it or choose another", key.display());
    }
    let image = image::load(store, name, platform)?;
    let lowers = layers::ensure(&locked, &image, limits, progress)?;
    let created_dir = !key.exists();
    let attached = match make(&locked, &key, &image, &lowers, options, &storage) {
        Ok(attached) => attached,
        Err(e) => {
            let _ = undo(&key, created_dir);
            return Err(e);
        }
    };
    let mut all = records(store)?;
    all.insert(
        key.display().to_string(),
        BundleRecord {
            image: name.to_string(),
            manifest: image.manifest.to_string(),
            chain_ids: chain_ids(&image.diff_ids).iter().map(|c| c.to_string()).collect(),
            volumes: attached.volumes.clone(),
            anonymous_volumes: attached.anonymous.clone(),
        },
    );
    let written = write_records(&locked, &all);
    if written.is_err() {
        attached.undo(&locked);
        let _ = undo(&key, created_dir);
    }
    written
}

fn make(
    locked: &Locked<'_>,
    bundle: &Path,
    image: &image::Image,
    lowers: &[PathBuf],
    options: &RunOptions,
    storage: &[Request],
) -> Result<Attached> {
    for dir in ["upper", "work", "rootfs"] {
        std::fs::create_dir_all(bundle.join(dir))
            .with_context(|| format!("cannot create {}", bundle.join(dir).display()))?;
    }
    mount_overlay(&bundle.join("rootfs"), lowers, &bundle.join("upper"), &bundle.join("work"))?;
    let hostname: String = image.manifest.hex().chars().take(12).collect();
    let rootfs = bundle.join("rootfs");
    let mut image_config = image.config.clone();
    options.process.merge_into(&mut image_config)?;
    let mut spec = convert::runtime_config(&image_config, &rootfs, &hostname)?;
    options.process.apply(&mut spec);
    options.resources.apply(&mut spec)?;
    // Everything that can refuse the options comes before volumes are made or filled.
    let name = options.init_layer.name(bundle)?;
    let network = options.network.apply(&mut spec, bundle, &name)?;
    options.init_layer.check(&network)?;
    let image_volumes = convert::image_volumes(&image.config)?;
    let attached = storage_options::apply(locked, &mut spec, &rootfs, storage, &image_volumes)?;
    if let Err(e) = options.init_layer.write(bundle, &mut spec, &hostname, &name, &network) {
        attached.undo(locked);
        return Err(e);
    }
    let config = bundle.join("config.json");
    let written = serde_json::to_vec_pretty(&spec)
        .map_err(anyhow::Error::from)
        .and_then(|json| std::fs::write(&config, json).with_context(|| format!("cannot write {}", config.display())));
    if let Err(e) = written {
        attached.undo(locked);
        return Err(e);
    }
    Ok(attached)
}

/// Mounts overlay on `target` with the new mount API, one `lowerdir+` per layer (topmost
/// first), so no option string limits how many layers stack.
fn mount_overlay(target: &Path, lowers: &[PathBuf], upper: &Path, work: &Path) -> Result<()> {
    let context = "cannot mount the overlay rootfs";
    let fs = rustix::mount::fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC).context(context)?;
    for lower in lowers.iter().rev() {
        rustix::mount::fsconfig_set_string(fs.as_fd(), "lowerdir+", lower.as_path())
            .with_context(|| format!("{context}: layer {}", lower.display()))?;
    }
    rustix::mount::fsconfig_set_string(fs.as_fd(), "upperdir", upper).context(context)?;
    rustix::mount::fsconfig_set_string(fs.as_fd(), "workdir", work).context(context)?;
    // Nothing in a layer may steer the mount: no index, no metacopy, no redirects.
    for (key, value) in [("index", "off"), ("metacopy", "off"), ("redirect_dir", "off")] {
        rustix::mount::fsconfig_set_string(fs.as_fd(), key, value)
            .with_context(|| format!("{context}: {key}={value}"))?;
    }
    rustix::mount::fsconfig_create(fs.as_fd()).with_context(|| format!("{context} ({} layers)", lowers.len()))?;
    let mount =
        rustix::mount::fsmount(fs.as_fd(), FsMountFlags::FSMOUNT_CLOEXEC, MountAttrFlags::empty()).context(context)?;
    rustix::mount::move_mount(mount.as_fd(), "", rustix::fs::CWD, target, MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH)
        .with_context(|| format!("{context} on {}", target.display()))?;
    Ok(())
}

/// Unmounts the rootfs and removes what unpack made inside the bundle (and the bundle
/// directory itself when unpack created it or it is then empty).
fn undo(bundle: &Path, remove_dir: bool) -> Result<()> {
    let rootfs = bundle.join("rootfs");
    if is_mount_point(&rootfs) {
        rustix::mount::unmount(&rootfs, rustix::mount::UnmountFlags::DETACH)
            .with_context(|| format!("cannot unmount {}", rootfs.display()))?;
    }
    // `volumes/`: where bundles made before the store kept volumes held the image's VOLUMEs.
    for entry in ["rootfs", "upper", "work", "volumes"] {
        let path = bundle.join(entry);
        if path.exists() {
            std::fs::remove_dir_all(&path).with_context(|| format!("cannot remove {}", path.display()))?;
        }
    }
    for file in std::iter::once("config.json").chain(init_layer::file_names()) {
        let path = bundle.join(file);
        if path.exists() {
            std::fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
        }
    }
    if remove_dir || std::fs::read_dir(bundle).map(|mut d| d.next().is_none()).unwrap_or(false) {
        std::fs::remove_dir(bundle).with_context(|| format!("cannot remove {}", bundle.display()))?;
    }
    Ok(())
}

fn is_mount_point(path: &Path) -> bool {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let wanted = path.display().to_string();
    text.lines().any(|l| l.split_whitespace().nth(4).map(unescape_mountinfo).as_deref() == Some(wanted.as_str()))
}

/// A mountinfo path with the kernel's octal escapes (`\040` for a space, `\011`, `\012`,
/// `\134`) decoded.
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match (bytes[i], octal) {
            (b'\\', Some(digits)) => {
                out.push(digits.iter().fold(0u8, |n, d| n.wrapping_mul(8) + (d - b'0')));
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Unmounts and removes a bundle unpack made, with its writable layer, and forgets it
/// (the bundle directory goes too unless something else was put in it). Its volumes stay;
/// with `anonymous_volumes` its anonymous ones go too, unless another bundle mounts them.
pub fn release(store: &Store, bundle: &Path, anonymous_volumes: bool) -> Result<()> {
    let locked = store.lock()?;
    let key = bundle_key(bundle)?;
    let mut all = records(store)?;
    let Some(record) = all.remove(&key.display().to_string()) else {
        bail!("{} is not a bundle of the store {}; `berth-image df` lists them", key.display(), store.root().display());
    };
    refuse_if_in_use(&key)?;
    undo(&key, false)?;
    write_records(&locked, &all)?;
    if anonymous_volumes {
        for name in &record.anonymous_volumes {
            if !all.values().any(|other| other.volumes.contains(name)) {
                volumes::remove_unchecked(&locked, name)
                    .with_context(|| format!("bundle {} is released, but its volume {name} is not", key.display()))?;
            }
        }
    }
    Ok(())
}

/// Fails, naming the processes, while any process has its root or working directory in the
/// bundle's rootfs: removing it would pull the filesystem from under a container (created
/// ones included, whose init already lives there), whichever runtime made it.
fn refuse_if_in_use(bundle: &Path) -> Result<()> {
    let rootfs = bundle.join("rootfs");
    if !rootfs.is_dir() {
        return Ok(());
    }
    let users = in_use::users(&rootfs)?;
    if users.is_empty() {
        return Ok(());
    }
    let named: Vec<String> =
        users.iter().map(|u| format!("process {} ({}) has its {} there", u.pid, u.command, u.through)).collect();
    bail!(
        "bundle {} is in use, not released: {}; stop and delete its container first (`berth delete ID` or your runtime's delete) and end any process using {}",
        bundle.display(),
        named.join(", "),
        rootfs.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape_mountinfo(r"/tmp/odd\040name/rootfs"), "/tmp/odd name/rootfs");
        assert_eq!(unescape_mountinfo(r"/a\011b\134c\012"), "/a\tb\\c\n");
        assert_eq!(unescape_mountinfo(r"/plain\09"), r"/plain\09");
    }
}
