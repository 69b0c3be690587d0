//! berth-cni's three directories for a test that runs it privately, under the test's own
//! directory: the flags berth-cni takes, the ones `berth-image unpack` passes through to
//! its hooks, and running berth-cni with them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::bins::bin;

pub struct CniDirs {
    pub conf: PathBuf,
    pub bin: PathBuf,
    pub state: PathBuf,
}

impl CniDirs {
    /// `net.d`, `lib/cni` and `state` below `dir`.
    pub fn under(dir: &Path) -> CniDirs {
        CniDirs { conf: dir.join("net.d"), bin: dir.join("lib/cni"), state: dir.join("state") }
    }

    /// `--conf-dir DIR --bin-dir DIR --state-dir DIR`.
    pub fn flags(&self) -> Vec<String> {
        self.named_flags(["--conf-dir", "--bin-dir", "--state-dir"])
    }

    /// unpack's `--cni-conf-dir DIR --cni-bin-dir DIR --cni-state-dir DIR` and the built berth-cni.
    pub fn unpack_flags(&self) -> Vec<String> {
        let mut flags = vec!["--berth-cni".to_string(), bin("berth-cni").display().to_string()];
        flags.extend(self.named_flags(["--cni-conf-dir", "--cni-bin-dir", "--cni-state-dir"]));
        flags
    }

    fn named_flags(&self, names: [&str; 3]) -> Vec<String> {
        names
            .iter()
            .zip([&self.conf, &self.bin, &self.state])
            .flat_map(|(n, d)| [n.to_string(), d.display().to_string()])
            .collect()
    }

    /// `berth-cni ARGS` with these directories.
    pub fn output(&self, args: &[&str]) -> Output {
        Command::new(bin("berth-cni")).args(args).args(self.flags()).output().unwrap()
    }

    /// Its stdout; success asserted.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.output(args);
        assert!(out.status.success(), "berth-cni {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Its stdout as JSON; success asserted.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        serde_json::from_str(&self.ok(args)).unwrap()
    }
}
