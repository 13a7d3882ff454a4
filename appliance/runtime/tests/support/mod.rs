//! What the runtime's integration tests build on: OCI images made here from
//! Debian's busybox-static, and a real registry (Debian's docker-registry)
//! on a loopback port, filled with skopeo.

#![allow(dead_code)] // each test binary uses its own part of this module

pub mod netns;
pub mod registry_server;
pub mod test_images;
