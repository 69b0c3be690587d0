//! Helpers shared by berth-image's tests: temporary directories, image layouts written
//! byte by byte (so layers can hold anything, hostile entries included), and running the CLI.
#![allow(dead_code)] // each test file uses its own subset

use sha2::{Digest as _, Sha256};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::CString;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

pub struct Temp(pub PathBuf);

impl Temp {
    pub fn new() -> Temp {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "berth-image-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        fs::create_dir_all(&dir).unwrap();
        Temp(dir)
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        unmount_below(&self.0);
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Lazily unmounts every mount below `dir`, deepest first (a failed test's bundles).
pub fn unmount_below(dir: &Path) {
    let prefix = dir.display().to_string();
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<String> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .filter(|p| p.starts_with(&prefix))
        // mountinfo escapes space, tab, newline and backslash in octal.
        .map(|p| p.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\"))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for point in points {
        let _ = Command::new("umount").arg("-l").arg(&point).status();
    }
}

pub fn digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

pub fn put(layout: &Path, data: &[u8]) -> String {
    let d = digest(data);
    fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    fs::write(layout.join("blobs/sha256").join(&d[7..]), data).unwrap();
    d
}

pub fn desc(media_type: &str, data: &[u8], d: &str) -> serde_json::Value {
    serde_json::json!({ "mediaType": media_type, "digest": d, "size": data.len() })
}

/// Runs berth-image; an `unpack` without `--network` gets `--network none`, since Docker's
/// default network would attach a test's container to this machine's own network.
pub fn run(store: &Path, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_berth-image"));
    command.arg("--store").arg(store);
    match args.split_first() {
        Some((&"unpack", rest)) if !rest.iter().any(|a| a.starts_with("--network")) => {
            command.args(["unpack", "--network", "none"]).args(rest)
        }
        _ => command.args(args),
    };
    command.output().unwrap()
}

pub fn ok(store: &Path, args: &[&str]) -> String {
    let out = run(store, args);
    assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

pub fn err(store: &Path, args: &[&str]) -> String {
    let out = run(store, args);
    assert!(!out.status.success(), "{args:?} unexpectedly succeeded");
    String::from_utf8(out.stderr).unwrap()
}

/// A tar stream written header by header, so names, links and types can be anything.
#[derive(Default)]
pub struct Tar(pub Vec<u8>);

/// One tar entry: `kind` is the ustar type flag.
pub struct Entry<'a> {
    pub name: &'a str,
    pub kind: u8,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub data: &'a [u8],
    pub link: &'a str,
    pub dev: (u32, u32),
}

impl<'a> Entry<'a> {
    pub fn file(name: &'a str, data: &'a [u8]) -> Entry<'a> {
        Entry { name, kind: b'0', mode: 0o644, uid: 0, gid: 0, data, link: "", dev: (0, 0) }
    }
    pub fn dir(name: &'a str) -> Entry<'a> {
        Entry { kind: b'5', mode: 0o755, ..Entry::file(name, b"") }
    }
    pub fn symlink(name: &'a str, target: &'a str) -> Entry<'a> {
        Entry { kind: b'2', mode: 0o777, link: target, ..Entry::file(name, b"") }
    }
    pub fn hardlink(name: &'a str, target: &'a str) -> Entry<'a> {
        Entry { kind: b'1', link: target, ..Entry::file(name, b"") }
    }
    pub fn char_device(name: &'a str, major: u32, minor: u32) -> Entry<'a> {
        Entry { kind: b'3', dev: (major, minor), ..Entry::file(name, b"") }
    }
}

fn octal(field: &mut [u8], value: u64) {
    let text = format!("{:0width$o}\0", value, width = field.len() - 1);
    field.copy_from_slice(text.as_bytes());
}

impl Tar {
    pub fn add(&mut self, e: Entry) -> &mut Tar {
        self.header(e.name, e.kind, e.mode, e.uid, e.gid, e.data.len() as u64, e.link, e.dev);
        self.0.extend_from_slice(e.data);
        self.0.resize(self.0.len().div_ceil(512) * 512, 0);
        self
    }

    /// A PAX header whose records apply to the next entry (`SCHILY.xattr.K=V` for xattrs).
    pub fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Tar {
        let mut body = Vec::new();
        for (key, value) in records {
            let rest = format!(" {key}=").len() + value.len() + 1;
            let mut length = rest + 1;
            while format!("{length}").len() + rest != length {
                length += 1;
            }
            body.extend_from_slice(format!("{length} {key}=").as_bytes());
            body.extend_from_slice(value);
            body.push(b'\n');
        }
        self.add(Entry { kind: b'x', data: &body, ..Entry::file("pax", b"") })
    }

    #[allow(clippy::too_many_arguments)]
    fn header(&mut self, name: &str, kind: u8, mode: u32, uid: u32, gid: u32, size: u64, link: &str, dev: (u32, u32)) {
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        octal(&mut h[100..108], mode as u64);
        octal(&mut h[108..116], uid as u64);
        octal(&mut h[116..124], gid as u64);
        octal(&mut h[124..136], size);
        octal(&mut h[136..148], 1_600_000_000);
        h[156] = kind;
        h[157..157 + link.len()].copy_from_slice(link.as_bytes());
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        octal(&mut h[329..337], dev.0 as u64);
        octal(&mut h[337..345], dev.1 as u64);
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|b| *b as u32).sum();
        octal(&mut h[148..155], sum as u64);
        h[155] = b' ';
        self.0.extend_from_slice(&h);
    }

    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.0);
        out.extend_from_slice(&[0u8; 1024]);
        out
    }
}

