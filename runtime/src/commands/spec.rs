//! `spec`: writes a default config.json (runc spec's equivalent) into a bundle directory.

use std::fs::OpenOptions;
use std::io::Write;

use anyhow::{Context, Result};
use oci_spec::runtime::{LinuxBuilder, LinuxIdMappingBuilder, LinuxNamespaceBuilder, LinuxNamespaceType, Spec};

use crate::cli::SpecArgs;

/// `rootless` comes from the global `--rootless` flag, as in runc.
pub fn spec(args: &SpecArgs, rootless: bool) -> Result<()> {
    let spec = if rootless { rootless_spec()? } else { default_spec()? };
    let path = args.bundle.join("config.json");
    let mut file = OpenOptions::new().write(true).create_new(true).open(&path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            anyhow::anyhow!("File {} exists. Remove it first", path.display())
        } else {
            anyhow::anyhow!("cannot write {}: {e}", path.display())
        }
    })?;
    file.write_all(serde_json::to_string_pretty(&spec)?.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// oci-spec's `Spec::default()` (runc's default spec: `sh`, rootfs `rootfs` read-only, the
/// usual mounts, namespaces, capabilities and masked paths) with what `berth spec` changes:
/// - process: on a terminal, as in `runc spec`;
/// - hostname: `berth`.
fn default_spec() -> Result<Spec> {
    let mut spec = Spec::default();
    let mut process = spec.process().clone().context("oci-spec's default spec has no process")?;
    process.set_terminal(Some(true));
    spec.set_process(Some(process));
    spec.set_hostname(Some("berth".into()));
    Ok(spec)
}

/// The default with a user namespace mapping the caller to root and no network namespace.
fn rootless_spec() -> Result<Spec> {
    let mut spec = default_spec()?;
    let uid = nix::unistd::geteuid().as_raw();
    let gid = nix::unistd::getegid().as_raw();
    let mut namespaces: Vec<_> = oci_spec::runtime::get_default_namespaces()
        .into_iter()
        .filter(|ns| !matches!(ns.typ(), LinuxNamespaceType::Network | LinuxNamespaceType::User))
        .collect();
    namespaces.push(LinuxNamespaceBuilder::default().typ(LinuxNamespaceType::User).build()?);
    let linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .uid_mappings(vec![LinuxIdMappingBuilder::default().host_id(uid).container_id(0u32).size(1u32).build()?])
        .gid_mappings(vec![LinuxIdMappingBuilder::default().host_id(gid).container_id(0u32).size(1u32).build()?])
        .build()?;
    spec.set_linux(Some(linux));
    Ok(spec)
}
