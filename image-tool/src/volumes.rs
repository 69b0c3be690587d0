//! The store's volumes: `volumes/NAME/_data` (what containers see) beside `volume.json`
//! (creation time, labels, whether it is anonymous), made whole in staging and renamed in,
//! filled from the image when empty, and in use while a bundle record names them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rustix::fs::{Mode, OFlags};
use serde::{Deserialize, Serialize};

use crate::bundle;
use crate::store::{Locked, Store};
use crate::volume_copy;

/// What `volume.json` holds.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
#[serde(rename_all = "camelCase")]
struct Meta {
    created_at: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    anonymous: bool,
}

/// One volume as `volume inspect` shows it (Docker's field names).
#[derive(Serialize, Debug, Clone)]
#[serde(rename_all = "PascalCase")]
pub struct Volume {
    pub name: String,
    pub driver: &'static str,
    pub mountpoint: PathBuf,
    pub created_at: String,
    pub labels: BTreeMap<String, String>,
    pub scope: &'static str,
    /// Made for one bundle (`-v /ctr` or an image VOLUME) rather than by name.
    pub anonymous: bool,
}

/// Absolute, as mount sources in config.json must be whatever `--store` was given as.
pub fn volumes_dir(store: &Store) -> PathBuf {
    let dir = store.root().join("volumes");
    std::path::absolute(&dir).unwrap_or(dir)
}

/// Docker's rule: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
pub fn check_name(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    if !first_ok || name.len() < 2 || !chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)) {
        bail!(
            "{name:?} is not a valid volume name: names are two or more of [a-zA-Z0-9_.-], starting with a letter or digit (a host directory must be given as an absolute path)"
        );
    }
    Ok(())
}

/// The volume's data directory (its mount source).
pub fn data_dir(store: &Store, name: &str) -> PathBuf {
    volumes_dir(store).join(name).join("_data")
}

/// Volume `name`, or an error saying how to list them.
pub fn get(store: &Store, name: &str) -> Result<Volume> {
    check_name(name)?;
    let dir = volumes_dir(store).join(name);
    let meta_path = dir.join("volume.json");
    let data = match std::fs::read(&meta_path) {
        Ok(data) => data,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("no volume named {name:?} in the store; see `berth-image volume ls`")
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", meta_path.display())),
    };
    let meta: Meta = serde_json::from_slice(&data).with_context(|| format!("{} is corrupt", meta_path.display()))?;
    Ok(Volume {
        name: name.to_string(),
        driver: "local",
        mountpoint: dir.join("_data"),
        created_at: meta.created_at,
        labels: meta.labels,
        scope: "local",
        anonymous: meta.anonymous,
    })
}

pub fn list(store: &Store) -> Result<Vec<Volume>> {
    let dir = volumes_dir(store);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot list {}", dir.display())),
    };
    // What has no volume.json is not a volume (nor anything berth-image made).
    let mut names: Vec<String> = entries
        .flatten()
        .filter(|e| e.path().join("volume.json").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| check_name(n).is_ok())
        .collect();
    names.sort();
    names.iter().map(|n| get(store, n)).collect()
}

/// Creates volume `name` (a random one when None), empty; Ok(None) when it already exists.
/// `anonymous` marks one made for a bundle (`-v /CTR`, an image VOLUME), which plain
/// `prune` takes once unused.
pub fn create(
    locked: &Locked<'_>,
    name: Option<&str>,
    labels: BTreeMap<String, String>,
    anonymous: bool,
) -> Result<Option<Volume>> {
    let store = locked.store();
    let name = match name {
        Some(name) => name.to_string(),
        None => random_name()?,
    };
    check_name(&name)?;
    let dir = volumes_dir(store).join(&name);
    if dir.exists() {
        return Ok(None);
    }
    std::fs::create_dir_all(volumes_dir(store))
        .with_context(|| format!("cannot create {}", volumes_dir(store).display()))?;
    let staging = locked.staging_dir(&format!("volume-{name}"))?;
    let made = (|| -> Result<()> {
        std::fs::create_dir(staging.join("_data"))?;
        let meta = Meta { created_at: now_rfc3339(), labels, anonymous };
        std::fs::write(staging.join("volume.json"), serde_json::to_vec_pretty(&meta)?)?;
        std::fs::rename(&staging, &dir)?;
        Ok(())
    })();
    if let Err(e) = made {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(e).with_context(|| format!("cannot create volume {name} in {}", dir.display()));
    }
    get(store, &name).map(Some)
}

