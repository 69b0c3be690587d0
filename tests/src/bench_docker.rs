//! `make bench` docker section: time from `berth-image unpack` of a web image to its page
//! answering on the published port, against `podman run -d -p` with runc on the same image
//! (an oci-archive the bench builds: busybox httpd serving one page on port 80), alternated.
//! Runs in a private network and mount namespace (the bench re-runs itself under
//! `unshare -n -m`); berth on a network made by `berth-cni network create` with berth's
//! plugins, podman on its default network with Debian's reference plugins; every store,
//! state and config directory is private, and the page is fetched from a test host (a
//! namespace of its own behind a veth).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::bench::{median, ms, ratio, Table};
use crate::bins::bin;
use crate::cni_dirs::CniDirs;
use crate::oci_image::{LayerDir, OciArchive};

const ROUNDS: usize = 15;
/// Which part of the bench this process is: unset (outside), the namespace's supervisor,
/// or the bench itself.
const STAGE: &str = "BERTH_BENCH_DOCKER_STAGE";
const DIR: &str = "BERTH_BENCH_DOCKER_DIR";
const REFERENCE_DIR: &str = "/usr/lib/cni";
const PAGE: &str = "berth-bench-docker\n";
const NETWORK: &str = "benchnet";
/// The private namespace's address towards the test host, where ports are published.
const PUBLISHED_ON: [u8; 4] = [192, 168, 200, 1];
const POLL_GAP: Duration = Duration::from_millis(2);
/// A refused connection comes back at once; this bounds one whose SYN goes unanswered
/// (the container's address not yet there), so the next try follows soon.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(10);
const ANSWER_DEADLINE: Duration = Duration::from_secs(30);

