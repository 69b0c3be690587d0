//! oci-archive (and OCI-in-tar docker-archive) reading: the files of the OCI image layout
//! in a tar (and a legacy docker-archive's `manifest.json`) copied into a staging directory.
use anyhow::{bail, Context, Result};
use std::fs::{self, File};
use std::io;
use std::path::Path;

/// Largest `oci-layout`, `index.json` or `manifest.json` accepted from an archive.
const MAX_METADATA: u64 = 4 << 20;

/// Where an archive entry goes in the staged layout, or `None` to skip it.
fn staged_name(path: &str) -> Option<String> {
    let path = path.strip_prefix("./").unwrap_or(path);
    if path == "oci-layout" || path == "index.json" || path == "manifest.json" {
        return Some(path.to_string());
    }
    let hex = path.strip_prefix("blobs/sha256/")?;
    let valid = hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    valid.then(|| path.to_string())
}

/// Copies the layout's files out of the tar into `staging` (blobs are verified later, by
/// the layout import). `manifest.json` is copied too: without `oci-layout` it marks a
/// legacy docker-archive.
pub fn stage(file: &Path, staging: &Path) -> Result<()> {
    let input = File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    fs::create_dir_all(staging.join("blobs/sha256")).with_context(|| format!("cannot create {}", staging.display()))?;
    let mut archive = tar::Archive::new(input);
    let entries = archive.entries().with_context(|| format!("{} is not a tar archive", file.display()))?;
    for entry in entries {
        let mut entry = entry.with_context(|| format!("{} is not a readable tar archive", file.display()))?;
        let path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            continue;
        }
        let Some(name) = staged_name(&path) else {
            continue;
        };
        if !kind.is_file() {
            bail!("archive entry {path:?} is not a regular file; refusing the archive");
        }
        if !name.starts_with("blobs/") && entry.size() > MAX_METADATA {
            bail!("archive entry {path:?} is larger than {MAX_METADATA} bytes; refusing it");
        }
        let target = staging.join(&name);
        let mut out = File::create_new(&target)
            .with_context(|| format!("archive entry {path:?} appears twice or cannot be staged"))?;
        io::copy(&mut entry, &mut out).with_context(|| format!("cannot read archive entry {path:?}"))?;
    }
    Ok(())
}
