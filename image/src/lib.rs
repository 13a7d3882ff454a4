//! `ddaemon-image`: builds flashable disk images for a board.
//!
//! It owns the disk layout (`layout`: partitions, GPT or MBR, splicing
//! filesystem images in at their offsets without loop devices or mounts)
//! and the build (`build`: mmdebstrap root, ddaemon and its units, erofs
//! root, FAT boot partition with systemd-boot or the Raspberry Pi
//! firmware), and Raspberry Pi Imager's `os_list` entry (`imager`).

pub mod build;
pub mod imager;
pub mod layout;
