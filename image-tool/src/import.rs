//! Import of a local image, `PATH` (every named manifest) or `PATH:TAG`: the input's kind
//! decides the reader. An OCI layout directory is imported as it is; an oci-archive (or a
//! docker-archive in OCI form) is staged as a layout, and a legacy docker-archive is
//! converted into one, then imported from staging.
use crate::store::Locked;
use crate::{archive, layout, legacy};
use anyhow::{Context, Result};
use std::fs;
use std::path::{Path, PathBuf};

/// Splits `PATH[:TAG]`; a path that exists as written wins over a tag split.
fn split_arg(arg: &str) -> (PathBuf, Option<String>) {
    if Path::new(arg).exists() {
        return (PathBuf::from(arg), None);
    }
    match arg.rsplit_once(':') {
        Some((path, tag)) if !tag.contains('/') => (PathBuf::from(path), Some(tag.to_string())),
        _ => (PathBuf::from(arg), None),
    }
}

/// Imports the images named by `arg`, a layout directory or an archive (detected);
/// returns the names stored.
pub fn import(locked: &Locked<'_>, arg: &str) -> Result<Vec<String>> {
    let (path, tag) = split_arg(arg);
    let meta = fs::metadata(&path).with_context(|| format!("cannot import {}: it does not exist", path.display()))?;
    if meta.is_dir() {
        layout::import_dir(locked, &path, tag.as_deref())
    } else {
        import_archive(locked, &path, tag.as_deref())
    }
}

/// Imports the images of the archive `file` (every named manifest, or `tag`) through a
/// staged layout, which is removed afterwards.
fn import_archive(locked: &Locked<'_>, file: &Path, tag: Option<&str>) -> Result<Vec<String>> {
    let staging = locked.staging_dir("archive")?;
    let result = stage_archive(file, &staging).and_then(|()| layout::import_dir(locked, &staging, tag));
    let cleanup =
        fs::remove_dir_all(&staging).with_context(|| format!("cannot remove staging directory {}", staging.display()));
    let names = result.with_context(|| format!("in archive {}", file.display()))?;
    cleanup?;
    Ok(names)
}

/// Stages the archive's OCI layout; `docker save`'s newer form is an OCI layout too, and
/// its legacy form (a `manifest.json` and no `oci-layout`) is converted into one.
fn stage_archive(file: &Path, staging: &Path) -> Result<()> {
    archive::stage(file, staging)?;
    if !staging.join("oci-layout").exists() && staging.join("manifest.json").exists() {
        return legacy::stage(file, staging);
    }
    Ok(())
}
