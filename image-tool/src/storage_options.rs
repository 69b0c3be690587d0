//! unpack's storage options with Docker's names and forms (`-v`, `--mount`, `--tmpfs`),
//! checked up front, and turned with the image's VOLUMEs into the spec's mounts: binds,
//! the store's named and anonymous volumes (made on first use, filled from the image when
//! empty) and tmpfs mounts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use oci_spec::runtime::{Mount, MountBuilder, Spec};

use crate::store::Locked;
use crate::volumes;

#[derive(clap::Args, Debug, Default, Clone)]
pub struct StorageOptions {
    /// Bind mount or volume: /HOST:/CTR[:OPTS] (a host directory, made when missing), NAME:/CTR[:OPTS] (a named
    /// volume of the store, made on first use and filled from the image when empty) or
    /// /CTR[:OPTS] (an anonymous volume); OPTS, comma-separated: ro, rw, nocopy (volumes), and
    /// for binds a propagation (rprivate, private, rshared, shared, rslave, slave).
    #[arg(short = 'v', long = "volume", value_name = "SPEC")]
    pub volume: Vec<String>,
    /// Docker's long form (a bind's source must exist): type=bind|volume|tmpfs,source=..,target=..[,readonly]
    /// [,volume-nocopy][,bind-propagation=..][,tmpfs-size=..][,tmpfs-mode=..]
    /// (src for source; dst or destination for target; ro for readonly).
    #[arg(long = "mount", value_name = "KEY=VALUE,...")]
    pub mount: Vec<String>,
    /// A tmpfs at /CTR, with mount options after a colon (size=64m, mode=1777, uid=, gid=,
    /// nr_inodes=, ro, exec, suid, dev); by default noexec, nosuid, nodev.
    #[arg(long = "tmpfs", value_name = "/CTR[:OPTS]")]
    pub tmpfs: Vec<String>,
}

/// Where a mount's content comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Bind(PathBuf),
    Volume(String),
    Anonymous,
    Tmpfs,
}

/// One mount asked for, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub source: Source,
    /// Absolute and clean.
    pub target: String,
    pub readonly: bool,
    /// Do not fill an empty volume from the image.
    pub nocopy: bool,
    /// Bind propagation (rprivate when None).
    pub propagation: Option<String>,
    /// tmpfs mount options (`size=..`, `mode=..`, ...).
    pub tmpfs_options: Vec<String>,
    /// A missing bind source is made (`-v`, as Docker) rather than refused (`--mount`).
    pub make_source: bool,
}

impl Request {
    fn new(source: Source, target: &str) -> Result<Request> {
        check_target(target)?;
        Ok(Request {
            source,
            target: target.to_string(),
            readonly: false,
            nocopy: false,
            propagation: None,
            tmpfs_options: Vec::new(),
            make_source: false,
        })
    }
}

const PROPAGATIONS: &[&str] = &["rprivate", "private", "rshared", "shared", "rslave", "slave"];

/// A container path must be absolute and clean, and not `/` itself.
fn check_target(path: &str) -> Result<()> {
    let clean =
        path.starts_with('/') && path.len() > 1 && path[1..].split('/').all(|p| !p.is_empty() && p != "." && p != "..");
    if !clean {
        bail!(
            "the container path {path:?} must be absolute and clean (no `.`, `..`, empty or trailing parts), and not /"
        );
    }
    Ok(())
}

fn source_of(text: &str) -> Result<Source> {
    if text.starts_with('/') {
        Ok(Source::Bind(PathBuf::from(text)))
    } else {
        volumes::check_name(text)?;
        Ok(Source::Volume(text.to_string()))
    }
}

/// `-v`: `/CTR[:OPTS]`, `SRC:/CTR[:OPTS]`.
fn parse_volume(spec: &str) -> Result<Request> {
    let parts: Vec<&str> = spec.split(':').collect();
    let (source, target, options) = match parts.as_slice() {
        [target] => (Source::Anonymous, *target, None),
        [target, options] if !options.starts_with('/') => (Source::Anonymous, *target, Some(*options)),
        [source, target] => (source_of(source)?, *target, None),
        [source, target, options] => (source_of(source)?, *target, Some(*options)),
        _ => bail!("too many colons: the forms are /HOST:/CTR[:OPTS], NAME:/CTR[:OPTS] and /CTR[:OPTS]"),
    };
    let mut request = Request::new(source, target)?;
    request.make_source = true;
    for option in options.into_iter().flat_map(|o| o.split(',')) {
        match option {
            "ro" => request.readonly = true,
            "rw" => request.readonly = false,
            "nocopy" if !matches!(request.source, Source::Bind(_)) => request.nocopy = true,
            p if PROPAGATIONS.contains(&p) && matches!(request.source, Source::Bind(_)) => {
                request.propagation = Some(p.to_string())
            }
            other => bail!(
                "unknown option {other:?}: ro, rw and nocopy (volumes) or a propagation ({}) (binds)",
                PROPAGATIONS.join(", ")
            ),
        }
    }
    Ok(request)
}

