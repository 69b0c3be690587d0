//! Extracted layers keyed by ChainID under `layers/<hex>/`: missing ones are extracted in
//! parallel, each into its own staging directory, and renamed in only after the DiffID
//! of what was extracted matches the image config.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use crate::digest::Digest;
use crate::extract::{self, Limits};
use crate::image::{chain_ids, Image};
use crate::store::Locked;

/// The extracted directories of `image`'s layers, bottom first, extracting what is missing.
pub fn ensure(locked: &Locked<'_>, image: &Image, limits: Limits, progress: &mut dyn FnMut(&str)) -> Result<Vec<PathBuf>> {
    let store = locked.store();
    let chains = chain_ids(&image.diff_ids);
    let dirs: Vec<PathBuf> = chains.iter().map(|c| store.root().join("layers").join(c.hex())).collect();
    let missing: Vec<usize> = (0..dirs.len()).filter(|&i| !dirs[i].is_dir()).collect();
    for &i in &missing {
        progress(&format!("extracting layer {}/{} {}", i + 1, dirs.len(), image.layers[i].digest));
    }
    let results: Vec<Result<()>> = std::thread::scope(|scope| {
        let workers: Vec<_> = missing
            .iter()
            .map(|&i| {
                let staging = locked.staging(&format!("layer-{}", chains[i].hex()));
                let (blob, diff_id, dest) = (store.blob_path(&Digest::parse(&image.layers[i].digest).unwrap()), image.diff_ids[i].clone(), dirs[i].clone());
                scope.spawn(move || -> Result<()> {
                    std::fs::create_dir(&staging).with_context(|| format!("cannot create {}", staging.display()))?;
                    let extracted = extract::extract(&blob, &staging, limits).with_context(|| format!("cannot extract layer {}", blob.display()));
                    let checked = extracted.and_then(|got| {
                        if got != diff_id {
                            bail!("layer {} unpacks to DiffID {got}, but the image config says {diff_id}; the image is corrupt", blob.display());
                        }
                        std::fs::rename(&staging, &dest).with_context(|| format!("cannot move the layer into {}", dest.display()))
                    });
                    if checked.is_err() {
                        let _ = std::fs::remove_dir_all(&staging);
                    }
                    checked
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap_or_else(|_| Err(anyhow::anyhow!("a layer extraction panicked")))).collect()
    });
    for result in results {
        result?;
    }
    Ok(dirs)
}
