//! A private containerd for shim tests: its own root, state and sockets in a temporary
//! directory, stopped by its pid; containers it still has are removed first.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::fixtures::TempDir;

pub struct Containerd {
    pub dir: TempDir,
    /// A namespace of the test's own: the shim keeps berth's state per namespace under
    /// /run/containerd/berth, which the test removes again.
    pub namespace: String,
    daemon: Child,
    /// A directory searched before PATH when containerd looks up shim binaries.
    shim_dir: Option<PathBuf>,
    /// Environment containerd (and so every shim it starts) gets on top of the test's.
    env: Vec<(String, String)>,
    /// With the CRI plugin (`Setup::cri`), whose namespace is not the test's own.
    cri: bool,
}

/// What a test's containerd runs with beyond its private root, state and sockets.
#[derive(Default)]
pub struct Setup<'a> {
    /// Searched before PATH when containerd looks up shim binaries.
    pub shim_dir: Option<&'a Path>,
    /// Environment containerd (and so every shim it starts) gets on top of the test's.
    pub env: &'a [(&'a str, &'a str)],
    /// TOML appended to the config: plugin sections.
    pub plugins: String,
    /// Keep the CRI plugin; the containerd namespace is then its `k8s.io`. Run such a
    /// containerd only inside private mount and network namespaces with a tmpfs on /run.
    pub cri: bool,
}

impl Containerd {
    /// Starts containerd (without its CRI plugin) and waits for its socket.
    pub fn start() -> Containerd {
        Containerd::start_with_shims(None)
    }

    /// As `start`, with `shim_dir` first on containerd's PATH, so runtime names resolve to
    /// the shims in it.
    pub fn start_with_shims(shim_dir: Option<&Path>) -> Containerd {
        Containerd::start_with(shim_dir, &[])
    }

    /// As `start_with_shims`, with extra environment for containerd and its shims.
    pub fn start_with(shim_dir: Option<&Path>, env: &[(&str, &str)]) -> Containerd {
        Containerd::start_setup(Setup { shim_dir, env, ..Setup::default() })
    }

    /// containerd as `setup` says, and waits for its socket.
    pub fn start_setup(setup: Setup) -> Containerd {
        let dir = TempDir::new("berth-ctd"); // short: socket paths are limited to 108 bytes
        let d = dir.path();
        let disabled = if setup.cri { "" } else { "\"io.containerd.grpc.v1.cri\"" };
        let config = format!(
            "version = 2\nroot = \"{0}/root\"\nstate = \"{0}/state\"\ndisabled_plugins = [{disabled}]\n[grpc]\n  address = \"{0}/containerd.sock\"\n[ttrpc]\n  address = \"{0}/containerd.sock.ttrpc\"\n{1}",
            d.display(),
            setup.plugins
        );
        std::fs::write(d.join("config.toml"), config).unwrap();
        let shim_dir = setup.shim_dir.map(Path::to_path_buf);
        let env: Vec<(String, String)> = setup.env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let daemon = spawn_daemon(d, shim_dir.as_deref(), &env);
        let namespace = if setup.cri {
            // The CRI plugin keeps everything in this one namespace.
            "k8s.io".to_string()
        } else {
            // Short: containerd's identifiers are at most 76 characters.
            static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            format!("berth-test-{}-{}", std::process::id(), NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
        };
        let containerd = Containerd { dir, namespace, daemon, shim_dir, env, cri: setup.cri };
        containerd.wait_ready();
        containerd
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.ctr(&["version"]).status.success() {
            assert!(
                Instant::now() < deadline,
                "containerd did not come up; see {}",
                self.dir.path().join("containerd.log").display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("containerd.sock")
    }

    /// `ctr -a SOCKET ARGS`.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("ctr");
        command.arg("-a").arg(self.socket()).arg("-n").arg(&self.namespace).args(args).stdin(Stdio::null());
        command
    }

    pub fn ctr(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("cannot run ctr")
    }

    /// `ctr run [extra] --runtime SHIM --runc-root R --fifo-dir F IMAGE ID ARGS...`: a
    /// container from an image in containerd's store run through the shim binary `shim`,
    /// with the runtime's state and ctr's fifos inside the private directory.
    pub fn run_image(&self, shim: &Path, extra: &[&str], image: &str, id: &str, args: &[&str]) -> Output {
        let private = self.dir.path();
        let (root, fifos) = (private.join("berth"), private.join("fifo"));
        let mut all = vec!["run"];
        all.extend(extra);
        all.extend([
            "--runtime",
            shim.to_str().unwrap(),
            "--runc-root",
            root.to_str().unwrap(),
            "--fifo-dir",
            fifos.to_str().unwrap(),
            image,
            id,
        ]);
        all.extend(args);
        self.ctr(&all)
    }

    /// The status `ctr task ls` shows for `id` ("" when there is no task).
    pub fn task_status(&self, id: &str) -> String {
        let out = String::from_utf8_lossy(&self.ctr(&["task", "ls"]).stdout).into_owned();
        out.lines()
            .find(|l| l.split_whitespace().next() == Some(id))
            .and_then(|l| l.split_whitespace().nth(2))
            .unwrap_or("")
            .to_string()
    }

    /// Kills task `id` with SIGKILL and waits (at most 10 s) until it has stopped.
    pub fn kill_task(&self, id: &str) {
        let out = self.ctr(&["task", "kill", "-s", "KILL", id]);
        assert!(out.status.success(), "cannot kill task {id}: {}", String::from_utf8_lossy(&out.stderr));
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.task_status(id) == "RUNNING" {
            assert!(Instant::now() < deadline, "task {id} did not stop after SIGKILL");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `ctr images import` of an archive the test built; containerd unpacks it into its
    /// default (overlayfs) snapshotter.
    pub fn import(&self, archive: &crate::oci_image::OciArchive) {
        let out = self.ctr(&["images", "import", archive.path().to_str().unwrap()]);
        assert!(
            out.status.success(),
            "ctr images import of {} failed: {}",
            archive.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The bundle directory containerd makes for task `id` (the shim mounts its rootfs there).
    pub fn bundle(&self, id: &str) -> PathBuf {
        self.dir.path().join("state/io.containerd.runtime.v2.task").join(&self.namespace).join(id)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// Stops containerd by its pid and waits for it, leaving its state on disk (tasks
    /// and shims keep running), for restart tests.
    pub fn stop_daemon(&mut self) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.daemon.id() as i32), nix::sys::signal::SIGTERM);
        let _ = self.daemon.wait();
    }

    /// Starts containerd again on the same directory.
    pub fn restart(&mut self) {
        self.stop_daemon();
        self.daemon = spawn_daemon(self.dir.path(), self.shim_dir.as_deref(), &self.env);
        self.wait_ready();
    }
}

/// `ctr events` running in the background, its lines read as they come; killed by its
/// pid and reaped on drop, also when the test fails.
pub struct EventWatch {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl EventWatch {
    /// Waits (at most 10 s) for an event on `topic` (`/tasks/exit`) whose line mentions
    /// `container` as its id; returns that line, or panics with every event seen.
    pub fn wait_for(&mut self, topic: &str, container: &str) -> String {
        let id = format!("\"{container}\"");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let found = line.split_whitespace().any(|w| w == topic) && line.contains(&id);
                    self.seen.push(line.clone());
                    if found {
                        return line;
                    }
                }
                Err(_) => panic!("no {topic} event for {container} within 10 s; ctr events saw: {:#?}", self.seen),
            }
        }
    }
}

impl Drop for EventWatch {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), nix::sys::signal::SIGKILL);
        let _ = self.child.wait();
    }
}