/// A `true`/`false` value of a `--mount` key; a key alone means true.
fn flag(key: &str, value: Option<&str>) -> Result<bool> {
    match value {
        None | Some("true") | Some("1") => Ok(true),
        Some("false") | Some("0") => Ok(false),
        Some(other) => bail!("{key}={other}: the value is true or false"),
    }
}

/// `--mount type=..,source=..,target=..,...`.
fn parse_mount(spec: &str) -> Result<Request> {
    let mut fields: BTreeMap<&str, Option<&str>> = BTreeMap::new();
    for field in spec.split(',') {
        let (key, value) = match field.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (field, None),
        };
        let key = match key {
            "src" => "source",
            "dst" | "destination" => "target",
            "ro" => "readonly",
            "type" | "source" | "target" | "readonly" | "volume-nocopy" | "bind-propagation" | "tmpfs-size"
            | "tmpfs-mode" => key,
            other => bail!(
                "unknown key {other:?}: the keys are type, source (src), target (dst, destination), readonly (ro), volume-nocopy, bind-propagation, tmpfs-size, tmpfs-mode"
            ),
        };
        if fields.insert(key, value).is_some() {
            bail!("the key {key} is given twice");
        }
    }
    let value = |key: &str| -> Result<Option<&str>> {
        match fields.get(key) {
            None => Ok(None),
            Some(Some(v)) if !v.is_empty() => Ok(Some(*v)),
            Some(_) => bail!("{key} needs a value ({key}=...)"),
        }
    };
    let target = value("target")?.context("target is missing (target=/CTR)")?;
    let kind = value("type")?.unwrap_or("volume");
    let source = value("source")?;
    let allowed: &[&str] = match kind {
        "bind" => &["bind-propagation"],
        "volume" => &["volume-nocopy"],
        "tmpfs" => &["tmpfs-size", "tmpfs-mode"],
        other => bail!("type {other:?} is not bind, volume or tmpfs"),
    };
    let specific = ["volume-nocopy", "bind-propagation", "tmpfs-size", "tmpfs-mode"];
    if let Some(key) = specific.iter().find(|k| fields.contains_key(**k) && !allowed.contains(k)) {
        bail!("{key} does not apply to type={kind}");
    }
    let mut request = match (kind, source) {
        ("bind", Some(source)) if source.starts_with('/') => Request::new(Source::Bind(source.into()), target)?,
        ("bind", _) => bail!("type=bind needs an absolute source=/HOST/PATH"),
        ("volume", Some(name)) => {
            volumes::check_name(name)?;
            Request::new(Source::Volume(name.to_string()), target)?
        }
        ("volume", None) => Request::new(Source::Anonymous, target)?,
        (_, Some(_)) => bail!("type=tmpfs takes no source"),
        (_, None) => Request::new(Source::Tmpfs, target)?,
    };
    if let Some(readonly) = fields.get("readonly") {
        request.readonly = flag("readonly", *readonly)?;
    }
    if let Some(nocopy) = fields.get("volume-nocopy") {
        request.nocopy = flag("volume-nocopy", *nocopy)?;
    }
    if let Some(propagation) = value("bind-propagation")? {
        if !PROPAGATIONS.contains(&propagation) {
            bail!("bind-propagation={propagation} is not one of {}", PROPAGATIONS.join(", "));
        }
        request.propagation = Some(propagation.to_string());
    }
    if let Some(size) = value("tmpfs-size")? {
        request.tmpfs_options.push(tmpfs_option(&format!("size={size}"))?);
    }
    if let Some(mode) = value("tmpfs-mode")? {
        request.tmpfs_options.push(tmpfs_option(&format!("mode={mode}"))?);
    }
    Ok(request)
}

/// Checks one tmpfs option, so a typo fails at unpack rather than at the container's start.
fn tmpfs_option(option: &str) -> Result<String> {
    let number = |v: &str, radix: u32, suffixes: &str| {
        let digits = v.strip_suffix(|c: char| suffixes.contains(c)).unwrap_or(v);
        !digits.is_empty() && u64::from_str_radix(digits, radix).is_ok()
    };
    let ok = match option.split_once('=') {
        Some(("size", v)) => number(v, 10, "kKmMgG%"),
        Some(("nr_inodes", v)) => number(v, 10, "kKmMgG"),
        Some(("mode", v)) => number(v, 8, "") && v.len() <= 4,
        Some(("uid" | "gid", v)) => number(v, 10, ""),
        None => ["ro", "rw", "exec", "noexec", "suid", "nosuid", "dev", "nodev"].contains(&option),
        _ => false,
    };
    if !ok {
        bail!(
            "tmpfs option {option:?} is not one of size=N[k|m|g|%], mode=OCTAL, uid=N, gid=N, nr_inodes=N, ro, rw, exec, noexec, suid, nosuid, dev, nodev"
        );
    }
    Ok(option.to_string())
}