/// Writes (or adds to) a layout an image of uncompressed `layers` tagged `tag`, with
/// `config` as its config's `config` object; returns the manifest digest.
pub fn write_image(layout: &Path, tag: &str, layers: &[Vec<u8>], config: serde_json::Value) -> String {
    let blobs: Vec<(Vec<u8>, String, &str)> =
        layers.iter().map(|l| (l.clone(), digest(l), "application/vnd.oci.image.layer.v1.tar")).collect();
    write_image_blobs(layout, tag, &blobs, config)
}

/// As `write_image`, with each layer given as (blob, DiffID, media type).
pub fn write_image_blobs(
    layout: &Path,
    tag: &str,
    layers: &[(Vec<u8>, String, &str)],
    config: serde_json::Value,
) -> String {
    fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    fs::write(layout.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let diff_ids: Vec<String> = layers.iter().map(|(_, diff_id, _)| diff_id.clone()).collect();
    let layer_descs: Vec<serde_json::Value> =
        layers.iter().map(|(blob, _, media_type)| desc(media_type, blob, &put(layout, blob))).collect();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux", "config": config,
        "rootfs": { "type": "layers", "diff_ids": diff_ids }
    }))
    .unwrap();
    let config_d = put(layout, &config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": desc("application/vnd.oci.image.config.v1+json", &config, &config_d),
        "layers": layer_descs
    }))
    .unwrap();
    let manifest_d = put(layout, &manifest);
    let index_path = layout.join("index.json");
    let mut index: serde_json::Value = fs::read(&index_path)
        .ok()
        .and_then(|d| serde_json::from_slice(&d).ok())
        .unwrap_or(serde_json::json!({"schemaVersion": 2, "manifests": []}));
    let mut entry = desc("application/vnd.oci.image.manifest.v1+json", &manifest, &manifest_d);
    entry["annotations"] = serde_json::json!({ "org.opencontainers.image.ref.name": tag });
    index["manifests"].as_array_mut().unwrap().push(entry);
    fs::write(index_path, serde_json::to_vec(&index).unwrap()).unwrap();
    manifest_d
}

/// Whether the test may run: unpack mounts overlay, which needs root. Without root the
/// test is skipped, except under `CI=true`, where it fails.
pub fn privileged(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{test} needs root (CI runs as root)");
    eprintln!("skipping {test}: needs root");
    false
}

/// Whether a Debian peer tool is installed (`make deps` installs them); missing under
/// `CI=true` fails the test.
pub fn have(tool: &str, test: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !found {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{test} needs {tool}; `make deps` installs it");
        eprintln!("skipping {test}: {tool} is not installed");
    }
    found
}

pub fn sh(script: &str) {
    let out = Command::new("sh").arg("-ec").arg(script).output().unwrap();
    assert!(out.status.success(), "{script}\n{}", String::from_utf8_lossy(&out.stderr));
}

/// A path's xattrs but the host's labels and overlay's own bookkeeping.
pub fn xattrs(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut all = all_xattrs(path);
    all.retain(|key, _| !key.starts_with("security.") && !key.starts_with("trusted.overlay."));
    all
}

