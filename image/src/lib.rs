//! `ddaemon-image`: builds flashable disk images for a board.
//!
//! It owns the disk layout (`layout`: partitions, GPT or MBR, splicing
//! filesystem images in at their offsets without loop devices or mounts)
//! and the build (`build`: mmdebstrap root, ddaemon and its units, erofs
//! root, FAT boot partition with systemd-boot). UEFI boards build today;
//! the Raspberry Pi firmware's boot partition does not yet.

pub mod build;
pub mod layout;
