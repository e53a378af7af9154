//! Fuzzes layer application (`image::apply`): the input is a layer (plain
//! tar or compressed, detected as for a pulled layer) applied as root with
//! ownership kept, first as a layer over an existing tree (whiteouts
//! delete, opaque directories empty) and then extracted alone for
//! overlayfs over that tree as its lower layer. Nothing may panic or hang,
//! and nothing outside the root may change: the root sits next to a canary
//! tree that is compared before and after (an escape through `..`, an
//! absolute name, a symlink, a hard link or a whiteout shows there).
#![no_main]

use std::fs;

use libfuzzer_sys::fuzz_target;

use executor::image::apply::{ApplyOptions, WhiteoutMode, apply_layer, apply_layer_with};
use executor_fuzz::Sandbox;

fuzz_target!(|data: &[u8]| {
    let sandbox = Sandbox::new();
    let root = sandbox.inside.join("root");
    fs::create_dir_all(root.join("etc/sub")).expect("lower tree");
    fs::write(root.join("etc/passwd"), b"lower\n").expect("lower file");
    fs::write(root.join("etc/sub/file"), b"lower\n").expect("lower file");
    std::os::unix::fs::symlink("../..", root.join("etc/up")).expect("lower symlink");

    let privileged = ApplyOptions {
        root_is_privileged: rustix::process::geteuid().is_root(),
        preserve_ownership: true,
        ignore_paths: vec!["/proc".into(), "/etc/sub".into()],
    };
    let _ = apply_layer(data, &root, &privileged);
    sandbox.assert_confined("applying the layer");

    let overlay = sandbox.inside.join("overlay");
    fs::create_dir(&overlay).expect("overlay directory");
    let whiteouts = WhiteoutMode::Overlay {
        user_xattr: true,
        lower_dirs: vec![root],
    };
    let _ = apply_layer_with(data, &overlay, &ApplyOptions::default(), &whiteouts);
    sandbox.assert_confined("extracting the layer for overlayfs");
});
