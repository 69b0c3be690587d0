//! One small function per CLI command: open the store, call the library, print the result.
use crate::digest::Digest;
use crate::manifest::{self, Parsed};
use crate::store::Store;
use crate::{gc, import};
use anyhow::{Context, Result};
use std::io::Write;

pub fn import(store: &Store, arg: &str, out: &mut impl Write) -> Result<()> {
    let locked = store.lock()?;
    let names = import::import(&locked, arg).with_context(|| format!("import of {arg} failed"))?;
    for name in names {
        writeln!(out, "{name}")?;
    }
    Ok(())
}

pub fn list(store: &Store, out: &mut impl Write) -> Result<()> {
    for (name, image) in store.refs()? {
        writeln!(out, "{name}\t{}", image.digest)?;
    }
    Ok(())
}

/// Prints `{"name", "digest", "manifest", "config"}`; `config` is null for an index.
pub fn inspect(store: &Store, name: &str, out: &mut impl Write) -> Result<()> {
    let image = store.resolve(name)?;
    let digest = Digest::parse(&image.digest)?;
    let data = store.read_blob(&digest)?;
    let config = match manifest::parse(&image.media_type, &data, &digest)? {
        Parsed::Image(image_manifest) => {
            let config_digest = manifest::digest_of(image_manifest.config())?;
            serde_json::from_slice(&store.read_blob(&config_digest)?)
                .with_context(|| format!("image config {config_digest} is not valid JSON"))?
        }
        Parsed::Index(_) => serde_json::Value::Null,
    };
    let manifest: serde_json::Value = serde_json::from_slice(&data)?;
    let doc = serde_json::json!({ "name": name, "digest": image.digest, "manifest": manifest, "config": config });
    writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
    Ok(())
}

/// Removes the name; `gc` then frees the blobs nothing else uses.
pub fn rm(store: &Store, name: &str) -> Result<()> {
    store.lock()?.remove_ref(name)
}

pub fn gc(store: &Store, out: &mut impl Write) -> Result<()> {
    let locked = store.lock()?;
    for digest in gc::collect(&locked)? {
        writeln!(out, "removed {digest}")?;
    }
    Ok(())
}

/// Prints each layer extraction on stderr when stderr is a terminal.
fn progress_on_terminal() -> impl FnMut(&str) {
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    move |line: &str| {
        if terminal {
            eprintln!("{line}");
        }
    }
}

pub fn unpack(
    store: &Store,
    name: &str,
    bundle: &std::path::Path,
    platform: Option<&str>,
    limits: crate::extract::Limits,
    options: &crate::run_options::RunOptions,
) -> Result<()> {
    let platform = platform.map(manifest::parse_platform).transpose()?;
    crate::bundle::unpack(store, name, bundle, platform.as_ref(), limits, options, &mut progress_on_terminal())
        .with_context(|| format!("cannot unpack {name} into {}", bundle.display()))
}

/// Releases the bundle; with `volumes` its anonymous volumes too.
pub fn release(store: &Store, bundle: &std::path::Path, volumes: bool) -> Result<()> {
    crate::bundle::release(store, bundle, volumes)
}

/// `df` as a table, or the JSON document with `json`.
pub fn df(store: &Store, json: bool, out: &mut impl Write) -> Result<()> {
    let usage = crate::usage::measure(store)?;
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&usage)?)?;
        return Ok(());
    }
    writeln!(out, "IMAGE\tVIRTUAL")?;
    for image in &usage.images {
        writeln!(out, "{}\t{}", image.name, image.virtual_bytes)?;
    }
    writeln!(out, "\nBUNDLE\tIMAGE\tOWN\tVIRTUAL")?;
    for bundle in &usage.bundles {
        writeln!(out, "{}\t{}\t{}\t{}", bundle.bundle, bundle.image, bundle.own_bytes, bundle.virtual_bytes)?;
    }
    writeln!(out, "\nVOLUME\tSIZE\tBUNDLES")?;
    for volume in &usage.volumes {
        writeln!(out, "{}\t{}\t{}", volume.name, volume.bytes, volume.bundles)?;
    }
    writeln!(out, "\nTOTAL\t{} (shared layers counted once)", usage.total_bytes)?;
    Ok(())
}

pub fn pull(
    store: &Store,
    reference: &str,
    options: &crate::registry::PullOptions,
    out: &mut impl Write,
) -> Result<()> {
    let locked = store.lock()?;
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let progress = move |line: &str| {
        if terminal {
            eprintln!("{line}");
        }
    };
    let name = crate::registry::pull(&locked, reference, options, &progress)
        .with_context(|| format!("pull of {reference} failed"))?;
    writeln!(out, "{name}")?;
    Ok(())
}

/// Copies into or out of a bundle's container; a tar stream goes to `out` when DST is `-`.
pub fn cp(src: &str, dst: &str, options: crate::cp::Options, out: &mut impl Write) -> Result<()> {
    crate::cp::copy(src, dst, options, std::io::stdin().lock(), out)
        .with_context(|| format!("cannot copy {src} to {dst}"))
}
