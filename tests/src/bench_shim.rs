//! `make bench` shim section: containerd-shim-berth-v2 against Debian's Go
//! containerd-shim-runc-v2, both driving berth under a private containerd: per-container
//! memory (PSS, private) and threads with 10 detached containers, and `ctr run --rm` latency,
//! both from a rootfs directory (`--rootfs`, no mounts) and from an image in containerd's
//! store (the overlayfs snapshotter's mounts, which each shim mounts itself).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::bench::{alternate, ms, ratio, time, Contestant, Table};
use crate::containerd::Containerd;
use crate::fixtures::{write_busybox_rootfs, TempDir};
use crate::oci_image::{LayerDir, OciArchive};

const DETACHED: usize = 10;
const ROUNDS: usize = 20;
const GO_SHIM: &str = "/usr/bin/containerd-shim-runc-v2";

/// One shim under test: how `ctr run` names it and the executable its processes run.
struct Shim {
    label: &'static str,
    runtime: String,
    exe: PathBuf,
}

/// Memory and threads of one shim process, from /proc.
struct Footprint {
    pss_kb: u64,
    private_kb: u64,
    threads: usize,
}

pub fn run() {
    assert!(Path::new(GO_SHIM).exists(), "{GO_SHIM} is missing; `make deps` installs containerd");
    let berth_shim = crate::bins::bin("containerd-shim-berth-v2");
    let shims = [
        Shim {
            label: "berth shim",
            runtime: berth_shim.display().to_string(),
            exe: berth_shim.canonicalize().unwrap(),
        },
        Shim { label: "Go runc-v2 shim", runtime: "io.containerd.runc.v2".into(), exe: PathBuf::from(GO_SHIM) },
    ];
    let ctd = Containerd::start();
    let rootfs = TempDir::new("bench-shim-rootfs");
    write_busybox_rootfs(rootfs.path());
    let image = OciArchive::build("berth.test/bench-busybox:latest", &[LayerDir::busybox()], &["sh"]);
    ctd.import(&image);
    let berth = crate::bins::bin("berth").display().to_string();
    // `image` None runs the rootfs directory; Some(name) an image from containerd's store.
    let run_args = |shim: &Shim, image: Option<&str>, id: &str, extra: &[&str], args: &[&str]| -> Vec<String> {
        let private = ctd.dir.path();
        let mut all: Vec<String> = vec!["run".into()];
        all.extend(extra.iter().map(|s| s.to_string()));
        if shim.exe.as_path() == Path::new(GO_SHIM) {
            // ctr passes a runtime binary only to the runc-v2 shim; berth's shim runs the
            // berth beside it.
            all.extend(["--runc-binary".to_string(), berth.clone()]);
        }
        for (flag, value) in [
            ("--runtime", shim.runtime.clone()),
            ("--runc-root", private.join("berth").display().to_string()),
            ("--fifo-dir", private.join("fifo").display().to_string()),
        ] {
            all.push(flag.into());
            all.push(value);
        }
        match image {
            Some(name) => all.push(name.into()),
            // `--rootfs` is a switch: the image argument becomes the rootfs path.
            None => all.extend(["--rootfs".to_string(), rootfs.path().display().to_string()]),
        }
        all.push(id.into());
        all.extend(args.iter().map(|s| s.to_string()));
        all
    };
    let ctr_ok = |args: &[String]| {
        let out = ctd.ctr(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(out.status.success(), "ctr {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    };

    let mut memory = Table::new(
        &format!("shim memory: per shim process, {DETACHED} detached containers each, both driving berth (median)"),
        &["shim", "PSS", "private", "threads", "PSS vs Go shim"],
    );
    let mut footprints = Vec::new();
    for shim in &shims {
        let ids: Vec<String> =
            (0..DETACHED).map(|n| format!("mem-{}-{n}", shim.label.split(' ').next().unwrap())).collect();
        for id in &ids {
            ctr_ok(&run_args(shim, None, id, &["-d"], &["sleep", "600"]));
        }
        std::thread::sleep(Duration::from_millis(500)); // let both settle after their last call
        let each: Vec<Footprint> = ids
            .iter()
            .map(|id| footprint(shim_pid(&shim.exe, id).unwrap_or_else(|| panic!("no {} serves {id}", shim.label))))
            .collect();
        footprints.push(median_footprint(&each));
        for id in &ids {
            ctd.kill_task(id);
            ctr_ok(&["task".into(), "delete".into(), id.clone()]);
            ctr_ok(&["containers".into(), "delete".into(), id.clone()]);
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

    let mut latency = Table::new(
        &format!("shim latency: `ctr run --rm ... /bin/true`, both driving berth (median of {ROUNDS}, alternated)"),
        &["operation", "berth shim", "Go runc-v2 shim", "berth/Go"],
    );
    let operations = [
        ("ctr run --rm --rootfs DIR /bin/true", "dir", None),
        ("ctr run --rm IMAGE /bin/true (overlayfs snapshot)", "img", Some(image.name.as_str())),
    ];
    for (operation, short, image) in operations {
        let mut contestants: Vec<Contestant> = shims
            .iter()
            .map(|shim| {
                let mut n = 0;
                let run_args = &run_args;
                let ctr_ok = &ctr_ok;
                Contestant {
                    label: shim.label.into(),
                    run: Box::new(move || {
                        n += 1;
                        let id = format!("lat-{short}-{}-{n}", shim.label.split(' ').next().unwrap());
                        let args = run_args(shim, image, &id, &["--rm"], &["/bin/true"]);
                        time(|| ctr_ok(&args))
                    }),
                }
            })
            .collect();
        let medians = alternate(&mut contestants, ROUNDS);
        latency.row(vec![operation.into(), ms(medians[0]), ms(medians[1]), ratio(medians[0], medians[1])]);
    }
    latency.publish("shim-latency");
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
