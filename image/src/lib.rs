//! `ddaemon-image`: builds flashable disk images for a board.
//!
//! It owns the disk layout (`layout`: partitions, GPT or MBR, splicing
//! filesystem images in at their offsets without loop devices or mounts).
//! Still to come (issue 5): the mmdebstrap root filesystem, the
//! cross-compiled binaries and units, the FAT and erofs filesystems, and
//! `ddaemon-image build --board B`.

pub mod layout;