/// `--tmpfs /CTR[:OPTS]`.
fn parse_tmpfs(spec: &str) -> Result<Request> {
    let (target, options) = match spec.split_once(':') {
        Some((target, options)) => (target, Some(options)),
        None => (spec, None),
    };
    let mut request = Request::new(Source::Tmpfs, target)?;
    for option in options.into_iter().flat_map(|o| o.split(',')) {
        request.tmpfs_options.push(tmpfs_option(option)?);
    }
    Ok(request)
}

impl StorageOptions {
    /// Every mount asked for, checked, in a order where a mount comes after the mounts it
    /// lies below; one container path may be named only once.
    pub fn requests(&self) -> Result<Vec<Request>> {
        let mut requests = Vec::new();
        for spec in &self.volume {
            requests.push(parse_volume(spec).with_context(|| format!("bad -v {spec:?}"))?);
        }
        for spec in &self.mount {
            requests.push(parse_mount(spec).with_context(|| format!("bad --mount {spec:?}"))?);
        }
        for spec in &self.tmpfs {
            requests.push(parse_tmpfs(spec).with_context(|| format!("bad --tmpfs {spec:?}"))?);
        }
        let mut seen = std::collections::BTreeSet::new();
        for request in &requests {
            if !seen.insert(request.target.as_str()) {
                bail!("duplicate mount point {}: each container path takes one -v, --mount or --tmpfs", request.target);
            }
        }
        for request in &requests {
            if let Source::Bind(source) = &request.source {
                if !request.make_source && !source.exists() {
                    bail!(
                        "the bind source {} does not exist; create it first (bound to {}), or use -v, which makes it",
                        source.display(),
                        request.target
                    );
                }
            }
        }
        Ok(requests)
    }
}

/// The volumes a bundle got: every one it mounts, and the anonymous ones it owns.
#[derive(Debug, Default)]
pub struct Attached {
    pub volumes: Vec<String>,
    pub anonymous: Vec<String>,
    /// Made by this unpack (named ones on first use, and the anonymous ones): removed again
    /// when the unpack fails.
    pub created: Vec<String>,
    /// Missing `-v` bind sources made by this unpack, each directory level in the order made.
    pub created_dirs: Vec<PathBuf>,
}