/// Every xattr of a path (not following a symlink).
pub fn all_xattrs(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let c = CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let mut names = vec![0u8; 65536];
    // SAFETY: buffers sized as passed.
    let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    let mut out = BTreeMap::new();
    for name in names[..n.max(0) as usize].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let cname = CString::new(name).unwrap();
        let mut value = vec![0u8; 65536];
        // SAFETY: as above.
        let len = unsafe { libc::lgetxattr(c.as_ptr(), cname.as_ptr(), value.as_mut_ptr().cast(), value.len()) };
        value.truncate(len.max(0) as usize);
        out.insert(String::from_utf8_lossy(name).into_owned(), value);
    }
    out
}

/// Visits every entry below `root`, with its path relative to `root`.
fn walk(root: &Path, mut visit: impl FnMut(String, &Path, &fs::Metadata)) {
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            let meta = fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                stack.push(path.clone());
            }
            visit(path.strip_prefix(root).unwrap().display().to_string(), &path, &meta);
        }
    }
}

/// An entry's kind and content: `dir`, `symlink -> TARGET`, `file N bytes sha256:HEX`,
/// `char MAJ:MIN`, `block MAJ:MIN` or `fifo`.
fn kind(path: &Path, meta: &fs::Metadata) -> String {
    let ft = meta.file_type();
    if ft.is_dir() {
        "dir".to_string()
    } else if ft.is_symlink() {
        format!("symlink -> {}", fs::read_link(path).unwrap().display())
    } else if ft.is_file() {
        format!("file {} bytes sha256:{}", meta.len(), hex::encode(Sha256::digest(fs::read(path).unwrap())))
    } else if ft.is_char_device() || ft.is_block_device() {
        format!(
            "{} {}:{}",
            if ft.is_char_device() { "char" } else { "block" },
            libc::major(meta.rdev()),
            libc::minor(meta.rdev())
        )
    } else {
        "fifo".to_string()
    }
}

/// Everything about a tree that the differential compares: one line per path, and the
/// hardlink groups.
pub fn describe(root: &Path) -> (BTreeMap<String, String>, BTreeSet<Vec<String>>) {
    let mut entries = BTreeMap::new();
    let mut inodes: HashMap<(u64, u64), Vec<String>> = HashMap::new();
    walk(root, |rel, path, meta| {
        if meta.is_file() {
            inodes.entry((meta.dev(), meta.ino())).or_default().push(rel.clone());
        }
        let mode = if meta.file_type().is_symlink() { 0 } else { meta.mode() & 0o7777 };
        entries.insert(
            rel,
            format!("{} mode {mode:o} owner {}:{} xattrs {:?}", kind(path, meta), meta.uid(), meta.gid(), xattrs(path)),
        );
    });
    let groups = inodes.into_values().filter(|g| g.len() > 1).map(|mut g| {
        g.sort();
        g
    });
    (entries, groups.collect())
}

pub fn assert_same_tree(berth: &Path, reference: &Path, what: &str) {
    let (ours, our_links) = describe(berth);
    let (theirs, their_links) = describe(reference);
    // The image holds every kind the comparison is about.
    for (path, kind) in [
        ("a/suid", "file"),
        ("a/null", "char 1:3"),
        ("a/loop", "block 7:0"),
        ("a/fifo", "fifo"),
        ("a/rel", "symlink -> h1"),
        ("a/flavour", "user.berth"),
    ] {
        assert!(
            theirs.get(path).is_some_and(|l| l.contains(kind)),
            "{what}: umoci's tree lacks {path} ({kind}): {theirs:?}"
        );
    }
    for gone in ["a/deleted", "gone", "opaque/old"] {
        assert!(!theirs.contains_key(gone), "{what}: umoci's tree still has {gone}");
    }
    assert!(!their_links.is_empty(), "{what}: umoci's tree has no hardlinks");
    for (path, line) in &theirs {
        assert_eq!(ours.get(path), Some(line), "{what}: {path} differs");
    }
    let extra: Vec<&String> = ours.keys().filter(|p| !theirs.contains_key(*p)).collect();
    assert!(extra.is_empty(), "{what}: berth has extra paths {extra:?}");
    assert_eq!(our_links, their_links, "{what}: hardlink groups differ");
}

