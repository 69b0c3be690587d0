//! Locates the workspace's built binaries (`berth`, `berth-cni`, ...) for tests and benches.

use std::path::PathBuf;

/// Directory holding the workspace's binaries: `$BERTH_BIN_DIR` if set, else the cargo
/// profile directory this test or bench executable was built into.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("BERTH_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("cannot find the running test executable");
    let mut dir = exe.parent().expect("test executable has no parent directory").to_path_buf();
    // Integration tests live in <profile>/deps; bins live in <profile>.
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

/// Path of one workspace binary; panics with the command to run when it was not built.
pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(path.exists(), "{} is not built; run `cargo build --workspace` (make test does) first", path.display());
    path
}
