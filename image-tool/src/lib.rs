//! berth-image's library: a content-addressed image store, OCI image-layout and oci-archive import and blob gc.
pub mod archive;
pub mod bundle;
pub mod commands;
pub mod convert;
pub mod digest;
pub mod extract;
pub mod gc;
pub mod image;
pub mod in_use;
pub mod layers;
pub mod legacy;
pub mod layout;
pub mod manifest;
pub mod reference;
pub mod registry;
pub mod store;
pub mod usage;
