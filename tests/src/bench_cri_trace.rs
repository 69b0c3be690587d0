//! The cri and shim benches' call tracing, for where a pod's or a container's time goes:
//! wrappers around the shim binary, the runtime and each CNI plugin (links to berth-bench, which runs the real
//! executable as its child and logs when it ran), and a ttrpc proxy between containerd and
//! each serving shim that logs every task-API call's window. All times are CLOCK_MONOTONIC
//! nanoseconds, one clock for every process.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use crate::bench::{median, time};

/// Each wrapper directory's description of its links: the log, the proxy's control socket,
/// and per name the part and the real executable.
const CONFIG: &str = ".wrapped";

/// Which part of a stack a call belongs to.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum Part {
    Shim,
    Runtime,
    Plugin,
}

impl Part {
    fn name(self) -> &'static str {
        match self {
            Part::Shim => "shim",
            Part::Runtime => "runtime",
            Part::Plugin => "plugin",
        }
    }

    fn parse(name: &str) -> Option<Part> {
        [Part::Shim, Part::Runtime, Part::Plugin].into_iter().find(|p| p.name() == name)
    }
}

/// One call: its part, what it was (`start`, `Create`, `create`, `bridge ADD`, ...) and
/// when it ran.
#[derive(Clone, Debug)]
pub struct Window {
    pub part: Part,
    pub what: String,
    pub start: u64,
    pub end: u64,
}

