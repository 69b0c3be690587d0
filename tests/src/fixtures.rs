//! Fixtures built by the tests themselves: busybox bundles from Debian's busybox-static and
//! their runtime-spec config.json, in temporary directories removed on drop.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

/// Where Debian's busybox-static installs its binary.
pub const BUSYBOX: &str = "/bin/busybox";

/// A temporary directory removed (recursively, best effort) on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Makes a fresh directory under `$BERTH_TEST_TMP` or `/tmp`, named after `prefix`.
    pub fn new(prefix: &str) -> TempDir {
        let base = std::env::var_os("BERTH_TEST_TMP").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
        for attempt in 0..1000u32 {
            let path = base.join(format!("{prefix}-{}-{}-{attempt}", std::process::id(), unique()));
            if fs::create_dir(&path).is_ok() {
                return TempDir { path };
            }
        }
        panic!("cannot create a temporary directory under {}", base.display());
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos() as u64;
    (nanos << 16) | NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A unique container id for one test, safe for cgroup and state directory names.
pub fn container_id(test: &str) -> String {
    format!("{test}-{}-{}", std::process::id(), unique() & 0xffffff)
}

/// Writes a busybox root filesystem into `rootfs`: the static binary, a link per applet,
/// the usual top-level directories, and passwd/group files with root, `app` (1000) and nobody.
pub fn write_busybox_rootfs(rootfs: &Path) {
    assert!(Path::new(BUSYBOX).exists(), "{BUSYBOX} is missing; install Debian's busybox-static (make deps does)");
    for dir in ["bin", "dev", "etc", "proc", "sys", "tmp", "root", "home/app", "run", "var", "mnt"] {
        fs::create_dir_all(rootfs.join(dir)).unwrap();
    }
    fs::copy(BUSYBOX, rootfs.join("bin/busybox")).unwrap();
    let list = Command::new(BUSYBOX).arg("--list").output().expect("cannot run busybox --list");
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" && !applet.is_empty() {
            let _ = symlink("busybox", rootfs.join("bin").join(applet));
        }
    }
    fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
    )
    .unwrap();
    fs::write(rootfs.join("etc/group"), "root:x:0:\napp:x:1000:\nextra:x:2000:app\nnogroup:x:65534:\n").unwrap();
}

/// The config.json the tests start from: close to `runc spec`, but without a terminal,
/// with a writable root and a private cgroup path named after the container.
pub fn default_spec(args: &[&str], cgroup_name: &str) -> Value {
    json!({
        "ociVersion": "1.1.0",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": args,
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
            "cwd": "/",
            "capabilities": {
                "bounding": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
                "effective": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
                "permitted": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs", "readonly": false},
        "hostname": "berth-test",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}
        ],
        "linux": {
            "cgroupsPath": format!("/berth-test-{cgroup_name}"),
            "resources": {"devices": [{"allow": false, "access": "rwm"}]},
            "namespaces": [
                {"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}
            ],
            "maskedPaths": ["/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
                "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
        }
    })
}

/// A runtime bundle in a temporary directory: a busybox rootfs and a config.json.
pub struct Bundle {
    dir: TempDir,
    pub spec: Value,
}

impl Bundle {
    /// A busybox bundle whose process runs `args`; call `write_spec` after changing `spec`.
    pub fn busybox(name: &str, args: &[&str]) -> Bundle {
        let dir = TempDir::new(&format!("berth-bundle-{name}"));
        write_busybox_rootfs(&dir.path().join("rootfs"));
        let bundle = Bundle { spec: default_spec(args, &container_id(name)), dir };
        bundle.write_spec();
        bundle
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn rootfs(&self) -> PathBuf {
        self.dir.path().join("rootfs")
    }

    /// The container's cgroup path relative to each hierarchy's root.
    pub fn cgroups_path(&self) -> String {
        self.spec["linux"]["cgroupsPath"].as_str().unwrap().to_string()
    }

    /// Writes `spec` to config.json.
    pub fn write_spec(&self) {
        fs::write(self.path().join("config.json"), serde_json::to_vec_pretty(&self.spec).unwrap()).unwrap();
    }

    /// Sets `process.args` and writes the spec.
    pub fn set_args(&mut self, args: &[&str]) {
        self.spec["process"]["args"] = json!(args);
        self.write_spec();
    }
}

impl Drop for Bundle {
    /// Removes the container's cgroup if the runtime left it (the rootfs goes with the dir).
    fn drop(&mut self) {
        if let Some(path) = self.spec["linux"]["cgroupsPath"].as_str() {
            crate::runtime::remove_cgroup(path);
        }
    }
}

/// A tar of a minimal Debian bookworm root filesystem made with debootstrap, built once
/// and kept under `target/fixtures/` (later runs reuse it; `cargo clean` removes it).
pub fn debian_rootfs_tar() -> PathBuf {
    let dir = crate::bench::bench_dir().with_file_name("fixtures");
    fs::create_dir_all(&dir).unwrap();
    let tar = dir.join("debian-bookworm-minbase.tar");
    // One builder at a time, across test processes.
    let lock = fs::File::create(dir.join("debian.lock")).unwrap();
    let _guard = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive).map_err(|(_, e)| e).unwrap();
    if tar.exists() {
        return tar;
    }
    let staging = TempDir::new("berth-debootstrap");
    let rootfs = staging.path().join("rootfs");
    let status = Command::new("debootstrap")
        .args(["--variant=minbase", "bookworm"])
        .arg(&rootfs)
        .arg("http://deb.debian.org/debian")
        .stdout(std::process::Stdio::null())
        .status()
        .expect("cannot run debootstrap; install Debian's debootstrap (make deps does)");
    assert!(status.success(), "debootstrap of Debian bookworm failed");
    let partial = dir.join("debian-bookworm-minbase.tar.partial");
    let status = Command::new("tar").arg("-C").arg(&rootfs).arg("-cf").arg(&partial).arg(".").status().unwrap();
    assert!(status.success(), "cannot tar the Debian rootfs");
    fs::rename(&partial, &tar).unwrap();
    tar
}