/// Builds layout `L` with image `tag`: two layers of odd content made with umoci.
pub fn umoci_image(dir: &Path, tag: &str, flavour: &str) {
    let d = dir.display();
    sh(&format!(
        "cd {d}; [ -d L ] || umoci init --layout L; umoci new --image L:{tag}; umoci unpack --image L:{tag} B-{tag} >/dev/null; R=B-{tag}/rootfs
         mkdir -p $R/a/b $R/gone/deep $R/opaque; echo {flavour} > $R/a/flavour; echo one > $R/a/h1; ln $R/a/h1 $R/a/h2
         echo bye > $R/a/deleted; echo deep > $R/gone/deep/f; echo old > $R/opaque/old
         echo setuid > $R/a/suid; chmod 4755 $R/a/suid; mkdir $R/a/sgid; chmod 2775 $R/a/sgid; chmod 1777 $R/a/b
         echo odd > $R/a/odd; chown 12345:54321 $R/a/odd; chown 7:8 $R/a/b
         ln -s h1 $R/a/rel; ln -s /etc/passwd $R/a/abs; ln -s ../nowhere $R/a/dangling
         mknod $R/a/null c 1 3; mknod $R/a/loop b 7 0; mkfifo $R/a/fifo
         head -c 300000 /dev/urandom > $R/a/random
         umoci repack --image L:{tag} B-{tag}
         rm $R/a/deleted; rm -r $R/gone; rm -r $R/opaque; mkdir $R/opaque; echo new > $R/opaque/new
         echo changed > $R/a/h1; chown 1:1 $R/a/odd; chmod 600 $R/a/suid; echo two > $R/a/second-layer
         umoci repack --image L:{tag} B-{tag}
         umoci config --image L:{tag} --config.cmd /bin/sh
         rm -rf B-{tag}"
    ));
    // An xattr set through umoci's own layer format needs a layer with one.
    sh(&format!(
        "cd {d}; umoci unpack --image L:{tag} X-{tag} >/dev/null; R=X-{tag}/rootfs
         python3 -c \"import os; os.setxattr('$R/a/flavour', 'user.berth', b'{flavour}', follow_symlinks=False)\"
         umoci repack --image L:{tag} X-{tag}; rm -rf X-{tag}"
    ));
}

/// A busybox layer: enough to run a shell and change files.
pub fn busybox_layer() -> Vec<u8> {
    let busybox = fs::read("/bin/busybox").expect("busybox-static is not installed; `make deps` installs it");
    let mut tar = Tar::default();
    tar.add(Entry::dir("bin")).add(Entry { mode: 0o755, ..Entry::file("bin/busybox", &busybox) });
    for applet in ["sh", "echo", "id", "cat", "sleep", "mkdir", "rm", "chmod", "mv"] {
        let name = format!("bin/{applet}");
        tar.add(Entry::symlink(&name, "busybox"));
    }
    tar.add(Entry::dir("etc"))
        .add(Entry::file("etc/passwd", b"root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/:/bin/sh\n"))
        .add(Entry::file("etc/group", b"root:x:0:\napp:x:1000:\nwheel:x:10:app\n"));
    tar.finish()
}

/// A tree's full state, one line per path: kind, size, SHA-256 of the content, mode,
/// owner, link count, mtime and ctime, link target or device numbers, xattrs. Two equal
/// snapshots mean nothing in the tree was written.
pub fn snapshot(root: &Path) -> BTreeMap<String, String> {
    let mut entries = BTreeMap::new();
    walk(root, |rel, path, meta| {
        let line = format!(
            "{} size {} mode {:o} owner {}:{} links {} mtime {}.{} ctime {}.{} xattrs {:?}",
            kind(path, meta),
            meta.len(),
            meta.mode(),
            meta.uid(),
            meta.gid(),
            meta.nlink(),
            meta.mtime(),
            meta.mtime_nsec(),
            meta.ctime(),
            meta.ctime_nsec(),
            all_xattrs(path)
        );
        entries.insert(rel, line);
    });
    entries
}

/// Tags `multi` in `layout`: an index of its `amd` (linux/amd64) and `arm` (linux/arm64) images.
pub fn tag_two_platform_index(layout: &Path) {
    let mut index: serde_json::Value = serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    let mut children = Vec::new();
    for (tag, arch) in [("amd", "amd64"), ("arm", "arm64")] {
        let mut entry = index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
            .unwrap()
            .clone();
        entry.as_object_mut().unwrap().remove("annotations");
        entry["platform"] = serde_json::json!({ "os": "linux", "architecture": arch });
        children.push(entry);
    }
    let multi = serde_json::to_vec(&serde_json::json!({ "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": children })).unwrap();
    let multi_digest = put(layout, &multi);
    let mut entry = desc("application/vnd.oci.image.index.v1+json", &multi, &multi_digest);
    entry["annotations"] = serde_json::json!({ "org.opencontainers.image.ref.name": "multi" });
    index["manifests"].as_array_mut().unwrap().push(entry);
    fs::write(layout.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
}
