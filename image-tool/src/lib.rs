//! berth-image's library: a content-addressed image store, import from local layouts and
//! archives, pull from registries, unpack into overlay bundles, and the upkeep around them.
//!
//! - Store: `store` (blobs, names, staging, the lock), `digest`, `manifest` (manifest and
//!   index documents), `reference` (Docker's image names).
//! - Import: `import` (dispatch on the input's kind) over the readers `layout` (OCI layout
//!   directory), `archive` (oci-archive) and `legacy` (legacy docker-archive).
//! - Pull: `registry` (OCI distribution registries, auth, parallel verified blobs).
//! - Unpack: `image` (the manifest, config and layers for this platform), `layers`
//!   (extracted layers by ChainID), `extract` (one layer, written safely), `convert`
//!   (image config to `config.json`), `run_options` (`docker run`'s options: process,
//!   resources and security, the init layer's hostname/hosts/resolv.conf, the network
//!   namespace and berth-cni hooks), `bundle` (overlay bundles, their record, release).
//! - Storage: `storage_options` (unpack's `-v`, `--mount`, `--tmpfs` into mounts),
//!   `volumes` (the store's volumes), `volume_copy` (an image's content into a volume),
//!   `volume_commands` (`berth-image volume ...`).
//! - Upkeep: `gc`, `usage` (`df`), `in_use` (processes using a bundle's rootfs).
//! - Containers' files: `cp` (copies into and out of a bundle's container).
//! - `commands`: one function per CLI command over the modules above.
pub mod archive;
pub mod bundle;
pub mod commands;
pub mod convert;
pub mod cp;
pub mod digest;
pub mod extract;
pub mod gc;
pub mod image;
pub mod import;
pub mod in_use;
pub mod layers;
pub mod layout;
pub mod legacy;
pub mod manifest;
pub mod reference;
pub mod registry;
pub mod run_options;
pub mod storage_options;
pub mod store;
pub mod usage;
pub mod volume_commands;
pub mod volume_copy;
pub mod volumes;