fn sh(script: &str) {
    let out = Command::new("sh").arg("-ec").arg(script).output().expect("cannot run sh");
    assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Asserts that the command `what` succeeded, with what it printed if not; its stdout.
fn check(what: &str, out: Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn run() {
    match std::env::var(STAGE).as_deref() {
        Err(_) => outside(),
        Ok("namespace") => supervise(),
        Ok("bench") => bench(),
        Ok(other) => panic!("{STAGE}={other:?} is not a stage of the docker bench"),
    }
}

/// Outside: a private directory and a cgroup parent for podman, the namespace's run, and
/// the removal of both afterwards, also when the bench failed.
fn outside() {
    for program in ["podman", "conmon", "runc", "unshare"] {
        assert!(crate::privilege::have_program(program), "{program} is missing; `make deps` installs it");
    }
    assert!(
        Path::new(REFERENCE_DIR).join("portmap").exists(),
        "the reference plugins are missing; `make deps` installs containernetworking-plugins"
    );
    // Short: podman refuses a runroot over 50 characters.
    crate::bench::run_in_private_namespaces("docker", STAGE, DIR, "bdock");
}

/// The private directory's parts, shared by the bench and its supervisor's cleanup.
struct Dirs {
    root: PathBuf,
}

impl Dirs {
    fn from_env() -> Dirs {
        Dirs { root: PathBuf::from(std::env::var_os(DIR).expect("the docker bench's directory is not set")) }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// `berth --root PRIVATE ARGS...`.
    fn berth(&self, args: &[&str]) -> Command {
        let mut command = Command::new(bin("berth"));
        command.arg("--root").arg(self.path("berth")).args(args).stdin(Stdio::null());
        command
    }

    /// `berth-image --store PRIVATE ARGS...`.
    fn berth_image(&self, args: &[&str]) -> Command {
        let mut command = Command::new(bin("berth-image"));
        command.arg("--store").arg(self.path("store")).args(args).stdin(Stdio::null());
        command
    }

    /// berth-cni's private directories.
    fn cni(&self) -> CniDirs {
        CniDirs::under(&self.path("cni"))
    }

    /// `podman` with private storage, run root, tmp dir, CNI config dir and events log,
    /// runc as the runtime and the CNI backend on Debian's reference plugins.
    fn podman(&self, args: &[&str]) -> Command {
        let mut command = Command::new("podman");
        command
            .env("CONTAINERS_CONF", self.path("containers.conf"))
            .arg("--root")
            .arg(self.path("pm"))
            .arg("--runroot")
            .arg(self.path("rr"))
            .arg("--tmpdir")
            .arg(self.path("pt"))
            .arg("--cni-config-dir")
            .arg(self.path("pnet"))
            .args(["--storage-driver", "overlay", "--runtime", "runc"])
            .args(args)
            .stdin(Stdio::null());
        command
    }

    fn write_podman_conf(&self) {
        // podman's default nofile limit is above this machine's hard limit; the events log
        // and cgroups stay private.
        let conf = format!(
            "[containers]\ndefault_ulimits = []\n[engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\nevents_logfile_path = \"{}\"\n[network]\nnetwork_backend = \"cni\"\ncni_plugin_dirs = [\"{REFERENCE_DIR}\"]\nnetwork_config_dir = \"{}\"\n",
            self.path("events.log").display(),
            self.path("pnet").display()
        );
        std::fs::create_dir_all(self.path("pnet")).unwrap();
        std::fs::write(self.path("containers.conf"), conf).unwrap();
    }
}

/// Inside the private namespaces: /run and host-local's default store made private, the
/// test host, the bench as a child process; then whatever it left (containers, bundles) is
/// removed, also when it failed, before the namespaces go.
fn supervise() {
    let dirs = Dirs::from_env();
    crate::private_namespaces::make_run_and_var_lib_private();
    sh("ip netns add testhost
        ip link add th0 type veth peer name eth0 netns testhost
        ip addr add 192.168.200.1/24 dev th0 && ip link set th0 up
        ip -n testhost addr add 192.168.200.2/24 dev eth0 && ip -n testhost link set eth0 up
        ip -n testhost link set lo up && ip -n testhost route add default via 192.168.200.1");
    let status = Command::new(std::env::current_exe().unwrap())
        .arg("docker")
        .env(STAGE, "bench")
        .status()
        .expect("cannot run the docker bench");
    let mut left = Vec::new();
    for entry in std::fs::read_dir(dirs.path("berth")).into_iter().flatten().flatten() {
        let id = entry.file_name().to_string_lossy().into_owned();
        left.push(format!("berth container {id}"));
        let _ = dirs.berth(&["delete", "--force", &id]).status();
    }
    for entry in std::fs::read_dir(dirs.path("bundles")).into_iter().flatten().flatten() {
        left.push(format!("bundle {}", entry.path().display()));
        let _ = dirs.berth_image(&["release", entry.path().to_str().unwrap()]).status();
    }
    if dirs.path("pm").exists() {
        let out = dirs.podman(&["ps", "--all", "--quiet"]).output();
        if out.as_ref().is_ok_and(|o| !o.stdout.is_empty()) {
            left.push("podman containers".into());
        }
        let _ = dirs.podman(&["rm", "--all", "--force", "--time", "0"]).output();
        let _ = dirs.podman(&["rmi", "--all", "--force"]).output();
    }
    if status.success() {
        assert!(left.is_empty(), "the docker bench left {}", left.join(", "));
    }
    std::process::exit(status.code().unwrap_or(1));
}

/// Fetches the page from the test host's network namespace, on a thread that entered it,
/// so that polling starts no process and costs both sides the same.
struct Prober {
    ports: mpsc::Sender<u16>,
    answers: mpsc::Receiver<Option<Instant>>,
}

impl Prober {
    fn start(netns: &Path) -> Prober {
        let netns = std::fs::File::open(netns).unwrap_or_else(|e| panic!("cannot open {}: {e}", netns.display()));
        let (ports, watched) = mpsc::channel::<u16>();
        let (answered, answers) = mpsc::channel();
        std::thread::spawn(move || {
            nix::sched::setns(&netns, nix::sched::CloneFlags::CLONE_NEWNET)
                .expect("cannot enter the test host's network namespace");
            for port in watched {
                let _ = answered.send(first_answer(SocketAddr::from((PUBLISHED_ON, port))));
            }
        });
        Prober { ports, answers }
    }

    /// Starts polling `port`, from now on.
    fn watch(&self, port: u16) {
        self.ports.send(port).expect("the prober thread is gone");
    }

    /// When the page first answered since `watch`, or None if it never did in time.
    fn answered(&self) -> Option<Instant> {
        self.answers.recv().expect("the prober thread is gone")
    }
}

/// Polls `addr` every POLL_GAP until the page answers; the moment it did.
fn first_answer(addr: SocketAddr) -> Option<Instant> {
    let deadline = Instant::now() + ANSWER_DEADLINE;
    while Instant::now() < deadline {
        if page_answers(addr) {
            return Some(Instant::now());
        }
        std::thread::sleep(POLL_GAP);
    }
    None
}

/// One HTTP GET of `/`: true when it answers 200 with the page.
fn page_answers(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    if stream.write_all(b"GET / HTTP/1.0\r\n\r\n").is_err() {
        return false;
    }
    let mut response = Vec::new();
    if stream.read_to_end(&mut response).is_err() {
        return false;
    }
    let response = String::from_utf8_lossy(&response);
    response.starts_with("HTTP/1.")
        && response.lines().next().is_some_and(|l| l.contains(" 200 "))
        && response.ends_with(PAGE)
}

/// One side's times in one round, from the start of its first command.
struct Round {
    /// When the first command (unpack, podman run) returned.
    first_command: Duration,
    /// When the second command (berth run -d) returned; podman has none.
    second_command: Option<Duration>,
    /// When the page first answered.
    answered: Duration,
    /// The untimed teardown, timed on its own.
    teardown: Duration,
}

fn bench() {
    let dirs = Dirs::from_env();
    std::fs::create_dir_all(dirs.path("bundles")).unwrap();
    crate::plugin_dir::fill(&dirs.cni().bin, &bin("berth-cni"));
    dirs.write_podman_conf();

    // The web image: busybox httpd serving one page on port 80, the same archive for both.
    let config = json!({
        "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        "Cmd": ["httpd", "-f", "-p", "80", "-h", "/www"],
        "ExposedPorts": {"80/tcp": {}}
    });
    let archive = OciArchive::build_with_config(
        "berth.test/bench-web:1",
        &[LayerDir::busybox().file("www/index.html", PAGE)],
        config,
    );
    let archive_path = archive.path().display().to_string();
    let imported = check("berth-image import", dirs.berth_image(&["import", &archive_path]).output().unwrap());
    let berth_image = imported.lines().next().expect("berth-image import named no image").to_string();
    let pulled = check(
        "podman pull oci-archive",
        dirs.podman(&["pull", "-q", &format!("oci-archive:{archive_path}")]).output().unwrap(),
    );
    let podman_image = pulled.lines().last().expect("podman pull printed no image id").trim().to_string();
    check("berth-cni network create", dirs.cni().output(&["network", "create", NETWORK, "--subnet", "10.99.0.0/24"]));

    let prober = Prober::start(Path::new("/run/netns/testhost"));
    let cgroup_parent = format!("/{}", std::env::var("BERTH_CGROUP_PARENT").expect("the cgroup parent is not set"));
    let mut berth_rounds = Vec::new();
    let mut podman_rounds = Vec::new();
    // One untimed warm-up each (podman makes its default network's bridge on first use).
    for round in 0..=ROUNDS {
        let berth = berth_round(&dirs, &prober, &berth_image, round);
        let podman = podman_round(&dirs, &prober, &podman_image, &cgroup_parent, round);
        if round > 0 {
            berth_rounds.push(berth);
            podman_rounds.push(podman);
        }
    }
    let left = check("berth list", dirs.berth(&["list", "--quiet"]).output().unwrap());
    assert!(left.trim().is_empty(), "berth containers left: {left}");
    let left = check("podman ps", dirs.podman(&["ps", "--all", "--quiet"]).output().unwrap());
    assert!(left.trim().is_empty(), "podman containers left: {left}");
    assert_eq!(std::fs::read_dir(dirs.path("bundles")).unwrap().count(), 0, "bundles left");

    let med = |rounds: &[Round], part: fn(&Round) -> Duration| median(&mut rounds.iter().map(part).collect::<Vec<_>>());
    let (berth_total, podman_total) = (med(&berth_rounds, |r| r.answered), med(&podman_rounds, |r| r.answered));
    let mut table = Table::new(
        &format!("docker: a web image from its store to its page answering on a published port, berth vs podman 4.3 with runc (median of {ROUNDS}, alternated)"),
        &["operation", "berth", "podman+runc", "berth/podman"],
    );
    table.row(vec![
        "unpack+run -d / podman run -d, until the page answers a test host (goal <= 0.5x)".into(),
        ms(berth_total),
        ms(podman_total),
        ratio(berth_total, podman_total),
    ]);
    let unpack = med(&berth_rounds, |r| r.first_command);
    let rest = med(&berth_rounds, |r| r.answered - r.first_command);
    table.row(vec!["  berth: berth-image unpack --network NET -p PORT:80".into(), ms(unpack), "".into(), "".into()]);
    table.row(vec!["  berth: then berth run -d, until the page answers".into(), ms(rest), "".into(), "".into()]);
    let run = med(&berth_rounds, |r| r.second_command.unwrap() - r.first_command);
    table.row(vec!["    of which berth run -d returns".into(), ms(run), "".into(), "".into()]);
    let podman_run = med(&podman_rounds, |r| r.first_command);
    table.row(vec!["  podman: podman run -d -p PORT:80 returns".into(), "".into(), ms(podman_run), "".into()]);
    let (berth_down, podman_down) = (med(&berth_rounds, |r| r.teardown), med(&podman_rounds, |r| r.teardown));
    table.row(vec![
        "teardown, not in the times above: berth delete -f + release / podman rm -f -t 0".into(),
        ms(berth_down),
        ms(podman_down),
        ratio(berth_down, podman_down),
    ]);
    table.publish("docker");
}

/// berth's round: unpack a bundle on the network publishing a fresh host port, `berth run
/// -d` it, until the page answers; then delete and release it.
fn berth_round(dirs: &Dirs, prober: &Prober, image: &str, round: usize) -> Round {
    let port = 18000 + round as u16;
    let id = format!("bench-web-{}-{round}", std::process::id());
    let bundle = dirs.path("bundles").join(format!("web{round}"));
    let bundle_arg = bundle.display().to_string();
    let publish = format!("{port}:80");
    let mut unpack = vec!["unpack", image, &bundle_arg, "--network", NETWORK, "-p", &publish];
    let cni_flags = dirs.cni().unpack_flags();
    unpack.extend(cni_flags.iter().map(String::as_str));
    // A detached container inherits berth's stdio: a pipe would stay open while it runs.
    let run_log = std::fs::File::create(dirs.path("berth-run.log")).unwrap();

    let started = Instant::now();
    prober.watch(port);
    let unpacked = dirs.berth_image(&unpack).output().unwrap();
    let first_command = started.elapsed();
    check("berth-image unpack", unpacked);
    let run = dirs
        .berth(&["run", "-d", "-b", &bundle_arg, &id])
        .stdout(run_log.try_clone().unwrap())
        .stderr(run_log)
        .status()
        .unwrap();
    let second_command = Some(started.elapsed());
    assert!(run.success(), "berth run -d failed: {}", std::fs::read_to_string(dirs.path("berth-run.log")).unwrap());
    let answered = prober
        .answered()
        .unwrap_or_else(|| panic!("berth's container {id} never answered on port {port} within {ANSWER_DEADLINE:?}"))
        - started;

    let down = Instant::now();
    check("berth delete --force", dirs.berth(&["delete", "--force", &id]).output().unwrap());
    check("berth-image release", dirs.berth_image(&["release", &bundle_arg]).output().unwrap());
    Round { first_command, second_command, answered, teardown: down.elapsed() }
}

/// podman's round: `podman run -d -p PORT:80 IMAGE` until the page answers; then `rm -f`.
fn podman_round(dirs: &Dirs, prober: &Prober, image: &str, cgroup_parent: &str, round: usize) -> Round {
    let port = 19000 + round as u16;
    let publish = format!("{port}:80");
    let started = Instant::now();
    prober.watch(port);
    let ran = dirs.podman(&["run", "-d", "--cgroup-parent", cgroup_parent, "-p", &publish, image]).output().unwrap();
    let first_command = started.elapsed();
    let id = check("podman run -d", ran).trim().to_string();
    let answered = prober
        .answered()
        .unwrap_or_else(|| panic!("podman's container {id} never answered on port {port} within {ANSWER_DEADLINE:?}"))
        - started;

    let down = Instant::now();
    check("podman rm -f", dirs.podman(&["rm", "--force", "--time", "0", &id]).output().unwrap());
    Round { first_command, second_command: None, answered, teardown: down.elapsed() }
}
