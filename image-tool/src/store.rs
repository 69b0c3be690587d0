//! The on-disk store: blobs by digest, image names, staging and the store lock.
//!
//! Layout under the store root: `blobs/sha256/<hex>`, `refs.json` (name -> manifest),
//! `tmp/` (staging files and directories, emptied whenever the lock is taken) and `lock`.
use crate::digest::{copy_hashing, Digest};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

pub const DEFAULT_STORE: &str = "/var/lib/berth";

/// The manifest an image name points at.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ImageRef {
    pub digest: String,
    pub media_type: String,
}

pub struct Store {
    root: PathBuf,
}

/// Holds the store's exclusive lock; staging is clean while it is held.
pub struct Locked<'a> {
    store: &'a Store,
    _lock: File,
}

impl Store {
    pub fn open(root: &Path) -> Result<Store> {
        for dir in ["blobs/sha256", "layers", "tmp"] {
            let path = root.join(dir);
            fs::create_dir_all(&path).with_context(|| {
                format!("cannot create store directory {}; check --store and permissions", path.display())
            })?;
        }
        Ok(Store { root: root.to_path_buf() })
    }

    /// Takes the store lock, waiting for other berth-image processes, and removes staging
    /// files a crashed run left behind.
    pub fn lock(&self) -> Result<Locked<'_>> {
        let path = self.root.join("lock");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot open store lock {}", path.display()))?;
        file.lock().with_context(|| format!("cannot lock store {}", path.display()))?;
        let tmp = self.root.join("tmp");
        for entry in fs::read_dir(&tmp).with_context(|| format!("cannot read staging {}", tmp.display()))? {
            let entry = entry?;
            let path = entry.path();
            let removed = if entry.file_type()?.is_dir() { fs::remove_dir_all(&path) } else { fs::remove_file(&path) };
            removed.with_context(|| format!("cannot remove stale staging entry {}", path.display()))?;
        }
        Ok(Locked { store: self, _lock: file })
    }

    pub fn blob_dir(&self) -> PathBuf {
        self.root.join("blobs/sha256")
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blob_dir().join(digest.hex())
    }

    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>> {
        let path = self.blob_path(digest);
        fs::read(&path).with_context(|| format!("blob {digest} is missing from the store ({})", path.display()))
    }

    pub fn refs(&self) -> Result<BTreeMap<String, ImageRef>> {
        let path = self.root.join("refs.json");
        match fs::read(&path) {
            Ok(data) => {
                serde_json::from_slice(&data).with_context(|| format!("store index {} is corrupt", path.display()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(e).with_context(|| format!("cannot read store index {}", path.display())),
        }
    }

    /// The image named `name`, or by its normalised reference (`busybox` finds a pulled
    /// `docker.io/library/busybox:latest`).
    pub fn resolve(&self, name: &str) -> Result<ImageRef> {
        let mut refs = self.refs()?;
        if let Some(image) = refs.remove(name) {
            return Ok(image);
        }
        let normalised = crate::reference::Reference::parse(name).map(|r| r.to_string()).ok();
        normalised
            .and_then(|n| refs.remove(&n))
            .with_context(|| format!("no image named {name:?} in the store; see `berth-image list`"))
    }
}

impl Locked<'_> {
    pub fn store(&self) -> &Store {
        self.store
    }

    pub fn staging(&self, name: &str) -> PathBuf {
        self.store.root.join("tmp").join(name)
    }

    /// Creates an empty staging directory `name`; it is removed by the next lock if left behind.
    pub fn staging_dir(&self, name: &str) -> Result<PathBuf> {
        let dir = self.staging(name);
        fs::create_dir(&dir).with_context(|| format!("cannot create staging directory {}", dir.display()))?;
        Ok(dir)
    }

    /// Copies a blob into the store, renaming it in only if its digest and size match.
    pub fn put_blob(&self, src: impl Read, expected: &Digest, size: u64) -> Result<()> {
        if self.store.has_blob(expected) {
            return Ok(());
        }
        let tmp = self.staging(expected.hex());
        let file = File::create(&tmp).with_context(|| format!("cannot create staging file {}", tmp.display()))?;
        let mut out = BufWriter::new(file);
        let copied = copy_hashing(src.take(size + 1), &mut out);
        let flushed = out.flush();
        let result = match (copied, flushed) {
            (Ok((digest, n)), Ok(())) if digest == *expected && n == size => {
                fs::rename(&tmp, self.store.blob_path(expected))
                    .with_context(|| format!("cannot move blob {expected} into the store"))
            }
            (Ok((digest, n)), Ok(())) => Err(anyhow::anyhow!(
                "blob {expected} does not match its descriptor: got {n} bytes with digest {digest}, expected {size} bytes; the image is corrupt"
            )),
            (Err(e), _) | (_, Err(e)) => Err(e).with_context(|| format!("cannot copy blob {expected}")),
        };
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    fn write_refs(&self, refs: &BTreeMap<String, ImageRef>) -> Result<()> {
        let tmp = self.staging("refs.json");
        fs::write(&tmp, serde_json::to_vec_pretty(refs)?).with_context(|| format!("cannot write {}", tmp.display()))?;
        fs::rename(&tmp, self.store.root.join("refs.json")).context("cannot update the store index refs.json")
    }

    pub fn set_ref(&self, name: &str, image: ImageRef) -> Result<()> {
        let mut refs = self.store.refs()?;
        refs.insert(name.to_string(), image);
        self.write_refs(&refs)
    }

    pub fn remove_ref(&self, name: &str) -> Result<()> {
        let mut refs = self.store.refs()?;
        if refs.remove(name).is_none() {
            bail!("no image named {name:?} in the store; see `berth-image list`");
        }
        self.write_refs(&refs)
    }
}
