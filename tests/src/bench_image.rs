//! `make bench` image section: cold import+unpack of a real multi-layer image (Debian
//! bookworm from debootstrap, split in three gzip layers by umoci) by berth-image, against
//! `umoci unpack` and the floor (a parallel `pigz -dc | tar -x` per layer), alternated;
//! and the cost of a second bundle of a stored image.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::bench::{alternate, ms, ratio, time, Contestant, Table};
use crate::fixtures::{debian_rootfs_tar, TempDir};

const ROUNDS: usize = 5;

fn sh(script: &str) {
    let out = Command::new("sh").arg("-ec").arg(script).stdout(Stdio::null()).output().expect("cannot run sh");
    assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
}

/// An OCI layout at `dir/L`, tag `debian`: the rootfs without /usr, then /usr without
/// /usr/share, then /usr/share (three layers, each gzip, as umoci writes them).
fn build_image(dir: &Path) {
    let tar = debian_rootfs_tar();
    let d = dir.display();
    sh(&format!(
        "cd {d}; mkdir full; tar -C full -xf {tar}; umoci init --layout L; umoci new --image L:debian
         umoci unpack --image L:debian B >/dev/null; rmdir B/rootfs; mkdir B/rootfs
         for part in 1 2 3; do
           case $part in
             1) (cd full; tar --exclude=./usr -cf - .) | tar -C B/rootfs -xf - ;;
             2) (cd full; tar --exclude=./usr/share -cf - ./usr) | tar -C B/rootfs -xf - ;;
             3) (cd full; tar -cf - ./usr/share) | tar -C B/rootfs -xf - ;;
           esac
           umoci repack --image L:debian B
         done
         umoci config --image L:debian --config.cmd /bin/true; rm -rf B full",
        tar = tar.display()
    ));
}

fn layer_blobs(layout: &Path) -> Vec<std::path::PathBuf> {
    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let blob = |digest: &str| layout.join("blobs/sha256").join(digest.trim_start_matches("sha256:"));
    let manifest_digest = index["manifests"][0]["digest"].as_str().unwrap().to_string();
    let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(blob(&manifest_digest)).unwrap()).unwrap();
    manifest["layers"].as_array().unwrap().iter().map(|l| blob(l["digest"].as_str().unwrap())).collect()
}

fn bytes_used(path: &Path) -> u64 {
    let out = Command::new("du").args(["-s", "-B1", "-x"]).arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or("0").parse().unwrap_or(0)
}

pub fn run() {
    for tool in ["umoci", "pigz"] {
        assert!(crate::privilege::have_program(tool), "{tool} is not installed; `make deps` installs it");
    }
    let work = TempDir::new("bench-image");
    build_image(work.path());
    let layout = work.path().join("L");
    let blobs = layer_blobs(&layout);
    let berth_image = crate::bins::bin("berth-image");
    let scratch = work.path().join("scratch");

    let berth = |store: &Path, args: &[&str]| {
        let out =
            Command::new(&berth_image).arg("--store").arg(store).args(args).output().expect("cannot run berth-image");
        assert!(out.status.success(), "berth-image {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let reset = || {
        crate::containerd::unmount_below(&scratch);
        let _ = std::fs::remove_dir_all(&scratch);
        std::fs::create_dir_all(&scratch).unwrap();
    };
    let mut contestants = vec![
        Contestant {
            label: "berth-image import+unpack".into(),
            run: Box::new(|| {
                reset();
                let store = scratch.join("store");
                let took = time(|| {
                    berth(&store, &["import", layout.to_str().unwrap()]);
                    berth(&store, &["unpack", "--network", "none", "debian", scratch.join("bundle").to_str().unwrap()]);
                });
                berth(&store, &["release", scratch.join("bundle").to_str().unwrap()]);
                took
            }),
        },
        Contestant {
            label: "umoci unpack".into(),
            run: Box::new(|| {
                reset();
                time(|| sh(&format!("umoci unpack --image {}:debian {}/bundle", layout.display(), scratch.display())))
            }),
        },
        Contestant {
            label: "floor: parallel pigz -dc, tar -x".into(),
            run: Box::new(|| {
                reset();
                let script: String = blobs
                    .iter()
                    .enumerate()
                    .map(|(n, b)| {
                        format!(
                            "mkdir {s}/l{n}; (pigz -dc {b} | tar -C {s}/l{n} -xf -) & ",
                            s = scratch.display(),
                            b = b.display()
                        )
                    })
                    .collect();
                time(|| sh(&format!("{script} wait")))
            }),
        },
    ];
    let medians = alternate(&mut contestants, ROUNDS);
    let mut table = Table::new(
        &format!(
            "image: cold import+unpack of Debian bookworm minbase, 3 gzip layers (median of {ROUNDS}, alternated)"
        ),
        &["operation", "time", "vs floor"],
    );
    for (contestant, median) in contestants.iter().zip(&medians) {
        table.row(vec![contestant.label.clone(), ms(*median), ratio(*median, medians[2])]);
    }

    // A second bundle of a stored image: a mount and a config.
    reset();
    let store = scratch.join("store");
    berth(&store, &["import", layout.to_str().unwrap()]);
    berth(&store, &["unpack", "--network", "none", "debian", scratch.join("first").to_str().unwrap()]);
    let mut seconds = Vec::new();
    let mut disk = 0;
    for n in 0..ROUNDS {
        let bundle = scratch.join(format!("second-{n}"));
        let before = bytes_used(&store);
        let started = Instant::now();
        berth(&store, &["unpack", "--network", "none", "debian", bundle.to_str().unwrap()]);
        seconds.push(started.elapsed());
        disk = disk.max(
            bytes_used(&store) - before + bytes_used(&bundle.join("upper")) + bytes_used(&bundle.join("config.json")),
        );
        berth(&store, &["release", bundle.to_str().unwrap()]);
    }
    berth(&store, &["release", scratch.join("first").to_str().unwrap()]);
    let second: Duration = crate::bench::median(&mut seconds);
    table.row(vec![
        "berth-image: second bundle of a stored image".into(),
        ms(second),
        format!("{:.1} KB new disk", disk as f64 / 1024.0),
    ]);
    reset();
    table.publish("image");
}
