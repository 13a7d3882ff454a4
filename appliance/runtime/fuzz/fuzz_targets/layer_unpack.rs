//! Feeds arbitrary bytes to the layer unpacker inside a sandbox folder and
//! checks the one property that matters: nothing outside the layer
//! directory is created, changed or removed, whatever the archive says.
#![no_main]

use std::path::Path;

use ddaemon_runtime::layer_unpack::{UnpackOptions, unpack_layer};
use libfuzzer_sys::fuzz_target;

fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read sandbox") {
        let entry = entry.expect("entry");
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == "layer" {
            continue;
        }
        let meta = std::fs::symlink_metadata(entry.path()).expect("meta");
        let content = if meta.is_file() {
            std::fs::read(entry.path()).expect("read")
        } else {
            Vec::new()
        };
        out.push((name, content));
    }
    out.sort();
    out
}

fuzz_target!(|data: &[u8]| {
    let sandbox = tempfile::tempdir().expect("sandbox");
    let layer = sandbox.path().join("layer");
    std::fs::create_dir(&layer).expect("layer dir");
    std::fs::write(sandbox.path().join("canary"), b"untouched").expect("canary");
    std::fs::create_dir(sandbox.path().join("outside")).expect("outside");
    let before = snapshot(sandbox.path());
    let _ = unpack_layer(data, &layer, &UnpackOptions { set_owners: false });
    assert_eq!(snapshot(sandbox.path()), before, "the unpacker wrote outside the layer");
    assert!(
        std::fs::read_dir(sandbox.path().join("outside")).expect("outside").next().is_none(),
        "the unpacker wrote into a sibling folder"
    );
});
