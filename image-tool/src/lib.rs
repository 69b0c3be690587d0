//! berth-image's library: a content-addressed image store, OCI image-layout and oci-archive import and blob gc.
pub mod archive;
pub mod commands;
pub mod digest;
pub mod gc;
pub mod layout;
pub mod manifest;
pub mod store;