pub fn monotonic_ns() -> u64 {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

/// The tracing of one node: its wrapper directories' shared log and its ttrpc proxy.
pub struct Tracer {
    dir: PathBuf,
    log: PathBuf,
    control: PathBuf,
    calls: Arc<Mutex<Vec<Window>>>,
}

impl Tracer {
    /// Starts the proxy's control socket in `dir` (short: the proxies' socket paths live there).
    pub fn start(dir: &Path) -> Tracer {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        let control = dir.join("control.sock");
        let listener =
            UnixListener::bind(&control).unwrap_or_else(|e| panic!("cannot listen on {}: {e}", control.display()));
        let calls = Arc::new(Mutex::new(Vec::new()));
        let (proxies, windows) = (dir.to_path_buf(), calls.clone());
        std::thread::spawn(move || serve_control(listener, &proxies, &windows));
        Tracer { dir: dir.to_path_buf(), log: dir.join("calls.log"), control, calls }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Makes `wrappers/name` a wrapper of `real` counted as `part`.
    pub fn wrap(&self, part: Part, wrappers: &Path, name: &str, real: &Path) {
        std::fs::create_dir_all(wrappers).unwrap_or_else(|e| panic!("cannot create {}: {e}", wrappers.display()));
        let config_path = wrappers.join(CONFIG);
        let mut config: Value = std::fs::read_to_string(&config_path)
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or_else(|| json!({ "log": self.log, "control": self.control, "wrapped": {} }));
        config["wrapped"][name] = json!({ "part": part.name(), "real": real });
        std::fs::write(&config_path, config.to_string())
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", config_path.display()));
        let berth_bench = std::env::current_exe().expect("cannot find berth-bench itself");
        std::os::unix::fs::symlink(&berth_bench, wrappers.join(name)).unwrap_or_else(|e| {
            panic!("cannot link {} to {}: {e}", wrappers.join(name).display(), berth_bench.display())
        });
    }

    /// What a wrapper adds to each call it wraps: `/bin/true` through a wrapper against
    /// `/bin/true` itself (median of 20, alternated).
    pub fn wrapper_cost(&self) -> Duration {
        let probes = self.dir.join("probe");
        if !probes.join("true").exists() {
            self.wrap(Part::Runtime, &probes, "true", Path::new("/bin/true"));
        }
        let run = |program: &Path| {
            time(|| {
                let status =
                    Command::new(program).status().unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
                assert!(status.success(), "{} failed: {status}", program.display());
            })
        };
        let (mut direct, mut wrapped) = (Vec::new(), Vec::new());
        for _ in 0..20 {
            direct.push(run(Path::new("/bin/true")));
            wrapped.push(run(&probes.join("true")));
        }
        median(&mut wrapped).saturating_sub(median(&mut direct))
    }

    /// Every call traced so far: the wrappers' and the proxies'.
    pub fn calls(&self) -> Vec<Window> {
        let mut calls = self.calls.lock().unwrap().clone();
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        for line in log.lines() {
            let fields: Vec<&str> = line.splitn(4, '\t').collect();
            let parsed = match fields[..] {
                [part, start, end, what] => Part::parse(part)
                    .zip(start.parse().ok())
                    .zip(end.parse().ok())
                    .map(|((part, start), end)| Window { part, what: what.to_string(), start, end }),
                _ => None,
            };
            calls.push(parsed.unwrap_or_else(|| panic!("{} has a bad line: {line:?}", self.log.display())));
        }
        calls
    }
}

/// The length of the union of `intervals`.
pub fn covered(mut intervals: Vec<(u64, u64)>) -> u64 {
    intervals.sort();
    let mut total = 0;
    let mut reach = 0;
    for (start, end) in intervals {
        let start = start.max(reach);
        if end > start {
            total += end - start;
            reach = end;
        }
    }
    total
}

/// berth-bench started through a wrapper's link: runs the real executable and logs the call.
/// None when berth-bench was started as itself.
pub fn wrapper_main() -> Option<i32> {
    let argv0 = PathBuf::from(std::env::args_os().next()?);
    let name = argv0.file_name()?.to_str()?.to_string();
    if name == "berth-bench" {
        return None;
    }
    let config_path = argv0.parent().unwrap_or(Path::new(".")).join(CONFIG);
    let config: Value = match std::fs::read_to_string(&config_path).map(|t| serde_json::from_str(&t)) {
        Ok(Ok(config)) => config,
        _ => {
            eprintln!("berth-bench: started as {} without a readable {}", argv0.display(), config_path.display());
            return Some(2);
        }
    };
    let wrapped = &config["wrapped"][&name];
    let (Some(part), Some(real)) = (wrapped["part"].as_str().and_then(Part::parse), wrapped["real"].as_str()) else {
        eprintln!("berth-bench: {} does not describe {name}", config_path.display());
        return Some(2);
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let log = Path::new(config["log"].as_str().unwrap_or_default());
    let control = Path::new(config["control"].as_str().unwrap_or_default());
    Some(match part {
        Part::Shim if args.last().map(String::as_str) == Some("start") => shim_start(real, &args, log, control),
        _ => timed_call(part, real, &name, &args, log),
    })
}

/// Runs `real ARGS` with this process's stdio and logs when it ran; its exit code.
fn timed_call(part: Part, real: &str, name: &str, args: &[String], log: &Path) -> i32 {
    let start = monotonic_ns();
    let status = Command::new(real).args(args).status();
    let end = monotonic_ns();
    let status = match status {
        Ok(status) => status,
        Err(e) => {
            eprintln!("berth-bench: cannot run {real}: {e}");
            return 127;
        }
    };
    append(log, part, start, end, &describe(part, name, args));
    status.code().unwrap_or_else(|| 128 + std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(0))
}

/// The shim's `start`: the real one's address is handed to the proxy, and containerd gets
/// the proxy's.
fn shim_start(real: &str, args: &[String], log: &Path, control: &Path) -> i32 {
    let start = monotonic_ns();
    let out = Command::new(real).args(args).stdout(Stdio::piped()).stderr(Stdio::inherit()).output();
    let end = monotonic_ns();
    let out = match out {
        Ok(out) => out,
        Err(e) => {
            eprintln!("berth-bench: cannot run {real}: {e}");
            return 127;
        }
    };
    if !out.status.success() {
        let _ = std::io::stdout().write_all(&out.stdout);
        return out.status.code().unwrap_or(1);
    }
    append(log, Part::Shim, start, end, "start");
    let address = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let proxied = UnixStream::connect(control).and_then(|mut conn| {
        writeln!(conn, "{address}")?;
        let mut line = String::new();
        BufReader::new(conn).read_line(&mut line)?;
        Ok(line.trim().to_string())
    });
    match proxied {
        Ok(proxy) if !proxy.is_empty() => {
            print!("{proxy}");
            0
        }
        other => {
            eprintln!("berth-bench: the proxy on {} gave no address for {address}: {other:?}", control.display());
            1
        }
    }
}

/// What a call was: the runtime's subcommand, a plugin's name and CNI command.
fn describe(part: Part, name: &str, args: &[String]) -> String {
    const SUBCOMMANDS: [&str; 12] =
        ["create", "start", "delete", "kill", "state", "exec", "features", "update", "ps", "pause", "resume", "run"];
    match part {
        Part::Runtime => args.iter().find(|a| SUBCOMMANDS.contains(&a.as_str())).cloned().unwrap_or(args.join(" ")),
        Part::Plugin => format!("{name} {}", std::env::var("CNI_COMMAND").unwrap_or_default()),
        Part::Shim => args.last().cloned().unwrap_or_default(),
    }
}

/// One line per call, written at once to a file opened for appending, so that concurrent
/// callers' lines do not mix.
fn append(log: &Path, part: Part, start: u64, end: u64, what: &str) {
    let line = format!("{}\t{start}\t{end}\t{}\n", part.name(), what.replace(['\t', '\n'], " "));
    let written =
        std::fs::OpenOptions::new().create(true).append(true).open(log).and_then(|mut f| f.write_all(line.as_bytes()));
    if let Err(e) = written {
        eprintln!("berth-bench: cannot log a call to {}: {e}", log.display());
    }
}

/// Answers each wrapper's request (a serving shim's address) with a new proxy socket for it.
fn serve_control(listener: UnixListener, dir: &Path, calls: &Arc<Mutex<Vec<Window>>>) {
    for (n, conn) in listener.incoming().enumerate() {
        let Ok(conn) = conn else { continue };
        let mut line = String::new();
        if BufReader::new(&conn).read_line(&mut line).is_err() {
            continue;
        }
        let upstream = PathBuf::from(line.trim().trim_start_matches("unix://"));
        let path = dir.join(format!("p{n}.sock"));
        let proxy = match UnixListener::bind(&path) {
            Ok(proxy) => proxy,
            Err(e) => {
                eprintln!("berth-bench: cannot listen on {}: {e}", path.display());
                continue;
            }
        };
        let calls = calls.clone();
        std::thread::spawn(move || {
            for client in proxy.incoming().flatten() {
                match UnixStream::connect(&upstream) {
                    Ok(shim) => relay_connection(client, shim, &calls),
                    Err(e) => eprintln!("berth-bench: cannot reach the shim on {}: {e}", upstream.display()),
                }
            }
        });
        let _ = writeln!(&conn, "unix://{}", path.display());
    }
}

/// Relays one containerd connection to its shim, both ways, on two threads.
fn relay_connection(client: UnixStream, shim: UnixStream, calls: &Arc<Mutex<Vec<Window>>>) {
    let pending: Arc<Mutex<HashMap<u32, (String, u64)>>> = Arc::default();
    let (client_in, shim_out) = (client.try_clone().unwrap(), shim.try_clone().unwrap());
    let requests = pending.clone();
    std::thread::spawn(move || {
        relay(client_in, shim_out, |kind, stream, payload, at| {
            if kind == REQUEST {
                requests.lock().unwrap().insert(stream, (method(payload), at));
            }
        })
    });
    let calls = calls.clone();
    std::thread::spawn(move || {
        relay(shim, client, |kind, stream, _, at| {
            if kind == RESPONSE {
                if let Some((what, start)) = pending.lock().unwrap().remove(&stream) {
                    calls.lock().unwrap().push(Window { part: Part::Shim, what, start, end: at });
                }
            }
        })
    });
}

/// ttrpc's message types.
const REQUEST: u8 = 1;
const RESPONSE: u8 = 2;

/// Copies ttrpc frames (a 10-byte header: length, stream id, type, flags; then the
/// payload) from `from` to `to`, telling `seen` of each when it has arrived whole.
fn relay(mut from: UnixStream, mut to: UnixStream, mut seen: impl FnMut(u8, u32, &[u8], u64)) {
    let mut header = [0u8; 10];
    while from.read_exact(&mut header).is_ok() {
        let length = u32::from_be_bytes(header[0..4].try_into().unwrap()) as usize;
        let stream = u32::from_be_bytes(header[4..8].try_into().unwrap());
        let mut payload = vec![0u8; length];
        if from.read_exact(&mut payload).is_err() {
            break;
        }
        seen(header[8], stream, &payload, monotonic_ns());
        if to.write_all(&header).and_then(|_| to.write_all(&payload)).is_err() {
            break;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}

/// The method a ttrpc Request names (its field 2), or "?".
fn method(request: &[u8]) -> String {
    let mut rest = request;
    while let Some((key, after)) = varint(rest) {
        let (field, wire) = (key >> 3, key & 7);
        rest = after;
        match wire {
            0 => rest = varint(rest).map(|(_, r)| r).unwrap_or_default(),
            2 => {
                let Some((len, after)) = varint(rest) else { break };
                let Some(value) = after.get(..len as usize) else { break };
                if field == 2 {
                    return String::from_utf8_lossy(value).into_owned();
                }
                rest = &after[len as usize..];
            }
            _ => break,
        }
    }
    "?".into()
}

fn varint(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let mut value = 0u64;
    for (i, byte) in bytes.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, &bytes[i + 1..]));
        }
    }
    None
}
