//! The container runtime of ddaemon: everything needed to run an OCI image
//! without a container daemon.
//!
//! It owns image references (`image_ref`), talking to registries
//! (`registry`), the content-addressed image store under `DATA/images/`
//! (`blob_store`, `image_store`), unpacking layers safely (`layer_unpack`),
//! and side-loading image archives (`image_load`). Containers themselves
//! (libcontainer, the per-container shim, networking) come next, in this
//! crate too. It knows nothing of apps: the supervisor tells it which images
//! to keep and which containers to run.
//!
//! A crate of its own because of its heavy dependencies (the registry
//! client, decompressors, later libcontainer) and because part of it runs as
//! the single-threaded shim process.

pub mod blob_store;
pub mod clock;
pub mod command;
pub mod container_def;
pub mod container_log;
#[cfg(feature = "containers")]
pub mod container_manager;
pub mod container_paths;
#[cfg(feature = "containers")]
pub mod container_shim;
#[cfg(feature = "containers")]
pub mod container_spec;
pub mod container_status;
pub mod digest;
pub mod fs_atomic;
#[cfg(feature = "registry")]
pub mod image_load;
#[cfg(feature = "registry")]
pub mod image_ref;
#[cfg(feature = "registry")]
pub mod image_store;
pub mod layer_unpack;
pub mod network;
pub mod oci_types;
#[cfg(feature = "registry")]
pub mod registry;
