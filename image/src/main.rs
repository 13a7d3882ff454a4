//! `ddaemon-image`: builds flashable disk images and signed update bundles.
//!
//! It will own `ddaemon-image build --board B`: a Debian root filesystem made
//! with mmdebstrap, the cross-compiled ddaemon binaries, systemd units, and a
//! disk laid out as DESIGN.md says (boot, root A, root B, data), each
//! filesystem made as a file and spliced in at its offset, reproducibly. And
//! `ddaemon-image bundle` for signed A/B update bundles.
//!
//! It builds nothing yet; `scripts/try` runs the supervisor directly until it does.

fn main() {
    eprintln!("ddaemon-image: building images is not implemented in this version");
    std::process::exit(2);
}