/// 64 hex digits from the kernel's random source, as Docker names anonymous volumes.
fn random_name() -> Result<String> {
    let mut bytes = [0u8; 32];
    let mut filled = 0;
    while filled < bytes.len() {
        filled += rustix::rand::getrandom(&mut bytes[filled..], rustix::rand::GetRandomFlags::empty())
            .context("cannot read random bytes for an anonymous volume's name")?;
    }
    Ok(hex::encode(bytes))
}

/// Creation time as RFC 3339 in UTC (`2026-12-02T07:30:31Z`).
fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (days, rest) = ((secs / 86400) as i64, secs % 86400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rest / 3600, rest % 3600 / 60, rest % 60)
}

/// Fills the volume from the image's directory `path` in `rootfs` when the volume is empty
/// (Docker's copy-in); a volume with anything in it is left as it is. The copy is made in
/// staging and moved in, so a failed copy leaves the volume empty.
pub fn fill_from_image(locked: &Locked<'_>, name: &str, rootfs: &Path, path: &str) -> Result<()> {
    let data = data_dir(locked.store(), name);
    let data_fd =
        rustix::fs::open(&data, OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())
            .with_context(|| format!("cannot open volume {name}'s {}", data.display()))?;
    if !is_empty(&data_fd)? {
        return Ok(());
    }
    let staging = locked.staging_dir(&format!("fill-{name}"))?;
    let filled = (|| -> Result<()> {
        let staged = rustix::fs::open(&staging, OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())?;
        if !volume_copy::copy_image_dir(rootfs, path, &staged)? {
            return Ok(());
        }
        let mut moved: Vec<String> = Vec::new();
        for entry in rustix::fs::Dir::read_from(&staged)? {
            let entry_name = entry?.file_name().to_string_lossy().into_owned();
            if entry_name == "." || entry_name == ".." {
                continue;
            }
            if let Err(e) = rustix::fs::renameat(&staged, entry_name.as_str(), &data_fd, entry_name.as_str()) {
                // Put back what was moved: the volume stays empty as it was.
                for done in &moved {
                    let _ = rustix::fs::renameat(&data_fd, done.as_str(), &staged, done.as_str());
                }
                return Err(e).with_context(|| format!("cannot move {entry_name} into volume {name}"));
            }
            moved.push(entry_name);
        }
        let st = rustix::fs::fstat(&staged)?;
        volume_copy::metadata(&staged, &data_fd, &st)
    })();
    let _ = std::fs::remove_dir_all(&staging);
    filled.with_context(|| format!("cannot fill volume {name} from the image's {path}"))
}

fn is_empty(dir: &rustix::fd::OwnedFd) -> Result<bool> {
    for entry in rustix::fs::Dir::read_from(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The bundles (paths) whose records mount volume `name`.
pub fn users(store: &Store, name: &str) -> Result<Vec<String>> {
    Ok(bundle::records(store)?
        .into_iter()
        .filter(|(_, r)| r.volumes.iter().any(|v| v == name))
        .map(|(p, _)| p)
        .collect())
}

/// Removes volume `name` and its data; refused while a bundle mounts it.
pub fn remove(locked: &Locked<'_>, name: &str) -> Result<()> {
    let store = locked.store();
    get(store, name)?;
    let users = users(store, name)?;
    if !users.is_empty() {
        bail!(
            "volume {name} is in use by bundle {}; release the bundle first (`berth-image release BUNDLE`)",
            users.join(", ")
        );
    }
    remove_unchecked(locked, name)
}

/// Removes a volume whatever uses it (one this run made and must take back).
pub fn remove_unchecked(locked: &Locked<'_>, name: &str) -> Result<()> {
    let dir = volumes_dir(locked.store()).join(name);
    // Renamed aside first, so a removal cut short never leaves a half volume under its name.
    let aside = locked.staging(&format!("removed-volume-{name}"));
    std::fs::rename(&dir, &aside).with_context(|| format!("cannot remove volume {name} ({})", dir.display()))?;
    std::fs::remove_dir_all(&aside).with_context(|| format!("cannot remove {}", aside.display()))
}

/// Removes the volumes no bundle uses: anonymous ones, and named ones too with `all`.
pub fn prune(locked: &Locked<'_>, all: bool) -> Result<Vec<String>> {
    let store = locked.store();
    let records = bundle::records(store)?;
    let mut removed = Vec::new();
    for volume in list(store)? {
        let used = records.values().any(|r| r.volumes.contains(&volume.name));
        if !used && (all || volume.anonymous) {
            remove_unchecked(locked, &volume.name)?;
            removed.push(volume.name);
        }
    }
    Ok(removed)
}
