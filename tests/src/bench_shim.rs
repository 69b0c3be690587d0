//! `make bench` shim section: containerd-shim-berth-v2 against Debian's Go
//! containerd-shim-runc-v2 under a private containerd 1.6: per-container memory (PSS,
//! private) and threads with 10 detached containers; `ctr run --rm` latency of the shims
//! alone (both driving berth), from a rootfs directory and from an image in containerd's
//! store; the whole stack (berth's shim + berth against the Go shim + Debian's runc) on an
//! image from containerd's store; and, in a traced pass, where one such run's time goes (the
//! shim's `start`, Create, Start, the exit, Delete, Shutdown, and the runtime's calls in
//! them). Runs in private network and mount namespaces with a private /run (the bench
//! re-runs itself under `unshare -n -m`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::bench::{alternate, ms, ratio, time, Contestant, Table};
use crate::bench_cri_trace::{covered, monotonic_ns, Part, Tracer, Window};
use crate::containerd::Containerd;
use crate::cri_node::DEBIAN_RUNC;
use crate::fixtures::{write_busybox_rootfs, TempDir};
use crate::oci_image::{LayerDir, OciArchive};

const DETACHED: usize = 10;
const ROUNDS: usize = 20;
const GO_SHIM: &str = "/usr/bin/containerd-shim-runc-v2";
/// The runtime name under which containerd runs the Go shim and ctr passes runc options.
const RUNC_V2: &str = "io.containerd.runc.v2";
/// Which part of the bench this process is: unset (outside), the namespace's supervisor,
/// or the bench itself.
const STAGE: &str = "BERTH_BENCH_SHIM_STAGE";
const DIR: &str = "BERTH_BENCH_SHIM_DIR";

/// One stack under test: how `ctr run` names its shim, the runtime binary ctr hands the Go
/// shim (berth's shim runs the berth beside it), and the executable its shim processes run.
struct Stack {
    label: &'static str,
    runtime: String,
    runc_binary: Option<String>,
    exe: PathBuf,
}

impl Stack {
    fn short(&self) -> &str {
        self.label.split(' ').next().unwrap()
    }
}

/// Memory and threads of one shim process, from /proc.
struct Footprint {
    pss_kb: u64,
    private_kb: u64,
    threads: usize,
}

pub fn run() {
    match std::env::var(STAGE).as_deref() {
        Err(_) => {
            for program in ["containerd", "ctr", "unshare"] {
                assert!(crate::privilege::have_program(program), "{program} is missing; `make deps` installs it");
            }
            for path in [GO_SHIM, DEBIAN_RUNC] {
                assert!(Path::new(path).exists(), "{path} is missing; `make deps` installs containerd and runc");
            }
            crate::bench::run_in_private_namespaces("shim", STAGE, DIR, "bshim");
        }
        Ok("namespace") => crate::bench::supervise_in_private_namespaces("shim", STAGE),
        Ok("bench") => bench(),
        Ok(other) => panic!("{STAGE}={other:?} is not a stage of the shim bench"),
    }
}

/// `ctr run` of one container on `ctd`: `extra` flags, the stack's shim and runtime, and
/// either the image `image` or (None) the rootfs directory `rootfs`.
fn run_args(
    ctd: &Containerd,
    stack: &Stack,
    image: Option<&str>,
    rootfs: &Path,
    id: &str,
    extra: &[&str],
    args: &[&str],
) -> Vec<String> {
    let private = ctd.dir.path();
    let mut all: Vec<String> = vec!["run".into()];
    all.extend(extra.iter().map(|s| s.to_string()));
    all.extend(["--runtime".to_string(), stack.runtime.clone()]);
    if let Some(binary) = &stack.runc_binary {
        // ctr passes runc options (binary, root) only to the runc-v2 runtime.
        all.extend(["--runc-binary".to_string(), binary.clone()]);
        all.extend(["--runc-root".to_string(), private.join("runc-root").display().to_string()]);
    }
    all.extend(["--fifo-dir".to_string(), private.join("fifo").display().to_string()]);
    match image {
        Some(name) => all.push(name.into()),
        // `--rootfs` is a switch: the image argument becomes the rootfs path.
        None => all.extend(["--rootfs".to_string(), rootfs.display().to_string()]),
    }
    all.push(id.into());
    all.extend(args.iter().map(|s| s.to_string()));
    all
}