impl Containerd {
    /// Starts `ctr events` on this containerd.
    pub fn watch_events(&self) -> EventWatch {
        let mut child = self.command(&["events"]).stdout(Stdio::piped()).spawn().expect("cannot run ctr events");
        let stdout = child.stdout.take().expect("ctr events has no stdout");
        let (send, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)).map_while(Result::ok) {
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        EventWatch { child, lines, seen: Vec::new() }
    }
}

/// containerd on the config in `dir`, logging to `dir/containerd.log`.
fn spawn_daemon(dir: &Path, shim_dir: Option<&Path>, env: &[(String, String)]) -> Child {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("containerd.log")).unwrap();
    let mut command = Command::new("containerd");
    command.envs(env.iter().map(|(k, v)| (k, v)));
    if let Some(shims) = shim_dir {
        command.env("PATH", format!("{}:{}", shims.display(), std::env::var("PATH").unwrap_or_default()));
    }
    command
        .arg("--config")
        .arg(dir.join("config.toml"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("cannot start containerd; install Debian's containerd (make deps does)")
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let listed = self.ctr(&["containers", "list", "-q"]);
        for id in String::from_utf8_lossy(&listed.stdout).lines() {
            // Out of the restart monitor's hands first (an empty value removes the label);
            // a pass it began before may still start a task, so try again until the
            // container is gone.
            let _ = self.ctr(&["containers", "label", id, "containerd.io/restart.status="]);
            for _ in 0..5 {
                let _ = self.ctr(&["task", "kill", "-s", "KILL", id]);
                std::thread::sleep(Duration::from_millis(100));
                let _ = self.ctr(&["task", "delete", "--force", id]);
                if self.ctr(&["containers", "delete", id]).status.success() {
                    break;
                }
            }
        }
        let _ = self.ctr(&["namespaces", "remove", &self.namespace]);
        self.stop_daemon();
        // ctr puts each container's cgroup under /<namespace>/<id>; berth removes the
        // container's, the namespace's parent is the test's to remove. (Not k8s.io's: the CRI
        // plugin's pods use the test's own cgroup parent, and a real node's may exist.)
        let own_namespaces = if self.cri { vec![] } else { crate::runtime::cgroup_mounts() };
        // A container's cgroup may still be on its way out (its last process exiting):
        // try again for a while before leaving the directory behind.
        let deadline = Instant::now() + Duration::from_secs(5);
        for mount in own_namespaces {
            let parent = mount.join(&self.namespace);
            while parent.exists() {
                for child in std::fs::read_dir(&parent).into_iter().flatten().flatten() {
                    let _ = std::fs::remove_dir(child.path());
                }
                if std::fs::remove_dir(&parent).is_ok() || Instant::now() > deadline {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        unmount_below(self.dir.path());
        // The shim's per-namespace state root, then shared parents only when empty.
        let _ = std::fs::remove_dir_all(Path::new("/run/containerd/berth").join(&self.namespace));
        for dir in ["/run/containerd/berth", "/run/containerd/s", "/run/containerd"] {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// Mount points at or below `dir` in this process's mount namespace, with their
/// filesystem types.
pub fn mounts_below(dir: &Path) -> Vec<(PathBuf, String)> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| {
            let point = PathBuf::from(l.split_whitespace().nth(4)?);
            let kind = l.split(" - ").nth(1)?.split_whitespace().next()?.to_string();
            point.starts_with(dir).then_some((point, kind))
        })
        .collect()
}

/// Lazily unmounts every mount below `dir`, deepest first.
pub fn unmount_below(dir: &Path) {
    let mut points: Vec<PathBuf> = mounts_below(dir).into_iter().map(|(point, _)| point).collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for point in points {
        let _ = nix::mount::umount2(&point, nix::mount::MntFlags::MNT_DETACH);
    }
}
