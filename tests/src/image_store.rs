//! A private `berth-image` store for end-to-end tests: imports the tests' oci-archives,
//! unpacks bundles with `docker run`'s options, and releases every bundle it made (unmounting
//! its rootfs) when dropped, also after a failed test.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::fixtures::TempDir;
use crate::oci_image::OciArchive;

pub struct ImageStore {
    dir: TempDir,
    bin: PathBuf,
    bundles: RefCell<Vec<PathBuf>>,
}

impl ImageStore {
    pub fn new(test: &str) -> ImageStore {
        let store = ImageStore {
            dir: TempDir::new(&format!("berth-image-{test}")),
            bin: crate::bins::bin("berth-image"),
            bundles: RefCell::new(Vec::new()),
        };
        std::fs::create_dir(store.dir.path().join("bundles")).unwrap();
        store
    }

    /// A scratch directory of the test, removed with the store.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Where a bundle named `name` goes (its directory's name is the container's default name).
    pub fn bundle_path(&self, name: &str) -> PathBuf {
        self.dir.path().join("bundles").join(name)
    }

    /// `berth-image --store STORE ARGS...`.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.bin);
        command.arg("--store").arg(self.dir.path().join("store")).args(args).stdin(Stdio::null());
        command
    }

    /// Imports the archive and returns the name the store gives its image.
    pub fn import(&self, archive: &OciArchive) -> String {
        let out = self.command(&["import", archive.path().to_str().unwrap()]).output().unwrap();
        assert!(out.status.success(), "import of {} failed: {}", archive.name, String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().lines().next().expect("import named no image").to_string()
    }

    /// `unpack IMAGE BUNDLE ARGS...` with `env` added to berth-image's environment; the bundle
    /// is released on drop if it was made. Without a `--network` in `args` the bundle gets
    /// `--network none`: Docker's default network would attach it on this machine's own.
    pub fn unpack_output(&self, image: &str, bundle: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut command = self.command(&["unpack", image, bundle.to_str().unwrap()]);
        if !args.iter().any(|a| a.starts_with("--network")) {
            command.args(["--network", "none"]);
        }
        command.args(args);
        for (key, value) in env {
            command.env(key, value);
        }
        let out = command.output().unwrap();
        if out.status.success() {
            self.bundles.borrow_mut().push(bundle.to_path_buf());
        }
        out
    }

    /// Unpacks bundle `name` and returns its path; panics with berth-image's error if it fails.
    pub fn unpack(&self, image: &str, name: &str, args: &[&str], env: &[(&str, &str)]) -> PathBuf {
        let bundle = self.bundle_path(name);
        let out = self.unpack_output(image, &bundle, args, env);
        assert!(out.status.success(), "unpack {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        bundle
    }

    /// The bundle's config.json.
    pub fn config(bundle: &Path) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(bundle.join("config.json")).unwrap()).unwrap()
    }
}

impl Drop for ImageStore {
    fn drop(&mut self) {
        for bundle in self.bundles.borrow().iter() {
            let _ = self.command(&["release", bundle.to_str().unwrap()]).stderr(Stdio::null()).status();
        }
        // A bundle a failed release left mounted must not keep the directory from going.
        let prefix = self.dir.path().display().to_string();
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut points: Vec<&str> =
            mounts.lines().filter_map(|l| l.split_whitespace().nth(4)).filter(|p| p.starts_with(&prefix)).collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for point in points {
            let _ = nix::mount::umount2(point, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}