fn ctr_ok(ctd: &Containerd, args: &[String]) {
    let out = ctd.ctr(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(out.status.success(), "ctr {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

fn bench() {
    let berth_shim = crate::bins::bin("containerd-shim-berth-v2");
    let berth = crate::bins::bin("berth").display().to_string();
    let berth_stack = Stack {
        label: "berth shim",
        runtime: berth_shim.display().to_string(),
        runc_binary: None,
        exe: berth_shim.canonicalize().unwrap(),
    };
    let go_shim_on_berth = Stack {
        label: "Go runc-v2 shim",
        runtime: RUNC_V2.into(),
        runc_binary: Some(berth),
        exe: PathBuf::from(GO_SHIM),
    };
    let runc_stack = Stack {
        label: "runc stack",
        runtime: RUNC_V2.into(),
        runc_binary: Some(DEBIAN_RUNC.into()),
        exe: PathBuf::from(GO_SHIM),
    };
    let ctd = Containerd::start();
    let rootfs = TempDir::new("bench-shim-rootfs");
    write_busybox_rootfs(rootfs.path());
    let image = OciArchive::build("berth.test/bench-busybox:latest", &[LayerDir::busybox()], &["sh"]);
    ctd.import(&image);

    let shims = [&berth_stack, &go_shim_on_berth];
    memory(&ctd, &shims, rootfs.path());

    let mut latency = Table::new(
        &format!("shim latency: `ctr run --rm ... /bin/true`, both driving berth (median of {ROUNDS}, alternated)"),
        &["operation", "berth shim", "Go runc-v2 shim", "berth/Go"],
    );
    let operations = [
        ("ctr run --rm --rootfs DIR /bin/true", "dir", None),
        ("ctr run --rm IMAGE /bin/true (overlayfs snapshot)", "img", Some(image.name.as_str())),
    ];
    for (operation, short, image) in operations {
        let medians = alternate_runs(&ctd, &shims, short, image, rootfs.path());
        latency.row(vec![operation.into(), ms(medians[0]), ms(medians[1]), ratio(medians[0], medians[1])]);
    }
    latency.publish("shim-latency");

    let mut stack = Table::new(
        &format!(
            "shim stack: `ctr run --rm IMAGE /bin/true`, berth's shim + berth vs the Go runc-v2 shim + runc 1.1.5 (median of {ROUNDS}, alternated)"
        ),
        &["operation", "berth stack", "runc stack", "berth/runc"],
    );
    let stacks = [&berth_stack, &runc_stack];
    let medians = alternate_runs(&ctd, &stacks, "stack", Some(image.name.as_str()), rootfs.path());
    stack.row(vec![
        "ctr run --rm IMAGE /bin/true (overlayfs snapshot; goal <= 0.5x)".into(),
        ms(medians[0]),
        ms(medians[1]),
        ratio(medians[0], medians[1]),
    ]);
    stack.publish("shim-stack");
    drop(ctd);

    traced(&image);
}

/// Each of `stacks` runs `ctr run --rm ... /bin/true` in turn; their medians.
fn alternate_runs(
    ctd: &Containerd,
    stacks: &[&Stack],
    short: &str,
    image: Option<&str>,
    rootfs: &Path,
) -> Vec<Duration> {
    let mut contestants: Vec<Contestant> = stacks
        .iter()
        .map(|stack| {
            let mut n = 0;
            Contestant {
                label: stack.label.into(),
                run: Box::new(move || {
                    n += 1;
                    let id = format!("lat-{short}-{}-{n}", stack.short());
                    let args = run_args(ctd, stack, image, rootfs, &id, &["--rm"], &["/bin/true"]);
                    time(|| ctr_ok(ctd, &args))
                }),
            }
        })
        .collect();
    alternate(&mut contestants, ROUNDS)
}

/// The memory table: each shim serving `DETACHED` containers of its own, one per process.
fn memory(ctd: &Containerd, shims: &[&Stack], rootfs: &Path) {
    let mut memory = Table::new(
        &format!("shim memory: per shim process, {DETACHED} detached containers each, both driving berth (median)"),
        &["shim", "PSS", "private", "threads", "PSS vs Go shim"],
    );
    let mut footprints = Vec::new();
    for shim in shims {
        let ids: Vec<String> = (0..DETACHED).map(|n| format!("mem-{}-{n}", shim.short())).collect();
        for id in &ids {
            ctr_ok(ctd, &run_args(ctd, shim, None, rootfs, id, &["-d"], &["sleep", "600"]));
        }
        std::thread::sleep(Duration::from_millis(500)); // let both settle after their last call
        let each: Vec<Footprint> = ids
            .iter()
            .map(|id| footprint(shim_pid(&shim.exe, id).unwrap_or_else(|| panic!("no {} serves {id}", shim.label))))
            .collect();
        footprints.push(median_footprint(&each));
        for id in &ids {
            ctd.kill_task(id);
            ctr_ok(ctd, &["task".into(), "delete".into(), id.clone()]);
            ctr_ok(ctd, &["containers".into(), "delete".into(), id.clone()]);
        }
    }
    for (shim, f) in shims.iter().zip(&footprints) {
        memory.row(vec![
            shim.label.into(),
            format!("{:.2} MB", f.pss_kb as f64 / 1024.0),
            format!("{:.2} MB", f.private_kb as f64 / 1024.0),
            f.threads.to_string(),
            format!("{:.2}x", f.pss_kb as f64 / footprints[1].pss_kb as f64),
        ]);
    }
    memory.publish("shim-memory");
}

/// The traced pass: a containerd of its own finds each stack's shim binary and runtime
/// behind wrappers that log each call, and reaches each serving shim through a ttrpc proxy
/// that logs each task-API call; the stacks run `ctr run --rm IMAGE /bin/true` in turn and
/// each run's time is split into its calls.
fn traced(image: &OciArchive) {
    let berth_tracer = Tracer::start(Path::new("/run/bshim-trace-berth"));
    let runc_tracer = Tracer::start(Path::new("/run/bshim-trace-runc"));
    // berth's stack: containerd runs a wrapper of berth's shim by its path; the real shim
    // runs from a copy beside a wrapper of berth (berth's shim runs the berth beside it).
    let shim_copy = berth_tracer.dir().join("shim");
    std::fs::create_dir_all(&shim_copy).unwrap();
    let real_shim = shim_copy.join("containerd-shim-berth-v2");
    std::fs::copy(crate::bins::bin("containerd-shim-berth-v2"), &real_shim).expect("cannot copy berth's shim");
    berth_tracer.wrap(Part::Runtime, &shim_copy, "berth", &crate::bins::bin("berth"));
    let berth_wrappers = berth_tracer.dir().join("bin");
    berth_tracer.wrap(Part::Shim, &berth_wrappers, "containerd-shim-berth-v2", &real_shim);
    // The runc stack: containerd finds a wrapper as the runc-v2 shim on its PATH, and ctr
    // names a wrapper of runc as its runtime binary.
    let runc_wrappers = runc_tracer.dir().join("bin");
    runc_tracer.wrap(Part::Shim, &runc_wrappers, "containerd-shim-runc-v2", Path::new(GO_SHIM));
    runc_tracer.wrap(Part::Runtime, &runc_wrappers, "runc", Path::new(DEBIAN_RUNC));
    let stacks = [
        Stack {
            label: "berth stack",
            runtime: berth_wrappers.join("containerd-shim-berth-v2").display().to_string(),
            runc_binary: None,
            exe: real_shim.clone(),
        },
        Stack {
            label: "runc stack",
            runtime: RUNC_V2.into(),
            runc_binary: Some(runc_wrappers.join("runc").display().to_string()),
            exe: PathBuf::from(GO_SHIM),
        },
    ];
    let tracers = [&berth_tracer, &runc_tracer];
    let ctd = Containerd::start_with_shims(Some(&runc_wrappers));
    ctd.import(image);
    let wrapper_cost = berth_tracer.wrapper_cost();
    let no_rootfs = Path::new("/nonexistent");
    // Per stack, per run: its span (start, end).
    let mut spans: [Vec<(u64, u64)>; 2] = Default::default();
    for round in 0..=ROUNDS {
        for (i, stack) in stacks.iter().enumerate() {
            let id = format!("traced-{}-{round}", stack.short());
            let args = run_args(&ctd, stack, Some(image.name.as_str()), no_rootfs, &id, &["--rm"], &["/bin/true"]);
            let start = monotonic_ns();
            ctr_ok(&ctd, &args);
            let end = monotonic_ns();
            // The first round warms each stack up, as `alternate` does.
            if round > 0 {
                spans[i].push((start, end));
            }
        }
    }
    let runs: Vec<Vec<RunParts>> =
        spans.iter().zip(tracers).map(|(spans, tracer)| split_runs(spans, &tracer.calls())).collect();
    let mut table = Table::new(
        &format!(
            "shim stack: where one `ctr run --rm IMAGE /bin/true` goes, traced (median of {ROUNDS} per row, alternated)"
        ),
        &["part", "berth stack", "runc stack", "berth/runc"],
    );
    let rows: [(&str, PartOf); 13] = [
        ("one run, traced", |r| r.total),
        ("shim `start` subcommand: spawns the serving shim, prints its address", |r| r.start),
        ("Create (task API)", |r| r.create),
        ("  of it, the runtime's `create`", |r| r.create_runtime),
        ("Start", |r| r.start_call),
        ("  of it, the runtime's `start`", |r| r.start_runtime),
        ("the exit: Start answered until Wait answers", |r| r.exit),
        ("Delete", |r| r.delete),
        ("  of it, the runtime's `delete`", |r| r.delete_runtime),
        ("Shutdown", |r| r.shutdown),
        ("other shim calls (task API, `delete` processes)", |r| r.other),
        ("the shim's own: all of the above less the runtime's calls", |r| r.shim_own),
        ("the rest: ctr and containerd", |r| r.rest),
    ];
    for (name, part) in rows {
        let values: Vec<u64> = runs.iter().map(|runs| median_ns(runs.iter().map(part).collect())).collect();
        let millis = |ns: u64| format!("{:.2} ms", ns as f64 / 1e6);
        let ratio = if values[1] > 0 { format!("{:.2}x", values[0] as f64 / values[1] as f64) } else { String::new() };
        table.row(vec![name.into(), millis(values[0]), millis(values[1]), ratio]);
    }
    table.row(vec![
        "of the traced times: a wrapper's own start, once in `start` and in each runtime call".into(),
        ms(wrapper_cost),
        ms(wrapper_cost),
        String::new(),
    ]);
    table.publish("shim-breakdown");
    for ((spans, tracer), stack) in spans.iter().zip(tracers).zip(&stacks) {
        timeline(stack, *spans.last().expect("no traced run"), &tracer.calls());
    }
}

/// Reads one part's time (ns) out of a traced run, for a row of the breakdown table.
type PartOf = fn(&RunParts) -> u64;

/// One traced run's time by part, nanoseconds.
#[derive(Default)]
struct RunParts {
    total: u64,
    start: u64,
    create: u64,
    create_runtime: u64,
    start_call: u64,
    start_runtime: u64,
    exit: u64,
    delete: u64,
    delete_runtime: u64,
    shutdown: u64,
    other: u64,
    shim_own: u64,
    rest: u64,
}

/// Each run's parts: the shim's windows by call, the runtime's calls inside each, the exit
/// (from Start's answer to Wait's), the shim's own time (its windows and the exit, less the
/// runtime's), and the remainder of the run.
fn split_runs(spans: &[(u64, u64)], calls: &[Window]) -> Vec<RunParts> {
    spans
        .iter()
        .map(|&(from, to)| {
            let inside: Vec<&Window> = calls.iter().filter(|w| w.start >= from && w.end <= to).collect();
            let shim =
                |what: &'static str| inside.iter().filter(move |w| w.part == Part::Shim && w.what == what).copied();
            let length = |what: &'static str| shim(what).map(|w| w.end - w.start).sum::<u64>();
            let runtime: Vec<(u64, u64)> =
                inside.iter().filter(|w| w.part == Part::Runtime).map(|w| (w.start, w.end)).collect();
            let runtime_in = |what: &'static str| {
                let windows: Vec<(u64, u64)> = shim(what).map(|w| (w.start, w.end)).collect();
                covered(
                    runtime
                        .iter()
                        .filter(|(s, e)| windows.iter().any(|(ws, we)| s >= ws && e <= we))
                        .copied()
                        .collect(),
                )
            };
            let started = shim("Start").map(|w| w.end).max();
            let exit_window = started.zip(shim("Wait").map(|w| w.end).max()).filter(|(s, w)| w > s);
            let known = ["start", "Create", "Start", "Wait", "Delete", "Shutdown"];
            let mut shim_windows: Vec<(u64, u64)> =
                inside.iter().filter(|w| w.part == Part::Shim && w.what != "Wait").map(|w| (w.start, w.end)).collect();
            shim_windows.extend(exit_window);
            let with_runtime: Vec<(u64, u64)> = shim_windows.iter().chain(&runtime).copied().collect();
            let all = covered(with_runtime);
            RunParts {
                total: to - from,
                start: length("start"),
                create: length("Create"),
                create_runtime: runtime_in("Create"),
                start_call: length("Start"),
                start_runtime: runtime_in("Start"),
                exit: exit_window.map_or(0, |(s, w)| w - s),
                delete: length("Delete"),
                delete_runtime: runtime_in("Delete"),
                shutdown: length("Shutdown"),
                other: inside
                    .iter()
                    .filter(|w| w.part == Part::Shim && !known.contains(&w.what.as_str()))
                    .map(|w| w.end - w.start)
                    .sum(),
                shim_own: all - covered(runtime.clone()),
                rest: (to - from) - all,
            }
        })
        .collect()
}

/// The calls of one traced run in the order they began, from the run's start.
fn timeline(stack: &Stack, (from, to): (u64, u64), calls: &[Window]) {
    let mut table = Table::new(
        &format!("shim stack: the last traced run on the {}, call by call", stack.label),
        &["from the run's start", "took", "part", "call"],
    );
    let mut inside: Vec<&Window> = calls.iter().filter(|w| w.start >= from && w.end <= to).collect();
    inside.sort_by_key(|w| w.start);
    let millis = |ns: u64| format!("{:.2} ms", ns as f64 / 1e6);
    for w in inside {
        let part = match w.part {
            Part::Shim => "shim",
            Part::Runtime => "runtime",
            Part::Plugin => "plugin",
        };
        table.row(vec![millis(w.start - from), millis(w.end - w.start), part.into(), w.what.clone()]);
    }
    table.row(vec![millis(to - from), String::new(), String::new(), "ctr returns".into()]);
    table.publish(&format!("shim-timeline-{}", stack.short()));
}

fn median_ns(values: Vec<u64>) -> u64 {
    let mut durations: Vec<Duration> = values.into_iter().map(Duration::from_nanos).collect();
    crate::bench::median(&mut durations).as_nanos() as u64
}

/// The pid of the process running `exe` that serves container `id` (its `-id ID` argument).
fn shim_pid(exe: &Path, id: &str) -> Option<i32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
        let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
        if std::fs::read_link(entry.path().join("exe")).ok()? != exe {
            return None;
        }
        let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        args.windows(2).any(|w| w[0] == b"-id" && w[1] == id.as_bytes()).then_some(pid)
    })
}

fn footprint(pid: i32) -> Footprint {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).expect("cannot read smaps_rollup");
    let field = |name: &str| -> u64 {
        rollup.lines().find_map(|l| l.strip_prefix(name)?.trim().strip_suffix("kB")?.trim().parse().ok()).unwrap_or(0)
    };
    let threads = std::fs::read_dir(format!("/proc/{pid}/task")).map(|d| d.count()).unwrap_or(0);
    Footprint { pss_kb: field("Pss:"), private_kb: field("Private_Clean:") + field("Private_Dirty:"), threads }
}

fn median_footprint(each: &[Footprint]) -> Footprint {
    let mid = |mut v: Vec<u64>| -> u64 {
        v.sort();
        v[v.len() / 2]
    };
    Footprint {
        pss_kb: mid(each.iter().map(|f| f.pss_kb).collect()),
        private_kb: mid(each.iter().map(|f| f.private_kb).collect()),
        threads: mid(each.iter().map(|f| f.threads as u64).collect()) as usize,
    }
}