impl Attached {
    /// Removes what this unpack created; for a failed unpack. A made bind source is removed
    /// only while empty.
    pub fn undo(&self, locked: &Locked<'_>) {
        for name in &self.created {
            let _ = volumes::remove_unchecked(locked, name);
        }
        for dir in self.created_dirs.iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// Makes the missing directory `path` and its missing parents, recording each one made.
fn make_dirs(path: &Path, made: &mut Vec<PathBuf>) -> Result<()> {
    let missing: Vec<&Path> = path.ancestors().take_while(|p| !p.exists()).collect();
    for dir in missing.into_iter().rev() {
        std::fs::create_dir(dir).with_context(|| format!("cannot make the bind source {}", dir.display()))?;
        made.push(dir.to_path_buf());
    }
    Ok(())
}

/// Adds the mounts of `requests` and of the image's VOLUMEs (`image_volumes`, absolute and
/// clean; those a request covers are skipped, as in Docker) to `spec`, making and filling
/// volumes as they are needed. On failure the volumes made here are removed again.
pub fn apply(
    locked: &Locked<'_>,
    spec: &mut Spec,
    rootfs: &Path,
    requests: &[Request],
    image_volumes: &[String],
) -> Result<Attached> {
    let mut all: Vec<Request> = requests.to_vec();
    for path in image_volumes {
        if !all.iter().any(|r| &r.target == path) {
            all.push(Request::new(Source::Anonymous, path)?);
        }
    }
    // Parents before what lies below them, as runtimes mount in order.
    all.sort_by_key(|r| r.target.split('/').count());
    let mut attached = Attached::default();
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    for request in &all {
        match mount_for(locked, rootfs, request, &mut attached) {
            Ok(mount) => mounts.push(mount),
            Err(e) => {
                attached.undo(locked);
                return Err(e).with_context(|| format!("cannot prepare the mount at {}", request.target));
            }
        }
    }
    spec.set_mounts(Some(mounts));
    Ok(attached)
}

fn mount_for(locked: &Locked<'_>, rootfs: &Path, request: &Request, attached: &mut Attached) -> Result<Mount> {
    let access = if request.readonly { "ro" } else { "rw" }.to_string();
    let (source, typ, options) = match &request.source {
        Source::Bind(source) => {
            if request.make_source {
                make_dirs(source, &mut attached.created_dirs)?;
            }
            let propagation = request.propagation.clone().unwrap_or_else(|| "rprivate".into());
            (source.clone(), "bind", vec!["rbind".into(), propagation, access])
        }
        Source::Volume(_) | Source::Anonymous => {
            let name = match &request.source {
                Source::Volume(name) => {
                    if volumes::create(locked, Some(name), BTreeMap::new(), false)?.is_some() {
                        attached.created.push(name.clone());
                    }
                    name.clone()
                }
                _ => {
                    let volume = volumes::create(locked, None, BTreeMap::new(), true)?
                        .context("a new anonymous volume's name was taken")?;
                    attached.created.push(volume.name.clone());
                    attached.anonymous.push(volume.name.clone());
                    volume.name
                }
            };
            attached.volumes.push(name.clone());
            if !request.nocopy {
                volumes::fill_from_image(locked, &name, rootfs, &request.target)?;
            }
            (volumes::data_dir(locked.store(), &name), "bind", vec!["rbind".into(), "rprivate".into(), access])
        }
        Source::Tmpfs => {
            let mut options: Vec<String> = ["nosuid", "noexec", "nodev"].map(String::from).to_vec();
            options.extend(request.tmpfs_options.iter().cloned());
            if request.readonly {
                options.push("ro".into());
            }
            (PathBuf::from("tmpfs"), "tmpfs", options)
        }
    };
    Ok(MountBuilder::default().destination(&request.target).typ(typ).source(source).options(options).build()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(volume: &[&str], mount: &[&str], tmpfs: &[&str]) -> Result<Request> {
        let options = StorageOptions {
            volume: volume.iter().map(|s| s.to_string()).collect(),
            mount: mount.iter().map(|s| s.to_string()).collect(),
            tmpfs: tmpfs.iter().map(|s| s.to_string()).collect(),
        };
        Ok(options.requests()?.remove(0))
    }

    #[test]
    fn docker_forms_parse() {
        let r = one(&["/ctr:ro"], &[], &[]).unwrap();
        assert_eq!((r.source, r.target.as_str(), r.readonly), (Source::Anonymous, "/ctr", true));
        let r = one(&["data:/srv/data:ro,nocopy"], &[], &[]).unwrap();
        assert_eq!((r.source, r.readonly, r.nocopy), (Source::Volume("data".into()), true, true));
        let r = one(&["/tmp:/host:rshared"], &[], &[]).unwrap();
        assert_eq!((r.source, r.propagation.as_deref()), (Source::Bind("/tmp".into()), Some("rshared")));
        let r = one(&[], &["type=volume,src=db,dst=/db,volume-nocopy,ro"], &[]).unwrap();
        assert_eq!((r.source, r.nocopy, r.readonly), (Source::Volume("db".into()), true, true));
        let r = one(&[], &["type=tmpfs,destination=/run,tmpfs-size=64m,tmpfs-mode=1777"], &[]).unwrap();
        assert_eq!(r.tmpfs_options, ["size=64m", "mode=1777"]);
        let r = one(&[], &[], &["/scratch:size=1m,mode=700,exec"]).unwrap();
        assert_eq!((r.source, r.tmpfs_options.len()), (Source::Tmpfs, 3));
    }

    #[test]
    fn bad_forms_are_refused() {
        for bad in [
            "relative",
            "./dir:/ctr",
            "a:/ctr",
            "data:ctr",
            "data:/a/../b",
            "/ctr:bogus",
            "/h:/c:nocopy",
            "a:b:c:d",
            "/",
        ] {
            assert!(one(&[bad], &[], &[]).is_err(), "-v {bad}");
        }
        for bad in [
            "type=volume,target=/x,colour=red",
            "type=bind,target=/x",
            "type=bind,source=rel,target=/x",
            "type=tmpfs,source=/x,target=/y",
            "type=volume,target=/x,tmpfs-size=1m",
            "type=nfs,target=/x",
            "source=v",
            "type=bind,source=/tmp,target=/x,bind-propagation=sideways",
        ] {
            assert!(one(&[], &[bad], &[]).is_err(), "--mount {bad}");
        }
        for bad in ["/x:size=big", "/x:colour=red", "x", "/x:mode=999"] {
            assert!(one(&[], &[], &[bad]).is_err(), "--tmpfs {bad}");
        }
        assert!(one(&["/a", "v1:/a"], &[], &[]).is_err(), "a duplicate mount point");
        assert!(one(&[], &["type=bind,src=/nonexistent-berth-host-dir,dst=/a"], &[]).is_err(), "a missing bind source");
        assert!(one(&["/nonexistent-berth-host-dir:/a"], &[], &[]).unwrap().make_source, "-v makes it");
    }
}
